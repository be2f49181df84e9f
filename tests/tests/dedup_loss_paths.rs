//! Loss paths found in review, each proven closed against real gatherers, a real production
//! database and the oracle.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use kalshi_e2e::world::*;

/// A gatherer's head can name ids that hold no row (rows its database skipped as duplicates
/// or refused). Readers are moved past them: production's cursors reach the head, the Tail
/// does not spin or fall silent, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_ids_below_the_head_do_not_stall_the_cursors() {
    let w = World::start(441, 10, 2).await;
    traffic(&w, 300, 3.0).await;
    w.settle(Duration::from_millis(800)).await;
    // The top ids of g1's tickers and trades stop existing (g2 still holds the records).
    let g1 = pool(&w.gatherers[0].file.store.database_url.0).await;
    for table in ["tickers", "trades"] {
        let n = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE id > (SELECT max(id) - 3 FROM {table})"
        )))
        .execute(&g1)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(n, 3, "{table}");
    }
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    let prod = pool(&w.prod.url()).await;
    w.wait_synced(&prod, Duration::from_secs(60)).await;
    let m = dedup_metrics(&d).await;
    assert_eq!(
        metric_line(
            &m,
            "dedup_source_errors_total{gatherer=\"g1\",kind=\"silence\"}"
        ),
        0.0,
        "the Tail never fell silent"
    );
    assert_exact(&w, &prod).await;
    d.stop().await.unwrap();
}

/// A task that dies (here a sink that panics) takes the deduplicator down with an error and a
/// clear log line, so that systemd restarts it, instead of leaving it half alive; what it
/// committed stays committed and the restarted service completes production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_dies_takes_the_service_down_and_a_restart_completes_it() {
    let w = World::start(442, 8, 2).await;
    traffic(&w, 300, 2.0).await;
    w.settle(Duration::from_millis(800)).await;
    let mut file = w.dedup_file(&w.prod.url());
    file.testing.panic_sink = "tickers".into();
    let d = start_dedup(file).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), d.wait())
        .await
        .expect("the service stops by itself");
    let e = format!("{:#}", ended.unwrap_err());
    assert!(e.contains("task sinks/tickers panicked"), "{e}");
    // Restarted without the fault, it completes production from the stored cursors.
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    let prod = pool(&w.prod.url()).await;
    w.wait_synced(&prod, Duration::from_secs(60)).await;
    assert_exact(&w, &prod).await;
    d.stop().await.unwrap();
}

/// The exchange clock steps back and stands still: timestamps go backwards into milliseconds
/// that already carried records, and many identical deltas share one millisecond, while every
/// connection drops and reconnects inside it. Occurrences never restart, so no real delta is
/// merged away: production holds the truth's exact multiset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_going_backwards_and_reconnects_inside_a_millisecond_lose_no_delta() {
    let mut w = World::start(443, 4, 3).await;
    w.rate(800).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = w
        .control()
        .fault(serde_json::json!({"fault": "clock_freeze", "duration_ms": 3000, "offset_ms": 800}))
        .await
        .unwrap();
    let frozen = v["frozen_at_ms"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Every gatherer's connections drop inside the frozen millisecond.
    w.control()
        .fault(serde_json::json!({"fault": "drop"}))
        .await
        .unwrap();
    for g in &w.gatherers {
        w.disturbed.insert(g.file.gatherer_id.clone());
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    w.rate(0).await;
    for g in &w.gatherers {
        g.wait_healthy(Duration::from_secs(30)).await;
    }
    w.settle(Duration::from_millis(1000)).await;
    // The truth really repeats: identical deltas in the frozen millisecond, which had records
    // before the clock stepped back onto it.
    let truth = w.control().truth().await.unwrap();
    let mut at_frozen: std::collections::HashMap<_, u32> = std::collections::HashMap::new();
    for d in truth.deltas.iter().filter(|d| d.ts_ms == frozen) {
        *at_frozen.entry(d.key.clone()).or_default() += 1;
    }
    assert!(
        at_frozen.values().any(|n| *n > 1),
        "the frozen millisecond repeats deltas: {} distinct",
        at_frozen.len()
    );
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    let prod = pool(&w.prod.url()).await;
    w.wait_synced(&prod, Duration::from_secs(60)).await;
    // assert_exact fails on any silent loss: identical deltas of the frozen millisecond are all
    // kept, and those published while every connection was down lie in windows every gatherer
    // declared (they reach back to the frozen millisecond); every trade is backfilled, those
    // stamped with the frozen time included.
    let got = assert_exact(&w, &prod).await;
    let deltas = got.verdict.stream("orderbook_deltas").unwrap();
    assert_eq!(deltas.silent, 0, "{deltas:?}");
    d.stop().await.unwrap();
}
