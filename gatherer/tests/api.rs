//! The gRPC cursor API: paging returns every row once and in order; Tail readers running while
//! the writers insert never see a hole that later fills; bad arguments get precise codes;
//! reading below the retention horizon is an explicit overrun; replies respect the size limit.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use gatherer::config::Validate as _;
use std::time::Duration;

use common::*;
use kalshi_proto::gatherer::v1 as pb;
use prost::Message as _;
use tokio_stream::StreamExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_returns_every_row_once_in_order() {
    let rig = Rig::start(sim_config(401, 20), |_| {}).await;
    rig.sim.advance(8_000);
    rig.settle(Duration::from_millis(500)).await;
    let mut c = rig.client().await;
    let mut reference: Option<Vec<i64>> = None;
    for limit in [0u32, 1, 7, 999, 5000] {
        let mut cursors = Vec::new();
        let mut after = 0;
        loop {
            let page = c
                .read(pb::ReadRequest {
                    stream: pb::Stream::Trades as i32,
                    after,
                    limit,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.records.len() <= if limit == 0 { 1000 } else { limit as usize });
            if page.records.is_empty() {
                assert_eq!(after, page.head, "an empty page only at the head");
                break;
            }
            for r in &page.records {
                assert!(r.cursor > after);
                after = r.cursor;
                cursors.push(r.cursor);
            }
        }
        match &reference {
            None => reference = Some(cursors),
            Some(r) => assert_eq!(&cursors, r, "limit {limit}"),
        }
    }
    let all = reference.unwrap();
    assert_eq!(all.len(), truth(&rig.sim, "trade").await.len());
    // Deltas are never deduplicated, so their cursors are dense.
    let d = rig.read_all(pb::Stream::OrderbookDeltas).await;
    assert!(
        d.iter().enumerate().all(|(i, r)| r.cursor == i as i64 + 1),
        "dense cursors"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_readers_see_every_committed_row_in_order_with_no_late_holes() {
    let rig = Rig::start(sim_config(402, 30), |c| {
        c.store.batch_interval = Duration::from_millis(5)
    })
    .await;
    let mut readers = Vec::new();
    for (stream, start) in [
        (pb::Stream::OrderbookDeltas, 0),
        (pb::Stream::OrderbookDeltas, 0),
        (pb::Stream::Trades, 0),
        (pb::Stream::Tickers, 0),
    ] {
        let mut c = rig.client().await;
        readers.push(tokio::spawn(async move {
            let mut s = c
                .tail(pb::TailRequest {
                    stream: stream as i32,
                    after: start,
                    limit: 500,
                })
                .await
                .unwrap()
                .into_inner();
            let mut cursors: Vec<i64> = Vec::new();
            let mut idle_heads = 0;
            while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), s.next())
                .await
                .unwrap()
            {
                let msg = msg.unwrap();
                for r in &msg.records {
                    assert!(cursors.last().is_none_or(|l| r.cursor > *l), "ascending");
                    assert!(r.cursor <= msg.head, "never beyond the head");
                    cursors.push(r.cursor);
                }
                if msg.records.is_empty() {
                    idle_heads += 1;
                    // Heartbeats while idle; stop after the traffic is over and caught up.
                    if idle_heads > 6 && cursors.last().copied().unwrap_or(0) == msg.head {
                        break;
                    }
                } else {
                    idle_heads = 0;
                }
            }
            (stream, cursors)
        }));
    }
    traffic(&rig, 3000, 4.0).await;
    for r in readers {
        let (stream, cursors) = r.await.unwrap();
        let all: Vec<i64> = rig
            .read_all(stream)
            .await
            .iter()
            .map(|r| r.cursor)
            .collect();
        assert!(!all.is_empty());
        assert_eq!(
            cursors, all,
            "{stream:?}: a Tail reader saw exactly the committed sequence"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_get_precise_codes_and_limits_are_clamped() {
    let rig = Rig::start(sim_config(403, 10), |c| {
        c.api.max_page = 50;
        c.api.default_page = 20;
    })
    .await;
    rig.sim.advance(3000);
    rig.settle(Duration::from_millis(300)).await;
    let mut c = rig.client().await;
    for (stream, after) in [(0, 0), (99, 0), (pb::Stream::Trades as i32, -1)] {
        let e = c
            .read(pb::ReadRequest {
                stream,
                after,
                limit: 10,
            })
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::InvalidArgument,
            "{stream} {after}: {e}"
        );
        let e = c
            .tail(pb::TailRequest {
                stream,
                after,
                limit: 10,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
    let e = c
        .read(pb::ReadRequest {
            stream: 0,
            after: 0,
            limit: 1,
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("unknown stream 0"), "{}", e.message());
    let page = c
        .read(pb::ReadRequest {
            stream: pb::Stream::OrderbookDeltas as i32,
            after: 0,
            limit: 1_000_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.records.len(), 50, "clamped to api.max_page");
    // Beyond the head: empty, not an error.
    let page = c
        .read(pb::ReadRequest {
            stream: pb::Stream::OrderbookDeltas as i32,
            after: i64::MAX,
            limit: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.records.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_stay_within_the_message_limit() {
    let rig = Rig::start(sim_config(404, 30), |c| c.api.max_message_bytes = 64 * 1024).await;
    rig.sim.advance(20_000);
    rig.settle(Duration::from_millis(500)).await;
    let mut c = rig.client().await;
    let mut after = 0;
    let mut pages = 0;
    let mut rows = 0;
    loop {
        let page = c
            .read(pb::ReadRequest {
                stream: pb::Stream::Tickers as i32,
                after,
                limit: 5000,
            })
            .await
            .unwrap()
            .into_inner();
        if page.records.is_empty() {
            break;
        }
        assert!(
            page.encoded_len() <= 64 * 1024,
            "{} bytes",
            page.encoded_len()
        );
        after = page.records.last().unwrap().cursor;
        rows += page.records.len();
        pages += 1;
    }
    assert!(
        pages > 3,
        "the limit split the stream into pages: {pages} pages, {rows} rows"
    );
    assert_eq!(rows, rig.read_all(pb::Stream::Tickers).await.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_below_retention_is_an_explicit_overrun() {
    let mut rig = Rig::start(sim_config(405, 10), |_| {}).await;
    rig.sim.advance(3000);
    rig.settle(Duration::from_millis(300)).await;
    let before = rig.read_all(pb::Stream::OrderbookDeltas).await.len() as i64;
    assert!(before > 100);
    rig.stop_gatherer().await;
    // Ten days later, retention (7 days for deltas) drops today's partition.
    let cfg = rig.file.clone().validate().unwrap().store;
    let cancel = tokio_util::sync::CancellationToken::new();
    let store = gatherer::store::Store::open(cfg, &cancel).await.unwrap();
    store
        .maintain(kalshi_shared::time::now_ms() + 10 * 86_400_000)
        .await
        .unwrap();
    store.pool().close().await;
    // Releases the writer lock for the gatherer that restarts.
    drop(store);
    rig.restart_gatherer().await;
    let mut c = rig.client().await;
    let e = c
        .read(pb::ReadRequest {
            stream: pb::Stream::OrderbookDeltas as i32,
            after: 0,
            limit: 10,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange);
    assert!(
        e.message().contains("retention overrun")
            && e.message().contains(&format!("up to cursor {before}")),
        "{}",
        e.message()
    );
    let e = c
        .tail(pb::TailRequest {
            stream: pb::Stream::OrderbookDeltas as i32,
            after: 5,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange);
    // From the horizon on, reading works and new data continues the cursor sequence.
    rig.sim.advance(500);
    rig.settle(Duration::from_millis(500)).await;
    let page = c
        .read(pb::ReadRequest {
            stream: pb::Stream::OrderbookDeltas as i32,
            after: before,
            limit: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!page.records.is_empty());
    assert!(page.records[0].cursor > before);
    let st = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
    // The build, for `deduplicator status` and operators.
    assert_eq!(st.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(st.git_sha, kalshi_shared::build::GIT_SHA);
    let d = st
        .streams
        .iter()
        .find(|s| s.stream == pb::Stream::OrderbookDeltas as i32)
        .unwrap();
    assert!(d.oldest > before, "oldest moved past the dropped rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tail_sends_heartbeats_with_the_head() {
    let rig = Rig::start(sim_config(406, 5), |_| {}).await;
    let mut c = rig.client().await;
    let head = rig
        .read_all(pb::Stream::OrderbookSnapshots)
        .await
        .last()
        .unwrap()
        .cursor;
    let mut s = c
        .tail(pb::TailRequest {
            stream: pb::Stream::OrderbookSnapshots as i32,
            after: head,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        let beat = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(beat.records.is_empty());
        assert_eq!(beat.head, head);
    }
}

/// A second gatherer process on the same database is refused with a clear error (it would
/// hand out the cursor ids the first one uses), and the first keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gatherer_on_the_same_database_is_refused() {
    let rig = Rig::start(sim_config(131, 4), |_| {}).await;
    let mut file = rig.file.clone();
    file.store.startup_timeout = Duration::from_secs(2);
    let err = match gatherer::start(file.validate().unwrap()).await {
        Ok(_) => panic!("a second gatherer started on the same database"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("another gatherer process is writing to this database"),
        "{err}"
    );
    let (code, _) = rig.health().await;
    assert_eq!(code, 200, "the first gatherer is unaffected");
}

/// Trades are partitioned by exchange time, so a trade backfilled late into an old day has a
/// cursor above newer days' rows. Retention must not put its mark above rows that stay: a
/// lagging reader would be told "overrun" for ever (the oldest row sits right after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_never_marks_cursors_that_still_exist_so_a_lagging_reader_moves_on() {
    let mut rig = Rig::start(sim_config(407, 3), |c| {
        c.store.retention.trades = Duration::from_secs(7 * 86_400)
    })
    .await;
    rig.stop_gatherer().await;
    let cfg = rig.file.clone().validate().unwrap().store;
    let day = 86_400_000i64;
    let now = kalshi_shared::time::now_ms();
    let today = now.div_euclid(day);
    let cancel = tokio_util::sync::CancellationToken::new();
    {
        let store = gatherer::store::Store::open(cfg.clone(), &cancel)
            .await
            .unwrap();
        let pool = store.pool();
        sqlx::query("DELETE FROM trades")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(
            gatherer::store::schema::create_partition_sql(
                gatherer::store::Stream::Trades,
                today + 9,
            ),
        ))
        .execute(pool)
        .await
        .unwrap();
        // Cursors 1..=5 yesterday, 6..=10 today, 11..=20 in nine days, then 21..=25 backfilled
        // late into today.
        let layout = [
            (1..=5, today - 1),
            (6..=10, today),
            (11..=20, today + 9),
            (21..=25, today),
        ];
        insert_trades(pool, &layout).await;
        pool.close().await;
    }
    let store = gatherer::store::Store::open(cfg, &cancel).await.unwrap();
    // Ten days on, yesterday and today have expired; the day in nine has not.
    store.maintain(now + 10 * day).await.unwrap();
    // A reader that had read nothing follows the deduplicator's rule: on an overrun, declare
    // the lost cursors and go on from the oldest one there is.
    let mut after = 0;
    let mut read = Vec::new();
    let mut overruns = Vec::new();
    for _ in 0..20 {
        match store
            .read(gatherer::store::Stream::Trades, after, 1000, 1 << 20)
            .await
        {
            Ok(page) if page.records.is_empty() => break,
            Ok(page) => {
                read.extend(page.records.iter().map(|r| r.cursor));
                after = page.through;
            }
            Err(gatherer::store::ReadError::RetentionOverrun {
                dropped_through,
                oldest,
                ..
            }) => {
                assert!(
                    oldest > dropped_through,
                    "the mark {dropped_through} covers the oldest row {oldest}: this reader would be told overrun for ever"
                );
                overruns.push((after, dropped_through));
                after = oldest - 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // Yesterday's partition (cursors 1..=5) is gone; today's waits because its late trades
    // (21..=25) sit above the rows of the day in nine.
    assert_eq!(overruns, vec![(0, 5)]);
    assert_eq!(read, (6..=25).collect::<Vec<i64>>());
    assert_eq!(
        store
            .dropped_through(gatherer::store::Stream::Trades)
            .await
            .unwrap(),
        5
    );
    // Once the day in nine has expired too, everything goes, and the mark is exact again.
    store.maintain(now + 20 * day).await.unwrap();
    assert_eq!(
        store
            .dropped_through(gatherer::store::Stream::Trades)
            .await
            .unwrap(),
        25
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM trades")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
}

/// Stores trades with the given cursors on the given days (an hour into each), as the writer
/// would.
async fn insert_trades(pool: &sqlx::PgPool, layout: &[(std::ops::RangeInclusive<i64>, i64)]) {
    let day = 86_400_000i64;
    for (ids, d) in layout {
        for id in ids.clone() {
            let ts = d * day + 3_600_000 + id;
            sqlx::query(
                "INSERT INTO trades (id, ts, ingested_at, trade_id, market_ticker, yes_price, no_price, count, taker_outcome_side, taker_book_side, is_block_trade, ts_ms, source, received_ms, conn_epoch, sid, seq)
                 VALUES ($1, TIMESTAMPTZ 'epoch' + $2::bigint * INTERVAL '1 millisecond', now(), $3, 'M', 500000, 500000, 100, 1, 'bid', false, $2, 'ws', $2, 1, 1, 0)",
            )
            .bind(id)
            .bind(ts)
            .bind(format!("t{id}"))
            .execute(pool)
            .await
            .unwrap();
        }
    }
}

/// A read that passed its retention check when retention drops the rows it is about to read:
/// it must return them (the drop waits for it) or an explicit overrun, never a page that moves
/// the reader past them as if they had never existed. A failpoint holds the read just after its
/// check while the drop runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_a_retention_drop_never_skips_rows_silently() {
    let mut rig = Rig::start(sim_config(408, 3), |c| {
        c.store.retention.trades = Duration::from_secs(7 * 86_400)
    })
    .await;
    rig.stop_gatherer().await;
    let cfg = rig.file.clone().validate().unwrap().store;
    let day = 86_400_000i64;
    let now = kalshi_shared::time::now_ms();
    let today = now.div_euclid(day);
    let cancel = tokio_util::sync::CancellationToken::new();
    {
        let store = gatherer::store::Store::open(cfg.clone(), &cancel)
            .await
            .unwrap();
        let pool = store.pool();
        sqlx::query("DELETE FROM trades")
            .execute(pool)
            .await
            .unwrap();
        insert_trades(pool, &[(1..=10, today - 1)]).await;
        pool.close().await;
    }
    let store = gatherer::store::Store::open(cfg, &cancel).await.unwrap();
    let held = kalshi_shared::failpoint::arm("gatherer::read::after_retention_check");
    let reader = store.clone();
    let read = tokio::spawn(async move {
        reader
            .read(gatherer::store::Stream::Trades, 0, 1000, 1 << 20)
            .await
    });
    held.reached().await;
    // Ten days on, the rows the read is about to fetch expire.
    let dropper = store.clone();
    let drop = tokio::spawn(async move { dropper.maintain(now + 10 * day).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    held.release();
    match read.await.unwrap() {
        Ok(page) => assert_eq!(
            page.records.iter().map(|r| r.cursor).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<i64>>(),
            "a page that skips dropped rows without an overrun: {page:?}"
        ),
        Err(gatherer::store::ReadError::RetentionOverrun {
            dropped_through, ..
        }) => {
            assert_eq!(dropped_through, 10)
        }
        Err(e) => panic!("{e}"),
    }
    drop.await.unwrap().unwrap();
    // Now they are gone, and said to be.
    assert!(matches!(
        store
            .read(gatherer::store::Stream::Trades, 0, 1000, 1 << 20)
            .await,
        Err(gatherer::store::ReadError::RetentionOverrun {
            dropped_through: 10,
            ..
        })
    ));
}
