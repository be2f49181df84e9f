//! The S3 archive: per closed period, one immutable, deterministic Parquet file per stream and
//! a manifest, built from production.
//!
//! It runs as a supervised task of the deduplicator rather than its own binary: it needs what
//! only the deduplicator knows (how far each gatherer's streams are merged, to tell when a
//! period is settled), it is the only writer of production's archive bookkeeping, and one
//! process is one thing less to deploy, monitor and fail over. `archive status|verify` and
//! `restore` are subcommands of the same binary.
//!
//! - *Settled.* A period `[a, b)` is archived once a barrier taken at `T >= b + settle` is
//!   passed: every connected gatherer's stream merged up to the head it had at `T`. Records of
//!   the period that arrive later (a gatherer back from an outage) are late data.
//! - *Late data.* The writers bump `archive_touch` for every period they write rows of, in
//!   the data's own transaction. The archiver reads the touches in the same snapshot as the
//!   rows; more touches later mean rows it has not archived, and the period is rebuilt. Same
//!   content: nothing is uploaded. New content: a new version (the manifest's `version` and
//!   `history`), written over the same keys (the bucket keeps old object versions).
//! - *Order.* Data files first, the manifest last, then `archive_periods`; a crash anywhere
//!   redoes the period, and determinism makes the redo write nothing new.
//!
//! It must never drop or skip a period it could not archive: errors are counted and the period
//! is retried at the next look.

mod build;
pub mod dir;
pub mod export;
pub mod file;
pub mod format;
pub mod manifest;
pub mod ops;
pub mod retention;
pub mod settings;

pub use build::Built;

/// How often retention looks at the partitions (it counts whole months).
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
pub mod store;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::Row as _;
use tokio_util::sync::CancellationToken;

use crate::board::{Board, Health};
use crate::config::ArchiveConfig;
use crate::db::Prod;
use crate::metrics as m;
use crate::records::Stream;
use format::ARCHIVED;
use manifest::Manifest;
use store::Store;

/// Why an archive step failed, with the class `archive_errors_total` counts.
#[derive(Debug, thiserror::Error)]
#[error("{class}: {message}")]
pub struct ArchiveError {
    pub class: &'static str,
    pub message: String,
}

impl ArchiveError {
    pub fn new(class: &'static str, message: impl std::fmt::Display) -> Self {
        ArchiveError {
            class,
            message: message.to_string(),
        }
    }
}

impl From<store::S3Error> for ArchiveError {
    fn from(e: store::S3Error) -> Self {
        ArchiveError::new(e.class, e)
    }
}

impl From<sqlx::Error> for ArchiveError {
    fn from(e: sqlx::Error) -> Self {
        ArchiveError::new("database", e)
    }
}

/// Counts an error under its class.
pub fn count_error(e: &ArchiveError) {
    metrics::counter!(m::ARCHIVE_ERRORS, "class" => e.class).increment(1);
}

/// What archiving one period did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// First version written.
    Archived,
    /// Late data: a new version written.
    NewVersion(u32),
    /// Touched again, but the content is what the archive holds.
    Unchanged,
}

/// How much lower than the rest of the deduplicator the archiver's thread is scheduled (a
/// Linux nice increment: under contention about a tenth of a source's or sink's share).
pub const ARCHIVER_NICE: i32 = 10;

pub struct Archiver {
    pub cfg: ArchiveConfig,
    pub prod: Arc<Prod>,
    pub store: Store,
    /// Configured gatherer ids (coverage).
    pub gatherers: Vec<String>,
    spool: PathBuf,
    /// The archiver's CPU work (decoding, checksums, compression) runs on this runtime's
    /// blocking threads, at nice +[`ARCHIVER_NICE`]; its queries stay on the main runtime with
    /// the pool they share.
    cpu: kalshi_shared::runtime::LowPriorityRuntime,
}

/// The heads every connected gatherer had at `at_ms`.
struct Barrier {
    at_ms: i64,
    heads: Vec<(usize, Stream, i64)>,
}

fn take_barrier(board: &Board) -> Barrier {
    let mut heads = Vec::new();
    for (i, g) in board.gatherers.iter().enumerate() {
        if g.health() != Health::Connected {
            continue;
        }
        // Every stream, the registry's too: its versions are archived by when first observed.
        for s in Stream::ALL {
            heads.push((
                i,
                s,
                g.stream(s).head.load(std::sync::atomic::Ordering::Acquire),
            ));
        }
    }
    Barrier {
        at_ms: kalshi_shared::time::now_ms(),
        heads,
    }
}

