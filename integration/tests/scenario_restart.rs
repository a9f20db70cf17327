//! Issue 7, scenario 4: an agent stopped and started again comes back with its identity and
//! its replicated state from sled before gossip reconverges (its gossip port is blocked while
//! it starts, so nothing can reach it but its own store), and its peers accept the new
//! incarnation once gossip flows again. Its own clients' connections to its service follow
//! the rules from the store (web allowed, batch refused) while gossip is still cut.
//!
//! The stop is a SIGTERM (the agent leaves and flushes its store). After a `kill -9` sled
//! keeps what it flushed, which is everything but the last ~500 ms of writes (its periodic
//! flush); anti-entropy repairs those once gossip is back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    CONVERGE, ECHO_TIMEOUT, FAST_GOSSIP, allows, apply_intention, block_port, client, encrypt,
    gossip_key, instances, members, metric_sum, operator, passing_nodes, service, status_of,
    unblock, upstream, wait_all_alive, wait_decision, wait_reach,
};
use rhizome_integration::{AgentSpec, net_or_skip, tool_or_skip, wait_until};
use std::time::Duration;

const DB_PORT: u16 = 5432;
const API_PORT: u16 = 8080;
const WEB_TO_API: u16 = 9192;
const BATCH_TO_API: u16 = 9193;
/// How long a probe that should be refused may take.
const PROBE: Duration = Duration::from_secs(5);

#[test]
fn a_restarted_agent_comes_back_from_its_store_and_peers_accept_it() {
    let net = net_or_skip!(3);
    // Cutting h2 off from gossip (`block_port`) needs nftables.
    tool_or_skip!("nft", "nftables");
    let key = gossip_key(net.host(0));
    let seed = net.host(0).socket(7946);
    let _db = net.host(1).start_echo(DB_PORT).unwrap();
    let _api = net.host(2).start_echo(API_PORT).unwrap();
    let mut agents = net
        .start_agents(|h| {
            let mut spec = AgentSpec::new().hcl(&encrypt(&key)).hcl(FAST_GOSSIP);
            match h.index() {
                0 => return spec,
                1 => spec = spec.hcl(&service(h, "db", DB_PORT)),
                _ => {
                    spec = spec
                        .hcl(&service(h, "api", API_PORT))
                        .hcl(&client("web", &[("api", WEB_TO_API)]))
                        .hcl(&client("batch", &[("api", BATCH_TO_API)]))
                }
            }
            spec.retry_join([seed])
        })
        .unwrap();
    let nodes = ["h0", "h1", "h2"];
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), &nodes);
    wait_until("db passing in h2's catalog", CONVERGE, || {
        Ok((passing_nodes(&agents[2], "db") == ["h1"]).then_some(()))
    })
    .unwrap();

    // The rule h2 enforces for its api: web only (default deny for everyone else).
    let op = operator(&net, "alice");
    apply_intention(&net, &agents[0], &op, "api", &["web"]);
    wait_decision(&agents.iter().collect::<Vec<_>>(), "web", "api", true);
    let h2 = net.host(2);
    wait_reach(h2, upstream(WEB_TO_API));
    assert!(!h2.can_reach(upstream(BATCH_TO_API), PROBE).unwrap());

    let before = agents[2].info().unwrap();
    let status_before = agents[2]
        .cli(&["ca", "status", "--format", "json"])
        .unwrap();
    let serial_of = |status: &str, kind: &str| -> serde_json::Value {
        let rows: serde_json::Value = serde_json::from_str(status).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {rows:#}"))["serial"]
            .clone()
    };
    let old_incarnation = members(&agents[0]).unwrap()["h2"].incarnation;

    // A stop, then a start with gossip cut off: only the store can tell it anything.
    let exit = agents[2].terminate(Duration::from_secs(30)).unwrap();
    assert!(exit.success(), "{exit}");
    wait_until("peers see h2 leave", CONVERGE, || {
        Ok(agents[..2]
            .iter()
            .all(|a| status_of(a, "h2").as_deref() == Some("left"))
            .then_some(()))
    })
    .unwrap();
    block_port(net.host(2), 7946);
    agents[2].start().unwrap();
    let after = agents[2].info().unwrap();
    assert_eq!(after["node_name"], "h2");
    assert_eq!(after["boot_count"], 2);
    assert_eq!(after["addresses"], before["addresses"]);
    let status_after = agents[2]
        .cli(&["ca", "status", "--format", "json"])
        .unwrap();
    assert_eq!(
        serial_of(&status_after, "intermediate"),
        serial_of(&status_before, "intermediate"),
        "same identity"
    );
    assert!(status_after.contains("spiffe://mesh.test/agent/h2"));
    // The catalog it replicated before the crash: h1's db and its own api.
    assert_eq!(
        instances(&agents[2], "db")
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        ["h1"],
        "db instance from the store"
    );
    assert_eq!(
        instances(&agents[2], "api")
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        ["h2"]
    );
    // The last known rules, from the store: web may reach api, others may not.
    assert!(allows(&agents[2], "web", "api").unwrap());
    assert!(!allows(&agents[2], "batch", "api").unwrap());
    // ...and they are enforced on connections (h2's own clients, through its data plane).
    h2.echo(upstream(WEB_TO_API), 64 * 1024, ECHO_TIMEOUT)
        .unwrap();
    assert!(
        !h2.can_reach(upstream(BATCH_TO_API), PROBE).unwrap(),
        "batch reached api after the restart"
    );
    let denied = metric_sum(
        &agents[2],
        "rhizome_proxy_connections_denied_total",
        &["direction=\"inbound\"", "default/batch", "default/api"],
    );
    assert!(denied >= 1.0, "batch was not refused by an intention");
    // Gossip has not reconverged: no peer has seen the new incarnation.
    for peer in &agents[..2] {
        let m = members(peer).unwrap();
        assert!(
            m["h2"].incarnation == old_incarnation,
            "{} saw h2 restart through a blocked port: {m:?}",
            peer.node_name()
        );
    }

    // Gossip back: every peer takes the new incarnation as alive, and h2 sees the mesh.
    unblock(net.host(2));
    wait_until("peers accept h2's new incarnation", CONVERGE, || {
        for peer in &agents[..2] {
            let m = members(peer)?;
            match m.get("h2") {
                Some(x) if x.status == "alive" && x.incarnation > old_incarnation => {}
                _ => return Ok(None),
            }
        }
        Ok(Some(()))
    })
    .unwrap();
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), &nodes);
    wait_until("db passing again in h2's catalog", CONVERGE, || {
        Ok((passing_nodes(&agents[2], "db") == ["h1"]).then_some(()))
    })
    .unwrap();
    assert_eq!(status_of(&agents[0], "h2").as_deref(), Some("alive"));
    assert_eq!(passing_nodes(&agents[0], "api"), ["h2"]);
}
