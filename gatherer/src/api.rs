//! The gRPC cursor API (`kalshi.gatherer.v1.Gatherer`): Read, Tail and Status.
//!
//! Limits are clamped to `api.max_page`; a bad stream or cursor is INVALID_ARGUMENT; a cursor
//! below the retention horizon is OUT_OF_RANGE with a message naming the overrun; an
//! unreachable local database is UNAVAILABLE. `Tail` catches up page by page, then waits on
//! the writer's head (no polling sleep) and pushes each committed batch; an idle Tail sends an
//! empty message with the head every `api.tail_heartbeat` so the reader can tell it is alive.
//!
//! It must never send a record above the committed head, or one cursor twice on a stream.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kalshi_proto::gatherer::v1::{self as pb, gatherer_server::Gatherer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::{Request, Response, Status};

use crate::health::Health;
use crate::metrics as m;
use crate::store::{ReadError, Store, Stream};
use tokio_util::sync::CancellationToken;

pub struct ApiConfig {
    pub max_page: u32,
    pub default_page: u32,
    pub max_message_bytes: usize,
    pub tail_heartbeat: Duration,
    pub max_tail_streams: usize,
    /// Bytes of pages read and not yet taken by the gRPC layer, across all calls.
    pub read_buffer_bytes: usize,
}

pub struct Api {
    store: Arc<Store>,
    health: Arc<Health>,
    cfg: ApiConfig,
    tails: Arc<Semaphore>,
    /// `api.read_buffer_bytes`, one permit a byte: a page is read only once its largest
    /// possible size is held, shrunk to its real size once read, and released when gRPC asks
    /// for the message after it. Readers that never read cannot make the gatherer hold more.
    budget: Arc<Semaphore>,
    /// Cancelled when the server stops: every Tail ends (tonic's graceful stop waits for
    /// open streams, and a Tail at the head would otherwise never end).
    stop: CancellationToken,
}

impl Api {
    pub fn new(
        store: Arc<Store>,
        health: Arc<Health>,
        cfg: ApiConfig,
        stop: CancellationToken,
    ) -> Self {
        let tails = Arc::new(Semaphore::new(cfg.max_tail_streams));
        let budget = Arc::new(Semaphore::new(cfg.read_buffer_bytes));
        Self {
            store,
            health,
            cfg,
            tails,
            budget,
            stop,
        }
    }

    fn stream(&self, v: i32) -> Result<Stream, Status> {
        Stream::from_pb(v).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown stream {v}: use one of TRADES, ORDERBOOK_DELTAS, ORDERBOOK_SNAPSHOTS, TICKERS, LIFECYCLE, MARKETS, EVENTS, SERIES, GAPS"
            ))
        })
    }

    fn limit(&self, v: u32) -> u32 {
        if v == 0 {
            self.cfg.default_page
        } else {
            v.min(self.cfg.max_page)
        }
    }

    /// Leaves room for the envelope within the message limit, and fits the read budget.
    fn page_bytes(&self) -> usize {
        (self.cfg.max_message_bytes / 2).min(self.cfg.read_buffer_bytes)
    }
}

/// How long a Read waits for the read budget before RESOURCE_EXHAUSTED.
const READ_BUDGET_WAIT: Duration = Duration::from_secs(5);

/// Bytes of the read budget held for one page; counted in `api_read_buffer_bytes`.
struct Held {
    permit: OwnedSemaphorePermit,
}

impl Held {
    /// Waits for `bytes` of the budget.
    async fn take(budget: &Arc<Semaphore>, bytes: usize) -> Option<Held> {
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        let permit = budget.clone().acquire_many_owned(n).await.ok()?;
        metrics::gauge!(m::API_READ_BUFFER_BYTES).increment(f64::from(n));
        Some(Held { permit })
    }

    /// Gives back all but `bytes`.
    fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.min(self.permit.num_permits());
        let extra = self.permit.num_permits() - keep;
        if let Some(back) = self.permit.split(extra) {
            metrics::gauge!(m::API_READ_BUFFER_BYTES).decrement(back.num_permits() as f64);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        metrics::gauge!(m::API_READ_BUFFER_BYTES).decrement(self.permit.num_permits() as f64);
    }
}

