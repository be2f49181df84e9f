//! REST v2 (`/trade-api/v2`): markets, trades, order books, events, series, exchange status.
//!
//! Pagination is keyset-based (a cursor names the last row returned), so paging while the
//! exchange adds markets and trades returns every row exactly once; the last page's cursor is
//! `""`. Limits and filter rules follow `kalshi-api.md` §5, including the status-vocabulary
//! trap (`status=active` is a 400) and the mutually exclusive timestamp filters.
//!
//! Paging must never return a row twice or skip one.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kalshi_shared::Price;
use kalshi_shared::wire::rest::{
    GetEventResponse, GetEventsResponse, GetMarketOrderbookResponse, GetMarketOrderbooksResponse,
    GetSeriesListResponse, GetSeriesResponse, LegacyOrderbook, Market, MarketOrderbook,
    OrderbookFp, market_status,
};
use kalshi_shared::wire::{Dollars, LegacyLevel, Level, Side};

use crate::engine::Exchange;
use crate::guard::{ApiError, error_response, rest_guard};
use crate::universe::Status;
use crate::{SimState, lock};

mod exchange_state;
mod tiers;

use exchange_state::{exchange_schedule, exchange_status, raw_json};
use tiers::{historical_cutoff, historical_market, historical_markets, historical_trades, trades};

pub fn router(state: Arc<SimState>) -> Router {
    let p = kalshi_shared::wire::rest::REST_PREFIX;
    Router::new()
        .route(&format!("{p}/markets"), get(markets))
        .route(&format!("{p}/markets/trades"), get(trades))
        .route(&format!("{p}/markets/orderbooks"), get(orderbooks))
        .route(&format!("{p}/markets/{{ticker}}"), get(market))
        .route(&format!("{p}/markets/{{ticker}}/orderbook"), get(orderbook))
        .route(&format!("{p}/events"), get(events))
        .route(&format!("{p}/events/{{ticker}}"), get(event))
        .route(&format!("{p}/series"), get(series_list))
        .route(&format!("{p}/series/{{ticker}}"), get(series))
        .route(&format!("{p}/exchange/status"), get(exchange_status))
        .route(&format!("{p}/exchange/schedule"), get(exchange_schedule))
        .route(&format!("{p}/historical/cutoff"), get(historical_cutoff))
        .route(&format!("{p}/historical/trades"), get(historical_trades))
        .route(&format!("{p}/historical/markets"), get(historical_markets))
        .route(
            &format!("{p}/historical/markets/{{ticker}}"),
            get(historical_market),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), rest_guard))
        .fallback(|| async {
            error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .with_state(state)
}

type ApiResult = Result<Response, ApiError>;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("{what} not found"),
    )
}

/// Query parameters in order, repeated keys kept.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<String>) -> Self {
        Self(
            raw.map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| bad(format!("invalid {name}: {v:?} is not an integer")))
            })
            .transpose()
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(bad(format!("invalid {name}: {v:?} is not a boolean"))),
        }
    }

    fn limit(&self, default: i64, max: i64) -> Result<usize, ApiError> {
        let limit = self.int("limit")?.unwrap_or(default);
        if !(1..=max).contains(&limit) {
            return Err(bad(format!("limit must be between 1 and {max}")));
        }
        Ok(limit as usize)
    }
}

fn encode_cursor(kind: char, n: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{n}"))
}

fn decode_cursor(q: &Query, kind: char) -> Result<Option<u64>, ApiError> {
    let Some(c) = q.get("cursor") else {
        return Ok(None);
    };
    let text = URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| bad("invalid cursor"))?;
    let (k, n) = text.split_once(':').ok_or_else(|| bad("invalid cursor"))?;
    if k.len() != 1 || !k.starts_with(kind) {
        return Err(bad("cursor belongs to another endpoint"));
    }
    n.parse().map(Some).map_err(|_| bad("invalid cursor"))
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

