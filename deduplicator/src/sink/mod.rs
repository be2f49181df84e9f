//! One writer per stream: batches the pages the sources read, drops records whose key is
//! already committed, and commits each batch in ONE transaction: binary COPY into the staging
//! table, `INSERT ... SELECT ... ON CONFLICT DO NOTHING` (registry: newest wins), and every
//! contributing gatherer's `sync_cursors` row advanced with `GREATEST`.
//!
//! Invariant (DESIGN.md): a gatherer's stored cursor never passes a record unless that record,
//! or its twin from another gatherer, is committed in the same or an earlier transaction. The
//! cursors ride in the data's transaction, the cache holds only committed keys and is emptied
//! whenever the connection to production is rebuilt or lost, and a batch is retried (forever,
//! with capped jittered backoff) until it commits or shutdown comes, in which case nothing of
//! it is acknowledged and the next start reads it again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kalshi_proto::gatherer::v1 as pb;
use kalshi_shared::pg::DbErrorClass;
use kalshi_shared::retry::{Backoff, BackoffConfig};
use prost::Message as _;
use sqlx::Executor as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod batch;
mod commit;
mod lifecycle;
mod quarantine;
mod stall;

use batch::KeyCache;
use quarantine::QuarantineCols;
pub use quarantine::{Quarantined, ReplayTo, Replayed, replay_record};
use stall::Stall;

use crate::board::Board;
use crate::db::{DbError, Prod};
use crate::metrics as m;
use crate::records::{self, Encoder, ProdTable as _, Source, Stream};

/// The work stopped because shutdown came first (nothing of it is acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled by shutdown")]
struct Cancelled;

/// What a source hands a sink: consecutive records of one gatherer's stream.
#[derive(Debug)]
pub struct Page {
    pub gatherer: usize,
    pub instance_id: Arc<str>,
    pub records: Vec<Item>,
    /// The cursor to store once the page is committed (None for records the deduplicator
    /// declares itself, which have no gatherer cursor).
    pub last_cursor: Option<i64>,
}

/// One record and what the source found out about it.
#[derive(Debug)]
pub struct Item {
    pub record: pb::Record,
    /// Why it cannot be a row (then it goes to quarantine as it is).
    pub invalid: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub batch_rows: usize,
    pub batch_interval: Duration,
    pub cache_keys: usize,
    pub cache_window: Duration,
    pub retry: BackoffConfig,
    pub pause_before_commit: Duration,
    /// Gatherer ids by index.
    pub gatherers: Vec<String>,
    /// `testing.panic_sink`: the table whose sink panics after its first commit ("": none).
    pub panic_sink: String,
    /// The archive's period: each transaction counts itself in `archive_touch` for the
    /// periods its rows fall in (None: no archive).
    pub archive_period_ms: Option<i64>,
    /// `sink.lifecycle_match_window` in ms (see `lifecycle.rs`).
    pub lifecycle_window_ms: i64,
}

/// A record on its way into one transaction.
struct Row {
    gatherer: usize,
    instance: Arc<str>,
    record: pb::Record,
    key: Option<u128>,
    invalid: Option<String>,
}

/// The batch being built: rows plus, per gatherer, the cursor to store.
#[derive(Default)]
struct Batch {
    rows: Vec<Row>,
    cursors: HashMap<usize, (Arc<str>, i64)>,
    pages: usize,
    dropped: u64,
    seen: batch::KeySet,
    /// Copies of a record already in the batch, from other gatherers (or a re-read). Not
    /// written, unless the copy in the batch is refused as poison: a record is committed if
    /// any copy of it is valid.
    twins: Vec<Row>,
}

pub struct Sink {
    stream: Stream,
    cfg: SinkConfig,
    prod: Arc<Prod>,
    board: Arc<Board>,
    cache: KeyCache,
    generation: u64,
    months: HashSet<(i32, u8)>,
    /// When batches may skip the staging table (see `commit::DirectCopy`).
    direct: commit::DirectCopy,
    /// Whether production refuses this stream's writes for a reason not its rows'.
    stall: Stall,
    /// Sources that finished (for the drain on shutdown).
    rx: mpsc::Receiver<Page>,
}

impl Sink {
    pub fn new(
        stream: Stream,
        cfg: SinkConfig,
        prod: Arc<Prod>,
        board: Arc<Board>,
        rx: mpsc::Receiver<Page>,
    ) -> Sink {
        let cache = KeyCache::new(cfg.cache_keys, cfg.cache_window);
        let generation = prod.generation();
        Sink {
            stream,
            cfg,
            prod,
            board,
            cache,
            generation,
            months: HashSet::new(),
            direct: commit::DirectCopy::default(),
            stall: Stall::default(),
            rx,
        }
    }

