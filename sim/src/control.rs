//! The private control API: fault switches, ground truth, pause/advance/rate, stats.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/health` | `{"status":"ok"}` |
//! | GET | `/stats` | counters, position, rate, memory |
//! | GET | `/connections` | connected WebSockets with their subscriptions |
//! | POST | `/faults` | a [`FaultRequest`] |
//! | POST | `/pause`, `/resume` | stop / restart generation |
//! | POST | `/advance` | `{"messages":N}`: publish at least N messages now |
//! | POST | `/rate` | `{"rate":N}`: messages per second |
//! | GET | `/truth?after=P&limit=N&types=a,b` | published events after position P |
//! | GET | `/truth/summary` | head position, counts by type, start time |
//! | POST | `/lifecycle/pause` | pause or resume a market now (`{"market_ticker","paused"}`) |
//! | GET | `/truth/markets` | every market's REST view and book, and every event's and series' REST view, all at one position |
//! | GET | `/truth/books/{ticker}` | a market's current book and the position it reflects |
//!
//! It must never be reachable from the public endpoints (it listens on its own address), and
//! never change what was already published in the ground truth.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kalshi_shared::wire::Side;
use serde::Deserialize;
use serde_json::json;

use crate::engine::EventKind;
use crate::faults::{ConnFault, FaultRequest, MalformedKind, RestErrors};
use crate::guard::error_response;
use crate::{SimState, lock};

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/stats", get(stats))
        .route("/connections", get(connections))
        .route("/faults", post(faults))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/advance", post(advance))
        .route("/rate", post(set_rate))
        .route("/lifecycle/pause", post(pause_market))
        .route("/truth", get(truth))
        .route("/truth/summary", get(truth_summary))
        .route("/truth/markets", get(markets))
        .route("/truth/books/{ticker}", get(book))
        .with_state(state)
}

