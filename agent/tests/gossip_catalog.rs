//! The catalog over gossip with real agents: a registration and a failing health check reach
//! every agent; a failed node's instances turn `node_down` at once and are reaped later.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gossip_kit;

use std::time::Duration;

use gossip_kit::{Mesh, all_alive, gossip_addr, wait_until};
use rhizome_agent::app::Agent;
use rhizome_agent::catalog::Health;

const LIMIT: Duration = Duration::from_secs(20);

fn health_of(agent: &Agent, service: &str) -> Option<Health> {
    agent
        .handles()
        .catalog
        .borrow()
        .instances_of("default", service)
        .next()
        .map(|i| i.health)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_and_health_changes_reach_every_agent() {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let service = format!(
        "service {{\n  name = \"web\"\n  port = {}\n  check {{\n    tcp = \"{backend_addr}\"\n    interval = \"100ms\"\n    timeout = \"200ms\"\n  }}\n}}\n",
        backend_addr.port()
    );
    let mesh = Mesh::new(true);
    let a = mesh.start("a", &[], &service).await;
    let seed = [gossip_addr(&a)];
    let b = mesh.start("b", &seed, "").await;
    let c = mesh.start("c", &seed, "").await;
    wait_until("all alive", LIMIT, || {
        all_alive(&[&a, &b, &c], &["a", "b", "c"])
    })
    .await;
    wait_until("web is passing everywhere", LIMIT, || {
        [&a, &b, &c]
            .iter()
            .all(|x| health_of(x, "web") == Some(Health::Passing))
    })
    .await;
    let seen = b
        .handles()
        .catalog
        .borrow()
        .instances_of("default", "web")
        .next()
        .cloned()
        .unwrap();
    assert_eq!(seen.node, "a");
    assert_eq!(seen.port, backend_addr.port());
    assert_eq!(seen.agent_addr.ip(), a.handles().config.advertise_addr);

    drop(backend);
    wait_until("web turns critical everywhere", LIMIT, || {
        [&a, &b, &c]
            .iter()
            .all(|x| health_of(x, "web") == Some(Health::Critical))
    })
    .await;

    a.abort().await.unwrap();
    wait_until("web is node_down on b and c", LIMIT, || {
        [&b, &c]
            .iter()
            .all(|x| health_of(x, "web") == Some(Health::NodeDown))
    })
    .await;
    wait_until("web is reaped after reap_after", LIMIT, || {
        [&b, &c].iter().all(|x| health_of(x, "web").is_none())
    })
    .await;
    assert!(b.handles().replica.entries("catalog/a/").is_empty());
    b.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}