/// A market as REST serves it: with the `corrupt_markets` fault, a market at or past the
/// fault's index is served with a field of the wrong type (the truth reports it so too).
pub(crate) fn market_json(state: &SimState, idx: u32, m: &Market) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    if lock(&state.faults)
        .corrupt_markets_from
        .is_some_and(|from| idx >= from)
    {
        v["settlement_timer_seconds"] = serde_json::Value::String("soon".into());
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Markets
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct MarketFilter {
    event: Option<String>,
    series: Option<String>,
    statuses: Option<&'static [&'static str]>,
    tickers: Option<HashSet<String>>,
    mve: Option<bool>,
    created: (Option<i64>, Option<i64>),
    close: (Option<i64>, Option<i64>),
    settled: (Option<i64>, Option<i64>),
    min_updated: Option<i64>,
}

impl MarketFilter {
    fn parse(q: &Query) -> Result<Self, ApiError> {
        let event = q.get("event_ticker").map(str::to_owned);
        if event.as_deref().is_some_and(|e| e.contains(',')) {
            return Err(bad("event_ticker accepts a single event ticker"));
        }
        let status = q.get("status");
        let statuses = match status {
            Some(s) => {
                Some(market_status::filter_matches(s).ok_or_else(|| bad("invalid status filter"))?)
            }
            None => None,
        };
        let mve = match q.get("mve_filter") {
            None => None,
            Some("only") => Some(true),
            Some("exclude") => Some(false),
            Some(v) => {
                return Err(bad(format!(
                    "invalid mve_filter {v:?}: use only or exclude"
                )));
            }
        };
        let f = Self {
            event,
            series: q.get("series_ticker").map(str::to_owned),
            statuses,
            tickers: {
                let t = q.all("tickers");
                (!t.is_empty()).then(|| t.into_iter().map(str::to_owned).collect())
            },
            mve,
            created: (q.int("min_created_ts")?, q.int("max_created_ts")?),
            close: (q.int("min_close_ts")?, q.int("max_close_ts")?),
            settled: (q.int("min_settled_ts")?, q.int("max_settled_ts")?),
            min_updated: q.int("min_updated_ts")?,
        };
        let groups = [
            f.created.0.is_some() || f.created.1.is_some(),
            f.close.0.is_some() || f.close.1.is_some(),
            f.settled.0.is_some() || f.settled.1.is_some(),
            f.min_updated.is_some(),
        ];
        if groups.iter().filter(|g| **g).count() > 1 {
            return Err(bad(
                "timestamp filters of different kinds are mutually exclusive",
            ));
        }
        let st = status.unwrap_or("");
        if groups[0] && !matches!(st, "" | "unopened" | "open") {
            return Err(bad(
                "created_ts filters work only with status unopened, open or none",
            ));
        }
        if groups[1] && !matches!(st, "" | "closed") {
            return Err(bad("close_ts filters work only with status closed or none"));
        }
        if groups[2] && !matches!(st, "" | "settled") {
            return Err(bad(
                "settled_ts filters work only with status settled or none",
            ));
        }
        if groups[3] && (!st.is_empty() || f.mve != Some(false)) {
            return Err(bad(
                "min_updated_ts works only without status and with mve_filter=exclude",
            ));
        }
        if groups[3] && f.series.is_some() && f.mve != Some(false) {
            return Err(bad(
                "series_ticker with min_updated_ts requires mve_filter=exclude",
            ));
        }
        Ok(f)
    }

    fn matches(&self, ex: &Exchange, idx: usize) -> bool {
        let m = &ex.markets[idx];
        let in_range = |v: i64, (lo, hi): (Option<i64>, Option<i64>)| {
            lo.is_none_or(|lo| v >= lo) && hi.is_none_or(|hi| v <= hi)
        };
        let event = &ex.events[m.event];
        self.event.as_ref().is_none_or(|e| *e == event.ticker)
            && self
                .series
                .as_ref()
                .is_none_or(|s| ex.series.get(event.series).is_some_and(|x| x.ticker == *s))
            && self.statuses.is_none_or(|s| s.contains(&m.status.as_str()))
            && self.tickers.as_ref().is_none_or(|t| t.contains(&m.ticker))
            && self.mve.is_none_or(|only| m.is_mve == only)
            && in_range(m.created_ms / 1000, self.created)
            && in_range(m.close_s, self.close)
            && (self.settled == (None, None)
                || m.settled_ms
                    .is_some_and(|s| in_range(s / 1000, self.settled)))
            && self.min_updated.is_none_or(|u| m.updated_ms / 1000 >= u)
    }
}

