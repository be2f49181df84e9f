//! The local store's quieter loss paths, each against a real PostgreSQL that the test stops
//! and starts: gap records beyond the gaps writer's buffer, rows still held when the shutdown
//! deadline passes with the database down, and one trade seen with whole seconds (legacy
//! WebSocket `ts`) and with milliseconds (REST), and pages that cover a window of ids.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use gatherer::config::Validate as _;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use gatherer::config::FileConfig;
use gatherer::store::rows::{DeltaRow, GapReason, GapRow, Origin, Source, TradeRow};
use gatherer::store::{Store, StoreConfig, Stream};
use kalshi_shared::service::{Service, Stop, Supervisor};
use kalshi_shared::wire::Side;
use kalshi_testkit::pg::PgCluster;
use sqlx::Row as _;
use tokio_util::sync::CancellationToken;

fn store_config(
    pg: &PgCluster,
    spill: &std::path::Path,
    tweak: impl FnOnce(&mut FileConfig),
) -> StoreConfig {
    let mut f = FileConfig::fast_local(
        "g1",
        "http://127.0.0.1:9/trade-api/v2".into(),
        "ws://127.0.0.1:9/trade-api/ws/v2".into(),
        KEY_ID,
        key_file(),
        &pg.url(),
    );
    f.store.spill_dir = spill.to_path_buf();
    tweak(&mut f);
    f.validate().unwrap().store
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gatherer-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The store's writers under the service skeleton, as the gatherer runs them (record
/// writers, then the gaps writer); `stop()` is the gatherer's ordered stop.
fn start_writers(store: &Store) -> (gatherer::store::Sinks, Service) {
    let mut sup = Supervisor::new("test");
    let writers = sup.group("writers", Stop::InTurn);
    let gaps = sup.group("gaps_writer", Stop::InTurn);
    let sinks = store.start_writers(
        &writers,
        &gaps,
        std::sync::Arc::new(|_| {}),
        &tokio::runtime::Handle::current(),
    );
    (sinks, sup.start(Duration::from_secs(60), || async {}))
}

fn delta(i: i64) -> DeltaRow {
    DeltaRow {
        market_ticker: format!("M{}", i % 7),
        ts_ms: Some(1_800_000_000_000 + i),
        side: Side::Yes,
        price: 10_000 * (1 + i % 90),
        delta: 100 + i,
        occurrence: 0,
        origin: Origin::default(),
    }
}

fn trade(id: &str, ts_ms: i64, source: Source) -> TradeRow {
    TradeRow {
        trade_id: id.into(),
        market_ticker: "M".into(),
        yes_price: 420_000,
        no_price: 580_000,
        count: 300,
        taker_outcome_side: Some(Side::Yes),
        taker_book_side: None,
        is_block_trade: false,
        ts_ms,
        source,
        origin: Origin::default(),
    }
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}

async fn wait_count(pool: &sqlx::PgPool, sql: &str, want: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(pool, sql).await;
        if n == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql}: {n}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With the database down, gap records beyond the gaps writer's channel and buffer are not
/// lost: they come back as one whole-stream gap per stream, covering all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_records_beyond_the_gaps_buffer_are_declared_not_lost() {
    init();
    let mut pg = PgCluster::start_default().unwrap();
    let spill = scratch("gaps");
    let cfg = store_config(&pg, &spill, |f| {
        f.store.channel_rows = 5;
        f.store.buffer_rows = 5;
        f.store.batch_rows = 5;
    });
    let shutdown = CancellationToken::new();
    let store = Store::open(cfg, &shutdown).await.unwrap();
    let (sinks, writers) = start_writers(&store);
    tokio::task::block_in_place(|| pg.stop()).unwrap();
    // Give the gaps writer time to fail once and hold its buffer.
    sinks.gaps.push(GapRow {
        stream: Stream::Tickers,
        market_ticker: Some("FIRST".into()),
        from_ms: 1,
        to_ms: 2,
        reason: GapReason::Disconnect,
        detail: String::new(),
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut accepted = 0;
    for i in 0..40 {
        let stream = if i % 2 == 0 {
            Stream::OrderbookDeltas
        } else {
            Stream::Tickers
        };
        if sinks.gaps.push(GapRow {
            stream,
            market_ticker: Some(format!("M{i}")),
            from_ms: 1_000 + i,
            to_ms: 1_000 + i + 10,
            reason: GapReason::SeqGap,
            detail: String::new(),
        }) {
            accepted += 1;
        }
    }
    assert!(accepted < 40, "the gaps channel must have overflowed");
    tokio::task::block_in_place(|| pg.restart()).unwrap();
    // Every accepted record is stored, plus one overflow record per stream that lost some.
    let pool = store.pool();
    wait_count(
        pool,
        "SELECT count(*) FROM gaps WHERE reason <> 'gaps_overflow'",
        accepted + 1,
    )
    .await;
    let overflow = sqlx::query(
        "SELECT stream, market_ticker, from_ms, to_ms FROM gaps WHERE reason = 'gaps_overflow' ORDER BY stream",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let stored: Vec<(String, i64)> =
        sqlx::query("SELECT stream, from_ms FROM gaps WHERE reason = 'seq_gap'")
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    // Every dropped record's window lies inside its stream's overflow record.
    for i in 0..40i64 {
        let stream = if i % 2 == 0 {
            "orderbook_deltas"
        } else {
            "tickers"
        };
        if stored.contains(&(stream.to_owned(), 1_000 + i)) {
            continue;
        }
        let covered = overflow.iter().any(|r| {
            r.get::<String, _>(0) == stream
                && r.get::<Option<String>, _>(1).is_none()
                && r.get::<i64, _>(2) <= 1_000 + i
                && r.get::<i64, _>(3) >= 1_000 + i + 10
        });
        assert!(
            covered,
            "gap record {i} ({stream}) was dropped and nothing covers it"
        );
    }
    assert!(
        !overflow.is_empty() && overflow.len() <= 2,
        "{}",
        overflow.len()
    );
    writers.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&spill);
}

/// The shutdown deadline passes with the database down: what the writers still hold (deltas,
/// trades, gap records) is spilled to disk and loaded, once, at the next start, with fresh
/// cursors after the ones already stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_held_at_a_shutdown_with_the_database_down_are_loaded_at_the_next_start() {
    init();
    let mut pg = PgCluster::start_default().unwrap();
    let spill = scratch("spill");
    let cfg = store_config(&pg, &spill, |f| {
        f.store.flush_deadline = Duration::from_millis(500);
    });
    let shutdown = CancellationToken::new();
    let store = Store::open(cfg.clone(), &shutdown).await.unwrap();
    let instance = store.instance_id().to_owned();
    let (sinks, writers) = start_writers(&store);
    for i in 0..10 {
        assert!(sinks.deltas.push(delta(i)));
    }
    wait_count(store.pool(), "SELECT count(*) FROM orderbook_deltas", 10).await;
    tokio::task::block_in_place(|| pg.stop()).unwrap();
    for i in 10..60 {
        assert!(sinks.deltas.push(delta(i)));
    }
    assert!(
        sinks
            .trades
            .push(trade("t1", 1_800_000_000_123, Source::Ws))
    );
    assert!(sinks.gaps.push(GapRow {
        stream: Stream::Tickers,
        market_ticker: None,
        from_ms: 5,
        to_ms: 6,
        reason: GapReason::Disconnect,
        detail: "held at shutdown".into(),
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    writers.stop().await.unwrap();
    drop(sinks);
    drop(store);
    let files: Vec<String> = std::fs::read_dir(spill.join(&instance))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.len(),
        3,
        "one file per writer that held rows: {files:?}"
    );

    tokio::task::block_in_place(|| pg.restart()).unwrap();
    let store = Store::open(cfg.clone(), &shutdown).await.unwrap();
    let pool = store.pool();
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM orderbook_deltas ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(ids, (1..=60).collect::<Vec<i64>>());
    let deltas: Vec<i64> = sqlx::query_scalar("SELECT delta FROM orderbook_deltas ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(deltas, (0..60).map(|i| 100 + i).collect::<Vec<i64>>());
    assert_eq!(
        count(pool, "SELECT count(*) FROM trades WHERE trade_id = 't1'").await,
        1
    );
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM gaps WHERE detail = 'held at shutdown'"
        )
        .await,
        1
    );
    assert_eq!(
        store.head(Stream::OrderbookDeltas),
        60,
        "readers see the loaded rows"
    );
    assert_eq!(std::fs::read_dir(spill.join(&instance)).unwrap().count(), 0);
    drop(store);
    // A second start loads nothing again.
    let store = Store::open(cfg, &shutdown).await.unwrap();
    assert_eq!(
        count(store.pool(), "SELECT count(*) FROM orderbook_deltas").await,
        60
    );
    assert_eq!(
        count(store.pool(), "SELECT count(*) FROM spill_replayed").await,
        3
    );
    let _ = std::fs::remove_dir_all(&spill);
}

/// A file that cannot be read does not stop the start: it is set aside and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_spill_file_is_set_aside_and_the_start_goes_on() {
    init();
    let pg = PgCluster::start_default().unwrap();
    let spill = scratch("damaged");
    let cfg = store_config(&pg, &spill, |_| {});
    let shutdown = CancellationToken::new();
    let instance = Store::open(cfg.clone(), &shutdown)
        .await
        .unwrap()
        .instance_id()
        .to_owned();
    let dir = spill.join(&instance);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tickers-1-1.copy"), b"PGCOPY\n\xff\r\n\0garbage").unwrap();
    let store = Store::open(cfg, &shutdown).await.unwrap();
    assert_eq!(count(store.pool(), "SELECT count(*) FROM tickers").await, 0);
    assert!(dir.join("tickers-1-1.corrupt").exists());
    let _ = std::fs::remove_dir_all(&spill);
}

/// One trade seen with whole seconds (a legacy WebSocket `ts`) and with milliseconds (REST)
/// is one row, in either order and within one batch; the millisecond version wins a tie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_seen_in_seconds_and_in_milliseconds_is_stored_once() {
    init();
    let pg = PgCluster::start_default().unwrap();
    let spill = scratch("legacy");
    // Batches close at 4 rows (or after a second), so the one-batch case below is one batch.
    let cfg = store_config(&pg, &spill, |f| {
        f.store.batch_rows = 4;
        f.store.batch_interval = Duration::from_secs(1);
    });
    let shutdown = CancellationToken::new();
    let store = Store::open(cfg, &shutdown).await.unwrap();
    let (sinks, writers) = start_writers(&store);
    let s = 1_800_000_123_000;
    let pool = store.pool().clone();
    // Seconds first, then milliseconds.
    sinks.trades.push(trade("a", s, Source::Ws));
    wait_count(&pool, "SELECT count(*) FROM trades", 1).await;
    sinks.trades.push(trade("a", s + 456, Source::Rest));
    // Milliseconds first, then seconds.
    sinks.trades.push(trade("b", s + 789, Source::Rest));
    let m = sinks.trades.mark();
    assert!(sinks.trades.settled(m).await);
    sinks.trades.push(trade("b", s, Source::Ws));
    // Both in one batch.
    sinks.trades.push(trade("c", s, Source::Ws));
    sinks.trades.push(trade("c", s + 1, Source::Rest));
    // Another trade id in the same second is another trade.
    sinks.trades.push(trade("d", s, Source::Ws));
    let m = sinks.trades.mark();
    assert!(sinks.trades.settled(m).await);
    let rows: Vec<(String, i64)> =
        sqlx::query("SELECT trade_id, ts_ms FROM trades ORDER BY trade_id")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    assert_eq!(
        rows,
        vec![
            ("a".into(), s),
            ("b".into(), s + 789),
            ("c".into(), s + 1),
            ("d".into(), s)
        ]
    );
    writers.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&spill);
}

