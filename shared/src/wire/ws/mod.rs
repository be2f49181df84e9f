//! WebSocket v2 (`/trade-api/ws/v2`): commands, responses and data messages.
//!
//! A frame is parsed in two steps ([`parse_frame`]): the envelope (`type`, `id`, `sid`, `seq`,
//! `sending_ts_ms`) first, keeping `msg` as raw JSON, then `msg` by type. A client checks `seq`
//! from the envelope before it routes by type, as `kalshi-api.md` §4.7 requires, and a frame
//! whose `msg` does not parse still has a usable envelope: a bad `msg` must never cost the
//! envelope (and with it the `seq` check).

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The WebSocket path; also the path in every WS signature.
pub const WS_PATH: &str = "/trade-api/ws/v2";

/// Channels this project knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    OrderbookDelta,
    Ticker,
    Trade,
    MarketLifecycleV2,
    Multivariate,
    MultivariateMarketLifecycle,
    Fill,
    MarketPositions,
    UserOrders,
    OrderGroupUpdates,
    Communications,
    CfbenchmarksValue,
    CfbenchmarksValue5hz,
}

impl Channel {
    pub const ALL: [Channel; 13] = [
        Channel::OrderbookDelta,
        Channel::Ticker,
        Channel::Trade,
        Channel::MarketLifecycleV2,
        Channel::Multivariate,
        Channel::MultivariateMarketLifecycle,
        Channel::Fill,
        Channel::MarketPositions,
        Channel::UserOrders,
        Channel::OrderGroupUpdates,
        Channel::Communications,
        Channel::CfbenchmarksValue,
        Channel::CfbenchmarksValue5hz,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::OrderbookDelta => "orderbook_delta",
            Channel::Ticker => "ticker",
            Channel::Trade => "trade",
            Channel::MarketLifecycleV2 => "market_lifecycle_v2",
            Channel::Multivariate => "multivariate",
            Channel::MultivariateMarketLifecycle => "multivariate_market_lifecycle",
            Channel::Fill => "fill",
            Channel::MarketPositions => "market_positions",
            Channel::UserOrders => "user_orders",
            Channel::OrderGroupUpdates => "order_group_updates",
            Channel::Communications => "communications",
            Channel::CfbenchmarksValue => "cfbenchmarks_value",
            Channel::CfbenchmarksValue5hz => "cfbenchmarks_value_5hz",
        }
    }

    pub fn parse(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Channels that carry a user's own data and need an authenticated connection.
    pub fn is_private(self) -> bool {
        matches!(
            self,
            Channel::Fill
                | Channel::MarketPositions
                | Channel::UserOrders
                | Channel::OrderGroupUpdates
                | Channel::Communications
        )
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

mod commands;
mod messages;
#[cfg(test)]
mod tests;

pub use commands::*;
pub use messages::*;

// Frames

/// Message `type` values.
pub mod frame_type {
    pub const SUBSCRIBED: &str = "subscribed";
    pub const UNSUBSCRIBED: &str = "unsubscribed";
    pub const OK: &str = "ok";
    pub const ERROR: &str = "error";
    pub const ORDERBOOK_SNAPSHOT: &str = "orderbook_snapshot";
    pub const ORDERBOOK_DELTA: &str = "orderbook_delta";
    pub const TRADE: &str = "trade";
    pub const TICKER: &str = "ticker";
    pub const MARKET_LIFECYCLE_V2: &str = "market_lifecycle_v2";
    pub const EVENT_LIFECYCLE: &str = "event_lifecycle";
}

/// A parsed server frame: the envelope plus the typed body.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The echoed command id (`0` normalised to `None`).
    pub id: Option<u64>,
    pub sid: Option<u64>,
    pub seq: Option<u64>,
    pub sending_ts_ms: Option<i64>,
    pub body: FrameBody,
}

// Frames are parsed and consumed one at a time, so the size spread between variants costs
// nothing worth an allocation per ticker frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum FrameBody {
    Subscribed(SubscribedMsg),
    Unsubscribed,
    Ok(OkMsg),
    SubscriptionList(Vec<SubscriptionInfo>),
    Error(ErrorMsg),
    OrderbookSnapshot(OrderbookSnapshotMsg),
    OrderbookDelta(OrderbookDeltaMsg),
    Trade(TradeMsg),
    Ticker(TickerMsg),
    MarketLifecycle(MarketLifecycleMsg),
    EventLifecycle(EventLifecycleMsg),
    /// A well-formed frame of a type this client does not know; carries the type.
    Unknown(String),
}

/// Why a frame could not be parsed. [`FrameError::label`] is a low-cardinality metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is not a JSON object envelope: {0}")]
    Malformed(String),
    #[error("frame has no `type`")]
    MissingType,
    #[error("`{kind}` frame has no `msg`")]
    MissingMsg { kind: String },
    #[error("`{kind}` frame has an invalid `msg`: {error}")]
    BadMessage { kind: String, error: String },
}

impl FrameError {
    /// A bounded label for metrics: the frame type for known types, else a fixed word.
    pub fn label(&self) -> &'static str {
        match self {
            FrameError::Malformed(_) => "malformed",
            FrameError::MissingType => "missing_type",
            FrameError::MissingMsg { kind } | FrameError::BadMessage { kind, .. } => {
                known_type_label(kind)
            }
        }
    }
}

