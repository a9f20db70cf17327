//! The access graph: who may talk to whom, with wildcards expanded over known services.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::decision::Policy;
use crate::entry::{Action, Origin};
use crate::ruleset::RuleSet;
use crate::service::ServiceRef;

/// One service in the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// `NAMESPACE/NAME`, the id edges refer to.
    pub id: String,
    /// The namespace.
    pub namespace: String,
    /// The service name.
    pub name: String,
    /// False when the service only appears in a rule, not among the known services.
    pub known: bool,
}

/// The effective decision for one ordered pair of services, decided by a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// Source node id.
    pub from: String,
    /// Destination node id.
    pub to: String,
    /// The deciding rule's action.
    pub action: Action,
    /// Whether connections go through (an audited deny is allowed).
    pub allowed: bool,
    /// True for a deny that audit mode turns into "would deny".
    pub audit: bool,
    /// The deciding rule, as `SRC => DST`.
    pub rule: String,
    /// Where the deciding rule was written.
    pub origin: Origin,
}

/// Services as nodes and rule decisions as edges. Pairs decided by the default get no
/// edge: the default is a property of the graph (`default`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessGraph {
    /// The rule set's version.
    pub version: String,
    /// The action for pairs without an edge.
    pub default: Action,
    /// Whether the agent-wide audit mode was on.
    pub audit: bool,
    /// Nodes, sorted by id.
    pub nodes: Vec<Node>,
    /// Edges, sorted by (from, to).
    pub edges: Vec<Edge>,
}

impl AccessGraph {
    /// Builds the graph of `known` services (plus services named exactly in rules) by
    /// deciding every ordered pair of distinct services with `rules` and `policy`.
    pub fn build(rules: &RuleSet, known: &[ServiceRef], policy: Policy) -> Self {
        let mut services: BTreeMap<ServiceRef, bool> = BTreeMap::new();
        for rule in rules.rules() {
            for s in [&rule.source, &rule.destination]
                .into_iter()
                .filter_map(|p| p.as_exact())
            {
                services.insert(s, false);
            }
        }
        services.extend(known.iter().map(|s| (s.clone(), true)));
        let mut edges = Vec::new();
        for src in services.keys() {
            for dst in services.keys().filter(|d| *d != src) {
                let d = rules.decide(src, dst, policy);
                if let Some(rule) = d.rule() {
                    edges.push(Edge {
                        from: src.to_string(),
                        to: dst.to_string(),
                        action: d.action,
                        allowed: d.allowed,
                        audit: d.audit,
                        rule: format!("{} => {}", rule.source, rule.destination),
                        origin: rule.origin.clone(),
                    });
                }
            }
        }
        let nodes = services
            .into_iter()
            .map(|(s, known)| Node {
                id: s.to_string(),
                namespace: s.namespace.to_string(),
                name: s.name.to_string(),
                known,
            })
            .collect();
        Self {
            version: rules.version().to_string(),
            default: policy.default,
            audit: policy.audit,
            nodes,
            edges,
        }
    }

    /// The graph as pretty JSON (field names are stable: they are the struct fields).
    pub fn to_json(&self) -> String {
        // Plain structs of strings, bools and enums always serialize.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The graph in graphviz DOT: green solid edges allow, red dashed edges deny, orange
    /// dotted edges are audited denies; services not in the catalog are drawn dashed.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph rhizome {\n  rankdir=LR;\n  node [shape=box];\n");
        let _ = writeln!(
            out,
            "  label={};\n  labelloc=t;",
            quote(&format!(
                "default {}{}, version {}",
                self.default,
                if self.audit { " (audit)" } else { "" },
                self.version
            ))
        );
        for n in &self.nodes {
            let style = if n.known { "" } else { ", style=dashed" };
            let _ = writeln!(out, "  {} [label={}{style}];", quote(&n.id), quote(&n.id));
        }
        for e in &self.edges {
            let (color, style) = match (e.action, e.audit) {
                (Action::Allow, _) => ("darkgreen", "solid"),
                (Action::Deny, true) => ("orange", "dotted"),
                (Action::Deny, false) => ("red", "dashed"),
            };
            let _ = writeln!(
                out,
                "  {} -> {} [color={color}, style={style}, label={}, tooltip={}];",
                quote(&e.from),
                quote(&e.to),
                quote(if e.audit {
                    "deny (audit)"
                } else {
                    e.action.as_str()
                }),
                quote(&format!("{} ({})", e.rule, e.origin)),
            );
        }
        out.push_str("}\n");
        out
    }
}

/// A DOT double-quoted string.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                q.push('\\');
                q.push(c);
            }
            '\n' => q.push_str("\\n"),
            _ => q.push(c),
        }
    }
    q.push('"');
    q
}
