//! History import as a user runs it: `kalshi-stack import` on a stack whose exchange (the
//! simulator, `--history-hours 24 --history-markets 24`) has a day of trades from before the
//! stack started, in Kalshi's two REST tiers (`/historical/trades` before the cutoff,
//! `/markets/trades` after it, overlapping), with markets that settled in it and exist only
//! under `/historical/markets`, over a window that also holds trades captured live. The gatherer doing
//! the import is SIGKILLed mid-way and started again: the import resumes. Production is then
//! judged against the simulator's ground truth through the oracle (every trade of the window
//! exactly once, live and imported alike; every settled market of those trades as the exchange
//! serves it), and so is the rest of production; a second import changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kalshi_stack::audit::{self, AuditOptions};
use kalshi_stack::{Options, Stack, default_bin_dir};
use kalshi_testkit::held::Held;
use kalshi_testkit::oracle::history;
use kalshi_testkit::sim::SimControl;

fn import_cmd(s: &Stack, from: i64, to: i64) -> Command {
    let mut c = Command::new(default_bin_dir().join("kalshi-stack"));
    c.arg("--data-dir").arg(&s.opts.data_dir).args([
        "import",
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
    ]);
    c
}

async fn import_pages(db: &str) -> i64 {
    let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(db)
        .await
    else {
        return 0;
    };
    let n = sqlx::query_scalar::<_, i64>("SELECT coalesce(max(pages), 0) FROM imports")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    pool.close().await;
    n
}

/// The import's verdict, the live trades in the window and the exchange's settled markets.
async fn judge(s: &Stack, from: i64, to: i64) -> (history::HistoryVerdict, u64, usize) {
    let truth = SimControl::new(s.endpoints.sim_control.clone())
        .truth()
        .await
        .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&s.production_direct_url())
        .await
        .unwrap();
    let prod = Held::from_production(&pool).await.unwrap();
    pool.close().await;
    let live = truth
        .trades
        .iter()
        .filter(|f| f.ts_ms >= from && f.ts_ms < to)
        .count() as u64;
    (
        history::judge(&truth, &prod, from, to),
        live,
        truth.historical_markets.len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_the_past_is_imported_exactly_resumed_after_a_kill_and_twice_changes_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("kalshi-e2e-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut o = Options::new(dir, default_bin_dir());
    o.gatherers = 2;
    o.markets = 12;
    o.seed = 811;
    o.history_hours = 24;
    o.history_markets = 24;
    o.archive = false;
    o.log_level = "info".into();
    let mut s = Stack::up(o).await.unwrap();
    // Live trades too: the window ends after them, so imported and live trades overlap.
    s.set_rate(150).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    s.set_rate(0).await.unwrap();
    let started = SimControl::new(s.endpoints.sim_control.clone())
        .summary()
        .await
        .unwrap()["started_ms"]
        .as_i64()
        .unwrap();
    let (from, to) = (started - 24 * 3_600_000, kalshi_shared::time::now_ms() + 1);

    // The import, with the gatherer doing it killed once it has settled a few pages.
    let child = import_cmd(&s, from, to)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let g1_db = s.endpoints.gatherers[0].database_url.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while import_pages(&g1_db).await < 3 {
        assert!(Instant::now() < deadline, "the import did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.kill_gatherer(1).unwrap();
    let at_kill = import_pages(&g1_db).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.start_gatherer(1).await.unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("done"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        import_pages(&g1_db).await > at_kill,
        "resumed after the kill"
    );
    s.wait_settled(Duration::from_secs(180)).await.unwrap();
    let (v, live, settled_markets) = judge(&s, from, to).await;
    eprintln!("{}", v.line());
    assert!(v.ok(), "{}", v.line());
    assert!(live > 50, "live trades in the window: {live}");
    assert!(
        v.expected > 170_000 + live,
        "a day of the past at 2 trades/s: {}",
        v.line()
    );
    assert_eq!(settled_markets, 24, "{}", v.line());
    assert_eq!(
        v.settled_markets,
        24,
        "every settled market has trades in the day, and is brought in: {}",
        v.line()
    );

    // Everything else in production is still exact (the imported past is no extra).
    let settled = AuditOptions {
        settled: true,
        ..AuditOptions::default()
    };
    let a = audit::run(
        &s.endpoints.sim_control,
        &s.production_direct_url(),
        &s.endpoints.gatherers,
        &settled,
    )
    .await
    .unwrap();
    eprintln!("{}", a.table());
    assert!(a.ok, "{}", a.table());

    // Again: nothing changes.
    let out = import_cmd(&s, from, to).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.wait_settled(Duration::from_secs(120)).await.unwrap();
    let (again, _, _) = judge(&s, from, to).await;
    assert_eq!(again, v, "a second import changes nothing");

    let codes = tokio::task::spawn_blocking(move || s.down()).await.unwrap();
    for (name, code) in codes {
        assert_eq!(code, Some(0), "{name} exits 0 on SIGTERM");
    }
}
