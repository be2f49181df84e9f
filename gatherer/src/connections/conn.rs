//! One WebSocket connection: connect, subscribe, check seq, route frames, declare holes,
//! reconnect. See the module above for the rules it follows.
//!
//! It must never route a frame whose `seq` it has not checked, apply a delta to an invalid
//! book, or let a hole close without declaring it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use kalshi_shared::retry::Backoff;
use kalshi_shared::wire::Side;
use kalshi_shared::wire::ws::{
    self, Channel, Frame, FrameBody, OrderbookDeltaMsg, OrderbookSnapshotMsg, SubscribeParams,
    TickerMsg, TradeMsg, command, error_code, parse_frame,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::book::MarketBook;
use super::{LogLimiter, Shared, TradeHole};
use crate::health::ConnState;
use crate::metrics as m;
use crate::registry::Note;
use crate::store::Stream;
use crate::store::rows::{
    DeltaRow, GapRow, LifecycleRow, Origin, SnapshotRow, Source, TickerRow, TradeRow,
};
use kalshi_shared::identity::{lifecycle_hash, ticker_hash};

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
    holes: HashMap<String, (i64, &'static str)>,
    ticker_hole: Option<(i64, &'static str)>,
    trade_hole: Option<(i64, &'static str)>,
    lifecycle_hole: Option<(i64, &'static str)>,
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
}

fn now_ms() -> i64 {
    kalshi_shared::time::now_ms()
}

fn levels(msg: &OrderbookSnapshotMsg, side: Side) -> Result<Vec<(i64, i64)>, ws::WireError> {
    Ok(msg
        .levels(side)?
        .into_iter()
        .map(|(p, q)| (p.raw(), q.raw()))
        .collect())
}

impl Connection {
    pub fn new(k: usize, shared: Arc<Shared>, limiter: Arc<LogLimiter>) -> Self {
        let startup = shared.startup_from;
        Self {
            k,
            limiter,
            holes: HashMap::new(),
            ticker_hole: startup.map(|f| (f, "gatherer_down")),
            trade_hole: None,
            lifecycle_hole: if k == 0 {
                startup.map(|f| (f, "gatherer_down"))
            } else {
                None
            },
            rejected: HashSet::new(),
            last_good_ms: now_ms(),
            last_trade_ts: None,
            connected_once: false,
            startup_hole: startup,
            shared,
        }
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
            if !backoff.sleep(&cancel).await {
                break;
            }
        }
        self.close_holes_at_shutdown();
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
                            let kind = match e {
                                tokio_tungstenite::tungstenite::Error::Capacity(_) => "oversize",
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
                    let leaving = std::mem::take(&mut s.leaving);
                    for (until, t) in leaving {
                        if until > now {
                            s.leaving.push((until, t));
                        } else if !s.markets.contains(&t) {
                            s.books.remove(&t);
                            // A hole opened during the grace period ends here, declared.
                            if let Some((from, reason)) = self.holes.remove(&t) {
                                self.gap(
                                    Stream::OrderbookDeltas,
                                    Some(&t),
                                    from,
                                    now_ms(),
                                    reason,
                                    "market unsubscribed before a fresh snapshot".into(),
                                );
                            }
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

    fn bad_frame(&self, label: &'static str, detail: &str) {
        metrics::counter!(m::WS_BAD_FRAMES, "type" => label).increment(1);
        metrics::counter!(m::WS_ERRORS, "type" => "parse").increment(1);
        if let Some(suppressed) = self.limiter.check(label) {
            tracing::warn!(kind = label, detail = %detail.chars().take(200).collect::<String>(), suppressed, "frame does not parse; counted and skipped");
        }
    }

    fn origin(&self, s: &Session, frame: &Frame, received_ms: i64) -> Origin {
        Origin {
            received_ms,
            conn_epoch: s.epoch,
            sid: frame.sid.unwrap_or(0),
            seq: frame.seq.unwrap_or(0),
        }
    }

    fn gap(
        &self,
        stream: Stream,
        market: Option<&str>,
        from_ms: i64,
        to_ms: i64,
        reason: &'static str,
        detail: String,
    ) {
        let margin = self.shared.cfg.gap_margin_ms;
        metrics::counter!(m::GAPS_DECLARED, "reason" => reason).increment(1);
        self.shared.health.gap_declared();
        self.shared.sinks.gaps.push(GapRow {
            stream,
            market_ticker: market.map(str::to_owned),
            from_ms: from_ms - margin,
            to_ms: to_ms + margin,
            reason,
            detail,
        });
    }

    // -----------------------------------------------------------------------------------------
    // Frames
    // -----------------------------------------------------------------------------------------

    fn on_text(&mut self, s: &mut Session, text: &str) -> Result<(), Lost> {
        let received = now_ms();
        let frame = match parse_frame(text) {
            Ok(f) => f,
            Err(e) => {
                self.bad_frame(e.label(), &e.to_string());
                return Ok(());
            }
        };
        let channel_label = frame_channel(&frame.body);
        metrics::counter!(m::WS_MESSAGES, "channel" => channel_label).increment(1);
        // seq before routing: any frame with a seq on a sid we track.
        if let (Some(sid), Some(seq)) = (frame.sid, frame.seq)
            && let Some(&channel) = s.sid_channel.get(&sid)
        {
            let expected = s.seqs.get(&sid).map_or(1, |l| l + 1);
            if seq != expected {
                self.seq_gap(s, sid, channel, expected, seq, received);
            }
            s.seqs.insert(sid, seq);
        }
        let origin = self.origin(s, &frame, received);
        let sid = frame.sid;
        match frame.body {
            FrameBody::Subscribed(sub) => {
                self.on_subscribed(s, frame.id, &sub.channel, sub.sid, received)
            }
            FrameBody::Ok(_) | FrameBody::Unsubscribed | FrameBody::SubscriptionList(_) => {
                if let Some(id) = frame.id {
                    s.pending.remove(&id);
                }
            }
            FrameBody::Error(e) => return self.on_error(s, frame.id, sid, e),
            FrameBody::OrderbookSnapshot(snap) => self.on_snapshot(s, snap, origin, received),
            FrameBody::OrderbookDelta(d) => self.on_delta(s, d, origin, received),
            FrameBody::Trade(t) => self.on_trade(t, origin),
            FrameBody::Ticker(t) => self.on_ticker(s, t, origin),
            FrameBody::MarketLifecycle(l) => {
                let (body, hash) = lifecycle_hash(&l);
                let occurrence = self.shared.lifecycle_seen.next("market", &hash);
                self.shared.sinks.lifecycle.push(LifecycleRow {
                    kind: "market",
                    ticker: l.market_ticker.clone(),
                    event_type: l.event_type.clone(),
                    body,
                    content_hash: hash,
                    occurrence,
                    origin,
                });
                self.note(Note::Market {
                    ticker: l.market_ticker,
                    event_type: l.event_type,
                });
            }
            FrameBody::EventLifecycle(e) => {
                let (body, hash) = lifecycle_hash(&e);
                let occurrence = self.shared.lifecycle_seen.next("event", &hash);
                self.shared.sinks.lifecycle.push(LifecycleRow {
                    kind: "event",
                    ticker: e.event_ticker.clone(),
                    event_type: "event_lifecycle".into(),
                    body,
                    content_hash: hash,
                    occurrence,
                    origin,
                });
                self.note(Note::Event {
                    ticker: e.event_ticker,
                });
            }
            FrameBody::Unknown(kind) => {
                self.bad_frame("unknown_type", &kind);
                return Ok(());
            }
        }
        self.last_good_ms = received;
        Ok(())
    }

    fn note(&self, note: Note) {
        if self.shared.notes.try_send(note).is_err() {
            // The registry is behind; a resync makes up for whatever it did not hear.
            let _ = self.shared.notes.try_send(Note::Resync);
        }
    }

    fn seq_gap(
        &mut self,
        s: &mut Session,
        sid: u64,
        channel: Channel,
        expected: u64,
        got: u64,
        now: i64,
    ) {
        metrics::counter!(m::SEQ_GAPS).increment(1);
        if let Some(suppressed) = self.limiter.check("seq_gap") {
            tracing::warn!(sid, channel = %channel, expected, got, suppressed, "sequence gap");
        }
        let from = self.last_good_ms;
        match channel {
            Channel::OrderbookDelta => {
                // Markets in their leaving grace share the sid: their books are broken too.
                // They get no fresh snapshot; their hole is declared when the grace ends.
                for (_, mk) in &s.leaving {
                    if let Some(b) = s.books.get_mut(mk) {
                        b.invalidate();
                    }
                    self.holes.entry(mk.clone()).or_insert((from, "seq_gap"));
                }
                let markets: Vec<String> = s.markets.iter().cloned().collect();
                for mk in &markets {
                    if let Some(b) = s.books.get_mut(mk) {
                        b.invalidate();
                    }
                    self.holes.entry(mk.clone()).or_insert((from, "seq_gap"));
                }
                metrics::counter!(m::RESNAPSHOTS).increment(markets.len() as u64);
                let batch = self.shared.cfg.subscribe_batch;
                for chunk in markets.chunks(batch) {
                    s.send(Pending::Update {
                        channel,
                        action: ws::action::GET_SNAPSHOT,
                        markets: chunk.to_vec(),
                    });
                }
            }
            Channel::Trade => self.shared.holes.push(TradeHole {
                from_ms: self.last_trade_ts.map_or(from, |t| t.min(from))
                    - self.shared.cfg.gap_margin_ms,
                to_ms: now + self.shared.cfg.gap_margin_ms,
                reason: "seq_gap",
            }),
            Channel::Ticker => {
                for mk in &s.markets {
                    self.gap(
                        Stream::Tickers,
                        Some(mk),
                        from,
                        now,
                        "seq_gap",
                        format!("sid {sid}: expected seq {expected}, got {got}"),
                    );
                }
            }
            _ => {
                self.gap(
                    Stream::Lifecycle,
                    None,
                    from,
                    now,
                    "seq_gap",
                    format!("sid {sid}: expected seq {expected}, got {got}"),
                );
                self.note(Note::Resync);
            }
        }
    }

    fn on_subscribed(
        &mut self,
        s: &mut Session,
        id: Option<u64>,
        channel: &str,
        sid: u64,
        now: i64,
    ) {
        let Some(channel) = Channel::parse(channel) else {
            return;
        };
        if let Some(id) = id {
            s.pending.remove(&id);
        }
        s.sid_channel.insert(sid, channel);
        s.channel_sid.insert(channel, sid);
        s.seqs.remove(&sid);
        match channel {
            Channel::Trade => {
                if let Some((from, reason)) = self.trade_hole.take() {
                    let from = self.last_trade_ts.map_or(from, |t| t.min(from));
                    let margin = self.shared.cfg.gap_margin_ms;
                    self.shared.holes.push(TradeHole {
                        from_ms: from - margin,
                        to_ms: now + margin,
                        reason,
                    });
                }
            }
            Channel::MarketLifecycleV2 => {
                if let Some((from, reason)) = self.lifecycle_hole.take() {
                    self.gap(
                        Stream::Lifecycle,
                        None,
                        from,
                        now,
                        reason,
                        "lifecycle messages may be missing".into(),
                    );
                    // The registry catches up from REST.
                    self.note(Note::Resync);
                }
            }
            Channel::Ticker => {
                if let Some((from, reason)) = self.ticker_hole.take() {
                    for mk in &s.markets {
                        let from = self
                            .shared
                            .ticker_occ
                            .last_ts(mk)
                            .map_or(from, |t| t.min(from));
                        self.gap(
                            Stream::Tickers,
                            Some(mk),
                            from,
                            now,
                            reason,
                            "ticker messages may be missing".into(),
                        );
                    }
                }
            }
            _ => {}
        }
        if let Some(queued) = s.queued.remove(&channel) {
            let batch = self.shared.cfg.subscribe_batch;
            for chunk in queued.chunks(batch) {
                s.send(Pending::Update {
                    channel,
                    action: ws::action::ADD_MARKETS,
                    markets: chunk.to_vec(),
                });
            }
        }
        if channel == Channel::OrderbookDelta || self.global() && s.channel_sid.len() >= 2 {
            self.shared.health.set_conn(self.k, ConnState::Subscribed);
        }
        if s.markets.is_empty() && (!self.global() || s.channel_sid.contains_key(&Channel::Trade)) {
            self.shared.health.set_conn(self.k, ConnState::Subscribed);
        }
    }

    fn on_error(
        &mut self,
        s: &mut Session,
        id: Option<u64>,
        sid: Option<u64>,
        e: ws::ErrorMsg,
    ) -> Result<(), Lost> {
        metrics::counter!(m::WS_ERRORS, "type" => "server_error").increment(1);
        if let Some(id) = id
            && let Some((pending, _)) = s.pending.remove(&id)
        {
            return self.on_command_error(s, pending, e);
        }
        let Some(sid) = sid else {
            return Err(Lost::Orphan {
                code: i64::from(e.code),
                msg: e.msg,
            });
        };
        let Some(channel) = s.sid_channel.remove(&sid) else {
            return Ok(());
        };
        tracing::warn!(sid, channel = %channel, code = e.code, msg = %e.msg, "subscription killed by the exchange, resubscribing");
        s.channel_sid.remove(&channel);
        s.seqs.remove(&sid);
        let reason: &'static str = match e.code {
            error_code::BUFFER_OVERFLOW => "ws_error_25",
            error_code::INTERNAL_ERROR => "ws_error_17",
            error_code::CHANNEL_ERROR => "ws_error_10",
            _ => "ws_error",
        };
        let from = self.last_good_ms;
        match channel {
            Channel::OrderbookDelta => {
                for mk in &s.markets {
                    if let Some(b) = s.books.get_mut(mk) {
                        b.invalidate();
                    }
                    self.holes.entry(mk.clone()).or_insert((from, reason));
                }
                metrics::counter!(m::RESNAPSHOTS).increment(s.markets.len() as u64);
            }
            Channel::Ticker => {
                self.ticker_hole.get_or_insert((from, reason));
            }
            Channel::Trade => {
                self.trade_hole.get_or_insert((from, reason));
            }
            Channel::MarketLifecycleV2 => {
                self.lifecycle_hole.get_or_insert((from, reason));
            }
            _ => {}
        }
        self.subscribe_channel(s, channel);
        Ok(())
    }

    fn on_command_error(
        &mut self,
        s: &mut Session,
        pending: Pending,
        e: ws::ErrorMsg,
    ) -> Result<(), Lost> {
        let (channel, markets, action) = match &pending {
            Pending::Subscribe { channel, markets } => (*channel, markets.clone(), None),
            Pending::Update {
                channel,
                action,
                markets,
            } => (*channel, markets.clone(), Some(*action)),
        };
        match e.code {
            error_code::MARKET_NOT_FOUND => {
                let bad = e.market_ticker.clone().unwrap_or_default();
                tracing::warn!(market = %bad, channel = %channel, "the exchange does not know this market; dropping it from the subscription");
                self.forget_market(s, &bad);
                let rest: Vec<String> = markets.into_iter().filter(|t| *t != bad).collect();
                if !rest.is_empty()
                    || matches!(pending, Pending::Subscribe { .. })
                        && s.markets.is_empty()
                        && channel != Channel::OrderbookDelta
                {
                    s.send(match action {
                        None => Pending::Subscribe {
                            channel,
                            markets: rest,
                        },
                        Some(action) => Pending::Update {
                            channel,
                            action,
                            markets: rest,
                        },
                    });
                }
            }
            error_code::MARKET_LIMIT => {
                tracing::error!(channel = %channel, markets = markets.len(), "subscription market limit reached: these markets are NOT collected; raise ws.connections");
                for t in &markets {
                    self.forget_market(s, t);
                }
            }
            error_code::TOO_MANY_REQUESTS
            | error_code::COMMAND_TIMEOUT
            | error_code::INTERNAL_ERROR => {
                s.retry_later
                    .push((Instant::now() + Duration::from_secs(1), pending));
            }
            error_code::ALREADY_SUBSCRIBED => {}
            code => {
                tracing::warn!(code, msg = %e.msg, command = ?pending, "command refused");
                s.retry_later
                    .push((Instant::now() + Duration::from_secs(5), pending));
            }
        }
        Ok(())
    }

    /// Stops tracking a market the exchange refused, closing its hole.
    fn forget_market(&mut self, s: &mut Session, ticker: &str) {
        self.rejected.insert(ticker.to_owned());
        s.markets.remove(ticker);
        s.books.remove(ticker);
        if let Some((from, reason)) = self.holes.remove(ticker) {
            self.gap(
                Stream::OrderbookDeltas,
                Some(ticker),
                from,
                now_ms(),
                reason,
                "market refused by the exchange".into(),
            );
        }
        self.health().set_markets(s.markets.len());
    }

    fn subscribe_channel(&mut self, s: &mut Session, channel: Channel) {
        if s.has_pending_subscribe(channel) {
            return;
        }
        match channel {
            Channel::OrderbookDelta | Channel::Ticker => {
                if s.markets.is_empty() {
                    return;
                }
                let all: Vec<String> = s.markets.iter().cloned().collect();
                let batch = self.shared.cfg.subscribe_batch;
                let (first, rest) = all.split_at(all.len().min(batch));
                s.queued.insert(channel, rest.to_vec());
                s.send(Pending::Subscribe {
                    channel,
                    markets: first.to_vec(),
                });
            }
            _ => s.send(Pending::Subscribe {
                channel,
                markets: vec![],
            }),
        }
    }

    fn on_snapshot(
        &mut self,
        s: &mut Session,
        snap: OrderbookSnapshotMsg,
        origin: Origin,
        now: i64,
    ) {
        let Some(book) = s.books.get_mut(&snap.market_ticker) else {
            return;
        };
        let (yes, no) = match (levels(&snap, Side::Yes), levels(&snap, Side::No)) {
            (Ok(y), Ok(n)) => (y, n),
            (Err(e), _) | (_, Err(e)) => {
                self.bad_frame("orderbook_snapshot", &e.to_string());
                return;
            }
        };
        book.load(&yes, &no);
        let last_delta_ts = book.last_delta_ts;
        if let Some((from, reason)) = self.holes.remove(&snap.market_ticker) {
            // The boundary millisecond: the window reaches back to the exchange time of the
            // last delta seen before the hole, even when the exchange clock lags the wall
            // clock (docs/DESIGN.md, "Occurrence: the rule").
            let from = self
                .shared
                .delta_occ
                .last_ts(&snap.market_ticker)
                .map_or(from, |t| t.min(from));
            self.gap(
                Stream::OrderbookDeltas,
                Some(&snap.market_ticker),
                from,
                now,
                reason,
                format!("deltas between {from} and the snapshot may be missing"),
            );
        }
        self.shared.sinks.snapshots.push(SnapshotRow {
            market_ticker: snap.market_ticker,
            source: Source::Ws,
            yes,
            no,
            last_delta_ts_ms: last_delta_ts,
            origin,
        });
    }

    fn on_delta(&mut self, s: &mut Session, d: OrderbookDeltaMsg, origin: Origin, now: i64) {
        let Some(book) = s.books.get_mut(&d.market_ticker) else {
            // Not subscribed on this connection (or long gone): nothing to route it to.
            metrics::counter!(m::DELTAS_DROPPED).increment(1);
            tracing::debug!(market = %d.market_ticker, "delta for a market without a book dropped");
            return;
        };
        if !book.valid {
            metrics::counter!(m::DELTAS_DROPPED).increment(1);
            return;
        }
        let (price, delta) = match (d.price_value(), d.delta_value()) {
            (Ok(p), Ok(q)) => (p.raw(), q.raw()),
            (Err(e), _) | (_, Err(e)) => {
                self.bad_frame("orderbook_delta", &e.to_string());
                // A delta we cannot read breaks the book as surely as a lost one.
                book.invalidate();
                self.holes
                    .entry(d.market_ticker.clone())
                    .or_insert((now, "bad_delta"));
                s.send(Pending::Update {
                    channel: Channel::OrderbookDelta,
                    action: ws::action::GET_SNAPSHOT,
                    markets: vec![d.market_ticker],
                });
                return;
            }
        };
        let ts = d.ts_ms_value();
        if !book.apply(d.side, price, delta) {
            // The book went negative: something was lost before this delta.
            metrics::counter!(m::RESNAPSHOTS).increment(1);
            if let Some(suppressed) = self.limiter.check("negative_book") {
                tracing::warn!(market = %d.market_ticker, suppressed, "delta drives a level negative; resnapshotting");
            }
            book.invalidate();
            self.holes
                .entry(d.market_ticker.clone())
                .or_insert((self.last_good_ms, "inconsistent_book"));
            s.send(Pending::Update {
                channel: Channel::OrderbookDelta,
                action: ws::action::GET_SNAPSHOT,
                markets: vec![d.market_ticker],
            });
            return;
        }
        if ts.is_none() {
            metrics::counter!(m::DELTAS_WITHOUT_TS).increment(1);
        }
        let occurrence = self
            .shared
            .delta_occ
            .next(&d.market_ticker, ts, (d.side, price, delta));
        if ts.is_some() {
            book.last_delta_ts = ts;
        }
        self.shared.sinks.deltas.push(DeltaRow {
            market_ticker: d.market_ticker,
            ts_ms: ts,
            side: d.side,
            price,
            delta,
            occurrence,
            origin,
        });
    }

    fn on_trade(&mut self, t: TradeMsg, origin: Origin) {
        let covered = self
            .shared
            .scope
            .read()
            .map(|sc| sc.covers(&t.market_ticker))
            .unwrap_or(true);
        if !covered {
            return;
        }
        let (yes, no, count) = match (t.yes_price_value(), t.no_price_value(), t.count_value()) {
            (Ok(y), Ok(n), Ok(c)) => (y.raw(), n.raw(), c.raw()),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                self.bad_frame("trade", &e.to_string());
                return;
            }
        };
        let Some(ts) = t.ts_ms_value() else {
            self.bad_frame("trade", "trade without a timestamp");
            return;
        };
        self.last_trade_ts = Some(ts);
        let id = t.trade_id.clone();
        let stored = self.shared.sinks.trades.push(TradeRow {
            trade_id: t.trade_id,
            market_ticker: t.market_ticker,
            yes_price: yes,
            no_price: no,
            count,
            taker_outcome_side: t.taker_outcome_side.or(t.taker_side),
            taker_book_side: t.taker_book_side,
            is_block_trade: t.is_block_trade.unwrap_or(false),
            ts_ms: ts,
            source: Source::Ws,
            origin,
        });
        // Only trades the writer accepted count as delivered: a dropped one must stay
        // eligible for the backfill of the overflow window.
        if stored {
            self.shared.recent_trades.insert(&id);
        }
    }

    fn on_ticker(&mut self, s: &mut Session, t: TickerMsg, origin: Origin) {
        let ts = t.ts_ms_value();
        let hash = ticker_hash(&t);
        if !s.books.contains_key(&t.market_ticker) {
            metrics::counter!(m::TICKERS_WITHOUT_BOOK).increment(1);
            return;
        }
        let occurrence = self
            .shared
            .ticker_occ
            .next(&t.market_ticker, ts, hash.clone());
        self.shared.sinks.tickers.push(TickerRow {
            market_ticker: t.market_ticker.clone(),
            ts_ms: ts,
            body: serde_json::to_string(&t).unwrap_or_default(),
            content_hash: hash,
            occurrence,
            origin,
        });
    }

    // -----------------------------------------------------------------------------------------
    // Markets
    // -----------------------------------------------------------------------------------------

    fn sync_markets(&mut self, s: &mut Session, desired: &BTreeSet<String>) {
        let n = self.shared.cfg.connections;
        self.rejected.retain(|t| desired.contains(t));
        let mine: BTreeSet<String> = desired
            .iter()
            .filter(|t| shard_of(t, n) == self.k && !self.rejected.contains(*t))
            .cloned()
            .collect();
        let added: Vec<String> = mine.difference(&s.markets).cloned().collect();
        let removed: Vec<String> = s.markets.difference(&mine).cloned().collect();
        let now = now_ms();
        for t in &removed {
            s.markets.remove(t);
            s.leaving.push((Instant::now() + LEAVE_GRACE, t.clone()));
            if let Some((from, reason)) = self.holes.remove(t) {
                self.gap(
                    Stream::OrderbookDeltas,
                    Some(t),
                    from,
                    now,
                    reason,
                    "market unsubscribed before its snapshot".into(),
                );
            }
        }
        for t in &added {
            s.markets.insert(t.clone());
            s.books.insert(t.clone(), MarketBook::default());
            if let Some(from) = self.startup_hole {
                self.holes
                    .entry(t.clone())
                    .or_insert((from, "gatherer_down"));
            }
        }
        if !added.is_empty() {
            self.startup_hole = None;
        }
        self.health().set_markets(s.markets.len());
        metrics::gauge!(m::SUBSCRIBED_MARKETS, "conn" => self.k.to_string())
            .set(s.markets.len() as f64);
        let batch = self.shared.cfg.subscribe_batch;
        for channel in [Channel::OrderbookDelta, Channel::Ticker] {
            if s.channel_sid.contains_key(&channel) {
                for chunk in removed.chunks(batch) {
                    s.send(Pending::Update {
                        channel,
                        action: ws::action::DELETE_MARKETS,
                        markets: chunk.to_vec(),
                    });
                }
                for chunk in added.chunks(batch) {
                    s.send(Pending::Update {
                        channel,
                        action: ws::action::ADD_MARKETS,
                        markets: chunk.to_vec(),
                    });
                }
            } else if s.has_pending_subscribe(channel) {
                let q = s.queued.entry(channel).or_default();
                q.retain(|t| !removed.contains(t));
                q.extend(added.iter().cloned());
            } else if !s.markets.is_empty() {
                self.subscribe_channel(s, channel);
            }
        }
        if !self.global() && s.markets.is_empty() {
            self.shared.health.set_conn(self.k, ConnState::Subscribed);
        }
    }

    /// At shutdown, holes that no snapshot will close are declared up to now.
    fn close_holes_at_shutdown(&mut self) {
        let now = now_ms();
        let holes: Vec<(String, (i64, &'static str))> = self.holes.drain().collect();
        for (t, (from, reason)) in holes {
            self.gap(
                Stream::OrderbookDeltas,
                Some(&t),
                from,
                now,
                reason,
                "still open at shutdown".into(),
            );
        }
        if let Some((from, reason)) = self.lifecycle_hole.take() {
            self.gap(
                Stream::Lifecycle,
                None,
                from,
                now,
                reason,
                "still open at shutdown".into(),
            );
        }
        if let Some((from, reason)) = self.trade_hole.take() {
            self.gap(
                Stream::Trades,
                None,
                from,
                now,
                reason,
                "still open at shutdown; backfill did not run".into(),
            );
        }
        if let Some((from, reason)) = self.ticker_hole.take() {
            self.gap(
                Stream::Tickers,
                None,
                from,
                now,
                reason,
                "still open at shutdown".into(),
            );
        }
    }

    /// Records what a lost session leaves open.
    pub fn mark_disconnect(&mut self, markets: &BTreeSet<String>) {
        let from = self.last_good_ms;
        for t in markets {
            self.holes.entry(t.clone()).or_insert((from, "disconnect"));
        }
        if !markets.is_empty() {
            self.ticker_hole.get_or_insert((from, "disconnect"));
        }
        if self.global() {
            self.trade_hole.get_or_insert((from, "disconnect"));
            self.lifecycle_hole.get_or_insert((from, "disconnect"));
        }
    }
}

fn frame_channel(body: &FrameBody) -> &'static str {
    match body {
        FrameBody::OrderbookSnapshot(_) | FrameBody::OrderbookDelta(_) => "orderbook_delta",
        FrameBody::Trade(_) => "trade",
        FrameBody::Ticker(_) => "ticker",
        FrameBody::MarketLifecycle(_) | FrameBody::EventLifecycle(_) => "market_lifecycle_v2",
        FrameBody::Unknown(_) => "unknown",
        _ => "control",
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