/// Every applied migration is recorded with its checksum; a migration edited after it was
/// applied, or one this binary does not know, stops the start with the version named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_or_unknown_applied_migration_is_refused() {
    init();
    let pg = PgCluster::start_default().unwrap();
    let spill = scratch("migrations");
    let cfg = store_config(&pg, &spill, |_| {});
    let shutdown = CancellationToken::new();
    let pool = {
        let store = Store::open(cfg.clone(), &shutdown).await.unwrap();
        store.pool().clone()
    };
    let n = gatherer::store::schema::MIGRATIONS.len() as i64;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM schema_migrations WHERE length(checksum) = 64"
        )
        .await,
        n
    );
    sqlx::query("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")
        .execute(&pool)
        .await
        .unwrap();
    let e = Store::open(cfg.clone(), &shutdown)
        .await
        .err()
        .expect("refused");
    assert!(
        format!("{e:#}").contains("migration 2 was edited after it was applied"),
        "{e:#}"
    );
    sqlx::query("UPDATE schema_migrations SET checksum = NULL")
        .execute(&pool)
        .await
        .unwrap();
    drop(Store::open(cfg.clone(), &shutdown).await.unwrap());
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM schema_migrations WHERE length(checksum) = 64"
        )
        .await,
        n,
        "checksums missing from before are recorded"
    );
    sqlx::query("INSERT INTO schema_migrations (version, checksum) VALUES (99, 'x')")
        .execute(&pool)
        .await
        .unwrap();
    let e = Store::open(cfg, &shutdown).await.err().expect("refused");
    assert!(
        format!("{e:#}").contains("migration 99 is applied in the database but unknown"),
        "{e:#}"
    );
    let _ = std::fs::remove_dir_all(&spill);
}

