//! `intentions_dir` on a real agent: files signed with the configured operator, a bad file
//! keeping the rules in force (error with file:line:column), changes and removals picked
//! up, entries applied through the API left alone by the directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{DB_HCL, call, config, now_hlc, wait_until};
use rhizome_agent::api::types::{CheckView, ListView, SubmitRequest, SubmitView};
use rhizome_agent::app::Agent;
use rhizome_agent::intentions::signed::{self, Author};
use rhizome_agent::testkit::TestCa;
use std::net::SocketAddr;

const CACHE_HCL: &str = "Kind = \"service-intentions\"\nName = \"cache\"\nSources = [\n  { Name = \"web\", Action = \"allow\" },\n]\n";

/// Unknown key `Bogus` on line 3, column 1.
const BAD_HCL: &str = "Kind = \"service-intentions\"\nName = \"queue\"\nBogus = 1\nSources = [\n  { Name = \"web\", Action = \"allow\" },\n]\n";

async fn list(addr: SocketAddr) -> ListView {
    call(addr, "GET", "/v1/intentions", None).await.unwrap()
}

async fn web_to_db(addr: SocketAddr) -> bool {
    allowed(addr, "web", "db").await
}

#[tokio::test]
async fn directory_files_are_signed_checked_and_followed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test.mesh").unwrap();
    let op_dir = ca.operator_dir(dir.path(), "ops").unwrap();
    let idir = dir.path().join("intentions");
    std::fs::create_dir_all(&idir).unwrap();
    std::fs::write(idir.join("db.hcl"), DB_HCL).unwrap();
    let extra = format!(
        "intentions_dir = \"{}\"\noperator_dir = \"{}\"\n",
        idir.display(),
        op_dir.display()
    );
    let agent = Agent::start(config(&ca, dir.path(), "n1", &extra))
        .await
        .unwrap();
    let addr = agent.http_addr();

    // Loaded before start returns, signed by the operator, marked as from the directory.
    let l = list(addr).await;
    assert_eq!(l.entries.len(), 1, "{l:?}");
    let origin = l.entries[0].origin.clone().unwrap();
    assert_eq!(origin.kind, "dir");
    assert_eq!(
        origin.signer.as_deref(),
        Some("spiffe://test.mesh/operator/ops")
    );
    assert!(origin.file.unwrap().ends_with("db.hcl"));
    assert!(web_to_db(addr).await);

    // An entry applied through the API for another destination.
    let op = Author::from_operator_dir(&op_dir).unwrap();
    let cache = op
        .sign(
            "intentions/default/cache".parse().unwrap(),
            CACHE_HCL.into(),
            false,
            now_hlc(),
        )
        .unwrap();
    let req = SubmitRequest {
        entry: Some(signed::encode(&cache)),
        ..SubmitRequest::default()
    };
    let _: SubmitView = call(addr, "POST", "/v1/intentions", Some(req))
        .await
        .unwrap();
    wait_until(|| async { list(addr).await.entries.len() == 2 }).await;

    // A bad file: nothing from the directory changes, the error names file:line:column.
    std::fs::write(idir.join("bad.hcl"), BAD_HCL).unwrap();
    std::fs::write(idir.join("db.hcl"), DB_HCL.replace("allow", "deny")).unwrap();
    wait_until(|| async { !list(addr).await.problems.dir.is_empty() }).await;
    let l = list(addr).await;
    let err = l.problems.dir.join("\n");
    assert!(err.contains("bad.hcl:3:1: Bogus: unknown field"), "{err}");
    assert_eq!(l.entries.len(), 2);
    assert!(web_to_db(addr).await, "the rules in force stay");
    let metrics = agent.handles().metrics.encode();
    assert!(
        metrics.contains("rhizome_intention_problems 1"),
        "{metrics}"
    );
    assert!(metrics.contains("rhizome_intention_rules 3"), "{metrics}");

    // Fixed: the changed file is picked up.
    std::fs::remove_file(idir.join("bad.hcl")).unwrap();
    wait_until(|| async { !web_to_db(addr).await }).await;
    assert!(list(addr).await.problems.dir.is_empty());

    // Removed: its entry is deleted; the API's entry is not.
    std::fs::remove_file(idir.join("db.hcl")).unwrap();
    wait_until(|| async { list(addr).await.entries.len() == 1 }).await;
    let l = list(addr).await;
    assert_eq!(l.entries[0].destination, "default/cache");
    assert_eq!(l.entries[0].origin.as_ref().unwrap().kind, "applied");

    // A directory entry replaced through the API is no longer the directory's: removing
    // its file leaves it alone.
    let queue = CACHE_HCL.replace("cache", "queue");
    std::fs::write(idir.join("queue.hcl"), &queue).unwrap();
    wait_until(|| async { list(addr).await.entries.len() == 2 }).await;
    let replaced = op
        .sign(
            "intentions/default/queue".parse().unwrap(),
            queue.replace("allow", "deny").into(),
            false,
            now_hlc(),
        )
        .unwrap();
    let req = SubmitRequest {
        entry: Some(signed::encode(&replaced)),
        ..SubmitRequest::default()
    };
    let _: SubmitView = call(addr, "POST", "/v1/intentions", Some(req))
        .await
        .unwrap();
    let kind_of_queue = || async {
        let l = list(addr).await;
        let q = l.entries.iter().find(|e| e.destination == "default/queue");
        q.and_then(|e| e.origin.clone()).map(|o| o.kind)
    };
    wait_until(|| async { kind_of_queue().await.as_deref() == Some("applied") }).await;
    std::fs::remove_file(idir.join("queue.hcl")).unwrap();
    std::fs::write(idir.join("other.hcl"), CACHE_HCL.replace("cache", "other")).unwrap();
    wait_until(|| async { list(addr).await.entries.len() == 3 }).await;
    assert_eq!(kind_of_queue().await.as_deref(), Some("applied"));
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_directory_without_operator_is_refused_on_a_non_dev_agent() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test.mesh").unwrap();
    let idir = dir.path().join("intentions");
    std::fs::create_dir_all(&idir).unwrap();
    std::fs::write(idir.join("db.hcl"), DB_HCL).unwrap();
    let extra = format!("intentions_dir = \"{}\"\n", idir.display());
    let agent = Agent::start(config(&ca, dir.path(), "n1", &extra))
        .await
        .unwrap();
    let l = list(agent.http_addr()).await;
    assert!(l.entries.is_empty());
    assert!(
        l.problems.dir[0].contains("operator_dir"),
        "{:?}",
        l.problems
    );
    agent.shutdown().await.unwrap();
}

