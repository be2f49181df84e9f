//! The rows each stream stores: how they are written (binary COPY) and read back (as the
//! gRPC `Record`s the deduplicator consumes). One place per stream, so the column order of the
//! writer and of the reader cannot drift apart.
//!
//! It must never store money or sizes as floats: micro-dollars and centi-contracts, as `bigint`.

use kalshi_proto::gatherer::v1 as pb;
use kalshi_shared::pg::CopyEncoder;
use kalshi_shared::wire::{BookSide, Side};
use sqlx::Row as _;
use sqlx::postgres::PgRow;

use crate::store::Stream;

pub use super::gap_reason::GapReason;

/// Where and when a record was received (for audit; never part of a cross-gatherer key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    pub received_ms: i64,
    pub conn_epoch: i64,
    pub sid: u64,
    pub seq: u64,
}

/// Where a trade or snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Ws,
    Rest,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Ws => "ws",
            Source::Rest => "rest",
        }
    }
}

fn side_code(side: Option<Side>) -> i16 {
    match side {
        None => 0,
        Some(Side::Yes) => 1,
        Some(Side::No) => 2,
    }
}

fn side_pb(code: i16) -> i32 {
    match code {
        1 => pb::Side::Yes as i32,
        2 => pb::Side::No as i32,
        _ => pb::Side::Unspecified as i32,
    }
}

/// A row of one stream's table.
pub trait Row: Send + Sync + 'static {
    const STREAM: Stream;
    /// Columns in COPY order.
    const COLUMNS: &'static str;
    const FIELDS: i16;
    /// The exchange (or observation) time, for gap ranges when rows are dropped.
    fn time_ms(&self) -> i64;
    /// The partition key in ms when it is not the ingestion time (trades: exchange time).
    fn partition_ms(&self, ingested_ms: i64) -> i64 {
        ingested_ms
    }
    fn encode(&self, enc: &mut CopyEncoder, id: i64, ingested_ms: i64);
    /// The stream and time span a dropped row leaves uncovered (a gap record: the stream and
    /// window it declares).
    fn dropped_span(&self) -> (Stream, i64, i64) {
        let t = self.time_ms();
        (Self::STREAM, t, t)
    }
    /// The row itself when it is a gap record (the gaps writer records its own overflow).
    fn from_gap(_gap: GapRow) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeRow {
    pub trade_id: String,
    pub market_ticker: String,
    pub yes_price: i64,
    pub no_price: i64,
    pub count: i64,
    pub taker_outcome_side: Option<Side>,
    pub taker_book_side: Option<BookSide>,
    pub is_block_trade: bool,
    pub ts_ms: i64,
    pub source: Source,
    pub origin: Origin,
}

impl TradeRow {
    /// A trade as REST serves it (`/markets/trades`, `/historical/trades`: backfill, polling
    /// and history import alike), received at `received_ms`; `None` when a value does not
    /// parse.
    pub fn from_rest(t: &kalshi_shared::wire::rest::Trade, received_ms: i64) -> Option<TradeRow> {
        let (Ok(ts), Ok(yes), Ok(no), Ok(count)) = (
            t.created_ms(),
            t.yes_price_value(),
            t.no_price_value(),
            t.count_value(),
        ) else {
            return None;
        };
        Some(TradeRow {
            trade_id: t.trade_id.clone(),
            market_ticker: t.ticker.clone(),
            yes_price: yes.raw(),
            no_price: no.raw(),
            count: count.raw(),
            taker_outcome_side: t.taker_outcome(),
            taker_book_side: t.taker_book_side,
            is_block_trade: t.is_block_trade.unwrap_or(false),
            ts_ms: ts,
            source: Source::Rest,
            origin: Origin {
                received_ms,
                ..Origin::default()
            },
        })
    }
}

impl Row for TradeRow {
    const STREAM: Stream = Stream::Trades;
    const COLUMNS: &'static str = "id, ts, ingested_at, trade_id, market_ticker, yes_price, no_price, count, taker_outcome_side, taker_book_side, is_block_trade, ts_ms, source, received_ms, conn_epoch, sid, seq";
    const FIELDS: i16 = 17;

    fn time_ms(&self) -> i64 {
        self.ts_ms
    }

    fn partition_ms(&self, _ingested_ms: i64) -> i64 {
        self.ts_ms
    }