fn passed(board: &Board, b: &Barrier) -> bool {
    b.heads.iter().all(|(i, s, head)| {
        let g = &board.gatherers[*i];
        // A gatherer that went away since: what it still holds will be late data.
        g.health() != Health::Connected
            || g.stream(*s)
                .committed
                .load(std::sync::atomic::Ordering::Acquire)
                >= *head
    })
}

impl Archiver {
    pub async fn new(
        cfg: ArchiveConfig,
        prod: Arc<Prod>,
        gatherers: Vec<String>,
    ) -> Result<Archiver, ArchiveError> {
        let spool = PathBuf::from(&cfg.section.spool_dir);
        std::fs::create_dir_all(&spool).map_err(|e| {
            ArchiveError::new("io", format!("archive.spool_dir {}: {e}", spool.display()))
        })?;
        let store = Store::new(&cfg).await;
        let cpu = kalshi_shared::runtime::LowPriorityRuntime::new("dedup-archiver", ARCHIVER_NICE)
            .map_err(|e| ArchiveError::new("io", format!("start the archiver's thread: {e}")))?;
        Ok(Archiver {
            cfg,
            prod,
            store,
            gatherers,
            spool,
            cpu,
        })
    }

    /// The low-priority runtime the archiver's CPU work runs on.
    pub(crate) fn cpu(&self) -> &tokio::runtime::Handle {
        self.cpu.handle()
    }

    fn period_ms(&self) -> i64 {
        self.cfg.period_ms
    }

    fn floor(&self, ms: i64) -> i64 {
        ms.div_euclid(self.period_ms()) * self.period_ms()
    }

    /// The supervised task: looks every `check_interval` until shutdown. Never ends on an
    /// error: they are counted, logged and retried.
    #[tracing::instrument(name = "archiver", skip_all)]
    pub async fn run(self, board: Arc<Board>, cancel: CancellationToken) {
        describe_zero();
        match self.store.abort_stale_uploads().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(uploads = n, "aborted multipart uploads left by a crash"),
            Err(e) => {
                let e = ArchiveError::from(e);
                count_error(&e);
                tracing::warn!(error = %e, "cannot list stale multipart uploads");
            }
        }
        let settle_ms = self.cfg.section.settle.as_millis() as i64;
        let mut barrier: Option<Barrier> = None;
        let mut settled = i64::MIN;
        let mut last_retention: Option<std::time::Instant> = None;
        loop {
            if let Some(b) = &barrier
                && passed(&board, b)
            {
                settled = settled.max(self.floor(b.at_ms - settle_ms));
                barrier = None;
            }
            if barrier.is_none() {
                barrier = Some(take_barrier(&board));
            }
            if settled > i64::MIN
                && let Err(e) = self.check(settled, &cancel).await
            {
                count_error(&e);
                tracing::warn!(error = %e, "archive check failed; retrying at the next look");
            }
            // Retention counts whole partitions: at start, then hourly, not at every look.
            if !self.cfg.section.retention.is_zero()
                && last_retention.is_none_or(|t: std::time::Instant| t.elapsed() >= RETENTION_EVERY)
            {
                last_retention = Some(std::time::Instant::now());
                match retention::run(&self, Some(&board), kalshi_shared::time::now_ms()).await {
                    Ok(d) if !d.is_empty() => {
                        tracing::info!(dropped = ?d, "retention dropped archived partitions")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        count_error(&e);
                        tracing::warn!(error = %e, "retention failed; retrying in an hour");
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.cfg.section.check_interval) => {}
            }
        }
    }