fn bad(message: impl Into<String>) -> Response {
    error_response(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

async fn stats(State(state): State<Arc<SimState>>) -> Json<serde_json::Value> {
    let (counts, active, markets, trades, truth_error) = {
        let ex = lock(&state.exchange);
        (
            ex.counts(),
            ex.active_markets(),
            ex.markets.len(),
            ex.trade_count(),
            ex.truth_error(),
        )
    };
    let by_type: serde_json::Map<String, serde_json::Value> = EventKind::ALL
        .iter()
        .map(|k| (k.frame_type().to_owned(), json!(counts.get(*k))))
        .collect();
    let s = &state.stats;
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    Json(json!({
        "uptime_ms": state.started.elapsed().as_millis() as u64,
        "published_pos": state.published_pos.load(Ordering::Acquire),
        "rate": state.rate.load(Ordering::Acquire),
        "paused": state.paused.load(Ordering::Acquire),
        "markets": markets,
        "active_markets": active,
        "trades_held": trades,
        "published_by_type": by_type,
        "ws_connections": lock(&state.conns).len(),
        "ws_connections_total": r(&s.ws_connections_total),
        "ws_frames_sent": r(&s.ws_frames_sent),
        "ws_commands": r(&s.ws_commands),
        "ws_overflows": r(&s.ws_overflows),
        "ws_slow_dropped": r(&s.ws_slow_dropped),
        "ws_upgrades_rejected": r(&s.ws_upgrades_rejected),
        "rest_requests": r(&s.rest_requests),
        "rest_rate_limited": r(&s.rest_rate_limited),
        "auth_failures": r(&s.auth_failures),
        "engine_lag_resets": r(&s.engine_lag_resets),
        "rss_bytes": rss_bytes(),
        "truth_error": truth_error,
    }))
}

async fn connections(State(state): State<Arc<SimState>>) -> Json<serde_json::Value> {
    let conns = lock(&state.conns);
    let mut list: Vec<serde_json::Value> = conns
        .values()
        .map(|c| {
            json!({
                "id": c.info.id,
                "peer": c.info.peer,
                "key_id": c.info.key_id,
                "connected_ms": c.info.connected_ms,
                "subscriptions": *lock(&c.subs),
            })
        })
        .collect();
    list.sort_by_key(|v| v["id"].as_u64());
    Json(json!({ "connections": list }))
}

async fn faults(State(state): State<Arc<SimState>>, Json(req): Json<FaultRequest>) -> Response {
    let now = Instant::now();
    let duration = req.duration_ms.map(Duration::from_millis);
    let targets = |fault: ConnFault| {
        let ids = state.fault_connections(
            req.conn_ids.as_deref(),
            req.key_id.as_deref(),
            req.count,
            &fault,
        );
        Json(json!({"fault": req.fault, "applied_to": ids})).into_response()
    };
    tracing::info!(fault = %req.fault, "fault requested");
    match req.fault.as_str() {
        "drop" => targets(ConnFault::Drop {
            graceful: req.graceful.unwrap_or(false),
        }),
        "stall" => targets(ConnFault::Stall {
            duration: duration.unwrap_or(Duration::from_secs(120)),
        }),
        "skip_seq" => {
            let channel = req
                .channel
                .clone()
                .unwrap_or_else(|| "orderbook_delta".into());
            let fault = ConnFault::SkipSeq {
                channel,
                count: req.count.unwrap_or(1).max(1),
            };
            let ids = state.fault_connections(
                req.conn_ids.as_deref(),
                req.key_id.as_deref(),
                None,
                &fault,
            );
            Json(json!({"fault": req.fault, "applied_to": ids})).into_response()
        }
        "malformed" => {
            let Some(kind) = req.kind.as_deref().and_then(MalformedKind::parse) else {
                return bad(
                    "malformed needs kind: not_json, unknown_type, bad_fields, unknown_fields, binary or oversize",
                );
            };
            let fault = ConnFault::Malformed {
                kind,
                count: req.count.unwrap_or(1).clamp(1, 10_000),
                size: req.size.unwrap_or(17 << 20).min(256 << 20),
            };
            let ids = state.fault_connections(
                req.conn_ids.as_deref(),
                req.key_id.as_deref(),
                None,
                &fault,
            );
            Json(json!({"fault": req.fault, "applied_to": ids})).into_response()
        }
        "ws_error" => targets(ConnFault::WsError {
            code: req.code.unwrap_or(17),
            channel: req.channel.clone(),
            on_next_update: req.on_next_update,
        }),
        "reject_upgrades" => {
            lock(&state.faults).reject_upgrades =
                Some((req.status.unwrap_or(503), duration.map(|d| now + d)));
            Json(json!({"fault": req.fault, "ok": true})).into_response()
        }
        "rest_errors" => {
            lock(&state.faults).rest_errors = Some(RestErrors {
                status: req.status.unwrap_or(429),
                remaining: req.count,
                until: duration.map(|d| now + d),
            });
            Json(json!({"fault": req.fault, "ok": true})).into_response()
        }
        "outage" => {
            let d = duration.unwrap_or(Duration::from_secs(10));
            lock(&state.faults).outage_until = Some(now + d);
            let ids =
                state.fault_connections(None, None, None, &ConnFault::Drop { graceful: false });
            Json(json!({"fault": req.fault, "dropped": ids, "duration_ms": d.as_millis() as u64}))
                .into_response()
        }
        "corrupt_markets" => {
            let from = lock(&state.exchange).markets.len() as u32;
            lock(&state.faults).corrupt_markets_from = Some(from);
            Json(json!({"fault": req.fault, "from_index": from})).into_response()
        }
        "clock_freeze" => {
            let d = duration.unwrap_or(Duration::from_secs(2));
            let at = kalshi_shared::time::now_ms() - req.offset_ms.unwrap_or(0).max(0);
            lock(&state.faults).clock_freeze = Some((at, now + d));
            Json(json!({"fault": req.fault, "frozen_at_ms": at, "duration_ms": d.as_millis() as u64}))
                .into_response()
        }
        "clear" => {
            *lock(&state.faults) = Default::default();
            Json(json!({"fault": req.fault, "ok": true})).into_response()
        }
        other => bad(format!("unknown fault {other:?}")),
    }
}

async fn pause(State(state): State<Arc<SimState>>) -> Json<serde_json::Value> {
    state.paused.store(true, Ordering::Release);
    Json(json!({"paused": true, "published_pos": state.published_pos.load(Ordering::Acquire)}))
}

async fn resume(State(state): State<Arc<SimState>>) -> Json<serde_json::Value> {
    state.paused.store(false, Ordering::Release);
    Json(json!({"paused": false}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceBody {
    messages: u64,
}

async fn advance(State(state): State<Arc<SimState>>, Json(body): Json<AdvanceBody>) -> Response {
    if body.messages > 1_000_000 {
        return bad("advance at most 1,000,000 messages at a time");
    }
    let made = state.publish_now(body.messages);
    Json(json!({"published": made, "published_pos": state.published_pos.load(Ordering::Acquire)}))
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateBody {
    rate: u64,
}

async fn set_rate(State(state): State<Arc<SimState>>, Json(body): Json<RateBody>) -> Response {
    if body.rate > 1_000_000 {
        return bad("rate above 1,000,000 messages per second is not supported");
    }
    state.rate.store(body.rate, Ordering::Release);
    Json(json!({"rate": body.rate})).into_response()
}

#[derive(Deserialize)]
struct TruthQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    types: Option<String>,
}

async fn truth(State(state): State<Arc<SimState>>, Query(q): Query<TruthQuery>) -> Response {
    let limit = q.limit.unwrap_or(10_000).clamp(1, 100_000);
    let types: Option<Vec<&str>> = q
        .types
        .as_deref()
        .map(|t| t.split(',').filter(|s| !s.is_empty()).collect());
    let reader = state.truth.clone();
    let after = q.after;
    let types_owned: Option<Vec<String>> =
        types.map(|v| v.into_iter().map(str::to_owned).collect());
    let page = tokio::task::spawn_blocking(move || {
        let refs: Option<Vec<&str>> = types_owned
            .as_ref()
            .map(|v| v.iter().map(String::as_str).collect());
        reader.read(after, limit, refs.as_deref(), 1_000_000)
    })
    .await;
    let page = match page {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "truth_unreadable",
                e.to_string(),
            );
        }
        Err(e) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "truth_unreadable",
                e.to_string(),
            );
        }
    };
    let mut body =
        String::with_capacity(64 + page.records.iter().map(|r| r.len() + 1).sum::<usize>());
    body.push_str(&format!(
        "{{\"head\":{},\"next\":{},\"records\":[",
        page.head, page.next
    ));
    for (i, r) in page.records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r);
    }
    body.push_str("]}");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn truth_summary(State(state): State<Arc<SimState>>) -> Json<serde_json::Value> {
    let counts = lock(&state.exchange).counts();
    let by_type: serde_json::Map<String, serde_json::Value> = EventKind::ALL
        .iter()
        .map(|k| (k.frame_type().to_owned(), json!(counts.get(*k))))
        .collect();
    Json(json!({
        "head": state.truth.head(),
        "counts": by_type,
        "file": state.truth.path(),
        "started_ms": state.started_ms,
    }))
}

