//! One WebSocket connection: the transport (connect, session loop, pings, writes, reconnect)
//! and the session state. The rest of a connection's work lives beside it:
//! - [`subscriptions`]: the subscription protocol (subscribe, update, refusals, which markets);
//! - [`sequencer`]: `seq` checking and the open gaps it declares when they close;
//! - [`route`]: frames to rows (books, trades, tickers, lifecycle).
//!
//! Words: a *gap* is a window declared missing (a `gaps` row, with a [`GapReason`]); it is
//! *open* from the moment data may be missing until a snapshot or a reconnect closes it. A
//! *trade hole* is a trade window handed to the backfill.
//!
//! It must never route a frame whose `seq` it has not checked, apply a delta to an invalid
//! book, or let an open gap close without declaring it.

mod route;
mod sequencer;
mod subscriptions;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use kalshi_shared::retry::Backoff;
use kalshi_shared::wire::Side;
use kalshi_shared::wire::ws::{
    self, Channel, Frame, FrameBody, OrderbookDeltaMsg, OrderbookSnapshotMsg, SubscribeParams,
    TickerMsg, TradeMsg, command, error_code, parse_frame_raw,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::book::{MarketBook, Splice};
use super::{LogLimiter, OpenHole, Shared, TradeHole};
use crate::health::ConnState;
use crate::metrics as m;
use crate::registry::Note;
use crate::store::Stream;
use crate::store::rows::{
    DeltaRow, GapReason, GapRow, LifecycleRow, Origin, SnapshotRow, Source, TickerRow, TradeRow,
    UnknownRow,
};
use kalshi_shared::identity::{lifecycle_hash, raw_content, ticker_hash};
use route::{store_snapshot, unstored};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The connection (of `n`) that carries a market: a stable FNV-1a hash of its ticker.
pub fn shard_of(ticker: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ticker.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}

#[derive(Debug, Clone)]
enum Pending {
    Subscribe {
        channel: Channel,
        markets: Vec<String>,
    },
    Update {
        channel: Channel,
        action: &'static str,
        markets: Vec<String>,
    },
}

/// Why a session ended.
enum Outcome {
    Shutdown,
    Lost(Lost),
}

/// Why a connection attempt failed or a session ended (logged; the connection reconnects).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Lost {
    #[error("ws_url is not a WebSocket request: {0}")]
    Url(String),
    #[error("cannot sign the upgrade: {0}")]
    Sign(String),
    #[error("a signing header is not a valid header value")]
    Header,
    #[error("upgrade refused with HTTP {0}")]
    Refused(u16),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("{0}")]
    Socket(String),
    #[error("server closed the connection: {0}")]
    Closed(String),
    #[error("connection closed")]
    Eof,
    #[error("nothing received for {0:?} (half-open socket?)")]
    Silent(Duration),
    #[error("command {id} ({what}) unanswered for {after:?}")]
    Unanswered {
        id: u64,
        what: String,
        after: Duration,
    },
    #[error("{what} failed: {error}")]
    Write { what: &'static str, error: String },
    #[error("{0} could not be written (socket stalled)")]
    Stalled(&'static str),
    #[error("asynchronous error {code} ({msg}) without a subscription id")]
    Orphan { code: i64, msg: String },
}

/// State of one connection run (nothing survives a reconnect).
struct Session {
    ws: Ws,
    epoch: i64,
    next_id: u64,
    pending: HashMap<u64, (Pending, Instant)>,
    sid_channel: HashMap<u64, Channel>,
    channel_sid: HashMap<Channel, u64>,
    seqs: HashMap<u64, u64>,
    books: HashMap<String, MarketBook>,
    /// Shard markets this run subscribes on `orderbook_delta` and `ticker`.
    markets: BTreeSet<String>,
    /// Markets waiting for a channel's sid before they can be added.
    queued: HashMap<Channel, Vec<String>>,
    /// Commands refused for rate (27), retried at the instant given.
    retry_later: Vec<(Instant, Pending)>,
    out: Vec<String>,
    started: Instant,
    /// Books of markets just unsubscribed, kept until the given instant: deltas the exchange
    /// published before the unsubscription (or the market's close) may still be in flight on
    /// this connection, and are real.
    leaving: Vec<(Instant, String)>,
}

/// How long a removed market's book keeps accepting deltas already in flight.
const LEAVE_GRACE: Duration = Duration::from_secs(10);

impl Session {
    fn send(&mut self, p: Pending) {
        let id = self.next_id;
        self.next_id += 1;
        let text = match &p {
            Pending::Subscribe { channel, markets } => command::subscribe(
                id,
                SubscribeParams {
                    channels: Some(vec![channel.as_str().to_owned()]),
                    market_tickers: (!markets.is_empty()).then(|| markets.clone()),
                    use_yes_price: (*channel == Channel::OrderbookDelta).then_some(false),
                    ..Default::default()
                },
            ),
            Pending::Update {
                channel,
                action,
                markets,
            } => {
                let sid = self.channel_sid.get(channel).copied().unwrap_or(0);
                command::update_subscription(id, sid, action, markets.clone())
            }
        };
        self.out.push(text);
        self.pending.insert(id, (p, Instant::now()));
    }

    fn has_pending_subscribe(&self, channel: Channel) -> bool {
        self.pending
            .values()
            .any(|(p, _)| matches!(p, Pending::Subscribe { channel: c, .. } if *c == channel))
    }
}

pub struct Connection {
    k: usize,
    shared: Arc<Shared>,
    limiter: Arc<LogLimiter>,
    /// Markets whose deltas may be missing since (ms, reason), until a snapshot arrives.
    holes: HashMap<String, (i64, GapReason)>,
    ticker_hole: Option<(i64, GapReason)>,
    trade_hole: Option<(i64, GapReason)>,
    lifecycle_hole: Option<(i64, GapReason)>,
    /// Markets the exchange refused (unknown market, subscription limit).
    rejected: HashSet<String>,
    /// Receive time of the last frame processed in order.
    last_good_ms: i64,
    /// Exchange time of the last trade this connection received: a trade hole reaches back
    /// to it even when the exchange clock lags the wall clock (the boundary rule).
    last_trade_ts: Option<i64>,
    connected_once: bool,
    /// The downtime before this start, opened as a hole for the first markets subscribed.
    startup_hole: Option<i64>,
    /// Whether the first markets of this run have been taken (any market added after them
    /// was learned of late, unless this connection already held it).
    first_batch_done: bool,
    /// Markets this connection has held in this run and not left since (a reconnect
    /// resubscribes them under its own disconnect holes, not late ones).
    held: HashSet<String>,
    /// When this connection left a market (a late hole never reaches back over what it held).
    left_at: HashMap<String, i64>,
    /// Markets subscribed late whose tickers may be missing since (ms), until the ticker
    /// channel acknowledges them.
    late_tickers: HashMap<String, i64>,
    /// This process's start: a late hole never reaches back before it on a first run.
    started_ms: i64,
    /// The open holes last published (`open_holes`).
    published: Vec<OpenHole>,
    /// Markets of a lost session the stream-wide ticker hole covers (declared for them too,
    /// whether or not they are still collected when the ticker channel is back).
    ticker_hole_markets: BTreeSet<String>,
}

/// Where in `every` a market's periodic snapshot falls: fixed per ticker, spread evenly.
fn phase_of(ticker: &str, every: Duration) -> Duration {
    let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
    let h = ticker.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    Duration::from_millis(h % ms)
}

fn now_ms() -> i64 {
    kalshi_shared::time::now_ms()
}

impl Connection {
    pub fn new(k: usize, shared: Arc<Shared>, limiter: Arc<LogLimiter>) -> Self {
        // The downtime reaches back over what a hole open at the kill may have covered but
        // not yet recorded: its start lies at most the silence timeout, a tick and one
        // `open_holes` write period before the newest stored record.
        let slack =
            i64::try_from((shared.cfg.silence_timeout + Duration::from_secs(2)).as_millis())
                .unwrap_or(i64::MAX);
        let startup = shared.startup_from.map(|a| a.saturating_sub(slack));
        let inherited = shared.open_holes.take_for(k, shared.cfg.connections);
        let mut c = Self {
            k,
            limiter,
            holes: HashMap::new(),
            ticker_hole: startup.map(|f| (f, GapReason::GathererDown)),
            trade_hole: None,
            lifecycle_hole: if k == 0 {
                startup.map(|f| (f, GapReason::GathererDown))
            } else {
                None
            },
            rejected: HashSet::new(),
            last_good_ms: now_ms(),
            last_trade_ts: None,
            connected_once: false,
            startup_hole: startup,
            first_batch_done: false,
            held: HashSet::new(),
            left_at: HashMap::new(),
            late_tickers: HashMap::new(),
            started_ms: now_ms(),
            published: Vec::new(),
            ticker_hole_markets: BTreeSet::new(),
            shared,
        };
        // Holes the previous run left open stay open until they close as usual (or, for a
        // market no longer collected, at the first subscription).
        let earliest = |slot: &mut Option<(i64, GapReason)>, from: i64, reason: GapReason| {
            if slot.is_none_or(|(f, _)| from < f) {
                *slot = Some((from, reason));
            }
        };
        for h in inherited {
            match (h.stream, h.market.is_empty()) {
                (Stream::OrderbookDeltas, false) => {
                    c.holes.insert(h.market, (h.from_ms, h.reason));
                }
                (Stream::Tickers, false) => {
                    c.late_tickers.insert(h.market, h.from_ms);
                }
                (Stream::Tickers, true) => earliest(&mut c.ticker_hole, h.from_ms, h.reason),
                (Stream::Lifecycle, true) => earliest(&mut c.lifecycle_hole, h.from_ms, h.reason),
                (Stream::Trades, true) => earliest(&mut c.trade_hole, h.from_ms, h.reason),
                _ => tracing::warn!(?h, "an open hole of an unexpected kind: skipped"),
            }
        }
        c.publish_open_holes();
        c
    }

    fn global(&self) -> bool {
        self.k == 0
    }

    fn health(&self) -> &crate::health::ConnHealth {
        &self.shared.health.conns[self.k]
    }

    #[tracing::instrument(skip_all, fields(conn = self.k))]
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.shared.cfg.backoff);
        self.shared.health.set_conn(self.k, ConnState::Connecting);
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let ws = tokio::select! {
                _ = cancel.cancelled() => break,
                r = self.connect() => r,
            };
            match ws {
                Err(e) => {
                    metrics::counter!(m::WS_ERRORS, "type" => "connect").increment(1);
                    self.shared.health.set_conn(self.k, ConnState::Down);
                    if let Some(suppressed) = self.limiter.check("connect") {
                        tracing::warn!(error = %e, suppressed, "websocket connect failed, retrying");
                    }
                }
                Ok(ws) => {
                    let epoch = self
                        .shared
                        .epochs
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    if self.connected_once {
                        metrics::counter!(m::WS_RECONNECTS).increment(1);
                    }
                    self.connected_once = true;
                    self.health().reconnected(epoch);
                    let started = Instant::now();
                    let outcome = self.session(ws, epoch, &cancel).await;
                    self.shared.health.set_conn(self.k, ConnState::Down);
                    self.health().set_markets(0);
                    match outcome {
                        Outcome::Shutdown => break,
                        Outcome::Lost(reason) => {
                            tracing::warn!(reason = %reason, "websocket lost, reconnecting");
                        }
                    }
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff.reset();
                    }
                }
            }
            // The holes this session left open are recorded before the backoff (which may
            // last as long as the exchange refuses).
            self.publish_open_holes();
            if !backoff.sleep(&cancel).await {
                break;
            }
        }
        self.close_holes_at_shutdown();
        // Every hole is declared now: none is left for the next start.
        self.publish_open_holes();
        self.shared.health.set_conn(self.k, ConnState::Down);
    }

    async fn connect(&self) -> Result<Ws, Lost> {
        let cfg = &self.shared.cfg;
        let mut req = cfg
            .ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| Lost::Url(e.to_string()))?;
        if let Some(signer) = &cfg.signer {
            let h = signer
                .current()
                .sign("GET", ws::WS_PATH)
                .map_err(|e| Lost::Sign(e.to_string()))?;
            for (k, v) in h.pairs() {
                let value = v.parse().map_err(|_| Lost::Header)?;
                req.headers_mut().insert(k, value);
            }
        }
        let ws_cfg = WebSocketConfig::default()
            .max_message_size(Some(cfg.max_frame_bytes))
            .max_frame_size(Some(cfg.max_frame_bytes));
        let connector = cfg
            .ws_url
            .starts_with("wss://")
            .then(|| Connector::Rustls(cfg.tls.clone()));
        let fut =
            tokio_tungstenite::connect_async_tls_with_config(req, Some(ws_cfg), true, connector);
        match tokio::time::timeout(cfg.connect_timeout, fut).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                Err(Lost::Refused(resp.status().as_u16()))
            }
            Ok(Err(e)) => Err(Lost::Socket(e.to_string())),
            Err(_) => Err(Lost::ConnectTimeout(cfg.connect_timeout)),
        }
    }

    async fn session(&mut self, ws: Ws, epoch: i64, cancel: &CancellationToken) -> Outcome {
        let mut s = Session {
            ws,
            epoch,
            next_id: 1,
            pending: HashMap::new(),
            sid_channel: HashMap::new(),
            channel_sid: HashMap::new(),
            seqs: HashMap::new(),
            books: HashMap::new(),
            markets: BTreeSet::new(),
            queued: HashMap::new(),
            retry_later: Vec::new(),
            out: Vec::new(),
            started: Instant::now(),
            leaving: Vec::new(),
        };
        let outcome = self.session_loop(&mut s, cancel).await;
        for b in s.books.values_mut() {
            unstored("connection_ended", b.invalidate());
        }
        if matches!(outcome, Outcome::Lost(_)) {
            self.mark_disconnect(&s.markets);
        }
        tracing::debug!(epoch = s.epoch, lasted = ?s.started.elapsed(), "session ended");
        outcome
    }

    async fn session_loop(&mut self, s: &mut Session, cancel: &CancellationToken) -> Outcome {
        let cfg = self.shared.cfg.clone();
        let mut desired = self.shared.desired.clone();
        desired.mark_changed();
        if self.global() {
            s.send(Pending::Subscribe {
                channel: Channel::Trade,
                markets: vec![],
            });
            s.send(Pending::Subscribe {
                channel: Channel::MarketLifecycleV2,
                markets: vec![],
            });
        }
        let mut tick = tokio::time::interval(cfg.ping_interval.min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ping = Instant::now();
        let mut last_rx = Instant::now();
        loop {
            if let Err(e) = self.flush_out(s).await {
                return Outcome::Lost(e);
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), s.ws.close(None)).await;
                    return Outcome::Shutdown;
                }
                msg = s.ws.next() => {
                    last_rx = Instant::now();
                    match msg {
                        Some(Ok(Message::Text(text))) => {
                            if let Err(e) = self.on_text(s, text.as_str()) {
                                return Outcome::Lost(e);
                            }
                        }
                        Some(Ok(Message::Binary(_))) => self.bad_frame("binary", "binary frame"),
                        Some(Ok(Message::Close(frame))) => {
                            return Outcome::Lost(Lost::Closed(format!("{frame:?}")));
                        }
                        Some(Ok(_)) => {} // Ping (answered by the protocol layer), Pong
                        Some(Err(e)) => {
                            use tokio_tungstenite::tungstenite::Error as WsError;
                            let kind = match e {
                                WsError::Capacity(_) => "oversize",
                                WsError::Protocol(_) => "protocol",
                                WsError::Utf8(_) => "invalid_utf8",
                                _ => "disconnect",
                            };
                            metrics::counter!(m::WS_ERRORS, "type" => kind).increment(1);
                            return Outcome::Lost(Lost::Socket(e.to_string()));
                        }
                        None => {
                            metrics::counter!(m::WS_ERRORS, "type" => "disconnect").increment(1);
                            return Outcome::Lost(Lost::Eof);
                        }
                    }
                }
                changed = desired.changed() => {
                    if changed.is_err() {
                        return Outcome::Shutdown;
                    }
                    let set = desired.borrow_and_update().clone();
                    self.sync_markets(s, &set);
                }
                _ = tick.tick() => {
                    if last_rx.elapsed() > cfg.silence_timeout {
                        metrics::counter!(m::WS_ERRORS, "type" => "stall").increment(1);
                        return Outcome::Lost(Lost::Silent(last_rx.elapsed()));
                    }
                    if let Some((id, (p, at))) = s.pending.iter().find(|(_, (_, at))| at.elapsed() > cfg.command_timeout) {
                        metrics::counter!(m::WS_ERRORS, "type" => "command_timeout").increment(1);
                        return Outcome::Lost(Lost::Unanswered { id: *id, what: format!("{p:?}"), after: at.elapsed() });
                    }
                    let now = Instant::now();
                    let due: Vec<Pending> = {
                        let (due, keep): (Vec<_>, Vec<_>) = s.retry_later.drain(..).partition(|(t, _)| *t <= now);
                        s.retry_later = keep;
                        due.into_iter().map(|(_, p)| p).collect()
                    };
                    for p in due {
                        s.send(p);
                    }
                    self.publish_open_holes();
                    // Pending snapshots whose boundary became certain by quiet (`book.rs`).
                    for (t, b) in s.books.iter_mut() {
                        if let Some(splice) = b.on_tick(last_rx, cfg.snapshot_hold) {
                            store_snapshot(&self.shared, t, b, splice);
                        }
                        // A quiet book whose last row was dropped is stored again too.
                        let origin = Origin { received_ms: now_ms(), conn_epoch: s.epoch, sid: 0, seq: 0 };
                        b.rearm(origin, now);
                        // And every `ws.snapshot_every`, a book that changed (each market at its
                        // own phase, so a connection's books do not all come due at once).
                        let sid = s.channel_sid.get(&Channel::OrderbookDelta).copied().unwrap_or(0);
                        let origin = Origin {
                            received_ms: origin.received_ms,
                            conn_epoch: s.epoch,
                            sid,
                            seq: s.seqs.get(&sid).copied().unwrap_or(0),
                        };
                        if b.periodic(origin, now, cfg.snapshot_every, phase_of(t, cfg.snapshot_every)) {
                            metrics::counter!(m::PERIODIC_SNAPSHOTS).increment(1);
                        }
                    }
                    let leaving = std::mem::take(&mut s.leaving);
                    for (until, t) in leaving {
                        if until > now {
                            s.leaving.push((until, t));
                        } else if !s.markets.contains(&t) {
                            unstored("left", s.books.remove(&t).and_then(|mut b| b.invalidate()));
                            // A hole opened during the grace period ends here, declared.
                            self.close_hole(&t, now_ms(), "market unsubscribed before a fresh snapshot");
                        }
                    }
                    if last_ping.elapsed() >= cfg.ping_interval {
                        last_ping = Instant::now();
                        let send = s.ws.send(Message::Ping(Vec::new().into()));
                        match tokio::time::timeout(cfg.command_timeout, send).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Outcome::Lost(Lost::Write { what: "ping", error: e.to_string() }),
                            Err(_) => return Outcome::Lost(Lost::Stalled("ping")),
                        }
                    }
                }
            }
        }
    }

    async fn flush_out(&mut self, s: &mut Session) -> Result<(), Lost> {
        if s.out.is_empty() {
            return Ok(());
        }
        let timeout = self.shared.cfg.command_timeout;
        let msgs: Vec<String> = s.out.drain(..).collect();
        let ws = &mut s.ws;
        let fut = async {
            for m in msgs {
                ws.feed(Message::text(m)).await?;
            }
            ws.flush().await
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Lost::Write {
                what: "sending commands",
                error: e.to_string(),
            }),
            Err(_) => Err(Lost::Stalled("commands")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        let n = 4;
        let mut counts = [0usize; 4];
        for i in 0..1000 {
            let t = format!("KXHIGHNY-26NOV22-B{i}.5");
            let s = shard_of(&t, n);
            assert_eq!(s, shard_of(&t, n));
            counts[s] += 1;
        }
        assert!(counts.iter().all(|c| *c > 180), "{counts:?}");
        assert_eq!(shard_of("X", 1), 0);
    }
}
