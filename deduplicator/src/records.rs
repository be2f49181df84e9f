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
    fn fields(self) -> i16 {
        self.columns().split(',').count() as i16
    }
}

impl ProdTable for Stream {
    fn columns(self) -> &'static str {
        match self {
            Stream::Trades => {
                "trade_id, ts, market_ticker, yes_price, no_price, count, taker_outcome_side, taker_book_side, is_block_trade, ts_ms, source, gatherer_id"
            }
            Stream::OrderbookDeltas => {
                "market_ticker, ts, ts_ms, side, price, delta, occurrence, gatherer_key, gatherer_id, received_ms"
            }
            Stream::OrderbookSnapshots => {
                "market_ticker, ts, gatherer_id, source, conn_epoch, sid, seq, received_ms, yes, no, last_delta_ts_ms"
            }
            Stream::Tickers => {
                "market_ticker, ts, ts_ms, content_hash, occurrence, gatherer_key, body, gatherer_id"
            }
            Stream::Lifecycle => {
                "ticker, event_type, content_hash, occurrence, kind, body, received_ms, gatherer_id"
            }
            Stream::Markets | Stream::Events | Stream::Series => {
                "ticker, updated_ms, observed_ms, body, gatherer_id"
            }
            Stream::Gaps => {
                "gatherer_id, instance_id, gap_id, stream, market_ticker, from_ms, to_ms, reason, detail"
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
            Stream::Gaps => "gatherer_id, instance_id, gap_id",
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
            format!(
                "INSERT INTO {table} ({cols}) \
                 SELECT DISTINCT ON (ticker) {cols} FROM {stage} \
                 ORDER BY ticker, updated_ms DESC, observed_ms DESC \
                 ON CONFLICT (ticker) DO UPDATE SET \
                   updated_ms = EXCLUDED.updated_ms, observed_ms = EXCLUDED.observed_ms, \
                   body = EXCLUDED.body, gatherer_id = EXCLUDED.gatherer_id, committed_at = now() \
                 WHERE (EXCLUDED.updated_ms, EXCLUDED.observed_ms) > ({table}.updated_ms, {table}.observed_ms) \
                   AND (EXCLUDED.updated_ms > {table}.updated_ms OR EXCLUDED.body IS DISTINCT FROM {table}.body)"
            )
        } else if self == Stream::Trades {
            // One trade is one row whatever precision its time came with: a legacy WebSocket
            // trade carries whole seconds (`ts`), REST milliseconds. Both fall in the same
            // second, so the trade is known by (trade_id, second); the millisecond version is
            // kept when both arrive together.
            format!(
                "INSERT INTO {table} ({cols}) \
                 SELECT DISTINCT ON (trade_id, ts_ms / 1000) {cols} FROM {stage} s \
                 WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.trade_id = s.trade_id \
                   AND t.ts BETWEEN s.ts - INTERVAL '1 second' AND s.ts + INTERVAL '1 second' \
                   AND t.ts_ms / 1000 = s.ts_ms / 1000) \
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

/// Why a record cannot become a production row at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

const MAX_TEXT: usize = 512;
const MAX_JSON: usize = 1 << 20;

fn text(field: &str, v: &str) -> Result<(), Invalid> {
    if v.len() > MAX_TEXT {
        return Err(Invalid(format!(
            "{field} is {} bytes (max {MAX_TEXT})",
            v.len()
        )));
    }
    Ok(())
}

fn nonempty(field: &str, v: &str) -> Result<(), Invalid> {
    if v.is_empty() {
        return Err(Invalid(format!("{field} is empty")));
    }
    text(field, v)
}

fn json(field: &str, v: &str) -> Result<(), Invalid> {
    if v.len() > MAX_JSON {
        return Err(Invalid(format!(
            "{field} is {} bytes (max {MAX_JSON})",
            v.len()
        )));
    }
    serde_json::from_str::<&serde_json::value::RawValue>(v)
        .map(|_| ())
        .map_err(|e| Invalid(format!("{field} is not JSON: {e}")))
}

fn side(v: i32) -> Result<i16, Invalid> {
    match pb::Side::try_from(v) {
        Ok(pb::Side::Yes) => Ok(1),
        Ok(pb::Side::No) => Ok(2),
        _ => Err(Invalid(format!("side {v} is neither yes nor no"))),
    }
}

/// Checks that `r` is a well-formed record of `stream` (the body type matches, required fields
/// are present, text and JSON are bounded). The values themselves are the database's to judge.
pub fn validate(stream: Stream, r: &pb::Record) -> Result<(), Invalid> {
    use pb::record::Body;
    let Some(body) = r.body.as_ref() else {
        return Err(Invalid("record has no body".into()));
    };
    match (stream, body) {
        (Stream::Trades, Body::Trade(t)) => {
            nonempty("trade_id", &t.trade_id)?;
            nonempty("market_ticker", &t.market_ticker)?;
            text("taker_book_side", &t.taker_book_side)?;
            text("source", &t.source)?;
            if t.ts_ms <= 0 {
                return Err(Invalid(format!("trade ts_ms {} is not a time", t.ts_ms)));
            }
        }
        (Stream::OrderbookDeltas, Body::Delta(d)) => {
            nonempty("market_ticker", &d.market_ticker)?;
            side(d.side)?;
            if d.ts_ms < 0 {
                return Err(Invalid(format!("delta ts_ms {} is negative", d.ts_ms)));
            }
            if d.ts_ms == 0 && d.origin.is_none() {
                return Err(Invalid(
                    "delta without ts_ms has no origin to key it by".into(),
                ));
            }
        }
        (Stream::OrderbookSnapshots, Body::Snapshot(s)) => {
            nonempty("market_ticker", &s.market_ticker)?;
            text("source", &s.source)?;
            if s.yes.len() + s.no.len() > 10_000 {
                return Err(Invalid("snapshot has more than 10000 levels".into()));
            }
        }
        (Stream::Tickers, Body::Ticker(t)) => {
            nonempty("market_ticker", &t.market_ticker)?;
            nonempty("content_hash", &t.content_hash)?;
            json("body_json", &t.body_json)?;
        }
        (Stream::Lifecycle, Body::Lifecycle(l)) => {
            nonempty("ticker", &l.ticker)?;
            nonempty("event_type", &l.event_type)?;
            nonempty("content_hash", &l.content_hash)?;
            text("kind", &l.kind)?;
            json("body_json", &l.body_json)?;
        }
        (Stream::Markets | Stream::Events | Stream::Series, Body::Registry(v)) => {
            nonempty("ticker", &v.ticker)?;
            json("body_json", &v.body_json)?;
            let want = match stream {
                Stream::Markets => "market",
                Stream::Events => "event",
                _ => "series",
            };
            if v.kind != want {
                return Err(Invalid(format!(
                    "registry kind {:?} in the {} stream",
                    v.kind,
                    stream.table()
                )));
            }
        }
        (Stream::Gaps, Body::Gap(g)) => {
            if Stream::from_pb(g.stream).is_none() {
                return Err(Invalid(format!("gap of unknown stream {}", g.stream)));
            }
            text("market_ticker", &g.market_ticker)?;
            nonempty("reason", &g.reason)?;
            if g.detail.len() > 4096 {
                return Err(Invalid("gap detail longer than 4096 bytes".into()));
            }
            if g.to_ms < g.from_ms {
                return Err(Invalid(format!(
                    "gap ends ({}) before it starts ({})",
                    g.to_ms, g.from_ms
                )));
            }
        }
        (s, _) => {
            return Err(Invalid(format!(
                "a {} record in the {} stream",
                body_name(body),
                s.table()
            )));
        }
    }
    Ok(())
}

fn body_name(b: &pb::record::Body) -> &'static str {
    use pb::record::Body;
    match b {
        Body::Trade(_) => "trade",
        Body::Delta(_) => "delta",
        Body::Snapshot(_) => "snapshot",
        Body::Ticker(_) => "ticker",
        Body::Lifecycle(_) => "lifecycle",
        Body::Registry(_) => "registry",
        Body::Gap(_) => "gap",
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
        Body::Lifecycle(l) => h
            .s(&l.ticker)
            .s(&l.event_type)
            .s(&l.content_hash)
            .i(i64::from(l.occurrence)),
        Body::Registry(_) => return None,
        Body::Gap(g) => h.s(src.gatherer_id).s(src.instance_id).i(g.id),
    };
    Some(h.finish())
}

/// Encodes valid records of one stream for `COPY stage FROM STDIN (FORMAT binary)`.
pub struct Encoder {
    stream: Stream,
    copy: CopyEncoder,
}

impl Encoder {
    pub fn new(stream: Stream) -> Self {
        Encoder {
            stream,
            copy: CopyEncoder::new(stream.fields()),
        }
    }

    pub fn rows(&self) -> usize {
        self.copy.rows()
    }

    pub fn finish(self) -> bytes::Bytes {
        self.copy.finish()
    }

    /// Appends one record (already validated for this stream; anything else is skipped).
    pub fn push(&mut self, src: &Source<'_>, r: &pb::Record) {
        use pb::record::Body;
        let c = &mut self.copy;
        match (self.stream, r.body.as_ref()) {
            (Stream::Trades, Some(Body::Trade(t))) => {
                c.row()
                    .text(&t.trade_id)
                    .timestamptz_ms(t.ts_ms)
                    .text(&t.market_ticker);
                c.i64(t.yes_price_micros)
                    .i64(t.no_price_micros)
                    .i64(t.count_centi);
                c.i16(side(t.taker_outcome_side).unwrap_or(0))
                    .text(&t.taker_book_side);
                c.bool(t.is_block_trade)
                    .i64(t.ts_ms)
                    .text(&t.source)
                    .text(src.gatherer_id);
            }
            (Stream::OrderbookDeltas, Some(Body::Delta(d))) => {
                let (ts, gk) = if d.ts_ms == 0 {
                    (
                        received(d.origin.as_ref()),
                        gatherer_key(src, d.origin.as_ref()),
                    )
                } else {
                    (d.ts_ms, String::new())
                };
                c.row()
                    .text(&d.market_ticker)
                    .timestamptz_ms(ts)
                    .i64(d.ts_ms);
                c.i16(side(d.side).unwrap_or(0))
                    .i64(d.price_micros)
                    .i64(d.delta_centi);
                c.i64(i64::from(d.occurrence))
                    .text(&gk)
                    .text(src.gatherer_id);
                c.i64(received(d.origin.as_ref()));
            }
            (Stream::OrderbookSnapshots, Some(Body::Snapshot(s))) => {
                let o = s.origin.unwrap_or_default();
                c.row()
                    .text(&s.market_ticker)
                    .timestamptz_ms(o.received_ms)
                    .text(src.gatherer_id);
                c.text(&s.source)
                    .i64(o.conn_epoch)
                    .i64(o.sid as i64)
                    .i64(o.seq as i64);
                c.i64(o.received_ms)
                    .jsonb(&levels_json(&s.yes))
                    .jsonb(&levels_json(&s.no));
                c.opt_i64((s.last_delta_ts_ms != 0).then_some(s.last_delta_ts_ms));
            }
            (Stream::Tickers, Some(Body::Ticker(t))) => {
                let (ts, gk) = if t.ts_ms == 0 {
                    (
                        received(t.origin.as_ref()),
                        gatherer_key(src, t.origin.as_ref()),
                    )
                } else {
                    (t.ts_ms, String::new())
                };
                c.row()
                    .text(&t.market_ticker)
                    .timestamptz_ms(ts)
                    .i64(t.ts_ms);
                c.text(&t.content_hash)
                    .i64(i64::from(t.occurrence))
                    .text(&gk);
                c.jsonb(&t.body_json).text(src.gatherer_id);
            }
            (Stream::Lifecycle, Some(Body::Lifecycle(l))) => {
                c.row()
                    .text(&l.ticker)
                    .text(&l.event_type)
                    .text(&l.content_hash)
                    .i64(i64::from(l.occurrence))
                    .text(&l.kind);
                c.jsonb(&l.body_json)
                    .i64(received(l.origin.as_ref()))
                    .text(src.gatherer_id);
            }
            (Stream::Markets | Stream::Events | Stream::Series, Some(Body::Registry(v))) => {
                c.row().text(&v.ticker).i64(v.updated_ms).i64(v.observed_ms);
                c.jsonb(&v.body_json).text(src.gatherer_id);
            }
            (Stream::Gaps, Some(Body::Gap(g))) => {
                let stream = Stream::from_pb(g.stream).map_or("unknown", Stream::table);
                c.row()
                    .text(src.gatherer_id)
                    .text(src.instance_id)
                    .i64(g.id)
                    .text(stream);
                c.text(&g.market_ticker)
                    .i64(g.from_ms)
                    .i64(g.to_ms)
                    .text(&g.reason)
                    .text(&g.detail);
            }
            _ => {}
        }
    }
}

/// `[["0.5600","12.00"],...]`-free exact form: `[[price_micros, quantity_centi], ...]`.
fn levels_json(levels: &[pb::Level]) -> String {
    let mut s = String::with_capacity(2 + levels.len() * 24);
    s.push('[');
    for (i, l) in levels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("[{},{}]", l.price_micros, l.quantity_centi));
    }
    s.push(']');
    s
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
    };
    (ms > 0).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::record::Body;