/// A page covers the next `limit` ids at most: every stored row is read once and in order, a
/// run of unused ids longer than a page is passed with empty pages whose `through` moves on,
/// and no page reaches past its window. (Asked for everything up to the head, a backlog the
/// database had not analysed yet was scanned whole for every page: catch-up was quadratic.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cover_a_window_of_ids_and_pass_runs_of_unused_ones() {
    init();
    let pg = PgCluster::start_default().unwrap();
    let spill = scratch("window");
    let cfg = store_config(&pg, &spill, |_| {});
    let shutdown = CancellationToken::new();
    let store = Store::open(cfg, &shutdown).await.unwrap();
    let (sinks, writers) = start_writers(&store);
    for i in 0..3000 {
        sinks.deltas.push(delta(i));
    }
    let m = sinks.deltas.mark();
    assert!(sinks.deltas.settled(m).await);
    // 1,200 unused ids (as if the database had refused them): more than two pages.
    sqlx::query("DELETE FROM orderbook_deltas WHERE id BETWEEN 1001 AND 2200")
        .execute(store.pool())
        .await
        .unwrap();
    let head = store.head(Stream::OrderbookDeltas);
    assert_eq!(head, 3000);
    let (mut after, mut read, mut empty) = (0i64, Vec::new(), 0);
    while after < head {
        let page = store
            .read(Stream::OrderbookDeltas, after, 500, 1 << 20)
            .await
            .unwrap();
        assert_eq!(page.head, head);
        assert_eq!(page.through, (after + 500).min(head), "after {after}");
        for r in &page.records {
            assert!(r.cursor > after && r.cursor <= page.through);
        }
        empty += usize::from(page.records.is_empty());
        read.extend(page.records.iter().map(|r| r.cursor));
        after = page.through;
    }
    assert_eq!(read, (1..=1000).chain(2201..=3000).collect::<Vec<i64>>());
    // 1001..=1500 and 1501..=2000 hold nothing; 2001..=2500 holds 2201..=2500.
    assert_eq!(empty, 2);
    // A byte budget cuts a page short: `through` is then its last record.
    let page = store
        .read(Stream::OrderbookDeltas, 0, 500, 1)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.through, 1);
    writers.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&spill);
}

