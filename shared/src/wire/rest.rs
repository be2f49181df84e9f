//! REST v2 (`/trade-api/v2`) models: markets, events, series, trades, order books, exchange
//! status and error bodies, in the newest shapes (`kalshi-api.md` §5.3, SDK 3.34).
//!
//! Every field but the identifying ticker has a default, so an older or newer payload still
//! parses; `Option` fields are omitted from output when `None`. It must never refuse a payload
//! for a missing field other than the ticker.

use serde::{Deserialize, Serialize};

use super::{BookSide, Dollars, JsonDecimal, LegacyLevel, Level, PriceRange, Side};
use crate::fixed::{Price, Quantity};
use crate::wire::ws::WireError;

/// The REST base path; part of every REST signature.
pub const REST_PREFIX: &str = "/trade-api/v2";

/// Market `status` values as the response field spells them.
pub mod market_status {
    pub const INITIALIZED: &str = "initialized";
    pub const INACTIVE: &str = "inactive";
    pub const ACTIVE: &str = "active";
    pub const CLOSED: &str = "closed";
    pub const DETERMINED: &str = "determined";
    pub const DISPUTED: &str = "disputed";
    pub const AMENDED: &str = "amended";
    pub const FINALIZED: &str = "finalized";

    /// The `status` query filter uses another vocabulary (`kalshi-api.md` §5.4). Returns the
    /// response statuses a filter value selects, or `None` for a value the API rejects.
    pub fn filter_matches(filter: &str) -> Option<&'static [&'static str]> {
        match filter {
            "unopened" => Some(&[INITIALIZED]),
            "open" => Some(&[ACTIVE]),
            "closed" => Some(&[CLOSED, DETERMINED]),
            "settled" => Some(&[FINALIZED]),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MveSelectedLeg {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_ticker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_ticker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_settlement_value_dollars: Option<Dollars>,
}

/// A market (`GET /markets`, `/markets/{ticker}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Market {
    pub ticker: String,
    #[serde(default)]
    pub event_ticker: String,
    #[serde(default)]
    pub market_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<String>,
    #[serde(default)]
    pub yes_sub_title: String,
    #[serde(default)]
    pub no_sub_title: String,
    #[serde(default)]
    pub created_time: String,
    #[serde(default)]
    pub updated_time: String,
    #[serde(default)]
    pub open_time: String,
    #[serde(default)]
    pub close_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_expiration_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<String>,
    #[serde(default)]
    pub latest_expiration_time: String,
    #[serde(default)]
    pub settlement_timer_seconds: i64,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notional_value_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_bid_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_bid_size_fp: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_ask_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_ask_size_fp: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_bid_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_ask_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_price_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_yes_bid_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_yes_ask_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_price_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_fp: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_24h_fp: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_interest_fp: Option<Quantity>,
    #[serde(default)]
    pub result: String,
    #[serde(default)]
    pub can_close_early: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_bounds_type: Option<String>,
    #[serde(default)]
    pub expiration_value: String,
    #[serde(default)]
    pub rules_primary: String,
    #[serde(default)]
    pub rules_secondary: String,
    #[serde(default)]
    pub price_level_structure: String,
    #[serde(default)]
    pub price_ranges: Vec<PriceRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_value_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_floor_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrence_datetime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_waiver_expiration_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_close_condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strike_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_strike: Option<JsonDecimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_strike: Option<JsonDecimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functional_strike: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_strike: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mve_collection_ticker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mve_selected_legs: Option<Vec<MveSelectedLeg>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_participant_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_provisional: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_index: Option<i64>,
    // Legacy integer fields (gone since OpenAPI 3.10); accepted, emitted only in legacy mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_bid: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_ask: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_bid: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_ask: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_price: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_24h: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_interest: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// An event (`GET /events`, `/events/{event_ticker}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    pub event_ticker: String,
    #[serde(default)]
    pub series_ticker: String,
    #[serde(default)]
    pub sub_title: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub collateral_return_type: String,
    #[serde(default)]
    pub mutually_exclusive: bool,
    /// Deprecated; series-level `category` replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strike_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strike_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markets: Option<Vec<Market>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_on_brokers: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_metadata: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_sources: Option<Vec<SettlementSource>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_type_override: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_multiplier_override: Option<JsonDecimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_index: Option<i64>,
}

/// A series (`GET /series`, `/series/{series_ticker}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub ticker: String,
    #[serde(default)]
    pub frequency: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub categories: Vec<String>,
    /// Often `null` in production (`kalshi-api.md` A-35); kept as `null` on output.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_sources: Option<Vec<SettlementSource>>,
    #[serde(default)]
    pub contract_url: String,
    #[serde(default)]
    pub contract_terms_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_metadata: Option<serde_json::Value>,
    /// An open vocabulary: values beyond the documented enum have been observed.
    #[serde(default)]
    pub fee_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_multiplier: Option<JsonDecimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_prohibitions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_fp: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_index: Option<i64>,
}

/// A public trade (`GET /markets/trades`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trade {
    pub trade_id: String,
    pub ticker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_fp: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_price_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_price_dollars: Option<Dollars>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taker_side: Option<Side>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taker_outcome_side: Option<Side>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taker_book_side: Option<BookSide>,
    #[serde(default)]
    pub created_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_block_trade: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_price: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_price: Option<i64>,
}

