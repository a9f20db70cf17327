//! Agent configuration: HCL files in a config directory, merged in file-name order,
//! validated as a whole. Errors name the file, and for syntax, unknown keys and wrong types
//! also the line and column.
//!
//! A loaded [`AgentConfig`] is immutable; a reload (`crate::reload`) loads a new one from
//! the same [`ConfigSource`] and, when it is accepted, publishes it through the one
//! [`ConfigWriter`] to every [`ConfigReader`].

pub mod definition;
mod file;

use crate::duration::Dur;
use file::FileConfig;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A read end of the configuration in force: services, upstreams, checks, `intentions_dir`
/// and log level change on a reload; every other setting stays as at start.
pub type ConfigReader = watch::Receiver<Arc<AgentConfig>>;

/// The only write end of the configuration in force (owned by the reloader).
pub struct ConfigWriter(watch::Sender<Arc<AgentConfig>>);

/// The configuration in force, starting at `initial`: its writer and a first reader.
pub fn live(initial: Arc<AgentConfig>) -> (ConfigWriter, ConfigReader) {
    let (tx, rx) = watch::channel(initial);
    (ConfigWriter(tx), rx)
}

impl ConfigWriter {
    /// Puts `config` in force; readers waiting on `changed()` wake.
    pub fn replace(&self, config: Arc<AgentConfig>) {
        self.0.send_replace(config);
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<AgentConfig> {
        self.0.borrow().clone()
    }
}

/// Where the configuration comes from: read at start, and read again on each reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// `--config-dir DIR`: every `*.hcl` file of `DIR`.
    Dir(PathBuf),
    /// `--dev`: the dev defaults (loopback, default allow, data in `data_dir`), with the
    /// files of an optional `--config-dir` merged over them.
    Dev {
        /// Node name (`--node`, default `dev`).
        node: String,
        /// The temporary data directory.
        data_dir: PathBuf,
        /// `--config-dir`, if given.
        dir: Option<PathBuf>,
    },
}

impl ConfigSource {
    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<AgentConfig, ConfigError> {
        match self {
            ConfigSource::Dir(dir) => AgentConfig::load_dir(dir),
            ConfigSource::Dev {
                node,
                data_dir,
                dir,
            } => AgentConfig::load_dev(node, data_dir, dir.as_deref()),
        }
    }

    /// The directory read (`None`: a dev agent without `--config-dir`).
    pub fn dir(&self) -> Option<&Path> {
        match self {
            ConfigSource::Dir(dir) => Some(dir),
            ConfigSource::Dev { dir, .. } => dir.as_deref(),
        }
    }
}

/// Default UDP port of the gossip protocol.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;
/// Default port of the data plane (QUIC over UDP, or TLS over TCP).
pub const DEFAULT_DATA_PORT: u16 = 7947;
/// Default TCP port of the HTTP API (loopback only unless `client_addr` says otherwise).
pub const DEFAULT_HTTP_PORT: u16 = 7948;
/// Namespace used when a service or a reference leaves it out.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A configuration problem; the agent refuses to start and prints it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The directory or a file in it could not be read.
    #[error("{path}: {source}")]
    Io {
        /// What could not be read.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file does not parse or does not fit the schema (carries file:line:column).
    #[error("{0}")]
    Syntax(#[from] rhizome_intentions::hclsrc::SourceError),
    /// A value is well-formed but not acceptable.
    #[error("{file}: {message}")]
    Invalid {
        /// File that set the value (or `<config>` for merged settings).
        file: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Whether intentions deny or only report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentionMode {
    /// Denies are enforced.
    Enforce,
    /// Denies are logged and counted as "would deny"; the connection goes through.
    Audit,
}

/// Transport of the data plane between agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// QUIC over UDP (default).
    Quic,
    /// TLS 1.3 over TCP, for networks that block UDP.
    Tls,
}

/// The ports an agent listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Ports {
    /// Gossip (UDP, and TCP for anti-entropy).
    pub gossip: u16,
    /// Data plane (QUIC/UDP or TLS/TCP) and join requests.
    pub data: u16,
    /// HTTP API and metrics.
    pub http: u16,
}

/// Certificate authority settings.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CaConfig {
    /// Directory written by `rhizome ca issue-agent` (agent.pem, agent.key, bundle.pem).
    pub dir: Option<PathBuf>,
    /// Serve join requests (needs `root_dir`).
    pub signer: bool,
    /// Directory written by `rhizome ca init` (root.pem, root.key); signers only.
    pub root_dir: Option<PathBuf>,
    /// Join token from `rhizome ca token create`, to obtain an intermediate from a signer.
    #[serde(skip_serializing)]
    pub join_token: Option<String>,
    /// Data-port addresses (`host:port`) of signer agents, for joining and intermediate
    /// renewal; when empty, derived from `retry_join` (see `crate::ca::join::signer_targets`).
    pub signer_addrs: Vec<String>,
    /// Lifetime of workload leaves.
    pub leaf_ttl: Dur,
}

