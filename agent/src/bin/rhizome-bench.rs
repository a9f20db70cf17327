//! `rhizome-bench`: runs a two-agent rhizome chain on loopback for
//! `../shared/bench/dataplane.py --target` (see its README, "A rhizome chain for --target").
//!
//! ```text
//! rhizome-bench chain [--work DIR] [--transport quic|tls] [--offset N]
//! ```
//! writes a test CA and two agent configs under DIR, starts two agents as separate
//! processes (this binary's `agent` mode), waits until the chain answers, prints
//! `--target rhizome=18101,18102,PID_A,PID_B` and runs until SIGINT/SIGTERM. `--offset N`
//! moves every port of the chain (not the backends) by N, so several chains (transports,
//! settings) can run side by side in one benchmark run; the target is then named
//! `rhizome-<transport>-<N>` (use multiples of 300).
//!
//! - server agent `bench-b`: services `bench-echo` -> 127.0.0.1:18000 and `bench-iperf` ->
//!   127.0.0.1:18001 (the harness's backends), intentions allowing `bench-client`;
//! - client agent `bench-a`: service `bench-client` with upstreams 18101 -> bench-echo and
//!   18102 -> bench-iperf.
//!
//! The client agent joins the server's gossip and learns its instances from it; the server
//! loads the intentions from an `intentions_dir`, signed with an operator credential of the
//! bench CA. The chain is ready (and the target printed) once the client's catalog shows
//! both destinations passing.

use anyhow::Context as _;
use rhizome_agent::app::{Agent, shutdown_signal};
use rhizome_agent::catalog::Catalog;
use rhizome_agent::config::AgentConfig;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

const ECHO_BACKEND: u16 = 18000;
const IPERF_BACKEND: u16 = 18001;
const ECHO_UPSTREAM: u16 = 18101;
const IPERF_UPSTREAM: u16 = 18102;
const SERVER_DATA: u16 = 18202;

const INTENTIONS: &str = r#"Kind = "service-intentions"
Name = "bench-*"
Sources = [
  { Name = "bench-client", Action = "allow" },
]
"#;

