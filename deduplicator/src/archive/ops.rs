//! The operator's archive commands: `archive status`, `archive verify` and `restore`.
//!
//! It must never restore a file whose bytes or rows differ from its manifest: a download is
//! checked against the manifest's file checksum and its decoded rows against the content
//! checksum before one row reaches production.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sqlx::Executor as _;
use sqlx::Row as _;

use super::format::{self, ARCHIVED};
use super::manifest::{self, Manifest};
use super::{ArchiveError, Archiver};
use crate::records::{ProdTable as _, Stream};

/// One line of `archive status`.
#[derive(Debug, Clone)]
pub struct PeriodStatus {
    pub start_ms: i64,
    pub version: i32,
    pub rows: u64,
    pub verified: bool,
    /// Touched since it was archived: a new version is due.
    pub late: bool,
}

/// One finding of `archive verify`: a stream of a period, or the period's manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Checked {
    pub period_start_ms: i64,
    /// The stream, or `manifest`.
    pub stream: String,
    /// The manifest's version (0 when there is none to compare).
    pub version: u32,
    pub archive_rows: Option<u64>,
    pub production_rows: Option<u64>,
    /// `ok`, `retired` (retention dropped production's rows; the file is whole), `late`
    /// (production has rows the archive does not yet), `mismatch`, `bad_file`, `missing`.
    pub verdict: &'static str,
    pub detail: String,
}

impl Checked {
    pub fn ok(&self) -> bool {
        matches!(self.verdict, "ok" | "retired")
    }

    /// The line `archive verify` prints.
    pub fn line(&self) -> String {
        let when = kalshi_shared::time::format_rfc3339_ms(self.period_start_ms);
        if self.stream == "manifest" {
            return format!("{when}  manifest  {}", self.detail);
        }
        let verdict = match self.verdict {
            "ok" => "ok".to_owned(),
            "retired" => {
                "ok (retired: retention dropped what production held; the file is whole)".to_owned()
            }
            "late" => "LATE: production has rows the archive does not yet (a new version is due)"
                .to_owned(),
            "mismatch" => "MISMATCH: production's rows differ from the archive's".to_owned(),
            _ => format!("BAD FILE: {}", self.detail),
        };
        format!(
            "{when}  {:<20} v{}  archive {:>9}  production {:>9}  {verdict}",
            self.stream,
            self.version,
            self.archive_rows.unwrap_or(0),
            self.production_rows.unwrap_or(0)
        )
    }
}

/// `archive status`: archived periods, the ones pending, the late ones.
pub struct Status {
    pub periods: Vec<PeriodStatus>,
    pub pending: Vec<i64>,
}

impl Archiver {
    pub async fn status(&self, settled: i64) -> Result<Status, ArchiveError> {
        let rows = sqlx::query(
            "SELECT p.period_start_ms, p.version, p.manifest, p.verified_at IS NOT NULL, \
               coalesce((SELECT sum(touches) FROM archive_touch t WHERE t.period_start_ms = p.period_start_ms), 0) > p.touches \
             FROM archive_periods p ORDER BY 1",
        )
        .fetch_all(&self.prod.pool())
        .await?;
        let mut periods = Vec::with_capacity(rows.len());
        for r in rows {
            let m: sqlx::types::Json<Manifest> = r.try_get(2)?;
            periods.push(PeriodStatus {
                start_ms: r.try_get(0)?,
                version: r.try_get(1)?,
                rows: m.0.total_rows(),
                verified: r.try_get(3)?,
                late: r.try_get(4)?,
            });
        }
        let pending = self.pending(settled).await?;
        Ok(Status { periods, pending })
    }

