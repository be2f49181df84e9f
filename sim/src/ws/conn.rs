//! One connection's task: reads commands, routes published batches, pings, obeys faults.
//!
//! It must never let a slow client hold up the others: a client that accepts no data within
//! the slow-client deadline is dropped.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{SinkExt as _, StreamExt as _};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use kalshi_shared::wire::ws::Channel;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::session::{Session, SessionLimits};
use crate::engine::delta_json_yes_scale;
use crate::faults::{ConnFault, MalformedKind, TokenBucket};
use crate::{ConnEntry, ConnInfo, SimState, SubSummary, lock};

/// Why a write to a client failed: the connection is over either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum ClientGone {
    #[error("the socket refused the write")]
    WriteFailed,
    #[error("the client accepted no data within the slow-client deadline")]
    Slow,
}

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Why the loop ended.
enum End {
    Closed,
    Failed,
}

struct Conn {
    state: Arc<SimState>,
    id: u64,
    ws: Ws,
    session: Session,
    summary: Arc<Mutex<Vec<SubSummary>>>,
    commands: TokenBucket,
    /// Real frames to decorate with unknown fields (fault `malformed`/`unknown_fields`).
    decorate: u32,
    last_rx: Instant,
}

pub(super) async fn run(state: Arc<SimState>, ws: Ws, peer: SocketAddr, key_id: Option<String>) {
    let id = state.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let (ctl_tx, mut ctl_rx) = mpsc::channel(64);
    let summary = Arc::new(Mutex::new(Vec::new()));
    // Subscribe to the fan-out under the exchange lock, so the starting position is exact.
    let (mut rx, start_pos) = {
        let ex = lock(&state.exchange);
        (state.fanout.subscribe(), ex.pos())
    };
    lock(&state.conns).insert(
        id,
        ConnEntry {
            info: ConnInfo {
                id,
                peer: peer.to_string(),
                key_id: key_id.clone(),
                connected_ms: kalshi_shared::time::now_ms(),
            },
            ctl: ctl_tx,
            subs: summary.clone(),
        },
    );
    state
        .stats
        .ws_connections_total
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(conn = id, %peer, key_id = key_id.as_deref().unwrap_or("-"), "websocket connected");
    let authenticated = key_id.is_some();
    let mut conn = Conn {
        commands: TokenBucket::new(
            state.cfg.ws_command_rate,
            state.cfg.ws_command_rate,
            Instant::now(),
        ),
        session: Session::new(
            authenticated,
            SessionLimits {
                max_markets_per_subscription: state.cfg.max_markets_per_subscription,
            },
            start_pos,
        ),
        state: state.clone(),
        id,
        ws,
        summary,
        decorate: 0,
        last_rx: Instant::now(),
    };
    let end = conn.run_loop(&mut rx, &mut ctl_rx).await;
    lock(&state.conns).remove(&id);
    match end {
        End::Closed => tracing::info!(conn = id, "websocket closed"),
        End::Failed => tracing::info!(conn = id, "websocket dropped"),
    }
}

