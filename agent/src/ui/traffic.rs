//! Per-edge traffic counters (`GET /v1/traffic`): what the destination side of each service
//! pair counted (connections opened, denied, failed, active, bytes each way), with rates, and
//! how often each intention decided here.
//!
//! Mesh-wide without a controller: every [`PUBLISH_EVERY`] each agent reads its own counters
//! (from its metrics registry, so they are exactly what `/metrics` shows), computes the rates
//! since its last reading, and publishes its busiest pairs as its replicated
//! `traffic/<node>` entry (postcard, at most [`MAX_SUMMARY_BYTES`] so that it rides in one
//! gossip broadcast and reaches everyone in about a second; republished when it changed and
//! once a minute); the pairs beyond that budget (up to [`MAX_EDGES`] in all) go in
//! `traffic/<node>/rest`, republished at most every [`REST_EVERY`] and carried by
//! anti-entropy, so their figures may be that much older. Any
//! agent answers `/v1/traffic` with its own live counters plus every other agent's summary of
//! the last [`STALE_AFTER`], summed per pair (each pair is counted where its destination runs,
//! so nothing is counted twice).

use crate::ca::identity::Identity;
use crate::gossip::replica::Replica;
use crate::metrics::Metrics;
use crate::runtime::Shutdown;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use rhizome_gossip::state::Key;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often an agent reads its counters, computes rates and publishes its summary.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(5);
/// The busiest pairs an agent publishes (by connections, then denials); the rest stay local.
pub const MAX_EDGES: usize = 64;
/// A summary's encoded size bound: with the entry's key, clock and signature it stays under
/// the gossip broadcast budget (1,024 bytes by default), so it is sent at once rather than
/// waiting for anti-entropy.
pub const MAX_SUMMARY_BYTES: usize = 700;
/// How often at most the pairs beyond the broadcast-sized summary are republished (they
/// travel by anti-entropy, every `gossip.push_pull_interval`, 30 s by default).
pub const REST_EVERY: Duration = Duration::from_secs(30);
/// Summaries older than this are left out (their agent is gone or silent).
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// What `GET /v1/traffic` and the publisher read.
#[derive(Clone)]
pub struct TrafficState {
    /// This agent's node name.
    pub node: String,
    /// The registry `/metrics` encodes.
    pub metrics: Arc<Metrics>,
    /// The replicated state the summaries travel in.
    pub replica: Arc<Replica>,
    /// This agent's credentials (for their expiry).
    pub identity: Arc<Identity>,
    /// The rates computed at the last reading, per (source, destination).
    rates: Arc<Mutex<BTreeMap<(String, String), Rates>>>,
}

impl TrafficState {
    /// State for `node`.
    pub fn new(
        node: String,
        metrics: Arc<Metrics>,
        replica: Arc<Replica>,
        identity: Arc<Identity>,
    ) -> Self {
        TrafficState {
            node,
            metrics,
            replica,
            identity,
            rates: Arc::default(),
        }
    }
}

/// Per-second rates of one pair over the last reading interval.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Connections let through per second.
    pub connections: f64,
    /// Connections refused per second.
    pub denied: f64,
    /// Bytes per second, both directions.
    pub bytes: f64,
}

/// Counters of one service pair, as its destination's agent counted them.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
pub struct EdgeCounters {
    /// Source service, `namespace/name`.
    pub source: String,
    /// Destination service, `namespace/name`.
    pub destination: String,
    /// Connections let through.
    pub opened: u64,
    /// Connections refused (or cut) by intentions.
    pub denied: u64,
    /// Connections that failed for another reason.
    pub failed: u64,
    /// Connections open now.
    pub active: u64,
    /// Bytes carried toward the destination.
    pub bytes_to_destination: u64,
    /// Bytes carried back from the destination.
    pub bytes_from_destination: u64,
    /// Rates over the reporting agents' last reading interval.
    #[serde(default)]
    pub per_second: Rates,
    /// The agents whose counts are summed here.
    #[serde(default)]
    pub reported_by: Vec<String>,
}

/// The value of a `traffic/<node>` entry: the agent's busiest pairs, and what the members
/// page shows of the agent (its version, when its credentials expire).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Summary {
    /// When the agent read its counters (Unix milliseconds).
    pub at_ms: u64,
    /// Its busiest pairs (at most [`MAX_EDGES`]), `reported_by` left empty.
    pub edges: Vec<EdgeCounters>,
    /// The agent's version.
    pub version: String,
    /// When the first of its agent certificate and intermediate expires (Unix ms).
    pub cert_expires_ms: Option<u64>,
}