fn usage() -> ! {
    eprintln!(
        "usage: rhizome-bench chain [--work DIR] [--transport quic|tls] [--offset N]\n       \
         rhizome-bench agent CONFIG_FILE (client|server) READY_FILE"
    );
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("chain") => chain(&args[1..]),
        Some("agent") if args.len() == 4 => {
            run_agent(Path::new(&args[1]), &args[2], Path::new(&args[3]))
        }
        _ => usage(),
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn agent_hcl(
    node: &str,
    work: &Path,
    ca_dir: &Path,
    ports: (u16, u16, u16),
    extra: &str,
) -> String {
    format!(
        "node_name = \"{node}\"\ndata_dir = \"{}/{node}/data\"\nbind_addr = \"127.0.0.1\"\n\
         default_intention_policy = \"deny\"\nlog_level = \"warn\"\n\
         ports {{\n  http = {}\n  gossip = {}\n  data = {}\n}}\nca {{\n  dir = \"{}\"\n}}\n{extra}",
        work.display(),
        ports.0,
        ports.1,
        ports.2,
        ca_dir.display()
    )
}

/// Writes the CA and configs, starts both agents, prints the target, waits for a signal.
fn chain(args: &[String]) -> anyhow::Result<()> {
    let offset: u16 = flag(args, "--offset").map_or(Ok(0), |o| o.parse().context("--offset"))?;
    let work = PathBuf::from(
        flag(args, "--work").unwrap_or_else(|| format!("/tmp/rhizome-bench/chain-{offset}")),
    );
    let transport = flag(args, "--transport").unwrap_or_else(|| "quic".into());
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let ca = rhizome_agent::testkit::TestCa::new("bench.test")?;
    let (intentions, operator) = (work.join("intentions"), work.join("operator"));
    std::fs::create_dir_all(&intentions)?;
    std::fs::create_dir_all(&operator)?;
    std::fs::write(intentions.join("bench.hcl"), INTENTIONS)?;
    let op = ca.root.issue_operator(
        &"bench".parse()?,
        time::OffsetDateTime::now_utc(),
        rhizome_ca::DEFAULT_LEAF_TTL,
    )?;
    std::fs::write(operator.join("chain.pem"), op.chain_pem())?;
    std::fs::write(operator.join("key.pem"), op.key_pem())?;
    let server = agent_hcl(
        "bench-b",
        &work,
        &ca.agent_dir(&work, "bench-b")?,
        (18112 + offset, 18122 + offset, SERVER_DATA + offset),
        &format!(
            "intentions_dir = \"{}\"\noperator_dir = \"{}\"\n\
             service {{\n  name = \"bench-echo\"\n  port = {ECHO_BACKEND}\n}}\n\
             service {{\n  name = \"bench-iperf\"\n  port = {IPERF_BACKEND}\n}}\n",
            intentions.display(),
            operator.display()
        ),
    );
    let client = agent_hcl(
        "bench-a",
        &work,
        &ca.agent_dir(&work, "bench-a")?,
        (18111 + offset, 18121 + offset, 18201 + offset),
        &format!(
            "transport = \"{transport}\"\nretry_join = [\"127.0.0.1:{}\"]\nservice {{\n  name = \"bench-client\"\n  port = 1\n  \
             upstreams {{\n    destination_name = \"bench-echo\"\n    local_bind_port = {}\n  }}\n  \
             upstreams {{\n    destination_name = \"bench-iperf\"\n    local_bind_port = {}\n  }}\n}}\n",
            18122 + offset,
            ECHO_UPSTREAM + offset,
            IPERF_UPSTREAM + offset
        ),
    );
    std::fs::write(work.join("server.hcl"), server)?;
    std::fs::write(work.join("client.hcl"), client)?;
    let exe = std::env::current_exe()?;
    let spawn = |file: &str, role: &str| -> anyhow::Result<Child> {
        let log = std::fs::File::create(work.join(format!("{role}.log")))?;
        Command::new(&exe)
            .args([
                "agent",
                &work.join(file).display().to_string(),
                role,
                &work.join("ready").display().to_string(),
            ])
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the {role} agent"))
    };
    let mut b = spawn("server.hcl", "server")?;
    let mut a = spawn("client.hcl", "client")?;
    let up = wait_file(&work.join("ready"));
    if !up {
        let _ = a.kill();
        let _ = b.kill();
        anyhow::bail!("the agents did not come up; see {}/*.log", work.display());
    }
    let name = if offset == 0 && transport == "quic" {
        "rhizome".to_string()
    } else {
        format!("rhizome-{transport}-{offset}")
    };
    println!(
        "--target {name}={},{},{},{}",
        ECHO_UPSTREAM + offset,
        IPERF_UPSTREAM + offset,
        a.id(),
        b.id()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(shutdown_signal());
    for child in [&mut a, &mut b] {
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
    }
    let _ = a.wait();
    let _ = b.wait();
    Ok(())
}

fn wait_file(path: &Path) -> bool {
    for _ in 0..600 {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// One agent process: the real agent; the client writes `ready` once its catalog (from
/// gossip) shows both destinations passing.
fn run_agent(config: &Path, role: &str, ready: &Path) -> anyhow::Result<()> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a crypto provider is already installed"))?;
    let cfg = AgentConfig::from_str(
        &std::fs::read_to_string(config)?,
        &config.display().to_string(),
    )?;
    rhizome_agent::logging::init(cfg.log_level.as_deref(), false)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let agent = Agent::start(cfg).await?;
        if role == "client" {
            let mut catalog = agent.handles().catalog.clone();
            let ready = ready.to_path_buf();
            tokio::spawn(async move {
                let both = |c: &Arc<Catalog>| {
                    ["bench-echo", "bench-iperf"]
                        .iter()
                        .all(|s| c.healthy("default", s).next().is_some())
                };
                if catalog.wait_for(both).await.is_ok() {
                    let _ = std::fs::write(&ready, b"ready\n");
                }
            });
        }
        agent.run_until(shutdown_signal()).await
    })
}
