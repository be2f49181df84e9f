//! The local database: schema and migrations, one writer per table, cursor reads for the
//! API, partitions and retention.
//!
//! Owns every statement the gatherer sends to its database. It must never let a reader see a
//! cursor before everything below it is visible (see [`writer`]), and never drop rows for
//! retention without recording the highest dropped cursor (`retention_marks`), so a reader
//! that fell behind gets an explicit overrun error instead of a silent hole.

pub mod rows;
pub mod schema;
pub mod spill;
pub mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use kalshi_proto::gatherer::v1 as pb;
use kalshi_shared::pg::classify;
use kalshi_shared::retry::{Backoff, BackoffConfig};
use prost::Message as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Executor as _, Row as _};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use rows::{
    DeltaRow, EventVersion, GapRow, LifecycleRow, MarketVersion, SeriesVersion, SnapshotRow,
    TickerRow, TradeRow,
};
use writer::{Sink, WriterConfig};

pub use kalshi_proto::Stream;

/// Whether to use TimescaleDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimescaleMode {
    /// Use it when the extension is installed, else native partitioning.
    Auto,
    /// Never use it.
    Off,
    /// Refuse to start without it.
    Require,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub database_url: kalshi_shared::config::Secret,
    pub pool_max: u32,
    pub connect_timeout: Duration,
    pub op_timeout: Duration,
    pub startup_timeout: Duration,
    pub writer: WriterConfig,
    pub channel_rows: usize,
    pub retention: HashMap<Stream, Duration>,
    pub timescaledb: TimescaleMode,
    pub maintenance_interval: Duration,
    pub flush_deadline: Duration,
    /// Where rows the database never took before the shutdown deadline are kept for the next
    /// start (`None`: they are lost, logged and counted in `writer_lost_rows_total`).
    pub spill_dir: Option<std::path::PathBuf>,
}

/// The COPY column list of a stream's table.
pub(crate) fn columns(stream: Stream) -> &'static str {
    use rows::Row as _;
    match stream {
        Stream::Trades => TradeRow::COLUMNS,
        Stream::OrderbookDeltas => DeltaRow::COLUMNS,
        Stream::OrderbookSnapshots => SnapshotRow::COLUMNS,
        Stream::Tickers => TickerRow::COLUMNS,
        Stream::Lifecycle => LifecycleRow::COLUMNS,
        Stream::Markets => MarketVersion::COLUMNS,
        Stream::Events => EventVersion::COLUMNS,
        Stream::Series => SeriesVersion::COLUMNS,
        Stream::Gaps => GapRow::COLUMNS,
    }
}

/// The producer handles of every writer.
#[derive(Clone)]
pub struct Sinks {
    pub trades: Sink<TradeRow>,
    pub deltas: Sink<DeltaRow>,
    pub snapshots: Sink<SnapshotRow>,
    pub tickers: Sink<TickerRow>,
    pub lifecycle: Sink<LifecycleRow>,
    pub markets: Sink<MarketVersion>,
    pub events: Sink<EventVersion>,
    pub series: Sink<SeriesVersion>,
    pub gaps: Sink<GapRow>,
}

/// Why a read was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "retention overrun: records of {stream} after cursor {after} up to cursor {dropped_through} were dropped by retention; the oldest available cursor is {oldest}"
    )]
    RetentionOverrun {
        stream: &'static str,
        after: i64,
        dropped_through: i64,
        oldest: i64,
    },
    #[error("local database unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

/// One page of a stream.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<pb::Record>,
    pub head: i64,
    /// Every record with a cursor up to here is in this page or before it: the head when the
    /// page is short (ids the writer never used are skipped), else the last record's cursor.
    pub through: i64,
}

