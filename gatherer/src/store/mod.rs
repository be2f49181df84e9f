//! The local database: schema and migrations, one writer per table, cursor reads for the
//! API, partitions and retention.
//!
//! Owns every statement the gatherer sends to its database. It must never let a reader see a
//! cursor before everything below it is visible (see [`writer`]), and never drop rows for
//! retention without recording the highest dropped cursor (`retention_marks`), so a reader
//! that fell behind gets an explicit overrun error instead of a silent hole.

pub mod gap_reason;
pub mod rows;
pub mod schema;
pub mod spill;
pub mod writer;

mod lock;
mod maintenance;
mod open;
mod read;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use kalshi_proto::gatherer::v1 as pb;
use kalshi_shared::pg::classify;
use kalshi_shared::retry::{Backoff, BackoffConfig};
use kalshi_shared::service::Group;
use prost::Message as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Executor as _, Row as _};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use rows::{
    DeltaRow, EventVersion, ExchangeVersion, GapRow, LifecycleRow, MarketVersion, SeriesVersion,
    SnapshotRow, TickerRow, TradeRow, UnknownRow,
};
use writer::{Sink, WriterConfig};

pub use kalshi_proto::Stream;

pub use kalshi_shared::config::gatherer::TimescaleMode;

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
        Stream::Exchange => ExchangeVersion::COLUMNS,
        Stream::Gaps => GapRow::COLUMNS,
        Stream::UnknownMessages => UnknownRow::COLUMNS,
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
    pub exchange: Sink<ExchangeVersion>,
    pub gaps: Sink<GapRow>,
    pub unknown: Sink<UnknownRow>,
}

/// Why a read was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "retention overrun: records of {stream} after cursor {after} up to cursor {dropped_through} were dropped by retention; the oldest available cursor is {oldest}; the dropped records' times lie in [{from_ms}, {to_ms}]"
    )]
    RetentionOverrun {
        stream: &'static str,
        after: i64,
        dropped_through: i64,
        oldest: i64,
        /// The exchange times the dropped records lie in (from the retention log).
        from_ms: i64,
        to_ms: i64,
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
    /// The writers' connections (one per stream), apart from `pool`'s readers.
    writer_pool: PgPool,
    instance_id: String,
    timescale: bool,
    heads: HashMap<Stream, watch::Sender<i64>>,
    dropped: HashMap<Stream, AtomicI64>,
    /// Per stream: records of exchange times before this are gone (the retention log's end).
    dropped_before: HashMap<Stream, AtomicI64>,
    /// Reads hold it shared from their retention check to their last row; a retention drop
    /// holds it alone from its DROP to the marks: no read sees rows vanish behind its check.
    retention: tokio::sync::RwLock<()>,
    spill: Option<spill::Spill>,
    cfg: StoreConfig,
}

/// The advisory lock key a gatherer holds on its database while it runs ("kalshi-g").
pub const WRITER_LOCK_KEY: i64 = 0x6b61_6c73_6869_2d67;

impl Store {
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes both pools (readers' and writers').
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer_pool.close().await;
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

    /// Starts one writer per table in `writers`, and the gaps writer in `gaps` (a group that
    /// stops after `writers`, so every other writer can still declare a gap while it
    /// flushes); returns their sinks. Each writer finishes once its group is asked to stop and
    /// what it received is written (or spilled at the flush deadline). A writer that ends
    /// earlier (a panic included) stops the service through its group.
    pub fn start_writers(
        &self,
        writers: &Group,
        gaps_group: &Group,
        trades_overflow: writer::OverflowHook,
        rt: &tokio::runtime::Handle,
    ) -> Sinks {
        let cfg = &self.cfg;
        let deadline = cfg.flush_deadline;
        let head = |s: Stream| self.heads[&s].clone();
        let start = |s: Stream| self.head(s) + 1;
        let (gaps, gaps_writer) = writer::channel::<GapRow>(
            self.writer_pool.clone(),
            cfg.writer.clone(),
            cfg.channel_rows,
            start(Stream::Gaps),
            head(Stream::Gaps),
            None,
            gaps_group.token(),
        );
        let gaps_writer = match &self.spill {
            Some(s) => gaps_writer.with_spill(s.clone()),
            None => gaps_writer,
        };
        gaps_group.spawn_on(rt, "gaps", async move {
            gaps_writer.run(deadline).await;
            Ok(())
        });
        macro_rules! start {
            ($row:ty, $stream:expr) => {
                start!($row, $stream, |w| w)
            };
            ($row:ty, $stream:expr, $adapt:expr) => {{
                let (sink, w) = writer::channel::<$row>(
                    self.writer_pool.clone(),
                    cfg.writer.clone(),
                    cfg.channel_rows,
                    start($stream),
                    head($stream),
                    Some(gaps.clone()),
                    writers.token(),
                );
                let w = $adapt(w);
                let w = match &self.spill {
                    Some(s) => w.with_spill(s.clone()),
                    None => w,
                };
                writers.spawn_on(rt, $stream.table(), async move {
                    w.run(deadline).await;
                    Ok(())
                });
                sink
            }};
        }
        Sinks {
            trades: start!(TradeRow, Stream::Trades, |w: writer::Writer<TradeRow>| w
                .with_overflow_hook(trades_overflow)),
            deltas: start!(DeltaRow, Stream::OrderbookDeltas),
            snapshots: start!(SnapshotRow, Stream::OrderbookSnapshots),
            tickers: start!(TickerRow, Stream::Tickers),
            lifecycle: start!(LifecycleRow, Stream::Lifecycle),
            markets: start!(MarketVersion, Stream::Markets),
            events: start!(EventVersion, Stream::Events),
            series: start!(SeriesVersion, Stream::Series),
            exchange: start!(ExchangeVersion, Stream::Exchange),
            unknown: start!(UnknownRow, Stream::UnknownMessages),
            gaps,
        }
    }

    /// Whether the database answers now.
    pub async fn ping(&self) -> bool {
        let fut = sqlx::query("SELECT 1").execute(&self.pool);
        matches!(
            kalshi_shared::pg::timed("ping", Duration::from_secs(2), fut).await,
            Ok(Ok(_))
        )
    }
}
