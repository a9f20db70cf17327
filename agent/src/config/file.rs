//! The HCL schema of one configuration file. Every field is optional here: a config directory
//! may spread settings over several files, merged by [`super::AgentConfig::load_dir`].

use crate::duration::Dur;
use rhizome_intentions::hclsrc::one_or_many;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One `*.hcl` file of the config directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub node_name: Option<String>,
    pub data_dir: Option<String>,
    pub bind_addr: Option<String>,
    pub advertise_addr: Option<String>,
    pub client_addr: Option<String>,
    pub ports: Option<PortsBlock>,
    pub retry_join: Option<Vec<String>>,
    pub encrypt: Option<String>,
    pub log_level: Option<String>,
    pub default_intention_policy: Option<String>,
    pub intentions_dir: Option<String>,
    pub operator_dir: Option<String>,
    pub transport: Option<String>,
    pub intentions: Option<IntentionsBlock>,
    pub ca: Option<CaBlock>,
    pub gossip: Option<GossipBlock>,
    pub proxy: Option<ProxyBlock>,
    pub kubernetes: Option<KubernetesBlock>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub service: Vec<ServiceBlock>,
}

/// `ports { gossip = 7946, data = 7947, http = 7948 }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsBlock {
    pub gossip: Option<u16>,
    pub data: Option<u16>,
    pub http: Option<u16>,
}

/// `intentions { mode = "enforce" | "audit" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentionsBlock {
    pub mode: Option<String>,
}

/// `ca { dir = "...", signer = true, root_dir = "...", join_token = "...", signer_addrs = [...] }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaBlock {
    pub dir: Option<String>,
    pub signer: Option<bool>,
    pub root_dir: Option<String>,
    pub join_token: Option<String>,
    pub signer_addrs: Option<Vec<String>>,
    pub leaf_ttl: Option<Dur>,
}

/// `gossip { probe_interval = "1s", ... }`: SWIM tunables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipBlock {
    pub probe_interval: Option<Dur>,
    pub probe_timeout: Option<Dur>,
    pub suspicion_mult: Option<u32>,
    pub gossip_interval: Option<Dur>,
    pub gossip_nodes: Option<u32>,
    pub retransmit_mult: Option<u32>,
    pub push_pull_interval: Option<Dur>,
    pub reap_after: Option<Dur>,
}

/// `proxy { connect_timeout = "5s", idle_timeout = "1h", max_connections = 1024,
/// quic_keep_alive = "1s", quic_idle_timeout = "5s", max_connection_age = "10m" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyBlock {
    pub connect_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub max_connections: Option<u32>,
    pub drain_timeout: Option<Dur>,
    pub quic_keep_alive: Option<Dur>,
    pub quic_idle_timeout: Option<Dur>,
    pub max_connection_age: Option<Dur>,
}

/// `kubernetes { enabled = true, node_name = env("NODE_NAME") }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesBlock {
    pub enabled: Option<bool>,
    pub node_name: Option<String>,
    pub upstream_bind_addr: Option<String>,
    pub kubeconfig: Option<String>,
}

/// `service { name = "web", port = 8080, ... }`: a local service instance.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceBlock {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub upstreams: Vec<UpstreamBlock>,
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub check: Vec<CheckBlock>,
}

/// `upstreams { destination_name = "db", local_bind_port = 9191 }`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamBlock {
    pub destination_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_namespace: Option<String>,
    pub local_bind_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_bind_address: Option<String>,
}

/// `check { tcp = "127.0.0.1:80" | http = "http://...", interval = "10s", timeout = "2s",
/// success_before_passing = 0, failures_before_critical = 3 }`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBlock {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_before_passing: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures_before_critical: Option<u32>,
}