async fn allowed(addr: SocketAddr, src: &str, dst: &str) -> bool {
    call::<CheckView>(
        addr,
        "GET",
        &format!("/v1/intentions/check?src={src}&dst={dst}"),
        None,
    )
    .await
    .unwrap()
    .allowed
}

/// Regressions of the library fixes on a running agent loading a signed `intentions_dir`: a
/// `Sources { }` deny block before a `Sources = [...]` allow list is kept (it was dropped, and
/// `web` got in under default deny), and a source without `Namespace` is in the destination's
/// namespace (it was taken as `default`, so `payments/web` got through a `*/*` allow).
#[tokio::test]
async fn consul_meaning_holds_on_a_running_agent() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test.mesh").unwrap();
    let op_dir = ca.operator_dir(dir.path(), "ops").unwrap();
    let idir = dir.path().join("intentions");
    std::fs::create_dir_all(&idir).unwrap();
    let db = "Kind = \"service-intentions\"\nName = \"db\"\nSources {\n  Name   = \"web\"\n  Action = \"deny\"\n}\nSources = [\n  { Name = \"*\", Action = \"allow\" },\n]\n";
    let api = "Kind = \"service-intentions\"\nName = \"api\"\nNamespace = \"payments\"\nSources = [\n  { Name = \"web\", Action = \"deny\" },\n  { Name = \"*\", Namespace = \"*\", Action = \"allow\" },\n]\n";
    std::fs::write(idir.join("db.hcl"), db).unwrap();
    std::fs::write(idir.join("api.hcl"), api).unwrap();
    let extra = format!(
        "intentions_dir = \"{}\"\noperator_dir = \"{}\"\n",
        idir.display(),
        op_dir.display()
    );
    let agent = Agent::start(config(&ca, dir.path(), "n1", &extra))
        .await
        .unwrap();
    let addr = agent.http_addr();
    let l = list(addr).await;
    assert_eq!(l.entries.len(), 2, "{l:?}");
    assert!(l.problems.dir.is_empty(), "{:?}", l.problems.dir);
    assert!(!allowed(addr, "web", "db").await, "the deny block is kept");
    assert!(allowed(addr, "batch", "db").await);
    assert!(!allowed(addr, "payments/web", "payments/api").await);
    assert!(allowed(addr, "default/web", "payments/api").await);
    agent.shutdown().await.unwrap();
}