/// The trades merge checks each staged trade against `trades` by an index probe: with a
/// table of thousands of trades (analysed) and a batch in the never-analysed staging table,
/// PostgreSQL would otherwise hash the whole table for every batch (425 ms a batch at 300,000
/// trades, measured), so a gatherer's trades writer slowed down as its table grew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_of_staged_trades_probes_the_index() {
    init();
    let pg = PgCluster::start_default().unwrap();
    let spill = scratch("merge-plan");
    let store = Store::open(store_config(&pg, &spill, |_| {}), &CancellationToken::new())
        .await
        .unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO trades SELECT g, TIMESTAMPTZ '2027-01-15 08:00Z' + g * INTERVAL '1 ms', now(), \
           'T' || g, 'M' || g % 50, 500000, 500000, 1, 1, 'yes', false, \
           1800000000000 + g, 'ws', 0, 1, 1, g FROM generate_series(1, 5000) g; \
         ANALYZE trades; \
         BEGIN; \
         CREATE TEMP TABLE IF NOT EXISTS trades_staging (LIKE trades INCLUDING DEFAULTS) ON COMMIT DELETE ROWS; \
         INSERT INTO trades_staging SELECT * FROM trades WHERE id > 4990;",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    let nodes =
        kalshi_testkit::pg::plan::plan_nodes(&mut conn, gatherer::store::writer::TRADES_MERGE_SQL)
            .await
            .unwrap();
    kalshi_testkit::pg::plan::assert_probes_by_index(&nodes, "trades_staging", "trades");
    sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.unwrap();
    let _ = std::fs::remove_dir_all(&spill);
}

