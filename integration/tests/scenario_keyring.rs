//! Issue 7, scenario 6: gossip key rotation (install, use, remove; operator-signed, each
//! step sent to a different agent) across every host while traffic flows between two of
//! them through an upstream listener, with no member lost and no connection failed;
//! afterwards a host that knows only the new key joins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    CONVERGE, ECHO_TIMEOUT, FAST_GOSSIP, client, encrypt, failed_verdicts, gossip_key, operator,
    service, upstream, wait_all_alive, wait_reach,
};
use rhizome_integration::{AgentProc, AgentSpec, net_or_skip, wait_until};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const DB_PORT: u16 = 5432;
const DB_UPSTREAM: u16 = 9191;

/// `(key id, primary)` of every key installed on `agent`.
fn keyring(agent: &AgentProc) -> rhizome_integration::Result<BTreeSet<(String, bool)>> {
    let v = agent.api_get("/v1/keyring")?;
    Ok(v["keys"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap_or_default().to_string(),
                k["primary"].as_bool().unwrap_or(false),
            )
        })
        .collect())
}

/// Waits until every agent holds exactly `want`.
fn wait_keyring(agents: &[&AgentProc], want: &BTreeSet<(String, bool)>, what: &str) {
    wait_until(what, CONVERGE, || {
        for a in agents {
            if &keyring(a)? != want {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .unwrap();
}

#[test]
fn gossip_key_rotation_reaches_every_host_without_losing_a_member() {
    let net = net_or_skip!(5);
    let k1 = gossip_key(net.host(0));
    let k2 = gossip_key(net.host(0));
    let op = operator(&net, "alice");
    let op_arg = op.to_str().unwrap();
    let seed = net.host(0).socket(7946);
    let spec = |index: usize, key: &str| {
        let spec = AgentSpec::new()
            .hcl(&encrypt(key))
            .hcl(FAST_GOSSIP)
            .hcl("default_intention_policy = \"allow\"");
        match index {
            0 => spec.hcl(&client("web", &[("db", DB_UPSTREAM)])),
            3 => spec
                .hcl(&service(net.host(3), "db", DB_PORT))
                .retry_join([seed]),
            _ => spec.retry_join([seed]),
        }
    };
    let mut agents = Vec::new();
    for i in 0..4 {
        let mut a = net.prepare_agent(i, &spec(i, &k1)).unwrap();
        a.spawn().unwrap();
        agents.push(a);
    }
    for a in &agents {
        a.wait_ready().unwrap();
    }
    let all: Vec<&AgentProc> = agents.iter().collect();
    let four = ["h0", "h1", "h2", "h3"];
    wait_all_alive(&all, &four);
    let _db = net.host(3).start_echo(DB_PORT).unwrap();
    let web = net.host(0).clone();
    wait_reach(&web, upstream(DB_UPSTREAM));
    let marks: Vec<usize> = agents.iter().map(|a| a.log().len()).collect();
    // Traffic from h0's web to h3's db for the whole rotation; every echo must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut done = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = web.echo(upstream(DB_UPSTREAM), 64 * 1024, ECHO_TIMEOUT) {
                    return Err(format!("echo {done} failed: {e}"));
                }
                done += 1;
            }
            Ok(done)
        })
    };
    let first = keyring(&agents[0]).unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    let (id1, primary) = first.iter().next().unwrap().clone();
    assert!(primary);

    // Unsigned changes are refused.
    let unsigned = agents[1].cli(&["keyring", "install", &k2]).unwrap_err();
    assert!(unsigned.to_string().contains("operator"), "{unsigned}");

    // Install k2 through h1: every agent accepts it, k1 still seals.
    agents[1]
        .cli(&["keyring", "install", &k2, "--operator-dir", op_arg])
        .unwrap();
    let installed = keyring(&agents[1]).unwrap();
    let id2 = installed
        .iter()
        .map(|(id, _)| id.clone())
        .find(|id| *id != id1)
        .unwrap_or_else(|| panic!("k2 missing on h1: {installed:?}"));
    wait_keyring(
        &all,
        &[(id1.clone(), true), (id2.clone(), false)].into(),
        "k2 installed everywhere",
    );
    wait_all_alive(&all, &four);

    // Use k2 through h2: every agent seals with it.
    agents[2]
        .cli(&["keyring", "use", &k2, "--operator-dir", op_arg])
        .unwrap();
    wait_keyring(
        &all,
        &[(id1.clone(), false), (id2.clone(), true)].into(),
        "k2 primary everywhere",
    );
    wait_all_alive(&all, &four);

    // The primary cannot be removed; k1 can, through h3.
    let refused = agents[3]
        .cli(&["keyring", "remove", &k2, "--operator-dir", op_arg])
        .unwrap_err();
    assert!(refused.to_string().contains("primary"), "{refused}");
    agents[3]
        .cli(&["keyring", "remove", &k1, "--operator-dir", op_arg])
        .unwrap();
    wait_keyring(&all, &[(id2.clone(), true)].into(), "k1 removed everywhere");
    wait_all_alive(&all, &four);

    stop.store(true, Ordering::Relaxed);
    let echoes = traffic.join().unwrap().unwrap();
    assert!(echoes > 0, "no traffic during the rotation");
    eprintln!("{echoes} echoes of 64 KiB during the rotation");

    // Nobody was declared failed at any point of the rotation.
    for (a, mark) in agents.iter().zip(&marks) {
        let verdicts = failed_verdicts(a, *mark);
        assert!(
            verdicts.is_empty(),
            "{} declared a member failed during rotation:\n{}",
            a.node_name(),
            verdicts.join("\n")
        );
    }

    // Gossip runs on k2 alone now: a host configured with only k2 joins everyone.
    let late = net.start_agent(4, &spec(4, &k2)).unwrap();
    agents.push(late);
    let five = ["h0", "h1", "h2", "h3", "h4"];
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), &five);
}
