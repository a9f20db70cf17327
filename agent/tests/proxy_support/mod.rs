//! Helpers for the data-plane tests: a test mesh CA, agents on loopback with port 0,
//! catalog snapshots and rules pushed into agents directly (until gossip carries them),
//! and backends (echo, a server that says its name).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use rhizome_agent::app::Agent;
use rhizome_agent::catalog::Health;
use rhizome_agent::config::AgentConfig;
use rhizome_agent::testkit::TestCa;
use rhizome_intentions::RuleSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Gossip tuned for tests: failures and changes spread in well under a second.
pub const FAST_GOSSIP: &str = "gossip {\n  probe_interval = \"200ms\"\n  probe_timeout = \"100ms\"\n  gossip_interval = \"50ms\"\n  suspicion_mult = 3\n  push_pull_interval = \"1s\"\n}\n";

/// Waits (bounded) until `agent`'s catalog, filled by gossip, shows `n` instances of
/// `service` (namespace `ns`) with `health`.
pub async fn wait_catalog(agent: &Agent, ns: &str, service: &str, n: usize, health: Health) {
    let what = format!("{n} {health:?} instance(s) of {ns}/{service}");
    for _ in 0..1000 {
        let count = agent
            .handles()
            .catalog
            .borrow()
            .instances_of(ns, service)
            .filter(|i| i.health == health)
            .count();
        if count == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A test mesh: one root, agents under one temp dir.
pub struct Mesh {
    pub ca: TestCa,
    pub dir: tempfile::TempDir,
}

/// An upstream listener spec: destination service and local port.
pub struct Up {
    pub destination: &'static str,
    pub port: u16,
}

impl Mesh {
    pub fn new(trust_domain: &str) -> Mesh {
        Mesh {
            ca: TestCa::new(trust_domain).unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Config of agent `node` with `extra` HCL (services, transport, proxy settings).
    pub fn config(&self, node: &str, extra: &str) -> AgentConfig {
        self.config_joined(node, &[], extra)
    }

    /// Config of agent `node` that joins the gossip of `seeds`.
    pub fn config_joined(&self, node: &str, seeds: &[&Agent], extra: &str) -> AgentConfig {
        let join: Vec<String> = seeds
            .iter()
            .map(|a| format!("\"{}\"", a.handles().gossip.addr()))
            .collect();
        let ca_dir = self.ca.agent_dir(self.dir.path(), node).unwrap();
        let src = format!(
            "node_name = \"{node}\"\ndata_dir = \"{}/{node}/data\"\nbind_addr = \"127.0.0.1\"\n\
             default_intention_policy = \"deny\"\nports {{\n  http = 0\n  gossip = 0\n  data = 0\n}}\n\
             ca {{\n  dir = \"{}\"\n}}\nretry_join = [{}]\n{FAST_GOSSIP}{extra}\n",
            self.dir.path().display(),
            ca_dir.display(),
            join.join(", ")
        );
        AgentConfig::from_str(&src, &format!("{node}.hcl")).unwrap()
    }

    pub async fn start(&self, node: &str, extra: &str) -> Agent {
        Agent::start(self.config(node, extra)).await.unwrap()
    }

    /// Starts `node` joined to `seeds` by gossip.
    pub async fn start_joined(&self, node: &str, seeds: &[&Agent], extra: &str) -> Agent {
        Agent::start(self.config_joined(node, seeds, extra))
            .await
            .unwrap()
    }
}

/// A client agent `a` (service web, upstream to db on the returned port, config `extra_a`)
/// and a server agent `b` (service db on an echo backend, config `extra_b`), joined by
/// gossip; returns once `a` sees db passing.
pub async fn web_to_db(mesh: &Mesh, extra_a: &str, extra_b: &str) -> (Agent, Agent, u16) {
    let echo = echo_server().await;
    let port = free_port();
    let b = mesh
        .start(
            "b",
            &format!("{extra_b}\n{}", service("db", "db-1", echo.port(), &[])),
        )
        .await;
    let up = Up {
        destination: "db",
        port,
    };
    let a = mesh
        .start_joined(
            "a",
            &[&b],
            &format!("{extra_a}\n{}", service("web", "web-1", 1, &[up])),
        )
        .await;
    wait_catalog(&a, "default", "db", 1, Health::Passing).await;
    (a, b, port)
}

/// HCL of one service with upstreams.
pub fn service(name: &str, id: &str, port: u16, ups: &[Up]) -> String {
    let mut s = format!("service {{\n  name = \"{name}\"\n  id = \"{id}\"\n  port = {port}\n");
    for u in ups {
        s += &format!(
            "  upstreams {{\n    destination_name = \"{}\"\n    local_bind_port = {}\n  }}\n",
            u.destination, u.port
        );
    }
    s + "}\n"
}

/// HCL of the client service `web` (instance `web-1`) with one upstream listener to
/// `destination` on `port`.
pub fn web_to(destination: &'static str, port: u16) -> String {
    service("web", "web-1", 1, &[Up { destination, port }])
}

/// Loads intentions (HCL entries) into `agent`.
pub fn rules(agent: &Agent, files: &[&str]) {
    let named: Vec<(String, &str)> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("i{i}.hcl"), *f))
        .collect();
    let set = RuleSet::load(named.iter().map(|(n, s)| (n.as_str(), *s))).unwrap();
    agent.handles().intentions.replace_rules_for_test(set);
}

/// `Sources` allowed into `dst`.
pub fn allow(dst: &str, src: &str) -> String {
    format!(
        "Kind = \"service-intentions\"\nName = \"{dst}\"\nSources = [\n  {{ Name = \"{src}\", Action = \"allow\" }},\n]\n"
    )
}

/// A port that was free a moment ago (for upstream listeners).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An echo server that carries half-close (echoes until EOF, then closes its side).
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A server that reads until EOF, then answers with the SHA-256 of what it read.
pub async fn digest_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => ctx.update(&buf[..n]),
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(ctx.finish().as_ref()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// A server that writes `name` and closes; abort the handle to close its listener.
pub async fn name_server(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// Sends `data`, half-closes, reads everything back until EOF (concurrently).
pub async fn roundtrip(port: u16, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(data).await?;
        w.shutdown().await
    };
    let recv = async {
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.map(|_| out)
    };
    let (sent, got) = tokio::join!(send, recv);
    sent?;
    got
}

/// Reads what a server sends until EOF (or an error).
pub async fn read_all(port: u16) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map(|_| out)
}

/// Waits (bounded: 5 s) until `f` holds.
pub async fn eventually(what: &str, f: impl FnMut() -> bool) {
    rhizome_agent::testkit::wait_until(what, Duration::from_secs(5), f).await;
}

/// The Prometheus text of `agent`.
pub fn metrics(agent: &Agent) -> String {
    agent.handles().metrics.encode()
}

/// Deterministic test data.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}
