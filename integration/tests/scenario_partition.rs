//! Issue 7, scenario 3: partition two hosts from three. Each side keeps its members and
//! serves traffic with the rules it has; an intention applied on each side during the
//! partition reaches the other after healing and is enforced there, and every agent ends
//! with the same intentions and catalog.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    CONVERGE, ECHO_TIMEOUT, FAST_GOSSIP, allows, apply_intention, client, encrypt, gossip_key,
    instances, intention_entries, operator, service, status_of, upstream, wait_all_alive,
    wait_decision, wait_reach,
};
use rhizome_integration::{AgentProc, AgentSpec, net_or_skip, wait_until};

const DB_PORT: u16 = 5432;
const API_PORT: u16 = 8080;
const TO_DB: u16 = 9191;
const TO_API: u16 = 9192;
/// How long a probe that should be refused may take.
const PROBE: std::time::Duration = std::time::Duration::from_secs(5);

#[test]
fn both_sides_of_a_partition_keep_serving_and_converge_after_healing() {
    let net = net_or_skip!(5);
    let key = gossip_key(net.host(0));
    let op = operator(&net, "alice");
    let seed = net.host(0).socket(7946);
    let _db = net.host(1).start_echo(DB_PORT).unwrap();
    let _api = net.host(3).start_echo(API_PORT).unwrap();
    let agents = net
        .start_agents(|h| {
            let spec = AgentSpec::new().hcl(&encrypt(&key)).hcl(FAST_GOSSIP);
            match h.index() {
                0 => spec.hcl(&client("web", &[("db", TO_DB)])),
                1 => spec.hcl(&service(h, "db", DB_PORT)).retry_join([seed]),
                2 => spec
                    .hcl(&client("batch", &[("db", TO_DB), ("api", TO_API)]))
                    .retry_join([seed]),
                3 => spec.hcl(&service(h, "api", API_PORT)).retry_join([seed]),
                _ => spec
                    .hcl(&client("web", &[("api", TO_API)]))
                    .retry_join([seed]),
            }
        })
        .unwrap();
    let all: Vec<&AgentProc> = agents.iter().collect();
    let nodes = ["h0", "h1", "h2", "h3", "h4"];
    wait_all_alive(&all, &nodes);
    // web may reach db and api; batch may not (default deny).
    apply_intention(&net, &agents[0], &op, "db", &["web"]);
    apply_intention(&net, &agents[0], &op, "api", &["web"]);
    wait_decision(&all, "web", "db", true);
    wait_decision(&all, "web", "api", true);
    let (h0, h2, h4) = (net.host(0), net.host(2), net.host(4));
    wait_reach(h0, upstream(TO_DB));
    wait_reach(h4, upstream(TO_API));
    assert!(!h2.can_reach(upstream(TO_DB), PROBE).unwrap());
    assert!(!h2.can_reach(upstream(TO_API), PROBE).unwrap());

    // Split {h0, h1} | {h2, h3, h4}: each side sees the other fail and keeps itself.
    net.partition(&[&[0, 1], &[2, 3, 4]]).unwrap();
    let (left, right) = all.split_at(2);
    wait_until("each side sees the other side failed", CONVERGE, || {
        for (side, others) in [(left, &nodes[2..]), (right, &nodes[..2])] {
            for a in side {
                for n in others {
                    if status_of(a, n).as_deref() != Some("failed") {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(Some(()))
    })
    .unwrap();
    for (side, own) in [(left, &nodes[..2]), (right, &nodes[2..])] {
        for a in side {
            for n in own {
                assert_eq!(
                    status_of(a, n).as_deref(),
                    Some("alive"),
                    "{n} on {}",
                    a.node_name()
                );
            }
        }
    }
    // Each side keeps serving with the rules it has.
    h0.echo(upstream(TO_DB), 64 * 1024, ECHO_TIMEOUT).unwrap();
    h4.echo(upstream(TO_API), 64 * 1024, ECHO_TIMEOUT).unwrap();
    assert!(!h2.can_reach(upstream(TO_API), PROBE).unwrap());

    // During the partition each side lets batch reach the other side's service.
    apply_intention(&net, &agents[3], &op, "db", &["web", "batch"]);
    apply_intention(&net, &agents[0], &op, "api", &["web", "batch"]);
    wait_decision(right, "batch", "db", true);
    wait_decision(left, "batch", "api", true);
    // Neither crossed: db's own agent (h1) and api's (h3) still refuse batch.
    assert!(!allows(&agents[1], "batch", "db").unwrap());
    assert!(!allows(&agents[3], "batch", "api").unwrap());
    assert!(!h2.can_reach(upstream(TO_API), PROBE).unwrap());

    // Healed: each rule reaches the other side and is enforced where it matters.
    net.heal_partition().unwrap();
    wait_all_alive(&all, &nodes);
    wait_decision(&all, "batch", "db", true);
    wait_decision(&all, "batch", "api", true);
    wait_reach(h2, upstream(TO_DB));
    wait_reach(h2, upstream(TO_API));
    h2.echo(upstream(TO_DB), 64 * 1024, ECHO_TIMEOUT).unwrap();
    h2.echo(upstream(TO_API), 64 * 1024, ECHO_TIMEOUT).unwrap();
    let reference = intention_entries(&agents[0]);
    assert_eq!(reference.as_array().unwrap().len(), 2, "{reference:#}");
    wait_until("the same intentions on every agent", CONVERGE, || {
        Ok(all
            .iter()
            .all(|a| intention_entries(a) == reference)
            .then_some(()))
    })
    .unwrap();
    wait_until("the same catalog on every agent", CONVERGE, || {
        Ok(all
            .iter()
            .all(|a| {
                instances(a, "db") == [("h1".to_string(), "passing".to_string())]
                    && instances(a, "api") == [("h3".to_string(), "passing".to_string())]
            })
            .then_some(()))
    })
    .unwrap();
}
