//! Helpers for the multi-agent gossip tests: one test CA per mesh, real agents on 127.0.0.1
//! with tight gossip timings, bounded waits on conditions.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;

use rhizome_agent::api::types::Status;
use rhizome_agent::app::Agent;
use rhizome_agent::config::AgentConfig;
use rhizome_agent::testkit::TestCa;

/// Gossip timings for tests: failures detected in about a second.
pub const FAST_GOSSIP: &str = r#"
gossip {
  probe_interval = "200ms"
  probe_timeout = "100ms"
  gossip_interval = "50ms"
  suspicion_mult = 3
  push_pull_interval = "1s"
  reap_after = "3s"
}
"#;

/// A test mesh: a CA, a work directory and a gossip key.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub key: Option<String>,
}

impl Mesh {
    pub fn new(encrypt: bool) -> Mesh {
        let key = encrypt.then(|| {
            rhizome_agent::gossip::keys::generate_key()
                .unwrap()
                .to_base64()
        });
        Mesh {
            dir: tempfile::tempdir().unwrap(),
            ca: TestCa::new("gossip.test").unwrap(),
            key,
        }
    }

    /// The config of `node` joining `seeds`, gossiping on `gossip_port` (0: any), plus `extra`.
    pub fn config(
        &self,
        node: &str,
        seeds: &[SocketAddr],
        gossip_port: u16,
        extra: &str,
    ) -> AgentConfig {
        let ca_dir = self.ca.agent_dir(self.dir.path(), node).unwrap();
        let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
        let encrypt = self
            .key
            .as_ref()
            .map(|k| format!("encrypt = \"{k}\"\n"))
            .unwrap_or_default();
        let src = format!(
            "node_name = \"{node}\"\ndata_dir = \"{}/{node}-data\"\nbind_addr = \"127.0.0.1\"\n{encrypt}retry_join = [{}]\nca {{\n  dir = \"{}\"\n}}\nports {{\n  http = 0\n  gossip = {gossip_port}\n  data = 0\n}}\n{FAST_GOSSIP}{extra}",
            self.dir.path().display(),
            seeds.join(", "),
            ca_dir.display()
        );
        AgentConfig::from_str(&src, &format!("{node}.hcl")).unwrap()
    }

    pub async fn start(&self, node: &str, seeds: &[SocketAddr], extra: &str) -> Agent {
        Agent::start(self.config(node, seeds, 0, extra))
            .await
            .unwrap()
    }
}

/// Gossip address of an agent.
pub fn gossip_addr(agent: &Agent) -> SocketAddr {
    agent.handles().gossip.addr()
}

/// The status `observer` shows for `node`.
pub fn status(observer: &Agent, node: &str) -> Option<Status> {
    rhizome_agent::testkit::member(observer, node).map(|(s, _)| s)
}

pub use rhizome_agent::testkit::wait_until;

/// Every agent lists every name in `nodes` as alive.
pub fn all_alive(agents: &[&Agent], nodes: &[&str]) -> bool {
    agents
        .iter()
        .all(|a| nodes.iter().all(|n| status(a, n) == Some(Status::Alive)))
}

/// The value of one sample line of `/metrics` (e.g. `rhizome_x_total{reason="y"}`), 0 if absent.
pub fn metric(agent: &Agent, sample: &str) -> u64 {
    let text = agent.handles().metrics.encode();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}