impl Trade {
    pub fn count_value(&self) -> Result<Quantity, WireError> {
        match (self.count_fp, self.count) {
            (Some(q), _) => Ok(q),
            (None, Some(c)) => {
                Quantity::from_whole(c).ok_or(WireError::OutOfRange { field: "count" })
            }
            _ => Err(WireError::Missing { field: "count_fp" }),
        }
    }

    pub fn yes_price_value(&self) -> Result<Price, WireError> {
        match (self.yes_price_dollars, self.yes_price) {
            (Some(p), _) => Ok(p.price()),
            (None, Some(c)) => {
                Price::from_cents(c).ok_or(WireError::OutOfRange { field: "yes_price" })
            }
            _ => Err(WireError::Missing {
                field: "yes_price_dollars",
            }),
        }
    }

    pub fn no_price_value(&self) -> Result<Price, WireError> {
        match (self.no_price_dollars, self.no_price) {
            (Some(p), _) => Ok(p.price()),
            (None, Some(c)) => {
                Price::from_cents(c).ok_or(WireError::OutOfRange { field: "no_price" })
            }
            _ => Err(WireError::Missing {
                field: "no_price_dollars",
            }),
        }
    }

    /// `created_time` floored to the millisecond: the same value the WS gives as `ts_ms`.
    pub fn created_ms(&self) -> Result<i64, WireError> {
        crate::time::parse_rfc3339_ms(&self.created_time).map_err(|e| WireError::Invalid {
            field: "created_time",
            reason: e.to_string(),
        })
    }

    pub fn taker_outcome(&self) -> Option<Side> {
        self.taker_outcome_side.or(self.taker_side)
    }
}

/// `orderbook_fp`: levels ascending by price (best bid last). A side may be `null` or absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderbookFp {
    #[serde(default)]
    pub yes_dollars: Option<Vec<Level>>,
    #[serde(default)]
    pub no_dollars: Option<Vec<Level>>,
}

/// The legacy `orderbook` object (≤ OpenAPI 3.6).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyOrderbook {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes: Option<Vec<LegacyLevel>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no: Option<Vec<LegacyLevel>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes_dollars: Option<Vec<Level>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_dollars: Option<Vec<Level>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GetMarketOrderbookResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orderbook: Option<LegacyOrderbook>,
    #[serde(default)]
    pub orderbook_fp: OrderbookFp,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MarketOrderbook {
    pub ticker: String,
    #[serde(default)]
    pub orderbook_fp: OrderbookFp,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GetMarketOrderbooksResponse {
    pub orderbooks: Vec<MarketOrderbook>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExchangeStatus {
    pub exchange_active: bool,
    pub trading_active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intra_exchange_transfers_active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_estimated_resume_time: Option<String>,
}

/// The documented error body `{code, message, details?, service?}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// The body of a 429: `{"error":"too many requests"}` (no headers say when to retry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitBody {
    pub error: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GetMarketsResponse {
    pub markets: Vec<Market>,
    #[serde(default)]
    pub cursor: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GetMarketResponse {
    pub market: Market,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GetTradesResponse {
    pub trades: Vec<Trade>,
    #[serde(default)]
    pub cursor: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GetEventsResponse {
    pub events: Vec<EventData>,
    #[serde(default)]
    pub cursor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milestones: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GetEventResponse {
    pub event: EventData,
    /// Deprecated: empty when `with_nested_markets=true` (markets are inside `event`).
    #[serde(default)]
    pub markets: Vec<Market>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GetSeriesListResponse {
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GetSeriesResponse {
    pub series: Series,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_tolerates_old_and_unknown_fields() {
        let m: Market = serde_json::from_str(
            r#"{"ticker":"M-1","event_ticker":"E","status":"active","yes_bid":45,"liquidity_dollars":"1.0",
                "fractional_trading_enabled":true,"floor_strike":114999.99,"tick_size":1,
                "price_ranges":[{"start":"0.01","end":"0.99","step":"0.01"}]}"#,
        )
        .unwrap();
        assert_eq!(m.yes_bid, Some(45));
        assert_eq!(m.floor_strike.unwrap().as_str(), "114999.99");
        assert_eq!(m.price_ranges[0].step.price().raw(), 10_000);
    }

    #[test]
    fn trade_time_normalises_to_the_ws_millisecond() {
        let t: Trade = serde_json::from_str(
            r#"{"trade_id":"t","ticker":"M","count_fp":"1.00","yes_price_dollars":"0.5","no_price_dollars":"0.5",
                "taker_outcome_side":"yes","taker_book_side":"bid","created_time":"2026-09-16T17:54:15.469939Z","is_block_trade":false}"#,
        )
        .unwrap();
        assert_eq!(t.created_ms().unwrap(), 1_789_581_255_469);
        assert_eq!(t.taker_outcome(), Some(Side::Yes));
    }

    #[test]
    fn orderbook_sides_may_be_null() {
        let r: GetMarketOrderbookResponse = serde_json::from_str(
            r#"{"orderbook_fp":{"yes_dollars":null,"no_dollars":[["0.40","5.00"]]}}"#,
        )
        .unwrap();
        assert!(r.orderbook_fp.yes_dollars.is_none());
        assert_eq!(r.orderbook_fp.no_dollars.unwrap().len(), 1);
    }

    #[test]
    fn status_filter_vocabulary() {
        assert_eq!(market_status::filter_matches("open"), Some(&["active"][..]));
        assert_eq!(
            market_status::filter_matches("closed"),
            Some(&["closed", "determined"][..])
        );
        assert_eq!(market_status::filter_matches("active"), None);
    }
}
