//! `rhizome agent` processes in host namespaces: generated configuration, start, kill -9,
//! SIGTERM, restart on the same data_dir, and API / CLI queries from inside the host.
//!
//! The API binds `127.0.0.1` inside the host's namespace (the agent's default), so it is
//! reachable only from that host, as in production; the harness queries it by running the
//! CLI or `rhizome-testsvc get` there with `ip netns exec`.

use crate::error::{HarnessError, Result};
use crate::host::{Host, read_tail};
use crate::net::Net;
use crate::process::Proc;
use crate::wait::wait_until;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

/// How long an agent may take to answer `/v1/health` after it is started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Label of agent processes: their log is `<host dir>/agent.log`.
pub const AGENT_LABEL: &str = "agent";

/// What to configure on an agent beyond the harness's base file.
///
/// The base file (`00-harness.hcl`) sets `node_name` (`h<index>`), `data_dir`
/// (`<host dir>/data`), `bind_addr` (the host address), `client_addr = "127.0.0.1"` and
/// `log_level`, and `ca { dir }`: an intermediate for the node issued from the network's
/// mesh root ([`Net::ca_dir`]) with `rhizome ca issue-agent`, unless
/// [`AgentSpec::without_mesh_ca`]. Snippets added with
/// [`AgentSpec::hcl`] go to `50-test.hcl`, read after it, so they may override any of those
/// and add services, `retry_join`, `encrypt`...
#[derive(Clone, Debug)]
pub struct AgentSpec {
    node_name: Option<String>,
    log_level: String,
    mesh_ca: bool,
    snippets: Vec<String>,
}

impl Default for AgentSpec {
    fn default() -> Self {
        AgentSpec {
            node_name: None,
            log_level: "info".to_string(),
            mesh_ca: true,
            snippets: Vec::new(),
        }
    }
}

impl AgentSpec {
    /// The base configuration only.
    pub fn new() -> AgentSpec {
        AgentSpec::default()
    }

    /// Another node name than `h<index>`.
    pub fn node_name(mut self, name: &str) -> AgentSpec {
        self.node_name = Some(name.to_string());
        self
    }

    /// The agent's log filter (default `info`).
    pub fn log_level(mut self, level: &str) -> AgentSpec {
        self.log_level = level.to_string();
        self
    }

    /// No `ca { dir }` from the network's mesh root: the agent gets its credentials another
    /// way (a `ca { join_token }` through a signer, say, or as a signer itself).
    pub fn without_mesh_ca(mut self) -> AgentSpec {
        self.mesh_ca = false;
        self
    }

    /// Appends an HCL snippet (written to `50-test.hcl`).
    pub fn hcl(mut self, snippet: &str) -> AgentSpec {
        self.snippets.push(snippet.to_string());
        self
    }

    /// `retry_join = [...]` with these gossip addresses.
    pub fn retry_join(self, addrs: impl IntoIterator<Item = SocketAddr>) -> AgentSpec {
        let list: Vec<String> = addrs.into_iter().map(|a| format!("\"{a}\"")).collect();
        self.hcl(&format!("retry_join = [{}]", list.join(", ")))
    }
}

fn hcl_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An agent of a host: its configuration directory, data_dir, log and (while it runs) its
/// process. Dropping it kills the process; the files stay until the network is dropped.
pub struct AgentProc {
    host: Host,
    config_dir: PathBuf,
    data_dir: PathBuf,
    effective: serde_json::Value,
    http: SocketAddr,
    proc: Option<Proc>,
}