    fn trade(id: &str, ts: i64) -> pb::Record {
        pb::Record {
            cursor: 1,
            body: Some(Body::Trade(pb::Trade {
                trade_id: id.into(),
                market_ticker: "M".into(),
                ts_ms: ts,
                taker_outcome_side: pb::Side::Yes as i32,
                ..Default::default()
            })),
        }
    }

    fn delta(ts: i64, occ: u32, seq: u64) -> pb::Record {
        pb::Record {
            cursor: 1,
            body: Some(Body::Delta(pb::OrderbookDelta {
                market_ticker: "M".into(),
                ts_ms: ts,
                side: pb::Side::No as i32,
                price_micros: 560_000,
                delta_centi: -300,
                occurrence: occ,
                origin: Some(pb::Origin {
                    received_ms: 5,
                    conn_epoch: 1,
                    sid: 1,
                    seq,
                }),
            })),
        }
    }

    const G1: Source<'static> = Source {
        gatherer_id: "g1",
        instance_id: "a",
    };
    const G2: Source<'static> = Source {
        gatherer_id: "g2",
        instance_id: "b",
    };

    #[test]
    fn keys_match_across_gatherers_only_where_the_design_says() {
        // The same trade from two gatherers is one row; another trade id is another.
        assert_eq!(
            key(Stream::Trades, &G1, &trade("t", 9)),
            key(Stream::Trades, &G2, &trade("t", 9))
        );
        assert_ne!(
            key(Stream::Trades, &G1, &trade("t", 9)),
            key(Stream::Trades, &G1, &trade("u", 9))
        );
        // Deltas: occurrence separates identical ones; origin does not matter when ts_ms is set.
        let d = |ts, occ, seq| key(Stream::OrderbookDeltas, &G1, &delta(ts, occ, seq));
        assert_eq!(
            d(7, 0, 1),
            key(Stream::OrderbookDeltas, &G2, &delta(7, 0, 99))
        );
        assert_ne!(d(7, 0, 1), d(7, 1, 2));
        // Without ts_ms the key belongs to the gatherer and its sequence.
        assert_ne!(
            d(0, 0, 1),
            key(Stream::OrderbookDeltas, &G2, &delta(0, 0, 1))
        );
        assert_ne!(d(0, 0, 1), d(0, 0, 2));
        // Streams never share keys.
        assert_ne!(
            key(Stream::Trades, &G1, &trade("t", 9)),
            key(Stream::Gaps, &G1, &trade("t", 9))
        );
    }

    #[test]
    fn validation_refuses_malformed_records() {
        assert!(validate(Stream::Trades, &trade("t", 9)).is_ok());
        assert_eq!(
            validate(Stream::OrderbookDeltas, &trade("t", 9))
                .unwrap_err()
                .0,
            "a trade record in the orderbook_deltas stream"
        );
        assert!(validate(Stream::Trades, &trade("", 9)).is_err());
        assert!(validate(Stream::Trades, &trade("t", 0)).is_err());
        assert!(
            validate(
                Stream::Trades,
                &pb::Record {
                    cursor: 1,
                    body: None
                }
            )
            .is_err()
        );
        let mut bad_side = delta(1, 0, 1);
        if let Some(Body::Delta(d)) = bad_side.body.as_mut() {
            d.side = 7;
        }
        assert!(validate(Stream::OrderbookDeltas, &bad_side).is_err());
        let ticker = pb::Record {
            cursor: 1,
            body: Some(Body::Ticker(pb::Ticker {
                market_ticker: "M".into(),
                content_hash: "h".into(),
                body_json: "{not json".into(),
                ..Default::default()
            })),
        };
        assert!(
            validate(Stream::Tickers, &ticker)
                .unwrap_err()
                .0
                .starts_with("body_json is not JSON")
        );
    }

    #[test]
    fn every_stream_encodes_its_column_count() {
        let mut e = Encoder::new(Stream::Trades);
        e.push(&G1, &trade("t", 9));
        e.push(&G1, &delta(1, 0, 1)); // wrong stream: skipped
        assert_eq!(e.rows(), 1);
        for s in Stream::ALL {
            assert_eq!(s.fields() as usize, s.columns().split(',').count());
            assert!(s.merge_sql().contains(s.stage().as_str()));
        }
        assert_eq!(
            levels_json(&[pb::Level {
                price_micros: 1,
                quantity_centi: 2
            }]),
            "[[1,2]]"
        );
    }
}
