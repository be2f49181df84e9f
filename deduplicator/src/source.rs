//! One source per gatherer: a `Tail` per stream from where production's cursor says, pages
//! handed to the stream's sink in order. A gatherer that is down or partitioned away is retried
//! with capped jittered backoff while the others carry on; one whose `instance_id` changed
//! (replaced instance, empty database) has its cursors reset, loudly. Everything a gatherer
//! sends is bounded (message size, page size) and checked (ascending cursors, record shape).
//!
//! It must never hand a sink records out of cursor order, or move a cursor past records it
//! has not handed on.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kalshi_proto::GathererClient;
use kalshi_proto::gatherer::v1 as pb;
use kalshi_shared::retry::{Backoff, BackoffConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::board::{Board, Health};
use crate::metrics as m;
use crate::records::{self, Stream};
use crate::sink::{Item, Page};

/// Whether cursors stored for `stored` belong to the gatherer database answering as `live`:
/// the same instance, or a later incarnation of it that this deduplicator started after the
/// database went back (`"<instance>~<ms>"`, see [`Source::check_identity`]).
pub fn same_incarnation(stored: &str, live: &str) -> bool {
    stored == live
        || stored
            .strip_prefix(live)
            .is_some_and(|rest| rest.starts_with('~'))
}

/// Why a gatherer's identity could not be confirmed (the stream retries after backoff).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum IdentityError {
    #[error("Status failed: {0:?}")]
    Status(tonic::Code),
    #[error("no answer to Status within the connect timeout")]
    Unreachable,
    #[error("the endpoint answers as gatherer {0:?}")]
    WrongGatherer(String),
    #[error("no usable instance_id")]
    NoInstance,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub page_limit: u32,
    pub max_message_bytes: usize,
    pub connect_timeout: Duration,
    pub silence_timeout: Duration,
    pub backoff: BackoffConfig,
}

impl SourceConfig {
    /// The service's `[sources]` settings.
    pub fn of(cfg: &crate::Config) -> SourceConfig {
        SourceConfig {
            page_limit: cfg.sources.page_limit,
            max_message_bytes: cfg.sources.max_message_bytes,
            connect_timeout: cfg.sources.connect_timeout,
            silence_timeout: cfg.sources.silence_timeout,
            backoff: cfg.source_backoff,
        }
    }
}

/// Where this gatherer's streams are read up to, for which instance.
struct Position {
    instance: Option<Arc<str>>,
    after: [i64; Stream::ALL.len()],
}

pub struct Source {
    idx: usize,
    id: String,
    cfg: SourceConfig,
    channel: Channel,
    board: Arc<Board>,
    sinks: Vec<mpsc::Sender<Page>>,
    pos: Mutex<Position>,
    /// Serializes identity checks so one reset happens once.
    identity: tokio::sync::Mutex<()>,
}

/// Why a Tail ended.
enum TailEnd {
    Cancelled,
    /// Reconnect after backoff.
    Retry,
}

/// A lazy channel to one gatherer (mTLS when `tls`; its `server_name` is the name its
/// certificate must carry). With mTLS every (re)connection handshakes with the certificate files
/// as they are then, so rotated certificates take effect at the next connection.
pub fn channel(
    gatherer: &crate::config::GathererEndpoint,
    tls: Option<Arc<kalshi_shared::tls::ClientTls>>,
    cfg: &SourceConfig,
) -> Result<Channel, BadEndpoint> {
    let bad = |reason: String| BadEndpoint {
        id: gatherer.id.clone(),
        endpoint: gatherer.endpoint.clone(),
        reason,
    };
    let ep = Endpoint::from_shared(gatherer.endpoint.clone())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(cfg.silence_timeout);
    Ok(match tls {
        Some(tls) => ep.connect_with_connector_lazy(
            kalshi_shared::tls::Connector::new(
                tls,
                gatherer.server_name.as_deref().unwrap_or_default(),
            )
            .map_err(|e| bad(e.to_string()))?,
        ),
        None => ep.connect_lazy(),
    })
}

