//! WebSocket v2 (`/trade-api/ws/v2`): commands, responses and data messages.
//!
//! A frame is parsed in two steps ([`parse_frame`]): the envelope (`type`, `id`, `sid`, `seq`,
//! `sending_ts_ms`) first, keeping `msg` as raw JSON, then `msg` by type. A client checks `seq`
//! from the envelope before it routes by type, as `kalshi-api.md` §4.7 requires, and a frame
//! whose `msg` does not parse still has a usable envelope: a bad `msg` must never cost the
//! envelope (and with it the `seq` check).

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{BookSide, Dollars, JsonDecimal, LegacyLevel, Level, PriceRange, Side};
use crate::fixed::{Price, Quantity};

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

// ---------------------------------------------------------------------------------------------
// Client -> server commands
// ---------------------------------------------------------------------------------------------

/// A command envelope as received: `{"id":..,"cmd":..,"params":{..}}`, params kept raw so a
/// server can answer each malformation with its own error code.
#[derive(Debug, Deserialize)]
pub struct RawCommand<'a> {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default, borrow)]
    pub cmd: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub params: Option<&'a RawValue>,
}

impl RawCommand<'_> {
    /// The command id, with `0` treated as absent as the spec says.
    pub fn id(&self) -> Option<u64> {
        self.id.filter(|id| *id != 0)
    }
}