fn known_type_label(kind: &str) -> &'static str {
    use frame_type::*;
    match kind {
        SUBSCRIBED => SUBSCRIBED,
        UNSUBSCRIBED => UNSUBSCRIBED,
        OK => OK,
        ERROR => ERROR,
        ORDERBOOK_SNAPSHOT => ORDERBOOK_SNAPSHOT,
        ORDERBOOK_DELTA => ORDERBOOK_DELTA,
        TRADE => TRADE,
        TICKER => TICKER,
        MARKET_LIFECYCLE_V2 => MARKET_LIFECYCLE_V2,
        EVENT_LIFECYCLE => EVENT_LIFECYCLE,
        _ => "other",
    }
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    sid: Option<u64>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    sending_ts_ms: Option<i64>,
    #[serde(default, borrow)]
    msg: Option<&'a RawValue>,
}

/// `s` cut to at most `max` bytes, on a character boundary (serde's messages quote the input,
/// which can be any UTF-8; `String::truncate` inside a character panics: found by
/// tests/tests/fuzz.rs's reasoning, pinned by `long_errors_are_cut_on_a_character_boundary`).
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Parses one text frame from the server.
/// The `msg` of a frame exactly as the exchange sent it (None: no frame or no `msg`): what is
/// kept of lifecycle messages, every field, known to the typed structs or not.
pub fn raw_msg(text: &str) -> Option<&str> {
    let raw: RawFrame<'_> = serde_json::from_str(text).ok()?;
    raw.msg.map(RawValue::get)
}

pub fn parse_frame(text: &str) -> Result<Frame, FrameError> {
    parse_frame_raw(text).map(|(f, _)| f)
}

/// [`parse_frame`], also giving the exchange's text of `msg` (a slice of `text`, as sent), so a
/// client that keeps messages as sent reads the envelope once.
pub fn parse_frame_raw(text: &str) -> Result<(Frame, Option<&str>), FrameError> {
    let raw: RawFrame<'_> =
        serde_json::from_str(text).map_err(|e| FrameError::Malformed(cut(e.to_string(), 200)))?;
    let kind = raw.kind.ok_or(FrameError::MissingType)?;
    let kind = kind.as_ref();
    let msg = raw.msg;
    let need_msg = || {
        msg.ok_or_else(|| FrameError::MissingMsg {
            kind: kind.to_owned(),
        })
    };
    let typed = |raw_msg: &RawValue| -> Result<FrameBody, serde_json::Error> {
        use frame_type::*;
        let s = raw_msg.get();
        Ok(match kind {
            SUBSCRIBED => FrameBody::Subscribed(serde_json::from_str(s)?),
            OK => {
                if s.trim_start().starts_with('[') {
                    FrameBody::SubscriptionList(serde_json::from_str(s)?)
                } else {
                    FrameBody::Ok(serde_json::from_str(s)?)
                }
            }
            ERROR => FrameBody::Error(serde_json::from_str(s)?),
            ORDERBOOK_SNAPSHOT => FrameBody::OrderbookSnapshot(serde_json::from_str(s)?),
            ORDERBOOK_DELTA => FrameBody::OrderbookDelta(serde_json::from_str(s)?),
            TRADE => FrameBody::Trade(serde_json::from_str(s)?),
            TICKER => FrameBody::Ticker(serde_json::from_str(s)?),
            MARKET_LIFECYCLE_V2 => FrameBody::MarketLifecycle(serde_json::from_str(s)?),
            EVENT_LIFECYCLE => FrameBody::EventLifecycle(serde_json::from_str(s)?),
            other => FrameBody::Unknown(other.to_owned()),
        })
    };
    let body = match kind {
        frame_type::UNSUBSCRIBED => FrameBody::Unsubscribed,
        // An `ok` may come without `msg` (e.g. with skip_ticker_ack).
        frame_type::OK if msg.is_none() => FrameBody::Ok(OkMsg::default()),
        frame_type::SUBSCRIBED
        | frame_type::OK
        | frame_type::ERROR
        | frame_type::ORDERBOOK_SNAPSHOT
        | frame_type::ORDERBOOK_DELTA
        | frame_type::TRADE
        | frame_type::TICKER
        | frame_type::MARKET_LIFECYCLE_V2
        | frame_type::EVENT_LIFECYCLE => {
            typed(need_msg()?).map_err(|e| FrameError::BadMessage {
                kind: kind.to_owned(),
                error: cut(e.to_string(), 200),
            })?
        }
        other => FrameBody::Unknown(other.chars().take(64).collect()),
    };
    Ok((
        Frame {
            id: raw.id.filter(|id| *id != 0),
            sid: raw.sid,
            seq: raw.seq,
            sending_ts_ms: raw.sending_ts_ms,
            body,
        },
        msg.map(RawValue::get),
    ))
}

/// Writes a server frame around an already-serialized `msg`, in Kalshi's key order
/// (`type`, `sid`, `seq`, `msg`), so a server can serialize a message once for many clients.
pub fn encode_frame(
    kind: &str,
    id: Option<u64>,
    sid: Option<u64>,
    seq: Option<u64>,
    sending_ts_ms: Option<i64>,
    msg_json: Option<&str>,
) -> String {
    let mut out = String::with_capacity(48 + msg_json.map_or(0, str::len));
    out.push('{');
    if let Some(id) = id {
        let _ = write!(out, "\"id\":{id},");
    }
    let _ = write!(out, "\"type\":\"{kind}\"");
    if let Some(sid) = sid {
        let _ = write!(out, ",\"sid\":{sid}");
    }
    if let Some(seq) = seq {
        let _ = write!(out, ",\"seq\":{seq}");
    }
    if let Some(ts) = sending_ts_ms {
        let _ = write!(out, ",\"sending_ts_ms\":{ts}");
    }
    if let Some(msg) = msg_json {
        out.push_str(",\"msg\":");
        out.push_str(msg);
    }
    out.push('}');
    out
}