/// What `GET /v1/traffic` says of one agent.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub node: String,
    /// Agent version.
    pub version: String,
    /// When the first of its agent certificate and intermediate expires (Unix ms).
    pub cert_expires_ms: Option<u64>,
    /// When it last reported (Unix ms).
    pub at_ms: u64,
}

/// How often one rule decided, and how.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct RuleHits {
    /// The rule as the access log writes it (or `default`).
    pub rule: String,
    /// `allow`, `deny` or `audit_deny`.
    pub decision: String,
    /// Connections it decided.
    pub hits: u64,
}

/// The body of `GET /v1/traffic`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TrafficView {
    /// The node that answered.
    pub node: String,
    /// When it read its counters (Unix milliseconds).
    pub at_ms: u64,
    /// Service pairs with traffic anywhere in the mesh (this node's live counters, the
    /// others' last summaries), sorted.
    pub edges: Vec<EdgeCounters>,
    /// Intention decisions taken at this node, sorted.
    pub rules: Vec<RuleHits>,
    /// Every agent that reported (this one first).
    pub nodes: Vec<NodeInfo>,
}

/// `GET /v1/traffic`.
pub fn routes(state: TrafficState) -> Router {
    Router::new()
        .route("/v1/traffic", get(traffic))
        .with_state(state)
}

async fn traffic(State(s): State<TrafficState>) -> Json<TrafficView> {
    let at_ms = crate::gossip::now_ms();
    let mut view = read(&s.node, at_ms, &s.metrics.encode());
    {
        let rates = s
            .rates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in &mut view.edges {
            e.per_second = rates
                .get(&(e.source.clone(), e.destination.clone()))
                .copied()
                .unwrap_or_default();
            e.reported_by = vec![s.node.clone()];
        }
    }
    let mut heads: Vec<(String, Summary)> = Vec::new();
    let mut rests: Vec<(String, Summary)> = Vec::new();
    for e in s.replica.entries("traffic/") {
        let (list, node) = match &e.key {
            Key::Traffic(node) => (&mut heads, node),
            Key::TrafficRest(node) => (&mut rests, node),
            _ => continue,
        };
        if node.as_str() == s.node {
            continue;
        }
        if let Ok(summary) = postcard::from_bytes::<Summary>(&e.value) {
            list.push((node.as_str().to_string(), summary));
        }
    }
    let others = heads.clone();
    let rests = without_head_pairs(&heads, rests);
    view.nodes = std::iter::once(NodeInfo {
        node: s.node.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        cert_expires_ms: cert_expiry_ms(&s.identity, at_ms),
        at_ms,
    })
    .chain(others.iter().map(|(node, summary)| NodeInfo {
        node: node.clone(),
        version: summary.version.clone(),
        cert_expires_ms: summary.cert_expires_ms,
        at_ms: summary.at_ms,
    }))
    .collect();
    view.edges = merge(view.edges, others.into_iter().chain(rests), at_ms);
    Json(view)
}

/// The `rests` with every pair that the same agent's head summary also has removed: the rest
/// is older, and a pair must count once.
fn without_head_pairs(
    heads: &[(String, Summary)],
    mut rests: Vec<(String, Summary)>,
) -> Vec<(String, Summary)> {
    for (node, rest) in &mut rests {
        if let Some((_, head)) = heads.iter().find(|(n, _)| n == node) {
            rest.edges.retain(|r| {
                !head
                    .edges
                    .iter()
                    .any(|h| h.source == r.source && h.destination == r.destination)
            });
        }
    }
    rests
}

