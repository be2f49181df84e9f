//! `GET /health` (JSON; 503 when unhealthy) on `http.listen`. `/metrics` is served by
//! `kalshi_shared::telemetry::metrics_router` on `http.metrics_listen`.
//!
//! It must never serve configuration or secrets: `/health` reports states and counts only.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::health::Health;

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/health", get(health_handler))
        .with_state(health)
}

async fn health_handler(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let (_, code, body) = health.report();
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        Json(body),
    )
}