/// A command to send: `{"id":..,"cmd":..,"params":..}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Command<P: Serialize> {
    pub id: u64,
    pub cmd: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<P>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubscribeParams {
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_ticker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_tickers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_initial_snapshot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_ticker_ack: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_yes_price: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_factor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_key: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_ids: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnsubscribeParams {
    #[serde(default)]
    pub sids: Option<Vec<u64>>,
}

/// `update_subscription` actions.
pub mod action {
    pub const ADD_MARKETS: &str = "add_markets";
    pub const DELETE_MARKETS: &str = "delete_markets";
    pub const GET_SNAPSHOT: &str = "get_snapshot";
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateSubscriptionParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sids: Option<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_ticker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_tickers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_initial_snapshot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// Builders for the commands a market-data client sends.
pub mod command {
    use super::*;

    pub fn subscribe(id: u64, params: SubscribeParams) -> String {
        to_json(&Command {
            id,
            cmd: "subscribe",
            params: Some(params),
        })
    }

    pub fn unsubscribe(id: u64, sids: Vec<u64>) -> String {
        to_json(&Command {
            id,
            cmd: "unsubscribe",
            params: Some(UnsubscribeParams { sids: Some(sids) }),
        })
    }

    pub fn update_subscription(
        id: u64,
        sid: u64,
        action: &str,
        market_tickers: Vec<String>,
    ) -> String {
        to_json(&Command {
            id,
            cmd: "update_subscription",
            params: Some(UpdateSubscriptionParams {
                sid: Some(sid),
                market_tickers: Some(market_tickers),
                action: Some(action.to_owned()),
                ..Default::default()
            }),
        })
    }

    pub fn list_subscriptions(id: u64) -> String {
        to_json(&Command::<()> {
            id,
            cmd: "list_subscriptions",
            params: None,
        })
    }

    fn to_json<P: Serialize>(c: &Command<P>) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(c).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Server -> client: responses
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribedMsg {
    pub channel: String,
    pub sid: u64,
}

/// `msg` of an `ok` reply to `update_subscription`: the full market list after the update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkMsg {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_tickers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_ids: Option<Vec<String>>,
}

/// One entry of the `list_subscriptions` reply (an `ok` whose `msg` is an array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    pub channel: String,
    pub sid: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_ticker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_id: Option<String>,
}

/// The WS error codes of `kalshi-api.md` §4.3.
pub mod error_code {
    pub const UNABLE_TO_PROCESS: u32 = 1;
    pub const PARAMS_REQUIRED: u32 = 2;
    pub const CHANNELS_REQUIRED: u32 = 3;
    pub const SIDS_REQUIRED: u32 = 4;
    pub const UNKNOWN_COMMAND: u32 = 5;
    pub const ALREADY_SUBSCRIBED: u32 = 6;
    pub const UNKNOWN_SID: u32 = 7;
    pub const UNKNOWN_CHANNEL: u32 = 8;
    pub const AUTH_REQUIRED: u32 = 9;
    pub const CHANNEL_ERROR: u32 = 10;
    pub const INVALID_PARAMETER: u32 = 11;
    pub const EXACTLY_ONE_SID: u32 = 12;
    pub const UNSUPPORTED_ACTION: u32 = 13;
    pub const MARKET_TICKER_REQUIRED: u32 = 14;
    pub const ACTION_REQUIRED: u32 = 15;
    pub const MARKET_NOT_FOUND: u32 = 16;
    pub const INTERNAL_ERROR: u32 = 17;
    pub const COMMAND_TIMEOUT: u32 = 18;
    pub const SHARD_FACTOR_POSITIVE: u32 = 19;
    pub const SHARD_FACTOR_REQUIRED: u32 = 20;
    pub const SHARD_KEY_RANGE: u32 = 21;
    pub const SHARD_FACTOR_MAX: u32 = 22;
    pub const MATCH_IDS_REQUIRED: u32 = 23;
    pub const INDEX_IDS_REQUIRED: u32 = 24;
    pub const BUFFER_OVERFLOW: u32 = 25;
    pub const MARKET_LIMIT: u32 = 26;
    pub const TOO_MANY_REQUESTS: u32 = 27;

    /// The message Kalshi sends with each code.
    pub fn message(code: u32) -> &'static str {
        match code {
            1 => "Unable to process message",
            2 => "Params required",
            3 => "Channels required",
            4 => "Subscription IDs required",
            5 => "Unknown command",
            6 => "Already subscribed",
            7 => "Unknown subscription ID",
            8 => "Unknown channel name",
            9 => "Authentication required",
            10 => "Channel error",
            11 => "Invalid parameter",
            12 => "Exactly one subscription ID is required",
            13 => "Unsupported action",
            14 => "Market Ticker required",
            15 => "Action required",
            16 => "Market not found",
            17 => "Internal error",
            18 => "Command timeout",
            19 => "shard_factor must be > 0",
            20 => "shard_factor is required when shard_key is set",
            21 => "shard_key must be >= 0 and < shard_factor",
            22 => "shard_factor must be <= 100",
            23 => "Match IDs required",
            24 => "Index IDs required",
            25 => "Subscription buffer overflow",
            26 => "Subscription market limit exceeded",
            27 => "Too many requests",
            _ => "Unknown error",
        }
    }

    /// Codes after which the subscription is dead and must be re-created.
    pub fn requires_resubscribe(code: u32) -> bool {
        matches!(code, CHANNEL_ERROR | INTERNAL_ERROR | BUFFER_OVERFLOW)
    }
}

// ---------------------------------------------------------------------------------------------
// Server -> client: data messages
// ---------------------------------------------------------------------------------------------

/// Why a required value could not be taken from a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{field} is missing (neither the fixed-point nor the legacy field is present)")]
    Missing { field: &'static str },
    #[error("{field} is out of range")]
    OutOfRange { field: &'static str },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn prefer_fp<T: Copy>(
    fp: Option<T>,
    legacy: Option<i64>,
    convert: impl Fn(i64) -> Option<T>,
    field: &'static str,
) -> Result<T, WireError> {
    match (fp, legacy) {
        (Some(v), _) => Ok(v),
        (None, Some(l)) => convert(l).ok_or(WireError::OutOfRange { field }),
        (None, None) => Err(WireError::Missing { field }),
    }
}

/// `orderbook_snapshot`: the full aggregated book of one market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderbookSnapshotMsg {
    pub market_ticker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_id: Option<String>,
    /// Legacy: `[cents, contracts]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes: Option<Vec<LegacyLevel>>,
    /// Legacy: `["0.080", 300]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_dollars: Option<Vec<Level>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_dollars_fp: Option<Vec<Level>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no: Option<Vec<LegacyLevel>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_dollars: Option<Vec<Level>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_dollars_fp: Option<Vec<Level>>,
}

