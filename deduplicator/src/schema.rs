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
//! - `lifecycle`: `(ticker, event_type, content_hash, occurrence)`: the hash covers every field
//!   the exchange sent; identical messages (a market paused twice) are told apart by an
//!   occurrence the deduplicator assigns by receipt time (`lifecycle_copies`, sink/lifecycle.rs),
//!   not by a gatherer's count, which starts again with every new gatherer database.
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

/// The role consumers read with (SELECT only; docs/consuming.md). Created when the migrating
/// user may create roles; otherwise the migration says so and goes on (the runbook has the SQL).
pub const READER_ROLE: &str = "kalshi_reader";

/// The archive's bookkeeping, the indexes readers need, the numeric views and the read-only
/// role.
///
/// - `archive_touch`: per period and stream, how many production transactions wrote rows of
///   that period. The writers bump it in the data's own transaction, so the archiver, reading
///   it in the same snapshot as the rows, knows exactly whether anything was committed for an
///   archived period since (late data: a new version).
/// - `archive_periods`: one row per archived period: the version, the manifest, the touch
///   count it was built from, and when S3 was last verified against it.
/// - Per-market time-range indexes on every stream, and BRIN indexes on time for the
///   archiver's period scans (tiny, since rows arrive roughly in time order).
const MIGRATION_3: &str = r#"
CREATE TABLE archive_touch (
    period_start_ms bigint NOT NULL,
    stream          text   NOT NULL,
    touches         bigint NOT NULL,
    PRIMARY KEY (period_start_ms, stream)
);
CREATE TABLE archive_periods (
    period_start_ms bigint      PRIMARY KEY,
    period_ms       bigint      NOT NULL,
    version         integer     NOT NULL,
    touches         bigint      NOT NULL,
    manifest        jsonb       NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now(),
    verified_at     timestamptz,
    -- Set when retention dropped a partition of the period's month.
    retired_at      timestamptz
);

CREATE INDEX trades_market_ts              ON trades              (market_ticker, ts);
CREATE INDEX orderbook_deltas_market_ts    ON orderbook_deltas    (market_ticker, ts);
CREATE INDEX orderbook_snapshots_market_ts ON orderbook_snapshots (market_ticker, ts);
CREATE INDEX tickers_market_ts             ON tickers             (market_ticker, ts);
CREATE INDEX lifecycle_ticker_received     ON lifecycle           (ticker, received_ms);
CREATE INDEX trades_ts_brin              ON trades              USING brin (ts);
CREATE INDEX orderbook_deltas_ts_brin    ON orderbook_deltas    USING brin (ts);
CREATE INDEX orderbook_snapshots_ts_brin ON orderbook_snapshots USING brin (ts);
CREATE INDEX tickers_ts_brin             ON tickers             USING brin (ts);
CREATE INDEX lifecycle_received_brin     ON lifecycle           USING brin (received_ms);

-- Dollars and contracts as numerics (the tables hold micro-dollars and centi-contracts).
CREATE VIEW trades_dollars AS
SELECT trade_id, ts, market_ticker,
       yes_price::numeric / 1000000 AS yes_price_dollars,
       no_price::numeric / 1000000  AS no_price_dollars,
       count::numeric / 100         AS contracts,
       CASE taker_outcome_side WHEN 1 THEN 'yes' WHEN 2 THEN 'no' END AS taker_outcome_side,
       taker_book_side, is_block_trade, source, gatherer_id
FROM trades;
CREATE VIEW orderbook_deltas_dollars AS
SELECT market_ticker, ts, CASE side WHEN 1 THEN 'yes' WHEN 2 THEN 'no' END AS side,
       price::numeric / 1000000 AS price_dollars,
       delta::numeric / 100     AS delta_contracts,
       occurrence, gatherer_id, received_ms
FROM orderbook_deltas;
CREATE VIEW orderbook_snapshot_levels AS
SELECT s.market_ticker, s.ts, s.gatherer_id, s.source, l.side,
       (l.level->>0)::numeric / 1000000 AS price_dollars,
       (l.level->>1)::numeric / 100     AS contracts
FROM orderbook_snapshots s,
     LATERAL (SELECT 'yes' AS side, e AS level FROM jsonb_array_elements(s.yes) e
              UNION ALL
              SELECT 'no', e FROM jsonb_array_elements(s.no) e) l;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kalshi_reader') THEN
        CREATE ROLE kalshi_reader NOLOGIN;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO kalshi_reader', current_schema());
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO kalshi_reader', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO kalshi_reader', current_schema());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'cannot create or grant the read-only role kalshi_reader (%): see runbooks/archive.md', SQLERRM;
END
$$;
"#;

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

