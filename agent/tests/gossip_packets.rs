//! Hostile UDP packets at a real agent: forged (wrong key), garbled, replayed, cleartext and
//! truncated packets are dropped and counted by reason; the agent stays in the mesh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gossip_kit;

use std::time::Duration;

use gossip_kit::{Mesh, all_alive, gossip_addr, metric, wait_until};
use rhizome_gossip::keyring::{Key, Keyring};

const LIMIT: Duration = Duration::from_secs(20);

fn dropped(agent: &rhizome_agent::app::Agent, reason: &str) -> u64 {
    metric(
        agent,
        &format!("rhizome_gossip_packets_dropped_total{{reason=\"{reason}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_garbled_and_replayed_packets_are_dropped_and_counted() {
    let mesh = Mesh::new(true);
    let a = mesh.start("a", &[], "").await;
    let b = mesh.start("b", &[gossip_addr(&a)], "").await;
    wait_until("a and b alive", LIMIT, || all_alive(&[&a, &b], &["a", "b"])).await;
    let target = gossip_addr(&a);
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let now = rhizome_agent::gossip::now_ms();
    let mesh_key: Key = mesh.key.as_ref().unwrap().parse().unwrap();

    let mut forger = Keyring::new(rhizome_agent::gossip::keys::generate_key().unwrap(), 7);
    let forged = forger.seal(now, b"\x00hello").unwrap();
    attacker.send_to(&forged, target).await.unwrap();

    let mut insider = Keyring::new(mesh_key, 42);
    let mut garbled = insider.seal(now, b"\x00not a foca packet").unwrap();
    let last = garbled.len() - 1;
    garbled[last] ^= 0x55;
    attacker.send_to(&garbled, target).await.unwrap();

    let valid = insider.seal(now, b"\x00not a foca packet").unwrap();
    attacker.send_to(&valid, target).await.unwrap();
    wait_until(
        "the authentic packet is refused by membership",
        LIMIT,
        || dropped(&a, "malformed") >= 1,
    )
    .await;
    attacker.send_to(&valid, target).await.unwrap();
    attacker.send_to(b"\x00cleartext", target).await.unwrap();
    attacker.send_to(b"\x01short", target).await.unwrap();
    attacker.send_to(b"\x07junk", target).await.unwrap();

    wait_until("every hostile packet is counted", LIMIT, || {
        dropped(&a, "unknown_key") >= 1
            && dropped(&a, "garbled") >= 1
            && dropped(&a, "replayed") >= 1
            && dropped(&a, "cleartext") >= 1
            && dropped(&a, "too_short") >= 1
            && dropped(&a, "unknown_version") >= 1
    })
    .await;
    assert!(
        all_alive(&[&a, &b], &["a", "b"]),
        "the agent stays in the mesh"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
