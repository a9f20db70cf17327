//! The data plane's Prometheus families, labelled per (direction, source, destination)
//! service pair, and the access log line written for every closed connection.

use super::relay::{ByteMeters, End, Outcome};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::fmt::Write as _;
use std::time::Duration;

/// Which agent of the pair counted a connection.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// The client agent (the app connected to an upstream listener here).
    Outbound,
    /// The server agent (the destination instance runs here).
    Inbound,
}

impl Direction {
    /// Lowercase label as in the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Transport label of the handshake histogram.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum TransportLabel {
    /// QUIC between agents.
    Quic,
    /// TLS over TCP between agents.
    Tls,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for TransportLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            TransportLabel::Quic => "quic",
            TransportLabel::Tls => "tls",
        })
    }
}

/// Labels of every per-pair family: services are written `namespace/name`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PairLabels {
    /// Which side counted.
    pub direction: Direction,
    /// Source service.
    pub source: String,
    /// Destination service.
    pub destination: String,
}

/// Labels of the handshake histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    /// The transport whose handshake was timed.
    pub transport: TransportLabel,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~3.3 s
    Histogram::new(exponential_buckets(50e-6, 2.0, 17))
}

/// Every data-plane family, registered once per agent.
#[derive(Clone)]
pub struct ProxyMetrics {
    opened: Family<PairLabels, Counter>,
    denied: Family<PairLabels, Counter>,
    failed: Family<PairLabels, Counter>,
    active: Family<PairLabels, Gauge>,
    to_dst: Family<PairLabels, Counter>,
    from_dst: Family<PairLabels, Counter>,
    handshake: HistogramFamily<TransportLabels>,
    connect: HistogramFamily<PairLabels>,
}

impl ProxyMetrics {
    /// Creates the families and registers them in the agent's registry.
    pub fn register(metrics: &crate::metrics::Metrics) -> ProxyMetrics {
        let m = ProxyMetrics {
            opened: Family::default(),
            denied: Family::default(),
            failed: Family::default(),
            active: Family::default(),
            to_dst: Family::default(),
            from_dst: Family::default(),
            handshake: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            connect: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        };
        metrics.register(
            "proxy_connections_opened",
            "Proxied connections established, per service pair",
            m.opened.clone(),
        );
        metrics.register(
            "proxy_connections_denied",
            "Proxied connections refused by intentions (at open or cut later)",
            m.denied.clone(),
        );
        metrics.register(
            "proxy_connections_failed",
            "Proxied connections that could not be established or ended in an error",
            m.failed.clone(),
        );
        metrics.register(
            "proxy_connections_active",
            "Proxied connections open now",
            m.active.clone(),
        );
        metrics.register(
            "proxy_bytes_to_destination",
            "Bytes carried from the source toward the destination service",
            m.to_dst.clone(),
        );
        metrics.register(
            "proxy_bytes_from_destination",
            "Bytes carried from the destination service back to the source",
            m.from_dst.clone(),
        );
        metrics.register(
            "proxy_handshake_seconds",
            "Time to establish an agent-to-agent connection (QUIC or TLS handshake)",
            m.handshake.clone(),
        );
        metrics.register(
            "proxy_connect_seconds",
            "Time from accepting an app connection until the destination instance is connected",
            m.connect.clone(),
        );
        m
    }

    /// Counts a connection refused by intentions.
    pub fn denied(&self, pair: &PairLabels) {
        self.denied.get_or_create(pair).inc();
    }

    /// Counts a connection that failed before or while relaying.
    pub fn failed(&self, pair: &PairLabels) {
        self.failed.get_or_create(pair).inc();
    }

    /// Records an agent-to-agent handshake.
    pub fn handshake(&self, transport: TransportLabel, took: Duration) {
        self.handshake
            .get_or_create(&TransportLabels { transport })
            .observe(took.as_secs_f64());
    }

    /// Records the time to connect an outbound connection.
    pub fn connected(&self, pair: &PairLabels, took: Duration) {
        self.connect.get_or_create(pair).observe(took.as_secs_f64());
    }

    /// Counts a connection as opened and active; returns its byte meters.
    pub fn open(&self, pair: &PairLabels) -> ByteMeters {
        self.opened.get_or_create(pair).inc();
        self.active.get_or_create(pair).inc();
        ByteMeters {
            to_dst: self.to_dst.get_or_create_owned(pair),
            from_dst: self.from_dst.get_or_create_owned(pair),
        }
    }

    /// Ends an opened connection: no longer active; errors and cuts by intentions counted.
    pub fn close(&self, pair: &PairLabels, end: End) {
        self.active.get_or_create(pair).dec();
        match end {
            End::Closed | End::Drained | End::Cut(super::wire::ResetCode::Idle) => {}
            End::Cut(super::wire::ResetCode::Denied)
            | End::PeerReset(Some(super::wire::ResetCode::Denied)) => self.denied(pair),
            _ => self.failed(pair),
        }
    }
}

/// One access-log entry (target `rhizome::access`), written when a connection closes or is
/// refused.
pub struct AccessLog<'a> {
    /// Which side logs.
    pub direction: Direction,
    /// Labels of the pair.
    pub pair: &'a PairLabels,
    /// `node/instance` of the destination instance.
    pub instance: &'a str,
    /// `allow`, `deny`, `audit_deny` (allowed, would deny) or `error`.
    pub decision: &'a str,
    /// The intention that decided: `SRC => DST (action, precedence P, entry:line:column)`,
    /// or `default`. Inbound it is the rule that decided; outbound, the rule that decides in
    /// this agent's copy of the (replicated) rules, since the destination's agent enforces.
    pub rule: &'a str,
    /// How it ended (`closed`, `denied`, `cut_denied`, `idle_timeout`, ...).
    pub end: &'a str,
    /// Bytes toward the destination.
    pub bytes_out: u64,
    /// Bytes from the destination.
    pub bytes_in: u64,
    /// Lifetime of the connection.
    pub duration: Duration,
}

impl AccessLog<'_> {
    /// Writes the line.
    pub fn emit(&self) {
        tracing::info!(
            target: "rhizome::access",
            direction = self.direction.as_str(),
            source = %self.pair.source,
            destination = %self.pair.destination,
            instance = self.instance,
            decision = self.decision,
            rule = self.rule,
            end = self.end,
            bytes_out = self.bytes_out,
            bytes_in = self.bytes_in,
            duration_ms = u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
        );
    }
}

/// Bytes (toward, from) the destination from a relay outcome on the given side.
pub fn dst_bytes(outcome: &Outcome, side: super::relay::Side) -> (u64, u64) {
    match side {
        super::relay::Side::Client => (outcome.tcp_to_tunnel, outcome.tunnel_to_tcp),
        super::relay::Side::Server => (outcome.tunnel_to_tcp, outcome.tcp_to_tunnel),
    }
}