/// Quarantine replay (`deduplicator quarantine list|replay`): each row gets an id to name it
/// by, and what its last replay did (`inserted`, `already present`, or the error it met again).
/// A replayed row stays, marked, as the record of what happened.
const MIGRATION_4: &str = r#"
ALTER TABLE quarantine ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX quarantine_id ON quarantine (id);
ALTER TABLE quarantine ADD COLUMN replayed_at timestamptz;
ALTER TABLE quarantine ADD COLUMN replay text;
"#;

/// Lifecycle identity that survives the loss of every gatherer database: which gatherer copy
/// became which production row. A copy is known again by its gatherer, its database (the
/// instance, before any `~` incarnation suffix), its content and its receipt time, whatever its
/// cursor; a new copy joins an identical row received within `sink.lifecycle_match_window` that
/// has no copy from the same gatherer yet, else it is a new occurrence (sink/lifecycle.rs).
const MIGRATION_5: &str = r#"
CREATE TABLE lifecycle_copies (
    gatherer_id  text   NOT NULL,
    instance_id  text   NOT NULL,
    ticker       text   NOT NULL,
    event_type   text   NOT NULL,
    content_hash text   NOT NULL,
    received_ms  bigint NOT NULL,
    occurrence   bigint NOT NULL,
    PRIMARY KEY (ticker, event_type, content_hash, gatherer_id, instance_id, received_ms)
);
"#;

/// Kept as sent, and when: ticker and lifecycle `body` becomes `json`, which stores the
/// exchange's text byte for byte (`jsonb` reorders keys and respells numbers and escapes; rows
/// taken before keep the text `jsonb` gave them). `trades` and `tickers` keep `received_ms`
/// (null for rows taken before), and `tickers` keeps the typed values of its body beside it:
/// prices in micro-dollars, sizes, volume and open interest in centi-contracts. The dollar
/// views gain them.
const MIGRATION_6: &str = r#"
ALTER TABLE tickers ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE lifecycle ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE trades ADD COLUMN received_ms bigint;
ALTER TABLE tickers
    ADD COLUMN received_ms   bigint,
    ADD COLUMN price         bigint,
    ADD COLUMN yes_bid       bigint,
    ADD COLUMN yes_ask       bigint,
    ADD COLUMN yes_bid_size  bigint,
    ADD COLUMN yes_ask_size  bigint,
    ADD COLUMN volume        bigint,
    ADD COLUMN open_interest bigint;
CREATE OR REPLACE VIEW trades_dollars AS
SELECT trade_id, ts, market_ticker,
       yes_price::numeric / 1000000 AS yes_price_dollars,
       no_price::numeric / 1000000  AS no_price_dollars,
       count::numeric / 100         AS contracts,
       CASE taker_outcome_side WHEN 1 THEN 'yes' WHEN 2 THEN 'no' END AS taker_outcome_side,
       taker_book_side, is_block_trade, source, gatherer_id, received_ms
FROM trades;
CREATE VIEW tickers_dollars AS
SELECT market_ticker, ts, ts_ms, received_ms,
       price::numeric / 1000000        AS price_dollars,
       yes_bid::numeric / 1000000      AS yes_bid_dollars,
       yes_ask::numeric / 1000000      AS yes_ask_dollars,
       yes_bid_size::numeric / 100     AS yes_bid_contracts,
       yes_ask_size::numeric / 100     AS yes_ask_contracts,
       volume::numeric / 100           AS volume_contracts,
       open_interest::numeric / 100    AS open_interest_contracts,
       gatherer_id
FROM tickers;
"#;

/// Messages of types this build does not model (a new channel's, a new type on a subscribed
/// one), kept as sent: `(type, market_ticker, content_hash, occurrence)`, the identity rule of
/// lifecycle messages (sink/lifecycle.rs) over their own copies table. Small and not
/// partitioned, like `lifecycle`.
const MIGRATION_7: &str = r#"
CREATE TABLE unknown_messages (
    type          text        NOT NULL,
    market_ticker text        NOT NULL,
    content_hash  text        NOT NULL,
    occurrence    bigint      NOT NULL,
    channel       text        NOT NULL,
    body          json        NOT NULL,
    received_ms   bigint      NOT NULL,
    gatherer_id   text        NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (type, market_ticker, content_hash, occurrence)
);
CREATE INDEX unknown_messages_received_brin ON unknown_messages USING brin (received_ms);
CREATE TABLE unknown_message_copies (
    gatherer_id   text   NOT NULL,
    instance_id   text   NOT NULL,
    type          text   NOT NULL,
    market_ticker text   NOT NULL,
    content_hash  text   NOT NULL,
    received_ms   bigint NOT NULL,
    occurrence    bigint NOT NULL,
    PRIMARY KEY (type, market_ticker, content_hash, gatherer_id, instance_id, received_ms)
);
"#;

