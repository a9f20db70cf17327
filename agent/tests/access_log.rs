//! Traceable decisions on real agents: every access-log line names the rule that decided
//! (entry:line:column), and `rhizome_intention_decisions_total` counts per rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use proxy_support::*;
use rhizome_agent::catalog::Health;
use std::sync::{Arc, Mutex};

/// Everything the `rhizome::access` target writes, one JSON object per line.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn field<'a>(line: &'a serde_json::Value, name: &str) -> &'a str {
    line["fields"][name].as_str().unwrap_or("")
}

#[tokio::test]
async fn access_log_and_metrics_name_the_deciding_rule() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter("rhizome::access=info")
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let mesh = Mesh::new("test.mesh");
    let echo = echo_server().await;
    let port = free_port();
    let b = mesh
        .start("b", &service("db", "db-1", echo.port(), &[]))
        .await;
    let ups = [Up {
        destination: "db",
        port,
    }];
    let a = mesh
        .start_joined("a", &[&b], &service("web", "web-1", 1, &ups))
        .await;
    wait_catalog(&a, "default", "db", 1, Health::Passing).await;

    // Allowed by the rule on line 4 of the first file.
    for agent in [&a, &b] {
        rules(agent, &[&allow("db", "web")]);
    }
    assert_eq!(roundtrip(port, b"ping").await.unwrap(), b"ping");
    let allow_rule = "default/web => default/db (allow, precedence 16, i0.hcl:4:3)";
    eventually("both access-log lines of the allowed connection", || {
        captured.lines().len() >= 2
    })
    .await;

    // Denied by a deny rule: the connection is reset, and the lines name that rule.
    let deny = allow("db", "web").replace("allow", "deny");
    for agent in [&a, &b] {
        rules(agent, &[&deny]);
    }
    assert!(roundtrip(port, b"ping").await.is_err() || read_all(port).await.unwrap().is_empty());
    eventually("the access-log lines of the denied connection", || {
        captured
            .lines()
            .iter()
            .filter(|l| field(l, "decision") == "deny")
            .count()
            >= 2
    })
    .await;

    let lines = captured.lines();
    for line in &lines {
        assert!(
            !field(line, "rule").is_empty(),
            "every line names a rule: {line}"
        );
    }
    let with = |direction: &str, decision: &str| {
        lines
            .iter()
            .find(|l| field(l, "direction") == direction && field(l, "decision") == decision)
            .unwrap_or_else(|| panic!("no {direction} {decision} line in {lines:?}"))
    };
    assert_eq!(field(with("inbound", "allow"), "rule"), allow_rule);
    assert_eq!(field(with("outbound", "allow"), "rule"), allow_rule);
    let deny_rule = "default/web => default/db (deny, precedence 16, i0.hcl:4:3)";
    assert_eq!(field(with("inbound", "deny"), "rule"), deny_rule);
    assert_eq!(field(with("outbound", "deny"), "rule"), deny_rule);

    // The destination's agent counted each decision under its rule.
    let text = metrics(&b);
    let counted = |decision: &str| {
        format!(
            "rhizome_intention_decisions_total{{source=\"default/web\",destination=\"default/db\",rule=\"i0.hcl:4:3\",decision=\"{decision}\"}}"
        )
    };
    for decision in ["allow", "deny"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&counted(decision)))
            .unwrap_or_else(|| panic!("no per-rule {decision} counter in\n{text}"));
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1, "{line}");
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
