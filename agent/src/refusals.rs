//! Refusals on every port, counted by reason and logged at a bounded rate.
//!
//! Whatever an agent refuses from outside (a datagram that is not QUIC, a TLS handshake
//! without a client certificate, a gossip connection that never authenticates, an HTTP
//! request whose headers never end...) is counted in `rhizome_refused_total{port, reason}`
//! and logged through a [`RateLog`]: at most [`LINES_PER_WINDOW`] lines per
//! [`LOG_WINDOW`] for each (port, reason), then one "similar refusals suppressed" line with
//! the count when the next window opens. Garbage at line rate therefore costs a counter
//! increment, not a log line (issue 15: one INFO line per garbage packet).
//!
//! A leaf module, like `accept`: it imports nothing from this crate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Lines logged per (port, reason) in one [`LOG_WINDOW`].
pub const LINES_PER_WINDOW: u32 = 5;
/// The window of [`LINES_PER_WINDOW`].
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// A port (or listener kind) that refuses, as the `port` label says it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Port {
    /// QUIC on the UDP data port (datagrams and handshakes).
    DataQuic,
    /// TLS on the TCP data port.
    DataTls,
    /// Gossip packets on the UDP gossip port.
    GossipUdp,
    /// Anti-entropy on the TCP gossip port.
    GossipTcp,
    /// Upstream listeners (apps connecting to the local proxy).
    Upstream,
    /// The HTTP API.
    Http,
}

impl Port {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Port::DataQuic => "data_quic",
            Port::DataTls => "data_tls",
            Port::GossipUdp => "gossip_udp",
            Port::GossipTcp => "gossip_tcp",
            Port::Upstream => "upstream",
            Port::Http => "http",
        }
    }
}

/// Labels of `rhizome_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// [`Port::as_str`].
    pub port: &'static str,
    /// Why, in a few snake_case words (`not_quic`, `no_client_cert`, `header_timeout`...).
    pub reason: &'static str,
}

/// What a [`RateLog`] says about one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Log it; `suppressed` events of the same key were dropped in the window before.
    Log {
        /// Events not logged since the last logged one.
        suppressed: u64,
    },
    /// Do not log it (counted for the next [`Gate::Log`]).
    Suppress,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

/// At most `lines` log lines per `window` for each key; the rest are counted and reported
/// with the next line allowed.
#[derive(Debug)]
pub struct RateLog<K> {
    lines: u32,
    window: Duration,
    keys: Mutex<HashMap<K, Window>>,
}

impl<K: Hash + Eq> RateLog<K> {
    /// `lines` lines per `window` per key. Keys should come from a small fixed set (each
    /// key holds one entry for the life of the log).
    pub fn new(lines: u32, window: Duration) -> RateLog<K> {
        RateLog {
            lines,
            window,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an event of `key` at `now` may be logged.
    pub fn gate(&self, key: K, now: Instant) -> Gate {
        let mut keys = match self.keys.lock() {
            Ok(k) => k,
            Err(p) => p.into_inner(),
        };
        let w = keys.entry(key).or_insert(Window {
            start: now,
            logged: 0,
            suppressed: 0,
        });
        if now.saturating_duration_since(w.start) >= self.window {
            w.start = now;
            w.logged = 0;
        }
        if w.logged < self.lines {
            w.logged += 1;
            Gate::Log {
                suppressed: std::mem::take(&mut w.suppressed),
            }
        } else {
            w.suppressed += 1;
            Gate::Suppress
        }
    }
}

/// `rhizome_refused_total{port, reason}` and its rate-limited log, shared by every port of
/// one agent (cheap to clone).
#[derive(Clone, Debug)]
pub struct Refusals {
    family: Family<RefusedLabels, Counter>,
    log: Arc<RateLog<(Port, &'static str)>>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            family: Family::default(),
            log: Arc::new(RateLog::new(LINES_PER_WINDOW, LOG_WINDOW)),
        }
    }
}

impl Refusals {
    /// The family, to register once (as `refused`).
    pub fn family(&self) -> Family<RefusedLabels, Counter> {
        self.family.clone()
    }

    /// Counts one refusal on `port` for `reason` and logs it (at a bounded rate) with the
    /// peer's address, if known, and what went wrong.
    pub fn refuse(
        &self,
        port: Port,
        reason: &'static str,
        peer: Option<SocketAddr>,
        detail: &dyn Display,
    ) {
        self.count(port, reason);
        match self.log.gate((port, reason), Instant::now()) {
            Gate::Suppress => {}
            Gate::Log { suppressed } => {
                if suppressed > 0 {
                    tracing::info!(
                        port = port.as_str(),
                        reason,
                        suppressed,
                        "similar refusals suppressed"
                    );
                }
                match peer {
                    Some(peer) => tracing::info!(port = port.as_str(), reason, peer = %peer,
                        detail = %detail, "refused"),
                    None => tracing::info!(port = port.as_str(), reason, detail = %detail,
                        "refused"),
                }
            }
        }
    }

    /// Counts one refusal without logging it (the caller logs it its own way).
    pub fn count(&self, port: Port, reason: &'static str) {
        self.family
            .get_or_create(&RefusedLabels {
                port: port.as_str(),
                reason,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_key_logs_its_lines_then_reports_what_it_suppressed() {
        let log = RateLog::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let gates: Vec<Gate> = (0..1000)
            .map(|i| log.gate("a", t0 + Duration::from_millis(i)))
            .collect();
        let logged = gates.iter().filter(|g| **g != Gate::Suppress).count();
        assert_eq!(logged, 3);
        assert_eq!(gates[0], Gate::Log { suppressed: 0 });
        // Another key has its own budget.
        assert_eq!(log.gate("b", t0), Gate::Log { suppressed: 0 });
        let next = t0 + Duration::from_secs(10);
        assert_eq!(log.gate("a", next), Gate::Log { suppressed: 997 });
        assert_eq!(log.gate("a", next), Gate::Log { suppressed: 0 });
    }

    #[test]
    fn refusals_are_counted_by_port_and_reason() {
        let r = Refusals::default();
        for _ in 0..50 {
            r.refuse(Port::DataQuic, "not_quic", None, &"garbage");
        }
        r.refuse(Port::Http, "header_timeout", None, &"idle");
        let get = |port: Port, reason| {
            r.family
                .get_or_create(&RefusedLabels {
                    port: port.as_str(),
                    reason,
                })
                .get()
        };
        assert_eq!(get(Port::DataQuic, "not_quic"), 50);
        assert_eq!(get(Port::Http, "header_timeout"), 1);
    }
}
