//! Restarts of a peer agent under a connection loop. The client agent `a` runs in this
//! process; the server agent `b` is a real `rhizome agent` process where the restart is a
//! real signal.
//!
//! - Issue 15, item 1: `b` killed with SIGKILL (no QUIC close, no gossip leave) and restarted
//!   on the same ports and data_dir. Before the fix, `a` kept its pooled QUIC connection to
//!   `b`'s dead process: every new proxied connection waited 5 s and was reset, until quinn's
//!   30 s idle timeout.
//! - Issue 15, item 6: `b` stopped with SIGTERM while a client holds an idle connection
//!   through it. Before the fix the drain waited its whole timeout for that connection, so
//!   the restart was a drain-timeout-long outage; now idle connections are closed at once
//!   (a clean EOF) and only busy ones are waited for. With a second instance, new
//!   connections go elsewhere during the drain: none fails.
//!
//! `cargo test -p rhizome-agent --all-features --test proxy_restart -- --nocapture` prints the
//! outage (first failed to first successful new connection) of each restart.
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
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use rhizome_agent::testkit::member as row;

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

/// The server agent `b` as a process (fixed ports, so a restart keeps them), joining `a`,
/// allowing every source, with service db on `backend` and `extra` HCL.
fn process_b(mesh: &Mesh, a: &Agent, backend: u16, extra: &str) -> ProcAgent {
    let ca_dir = mesh.ca.agent_dir(mesh.dir.path(), "b").unwrap();
    ProcAgent::write(
        mesh.dir.path(),
        "b",
        &ca_dir,
        &format!(
            "default_intention_policy = \"allow\"\nretry_join = [\"{}\"]\n{extra}{FAST_GOSSIP}{}",
            a.handles().gossip.addr(),
            service("db", "db-1", backend, &[])
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_and_restarted_serves_the_next_connection() {
    let mesh = Mesh::new("test.mesh");
    let echo = echo_server().await;
    let port = free_port();
    let a = mesh.start("a", &web_to("db", port)).await;
    let b_agent = process_b(&mesh, &a, echo.port(), "");
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

/// An echo backend that answers a chunk `slow` only after `SLOW`, like a request being
/// processed; everything else at once. Closes its side after the client's EOF.
async fn slow_echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if &buf[..n] == b"slow" {
                                tokio::time::sleep(SLOW).await;
                            }
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// How long the slow backend takes to answer `slow`.
const SLOW: Duration = Duration::from_millis(1500);

/// Sends `data` on a new connection through `port` and reads the echo (the connection stays
/// open).
async fn open_echoed(port: u16, data: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(data).await.unwrap();
    let mut got = vec![0u8; data.len()];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(got, data);
    s
}

/// How a held connection ended, and when (from `since`).
async fn read_end(mut s: TcpStream, since: Instant) -> (std::io::Result<Vec<u8>>, Duration) {
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
    (r.map(|_| got), since.elapsed())
}

/// Drain timeout of the restarted agents: long, so a drain that waits for it shows.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_does_not_wait_for_idle_connections() {
    let mesh = Mesh::new("test.mesh");
    let backend = slow_echo_server().await;
    let port = free_port();
    let a = mesh.start("a", &web_to("db", port)).await;
    let b_agent = process_b(
        &mesh,
        &a,
        backend.port(),
        &format!(
            "proxy {{\n  drain_timeout = \"{}s\"\n}}\n",
            DRAIN_TIMEOUT.as_secs()
        ),
    );
    let mut b = b_agent.spawn();
    wait_catalog(&a, "default", "db", 1, Health::Passing).await;
    let (_, first_generation) = row(&a, "b").unwrap();

    // A client's pooled connection, idle; and a request in flight when the signal comes.
    let held = open_echoed(port, b"held").await;
    let probes = Arc::new(Mutex::new(Vec::new()));
    let prober = probe_loop(port, probes.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut busy = open_echoed(port, b"warm").await;
    busy.write_all(b"slow").await.unwrap();
    let signalled = Instant::now();
    let held_end = tokio::spawn(read_end(held, signalled));
    let busy_answer = tokio::spawn(async move {
        let mut got = [0u8; 4];
        let r = busy.read_exact(&mut got).await.map(|_| got.to_vec());
        (r, signalled.elapsed())
    });
    let (b, stopped_after, clean) = tokio::task::spawn_blocking(move || {
        let (took, clean) = b.terminate(DRAIN_TIMEOUT * 2);
        (b, took, clean)
    })
    .await
    .unwrap();
    drop(b);
    let _b = b_agent.spawn();

    let (held_got, held_after) = held_end.await.unwrap();
    let (busy_got, busy_after) = busy_answer.await.unwrap();
    assert!(
        clean,
        "b exited with success after SIGTERM\n{}",
        b_agent.log_text()
    );
    assert!(
        matches!(&held_got, Ok(rest) if rest.is_empty()),
        "the idle connection got a clean end of stream: {held_got:?}"
    );
    assert_eq!(
        busy_got.as_deref().ok(),
        Some(&b"slow"[..]),
        "the request in flight got its answer: {busy_got:?}"
    );
    assert!(
        stopped_after < DRAIN_TIMEOUT / 2,
        "b stopped after {stopped_after:?}: it waited for the drain timeout ({DRAIN_TIMEOUT:?}) \
         instead of closing the idle connection\n{}",
        b_agent.log_text()
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    while !row(&a, "b").is_some_and(|(s, g)| s == Status::Alive && g > first_generation) {
        assert!(
            Instant::now() < deadline,
            "a never saw b's new process\n{}",
            b_agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rhizome_agent::testkit::wait_until(
        "a probe succeeded after the restart",
        Duration::from_secs(30),
        || outage(&probes.lock().unwrap()).is_some(),
    )
    .await;
    prober.abort();
    let (down, failed) = outage(&probes.lock().unwrap()).unwrap();
    println!(
        "graceful restart (SIGTERM, drain_timeout {} s, one idle held connection, one request \
         answered after {} ms): b exited {} ms after the signal; the idle connection ended \
         (EOF) after {} ms, the request was answered after {} ms; outage {} ms from the first \
         failed to the first successful new connection, {failed} connections failed",
        DRAIN_TIMEOUT.as_secs(),
        SLOW.as_millis(),
        stopped_after.as_millis(),
        held_after.as_millis(),
        busy_after.as_millis(),
        down.as_millis()
    );
    assert!(
        down < DRAIN_TIMEOUT / 2,
        "outage {down:?} with drain_timeout {DRAIN_TIMEOUT:?}"
    );
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_agent_sends_new_connections_elsewhere() {
    let mesh = Mesh::new("test.mesh");
    let (echo_b, echo_c) = (echo_server().await, echo_server().await);
    let port = free_port();
    let drain = format!(
        "proxy {{\n  drain_timeout = \"{}s\"\n}}\n",
        DRAIN_TIMEOUT.as_secs()
    );
    let b = mesh
        .start(
            "b",
            &format!("{drain}{}", service("db", "db-b", echo_b.port(), &[])),
        )
        .await;
    let a = mesh.start_joined("a", &[&b], &web_to("db", port)).await;
    rules(&b, &[&allow("db", "web")]);
    wait_catalog(&a, "default", "db", 1, Health::Passing).await;
    // Held through b (the only instance yet).
    let held = open_echoed(port, b"held").await;
    let c = mesh
        .start_joined(
            "c",
            &[&b],
            &format!("{drain}{}", service("db", "db-c", echo_c.port(), &[])),
        )
        .await;
    rules(&c, &[&allow("db", "web")]);
    wait_catalog(&a, "default", "db", 2, Health::Passing).await;

    let probes = Arc::new(Mutex::new(Vec::new()));
    let prober = probe_loop(port, probes.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let held_end = tokio::spawn(read_end(held, started));
    b.shutdown().await.unwrap();
    let stopped_after = started.elapsed();
    // The loop goes on a while with b gone.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    prober.abort();
    let (held_got, held_after) = held_end.await.unwrap();
    let probes = probes.lock().unwrap().clone();
    let failed = probes.iter().filter(|p| !p.ok).count();
    println!(
        "drain with a second instance: b stopped {} ms after shutdown began (drain_timeout {} s, \
         one idle held connection, ended after {} ms); {} new connections, {failed} failed",
        stopped_after.as_millis(),
        DRAIN_TIMEOUT.as_secs(),
        held_after.as_millis(),
        probes.len()
    );
    assert!(
        matches!(&held_got, Ok(rest) if rest.is_empty()),
        "the idle connection got a clean end of stream: {held_got:?}"
    );
    assert_eq!(failed, 0, "new connections during the drain go to c");
    assert!(
        stopped_after < DRAIN_TIMEOUT / 2,
        "b stopped after {stopped_after:?}: it waited for the drain timeout"
    );
    a.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}
