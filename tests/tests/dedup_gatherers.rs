//! Gatherers failing under the deduplicator: one killed, then two of three killed, then one
//! replaced by a fresh instance (empty database, new instance_id) and the other restarted.
//! Production is exact after each step, and the replaced gatherer's cursors were reset loudly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use kalshi_e2e::world::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_replaced_gatherers_leave_production_exact() {
    let mut w = World::start(421, 30, 3).await;
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    let pool = pool(&w.prod.url()).await;

    // One gatherer killed during traffic.
    w.rate(500).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    w.gatherers[2].kill();
    w.disturbed.insert("g3".into());
    tokio::time::sleep(Duration::from_secs(5)).await;
    w.rate(0).await;
    w.settle(Duration::from_millis(1500)).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    let one = assert_exact(&w, &pool).await;
    eprintln!("one killed: {one:?}");
    let (code, h) = dedup_health(d.http_addr).await;
    assert_eq!((code, h["status"].as_str()), (200, Some("degraded")), "{h}");
    assert_eq!(h["gatherers"]["g3"], "down", "{h}");

    // Two of three killed.
    w.rate(500).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.gatherers[1].kill();
    w.disturbed.insert("g2".into());
    tokio::time::sleep(Duration::from_secs(6)).await;
    w.rate(0).await;
    w.settle(Duration::from_millis(1500)).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    let two = assert_exact(&w, &pool).await;
    eprintln!("two killed: {two:?}");
    assert!(two.trades > one.trades);

    // g2 replaced by a fresh instance (new empty database, same id and address); g3 restarted
    // on its own database.
    let old_instance = w.gatherers[1].instance_id.clone();
    let fresh_url = w.gpg.create_database("g2_fresh").unwrap();
    let mut file = w.gatherers[1].file.clone();
    file.store.database_url = gatherer::config::Secret(fresh_url);
    w.gatherers[1] = GProc::start(file).await;
    assert_ne!(w.gatherers[1].instance_id, old_instance);
    let file = w.gatherers[2].file.clone();
    w.gatherers[2] = GProc::start(file).await;
    for g in &w.gatherers {
        g.wait_healthy(Duration::from_secs(60)).await;
    }
    w.rate(500).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    w.rate(0).await;
    w.settle(Duration::from_millis(1500)).await;
    w.wait_synced(&pool, Duration::from_secs(90)).await;
    let back = assert_exact(&w, &pool).await;
    eprintln!("replaced and restarted: {back:?}");
    let cursors = prod_cursors(&pool).await;
    assert_eq!(
        cursors[&("g2".to_owned(), "trades".to_owned())].1,
        w.gatherers[1].instance_id,
        "g2's cursors follow its new instance"
    );
    let m = dedup_metrics(&d).await;
    assert_eq!(
        metric_line(&m, "dedup_instance_resets_total{gatherer=\"g2\"}"),
        1.0,
        "one loud reset for g2"
    );
    assert_eq!(
        metric_line(&m, "dedup_instance_resets_total{gatherer=\"g3\"}"),
        0.0,
        "g3 kept its instance"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (code, h) = dedup_health(d.http_addr).await;
    assert_eq!((code, h["status"].as_str()), (200, Some("healthy")), "{h}");
    d.stop().await.unwrap();
}
