//! Issue 14: an operator revokes an agent (`rhizome ca revoke`, sent to another host) while
//! traffic flows: connections to the revoked host stop within seconds, every agent lists the
//! revocation, and traffic between the other hosts never fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    CONVERGE, ECHO_TIMEOUT, FAST_GOSSIP, client, operator, service, upstream, wait_all_alive,
    wait_reach,
};
use rhizome_integration::{AgentProc, AgentSpec, net_or_skip, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const DB_PORT: u16 = 5432;
const API_PORT: u16 = 8080;
const DB_UPSTREAM: u16 = 9191;
const API_UPSTREAM: u16 = 9192;

#[test]
fn revoking_an_agent_shuts_it_out_while_the_rest_keeps_working() {
    let net = net_or_skip!(4);
    let op = operator(&net, "alice");
    let op_arg = op.to_str().unwrap();
    let seed = net.host(0).socket(7946);
    let spec = |index: usize| {
        let spec = AgentSpec::new()
            .hcl(FAST_GOSSIP)
            .hcl("default_intention_policy = \"allow\"");
        match index {
            0 => spec.hcl(&client(
                "web",
                &[("db", DB_UPSTREAM), ("api", API_UPSTREAM)],
            )),
            1 => spec
                .hcl(&service(net.host(1), "db", DB_PORT))
                .retry_join([seed]),
            2 => spec
                .hcl(&service(net.host(2), "api", API_PORT))
                .retry_join([seed]),
            _ => spec.retry_join([seed]),
        }
    };
    let mut agents = Vec::new();
    for i in 0..4 {
        let mut a = net.prepare_agent(i, &spec(i)).unwrap();
        a.spawn().unwrap();
        agents.push(a);
    }
    for a in &agents {
        a.wait_ready().unwrap();
    }
    let all: Vec<&AgentProc> = agents.iter().collect();
    wait_all_alive(&all, &["h0", "h1", "h2", "h3"]);
    let _db = net.host(1).start_echo(DB_PORT).unwrap();
    let _api = net.host(2).start_echo(API_PORT).unwrap();
    let web = net.host(0).clone();
    wait_reach(&web, upstream(DB_UPSTREAM));
    wait_reach(&web, upstream(API_UPSTREAM));

    // web -> api for the whole scenario: every echo must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, web) = (stop.clone(), web.clone());
        std::thread::spawn(move || {
            let mut done = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = web.echo(upstream(API_UPSTREAM), 16 * 1024, ECHO_TIMEOUT) {
                    return Err(format!("echo {done} failed: {e}"));
                }
                done += 1;
            }
            Ok(done)
        })
    };

    let revoked_at = Instant::now();
    agents[3]
        .cli(&[
            "ca",
            "revoke",
            "--operator-dir",
            op_arg,
            "--node",
            "h1",
            "--reason",
            "key stolen",
        ])
        .unwrap();
    wait_until("web can no longer reach db on h1", CONVERGE, || {
        Ok((!web.can_reach(upstream(DB_UPSTREAM), Duration::from_secs(5))?).then_some(()))
    })
    .unwrap();
    let cut = revoked_at.elapsed();
    eprintln!(
        "revocation sent to h3 -> h0 refuses the revoked h1: {} ms",
        cut.as_millis()
    );
    for a in &agents {
        wait_until(
            &format!("{} lists the revocation", a.node_name()),
            CONVERGE,
            || {
                let list = a.api_get("/v1/ca/revocations")?;
                Ok(list
                    .as_array()
                    .is_some_and(|l| {
                        l.iter()
                            .any(|r| r["node"] == "h1" && r["revoked_by"] == "alice")
                    })
                    .then_some(()))
            },
        )
        .unwrap();
    }
    let json = agents[0]
        .cli(&["ca", "revocations", "--format", "json"])
        .unwrap();
    assert!(json.contains("key stolen"), "{json}");

    stop.store(true, Ordering::Relaxed);
    let echoes = traffic.join().unwrap().unwrap();
    assert!(echoes > 0, "no traffic during the scenario");
    eprintln!("{echoes} echoes web -> api, none failed, while h1 was revoked");
}
