//! The local database stopped and restarted mid-stream: nothing is lost within the writers'
//! buffers; beyond them, the dropped span is declared as a gap (and trades are backfilled).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::time::Duration;

use common::*;
use kalshi_proto::gatherer::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_within_the_buffer_loses_nothing() {
    let mut rig = Rig::start(sim_config(301, 20), |_| {}).await;
    rig.rate(1000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| rig.pg.stop()).unwrap();
    // The database is pinged every 2 s (2 s deadline): it is reported down within a few
    // seconds, later on a busy machine, never not at all.
    kalshi_testkit::wait::wait_for(
        "the database reported down",
        Duration::from_secs(15),
        async || rig.health().await.1["db"] == "unavailable",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, h) = rig.health().await;
    assert_eq!((code, h["db"].as_str()), (503, Some("unavailable")), "{h}");
    assert!(
        h["ws_connections"].as_u64().unwrap() > 0,
        "intake goes on while the database is down"
    );
    // Not ready, but alive: a database outage must never get the instance replaced.
    let (ready, r) = rig.health_at("/health/ready").await;
    assert_eq!((ready, r["db"].as_str()), (503, Some("unavailable")), "{r}");
    let (live, l) = rig.health_at("/health/live").await;
    assert_eq!((live, l["status"].as_str()), (200, Some("alive")), "{l}");
    // Every group runs its tasks: 3 connections + registry, exchange watcher, history import,
    // backfill, maintenance, lock, credential reload, ping; 10 record writers and the
    // open-holes recorder;
    // the gaps writer; gRPC (plaintext here: no TLS accept loop), HTTP and metrics servers.
    assert_eq!(
        l["tasks"],
        serde_json::json!({"intake": 11, "writers": 11, "gaps_writer": 1, "servers": 3}),
        "{l}"
    );
    tokio::task::block_in_place(|| rig.pg.restart()).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    rig.rate(0).await;
    rig.wait_healthy(Duration::from_secs(30)).await;
    rig.settle(Duration::from_secs(1)).await;
    assert!(
        rig.metric("writer_errors_total").await > 0.0,
        "the writers did see the outage"
    );
    let cov = assert_complete_or_covered(&rig).await;
    assert!(cov.gaps.is_empty(), "{:?}", cov.gaps);
    assert_eq!(cov.stored_deltas, cov.truth_deltas);
    assert_eq!(rig.metric("writer_dropped_rows_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_beyond_the_buffer_is_declared_and_trades_are_backfilled() {
    let mut rig = Rig::start(sim_config(302, 20), |c| {
        c.store.batch_rows = 200;
        c.store.buffer_rows = 500;
        c.store.channel_rows = 500;
    })
    .await;
    rig.rate(2000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| rig.pg.stop()).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    tokio::task::block_in_place(|| rig.pg.restart()).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    rig.rate(0).await;
    rig.wait_healthy(Duration::from_secs(30)).await;
    rig.settle(Duration::from_secs(1)).await;
    wait_trades_complete(&rig, Duration::from_secs(60)).await;
    assert!(rig.metric("writer_dropped_rows_total").await > 0.0);
    let cov = assert_complete_or_covered(&rig).await;
    let overflow: Vec<&pb::Gap> = cov
        .gaps
        .iter()
        .filter(|g| g.reason == "buffer_overflow")
        .collect();
    assert!(
        overflow
            .iter()
            .any(|g| g.stream == pb::Stream::OrderbookDeltas as i32 && g.market_ticker.is_empty()),
        "{:?}",
        cov.gaps
    );
    assert!(
        cov.missing_covered > 0,
        "rows were dropped and are declared: {cov:?}"
    );
    assert!(
        !overflow
            .iter()
            .any(|g| g.stream == pb::Stream::Trades as i32),
        "dropped trades go to backfill, not to a gap"
    );
}

/// The session holding the database's writer lock is lost while the gatherer runs: the lock
/// is taken again; and if another session took it first (another gatherer on this database),
/// the gatherer stops with an error instead of writing next to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_writer_lock_is_taken_again_or_the_gatherer_stops() {
    let mut rig = Rig::start(sim_config(303, 5), |_| {}).await;
    let db = sqlx::PgPool::connect(&rig.pg.url()).await.unwrap();
    let holder = || {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i32>(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted",
            )
            .fetch_optional(&db)
            .await
            .unwrap()
        }
    };
    let first = holder().await.expect("the gatherer holds its writer lock");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(first)
        .execute(&db)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let second = loop {
        if let Some(p) = holder().await.filter(|p| *p != first) {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never taken again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rig.metric("writer_lock_lost_total").await, 1.0);
    rig.wait_healthy(Duration::from_secs(10)).await;

    // Now another session is first in line: ours waits on the lock while its holder dies.
    let mut other = db.acquire().await.unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(second)
        .execute(&mut *other)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(gatherer::store::WRITER_LOCK_KEY)
        .execute(&mut *other)
        .await
        .unwrap();
    let g = rig.gatherer.take().unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), g.wait())
        .await
        .expect("the gatherer must stop once another session holds its lock");
    let e = ended.expect_err("it stops with an error (non-zero exit)");
    assert!(format!("{e:#}").contains("ended unexpectedly"), "{e:#}");
}
