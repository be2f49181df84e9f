//! Gatherer records as production rows: which stream they belong to, their identity key (what
//! makes two gatherers' copies of one exchange record the same row), structural validation of
//! what a gatherer sent, and the binary COPY encoding into the staging tables.
//!
//! Values are not range-checked here: the production schema's CHECK constraints are the final
//! word, and a row they refuse is bisected out of its batch into `quarantine`.
//!
//! It must never give two different exchange records one key, or two copies of one record
//! different keys: the hashing lives in `kalshi_shared::identity`, pinned by golden tests.

use kalshi_proto::gatherer::v1 as pb;
use kalshi_shared::identity::{KeyHasher, trade_second};
use kalshi_shared::pg::CopyEncoder;

pub use kalshi_proto::Stream;

mod encode;
#[cfg(test)]
mod tests;
mod validate;

pub use encode::*;
pub use validate::*;

/// The REST path an exchange version was polled from (`exchange.endpoint`).
pub fn exchange_endpoint(ticker: &str) -> &'static str {
    match ticker {
        "status" => "/exchange/status",
        "schedule" => "/exchange/schedule",
        _ => "",
    }
}

/// `exchange.source`: how the gatherers read the exchange's state.
pub const EXCHANGE_SOURCE: &str = "rest";

/// How a stream is stored in production: its columns, key, staging table and merge.
pub trait ProdTable: Copy {
    /// Staging table and the columns COPY fills (the target's, minus `committed_at`).
    fn columns(self) -> &'static str;
    /// The primary key columns of the target (the conflict target of the merge).
    fn conflict_key(self) -> &'static str;
    fn stage(self) -> String;
    /// `CREATE TEMP TABLE` for the staging table (per connection, emptied at commit).
    fn create_stage_sql(self) -> String;
    /// Moves the staged rows into the target: duplicates (already committed, or twice in the
    /// batch) are skipped; registry rows keep the newest version.
    fn merge_sql(self) -> String;
    /// Whether a batch may be COPYed straight into the target: its merge is a plain
    /// `ON CONFLICT (key) DO NOTHING`, so when no row of the batch is committed yet a direct
    /// COPY stores exactly what the merge would (not the registry, where the newest version
    /// wins, nor trades, matched by second).
    fn copies_direct(self) -> bool;
    fn fields(self) -> i16 {
        self.columns().split(',').count() as i16
    }
}

impl ProdTable for Stream {
    fn copies_direct(self) -> bool {
        !self.is_registry()
            && !matches!(
                self,
                Stream::Trades | Stream::Lifecycle | Stream::UnknownMessages | Stream::Exchange
            )
    }

