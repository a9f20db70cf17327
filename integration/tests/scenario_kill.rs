//! Issue 7, scenario 2: `kill -9` one host's agent (its service process keeps running):
//! every other agent declares it failed and takes its instances out of rotation, while the
//! same service's instance on another host stays passing, and traffic to that service from
//! a third host keeps flowing through its upstream listener the whole time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    CONVERGE, ECHO_TIMEOUT, FAST_GOSSIP, client, encrypt, gossip_key, passing_nodes, service,
    status_of, upstream, wait_all_alive, wait_reach,
};
use rhizome_integration::{AgentSpec, net_or_skip, wait_until};
use std::os::unix::process::ExitStatusExt;

const DB_PORT: u16 = 5432;
const DB_UPSTREAM: u16 = 9191;

#[test]
fn a_killed_agent_is_declared_failed_and_its_instances_leave_rotation() {
    let net = net_or_skip!(4);
    let key = gossip_key(net.host(0));
    let seed = net.host(0).socket(7946);
    let _db2 = net.host(2).start_echo(DB_PORT).unwrap();
    let _db3 = net.host(3).start_echo(DB_PORT).unwrap();
    let mut agents = net
        .start_agents(|h| {
            let spec = AgentSpec::new()
                .hcl(&encrypt(&key))
                .hcl(FAST_GOSSIP)
                .hcl("default_intention_policy = \"allow\"");
            match h.index() {
                0 => spec.hcl(&client("web", &[("db", DB_UPSTREAM)])),
                1 => spec.retry_join([seed]),
                _ => spec.hcl(&service(h, "db", DB_PORT)).retry_join([seed]),
            }
        })
        .unwrap();
    wait_all_alive(
        &agents.iter().collect::<Vec<_>>(),
        &["h0", "h1", "h2", "h3"],
    );
    wait_until("db passing on h2 and h3 everywhere", CONVERGE, || {
        Ok(agents
            .iter()
            .all(|a| passing_nodes(a, "db") == ["h2", "h3"])
            .then_some(()))
    })
    .unwrap();

    let web = net.host(0);
    wait_reach(web, upstream(DB_UPSTREAM));

    let status = agents[3].kill().unwrap();
    assert_eq!(status.signal(), Some(9));
    let (survivors, _) = agents.split_at(3);
    // Connections from h0's web to db go on while the mesh notices (failover to h2 before
    // any byte is sent), and after.
    let mut echoes = 0;
    wait_until("h3 failed on every survivor", CONVERGE, || {
        web.echo(upstream(DB_UPSTREAM), 32 * 1024, ECHO_TIMEOUT)?;
        echoes += 1;
        Ok(survivors
            .iter()
            .all(|a| status_of(a, "h3").as_deref() == Some("failed"))
            .then_some(()))
    })
    .unwrap();
    for _ in 0..10 {
        web.echo(upstream(DB_UPSTREAM), 32 * 1024, ECHO_TIMEOUT)
            .unwrap();
    }
    eprintln!(
        "{} echoes through db while h3 was being declared failed",
        echoes
    );
    for a in survivors {
        assert_eq!(
            passing_nodes(a, "db"),
            ["h2"],
            "{}: h3's instance is out of rotation, h2's stays",
            a.node_name()
        );
        let rows = common::instances(a, "db");
        assert!(
            rows.contains(&("h3".to_string(), "node_down".to_string())),
            "{}: {rows:?}",
            a.node_name()
        );
        assert_eq!(status_of(a, "h2").as_deref(), Some("alive"));
    }
    // The survivors stay a healthy mesh among themselves.
    for a in survivors {
        for node in ["h0", "h1", "h2"] {
            assert_eq!(status_of(a, node).as_deref(), Some("alive"));
        }
    }
}
