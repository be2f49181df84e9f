//! The exchange's own state: `GET /exchange/status` (503 with the status body during
//! maintenance, as Kalshi answers) and `GET /exchange/schedule` (`engine/status.rs`).
//!
//! It must never serve a state the truth does not hold.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::ApiResult;
use crate::{SimState, lock};

pub(super) async fn exchange_status(State(state): State<Arc<SimState>>) -> ApiResult {
    let (code, body) = {
        let ex = lock(&state.exchange);
        let (code, body) = ex.status_reply();
        (code, body.to_owned())
    };
    Ok(raw_json(
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        body,
    ))
}

pub(super) async fn exchange_schedule(State(state): State<Arc<SimState>>) -> ApiResult {
    let body = lock(&state.exchange).schedule_body().to_owned();
    Ok(raw_json(StatusCode::OK, body))
}

/// A JSON body served as the text the exchange recorded in the truth.
pub(super) fn raw_json(code: StatusCode, body: String) -> Response {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