    fn columns(self) -> &'static str {
        match self {
            Stream::Trades => {
                "trade_id, ts, market_ticker, yes_price, no_price, count, taker_outcome_side, taker_book_side, is_block_trade, ts_ms, source, gatherer_id, received_ms"
            }
            Stream::OrderbookDeltas => {
                "market_ticker, ts, ts_ms, side, price, delta, occurrence, gatherer_key, gatherer_id, received_ms"
            }
            Stream::OrderbookSnapshots => {
                "market_ticker, ts, gatherer_id, source, conn_epoch, sid, seq, received_ms, yes, no, last_delta_ts_ms"
            }
            Stream::Tickers => {
                "market_ticker, ts, ts_ms, content_hash, occurrence, gatherer_key, body, gatherer_id, \
                 received_ms, price, yes_bid, yes_ask, yes_bid_size, yes_ask_size, volume, open_interest"
            }
            Stream::Lifecycle => {
                "ticker, event_type, content_hash, occurrence, kind, body, received_ms, gatherer_id"
            }
            Stream::Markets | Stream::Events | Stream::Series => {
                "ticker, updated_ms, observed_ms, body, gatherer_id, content_hash"
            }
            Stream::Exchange => {
                "ticker, endpoint, content_hash, occurrence, source, body, received_ms, gatherer_id"
            }
            Stream::Gaps => {
                "gatherer_id, instance_id, gap_id, stream, market_ticker, from_ms, to_ms, reason, detail"
            }
            Stream::UnknownMessages => {
                "type, market_ticker, content_hash, occurrence, channel, body, received_ms, gatherer_id"
            }
        }
    }

    fn conflict_key(self) -> &'static str {
        match self {
            Stream::Trades => "trade_id, ts",
            Stream::OrderbookDeltas => {
                "market_ticker, ts_ms, side, price, delta, occurrence, gatherer_key, ts"
            }
            Stream::OrderbookSnapshots => {
                "market_ticker, gatherer_id, source, conn_epoch, sid, seq, received_ms, ts"
            }
            Stream::Tickers => "market_ticker, ts_ms, content_hash, occurrence, gatherer_key, ts",
            Stream::Lifecycle => "ticker, event_type, content_hash, occurrence",
            Stream::Markets | Stream::Events | Stream::Series => "ticker",
            Stream::Exchange => "ticker, endpoint, content_hash, occurrence",
            Stream::Gaps => "gatherer_id, instance_id, gap_id",
            Stream::UnknownMessages => "type, market_ticker, content_hash, occurrence",
        }
    }

    fn stage(self) -> String {
        format!("stage_{}", self.table())
    }

    fn create_stage_sql(self) -> String {
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA",
            self.stage(),
            self.columns(),
            self.table()
        )
    }

    fn merge_sql(self) -> String {
        let (table, stage, cols, key) = (
            self.table(),
            self.stage(),
            self.columns(),
            self.conflict_key(),
        );
        if self.is_registry() {
            // Every version (a distinct content of a ticker) is kept in `registry_versions`,
            // at the earliest time any gatherer observed it; the table itself holds the newest.
            let kind = self.registry_kind().unwrap_or_default();
            format!(
                "WITH versions AS ( \
                   INSERT INTO registry_versions (kind, ticker, content_hash, updated_ms, observed_ms, body, gatherer_id) \
                   SELECT DISTINCT ON (ticker, content_hash) '{kind}', ticker, content_hash, updated_ms, observed_ms, body, gatherer_id \
                   FROM {stage} ORDER BY ticker, content_hash, observed_ms, gatherer_id \
                   ON CONFLICT (kind, ticker, content_hash) DO UPDATE SET \
                     updated_ms = EXCLUDED.updated_ms, observed_ms = EXCLUDED.observed_ms, \
                     body = EXCLUDED.body, gatherer_id = EXCLUDED.gatherer_id \
                   WHERE EXCLUDED.observed_ms < registry_versions.observed_ms) \
                 INSERT INTO {table} ({cols}) \
                 SELECT DISTINCT ON (ticker) {cols} FROM {stage} \
                 ORDER BY ticker, updated_ms DESC, observed_ms DESC \
                 ON CONFLICT (ticker) DO UPDATE SET \
                   updated_ms = EXCLUDED.updated_ms, observed_ms = EXCLUDED.observed_ms, \
                   body = EXCLUDED.body, gatherer_id = EXCLUDED.gatherer_id, \
                   content_hash = EXCLUDED.content_hash, committed_at = now() \
                 WHERE (EXCLUDED.updated_ms, EXCLUDED.observed_ms) > ({table}.updated_ms, {table}.observed_ms) \
                   AND (EXCLUDED.updated_ms > {table}.updated_ms OR EXCLUDED.body IS DISTINCT FROM {table}.body)"
            )
        } else if self == Stream::Trades {
            // One trade is one row whatever precision its time came with: a legacy WebSocket
            // trade carries whole seconds (`ts`), REST milliseconds. Both fall in the same
            // second, so the trade is known by (trade_id, second); the millisecond version is
            // kept when both arrive together.
            // `OFFSET 0` keeps the `NOT EXISTS` a per-row probe of the primary key. Without it
            // PostgreSQL plans an anti join and, knowing nothing of the staging table, hashes
            // the whole month's partition for every batch (gatherer::store::TRADES_MERGE_SQL
            // has the measurements); `trades_merge_probes_the_key` pins the plan.
            format!(
                "INSERT INTO {table} ({cols}) \
                 SELECT DISTINCT ON (trade_id, ts_ms / 1000) {cols} FROM {stage} s \
                 WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.trade_id = s.trade_id \
                   AND t.ts BETWEEN s.ts - INTERVAL '1 second' AND s.ts + INTERVAL '1 second' \
                   AND t.ts_ms / 1000 = s.ts_ms / 1000 OFFSET 0) \
                 ORDER BY trade_id, ts_ms / 1000, ts_ms % 1000 = 0 \
                 ON CONFLICT ({key}) DO NOTHING"
            )
        } else {
            format!(
                "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({key}) DO NOTHING"
            )
        }
    }
}

/// Who sent a record: enough to key what cannot be matched across gatherers.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub gatherer_id: &'a str,
    pub instance_id: &'a str,
}

/// The key for a delta or ticker that carries no exchange time: never merged across
/// gatherers, unique within one by its connection run and sequence number.
fn gatherer_key(src: &Source<'_>, origin: Option<&pb::Origin>) -> String {
    let o = origin.copied().unwrap_or_default();
    format!(
        "{}:{}:{}:{}:{}",
        src.gatherer_id, o.received_ms, o.conn_epoch, o.sid, o.seq
    )
}