impl AgentProc {
    /// Writes the configuration for `host` (credentials from the root in `ca_dir` when the
    /// spec wants them)
    /// and checks it with `rhizome agent --validate`, which also tells the harness the
    /// effective addresses. Does not start the agent.
    pub(crate) fn prepare(
        host: &Host,
        spec: &AgentSpec,
        ca_dir: Option<&Path>,
    ) -> Result<AgentProc> {
        let config_dir = host.dir().join("config");
        let data_dir = host.dir().join("data");
        std::fs::create_dir_all(&config_dir)
            .map_err(|e| HarnessError::io(format!("create {}", config_dir.display()), e))?;
        let node = spec.node_name.clone().unwrap_or_else(|| host.name());
        let mut base = format!(
            "# written by the rhizome-integration harness\n\
             node_name = {}\ndata_dir = {}\nbind_addr = \"{}\"\nclient_addr = \"127.0.0.1\"\n\
             log_level = {}\n",
            hcl_string(&node),
            hcl_string(&data_dir.to_string_lossy()),
            host.addr(),
            hcl_string(&spec.log_level),
        );
        if let Some(root) = ca_dir.filter(|_| spec.mesh_ca) {
            let dir = issue_agent(host, root, &node)?;
            base += &format!(
                "ca {{\n  dir = {}\n}}\n",
                hcl_string(&dir.to_string_lossy())
            );
        }
        write(&config_dir.join("00-harness.hcl"), &base)?;
        let extra = spec.snippets.join("\n") + "\n";
        write(&config_dir.join("50-test.hcl"), &extra)?;
        let out = host.run(
            &host.bins().rhizome,
            [
                "agent".as_ref(),
                "--config-dir".as_ref(),
                config_dir.as_os_str(),
                "--validate".as_ref(),
            ],
        )?;
        let effective: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| HarnessError::Process {
                what: "rhizome agent --validate".into(),
                detail: format!("{e}: {out}"),
            })?;
        let client: IpAddr = json_parse(&effective, "client_addr")?;
        let port: u16 = effective["ports"]["http"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| HarnessError::Process {
                what: "rhizome agent --validate".into(),
                detail: format!("no ports.http in {effective}"),
            })?;
        Ok(AgentProc {
            host: host.clone(),
            config_dir,
            data_dir,
            effective,
            http: SocketAddr::new(client, port),
            proc: None,
        })
    }

    /// The host it runs on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The effective configuration (`rhizome agent --validate` output).
    pub fn config(&self) -> &serde_json::Value {
        &self.effective
    }

    /// The node name.
    pub fn node_name(&self) -> &str {
        self.effective["node_name"].as_str().unwrap_or_default()
    }

    /// The HTTP API address, as seen from inside the host.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The gossip address other agents use (`advertise_addr:ports.gossip`).
    pub fn gossip_addr(&self) -> Result<SocketAddr> {
        let ip: IpAddr = json_parse(&self.effective, "advertise_addr")?;
        let port = self.effective["ports"]["gossip"].as_u64().unwrap_or(0);
        Ok(SocketAddr::new(ip, u16::try_from(port).unwrap_or(0)))
    }

    /// The configuration directory.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The data directory (kept across restarts).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id while the agent runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().filter(|p| p.is_running()).map(Proc::pid)
    }

    /// Whether the agent process is running.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Everything the agent has logged (all runs; appended).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.host.log_path(AGENT_LABEL)).unwrap_or_default()
    }

    /// Starts the agent process (it must not be running).
    pub fn spawn(&mut self) -> Result<()> {
        if self.is_running() {
            return Err(HarnessError::Usage(format!(
                "agent on {} is already running",
                self.host.name()
            )));
        }
        let proc = self.host.spawn(
            AGENT_LABEL,
            &self.host.bins().rhizome,
            [
                "agent".as_ref(),
                "--config-dir".as_ref(),
                self.config_dir.as_os_str(),
            ],
        )?;
        self.proc = Some(proc);
        Ok(())
    }

    /// Waits until the agent answers `GET /v1/health`; fails at once if it exits.
    pub fn wait_ready(&self) -> Result<()> {
        let what = format!("agent on {} to answer /v1/health", self.host.name());
        wait_until(&what, READY_TIMEOUT, || {
            let Some(proc) = &self.proc else {
                return Err(HarnessError::Usage("agent not started".into()));
            };
            if let Some(status) = proc.try_status()? {
                return Err(HarnessError::Process {
                    what: proc.label().to_string(),
                    detail: format!(
                        "exited ({status}) before it was ready; log:\n{}",
                        read_tail(&self.host.log_path(AGENT_LABEL), 30)
                    ),
                });
            }
            Ok(self.api_get("/v1/health").ok())
        })
        .map(|_| ())
    }

    /// Starts the agent and waits until its API answers.
    pub fn start(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_ready()
    }

    /// `kill -9` the agent: no shutdown code runs (as on a crash or power loss).
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let proc = self.take_proc()?;
        proc.kill()
    }

    /// SIGTERM; waits up to `grace` for a clean exit (then kills it and fails).
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        let proc = self.take_proc()?;
        proc.terminate(grace)
    }

    /// Stops the agent with SIGTERM if it runs (up to `grace`), then starts it again on the
    /// same configuration and data_dir and waits until it answers.
    pub fn restart(&mut self, grace: Duration) -> Result<()> {
        if self.is_running() {
            self.terminate(grace)?;
        }
        self.start()
    }

    fn take_proc(&mut self) -> Result<Proc> {
        self.proc.take().ok_or_else(|| {
            HarnessError::Usage(format!("agent on {} is not running", self.host.name()))
        })
    }

    /// `GET path` on the agent's API from inside its host; the JSON body of a 2xx answer.
    pub fn api_get(&self, path: &str) -> Result<serde_json::Value> {
        let answer = self.host.http_get(self.http, path)?;
        if !(200..300).contains(&answer.status) {
            return Err(HarnessError::Process {
                what: format!("GET {path} on {}", self.host.name()),
                detail: format!("status {}: {}", answer.status, answer.body),
            });
        }
        serde_json::from_str(&answer.body).map_err(|e| HarnessError::Process {
            what: format!("GET {path} on {}", self.host.name()),
            detail: format!("{e}: {}", answer.body),
        })
    }

    /// Runs `rhizome --http-addr <api> ARGS...` inside the host; its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        self.host.run(
            &self.host.bins().rhizome,
            ["--http-addr", &self.http.to_string()]
                .into_iter()
                .chain(args.iter().copied()),
        )
    }

    /// `rhizome info --format json`, parsed (the `/v1/agent/self` document).
    pub fn info(&self) -> Result<serde_json::Value> {
        let out = self.cli(&["info", "--format", "json"])?;
        serde_json::from_str(&out).map_err(|e| HarnessError::Process {
            what: format!("rhizome info on {}", self.host.name()),
            detail: format!("{e}: {out}"),
        })
    }
}

