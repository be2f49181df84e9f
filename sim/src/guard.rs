//! What stands in front of the REST and WebSocket endpoints: injected faults, authentication
//! and the REST token bucket, in that order.
//!
//! It must never let a request through that Kalshi would refuse (bad signature, stale
//! timestamp, over the limit).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kalshi_shared::auth::{self, VerifyError};
use kalshi_shared::wire::rest::{ErrorResponse, RateLimitBody};

use crate::faults::TokenBucket;
use crate::{SimState, lock};

/// Each REST request costs this many tokens (Kalshi's default cost).
pub const REQUEST_COST: u32 = 10;

/// Upper bound on the number of rate-limit buckets kept (one per key id or client address).
const MAX_BUCKETS: usize = 10_000;

/// An error answer with the documented body `{code, message}`; small, so it travels in
/// `Result`s cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, self.code, self.message)
    }
}

pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorResponse {
            code: code.to_owned(),
            message: message.into(),
            details: None,
            service: Some("kalshi-sim".into()),
        }),
    )
        .into_response()
}

/// The 429 Kalshi sends: a fixed body and no headers saying when to retry.
pub fn too_many_requests() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        Json(RateLimitBody {
            error: "too many requests".into(),
        }),
    )
        .into_response()
}

/// Status response for an injected failure.
pub fn injected_failure(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    if status == StatusCode::TOO_MANY_REQUESTS {
        return too_many_requests();
    }
    error_response(
        status,
        match status.as_u16() {
            500 => "internal_server_error",
            503 => "service_unavailable",
            _ => "injected_error",
        },
        "injected by kalshi-sim",
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks a request's signature headers; returns the key id it carried.
pub fn authenticate(
    state: &SimState,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> Result<Option<String>, ApiError> {
    let key = header(headers, auth::HEADER_KEY);
    let ts = header(headers, auth::HEADER_TIMESTAMP);
    let sig = header(headers, auth::HEADER_SIGNATURE);
    let now = kalshi_shared::time::now_ms();
    let skew = i64::try_from(state.cfg.auth_max_skew.as_millis()).unwrap_or(i64::MAX);
    let result = if let Some(v) = &state.verifier {
        let received = auth::ReceivedHeaders {
            key_id: key,
            timestamp: ts,
            signature: sig,
        };
        v.verify(&received, method, path, now, skew)
    } else if state.cfg.require_auth {
        presence_only(key, ts, sig, now, skew)
    } else {
        Ok(())
    };
    match result {
        Ok(()) => Ok(key.map(str::to_owned)),
        Err(e) => {
            state.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, path, "request refused: authentication");
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                e.to_string(),
            ))
        }
    }
}

/// `--require-auth` without a key: well-formed headers, timestamp in range, base64 signature.
fn presence_only(
    key: Option<&str>,
    ts: Option<&str>,
    sig: Option<&str>,
    now: i64,
    max_skew_ms: i64,
) -> Result<(), VerifyError> {
    key.filter(|k| !k.is_empty())
        .ok_or(VerifyError::MissingHeader(auth::HEADER_KEY))?;
    let ts = auth::check_timestamp(ts.ok_or(VerifyError::MissingHeader(auth::HEADER_TIMESTAMP))?)?;
    let sig = sig.ok_or(VerifyError::MissingHeader(auth::HEADER_SIGNATURE))?;
    let skew_ms = now.saturating_sub(ts).saturating_abs();
    if skew_ms > max_skew_ms {
        return Err(VerifyError::Skew {
            skew_ms,
            max_skew_ms,
        });
    }
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(sig)
        .map_err(|_| VerifyError::BadEncoding)?;
    Ok(())
}

/// REST middleware: faults, then authentication, then the token bucket.
pub async fn rest_guard(
    State(state): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    state.stats.rest_requests.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    if let Some(status) = lock(&state.faults).rest_failure(now) {
        return injected_failure(status);
    }
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let key_id = match authenticate(&state, req.headers(), &method, &path) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let bucket_key = key_id.unwrap_or_else(|| peer.ip().to_string());
    let allowed = {
        let mut buckets = lock(&state.rest_buckets);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&bucket_key) {
            buckets.clear();
        }
        buckets
            .entry(bucket_key)
            .or_insert_with(|| TokenBucket::new(state.cfg.rest_rate, state.cfg.rest_burst, now))
            .try_take(REQUEST_COST, now)
    };
    if !allowed {
        state
            .stats
            .rest_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        return too_many_requests();
    }
    next.run(req).await
}
