//! The `gatherer` binary: documented help, configuration errors (exit 64, naming the key),
//! the metric names DESIGN.md fixes, and SIGTERM during heavy ingest (exit 0, nothing that was
//! received is lost).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_gatherer");

#[test]
fn help_documents_every_key() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--config",
        "GATHERER__SECTION__KEY",
        "gatherer_id",
        "[kalshi]",
        "private_key_file",
        "[registry]",
        "mve_filter",
        "[ws]",
        "silence_timeout",
        "[backfill]",
        "polling_after",
        "[store]",
        "buffer_rows",
        "[store.retention]",
        "[api]",
        "max_page",
        "[http]",
        "metrics_listen",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn bad_configuration_exits_64_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("gatherer-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (text, env, key) in [
        ("[ws]\nconnections = 0\n", None, "ws.connections"),
        ("[ws]\nconections = 2\n", None, "conections"),
        ("[store]\nbatch_rows = \"many\"\n", None, "store.batch_rows"),
        (
            "",
            Some(("GATHERER__STORE__BATCH_INTERVAL", "soon")),
            "store.batch_interval",
        ),
        (
            "[kalshi]\nkey_id = \"k\"\nprivate_key_file = \"/nonexistent.pem\"\n",
            None,
            "kalshi.private_key_file",
        ),
        (
            "[store]\ndatabase_url = \"mysql://x\"\n",
            None,
            "store.database_url",
        ),
        ("gatherer_id = \"g7\"\n", None, "api.tls"),
    ] {
        let path = dir.join("g.toml");
        std::fs::write(&path, text).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&path).arg("--check-config");
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text:?}: {err}");
        assert!(
            err.contains(key) && err.trim().lines().count() == 1,
            "{key}: {err}"
        );
    }
    std::fs::write(
        dir.join("ok.toml"),
        "gatherer_id = \"g7\"\n[api]\ninsecure = true\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.join("ok.toml"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("g7"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_the_names_design_md_fixes() {
    let rig = Rig::start(sim_config(501, 10), |_| {}).await;
    rig.sim.advance(1000);
    rig.settle(Duration::from_millis(300)).await;
    let m = rig.metrics().await;
    for name in [
        "ws_client_connected",
        "ws_client_messages_received_total",
        "ws_client_reconnects_total",
        "conn_manager_sequence_gaps_total",
        "ws_client_errors_total",
        "market_registry_active_markets",
        "market_registry_rest_errors_total",
        "backfill_trades_recovered_total",
        "writer_inserts_total",
        "writer_errors_total",
        "writer_flush_duration_seconds",
        "writer_buffer_rows",
        "gaps_declared_total",
    ] {
        assert!(
            m.lines().any(|l| l.starts_with(name)),
            "/metrics lacks {name}"
        );
    }
    assert_eq!(metric_sum(&m, "ws_client_connected"), 3.0);
    assert_eq!(metric_sum(&m, "market_registry_active_markets"), 10.0);
    assert!(!m.contains("KX"), "no market ticker in any label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_heavy_ingest_flushes_everything_received() {
    init();
    let pg = kalshi_testkit::pg::PgCluster::start_default().unwrap();
    let sim = kalshi_sim::start(sim_config(502, 40)).await.unwrap();
    let health_port = free_port();
    let dir = std::env::temp_dir().join(format!("gatherer-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut file = gatherer_config("g1", &sim, &pg.url());
    file.http.listen = format!("127.0.0.1:{health_port}").parse().unwrap();
    let cfg_path = dir.join("gatherer.toml");
    std::fs::write(&cfg_path, toml::to_string(&file).unwrap()).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg_path)
        .env("GATHERER__LOG__LEVEL", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = reqwest::get(format!("http://127.0.0.1:{health_port}/health"))
            .await
            .ok()
            .filter(|r| r.status() == 200);
        if let Some(r) = ok {
            let h: serde_json::Value = r.json().await.unwrap();
            if h["status"] == "healthy" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "binary gatherer never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    post(
        &format!("{}/rate", sim.control_url()),
        serde_json::json!({"rate": 4000}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Everything published up to a second before SIGTERM has certainly been received.
    let safe_pos = sim.published_pos().saturating_sub(4000);
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    post(
        &format!("{}/rate", sim.control_url()),
        serde_json::json!({"rate": 0}),
    )
    .await;
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("gatherer stopped"), "{stderr}");

    // What is stored is a gap-free prefix of what was published, per market and for trades,
    // and contains everything published well before the signal.
    let q = |sql: &str| pg.psql("postgres", sql).unwrap();
    let stored_trades: Vec<String> = q("SELECT trade_id FROM trades ORDER BY id")
        .lines()
        .map(str::to_owned)
        .collect();
    let truth_trades = truth(&sim, "trade").await;
    let truth_ids: Vec<String> = truth_trades
        .iter()
        .map(|r| r["msg"]["trade_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        stored_trades,
        truth_ids[..stored_trades.len()].to_vec(),
        "trades are a prefix"
    );
    let safe_trades = truth_trades
        .iter()
        .filter(|r| r["pos"].as_u64().unwrap() <= safe_pos)
        .count();
    assert!(
        stored_trades.len() >= safe_trades,
        "{} < {safe_trades}",
        stored_trades.len()
    );
    let mut stored_d: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    for line in q("SELECT market_ticker, price, delta FROM orderbook_deltas ORDER BY id").lines() {
        let f: Vec<&str> = line.split('|').collect();
        stored_d
            .entry(f[0].into())
            .or_default()
            .push((f[1].parse().unwrap(), f[2].parse().unwrap()));
    }
    let mut truth_d: HashMap<String, Vec<(i64, i64, u64)>> = HashMap::new();
    for r in truth(&sim, "orderbook_delta").await {
        let m = &r["msg"];
        truth_d
            .entry(m["market_ticker"].as_str().unwrap().into())
            .or_default()
            .push((
                kalshi_shared::Price::parse(m["price_dollars"].as_str().unwrap())
                    .unwrap()
                    .raw(),
                kalshi_shared::Quantity::parse(m["delta_fp"].as_str().unwrap())
                    .unwrap()
                    .raw(),
                r["pos"].as_u64().unwrap(),
            ));
    }
    let mut total = 0;
    for (market, want) in &truth_d {
        let have = stored_d.get(market).cloned().unwrap_or_default();
        let want_pairs: Vec<(i64, i64)> = want.iter().map(|(p, d, _)| (*p, *d)).collect();
        assert_eq!(
            have,
            want_pairs[..have.len()].to_vec(),
            "{market}: a prefix"
        );
        let safe = want.iter().filter(|(_, _, pos)| *pos <= safe_pos).count();
        assert!(
            have.len() >= safe,
            "{market}: {} of {safe} safely-received deltas stored",
            have.len()
        );
        total += have.len();
    }
    assert!(total > 5000, "heavy ingest: {total} deltas");
    assert_eq!(q("SELECT count(*) FROM gaps").trim(), "0");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Starts the binary on `cfg_path` (its log appended to `log`) and waits until it answers
/// `/health` with 200 (the caller waits for the process).
#[allow(clippy::zombie_processes)]
async fn start_binary(
    cfg_path: &std::path::Path,
    health_port: u16,
    log: &std::path::Path,
) -> std::process::Child {
    start_binary_with(cfg_path, health_port, log, &[]).await
}

/// [`start_binary`] with extra environment (e.g. `KALSHI_FAILPOINTS`).
// Tied to this process (killed with it), so a panic before `wait` leaves no zombie behind.
#[allow(clippy::zombie_processes)]
async fn start_binary_with(
    cfg_path: &std::path::Path,
    health_port: u16,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> std::process::Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    // Tied to this process: a failed assertion never leaves it running.
    let child = kalshi_testkit::process::spawn_tied(std::path::Path::new(BIN), |c| {
        c.arg("--config")
            .arg(cfg_path)
            .env("GATHERER__LOG__LEVEL", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(out);
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = reqwest::get(format!("http://127.0.0.1:{health_port}/health"))
            .await
            .ok()
            .filter(|r| r.status() == 200);
        if ok.is_some() {
            return child;
        }
        assert!(
            Instant::now() < deadline,
            "binary gatherer never became healthy:\n{}",
            log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The end of a log, for assertion messages.
fn log_tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A trade window waiting for backfill (REST failing) when the gatherer is SIGKILLed, with
/// newer trades already stored after it, is fetched at the next start: the window was kept in
/// the local database, not only in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_window_pending_at_sigkill_is_backfilled_at_the_next_start() {
    init();
    let pg = kalshi_testkit::pg::PgCluster::start_default().unwrap();
    let sim = kalshi_sim::start(sim_config(503, 20)).await.unwrap();
    let health_port = free_port();
    let dir = std::env::temp_dir().join(format!("gatherer-sigkill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut file = gatherer_config("g1", &sim, &pg.url());
    file.http.listen = format!("127.0.0.1:{health_port}").parse().unwrap();
    // No REST polling fallback during the outage: only the window's backfill is at stake.
    file.backfill.polling_after = Duration::from_secs(3600);
    let cfg_path = dir.join("gatherer.toml");
    std::fs::write(&cfg_path, toml::to_string(&file).unwrap()).unwrap();
    let log = dir.join("gatherer.log");
    let mut child = start_binary(&cfg_path, health_port, &log).await;
    let control = sim.control_url();
    post(&format!("{control}/rate"), serde_json::json!({"rate": 400})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // REST fails for a minute; the WebSocket is cut for two seconds: a trade window opens that
    // backfill cannot fetch.
    post(
        &format!("{control}/faults"),
        serde_json::json!({"fault": "rest_errors", "status": 500, "duration_ms": 60_000}),
    )
    .await;
    post(
        &format!("{control}/faults"),
        serde_json::json!({"fault": "outage", "duration_ms": 2_000}),
    )
    .await;
    let db = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let window: (i64, i64) = loop {
        let w: Option<(i64, i64)> = sqlx::query_as(
            "SELECT from_ms, to_ms FROM pending_trade_holes WHERE reason <> 'restart' ORDER BY from_ms LIMIT 1",
        )
        .fetch_optional(&db)
        .await
        .unwrap();
        if let Some(w) = w {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "no trade window was recorded:\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Newer trades are stored after the window, so the restart's own window (from the newest
    // stored trade) does not reach back to it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let newest: Option<i64> = sqlx::query_scalar("SELECT max(ts_ms) FROM trades")
            .fetch_one(&db)
            .await
            .unwrap();
        if newest.is_some_and(|n| n > window.1 + 2_000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no trades after the window:\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    post(&format!("{control}/rate"), serde_json::json!({"rate": 0})).await;
    post(
        &format!("{control}/faults"),
        serde_json::json!({"fault": "clear"}),
    )
    .await;
    let in_window: Vec<String> = truth(&sim, "trade")
        .await
        .iter()
        .filter(|r| {
            let ts = r["msg"]["ts_ms"].as_i64().unwrap();
            ts > window.0 && ts < window.1
        })
        .map(|r| r["msg"]["trade_id"].as_str().unwrap().to_owned())
        .collect();
    let missing = |db: sqlx::PgPool, ids: Vec<String>| async move {
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT trade_id FROM trades WHERE trade_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&db)
                .await
                .unwrap();
        ids.len() - stored.len()
    };
    let lost_at_kill = missing(db.clone(), in_window.clone()).await;
    assert!(
        lost_at_kill > 0,
        "the outage must have cost the WebSocket some trades ({} in the window)",
        in_window.len()
    );

    let mut child = start_binary(&cfg_path, health_port, &log).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_trade_holes")
            .fetch_one(&db)
            .await
            .unwrap();
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the windows were never fetched:\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        missing(db.clone(), in_window.clone()).await,
        0,
        "the window's {lost_at_kill} trades were fetched at the next start"
    );
    // And every trade the exchange published is stored exactly once.
    let truth_ids: std::collections::BTreeSet<String> = truth(&sim, "trade")
        .await
        .iter()
        .map(|r| r["msg"]["trade_id"].as_str().unwrap().to_owned())
        .collect();
    let stored: Vec<String> = sqlx::query_scalar("SELECT trade_id FROM trades")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(stored.len(), truth_ids.len());
    assert_eq!(
        stored
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        truth_ids
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One series of a /metrics page, by its exact name and labels as rendered.
fn series(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Kalshi revoked the old key and knows only the new one. The gatherer, started with the old
/// key, is refused; a rotation that wrote a broken key is refused at SIGHUP and the running
/// key kept; the real rotation (new key id and PEM in the two files, then SIGHUP, which is what
/// `systemctl reload` sends) makes it sync, subscribe and store without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_taken_at_sighup_without_a_restart() {
    use kalshi_testkit::keys::{ROTATED_KEY_ID, ROTATED_KEY_PUBLIC, rotated_key_file};
    init();
    let pg = kalshi_testkit::pg::PgCluster::start_default().unwrap();
    let mut sc = sim_config(503, 10);
    sc.public_key_pem = Some(ROTATED_KEY_PUBLIC.to_vec());
    sc.key_id = Some(ROTATED_KEY_ID.into());
    let sim = kalshi_sim::start(sc).await.unwrap();
    let (health_port, metrics_port) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("gatherer-rotation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (id_file, pem_file) = (dir.join("kalshi-key-id"), dir.join("kalshi-key.pem"));
    std::fs::write(&id_file, format!("{}\n", kalshi_testkit::keys::KEY_ID)).unwrap();
    std::fs::write(&pem_file, kalshi_testkit::keys::KEY_PKCS8).unwrap();
    let mut file = gatherer_config("g1", &sim, &pg.url());
    file.kalshi.key_id = None;
    file.kalshi.key_id_file = Some(id_file.clone());
    file.kalshi.private_key_file = Some(pem_file.clone());
    file.http.listen = format!("127.0.0.1:{health_port}").parse().unwrap();
    file.http.metrics_listen = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let cfg_path = dir.join("gatherer.toml");
    std::fs::write(&cfg_path, toml::to_string(&file).unwrap()).unwrap();
    let log_path = dir.join("stderr.log");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg_path)
        .env("GATHERER__LOG__LEVEL", "info")
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let metrics = || async move {
        match reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    let health = || async move {
        match reqwest::get(format!("http://127.0.0.1:{health_port}/health")).await {
            Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    };

    // The old key is refused: REST errors counted, the gatherer alive but not healthy.
    kalshi_testkit::wait::wait_for(
        "REST calls refused with the old key",
        Duration::from_secs(30),
        async || metric_sum(&metrics().await, "market_registry_rest_errors_total") > 0.0,
    )
    .await;
    let h = health().await;
    assert_ne!(h["status"], "healthy", "{h}");
    assert!(child.try_wait().unwrap().is_none(), "the gatherer exited");

    // A rotation that wrote a broken key: refused, counted, the running key kept.
    std::fs::write(&pem_file, "-----BEGIN PRIVATE KEY-----\nnot a key\n").unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    kalshi_testkit::wait::wait_for(
        "the broken key refused",
        Duration::from_secs(10),
        async || {
            series(
                &metrics().await,
                "gatherer_credential_reloads_total{result=\"error\"}",
            ) == 1.0
        },
    )
    .await;

    // The real rotation.
    std::fs::write(&id_file, format!("{ROTATED_KEY_ID}\n")).unwrap();
    std::fs::copy(rotated_key_file(), &pem_file).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    kalshi_testkit::wait::wait_for(
        "healthy with the rotated key",
        Duration::from_secs(60),
        async || health().await["status"] == "healthy",
    )
    .await;
    let m = metrics().await;
    assert_eq!(
        series(&m, "gatherer_credential_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        series(&m, "gatherer_credential_reloads_total{result=\"error\"}"),
        1.0
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "restarted instead of reloading"
    );

    // Data flows: every trade published from now on is stored, exactly once.
    let expected = publish_trades(&sim, 500, 3.0).await;
    assert!(
        expected.len() > 50,
        "only {} trades published",
        expected.len()
    );
    wait_trades_stored(&pg, &expected).await;

    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("the new Kalshi key does not load"), "{log}");
    assert!(log.contains("Kalshi key reloaded"), "{log}");
    assert!(log.contains(ROTATED_KEY_ID), "{log}");
    // No key material in the log.
    let pem = std::fs::read_to_string(rotated_key_file()).unwrap();
    let body_line = pem.lines().nth(1).unwrap();
    assert!(!log.contains(body_line), "the private key is in the log");
    assert!(
        !log.contains("not a key"),
        "the broken file's content is in the log"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A trade window found while the backfill is busy with another (held for good here, at its
/// first fetch, by a failpoint) is recorded in the local database at once, not only in memory:
/// after a SIGKILL, the next start fetches it, with newer trades already stored after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_window_found_while_backfill_is_busy_survives_a_sigkill() {
    init();
    let pg = kalshi_testkit::pg::PgCluster::start_default().unwrap();
    let sim = kalshi_sim::start(sim_config(504, 20)).await.unwrap();
    let health_port = free_port();
    let dir = std::env::temp_dir().join(format!("gatherer-busy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut file = gatherer_config("g1", &sim, &pg.url());
    file.http.listen = format!("127.0.0.1:{health_port}").parse().unwrap();
    file.backfill.polling_after = Duration::from_secs(3600);
    let cfg_path = dir.join("gatherer.toml");
    std::fs::write(&cfg_path, toml::to_string(&file).unwrap()).unwrap();
    let log = dir.join("gatherer.log");
    let mut child = start_binary_with(
        &cfg_path,
        health_port,
        &log,
        &[("KALSHI_FAILPOINTS", "gatherer::backfill::fill")],
    )
    .await;
    let control = sim.control_url();
    post(&format!("{control}/rate"), serde_json::json!({"rate": 400})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let db = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let windows = |db: sqlx::PgPool| async move {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT from_ms, to_ms FROM pending_trade_holes WHERE reason <> 'restart' ORDER BY from_ms",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    };
    // A first window: the backfill takes it and stops at its fetch, for good.
    post(
        &format!("{control}/faults"),
        serde_json::json!({"fault": "outage", "duration_ms": 1_500}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while windows(db.clone()).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no first window:\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A second one while it is busy: recorded all the same.
    post(
        &format!("{control}/faults"),
        serde_json::json!({"fault": "outage", "duration_ms": 1_500}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let w = windows(db.clone()).await;
        if w.len() >= 2 {
            break *w.last().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the window found while the backfill is busy is not recorded: {w:?}\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Newer trades after it, then the kill.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let newest: Option<i64> = sqlx::query_scalar("SELECT max(ts_ms) FROM trades")
            .fetch_one(&db)
            .await
            .unwrap();
        if newest.is_some_and(|n| n > second.1 + 2_000) {
            break;
        }
        assert!(Instant::now() < deadline, "no trades after the window");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    post(&format!("{control}/rate"), serde_json::json!({"rate": 0})).await;
    // The next start (no failpoint) fetches both windows: every trade is stored exactly once.
    let mut child = start_binary(&cfg_path, health_port, &log).await;
    let truth_ids: std::collections::BTreeSet<String> = truth(&sim, "trade")
        .await
        .iter()
        .map(|r| r["msg"]["trade_id"].as_str().unwrap().to_owned())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored: Vec<String> = sqlx::query_scalar("SELECT trade_id FROM trades")
            .fetch_all(&db)
            .await
            .unwrap();
        let set: std::collections::BTreeSet<String> = stored.iter().cloned().collect();
        if set == truth_ids {
            assert_eq!(stored.len(), truth_ids.len(), "each once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} trades after the restart:\n{}",
            set.intersection(&truth_ids).count(),
            truth_ids.len(),
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A hole still open when the gatherer is SIGKILLed (one connection stalled, then refused on
/// reconnect, while the other keeps storing) is taken over by the next start and declared from
/// where it began, not from the newest stored record: through the oracle, every delta and
/// ticker the gatherer lacks lies in a window it declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_open_at_sigkill_is_declared_from_its_start_by_the_next_run() {
    use kalshi_testkit::oracle::{Reading, Rules, judge};
    init();
    let pg = kalshi_testkit::pg::PgCluster::start_default().unwrap();
    let sim = kalshi_sim::start(sim_config(611, 20)).await.unwrap();
    let health_port = free_port();
    let grpc_port = free_port();
    let dir = std::env::temp_dir().join(format!("gatherer-open-hole-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut file = gatherer_config("g1", &sim, &pg.url());
    file.http.listen = format!("127.0.0.1:{health_port}").parse().unwrap();
    file.api.listen = format!("127.0.0.1:{grpc_port}").parse().unwrap();
    file.ws.connections = 2;
    let cfg_path = dir.join("gatherer.toml");
    std::fs::write(&cfg_path, toml::to_string(&file).unwrap()).unwrap();
    let log = dir.join("gatherer.log");
    let mut child = start_binary(&cfg_path, health_port, &log).await;
    let control = sim.control_url();
    post(&format!("{control}/rate"), serde_json::json!({"rate": 400})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Stall the first of its two connections, and refuse every new one: its hole stays open.
    let conns: serde_json::Value = reqwest::get(format!("{control}/connections"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = conns["connections"][0]["id"].as_u64().unwrap();
    post(
        &format!("{control}/faults"),
        serde_json::json!({"fault": "stall", "conn_ids": [first], "duration_ms": 120_000}),
    )
    .await;
    post(
        &format!("{control}/faults"),
        serde_json::json!({"fault": "reject_upgrades", "status": 503}),
    )
    .await;
    let db = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    wait_count(
        &db,
        "SELECT count(*) FROM open_holes WHERE stream = 'orderbook_deltas'",
        |n| n > 0,
        "the stalled connection's holes are recorded",
        &log,
    )
    .await;
    // The other connection keeps storing well past the start of the hole (beyond the start
    // window's reach back, silence timeout + 2 s), then the kill.
    wait_count(
        &db,
        "SELECT ((SELECT max(received_ms) FROM orderbook_deltas) \
                 - (SELECT min(from_ms) FROM open_holes WHERE stream = 'orderbook_deltas'))::bigint",
        |ms| ms > 10_000,
        "the live connection stored 10 s past the start of the open hole",
        &log,
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    post(
        &format!("{control}/faults"),
        serde_json::json!({"fault": "clear"}),
    )
    .await;
    post(&format!("{control}/rate"), serde_json::json!({"rate": 0})).await;
    let mut child = start_binary(&cfg_path, health_port, &log).await;
    // Settled: every market resnapshotted, trades backfilled, nothing open.
    wait_count(
        &db,
        "SELECT (SELECT count(*) FROM open_holes) + (SELECT count(*) FROM pending_trade_holes)",
        |n| n == 0,
        "every hole closed",
        &log,
    )
    .await;
    wait_count(
        &db,
        "SELECT count(*) FROM gaps WHERE stream = 'orderbook_deltas' AND reason = 'disconnect'",
        |n| n > 0,
        "the inherited holes are declared",
        &log,
    )
    .await;
    let truth = kalshi_testkit::sim::SimControl::new(sim.control_url())
        .truth()
        .await
        .unwrap();
    let mut client = kalshi_proto::GathererClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20);
    let held = kalshi_testkit::held::Held::from_gatherer(&mut client, "g1")
        .await
        .unwrap();
    let v = judge(
        &truth,
        &held,
        &[Reading::of("g1", held.clone())],
        &Rules::settled(&["g1"]).with_subscription_latency_ms(5_000),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        v.ok,
        "the gatherer's store against the truth:\n{}",
        v.table()
    );
    let d = v.stream("orderbook_deltas").unwrap();
    assert!(d.declared > 0, "the stalled connection lost deltas: {d:?}");
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT reason FROM gaps WHERE stream = 'orderbook_deltas' ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(
        reasons.iter().any(|r| r == "disconnect"),
        "the inherited hole keeps its reason: {reasons:?}"
    );
}

/// Waits (up to 60 s) until the count `sql` returns satisfies `done`.
async fn wait_count(
    db: &sqlx::PgPool,
    sql: &'static str,
    done: impl Fn(i64) -> bool,
    what: &str,
    log: &std::path::Path,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(db).await.unwrap_or(-1);
        if done(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not so: {what} ({n}):\n{}",
            log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