/// `rhizome ca issue-agent` for `node` into `<host dir>/ca-<node>` (kept if it exists: the
/// same node keeps its identity when its agent is prepared again).
fn issue_agent(host: &Host, root: &Path, node: &str) -> Result<PathBuf> {
    let out = host.dir().join(format!("ca-{node}"));
    if out.join("agent.pem").is_file() {
        return Ok(out);
    }
    host.run(
        &host.bins().rhizome,
        [
            "ca".as_ref(),
            "issue-agent".as_ref(),
            "--ca-dir".as_ref(),
            root.as_os_str(),
            "--node".as_ref(),
            node.as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
    )
    .map_err(|e| HarnessError::Ca(e.to_string()))?;
    Ok(out)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| HarnessError::io(format!("write {}", path.display()), e))
}

fn json_parse<T: std::str::FromStr>(v: &serde_json::Value, key: &str) -> Result<T> {
    v[key]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HarnessError::Process {
            what: "rhizome agent --validate".into(),
            detail: format!("no valid {key} in {v}"),
        })
}

impl Net {
    fn root_for(&self, spec: &AgentSpec) -> Result<Option<PathBuf>> {
        if spec.mesh_ca {
            self.ca_dir().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Writes and validates the configuration of an agent on host `index`, without starting
    /// it (call [`AgentProc::start`]).
    pub fn prepare_agent(&self, index: usize, spec: &AgentSpec) -> Result<AgentProc> {
        let host = self
            .hosts()
            .get(index)
            .ok_or_else(|| HarnessError::Usage(format!("no host {index}")))?;
        let root = self.root_for(spec)?;
        AgentProc::prepare(host, spec, root.as_deref())
    }

    /// Configures and starts an agent on host `index`, waiting until its API answers.
    pub fn start_agent(&self, index: usize, spec: &AgentSpec) -> Result<AgentProc> {
        let mut agent = self.prepare_agent(index, spec)?;
        agent.start()?;
        Ok(agent)
    }

    /// Starts one agent per host (configured by `spec(host)`): all are spawned first, then
    /// each is waited for, so they boot in parallel.
    pub fn start_agents(&self, spec: impl Fn(&Host) -> AgentSpec) -> Result<Vec<AgentProc>> {
        let mut agents = Vec::with_capacity(self.hosts().len());
        for host in self.hosts() {
            let spec = spec(host);
            let root = self.root_for(&spec)?;
            let mut agent = AgentProc::prepare(host, &spec, root.as_deref())?;
            agent.spawn()?;
            agents.push(agent);
        }
        for agent in &agents {
            agent.wait_ready()?;
        }
        Ok(agents)
    }
}