/// The size a page holds in memory, about its encoded size.
fn page_size(records: &[pb::Record]) -> usize {
    use prost::Message;
    records.iter().map(|r| r.encoded_len() + 8).sum::<usize>() + 64
}

/// A Tail's messages as gRPC takes them: each message's budget is released when gRPC asks for
/// the next one (by then it has been encoded and handed on).
struct Budgeted {
    rx: mpsc::Receiver<(Result<pb::ReadResponse, Status>, Option<Held>)>,
    held: Option<Held>,
}

impl tokio_stream::Stream for Budgeted {
    type Item = Result<pb::ReadResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.held = None;
        match self.rx.poll_recv(cx) {
            std::task::Poll::Ready(Some((item, held))) => {
                self.held = held;
                std::task::Poll::Ready(Some(item))
            }
            std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

fn status_of(e: ReadError) -> Status {
    match e {
        ReadError::RetentionOverrun { from_ms, to_ms, .. } => {
            // The dropped records' times, for the reader's gap (it declares only those).
            let mut md = tonic::metadata::MetadataMap::new();
            for (k, v) in [
                (kalshi_proto::DROPPED_FROM_MS, from_ms),
                (kalshi_proto::DROPPED_TO_MS, to_ms),
            ] {
                if let Ok(v) = v.to_string().parse() {
                    md.insert(k, v);
                }
            }
            Status::with_metadata(tonic::Code::OutOfRange, e.to_string(), md)
        }
        ReadError::Database(_) => Status::unavailable(e.to_string()),
    }
}

fn count(method: &'static str, code: &Result<impl Sized, Status>) {
    let c = match code {
        Ok(_) => "ok",
        Err(s) => match s.code() {
            tonic::Code::InvalidArgument => "invalid_argument",
            tonic::Code::OutOfRange => "out_of_range",
            tonic::Code::Unavailable => "unavailable",
            tonic::Code::ResourceExhausted => "resource_exhausted",
            _ => "other",
        },
    };
    metrics::counter!(m::API_REQUESTS, "method" => method, "code" => c).increment(1);
}

type TailStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ReadResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Gatherer for Api {
    async fn read(
        &self,
        req: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        let r = req.into_inner();
        let result = async {
            let stream = self.stream(r.stream)?;
            if r.after < 0 {
                return Err(Status::invalid_argument(format!(
                    "after must be >= 0, got {}",
                    r.after
                )));
            }
            let _held = tokio::time::timeout(
                READ_BUDGET_WAIT,
                Held::take(&self.budget, self.page_bytes()),
            )
            .await
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "read budget in use by other readers (api.read_buffer_bytes = {}): retry later",
                    self.cfg.read_buffer_bytes
                ))
            })?
            .ok_or_else(|| Status::unavailable("the gatherer is stopping"))?;
            let page = self
                .store
                .read(stream, r.after, self.limit(r.limit), self.page_bytes())
                .await
                .map_err(status_of)?;
            metrics::counter!(m::API_RECORDS_SENT, "stream" => stream.table())
                .increment(page.records.len() as u64);
            Ok(Response::new(pb::ReadResponse {
                stream: stream.to_pb() as i32,
                records: page.records,
                head: page.head,
                through: page.through,
            }))
        }
        .await;
        count("read", &result);
        result
    }

    type TailStream = TailStream;

    async fn tail(
        &self,
        req: Request<pb::TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let r = req.into_inner();
        let result = (|| {
            let stream = self.stream(r.stream)?;
            if r.after < 0 {
                return Err(Status::invalid_argument(format!(
                    "after must be >= 0, got {}",
                    r.after
                )));
            }
            let permit = self.tails.clone().try_acquire_owned().map_err(|_| {
                Status::resource_exhausted(format!(
                    "too many Tail streams (api.max_tail_streams = {})",
                    self.cfg.max_tail_streams
                ))
            })?;
            let mut head_rx = self
                .store
                .watch_head(stream)
                .ok_or_else(|| Status::internal("stream has no writer"))?;
            let store = self.store.clone();
            let limit = self.limit(r.limit);
            let max_bytes = self.page_bytes();
            let heartbeat = self.cfg.tail_heartbeat;
            let budget = self.budget.clone();
            let (tx, rx) = mpsc::channel::<(Result<pb::ReadResponse, Status>, Option<Held>)>(1);
            let mut after = r.after;
            let stop = self.stop.clone();
            tokio::spawn(async move {
                let _permit = permit;
                metrics::gauge!(m::API_TAIL_STREAMS).increment(1.0);
                loop {
                    if stop.is_cancelled() {
                        break;
                    }
                    // Catch up: read until a short page says we are at the head. A page is
                    // read only once the one before it was taken by gRPC (the channel's one
                    // slot is free) and within the read budget, so a reader that never reads
                    // holds at most two pages, all such readers together at most the budget.
                    let slot = tokio::select! {
                        s = tx.reserve() => match s {
                            Ok(s) => s,
                            Err(_) => break,
                        },
                        _ = stop.cancelled() => break,
                    };
                    let mut held = tokio::select! {
                        h = Held::take(&budget, max_bytes) => match h {
                            Some(h) => h,
                            None => break,
                        },
                        _ = tx.closed() => break,
                        _ = stop.cancelled() => break,
                    };
                    let page = match store.read(stream, after, limit, max_bytes).await {
                        Ok(p) => p,
                        Err(e) => {
                            slot.send((Err(status_of(e)), None));
                            break;
                        }
                    };
                    held.shrink_to(page_size(&page.records));
                    let n = page.records.len();
                    let moved = page.through > after;
                    after = after.max(page.through);
                    if let Some(last) = page.records.last() {
                        after = after.max(last.cursor);
                    }
                    // Records, or only news that the reader may move past unused ids.
                    if n > 0 || moved {
                        metrics::counter!(m::API_RECORDS_SENT, "stream" => stream.table())
                            .increment(n as u64);
                        let msg = pb::ReadResponse {
                            stream: stream.to_pb() as i32,
                            records: page.records,
                            head: page.head,
                            through: after,
                        };
                        slot.send((Ok(msg), Some(held)));
                    } else {
                        drop(slot);
                    }
                    if after < page.head {
                        continue;
                    }
                    // At the head: wait for the next commit, the heartbeat, or the client.
                    head_rx.borrow_and_update();
                    if *head_rx.borrow() > after {
                        continue;
                    }
                    tokio::select! {
                        changed = head_rx.changed() => if changed.is_err() { break },
                        _ = tokio::time::sleep(heartbeat) => {
                            let beat = pb::ReadResponse {
                                stream: stream.to_pb() as i32,
                                records: Vec::new(),
                                head: *head_rx.borrow(),
                                through: after,
                            };
                            if tx.send((Ok(beat), None)).await.is_err() {
                                break;
                            }
                        }
                        _ = tx.closed() => break,
                        _ = stop.cancelled() => break,
                    }
                }
                metrics::gauge!(m::API_TAIL_STREAMS).decrement(1.0);
            });
            let out: TailStream = Box::pin(Budgeted { rx, held: None });
            Ok(Response::new(out))
        })();
        count("tail", &result);
        result
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let mut streams = Vec::with_capacity(Stream::ALL.len());
        for s in Stream::ALL {
            let oldest = self
                .store
                .oldest(s)
                .await
                .map_err(|e| Status::unavailable(format!("local database unavailable: {e}")))?;
            streams.push(pb::StreamStatus {
                stream: s.to_pb() as i32,
                head: self.store.head(s),
                oldest,
                retained_from_ms: self.store.retained_from_ms(s),
                retention_ms: self.store.retention_ms(s),
            });
        }
        let result = Ok(Response::new(pb::StatusResponse {
            gatherer_id: self.health.gatherer_id.clone(),
            instance_id: self.store.instance_id().to_owned(),
            streams,
            ws_connections: self.health.connected() as u32,
            ws_connections_configured: self.health.conns.len() as u32,
            gaps_declared: self.health.gaps_declared(),
            started_ms: self.health.started_ms,
            version: kalshi_shared::build::VERSION.to_owned(),
            git_sha: kalshi_shared::build::GIT_SHA.to_owned(),
        }));
        count("status", &result);
        result
    }
}
