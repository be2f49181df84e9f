//! Trades in Kalshi's two REST tiers (`GET /markets/trades` after the cutoff, `GET
//! /historical/trades` before it; they overlap), the cutoff, and the markets that settled
//! before it (`GET /historical/markets`), as `engine/history.rs` makes them.
//!
//! It must never serve a trade or a market the truth does not hold.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use kalshi_shared::wire::rest::GetTradesResponse;

use super::{ApiResult, Query, bad, decode_cursor, encode_cursor, json, not_found, raw_json};
use crate::{SimState, lock};

pub(super) async fn trades(
    State(state): State<Arc<SimState>>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    trades_tier(&state, raw, Tier::Live)
}

/// `GET /historical/trades`: the tier before the cutoff (`engine/history.rs`).
pub(super) async fn historical_trades(
    State(state): State<Arc<SimState>>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    trades_tier(&state, raw, Tier::Historical)
}

/// `GET /historical/cutoff`: trades (and markets settled) before it are historical.
/// `GET /historical/markets`: the markets that settled before the cutoff, paged; `tickers`
/// (comma-separated) and `event_ticker` filter (Kalshi's filters are mutually exclusive).
pub(super) async fn historical_markets(
    State(state): State<Arc<SimState>>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw);
    let limit = q.limit(100, 1000)?;
    let start = decode_cursor(&q, 'H')?.map_or(0, |c| c as usize + 1);
    let tickers: Option<Vec<&str>> = q.get("tickers").map(|t| t.split(',').collect());
    let event = q.get("event_ticker");
    if tickers.is_some() && event.is_some() {
        return Err(bad("filters are mutually exclusive"));
    }
    let ex = lock(&state.exchange);
    let all = ex.historical_markets();
    let mut page: Vec<usize> = (start..all.len())
        .filter(|i| {
            let h = &all[*i];
            tickers
                .as_ref()
                .is_none_or(|t| t.contains(&h.ticker.as_str()))
                && event.is_none_or(|e| h.ticker.starts_with(&format!("{e}-")))
        })
        .take(limit + 1)
        .collect();
    let cursor = if page.len() > limit {
        page.pop();
        page.last()
            .map(|i| encode_cursor('H', *i as u64))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let markets: Vec<&str> = page.iter().map(|i| all[*i].json.as_str()).collect();
    let body = format!(
        "{{\"markets\":[{}],\"cursor\":{}}}",
        markets.join(","),
        serde_json::Value::String(cursor)
    );
    drop(ex);
    Ok(raw_json(StatusCode::OK, body))
}

/// `GET /historical/markets/{ticker}`.
pub(super) async fn historical_market(
    State(state): State<Arc<SimState>>,
    Path(ticker): Path<String>,
) -> ApiResult {
    let ex = lock(&state.exchange);
    let j = ex
        .historical_index(&ticker)
        .ok_or_else(|| not_found("market"))?;
    let body = format!("{{\"market\":{}}}", ex.historical_markets()[j].json);
    drop(ex);
    Ok(raw_json(StatusCode::OK, body))
}

pub(super) async fn historical_cutoff(State(state): State<Arc<SimState>>) -> ApiResult {
    let cutoff = lock(&state.exchange).history_cutoff_ms();
    let t = kalshi_shared::time::format_rfc3339_ms(cutoff);
    Ok(json(&serde_json::json!({
        "market_settled_ts": t,
        "trades_created_ts": t,
        "orders_updated_ts": t,
    })))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tier {
    /// `/markets/trades`: from `HISTORY_OVERLAP_MS` before the cutoff on.
    Live,
    /// `/historical/trades`: before the cutoff.
    Historical,
}

fn trades_tier(state: &SimState, raw: Option<String>, tier: Tier) -> ApiResult {
    let q = Query::parse(raw);
    let limit = q.limit(100, 1000)?;
    let before = decode_cursor(&q, if tier == Tier::Live { 't' } else { 'h' })?;
    let mut min_ms = q.int("min_ts")?.map(|s| s.saturating_mul(1000));
    let mut max_ms = q.int("max_ts")?.map(|s| s.saturating_mul(1000));
    let block = q.bool("is_block_trade")?;
    let ex = lock(&state.exchange);
    let cutoff = ex.history_cutoff_ms();
    match tier {
        Tier::Live => {
            let floor = cutoff - crate::engine::HISTORY_OVERLAP_MS;
            min_ms = Some(min_ms.map_or(floor, |m| m.max(floor)));
        }
        Tier::Historical => {
            max_ms = Some(max_ms.map_or(cutoff - 1, |m| m.min(cutoff - 1)));
        }
    }
    let market = match q.get("ticker") {
        Some(t) => match ex.trade_market_index(t) {
            Some(i) => Some(i),
            None => {
                drop(ex);
                return Ok(json(&GetTradesResponse::default()));
            }
        },
        None => None,
    };
    let (trades, next) = ex.trades_page(market, before, min_ms, max_ms, block, limit);
    drop(ex);
    let kind = if tier == Tier::Live { 't' } else { 'h' };
    Ok(json(&GetTradesResponse {
        trades,
        cursor: next.map(|n| encode_cursor(kind, n)).unwrap_or_default(),
    }))
}
