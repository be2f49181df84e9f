//! The archive's file format: which streams are archived, their typed Parquet columns (the
//! production columns minus `committed_at`, in the same order, so a restore feeds the very
//! staging tables and merge the writers use), the sort order, the deterministic writer, the
//! reader, and the content checksum.
//!
//! Determinism: the same rows give the same bytes. Rows are totally ordered (market, time,
//! then the rest of the primary key), the writer's properties are fixed here (including
//! `created_by`), and nothing time- or host-dependent is written into a file.
//!
//! It must never write a price, a quantity or a time other than as the integer production
//! holds.

use std::sync::Arc;

use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::Type;

pub use kalshi_shared::identity::hex;
/// The Parquet schema types (for readers of [`schema`], e.g. the Athena tables' check).
pub use parquet::schema::types as parquet_type;

use super::ArchiveError;
use crate::records::Stream;

/// Bumped whenever a column, a type or the order changes (it is in every manifest).
///
/// - 1: the first schema.
/// - 2: the `unknown_messages` stream; `trades` and `tickers` gain `received_ms` (null for rows production took before it
///   kept one), `tickers` gains its typed columns; ticker and lifecycle `body` is the exchange's
///   text as sent.
/// - 3: `markets`, `events`, `series` and `exchange` (status and schedule): every version of
///   each (production's `registry_versions`), filed by the period in which a gatherer first
///   observed it.
///
/// - 4: prices and quantities carry DECIMAL logical types on the same integers: prices
///   DECIMAL(18,6) (micro-dollars read as dollars), quantities DECIMAL(18,2) (centi-contracts
///   read as contracts), so readers get dollars and contracts without dividing.
///
/// A version only appends columns or streams, or annotates a column's integers, so an older
/// file's columns are a prefix of the current ones ([`columns_at`]) holding the same values:
/// every file ever written stays readable ([`schema_of`] gives each version's exact schema).
pub const SCHEMA_VERSION: u32 = 4;

/// The first version whose prices and quantities are DECIMAL.
pub const DECIMAL_VERSION: u32 = 4;

/// The streams with one file per period, in manifest order.
pub const ARCHIVED: [Stream; 10] = [
    Stream::Trades,
    Stream::OrderbookDeltas,
    Stream::OrderbookSnapshots,
    Stream::Tickers,
    Stream::Lifecycle,
    // Schema 2.
    Stream::UnknownMessages,
    // Schema 3: the registry's versions and the exchange's.
    Stream::Markets,
    Stream::Events,
    Stream::Series,
    Stream::Exchange,
];

/// How a production column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// `json` in production: the text as stored, byte for byte.
    Json,
    /// `jsonb` in production (annotated JSON in Parquet like [`Kind::Json`]).
    Jsonb,
    /// timestamptz as UTC milliseconds (TIMESTAMP(MILLIS, UTC)).
    TsMs,
    I64,
    /// A price in micro-dollars (INT64; DECIMAL(18,6), dollars, from schema 4).
    Micros,
    /// A quantity in centi-contracts (INT64; DECIMAL(18,2), contracts, from schema 4).
    Centi,
    /// [`Kind::Micros`], null where the message had none.
    OptMicros,
    /// [`Kind::Centi`], null where the message had none.
    OptCenti,
    /// smallint (INT32 annotated INTEGER(16)).
    I16,
    Bool,
    OptI64,
    /// `[[price_micros, quantity_centi], ...]` as LIST<STRUCT<price, quantity>> (the price and
    /// quantity annotated as [`Kind::Micros`] and [`Kind::Centi`] are).
    Levels,
}

impl Kind {
    /// Whether the column may be null.
    pub fn optional(self) -> bool {
        matches!(self, OptI64 | OptMicros | OptCenti)
    }

    /// An INT64 column of plain integers in production (whatever its annotation).
    pub fn int64(self) -> bool {
        matches!(
            self,
            I64 | OptI64 | Micros | Centi | OptMicros | OptCenti | TsMs
        )
    }

    /// The DECIMAL (precision, scale) of the column's integers in schema `version`.
    pub fn decimal(self, version: u32) -> Option<(u8, u8)> {
        if version < DECIMAL_VERSION {
            return None;
        }
        match self {
            Micros | OptMicros => Some((18, 6)),
            Centi | OptCenti => Some((18, 2)),
            _ => None,
        }
    }
}

pub struct Col {
    pub name: &'static str,
    pub kind: Kind,
}

use Kind::*;

/// A column (a macro, so the tables below stay constant and one line per column).
macro_rules! col {
    ($name:literal, $kind:ident) => {
        Col {
            name: $name,
            kind: $kind,
        }
    };
}

