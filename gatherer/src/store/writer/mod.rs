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
//! database is back. Memory never grows without bound and nothing is dropped silently. The
//! gaps writer's own overflow is kept as at most one whole-stream window per stream and
//! written as gap records by the gaps writer itself, so a declared gap is never lost either.
//! A writer whose shutdown deadline passes with the database still unavailable spills what it
//! holds to disk ([`super::spill`]), loaded at the next start.
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
use crate::store::rows::{GapReason, GapRow, Row};
use crate::store::spill::Spill;
use crate::store::{Stream, schema};

mod commit;
mod overflow;
mod runtime;

pub(crate) use commit::load;
pub use runtime::WriterRuntime;

/// Moves staged trades into `trades`. One trade is one row whatever precision its time came
/// with: a legacy WebSocket trade has whole seconds (`ts`), REST milliseconds; both fall in
/// the same second, so a trade is known by (trade_id, second), and the millisecond version is
/// kept when both arrive together.
///
/// `OFFSET 0` keeps the `NOT EXISTS` a per-row probe of the `(trade_id, ts)` index. Without
/// it PostgreSQL turns it into an anti join and, knowing nothing of the (never analysed)
/// staging table, hashes the whole `trades` partition for every batch: 425 ms per batch at
/// 300,000 trades, growing with the table (49 ms with the fence).
/// `merge_of_staged_trades_probes_the_index` pins the plan.
pub const TRADES_MERGE_SQL: &str = "INSERT INTO trades \
     SELECT DISTINCT ON (trade_id, ts_ms / 1000) * FROM trades_staging s \
     WHERE NOT EXISTS (SELECT 1 FROM trades t WHERE t.trade_id = s.trade_id \
       AND t.ts BETWEEN s.ts - INTERVAL '1 second' AND s.ts + INTERVAL '1 second' \
       AND t.ts_ms / 1000 = s.ts_ms / 1000 OFFSET 0) \
     ORDER BY trade_id, ts_ms / 1000, ts_ms % 1000 = 0, id \
     ON CONFLICT DO NOTHING";

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

/// Spans of dropped rows, one per stream they belong to (gap records of every stream go
/// through the gaps writer): bounded by the number of streams.
#[derive(Debug, Default)]
pub struct Overflow {
    spans: Mutex<Vec<(Stream, DroppedSpan)>>,
}

impl Overflow {
    fn record(&self, stream: Stream, from_ms: i64, to_ms: i64) {
        let mut g = self
            .spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match g.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, s)) => {
                s.from_ms = s.from_ms.min(from_ms);
                s.to_ms = s.to_ms.max(to_ms);
                s.rows += 1;
            }
            None => g.push((
                stream,
                DroppedSpan {
                    from_ms,
                    to_ms,
                    rows: 1,
                },
            )),
        }
    }

    fn take(&self) -> Vec<(Stream, DroppedSpan)> {
        std::mem::take(
            &mut *self
                .spans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The producer side of a writer: never blocks.
pub struct Sink<R> {
    tx: mpsc::Sender<R>,
    overflow: Arc<Overflow>,
    /// Rows accepted so far, and (from the writer) rows taken and settled (stored, already
    /// there, or refused and declared), in the same order.
    accepted: Arc<std::sync::atomic::AtomicU64>,
    settled: watch::Receiver<u64>,
}

impl<R> Clone for Sink<R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            overflow: self.overflow.clone(),
            accepted: self.accepted.clone(),
            settled: self.settled.clone(),
        }
    }
}

