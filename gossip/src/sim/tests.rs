//! Scenario tests on the simulator (small N so the suite stays fast). A failing assertion
//! prints the seed; replay with `SIM_SEED=<seed> cargo test -p rhizome-gossip --features sim`.

use super::*;
use crate::membership::MemberStatus;

const MINUTE: Duration = Duration::from_secs(60);

fn started(nodes: usize, default_seed: u64) -> (Sim, u64) {
    let seed = seed_from_env(default_seed);
    let mut sim = Sim::new(SimConfig::lan(nodes, seed));
    sim.start_all();
    let took = sim.run_until(MINUTE, Sim::is_converged);
    assert!(took.is_some(), "no convergence; SIM_SEED={seed}");
    (sim, seed)
}

fn false_downs_about_others(sim: &Sim, except: usize) -> Vec<DownVerdict> {
    sim.downs()
        .iter()
        .filter(|d| d.was_running && d.subject.addr != host_addr(except))
        .cloned()
        .collect()
}

#[test]
fn converges_spreads_state_and_detects_a_kill() {
    for default_seed in [1, 2] {
        let (mut sim, seed) = started(40, default_seed);
        let key = sim.publish(3, 42, 1, b"catalog/node-3/web");
        let spread = sim.run_until(MINUTE, |s| s.reach(key) == 40);
        assert!(
            spread.is_some(),
            "state did not reach everyone; SIM_SEED={seed}"
        );
        sim.kill(7);
        let detect = sim.run_until(2 * MINUTE, |s| s.down_seen_by_all(7));
        assert!(detect.is_some(), "kill not detected; SIM_SEED={seed}");
        assert_eq!(sim.false_downs(), 0, "SIM_SEED={seed}: {:?}", sim.downs());
        let t = sim.traffic();
        assert_eq!((t.open_errors, t.rejected), (0, 0), "SIM_SEED={seed}");
        assert!(t.packets > 0 && t.bytes > t.packets * 41);
    }
}

#[test]
fn one_lossy_node_gets_no_healthy_node_declared_down() {
    let (mut sim, seed) = started(30, 11);
    sim.set_node_loss(4, 0.2);
    sim.run_for(3 * MINUTE);
    let wrong = false_downs_about_others(&sim, 4);
    assert!(wrong.is_empty(), "SIM_SEED={seed}: {wrong:?}");
    let expelled: Vec<_> = sim.expulsions().iter().filter(|(_, h)| *h != 4).collect();
    assert!(expelled.is_empty(), "SIM_SEED={seed}: {expelled:?}");
    // The lossy node itself is still a member (alive or renewed) in everyone's eyes.
    sim.set_node_loss(4, 0.0);
    assert!(
        sim.run_until(2 * MINUTE, Sim::is_converged).is_some(),
        "SIM_SEED={seed}"
    );
}

#[test]
fn five_percent_uniform_loss_gives_no_false_down() {
    let (mut sim, seed) = started(30, 21);
    sim.set_uniform_loss(0.05);
    sim.run_for(2 * MINUTE);
    assert_eq!(sim.false_downs(), 0, "SIM_SEED={seed}: {:?}", sim.downs());
}

#[test]
fn restart_rejoins_with_next_generation() {
    let (mut sim, seed) = started(20, 31);
    sim.kill(5);
    assert!(
        sim.run_until(2 * MINUTE, |s| s.down_seen_by_all(5))
            .is_some(),
        "SIM_SEED={seed}"
    );
    sim.restart(5);
    assert!(
        sim.run_until(MINUTE, Sim::is_converged).is_some(),
        "SIM_SEED={seed}"
    );
    let row = sim
        .membership(0)
        .unwrap()
        .members()
        .into_iter()
        .find(|r| r.node.as_str() == "node-5")
        .unwrap();
    assert_eq!(
        (row.status, row.incarnation),
        (MemberStatus::Alive, Generation(2))
    );
}

#[test]
fn partition_is_detected_and_heals() {
    let (mut sim, seed) = started(20, 41);
    let left: Vec<usize> = (0..10).collect();
    let right: Vec<usize> = (10..20).collect();
    sim.partition(&[left, right]);
    let split = sim.run_until(3 * MINUTE, |s| {
        s.membership(0).is_some_and(|m| m.num_members() == 9)
            && s.membership(15).is_some_and(|m| m.num_members() == 9)
    });
    assert!(
        split.is_some(),
        "sides did not declare each other down; SIM_SEED={seed}"
    );
    sim.heal();
    let healed = sim.run_until(5 * MINUTE, Sim::is_converged);
    assert!(healed.is_some(), "partition did not heal; SIM_SEED={seed}");
}

#[test]
fn graceful_leave_is_not_a_failure() {
    let (mut sim, seed) = started(15, 51);
    sim.leave(9);
    let seen = sim.run_until(MINUTE, |s| {
        (0..15).filter(|i| *i != 9).all(|i| {
            s.membership(i).is_some_and(|m| {
                m.members()
                    .iter()
                    .any(|r| r.node.as_str() == "node-9" && r.status == MemberStatus::Left)
            })
        })
    });
    assert!(seen.is_some(), "SIM_SEED={seed}");
    assert_eq!(sim.false_downs(), 0, "SIM_SEED={seed}");
}