impl OrderbookSnapshotMsg {
    /// The levels of one side, from the newest field present; an absent side is empty.
    pub fn levels(&self, side: Side) -> Result<Vec<(Price, Quantity)>, WireError> {
        let (fp, dollars, cents) = match side {
            Side::Yes => (&self.yes_dollars_fp, &self.yes_dollars, &self.yes),
            Side::No => (&self.no_dollars_fp, &self.no_dollars, &self.no),
        };
        if let Some(levels) = fp.as_ref().or(dollars.as_ref()) {
            return Ok(levels.iter().map(|l| (l.price.price(), l.count)).collect());
        }
        match cents {
            Some(levels) => levels
                .iter()
                .map(|LegacyLevel(c, n)| {
                    Ok((
                        Price::from_cents(*c).ok_or(WireError::OutOfRange { field: "price" })?,
                        Quantity::from_whole(*n).ok_or(WireError::OutOfRange { field: "count" })?,
                    ))
                })
                .collect(),
            None => Ok(Vec::new()),
        }
    }
}

/// `orderbook_delta`: a signed change of the resting size at one level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderbookDeltaMsg {
    pub market_ticker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_id: Option<String>,
    /// Legacy cents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_dollars: Option<Dollars>,
    /// Legacy whole contracts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_fp: Option<Quantity>,
    pub side: Side,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subaccount: Option<i64>,
    /// Deprecated RFC 3339 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<i64>,
}

impl OrderbookDeltaMsg {
    pub fn price_value(&self) -> Result<Price, WireError> {
        prefer_fp(
            self.price_dollars.map(Dollars::price),
            self.price,
            Price::from_cents,
            "price_dollars",
        )
    }

    pub fn delta_value(&self) -> Result<Quantity, WireError> {
        prefer_fp(self.delta_fp, self.delta, Quantity::from_whole, "delta_fp")
    }

    /// `ts_ms`, else the deprecated `ts` floored to the millisecond, else `None`.
    pub fn ts_ms_value(&self) -> Option<i64> {
        self.ts_ms.or_else(|| {
            self.ts
                .as_deref()
                .and_then(|t| crate::time::parse_rfc3339_ms(t).ok())
        })
    }
}

/// `trade`: a public print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TradeMsg {
    pub trade_id: String,
    pub market_ticker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_price: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_price_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_price: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_price_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_fp: Option<Quantity>,
    /// Deprecated in favour of `taker_outcome_side`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taker_side: Option<Side>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taker_outcome_side: Option<Side>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taker_book_side: Option<BookSide>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_block_trade: Option<bool>,
    /// Deprecated Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<i64>,
}

impl TradeMsg {
    pub fn yes_price_value(&self) -> Result<Price, WireError> {
        prefer_fp(
            self.yes_price_dollars.map(Dollars::price),
            self.yes_price,
            Price::from_cents,
            "yes_price_dollars",
        )
    }

    pub fn no_price_value(&self) -> Result<Price, WireError> {
        prefer_fp(
            self.no_price_dollars.map(Dollars::price),
            self.no_price,
            Price::from_cents,
            "no_price_dollars",
        )
    }

    pub fn count_value(&self) -> Result<Quantity, WireError> {
        prefer_fp(self.count_fp, self.count, Quantity::from_whole, "count_fp")
    }

    /// `taker_outcome_side`, else the deprecated `taker_side`.
    pub fn taker_outcome(&self) -> Option<Side> {
        self.taker_outcome_side.or(self.taker_side)
    }

