//! Issue 15, item 3: no permanent split. `b` joined the seed `a` by hand (`rhizome join`,
//! no `retry_join` of its own, the demo's layout). The seed restarts — once gracefully
//! (`b` marks it left), once killed (`b` marks it failed) — on the same gossip port and
//! data_dir, with no seeds of its own. Before the fix `b` logged "no other gossip member is
//! reachable" and stayed alone for good; now it keeps announcing itself to the members it
//! knew, with backoff, and the two find each other again without a person.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gossip_kit;

use std::time::Duration;

use gossip_kit::{Mesh, gossip_addr, wait_until};
use rhizome_agent::api::types::Status;
use rhizome_agent::app::Agent;

/// Bounded wait for the two to see each other (the retry backoff is 200 ms doubling; a
/// few rounds suffice).
const LIMIT: Duration = Duration::from_secs(30);

use rhizome_agent::testkit::member as row;

/// Both alive in each other's table, `a` with a generation above `after`.
fn reunited(a: &Agent, b: &Agent, after: u64) -> bool {
    row(b, "a").is_some_and(|(s, g)| s == Status::Alive && g > after)
        && row(a, "b").is_some_and(|(s, _)| s == Status::Alive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_seed_is_found_again_by_a_member_without_retry_join() {
    let mesh = Mesh::new(true);
    let a = mesh.start("a", &[], "").await;
    let port = gossip_addr(&a).port();
    let b = mesh.start("b", &[], "").await;
    b.handles()
        .gossip
        .join(&gossip_addr(&a).to_string(), Duration::from_secs(10))
        .await
        .unwrap();
    wait_until("a and b alive in both tables", LIMIT, || {
        reunited(&a, &b, 0)
    })
    .await;
    let (_, generation) = row(&b, "a").unwrap();

    // Graceful: `a` leaves, `b` is alone with a `left` seed.
    a.shutdown().await.unwrap();
    wait_until("b shows a as left", LIMIT, || {
        row(&b, "a").is_some_and(|(s, _)| s == Status::Left)
    })
    .await;
    let a = Agent::start(mesh.config("a", &[], port, "")).await.unwrap();
    wait_until("b finds the restarted a (after a leave)", LIMIT, || {
        reunited(&a, &b, generation)
    })
    .await;
    let (_, generation) = row(&b, "a").unwrap();

    // Killed: no leave, `b` declares it failed.
    a.abort().await.unwrap();
    wait_until("b shows a as failed", LIMIT, || {
        row(&b, "a").is_some_and(|(s, _)| s == Status::Failed)
    })
    .await;
    let a = Agent::start(mesh.config("a", &[], port, "")).await.unwrap();
    wait_until("b finds the restarted a (after a kill)", LIMIT, || {
        reunited(&a, &b, generation)
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
