//! Helpers for the data-plane tests: a test mesh CA, agents on loopback with port 0,
//! catalog snapshots and rules pushed into agents directly (until gossip carries them),
//! and backends (echo, a server that says its name).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use rhizome_agent::agent::Agent;
use rhizome_agent::catalog::{Catalog, Health, Instance};
use rhizome_agent::config::AgentConfig;
use rhizome_agent::testkit::TestCa;
use rhizome_intentions::RuleSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

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
        let ca_dir = self.ca.agent_dir(self.dir.path(), node).unwrap();
        let src = format!(
            "node_name = \"{node}\"\ndata_dir = \"{}/{node}/data\"\nbind_addr = \"127.0.0.1\"\n\
             default_intention_policy = \"deny\"\nports {{\n  http = 0\n  gossip = 0\n  data = 0\n}}\n\
             ca {{\n  dir = \"{}\"\n}}\n{extra}\n",
            self.dir.path().display(),
            ca_dir.display()
        );
        AgentConfig::from_str(&src, &format!("{node}.hcl")).unwrap()
    }

    pub async fn start(&self, node: &str, extra: &str) -> Agent {
        Agent::start(self.config(node, extra)).await.unwrap()
    }
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

/// The catalog entries of `agent`'s config services, with their real data address.
pub fn instances(agent: &Agent) -> Vec<Instance> {
    agent.shared().catalog.borrow().instances.clone()
}

/// Replaces the catalog of `agent` with its own instances plus `remote`.
pub fn publish(agent: &Agent, remote: &[Instance]) {
    let mut all = instances_local(agent);
    all.extend(remote.iter().cloned());
    agent
        .shared()
        .catalog
        .send_replace(Arc::new(Catalog::new(all)));
}

fn instances_local(agent: &Agent) -> Vec<Instance> {
    let node = agent.shared().config.node_name.clone();
    instances(agent)
        .into_iter()
        .filter(|i| i.node == node)
        .collect()
}

/// `health` for every instance of `agent`'s catalog on `node`.
pub fn set_health(agent: &Agent, node: &str, health: Health) {
    let mut all = instances(agent);
    for i in all.iter_mut().filter(|i| i.node == node) {
        i.health = health;
    }
    agent
        .shared()
        .catalog
        .send_replace(Arc::new(Catalog::new(all)));
}

/// Loads intentions (HCL entries) into `agent`.
pub fn rules(agent: &Agent, files: &[&str]) {
    let named: Vec<(String, &str)> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("i{i}.hcl"), *f))
        .collect();
    let set = RuleSet::load(named.iter().map(|(n, s)| (n.as_str(), *s))).unwrap();
    agent.shared().rules.send_replace(Arc::new(set));
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

/// A server that writes `name` and closes.
pub async fn name_server(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
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

/// Waits (bounded) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The Prometheus text of `agent`.
pub fn metrics(agent: &Agent) -> String {
    agent.shared().metrics.encode()
}

/// Deterministic test data.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Instances of `agent`'s own services, as another agent would learn them.
pub fn own_instances(agent: &Agent) -> Vec<Instance> {
    instances_local(agent)
}

pub fn passing(mut v: Vec<Instance>) -> Vec<Instance> {
    for i in &mut v {
        i.health = Health::Passing;
    }
    v
}