    fn encode(&self, e: &mut CopyEncoder, id: i64, ingested_ms: i64) {
        e.row()
            .i64(id)
            .timestamptz_ms(self.ts_ms)
            .timestamptz_ms(ingested_ms)
            .text(&self.trade_id)
            .text(&self.market_ticker)
            .i64(self.yes_price)
            .i64(self.no_price)
            .i64(self.count)
            .i16(side_code(self.taker_outcome_side))
            .text(self.taker_book_side.map_or("", BookSide::as_str))
            .bool(self.is_block_trade)
            .i64(self.ts_ms)
            .text(self.source.as_str())
            .i64(self.origin.received_ms)
            .i64(self.origin.conn_epoch)
            .i64(self.origin.sid as i64)
            .i64(self.origin.seq as i64);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaRow {
    pub market_ticker: String,
    pub ts_ms: Option<i64>,
    pub side: Side,
    pub price: i64,
    pub delta: i64,
    pub occurrence: u32,
    pub origin: Origin,
}

impl Row for DeltaRow {
    const STREAM: Stream = Stream::OrderbookDeltas;
    const COLUMNS: &'static str = "id, ingested_at, market_ticker, ts_ms, side, price, delta, occurrence, received_ms, conn_epoch, sid, seq";
    const FIELDS: i16 = 12;

    fn time_ms(&self) -> i64 {
        self.ts_ms.unwrap_or(self.origin.received_ms)
    }

    fn encode(&self, e: &mut CopyEncoder, id: i64, ingested_ms: i64) {
        e.row()
            .i64(id)
            .timestamptz_ms(ingested_ms)
            .text(&self.market_ticker)
            .opt_i64(self.ts_ms)
            .i16(side_code(Some(self.side)))
            .i64(self.price)
            .i64(self.delta)
            .i32(i32::try_from(self.occurrence).unwrap_or(i32::MAX))
            .i64(self.origin.received_ms)
            .i64(self.origin.conn_epoch)
            .i64(self.origin.sid as i64)
            .i64(self.origin.seq as i64);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub market_ticker: String,
    pub source: Source,
    /// `(price micros, quantity centi)`, ascending by price.
    pub yes: Vec<(i64, i64)>,
    pub no: Vec<(i64, i64)>,
    /// The splice point: the book reflects every delta of its market with `ts_ms` at or
    /// before it, and none after (None for REST books, which have no splice point).
    pub last_delta_ts_ms: Option<i64>,
    /// From when the stored book is the exchange's book (None: its receipt).
    pub as_of_ms: Option<i64>,
    pub origin: Origin,
}

fn levels_json(levels: &[(i64, i64)]) -> String {
    let mut s = String::with_capacity(levels.len() * 20 + 2);
    s.push('[');
    for (i, (p, q)) in levels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("[{p},{q}]"));
    }
    s.push(']');
    s
}

fn levels_from_json(text: &str) -> Vec<pb::Level> {
    serde_json::from_str::<Vec<(i64, i64)>>(text)
        .unwrap_or_default()
        .into_iter()
        .map(|(price_micros, quantity_centi)| pb::Level {
            price_micros,
            quantity_centi,
        })
        .collect()
}

impl Row for SnapshotRow {
    const STREAM: Stream = Stream::OrderbookSnapshots;
    const COLUMNS: &'static str = "id, ingested_at, market_ticker, source, yes, no, last_delta_ts_ms, received_ms, conn_epoch, sid, seq, as_of_ms";
    const FIELDS: i16 = 12;

    fn time_ms(&self) -> i64 {
        self.origin.received_ms
    }