pub struct Store {
    /// The session holding the writer lock; dropped (released) with the store.
    writer_lock: tokio::sync::Mutex<sqlx::postgres::PgConnection>,
    /// How to open that session again (see [`Store::keep_writer_lock`]).
    lock_opts: PgConnectOptions,
    pool: PgPool,
    instance_id: String,
    timescale: bool,
    heads: HashMap<Stream, watch::Sender<i64>>,
    dropped: HashMap<Stream, AtomicI64>,
    spill: Option<spill::Spill>,
    cfg: StoreConfig,
}

/// The advisory lock key a gatherer holds on its database while it runs ("kalshi-g").
pub const WRITER_LOCK_KEY: i64 = 0x6b61_6c73_6869_2d67;

impl Store {
    /// Connects (retrying until `startup_timeout`), migrates, and reads the current heads.
    pub async fn open(cfg: StoreConfig, cancel: &CancellationToken) -> anyhow::Result<Arc<Store>> {
        let opts: PgConnectOptions = cfg
            .database_url
            .expose()
            .parse::<PgConnectOptions>()
            .context("parse store.database_url")?
            .application_name("kalshi-gatherer")
            .log_statements(tracing::log::LevelFilter::Debug)
            .options([
                (
                    "statement_timeout",
                    format!("{}", cfg.op_timeout.as_millis()),
                ),
                ("lock_timeout", format!("{}", cfg.op_timeout.as_millis())),
                (
                    "idle_in_transaction_session_timeout",
                    format!("{}", cfg.op_timeout.as_millis() * 2),
                ),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(cfg.pool_max)
            .min_connections(0)
            .acquire_timeout(cfg.connect_timeout)
            .idle_timeout(Some(Duration::from_secs(300)))
            .test_before_acquire(true)
            .connect_lazy_with(opts.clone());
        let deadline = tokio::time::Instant::now() + cfg.startup_timeout;
        let mut backoff = Backoff::new(BackoffConfig::new(
            Duration::from_millis(200),
            Duration::from_secs(5),
        )?);
        loop {
            match sqlx::query("SELECT 1").execute(&pool).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "local database not reachable yet, retrying");
                    if !backoff.sleep(cancel).await {
                        anyhow::bail!("shutdown while waiting for the local database");
                    }
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "connect to the local database (store.database_url) within {:?}",
                        cfg.startup_timeout
                    )));
                }
            }
        }
        // One writer per database, for the process's lifetime: two gatherers on one database
        // would hand out the same cursor ids to different rows.
        let mut writer_lock =
            <sqlx::postgres::PgConnection as sqlx::Connection>::connect_with(&opts)
                .await
                .context("open the writer-lock connection to the local database")?;
        // A predecessor killed a moment ago may still hold it until its backend notices.
        loop {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(WRITER_LOCK_KEY)
                .fetch_one(&mut writer_lock)
                .await
                .context("take the writer lock")?;
            if locked {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "another gatherer process is writing to this database (advisory lock {WRITER_LOCK_KEY} is held): run one gatherer per database"
                );
            }
            tracing::warn!(
                "the local database's writer lock is held by another session; waiting for it"
            );
            if !backoff.sleep(cancel).await {
                anyhow::bail!("shutdown while waiting for the writer lock");
            }
        }
        let timescale = migrate(&pool, cfg.timescaledb, &cfg.retention).await?;
        let instance_id: String = sqlx::query("SELECT value FROM meta WHERE key = 'instance_id'")
            .fetch_one(&pool)
            .await
            .context("read the instance id")?
            .try_get(0)?;
        let spill = cfg
            .spill_dir
            .as_deref()
            .map(|root| spill::Spill::new(root, &instance_id));
        if let Some(spill) = &spill {
            std::fs::create_dir_all(spill.dir())
                .with_context(|| format!("create the spill directory {}", spill.dir().display()))?;
            for s in Stream::ALL {
                spill
                    .replay(&pool, s)
                    .await
                    .with_context(|| format!("load the spilled rows of {}", s.table()))?;
            }
        }
        let mut heads = HashMap::new();
        let mut dropped = HashMap::new();
        for s in Stream::ALL {
            let (max_id, mark): (i64, i64) = sqlx::query(AssertSqlSafe(format!(
                "SELECT COALESCE((SELECT max(id) FROM {}), 0), COALESCE((SELECT dropped_through FROM retention_marks WHERE stream = $1), 0)",
                s.table()
            )))
            .bind(s.table())
            .fetch_one(&pool)
            .await
            .map(|r| (r.get(0), r.get(1)))
            .with_context(|| format!("read the head of {}", s.table()))?;
            heads.insert(s, watch::Sender::new(max_id.max(mark)));
            dropped.insert(s, AtomicI64::new(mark));
        }
        tracing::info!(instance_id = %instance_id, timescaledb = timescale, "local database ready");
        Ok(Arc::new(Store {
            pool,
            writer_lock: tokio::sync::Mutex::new(writer_lock),
            lock_opts: opts,
            instance_id,
            timescale,
            heads,
            dropped,
            spill,
            cfg,
        }))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Holds the writer lock for the process's lifetime. Its session is checked every
    /// `interval`; a lost session (the database restarted, the backend was killed) is opened
    /// again and the lock taken again. If another session holds the lock by then, this returns
    /// the error and the caller stops the gatherer: two writers would hand out the same
    /// cursors. Between the loss and the next check (at most `interval`) the writers go on.
    pub async fn keep_writer_lock(
        self: Arc<Self>,
        interval: Duration,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(BackoffConfig::new(
            Duration::from_millis(100),
            Duration::from_secs(2),
        )?);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(interval) => {}
            }
            let mut session = self.writer_lock.lock().await;
            let alive = kalshi_shared::pg::timed(
                "writer_lock_check",
                self.cfg.op_timeout,
                sqlx::query("SELECT 1").execute(&mut *session),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            if alive {
                continue;
            }
            metrics::counter!(m::WRITER_LOCK_LOST).increment(1);
            tracing::warn!(
                "the writer-lock session was lost (database restart or killed backend); taking the lock again"
            );
            loop {
                let attempt = async {
                    let mut c = <sqlx::postgres::PgConnection as sqlx::Connection>::connect_with(
                        &self.lock_opts,
                    )
                    .await?;
                    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                        .bind(WRITER_LOCK_KEY)
                        .fetch_one(&mut c)
                        .await?;
                    Ok::<_, sqlx::Error>((c, locked))
                };
                match kalshi_shared::pg::timed("writer_lock_take", self.cfg.op_timeout, attempt)
                    .await
                {
                    Ok(Ok((c, true))) => {
                        *session = c;
                        backoff.reset();
                        tracing::info!("writer lock taken again");
                        break;
                    }
                    Ok(Ok((_, false))) => anyhow::bail!(
                        "another session took this database's writer lock (advisory lock {WRITER_LOCK_KEY}) while ours was lost: another gatherer is writing here; stopping"
                    ),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot take the writer lock again yet; retrying")
                    }
                    Err(_) => tracing::warn!("taking the writer lock again timed out; retrying"),
                }
                if !backoff.sleep(&cancel).await {
                    return Ok(());
                }
            }
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn timescale(&self) -> bool {
        self.timescale
    }

    /// The highest committed cursor.
    pub fn head(&self, stream: Stream) -> i64 {
        self.heads.get(&stream).map_or(0, |h| *h.borrow())
    }

    pub fn watch_head(&self, stream: Stream) -> Option<watch::Receiver<i64>> {
        self.heads.get(&stream).map(watch::Sender::subscribe)
    }

    /// Starts one writer per table; returns their sinks and one task that ends when every
    /// writer has flushed. The writers finish once `finish` is cancelled; the gaps writer
    /// finishes last, so every other writer can still declare a gap while it flushes.
    /// `died` is cancelled when any writer ends before it was told to (a panic included): the
    /// caller stops the service rather than keep it half alive.
    pub fn start_writers(
        &self,
        finish: &CancellationToken,
        trades_overflow: writer::OverflowHook,
        died: &CancellationToken,
    ) -> (Sinks, JoinHandle<()>) {
        let cfg = &self.cfg;
        let deadline = cfg.flush_deadline;
        let head = |s: Stream| self.heads[&s].clone();
        let start = |s: Stream| self.head(s) + 1;
        let gaps_finish = CancellationToken::new();
        let (gaps, gaps_writer) = writer::channel::<GapRow>(
            self.pool.clone(),
            cfg.writer.clone(),
            cfg.channel_rows,
            start(Stream::Gaps),
            head(Stream::Gaps),
            None,
            gaps_finish.clone(),
        );
        let gaps_writer = match &self.spill {
            Some(s) => gaps_writer.with_spill(s.clone()),
            None => gaps_writer,
        };
        let gaps_task = {
            let (gaps_finish, died) = (gaps_finish.clone(), died.clone());
            let t = tokio::spawn(gaps_writer.run(deadline));
            tokio::spawn(async move {
                let r = t.await;
                if !gaps_finish.is_cancelled() {
                    tracing::error!(
                        table = "gaps",
                        panicked = r.is_err(),
                        "a writer ended before shutdown"
                    );
                    died.cancel();
                }
            })
        };
        let mut tasks = Vec::new();
        macro_rules! start {
            ($row:ty, $stream:expr) => {
                start!($row, $stream, |w| w)
            };
            ($row:ty, $stream:expr, $adapt:expr) => {{
                let (sink, w) = writer::channel::<$row>(
                    self.pool.clone(),
                    cfg.writer.clone(),
                    cfg.channel_rows,
                    start($stream),
                    head($stream),
                    Some(gaps.clone()),
                    finish.clone(),
                );
                let w = $adapt(w);
                let w = match &self.spill {
                    Some(s) => w.with_spill(s.clone()),
                    None => w,
                };
                tasks.push(tokio::spawn(w.run(deadline)));
                sink
            }};
        }
        let sinks = Sinks {
            trades: start!(TradeRow, Stream::Trades, |w: writer::Writer<TradeRow>| w
                .with_overflow_hook(trades_overflow)),
            deltas: start!(DeltaRow, Stream::OrderbookDeltas),
            snapshots: start!(SnapshotRow, Stream::OrderbookSnapshots),
            tickers: start!(TickerRow, Stream::Tickers),
            lifecycle: start!(LifecycleRow, Stream::Lifecycle),
            markets: start!(MarketVersion, Stream::Markets),
            events: start!(EventVersion, Stream::Events),
            series: start!(SeriesVersion, Stream::Series),
            gaps: gaps.clone(),
        };
        let (finish, died) = (finish.clone(), died.clone());
        let all = tokio::spawn(async move {
            let mut writers: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
            for t in tasks {
                writers.spawn(async move {
                    if let Err(e) = t.await {
                        tracing::error!(error = %e, "a writer panicked");
                    }
                });
            }
            while writers.join_next().await.is_some() {
                if !finish.is_cancelled() {
                    tracing::error!("a writer ended before shutdown");
                    died.cancel();
                }
            }
            gaps_finish.cancel();
            let _ = gaps_task.await;
        });
        (sinks, all)
    }

    /// Records after `after`, at most `limit` and about `max_bytes`.
    pub async fn read(
        &self,
        stream: Stream,
        after: i64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Page, ReadError> {
        let head = self.head(stream);
        let dropped = self.dropped_through(stream).await?;
        if after < dropped {
            let oldest = self.oldest(stream).await?;
            return Err(ReadError::RetentionOverrun {
                stream: stream.table(),
                after,
                dropped_through: dropped,
                oldest,
            });
        }
        if after >= head {
            return Ok(Page {
                records: Vec::new(),
                head,
                through: after,
            });
        }
        let sql = format!(
            "SELECT {} FROM {} WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3",
            rows::select_list(stream),
            stream.table()
        );
        let fut = sqlx::query(AssertSqlSafe(sql))
            .bind(after)
            .bind(head)
            .bind(i64::from(limit))
            .fetch_all(&self.pool);
        let rows = kalshi_shared::pg::timed("read_page", self.cfg.op_timeout, fut)
            .await
            .map_err(|_| ReadError::Database(sqlx::Error::PoolTimedOut))??;
        let mut records = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        let mut cut = false;
        for r in &rows {
            let rec = rows::decode(stream, r)?;
            bytes += rec.encoded_len() + 4;
            records.push(rec);
            if bytes >= max_bytes {
                cut = records.len() < rows.len();
                break;
            }
        }
        // A short page read every id up to the head: ids never used (rows the database
        // skipped, rows refused) lie behind it too, so readers are moved past them.
        let short = !cut && (rows.len() as i64) < i64::from(limit);
        let through = if short {
            head
        } else {
            records.last().map_or(after, |r| r.cursor)
        };
        Ok(Page {
            records,
            head,
            through,
        })
    }

    /// The highest cursor retention has dropped (0: none).
    pub async fn dropped_through(&self, stream: Stream) -> Result<i64, sqlx::Error> {
        let mark = self
            .dropped
            .get(&stream)
            .map_or(0, |a| a.load(Ordering::Acquire));
        if !self.timescale {
            return Ok(mark);
        }
        // TimescaleDB drops chunks on its own: below the lowest remaining cursor is gone.
        Ok(mark.max(self.oldest(stream).await? - 1))
    }

    /// The lowest stored cursor (head + 1 when the stream is empty).
    pub async fn oldest(&self, stream: Stream) -> Result<i64, sqlx::Error> {
        let sql = format!("SELECT min(id) FROM {}", stream.table());
        let fut = sqlx::query(AssertSqlSafe(sql)).fetch_one(&self.pool);
        let row = kalshi_shared::pg::timed("oldest_cursor", self.cfg.op_timeout, fut)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(row
            .try_get::<Option<i64>, _>(0)?
            .unwrap_or(self.head(stream) + 1))
    }

    /// Whether the database answers now.
    pub async fn ping(&self) -> bool {
        let fut = sqlx::query("SELECT 1").execute(&self.pool);
        matches!(
            kalshi_shared::pg::timed("ping", Duration::from_secs(2), fut).await,
            Ok(Ok(_))
        )
    }

    /// The latest content hash per ticker of a registry stream (to store only changes).
    pub async fn latest_registry_hashes(
        &self,
        stream: Stream,
    ) -> Result<HashMap<String, String>, sqlx::Error> {
        let sql = format!(
            "SELECT DISTINCT ON (ticker) ticker, content_hash FROM {} ORDER BY ticker, id DESC",
            stream.table()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The next occurrence of every lifecycle content already stored: `(kind, hash, next)`.
    pub async fn lifecycle_occurrences(
        &self,
    ) -> Result<Vec<(&'static str, String, u32)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT kind, content_hash, max(occurrence) + 1 FROM lifecycle GROUP BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: &'static str = match r.try_get::<String, _>(0)?.as_str() {
                "event" => "event",
                _ => "market",
            };
            let next: i32 = r.try_get(2)?;
            out.push((kind, r.try_get(1)?, u32::try_from(next).unwrap_or(0)));
        }
        Ok(out)
    }

    /// The exchange time of the newest stored trade, if any.
    pub async fn newest_trade_ms(&self) -> Result<Option<i64>, sqlx::Error> {
        let row = sqlx::query("SELECT max(ts_ms) FROM trades")
            .fetch_one(&self.pool)
            .await?;
        row.try_get(0)
    }

    /// Creates upcoming daily partitions and applies retention. Run at start and periodically.
    pub async fn maintain(&self, now_ms: i64) -> anyhow::Result<()> {
        if self.timescale {
            return Ok(());
        }
        let today = now_ms.div_euclid(86_400_000);
        for s in Stream::ALL {
            for day in today - 1..=today + 2 {
                if let Err(e) = self
                    .pool
                    .execute(AssertSqlSafe(schema::create_partition_sql(s, day)))
                    .await
                {
                    tracing::warn!(table = s.table(), day, error = %e, "cannot create a daily partition");
                }
            }
            if let Some(ret) = self.cfg.retention.get(&s) {
                let cutoff_ms = now_ms - i64::try_from(ret.as_millis()).unwrap_or(i64::MAX);
                self.apply_retention(s, cutoff_ms).await?;
            }
        }
        Ok(())
    }

    /// Drops whole expired partitions and expires the default partition's rows, keeping one
    /// rule: everything at or below the stream's retention mark is gone and everything above
    /// it is still there. A reader below the mark is then told exactly which cursors it lost.
    ///
    /// Cursors follow ingestion, but `trades` is partitioned by exchange time: a trade
    /// backfilled late into an expired day has a cursor above those of newer days. Dropping
    /// that day would put the mark above rows that still exist, and a lagging reader would be
    /// told "overrun" for ever. So an expired partition whose cursors reach above the lowest
    /// cursor kept waits until everything below it expires too.
    async fn apply_retention(&self, s: Stream, cutoff_ms: i64) -> anyhow::Result<()> {
        let cutoff_day = cutoff_ms.div_euclid(86_400_000);
        let names: Vec<String> = sqlx::query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
        )
        .bind(s.table())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
        let col = schema::partition_column(s);
        let default = format!("{}_default", s.table());
        let before_cutoff =
            format!("{col} < TIMESTAMPTZ 'epoch' + $1::bigint * INTERVAL '1 millisecond'");
        // The lowest cursor that stays: in partitions that do not expire, and in the default
        // partition's rows that do not expire.
        let mut floor: Option<i64> = sqlx::query(AssertSqlSafe(format!(
            "SELECT min(id) FROM {default} WHERE NOT ({before_cutoff})"
        )))
        .bind(cutoff_ms)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        let mut expired: Vec<(String, Option<(i64, i64)>)> = Vec::new();
        for part in names {
            let Some(day) = schema::partition_day(s, &part) else {
                continue;
            };
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT min(id), max(id) FROM {part}"
            )))
            .fetch_one(&self.pool)
            .await?;
            let range = match (
                row.try_get::<Option<i64>, _>(0)?,
                row.try_get::<Option<i64>, _>(1)?,
            ) {
                (Some(lo), Some(hi)) => Some((lo, hi)),
                _ => None,
            };
            // Only whole days before the cutoff.
            if day + 1 > cutoff_day {
                if let Some((lo, _)) = range {
                    floor = Some(floor.map_or(lo, |f| f.min(lo)));
                }
                continue;
            }
            expired.push((part, range));
        }
        // Expired partitions reaching above the floor wait, and lower the floor in turn.
        loop {
            let before = expired.len();
            let mut kept = Vec::new();
            expired.retain(|(part, range)| match (range, floor) {
                (Some((lo, hi)), Some(f)) if *hi >= f => {
                    kept.push((part.clone(), *lo));
                    false
                }
                _ => true,
            });
            for (part, lo) in kept {
                floor = Some(floor.map_or(lo, |f| f.min(lo)));
                metrics::counter!(m::RETENTION_DEFERRED_PARTITIONS, "table" => s.table())
                    .increment(1);
                tracing::info!(table = s.table(), partition = %part, "retention waits: this expired partition holds cursors above rows that stay (trades backfilled late)");
            }
            if expired.len() == before {
                break;
            }
        }
        for (part, range) in expired {
            let mut tx = self.pool.begin().await?;
            if let Some((_, max)) = range {
                record_mark(&mut tx, s, max).await?;
            }
            tx.execute(AssertSqlSafe(format!("DROP TABLE {part}")))
                .await?;
            tx.commit().await?;
            if let Some((_, max)) = range {
                self.dropped[&s].fetch_max(max, Ordering::AcqRel);
            }
            metrics::counter!(m::RETENTION_DROPPED_PARTITIONS, "table" => s.table()).increment(1);
            tracing::info!(table = s.table(), partition = %part, dropped_through = ?range.map(|r| r.1), "retention dropped a partition");
        }
        // Rows that landed in the default partition are expired row by row, below the floor.
        let below_floor = format!("{before_cutoff} AND id < $2");
        let floor = floor.unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        let max: Option<i64> = sqlx::query(AssertSqlSafe(format!(
            "SELECT max(id) FROM {default} WHERE {below_floor}"
        )))
        .bind(cutoff_ms)
        .bind(floor)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if let Some(max) = max {
            record_mark(&mut tx, s, max).await?;
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {default} WHERE {below_floor}"
            )))
            .bind(cutoff_ms)
            .bind(floor)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if let Some(max) = max {
            self.dropped[&s].fetch_max(max, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Runs [`maintain`](Self::maintain) now and every `maintenance_interval` until shutdown.
    pub async fn run_maintenance(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.maintain(kalshi_shared::time::now_ms()).await {
                let class = e
                    .downcast_ref::<sqlx::Error>()
                    .map_or("other", |e| classify(e).label());
                tracing::warn!(error = %format!("{e:#}"), class, "store maintenance failed; will retry");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.maintenance_interval) => {}
            }
        }
    }
}

