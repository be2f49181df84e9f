//! One WebSocket connection's subscriptions: command handling, sids, `seq`, snapshots and the
//! routing of published events. Pure logic: it must never do I/O, so every error code and
//! numbering rule is testable without a socket.
//!
//! Rules reproduced (`kalshi-api.md` §4): sids start at 1 per connection; `seq` is dense per
//! sid and is consumed by `ok` and `unsubscribed` frames as well as data; snapshots precede
//! deltas and take the next `seq` mid-stream; subscribing again to a channel merges the
//! markets into its existing sid. A snapshot is emitted at the exact point of the event stream
//! it describes, so applying snapshot + following deltas always reproduces the exchange's book.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use kalshi_shared::wire::ws::{
    self, Channel, ErrorMsg, OkMsg, RawCommand, SubscribeParams, SubscriptionInfo,
    UnsubscribeParams, UpdateSubscriptionParams, encode_frame, error_code as code, frame_type,
};

mod commands;
mod delivery;

use crate::SubSummary;
use crate::engine::{EventKind, Exchange, Published, to_json};

#[derive(Debug)]
enum PendingKind {
    Snapshot,
    Ticker,
}

#[derive(Debug)]
struct Pending {
    /// Emit once the connection's stream has passed this position.
    at_pos: u64,
    kind: PendingKind,
    market: u32,
    msg: String,
}

#[derive(Debug)]
struct Sub {
    sid: u64,
    channel: Channel,
    seq: u64,
    /// Market -> position after which its events are delivered; `None` means every market.
    markets: Option<HashMap<u32, u64>>,
    /// Tickers in subscription order (for `ok` replies).
    tickers: Vec<String>,
    use_yes_price: bool,
    skip_ticker_ack: bool,
    pending: VecDeque<Pending>,
    /// Data frames to drop (fault injection: a real seq gap).
    skip_next: u32,
}

impl Sub {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Channels whose data frames carry `seq` (`kalshi-api.md` §4.7: deltas and snapshots by
    /// spec, trades as observed live).
    fn data_has_seq(&self) -> bool {
        matches!(self.channel, Channel::OrderbookDelta | Channel::Trade)
    }

    fn market_count(&self) -> usize {
        self.markets.as_ref().map_or(0, HashMap::len)
    }
}

/// Limits a session enforces.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub max_markets_per_subscription: usize,
}

#[derive(Debug)]
pub struct Session {
    next_sid: u64,
    subs: Vec<Sub>,
    authenticated: bool,
    limits: SessionLimits,
    pending_any: bool,
    /// A `ws_error` fault waiting for the next `update_subscription` on its channel (None:
    /// every channel): the subscription is killed and the command left unanswered.
    pub kill_on_next_update: Option<(u32, Option<Channel>)>,
    /// Position of the last event this connection has routed.
    pub delivered_pos: u64,
}

fn error_frame(id: Option<u64>, sid: Option<u64>, c: u32, market: Option<&str>) -> String {
    let msg = ErrorMsg {
        code: c,
        msg: code::message(c).to_owned(),
        market_ticker: market.map(str::to_owned),
        market_id: None,
    };
    encode_frame(frame_type::ERROR, id, sid, None, None, Some(&to_json(&msg)))
}

/// Outcome of resolving a command's market selection.
enum Markets {
    None,
    Some(Vec<u32>),
}

impl Session {
    pub fn new(authenticated: bool, limits: SessionLimits, delivered_pos: u64) -> Self {
        Self {
            next_sid: 1,
            subs: Vec::new(),
            authenticated,
            limits,
            pending_any: false,
            kill_on_next_update: None,
            delivered_pos,
        }
    }

    pub fn summary(&self) -> Vec<SubSummary> {
        self.subs
            .iter()
            .map(|s| SubSummary {
                sid: s.sid,
                channel: s.channel.as_str().to_owned(),
                markets: s.markets.as_ref().map(HashMap::len),
                seq: s.seq,
            })
            .collect()
    }

    /// Whether any subscription needs deltas re-expressed on the YES scale.
    pub fn needs_yes_scale(&self) -> bool {
        self.subs.iter().any(|s| s.use_yes_price)
    }

    fn sub_mut(&mut self, channel: Channel) -> Option<&mut Sub> {
        self.subs.iter_mut().find(|s| s.channel == channel)
    }

    // -----------------------------------------------------------------------------------------
    // Commands
    // -----------------------------------------------------------------------------------------

    /// Handles one text frame from the client. `ex` is the locked exchange.
    pub fn handle_text(&mut self, text: &str, ex: &Exchange, out: &mut Vec<String>) {
        let Ok(cmd) = serde_json::from_str::<RawCommand<'_>>(text) else {
            out.push(error_frame(None, None, code::UNABLE_TO_PROCESS, None));
            return;
        };
        let id = cmd.id();
        let params = cmd.params.map(|p| p.get());
        match cmd.cmd.as_deref() {
            Some("subscribe") => self.subscribe(id, params, ex, out),
            Some("unsubscribe") => self.unsubscribe(id, params, out),
            Some("update_subscription") => self.update(id, params, ex, out),
            Some("list_subscriptions") => {
                let list: Vec<SubscriptionInfo> = self
                    .subs
                    .iter()
                    .map(|s| SubscriptionInfo {
                        channel: s.channel.as_str().to_owned(),
                        sid: s.sid,
                    })
                    .collect();
                out.push(encode_frame(
                    frame_type::OK,
                    id,
                    None,
                    None,
                    None,
                    Some(&to_json(&list)),
                ));
            }
            _ => out.push(error_frame(id, None, code::UNKNOWN_COMMAND, None)),
        }
    }

    /// The sid of a channel's subscription, if any.
    pub fn sid_of(&self, channel: Channel) -> Option<u64> {
        self.subs
            .iter()
            .find(|s| s.channel == channel)
            .map(|s| s.sid)
    }
}