/// The columns of a stream, in production's COPY order (`ProdTable::columns`).
pub fn columns(stream: Stream) -> &'static [Col] {
    match stream {
        Stream::Trades => &[
            col!("trade_id", Text),
            col!("ts", TsMs),
            col!("market_ticker", Text),
            col!("yes_price", Micros),
            col!("no_price", Micros),
            col!("count", Centi),
            col!("taker_outcome_side", I16),
            col!("taker_book_side", Text),
            col!("is_block_trade", Bool),
            col!("ts_ms", I64),
            col!("source", Text),
            col!("gatherer_id", Text),
            // Schema 2.
            col!("received_ms", OptI64),
        ],
        Stream::OrderbookDeltas => &[
            col!("market_ticker", Text),
            col!("ts", TsMs),
            col!("ts_ms", I64),
            col!("side", I16),
            col!("price", Micros),
            col!("delta", Centi),
            col!("occurrence", I64),
            col!("gatherer_key", Text),
            col!("gatherer_id", Text),
            col!("received_ms", I64),
        ],
        Stream::OrderbookSnapshots => &[
            col!("market_ticker", Text),
            col!("ts", TsMs),
            col!("gatherer_id", Text),
            col!("source", Text),
            col!("conn_epoch", I64),
            col!("sid", I64),
            col!("seq", I64),
            col!("received_ms", I64),
            col!("yes", Levels),
            col!("no", Levels),
            col!("last_delta_ts_ms", OptI64),
        ],
        Stream::Tickers => &[
            col!("market_ticker", Text),
            col!("ts", TsMs),
            col!("ts_ms", I64),
            col!("content_hash", Text),
            col!("occurrence", I64),
            col!("gatherer_key", Text),
            col!("body", Json),
            col!("gatherer_id", Text),
            // Schema 2: receipt time, then the typed values of `body` (micro-dollars and
            // centi-contracts; null where the message had none).
            col!("received_ms", OptI64),
            col!("price", OptMicros),
            col!("yes_bid", OptMicros),
            col!("yes_ask", OptMicros),
            col!("yes_bid_size", OptCenti),
            col!("yes_ask_size", OptCenti),
            col!("volume", OptCenti),
            col!("open_interest", OptCenti),
        ],
        Stream::Lifecycle => &[
            col!("ticker", Text),
            col!("event_type", Text),
            col!("content_hash", Text),
            col!("occurrence", I64),
            col!("kind", Text),
            col!("body", Json),
            col!("received_ms", I64),
            col!("gatherer_id", Text),
        ],
        Stream::UnknownMessages => &[
            col!("type", Text),
            col!("market_ticker", Text),
            col!("content_hash", Text),
            col!("occurrence", I64),
            col!("channel", Text),
            col!("body", Json),
            col!("received_ms", I64),
            col!("gatherer_id", Text),
        ],
        // Production's registry columns (`ProdTable::columns`), read from `registry_versions`
        // (one row per version; `observed_ms` is when a gatherer first saw it).
        Stream::Markets | Stream::Events | Stream::Series => &[
            col!("ticker", Text),
            col!("updated_ms", I64),
            col!("observed_ms", I64),
            col!("body", Jsonb),
            col!("gatherer_id", Text),
            col!("content_hash", Text),
        ],
        // Every change, a content that came back a row per return (by `received_ms`).
        Stream::Exchange => &[
            col!("ticker", Text),
            col!("endpoint", Text),
            col!("content_hash", Text),
            col!("occurrence", I64),
            col!("source", Text),
            col!("body", Json),
            col!("received_ms", I64),
            col!("gatherer_id", Text),
        ],
        Stream::Gaps => &[],
    }
}

/// The columns of a stream in schema `version` (None: a version this build does not know, a
/// newer one). Versions only append columns: an older version's are a prefix of the current.
pub fn columns_at(stream: Stream, version: u32) -> Option<&'static [Col]> {
    let all = columns(stream);
    let width = match (version, stream) {
        (1, Stream::Trades) => 12,
        (1, Stream::Tickers) => 8,
        (1, Stream::UnknownMessages) => return None,
        (1 | 2, Stream::Markets | Stream::Events | Stream::Series | Stream::Exchange) => {
            return None;
        }
        (1..=SCHEMA_VERSION, _) => all.len(),
        _ => return None,
    };
    all.get(..width)
}

/// The column a period is cut on, as SQL over Unix milliseconds.
pub fn time_sql(stream: Stream) -> &'static str {
    match stream {
        Stream::Lifecycle | Stream::UnknownMessages => "received_ms",
        Stream::Exchange => "received_ms",
        Stream::Markets | Stream::Events | Stream::Series => "observed_ms",
        _ => "ts",
    }
}

