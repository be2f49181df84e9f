//! How production runs the trades merge: each staged trade is checked against `trades` by a
//! probe of its key, never by hashing the month's partition (PostgreSQL's choice for an anti
//! join against a never-analysed staging table, which made every batch cost a scan of
//! everything committed that month).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test

use deduplicator::records::ProdTable as _;
use deduplicator::records::Stream;
use kalshi_testkit::pg::PgCluster;
use sqlx::Connection as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trades_merge_probes_the_key() {
    let pg = PgCluster::start_default().unwrap();
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    for (_, sql) in deduplicator::schema::MIGRATIONS {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO trades (trade_id, ts, market_ticker, yes_price, no_price, count, \
           taker_outcome_side, taker_book_side, is_block_trade, ts_ms, source, gatherer_id) \
         SELECT 'T' || g, TIMESTAMPTZ '2027-01-15 08:00Z' + g * INTERVAL '1 ms', 'M' || g % 50, \
           500000, 500000, 1, 1, 'yes', false, 1800000000000 + g, 'ws', 'g1' \
         FROM generate_series(1, 5000) g; \
         ANALYZE trades; \
         BEGIN; \
         {}; \
         INSERT INTO {} SELECT {} FROM trades WHERE ts_ms > 1800000004990;",
        Stream::Trades.create_stage_sql(),
        Stream::Trades.stage(),
        Stream::Trades.columns(),
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let nodes = kalshi_testkit::pg::plan::plan_nodes(&mut conn, &Stream::Trades.merge_sql())
        .await
        .unwrap();
    kalshi_testkit::pg::plan::assert_probes_by_index(&nodes, &Stream::Trades.stage(), "trades");
}