    /// One look: archives the pending and late periods that end by `settled` (bounded), then
    /// verifies what is unverified.
    pub async fn check(
        &self,
        settled: i64,
        cancel: &CancellationToken,
    ) -> Result<(), ArchiveError> {
        let todo = self.pending(settled).await?;
        metrics::gauge!(m::ARCHIVE_PENDING).set(todo.len() as f64);
        for start in todo {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let t0 = std::time::Instant::now();
            match self.archive_period(start).await {
                Ok(o) => {
                    tracing::info!(period = %kalshi_shared::time::format_rfc3339_ms(start), outcome = ?o, elapsed_ms = t0.elapsed().as_millis() as u64, "period archived");
                }
                Err(e) => {
                    // Later periods wait: the archive stays contiguous.
                    return Err(e);
                }
            }
        }
        self.update_lag().await?;
        // Periods whose check after upload failed (S3 answered the HEAD wrongly or not at
        // all) are checked again, so retention is not held back for ever.
        let unverified: Vec<i64> = sqlx::query_scalar(
            "SELECT period_start_ms FROM archive_periods WHERE verified_at IS NULL ORDER BY 1 LIMIT $1",
        )
        .bind(self.cfg.section.max_periods_per_check as i64)
        .fetch_all(&self.prod.pool())
        .await?;
        for start in unverified {
            if let Some((man, _)) = self.recorded(start).await?
                && self.quick_verify(&man).await?
            {
                self.mark_verified(start, man.version).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn mark_verified(
        &self,
        start_ms: i64,
        version: u32,
    ) -> Result<(), ArchiveError> {
        let mut tx = self.prod.pool().begin().await?;
        self.prod.fence(&mut tx).await?;
        sqlx::query(
            "UPDATE archive_periods SET verified_at = now() WHERE period_start_ms = $1 AND version = $2",
        )
        .bind(start_ms)
        .bind(version as i32)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `export_lag_seconds`: now minus the end of the newest contiguous archived period.
    async fn update_lag(&self) -> Result<(), ArchiveError> {
        let hw: Option<i64> =
            sqlx::query_scalar("SELECT max(period_start_ms) FROM archive_periods")
                .fetch_one(&self.prod.pool())
                .await?;
        if let Some(hw) = hw {
            let lag = (kalshi_shared::time::now_ms() - (hw + self.period_ms())).max(0);
            metrics::gauge!(m::EXPORT_LAG).set(lag as f64 / 1000.0);
        }
        Ok(())
    }

    /// Periods to write now: the next ones after the newest archived (or from the oldest row),
    /// plus any touched period that is not archived or has been touched since.
    pub async fn pending(&self, settled: i64) -> Result<Vec<i64>, ArchiveError> {
        let max = self.cfg.section.max_periods_per_check;
        let pool = self.prod.pool();
        let period = self.period_ms();
        let other: Option<i64> = sqlx::query_scalar(
            "SELECT period_ms FROM archive_periods WHERE period_ms <> $1 LIMIT 1",
        )
        .bind(period)
        .fetch_optional(&pool)
        .await?;
        if let Some(p) = other {
            return Err(ArchiveError::new(
                "config",
                format!(
                    "archive.period is {period} ms but the archive holds periods of {p} ms: the period cannot change once archived"
                ),
            ));
        }
        let hw: Option<i64> =
            sqlx::query_scalar("SELECT max(period_start_ms) FROM archive_periods")
                .fetch_one(&pool)
                .await?;
        let mut todo = BTreeSet::new();
        let first = match hw {
            Some(h) => Some(h + period),
            None => self.oldest_row().await?.map(|ms| self.floor(ms)),
        };
        if let Some(mut p) = first {
            while p + period <= settled && todo.len() < max {
                todo.insert(p);
                p += period;
            }
        }
        let touched: Vec<i64> = sqlx::query_scalar(
            // Unarchived periods come in by their rows (gaps alone never start the archive of
            // a period before the archive's first); archived ones by any touch, gaps too.
            "SELECT t.period_start_ms FROM \
               (SELECT period_start_ms, sum(touches) AS s, bool_or(stream <> 'gaps') AS rows \
                FROM archive_touch GROUP BY 1) t \
             LEFT JOIN archive_periods p USING (period_start_ms) \
             WHERE ((p.period_start_ms IS NULL AND t.rows) OR t.s > p.touches) AND t.period_start_ms + $1 <= $2 \
             ORDER BY 1 LIMIT $3",
        )
        .bind(period)
        .bind(settled)
        .bind(max as i64)
        .fetch_all(&pool)
        .await?;
        todo.extend(touched);
        Ok(todo.into_iter().take(max).collect())
    }

    async fn oldest_row(&self) -> Result<Option<i64>, ArchiveError> {
        let sql = "SELECT min(t) FROM ( \
             SELECT (extract(epoch FROM min(ts)) * 1000)::bigint AS t FROM trades UNION ALL \
             SELECT (extract(epoch FROM min(ts)) * 1000)::bigint FROM orderbook_deltas UNION ALL \
             SELECT (extract(epoch FROM min(ts)) * 1000)::bigint FROM orderbook_snapshots UNION ALL \
             SELECT (extract(epoch FROM min(ts)) * 1000)::bigint FROM tickers UNION ALL \
             SELECT min(received_ms) FROM lifecycle UNION ALL \
             SELECT min(received_ms) FROM unknown_messages UNION ALL \
             SELECT min(observed_ms) FROM registry_versions UNION ALL \
             SELECT min(received_ms) FROM exchange) x";
        Ok(sqlx::query_scalar(sql).fetch_one(&self.prod.pool()).await?)
    }

    /// The archived manifest of a period in production's bookkeeping.
    pub async fn recorded(&self, start_ms: i64) -> Result<Option<(Manifest, i64)>, ArchiveError> {
        let row =
            sqlx::query("SELECT manifest, touches FROM archive_periods WHERE period_start_ms = $1")
                .bind(start_ms)
                .fetch_optional(&self.prod.pool())
                .await?;
        let Some(row) = row else { return Ok(None) };
        let v: sqlx::types::Json<Manifest> = row.try_get(0)?;
        Ok(Some((v.0, row.try_get(1)?)))
    }

    /// Builds, compares with what is archived, uploads what changed, records it.
    pub async fn archive_period(&self, start_ms: i64) -> Result<Outcome, ArchiveError> {
        let retired: Option<bool> = sqlx::query_scalar(
            "SELECT retired_at IS NOT NULL FROM archive_periods WHERE period_start_ms = $1",
        )
        .bind(start_ms)
        .fetch_optional(&self.prod.pool())
        .await?;
        if retired == Some(true) {
            // Late data for a period whose month retention dropped: production holds only the
            // new rows. The archived ones come back first, so the new version has them all.
            tracing::warn!(period = %kalshi_shared::time::format_rfc3339_ms(start_ms), "late data for a retired period: restoring it from the archive before re-archiving");
            self.restore(
                start_ms,
                start_ms + self.period_ms(),
                &ARCHIVED,
                |_, _, _| {},
            )
            .await?;
        }
        let Built {
            manifest: mut man,
            files,
            touches,
        } = self.build(start_ms, true).await?;
        let cleanup = |files: &[(Stream, PathBuf)]| {
            for (_, p) in files {
                let _ = std::fs::remove_file(p);
            }
        };
        // The previous version, and whether production records it.
        let prev: Option<(Manifest, bool)> = match self.recorded(start_ms).await {
            // No bookkeeping (lost, or a crash between the upload and the record): the
            // manifest on S3 is the previous version, so its history and number go on and an
            // identical period is recorded, not written again.
            Ok(None) => match self.fetch_manifest(start_ms).await {
                Ok(s3) => s3.map(|m| (m, false)),
                Err(e) if e.class == "decode" => {
                    // Not ours to keep: the period's own content replaces it.
                    tracing::warn!(error = %e.message, "an unreadable manifest on S3 is replaced");
                    None
                }
                Err(e) => {
                    cleanup(&files);
                    return Err(e);
                }
            },
            Ok(p) => p.map(|(m, _)| (m, true)),
            Err(e) => {
                cleanup(&files);
                return Err(e);
            }
        };
        let mut outcome = Outcome::Archived;
        if let Some((old, recorded)) = &prev {
            if old.same_content(&man) {
                cleanup(&files);
                if *recorded {
                    let mut tx = self.prod.pool().begin().await?;
                    self.prod.fence(&mut tx).await?;
                    sqlx::query(
                        "UPDATE archive_periods SET touches = $2 WHERE period_start_ms = $1",
                    )
                    .bind(start_ms)
                    .bind(touches)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                } else {
                    tracing::info!(period = %old.period.start, version = old.version, "the archive already holds this period: recorded, nothing uploaded");
                    self.record(start_ms, old, touches).await?;
                    if self.quick_verify(old).await? {
                        self.mark_verified(start_ms, old.version).await?;
                    }
                }
                return Ok(Outcome::Unchanged);
            }
            man.version = old.version + 1;
            man.history = old.history.clone();
            man.history.push(manifest::Previous {
                version: old.version,
                streams: old
                    .streams
                    .iter()
                    .map(|s| (s.stream.clone(), s.rows, s.content_sha256.clone()))
                    .collect(),
            });
            outcome = Outcome::NewVersion(man.version);
            metrics::counter!(m::ARCHIVE_LATE_VERSIONS).increment(1);
            tracing::warn!(period = %man.period.start, version = man.version, "late data: writing a new version of an archived period");
        }
        let r = self.upload(&man, &files).await;
        cleanup(&files);
        r?;
        tracing::debug!(period = %man.period.start, rows = man.total_rows(), bytes = man.streams.iter().map(|s| s.bytes).sum::<u64>(), "period uploaded");
        self.record(start_ms, &man, touches).await?;
        if self.quick_verify(&man).await? {
            self.mark_verified(start_ms, man.version).await?;
        }
        Ok(outcome)
    }

    /// Production's bookkeeping of an archived version (unverified until checked).
    async fn record(
        &self,
        start_ms: i64,
        man: &Manifest,
        touches: i64,
    ) -> Result<(), ArchiveError> {
        let mut tx = self.prod.pool().begin().await?;
        self.prod.fence(&mut tx).await?;
        sqlx::query(
            "INSERT INTO archive_periods (period_start_ms, period_ms, version, touches, manifest, archived_at, verified_at) \
             VALUES ($1, $2, $3, $4, $5, now(), NULL) \
             ON CONFLICT (period_start_ms) DO UPDATE SET version = EXCLUDED.version, \
               touches = EXCLUDED.touches, manifest = EXCLUDED.manifest, archived_at = now(), \
               verified_at = NULL, retired_at = NULL",
        )
        .bind(start_ms)
        .bind(self.period_ms())
        .bind(man.version as i32)
        .bind(touches)
        .bind(sqlx::types::Json(man))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn upload(
        &self,
        man: &Manifest,
        files: &[(Stream, PathBuf)],
    ) -> Result<(), ArchiveError> {
        for (stream, path) in files {
            let Some(e) = man.stream(stream.table()) else {
                continue;
            };
            let (Some(key), Some(sha)) = (&e.key, &e.file_sha256) else {
                continue;
            };
            // Same key, same bytes: a retry after a crash uploads nothing.
            if let Some(info) = self.store.head(key).await?
                && info.sha256.as_deref() == Some(sha.as_str())
                && info.size == e.bytes
            {
                continue;
            }
            self.store.put_file(key, path, sha, e.bytes).await?;
            metrics::counter!(m::ARCHIVE_OBJECTS, "stream" => stream.table()).increment(1);
            metrics::counter!(m::ARCHIVE_BYTES, "stream" => stream.table()).increment(e.bytes);
            metrics::counter!(m::ARCHIVE_ROWS, "stream" => stream.table()).increment(e.rows);
        }
        let body = serde_json::to_vec_pretty(man).map_err(|e| ArchiveError::new("encode", e))?;
        let key = self.store.key(&manifest::manifest_key(man.period.start_ms));
        self.store
            .put_bytes(&key, body, "application/json", None)
            .await?;
        metrics::counter!(m::ARCHIVE_OBJECTS, "stream" => "manifest").increment(1);
        Ok(())
    }

    /// S3 holds every file of the manifest with its size and checksum (HEAD only).
    pub async fn quick_verify(&self, man: &Manifest) -> Result<bool, ArchiveError> {
        for e in &man.streams {
            let (Some(key), Some(sha)) = (&e.key, &e.file_sha256) else {
                continue;
            };
            match self.store.head(key).await? {
                Some(i) if i.size == e.bytes && i.sha256.as_deref() == Some(sha.as_str()) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    pub fn spool_dir(&self) -> &Path {
        &self.spool
    }
}

fn describe_zero() {
    metrics::gauge!(m::EXPORT_LAG).set(0.0);
    metrics::gauge!(m::ARCHIVE_PENDING).set(0.0);
    metrics::counter!(m::ARCHIVE_LATE_VERSIONS).increment(0);
    metrics::counter!(m::ARCHIVE_OBJECTS, "stream" => "manifest").increment(0);
    for s in ARCHIVED {
        metrics::counter!(m::ARCHIVE_OBJECTS, "stream" => s.table()).increment(0);
        metrics::counter!(m::ARCHIVE_ROWS, "stream" => s.table()).increment(0);
        metrics::counter!(m::ARCHIVE_BYTES, "stream" => s.table()).increment(0);
    }
    for t in crate::schema::PARTITIONED {
        metrics::counter!(m::ARCHIVE_PARTITIONS_DROPPED, "table" => *t).increment(0);
    }
    for c in m::ARCHIVE_ERROR_CLASSES {
        metrics::counter!(m::ARCHIVE_ERRORS, "class" => *c).increment(0);
    }
}