/// `WHERE` over `$1 <= t < $2` (Unix ms) and the total order of the file.
pub fn select_sql(stream: Stream) -> String {
    let range = match stream {
        Stream::Lifecycle | Stream::UnknownMessages | Stream::Exchange => {
            "received_ms >= $1 AND received_ms < $2"
        }
        s if s.is_registry() => "observed_ms >= $1 AND observed_ms < $2",
        _ => "ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($2 / 1000.0)",
    };
    select_sql_where(stream, range)
}

/// The column of a stream's rows that names their market (or event, series, status).
pub fn ticker_column(stream: Stream) -> &'static str {
    match stream {
        Stream::Lifecycle | Stream::Exchange => "ticker",
        s if s.is_registry() => "ticker",
        _ => "market_ticker",
    }
}

/// The stream's archived columns where `condition` holds, in the file's total order.
pub fn select_sql_where(stream: Stream, condition: &str) -> String {
    let cols: Vec<String> = columns(stream)
        .iter()
        .map(|c| match c.kind {
            TsMs => format!("(extract(epoch FROM {0}) * 1000)::bigint AS {0}", c.name),
            Json | Jsonb | Levels => format!("{0}::text AS {0}", c.name),
            _ => c.name.to_owned(),
        })
        .collect();
    if let Some(kind) = stream.registry_kind().filter(|_| stream.is_registry()) {
        return format!(
            "SELECT {} FROM registry_versions WHERE kind = '{kind}' \
             AND {condition} ORDER BY ticker, observed_ms, content_hash",
            cols.join(", ")
        );
    }
    let order = match stream {
        Stream::Lifecycle => "ticker, received_ms, event_type, content_hash, occurrence",
        Stream::UnknownMessages => "type, market_ticker, received_ms, content_hash, occurrence",
        Stream::Exchange => "ticker, received_ms, endpoint, content_hash, occurrence",
        Stream::Trades => "market_ticker, ts, trade_id",
        Stream::OrderbookDeltas => {
            "market_ticker, ts, ts_ms, side, price, delta, occurrence, gatherer_key"
        }
        Stream::OrderbookSnapshots => {
            "market_ticker, ts, gatherer_id, source, conn_epoch, sid, seq, received_ms"
        }
        _ => "market_ticker, ts, ts_ms, content_hash, occurrence, gatherer_key",
    };
    format!(
        "SELECT {} FROM {} WHERE {condition} ORDER BY {order}",
        cols.join(", "),
        stream.table()
    )
}

/// One value of one row, as production holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    I64(i64),
    I16(i16),
    Bool(bool),
    Null,
    Levels(Vec<(i64, i64)>),
}

pub type Row = Vec<Value>;

/// Decodes a row from production (the `select_sql` columns).
pub fn from_pg(stream: Stream, r: &sqlx::postgres::PgRow) -> Result<Row, ArchiveError> {
    use sqlx::Row as _;
    let mut out = Vec::with_capacity(columns(stream).len());
    for (i, col) in columns(stream).iter().enumerate() {
        let e = |e: sqlx::Error| {
            ArchiveError::new("decode", format!("{}.{}: {e}", stream.table(), col.name))
        };
        out.push(match col.kind {
            Text | Json | Jsonb => Value::Text(r.try_get(i).map_err(e)?),
            TsMs | I64 | Micros | Centi => Value::I64(r.try_get(i).map_err(e)?),
            I16 => Value::I16(r.try_get(i).map_err(e)?),
            Bool => Value::Bool(r.try_get(i).map_err(e)?),
            OptI64 | OptMicros | OptCenti => r
                .try_get::<Option<i64>, _>(i)
                .map_err(e)?
                .map_or(Value::Null, Value::I64),
            Levels => {
                let s: String = r.try_get(i).map_err(e)?;
                Value::Levels(parse_levels(&s).map_err(|m| {
                    ArchiveError::new(
                        "decode",
                        format!("{}.{}: {}", stream.table(), col.name, m.message),
                    )
                })?)
            }
        });
    }
    Ok(out)
}

pub(super) fn parse_levels(s: &str) -> Result<Vec<(i64, i64)>, ArchiveError> {
    serde_json::from_str(s)
        .map_err(|e| ArchiveError::new("decode", format!("not [[price, quantity], ...]: {e}")))
}

/// Levels back to production's jsonb text (`records::levels_json`'s form).
pub fn levels_json(levels: &[(i64, i64)]) -> String {
    let parts: Vec<String> = levels.iter().map(|(p, q)| format!("[{p},{q}]")).collect();
    format!("[{}]", parts.join(","))
}

/// The Parquet schema of a stream (the current version's).
pub fn schema(stream: Stream) -> Result<Arc<Type>, parquet::errors::ParquetError> {
    schema_of(stream, columns(stream), SCHEMA_VERSION)
}

