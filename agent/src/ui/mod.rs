//! The web UI (`/ui/`): a read-only view of the whole mesh, served by every agent from files
//! compiled into the binary (no UI server, no CDN, no database). The page draws from the
//! JSON API (`/v1/graph`, `/v1/members`, `/v1/catalog/*`, `/v1/intentions*`, `/v1/ca/status`)
//! and from [`traffic`]'s per-edge counters, which `GET /v1/traffic` serves.

pub mod traffic;

use crate::ca::identity::Identity;
use crate::gossip::replica::Replica;
use crate::metrics::Metrics;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use std::sync::Arc;

/// The page, its script and its style sheet, embedded at build time.
const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Only this agent's own files and API: no inline script, no other origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The UI's routes and `GET /v1/traffic`.
pub fn routes(traffic: traffic::TrafficState) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .merge(traffic::routes(traffic))
}

/// What [`routes`] and [`traffic::publisher`] need from the agent.
pub fn state(
    node: String,
    metrics: Arc<Metrics>,
    replica: Arc<Replica>,
    identity: Arc<Identity>,
) -> traffic::TrafficState {
    traffic::TrafficState::new(node, metrics, replica, identity)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
