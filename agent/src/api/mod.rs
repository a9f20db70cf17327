//! The HTTP API (JSON, loopback by default) and `/metrics`. Field names are part of the
//! interface and documented in the README; add fields, never rename them.
//!
//! [`router`] merges the routes of each subsystem (each already holding its own state:
//! `gossip::api`, `intentions::api`, `kube::api`, `expiry`) with the agent's own endpoints
//! ([`AgentInfo`]); no handler sees more than its subsystem's handles. [`server`] serves it
//! with header and body timeouts, a body size limit and JSON error answers.

pub(crate) mod error;
pub mod server;
pub mod types;

use crate::config::{AgentConfig, Check, ConfigReader, Service, Upstream};
use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
pub use error::ApiError;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use types::{Addresses, AgentSelf};

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
    /// Who defined it, in `/v1/agent/services`: `config` (a config file) or `api`
    /// (registered through the API, deregistered the same way). Absent elsewhere.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub source: &'static str,
}

impl<'a> ServiceView<'a> {
    /// The view of `s`, a service of `config`.
    pub fn of(s: &'a Service, config: &AgentConfig) -> Self {
        ServiceView {
            source: if config.registered.contains(&s.id) {
                "api"
            } else {
                "config"
            },
            ..ServiceView::from(s)
        }
    }
}

impl<'a> From<&'a Service> for ServiceView<'a> {
    fn from(s: &'a Service) -> Self {
        ServiceView {
            source: "",
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

/// What the agent's own endpoints (`/v1/agent/*`, `/v1/health`, `/metrics`) read.
#[derive(Clone)]
pub struct AgentInfo {
    /// The effective configuration.
    pub config: Arc<AgentConfig>,
    /// Address the HTTP API actually bound (port 0 in config resolves here).
    pub http_addr: SocketAddr,
    /// When the agent started (monotonic), for uptime.
    pub started: Instant,
    /// When the agent started (Unix seconds).
    pub started_unix: u64,
    /// How many times an agent has started on this data_dir (this start included).
    pub boot_count: u64,
    /// The registry behind `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The configuration in force (`/v1/agent/services` follows reloads).
    pub live: ConfigReader,
}

/// The router with every endpoint: the agent's own, then each subsystem's `parts`.
pub fn router(agent: AgentInfo, parts: impl IntoIterator<Item = Router>) -> Router {
    let own = Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/services", get(agent_services))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(agent);
    parts
        .into_iter()
        .fold(own, Router::merge)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
}

pub use server::serve;

async fn agent_self(State(s): State<AgentInfo>) -> Json<AgentSelf> {
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

async fn agent_services(State(s): State<AgentInfo>) -> Response {
    let live = s.live.borrow().clone();
    let views: Vec<ServiceView<'_>> = live
        .services
        .iter()
        .map(|s| ServiceView::of(s, &live))
        .collect();
    Json(views).into_response()
}

async fn health(State(s): State<AgentInfo>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "node_name": s.config.node_name,
    }))
}

async fn metrics(State(s): State<AgentInfo>) -> impl IntoResponse {
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
