//! Issue 7, scenario 1: five hosts join from one seed; every agent sees five members; the
//! service of every host is reachable from every other host through its upstream listeners
//! (QUIC + mTLS between the agents), every byte back exactly as sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    CONVERGE, ECHO_TIMEOUT, FAST_GOSSIP, encrypt, gossip_key, metric_sum, passing_nodes, service,
    upstream, wait_all_alive, wait_reach,
};
use rhizome_integration::{AgentProc, AgentSpec, net_or_skip, wait_until};

const SVC_PORT: u16 = 7000;
/// Host `i` reaches `svc-j` on `127.0.0.1:<UPSTREAM_BASE + j>`.
const UPSTREAM_BASE: u16 = 9100;
const HOSTS: usize = 5;

/// `svc-<i>` on host `i`, with an upstream to every other host's service.
fn spec(host: &rhizome_integration::Host, key: &str) -> AgentSpec {
    let i = host.index();
    let mut svc = service(host, &format!("svc-{i}"), SVC_PORT);
    let ups: String = (0..HOSTS)
        .filter(|j| *j != i)
        .map(|j| {
            format!(
                "  upstreams {{\n    destination_name = \"svc-{j}\"\n    local_bind_port = {}\n  }}\n",
                UPSTREAM_BASE + j as u16
            )
        })
        .collect();
    // Upstreams go inside the service block, before its closing brace.
    let end = svc.rfind('}').unwrap();
    svc.insert_str(end, &ups);
    let spec = AgentSpec::new()
        .hcl(&encrypt(key))
        .hcl(FAST_GOSSIP)
        .hcl("default_intention_policy = \"allow\"")
        .hcl(&svc);
    if i == 0 {
        spec
    } else {
        spec.retry_join([host_seed()])
    }
}

fn host_seed() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([198, 18, 0, 1], 7946))
}

#[test]
fn five_hosts_join_from_one_seed_and_reach_every_service() {
    let net = net_or_skip!(HOSTS);
    assert_eq!(net.host(0).socket(7946), host_seed());
    let key = gossip_key(net.host(0));
    let _services: Vec<_> = net
        .hosts()
        .iter()
        .map(|h| h.start_echo(SVC_PORT).unwrap())
        .collect();
    let agents = net.start_agents(|h| spec(h, &key)).unwrap();
    let all: Vec<&AgentProc> = agents.iter().collect();
    let names: Vec<String> = (0..HOSTS).map(|i| format!("h{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    wait_all_alive(&all, &names);
    for a in &agents {
        let members = a.cli(&["members"]).unwrap();
        for n in &names {
            assert!(members.contains(n), "{n} missing from:\n{members}");
        }
    }
    wait_until("every service passing in every catalog", CONVERGE, || {
        Ok(agents
            .iter()
            .all(|a| (0..HOSTS).all(|j| passing_nodes(a, &format!("svc-{j}")) == [format!("h{j}")]))
            .then_some(()))
    })
    .unwrap();

    // Every ordered pair of hosts, through the upstream listener: 256 KiB, exact.
    for from in net.hosts() {
        for j in (0..HOSTS).filter(|j| *j != from.index()) {
            let target = upstream(UPSTREAM_BASE + j as u16);
            wait_reach(from, target);
            from.echo(target, 256 * 1024, ECHO_TIMEOUT)
                .unwrap_or_else(|e| panic!("{} -> svc-{j}: {e}", from.name()));
        }
    }
    // The bytes really crossed the mesh: every agent counted inbound proxied connections.
    for a in &agents {
        let inbound = metric_sum(
            a,
            "rhizome_proxy_connections_opened_total",
            &["direction=\"inbound\""],
        );
        assert!(
            inbound >= (HOSTS - 1) as f64,
            "{}: {inbound} inbound connections",
            a.node_name()
        );
    }
}