/// Every version of every market, event and series the registry saw, so history can be
/// joined as it was: one row per distinct content of a ticker (markets without their trading
/// fields, as the gatherers hash them), at the earliest time any gatherer observed it. A
/// ticker that returns to an earlier content keeps that content's first row (`markets`,
/// `events` and `series` hold the newest). The latest tables gain the content hash.
const MIGRATION_8: &str = r#"
ALTER TABLE markets ADD COLUMN content_hash text;
ALTER TABLE events ADD COLUMN content_hash text;
ALTER TABLE series ADD COLUMN content_hash text;
CREATE TABLE registry_versions (
    kind         text        NOT NULL,
    ticker       text        NOT NULL,
    content_hash text        NOT NULL,
    updated_ms   bigint      NOT NULL,
    observed_ms  bigint      NOT NULL,
    body         jsonb       NOT NULL,
    gatherer_id  text        NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, ticker, content_hash)
);
CREATE INDEX registry_versions_observed ON registry_versions (kind, ticker, observed_ms);
"#;

/// The exchange's status and schedule: every change, a content coming back included (trading
/// active again after a halt). Like lifecycle messages they have no id: production assigns
/// `occurrence` by the lifecycle identity rule over `exchange_copies` (sink/lifecycle.rs), so
/// the identity survives gatherers replaced with new databases. `ticker` is `status` or
/// `schedule`, `endpoint` the REST path, `received_ms` when a gatherer first observed it.
/// `exchange_now` is the newest of each.
const MIGRATION_9: &str = r#"
CREATE TABLE exchange (
    ticker       text        NOT NULL,
    endpoint     text        NOT NULL,
    content_hash text        NOT NULL,
    occurrence   bigint      NOT NULL,
    source       text        NOT NULL,
    body         json        NOT NULL,
    received_ms  bigint      NOT NULL,
    gatherer_id  text        NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ticker, endpoint, content_hash, occurrence)
);
CREATE INDEX exchange_received ON exchange (ticker, received_ms);
CREATE TABLE exchange_copies (
    gatherer_id  text   NOT NULL,
    instance_id  text   NOT NULL,
    ticker       text   NOT NULL,
    endpoint     text   NOT NULL,
    content_hash text   NOT NULL,
    received_ms  bigint NOT NULL,
    occurrence   bigint NOT NULL,
    PRIMARY KEY (ticker, endpoint, content_hash, gatherer_id, instance_id, received_ms)
);
CREATE VIEW exchange_now AS
    SELECT DISTINCT ON (ticker) ticker, body, received_ms, content_hash, occurrence
    FROM exchange ORDER BY ticker, received_ms DESC, occurrence DESC;
"#;

/// The book of a market at any time, by docs/archive.md's recipe: the latest WebSocket
/// snapshot at or before it, plus every delta after its splice point up to it.
///
/// - `book_unknown(market, at)`: why the book cannot be known at `at` (no snapshot yet, or a
///   window after the snapshot's splice point that no gatherer captured: every gatherer known
///   to production declared a hole of the market's deltas there), or NULL when it is known.
///   The windows are the coverage rule of `kalshi_shared::identity::coverage` for one market:
///   an instant every gatherer lacks is uncovered; such an instant, if any, is the window's
///   start or the start of some hole in it, so only those are tried. An instant whose holes
///   are all `late_subscription` (a new market before any gatherer subscribed it) does not
///   count: a snapshot exists, so it was taken after a subscription, and such a window reaches
///   past it only by the gap margin.
/// - `book_at(market, at)`: one row per level, `side` (1 yes, 2 no), `price` (micro-dollars),
///   `quantity` (centi-contracts), `price_dollars`, `contracts`; best bid first on each side.
///   An unknown book raises an error (SQLSTATE `KD001`) with the reason: never guessed.
const MIGRATION_10: &str = r#"
CREATE FUNCTION book_unknown(market text, at timestamptz) RETURNS text
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    at_ms bigint := floor(extract(epoch FROM at) * 1000)::bigint;
    after_ms bigint;
    hole bigint;
