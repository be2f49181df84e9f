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

/// A deduplicator that fell behind a gatherer's retention declares a gap over the dropped
/// records' exchange times only (the hole, never the stream from 0 to now, which would excuse
/// any later loss), goes on from the oldest record there is, and merges the rest exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_overrun_declares_only_the_times_of_the_dropped_records() {
    let mut w = World::start(422, 3, 1).await;
    w.gatherers[0].stop().await;
    let mut file = w.gatherers[0].file.clone();
    file.store.retention.trades = Duration::from_secs(7 * 86_400);
    let day = 86_400_000i64;
    let now = kalshi_shared::time::now_ms();
    let today = now.div_euclid(day);
    let ts = |d: i64, id: i64| d * day + 3_600_000 + id;
    {
        let cancel = tokio_util::sync::CancellationToken::new();
        let store = gatherer::store::Store::open(
            gatherer::config::Validate::validate(file.clone())
                .unwrap()
                .store,
            &cancel,
        )
        .await
        .unwrap();
        let g = store.pool();
        sqlx::query("DELETE FROM trades").execute(g).await.unwrap();
        // Cursors 1..=5 nine days ago and 6..=10 eight days ago (past the 7-day retention),
        // 11..=15 yesterday (kept).
        for (ids, d) in [
            (1..=5, today - 9),
            (6..=10, today - 8),
            (11..=15, today - 1),
        ] {
            for id in ids {
                sqlx::query(
                    "INSERT INTO trades (id, ts, ingested_at, trade_id, market_ticker, yes_price, no_price, count, taker_outcome_side, taker_book_side, is_block_trade, ts_ms, source, received_ms, conn_epoch, sid, seq)
                     VALUES ($1, TIMESTAMPTZ 'epoch' + $2::bigint * INTERVAL '1 millisecond', now(), $3, 'OVERRUN-M', 500000, 500000, 100, 1, 'bid', false, $2, 'ws', $2, 1, 1, 0)",
                )
                .bind(id)
                .bind(ts(d, id))
                .bind(format!("overrun-{id}"))
                .execute(g)
                .await
                .unwrap();
            }
        }
        store.maintain(now).await.unwrap();
        assert_eq!(
            store
                .dropped_through(gatherer::store::Stream::Trades)
                .await
                .unwrap(),
            10,
            "retention dropped the two old days"
        );
        store.pool().close().await;
    }
    w.gatherers[0] = GProc::start(file).await;
    w.gatherers[0].wait_healthy(Duration::from_secs(30)).await;
    // The deduplicator had read nothing of this gatherer: cursors 1..=10 are gone.
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    let pool = pool(&w.prod.url()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while prod_cursors(&pool)
        .await
        .get(&("g1".into(), "trades".into()))
        .map(|c| c.0)
        != Some(15)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the trades after the overrun were merged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let trades: Vec<String> = sqlx::query_scalar(
        "SELECT trade_id FROM trades WHERE market_ticker = 'OVERRUN-M' ORDER BY ts_ms",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        trades,
        (11..=15)
            .map(|i| format!("overrun-{i}"))
            .collect::<Vec<_>>()
    );
    let gaps: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT stream, from_ms, to_ms FROM gaps WHERE reason = 'dedup_retention_overrun'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(gaps.len(), 1, "one declaration: {gaps:?}");
    let (stream, from_ms, to_ms) = gaps[0].clone();
    assert_eq!(stream, "trades");
    // The gap holds every dropped record's time and none of a kept one's.
    assert!(
        from_ms <= ts(today - 9, 1) && to_ms >= ts(today - 8, 10),
        "the dropped records lie in the gap: [{from_ms}, {to_ms}]"
    );
    assert!(
        from_ms >= (today - 10) * day && to_ms < ts(today - 1, 11),
        "the gap spans the dropped days, not the stream: [{from_ms}, {to_ms}]"
    );
    let m = dedup_metrics(&d).await;
    assert_eq!(
        kalshi_stack::metric_with(&m, "dedup_retention_overruns_total", "gatherer", "g1"),
        1.0
    );
    d.stop().await.unwrap();
}