/// Adds other agents' summaries (fresh ones only) to this agent's edges, summing per pair.
pub fn merge(
    own: Vec<EdgeCounters>,
    others: impl IntoIterator<Item = (String, Summary)>,
    now_ms: u64,
) -> Vec<EdgeCounters> {
    let stale_ms = u64::try_from(STALE_AFTER.as_millis()).unwrap_or(u64::MAX);
    let mut by_pair: BTreeMap<(String, String), EdgeCounters> = own
        .into_iter()
        .map(|e| ((e.source.clone(), e.destination.clone()), e))
        .collect();
    for (node, summary) in others {
        if summary.at_ms.saturating_add(stale_ms) < now_ms {
            continue;
        }
        for e in summary.edges.into_iter().take(MAX_EDGES) {
            let sum = by_pair
                .entry((e.source.clone(), e.destination.clone()))
                .or_insert_with(|| EdgeCounters {
                    source: e.source.clone(),
                    destination: e.destination.clone(),
                    ..EdgeCounters::default()
                });
            sum.opened += e.opened;
            sum.denied += e.denied;
            sum.failed += e.failed;
            sum.active += e.active;
            sum.bytes_to_destination += e.bytes_to_destination;
            sum.bytes_from_destination += e.bytes_from_destination;
            sum.per_second.connections += e.per_second.connections;
            sum.per_second.denied += e.per_second.denied;
            sum.per_second.bytes += e.per_second.bytes;
            sum.reported_by.push(node.clone());
        }
    }
    by_pair.into_values().collect()
}

/// When the first of this agent's own certificate and its intermediate expires (Unix ms).
fn cert_expiry_ms(identity: &Identity, now_ms: u64) -> Option<u64> {
    crate::ca::expiry::report(identity, time::OffsetDateTime::now_utc())
        .iter()
        .filter(|c| c.kind == "agent" || c.kind == "intermediate")
        .map(|c| {
            let ms = c.seconds_to_expiry.saturating_mul(1000);
            if ms >= 0 {
                now_ms.saturating_add(ms.unsigned_abs())
            } else {
                now_ms.saturating_sub(ms.unsigned_abs())
            }
        })
        .min()
}

