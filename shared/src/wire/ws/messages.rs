//! Data messages: order-book snapshots and deltas, trades, tickers, market and event
//! lifecycle, with fixed-point prices and quantities (the `_fp`/`_dollars` fields preferred
//! over the legacy integer ones).
//!
//! It must never turn a price or a quantity into a float.

use serde::{Deserialize, Serialize};

use super::super::{BookSide, Dollars, JsonDecimal, LegacyLevel, Level, PriceRange, Side};
use crate::fixed::{Price, Quantity};

// Server -> client: data messages

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

/// A ticker's values as fixed-point integers (production's typed ticker columns): prices in
/// micro-dollars, sizes, volume and open interest in centi-contracts; None where the message
/// had none. The dollar and `_fp` fields win over the legacy integer ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickerValues {
    pub price: Option<i64>,
    pub yes_bid: Option<i64>,
    pub yes_ask: Option<i64>,
    pub yes_bid_size: Option<i64>,
    pub yes_ask_size: Option<i64>,
    pub volume: Option<i64>,
    pub open_interest: Option<i64>,
}

impl TickerValues {
    /// The values of a ticker message's JSON text (all None when it does not parse).
    pub fn of(body: &str) -> TickerValues {
        serde_json::from_str::<TickerMsg>(body)
            .map_or_else(|_| TickerValues::default(), |t| t.values())
    }
}

impl TickerMsg {
    pub fn values(&self) -> TickerValues {
        let price = |d: Option<crate::wire::Dollars>, cents: Option<i64>| {
            d.map(|d| d.price().raw()).or_else(|| {
                cents
                    .and_then(crate::Price::from_cents)
                    .map(crate::Price::raw)
            })
        };
        let qty = |q: Option<crate::Quantity>, whole: Option<i64>| {
            q.map(crate::Quantity::raw).or_else(|| {
                whole
                    .and_then(crate::Quantity::from_whole)
                    .map(crate::Quantity::raw)
            })
        };
        TickerValues {
            price: price(self.price_dollars, self.price),
            yes_bid: price(self.yes_bid_dollars, self.yes_bid),
            yes_ask: price(self.yes_ask_dollars, self.yes_ask),
            yes_bid_size: self.yes_bid_size_fp.map(crate::Quantity::raw),
            yes_ask_size: self.yes_ask_size_fp.map(crate::Quantity::raw),
            volume: qty(self.volume_fp, self.volume),
            open_interest: qty(self.open_interest_fp, self.open_interest),
        }
    }

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
