//! Issue 7, scenario 5: a new host joins with a join token through a signer host and gets
//! its certificates; a host the token does not cover is refused; the joined host keeps its
//! intermediate across a restart with no signer around.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FAST_GOSSIP, encrypt, gossip_key, wait_all_alive};
use rhizome_integration::{AgentProc, AgentSpec, net_or_skip};
use std::time::Duration;

const TD: &str = "mesh.test";

/// `rhizome ca status --format json` of an agent, as rows.
fn ca_status(agent: &AgentProc) -> Vec<serde_json::Value> {
    let out = agent.cli(&["ca", "status", "--format", "json"]).unwrap();
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The one row of `kind`, panicking with every row if there is not exactly one.
fn one_of<'a>(rows: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    let found: Vec<&serde_json::Value> = rows.iter().filter(|r| r["kind"] == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} certificate expected in {rows:#?}"
    );
    found[0]
}

#[test]
fn a_new_host_joins_with_a_token_through_a_signer() {
    let net = net_or_skip!(3);
    let key = gossip_key(net.host(0));
    let ca_dir = net.ca_dir().unwrap();
    let token_out = net
        .host(0)
        .run(
            &net.bins().rhizome,
            [
                "ca".as_ref(),
                "token".as_ref(),
                "create".as_ref(),
                "--ca-dir".as_ref(),
                ca_dir.as_os_str(),
                "--node-pattern".as_ref(),
                "web-*".as_ref(),
                "--ttl".as_ref(),
                "30m".as_ref(),
                "--services".as_ref(),
                "web".as_ref(),
            ],
        )
        .unwrap();
    let token = token_out.lines().last().unwrap().trim().to_string();

    // h0: a signer holding the root; no credentials from the harness.
    let signer_spec = AgentSpec::new()
        .node_name("signer-0")
        .without_mesh_ca()
        .hcl(&encrypt(&key))
        .hcl(FAST_GOSSIP)
        .hcl(&format!(
            "ca {{\n  signer = true\n  root_dir = \"{}\"\n}}",
            ca_dir.display()
        ));
    let mut signer = net.start_agent(0, &signer_spec).unwrap();
    let seed = net.host(0).socket(7946);

    // h1: the token only; signers found from retry_join (data port = gossip port + 1).
    let joiner_spec = |node: &str| {
        AgentSpec::new()
            .node_name(node)
            .without_mesh_ca()
            .hcl(&encrypt(&key))
            .hcl(FAST_GOSSIP)
            .hcl(&format!("ca {{\n  join_token = \"{token}\"\n}}"))
            .retry_join([seed])
    };
    let mut joiner = net.start_agent(1, &joiner_spec("web-1")).unwrap();
    assert!(
        joiner
            .log()
            .contains("joined the mesh: intermediate received"),
        "no join in the log:\n{}",
        joiner.log()
    );

    // Its certificates: an intermediate for node web-1 under the same root as the signer's,
    // and its own agent leaf spiffe://TD/agent/web-1. (A signing certificate's SPIFFE id has
    // no path, X509-SVID 3.2: the intermediate carries spiffe://TD and names its node in its
    // subject and agent-node extension.)
    let rows = ca_status(&joiner);
    let signer_rows = ca_status(&signer);
    let root = one_of(&rows, "root");
    assert_eq!(
        root["serial"],
        one_of(&signer_rows, "root")["serial"],
        "joiner trusts the signer's root"
    );
    let inter = one_of(&rows, "intermediate");
    assert_eq!(inter["spiffe_id"], format!("spiffe://{TD}"));
    assert!(
        inter["subject"]
            .as_str()
            .unwrap()
            .contains("rhizome agent web-1"),
        "{inter:#?}"
    );
    assert_eq!(inter["issuer"], root["subject"], "{inter:#?} vs {root:#?}");
    let agent_leaf = one_of(&rows, "agent");
    assert_eq!(
        agent_leaf["spiffe_id"],
        format!("spiffe://{TD}/agent/web-1")
    );
    assert_eq!(agent_leaf["issuer"], inter["subject"]);
    assert_ne!(
        inter["serial"],
        one_of(&signer_rows, "intermediate")["serial"],
        "the joiner holds its own intermediate"
    );
    let serial = inter["serial"].clone();

    // It is a member of the mesh like any other.
    wait_all_alive(&[&signer, &joiner], &["signer-0", "web-1"]);

    // A host the token's pattern does not cover is refused by the signer and does not start.
    let mut stranger = net.prepare_agent(2, &joiner_spec("db-1")).unwrap();
    stranger.spawn().unwrap();
    let err = stranger.wait_ready().unwrap_err().to_string();
    assert!(
        err.contains("does not match the token's pattern"),
        "refusal reason: {err}"
    );
    assert!(!stranger.is_running());

    // Later starts need no signer: the intermediate is kept in the joiner's store.
    signer.kill().unwrap();
    joiner.restart(Duration::from_secs(30)).unwrap();
    let rows = ca_status(&joiner);
    assert_eq!(one_of(&rows, "intermediate")["serial"], serial);
    assert_eq!(joiner.info().unwrap()["boot_count"], 2);
}