    /// `ts_ms`, else the deprecated `ts` seconds as milliseconds.
    pub fn ts_ms_value(&self) -> Option<i64> {
        self.ts_ms
            .or_else(|| self.ts.and_then(|s| s.checked_mul(1_000)))
    }
}

/// `ticker`: the market's top-of-book and statistics, sent whenever one of them changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TickerMsg {
    pub market_ticker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_bid: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_ask: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_bid_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_ask_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_fp: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_interest: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_interest_fp: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dollar_volume: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dollar_open_interest: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_bid_size_fp: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_ask_size_fp: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trade_size_fp: Option<Quantity>,
    /// Deprecated Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<i64>,
    /// Deprecated RFC 3339 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

impl TickerMsg {
    /// `ts_ms`, else `time`, else `ts` seconds.
    pub fn ts_ms_value(&self) -> Option<i64> {
        self.ts_ms
            .or_else(|| {
                self.time
                    .as_deref()
                    .and_then(|t| crate::time::parse_rfc3339_ms(t).ok())
            })
            .or_else(|| self.ts.and_then(|s| s.checked_mul(1_000)))
    }
}

/// `additional_metadata` of a `created` lifecycle message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LifecycleMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_sub_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_sub_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_secondary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_close_early: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_ticker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_expiration_ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strike_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_strike: Option<JsonDecimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_strike: Option<JsonDecimal>,
}

/// Lifecycle event types (the enum is open: unknown values are kept as text).
pub mod lifecycle_event {
    pub const CREATED: &str = "created";
    pub const ACTIVATED: &str = "activated";
    pub const DEACTIVATED: &str = "deactivated";
    pub const CLOSE_DATE_UPDATED: &str = "close_date_updated";
    pub const DETERMINED: &str = "determined";
    pub const SETTLED: &str = "settled";
    pub const PRICE_LEVEL_STRUCTURE_UPDATED: &str = "price_level_structure_updated";
    pub const METADATA_UPDATED: &str = "metadata_updated";
}

/// `market_lifecycle_v2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketLifecycleMsg {
    pub market_ticker: String,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub determination_ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_value: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_deactivated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_level_structure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_ranges: Option<Vec<PriceRange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strike_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_strike: Option<JsonDecimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_strike: Option<JsonDecimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_sub_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<LifecycleMetadata>,
}

/// `event_lifecycle` (arrives on the `market_lifecycle_v2` subscription).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLifecycleMsg {
    pub event_ticker: String,
    #[serde(default)]
    pub title: String,
    /// `sub_title` in a 2025 example; both are accepted.
    #[serde(default, alias = "sub_title")]
    pub subtitle: String,
    #[serde(default)]
    pub collateral_return_type: String,
    #[serde(default)]
    pub series_ticker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strike_date: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strike_period: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

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