async fn record_mark(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    s: Stream,
    max: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO retention_marks (stream, dropped_through) VALUES ($1, $2) ON CONFLICT (stream) DO UPDATE SET dropped_through = GREATEST(retention_marks.dropped_through, EXCLUDED.dropped_through)",
    )
    .bind(s.table())
    .bind(max)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies the embedded migrations; returns whether TimescaleDB is in use.
async fn migrate(
    pool: &PgPool,
    mode: TimescaleMode,
    retention: &HashMap<Stream, Duration>,
) -> anyhow::Result<bool> {
    let mut conn = pool
        .acquire()
        .await
        .context("acquire a connection for migrations")?;
    // One gatherer per database; the lock guards against an accidental second one.
    sqlx::query("SELECT pg_advisory_lock(7207001)")
        .execute(&mut *conn)
        .await?;
    let result = async {
        let applied = kalshi_shared::pg::migrate::verify(&mut conn, schema::MIGRATIONS)
            .await
            .context("check the applied migrations")?;
        let available: bool = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
        )
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
        let want_timescale = match mode {
            TimescaleMode::Off => false,
            TimescaleMode::Auto => available,
            TimescaleMode::Require if available => true,
            TimescaleMode::Require => anyhow::bail!(
                "store.timescaledb = \"require\" but the timescaledb extension is not installed"
            ),
        };
        for (version, sql) in schema::MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            if *version == 1 && want_timescale {
                tx.execute("CREATE EXTENSION IF NOT EXISTS timescaledb").await?;
            }
            sqlx::raw_sql(*sql).execute(&mut *tx).await.with_context(|| format!("apply migration {version}"))?;
            if *version == 1 && want_timescale {
                for s in Stream::ALL {
                    let days = retention.get(&s).map(|d| (d.as_secs() / 86_400).max(1) as u32);
                    for stmt in schema::timescale_sql(s, days) {
                        tx.execute(AssertSqlSafe(stmt)).await?;
                    }
                }
                tx.execute("INSERT INTO meta (key, value) VALUES ('storage', 'timescaledb') ON CONFLICT DO NOTHING").await?;
            }
            kalshi_shared::pg::migrate::record(&mut tx, *version, sql).await?;
            tx.commit().await?;
            tracing::info!(version, "applied migration");
        }
        let storage: Option<String> = sqlx::query("SELECT value FROM meta WHERE key = 'storage'")
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        Ok(storage.as_deref() == Some("timescaledb"))
    }
    .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(7207001)")
        .execute(&mut *conn)
        .await;
    result
}
