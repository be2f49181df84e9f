//! The local schema: embedded migrations, daily partitions, retention, and the statements the
//! TimescaleDB path issues instead when the extension is available.
//!
//! Every record table has a `BIGINT id` (the cursor, assigned by the table's single writer)
//! and is range-partitioned by day: by exchange time for `trades` (so a trade seen by WS and by
//! REST backfill has one `(trade_id, ts)` key to conflict on), by ingestion time for the rest.
//! Each table has a `DEFAULT` partition so that no row is ever refused for want of a partition.
//!
//! It must never change an applied migration: new schema goes into a new one.

use crate::store::Stream;

/// Migrations, applied in order inside one transaction each, recorded in `schema_migrations`.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, MIGRATION_1),
    (2, MIGRATION_2),
    (3, MIGRATION_3),
    (4, MIGRATION_4),
    (5, MIGRATION_5),
    (6, MIGRATION_6),
    (7, MIGRATION_7),
    (8, MIGRATION_8),
    (9, MIGRATION_9),
    (10, MIGRATION_10),
    (11, MIGRATION_11),
];

/// How far back the current tier of a history import has reached (the oldest trade time of its
/// pages; pages come newest first): the progress and ETA of `gatherer import`.
const MIGRATION_11: &str = r#"
ALTER TABLE imports ADD COLUMN reached_ms bigint;
"#;

/// History imports also bring in the settled markets their trades are of
/// (`/historical/markets`): how many.
const MIGRATION_10: &str = r#"
ALTER TABLE imports ADD COLUMN markets bigint NOT NULL DEFAULT 0;
"#;

/// The stream a migration adds (its table becomes a hypertable on TimescaleDB storage, as
/// migration 1's do).
pub fn stream_added_by(version: i32) -> Option<Stream> {
    match version {
        7 => Some(Stream::UnknownMessages),
        9 => Some(Stream::Exchange),
        _ => None,
    }
}

/// Versions of the exchange's status and schedule (`/exchange/status`, `/exchange/schedule`),
/// one table like the registry's: `ticker` is `status` or `schedule`. A content that comes back
/// (trading active again after a halt) is a row again; production numbers the returns.
const MIGRATION_9: &str = r#"
CREATE TABLE exchange (LIKE markets INCLUDING ALL) PARTITION BY RANGE (ingested_at);
CREATE TABLE exchange_default PARTITION OF exchange DEFAULT;
"#;

/// History import requests (`gatherer import`, src/import.rs): the window, where the import
/// stands (tier and page cursor, stored once a page's trades are settled), and its counts.
const MIGRATION_8: &str = r#"
CREATE TABLE imports (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_ms      bigint      NOT NULL,
    to_ms        bigint      NOT NULL CHECK (to_ms > from_ms),
    state        text        NOT NULL DEFAULT 'pending',
    tier         text        NOT NULL DEFAULT 'historical',
    cursor       text        NOT NULL DEFAULT '',
    pages        bigint      NOT NULL DEFAULT 0,
    fetched      bigint      NOT NULL DEFAULT 0,
    stored       bigint      NOT NULL DEFAULT 0,
    error        text,
    requested_at timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
"#;

/// Messages of types this build does not model (a new channel's, a new type on a subscribed
/// one), kept as sent, in a stream of their own rather than counted and dropped.
const MIGRATION_7: &str = r#"
CREATE TABLE unknown_messages (
    id            bigint      NOT NULL,
    ingested_at   timestamptz NOT NULL,
    type          text        NOT NULL,
    channel       text        NOT NULL,
    market_ticker text        NOT NULL,
    body          json        NOT NULL,
    content_hash  text        NOT NULL,
    received_ms   bigint      NOT NULL,
    conn_epoch    bigint      NOT NULL,
    sid           bigint      NOT NULL,
    seq           bigint      NOT NULL,
    PRIMARY KEY (id, ingested_at)
) PARTITION BY RANGE (ingested_at);
CREATE TABLE unknown_messages_default PARTITION OF unknown_messages DEFAULT;
"#;

/// Ticker and lifecycle messages are kept as sent: `json` stores the exchange's text of `msg`
/// byte for byte, where `jsonb` reorders keys and respells it. (Rows stored before this keep
/// the text `jsonb` gave them.)
/// Migration 6 on TimescaleDB storage (static: checked against TimescaleDB's documented API,
/// not run in CI, which has no TimescaleDB): compressed chunks are decompressed and compression
/// switched off while the column changes type, then switched on again as migration 1 set it.
pub const MIGRATION_6_TIMESCALE: &str = r#"
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tickers', 'lifecycle'] LOOP
        IF EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                   WHERE hypertable_name = t AND compression_enabled) THEN
            PERFORM remove_compression_policy(t::regclass, if_exists => true);
            PERFORM decompress_chunk(c, if_compressed => true) FROM show_chunks(t::regclass) c;
            EXECUTE format('ALTER TABLE %I SET (timescaledb.compress = false)', t);
            EXECUTE format('ALTER TABLE %I ALTER COLUMN body TYPE json USING body::json', t);
            EXECUTE format('ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_orderby = %L)', t, 'id');
            PERFORM add_compression_policy(t::regclass, INTERVAL '2 days', if_not_exists => true);
        ELSE
            EXECUTE format('ALTER TABLE %I ALTER COLUMN body TYPE json USING body::json', t);
        END IF;
    END LOOP;
