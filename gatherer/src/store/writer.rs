//! One writer task per table: batches rows by size and time, assigns cursor ids, writes each
//! batch with one binary `COPY` in one transaction, and only then publishes the new head.
//!
//! Because a single task commits a table's batches one after another, cursor ids become
//! visible strictly in order: a reader never sees id N+1 before id N, so it is never shown a
//! hole that later fills. Ids of rows that are never stored (a trade the table already had, a
//! poison row) are simply never used.
//!
//! When the database is unavailable the writer keeps retrying the same batch (same ids, same
//! ingestion time) with capped backoff while holding at most `buffer_rows` rows; beyond that
//! producers' rows are dropped and the dropped span is declared as a `gaps` record once the
//! database is back. Memory never grows without bound and nothing is dropped silently.
//!
//! It must never: publish a head before its commit, reuse an id for different rows, or block
//! a producer.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kalshi_shared::pg::{CopyEncoder, DbErrorClass, classify};
use kalshi_shared::retry::{Backoff, BackoffConfig};
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Row as _};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::store::rows::{GapRow, Row};
use crate::store::{Stream, schema};

/// Writer settings (from `[store]`).
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub batch_rows: usize,
    pub batch_interval: Duration,
    pub buffer_rows: usize,
    pub op_timeout: Duration,
    pub backoff: BackoffConfig,
}

/// The span of rows dropped because the writer's buffer was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DroppedSpan {
    pub from_ms: i64,
    pub to_ms: i64,
    pub rows: u64,
}

#[derive(Debug, Default)]
pub struct Overflow {
    span: Mutex<Option<DroppedSpan>>,
}

impl Overflow {
    fn record(&self, ms: i64) {
        let mut g = self
            .span
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match g.as_mut() {
            Some(s) => {
                s.from_ms = s.from_ms.min(ms);
                s.to_ms = s.to_ms.max(ms);
                s.rows += 1;
            }
            None => {
                *g = Some(DroppedSpan {
                    from_ms: ms,
                    to_ms: ms,
                    rows: 1,
                })
            }
        }
    }

    fn take(&self) -> Option<DroppedSpan> {
        self.span
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// The producer side of a writer: never blocks.
pub struct Sink<R> {
    tx: mpsc::Sender<R>,
    overflow: Arc<Overflow>,
}

impl<R> Clone for Sink<R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            overflow: self.overflow.clone(),
        }
    }
}

impl<R: Row> Sink<R> {
    /// Hands a row to the writer; if the writer's buffer is full, drops it and remembers the
    /// span for a `gaps` record. Returns whether the row was accepted.
    pub fn push(&self, row: R) -> bool {
        match self.tx.try_send(row) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) => {
                self.overflow.record(r.time_ms());
                metrics::counter!(m::WRITER_DROPPED_ROWS, "table" => R::STREAM.table())
                    .increment(1);
                false
            }
        }
    }
}

/// What to do with a span of rows dropped on overflow instead of declaring a gap (trades:
/// hand the window to backfill, which can fetch them again).
pub type OverflowHook = Arc<dyn Fn(DroppedSpan) + Send + Sync>;

pub struct Writer<R: Row> {
    hook: Option<OverflowHook>,
    pool: PgPool,
    rx: mpsc::Receiver<R>,
    overflow: Arc<Overflow>,
    gaps: Option<Sink<GapRow>>,
    head: watch::Sender<i64>,
    next_id: i64,
    cfg: WriterConfig,
    partitions: HashSet<i64>,
    finish: CancellationToken,
    /// Set after a failure whose outcome is unknown: the next attempt first checks whether
    /// the batch was committed after all.
    in_doubt: bool,
    /// The ingestion time of the batch being written, kept across retries so that a retried
    /// batch has exactly the same keys as the attempt that may have landed.
    batch_ingested_ms: Option<i64>,
    outage_since: Option<Instant>,
}

/// Creates a sink/writer pair. The writer starts from `next_id`.
pub fn channel<R: Row>(
    pool: PgPool,
    cfg: WriterConfig,
    channel_rows: usize,
    next_id: i64,
    head: watch::Sender<i64>,
    gaps: Option<Sink<GapRow>>,
    finish: CancellationToken,
) -> (Sink<R>, Writer<R>) {
    let (tx, rx) = mpsc::channel(channel_rows.max(1));
    let overflow = Arc::new(Overflow::default());
    (
        Sink {
            tx,
            overflow: overflow.clone(),
        },
        Writer {
            hook: None,
            pool,
            rx,
            overflow,
            gaps,
            head,
            next_id,
            cfg,
            partitions: HashSet::new(),
            finish,
            in_doubt: false,
            batch_ingested_ms: None,
            outage_since: None,
        },
    )
}

