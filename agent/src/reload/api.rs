//! `PUT /v1/agent/reload`: reload the configuration (200 applied, 422 invalid, 409 refused;
//! the body is an [`ReloadAnswer`] either way). `PUT /v1/agent/service/register` and
//! `PUT /v1/agent/service/deregister/{id}`: services registered through the API (200 with a
//! [`RegisterAnswer`]; 400 invalid, 404 unknown id, 409 owned by the config files, 500 the
//! store failed, each with `{"error": ...}`).

use super::Reloader;
use super::register::RegisterError;
use crate::api::ApiError;
use crate::api::types::{RegisterAnswer, ReloadAnswer, ReloadResult};
use crate::config::definition::ServiceDefinition;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use std::sync::Arc;

/// The reload and registration routes.
pub fn routes(reloader: Arc<Reloader>) -> Router {
    Router::new()
        .route("/v1/agent/reload", put(reload))
        .route("/v1/agent/service/register", put(register))
        .route("/v1/agent/service/deregister/{id}", put(deregister))
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

fn refused(e: RegisterError) -> ApiError {
    let status = match &e {
        RegisterError::Invalid(_) => StatusCode::BAD_REQUEST,
        RegisterError::Owned(_) => StatusCode::CONFLICT,
        RegisterError::NotFound(_) => StatusCode::NOT_FOUND,
        RegisterError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError(status, e.to_string())
}

/// The body is read as bytes and decoded here, so every refusal (not JSON, an unknown
/// field, a bad value) is a 400 `{"error": ...}` naming what is wrong.
async fn register(
    State(r): State<Arc<Reloader>>,
    body: Bytes,
) -> Result<Json<RegisterAnswer>, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let definition = ServiceDefinition::from_json(&value).map_err(bad)?;
    r.register(&definition).await.map(Json).map_err(refused)
}

async fn deregister(
    State(r): State<Arc<Reloader>>,
    Path(id): Path<String>,
) -> Result<Json<RegisterAnswer>, ApiError> {
    r.deregister(&id).await.map(Json).map_err(refused)
}
