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

use std::io::Write;
use std::sync::Arc;

use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::reader::FileReader as _;
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::types::Type;

use crate::records::Stream;

/// Bumped whenever a column, a type or the order changes (it is in every manifest).
pub const SCHEMA_VERSION: u32 = 1;

/// The streams with one file per period, in manifest order.
pub const ARCHIVED: [Stream; 5] = [
    Stream::Trades,
    Stream::OrderbookDeltas,
    Stream::OrderbookSnapshots,
    Stream::Tickers,
    Stream::Lifecycle,
];

/// How a production column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Json,
    /// timestamptz as UTC milliseconds (TIMESTAMP(MILLIS, UTC)).
    TsMs,
    I64,
    /// smallint (INT32 annotated INTEGER(16)).
    I16,
    Bool,
    OptI64,
    /// `[[price_micros, quantity_centi], ...]` as LIST<STRUCT<price, quantity>>.
    Levels,
}

pub struct Col {
    pub name: &'static str,
    pub kind: Kind,
}

use Kind::*;

/// The columns of a stream, in production's COPY order (`ProdTable::columns`).
pub fn columns(stream: Stream) -> &'static [Col] {
    match stream {
        Stream::Trades => &[
            Col {
                name: "trade_id",
                kind: Text,
            },
            Col {
                name: "ts",
                kind: TsMs,
            },
            Col {
                name: "market_ticker",
                kind: Text,
            },
            Col {
                name: "yes_price",
                kind: I64,
            },
            Col {
                name: "no_price",
                kind: I64,
            },
            Col {
                name: "count",
                kind: I64,
            },
            Col {
                name: "taker_outcome_side",
                kind: I16,
            },
            Col {
                name: "taker_book_side",
                kind: Text,
            },
            Col {
                name: "is_block_trade",
                kind: Bool,
            },
            Col {
                name: "ts_ms",
                kind: I64,
            },
            Col {
                name: "source",
                kind: Text,
            },
            Col {
                name: "gatherer_id",
                kind: Text,
            },
        ],
        Stream::OrderbookDeltas => &[
            Col {
                name: "market_ticker",
                kind: Text,
            },
            Col {
                name: "ts",
                kind: TsMs,
            },
            Col {
                name: "ts_ms",
                kind: I64,
            },
            Col {
                name: "side",
                kind: I16,
            },
            Col {
                name: "price",
                kind: I64,
            },
            Col {
                name: "delta",
                kind: I64,
            },
            Col {
                name: "occurrence",
                kind: I64,
            },
            Col {
                name: "gatherer_key",
                kind: Text,
            },
            Col {
                name: "gatherer_id",
                kind: Text,
            },
            Col {
                name: "received_ms",
                kind: I64,
            },
        ],
        Stream::OrderbookSnapshots => &[
            Col {
                name: "market_ticker",
                kind: Text,
            },
            Col {
                name: "ts",
                kind: TsMs,
            },
            Col {
                name: "gatherer_id",
                kind: Text,
            },
            Col {
                name: "source",
                kind: Text,
            },
            Col {
                name: "conn_epoch",
                kind: I64,
            },
            Col {
                name: "sid",
                kind: I64,
            },
            Col {
                name: "seq",
                kind: I64,
            },
            Col {
                name: "received_ms",
                kind: I64,
            },
            Col {
                name: "yes",
                kind: Levels,
            },
            Col {
                name: "no",
                kind: Levels,
            },
            Col {
                name: "last_delta_ts_ms",
                kind: OptI64,
            },
        ],
        Stream::Tickers => &[
            Col {
                name: "market_ticker",
                kind: Text,
            },
            Col {
                name: "ts",
                kind: TsMs,
            },
            Col {
                name: "ts_ms",
                kind: I64,
            },
            Col {
                name: "content_hash",
                kind: Text,
            },
            Col {
                name: "occurrence",
                kind: I64,
            },
            Col {
                name: "gatherer_key",
                kind: Text,
            },
            Col {
                name: "body",
                kind: Json,
            },
            Col {
                name: "gatherer_id",
                kind: Text,
            },
        ],
        Stream::Lifecycle => &[
            Col {
                name: "ticker",
                kind: Text,
            },
            Col {
                name: "event_type",
                kind: Text,
            },
            Col {
                name: "content_hash",
                kind: Text,
            },
            Col {
                name: "occurrence",
                kind: I64,
            },
            Col {
                name: "kind",
                kind: Text,
            },
            Col {
                name: "body",
                kind: Json,
            },
            Col {
                name: "received_ms",
                kind: I64,
            },
            Col {
                name: "gatherer_id",
                kind: Text,
            },
        ],
        _ => &[],
    }
}