/// SWIM and anti-entropy tunables (LAN defaults, comparable to Serf's).
#[derive(Clone, Debug, Serialize)]
pub struct GossipConfig {
    /// Time between failure-detection probes.
    pub probe_interval: Dur,
    /// Time to wait for a direct ack before asking others to probe.
    pub probe_timeout: Dur,
    /// Suspicion timeout multiplier (scaled by log10 of the cluster size).
    pub suspicion_mult: u32,
    /// Time between gossip rounds of piggybacked updates.
    pub gossip_interval: Dur,
    /// Members gossiped to per round.
    pub gossip_nodes: u32,
    /// Retransmissions of each update (scaled by log10 of the cluster size).
    pub retransmit_mult: u32,
    /// Time between full state exchanges with a random member.
    pub push_pull_interval: Dur,
    /// Time after which a failed node's instances are removed from the catalog.
    pub reap_after: Dur,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            probe_interval: Dur(Duration::from_secs(1)),
            probe_timeout: Dur(Duration::from_millis(500)),
            suspicion_mult: 4,
            gossip_interval: Dur(Duration::from_millis(200)),
            gossip_nodes: 3,
            retransmit_mult: 4,
            push_pull_interval: Dur(Duration::from_secs(30)),
            reap_after: Dur(Duration::from_secs(72 * 3600)),
        }
    }
}

/// Data-plane proxy limits and timeouts.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyConfig {
    /// Time allowed to reach the destination (agent and local instance).
    pub connect_timeout: Dur,
    /// A proxied connection with no bytes either way for this long is closed.
    pub idle_timeout: Dur,
    /// Maximum concurrent connections per upstream listener.
    pub max_connections: u32,
    /// On SIGTERM, time given to open connections to finish.
    pub drain_timeout: Dur,
    /// Interval of QUIC keep-alive packets on pooled connections to peer agents: a peer that
    /// stops answering is noticed within `quic_idle_timeout` even when no stream is open.
    pub quic_keep_alive: Dur,
    /// A QUIC connection to a peer agent that received nothing for this long is closed (its
    /// open streams fail, the next proxied connection dials afresh). Must exceed
    /// `quic_keep_alive`.
    pub quic_idle_timeout: Dur,
    /// A pooled QUIC connection older than this takes no new streams: the next proxied
    /// connection opens a fresh one (a full handshake against the trust in force); the old
    /// one closes when its last stream ends.
    pub max_connection_age: Dur,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Dur(Duration::from_secs(5)),
            idle_timeout: Dur(Duration::from_secs(3600)),
            max_connections: 1024,
            drain_timeout: Dur(Duration::from_secs(15)),
            quic_keep_alive: Dur(Duration::from_secs(1)),
            quic_idle_timeout: Dur(Duration::from_secs(5)),
            max_connection_age: Dur(Duration::from_secs(600)),
        }
    }
}

/// Kubernetes pod discovery.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KubernetesConfig {
    /// Watch pods on this node and register annotated ones.
    pub enabled: bool,
    /// The Kubernetes node this agent runs on (`env("NODE_NAME")` from the downward API).
    pub node_name: Option<String>,
    /// Address pod upstream listeners bind to (the node address under host networking).
    pub upstream_bind_addr: Option<IpAddr>,
    /// A kubeconfig file to use instead of the in-cluster service account (then
    /// `$KUBECONFIG`, then `~/.kube/config`), e.g. for an agent run outside the cluster.
    pub kubeconfig: Option<PathBuf>,
}

/// An upstream: a local listener that reaches a destination service through the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Upstream {
    /// Destination service name.
    pub destination_name: String,
    /// Destination namespace.
    pub destination_namespace: String,
    /// Local port the listener binds.
    pub local_bind_port: u16,
    /// Local address the listener binds (127.0.0.1 by default).
    pub local_bind_address: IpAddr,
}

/// How a service instance's health is checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connect to `host:port` succeeds.
    Tcp {
        /// Address to connect to.
        target: String,
    },
    /// An HTTP GET returns 2xx.
    Http {
        /// URL to fetch (http:// only).
        url: String,
    },
}

