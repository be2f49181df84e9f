//! The production schema: plain PostgreSQL (RDS has no TimescaleDB) with native monthly range
//! partitions, and the unique keys of DESIGN.md's record table, which are the final word on
//! duplicates.
//!
//! Keys (what makes two gatherers' copies of one exchange record the same row):
//! - `trades`: `(trade_id, ts)`; `ts` is the exchange time, floored to the millisecond.
//! - `orderbook_deltas`: `(market_ticker, ts_ms, side, price, delta, occurrence, gatherer_key,
//!   ts)`; `gatherer_key` is empty, except for a delta without `ts_ms`, which cannot be matched
//!   across gatherers and is kept under its gatherer's name (and cursor) instead of ever being
//!   merged away.
//! - `orderbook_snapshots`: `(market_ticker, gatherer_id, source, conn_epoch, sid, seq,
//!   received_ms, ts)`: never merged. `received_ms` is added to DESIGN.md's key because REST
//!   snapshots have no sid or seq.
//! - `tickers`: `(market_ticker, ts_ms, content_hash, occurrence, gatherer_key, ts)`.
//! - `lifecycle`: `(ticker, event_type, content_hash, occurrence)`: identical messages (a
//!   market paused twice) are told apart by how many the gatherer saw before.
//! - `markets`, `events`, `series`: one row per ticker, the latest by the exchange's update time,
//!   else by observation time.
//! - `gaps`: `(gatherer_id, instance_id, gap_id)`: DESIGN.md's `(gatherer_id, id)` plus the
//!   instance, because a replaced gatherer numbers its gaps from 1 again.
//!
//! Every partitioned table also has a `DEFAULT` partition, so no row is ever refused for want
//! of a partition.

/// Tables partitioned by month on `ts`.
pub const PARTITIONED: &[&str] = &[
    "trades",
    "orderbook_deltas",
    "orderbook_snapshots",
    "tickers",
];

pub const MIGRATIONS: &[(i32, &str)] = &[(1, MIGRATION_1), (2, MIGRATION_2)];

/// Identical lifecycle messages (a market paused twice) are distinct records: the key takes
/// the gatherers' occurrence.
const MIGRATION_2: &str = r#"
ALTER TABLE lifecycle ADD COLUMN IF NOT EXISTS occurrence bigint NOT NULL DEFAULT 0;
ALTER TABLE lifecycle DROP CONSTRAINT lifecycle_pkey;
ALTER TABLE lifecycle ADD PRIMARY KEY (ticker, event_type, content_hash, occurrence);
"#;

