//! `GET /v1/kubernetes/pods`: the pods of this node seen by discovery, registered or skipped
//! with the reason.

use super::PodRegistryRx;
use super::registry::PodView;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

/// What `/v1/kubernetes/pods` reads.
#[derive(Clone)]
pub struct ApiState {
    /// The pod registry (`None`: `kubernetes` disabled).
    pub pods: Option<PodRegistryRx>,
    /// This node's name as discovery sees it.
    pub node_name: String,
}

/// The route of this module with its state, to merge into the agent's router.
pub fn routes(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/v1/kubernetes/pods", axum::routing::get(pods))
        .with_state(state)
}

/// The handler: `{"enabled", "node_name", "synced", "generation", "pods": [...]}`.
pub async fn pods(State(s): State<ApiState>) -> Response {
    let Some(rx) = &s.pods else {
        return Json(serde_json::json!({ "enabled": false, "pods": [] })).into_response();
    };
    let registry = rx.borrow().clone();
    let pods: Vec<PodView<'_>> = registry.pods().map(PodView::from).collect();
    Json(serde_json::json!({
        "enabled": true,
        "node_name": s.node_name,
        "synced": registry.is_synced(),
        "generation": registry.generation(),
        "pods": pods,
    }))
    .into_response()
}
