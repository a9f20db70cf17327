//! The access graph: wildcards expanded over known services, DOT and JSON renderings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{set, svc};
use rhizome_intentions::{AccessGraph, Action, Policy};

#[test]
fn graph_expands_wildcards_over_known_services() {
    let rules = set(&[
        (
            "default/db",
            &[("default/web", "allow"), ("default/*", "deny")],
        ),
        ("default/web-*", &[("default/lb", "allow")]),
        ("default/audit", &[("ops/admin", "allow")]),
    ]);
    let known = [svc("web"), svc("db"), svc("api"), svc("lb"), svc("web-eu")];
    let g = AccessGraph::build(&rules, &known, Policy::DENY);
    let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
    // `default/audit` and `ops/admin` come from rules only.
    assert_eq!(
        ids,
        [
            "default/api",
            "default/audit",
            "default/db",
            "default/lb",
            "default/web",
            "default/web-eu",
            "ops/admin"
        ]
    );
    let unknown: Vec<&str> = g
        .nodes
        .iter()
        .filter(|n| !n.known)
        .map(|n| n.id.as_str())
        .collect();
    assert_eq!(unknown, ["default/audit", "ops/admin"]);
    let edges: Vec<(&str, &str, Action)> = g
        .edges
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str(), e.action))
        .collect();
    assert_eq!(
        edges,
        [
            ("default/api", "default/db", Action::Deny),
            ("default/audit", "default/db", Action::Deny),
            ("default/lb", "default/db", Action::Deny),
            ("default/lb", "default/web-eu", Action::Allow),
            ("default/web", "default/db", Action::Allow),
            ("default/web-eu", "default/db", Action::Deny),
            ("ops/admin", "default/audit", Action::Allow),
        ]
    );
    assert_eq!(g.edges[4].rule, "default/web => default/db");
    assert_eq!(g.edges[4].origin.to_string(), "default/db.hcl:5:3");
}

#[test]
fn json_has_stable_field_names() {
    let rules = set(&[("default/db", &[("default/web", "allow")])]);
    let g = AccessGraph::build(&rules, &[svc("web"), svc("db")], Policy::DENY);
    let v: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
    assert_eq!(v["default"], "deny");
    assert_eq!(v["audit"], false);
    assert_eq!(v["version"], rules.version().to_string());
    assert_eq!(v["nodes"][0]["id"], "default/db");
    assert_eq!(v["nodes"][0]["namespace"], "default");
    assert_eq!(v["nodes"][0]["name"], "db");
    assert_eq!(v["nodes"][0]["known"], true);
    let e = &v["edges"][0];
    assert_eq!(
        (e["from"].as_str(), e["to"].as_str()),
        (Some("default/web"), Some("default/db"))
    );
    assert_eq!(
        (e["action"].as_str(), e["allowed"].as_bool()),
        (Some("allow"), Some(true))
    );
    assert_eq!(e["audit"], false);
    assert_eq!(e["rule"], "default/web => default/db");
    assert_eq!(e["origin"]["file"], "default/db.hcl");
    assert_eq!(v["edges"].as_array().map(Vec::len), Some(1));
}

#[test]
fn dot_marks_allow_deny_and_audit() {
    let rules = set(&[(
        "default/db",
        &[("default/web", "allow"), ("default/api", "deny")],
    )]);
    let known = [svc("web"), svc("db"), svc("api")];
    let dot = AccessGraph::build(&rules, &known, Policy::DENY).to_dot();
    assert!(dot.starts_with("digraph rhizome {\n"), "{dot}");
    assert!(dot.ends_with("}\n"), "{dot}");
    assert!(
        dot.contains(
            "\"default/web\" -> \"default/db\" [color=darkgreen, style=solid, label=\"allow\""
        ),
        "{dot}"
    );
    assert!(
        dot.contains("\"default/api\" -> \"default/db\" [color=red, style=dashed, label=\"deny\""),
        "{dot}"
    );
    let audit = Policy {
        default: Action::Deny,
        audit: true,
    };
    let dot = AccessGraph::build(&rules, &known, audit).to_dot();
    assert!(
        dot.contains(
            "\"default/api\" -> \"default/db\" [color=orange, style=dotted, label=\"deny (audit)\""
        ),
        "{dot}"
    );
    assert!(dot.contains("label=\"default deny (audit)"), "{dot}");
}