impl Conn {
    #[tracing::instrument(name = "ws_conn", skip_all, fields(conn = self.id))]
    async fn run_loop(
        &mut self,
        rx: &mut tokio::sync::broadcast::Receiver<crate::engine::Batch>,
        ctl: &mut mpsc::Receiver<ConnFault>,
    ) -> End {
        let state = self.state.clone();
        let mut ping = tokio::time::interval(state.cfg.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut out: Vec<String> = Vec::new();
        loop {
            out.clear();
            tokio::select! {
                biased;
                _ = state.shutdown.cancelled() => {
                    let _ = self.close(CloseCode::Away, "server shutting down").await;
                    return End::Closed;
                }
                fault = ctl.recv() => {
                    let Some(fault) = fault else { return End::Closed };
                    match self.apply_fault(fault, &mut out).await {
                        Ok(true) => {}
                        Ok(false) => return End::Failed,
                        Err(end) => return end,
                    }
                }
                incoming = self.ws.next() => {
                    self.last_rx = Instant::now();
                    match incoming {
                        Some(Ok(Message::Text(text))) => self.command(text.as_str(), &mut out),
                        Some(Ok(Message::Binary(_))) => {
                            out.push(kalshi_shared::wire::ws::encode_frame(
                                "error", None, None, None, None,
                                Some(r#"{"code":1,"msg":"Unable to process message"}"#),
                            ));
                        }
                        Some(Ok(Message::Close(_))) | None => return End::Closed,
                        Some(Ok(_)) => {} // Ping (answered by the protocol layer), Pong, Frame
                        Some(Err(e)) => {
                            tracing::debug!(conn = self.id, error = %e, "websocket read failed");
                            if matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)) {
                                let _ = self.close(CloseCode::Size, "message too big").await;
                            }
                            return End::Failed;
                        }
                    }
                }
                batch = rx.recv() => match batch {
                    Ok(batch) => {
                        let now = kalshi_shared::time::now_ms();
                        let needs = self.session.needs_yes_scale();
                        let st = &self.state;
                        let mut yes_scale = |e: &crate::engine::Published| {
                            if !needs {
                                return None;
                            }
                            let ex = lock(&st.exchange);
                            e.delta.and_then(|d| delta_json_yes_scale(&ex, e.market?, d, e.ts_ms))
                        };
                        self.session.deliver(&batch, now, &mut out, &mut yes_scale);
                    }
                    Err(RecvError::Lagged(missed)) => {
                        // The client reads too slowly: Kalshi kills its subscriptions (error 25).
                        state.stats.ws_overflows.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(conn = self.id, missed_batches = missed, "subscriber overflow, sending error 25");
                        self.session.kill(kalshi_shared::wire::ws::error_code::BUFFER_OVERFLOW, None, &mut out);
                        self.session.delivered_pos = state.published_pos.load(Ordering::Acquire);
                        self.publish_summary();
                    }
                    Err(RecvError::Closed) => return End::Closed,
                },
                _ = ping.tick() => {
                    if let Some(limit) = state.cfg.client_timeout
                        && self.last_rx.elapsed() > limit
                    {
                        tracing::info!(conn = self.id, "client silent too long, closing");
                        let _ = self.close(CloseCode::Policy, "no traffic from client").await;
                        return End::Closed;
                    }
                    if self.send(vec![Message::Ping("heartbeat".into())]).await.is_err() {
                        return End::Failed;
                    }
                    continue;
                }
            }
            if out.is_empty() {
                // A Ping may have queued a Pong: push it out.
                if self.flush().await.is_err() {
                    return End::Failed;
                }
                continue;
            }
            let frames: Vec<Message> = out
                .drain(..)
                .map(|mut text| {
                    if self.decorate > 0 && text.starts_with("{\"type\":") {
                        self.decorate -= 1;
                        text = decorate(&text);
                    }
                    Message::text(text)
                })
                .collect();
            if self.send(frames).await.is_err() {
                return End::Failed;
            }
        }
    }