/// Default `failures_before_critical`: a passing check turns critical only after three
/// failed probes in a row. Consul's default is 0 (one failure); one probe failing during a
/// one-second restart of the service would then take the instance out for a whole interval
/// (10 s by default), while an instance that really went away costs little until the third
/// probe: the agent in front of it answers "unreachable" and the client's agent tries another
/// instance before any byte is sent. Three, like Kubernetes' readiness `failureThreshold`.
pub const DEFAULT_FAILURES_BEFORE_CRITICAL: u32 = 3;

/// Default `success_before_passing`: Consul's, 0 (one success, like 1).
pub const DEFAULT_SUCCESS_BEFORE_PASSING: u32 = 0;

/// One health check of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What is probed.
    #[serde(flatten)]
    pub kind: CheckKind,
    /// Time between probes.
    pub interval: Dur,
    /// Time a probe may take.
    pub timeout: Dur,
    /// Consecutive passing probes before a critical check turns passing (Consul's
    /// `success_before_passing`; 0 and 1 both mean the first).
    pub success_before_passing: u32,
    /// Consecutive failing probes before a passing check turns critical (Consul's
    /// `failures_before_critical`; 0 and 1 both mean the first).
    pub failures_before_critical: u32,
}

/// A local service instance registered by this agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Instance id, unique on this node (defaults to the name).
    pub id: String,
    /// Service name.
    pub name: String,
    /// Namespace (`default` when not given).
    pub namespace: String,
    /// Port the instance listens on.
    pub port: u16,
    /// Address the instance listens on (127.0.0.1 by default).
    pub address: IpAddr,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
    /// Upstream listeners owned by this service.
    pub upstreams: Vec<Upstream>,
    /// Health checks.
    pub checks: Vec<Check>,
}

/// The effective, validated agent configuration.
#[derive(Clone, Debug, Serialize)]
pub struct AgentConfig {
    /// This node's name: unique in the mesh, part of its SPIFFE id.
    pub node_name: String,
    /// Where the agent keeps its state (sled store, certificates).
    pub data_dir: PathBuf,
    /// Address the gossip and data listeners bind.
    pub bind_addr: IpAddr,
    /// Address other agents use to reach this one (defaults to `bind_addr`).
    pub advertise_addr: IpAddr,
    /// Address the HTTP API binds (loopback by default).
    pub client_addr: IpAddr,
    /// Listening ports.
    pub ports: Ports,
    /// Gossip addresses (`host:port`) to join at start, retried with backoff.
    pub retry_join: Vec<String>,
    /// Gossip key (base64 of 32 bytes); gossip is in the clear without it.
    #[serde(skip_serializing)]
    pub encrypt: Option<String>,
    /// Log filter (`info`, `debug`, `rhizome_agent=debug,info`...).
    pub log_level: Option<String>,
    /// Decision when no intention matches.
    pub default_intention_policy: Policy,
    /// Enforce or only audit intentions.
    pub intention_mode: IntentionMode,
    /// Directory of intention files loaded at start and on change.
    pub intentions_dir: Option<PathBuf>,
    /// Operator credentials (`rhizome ca issue-operator`) used to sign `intentions_dir` files.
    pub operator_dir: Option<PathBuf>,
    /// Data-plane transport.
    pub transport: Transport,
    /// Certificate authority settings.
    pub ca: CaConfig,
    /// Gossip tunables.
    pub gossip: GossipConfig,
    /// Proxy limits.
    pub proxy: ProxyConfig,
    /// Kubernetes pod discovery.
    pub kubernetes: KubernetesConfig,
    /// Local services: the files' ones, then those registered through the API.
    pub services: Vec<Service>,
    /// Ids of the `services` registered through the API (`crate::reload::register`),
    /// not defined by the files. Not a setting: never compared by a reload.
    #[serde(skip)]
    pub registered: std::collections::BTreeSet<String>,
    /// `--dev` mode: in-memory CA, unsigned intentions accepted, default allow.
    pub dev: bool,
}

/// What happens when no intention matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Allow the connection.
    Allow,
    /// Refuse the connection.
    Deny,
}

impl AgentConfig {
    /// Loads and validates every `*.hcl` file of `dir`, in file-name order. Scalars set in a
    /// later file override earlier ones; `service` blocks accumulate.
    pub fn load_dir(dir: &Path) -> Result<AgentConfig, ConfigError> {
        let parsed = read_dir(dir)?;
        if parsed.is_empty() {
            return Err(ConfigError::Invalid {
                file: dir.display().to_string(),
                message: "no *.hcl files in the config directory".into(),
            });
        }
        Self::from_files(parsed)
    }

