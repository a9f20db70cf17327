//! Intentions replicate between real agents over gossip: an `intentions_dir` entry signed
//! on one agent is enforced by the other, an entry applied through another agent's API
//! comes back, and deleting the file deletes the entry everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gossip_kit;

use gossip_kit::{Mesh, all_alive, gossip_addr, wait_until};
use rhizome_agent::app::Agent;
use rhizome_agent::intentions::Outcome;
use rhizome_agent::intentions::signed::{self, Author};
use rhizome_gossip::state::Applied;
use rhizome_intentions::ServiceRef;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

const DB_HCL: &str = "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  { Name = \"web\", Action = \"allow\" },\n  { Name = \"*\", Action = \"deny\" },\n]\n";

fn has_rules_for(agent: &Agent, dst: &str) -> bool {
    let d: ServiceRef = dst.parse().unwrap();
    !agent.handles().authorizer.rules().matching(&d).is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intentions_replicate_between_agents() {
    let mesh = Mesh::new(true);
    let op_dir = mesh.ca.operator_dir(mesh.dir.path(), "ops").unwrap();
    let idir = mesh.dir.path().join("intentions");
    std::fs::create_dir_all(&idir).unwrap();
    std::fs::write(idir.join("db.hcl"), DB_HCL).unwrap();
    let extra = format!(
        "intentions_dir = \"{}\"\noperator_dir = \"{}\"\n",
        idir.display(),
        op_dir.display()
    );
    let a = mesh.start("a", &[], &extra).await;
    let b = mesh.start("b", &[gossip_addr(&a)], "").await;
    wait_until("both alive", LIMIT, || all_alive(&[&a, &b], &["a", "b"])).await;
    wait_until("db's intentions reach b", LIMIT, || has_rules_for(&b, "db")).await;
    let db: ServiceRef = "db".parse().unwrap();
    let v = b
        .handles()
        .authorizer
        .authorize("spiffe://gossip.test/ns/default/svc/api", &db);
    assert_eq!(v.outcome, Outcome::Deny);
    assert_eq!(v.rule.unwrap().origin.file, "intentions/default/db");

    // Applied on b (operator-signed), enforced on a.
    let op = Author::from_operator_dir(&op_dir).unwrap();
    let cache = DB_HCL.replace("\"db\"", "\"cache\"");
    let key = "intentions/default/cache".parse().unwrap();
    let hlc = b.handles().intentions.next_hlc(&key);
    let entry = op.sign(key, cache.into_bytes(), false, hlc).unwrap();
    let entry = signed::decode(&signed::encode(&entry)).unwrap();
    let (_, applied) = b.handles().intentions.submit(entry).unwrap();
    assert_eq!(applied, Applied::New);
    wait_until("cache's intentions reach a", LIMIT, || {
        has_rules_for(&a, "cache")
    })
    .await;

    // The file goes: its entry is deleted on every agent.
    std::fs::remove_file(idir.join("db.hcl")).unwrap();
    wait_until("db's intentions leave b", LIMIT, || {
        !has_rules_for(&b, "db")
    })
    .await;
    assert!(has_rules_for(&b, "cache"));
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}