    fn command(&mut self, text: &str, out: &mut Vec<String>) {
        self.state.stats.ws_commands.fetch_add(1, Ordering::Relaxed);
        if !self.commands.try_take(1, Instant::now()) {
            let id = serde_json::from_str::<kalshi_shared::wire::ws::RawCommand<'_>>(text)
                .ok()
                .and_then(|c| c.id());
            out.push(kalshi_shared::wire::ws::encode_frame(
                "error",
                id,
                None,
                None,
                None,
                Some(r#"{"code":27,"msg":"Too many requests"}"#),
            ));
            return;
        }
        {
            let ex = lock(&self.state.exchange);
            self.session.handle_text(text, &ex, out);
        }
        self.publish_summary();
    }

    fn publish_summary(&self) {
        *lock(&self.summary) = self.session.summary();
    }

    /// Sends frames and flushes, within the slow-client deadline.
    async fn send(&mut self, frames: Vec<Message>) -> Result<(), ClientGone> {
        let n = frames.len() as u64;
        let deadline = self.state.cfg.slow_client_timeout;
        let ws = &mut self.ws;
        let result = tokio::time::timeout(deadline, async {
            for f in frames {
                ws.feed(f).await?;
            }
            ws.flush().await
        })
        .await;
        match result {
            Ok(Ok(())) => {
                self.state
                    .stats
                    .ws_frames_sent
                    .fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::debug!(conn = self.id, error = %e, "websocket write failed");
                Err(ClientGone::WriteFailed)
            }
            Err(_) => {
                self.state
                    .stats
                    .ws_slow_dropped
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(conn = self.id, timeout = ?deadline, "client accepts no data, dropping it");
                Err(ClientGone::Slow)
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ClientGone> {
        match tokio::time::timeout(self.state.cfg.slow_client_timeout, self.ws.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ClientGone::WriteFailed),
            Err(_) => Err(ClientGone::Slow),
        }
    }

    async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), ClientGone> {
        let frame = CloseFrame {
            code,
            reason: reason.to_owned().into(),
        };
        self.send(vec![Message::Close(Some(frame))]).await
    }

    /// Applies a fault. `Ok(false)` means drop the connection now.
    async fn apply_fault(&mut self, fault: ConnFault, out: &mut Vec<String>) -> Result<bool, End> {
        tracing::info!(conn = self.id, ?fault, "fault injected");
        match fault {
            ConnFault::Drop { graceful } => {
                if graceful {
                    let _ = self
                        .close(CloseCode::Away, "dropped by fault injection")
                        .await;
                }
                // Returning drops the stream: the TCP connection is closed without a close
                // frame unless one was just sent.
                Ok(false)
            }
            ConnFault::Stall { duration } => {
                // Stop reading (so Pings go unanswered), stop writing, keep the socket open.
                tokio::select! {
                    _ = tokio::time::sleep(duration) => {}
                    _ = self.state.shutdown.cancelled() => {}
                }
                Err(End::Failed)
            }
            ConnFault::SkipSeq { channel, count } => {
                if let Some(c) = Channel::parse(&channel) {
                    self.session.skip_seq(c, count);
                }
                Ok(true)
            }
            ConnFault::WsError {
                code,
                channel,
                on_next_update,
            } => {
                let ch = channel.as_deref().and_then(Channel::parse);
                if on_next_update {
                    self.session.kill_on_next_update = Some((code, ch));
                } else {
                    self.session.kill(code, ch, out);
                }
                self.publish_summary();
                Ok(true)
            }
            ConnFault::Malformed { kind, count, size } => {
                let mut frames = Vec::new();
                for i in 0..count {
                    match kind {
                        MalformedKind::NotJson => frames.push(Message::text(format!("{{not json #{i}"))),
                        MalformedKind::UnknownType => frames.push(Message::text(format!(
                            r#"{{"type":"mystery_update","sid":4242,"msg":{{"n":{i},"nested":{{"a":[1,2,3]}}}}}}"#
                        ))),
                        MalformedKind::BadFields => frames.push(Message::text(
                            r#"{"type":"trade","msg":{"trade_id":42,"market_ticker":null,"count_fp":"many"}}"#.to_owned(),
                        )),
                        MalformedKind::Binary => frames.push(Message::binary(vec![0xde, 0xad, 0xbe, 0xef, i as u8])),
                        MalformedKind::Oversize => {
                            let pad = "x".repeat(size.saturating_sub(40));
                            frames.push(Message::text(format!(r#"{{"type":"padding","msg":"{pad}"}}"#)));
                        }
                        MalformedKind::UnknownFields => {
                            self.decorate += 1;
                        }
                    }
                }
                if !frames.is_empty() && self.send(frames).await.is_err() {
                    return Err(End::Failed);
                }
                Ok(true)
            }
        }
    }
}

/// Adds unknown fields to a real frame (top level and inside `msg`), keeping it valid JSON.
/// The `msg` of a ticker or lifecycle frame is left as it is: those are kept as sent, and the
/// exchange sends one message alike to every client (`--future-fields` adds a field to them
/// for every client and the truth).
fn decorate(frame: &str) -> String {
    let kept_as_sent = crate::engine::EventKind::ALL
        .iter()
        .filter(|k| k.kept_as_sent())
        .any(|k| frame.starts_with(&format!("{{\"type\":\"{}\"", k.frame_type())));
    let mut s = if kept_as_sent {
        frame.to_owned()
    } else {
        frame.replacen(
            "\"msg\":{",
            "\"msg\":{\"x_future_field\":{\"a\":[1,\"two\",3.5]},",
            1,
        )
    };
    if s.ends_with('}') {
        s.pop();
        s.push_str(",\"x_envelope_extra\":true}");
    }
    s
}
