//! Three gatherers on the simulator, one deduplicator: production equals the ground truth
//! exactly, with no duplicate row, and the lag returns to zero.

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
    let (code, h) = dedup_health(d.http_addr).await;
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["rds"], "connected");
    for g in ["g1", "g2", "g3"] {
        assert_eq!(h["gatherers"][g], "connected", "{h}");
    }
    d.stop().await.unwrap();
}
