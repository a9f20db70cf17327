//! The HTTP API (JSON, loopback by default) and `/metrics`. Field names are part of the
//! interface and documented in the README; add fields, never rename them.

use crate::agent::Shared;
use crate::config::{Check, Service, Upstream};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::watch;

/// An error answer: `{"error": "..."}` with a status code.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// `GET /v1/agent/self`.
#[derive(Serialize, serde::Deserialize, Debug)]
pub struct AgentSelf {
    /// Node name.
    pub node_name: String,
    /// rhizome version.
    pub version: String,
    /// Where this agent listens and is reached.
    pub addresses: Addresses,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Unix time of the start.
    pub started_at: u64,
    /// Starts on this data_dir, this one included.
    pub boot_count: u64,
    /// Data directory.
    pub data_dir: String,
    /// Whether the agent runs with `--dev`.
    pub dev: bool,
}

/// Addresses in `GET /v1/agent/self`.
#[derive(Serialize, serde::Deserialize, Debug)]
pub struct Addresses {
    /// Bind address of gossip and data listeners.
    pub bind: String,
    /// Address peers use.
    pub advertise: String,
    /// Gossip `host:port`.
    pub gossip: String,
    /// Data-plane `host:port`.
    pub data: String,
    /// HTTP API `host:port`.
    pub http: String,
}

/// One entry of `GET /v1/agent/services`.
#[derive(Serialize, Debug)]
pub struct ServiceView<'a> {
    /// Instance id on this node.
    pub id: &'a str,
    /// Service name.
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Instance address.
    pub address: String,
    /// Instance port.
    pub port: u16,
    /// Tags.
    pub tags: &'a [String],
    /// Metadata.
    pub meta: &'a std::collections::BTreeMap<String, String>,
    /// Upstream listeners.
    pub upstreams: &'a [Upstream],
    /// Health checks.
    pub checks: &'a [Check],
}

impl<'a> From<&'a Service> for ServiceView<'a> {
    fn from(s: &'a Service) -> Self {
        ServiceView {
            id: &s.id,
            name: &s.name,
            namespace: &s.namespace,
            address: s.address.to_string(),
            port: s.port,
            tags: &s.tags,
            meta: &s.meta,
            upstreams: &s.upstreams,
            checks: &s.checks,
        }
    }
}

/// The router with every endpoint.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/services", get(agent_services))
        .route("/v1/health", get(health))
        .route("/v1/ca/status", get(crate::expiry::status_handler))
        .route("/v1/kubernetes/pods", get(crate::kube::api::pods))
        .route("/metrics", get(metrics))
        .merge(crate::intentions::api::routes())
        .route("/v1/members", get(crate::gossip::api::members))
        .route(
            "/v1/catalog/services",
            get(crate::gossip::api::catalog_services),
        )
        .route(
            "/v1/catalog/service/{name}",
            get(crate::gossip::api::catalog_service),
        )
        .route("/v1/join", axum::routing::put(crate::gossip::api::join))
        .route("/v1/leave", axum::routing::put(crate::gossip::api::leave))
        .route(
            "/v1/keyring",
            get(crate::gossip::api::keyring).post(crate::gossip::api::keyring_change),
        )
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .with_state(shared)
}

/// Serves the API on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

async fn agent_self(State(s): State<Arc<Shared>>) -> Json<AgentSelf> {
    let c = &s.config;
    Json(AgentSelf {
        node_name: c.node_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        addresses: Addresses {
            bind: c.bind_addr.to_string(),
            advertise: c.advertise_addr.to_string(),
            gossip: std::net::SocketAddr::new(c.advertise_addr, c.ports.gossip).to_string(),
            data: std::net::SocketAddr::new(c.advertise_addr, c.ports.data).to_string(),
            http: s.http_addr.to_string(),
        },
        uptime_seconds: s.started.elapsed().as_secs(),
        started_at: s.started_unix,
        boot_count: s.boot_count,
        data_dir: c.data_dir.display().to_string(),
        dev: c.dev,
    })
}

async fn agent_services(State(s): State<Arc<Shared>>) -> Response {
    let views: Vec<ServiceView<'_>> = s.config.services.iter().map(ServiceView::from).collect();
    Json(views).into_response()
}

async fn health(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "node_name": s.config.node_name,
    }))
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    s.metrics
        .uptime_seconds
        .set(i64::try_from(s.started.elapsed().as_secs()).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
