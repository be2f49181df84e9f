//! `deduplicator export`: one stream's rows of a window, for chosen markets, events or series,
//! as CSV (dollars and contracts) or Parquet (the archive's typed columns: decimals of dollars
//! and contracts), in the archive's row order.
//!
//! Each archive period of the window is read from production while production holds it, and
//! from the archive once retention retired its production partitions: the same rows in the same
//! order either way (the archive holds exactly production's rows, checked against its manifest
//! on the way in), so the file does not depend on where they came from. The summary says how
//! many came from each.
//!
//! It must never write a partial file under the requested name (a temporary file is renamed
//! into place when complete), nor silently skip a period it cannot read.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::format::{self, Col, Kind, Row, Value};
use super::{ArchiveError, Archiver};
use crate::db::Prod;
use crate::records::Stream;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Text: times in RFC 3339, prices in dollars (6 decimals), quantities in contracts (2).
    Csv,
    /// The archive's Parquet (current schema version): typed, decimals.
    Parquet,
}

/// Which rows: markets by ticker, events (a market belongs to event `E` when its ticker is
/// `E-...`, Kalshi's convention) and series (the ticker's part before the first `-`). Empty:
/// every row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub markets: Vec<String>,
    pub events: Vec<String>,
    pub series: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.markets.is_empty() && self.events.is_empty() && self.series.is_empty()
    }

    /// Whether a row with this ticker is wanted (the same rule as [`Filter::sql`]).
    pub fn matches(&self, ticker: &str) -> bool {
        self.is_empty()
            || self.markets.iter().any(|m| m == ticker)
            || self.events.iter().any(|e| {
                ticker == e
                    || ticker
                        .strip_prefix(e.as_str())
                        .is_some_and(|rest| rest.starts_with('-'))
            })
            || self
                .series
                .iter()
                .any(|s| ticker.split('-').next() == Some(s.as_str()))
    }

    /// The same rule in SQL over `col`, with the lists bound as `$3`, `$4`, `$5`.
    fn sql(&self, col: &str) -> String {
        if self.is_empty() {
            return "true".to_owned();
        }
        format!(
            "({col} = ANY($3) \
              OR EXISTS (SELECT 1 FROM unnest($4::text[]) e WHERE {col} = e OR starts_with({col}, e || '-')) \
              OR split_part({col}, '-', 1) = ANY($5))"
        )
    }
}

pub struct ExportRequest {
    pub stream: Stream,
    pub filter: Filter,
    /// `[from_ms, to_ms)` of the stream's archive time (`ts`; `received_ms` for lifecycle,
    /// unknown messages and the exchange; `observed_ms` for the registry's versions).
    pub from_ms: i64,
    pub to_ms: i64,
    pub format: ExportFormat,
    pub out: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub rows: u64,
    pub from_production: u64,
    pub from_archive: u64,
    /// Periods read (archive periods, or hours without an archive).
    pub periods: usize,
    pub bytes: u64,
}

/// Where an export stands, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub periods_done: usize,
    pub periods: usize,
    pub rows: u64,
}

