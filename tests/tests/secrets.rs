//! Secrets never leak: a stack runs (with mTLS, a Kalshi key and a production password) through
//! errors that tempt a service to print what it holds (production down, a gatherer killed and
//! restarted, a partition), and then every log line, every /health, /health/live,
//! /health/ready and /metrics page and every config error is searched for the Kalshi private
//! key, the TLS private keys and the production password: none may appear. (IAM tokens are
//! searched for in tests/tests/dedup_rds.rs, which is where they are made.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The needles: every base64 line of every private key under `dir` (PEM bodies are 64-char
/// lines; any one of them in a text is a leak) and the password of `url`.
fn needles(data_dir: &Path, url: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for sub in ["keys", "tls"] {
        for e in std::fs::read_dir(data_dir.join(sub)).unwrap().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if !text.contains("PRIVATE KEY") {
                continue;
            }
            for l in text
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 40)
            {
                out.push((format!("private key {}", e.path().display()), l.to_owned()));
            }
        }
    }
    let password = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('@').next())
        .and_then(|user| user.split(':').nth(1))
        .unwrap()
        .to_owned();
    assert!(password.starts_with("stack-secret-"), "{password}");
    out.push(("the production password".into(), password));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_endpoint_or_error_shows_a_key_or_a_password() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut s = kalshi_e2e::stack(650, false).await.unwrap();
    let dir = s.opts.data_dir.clone();
    let url = s.endpoints.production_url.clone();
    let needles = needles(&dir, &url);
    // The Kalshi key (RSA: many lines), four TLS keys (ECDSA: a few lines each), the password.
    let keys: std::collections::BTreeSet<&String> = needles.iter().map(|(w, _)| w).collect();
    assert_eq!(keys.len(), 1 + 4 + 1, "{keys:?}");
    assert!(needles.len() > 30, "{} needles", needles.len());

    // Errors that make services talk about their connections and credentials.
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.production(false).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    s.production(true).unwrap();
    s.kill_gatherer(2).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.start_gatherer(2).await.unwrap();
    s.partition_gatherer(1, true).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.partition_gatherer(1, false).unwrap();
    s.fault(serde_json::json!({"fault": "malformed", "kind": "bad_fields", "count": 3}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Every endpoint.
    let mut texts: Vec<(String, String)> = Vec::new();
    let mut urls = vec![
        s.endpoints.deduplicator_health.clone(),
        format!("{}/live", s.endpoints.deduplicator_health),
        format!("{}/ready", s.endpoints.deduplicator_health),
        s.endpoints.deduplicator_metrics.clone(),
    ];
    for g in &s.endpoints.gatherers {
        urls.extend([
            g.health.clone(),
            format!("{}/live", g.health),
            format!("{}/ready", g.health),
            g.metrics.clone(),
        ]);
    }
    for u in urls {
        let t = kalshi_stack::get_text(&u).await.unwrap_or_default();
        assert!(!t.is_empty(), "{u} answered nothing");
        texts.push((u, t));
    }
    // Config errors, with the real configurations made invalid in one key each.
    let dedup_cfg = std::fs::read_to_string(&s.endpoints.deduplicator_config).unwrap();
    let bin = kalshi_stack::default_bin_dir();
    // A production URL that fails to parse, with the real password in it.
    let bad_url = url.replacen("@127.0.0.1:", "@127.0.0.1:notaport", 1);
    for (name, bin, cfg, env) in [
        (
            "deduplicator with a bad sink",
            bin.join("deduplicator"),
            dedup_cfg.clone(),
            ("DEDUPLICATOR__SINK__BATCH_ROWS".to_owned(), "0".to_owned()),
        ),
        (
            "deduplicator with a production URL that does not parse",
            bin.join("deduplicator"),
            dedup_cfg.clone(),
            ("DEDUPLICATOR__PRODUCTION__DATABASE_URL".to_owned(), bad_url),
        ),
        (
            "gatherer whose key id file does not exist",
            bin.join("gatherer"),
            std::fs::read_to_string(dir.join("g1.toml")).unwrap(),
            (
                "GATHERER__KALSHI__KEY_ID_FILE".to_owned(),
                "/nonexistent".to_owned(),
            ),
        ),
    ] {
        let p = dir.join("bad-config.toml");
        std::fs::write(&p, cfg).unwrap();
        let out = Command::new(bin)
            .arg("--config")
            .arg(&p)
            .arg("--check-config")
            .env(&env.0, &env.1)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{name}");
        texts.push((
            name.into(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        ));
    }
    s.opts.keep = true;
    let codes = tokio::task::spawn_blocking(move || s.down()).await.unwrap();
    assert!(codes.iter().all(|(_, c)| *c == Some(0)), "{codes:?}");
    // Every log, after the services stopped (their last words included).
    let logs = dir.join("logs");
    let mut n_logs = 0;
    for e in std::fs::read_dir(&logs).unwrap().flatten() {
        texts.push((
            e.path().display().to_string(),
            std::fs::read_to_string(e.path()).unwrap(),
        ));
        n_logs += 1;
    }
    assert!(n_logs >= 5, "{n_logs} logs");
    let total: usize = texts.iter().map(|(_, t)| t.len()).sum();
    assert!(total > 50_000, "only {total} bytes searched");
    let mut leaks = Vec::new();
    for (place, text) in &texts {
        for (what, needle) in &needles {
            if text.contains(needle.as_str()) {
                leaks.push(format!("{what} appears in {place}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
