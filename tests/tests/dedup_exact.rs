//! Three gatherers on the simulator, one deduplicator: production equals the ground truth
//! exactly, with no duplicate row, and the lag returns to zero; with the key cache on (most
//! batches COPY straight into their tables) and off (later copies of a record meet it
//! committed, so direct COPYs conflict and are merged instead).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use kalshi_e2e::world::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gatherers_merge_into_exactly_the_ground_truth() {
    let w = World::start(401, 40, 3).await;
    assert_eq!(
        w.initial.len(),
        40,
        "every market subscribed by every gatherer"
    );
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    traffic(&w, 600, 40.0).await;
    w.settle(Duration::from_millis(1500)).await;
    let pool = pool(&w.prod.url()).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    let got = assert_exact(&w, &pool).await;
    eprintln!("production: {got:?}");
    assert!(
        got.trades > 500 && got.deltas > 10_000,
        "traffic ran: {got:?}"
    );

    // Metrics agree with the tables: every record read three times, written once.
    let m = dedup_metrics(&d).await;
    let written = metric_sum(&m, "dedup_records_written_total");
    let read = metric_sum(&m, "dedup_records_read_total");
    let dropped = metric_sum(&m, "dedup_duplicates_dropped_total");
    assert!(
        read >= written + dropped - 1.0,
        "read {read}, written {written}, dropped {dropped}"
    );
    assert!(
        dropped > 2.0 * got.trades as f64,
        "two of three copies of each trade dropped: {dropped}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = dedup_metrics(&d).await;
    for l in m
        .lines()
        .filter(|l| l.starts_with("dedup_sync_lag_seconds{"))
    {
        let v: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v < 1.0, "lag back to ~0: {l}");
    }
    assert_eq!(metric_sum(&m, "dedup_rds_connected"), 1.0);
    assert_eq!(metric_sum(&m, "dedup_quarantined_total"), 0.0);
    // The key cache dropped the later copies: deltas went straight in.
    assert!(paths(&m, "orderbook_deltas", "direct") > 0.0, "{m}");
    let (code, h) = dedup_health(d.http_addr).await;
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["rds"], "connected");
    for g in ["g1", "g2", "g3"] {
        assert_eq!(h["gatherers"][g], "connected", "{h}");
    }
    d.stop().await.unwrap();
}

/// `dedup_sink_transactions_total` of one stream and path.
fn paths(m: &str, stream: &str, path: &str) -> f64 {
    m.lines()
        .filter(|l| l.starts_with("dedup_sink_transactions_total{"))
        .filter(|l| l.contains(&format!("stream=\"{stream}\"")))
        .filter(|l| l.contains(&format!("path=\"{path}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Without the key cache nothing tells the writers what is committed: a batch holding a
/// record another gatherer's copy already brought in fails its direct COPY on the unique key,
/// is rolled back whole and merged. Production still equals the ground truth exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_key_cache_conflicting_direct_copies_are_merged_exactly() {
    let w = World::start(403, 20, 3).await;
    let mut file = w.dedup_file(&w.prod.url());
    file.sink.cache_keys = 0;
    let d = start_dedup(file).await;
    traffic(&w, 400, 20.0).await;
    w.settle(Duration::from_millis(1500)).await;
    let pool = pool(&w.prod.url()).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    let got = assert_exact(&w, &pool).await;
    assert!(got.deltas > 3_000, "traffic ran: {got:?}");
    let m = dedup_metrics(&d).await;
    let (direct, merge, conflict) = (
        paths(&m, "orderbook_deltas", "direct"),
        paths(&m, "orderbook_deltas", "merge"),
        paths(&m, "orderbook_deltas", "conflict"),
    );
    eprintln!("deltas: {direct} direct, {merge} merged, {conflict} conflicts");
    assert!(conflict > 0.0 && merge > 0.0, "{m}");
    // A batch whose direct COPY conflicted is merged next.
    assert!(merge >= conflict, "{m}");
    assert_eq!(metric_sum(&m, "dedup_quarantined_total"), 0.0);
    d.stop().await.unwrap();
}
