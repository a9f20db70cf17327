//! Issue 7, scenario 3: partition two hosts from three. Each side keeps its members and the
//! rules it has; an intention applied on one side during the partition reaches the other
//! after healing, and every agent ends with the same intentions and catalog.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    CONVERGE, FAST_GOSSIP, allows, apply_intention, encrypt, gossip_key, instances,
    intention_entries, operator, service, status_of, wait_all_alive, wait_decision,
};
use rhizome_integration::{AgentProc, AgentSpec, net_or_skip, wait_until};

const DB_PORT: u16 = 5432;
const API_PORT: u16 = 8080;

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
                0 => spec,
                1 => spec.hcl(&service(h, "db", DB_PORT)).retry_join([seed]),
                3 => spec.hcl(&service(h, "api", API_PORT)).retry_join([seed]),
                _ => spec.retry_join([seed]),
            }
        })
        .unwrap();
    let all: Vec<&AgentProc> = agents.iter().collect();
    let nodes = ["h0", "h1", "h2", "h3", "h4"];
    wait_all_alive(&all, &nodes);
    apply_intention(&net, &agents[0], &op, "db", &["web"]);
    wait_decision(&all, "web", "db", true);

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
            // The rules each side had stay in force.
            assert!(allows(a, "web", "db").unwrap(), "{}", a.node_name());
            assert!(!allows(a, "batch", "db").unwrap(), "{}", a.node_name());
        }
    }

    // A new intention on the right side spreads there, not across the partition.
    apply_intention(&net, &agents[3], &op, "api", &["web"]);
    wait_decision(right, "web", "api", true);
    for a in left {
        assert!(
            !allows(a, "web", "api").unwrap(),
            "{} got a rule across the partition",
            a.node_name()
        );
    }

    // Healed: the left side learns the rule, and everyone ends with the same state.
    net.heal_partition().unwrap();
    wait_all_alive(&all, &nodes);
    wait_decision(left, "web", "api", true);
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