/// Every [`PUBLISH_EVERY`]: reads this agent's counters, keeps the rates since the last
/// reading for `/v1/traffic`, and publishes the busiest pairs as `traffic/<node>` when they
/// changed. Runs until `stop`.
pub async fn publisher(s: TrafficState, stop: Shutdown) -> anyhow::Result<()> {
    let Ok(node) = s.node.parse::<rhizome_gossip::state::Segment>() else {
        return Ok(());
    };
    let key = Key::Traffic(node.clone());
    let rest_key = Key::TrafficRest(node);
    let mut rest_published: Vec<EdgeCounters> = Vec::new();
    let mut rest_published_at: Option<std::time::Instant> = None;
    let mut last: Option<TrafficView> = None;
    let mut published: Vec<EdgeCounters> = Vec::new();
    let mut published_at = std::time::Instant::now();
    let mut first = true;
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.wait() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = read(&s.node, crate::gossip::now_ms(), &s.metrics.encode());
        let mut edges = with_rates(last.as_ref(), &now);
        *s.rates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = edges
            .iter()
            .map(|e| ((e.source.clone(), e.destination.clone()), e.per_second))
            .collect();
        edges.sort_by_key(|e| std::cmp::Reverse((e.opened, e.denied)));
        edges.truncate(MAX_EDGES);
        // Published at start, when it changed, and before others would call it stale.
        let due = first || published_at.elapsed() >= STALE_AFTER / 2;
        if edges != published || due {
            let expires = cert_expiry_ms(&s.identity, now.at_ms);
            match encode_fitted(now.at_ms, &edges, expires) {
                Ok((bytes, pairs)) => match s.replica.write_local(key.clone(), bytes) {
                    Ok(_) => {
                        let rest = edges[pairs..].to_vec();
                        published = edges;
                        published_at = std::time::Instant::now();
                        first = false;
                        let rest_due = rest_published_at.is_none_or(|t| t.elapsed() >= REST_EVERY);
                        if rest != rest_published && rest_due {
                            let summary = Summary {
                                at_ms: now.at_ms,
                                edges: rest.clone(),
                                version: env!("CARGO_PKG_VERSION").to_string(),
                                cert_expires_ms: expires,
                            };
                            let written = postcard::to_allocvec(&summary)
                                .map_err(anyhow::Error::from)
                                .and_then(|b| {
                                    s.replica
                                        .write_local(rest_key.clone(), b)
                                        .map_err(anyhow::Error::from)
                                });
                            match written {
                                Ok(_) => {
                                    rest_published = rest;
                                    rest_published_at = Some(std::time::Instant::now());
                                }
                                Err(e) => tracing::debug!(error = %e,
                                    "cannot publish the rest of the traffic summary"),
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot publish the traffic summary"),
                },
                Err(e) => tracing::debug!(error = %e, "cannot encode the traffic summary"),
            }
        }
        last = Some(now);
    }
}

/// The summary of the busiest of `edges` (sorted busiest first) that fits in
/// [`MAX_SUMMARY_BYTES`]: its encoding and how many pairs it carries.
pub fn encode_fitted(
    at_ms: u64,
    edges: &[EdgeCounters],
    cert_expires_ms: Option<u64>,
) -> Result<(Vec<u8>, usize), postcard::Error> {
    let mut n = edges.len().min(MAX_EDGES);
    loop {
        let bytes = postcard::to_allocvec(&Summary {
            at_ms,
            edges: edges[..n].to_vec(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            cert_expires_ms,
        })?;
        if bytes.len() <= MAX_SUMMARY_BYTES || n == 0 {
            return Ok((bytes, n));
        }
        n -= 1;
    }
}

/// `now`'s edges with the per-second rates since `before`.
fn with_rates(before: Option<&TrafficView>, now: &TrafficView) -> Vec<EdgeCounters> {
    let dt = before.map_or(0.0, |b| now.at_ms.saturating_sub(b.at_ms) as f64 / 1000.0);
    now.edges
        .iter()
        .map(|e| {
            let prev = before.and_then(|b| {
                b.edges
                    .iter()
                    .find(|p| p.source == e.source && p.destination == e.destination)
            });
            let rate = |f: fn(&EdgeCounters) -> u64| match prev {
                Some(p) if dt > 0.0 => f(e).saturating_sub(f(p)) as f64 / dt,
                None if dt > 0.0 => f(e) as f64 / dt,
                _ => 0.0,
            };
            EdgeCounters {
                per_second: Rates {
                    connections: rate(|e| e.opened),
                    denied: rate(|e| e.denied),
                    bytes: rate(|e| e.bytes_to_destination + e.bytes_from_destination),
                },
                ..e.clone()
            }
        })
        .collect()
}

/// Builds the view from the registry's OpenMetrics text.
pub fn read(node: &str, at_ms: u64, openmetrics: &str) -> TrafficView {
    let mut edges: BTreeMap<(String, String), EdgeCounters> = BTreeMap::new();
    let mut rules: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in openmetrics.lines() {
        let Some(sample) = Sample::parse(line) else {
            continue;
        };
        if sample.family == "rhizome_intention_decisions_total" {
            if let (Some(rule), Some(decision)) = (sample.label("rule"), sample.label("decision")) {
                *rules.entry((rule.into(), decision.into())).or_default() += sample.value;
            }
            continue;
        }
        let field: fn(&mut EdgeCounters) -> &mut u64 = match sample.family {
            "rhizome_proxy_connections_opened_total" => |e| &mut e.opened,
            "rhizome_proxy_connections_denied_total" => |e| &mut e.denied,
            "rhizome_proxy_connections_failed_total" => |e| &mut e.failed,
            "rhizome_proxy_connections_active" => |e| &mut e.active,
            "rhizome_proxy_bytes_to_destination_total" => |e| &mut e.bytes_to_destination,
            "rhizome_proxy_bytes_from_destination_total" => |e| &mut e.bytes_from_destination,
            _ => continue,
        };
        if sample.label("direction") != Some("inbound") {
            continue;
        }
        let (Some(src), Some(dst)) = (sample.label("source"), sample.label("destination")) else {
            continue;
        };
        let e = edges
            .entry((src.to_string(), dst.to_string()))
            .or_insert_with(|| EdgeCounters {
                source: src.to_string(),
                destination: dst.to_string(),
                ..EdgeCounters::default()
            });
        *field(e) += sample.value;
    }
    TrafficView {
        node: node.to_string(),
        at_ms,
        edges: edges.into_values().collect(),
        rules: rules
            .into_iter()
            .map(|((rule, decision), hits)| RuleHits {
                rule,
                decision,
                hits,
            })
            .collect(),
        nodes: Vec::new(),
    }
}

/// One OpenMetrics sample line: `family{k="v",...} value`.
struct Sample<'a> {
    family: &'a str,
    labels: Vec<(&'a str, String)>,
    value: u64,
}

impl<'a> Sample<'a> {
    fn parse(line: &'a str) -> Option<Sample<'a>> {
        if line.starts_with('#') {
            return None;
        }
        let (family, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => {
                let (f, v) = line.split_once(' ')?;
                return Some(Sample {
                    family: f,
                    labels: Vec::new(),
                    value: parse_value(v)?,
                });
            }
        };
        let mut labels = Vec::new();
        let mut rest = rest;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                return Some(Sample {
                    family,
                    labels,
                    value: parse_value(after.trim_start())?,
                });
            }
            rest = rest.strip_prefix(',').unwrap_or(rest);
            let (key, after) = rest.split_once("=\"")?;
            let (value, after) = unescape_until_quote(after)?;
            labels.push((key, value));
            rest = after;
        }
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A label value up to its closing quote, with OpenMetrics' `\\`, `\"` and `\n` escapes
/// undone; returns the value and the text after the quote.
fn unescape_until_quote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            other => out.push(other),
        }
    }
    None
}

/// A sample's value; counters are integers but may be written as floats.
fn parse_value(v: &str) -> Option<u64> {
    let v = v.split_whitespace().next()?;
    v.parse::<u64>().ok().or_else(|| {
        let f = v.parse::<f64>().ok()?;
        (f.is_finite() && f >= 0.0).then_some(f as u64)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP rhizome_proxy_connections_opened Proxied connections established
# TYPE rhizome_proxy_connections_opened counter
rhizome_proxy_connections_opened_total{direction="inbound",source="default/web",destination="default/db"} 7
rhizome_proxy_connections_opened_total{direction="outbound",source="default/web",destination="default/db"} 9
rhizome_proxy_connections_denied_total{direction="inbound",source="default/evil",destination="default/db"} 2
rhizome_proxy_bytes_to_destination_total{direction="inbound",source="default/web",destination="default/db"} 1234
rhizome_proxy_connections_active{direction="inbound",source="default/web",destination="default/db"} 1
rhizome_intention_decisions_total{source="default/web",destination="default/db",rule="web => db (allow, \"a\\b\")",decision="allow"} 7
rhizome_intention_decisions_total{source="default/evil",destination="default/db",rule="default",decision="deny"} 2
rhizome_agent_uptime_seconds 12
"#;

    #[test]
    fn inbound_counters_per_pair_and_rule_hits() {
        let v = read("n1", 5, TEXT);
        assert_eq!(v.edges.len(), 2);
        let web = &v.edges[1];
        assert_eq!((web.source.as_str(), web.opened), ("default/web", 7));
        assert_eq!((web.bytes_to_destination, web.active), (1234, 1));
        let evil = &v.edges[0];
        assert_eq!(
            (evil.source.as_str(), evil.denied, evil.opened),
            ("default/evil", 2, 0)
        );
        assert_eq!(v.rules.len(), 2);
        assert_eq!(v.rules[1].rule, r#"web => db (allow, "a\b")"#);
        assert_eq!(v.rules[1].hits, 7);
    }

    #[test]
    fn summaries_of_other_agents_are_summed_per_pair_and_stale_ones_left_out() {
        let own = read("n1", 5, TEXT).edges;
        let edge = |src: &str, opened| EdgeCounters {
            source: src.into(),
            destination: "default/db".into(),
            opened,
            per_second: Rates {
                connections: 2.0,
                ..Rates::default()
            },
            ..EdgeCounters::default()
        };
        let now = 1_000_000_000;
        let fresh = Summary {
            at_ms: now - 1000,
            edges: vec![edge("default/web", 10), edge("default/api", 4)],
            version: "0.1.0".into(),
            cert_expires_ms: None,
        };
        let stale = Summary {
            at_ms: now - 3 * 60 * 1000,
            edges: vec![edge("default/web", 1000)],
            version: "0.1.0".into(),
            cert_expires_ms: None,
        };
        let merged = merge(own, [("n2".into(), fresh), ("n3".into(), stale)], now);
        let web = merged.iter().find(|e| e.source == "default/web").unwrap();
        assert_eq!(web.opened, 17, "7 here + 10 at n2, not n3's stale 1000");
        assert_eq!(web.reported_by, vec!["n2".to_string()]);
        assert!((web.per_second.connections - 2.0).abs() < 1e-9);
        assert!(
            merged
                .iter()
                .any(|e| e.source == "default/api" && e.opened == 4)
        );
        assert_eq!(merged.len(), 3);
    }

    #[test]
    fn a_pair_in_both_parts_of_a_summary_counts_once() {
        let edge = |src: &str, opened| EdgeCounters {
            source: src.into(),
            destination: "default/db".into(),
            opened,
            ..EdgeCounters::default()
        };
        let summary = |edges| Summary {
            at_ms: 1_000,
            edges,
            version: "0.1.0".into(),
            cert_expires_ms: None,
        };
        let heads = vec![("n2".to_string(), summary(vec![edge("default/web", 10)]))];
        let rests = vec![
            (
                "n2".to_string(),
                summary(vec![edge("default/web", 7), edge("default/api", 3)]),
            ),
            ("n3".to_string(), summary(vec![edge("default/web", 1)])),
        ];
        let rests = without_head_pairs(&heads, rests);
        let merged = merge(Vec::new(), heads.into_iter().chain(rests), 2_000);
        let web = merged.iter().find(|e| e.source == "default/web").unwrap();
        assert_eq!(
            web.opened, 11,
            "n2's head (10) and n3's rest (1), not n2's older rest"
        );
        assert_eq!(web.reported_by, vec!["n2".to_string(), "n3".to_string()]);
        assert!(
            merged
                .iter()
                .any(|e| e.source == "default/api" && e.opened == 3)
        );
    }

    #[test]
    fn rates_are_the_difference_over_the_interval() {
        let before = read("n", 1_000, TEXT);
        let later = TEXT.replace("} 7\n", "} 17\n").replace("} 1234", "} 3234");
        let now = read("n", 3_000, &later);
        let edges = with_rates(Some(&before), &now);
        let web = edges.iter().find(|e| e.source == "default/web").unwrap();
        assert!((web.per_second.connections - 5.0).abs() < 1e-9, "{web:?}");
        assert!((web.per_second.bytes - 1000.0).abs() < 1e-9, "{web:?}");
        let summary = Summary {
            at_ms: 3_000,
            edges,
            version: "0.1.0".into(),
            cert_expires_ms: Some(9_000),
        };
        let bytes = postcard::to_allocvec(&summary).unwrap();
        assert_eq!(postcard::from_bytes::<Summary>(&bytes).unwrap(), summary);
    }

    /// A summary's size and what it costs the gossip layer at 100 services, every pair busy:
    /// with typical names and with names as long as the config allows (the worst case).
    #[test]
    fn a_summary_of_100_busy_services_fits_one_broadcast() {
        for (label, name) in [
            (
                "typical names",
                Box::new(|i: usize| format!("default/svc-{i}")) as Box<dyn Fn(usize) -> String>,
            ),
            (
                "longest names",
                Box::new(|i: usize| format!("{}/{:0>63}", "n".repeat(63), i)),
            ),
        ] {
            let edges: Vec<EdgeCounters> = (0..100)
                .flat_map(|i| (0..100).filter(move |j| *j != i).map(move |j| (i, j)))
                .take(MAX_EDGES)
                .map(|(i, j)| EdgeCounters {
                    source: name(i),
                    destination: name(j),
                    opened: 1 << 30,
                    denied: 1 << 20,
                    failed: 1 << 10,
                    active: 1_000,
                    bytes_to_destination: 1 << 40,
                    bytes_from_destination: 1 << 40,
                    per_second: Rates {
                        connections: 1234.5,
                        denied: 1.5,
                        bytes: 1.0e9,
                    },
                    reported_by: Vec::new(),
                })
                .collect();
            let (bytes, pairs) = encode_fitted(u64::MAX, &edges, Some(u64::MAX)).unwrap();
            println!(
                "traffic summary at 100 services ({label}): {pairs} busiest pairs in {} bytes; \
                 at most one every {} s per agent while its traffic changes, one a minute idle",
                bytes.len(),
                PUBLISH_EVERY.as_secs()
            );
            assert!(bytes.len() <= MAX_SUMMARY_BYTES && pairs >= 1);
            let back: Summary = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back.edges[..], edges[..pairs]);
        }
    }

    #[test]
    fn garbled_lines_are_skipped() {
        for line in [
            "x{a=\"unterminated",
            "x{a=\"v\"} notanumber",
            "x{a} 1",
            "{} 1",
            "x{a=\"v\\",
            "rhizome_proxy_connections_opened_total{direction=\"inbound\"} 3",
        ] {
            let v = read("n", 0, line);
            assert!(v.edges.is_empty() && v.rules.is_empty(), "{line}");
        }
    }
}
