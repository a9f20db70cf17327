//! Intentions through the HTTP API of real agents: operator-signed apply/list/check/delete,
//! refusals of unsigned, agent-signed and foreign entries, `--dev` unsigned entries,
//! restart persistence, audit mode and its counter, the access graph.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{DB_HCL, call, config, now_hlc, wait_until};
use rhizome_agent::api::types::{CheckView, ListView, SubmitRequest, SubmitView};
use rhizome_agent::app::Agent;
use rhizome_agent::client::ClientError;
use rhizome_agent::config::AgentConfig;
use rhizome_agent::intentions::Outcome;
use rhizome_agent::intentions::signed::{self, Author};
use rhizome_agent::testkit::TestCa;
use rhizome_intentions::ServiceRef;
use serde_json::Value;

fn signed_request(author: &Author, key: &str, text: &str, tombstone: bool) -> SubmitRequest {
    let value = if tombstone {
        Vec::new()
    } else {
        text.as_bytes().to_vec()
    };
    let entry = author
        .sign(key.parse().unwrap(), value, tombstone, now_hlc())
        .unwrap();
    SubmitRequest {
        entry: Some(signed::encode(&entry)),
        ..SubmitRequest::default()
    }
}

async fn entries(addr: std::net::SocketAddr) -> usize {
    call::<ListView>(addr, "GET", "/v1/intentions", None)
        .await
        .unwrap()
        .entries
        .len()
}

