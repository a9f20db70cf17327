//! What the issue-7 scenarios share: gossip timings, keys and operator credentials, member
//! and catalog queries through each agent's API, and the log lines that record verdicts.
//! Each scenario file uses part of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use rhizome_integration::{AgentProc, Host, Net, wait_until};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Gossip tunables of the scenarios that do not measure failure detection: Serf's LAN
/// profile scaled down 2.5x in time (probe 400 ms / timeout 200 ms / gossip 80 ms instead of
/// 1 s / 500 ms / 200 ms; suspicion multiplier 4 as in production), and push/pull every 2 s
/// so a node back from a partition catches up quickly.
pub const FAST_GOSSIP: &str = r#"
gossip {
  probe_interval = "400ms"
  probe_timeout = "200ms"
  gossip_interval = "80ms"
  suspicion_mult = 4
  push_pull_interval = "2s"
}
"#;

/// Bound for convergence waits (join, failure detection, healing) on a loaded 2-core box.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// The log message of a failure verdict (WARN `member failed`, with `peer.node=`).
pub const FAILED_LINE: &str = "member failed";

/// A fresh gossip key (`rhizome keyring generate`, its last line).
pub fn gossip_key(host: &Host) -> String {
    let out = host
        .run(&host.bins().rhizome, ["keyring", "generate"])
        .unwrap();
    out.lines().last().unwrap().trim().to_string()
}

/// `encrypt = "<key>"`.
pub fn encrypt(key: &str) -> String {
    format!("encrypt = \"{key}\"")
}

/// Operator credentials (`rhizome ca issue-operator`) from the network's root, in
/// `<net dir>/operator-<name>`: they sign keyring changes and intentions.
pub fn operator(net: &Net, name: &str) -> PathBuf {
    let out = net.dir().join(format!("operator-{name}"));
    let ca = net.ca_dir().unwrap();
    net.host(0)
        .run(
            &net.bins().rhizome,
            [
                "ca".as_ref(),
                "issue-operator".as_ref(),
                "--ca-dir".as_ref(),
                ca.as_os_str(),
                "--name".as_ref(),
                name.as_ref(),
                "--out".as_ref(),
                out.as_os_str(),
            ],
        )
        .unwrap();
    out
}

/// One row of `GET /v1/members`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// `alive`, `suspect`, `failed` or `left`.
    pub status: String,
    /// The member's process generation.
    pub incarnation: u64,
}

/// The member table `agent` shows, by node name.
pub fn members(agent: &AgentProc) -> rhizome_integration::Result<BTreeMap<String, Member>> {
    let v = agent.api_get("/v1/members")?;
    let rows = v.as_array().cloned().unwrap_or_default();
    Ok(rows
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap_or_default().to_string(),
                Member {
                    status: r["status"].as_str().unwrap_or_default().to_string(),
                    incarnation: r["incarnation"].as_u64().unwrap_or(0),
                },
            )
        })
        .collect())
}

/// Whether `agent` shows exactly `nodes` as members, all alive.
pub fn sees_alive(agent: &AgentProc, nodes: &[&str]) -> rhizome_integration::Result<bool> {
    let m = members(agent)?;
    Ok(m.len() == nodes.len()
        && nodes
            .iter()
            .all(|n| m.get(*n).is_some_and(|x| x.status == "alive")))
}