    /// Runs until shutdown; then commits what it holds if production lets it within `drain`.
    #[tracing::instrument(name = "sink", skip_all, fields(stream = self.stream.table()))]
    pub async fn run(mut self, cancel: CancellationToken, drain: Duration) {
        let table = self.stream.table();
        loop {
            let mut batch = Batch::default();
            let mut deadline: Option<tokio::time::Instant> = None;
            // Collect until the batch is full, or nothing more is queued (and its linger,
            // `sink.batch_interval`, passed: 10 ms by default), or shutdown. Pages that arrive
            // while a batch commits make the next one: group commit.
            let stop = loop {
                if batch.rows.len() >= self.cfg.batch_rows {
                    break false;
                }
                if deadline.is_some() {
                    match self.rx.try_recv() {
                        Ok(page) => {
                            self.add(&mut batch, page);
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => break true,
                        Err(mpsc::error::TryRecvError::Empty)
                            if self.cfg.batch_interval.is_zero() =>
                        {
                            break false;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {}
                    }
                }
                let page = match deadline {
                    None => tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break true,
                        p = self.rx.recv() => p,
                    },
                    Some(d) => tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break true,
                        _ = tokio::time::sleep_until(d) => break false,
                        p = self.rx.recv() => p,
                    },
                };
                let Some(page) = page else { break true };
                deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + self.cfg.batch_interval);
                self.add(&mut batch, page);
                metrics::gauge!(m::QUEUE_PAGES, "stream" => table).set(self.rx.len() as f64);
            };
            if stop {
                // Whatever the sources already handed over is committed if production allows
                // within the drain time; anything not committed is read again at the next start.
                while let Ok(page) = self.rx.try_recv() {
                    self.add(&mut batch, page);
                }
                if batch.pages > 0 {
                    let give_up = CancellationToken::new();
                    let g = give_up.clone();
                    let timer = tokio::spawn(async move {
                        tokio::time::sleep(drain).await;
                        g.cancel();
                    });
                    if self.commit(batch, &give_up).await {
                        tracing::info!(stream = table, "final batch committed");
                    } else {
                        tracing::warn!(
                            stream = table,
                            "final batch not committed before shutdown; it will be read again"
                        );
                    }
                    timer.abort();
                }
                return;
            }
            if batch.pages > 0 && !self.commit(batch, &cancel).await {
                if self.prod.lost().is_cancelled() {
                    // Stepping down: the lease task stops the service (a sink ending first would
                    // be reported as a failure of its own).
                    cancel.cancelled().await;
                }
                return;
            }
            if self.cfg.panic_sink == table {
                panic!("testing.panic_sink = {table:?}: the sink panics to prove supervision");
            }
        }
    }
}

/// A row refused, with its error and SQLSTATE.
type Poison<'a> = (&'a Row, String, Option<String>);

enum Stop {
    Cancelled,
    Data(DbError),
}

/// Creates the queues and writers of every stream.
pub fn channels(queue_pages: usize) -> (Vec<mpsc::Sender<Page>>, Vec<mpsc::Receiver<Page>>) {
    Stream::ALL
        .iter()
        .map(|_| mpsc::channel(queue_pages))
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_copy_merges_more_batches_after_each_conflict_and_recovers() {
        let mut d = commit::DirectCopy::default();
        let merges_before_direct = |d: &mut commit::DirectCopy| {
            let mut n = 0;
            while !d.try_now() {
                n += 1;
            }
            n
        };
        assert!(d.try_now());
        d.conflicted();
        assert_eq!(merges_before_direct(&mut d), 4);
        d.conflicted();
        assert_eq!(merges_before_direct(&mut d), 8);
        for _ in 0..20 {
            d.conflicted();
        }
        assert_eq!(merges_before_direct(&mut d), 1024, "bounded");
        d.succeeded();
        d.conflicted();
        assert_eq!(merges_before_direct(&mut d), 4, "back to the start");
    }

    #[test]
    fn the_key_cache_is_bounded_and_first_in_first_out() {
        let t = Instant::now();
        let mut c = KeyCache::new(3, Duration::from_secs(60));
        for k in 1..=5u128 {
            c.insert(k, t);
        }
        c.insert(5, t);
        assert_eq!(c.len(), 3);
        assert!(!c.contains(1) && !c.contains(2));
        assert!(c.contains(3) && c.contains(4) && c.contains(5));
        c.clear();
        assert_eq!(c.len(), 0);
        let mut off = KeyCache::new(0, Duration::from_secs(60));
        off.insert(1, t);
        assert!(!off.contains(1));
    }

    #[test]
    fn the_key_cache_forgets_keys_older_than_its_window() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut c = KeyCache::new(1_000, s(10));
        c.insert(1, t);
        c.insert(2, t + s(5));
        // Exactly the window old: kept.
        c.insert(3, t + s(10));
        assert!(c.contains(1) && c.contains(2) && c.contains(3));
        c.insert(4, t + s(12));
        assert!(!c.contains(1) && c.contains(2) && c.contains(4));
        assert_eq!(c.len(), 3);
        // A key seen again keeps its first time: it goes when that is old.
        c.insert(2, t + s(14));
        c.insert(5, t + s(16));
        assert!(!c.contains(2) && c.contains(3) && c.contains(5));
        assert_eq!(c.len(), 3);
    }
}