impl<R> Sink<R> {
    /// A mark that [`settled`](Self::settled) passes once every row accepted so far is settled.
    pub fn mark(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until every row accepted before `mark` was taken by the writer and settled:
    /// committed, found already stored, or refused and declared. False if the writer stopped
    /// first (its rows may then be spilled or lost with the process).
    pub async fn settled(&self, mark: u64) -> bool {
        let mut rx = self.settled.clone();
        rx.wait_for(|n| *n >= mark).await.is_ok()
    }
}

impl<R: Row> Sink<R> {
    /// Hands a row to the writer; if the writer's buffer is full, drops it and remembers the
    /// span for a `gaps` record. Returns whether the row was accepted.
    pub fn push(&self, row: R) -> bool {
        // Counted before the send, so that the writer can never settle a row not yet counted.
        self.accepted
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        match self.tx.try_send(row) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) => {
                self.accepted
                    .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                let (stream, from_ms, to_ms) = r.dropped_span();
                self.overflow.record(stream, from_ms, to_ms);
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
    spill: Option<Spill>,
    /// Rows taken from the channel and settled (see [`Sink::settled`]).
    settled: watch::Sender<u64>,
    /// Rows in `buf` that did not come from the channel (the gaps writer's own overflow).
    own_rows: usize,
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
    let settled = watch::Sender::new(0u64);
    (
        Sink {
            tx,
            overflow: overflow.clone(),
            accepted: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            settled: settled.subscribe(),
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
            spill: None,
            settled,
            own_rows: 0,
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
    #[tracing::instrument(name = "writer", skip_all, fields(table = R::STREAM.table()))]
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
                if finishing_since.is_none() {
                    continue;
                }
                // The gaps writer writes its own overflow before it stops.
                self.declare_overflow(&mut buf);
                if buf.is_empty() {
                    break;
                }
            }
            let n = buf.len().min(self.cfg.batch_rows);
            let batch: Vec<&R> = buf.iter().take(n).collect();
            match self.write(&batch).await {
                Ok(()) => {
                    buf.drain(..n);
                    // Own rows (the gaps writer's overflow records) sit at the front.
                    let own = self.own_rows.min(n);
                    self.own_rows -= own;
                    self.settled.send_modify(|v| *v += (n - own) as u64);
                    backoff.reset();
                    if let Some(since) = self.outage_since.take() {
                        tracing::info!(table = self.table(), down_for = ?since.elapsed(), buffered = buf.len(), "database writable again");
                    }
                    self.declare_overflow(&mut buf);
                    // A buffer that grew through an outage gives its memory back once drained:
                    // a ring buffer touches every page of its capacity as it turns, so an
                    // outage's peak (up to buffer_rows) would stay resident for good.
                    let keep = 2 * self.cfg.batch_rows;
                    if buf.len() <= keep && buf.capacity() > 2 * keep {
                        buf.shrink_to(keep);
                    }
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
                        self.declare_overflow(&mut buf);
                        while let Ok(r) = self.rx.try_recv() {
                            buf.push_back(r);
                        }
                        self.spill_at_shutdown(&buf, &e);
                        buf.clear();
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
        if R::STREAM != Stream::Gaps {
            // Into the gaps writer, which stops after every other writer.
            let mut none = VecDeque::new();
            self.declare_overflow(&mut none);
        }
        tracing::debug!(table = self.table(), "writer stopped");
    }

    /// Keeps rows the database never took before the shutdown deadline on disk, for the next
    /// start (see [`super::spill`]).
    fn spill_at_shutdown(&mut self, buf: &VecDeque<R>, error: &sqlx::Error) {
        if buf.is_empty() {
            return;
        }
        let rows = buf.len();
        let Some(spill) = &self.spill else {
            metrics::counter!(m::WRITER_LOST_ROWS, "table" => self.table()).increment(rows as u64);
            tracing::error!(table = self.table(), rows, error = %error, "shutdown deadline reached with the database unavailable and no spill directory: these rows are lost");
            return;
        };
        let ingested_ms = self
            .batch_ingested_ms
            .unwrap_or_else(kalshi_shared::time::now_ms);
        let mut enc = CopyEncoder::new(R::FIELDS);
        for (i, r) in buf.iter().enumerate() {
            r.encode(&mut enc, self.next_id + i as i64, ingested_ms);
        }
        match spill.write(R::STREAM, self.next_id, &enc.finish()) {
            Ok(path) => {
                metrics::counter!(m::SPILL_WRITTEN_ROWS, "table" => self.table())
                    .increment(rows as u64);
                tracing::warn!(table = self.table(), rows, file = %path.display(), error = %error, "shutdown deadline reached with the database unavailable: rows spilled to disk, loaded at the next start");
            }
            Err(io) => {
                metrics::counter!(m::WRITER_LOST_ROWS, "table" => self.table())
                    .increment(rows as u64);
                tracing::error!(table = self.table(), rows, dir = %spill.dir().display(), error = %io, db_error = %error, "shutdown deadline reached with the database unavailable and the spill failed: these rows are lost");
            }
        }
    }

    /// Waits for rows, then takes what is already queued, up to `batch_rows`, and lingers for
    /// more up to `batch_interval` (10 ms by default; 0: none). Rows that arrive while a batch
    /// commits queue up and make the next batch: group commit, with batches that grow under
    /// load and no fixed delay when it is light.
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
            match self.rx.try_recv() {
                Ok(r) => {
                    buf.push_back(r);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return Fill::Finishing,
                Err(mpsc::error::TryRecvError::Empty) if self.cfg.batch_interval.is_zero() => {
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
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

    /// Spills what is left at a shutdown past the deadline into `spill` instead of losing it.
    pub fn with_spill(mut self, spill: Spill) -> Self {
        self.spill = Some(spill);
        self
    }
}