/// Every market as REST shows it, with its book, under one lock: all reflect one position.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseRequest {
    market_ticker: String,
    paused: bool,
}

/// `POST /lifecycle/pause {"market_ticker", "paused"}`: pauses or resumes a market now.
async fn pause_market(
    State(state): State<Arc<SimState>>,
    Json(req): Json<PauseRequest>,
) -> Response {
    match state.set_paused(&req.market_ticker, req.paused) {
        Some(pos) => {
            Json(json!({"pos": pos, "market_ticker": req.market_ticker, "paused": req.paused}))
                .into_response()
        }
        None => error_response(StatusCode::NOT_FOUND, "not_found", "market not found"),
    }
}

async fn markets(State(state): State<Arc<SimState>>) -> Json<serde_json::Value> {
    let ex = lock(&state.exchange);
    let side = |m: &crate::universe::MarketInfo, s: Side| -> Vec<[String; 2]> {
        m.book
            .levels(s)
            .into_iter()
            .map(|(p, q)| [p.to_string(), q.to_string()])
            .collect()
    };
    let markets: Vec<serde_json::Value> = ex
        .markets
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({
                "market_ticker": m.ticker,
                "is_mve": m.is_mve,
                // What REST serves (faults included), the registry's ground truth.
                "rest": crate::rest::market_json(&state, i as u32, &ex.rest_market(i as u32)),
                "yes": side(m, Side::Yes),
                "no": side(m, Side::No),
            })
        })
        .collect();
    // Events and series as REST serves them (events without their nested markets).
    let events: Vec<serde_json::Value> = ex
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"event_ticker": e.ticker, "is_mve": e.is_mve, "rest": ex.rest_event(i, false)}))
        .collect();
    let series: Vec<serde_json::Value> = ex
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"ticker": s.ticker, "is_mve": s.is_mve, "rest": ex.rest_series(i)}))
        .collect();
    Json(json!({"pos": ex.pos(), "markets": markets, "events": events, "series": series}))
}

async fn book(State(state): State<Arc<SimState>>, Path(ticker): Path<String>) -> Response {
    let ex = lock(&state.exchange);
    let Some(idx) = ex.market_index(&ticker) else {
        return error_response(StatusCode::NOT_FOUND, "not_found", "market not found");
    };
    let m = &ex.markets[idx as usize];
    let side = |s: Side| -> Vec<[String; 2]> {
        m.book
            .levels(s)
            .into_iter()
            .map(|(p, q)| [p.to_string(), q.to_string()])
            .collect()
    };
    Json(json!({
        "pos": ex.pos(),
        "market_ticker": m.ticker,
        "status": m.status.as_str(),
        "yes": side(Side::Yes),
        "no": side(Side::No),
    }))
    .into_response()
}