/// Reads the window period by period and writes the file. `archive`: where retired periods
/// are read (without it, a retired period is an error: its rows are no longer in production).
pub async fn export(
    prod: &Prod,
    archive: Option<&Archiver>,
    req: &ExportRequest,
    mut progress: impl FnMut(Progress),
) -> Result<ExportSummary, ArchiveError> {
    if req.from_ms >= req.to_ms {
        return Err(ArchiveError::new(
            "request",
            "--from must be before --to".to_owned(),
        ));
    }
    if !format::ARCHIVED.contains(&req.stream) {
        return Err(ArchiveError::new(
            "request",
            format!("{} is not an exported stream", req.stream.table()),
        ));
    }
    let period = archive.map_or(3_600_000, |a| a.cfg.period_ms);
    // Only the part of the window that holds rows is walked (`--from 0` would otherwise be
    // millions of empty periods).
    let (from_ms, to_ms) = match extent(prod, req.stream).await? {
        Some((lo, hi)) => (req.from_ms.max(lo), req.to_ms.min(hi)),
        None => (0, 0),
    };
    let first = from_ms.div_euclid(period) * period;
    let periods = if from_ms < to_ms {
        usize::try_from((to_ms - first + period - 1) / period).unwrap_or(usize::MAX)
    } else {
        0
    };
    let dir = req.out.parent().filter(|p| !p.as_os_str().is_empty());
    let name = req
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".to_owned());
    let tmp = dir
        .unwrap_or(Path::new("."))
        .join(format!(".{name}.tmp-{}", std::process::id()));
    let file = std::fs::File::create(&tmp)
        .map_err(|e| ArchiveError::new("io", format!("{}: {e}", tmp.display())))?;
    let mut sink = Sink::new(req.stream, req.format, file)?;
    let mut summary = ExportSummary {
        periods,
        ..ExportSummary::default()
    };
    let r = async {
        let mut start = first;
        let mut done = 0;
        while start < to_ms {
            let (a, b) = (start.max(from_ms), (start + period).min(to_ms));
            let n = match archive {
                Some(archive) if retired(prod, start).await? => {
                    let n = archive
                        .period_rows(req.stream, start, |rows| {
                            let mut n = 0;
                            for row in select(req, rows, a, b) {
                                sink.push(row)?;
                                n += 1;
                            }
                            Ok(n)
                        })
                        .await?;
                    summary.from_archive += n;
                    n
                }
                _ => {
                    if archive.is_none() && retired_within(prod, start, start + period).await? {
                        return Err(retired_without_archive(start));
                    }
                    let n = production_rows(prod, req, a, b, &mut sink).await?;
                    summary.from_production += n;
                    n
                }
            };
            summary.rows += n;
            done += 1;
            progress(Progress {
                periods_done: done,
                periods,
                rows: summary.rows,
            });
            start += period;
        }
        summary.bytes = sink.finish()?;
        Ok::<(), ArchiveError>(())
    }
    .await;
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &req.out)
        .map_err(|e| ArchiveError::new("io", format!("{}: {e}", req.out.display())))?;
    Ok(summary)
}

fn retired_without_archive(start: i64) -> ArchiveError {
    ArchiveError::new(
        "request",
        format!(
            "rows from {} on were retired from production (retention) and the archive is not configured to read them from",
            kalshi_shared::time::format_rfc3339_ms(start)
        ),
    )
}

async fn retired(prod: &Prod, start: i64) -> Result<bool, ArchiveError> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce((SELECT retired_at IS NOT NULL FROM archive_periods WHERE period_start_ms = $1), false)",
    )
    .bind(start)
    .fetch_one(&prod.pool())
    .await?)
}

/// `[oldest, newest]` time of the stream's rows, in production or in periods retention
/// retired to the archive (None: there are none).
async fn extent(prod: &Prod, stream: Stream) -> Result<Option<(i64, i64)>, ArchiveError> {
    let time = format::time_sql(stream);
    let (lo, hi) = if time == "ts" {
        (
            "(extract(epoch FROM min(ts)) * 1000)::bigint".to_owned(),
            "(extract(epoch FROM max(ts)) * 1000)::bigint + 1".to_owned(),
        )
    } else {
        (format!("min({time})"), format!("max({time}) + 1"))
    };
    let from = match stream.registry_kind().filter(|_| stream.is_registry()) {
        Some(kind) => format!("registry_versions WHERE kind = '{kind}'"),
        None => stream.table().to_owned(),
    };
    let (a, b): (Option<i64>, Option<i64>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {lo}, {hi} FROM {from}"
    )))
    .fetch_one(&prod.pool())
    .await?;
    let (c, d): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT min(period_start_ms), max(period_start_ms + period_ms) FROM archive_periods
          WHERE retired_at IS NOT NULL",
    )
    .fetch_one(&prod.pool())
    .await?;
    let lo = [a, c].into_iter().flatten().min();
    let hi = [b, d].into_iter().flatten().max();
    Ok(lo.zip(hi))
}

/// Whether any archive period overlapping `[a, b)` is retired.
async fn retired_within(prod: &Prod, a: i64, b: i64) -> Result<bool, ArchiveError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM archive_periods WHERE retired_at IS NOT NULL
                         AND period_start_ms < $2 AND period_start_ms + period_ms > $1)",
    )
    .bind(a)
    .bind(b)
    .fetch_one(&prod.pool())
    .await?)
}

/// The archive's rows of a period, narrowed to `[a, b)` and the filter.
fn select(req: &ExportRequest, rows: Vec<Row>, a: i64, b: i64) -> Vec<Row> {
    let cols = format::columns(req.stream);
    let ticker = cols
        .iter()
        .position(|c| c.name == format::ticker_column(req.stream));
    rows.into_iter()
        .filter(|r| {
            let t = format::row_time(req.stream, r);
            let wanted = match ticker.and_then(|i| r.get(i)) {
                Some(Value::Text(s)) => req.filter.matches(s),
                _ => req.filter.is_empty(),
            };
            a <= t && t < b && wanted
        })
        .collect()
}

