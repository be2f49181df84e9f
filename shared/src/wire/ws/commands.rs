//! Commands a client sends (subscribe, unsubscribe, update_subscription, list) and the
//! control messages the server answers with (subscribed, ok, error, with Kalshi's error codes).
//!
//! It must never build a command that Kalshi's AsyncAPI document would reject (the
//! conformance tests check every builder against it).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

// Client -> server commands

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

// Server -> client: responses

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