/// The Parquet schema of a stream's `cols` in schema `version` ([`columns_at`] gives a
/// version's columns; the version decides their annotations).
pub fn schema_of(
    stream: Stream,
    cols: &[Col],
    version: u32,
) -> Result<Arc<Type>, parquet::errors::ParquetError> {
    let annotated = |kind: Kind| match kind.decimal(version) {
        Some((p, s)) => format!(" (DECIMAL({p},{s}))"),
        None => String::new(),
    };
    let mut s = format!("message {} {{\n", stream.table());
    for col in cols {
        let n = col.name;
        s.push_str(&match col.kind {
            Text => format!("  required binary {n} (STRING);\n"),
            Json | Jsonb => format!("  required binary {n} (JSON);\n"),
            TsMs => format!("  required int64 {n} (TIMESTAMP(MILLIS,true));\n"),
            I64 | Micros | Centi => format!("  required int64 {n}{};\n", annotated(col.kind)),
            I16 => format!("  required int32 {n} (INTEGER(16,true));\n"),
            Bool => format!("  required boolean {n};\n"),
            OptI64 | OptMicros | OptCenti => {
                format!("  optional int64 {n}{};\n", annotated(col.kind))
            }
            Levels => format!(
                "  required group {n} (LIST) {{ repeated group list {{ required group element {{ required int64 price{}; required int64 quantity{}; }} }} }}\n",
                annotated(Micros),
                annotated(Centi)
            ),
        });
    }
    s.push('}');
    Ok(Arc::new(parquet::schema::parser::parse_message_type(&s)?))
}

/// The writer's fixed properties.
pub fn properties(
    zstd_level: i32,
    row_group_rows: usize,
) -> Result<WriterProperties, ArchiveError> {
    let level = ZstdLevel::try_new(zstd_level).map_err(|e| ArchiveError::new("encode", e))?;
    Ok(WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(level))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_created_by(format!("kalshi-data archive (schema {SCHEMA_VERSION})"))
        .build())
}

/// SHA-256 of the rows themselves (not of the encoding): equal for production and for a file
/// read back, whatever the Parquet writer did.
pub struct ContentHash(ring::digest::Context);

impl Default for ContentHash {
    fn default() -> Self {
        ContentHash(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl ContentHash {
    pub fn row(&mut self, row: &[Value]) {
        let h = &mut self.0;
        for v in row {
            match v {
                Value::Text(s) => {
                    h.update(b"t");
                    h.update(&(s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
                Value::I64(x) => {
                    h.update(b"l");
                    h.update(&x.to_le_bytes());
                }
                Value::I16(x) => {
                    h.update(b"s");
                    h.update(&x.to_le_bytes());
                }
                Value::Bool(b) => h.update(if *b { b"T" } else { b"F" }),
                Value::Null => h.update(b"n"),
                Value::Levels(ls) => {
                    h.update(b"L");
                    h.update(&(ls.len() as u64).to_le_bytes());
                    for (p, q) in ls {
                        h.update(&p.to_le_bytes());
                        h.update(&q.to_le_bytes());
                    }
                }
            }
        }
        h.update(b"\n");
    }

    pub fn finish(self) -> String {
        hex(self.0.finish().as_ref())
    }
}

/// Appends one archived row to a COPY of the stream's staging table (`ProdTable::columns`).
pub fn encode_copy(stream: Stream, row: &Row, c: &mut kalshi_shared::pg::CopyEncoder) {
    c.row();
    for (v, col) in row.iter().zip(columns(stream)) {
        match (col.kind, v) {
            // `json`: the text as archived, which is the text as sent.
            (Json, Value::Text(s)) => c.json(s),
            (Jsonb, Value::Text(s)) => c.jsonb(s),
            (Text, Value::Text(s)) => c.text(s),
            (TsMs, Value::I64(x)) => c.timestamptz_ms(*x),
            (k, Value::I64(x)) if k.int64() && k != TsMs => c.i64(*x),
            (I16, Value::I16(x)) => c.i16(*x),
            (Bool, Value::Bool(b)) => c.bool(*b),
            (Levels, Value::Levels(l)) => c.jsonb(&levels_json(l)),
            _ => c.null(),
        };
    }
}

/// The time (Unix ms) a row is archived by: the stream's `time_sql` column.
pub fn row_time(stream: Stream, row: &Row) -> i64 {
    let name = time_sql(stream);
    columns(stream)
        .iter()
        .position(|c| c.name == name)
        .and_then(|i| match row.get(i) {
            Some(Value::I64(x)) => Some(*x),
            _ => None,
        })
        .unwrap_or(0)
}

pub use super::file::{FileWriter, read_groups};