/// A standby's look at one gatherer: its Status over `channel` (which stays connected for the
/// takeover), the board's health from the answer.
pub async fn probe(
    gatherer: &crate::config::GathererEndpoint,
    channel: &Channel,
    cfg: &SourceConfig,
    board: &crate::board::GathererBoard,
) {
    let client =
        GathererClient::new(channel.clone()).max_decoding_message_size(cfg.max_message_bytes);
    let mut client = client;
    let h = match tokio::time::timeout(cfg.connect_timeout * 2, client.status(pb::StatusRequest {}))
        .await
    {
        Ok(Ok(s)) if s.get_ref().gatherer_id == gatherer.id => Health::Connected,
        Ok(Ok(s)) => {
            tracing::error!(gatherer = %gatherer.id, answered = %s.get_ref().gatherer_id, "the endpoint answers as another gatherer (check the configuration)");
            Health::WrongIdentity
        }
        Ok(Err(_)) | Err(_) => Health::Down,
    };
    board.set_health(h);
}

/// A gatherer endpoint that is not a URI.
#[derive(Debug, thiserror::Error)]
#[error("gatherer {id}: bad endpoint {endpoint:?}: {reason}")]
pub struct BadEndpoint {
    pub id: String,
    pub endpoint: String,
    pub reason: String,
}

impl Source {
    /// `stored`: production's cursors for this gatherer, `(instance, [cursor per stream])`.
    /// `channel`: to this gatherer ([`channel`]), possibly already connected (a standby's).
    pub fn new(
        idx: usize,
        gatherer: &crate::config::GathererEndpoint,
        channel: Channel,
        cfg: SourceConfig,
        board: Arc<Board>,
        sinks: Vec<mpsc::Sender<Page>>,
        stored: Option<(String, [i64; Stream::ALL.len()])>,
    ) -> Arc<Source> {
        let id = gatherer.id.clone();
        let (instance, after) = match stored {
            Some((i, a)) => (Some(Arc::from(i.as_str())), a),
            None => (None, [0; Stream::ALL.len()]),
        };
        Arc::new(Source {
            idx,
            id,
            cfg,
            channel,
            board,
            sinks,
            pos: Mutex::new(Position { instance, after }),
            identity: tokio::sync::Mutex::new(()),
        })
    }

    fn client(&self) -> GathererClient<Channel> {
        GathererClient::new(self.channel.clone())
            .max_decoding_message_size(self.cfg.max_message_bytes)
    }

    fn error(&self, kind: &'static str) {
        metrics::counter!(m::SOURCE_ERRORS, "gatherer" => self.id.clone(), "kind" => kind)
            .increment(1);
    }

    /// Runs every stream's Tail until shutdown. A stream's task that ends before shutdown (a
    /// panic included) ends this with an error: the service stops rather than go on with one
    /// stream of one gatherer silently unread.
    #[tracing::instrument(name = "source", skip_all, fields(gatherer = %self.id))]
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for s in Stream::ALL {
            let me = self.clone();
            let c = cancel.clone();
            tasks.spawn(async move {
                me.run_stream(s, c).await;
                s
            });
        }
        let me = self.clone();
        let c = cancel.clone();
        let mut health = tokio::spawn(async move {
            // Health follows the streams' state.
            loop {
                me.board.gatherers[me.idx].refresh(false);
                tokio::select! {
                    _ = c.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        });
        let ended = loop {
            tokio::select! {
                r = tasks.join_next() => match r {
                    None => break None,
                    Some(_) if cancel.is_cancelled() => {}
                    Some(Ok(s)) => break Some(format!("the {} stream's task ended", s.table())),
                    Some(Err(e)) if e.is_panic() => {
                        let why = e
                            .into_panic()
                            .downcast::<String>()
                            .map(|s| *s)
                            .or_else(|p| p.downcast::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_else(|_| "no message".into());
                        break Some(format!("a stream's task panicked: {why}"));
                    }
                    Some(Err(e)) => break Some(format!("a stream's task failed: {e}")),
                },
                _ = &mut health, if !health.is_finished() => {}
            }
        };
        health.abort();
        match ended {
            Some(why) if !cancel.is_cancelled() => {
                tracing::error!(gatherer = %self.id, reason = %why, "a source task died: stopping the deduplicator (systemd restarts it; it resumes from the stored cursors)");
                tasks.abort_all();
                anyhow::bail!("source {}: {why}", self.id)
            }
            _ => Ok(()),
        }
    }

    #[tracing::instrument(name = "tail", skip_all, fields(stream = stream.table()))]
    async fn run_stream(&self, stream: Stream, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.cfg.backoff);
        let mut limit = self.cfg.page_limit;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let end = match self.check_identity(stream).await {
                Ok(instance) => {
                    self.tail(stream, instance, &mut limit, &mut backoff, &cancel)
                        .await
                }
                Err(e) => {
                    tracing::debug!(gatherer = %self.id, stream = stream.table(), error = %e, "identity check failed; retrying");
                    TailEnd::Retry
                }
            };
            self.board.gatherers[self.idx]
                .stream(stream)
                .open
                .store(false, Ordering::Release);
            match end {
                TailEnd::Cancelled => return,
                TailEnd::Retry => {
                    metrics::counter!(m::SOURCE_RECONNECTS, "gatherer" => self.id.clone())
                        .increment(1);
                    if !backoff.sleep(&cancel).await {
                        return;
                    }
                }
            }
        }
    }