/// A spilled file can hold the batch whose commit was in doubt when the database went away,
/// and that did commit: replayed, those rows are left out (a gap record stored twice would
/// reach production twice, keyed by its id) and only the rest is loaded. And loaded rows get
/// ids above what retention dropped, so no reader is told they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spill_replay_stores_nothing_twice_and_nothing_below_the_retention_mark() {
    use gatherer::store::rows::Row as _;
    init();
    let pg = PgCluster::start_default().unwrap();
    let spill = scratch("in-doubt");
    let cfg = store_config(&pg, &spill, |_| {});
    let shutdown = CancellationToken::new();
    let store = Store::open(cfg.clone(), &shutdown).await.unwrap();
    let instance = store.instance_id().to_owned();
    let gap = |i: i64| GapRow {
        stream: Stream::Tickers,
        market_ticker: None,
        from_ms: i,
        to_ms: i,
        reason: GapReason::Disconnect,
        detail: format!("gap {i}"),
    };
    let ingested = kalshi_shared::time::now_ms();
    let payload = |ids: std::ops::RangeInclusive<i64>| {
        let mut e = kalshi_shared::pg::CopyEncoder::new(GapRow::FIELDS);
        for i in ids {
            gap(i).encode(&mut e, i, ingested);
        }
        e.finish()
    };
    // Ids 1..=3 committed (the in-doubt batch did commit); the writer spilled 1..=5.
    let mut conn = store.pool().acquire().await.unwrap();
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY gaps ({}) FROM STDIN (FORMAT binary)",
            GapRow::COLUMNS
        ))
        .await
        .unwrap();
    copy.send(payload(1..=3)).await.unwrap();
    copy.finish().await.unwrap();
    drop(conn);
    // Retention dropped tickers up to cursor 1000 (the table is empty now).
    sqlx::query("INSERT INTO retention_marks (stream, dropped_through) VALUES ('tickers', 1000)")
        .execute(store.pool())
        .await
        .unwrap();
    let files = gatherer::store::spill::Spill::new(&spill, &instance);
    files.write(Stream::Gaps, 1, &payload(1..=5)).unwrap();
    let mut e = kalshi_shared::pg::CopyEncoder::new(gatherer::store::rows::TickerRow::FIELDS);
    for i in 1..=2 {
        gatherer::store::rows::TickerRow {
            market_ticker: "M".into(),
            ts_ms: Some(1_800_000_000_000 + i),
            body: "{}".into(),
            content_hash: format!("h{i}"),
            occurrence: 0,
            origin: Origin::default(),
        }
        .encode(&mut e, i, ingested);
    }
    files.write(Stream::Tickers, 1, &e.finish()).unwrap();
    drop(store);

    let store = Store::open(cfg, &shutdown).await.unwrap();
    let gaps: Vec<(i64, String)> = sqlx::query_as("SELECT id, detail FROM gaps ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(
        gaps,
        (1..=5).map(|i| (i, format!("gap {i}"))).collect::<Vec<_>>(),
        "each gap once: the committed ones kept, the rest loaded after them"
    );
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM tickers ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(ids, vec![1001, 1002], "above the retention mark");
    assert_eq!(store.head(Stream::Tickers), 1002);
    let _ = std::fs::remove_dir_all(&spill);
}