enum Fill {
    /// Rows are ready to write.
    Ready,
    /// Shutdown was asked for and everything received is in the buffer.
    Finishing,
}

impl<R: Row> Writer<R> {
    fn table(&self) -> &'static str {
        R::STREAM.table()
    }

    /// Runs until `finish` is cancelled and everything received has been written (or the
    /// final flush gives up because the database is unavailable).
    pub async fn run(mut self, flush_deadline: Duration) {
        let mut buf: VecDeque<R> = VecDeque::new();
        let mut backoff = Backoff::new(self.cfg.backoff);
        let mut finishing_since: Option<Instant> = None;
        loop {
            let state = self.fill(&mut buf).await;
            if matches!(state, Fill::Finishing) && finishing_since.is_none() {
                finishing_since = Some(Instant::now());
            }
            if buf.is_empty() {
                if finishing_since.is_some() {
                    break;
                }
                continue;
            }
            let n = buf.len().min(self.cfg.batch_rows);
            let batch: Vec<&R> = buf.iter().take(n).collect();
            match self.write(&batch).await {
                Ok(()) => {
                    buf.drain(..n);
                    backoff.reset();
                    if let Some(since) = self.outage_since.take() {
                        tracing::info!(table = self.table(), down_for = ?since.elapsed(), buffered = buf.len(), "database writable again");
                    }
                    self.declare_overflow();
                }
                Err(e) => {
                    let class = classify(&e);
                    metrics::counter!(m::WRITER_ERRORS, "table" => self.table(), "class" => class.label()).increment(1);
                    if self.outage_since.is_none() {
                        self.outage_since = Some(Instant::now());
                        tracing::warn!(table = self.table(), error = %e, class = class.label(), buffered = buf.len(), "write failed, retrying with backoff");
                    }
                    if let Some(since) = finishing_since
                        && since.elapsed() > flush_deadline
                    {
                        tracing::error!(
                            table = self.table(),
                            rows = buf.len(),
                            error = %e,
                            "shutdown deadline reached with the database unavailable: these rows are lost"
                        );
                        break;
                    }
                    // Keep taking rows (up to the buffer limit) while waiting.
                    let delay = backoff.next_delay();
                    let until = tokio::time::Instant::now() + delay;
                    loop {
                        let room = buf.len() < self.cfg.buffer_rows;
                        tokio::select! {
                            biased;
                            _ = tokio::time::sleep_until(until) => break,
                            row = self.rx.recv(), if room => match row {
                                Some(r) => buf.push_back(r),
                                None => { tokio::time::sleep_until(until).await; break }
                            },
                        }
                    }
                }
            }
            metrics::gauge!(m::WRITER_BUFFER_ROWS, "table" => self.table()).set(buf.len() as f64);
        }
        metrics::gauge!(m::WRITER_BUFFER_ROWS, "table" => self.table()).set(0.0);
        self.declare_overflow();
        tracing::debug!(table = self.table(), "writer stopped");
    }

    /// Waits for rows, then collects for up to `batch_interval` or `batch_rows`.
    async fn fill(&mut self, buf: &mut VecDeque<R>) -> Fill {
        if buf.is_empty() {
            tokio::select! {
                biased;
                row = self.rx.recv() => match row {
                    Some(r) => buf.push_back(r),
                    None => return Fill::Finishing,
                },
                _ = self.finish.cancelled() => {
                    self.drain_now(buf);
                    return Fill::Finishing;
                }
            }
        }
        let until = tokio::time::Instant::now() + self.cfg.batch_interval;
        while buf.len() < self.cfg.batch_rows {
            tokio::select! {
                biased;
                row = self.rx.recv() => match row {
                    Some(r) => buf.push_back(r),
                    None => return Fill::Finishing,
                },
                _ = tokio::time::sleep_until(until) => break,
                _ = self.finish.cancelled() => {
                    self.drain_now(buf);
                    return Fill::Finishing;
                }
            }
        }
        if self.finish.is_cancelled() {
            self.drain_now(buf);
            return Fill::Finishing;
        }
        Fill::Ready
    }

    fn drain_now(&mut self, buf: &mut VecDeque<R>) {
        while buf.len() < self.cfg.buffer_rows {
            match self.rx.try_recv() {
                Ok(r) => buf.push_back(r),
                Err(_) => break,
            }
        }
    }

    /// Hands dropped spans to `hook` instead of declaring them as gaps.
    pub fn with_overflow_hook(mut self, hook: OverflowHook) -> Self {
        self.hook = Some(hook);
        self
    }

    fn declare_overflow(&mut self) {
        let Some(span) = self.overflow.take() else {
            return;
        };
        if let Some(hook) = &self.hook {
            tracing::warn!(
                table = self.table(),
                rows = span.rows,
                from_ms = span.from_ms,
                to_ms = span.to_ms,
                "writer buffer overflowed: rows dropped, handing the window to backfill"
            );
            hook(span);
            return;
        }
        tracing::error!(
            table = self.table(),
            rows = span.rows,
            from_ms = span.from_ms,
            to_ms = span.to_ms,
            "writer buffer overflowed: rows dropped, declaring a gap"
        );
        let gap = GapRow {
            stream: R::STREAM,
            market_ticker: None,
            from_ms: span.from_ms,
            to_ms: span.to_ms,
            reason: "buffer_overflow",
            detail: format!(
                "{} rows dropped while the local database was unavailable",
                span.rows
            ),
        };
        metrics::counter!(m::GAPS_DECLARED, "reason" => "buffer_overflow").increment(1);
        // The gaps table's own writer has nowhere else to record it; the log line above and
        // the dropped-rows counter are the record.
        if let Some(g) = &self.gaps {
            g.push(gap);
        }
    }

    /// Writes one batch (all or nothing), handling an earlier attempt whose outcome is unknown
    /// and isolating rows the database refuses.
    async fn write(&mut self, batch: &[&R]) -> Result<(), sqlx::Error> {
        let n = batch.len() as i64;
        let first = self.next_id;
        let ingested_ms = *self
            .batch_ingested_ms
            .get_or_insert_with(kalshi_shared::time::now_ms);
        if self.in_doubt && R::STREAM != Stream::Trades {
            // Trades are idempotent (ON CONFLICT); the others are checked by their last id.
            if self.exists(first + n - 1, ingested_ms).await? {
                tracing::info!(
                    table = self.table(),
                    first,
                    rows = n,
                    "batch had been committed before the connection broke"
                );
                self.committed(first, n, n as u64, Duration::ZERO);
                return Ok(());
            }
        }
        self.in_doubt = false;
        let started = Instant::now();
        match self.commit(batch, first, ingested_ms).await {
            Ok(inserted) => {
                self.committed(first, n, inserted, started.elapsed());
                Ok(())
            }
            Err(e) if classify(&e) == DbErrorClass::Data => {
                let stored = self.bisect(batch, first, ingested_ms).await?;
                self.committed(first, n, stored, started.elapsed());
                Ok(())
            }
            Err(e) => {
                self.in_doubt = true;
                Err(e)
            }
        }
    }

    fn committed(&mut self, first: i64, n: i64, inserted: u64, took: Duration) {
        self.next_id = first + n;
        self.batch_ingested_ms = None;
        self.in_doubt = false;
        let table = self.table();
        metrics::counter!(m::WRITER_INSERTS, "table" => table).increment(inserted);
        metrics::histogram!(m::WRITER_FLUSH_DURATION, "table" => table).record(took.as_secs_f64());
        let skipped = (n as u64).saturating_sub(inserted);
        if skipped > 0 && R::STREAM == Stream::Trades {
            metrics::counter!(m::WRITER_DUPLICATES, "table" => table).increment(skipped);
        }
        self.head.send_replace(self.next_id - 1);
    }

    /// Splits a batch the database refuses until the refused rows are isolated; stores the
    /// rest. Returns how many rows were stored.
    async fn bisect(
        &mut self,
        batch: &[&R],
        first: i64,
        ingested_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        let mut stored = 0;
        let mut work: Vec<(usize, usize)> = vec![(0, batch.len())];
        while let Some((lo, hi)) = work.pop() {
            let part = &batch[lo..hi];
            match self.commit(part, first + lo as i64, ingested_ms).await {
                Ok(n) => stored += n,
                Err(e) if classify(&e) == DbErrorClass::Data && part.len() > 1 => {
                    let mid = lo + part.len() / 2;
                    work.push((mid, hi));
                    work.push((lo, mid));
                }
                Err(e)
                    if classify(&e) == DbErrorClass::Data && already_stored(&e, self.table()) =>
                {
                    // Committed by an attempt whose outcome was unknown: it is there.
                    stored += 1;
                }
                Err(e) if classify(&e) == DbErrorClass::Data => {
                    let row = part[0];
                    metrics::counter!(m::WRITER_REJECTED_ROWS, "table" => self.table())
                        .increment(1);
                    tracing::error!(table = self.table(), id = first + lo as i64, error = %e, "the database refused a row; dropping it and declaring a gap");
                    if let Some(g) = &self.gaps {
                        metrics::counter!(m::GAPS_DECLARED, "reason" => "rejected_row")
                            .increment(1);
                        g.push(GapRow {
                            stream: R::STREAM,
                            market_ticker: None,
                            from_ms: row.time_ms(),
                            to_ms: row.time_ms(),
                            reason: "rejected_row",
                            detail: truncate(&format!("{e}"), 500),
                        });
                    }
                }
                Err(e) => {
                    self.in_doubt = true;
                    return Err(e);
                }
            }
        }
        Ok(stored)
    }

    async fn exists(&self, id: i64, ingested_ms: i64) -> Result<bool, sqlx::Error> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE id = $1 AND ingested_at = TIMESTAMPTZ 'epoch' + $2::bigint * INTERVAL '1 millisecond')",
            self.table()
        );
        let fut = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .bind(ingested_ms)
            .fetch_one(&self.pool);
        let row = tokio::time::timeout(self.cfg.op_timeout, fut)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        row.try_get(0)
    }

    async fn ensure_partitions(
        &mut self,
        batch: &[&R],
        ingested_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut days: Vec<i64> = batch
            .iter()
            .map(|r| r.partition_ms(ingested_ms).div_euclid(86_400_000))
            .filter(|d| !self.partitions.contains(d))
            .collect();
        days.sort_unstable();
        days.dedup();
        for day in days {
            let sql = schema::create_partition_sql(R::STREAM, day);
            match tokio::time::timeout(
                self.cfg.op_timeout,
                sqlx::query(AssertSqlSafe(sql)).execute(&self.pool),
            )
            .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if classify(&e).is_retryable() => return Err(e),
                Ok(Err(e)) => {
                    // E.g. the default partition already holds rows of that day: they and
                    // the new ones stay in the default partition.
                    tracing::warn!(table = self.table(), day, error = %e, "cannot create a daily partition; rows go to the default partition");
                }
                Err(_) => return Err(sqlx::Error::PoolTimedOut),
            }
            self.partitions.insert(day);
        }
        Ok(())
    }

    /// One transaction: COPY (through a staging table for trades) and commit.
    async fn commit(
        &mut self,
        batch: &[&R],
        first: i64,
        ingested_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        self.ensure_partitions(batch, ingested_ms).await?;
        let mut enc = CopyEncoder::new(R::FIELDS);
        for (i, r) in batch.iter().enumerate() {
            r.encode(&mut enc, first + i as i64, ingested_ms);
        }
        let payload = enc.finish();
        let table = self.table();
        let fut = async {
            let mut tx = self.pool.begin().await?;
            let inserted = if R::STREAM == Stream::Trades {
                sqlx::query(
                    "CREATE TEMP TABLE IF NOT EXISTS trades_staging (LIKE trades INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
                )
                .execute(&mut *tx)
                .await?;
                let mut copy = tx
                    .copy_in_raw(&format!(
                        "COPY trades_staging ({}) FROM STDIN (FORMAT binary)",
                        R::COLUMNS
                    ))
                    .await?;
                copy.send(payload).await?;
                copy.finish().await?;
                sqlx::query(
                    "INSERT INTO trades SELECT * FROM trades_staging ON CONFLICT DO NOTHING",
                )
                .execute(&mut *tx)
                .await?
                .rows_affected()
            } else {
                let mut copy = tx
                    .copy_in_raw(&format!(
                        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
                        R::COLUMNS
                    ))
                    .await?;
                copy.send(payload).await?;
                copy.finish().await?
            };
            tx.commit().await?;
            Ok::<u64, sqlx::Error>(inserted)
        };
        match tokio::time::timeout(self.cfg.op_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }
}

/// A primary-key conflict on the table's own key: the row is already there.
fn already_stored(e: &sqlx::Error, table: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505")
                && db
                    .constraint()
                    .is_some_and(|c| c.starts_with(table) && c.ends_with("_pkey"))
        }
        _ => false,
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
