//! `GET /health` (JSON; 503 when unhealthy) and the same verdict as `/health/ready` (able to
//! collect now: database connected and at least one WebSocket up), plus `/health/live` (the
//! process and its tasks are alive: the only check that may replace an instance), on
//! `http.listen`. `/metrics` is served by `kalshi_shared::telemetry::metrics_router` on
//! `http.metrics_listen`.
//!
//! It must never serve configuration or secrets: `/health` reports states and counts only.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use kalshi_shared::service::Liveness;

use crate::health::Health;

pub fn router(health: Arc<Health>, live: Liveness) -> Router {
    Router::new()
        .route("/health", get(health_handler))
        .route("/health/ready", get(health_handler))
        .with_state(health)
        .merge(kalshi_shared::service::live_router(live))
}

async fn health_handler(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let (_, code, body) = health.report();
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        Json(body),
    )
}
