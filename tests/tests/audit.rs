//! `kalshi-stack audit` itself: it passes on a live stack at 2,000 msg/s (records after its
//! cut reported as in flight, never as lost), and it fails, naming the stream and the count,
//! for each loss injected into production.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;
use std::time::Duration;

use kalshi_stack::audit::{self, AuditOptions};
use kalshi_stack::{Options, Stack};

async fn production(s: &Stack) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&s.production_direct_url())
        .await
        .unwrap()
}

/// The CLI's audit on the stack's data dir: (exit code, stdout).
fn cli_audit(s: &Stack) -> (Option<i32>, String) {
    let out = Command::new(kalshi_stack::default_bin_dir().join("kalshi-stack"))
        .arg("--data-dir")
        .arg(&s.opts.data_dir)
        .arg("audit")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_passes_live_and_fails_for_each_injected_loss() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("kalshi-e2e-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut o = Options::new(dir, kalshi_stack::default_bin_dir());
    o.markets = 60;
    o.seed = 701;
    o.rate = 2000;
    o.log_level = "info".into();
    let mut s = Stack::up(o).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;

    // Live: traffic keeps flowing while the audit runs.
    let live = audit::run(
        &s.endpoints.sim_control,
        &s.production_direct_url(),
        &s.endpoints.gatherers,
        &AuditOptions::default(),
    )
    .await
    .unwrap();
    eprintln!("live:\n{}", live.table());
    assert!(live.ok, "a live, healthy stack passes:\n{}", live.table());
    assert!(
        live.audited_through_ms.is_some(),
        "a live audit states its cut"
    );
    let in_flight: u64 = live.streams.iter().map(|s| s.in_flight).sum();
    assert!(in_flight > 0, "records after the cut are in flight");
    let deltas = live.stream("orderbook_deltas").unwrap();
    assert!(deltas.present > 5_000, "traffic ran: {deltas:?}");
    assert_eq!(deltas.silent + deltas.duplicated + deltas.unexpected, 0);

    // Settled: the same stack judged whole.
    s.set_rate(0).await.unwrap();
    s.wait_settled(Duration::from_secs(240)).await.unwrap();
    let (code, out) = cli_audit(&s);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("AUDIT PASSED"), "{out}");

    let pool = production(&s).await;
    // A row deleted from production: one delta silently missing. The newest delta of the
    // busiest market (one that existed from the start, far past its subscription bound).
    let n = sqlx::query(
        "DELETE FROM orderbook_deltas WHERE ctid = (SELECT ctid FROM orderbook_deltas WHERE market_ticker = \
         (SELECT market_ticker FROM orderbook_deltas GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1) \
         ORDER BY ts_ms DESC LIMIT 1)",
    )
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 1);
    let (code, out) = cli_audit(&s);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("AUDIT FAILED"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("orderbook_deltas"))
        .unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[6], "1", "one silent delta: {line}");

    // A duplicate inserted into production: a trade stored twice under another id... the key
    // forbids that, so a ticker copied with another occurrence (the same content twice).
    let n = sqlx::query(
        "INSERT INTO tickers (market_ticker, ts, ts_ms, content_hash, occurrence, gatherer_key, body, gatherer_id) \
         SELECT market_ticker, ts, ts_ms, content_hash, occurrence + 1000, gatherer_key, body, gatherer_id \
         FROM tickers ORDER BY committed_at LIMIT 1",
    )
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 1);
    let v = audit::run(
        &s.endpoints.sim_control,
        &s.production_direct_url(),
        &s.endpoints.gatherers,
        &AuditOptions {
            settled: true,
            ..AuditOptions::default()
        },
    )
    .await
    .unwrap();
    eprintln!("injected:\n{}", v.table());
    assert!(!v.ok);
    assert_eq!(v.stream("orderbook_deltas").unwrap().silent, 1);
    assert_eq!(v.stream("tickers").unwrap().duplicated, 1);
    let (code, out) = cli_audit(&s);
    assert_eq!(code, Some(1), "{out}");
    pool.close().await;
    let codes = tokio::task::spawn_blocking(move || s.down()).await.unwrap();
    for (name, code) in codes {
        assert_eq!(code, Some(0), "{name} exits 0 on SIGTERM");
    }
}