fn received(origin: Option<&pb::Origin>) -> i64 {
    origin.map_or(0, |o| o.received_ms)
}

/// A 128-bit digest of the record's production identity (the conflict key's values), for the
/// in-memory cache of committed keys. Registry rows have no stable key (latest wins) and
/// return `None`: they always reach the database, which keeps the newest.
pub fn key(stream: Stream, src: &Source<'_>, r: &pb::Record) -> Option<u128> {
    use pb::record::Body;
    let mut h = KeyHasher::new(stream as u8);
    match r.body.as_ref()? {
        // By second: a legacy WebSocket trade has whole seconds, REST milliseconds.
        Body::Trade(t) => h.s(&t.trade_id).i(trade_second(t.ts_ms)),
        Body::Delta(d) => {
            let gk = if d.ts_ms == 0 {
                gatherer_key(src, d.origin.as_ref())
            } else {
                String::new()
            };
            h.s(&d.market_ticker)
                .i(d.ts_ms)
                .i(i64::from(d.side))
                .i(d.price_micros)
                .i(d.delta_centi);
            h.i(i64::from(d.occurrence)).s(&gk)
        }
        Body::Snapshot(s) => {
            let o = s.origin.unwrap_or_default();
            h.s(&s.market_ticker)
                .s(src.gatherer_id)
                .s(&s.source)
                .i(o.conn_epoch);
            h.i(o.sid as i64).i(o.seq as i64).i(o.received_ms)
        }
        Body::Ticker(t) => {
            let gk = if t.ts_ms == 0 {
                gatherer_key(src, t.origin.as_ref())
            } else {
                String::new()
            };
            h.s(&t.market_ticker)
                .i(t.ts_ms)
                .s(&t.content_hash)
                .i(i64::from(t.occurrence))
                .s(&gk)
        }
        // The copy, not the message: which copies are one message is decided against
        // production (sink/lifecycle.rs); the cache only drops a copy read again.
        Body::Lifecycle(_) | Body::Unknown(_) => {
            h.s(src.gatherer_id).s(src.instance_id).i(r.cursor)
        }
        Body::Registry(_) => return None,
        Body::Gap(g) => h.s(src.gatherer_id).s(src.instance_id).i(g.id),
    };
    Some(h.finish())
}
/// A short human description of a record for `quarantine.summary` and logs.
pub fn summary(r: &pb::Record) -> String {
    use pb::record::Body;
    let s = match r.body.as_ref() {
        None => "no body".to_owned(),
        Some(Body::Trade(t)) => format!(
            "trade {} {} yes={} no={} count={} ts_ms={}",
            t.trade_id,
            t.market_ticker,
            t.yes_price_micros,
            t.no_price_micros,
            t.count_centi,
            t.ts_ms
        ),
        Some(Body::Delta(d)) => format!(
            "delta {} ts_ms={} side={} price={} delta={} occ={}",
            d.market_ticker, d.ts_ms, d.side, d.price_micros, d.delta_centi, d.occurrence
        ),
        Some(Body::Snapshot(s)) => format!(
            "snapshot {} {} levels",
            s.market_ticker,
            s.yes.len() + s.no.len()
        ),
        Some(Body::Ticker(t)) => format!("ticker {} ts_ms={}", t.market_ticker, t.ts_ms),
        Some(Body::Lifecycle(l)) => format!("lifecycle {} {}", l.ticker, l.event_type),
        Some(Body::Registry(v)) => format!("{} {} updated_ms={}", v.kind, v.ticker, v.updated_ms),
        Some(Body::Gap(g)) => format!("gap {} {}..{} {}", g.id, g.from_ms, g.to_ms, g.reason),
        Some(Body::Unknown(u)) => format!("unknown message {} {}", u.r#type, u.market_ticker),
    };
    s.chars().take(300).collect()
}

/// The exchange time of a record (for lag), when it has one.
pub fn event_ms(r: &pb::Record) -> Option<i64> {
    use pb::record::Body;
    let ms = match r.body.as_ref()? {
        Body::Trade(t) => t.ts_ms,
        Body::Delta(d) => d.ts_ms,
        Body::Snapshot(s) => s.origin.as_ref()?.received_ms,
        Body::Ticker(t) => t.ts_ms,
        Body::Lifecycle(l) => l.origin.as_ref()?.received_ms,
        Body::Registry(v) => v.observed_ms,
        Body::Gap(g) => g.to_ms,
        Body::Unknown(u) => u.origin.as_ref()?.received_ms,
    };
    (ms > 0).then_some(ms)
}