    fn encode(&self, e: &mut CopyEncoder, id: i64, ingested_ms: i64) {
        e.row()
            .i64(id)
            .timestamptz_ms(ingested_ms)
            .text(&self.market_ticker)
            .text(self.source.as_str())
            .jsonb(&levels_json(&self.yes))
            .jsonb(&levels_json(&self.no))
            .opt_i64(self.last_delta_ts_ms)
            .i64(self.origin.received_ms)
            .i64(self.origin.conn_epoch)
            .i64(self.origin.sid as i64)
            .i64(self.origin.seq as i64)
            .opt_i64(self.as_of_ms);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickerRow {
    pub market_ticker: String,
    pub ts_ms: Option<i64>,
    pub body: String,
    pub content_hash: String,
    pub occurrence: u32,
    pub origin: Origin,
}

impl Row for TickerRow {
    const STREAM: Stream = Stream::Tickers;
    const COLUMNS: &'static str = "id, ingested_at, market_ticker, ts_ms, body, content_hash, occurrence, received_ms, conn_epoch, sid";
    const FIELDS: i16 = 10;

    fn time_ms(&self) -> i64 {
        self.ts_ms.unwrap_or(self.origin.received_ms)
    }

    fn encode(&self, e: &mut CopyEncoder, id: i64, ingested_ms: i64) {
        e.row()
            .i64(id)
            .timestamptz_ms(ingested_ms)
            .text(&self.market_ticker)
            .opt_i64(self.ts_ms)
            .json(&self.body)
            .text(&self.content_hash)
            .i32(i32::try_from(self.occurrence).unwrap_or(i32::MAX))
            .i64(self.origin.received_ms)
            .i64(self.origin.conn_epoch)
            .i64(self.origin.sid as i64);
    }
}

/// A WebSocket message of a type this build does not model, kept as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRow {
    /// The frame's `type`.
    pub kind: String,
    /// The channel of the frame's sid, when this gatherer subscribed it.
    pub channel: String,
    pub market_ticker: String,
    /// `msg` as sent, or the whole frame when it has none.
    pub body: String,
    pub content_hash: String,
    pub origin: Origin,
}

impl Row for UnknownRow {
    const STREAM: Stream = Stream::UnknownMessages;
    const COLUMNS: &'static str = "id, ingested_at, type, channel, market_ticker, body, content_hash, received_ms, conn_epoch, sid, seq";
    const FIELDS: i16 = 11;

    fn time_ms(&self) -> i64 {
        self.origin.received_ms
    }

    fn encode(&self, e: &mut CopyEncoder, id: i64, ingested_ms: i64) {
        e.row()
            .i64(id)
            .timestamptz_ms(ingested_ms)
            .text(&self.kind)
            .text(&self.channel)
            .text(&self.market_ticker)
            .json(&self.body)
            .text(&self.content_hash)
            .i64(self.origin.received_ms)
            .i64(self.origin.conn_epoch)
            .i64(self.origin.sid as i64)
            .i64(self.origin.seq as i64);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleRow {
    /// `market` or `event`.
    pub kind: &'static str,
    pub ticker: String,
    pub event_type: String,
    pub body: String,
    pub content_hash: String,
    /// Identical messages (same kind and content) received before this one.
    pub occurrence: u32,
    pub origin: Origin,
}

impl Row for LifecycleRow {
    const STREAM: Stream = Stream::Lifecycle;
    const COLUMNS: &'static str = "id, ingested_at, kind, ticker, event_type, body, content_hash, received_ms, conn_epoch, sid, occurrence";
    const FIELDS: i16 = 11;

    fn time_ms(&self) -> i64 {
        self.origin.received_ms
    }

    fn encode(&self, e: &mut CopyEncoder, id: i64, ingested_ms: i64) {
        e.row()
            .i64(id)
            .timestamptz_ms(ingested_ms)
            .text(self.kind)
            .text(&self.ticker)
            .text(&self.event_type)
            .json(&self.body)
            .text(&self.content_hash)
            .i64(self.origin.received_ms)
            .i64(self.origin.conn_epoch)
            .i64(self.origin.sid as i64)
            .i32(i32::try_from(self.occurrence).unwrap_or(i32::MAX));
    }
}

/// A version of a market, event or series (one table each, same columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRow {
    pub ticker: String,
    pub updated_ms: Option<i64>,
    pub observed_ms: i64,
    pub body: String,
    pub content_hash: String,
}

const REGISTRY_COLUMNS: &str =
    "id, ingested_at, ticker, updated_ms, observed_ms, body, content_hash";

fn encode_registry(r: &RegistryRow, e: &mut CopyEncoder, id: i64, ingested_ms: i64) {
    e.row()
        .i64(id)
        .timestamptz_ms(ingested_ms)
        .text(&r.ticker)
        .opt_i64(r.updated_ms)
        .i64(r.observed_ms)
        .jsonb(&r.body)
        .text(&r.content_hash);
}

macro_rules! registry_row {
    ($name:ident, $stream:expr) => {
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub RegistryRow);

        impl Row for $name {
            const STREAM: Stream = $stream;
            const COLUMNS: &'static str = REGISTRY_COLUMNS;
            const FIELDS: i16 = 7;

            fn time_ms(&self) -> i64 {
                self.0.observed_ms
            }

            fn encode(&self, e: &mut CopyEncoder, id: i64, ingested_ms: i64) {
                encode_registry(&self.0, e, id, ingested_ms);
            }
        }
    };
}

registry_row!(MarketVersion, Stream::Markets);
registry_row!(EventVersion, Stream::Events);
registry_row!(SeriesVersion, Stream::Series);

// A version of the exchange's status or schedule (`status`, `schedule`): each change this
// gatherer polled, a return to an earlier content included (production numbers the returns).
registry_row!(ExchangeVersion, Stream::Exchange);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRow {
    pub stream: Stream,
    /// `None`: every market of the stream.
    pub market_ticker: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub reason: GapReason,
    pub detail: String,
}

impl Row for GapRow {
    const STREAM: Stream = Stream::Gaps;
    const COLUMNS: &'static str =
        "id, ingested_at, stream, market_ticker, from_ms, to_ms, reason, detail";
    const FIELDS: i16 = 8;

