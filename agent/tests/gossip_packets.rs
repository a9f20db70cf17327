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
    for reason in [
        "unknown_key",
        "garbled",
        "replayed",
        "cleartext",
        "malformed",
    ] {
        let sample = format!("rhizome_refused_total{{port=\"gossip_udp\",reason=\"{reason}\"}}");
        assert!(
            metric(&a, &sample) >= 1,
            "also counted as a refusal: {sample}"
        );
    }
    assert!(
        all_alive(&[&a, &b], &["a", "b"]),
        "the agent stays in the mesh"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

fn syncs(agent: &rhizome_agent::app::Agent, direction: &str, outcome: &str) -> u64 {
    metric(
        agent,
        &format!(
            "rhizome_gossip_sync_exchanges_total{{direction=\"{direction}\",outcome=\"{outcome}\"}}"
        ),
    )
}

fn refused_gossip_tcp(agent: &rhizome_agent::app::Agent) -> u64 {
    ["evicted", "no_frame", "closed"]
        .iter()
        .map(|r| {
            metric(
                agent,
                &format!("rhizome_refused_total{{port=\"gossip_tcp\",reason=\"{r}\"}}"),
            )
        })
        .sum()
}

/// Issue 15, item 5: 200 idle TCP connections to the gossip port held 16 exchange slots for
/// 10 s each, so a real peer's state sync waited minutes. Now the idle ones are closed
/// (evicted, or after the short first-frame deadline) and the sync goes through at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_starve_state_sync() {
    use tokio::io::AsyncReadExt;
    const IDLE: usize = 200;
    let mesh = Mesh::new(true);
    let a = mesh.start("a", &[], "").await;
    let target = gossip_addr(&a);
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(target).await.unwrap());
    }
    let started = std::time::Instant::now();
    // b joins a: the join asks for an exchange with a at once, then one every second.
    let b = mesh.start("b", &[target], "").await;
    wait_until(
        "a served a complete exchange despite the idle connections",
        LIMIT,
        || syncs(&a, "inbound", "ok") >= 1,
    )
    .await;
    let first_sync = started.elapsed();
    // Every idle connection is closed by a within a bounded time (evicted or timed out).
    for mut s in idle {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(LIMIT, s.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection is closed by the agent: {read:?}"
        );
    }
    let all_closed = started.elapsed();
    wait_until("every idle connection is counted as refused", LIMIT, || {
        refused_gossip_tcp(&a) >= IDLE as u64
    })
    .await;
    println!(
        "{IDLE} idle connections: first complete inbound exchange after {first_sync:?}, all idle \
         connections closed after {all_closed:?}, {} refused on gossip_tcp",
        refused_gossip_tcp(&a)
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Issue 15, item 5: an exchange the peer abandons (closed after the first answer) is a
/// failure, not a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_exchange_counts_as_failed() {
    use rhizome_gossip::sync::SyncMessage;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = Mesh::new(true);
    let a = mesh.start("a", &[], "").await;
    wait_until("a holds some state", LIMIT, || {
        !a.handles().replica.entries("").is_empty()
    })
    .await;
    let mesh_key: Key = mesh.key.as_ref().unwrap().parse().unwrap();
    let mut insider = Keyring::new(mesh_key, rand::random());
    // An empty summary: a has entries, so it answers with details and waits for a push.
    let summary = SyncMessage::Summary(vec![[0u8; 8]; rhizome_gossip::state::BUCKETS]);
    let sealed = insider
        .seal(rhizome_agent::gossip::now_ms(), &summary.to_bytes())
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(gossip_addr(&a))
        .await
        .unwrap();
    s.write_all(&u32::try_from(sealed.len()).unwrap().to_be_bytes())
        .await
        .unwrap();
    s.write_all(&sealed).await.unwrap();
    let mut len = [0u8; 4];
    tokio::time::timeout(LIMIT, s.read_exact(&mut len))
        .await
        .unwrap()
        .unwrap();
    drop(s);
    wait_until("the abandoned exchange is counted as failed", LIMIT, || {
        syncs(&a, "inbound", "failed") >= 1
    })
    .await;
    assert_eq!(syncs(&a, "inbound", "ok"), 0, "never counted as a success");
    a.shutdown().await.unwrap();
}
