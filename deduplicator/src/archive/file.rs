//! The archive's Parquet files: the deterministic writer (one row group at a time, with the
//! properties `format::properties` fixes; a group ends at `archive.row_group_rows` rows or
//! `archive.row_group_bytes` of buffered rows) and the reader (one row group at a time, so
//! memory is bounded by a group).
//!
//! It must never write a file whose schema is not its stream's, nor read one.

use std::io::Write;
use std::sync::Arc;

use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::FileReader as _;
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;

use super::ArchiveError;
use super::format::Kind::{self, *};
use super::format::{ContentHash, Row, SCHEMA_VERSION, Value, columns, columns_at, schema_of};
use crate::records::Stream;

/// Writes one stream's rows, a row group at a time, to `out`.
pub struct FileWriter<W: Write + Send> {
    stream: Stream,
    cols: &'static [super::format::Col],
    writer: SerializedFileWriter<W>,
    group: Vec<Row>,
    group_rows: usize,
    /// Heap bytes the buffered rows hold (an estimate: values, text and levels).
    group_bytes: usize,
    max_group_bytes: usize,
}

impl<W: Write + Send> FileWriter<W> {
    pub fn new(
        stream: Stream,
        out: W,
        props: WriterProperties,
    ) -> Result<Self, parquet::errors::ParquetError> {
        Self::with_columns(stream, columns(stream), SCHEMA_VERSION, out, props)
    }

    /// A writer of `cols` in schema `version` (an older version's, to test that its files stay
    /// readable).
    pub(crate) fn with_columns(
        stream: Stream,
        cols: &'static [super::format::Col],
        version: u32,
        out: W,
        props: WriterProperties,
    ) -> Result<Self, parquet::errors::ParquetError> {
        let group_rows = props.max_row_group_row_count().unwrap_or(1_000_000).max(1);
        let writer =
            SerializedFileWriter::new(out, schema_of(stream, cols, version)?, Arc::new(props))?;
        Ok(FileWriter {
            stream,
            cols,
            writer,
            group: Vec::new(),
            group_rows,
            group_bytes: 0,
            max_group_bytes: usize::MAX,
        })
    }

    /// A writer with the archive's settings: zstd level and row groups bounded by rows and
    /// by bytes (`archive.{zstd_level,row_group_rows,row_group_bytes}`).
    pub fn with_settings(
        stream: Stream,
        out: W,
        s: &kalshi_shared::config::deduplicator::ArchiveSection,
    ) -> Result<Self, ArchiveError> {
        let props = super::format::properties(s.zstd_level, s.row_group_rows)?;
        let bytes = usize::try_from(s.row_group_bytes).unwrap_or(usize::MAX);
        Ok(Self::new(stream, out, props)
            .map_err(|e| ArchiveError::new("encode", e))?
            .with_group_bytes(bytes))
    }

    /// A group is also full once its rows hold `bytes` (`archive.row_group_bytes`).
    pub fn with_group_bytes(mut self, bytes: usize) -> Self {
        self.max_group_bytes = bytes.max(1);
        self
    }

    /// Buffers a row; `flush_group` writes the group once `group_full`.
    pub fn push(&mut self, row: Row) {
        self.group_bytes += heap_bytes(&row);
        self.group.push(row);
    }

