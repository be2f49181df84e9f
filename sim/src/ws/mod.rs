//! The WebSocket endpoint (`GET /trade-api/ws/v2`): the signed upgrade, then one task per
//! connection that answers commands and fans the exchange's events out.
//!
//! It must never buffer without bound for a slow client: events reach connections through one
//! shared ring ([`crate::SimState::fanout`]); a connection that falls behind it loses its
//! subscriptions with error 25, and one whose socket accepts nothing for
//! `--slow-client-timeout` is dropped.

mod conn;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use kalshi_shared::wire::ws::WS_PATH;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::guard::{authenticate, error_response, injected_failure};
use crate::{SimState, lock};

pub fn router(state: Arc<SimState>) -> Router {
    Router::new().route(WS_PATH, get(upgrade)).with_state(state)
}

fn is_upgrade_request(req: &Request) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13")
}

async fn upgrade(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    if let Some(status) = lock(&state.faults).upgrade_rejection(Instant::now()) {
        state
            .stats
            .ws_upgrades_rejected
            .fetch_add(1, Ordering::Relaxed);
        return injected_failure(status);
    }
    let key_id = match authenticate(&state, req.headers(), "GET", WS_PATH) {
        Ok(k) => k,
        Err(e) => {
            state
                .stats
                .ws_upgrades_rejected
                .fetch_add(1, Ordering::Relaxed);
            return e.into_response();
        }
    };
    if !is_upgrade_request(&req) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket, version 13)",
        );
    }
    let Some(accept) = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "missing Sec-WebSocket-Key",
        );
    };
    if lock(&state.conns).len() >= state.cfg.max_connections {
        state
            .stats
            .ws_upgrades_rejected
            .fetch_add(1, Ordering::Relaxed);
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!("connection limit {} reached", state.cfg.max_connections),
        );
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "connection cannot be upgraded",
        );
    };
    // Clients send only small commands; tungstenite zero-fills the whole read buffer before
    // every read (128 KiB by default), which cost the simulator a memset per delivered batch.
    let cfg = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(state.cfg.ws_max_frame_bytes))
        .max_frame_size(Some(state.cfg.ws_max_frame_bytes))
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(16 << 20);
    let st = state.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(cfg),
                )
                .await;
                conn::run(st, ws, peer, key_id).await;
            }
            Err(e) => tracing::debug!(error = %e, %peer, "upgrade did not complete"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}