const MIGRATION_1: &str = r#"
CREATE TABLE trades (
    trade_id           text        NOT NULL,
    ts                 timestamptz NOT NULL,
    market_ticker      text        NOT NULL,
    yes_price          bigint      NOT NULL CHECK (yes_price BETWEEN 0 AND 1000000),
    no_price           bigint      NOT NULL CHECK (no_price BETWEEN 0 AND 1000000),
    count              bigint      NOT NULL CHECK (count > 0),
    taker_outcome_side smallint    NOT NULL,
    taker_book_side    text        NOT NULL,
    is_block_trade     boolean     NOT NULL,
    ts_ms              bigint      NOT NULL,
    source             text        NOT NULL,
    gatherer_id        text        NOT NULL,
    committed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (trade_id, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE orderbook_deltas (
    market_ticker text        NOT NULL,
    ts            timestamptz NOT NULL,
    ts_ms         bigint      NOT NULL,
    side          smallint    NOT NULL CHECK (side IN (1, 2)),
    price         bigint      NOT NULL CHECK (price BETWEEN 0 AND 1000000),
    delta         bigint      NOT NULL CHECK (delta <> 0),
    occurrence    bigint      NOT NULL CHECK (occurrence >= 0),
    gatherer_key  text        NOT NULL,
    gatherer_id   text        NOT NULL,
    received_ms   bigint      NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (market_ticker, ts_ms, side, price, delta, occurrence, gatherer_key, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE orderbook_snapshots (
    market_ticker    text        NOT NULL,
    ts               timestamptz NOT NULL,
    gatherer_id      text        NOT NULL,
    source           text        NOT NULL,
    conn_epoch       bigint      NOT NULL,
    sid              bigint      NOT NULL,
    seq              bigint      NOT NULL,
    received_ms      bigint      NOT NULL,
    yes              jsonb       NOT NULL,
    no               jsonb       NOT NULL,
    last_delta_ts_ms bigint,
    committed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (market_ticker, gatherer_id, source, conn_epoch, sid, seq, received_ms, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE tickers (
    market_ticker text        NOT NULL,
    ts            timestamptz NOT NULL,
    ts_ms         bigint      NOT NULL,
    content_hash  text        NOT NULL,
    occurrence    bigint      NOT NULL,
    gatherer_key  text        NOT NULL,
    body          jsonb       NOT NULL,
    gatherer_id   text        NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (market_ticker, ts_ms, content_hash, occurrence, gatherer_key, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE lifecycle (
    ticker       text        NOT NULL,
    event_type   text        NOT NULL,
    content_hash text        NOT NULL,
    kind         text        NOT NULL,
    body         jsonb       NOT NULL,
    received_ms  bigint      NOT NULL,
    gatherer_id  text        NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ticker, event_type, content_hash)
);

CREATE TABLE markets (
    ticker       text        PRIMARY KEY,
    updated_ms   bigint      NOT NULL,
    observed_ms  bigint      NOT NULL,
    body         jsonb       NOT NULL,
    gatherer_id  text        NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE events (LIKE markets INCLUDING ALL);
CREATE TABLE series (LIKE markets INCLUDING ALL);

CREATE TABLE gaps (
    gatherer_id   text        NOT NULL,
    instance_id   text        NOT NULL,
    gap_id        bigint      NOT NULL,
    stream        text        NOT NULL,
    market_ticker text        NOT NULL,
    from_ms       bigint      NOT NULL,
    to_ms         bigint      NOT NULL,
    reason        text        NOT NULL,
    detail        text        NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gatherer_id, instance_id, gap_id)
);
CREATE INDEX gaps_window ON gaps (stream, from_ms, to_ms);

-- Where each gatherer's stream has been merged up to, in the same transactions as the data.
CREATE TABLE sync_cursors (
    gatherer_id text        NOT NULL,
    stream      text        NOT NULL,
    cursor      bigint      NOT NULL,
    instance_id text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gatherer_id, stream)
);

-- Rows production refused (data errors), kept with their error instead of stalling the
-- pipeline or dropping them.
CREATE TABLE quarantine (
    gatherer_id  text        NOT NULL,
    stream       text        NOT NULL,
    cursor       bigint      NOT NULL,
    instance_id  text        NOT NULL,
    record       bytea       NOT NULL,
    summary      text        NOT NULL,
    error        text        NOT NULL,
    sqlstate     text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gatherer_id, instance_id, stream, cursor)
);

CREATE TABLE trades_default              PARTITION OF trades              DEFAULT;
CREATE TABLE orderbook_deltas_default    PARTITION OF orderbook_deltas    DEFAULT;
CREATE TABLE orderbook_snapshots_default PARTITION OF orderbook_snapshots DEFAULT;
CREATE TABLE tickers_default             PARTITION OF tickers             DEFAULT;
"#;

/// `(year, month)` of Unix milliseconds.
pub fn month_of(ms: i64) -> (i32, u8) {
    let dt = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    (dt.year(), u8::from(dt.month()))
}

pub fn next_month((y, m): (i32, u8)) -> (i32, u8) {
    if m == 12 { (y + 1, 1) } else { (y, m + 1) }
}

/// `CREATE TABLE` for the monthly partition of `table` holding `month`.
pub fn create_partition_sql(table: &str, month: (i32, u8)) -> String {
    let (y, m) = month;
    let (ny, nm) = next_month(month);
    format!(
        "CREATE TABLE IF NOT EXISTS {table}_p{y:04}{m:02} PARTITION OF {table} FOR VALUES FROM ('{y:04}-{m:02}-01T00:00:00Z') TO ('{ny:04}-{nm:02}-01T00:00:00Z')"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monthly_partitions() {
        assert_eq!(month_of(1_795_359_246_935), (2026, 11));
        assert_eq!(next_month((2026, 12)), (2027, 1));
        assert_eq!(
            create_partition_sql("trades", (2026, 12)),
            "CREATE TABLE IF NOT EXISTS trades_p202612 PARTITION OF trades FOR VALUES FROM ('2026-12-01T00:00:00Z') TO ('2027-01-01T00:00:00Z')"
        );
    }
}