END
$$;
"#;

const MIGRATION_6: &str = r#"
ALTER TABLE tickers ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE lifecycle ALTER COLUMN body TYPE json USING body::json;
"#;

/// Holes still open (a connection lost, a market subscribed late, not yet closed by a fresh
/// snapshot or acknowledgement), kept current about every second, so a SIGKILL never forgets
/// one: the next start takes them over (`connections::OpenHoles`). `market` is empty for a
/// stream-wide hole.
const MIGRATION_5: &str = r#"
CREATE TABLE IF NOT EXISTS open_holes (
    stream  text   NOT NULL,
    market  text   NOT NULL,
    from_ms bigint NOT NULL,
    reason  text   NOT NULL,
    PRIMARY KEY (stream, market)
);
"#;

/// A snapshot is stored at its exact splice point (`connections/book.rs`): the time from which
/// the stored book is the exchange's. And every range retention drops is logged with the
/// exchange times it spans, so a reader that fell behind is told exactly which times it lost,
/// and `Status` says from when this gatherer still holds everything.
const MIGRATION_4: &str = r#"
ALTER TABLE orderbook_snapshots ADD COLUMN IF NOT EXISTS as_of_ms bigint;
CREATE TABLE IF NOT EXISTS retention_drops (
    stream     text        NOT NULL,
    from_id    bigint      NOT NULL,
    to_id      bigint      NOT NULL,
    from_ms    bigint      NOT NULL,
    to_ms      bigint      NOT NULL,
    dropped_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS retention_drops_stream ON retention_drops (stream, to_id);
"#;

/// Spilled files already loaded (so a crash after the load never loads one twice), and trade
/// windows waiting for backfill (so a SIGKILL never forgets one).
const MIGRATION_3: &str = r#"
CREATE TABLE IF NOT EXISTS spill_replayed (
    name        text        PRIMARY KEY,
    replayed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pending_trade_holes (
    from_ms bigint NOT NULL,
    to_ms   bigint NOT NULL,
    reason  text   NOT NULL,
    PRIMARY KEY (from_ms, to_ms, reason)
);
"#;

/// Identical lifecycle messages (a market paused twice) are told apart by an occurrence.
const MIGRATION_2: &str = r#"
ALTER TABLE lifecycle ADD COLUMN IF NOT EXISTS occurrence integer NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS lifecycle_content ON lifecycle (kind, content_hash);
"#;

const MIGRATION_1: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO meta (key, value) VALUES ('instance_id', gen_random_uuid()::text) ON CONFLICT DO NOTHING;
INSERT INTO meta (key, value) VALUES ('created_at', now()::text) ON CONFLICT DO NOTHING;

-- The highest cursor of each stream whose rows retention has dropped.
CREATE TABLE IF NOT EXISTS retention_marks (
    stream          text PRIMARY KEY,
    dropped_through bigint NOT NULL
);

CREATE TABLE trades (
    id                 bigint      NOT NULL,
    ts                 timestamptz NOT NULL,
    ingested_at        timestamptz NOT NULL,
    trade_id           text        NOT NULL,
    market_ticker      text        NOT NULL,
    yes_price          bigint      NOT NULL,
    no_price           bigint      NOT NULL,
    count              bigint      NOT NULL,
    taker_outcome_side smallint    NOT NULL,
    taker_book_side    text        NOT NULL,
    is_block_trade     boolean     NOT NULL,
    ts_ms              bigint      NOT NULL,
    source             text        NOT NULL,
    received_ms        bigint      NOT NULL,
    conn_epoch         bigint      NOT NULL,
    sid                bigint      NOT NULL,
    seq                bigint      NOT NULL,
    PRIMARY KEY (id, ts),
    UNIQUE (trade_id, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE orderbook_deltas (
    id            bigint      NOT NULL,
    ingested_at   timestamptz NOT NULL,
    market_ticker text        NOT NULL,
    ts_ms         bigint,
    side          smallint    NOT NULL,
    price         bigint      NOT NULL,
    delta         bigint      NOT NULL,
    occurrence    integer     NOT NULL,
    received_ms   bigint      NOT NULL,
    conn_epoch    bigint      NOT NULL,
    sid           bigint      NOT NULL,
    seq           bigint      NOT NULL,
    PRIMARY KEY (id, ingested_at)
) PARTITION BY RANGE (ingested_at);

CREATE TABLE orderbook_snapshots (
    id               bigint      NOT NULL,
    ingested_at      timestamptz NOT NULL,
    market_ticker    text        NOT NULL,
    source           text        NOT NULL,
    yes              jsonb       NOT NULL,
    no               jsonb       NOT NULL,
    last_delta_ts_ms bigint,
    received_ms      bigint      NOT NULL,
    conn_epoch       bigint      NOT NULL,
    sid              bigint      NOT NULL,
    seq              bigint      NOT NULL,
    PRIMARY KEY (id, ingested_at)
) PARTITION BY RANGE (ingested_at);

CREATE TABLE tickers (
    id            bigint      NOT NULL,
    ingested_at   timestamptz NOT NULL,
    market_ticker text        NOT NULL,
    ts_ms         bigint,
    body          jsonb       NOT NULL,
    content_hash  text        NOT NULL,
    occurrence    integer     NOT NULL,
    received_ms   bigint      NOT NULL,
    conn_epoch    bigint      NOT NULL,
    sid           bigint      NOT NULL,
    PRIMARY KEY (id, ingested_at)
) PARTITION BY RANGE (ingested_at);

CREATE TABLE lifecycle (
    id           bigint      NOT NULL,
    ingested_at  timestamptz NOT NULL,
    kind         text        NOT NULL,
    ticker       text        NOT NULL,
    event_type   text        NOT NULL,
    body         jsonb       NOT NULL,
    content_hash text        NOT NULL,
    received_ms  bigint      NOT NULL,
    conn_epoch   bigint      NOT NULL,
    sid          bigint      NOT NULL,
    PRIMARY KEY (id, ingested_at)
) PARTITION BY RANGE (ingested_at);

CREATE TABLE markets (
    id           bigint      NOT NULL,
    ingested_at  timestamptz NOT NULL,
    ticker       text        NOT NULL,
    updated_ms   bigint,
    observed_ms  bigint      NOT NULL,
    body         jsonb       NOT NULL,
    content_hash text        NOT NULL,
    PRIMARY KEY (id, ingested_at)
) PARTITION BY RANGE (ingested_at);

CREATE TABLE events (LIKE markets INCLUDING ALL) PARTITION BY RANGE (ingested_at);
CREATE TABLE series (LIKE markets INCLUDING ALL) PARTITION BY RANGE (ingested_at);

CREATE TABLE gaps (
    id            bigint      NOT NULL,
    ingested_at   timestamptz NOT NULL,
    stream        text        NOT NULL,
    market_ticker text,
    from_ms       bigint      NOT NULL,
    to_ms         bigint      NOT NULL,
    reason        text        NOT NULL,
    detail        text        NOT NULL,
    PRIMARY KEY (id, ingested_at)
) PARTITION BY RANGE (ingested_at);

CREATE TABLE trades_default              PARTITION OF trades              DEFAULT;
CREATE TABLE orderbook_deltas_default    PARTITION OF orderbook_deltas    DEFAULT;
CREATE TABLE orderbook_snapshots_default PARTITION OF orderbook_snapshots DEFAULT;
CREATE TABLE tickers_default             PARTITION OF tickers             DEFAULT;
CREATE TABLE lifecycle_default           PARTITION OF lifecycle           DEFAULT;
CREATE TABLE markets_default             PARTITION OF markets             DEFAULT;
CREATE TABLE events_default              PARTITION OF events              DEFAULT;
CREATE TABLE series_default              PARTITION OF series              DEFAULT;
CREATE TABLE gaps_default                PARTITION OF gaps                DEFAULT;

CREATE INDEX ON markets (ticker);
CREATE INDEX ON gaps (from_ms);
"#;

/// The partition key column of a stream's table.
pub fn partition_column(stream: Stream) -> &'static str {
    match stream {
        Stream::Trades => "ts",
        _ => "ingested_at",
    }
}

/// Name of the daily partition holding `day` (days since the Unix epoch).
pub fn partition_name(stream: Stream, day: i64) -> String {
    format!("{}_p{}", stream.table(), day_code(day))
}

/// `YYYYMMDD` of a day number.
pub fn day_code(day: i64) -> String {
    let secs = day.saturating_mul(86_400);
    let dt =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}{:02}{:02}", dt.year(), u8::from(dt.month()), dt.day())
}

/// The day number a partition name stands for, if it is one of ours.
pub fn partition_day(stream: Stream, name: &str) -> Option<i64> {
    let code = name.strip_prefix(stream.table())?.strip_prefix("_p")?;
    if code.len() != 8 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i32 = code[..4].parse().ok()?;
    let m: u8 = code[4..6].parse().ok()?;
    let d: u8 = code[6..].parse().ok()?;
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
    Some(
        date.midnight()
            .assume_utc()
            .unix_timestamp()
            .div_euclid(86_400),
    )
}

/// `CREATE TABLE` for the daily partition of `day`.
pub fn create_partition_sql(stream: Stream, day: i64) -> String {
    let from = day_iso(day);
    let to = day_iso(day + 1);
    format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ('{from}') TO ('{to}')",
        partition_name(stream, day),
        stream.table()
    )
}

fn day_iso(day: i64) -> String {
    let c = day_code(day);
    format!("{}-{}-{}T00:00:00Z", &c[..4], &c[4..6], &c[6..])
}

/// What the TimescaleDB path issues for a stream instead of native partitioning: the table
/// becomes a hypertable with daily chunks, compressed after two days, and dropped by
/// TimescaleDB's retention policy (`None`: kept). Run after the migrations on a database
/// where `CREATE EXTENSION timescaledb` succeeded and before any partition is created.
///
/// TimescaleDB drops chunks on its own schedule, so `retention_marks` is not updated there;
/// the cursor API then treats a request below the lowest remaining cursor as the overrun.
pub fn timescale_sql(stream: Stream, retention_days: Option<u32>) -> Vec<String> {
    let t = stream.table();
    let col = partition_column(stream);
    let mut out = vec![
        // Hypertables cannot be natively partitioned: rebuild the empty table as a plain one.
        format!("ALTER TABLE {t} RENAME TO {t}_native"),
        format!("CREATE TABLE {t} (LIKE {t}_native INCLUDING ALL)"),
        format!("DROP TABLE {t}_native"),
        format!(
            "SELECT create_hypertable('{t}', by_range('{col}', INTERVAL '1 day'), if_not_exists => TRUE)"
        ),
        format!("ALTER TABLE {t} SET (timescaledb.compress, timescaledb.compress_orderby = 'id')"),
        format!("SELECT add_compression_policy('{t}', INTERVAL '2 days', if_not_exists => TRUE)"),
    ];
    if let Some(days) = retention_days {
        out.push(format!(
            "SELECT add_retention_policy('{t}', INTERVAL '{days} days', if_not_exists => TRUE)"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        let day = 20_414; // 2025-11-22
        assert_eq!(day_code(day), "20251122");
        assert_eq!(
            partition_name(Stream::OrderbookDeltas, day),
            "orderbook_deltas_p20251122"
        );
        assert_eq!(
            partition_day(Stream::OrderbookDeltas, "orderbook_deltas_p20251122"),
            Some(day)
        );
        assert_eq!(
            partition_day(Stream::OrderbookDeltas, "orderbook_deltas_default"),
            None
        );
        assert_eq!(
            partition_day(Stream::Trades, "orderbook_deltas_p20251122"),
            None
        );
        assert_eq!(
            create_partition_sql(Stream::Trades, day),
            "CREATE TABLE IF NOT EXISTS trades_p20251122 PARTITION OF trades FOR VALUES FROM ('2025-11-22T00:00:00Z') TO ('2025-11-23T00:00:00Z')"
        );
    }

    #[test]
    fn timescale_statements() {
        assert_eq!(
            timescale_sql(Stream::OrderbookDeltas, Some(7)),
            vec![
                "ALTER TABLE orderbook_deltas RENAME TO orderbook_deltas_native",
                "CREATE TABLE orderbook_deltas (LIKE orderbook_deltas_native INCLUDING ALL)",
                "DROP TABLE orderbook_deltas_native",
                "SELECT create_hypertable('orderbook_deltas', by_range('ingested_at', INTERVAL '1 day'), if_not_exists => TRUE)",
                "ALTER TABLE orderbook_deltas SET (timescaledb.compress, timescaledb.compress_orderby = 'id')",
                "SELECT add_compression_policy('orderbook_deltas', INTERVAL '2 days', if_not_exists => TRUE)",
                "SELECT add_retention_policy('orderbook_deltas', INTERVAL '7 days', if_not_exists => TRUE)",
            ]
        );
        let trades = timescale_sql(Stream::Trades, None);
        assert!(trades[3].contains("by_range('ts'"));
        assert_eq!(trades.len(), 6, "no retention policy when kept forever");
    }
}