#[tokio::test]
async fn operator_signed_entries_apply_list_check_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test.mesh").unwrap();
    let op = Author::from_operator_dir(&ca.operator_dir(dir.path(), "alice").unwrap()).unwrap();
    let agent = Agent::start(config(&ca, dir.path(), "n1", ""))
        .await
        .unwrap();
    let addr = agent.http_addr();

    let req = signed_request(&op, "intentions/default/db", DB_HCL, false);
    let answer: SubmitView = call(addr, "POST", "/v1/intentions", Some(req.clone()))
        .await
        .unwrap();
    assert_eq!(answer.key, "intentions/default/db");
    assert_eq!(answer.applied, "new");
    assert_eq!(answer.signer, "spiffe://test.mesh/operator/alice");
    wait_until(|| async { entries(addr).await == 1 }).await;

    let list: ListView = call(addr, "GET", "/v1/intentions", None).await.unwrap();
    assert_eq!(list.default, "deny");
    let e = &list.entries[0];
    assert_eq!(e.destination, "default/db");
    assert_eq!(e.sources.len(), 2);
    assert_eq!(e.sources[0].source, "default/web");
    assert_eq!(e.sources[0].precedence, 16);
    assert_eq!(e.sources[1].precedence, 14);
    let origin = e.origin.as_ref().unwrap();
    assert_eq!(origin.kind, "applied");
    assert_eq!(origin.writer, "alice");

    let ok: CheckView = call(addr, "GET", "/v1/intentions/check?src=web&dst=db", None)
        .await
        .unwrap();
    assert!(ok.allowed);
    assert_eq!(ok.rule.unwrap().origin, "intentions/default/db:4:3");
    let no: CheckView = call(addr, "GET", "/v1/intentions/check?src=api&dst=db", None)
        .await
        .unwrap();
    assert!(!no.allowed);
    assert_eq!(no.rule.unwrap().source, "default/*");

    // The data plane's call: decisions are counted by outcome.
    let shared = agent.handles();
    let db: ServiceRef = "db".parse().unwrap();
    let v = shared
        .authorizer
        .authorize("spiffe://test.mesh/ns/default/svc/web", &db);
    assert!(v.allowed && v.outcome == Outcome::Allow);
    let v = shared
        .authorizer
        .authorize("spiffe://test.mesh/ns/default/svc/api", &db);
    assert!(!v.allowed && v.outcome == Outcome::Deny);
    assert_eq!(v.rule.unwrap().source.to_string(), "default/*");
    let v = shared.authorizer.authorize("not-a-spiffe-id", &db);
    assert!(!v.allowed && v.error.is_some());
    let v = shared
        .authorizer
        .authorize("spiffe://other.mesh/ns/default/svc/web", &db);
    assert!(!v.allowed, "a web of another trust domain is not our web");
    assert!(v.error.unwrap().contains("trust domain"));
    assert_eq!(shared.authorizer.counters().get(Outcome::Deny), 3);
    let again = shared
        .authorizer
        .verdict("spiffe://test.mesh/ns/default/svc/api", &db);
    assert!(!again.allowed);
    assert_eq!(
        shared.authorizer.counters().get(Outcome::Deny),
        3,
        "re-checks are not counted"
    );
    let metrics = shared.metrics.encode();
    // Counted under the rule that decided: its patterns and entry:line:column.
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "rhizome_intention_decisions_total{source=\"default/web\",destination=\"default/db\",rule=\"intentions/default/db:"
        ) && l.ends_with(",decision=\"allow\"} 1")),
        "{metrics}"
    );

    let again = call::<SubmitView>(addr, "POST", "/v1/intentions", Some(req))
        .await
        .unwrap_err();
    assert!(
        matches!(again, ClientError::Status { status: 409, .. }),
        "{again}"
    );

    let del = signed_request(&op, "intentions/default/db", "", true);
    let gone: SubmitView = call(addr, "DELETE", "/v1/intentions/default/db", Some(del))
        .await
        .unwrap();
    assert_eq!(gone.applied, "new");
    wait_until(|| async { entries(addr).await == 0 }).await;
    let dflt: CheckView = call(addr, "GET", "/v1/intentions/check?src=web&dst=db", None)
        .await
        .unwrap();
    assert!(!dflt.allowed && dflt.rule.is_none());
    let missing = call::<SubmitView>(addr, "DELETE", "/v1/intentions/default/db", None)
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ClientError::Status { status: 404, .. }),
        "{missing}"
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn unsigned_agent_signed_foreign_and_mismatched_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test.mesh").unwrap();
    let other = TestCa::new("test.mesh").unwrap();
    let agent = Agent::start(config(&ca, dir.path(), "n1", ""))
        .await
        .unwrap();
    let addr = agent.http_addr();
    let status = |e: ClientError| match e {
        ClientError::Status { status, message } => (status, message),
        other => panic!("{other}"),
    };

    let unsigned = SubmitRequest {
        hcl: Some(DB_HCL.into()),
        file: Some("db.hcl".into()),
        ..SubmitRequest::default()
    };
    let (code, msg) = status(
        call::<SubmitView>(addr, "POST", "/v1/intentions", Some(unsigned))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403, "{msg}");
    assert!(msg.contains("--dev"), "{msg}");

    let by_agent = Author::agent(&agent.handles().identity).unwrap();
    let req = signed_request(&by_agent, "intentions/default/db", DB_HCL, false);
    let (code, msg) = status(
        call::<SubmitView>(addr, "POST", "/v1/intentions", Some(req))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403, "agent-signed: {msg}");

    let foreign =
        Author::from_operator_dir(&other.operator_dir(dir.path(), "mallory").unwrap()).unwrap();
    let req = signed_request(&foreign, "intentions/default/db", DB_HCL, false);
    let (code, msg) = status(
        call::<SubmitView>(addr, "POST", "/v1/intentions", Some(req))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403, "other root: {msg}");

    let op = Author::from_operator_dir(&ca.operator_dir(dir.path(), "alice").unwrap()).unwrap();
    let req = signed_request(&op, "intentions/default/web", DB_HCL, false);
    let (code, msg) = status(
        call::<SubmitView>(addr, "POST", "/v1/intentions", Some(req))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400, "{msg}");
    assert!(msg.contains("does not match"), "{msg}");

    let mut req = signed_request(&op, "intentions/default/db", DB_HCL, false);
    let mut entry = signed::decode(req.entry.as_ref().unwrap()).unwrap();
    entry.value = DB_HCL.replace("allow", "deny").into_bytes();
    req.entry = Some(signed::encode(&entry));
    let (code, msg) = status(
        call::<SubmitView>(addr, "POST", "/v1/intentions", Some(req))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403, "altered value: {msg}");

    assert_eq!(entries(addr).await, 0);
    assert_eq!(agent.handles().authorizer.rules().rules().len(), 0);
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn dev_agent_accepts_unsigned_entries_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AgentConfig::dev("dev1", dir.path().join("data"));
    cfg.ports.http = 0;
    cfg.ports.gossip = 0;
    cfg.ports.data = 0;
    let agent = Agent::start(cfg).await.unwrap();
    let addr = agent.http_addr();
    let req = SubmitRequest {
        hcl: Some(DB_HCL.into()),
        file: Some("db.hcl".into()),
        ..SubmitRequest::default()
    };
    let answer: SubmitView = call(addr, "POST", "/v1/intentions", Some(req))
        .await
        .unwrap();
    assert_eq!(answer.signer, "spiffe://rhizome.local/agent/dev1");
    wait_until(|| async { entries(addr).await == 1 }).await;
    let list: ListView = call(addr, "GET", "/v1/intentions", None).await.unwrap();
    assert_eq!(list.default, "allow", "--dev defaults to allow");
    let _: SubmitView = call(addr, "DELETE", "/v1/intentions/default/db", None)
        .await
        .unwrap();
    wait_until(|| async { entries(addr).await == 0 }).await;
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restarted_agent_enforces_its_stored_entries_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test.mesh").unwrap();
    let op = Author::from_operator_dir(&ca.operator_dir(dir.path(), "alice").unwrap()).unwrap();
    let agent = Agent::start(config(&ca, dir.path(), "n1", ""))
        .await
        .unwrap();
    let req = signed_request(&op, "intentions/default/db", DB_HCL, false);
    let _: SubmitView = call(agent.http_addr(), "POST", "/v1/intentions", Some(req))
        .await
        .unwrap();
    agent.shutdown().await.unwrap();

    let again = Agent::start(config(&ca, dir.path(), "n1", ""))
        .await
        .unwrap();
    let rules = again.handles().authorizer.rules();
    assert_eq!(rules.rules().len(), 2, "rules in force right after start");
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn audit_mode_lets_denies_through_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test.mesh").unwrap();
    let op = Author::from_operator_dir(&ca.operator_dir(dir.path(), "alice").unwrap()).unwrap();
    let agent = Agent::start(config(
        &ca,
        dir.path(),
        "n1",
        "intentions {\n  mode = \"audit\"\n}\n",
    ))
    .await
    .unwrap();
    let shared = agent.handles();
    let db: ServiceRef = "db".parse().unwrap();
    let v = shared
        .authorizer
        .authorize("spiffe://test.mesh/ns/default/svc/web", &db);
    assert!(
        v.allowed && v.audit && v.outcome == Outcome::AuditDeny,
        "{v:?}"
    );
    assert!(v.rule.is_none(), "the default decided");

    let audited = DB_HCL.replace("Name = \"db\"", "Name = \"db\"\nMode = \"audit\"");
    let req = signed_request(&op, "intentions/default/db", &audited, false);
    let _: SubmitView = call(agent.http_addr(), "POST", "/v1/intentions", Some(req))
        .await
        .unwrap();
    wait_until(|| async { !shared.authorizer.rules().rules().is_empty() }).await;
    let v = shared
        .authorizer
        .authorize("spiffe://test.mesh/ns/default/svc/api", &db);
    assert!(v.allowed && v.audit, "{v:?}");
    assert_eq!(v.rule.as_ref().unwrap().source.to_string(), "default/*");
    let check: CheckView = call(
        agent.http_addr(),
        "GET",
        "/v1/intentions/check?src=api&dst=db",
        None,
    )
    .await
    .unwrap();
    assert_eq!(check.decision, "audit_deny");
    assert_eq!(shared.authorizer.counters().get(Outcome::AuditDeny), 2);
    // One audited deny by the default, one by the `*` rule: two series.
    let metrics = shared.metrics.encode();
    assert!(
        metrics.contains(
            "rhizome_intention_decisions_total{source=\"\",destination=\"\",rule=\"default\",decision=\"audit_deny\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "rhizome_intention_decisions_total{source=\"default/*\",destination=\"default/db\",rule=\"intentions/default/db:"
        ) && l.ends_with(",decision=\"audit_deny\"} 1")),
        "{metrics}"
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn graph_shows_catalog_services_and_intention_edges() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test.mesh").unwrap();
    let op = Author::from_operator_dir(&ca.operator_dir(dir.path(), "alice").unwrap()).unwrap();
    // db is in the catalog as a second local service (no test holds the catalog's write
    // end: the gossip catalog builder is its only owner).
    let db_service = "service {\n  name = \"db\"\n  port = 5432\n}\n";
    let agent = Agent::start(config(&ca, dir.path(), "n1", db_service))
        .await
        .unwrap();
    let shared = agent.handles();
    let req = signed_request(&op, "intentions/default/db", DB_HCL, false);
    let _: SubmitView = call(agent.http_addr(), "POST", "/v1/intentions", Some(req))
        .await
        .unwrap();
    wait_until(|| async { !shared.authorizer.rules().rules().is_empty() }).await;

    let g: Value = call(agent.http_addr(), "GET", "/v1/graph?format=json", None)
        .await
        .unwrap();
    let ids: Vec<&str> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default/db", "default/web"]);
    assert_eq!(g["default"], "deny");
    let edges = g["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!(edges[0]["from"], "default/web");
    assert_eq!(edges[0]["to"], "default/db");
    assert_eq!(edges[0]["action"], "allow");

    let addr = agent.http_addr();
    let dot = tokio::task::spawn_blocking(move || {
        rhizome_agent::client::Client::new(addr.to_string()).get_raw("/v1/graph?format=dot")
    })
    .await
    .unwrap()
    .unwrap();
    let dot = String::from_utf8(dot).unwrap();
    assert!(dot.starts_with("digraph rhizome {"), "{dot}");
    assert!(
        dot.contains("\"default/web\" -> \"default/db\" [color=darkgreen"),
        "{dot}"
    );
    let bad = call::<Value>(addr, "GET", "/v1/graph?format=svg", None)
        .await
        .unwrap_err();
    assert!(
        matches!(bad, ClientError::Status { status: 400, .. }),
        "{bad}"
    );
    agent.shutdown().await.unwrap();
}