/// Waits until every agent of `agents` shows exactly `nodes`, all alive.
pub fn wait_all_alive(agents: &[&AgentProc], nodes: &[&str]) {
    wait_until(&format!("{nodes:?} alive on every agent"), CONVERGE, || {
        for a in agents {
            if !sees_alive(a, nodes)? {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .unwrap();
}

/// The status `observer` shows for `node`, if it knows it.
pub fn status_of(observer: &AgentProc, node: &str) -> Option<String> {
    members(observer).ok()?.get(node).map(|m| m.status.clone())
}

/// Instances of `service` (namespace `default`) in `agent`'s catalog: `(node, health)`.
pub fn instances(agent: &AgentProc, service: &str) -> Vec<(String, String)> {
    let v = agent
        .api_get(&format!("/v1/catalog/service/{service}"))
        .unwrap();
    let mut rows: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["node"].as_str().unwrap().to_string(),
                i["health"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// The nodes whose instance of `service` is `passing` in `agent`'s catalog.
pub fn passing_nodes(agent: &AgentProc, service: &str) -> Vec<String> {
    instances(agent, service)
        .into_iter()
        .filter(|(_, h)| h == "passing")
        .map(|(n, _)| n)
        .collect()
}

/// Failure verdicts (`member failed` lines) in the agent's log after byte `from`, with the
/// lines themselves.
pub fn failed_verdicts(agent: &AgentProc, from: usize) -> Vec<String> {
    let log = agent.log();
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(FAILED_LINE))
        .map(str::to_string)
        .collect()
}

/// A service block: `name` on the host's address and `port`, with a TCP check every second.
pub fn service(host: &Host, name: &str, port: u16) -> String {
    format!(
        r#"
service {{
  name = "{name}"
  port = {port}
  address = "{addr}"
  check {{
    tcp = "{addr}:{port}"
    interval = "1s"
    timeout = "1s"
  }}
}}
"#,
        addr = host.addr()
    )
}

/// nftables table of [`block_port`] (in the host's namespace only).
const BLOCK_TABLE: &str = "rhizome_scenario_block";

/// Drops every packet (UDP and TCP, both ways) to `port` on `host`: with the gossip port,
/// the agent is cut off from gossip while its data plane still works. Needs `nft`: call
/// `tool_or_skip!("nft", "nftables")` first.
pub fn block_port(host: &Host, port: u16) {
    let script = format!(
        "table inet {BLOCK_TABLE} {{\n\
         chain input {{ type filter hook input priority 0; policy accept;\n\
           udp dport {port} drop\n  tcp dport {port} drop\n  }}\n\
         chain output {{ type filter hook output priority 0; policy accept;\n\
           udp dport {port} drop\n  tcp dport {port} drop\n  }}\n\
         }}\n"
    );
    let file = host.dir().join("block.nft");
    std::fs::write(&file, script).unwrap();
    host.run("nft", ["-f".as_ref(), file.as_os_str()]).unwrap();
}

/// Lifts [`block_port`].
pub fn unblock(host: &Host) {
    host.run("nft", ["delete", "table", "inet", BLOCK_TABLE])
        .unwrap();
}

/// Writes an intention entry for `dest` allowing `allowed` sources and denying the rest
/// (`<net dir>/intentions/<file>.hcl`), and applies it through `agent`, signed by `operator`.
pub fn apply_intention(
    net: &Net,
    agent: &AgentProc,
    operator: &std::path::Path,
    dest: &str,
    allowed: &[&str],
) {
    let dir = net.dir().join("intentions");
    std::fs::create_dir_all(&dir).unwrap();
    let mut sources: Vec<String> = allowed
        .iter()
        .map(|s| format!("  {{ Name = \"{s}\", Action = \"allow\" }},"))
        .collect();
    sources.push("  { Name = \"*\", Action = \"deny\" },".into());
    let text = format!(
        "Kind = \"service-intentions\"\nName = \"{dest}\"\nSources = [\n{}\n]\n",
        sources.join("\n")
    );
    let file = dir.join(format!("{dest}-{}.hcl", allowed.join("-")));
    std::fs::write(&file, text).unwrap();
    agent
        .cli(&[
            "intention",
            "apply",
            file.to_str().unwrap(),
            "--operator-dir",
            operator.to_str().unwrap(),
        ])
        .unwrap();
}

/// Whether `agent`'s rules allow `src` to connect to `dst` (`GET /v1/intentions/check`).
pub fn allows(agent: &AgentProc, src: &str, dst: &str) -> rhizome_integration::Result<bool> {
    let v = agent.api_get(&format!("/v1/intentions/check?src={src}&dst={dst}"))?;
    Ok(v["allowed"].as_bool().unwrap_or(false))
}

/// Waits until each agent of `agents` decides `src -> dst` as `allowed`.
pub fn wait_decision(agents: &[&AgentProc], src: &str, dst: &str, allowed: bool) {
    wait_until(
        &format!("{src} -> {dst} allowed={allowed} on every agent"),
        CONVERGE,
        || {
            for a in agents {
                if allows(a, src, dst)? != allowed {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .unwrap();
}

/// The intention entries `agent` holds (`GET /v1/intentions`, `entries`).
pub fn intention_entries(agent: &AgentProc) -> serde_json::Value {
    agent.api_get("/v1/intentions").unwrap()["entries"].clone()
}

/// A client-only service `name` (no listener, no check) with upstream listeners on
/// `127.0.0.1:<port>` for each `(destination, port)`: connections there come from `name`.
pub fn client(name: &str, upstreams: &[(&str, u16)]) -> String {
    let ups: String = upstreams
        .iter()
        .map(|(dest, port)| {
            format!(
                "  upstreams {{\n    destination_name = \"{dest}\"\n    local_bind_port = {port}\n  }}\n"
            )
        })
        .collect();
    format!("service {{\n  name = \"{name}\"\n  id = \"{name}-client\"\n  port = 1\n{ups}}}\n")
}

/// The upstream listener on `port` inside a host.
pub fn upstream(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// How long one proxied echo may take (connect failover included).
pub const ECHO_TIMEOUT: Duration = Duration::from_secs(20);

/// Waits until `host` reaches `target` (an upstream listener): routes and rules in place.
pub fn wait_reach(host: &Host, target: std::net::SocketAddr) {
    wait_until(
        &format!("{} to reach {target}", host.name()),
        CONVERGE,
        || {
            Ok(host
                .can_reach(target, Duration::from_secs(5))?
                .then_some(()))
        },
    )
    .unwrap();
}

/// Sum of the samples of metric `name` on `agent` whose labels contain every `labels` text.
pub fn metric_sum(agent: &AgentProc, name: &str, labels: &[&str]) -> f64 {
    let text = agent
        .host()
        .http_get(agent.http_addr(), "/metrics")
        .unwrap()
        .body;
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
