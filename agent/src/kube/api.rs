//! `GET /v1/kubernetes/pods`: the pods of this node seen by discovery, registered or skipped
//! with the reason.

use super::registry::PodView;
use crate::agent::Shared;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The handler: `{"enabled", "node_name", "synced", "generation", "pods": [...]}`.
pub async fn pods(State(s): State<Arc<Shared>>) -> Response {
    let Some(rx) = &s.kube_pods else {
        return Json(serde_json::json!({ "enabled": false, "pods": [] })).into_response();
    };
    let registry = rx.borrow().clone();
    let pods: Vec<PodView<'_>> = registry.pods().map(PodView::from).collect();
    Json(serde_json::json!({
        "enabled": true,
        "node_name": super::settings(&s.config).node_name,
        "synced": registry.is_synced(),
        "generation": registry.generation(),
        "pods": pods,
    }))
    .into_response()
}
