//! The harness itself, on real namespaces: hosts reach each other and nothing else, faults
//! apply and lift, agents start, die and come back, and nothing is left behind.
//! Root only; elsewhere each test prints why it skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rhizome_integration::{AgentSpec, Backend, HarnessError, Host, Impairment, net_or_skip};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

const ECHO_PORT: u16 = 7000;
/// How long a probe waits before calling a host unreachable.
const PROBE: Duration = Duration::from_millis(500);
/// Bound for waits that should end quickly (link back up, ARP resolved).
const SETTLE: Duration = Duration::from_secs(15);

fn root_links() -> BTreeSet<String> {
    let out = std::process::Command::new("ip")
        .args(["-j", "link", "show"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

fn netns_list() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until `from` can echo through `to`.
fn wait_reachable(from: &Host, to: SocketAddr) {
    rhizome_integration::wait_until(&format!("{} to reach {to}", from.name()), SETTLE, || {
        Ok(from.can_reach(to, PROBE)?.then_some(()))
    })
    .unwrap();
}

#[test]
fn hosts_reach_each_other_over_the_bridge_and_nothing_else() {
    // Before `root_links` runs `ip`: without root, `ip` or netns support, skip with the reason.
    match rhizome_integration::net::preflight() {
        Ok(()) => {}
        Err(HarnessError::Skip(why)) => {
            rhizome_integration::print_skip(file!(), line!(), &why);
            return;
        }
        Err(e) => panic!("{e}"),
    }
    let links_before = root_links();
    let net = net_or_skip!(3);
    let names: Vec<String> = net.namespaces().to_vec();
    assert_eq!(names.len(), 4, "switch + 3 hosts: {names:?}");
    let listed = netns_list();
    for n in &names {
        assert!(listed.contains(n.as_str()), "{n} missing from:\n{listed}");
    }

    // Each host: loopback and its one 198.18.0.x address; one route, to the hosts' subnet.
    for h in net.hosts() {
        let addrs = h.run("ip", ["-j", "addr", "show"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&addrs).unwrap();
        let mut found = BTreeSet::new();
        for link in v.as_array().unwrap() {
            for a in link["addr_info"].as_array().unwrap() {
                found.insert(a["local"].as_str().unwrap().to_string());
            }
        }
        let expected: BTreeSet<String> = [
            "127.0.0.1".to_string(),
            "::1".to_string(),
            h.addr().to_string(),
        ]
        .into();
        assert_eq!(found, expected, "addresses of {}", h.name());
        let routes = h.run("ip", ["-j", "-4", "route", "show"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&routes).unwrap();
        let dsts: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["dst"].as_str().unwrap())
            .collect();
        assert_eq!(dsts, ["198.18.0.0/24"], "routes of {}", h.name());
    }

    let echoes: Vec<_> = net
        .hosts()
        .iter()
        .map(|h| h.start_echo(ECHO_PORT).unwrap())
        .collect();
    for from in net.hosts() {
        for to in net.hosts() {
            if from.index() != to.index() {
                from.echo(to.socket(ECHO_PORT), 256 * 1024, SETTLE).unwrap();
            }
        }
    }

    // Nothing outside: another benchmarking address and the machine's own addresses have no
    // route from a host (the connect fails locally; no packet leaves).
    let h1 = net.host(1);
    let outside: SocketAddr = "198.19.0.1:7000".parse().unwrap();
    assert!(!h1.can_reach(outside, PROBE).unwrap());
    let err = h1.echo(outside, 1, PROBE).unwrap_err().to_string();
    assert!(err.contains("unreachable"), "{err}");
    let machine = std::process::Command::new("ip")
        .args(["-j", "-4", "addr", "show"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&machine.stdout).unwrap();
    for link in v.as_array().unwrap() {
        for a in link["addr_info"].as_array().unwrap() {
            let ip: std::net::Ipv4Addr = a["local"].as_str().unwrap().parse().unwrap();
            if ip.is_loopback() || ip.octets()[..2] == [198, 18] {
                continue;
            }
            assert!(
                !h1.can_reach(SocketAddr::from((ip, 22)), PROBE).unwrap(),
                "{ip} reachable"
            );
        }
    }

    // Partition {0, 1} | {2}: each side reaches only its own; healing joins them again.
    net.partition(&[&[0, 1], &[2]]).unwrap();
    let (h0, h2) = (net.host(0), net.host(2));
    assert!(h0.can_reach(h1.socket(ECHO_PORT), SETTLE).unwrap());
    assert!(!h0.can_reach(h2.socket(ECHO_PORT), PROBE).unwrap());
    assert!(!h2.can_reach(h1.socket(ECHO_PORT), PROBE).unwrap());
    net.heal_partition().unwrap();
    wait_reachable(h0, h2.socket(ECHO_PORT));
    wait_reachable(h2, h1.socket(ECHO_PORT));

    // Dropping the network kills its processes and removes every namespace and link.
    let pids: Vec<u32> = echoes.iter().map(|p| p.pid()).collect();
    drop(net);
    for (p, pid) in echoes.iter().zip(&pids) {
        assert!(!p.is_running(), "echo server {pid} survived the network");
    }
    let listed = netns_list();
    for n in &names {
        assert!(!listed.contains(n.as_str()), "{n} left behind:\n{listed}");
    }
    let added: Vec<String> = root_links().difference(&links_before).cloned().collect();
    assert!(
        added.is_empty(),
        "links left in the root namespace: {added:?}"
    );
}

#[test]
fn five_agents_answer_die_restart_and_ride_out_link_faults() {
    let net = net_or_skip!(5);
    let mut agents = net.start_agents(|_| AgentSpec::new()).unwrap();
    for (i, a) in agents.iter().enumerate() {
        let me = a.info().unwrap();
        assert_eq!(me["node_name"], format!("h{i}"));
        assert_eq!(me["boot_count"], 1);
        assert_eq!(me["addresses"]["bind"], net.host(i).addr().to_string());
        let api = a.api_get("/v1/agent/self").unwrap();
        assert_eq!(api["node_name"], me["node_name"]);
        assert_eq!(a.gossip_addr().unwrap(), net.host(i).socket(7946));
        assert_eq!(a.http_addr(), "127.0.0.1:7948".parse().unwrap());
        // It runs with the intermediate the harness issued for it from the network's root.
        let certs = a.cli(&["ca", "status", "--format", "json"]).unwrap();
        let agent_id = format!("spiffe://mesh.test/agent/h{i}");
        assert!(certs.contains(&agent_id), "{agent_id} not in {certs}");
    }

    // kill -9, then restart on the same data_dir: same node, one more boot.
    let old_pid = agents[2].pid().unwrap();
    let status = agents[2].kill().unwrap();
    assert_eq!(status.signal(), Some(9));
    assert!(
        agents[2].api_get("/v1/health").is_err(),
        "killed agent still answers"
    );
    agents[2].start().unwrap();
    let me = agents[2].info().unwrap();
    assert_eq!(me["node_name"], "h2");
    assert_eq!(me["boot_count"], 2);
    assert_ne!(agents[2].pid(), Some(old_pid));

    // SIGTERM: a clean exit that flushes the store; restart counts a boot too.
    let status = agents[3].terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "SIGTERM exit: {status}");
    assert!(
        agents[3].log().contains("store flushed"),
        "{}",
        agents[3].log()
    );
    agents[3].restart(Duration::from_secs(30)).unwrap();
    assert_eq!(agents[3].info().unwrap()["boot_count"], 2);

    let (h0, h1, h4) = (net.host(0), net.host(1), net.host(4));
    let _echo1 = h1.start_echo(ECHO_PORT).unwrap();
    let _echo4 = h4.start_echo(ECHO_PORT).unwrap();
    h0.echo(h4.socket(ECHO_PORT), 64 * 1024, SETTLE).unwrap();

    // Loss and delay on h4's link, where this machine can emulate them (tc + sch_netem, or
    // nft); otherwise that part says what is missing and the rest of the test runs.
    if let Err(why) = link_faults(h0, h4, &agents[4]) {
        rhizome_integration::print_skip(file!(), line!(), &format!("packet-loss part: {why}"));
    }

    // Cable cut on h1: carrier lost, unreachable; restored: carrier back and reachable.
    h1.cut_link().unwrap();
    assert!(!h1.has_carrier().unwrap());
    assert!(!h0.can_reach(h1.socket(ECHO_PORT), PROBE).unwrap());
    h1.restore_link().unwrap();
    rhizome_integration::wait_until("h1 carrier", SETTLE, || Ok(h1.has_carrier()?.then_some(())))
        .unwrap();
    wait_reachable(h0, h1.socket(ECHO_PORT));

    for a in &agents {
        assert!(a.is_running(), "agent on {} stopped", a.host().name());
        a.api_get("/v1/health").unwrap();
    }
}

#[test]
fn a_panicking_test_leaves_nothing_and_strays_are_swept() {
    // A namespace named as if by a test process that died without cleaning up (its pid is
    // above pid_max, so no such process can exist): the next network removes it.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(4_194_304);
    let stray = format!("rz{}x{}x0000-h0", pid_max + 1, std::process::id());
    if rhizome_integration::net::preflight().is_ok() {
        // Not checked: another test process's sweep may remove it even while it is made.
        let _ = std::process::Command::new("ip")
            .args(["netns", "add", &stray])
            .output();
    }

    let names = std::sync::Mutex::new(Vec::new());
    let outcome = std::panic::catch_unwind(|| {
        let net = net_or_skip!(2);
        assert!(!netns_list().contains(&stray), "stray namespace not swept");
        let _echo = net.host(0).start_echo(ECHO_PORT).unwrap();
        names
            .lock()
            .unwrap()
            .extend(net.namespaces().iter().cloned());
        panic!("the test fails with the network alive");
    });
    let names = names.into_inner().unwrap();
    if names.is_empty() {
        return; // skipped: no namespaces here
    }
    assert!(outcome.is_err());
    let listed = netns_list();
    for n in &names {
        assert!(
            !listed.contains(n.as_str()),
            "{n} left behind after a panic:\n{listed}"
        );
    }
}

/// Total and partial loss, then delay, on `h4`'s link as seen from `h0`, with `agent4` (on
/// h4) still answering locally. `Err` (before anything changed) says what this machine lacks
/// to emulate packet loss.
fn link_faults(
    h0: &Host,
    h4: &Host,
    agent4: &rhizome_integration::AgentProc,
) -> Result<(), String> {
    // Total loss on h4's link: unreachable, the drops are counted, its agent still answers
    // locally; lifted, h4 is reachable again.
    let backend = match h4.impair(Impairment::loss(100)) {
        Err(HarnessError::Unsupported(why)) => return Err(why),
        other => other.unwrap(),
    };
    match backend {
        Backend::Netem => assert!(h4.qdisc_show().unwrap().contains("loss 100%")),
        Backend::Nftables => {
            let rules = h4.nft_ruleset().unwrap().unwrap();
            assert!(rules.contains("table inet rhizome_impair"), "{rules}");
            assert!(
                rules.contains("oifname \"eth0\" counter packets"),
                "{rules}"
            );
        }
    }
    assert!(!h0.can_reach(h4.socket(ECHO_PORT), PROBE).unwrap());
    assert!(h4.impairment_drops().unwrap().unwrap() > 0);
    agent4.api_get("/v1/health").unwrap();
    h4.clear_impairment().unwrap();
    assert!(!h4.qdisc_show().unwrap().contains("netem"));
    if let Some(rules) = h4.nft_ruleset().unwrap() {
        assert!(!rules.contains("rhizome_impair"), "{rules}");
    }
    assert_eq!(h4.impairment_drops().unwrap(), None);
    wait_reachable(h0, h4.socket(ECHO_PORT));

    // Partial loss: configured as asked; TCP still delivers every byte through it.
    let backend = h4.impair(Impairment::loss(10)).unwrap();
    let shown = match backend {
        Backend::Netem => h4.qdisc_show().unwrap(),
        Backend::Nftables => h4.nft_ruleset().unwrap().unwrap(),
    };
    assert!(shown.contains("10%") || shown.contains("< 10 "), "{shown}");
    h0.echo(h4.socket(ECHO_PORT), 16 * 1024, Duration::from_secs(30))
        .unwrap();
    h4.clear_impairment().unwrap();

    // Delay needs netem; on kernels without it the harness says so.
    match h4.impair(Impairment::delay(Duration::from_millis(20))) {
        Ok(Backend::Netem) => {
            assert!(h4.qdisc_show().unwrap().contains("delay 20ms"));
            h0.echo(h4.socket(ECHO_PORT), 1024, SETTLE).unwrap();
            h4.clear_impairment().unwrap();
            assert!(!h4.qdisc_show().unwrap().contains("netem"));
        }
        Ok(other) => panic!("delay carried by {other:?}"),
        Err(HarnessError::Unsupported(why)) => eprintln!("delay part skipped: {why}"),
        Err(e) => panic!("{e}"),
    }
    Ok(())
}