    /// The manifest on S3 for a period (None: not archived there).
    pub async fn fetch_manifest(&self, start_ms: i64) -> Result<Option<Manifest>, ArchiveError> {
        let key = self.store.key(&manifest::manifest_key(start_ms));
        let Some(body) = self.store.get_small(&key, 16 << 20).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| ArchiveError::new("decode", format!("{key}: not a manifest: {e}")))
    }

    /// Every period with a manifest on S3 within `[from_ms, to_ms)`, oldest first.
    pub async fn archived_periods(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<i64>, ArchiveError> {
        let keys = self.store.list(&self.store.key("manifests/")).await?;
        let mut v: Vec<i64> = keys
            .iter()
            .filter_map(|k| {
                let stamp = k.rsplit_once("manifest-")?.1.strip_suffix(".json")?;
                parse_stamp(stamp)
            })
            .filter(|ms| *ms + self.cfg.period_ms > from_ms && *ms < to_ms)
            .collect();
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    /// Downloads a stream's file and checks it against its manifest entry; hands each row
    /// group to `each`. Returns the rows read.
    pub(crate) async fn fetch_checked(
        &self,
        stream: Stream,
        version: u32,
        entry: &manifest::StreamEntry,
        each: impl FnMut(Vec<format::Row>) -> Result<(), ArchiveError> + Send + 'static,
    ) -> Result<u64, ArchiveError> {
        let (Some(key), Some(sha)) = (&entry.key, &entry.file_sha256) else {
            return Ok(0);
        };
        let path: PathBuf = self.spool_dir().join(format!(
            "fetch-{}-{}.parquet",
            stream.table(),
            std::process::id()
        ));
        let r = async {
            let (size, got) = self.store.get_to_file(key, &path).await?;
            if size != entry.bytes || &got != sha {
                return Err(ArchiveError::new(
                    "integrity",
                    format!("{key}: {size} bytes with SHA-256 {got}, the manifest says {} bytes with {sha}", entry.bytes),
                ));
            }
            let p = path.clone();
            let (rows, content) = self
                .cpu()
                .spawn_blocking(move || format::read_groups(stream, version, &p, each))
                .await
                .map_err(|e| ArchiveError::new("decode", e))??;
            if rows != entry.rows || content != entry.content_sha256 {
                return Err(ArchiveError::new(
                    "integrity",
                    format!("{key}: holds {rows} rows (content {content}), the manifest says {} ({})", entry.rows, entry.content_sha256),
                ));
            }
            Ok(rows)
        }
        .await;
        let _ = std::fs::remove_file(&path);
        r
    }

    /// `archive verify`: for every archived period in the window, S3's manifest against
    /// production's record of it, production's rows against the manifest (counts and content
    /// checksums), and every file's bytes and rows against the manifest. Marks the periods
    /// that pass as verified. Returns one finding per period and stream, and whether all
    /// passed; `progress(done, total, rows)` after each period.
    pub async fn verify(
        &self,
        from_ms: i64,
        to_ms: i64,
        mut progress: impl FnMut(usize, usize, u64),
    ) -> Result<(Vec<Checked>, bool), ArchiveError> {
        let mut found = Vec::new();
        let mut all_ok = true;
        let mut starts: Vec<i64> = self.archived_periods(from_ms, to_ms).await?;
        let recorded: Vec<i64> = sqlx::query_scalar(
            "SELECT period_start_ms FROM archive_periods WHERE period_start_ms + period_ms > $1 AND period_start_ms < $2",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.prod.pool())
        .await?;
        starts.extend(recorded);
        starts.sort_unstable();
        starts.dedup();
        let total = starts.len();
        let mut rows_checked = 0u64;
        for (done, start) in starts.into_iter().enumerate() {
            let manifest_finding = |version: u32, verdict: &'static str, detail: String| Checked {
                period_start_ms: start,
                stream: "manifest".to_owned(),
                version,
                archive_rows: None,
                production_rows: None,
                verdict,
                detail,
            };
            let on_s3 = self.fetch_manifest(start).await?;
            let recorded = self.recorded(start).await?.map(|r| r.0);
            let man = match (&on_s3, &recorded) {
                (Some(a), Some(b)) if a == b => a.clone(),
                (Some(a), Some(b)) => {
                    all_ok = false;
                    found.push(manifest_finding(
                        a.version,
                        "mismatch",
                        format!(
                            "MISMATCH: S3 has version {}, production recorded version {}",
                            a.version, b.version
                        ),
                    ));
                    progress(done + 1, total, rows_checked);
                    continue;
                }
                (None, Some(b)) => {
                    all_ok = false;
                    found.push(manifest_finding(
                        b.version,
                        "missing",
                        "MISSING on S3".to_owned(),
                    ));
                    progress(done + 1, total, rows_checked);
                    continue;
                }
                (Some(a), None) => a.clone(),
                (None, None) => continue,
            };
            // Production's rows as the manifest's schema version holds them.
            let prod = self
                .build_as(start, false, man.schema_version)
                .await?
                .manifest;
            // Retention dropped (some of) its month: production holds fewer rows, by design.
            let retired: bool = sqlx::query_scalar(
                "SELECT coalesce((SELECT retired_at IS NOT NULL FROM archive_periods WHERE period_start_ms = $1), false)",
            )
            .bind(start)
            .fetch_one(&self.prod.pool())
            .await?;
            let mut period_ok = true;
            for e in &man.streams {
                let Some(stream) = ARCHIVED.iter().copied().find(|s| s.table() == e.stream) else {
                    continue;
                };
                let p = prod.stream(&e.stream);
                let prod_rows = p.map_or(0, |p| p.rows);
                let prod_same = p.is_some_and(|p| p.content_sha256 == e.content_sha256);
                let file = self
                    .fetch_checked(stream, man.schema_version, e, |_| Ok(()))
                    .await;
                rows_checked = rows_checked.saturating_add(e.rows);
                let (verdict, detail) = match (&file, prod_same) {
                    (Ok(_), true) => ("ok", String::new()),
                    (Ok(_), false) if retired && prod_rows < e.rows => ("retired", String::new()),
                    (Ok(_), false) if prod_rows > e.rows => ("late", String::new()),
                    (Ok(_), false) => ("mismatch", String::new()),
                    (Err(err), _) => ("bad_file", err.to_string()),
                };
                let c = Checked {
                    period_start_ms: start,
                    stream: e.stream.clone(),
                    version: man.version,
                    archive_rows: Some(e.rows),
                    production_rows: Some(prod_rows),
                    verdict,
                    detail,
                };
                period_ok &= c.ok();
                found.push(c);
            }
            if period_ok && recorded.is_some() {
                self.mark_verified(start, man.version).await?;
            }
            all_ok &= period_ok;
            progress(done + 1, total, rows_checked);
        }
        Ok((found, all_ok))
    }

    /// `restore`: reloads the archived periods in `[from_ms, to_ms)` into production through
    /// the writers' staging tables and `ON CONFLICT` merge, one transaction per row group.
    /// Returns, per stream, (rows read, rows inserted): a second run inserts nothing.
    pub async fn restore(
        &self,
        from_ms: i64,
        to_ms: i64,
        streams: &[Stream],
        mut progress: impl FnMut(usize, usize, u64),
    ) -> Result<BTreeMap<String, (u64, u64)>, ArchiveError> {
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let periods = self.archived_periods(from_ms, to_ms).await?;
        let total = periods.len();
        for (done, start) in periods.into_iter().enumerate() {
            let read_so_far: u64 = out.values().map(|v| v.0).sum();
            progress(done, total, read_so_far);
            let Some(man) = self.fetch_manifest(start).await? else {
                continue;
            };
            for e in &man.streams {
                let Some(stream) = streams.iter().copied().find(|s| s.table() == e.stream) else {
                    continue;
                };
                // Row groups come through a channel of one: memory is one group or two.
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<format::Row>>(1);
                let fetch = self.fetch_checked(stream, man.schema_version, e, move |rows| {
                    tx.blocking_send(rows)
                        .map_err(|_| ArchiveError::new("io", "the restore stopped"))
                });
                let load = async {
                    let mut inserted = 0u64;
                    while let Some(rows) = rx.recv().await {
                        inserted += self.load_rows(stream, &rows).await?;
                    }
                    Ok::<u64, ArchiveError>(inserted)
                };
                let (read, inserted) = tokio::join!(fetch, load);
                // The loader's own error first: the reader then only says it was stopped.
                let inserted = inserted?;
                let read = read?;
                let t = out.entry(e.stream.clone()).or_default();
                t.0 += read;
                t.1 += inserted;
            }
        }
        progress(total, total, out.values().map(|v| v.0).sum());
        Ok(out)
    }

    /// One transaction: COPY into the stream's staging table, then the writers' merge.
    async fn load_rows(&self, stream: Stream, rows: &[format::Row]) -> Result<u64, ArchiveError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut months: Vec<(i32, u8)> = rows
            .iter()
            .map(|r| crate::schema::month_of(format::row_time(stream, r)))
            .collect();
        months.sort_unstable();
        months.dedup();
        let pool = self.prod.pool();
        if crate::schema::PARTITIONED.contains(&stream.table()) {
            for m in months {
                let sql = crate::schema::create_partition_sql(stream.table(), m);
                if let Err(e) = pool.execute(sqlx::AssertSqlSafe(sql)).await {
                    // The DEFAULT partition takes the rows (e.g. it already holds some of
                    // that month), as it does for the writers.
                    tracing::warn!(table = stream.table(), month = ?m, error = %e, "cannot create a monthly partition; rows go to the default partition");
                }
            }
        }
        let mut enc = kalshi_shared::pg::CopyEncoder::new(stream.fields());
        for r in rows {
            format::encode_copy(stream, r, &mut enc);
        }
        let mut tx = pool.begin().await?;
        // A row group is up to archive.row_group_rows rows (122,880 by default): its COPY and
        // merge get the archive's own deadline, not production.op_timeout.
        self.long_statements(&mut tx).await?;
        tx.execute(sqlx::AssertSqlSafe(stream.create_stage_sql()))
            .await?;
        let mut copy = (*tx)
            .copy_in_raw(&format!(
                "COPY {} ({}) FROM STDIN (FORMAT binary)",
                stream.stage(),
                stream.columns()
            ))
            .await?;
        copy.send(enc.finish()).await?;
        copy.finish().await?;
        // A registry stream's rows are versions: what is inserted is counted in its history
        // table (the merge's own count is of the newest-per-ticker table).
        let history = stream
            .registry_kind()
            .filter(|_| stream.is_registry())
            .map(|k| format!("SELECT count(*) FROM registry_versions WHERE kind = '{k}'"));
        let before: Option<i64> = match &history {
            Some(q) => Some(
                sqlx::query_scalar(sqlx::AssertSqlSafe(q.clone()))
                    .fetch_one(&mut *tx)
                    .await?,
            ),
            None => None,
        };
        let mut n = tx
            .execute(sqlx::AssertSqlSafe(stream.merge_sql()))
            .await?
            .rows_affected();
        if let (Some(q), Some(before)) = (&history, before) {
            let after: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(q.clone()))
                .fetch_one(&mut *tx)
                .await?;
            n = u64::try_from(after - before).unwrap_or(0);
        }
        tx.commit().await?;
        Ok(n)
    }
}

/// `20261127T090000Z` to Unix ms.
fn parse_stamp(s: &str) -> Option<i64> {
    if s.len() != 16 || !s.ends_with('Z') || s.as_bytes().get(8) != Some(&b'T') {
        return None;
    }
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        s.get(0..4)?,
        s.get(4..6)?,
        s.get(6..8)?,
        s.get(9..11)?,
        s.get(11..13)?,
        s.get(13..15)?
    );
    kalshi_shared::time::parse_rfc3339_ms(&rfc).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamps_parse_back() {
        assert_eq!(
            super::parse_stamp("20261127T090500Z"),
            Some(1_795_770_300_000)
        );
        assert_eq!(super::parse_stamp("2026112T090500Z"), None);
    }
}