/// Parses one text frame from the server.
pub fn parse_frame(text: &str) -> Result<Frame, FrameError> {
    let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|e| {
        let mut s = e.to_string();
        s.truncate(200);
        FrameError::Malformed(s)
    })?;
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
        | frame_type::EVENT_LIFECYCLE => typed(need_msg()?).map_err(|e| {
            let mut error = e.to_string();
            error.truncate(200);
            FrameError::BadMessage {
                kind: kind.to_owned(),
                error,
            }
        })?,
        other => FrameBody::Unknown(other.chars().take(64).collect()),
    };
    Ok(Frame {
        id: raw.id.filter(|id| *id != 0),
        sid: raw.sid,
        seq: raw.seq,
        sending_ts_ms: raw.sending_ts_ms,
        body,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_examples() {
        let f = parse_frame(
            r#"{"type":"orderbook_snapshot","sid":2,"seq":2,"msg":{
            "market_ticker":"FED-23DEC-T3.00","market_id":"9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1",
            "yes_dollars_fp":[["0.0800","300.00"],["0.2200","333.00"]],
            "no_dollars_fp":[["0.5400","20.00"],["0.5600","146.00"]]}}"#,
        )
        .unwrap();
        assert_eq!((f.sid, f.seq), (Some(2), Some(2)));
        let FrameBody::OrderbookSnapshot(s) = f.body else {
            panic!("not a snapshot")
        };
        assert_eq!(
            s.levels(Side::Yes).unwrap(),
            vec![
                (Price::from_raw(80_000), Quantity::from_raw(30_000)),
                (Price::from_raw(220_000), Quantity::from_raw(33_300))
            ]
        );

        let f = parse_frame(
            r#"{"type":"orderbook_delta","sid":2,"seq":3,"msg":{
            "market_ticker":"FED-23DEC-T3.00","market_id":"9b0f6b43-x",
            "price_dollars":"0.960","delta_fp":"-54.00","side":"yes",
            "ts":"2022-11-22T20:44:01Z","ts_ms":1669149841000}}"#,
        )
        .unwrap();
        let FrameBody::OrderbookDelta(d) = &f.body else {
            panic!("not a delta")
        };
        assert_eq!(d.price_value().unwrap().raw(), 960_000);
        assert_eq!(d.delta_value().unwrap().raw(), -5_400);
        assert_eq!(d.ts_ms_value(), Some(1_669_149_841_000));

        let f = parse_frame(
            r#"{"type":"trade","sid":11,"msg":{"trade_id":"d91bc706-ee49-470d-82d8-11418bda6fed",
            "market_ticker":"HIGHNY-22DEC23-B53.5","yes_price_dollars":"0.360","no_price_dollars":"0.640",
            "count_fp":"136.00","taker_side":"no","taker_outcome_side":"no","taker_book_side":"ask",
            "is_block_trade":false,"ts":1669149841,"ts_ms":1669149841000}}"#,
        )
        .unwrap();
        let FrameBody::Trade(t) = &f.body else {
            panic!("not a trade")
        };
        assert_eq!(t.count_value().unwrap().raw(), 13_600);
        assert_eq!(t.taker_outcome(), Some(Side::No));
        assert_eq!(f.seq, None);

        let f = parse_frame(
            r#"{"type":"ticker","sending_ts_ms":1669149841123,"sid":11,"msg":{
            "market_id":"9b0f6b43","market_ticker":"FED-23DEC-T3.00",
            "price_dollars":"0.4800","yes_bid_dollars":"0.4500","yes_ask_dollars":"0.5300",
            "volume_fp":"33896.00","open_interest_fp":"20422.00","dollar_volume":16948,"dollar_open_interest":10211,
            "yes_bid_size_fp":"300.00","yes_ask_size_fp":"150.00","last_trade_size_fp":"25.00",
            "ts":1669149841,"ts_ms":1669149841000,"time":"2022-11-22T20:44:01Z"}}"#,
        )
        .unwrap();
        assert_eq!(f.sending_ts_ms, Some(1_669_149_841_123));
        assert!(matches!(f.body, FrameBody::Ticker(_)));

        let f = parse_frame(
            r#"{"type":"market_lifecycle_v2","sid":13,"msg":{"market_ticker":"INXD-23SEP14-B4487","event_type":"created",
             "open_ts":1694635200,"close_ts":1694721600,
             "additional_metadata":{"name":"S&P","title":"t","yes_sub_title":"y","no_sub_title":"n",
              "rules_primary":"r","rules_secondary":"","can_close_early":true,"event_ticker":"INXD-23SEP14",
              "expected_expiration_ts":1694721600,"strike_type":"greater","floor_strike":4487}}}"#,
        )
        .unwrap();
        let FrameBody::MarketLifecycle(l) = &f.body else {
            panic!("not lifecycle")
        };
        assert_eq!(
            l.additional_metadata
                .as_ref()
                .unwrap()
                .floor_strike
                .as_ref()
                .unwrap()
                .as_str(),
            "4487"
        );

        let f = parse_frame(
            r#"{"type":"event_lifecycle","sid":5,"msg":{"event_ticker":"KXQ-26JAN25H2150",
             "title":"t","sub_title":"Jan 25","collateral_return_type":"MECNET","series_ticker":"KXQ"}}"#,
        )
        .unwrap();
        let FrameBody::EventLifecycle(e) = &f.body else {
            panic!("not event lifecycle")
        };
        assert_eq!(e.subtitle, "Jan 25");
    }

    #[test]
    fn parses_responses() {
        let f = parse_frame(
            r#"{"id":1,"type":"subscribed","msg":{"channel":"orderbook_delta","sid":1}}"#,
        )
        .unwrap();
        assert_eq!(f.id, Some(1));
        assert!(matches!(
            f.body,
            FrameBody::Subscribed(SubscribedMsg { sid: 1, .. })
        ));
        let f = parse_frame(r#"{"id":102,"sid":2,"seq":7,"type":"unsubscribed"}"#).unwrap();
        assert_eq!(
            (f.sid, f.seq, f.body),
            (Some(2), Some(7), FrameBody::Unsubscribed)
        );
        let f = parse_frame(
            r#"{"id":123,"sid":456,"seq":222,"type":"ok","msg":{"market_tickers":["M-1","M-2"]}}"#,
        )
        .unwrap();
        assert_eq!(f.seq, Some(222));
        assert!(
            matches!(f.body, FrameBody::Ok(OkMsg { market_tickers: Some(ref t), .. }) if t.len() == 2)
        );
        let f = parse_frame(
            r#"{"id":3,"type":"ok","msg":[{"channel":"orderbook_delta","sid":1},{"channel":"ticker","sid":2}]}"#,
        )
        .unwrap();
        assert!(matches!(f.body, FrameBody::SubscriptionList(ref l) if l.len() == 2));
        let f = parse_frame(
            r#"{"id":127,"type":"error","msg":{"code":16,"msg":"Market not found","market_ticker":"X"}}"#,
        )
        .unwrap();
        assert!(matches!(
            f.body,
            FrameBody::Error(ErrorMsg { code: 16, .. })
        ));
        let f = parse_frame(r#"{"id":0,"type":"error","msg":{"code":1,"msg":"x"}}"#).unwrap();
        assert_eq!(f.id, None, "id 0 means absent");
    }

    #[test]
    fn legacy_fields_are_used_when_newer_ones_are_absent() {
        let f = parse_frame(
            r#"{"type":"orderbook_delta","sid":2,"seq":3,"msg":{"market_ticker":"M","market_id":"x",
            "price":96,"delta":-54,"side":"no","ts":"2022-11-22T20:44:01.5Z"}}"#,
        )
        .unwrap();
        let FrameBody::OrderbookDelta(d) = f.body else {
            panic!()
        };
        assert_eq!(d.price_value().unwrap().raw(), 960_000);
        assert_eq!(d.delta_value().unwrap().raw(), -5_400);
        assert_eq!(d.ts_ms_value(), Some(1_669_149_841_500));
        let f = parse_frame(
            r#"{"type":"orderbook_snapshot","sid":2,"seq":2,"msg":{"market_ticker":"M","market_id":"x",
            "yes":[[8,300]],"no":[[54,20]]}}"#,
        )
        .unwrap();
        let FrameBody::OrderbookSnapshot(s) = f.body else {
            panic!()
        };
        assert_eq!(
            s.levels(Side::No).unwrap(),
            vec![(Price::from_raw(540_000), Quantity::from_raw(2_000))]
        );
        let f = parse_frame(
            r#"{"type":"trade","sid":1,"msg":{"trade_id":"t","market_ticker":"M","yes_price":36,"no_price":64,"count":136,"taker_side":"no","ts":1669149841}}"#,
        )
        .unwrap();
        let FrameBody::Trade(t) = f.body else {
            panic!()
        };
        assert_eq!(t.yes_price_value().unwrap().raw(), 360_000);
        assert_eq!(t.ts_ms_value(), Some(1_669_149_841_000));
        // Missing both forms is a clear error, not a default.
        let f = parse_frame(
            r#"{"type":"orderbook_delta","sid":2,"seq":3,"msg":{"market_ticker":"M","side":"no"}}"#,
        )
        .unwrap();
        let FrameBody::OrderbookDelta(d) = f.body else {
            panic!()
        };
        assert_eq!(
            d.price_value(),
            Err(WireError::Missing {
                field: "price_dollars"
            })
        );
    }

    #[test]
    fn bad_frames_are_classified() {
        assert_eq!(parse_frame("not json").unwrap_err().label(), "malformed");
        assert_eq!(parse_frame("[1,2]").unwrap_err().label(), "malformed");
        assert_eq!(
            parse_frame(r#"{"sid":1}"#).unwrap_err(),
            FrameError::MissingType
        );
        let e = parse_frame(r#"{"type":"orderbook_delta","sid":1,"seq":1,"msg":{"side":"up"}}"#)
            .unwrap_err();
        assert_eq!(e.label(), "orderbook_delta");
        let e = parse_frame(r#"{"type":"trade","sid":1}"#).unwrap_err();
        assert!(matches!(e, FrameError::MissingMsg { .. }));
        // An unknown type parses (with its envelope, so seq can still be checked).
        let f = parse_frame(r#"{"type":"cfbenchmarks_value","sid":4,"seq":9,"msg":{}}"#).unwrap();
        assert_eq!(f.seq, Some(9));
        assert_eq!(f.body, FrameBody::Unknown("cfbenchmarks_value".into()));
        // Unknown fields are ignored.
        let f = parse_frame(
            r#"{"type":"trade","sid":1,"new_field":[1],"msg":{"trade_id":"t","market_ticker":"M","yes_price_dollars":"0.5","no_price_dollars":"0.5","count_fp":"1.00","ts_ms":1,"surprise":{"a":1}}}"#,
        )
        .unwrap();
        assert!(matches!(f.body, FrameBody::Trade(_)));
    }

    #[test]
    fn encodes_frames_in_kalshi_key_order() {
        assert_eq!(
            encode_frame("orderbook_delta", None, Some(2), Some(3), None, Some("{}")),
            r#"{"type":"orderbook_delta","sid":2,"seq":3,"msg":{}}"#
        );
        assert_eq!(
            encode_frame("unsubscribed", Some(102), Some(2), Some(7), None, None),
            r#"{"id":102,"type":"unsubscribed","sid":2,"seq":7}"#
        );
        assert_eq!(
            encode_frame("ticker", None, Some(11), None, Some(5), Some("{}")),
            r#"{"type":"ticker","sid":11,"sending_ts_ms":5,"msg":{}}"#
        );
    }

    #[test]
    fn commands_serialize_as_documented() {
        let s = command::subscribe(
            2,
            SubscribeParams {
                channels: Some(vec!["orderbook_delta".into(), "ticker".into()]),
                market_tickers: Some(vec!["FED-23DEC-T3.00".into()]),
                use_yes_price: Some(false),
                ..Default::default()
            },
        );
        assert_eq!(
            s,
            r#"{"id":2,"cmd":"subscribe","params":{"channels":["orderbook_delta","ticker"],"market_tickers":["FED-23DEC-T3.00"],"use_yes_price":false}}"#
        );
        assert_eq!(
            command::update_subscription(127, 456, action::GET_SNAPSHOT, vec!["M-1".into()]),
            r#"{"id":127,"cmd":"update_subscription","params":{"sid":456,"market_tickers":["M-1"],"action":"get_snapshot"}}"#
        );
        assert_eq!(
            command::list_subscriptions(3),
            r#"{"id":3,"cmd":"list_subscriptions"}"#
        );
        assert_eq!(
            command::unsubscribe(124, vec![1, 2]),
            r#"{"id":124,"cmd":"unsubscribe","params":{"sids":[1,2]}}"#
        );
    }
}