async fn markets(State(state): State<Arc<SimState>>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw);
    let limit = q.limit(100, 1000)?;
    let start = decode_cursor(&q, 'm')?.map_or(0, |c| c as usize + 1);
    let filter = MarketFilter::parse(&q)?;
    let ex = lock(&state.exchange);
    let mut idxs: Vec<usize> = (start..ex.markets.len())
        .filter(|i| filter.matches(&ex, *i))
        .take(limit + 1)
        .collect();
    let cursor = if idxs.len() > limit {
        idxs.pop();
        idxs.last()
            .map(|i| encode_cursor('m', *i as u64))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let markets: Vec<serde_json::Value> = idxs
        .iter()
        .map(|i| market_json(&state, *i as u32, &ex.rest_market(*i as u32)))
        .collect();
    drop(ex);
    Ok(json(
        &serde_json::json!({ "markets": markets, "cursor": cursor }),
    ))
}

async fn market(State(state): State<Arc<SimState>>, Path(ticker): Path<String>) -> ApiResult {
    let ex = lock(&state.exchange);
    let idx = ex
        .market_index(&ticker)
        .ok_or_else(|| not_found("market"))?;
    let market = market_json(&state, idx, &ex.rest_market(idx));
    drop(ex);
    Ok(json(&serde_json::json!({ "market": market })))
}

fn book_side(
    ex: &Exchange,
    idx: u32,
    side: Side,
    depth: usize,
) -> Vec<(Price, kalshi_shared::Quantity)> {
    let levels = ex.markets[idx as usize].book.levels(side);
    // Ascending by price, best bid last; a depth keeps the best `depth` levels.
    let skip = if depth == 0 {
        0
    } else {
        levels.len().saturating_sub(depth)
    };
    levels.into_iter().skip(skip).collect()
}

fn fp_levels(v: &[(Price, kalshi_shared::Quantity)]) -> Vec<Level> {
    v.iter()
        .map(|(p, q)| Level {
            price: Dollars::new(*p),
            count: *q,
        })
        .collect()
}

async fn orderbook(
    State(state): State<Arc<SimState>>,
    Path(ticker): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw);
    let depth = q.int("depth")?.unwrap_or(0);
    if depth > 100 {
        return Err(bad("depth must be at most 100"));
    }
    let depth = depth.max(0) as usize;
    let ex = lock(&state.exchange);
    let idx = ex
        .market_index(&ticker)
        .ok_or_else(|| not_found("market"))?;
    let yes = book_side(&ex, idx, Side::Yes, depth);
    let no = book_side(&ex, idx, Side::No, depth);
    let legacy = ex.legacy();
    drop(ex);
    let cents = |v: &[(Price, kalshi_shared::Quantity)]| {
        v.iter()
            .map(|(p, q)| Some(LegacyLevel(p.to_cents()?, q.to_whole()?)))
            .collect::<Option<Vec<_>>>()
    };
    Ok(json(&GetMarketOrderbookResponse {
        orderbook: legacy.then(|| LegacyOrderbook {
            yes: cents(&yes),
            no: cents(&no),
            yes_dollars: Some(fp_levels(&yes)),
            no_dollars: Some(fp_levels(&no)),
        }),
        orderbook_fp: OrderbookFp {
            yes_dollars: Some(fp_levels(&yes)),
            no_dollars: Some(fp_levels(&no)),
        },
    }))
}

async fn orderbooks(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    // The batch endpoint needs authentication even where market data otherwise does not.
    if !headers.contains_key(kalshi_shared::auth::HEADER_KEY) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "this endpoint requires authentication",
        ));
    }
    let q = Query::parse(raw);
    let tickers = q.all("tickers");
    if tickers.is_empty() || tickers.len() > 100 {
        return Err(bad("tickers: between 1 and 100 market tickers"));
    }
    let ex = lock(&state.exchange);
    let mut orderbooks = Vec::with_capacity(tickers.len());
    for t in tickers {
        let idx = ex.market_index(t).ok_or_else(|| not_found("market"))?;
        orderbooks.push(MarketOrderbook {
            ticker: t.to_owned(),
            orderbook_fp: OrderbookFp {
                yes_dollars: Some(fp_levels(&book_side(&ex, idx, Side::Yes, 0))),
                no_dollars: Some(fp_levels(&book_side(&ex, idx, Side::No, 0))),
            },
        });
    }
    drop(ex);
    Ok(json(&GetMarketOrderbooksResponse { orderbooks }))
}