    fn time_ms(&self) -> i64 {
        self.from_ms
    }

    fn dropped_span(&self) -> (Stream, i64, i64) {
        (self.stream, self.from_ms, self.to_ms)
    }

    fn from_gap(gap: GapRow) -> Option<Self> {
        Some(gap)
    }

    fn encode(&self, e: &mut CopyEncoder, id: i64, ingested_ms: i64) {
        e.row()
            .i64(id)
            .timestamptz_ms(ingested_ms)
            .text(self.stream.table())
            .opt_text(self.market_ticker.as_deref())
            .i64(self.from_ms)
            .i64(self.to_ms)
            .text(self.reason.as_str())
            .text(&self.detail);
    }
}

// ---------------------------------------------------------------------------------------------
// Reading back
// ---------------------------------------------------------------------------------------------

/// `SELECT` list of a stream's reader, matching [`decode`].
pub fn select_list(stream: Stream) -> &'static str {
    match stream {
        Stream::Trades => {
            "id, trade_id, market_ticker, yes_price, no_price, count, taker_outcome_side, taker_book_side, is_block_trade, ts_ms, source, received_ms, conn_epoch, sid, seq"
        }
        Stream::OrderbookDeltas => {
            "id, market_ticker, ts_ms, side, price, delta, occurrence, received_ms, conn_epoch, sid, seq"
        }
        Stream::OrderbookSnapshots => {
            "id, market_ticker, source, yes::text, no::text, last_delta_ts_ms, received_ms, conn_epoch, sid, seq, as_of_ms"
        }
        Stream::Tickers => {
            "id, market_ticker, ts_ms, body::text, content_hash, occurrence, received_ms, conn_epoch, sid"
        }
        Stream::Lifecycle => {
            "id, kind, ticker, event_type, body::text, content_hash, received_ms, conn_epoch, sid, occurrence"
        }
        Stream::Markets | Stream::Events | Stream::Series | Stream::Exchange => {
            "id, ticker, updated_ms, observed_ms, body::text"
        }
        Stream::Gaps => "id, stream, market_ticker, from_ms, to_ms, reason, detail",
        Stream::UnknownMessages => {
            "id, type, channel, market_ticker, body::text, content_hash, received_ms, conn_epoch, sid, seq"
        }
    }
}

fn origin(row: &PgRow, first: usize, with_seq: bool) -> Result<pb::Origin, sqlx::Error> {
    Ok(pb::Origin {
        received_ms: row.try_get(first)?,
        conn_epoch: row.try_get(first + 1)?,
        sid: row.try_get::<i64, _>(first + 2)? as u64,
        seq: if with_seq {
            row.try_get::<i64, _>(first + 3)? as u64
        } else {
            0
        },
    })
}

/// Decodes one row of [`select_list`] into a gRPC record.
pub fn decode(stream: Stream, row: &PgRow) -> Result<pb::Record, sqlx::Error> {
    use pb::record::Body;
    let cursor: i64 = row.try_get(0)?;
    let body = match stream {
        Stream::Trades => Body::Trade(pb::Trade {
            trade_id: row.try_get(1)?,
            market_ticker: row.try_get(2)?,
            yes_price_micros: row.try_get(3)?,
            no_price_micros: row.try_get(4)?,
            count_centi: row.try_get(5)?,
            taker_outcome_side: side_pb(row.try_get(6)?),
            taker_book_side: row.try_get(7)?,
            is_block_trade: row.try_get(8)?,
            ts_ms: row.try_get(9)?,
            source: row.try_get(10)?,
            origin: Some(origin(row, 11, true)?),
        }),
        Stream::OrderbookDeltas => Body::Delta(pb::OrderbookDelta {
            market_ticker: row.try_get(1)?,
            ts_ms: row.try_get::<Option<i64>, _>(2)?.unwrap_or(0),
            side: side_pb(row.try_get(3)?),
            price_micros: row.try_get(4)?,
            delta_centi: row.try_get(5)?,
            occurrence: row.try_get::<i32, _>(6)? as u32,
            origin: Some(origin(row, 7, true)?),
        }),
        Stream::OrderbookSnapshots => Body::Snapshot(pb::OrderbookSnapshot {
            market_ticker: row.try_get(1)?,
            source: row.try_get(2)?,
            yes: levels_from_json(row.try_get(3)?),
            no: levels_from_json(row.try_get(4)?),
            last_delta_ts_ms: row.try_get::<Option<i64>, _>(5)?.unwrap_or(0),
            origin: Some(origin(row, 6, true)?),
            as_of_ms: row.try_get::<Option<i64>, _>(10)?.unwrap_or(0),
        }),
        Stream::Tickers => Body::Ticker(pb::Ticker {
            market_ticker: row.try_get(1)?,
            ts_ms: row.try_get::<Option<i64>, _>(2)?.unwrap_or(0),
            body_json: row.try_get(3)?,
            content_hash: row.try_get(4)?,
            occurrence: row.try_get::<i32, _>(5)? as u32,
            origin: Some(origin(row, 6, false)?),
        }),
        Stream::Lifecycle => Body::Lifecycle(pb::Lifecycle {
            kind: row.try_get(1)?,
            ticker: row.try_get(2)?,
            event_type: row.try_get(3)?,
            body_json: row.try_get(4)?,
            content_hash: row.try_get(5)?,
            origin: Some(origin(row, 6, false)?),
            occurrence: u32::try_from(row.try_get::<i32, _>(9)?).unwrap_or(0),
        }),
        Stream::Markets | Stream::Events | Stream::Series | Stream::Exchange => {
            Body::Registry(pb::RegistryVersion {
                kind: stream.registry_kind().unwrap_or_default().into(),
                ticker: row.try_get(1)?,
                updated_ms: row.try_get::<Option<i64>, _>(2)?.unwrap_or(0),
                observed_ms: row.try_get(3)?,
                body_json: row.try_get(4)?,
            })
        }
        Stream::UnknownMessages => Body::Unknown(pb::UnknownMessage {
            r#type: row.try_get(1)?,
            channel: row.try_get(2)?,
            market_ticker: row.try_get(3)?,
            body_json: row.try_get(4)?,
            content_hash: row.try_get(5)?,
            origin: Some(origin(row, 6, true)?),
        }),
        Stream::Gaps => {
            let name: String = row.try_get(1)?;
            Body::Gap(pb::Gap {
                id: cursor,
                stream: Stream::from_table(&name).map_or(0, |s| s.to_pb() as i32),
                market_ticker: row.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                from_ms: row.try_get(3)?,
                to_ms: row.try_get(4)?,
                reason: row.try_get(5)?,
                detail: row.try_get(6)?,
            })
        }
    };
    Ok(pb::Record {
        cursor,
        body: Some(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip_through_json() {
        let text = levels_json(&[(80_000, 30_000), (220_000, 33_300)]);
        assert_eq!(text, "[[80000,30000],[220000,33300]]");
        let back = levels_from_json(&text);
        assert_eq!(back.len(), 2);
        assert_eq!(
            (back[1].price_micros, back[1].quantity_centi),
            (220_000, 33_300)
        );
        assert_eq!(levels_json(&[]), "[]");
    }

    #[test]
    fn column_lists_match_field_counts() {
        fn count(cols: &str) -> i16 {
            cols.split(',').count() as i16
        }
        assert_eq!(count(TradeRow::COLUMNS), TradeRow::FIELDS);
        assert_eq!(count(DeltaRow::COLUMNS), DeltaRow::FIELDS);
        assert_eq!(count(SnapshotRow::COLUMNS), SnapshotRow::FIELDS);
        assert_eq!(count(TickerRow::COLUMNS), TickerRow::FIELDS);
        assert_eq!(count(LifecycleRow::COLUMNS), LifecycleRow::FIELDS);
        assert_eq!(count(UnknownRow::COLUMNS), UnknownRow::FIELDS);
        assert_eq!(count(MarketVersion::COLUMNS), MarketVersion::FIELDS);
        assert_eq!(count(GapRow::COLUMNS), GapRow::FIELDS);
    }
}