    /// The configuration of `rhizome agent --dev [--config-dir DIR]`: the dev defaults of
    /// [`AgentConfig::dev`], then the files of `dir` (if any) merged over them as later
    /// files are over earlier ones, so they can add services and upstreams or move ports.
    pub fn load_dev(
        node: &str,
        data_dir: &Path,
        dir: Option<&Path>,
    ) -> Result<AgentConfig, ConfigError> {
        let loopback = Some(Ipv4Addr::LOCALHOST.to_string());
        let defaults = FileConfig {
            node_name: Some(node.to_string()),
            data_dir: Some(data_dir.display().to_string()),
            bind_addr: loopback.clone(),
            advertise_addr: loopback.clone(),
            client_addr: loopback,
            default_intention_policy: Some("allow".to_string()),
            ..FileConfig::default()
        };
        let mut files = vec![("<dev defaults>".to_string(), defaults)];
        if let Some(dir) = dir {
            files.extend(read_dir(dir)?);
        }
        let mut config = Self::from_files(files)?;
        config.dev = true;
        Ok(config)
    }

    /// Parses one config text (used by tests and `--config-file`).
    pub fn from_str(src: &str, file: &str) -> Result<AgentConfig, ConfigError> {
        Self::from_files(vec![(file.to_string(), parse_file(src, file)?)])
    }

    /// The configuration of `rhizome agent --dev`: everything on loopback, default allow.
    pub fn dev(node_name: &str, data_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            node_name: node_name.to_string(),
            data_dir,
            bind_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: Ports {
                gossip: DEFAULT_GOSSIP_PORT,
                data: DEFAULT_DATA_PORT,
                http: DEFAULT_HTTP_PORT,
            },
            retry_join: Vec::new(),
            encrypt: None,
            log_level: None,
            default_intention_policy: Policy::Allow,
            intention_mode: IntentionMode::Enforce,
            intentions_dir: None,
            operator_dir: None,
            transport: Transport::Quic,
            ca: CaConfig {
                leaf_ttl: Dur(Duration::from_secs(72 * 3600)),
                ..CaConfig::default()
            },
            gossip: GossipConfig::default(),
            proxy: ProxyConfig::default(),
            kubernetes: KubernetesConfig::default(),
            services: Vec::new(),
            registered: Default::default(),
            dev: true,
        }
    }

    /// Address of the HTTP API.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.client_addr, self.ports.http)
    }

    /// Address gossip binds.
    pub fn gossip_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_addr, self.ports.gossip)
    }

    /// Address the data plane binds.
    pub fn data_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_addr, self.ports.data)
    }

    fn from_files(files: Vec<(String, FileConfig)>) -> Result<AgentConfig, ConfigError> {
        merge::merge(files)
    }
}

/// Every `*.hcl` file of `dir`, parsed, in file-name order.
fn read_dir(dir: &Path) -> Result<Vec<(String, FileConfig)>, ConfigError> {
    let io = |path: &Path, source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hcl") && p.is_file())
        .collect();
    files.sort();
    let mut parsed = Vec::new();
    for path in &files {
        let src = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        parsed.push((
            path.display().to_string(),
            parse_file(&src, &path.display().to_string())?,
        ));
    }
    Ok(parsed)
}

fn parse_file(src: &str, file: &str) -> Result<FileConfig, ConfigError> {
    parse_hcl(src, file)
}

/// Parses HCL text into `T`, with `env("X")` evaluated (config files, service definitions).
fn parse_hcl<T: serde::de::DeserializeOwned>(src: &str, file: &str) -> Result<T, ConfigError> {
    let mut ctx = hcl::eval::Context::new();
    ctx.declare_func("env", env_func());
    Ok(rhizome_intentions::hclsrc::from_str_eval(src, file, &ctx)?)
}

/// `env("NAME")` in config files: the value of an environment variable ("" when unset).
fn env_func() -> hcl::eval::FuncDef {
    hcl::eval::FuncDef::builder()
        .param(hcl::eval::ParamType::String)
        .build(|args| {
            let name = args[0].as_str().unwrap_or_default();
            Ok(hcl::Value::String(std::env::var(name).unwrap_or_default()))
        })
}

mod merge;

/// Checks a node, service or namespace name: 1-63 characters of `a-z0-9-_.`, starting with an
/// alphanumeric. These names end up in SPIFFE ids and DNS names.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} is not a valid name: use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests;