/// The column a period is cut on, as SQL over Unix milliseconds.
pub fn time_sql(stream: Stream) -> &'static str {
    match stream {
        Stream::Lifecycle => "received_ms",
        _ => "ts",
    }
}

/// `WHERE` over `$1 <= t < $2` (Unix ms) and the total order of the file.
pub fn select_sql(stream: Stream) -> String {
    let cols: Vec<String> = columns(stream)
        .iter()
        .map(|c| match c.kind {
            TsMs => format!("(extract(epoch FROM {0}) * 1000)::bigint AS {0}", c.name),
            Json | Levels => format!("{0}::text AS {0}", c.name),
            _ => c.name.to_owned(),
        })
        .collect();
    let (range, order) = match stream {
        Stream::Lifecycle => (
            "received_ms >= $1 AND received_ms < $2",
            "ticker, received_ms, event_type, content_hash, occurrence",
        ),
        Stream::Trades => (
            "ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($2 / 1000.0)",
            "market_ticker, ts, trade_id",
        ),
        Stream::OrderbookDeltas => (
            "ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($2 / 1000.0)",
            "market_ticker, ts, ts_ms, side, price, delta, occurrence, gatherer_key",
        ),
        Stream::OrderbookSnapshots => (
            "ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($2 / 1000.0)",
            "market_ticker, ts, gatherer_id, source, conn_epoch, sid, seq, received_ms",
        ),
        _ => (
            "ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($2 / 1000.0)",
            "market_ticker, ts, ts_ms, content_hash, occurrence, gatherer_key",
        ),
    };
    format!(
        "SELECT {} FROM {} WHERE {range} ORDER BY {order}",
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
pub fn from_pg(stream: Stream, r: &sqlx::postgres::PgRow) -> Result<Row, String> {
    use sqlx::Row as _;
    let mut out = Vec::with_capacity(columns(stream).len());
    for (i, col) in columns(stream).iter().enumerate() {
        let e = |e: sqlx::Error| format!("{}.{}: {e}", stream.table(), col.name);
        out.push(match col.kind {
            Text | Json => Value::Text(r.try_get(i).map_err(e)?),
            TsMs | I64 => Value::I64(r.try_get(i).map_err(e)?),
            I16 => Value::I16(r.try_get(i).map_err(e)?),
            Bool => Value::Bool(r.try_get(i).map_err(e)?),
            OptI64 => r
                .try_get::<Option<i64>, _>(i)
                .map_err(e)?
                .map_or(Value::Null, Value::I64),
            Levels => {
                let s: String = r.try_get(i).map_err(e)?;
                Value::Levels(
                    parse_levels(&s)
                        .map_err(|m| format!("{}.{}: {m}", stream.table(), col.name))?,
                )
            }
        });
    }
    Ok(out)
}

fn parse_levels(s: &str) -> Result<Vec<(i64, i64)>, String> {
    let v: Vec<(i64, i64)> =
        serde_json::from_str(s).map_err(|e| format!("not [[price, quantity], ...]: {e}"))?;
    Ok(v)
}

/// Levels back to production's jsonb text (`records::levels_json`'s form).
pub fn levels_json(levels: &[(i64, i64)]) -> String {
    let parts: Vec<String> = levels.iter().map(|(p, q)| format!("[{p},{q}]")).collect();
    format!("[{}]", parts.join(","))
}

/// The Parquet schema of a stream.
pub fn schema(stream: Stream) -> Result<Arc<Type>, parquet::errors::ParquetError> {
    let mut s = format!("message {} {{\n", stream.table());
    for col in columns(stream) {
        let n = col.name;
        s.push_str(&match col.kind {
            Text => format!("  required binary {n} (STRING);\n"),
            Json => format!("  required binary {n} (JSON);\n"),
            TsMs => format!("  required int64 {n} (TIMESTAMP(MILLIS,true));\n"),
            I64 => format!("  required int64 {n};\n"),
            I16 => format!("  required int32 {n} (INTEGER(16,true));\n"),
            Bool => format!("  required boolean {n};\n"),
            OptI64 => format!("  optional int64 {n};\n"),
            Levels => format!(
                "  required group {n} (LIST) {{ repeated group list {{ required group element {{ required int64 price; required int64 quantity; }} }} }}\n"
            ),
        });
    }
    s.push('}');
    Ok(Arc::new(parquet::schema::parser::parse_message_type(&s)?))
}

/// The writer's fixed properties.
pub fn properties(zstd_level: i32, row_group_rows: usize) -> Result<WriterProperties, String> {
    let level = ZstdLevel::try_new(zstd_level).map_err(|e| e.to_string())?;
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
    pub fn row(&mut self, row: &Row) {
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

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes one stream's rows, a row group at a time, to `out`.
pub struct FileWriter<W: Write + Send> {
    stream: Stream,
    writer: SerializedFileWriter<W>,
    group: Vec<Row>,
    group_rows: usize,
}

impl<W: Write + Send> FileWriter<W> {
    pub fn new(
        stream: Stream,
        out: W,
        props: WriterProperties,
    ) -> Result<Self, parquet::errors::ParquetError> {
        let group_rows = props.max_row_group_row_count().unwrap_or(1_000_000).max(1);
        let writer = SerializedFileWriter::new(out, schema(stream)?, Arc::new(props))?;
        Ok(FileWriter {
            stream,
            writer,
            group: Vec::new(),
            group_rows,
        })
    }

    /// Buffers a row; `flush_group` writes the group once `group_full`.
    pub fn push(&mut self, row: Row) {
        self.group.push(row);
    }

    fn flush(&mut self) -> Result<(), parquet::errors::ParquetError> {
        if self.group.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.group);
        let mut rg = self.writer.next_row_group()?;
        for (i, col) in columns(self.stream).iter().enumerate() {
            let kind = col.kind;
            // A Levels column is two leaves (price, quantity) with the same levels.
            let leaves = if kind == Levels { 2 } else { 1 };
            for leaf in 0..leaves {
                let Some(mut w) = rg.next_column()? else {
                    return Err(parquet::errors::ParquetError::General(format!(
                        "{}: fewer columns than the schema",
                        self.stream.table()
                    )));
                };
                write_column(&rows, i, kind, leaf, &mut w)?;
                w.close()?;
            }
        }
        rg.close()?;
        Ok(())
    }

    /// True when the next `push` completes a row group (the caller may flush off the runtime).
    pub fn group_full(&self) -> bool {
        self.group.len() >= self.group_rows
    }

    /// Writes the buffered rows as a row group (CPU-bound: compression).
    pub fn flush_group(&mut self) -> Result<(), parquet::errors::ParquetError> {
        self.flush()
    }

    /// Finishes the file and returns the sink.
    pub fn finish(mut self) -> Result<W, parquet::errors::ParquetError> {
        self.flush()?;
        self.writer.into_inner()
    }
}

fn write_column(
    rows: &[Row],
    i: usize,
    kind: Kind,
    leaf: usize,
    w: &mut parquet::file::writer::SerializedColumnWriter<'_>,
) -> Result<(), parquet::errors::ParquetError> {
    let bad = || parquet::errors::ParquetError::General(format!("column {i}: wrong value type"));
    match kind {
        Text | Json => {
            let mut v = Vec::with_capacity(rows.len());
            for r in rows {
                match &r[i] {
                    Value::Text(s) => v.push(ByteArray::from(s.as_str())),
                    _ => return Err(bad()),
                }
            }
            w.typed::<ByteArrayType>().write_batch(&v, None, None)?;
        }
        TsMs | I64 => {
            let mut v = Vec::with_capacity(rows.len());
            for r in rows {
                match r[i] {
                    Value::I64(x) => v.push(x),
                    _ => return Err(bad()),
                }
            }
            w.typed::<Int64Type>().write_batch(&v, None, None)?;
        }
        I16 => {
            let mut v = Vec::with_capacity(rows.len());
            for r in rows {
                match r[i] {
                    Value::I16(x) => v.push(i32::from(x)),
                    _ => return Err(bad()),
                }
            }
            w.typed::<Int32Type>().write_batch(&v, None, None)?;
        }
        Bool => {
            let mut v = Vec::with_capacity(rows.len());
            for r in rows {
                match r[i] {
                    Value::Bool(x) => v.push(x),
                    _ => return Err(bad()),
                }
            }
            w.typed::<BoolType>().write_batch(&v, None, None)?;
        }
        OptI64 => {
            let mut v = Vec::new();
            let mut def = Vec::with_capacity(rows.len());
            for r in rows {
                match r[i] {
                    Value::I64(x) => {
                        v.push(x);
                        def.push(1);
                    }
                    Value::Null => def.push(0),
                    _ => return Err(bad()),
                }
            }
            w.typed::<Int64Type>().write_batch(&v, Some(&def), None)?;
        }
        Levels => {
            // required list, repeated group: def 1 for an element, 0 for an empty list; rep 0
            // starts a row, 1 continues it.
            let mut v = Vec::new();
            let mut def = Vec::with_capacity(rows.len());
            let mut rep = Vec::with_capacity(rows.len());
            for r in rows {
                let Value::Levels(ls) = &r[i] else {
                    return Err(bad());
                };
                if ls.is_empty() {
                    def.push(0);
                    rep.push(0);
                }
                for (j, (p, q)) in ls.iter().enumerate() {
                    v.push(if leaf == 0 { *p } else { *q });
                    def.push(1);
                    rep.push(i16::from(j > 0));
                }
            }
            w.typed::<Int64Type>()
                .write_batch(&v, Some(&def), Some(&rep))?;
        }
    }
    Ok(())
}

/// Reads a file back, one row group at a time (so memory is bounded by `row_group_rows`),
/// checking it has exactly the stream's schema. Returns the rows and the content checksum.
pub fn read_groups(
    stream: Stream,
    path: &std::path::Path,
    mut each: impl FnMut(Vec<Row>) -> Result<(), String>,
) -> Result<(u64, String), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = parquet::file::reader::SerializedFileReader::new(f)
        .map_err(|e| format!("{}: not a Parquet file: {e}", path.display()))?;
    let want = schema(stream).map_err(|e| e.to_string())?;
    let have = reader.metadata().file_metadata().schema();
    if have != want.as_ref() {
        return Err(format!(
            "{}: its schema is not {}'s (schema version {SCHEMA_VERSION})",
            path.display(),
            stream.table()
        ));
    }
    let cols = columns(stream);
    let mut hash = ContentHash::default();
    let mut n = 0u64;
    for g in 0..reader.num_row_groups() {
        let group = reader
            .get_row_group(g)
            .map_err(|e| format!("{}: row group {g}: {e}", path.display()))?;
        let mut rows = Vec::with_capacity(group.metadata().num_rows().max(0) as usize);
        for row in group
            .get_row_iter(None)
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            let row = row.map_err(|e| format!("{}: {e}", path.display()))?;
            let mut r = Vec::with_capacity(cols.len());
            for ((_, field), col) in row.get_column_iter().zip(cols) {
                r.push(field_value(field, col.kind).ok_or_else(|| {
                    format!("{}: column {} holds {field:?}", path.display(), col.name)
                })?);
            }
            if r.len() != cols.len() {
                return Err(format!("{}: a row has {} columns", path.display(), r.len()));
            }
            hash.row(&r);
            rows.push(r);
        }
        n += rows.len() as u64;
        each(rows)?;
    }
    Ok((n, hash.finish()))
}

/// Appends one archived row to a COPY of the stream's staging table (`ProdTable::columns`).
pub fn encode_copy(stream: Stream, row: &Row, c: &mut kalshi_shared::pg::CopyEncoder) {
    c.row();
    for (v, col) in row.iter().zip(columns(stream)) {
        match (col.kind, v) {
            (Json, Value::Text(s)) => c.jsonb(s),
            (Text, Value::Text(s)) => c.text(s),
            (TsMs, Value::I64(x)) => c.timestamptz_ms(*x),
            (I64 | OptI64, Value::I64(x)) => c.i64(*x),
            (I16, Value::I16(x)) => c.i16(*x),
            (Bool, Value::Bool(b)) => c.bool(*b),
            (Levels, Value::Levels(l)) => c.jsonb(&levels_json(l)),
            _ => c.null(),
        };
    }
}

fn field_value(f: &Field, kind: Kind) -> Option<Value> {
    Some(match (kind, f) {
        (Text | Json, Field::Str(s)) => Value::Text(s.clone()),
        (TsMs, Field::TimestampMillis(x)) | (I64 | OptI64, Field::Long(x)) => Value::I64(*x),
        (I16, Field::Short(x)) => Value::I16(*x),
        (I16, Field::Int(x)) => Value::I16(i16::try_from(*x).ok()?),
        (Bool, Field::Bool(b)) => Value::Bool(*b),
        (OptI64, Field::Null) => Value::Null,
        (Levels, Field::ListInternal(l)) => {
            let mut v = Vec::with_capacity(l.len());
            for e in l.elements() {
                let Field::Group(g) = e else { return None };
                let mut it = g.get_column_iter();
                match (it.next(), it.next()) {
                    (Some((_, Field::Long(p))), Some((_, Field::Long(q)))) => v.push((*p, *q)),
                    _ => return None,
                }
            }
            Value::Levels(v)
        }
        _ => return None,
    })
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
