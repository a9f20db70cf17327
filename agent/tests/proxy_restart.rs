//! Issue 15, item 1: a peer agent killed with SIGKILL and restarted on the same ports and
//! data_dir. The client agent `a` runs in this process; the server agent `b` is a real
//! `rhizome agent` process (so the kill is a real `kill -9`: no QUIC close, no gossip leave).
//!
//! Before the fix, `a` kept its pooled QUIC connection to `b`'s dead process: every new
//! proxied connection waited 5 s and was reset, until quinn's 30 s idle timeout.
//!
//! `cargo test -p rhizome-agent --all-features --test proxy_restart -- --nocapture` prints the
//! outage (first failed to first successful new connection) of a crash-restart under a
//! connection loop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_proc;
mod proxy_support;

use agent_proc::ProcAgent;
use proxy_support::*;
use rhizome_agent::api::types::Status;
use rhizome_agent::app::Agent;
use rhizome_agent::catalog::Health;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// `b`'s member row as `a` sees it: (status, generation).
fn row(a: &Agent, node: &str) -> Option<(Status, u64)> {
    a.handles()
        .gossip
        .members()
        .iter()
        .find(|m| m.node == node)
        .map(|m| (m.status, m.incarnation))
}

/// One proxied connection of the probe loop.
#[derive(Clone, Copy, Debug)]
struct Probe {
    started: Instant,
    ended: Instant,
    ok: bool,
}

/// Opens a connection through `port` every 100 ms (each with its own task) until stopped.
fn probe_loop(port: u16, done: Arc<Mutex<Vec<Probe>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let done = done.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let ok = tokio::time::timeout(Duration::from_secs(10), roundtrip(port, b"ping"))
                    .await
                    .is_ok_and(|r| r.is_ok_and(|got| got == b"ping"));
                done.lock().unwrap().push(Probe {
                    started,
                    ended: Instant::now(),
                    ok,
                });
            });
        }
    })
}

/// The outage of a probe run: from the start of the first failed connection to the end of
/// the first successful one started after it, and how many failed.
fn outage(probes: &[Probe]) -> Option<(Duration, usize)> {
    let mut probes = probes.to_vec();
    probes.sort_by_key(|p| p.started);
    let first_fail = probes.iter().find(|p| !p.ok)?;
    let back = probes
        .iter()
        .filter(|p| p.ok && p.started > first_fail.started)
        .map(|p| p.ended)
        .min()?;
    let failed = probes.iter().filter(|p| !p.ok).count();
    Some((back - first_fail.started, failed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_and_restarted_serves_the_next_connection() {
    let mesh = Mesh::new("test.mesh");
    let echo = echo_server().await;
    let port = free_port();
    let a = mesh
        .start(
            "a",
            &service(
                "web",
                "web-1",
                1,
                &[Up {
                    destination: "db",
                    port,
                }],
            ),
        )
        .await;
    // `b`: a process with fixed ports, joining `a`, allowing every source.
    let ca_dir = mesh.ca.agent_dir(mesh.dir.path(), "b").unwrap();
    let b_agent = ProcAgent::write(
        mesh.dir.path(),
        "b",
        &ca_dir,
        &format!(
            "default_intention_policy = \"allow\"\nretry_join = [\"{}\"]\n{FAST_GOSSIP}{}",
            a.handles().gossip.addr(),
            service("db", "db-1", echo.port(), &[])
        ),
    );
    let log = b_agent.log();
    let mut b = b_agent.spawn();
    wait_catalog(&a, "default", "db", 1, Health::Passing).await;
    assert_eq!(roundtrip(port, b"before").await.unwrap(), b"before");
    let (_, first_generation) = row(&a, "b").unwrap();

    let probes = Arc::new(Mutex::new(Vec::new()));
    let prober = probe_loop(port, probes.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _b = b_agent.spawn();

    // Back: `a` lists `b`'s new process alive and its instance passing.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !row(&a, "b").is_some_and(|(s, g)| s == Status::Alive && g > first_generation) {
        if Instant::now() > deadline {
            panic!(
                "a never saw b's new process: a's members {:?}\nb's log:\n{}",
                a.handles().gossip.members(),
                b_agent.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_catalog(&a, "default", "db", 1, Health::Passing).await;
    // The first connection from here on is served: a connection to the dead process is
    // not reused.
    let got = roundtrip(port, b"after").await;
    let ok = matches!(&got, Ok(g) if g == b"after");
    if !ok {
        eprintln!(
            "b's log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    assert!(ok, "first connection after the restart: {got:?}");

    // Let the probe loop see a success, then report the outage it saw.
    rhizome_agent::testkit::wait_until(
        "a probe succeeded after the restart",
        Duration::from_secs(20),
        || outage(&probes.lock().unwrap()).is_some(),
    )
    .await;
    prober.abort();
    let (down, failed) = outage(&probes.lock().unwrap()).unwrap();
    println!(
        "crash-restart outage (b killed, restarted after 1 s): {} ms from the first failed to \
         the first successful new connection, {failed} connections failed",
        down.as_millis()
    );
    a.shutdown().await.unwrap();
}
