//! Per-edge traffic counters (`GET /v1/traffic`): what the destination side of each service
//! pair counted (connections opened, denied, failed, active, bytes each way), and how often
//! each intention decided. Read from this agent's own metrics registry, so the numbers are
//! exactly those `/metrics` shows; the UI turns successive readings into rates.

use crate::metrics::Metrics;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What `GET /v1/traffic` reads.
#[derive(Clone)]
pub struct TrafficState {
    /// This agent's node name.
    pub node: String,
    /// The registry `/metrics` encodes.
    pub metrics: Arc<Metrics>,
}

/// Counters of one service pair, as its destination's agent counted them.
#[derive(Serialize, Debug, Default, Clone, PartialEq, Eq)]
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
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TrafficView {
    /// The node that answered.
    pub node: String,
    /// When it read its counters (Unix milliseconds).
    pub at_ms: u64,
    /// Service pairs with inbound traffic at this node, sorted.
    pub edges: Vec<EdgeCounters>,
    /// Intention decisions taken at this node, sorted.
    pub rules: Vec<RuleHits>,
}

/// `GET /v1/traffic`.
pub fn routes(state: TrafficState) -> Router {
    Router::new()
        .route("/v1/traffic", get(traffic))
        .with_state(state)
}

async fn traffic(State(s): State<TrafficState>) -> Json<TrafficView> {
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Json(read(&s.node, at_ms, &s.metrics.encode()))
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
