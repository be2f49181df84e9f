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

/// A source's per-stream task that dies (here one that panics on its first page) takes the
/// deduplicator down with an error naming it, instead of leaving that gatherer's stream unread
/// while everything else runs; restarted, it completes production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_stream_task_that_dies_takes_the_service_down() {
    let w = World::start(446, 8, 2).await;
    traffic(&w, 300, 2.0).await;
    w.settle(Duration::from_millis(800)).await;
    kalshi_shared::failpoint::arm_panic("deduplicator::source::page");
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), d.wait())
        .await
        .expect("the service stops by itself");
    let e = format!("{:#}", ended.unwrap_err());
    assert!(
        e.contains("task sources/source_g") && e.contains("a stream's task panicked"),
        "{e}"
    );
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

/// Production refusing the deduplicator for a while is not the rows' fault and costs nothing:
/// first a revoked INSERT privilege on `trades` (42501) under traffic, then a changed password
/// with the deduplicator's sessions dropped (28P01 on every reconnect). The refused streams
/// stall with their cursors unmoved and nothing quarantined, the other streams go on, and once
/// each cause is fixed everything commits by itself: the oracle finds production exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refusing_writes_stalls_them_and_fixing_it_loses_nothing() {
    let w = World::start(443, 10, 3).await;
    // A production role that is not a superuser, whose password the server checks.
    w.prod
        .psql("postgres", "CREATE ROLE writer LOGIN PASSWORD 'first-pw'")
        .unwrap();
    w.prod
        .psql("postgres", "CREATE DATABASE prodw OWNER writer")
        .unwrap();
    let hba = w.prod.data_dir().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "host all writer 127.0.0.1/32 scram-sha-256\nhost all writer ::1/128 scram-sha-256\n{rules}"
        ),
    )
    .unwrap();
    w.prod.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    let url = format!(
        "postgres://writer:first-pw@127.0.0.1:{}/prodw",
        w.prod.port()
    );
    let d = start_dedup(w.dedup_file(&url)).await;
    let admin = pool(&w.prod.url_for("prodw")).await;
    w.rate(400).await;
    let cursor = |c: &std::collections::HashMap<(String, String), (i64, String)>, s: &str| {
        c.get(&("g1".to_owned(), s.to_owned())).map_or(0, |x| x.0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cursor(&prod_cursors(&admin).await, "trades") == 0 {
        assert!(std::time::Instant::now() < deadline, "no first merge");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stalled =
        |m: &str, s: &str| metric_line(m, &format!("dedup_sink_stalled{{stream=\"{s}\"}}"));

    // 1. INSERT on trades revoked, under traffic.
    sqlx::query("REVOKE INSERT ON trades FROM writer")
        .execute(&admin)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stalled(&dedup_metrics(&d).await, "trades") != 1.0 {
        assert!(std::time::Instant::now() < deadline, "no stall shown");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = prod_cursors(&admin).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = prod_cursors(&admin).await;
    assert_eq!(
        cursor(&before, "trades"),
        cursor(&after, "trades"),
        "a refused stream's cursor does not move"
    );
    assert!(
        cursor(&after, "orderbook_deltas") > cursor(&before, "orderbook_deltas"),
        "the other streams go on"
    );
    let m = dedup_metrics(&d).await;
    assert_eq!(
        metric_line(
            &m,
            "dedup_sink_stalls_total{stream=\"trades\",class=\"refused\"}"
        ),
        1.0
    );
    sqlx::query("GRANT INSERT ON trades TO writer")
        .execute(&admin)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stalled(&dedup_metrics(&d).await, "trades") != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no resume after GRANT"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2. The password changes and the deduplicator's sessions are dropped.
    sqlx::raw_sql(
        "ALTER ROLE writer PASSWORD 'second-pw'; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'writer';",
    )
    .execute(&admin)
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = dedup_metrics(&d).await;
        if stalled(&m, "orderbook_deltas") == 1.0 {
            assert!(
                metric_line(
                    &m,
                    "dedup_sink_stalls_total{stream=\"orderbook_deltas\",class=\"refused\"}"
                ) >= 1.0,
                "{m}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stall on a bad password"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    sqlx::query("ALTER ROLE writer PASSWORD 'first-pw'")
        .execute(&admin)
        .await
        .unwrap();

    w.rate(0).await;
    w.settle(Duration::from_millis(1500)).await;
    w.wait_synced(&admin, Duration::from_secs(120)).await;
    let m = dedup_metrics(&d).await;
    for s in ["trades", "orderbook_deltas", "tickers"] {
        assert_eq!(stalled(&m, s), 0.0, "{s}");
    }
    assert_eq!(metric_sum(&m, "dedup_quarantined_total"), 0.0);
    let q: i64 = sqlx::query_scalar("SELECT count(*) FROM quarantine")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(q, 0, "nothing quarantined");
    assert_exact(&w, &admin).await;
    d.stop().await.unwrap();
}

/// A gatherer's database goes back (restored from an older copy, the same instance id): its
/// heads fall below the cursors production stores for it, and the ids it hands out again would
/// be skipped for ever. The deduplicator sees the heads below its cursors, reads the gatherer
/// from the start under a new incarnation, and production is exact (one gatherer: nobody else
/// holds the records).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gatherer_whose_database_went_back_is_read_again_from_the_start() {
    let mut w = World::start(447, 8, 1).await;
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    let prod = pool(&w.prod.url()).await;
    traffic(&w, 400, 4.0).await;
    w.settle(Duration::from_millis(1500)).await;
    w.wait_synced(&prod, Duration::from_secs(60)).await;
    let instance = w.gatherers[0].instance_id.clone();
    w.gatherers[0].stop().await;
    let g1 = pool(&w.gatherers[0].file.store.database_url.0).await;
    for table in [
        "trades",
        "orderbook_deltas",
        "orderbook_snapshots",
        "tickers",
    ] {
        let n = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE id > (SELECT max(id) - 300 FROM {table})"
        )))
        .execute(&g1)
        .await
        .unwrap()
        .rows_affected();
        assert!(n > 0, "{table}");
    }
    g1.close().await;
    let file = w.gatherers[0].file.clone();
    w.gatherers[0] = GProc::start(file).await;
    assert_eq!(w.gatherers[0].instance_id, instance, "the same instance id");
    w.gatherers[0].wait_healthy(Duration::from_secs(60)).await;
    traffic(&w, 400, 4.0).await;
    w.settle(Duration::from_millis(1500)).await;
    w.wait_synced(&prod, Duration::from_secs(90)).await;
    assert_exact(&w, &prod).await;
    let m = dedup_metrics(&d).await;
    assert_eq!(
        metric_line(&m, "dedup_head_regressions_total{gatherer=\"g1\"}"),
        1.0
    );
    let stored: String = sqlx::query_scalar(
        "SELECT instance_id FROM sync_cursors WHERE gatherer_id = 'g1' AND stream = 'orderbook_deltas'",
    )
    .fetch_one(&prod)
    .await
    .unwrap();
    assert!(stored.starts_with(&format!("{instance}~")), "{stored}");
    d.stop().await.unwrap();
}

/// Lifecycle messages have no id and no time, and a market paused twice publishes two
/// identical ones. Their identity must survive the loss of every gatherer database: paused,
/// resumed, paused and resumed again within a second (identical pairs, every gatherer sees
/// both), then every gatherer replaced by a fresh instance, then the same pause once more.
/// Production holds each message exactly as often as the exchange published it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_lifecycle_messages_survive_the_replacement_of_every_gatherer() {
    let mut w = World::start(448, 6, 2).await;
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    let prod = pool(&w.prod.url()).await;
    let market = w.initial.iter().min().unwrap().clone();
    let control = w.control();
    let pause = |paused: bool| {
        let (control, market) = (control.clone(), market.clone());
        async move {
            control
                .post(
                    "/lifecycle/pause",
                    serde_json::json!({"market_ticker": market, "paused": paused}),
                )
                .await
                .unwrap();
        }
    };
    for paused in [true, false, true, false] {
        pause(paused).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    w.settle(Duration::from_millis(1500)).await;
    w.wait_synced(&prod, Duration::from_secs(60)).await;
    let count = |prod: sqlx::PgPool, market: String| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM lifecycle WHERE ticker = $1 AND event_type = 'deactivated'",
        )
        .bind(market)
        .fetch_one(&prod)
        .await
        .unwrap()
    };
    assert_eq!(
        count(prod.clone(), market.clone()).await,
        4,
        "two identical pairs"
    );

    // Every gatherer replaced: new empty databases, the same ids and addresses.
    for (i, g) in ["g1", "g2"].iter().enumerate() {
        w.gatherers[i].stop().await;
        let fresh = w.gpg.create_database(&format!("{g}_fresh")).unwrap();
        let mut file = w.gatherers[i].file.clone();
        file.store.database_url = gatherer::config::Secret(fresh);
        w.gatherers[i] = GProc::start(file).await;
    }
    for g in &w.gatherers {
        g.wait_healthy(Duration::from_secs(60)).await;
    }
    w.settle(Duration::from_millis(2500)).await;
    pause(true).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    pause(false).await;
    w.settle(Duration::from_millis(1500)).await;
    w.wait_synced(&prod, Duration::from_secs(90)).await;
    assert_eq!(
        count(prod.clone(), market.clone()).await,
        6,
        "the new instances' identical pause is a new message"
    );
    assert_exact(&w, &prod).await;
    d.stop().await.unwrap();
}