BEGIN
    SELECT s.last_delta_ts_ms INTO after_ms
      FROM orderbook_snapshots s
     WHERE s.market_ticker = market AND s.source = 'ws' AND s.ts <= at
       AND s.last_delta_ts_ms IS NOT NULL
     ORDER BY s.ts DESC, s.last_delta_ts_ms DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN format('no snapshot of %s at or before %s', market, at);
    END IF;
    IF at_ms <= after_ms THEN
        RETURN NULL;
    END IF;
    WITH known AS (SELECT DISTINCT gatherer_id FROM sync_cursors),
    holes AS (
        SELECT g.gatherer_id, g.from_ms, g.to_ms, g.reason FROM gaps g
         WHERE g.stream = 'orderbook_deltas' AND g.market_ticker IN (market, '')
           AND g.from_ms <= at_ms AND g.to_ms > after_ms),
    tries AS (
        SELECT after_ms + 1 AS x
        UNION SELECT h.from_ms FROM holes h WHERE h.from_ms > after_ms AND h.from_ms <= at_ms)
    SELECT t.x INTO hole FROM tries t
     WHERE NOT EXISTS (
        SELECT 1 FROM known k WHERE NOT EXISTS (
            SELECT 1 FROM holes h
             WHERE h.gatherer_id = k.gatherer_id AND h.from_ms <= t.x AND t.x <= h.to_ms))
       -- Not only new-market windows before any subscription (widened by the gap margin): a
       -- snapshot exists, so it was taken after a subscription, and they end there.
       AND EXISTS (
        SELECT 1 FROM holes h
         WHERE h.reason <> 'late_subscription' AND h.from_ms <= t.x AND t.x <= h.to_ms)
     ORDER BY t.x LIMIT 1;
    IF hole IS NOT NULL THEN
        RETURN format('no gatherer captured the deltas of %s at %s ms (deduplicator gaps); the next snapshot after it makes the book known again',
                      market, hole);
    END IF;
    RETURN NULL;
END
$fn$;

CREATE FUNCTION book_at(market text, at timestamptz)
RETURNS TABLE (side smallint, price bigint, quantity bigint,
               price_dollars numeric(18,6), contracts numeric(18,2))
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    why text := book_unknown(market, at);
    snap record;
BEGIN
    IF why IS NOT NULL THEN
        RAISE EXCEPTION 'the book of % at % is unknown: %', market, at, why
            USING ERRCODE = 'KD001';
    END IF;
    SELECT s.yes, s.no, s.last_delta_ts_ms INTO snap
      FROM orderbook_snapshots s
     WHERE s.market_ticker = market AND s.source = 'ws' AND s.ts <= at
       AND s.last_delta_ts_ms IS NOT NULL
     ORDER BY s.ts DESC, s.last_delta_ts_ms DESC LIMIT 1;
    RETURN QUERY
    WITH levels AS (
        SELECT 1::smallint AS sd, (l->>0)::bigint AS p, (l->>1)::bigint AS q
          FROM jsonb_array_elements(snap.yes) l
        UNION ALL
        SELECT 2::smallint, (l->>0)::bigint, (l->>1)::bigint FROM jsonb_array_elements(snap.no) l
        UNION ALL
        SELECT d.side, d.price, d.delta FROM orderbook_deltas d
         WHERE d.market_ticker = market AND d.ts_ms > snap.last_delta_ts_ms AND d.ts <= at)
    SELECT v.sd, v.p, sum(v.q)::bigint, (v.p::numeric / 1000000)::numeric(18,6),
           (sum(v.q)::numeric / 100)::numeric(18,2)
      FROM levels v GROUP BY v.sd, v.p HAVING sum(v.q) <> 0
     ORDER BY v.sd, v.p DESC;
END
$fn$;
"#;

/// The lease and its fencing epoch (docs/DESIGN.md, "The lease"):
/// - `dedup_leader`: one row; `epoch` moves by one each time a deduplicator takes the lease.
///   Every production write transaction of the active one starts with `dedup_fence(epoch)`,
///   which share-locks this row and raises `KD002` when the epoch is no longer the caller's.
///   Taking the lease updates the row, so it waits for every transaction that holds the old
///   epoch's share lock, and every later one sees the new epoch.
/// - `lease_heartbeat`: the active's renewals, by production's clock (a separate row so the
///   renewals never wait on the share locks of commits in flight).
const MIGRATION_11: &str = r#"
CREATE TABLE dedup_leader (
    id          smallint    PRIMARY KEY CHECK (id = 1),
    epoch       bigint      NOT NULL,
    holder_id   text        NOT NULL,
    holder      text        NOT NULL,
    taken_at    timestamptz NOT NULL
);
INSERT INTO dedup_leader VALUES (1, 0, '', '', now());
CREATE TABLE lease_heartbeat (
    id          smallint    PRIMARY KEY CHECK (id = 1),
    epoch       bigint      NOT NULL,
    renewed_at  timestamptz NOT NULL
);
INSERT INTO lease_heartbeat VALUES (1, 0, now());
CREATE FUNCTION dedup_fence(mine bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM 1 FROM dedup_leader WHERE id = 1 AND epoch = mine FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fenced: epoch % is no longer the lease''s (another deduplicator took it)', mine
            USING ERRCODE = 'KD002';
    END IF;
END
$fn$;
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