/// Production's rows of `[a, b)` for the filter, in the archive's order, streamed into
/// `sink` (memory holds one row at a time, whatever the period's size). Returns how many.
async fn production_rows(
    prod: &Prod,
    req: &ExportRequest,
    a: i64,
    b: i64,
    sink: &mut Sink,
) -> Result<u64, ArchiveError> {
    use futures_util::TryStreamExt as _;
    let time = format::time_sql(req.stream);
    // Exact to the millisecond (no float division on the bounds).
    let range = if time == "ts" {
        "ts >= 'epoch'::timestamptz + $1 * interval '1 millisecond' \
         AND ts < 'epoch'::timestamptz + $2 * interval '1 millisecond'"
            .to_owned()
    } else {
        format!("{time} >= $1 AND {time} < $2")
    };
    let condition = format!(
        "{range} AND {}",
        req.filter.sql(format::ticker_column(req.stream))
    );
    let sql = format::select_sql_where(req.stream, &condition);
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(a).bind(b);
    if !req.filter.is_empty() {
        q = q
            .bind(&req.filter.markets)
            .bind(&req.filter.events)
            .bind(&req.filter.series);
    }
    let pool = prod.pool();
    let mut rows = q.fetch(&pool);
    let mut n = 0;
    while let Some(r) = rows.try_next().await? {
        let row = format::from_pg(req.stream, &r)?;
        sink.push(row)?;
        n += 1;
    }
    Ok(n)
}

impl Archiver {
    /// Every row of a stream in the period starting at `start`, from its archived file
    /// (checked against the manifest), handed to `each` one row group at a time (memory holds
    /// one group). Returns the sum of what `each` returned.
    pub async fn period_rows(
        &self,
        stream: Stream,
        start: i64,
        mut each: impl FnMut(Vec<Row>) -> Result<u64, ArchiveError>,
    ) -> Result<u64, ArchiveError> {
        let Some(man) = self.fetch_manifest(start).await? else {
            return Err(ArchiveError::new(
                "integrity",
                format!(
                    "the period from {} is retired from production but has no manifest in the archive",
                    kalshi_shared::time::format_rfc3339_ms(start)
                ),
            ));
        };
        let Some(entry) = man.streams.iter().find(|e| e.stream == stream.table()) else {
            return Ok(0);
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Row>>(1);
        let fetch = self.fetch_checked(stream, man.schema_version, entry, move |rows| {
            tx.blocking_send(rows)
                .map_err(|_| ArchiveError::new("io", "the export stopped"))
        });
        let consume = async {
            let mut n = 0;
            while let Some(rows) = rx.recv().await {
                n += each(rows)?;
            }
            Ok::<u64, ArchiveError>(n)
        };
        let (read, n) = tokio::join!(fetch, consume);
        // The writer's own error first: the reader then only says it was stopped. The file
        // is checked whole (its checksum) only once read to its end: an error there fails the
        // export, which then leaves no file behind.
        let n = n?;
        read?;
        Ok(n)
    }
}

/// The file being written.
enum Sink {
    Csv {
        out: std::io::BufWriter<std::fs::File>,
        cols: &'static [Col],
    },
    Parquet(Box<format::FileWriter<std::fs::File>>),
}

impl Sink {
    fn new(stream: Stream, fmt: ExportFormat, file: std::fs::File) -> Result<Sink, ArchiveError> {
        Ok(match fmt {
            ExportFormat::Csv => {
                let cols = format::columns(stream);
                let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
                let header: Vec<&str> = cols.iter().map(|c| c.name).collect();
                writeln!(out, "{}", header.join(",")).map_err(|e| ArchiveError::new("io", e))?;
                Sink::Csv { out, cols }
            }
            ExportFormat::Parquet => {
                // The archive's own defaults (deploy/deduplicator.reference.toml).
                let d = kalshi_shared::config::deduplicator::ArchiveSection::default();
                Sink::Parquet(Box::new(format::FileWriter::with_settings(
                    stream, file, &d,
                )?))
            }
        })
    }