// ---------------------------------------------------------------------------------------------
// Events and series
// ---------------------------------------------------------------------------------------------

fn event_status(ex: &Exchange, event: usize) -> &'static str {
    let statuses: Vec<Status> = ex
        .markets_of_event(event)
        .into_iter()
        .map(|m| ex.markets[m as usize].status)
        .collect();
    if statuses
        .iter()
        .any(|s| matches!(s, Status::Active | Status::Initialized))
    {
        "open"
    } else if !statuses.is_empty() && statuses.iter().all(|s| *s == Status::Finalized) {
        "settled"
    } else {
        "closed"
    }
}

async fn events(State(state): State<Arc<SimState>>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw);
    let limit = q.limit(200, 200)?;
    let start = decode_cursor(&q, 'e')?.map_or(0, |c| c as usize + 1);
    let nested = q.bool("with_nested_markets")?.unwrap_or(false);
    let status = q.get("status");
    if status.is_some_and(|s| !matches!(s, "open" | "closed" | "settled")) {
        return Err(bad("invalid status filter: use open, closed or settled"));
    }
    let series = q.get("series_ticker");
    let ex = lock(&state.exchange);
    // Multivariate events are not listed here (they live under /events/multivariate).
    let mut idxs: Vec<usize> = (start..ex.events.len())
        .filter(|i| {
            let e = &ex.events[*i];
            !e.is_mve
                && series.is_none_or(|s| ex.series.get(e.series).is_some_and(|x| x.ticker == s))
                && status.is_none_or(|s| event_status(&ex, *i) == s)
        })
        .take(limit + 1)
        .collect();
    let cursor = if idxs.len() > limit {
        idxs.pop();
        idxs.last()
            .map(|i| encode_cursor('e', *i as u64))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let events = idxs.iter().map(|i| ex.rest_event(*i, nested)).collect();
    drop(ex);
    Ok(json(&GetEventsResponse {
        events,
        cursor,
        milestones: None,
    }))
}

async fn event(
    State(state): State<Arc<SimState>>,
    Path(ticker): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw);
    let nested = q.bool("with_nested_markets")?.unwrap_or(false);
    let ex = lock(&state.exchange);
    let idx = ex.event_index(&ticker).ok_or_else(|| not_found("event"))?;
    let event = ex.rest_event(idx, nested);
    // The top-level list is deprecated and observed empty when markets are nested.
    let markets = if nested {
        Vec::new()
    } else {
        ex.markets_of_event(idx)
            .into_iter()
            .map(|m| ex.rest_market(m))
            .collect()
    };
    drop(ex);
    Ok(json(&GetEventResponse { event, markets }))
}

async fn series_list(State(state): State<Arc<SimState>>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw);
    let category = q.get("category");
    let tags = q.all("tags");
    let ex = lock(&state.exchange);
    let series = (0..ex.series.len())
        .filter(|i| {
            let s = &ex.series[*i];
            category.is_none_or(|c| s.category == c)
                && (tags.is_empty()
                    || s.tags
                        .as_ref()
                        .is_some_and(|t| t.iter().any(|x| tags.contains(&x.as_str()))))
        })
        .map(|i| ex.rest_series(i))
        .collect();
    drop(ex);
    Ok(json(&GetSeriesListResponse { series }))
}

async fn series(State(state): State<Arc<SimState>>, Path(ticker): Path<String>) -> ApiResult {
    let ex = lock(&state.exchange);
    let idx = ex
        .series_index(&ticker)
        .ok_or_else(|| not_found("series"))?;
    let series = ex.rest_series(idx);
    drop(ex);
    Ok(json(&GetSeriesResponse { series }))
}