    /// Asks the gatherer who it is. A different gatherer id is refused; a different instance
    /// than the cursors were stored for resets every cursor of this gatherer to 0.
    async fn check_identity(&self, stream: Stream) -> Result<Arc<str>, IdentityError> {
        let _serial = self.identity.lock().await;
        let board = &self.board.gatherers[self.idx];
        // The cursors before asking: every one of them was read from records committed before
        // this Status, so for the same database none can be above its heads (a cursor read
        // after the question could be: a Tail moves on meanwhile).
        let (asked_for, after_before) = {
            let pos = self
                .pos
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (pos.instance.clone(), pos.after)
        };
        let status = match tokio::time::timeout(
            self.cfg.connect_timeout * 2,
            self.client().status(pb::StatusRequest {}),
        )
        .await
        {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(e)) => {
                if let Some(tls) = tls_failure(&e) {
                    self.error("tls");
                    tracing::warn!(gatherer = %self.id, endpoint = %board.endpoint, error = %tls, "TLS with the gatherer failed (its certificate, our CA or its name): retrying");
                } else {
                    self.error("status");
                    tracing::debug!(gatherer = %self.id, stream = stream.table(), error = %e.message(), "gatherer status failed");
                }
                return Err(IdentityError::Status(e.code()));
            }
            Err(_) => {
                self.error("connect");
                return Err(IdentityError::Unreachable);
            }
        };
        if status.gatherer_id != self.id {
            self.error("identity");
            board.set_health(Health::WrongIdentity);
            tracing::error!(gatherer = %self.id, endpoint = %board.endpoint, answered = %status.gatherer_id, "the endpoint answers as another gatherer: not reading it (check the configuration)");
            return Err(IdentityError::WrongGatherer(status.gatherer_id));
        }
        if status.instance_id.is_empty() || status.instance_id.len() > 128 {
            self.error("identity");
            tracing::error!(gatherer = %self.id, "the gatherer reports no usable instance_id: not reading it");
            return Err(IdentityError::NoInstance);
        }
        if board.health() == Health::WrongIdentity {
            board.set_health(Health::Connecting);
        }
        let mut pos = self
            .pos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &pos.instance {
            Some(i) if same_incarnation(i, &status.instance_id) => {
                // The same database, gone back (restored from a snapshot or a backup under the
                // same instance id): its heads are below cursors it gave out. Reading on from
                // them would skip the ids it hands out again for ever; it is read from the start
                // instead, as a replaced instance is, under a new incarnation so that the stored
                // cursors are replaced, not kept by GREATEST.
                let same_asked = asked_for.as_deref() == pos.instance.as_deref();
                let behind: Vec<String> = status
                    .streams
                    .iter()
                    .filter_map(|st| {
                        let s = Stream::from_pb(st.stream)?;
                        let after = after_before[s.index()];
                        (same_asked && st.head < after)
                            .then(|| format!("{} head {} < cursor {after}", s.table(), st.head))
                    })
                    .collect();
                if !behind.is_empty() {
                    let incarnation =
                        format!("{}~{}", status.instance_id, kalshi_shared::time::now_ms());
                    tracing::error!(
                        gatherer = %self.id,
                        instance = %status.instance_id,
                        behind = ?behind,
                        "GATHERER WENT BACK (its database restored from an older copy?): its heads are below the stored cursors; reading it from the start"
                    );
                    metrics::counter!(m::INSTANCE_RESETS, "gatherer" => self.id.clone())
                        .increment(1);
                    metrics::counter!(m::HEAD_REGRESSIONS, "gatherer" => self.id.clone())
                        .increment(1);
                    pos.after = [0; Stream::ALL.len()];
                    pos.instance = Some(Arc::from(incarnation.as_str()));
                    for s in &board.streams {
                        s.reset();
                    }
                }
            }
            Some(old) => {
                tracing::error!(
                    gatherer = %self.id,
                    old_instance = %old,
                    new_instance = %status.instance_id,
                    cursors = ?pos.after,
                    "GATHERER INSTANCE CHANGED (replaced instance or empty database): resetting its cursors to 0 and reading it from the start"
                );
                metrics::counter!(m::INSTANCE_RESETS, "gatherer" => self.id.clone()).increment(1);
                pos.after = [0; Stream::ALL.len()];
                pos.instance = Some(Arc::from(status.instance_id.as_str()));
                for s in &board.streams {
                    s.reset();
                }
            }
            None => {
                tracing::info!(gatherer = %self.id, instance = %status.instance_id, "first contact with this gatherer instance");
                pos.instance = Some(Arc::from(status.instance_id.as_str()));
            }
        }
        board.set_instance(&status.instance_id);
        for s in &status.streams {
            if let Some(st) = Stream::from_pb(s.stream) {
                let b = board.stream(st);
                b.note_head(s.head);
                b.retention_ms.store(s.retention_ms, Ordering::Release);
                b.retention_known.store(true, Ordering::Release);
            }
        }
        Ok(pos
            .instance
            .clone()
            .unwrap_or_else(|| Arc::from(status.instance_id.as_str())))
    }

    fn after(&self, stream: Stream) -> i64 {
        self.pos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .after[stream.index()]
    }

    /// Moves the position if it still belongs to `instance`. False if the instance changed.
    fn advance(&self, stream: Stream, instance: &Arc<str>, to: i64) -> bool {
        let mut pos = self
            .pos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pos.instance.as_deref() != Some(&**instance) {
            return false;
        }
        let a = &mut pos.after[stream.index()];
        *a = (*a).max(to);
        true
    }

    async fn tail(
        &self,
        stream: Stream,
        instance: Arc<str>,
        limit: &mut u32,
        backoff: &mut Backoff,
        cancel: &CancellationToken,
    ) -> TailEnd {
        let table = stream.table();
        let board = self.board.gatherers[self.idx].stream(stream);
        let mut after = self.after(stream);
        let req = pb::TailRequest {
            stream: stream.to_pb() as i32,
            after,
            limit: *limit,
        };
        let mut client = self.client();
        let opened = tokio::select! {
            _ = cancel.cancelled() => return TailEnd::Cancelled,
            r = tokio::time::timeout(self.cfg.connect_timeout * 2, client.tail(req)) => r,
        };
        let mut rx = match opened {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(e)) => return self.tail_error(stream, &instance, e, limit).await,
            Err(_) => {
                self.error("connect");
                return TailEnd::Retry;
            }
        };
        board.open.store(true, Ordering::Release);
        loop {
            let msg = tokio::select! {
                _ = cancel.cancelled() => return TailEnd::Cancelled,
                m = tokio::time::timeout(self.cfg.silence_timeout, rx.message()) => m,
            };
            let page = match msg {
                Err(_) => {
                    self.error("silence");
                    tracing::warn!(gatherer = %self.id, stream = table, timeout = ?self.cfg.silence_timeout, "Tail silent (not even a heartbeat): reconnecting");
                    return TailEnd::Retry;
                }
                Ok(Ok(Some(p))) => p,
                Ok(Ok(None)) => {
                    tracing::info!(gatherer = %self.id, stream = table, "Tail ended by the gatherer: reconnecting");
                    return TailEnd::Retry;
                }
                Ok(Err(e)) => return self.tail_error(stream, &instance, e, limit).await,
            };
            backoff.reset();
            kalshi_shared::failpoint::hit("deduplicator::source::page").await;
            board.note_head(page.head);
            // The gatherer's word that nothing lies at or below `through` beyond what it sent:
            // ids it never used are passed with a cursor-only commit, never waited on.
            let through = page.through.min(page.head);
            if page.records.is_empty() {
                if through > after {
                    let out = Page {
                        gatherer: self.idx,
                        instance_id: instance.clone(),
                        records: Vec::new(),
                        last_cursor: Some(through),
                    };
                    let sent = tokio::select! {
                        _ = cancel.cancelled() => return TailEnd::Cancelled,
                        r = self.sinks[stream.index()].send(out) => r,
                    };
                    if sent.is_err() {
                        return TailEnd::Cancelled;
                    }
                    after = through;
                    board.read.fetch_max(after, Ordering::AcqRel);
                    if !self.advance(stream, &instance, after) {
                        return TailEnd::Retry;
                    }
                }
                continue;
            }
            let n = page.records.len();
            metrics::counter!(m::RECORDS_READ, "gatherer" => self.id.clone(), "stream" => table)
                .increment(n as u64);
            let mut items = Vec::with_capacity(n);
            for r in page.records {
                if r.cursor <= after {
                    // A gatherer must never send a cursor twice or backwards: skip it (it is
                    // at or below what this stream already passed) and say so.
                    self.error("cursor");
                    metrics::counter!(m::INVALID_RECORDS, "gatherer" => self.id.clone())
                        .increment(1);
                    tracing::warn!(gatherer = %self.id, stream = table, cursor = r.cursor, after, "record out of cursor order skipped");
                    continue;
                }
                after = r.cursor;
                let invalid = records::validate(stream, &r).err().map(|e| e.0);
                if let Some(why) = &invalid {
                    metrics::counter!(m::INVALID_RECORDS, "gatherer" => self.id.clone())
                        .increment(1);
                    tracing::warn!(gatherer = %self.id, stream = table, cursor = r.cursor, error = %why, "malformed record: it goes to quarantine");
                }
                items.push(Item { record: r, invalid });
            }
            // Past the page's last record up to `through` nothing else exists.
            let moved = through > after;
            after = after.max(through);
            if items.is_empty() && !moved {
                continue;
            }
            let out = Page {
                gatherer: self.idx,
                instance_id: instance.clone(),
                records: items,
                last_cursor: Some(after),
            };
            let sent = tokio::select! {
                _ = cancel.cancelled() => return TailEnd::Cancelled,
                r = self.sinks[stream.index()].send(out) => r,
            };
            if sent.is_err() {
                return TailEnd::Cancelled;
            }
            board.read.fetch_max(after, Ordering::AcqRel);
            if !self.advance(stream, &instance, after) {
                return TailEnd::Retry;
            }
            // A page that came through whole lets the page size grow back.
            *limit = (*limit).saturating_mul(2).min(self.cfg.page_limit);
        }
    }

    async fn tail_error(
        &self,
        stream: Stream,
        instance: &Arc<str>,
        e: tonic::Status,
        limit: &mut u32,
    ) -> TailEnd {
        let table = stream.table();
        let msg = e.message().to_owned();
        if msg.contains("message length too large")
            || e.code() == tonic::Code::ResourceExhausted && msg.contains("message")
        {
            self.error("oversize");
            let smaller = (*limit / 4).max(1);
            tracing::warn!(gatherer = %self.id, stream = table, limit = *limit, next_limit = smaller, max_bytes = self.cfg.max_message_bytes, error = %msg, "gatherer reply over the message limit: retrying with smaller pages");
            *limit = smaller;
            return TailEnd::Retry;
        }
        if e.code() == tonic::Code::OutOfRange {
            let time = |k: &str| {
                e.metadata()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i64>().ok())
            };
            let span = time(kalshi_proto::DROPPED_FROM_MS).zip(time(kalshi_proto::DROPPED_TO_MS));
            return self.retention_overrun(stream, instance, &msg, span).await;
        }
        self.error("tail");
        tracing::warn!(gatherer = %self.id, stream = table, code = ?e.code(), error = %msg, "Tail failed: reconnecting");
        TailEnd::Retry
    }

    /// The gatherer dropped records this deduplicator had not read yet (retention): declare
    /// the hole as a gap of this gatherer in production, then go on from its oldest record.
    /// The gap spans the exchange times the gatherer says the dropped records lie in, never
    /// more; a gatherer that cannot say (older than this field) gets a gap up to now.
    async fn retention_overrun(
        &self,
        stream: Stream,
        instance: &Arc<str>,
        msg: &str,
        span: Option<(i64, i64)>,
    ) -> TailEnd {
        self.error("out_of_range");
        let status = match tokio::time::timeout(
            self.cfg.connect_timeout * 2,
            self.client().status(pb::StatusRequest {}),
        )
        .await
        {
            Ok(Ok(s)) => s.into_inner(),
            _ => return TailEnd::Retry,
        };
        if !same_incarnation(instance, &status.instance_id) {
            return TailEnd::Retry;
        }
        let Some(oldest) = status
            .streams
            .iter()
            .find(|s| s.stream == stream.to_pb() as i32)
            .map(|s| s.oldest)
        else {
            return TailEnd::Retry;
        };
        let after = self.after(stream);
        if oldest <= after + 1 {
            tracing::warn!(gatherer = %self.id, stream = stream.table(), error = %msg, "OUT_OF_RANGE but the oldest record is within reach: retrying");
            return TailEnd::Retry;
        }
        let now = kalshi_shared::time::now_ms();
        let (from_ms, to_ms) = span.unwrap_or((0, now));
        tracing::error!(gatherer = %self.id, stream = stream.table(), from_cursor = after + 1, to_cursor = oldest - 1, from_ms, to_ms, "records were dropped by the gatherer's retention before they were merged: declaring a gap over their times and continuing from its oldest record");
        metrics::counter!(m::RETENTION_OVERRUNS, "gatherer" => self.id.clone()).increment(1);
        let gap = pb::Record {
            cursor: 0,
            body: Some(pb::record::Body::Gap(pb::Gap {
                // Negative: never collides with the gatherer's own gap ids.
                id: -((stream.index() as i64 + 1) * 1_000_000_000_000 + after + 1),
                stream: stream.to_pb() as i32,
                market_ticker: String::new(),
                from_ms,
                to_ms,
                reason: "dedup_retention_overrun".into(),
                detail: format!(
                    "cursors {}..={} of {} were dropped by the gatherer's retention before the deduplicator merged them; {}",
                    after + 1,
                    oldest - 1,
                    stream.table(),
                    if span.is_some() {
                        "the gap spans the times the gatherer says they lie in"
                    } else {
                        "the gatherer did not say their times"
                    }
                ),
            })),
        };
        let page = Page {
            gatherer: self.idx,
            instance_id: instance.clone(),
            records: vec![Item {
                record: gap,
                invalid: None,
            }],
            last_cursor: None,
        };
        if self.sinks[Stream::Gaps.index()].send(page).await.is_err() {
            return TailEnd::Cancelled;
        }
        self.advance(stream, instance, oldest - 1);
        TailEnd::Retry
    }
}

/// The TLS error behind a failed call, if that is what failed: a handshake the gatherer or
/// this side refused (unknown CA, expired certificate, wrong name, no client certificate).
fn tls_failure(status: &tonic::Status) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(t.to_string());
        }
        cur = e.source();
    }
    None
}