    fn push(&mut self, row: Row) -> Result<(), ArchiveError> {
        match self {
            Sink::Csv { out, cols } => {
                let line = csv_line(cols, &row);
                writeln!(out, "{line}").map_err(|e| ArchiveError::new("io", e))
            }
            Sink::Parquet(w) => {
                w.push(row);
                if w.group_full() {
                    w.flush_group()
                        .map_err(|e| ArchiveError::new("encode", e))?;
                }
                Ok(())
            }
        }
    }

    /// Finishes the file; returns its size.
    fn finish(self) -> Result<u64, ArchiveError> {
        let file = match self {
            Sink::Csv { out, .. } => out
                .into_inner()
                .map_err(|e| ArchiveError::new("io", e.error().to_string()))?,
            Sink::Parquet(w) => w.finish().map_err(|e| ArchiveError::new("encode", e))?,
        };
        file.sync_all().map_err(|e| ArchiveError::new("io", e))?;
        Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
    }
}

/// `units` of `scale` decimals as text, exactly: 560000 at 6 is `0.560000`.
fn decimal(units: i64, scale: u32) -> String {
    let p = 10i64.pow(scale);
    let sign = if units < 0 { "-" } else { "" };
    let (whole, frac) = ((units / p).unsigned_abs(), (units % p).unsigned_abs());
    format!("{sign}{whole}.{frac:0w$}", w = scale as usize)
}

/// One CSV line: text quoted where it must be (RFC 4180), times in RFC 3339, prices in dollars
/// and quantities in contracts, book levels as JSON `[[dollars, contracts], ...]`.
fn csv_line(cols: &[Col], row: &Row) -> String {
    let mut fields = Vec::with_capacity(cols.len());
    for (c, v) in cols.iter().zip(row) {
        let s = match (c.kind, v) {
            (_, Value::Null) => String::new(),
            (Kind::TsMs, Value::I64(x)) => kalshi_shared::time::format_rfc3339_ms(*x),
            (Kind::Micros | Kind::OptMicros, Value::I64(x)) => decimal(*x, 6),
            (Kind::Centi | Kind::OptCenti, Value::I64(x)) => decimal(*x, 2),
            (_, Value::I64(x)) => x.to_string(),
            (_, Value::I16(x)) => x.to_string(),
            (_, Value::Bool(b)) => b.to_string(),
            (_, Value::Text(t)) => t.clone(),
            (_, Value::Levels(l)) => {
                let parts: Vec<String> = l
                    .iter()
                    .map(|(p, q)| format!("[{},{}]", decimal(*p, 6), decimal(*q, 2)))
                    .collect();
                format!("[{}]", parts.join(","))
            }
        };
        fields.push(quote(&s));
    }
    fields.join(",")
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_text() {
        assert_eq!(decimal(560_000, 6), "0.560000");
        assert_eq!(decimal(1_000_000, 6), "1.000000");
        assert_eq!(decimal(1_234, 2), "12.34");
        assert_eq!(decimal(-5, 2), "-0.05");
        assert_eq!(decimal(0, 2), "0.00");
    }

    #[test]
    fn a_filter_takes_markets_events_and_series_as_the_sql_does() {
        let f = Filter {
            markets: vec!["KXA-1-T1".into()],
            events: vec!["KXB-26DEC".into()],
            series: vec!["KXC".into()],
        };
        assert!(f.matches("KXA-1-T1"));
        assert!(!f.matches("KXA-1-T2"));
        assert!(f.matches("KXB-26DEC-T3") && f.matches("KXB-26DEC"));
        assert!(!f.matches("KXB-26DECX-T3"), "an event is a whole segment");
        assert!(f.matches("KXC-ANY-T9") && !f.matches("KXCD-ANY"));
        assert!(Filter::default().matches("anything"));
    }

    #[test]
    fn csv_lines_quote_text_and_write_units() {
        let cols = format::columns(Stream::Trades);
        let row: Row = vec![
            Value::Text("t,1".into()),
            Value::I64(1_795_770_300_123),
            Value::Text("KXA-1".into()),
            Value::I64(560_000),
            Value::I64(440_000),
            Value::I64(1_200),
            Value::I16(1),
            Value::Text("bid".into()),
            Value::Bool(false),
            Value::I64(1_795_770_300_123),
            Value::Text("ws".into()),
            Value::Text("g1".into()),
            Value::Null,
        ];
        assert_eq!(
            csv_line(cols, &row),
            "\"t,1\",2026-11-27T09:05:00.123Z,KXA-1,0.560000,0.440000,12.00,1,bid,false,1795770300123,ws,g1,"
        );
    }
}