    fn flush(&mut self) -> Result<(), parquet::errors::ParquetError> {
        if self.group.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.group);
        self.group_bytes = 0;
        let mut rg = self.writer.next_row_group()?;
        for (i, col) in self.cols.iter().enumerate() {
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
        self.group.len() >= self.group_rows || self.group_bytes >= self.max_group_bytes
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

/// What a buffered row holds on the heap: its values, and the text and levels they own.
fn heap_bytes(row: &Row) -> usize {
    let own: usize = row
        .iter()
        .map(|v| match v {
            Value::Text(s) => s.capacity(),
            Value::Levels(l) => l.capacity() * std::mem::size_of::<(i64, i64)>(),
            _ => 0,
        })
        .sum();
    row.capacity() * std::mem::size_of::<Value>() + own
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
        Text | Json | Jsonb => {
            let mut v = Vec::with_capacity(rows.len());
            for r in rows {
                match &r[i] {
                    Value::Text(s) => v.push(ByteArray::from(s.as_str())),
                    _ => return Err(bad()),
                }
            }
            w.typed::<ByteArrayType>().write_batch(&v, None, None)?;
        }
        TsMs | I64 | Micros | Centi => {
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
        OptI64 | OptMicros | OptCenti => {
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

/// Reads a file of schema `version` (its manifest's) back, one row group at a time (so memory
/// is bounded by `row_group_rows`), checking it has exactly that version's schema of the
/// stream. Returns the rows and the content checksum of the rows as the file holds them; the
/// rows handed to `each` have the current schema's columns (those the file's version did not
/// have are null), so a restore loads any version alike.
pub fn read_groups(
    stream: Stream,
    version: u32,
    path: &std::path::Path,
    each: impl FnMut(Vec<Row>) -> Result<(), ArchiveError>,
) -> Result<(u64, String), ArchiveError> {
    // The parquet crate asserts on some damaged metadata (fuzz/parquet_file found a column
    // chunk with a negative start: a panic in `byte_range`). A damaged file is an error that
    // names it, as any other unreadable file is, never a panic in verify or restore.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_groups_unguarded(stream, version, path, each)
    }))
    .unwrap_or_else(|p| {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no reason given".into());
        Err(decode(format!(
            "{}: a damaged Parquet file (the reader gave up: {why})",
            path.display()
        )))
    })
}

/// A file that cannot be read back as what it should hold.
fn decode(message: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::new("decode", message)
}

fn read_groups_unguarded(
    stream: Stream,
    version: u32,
    path: &std::path::Path,
    mut each: impl FnMut(Vec<Row>) -> Result<(), ArchiveError>,
) -> Result<(u64, String), ArchiveError> {
    let at = path.display();
    let f = std::fs::File::open(path).map_err(|e| decode(format!("{at}: {e}")))?;
    let reader = parquet::file::reader::SerializedFileReader::new(f)
        .map_err(|e| decode(format!("{at}: not a Parquet file: {e}")))?;
    let cols = columns_at(stream, version).ok_or_else(|| {
        decode(format!(
            "{at}: schema version {version} is newer than this build knows"
        ))
    })?;
    let want = schema_of(stream, cols, version).map_err(decode)?;
    let have = reader.metadata().file_metadata().schema();
    if have != want.as_ref() {
        return Err(decode(format!(
            "{at}: its schema is not {}'s (schema version {version})",
            stream.table()
        )));
    }
    let width = columns(stream).len();
    let mut hash = ContentHash::default();
    let mut n = 0u64;
    for g in 0..reader.num_row_groups() {
        let group = reader
            .get_row_group(g)
            .map_err(|e| decode(format!("{at}: row group {g}: {e}")))?;
        let mut rows = Vec::with_capacity(group.metadata().num_rows().max(0) as usize);
        for row in group
            .get_row_iter(None)
            .map_err(|e| decode(format!("{at}: {e}")))?
        {
            let row = row.map_err(|e| decode(format!("{at}: {e}")))?;
            let mut r = Vec::with_capacity(cols.len());
            for ((_, field), col) in row.get_column_iter().zip(cols) {
                r.push(
                    field_value(field, col.kind).ok_or_else(|| {
                        decode(format!("{at}: column {} holds {field:?}", col.name))
                    })?,
                );
            }
            if r.len() != cols.len() {
                return Err(decode(format!("{at}: a row has {} columns", r.len())));
            }
            hash.row(&r);
            r.resize(width, Value::Null);
            rows.push(r);
        }
        n += rows.len() as u64;
        each(rows)?;
    }
    Ok((n, hash.finish()))
}

/// The integer of an INT64 column, plain (schema 1-3) or DECIMAL (a price's or a quantity's
/// from schema 4; its unscaled value is the integer production holds).
fn int64(f: &Field) -> Option<i64> {
    match f {
        Field::Long(x) => Some(*x),
        Field::Decimal(d) => Some(i64::from_be_bytes(d.data().try_into().ok()?)),
        _ => None,
    }
}

fn field_value(f: &Field, kind: Kind) -> Option<Value> {
    Some(match (kind, f) {
        (Text | Json | Jsonb, Field::Str(s)) => Value::Text(s.clone()),
        (TsMs, Field::TimestampMillis(x)) => Value::I64(*x),
        (I16, Field::Short(x)) => Value::I16(*x),
        (I16, Field::Int(x)) => Value::I16(i16::try_from(*x).ok()?),
        (Bool, Field::Bool(b)) => Value::Bool(*b),
        (k, Field::Null) if k.optional() => Value::Null,
        (I64 | OptI64 | Micros | Centi | OptMicros | OptCenti, f) => Value::I64(int64(f)?),
        (Levels, Field::ListInternal(l)) => {
            let mut v = Vec::with_capacity(l.len());
            for e in l.elements() {
                let Field::Group(g) = e else { return None };
                let mut it = g.get_column_iter();
                match (it.next(), it.next()) {
                    (Some((_, p)), Some((_, q))) => v.push((int64(p)?, int64(q)?)),
                    _ => return None,
                }
            }
            Value::Levels(v)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::archive::format::{SCHEMA_VERSION, levels_json, parse_levels, properties};

    fn snapshot_rows() -> Vec<Row> {
        (0..1000)
            .map(|i| {
                vec![
                    Value::Text(format!("M-{}", i % 7)),
                    Value::I64(1_795_770_300_000 + i),
                    Value::Text("g1".into()),
                    Value::Text("ws".into()),
                    Value::I64(3),
                    Value::I64(i % 5),
                    Value::I64(i),
                    Value::I64(1_795_770_300_000 + i),
                    // Empty books too: the list's levels must still line up.
                    Value::Levels(if i % 3 == 0 {
                        Vec::new()
                    } else {
                        vec![(560_000, 1200), (550_000, i * 100)]
                    }),
                    Value::Levels(vec![(440_000, 100)]),
                    if i % 2 == 0 {
                        Value::Null
                    } else {
                        Value::I64(i)
                    },
                ]
            })
            .collect()
    }

    fn write(rows: &[Row], group: usize) -> Vec<u8> {
        let mut w = FileWriter::new(
            Stream::OrderbookSnapshots,
            Vec::new(),
            properties(3, group).unwrap(),
        )
        .unwrap();
        for r in rows {
            w.push(r.clone());
            if w.group_full() {
                w.flush_group().unwrap();
            }
        }
        w.finish().unwrap()
    }

    #[test]
    fn the_same_rows_give_the_same_bytes_and_read_back_exactly() {
        let rows = snapshot_rows();
        let a = write(&rows, 128);
        let b = write(&rows, 128);
        assert_eq!(a, b, "deterministic");
        assert_ne!(a, write(&rows[1..], 128), "different rows, different bytes");
        let dir = std::env::temp_dir().join(format!("archive-format-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.parquet");
        std::fs::write(&path, &a).unwrap();
        let mut back = Vec::new();
        let mut groups = 0;
        let (n, content) = read_groups(Stream::OrderbookSnapshots, SCHEMA_VERSION, &path, |g| {
            groups += 1;
            back.extend(g);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1000);
        assert_eq!(groups, 8, "row groups of 128");
        assert_eq!(back, rows);
        let mut h = ContentHash::default();
        rows.iter().for_each(|r| h.row(r));
        assert_eq!(content, h.finish());
        // A file of another stream's schema is refused, and so is one whose manifest names
        // another version (schema 3's integers carry no DECIMAL annotation).
        let e = read_groups(Stream::Trades, SCHEMA_VERSION, &path, |_| Ok(())).unwrap_err();
        assert!(e.message.contains("schema"), "{e}");
        let e = read_groups(Stream::OrderbookSnapshots, 3, &path, |_| Ok(())).unwrap_err();
        assert!(e.message.contains("schema version 3"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Schema 4 annotates prices DECIMAL(18,6) and quantities DECIMAL(18,2) on the very integers
    /// schema 3 wrote plain: the same rows read back from either, with the same checksum.
    #[test]
    fn prices_and_quantities_are_decimals_from_schema_4_and_schema_3_stays_readable() {
        let dir = std::env::temp_dir().join(format!("archive-v3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rows = snapshot_rows();
        let mut sums = Vec::new();
        for version in [3, SCHEMA_VERSION] {
            let cols = columns_at(Stream::OrderbookSnapshots, version).unwrap();
            let mut w = FileWriter::with_columns(
                Stream::OrderbookSnapshots,
                cols,
                version,
                Vec::new(),
                properties(3, 100).unwrap(),
            )
            .unwrap();
            for r in &rows {
                w.push(r.clone());
                if w.group_full() {
                    w.flush_group().unwrap();
                }
            }
            let path = dir.join(format!("s-v{version}.parquet"));
            std::fs::write(&path, w.finish().unwrap()).unwrap();
            let reader = parquet::file::reader::SerializedFileReader::new(
                std::fs::File::open(&path).unwrap(),
            )
            .unwrap();
            let text = format!("{:?}", reader.metadata().file_metadata().schema());
            assert_eq!(
                text.contains("Decimal"),
                version >= 4,
                "schema {version}: {text}"
            );
            let mut back = Vec::new();
            let (n, sum) = read_groups(Stream::OrderbookSnapshots, version, &path, |g| {
                back.extend(g);
                Ok(())
            })
            .unwrap();
            assert_eq!((n, &back), (1000, &rows), "schema {version}");
            sums.push(sum);
        }
        assert_eq!(sums[0], sums[1], "the checksum is of the integers");
        let schema = crate::archive::format::schema(Stream::Trades).unwrap();
        let fields: Vec<String> = schema
            .get_fields()
            .iter()
            .filter(|f| f.get_physical_type() == parquet::basic::Type::INT64)
            .map(|f| {
                let b = f.get_basic_info();
                format!("{} {:?}", b.name(), b.logical_type_ref())
            })
            .collect();
        assert!(
            fields.contains(
                &"yes_price Some(Decimal(DecimalType { scale: 6, precision: 18 }))".to_owned()
            ) && fields.contains(
                &"count Some(Decimal(DecimalType { scale: 2, precision: 18 }))".to_owned()
            ) && fields.contains(&"ts_ms None".to_owned()),
            "{fields:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    fn trade_row(i: i64, received: Option<i64>) -> Row {
        let mut r = vec![
            Value::Text(format!("t-{i}")),
            Value::I64(1_795_770_300_000 + i),
            Value::Text("M-1".into()),
            Value::I64(560_000),
            Value::I64(440_000),
            Value::I64(100 * i + 100),
            Value::I16(1),
            Value::Text("bid".into()),
            Value::Bool(false),
            Value::I64(1_795_770_300_000 + i),
            Value::Text("ws".into()),
            Value::Text("g1".into()),
        ];
        if let Some(x) = received {
            r.push(Value::I64(x));
        }
        r
    }

    #[test]
    fn a_file_of_schema_1_is_read_checked_and_padded_to_the_current_columns() {
        let dir = std::env::temp_dir().join(format!("archive-v1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trades-v1.parquet");
        // A trades file as schema 1 wrote it: no received_ms.
        let v1 = columns_at(Stream::Trades, 1).unwrap();
        assert_eq!(v1.len(), 12);
        let rows: Vec<Row> = (0..10).map(|i| trade_row(i, None)).collect();
        let mut w =
            FileWriter::with_columns(Stream::Trades, v1, 1, Vec::new(), properties(3, 4).unwrap())
                .unwrap();
        for r in &rows {
            w.push(r.clone());
            if w.group_full() {
                w.flush_group().unwrap();
            }
        }
        std::fs::write(&path, w.finish().unwrap()).unwrap();
        let mut back = Vec::new();
        let (n, content) = read_groups(Stream::Trades, 1, &path, |g| {
            back.extend(g);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 10);
        // The checksum is of the rows as schema 1 holds them (what its manifest recorded).
        let mut h = ContentHash::default();
        rows.iter().for_each(|r| h.row(r));
        assert_eq!(content, h.finish());
        // The rows come with the current columns: received_ms null.
        let padded: Vec<Row> = (0..10)
            .map(|i| {
                let mut r = trade_row(i, None);
                r.push(Value::Null);
                r
            })
            .collect();
        assert_eq!(back, padded);
        // Read as the current schema, the file is refused (its manifest says schema 1).
        let e = read_groups(Stream::Trades, SCHEMA_VERSION, &path, |_| Ok(())).unwrap_err();
        assert!(
            e.message
                .contains(&format!("schema version {SCHEMA_VERSION}")),
            "{e}"
        );
        // A version newer than this build is refused with a reason.
        let e = read_groups(Stream::Trades, SCHEMA_VERSION + 1, &path, |_| Ok(())).unwrap_err();
        assert!(e.message.contains("newer than this build"), "{e}");
        // And a current file holds received_ms.
        let path2 = dir.join("trades-v2.parquet");
        let mut w = FileWriter::new(Stream::Trades, Vec::new(), properties(3, 4).unwrap()).unwrap();
        w.push(trade_row(1, Some(1_795_770_300_007)));
        std::fs::write(&path2, w.finish().unwrap()).unwrap();
        let mut back = Vec::new();
        read_groups(Stream::Trades, SCHEMA_VERSION, &path2, |g| {
            back.extend(g);
            Ok(())
        })
        .unwrap();
        assert_eq!(back, vec![trade_row(1, Some(1_795_770_300_007))]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_group_is_written_at_its_byte_bound_before_its_row_bound() {
        let mut w = FileWriter::new(
            Stream::Trades,
            Vec::new(),
            properties(3, 1_000_000).unwrap(),
        )
        .unwrap()
        .with_group_bytes(64 << 10);
        let one = heap_bytes(&trade_row(0, Some(1_795_770_300_000)));
        let mut groups = 0;
        let mut written = Vec::new();
        for i in 0..2_000 {
            w.push(trade_row(i, Some(1_795_770_300_000 + i)));
            written.push(trade_row(i, Some(1_795_770_300_000 + i)));
            if w.group_full() {
                assert!(w.group_bytes >= 64 << 10 && w.group_bytes < (64 << 10) + one);
                w.flush_group().unwrap();
                assert_eq!(w.group_bytes, 0);
                groups += 1;
            }
        }
        assert_eq!(groups, 2_000 * one / (64 << 10), "{one} bytes a row");
        let dir = std::env::temp_dir().join(format!("group-bytes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trades.parquet");
        std::fs::write(&path, w.finish().unwrap()).unwrap();
        let mut back = Vec::new();
        let mut sizes = Vec::new();
        read_groups(Stream::Trades, SCHEMA_VERSION, &path, |g| {
            sizes.push(g.len());
            back.extend(g);
            Ok(())
        })
        .unwrap();
        assert_eq!(back, written, "every row, in order");
        assert_eq!(sizes.len(), groups + 1, "{sizes:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// fuzz/parquet_file's first finding: a file whose column chunk starts at a negative
    /// offset made the parquet crate panic (`column start and length should not be negative`);
    /// it is an error naming the file.
    #[test]
    fn a_damaged_file_is_an_error_not_a_panic() {
        let input = include_bytes!("../../testdata/fuzz/parquet-negative-column-start");
        let (which, bytes) = input.split_first().unwrap();
        let stream = super::super::format::ARCHIVED[usize::from(which & 0x0f) % 10];
        let version = u32::from(which >> 4) % SCHEMA_VERSION + 1;
        let dir = std::env::temp_dir().join(format!("kalshi-damaged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("damaged.parquet");
        std::fs::write(&path, bytes).unwrap();
        let e = read_groups(stream, version, &path, |_| Ok(())).unwrap_err();
        assert!(
            e.message.contains("damaged.parquet") && e.message.contains("damaged Parquet file"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn levels_go_back_to_production_json() {
        assert_eq!(
            levels_json(&[(560_000, 1200), (1, 2)]),
            "[[560000,1200],[1,2]]"
        );
        assert_eq!(levels_json(&[]), "[]");
        assert_eq!(
            parse_levels("[[560000,1200]]").unwrap(),
            vec![(560_000, 1200)]
        );
        assert!(parse_levels("[[0.56,12]]").is_err(), "never a float");
    }
}
