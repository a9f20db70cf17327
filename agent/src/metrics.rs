//! Prometheus metrics served at `GET /metrics`. Each subsystem registers its families here at
//! start; the registry is append-only afterwards.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};
use std::sync::Mutex;

/// The agent's metric registry (all names are prefixed `rhizome_`).
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Seconds since the agent started, refreshed on each scrape.
    pub uptime_seconds: Gauge,
    /// `rhizome_accept_errors_total{listener, kind}`, shared by every TCP listener.
    pub accept_errors: crate::accept::AcceptErrors,
    /// `rhizome_refused_total{port, reason}`, shared by every port (see [`crate::refusals`]).
    pub refusals: crate::refusals::Refusals,
}

impl Metrics {
    /// A registry holding the agent-wide families.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rhizome");
        let uptime_seconds = Gauge::default();
        registry.register(
            "agent_uptime_seconds",
            "Seconds since this agent started",
            uptime_seconds.clone(),
        );
        let accept_errors = crate::accept::AcceptErrors::default();
        registry.register(
            "accept_errors",
            "Failed accepts on TCP listeners, by listener and kind (emfile: out of file descriptors)",
            accept_errors.family(),
        );
        let refusals = crate::refusals::Refusals::default();
        registry.register(
            "refused",
            "Connections, handshakes, packets and requests refused, by port and reason",
            refusals.family(),
        );
        Metrics {
            registry: Mutex::new(registry),
            uptime_seconds,
            accept_errors,
            refusals,
        }
    }

    /// Adds a metric family; `name` without the `rhizome_` prefix.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        if let Ok(mut r) = self.registry.lock() {
            r.register(name, help, metric);
        }
    }

    /// The OpenMetrics text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = encode(&mut out, &r);
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
