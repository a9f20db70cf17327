//! Membership with real agents on loopback UDP: join, graceful leave, failure, restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gossip_kit;

use std::time::Duration;

use gossip_kit::{Mesh, all_alive, gossip_addr, status, wait_until};
use rhizome_agent::api::types::Status;
use rhizome_agent::app::Agent;

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_agents_join_then_one_leaves_and_one_fails() {
    let mesh = Mesh::new(true);
    let a = mesh.start("a", &[], "").await;
    let seed = [gossip_addr(&a)];
    let b = mesh.start("b", &seed, "").await;
    let c = mesh.start("c", &seed, "").await;
    let d = mesh.start("d", &seed, "").await;
    let names = ["a", "b", "c", "d"];
    wait_until("all four see each other alive", LIMIT, || {
        all_alive(&[&a, &b, &c, &d], &names)
    })
    .await;
    let http = a.http_addr().to_string();
    let rows: Vec<serde_json::Value> = tokio::task::spawn_blocking(move || {
        rhizome_agent::client::Client::new(http).get("/v1/members")
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(rows.len(), 4);
    for row in &rows {
        let mut fields: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, ["address", "incarnation", "node", "status"]);
        assert_eq!(row["status"], "alive");
        assert!(row["incarnation"].as_u64().unwrap() >= 1);
    }

    d.shutdown().await.unwrap();
    wait_until("d shows as left", LIMIT, || {
        [&a, &b, &c]
            .iter()
            .all(|x| status(x, "d") == Some(Status::Left))
    })
    .await;

    c.abort().await.unwrap();
    wait_until("c shows as failed", LIMIT, || {
        [&a, &b]
            .iter()
            .all(|x| status(x, "c") == Some(Status::Failed))
    })
    .await;
    assert_eq!(status(&a, "d"), Some(Status::Left), "left stays left");
    assert_eq!(status(&a, "b"), Some(Status::Alive), "no false failure");
    let text = a.handles().metrics.encode();
    for family in [
        "rhizome_gossip_local_health ",
        "rhizome_gossip_suspicions_open ",
        "rhizome_gossip_stale_verdicts ",
    ] {
        assert!(text.contains(family), "{family} missing from /metrics");
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_rejoins_with_a_higher_incarnation_and_its_state() {
    let mesh = Mesh::new(true);
    let a = mesh.start("a", &[], "").await;
    let seed = [gossip_addr(&a)];
    // b restarts on the same gossip port and data_dir: pick a port free now.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b_cfg = || mesh.config("b", &seed, port, "");
    let b = Agent::start(b_cfg()).await.unwrap();
    wait_until("a and b see each other", LIMIT, || {
        all_alive(&[&a, &b], &["a", "b"])
    })
    .await;
    wait_until("b learned a's certificate", LIMIT, || {
        !b.handles().replica.entries("certs/a").is_empty()
    })
    .await;
    let first = a
        .handles()
        .gossip
        .members()
        .iter()
        .find(|m| m.node == "b")
        .unwrap()
        .incarnation;
    b.shutdown().await.unwrap();
    wait_until("b left", LIMIT, || status(&a, "b") == Some(Status::Left)).await;

    let b = Agent::start(b_cfg()).await.unwrap();
    assert!(
        !b.handles().replica.entries("certs/a").is_empty(),
        "the restarted agent starts from its stored state"
    );
    wait_until("b is back, alive, with a higher incarnation", LIMIT, || {
        a.handles()
            .gossip
            .members()
            .iter()
            .any(|m| m.node == "b" && m.status == Status::Alive && m.incarnation > first)
    })
    .await;
    wait_until("b sees a", LIMIT, || status(&b, "a") == Some(Status::Alive)).await;
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}
