//! `PUT /v1/agent/reload`: reload the configuration (200 applied, 422 invalid, 409 refused;
//! the body is an [`ReloadAnswer`] either way).

use super::Reloader;
use crate::api::types::{ReloadAnswer, ReloadResult};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use std::sync::Arc;

/// The reload route.
pub fn routes(reloader: Arc<Reloader>) -> Router {
    Router::new()
        .route("/v1/agent/reload", put(reload))
        .with_state(reloader)
}

async fn reload(State(r): State<Arc<Reloader>>) -> (StatusCode, Json<ReloadAnswer>) {
    let answer = r.reload().await;
    let status = match answer.result {
        ReloadResult::Ok => StatusCode::OK,
        ReloadResult::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ReloadResult::Refused => StatusCode::CONFLICT,
    };
    (status, Json(answer))
}
