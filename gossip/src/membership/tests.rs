//! In-process members exchanging packets by direct hand-off on a virtual clock.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use super::*;

/// Accepts any item once; what the replicated state would do for new entries.
#[derive(Default)]
struct SetReceiver(HashSet<Vec<u8>>);

impl BroadcastReceiver for SetReceiver {
    fn receive_broadcast(&mut self, data: &[u8]) -> Option<BroadcastKey> {
        self.0.insert(data.to_vec()).then(|| key_of(data))
    }
}

fn key_of(data: &[u8]) -> BroadcastKey {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    BroadcastKey {
        key_hash: h.finish(),
        version: 1,
    }
}

fn id(i: usize, generation: u64) -> NodeId {
    NodeId::new(
        format!("node-{i}").parse().unwrap(),
        format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
        Generation(generation),
    )
}

struct Net {
    nodes: Vec<Option<Membership>>,
    receivers: Vec<SetReceiver>,
    events: Vec<(usize, MemberEvent)>,
    /// Addresses whose packets (in and out) are dropped.
    cut: HashSet<SocketAddr>,
    now: Duration,
}

impl Net {
    fn new(n: usize) -> Self {
        let mut net = Self {
            nodes: Vec::new(),
            receivers: Vec::new(),
            events: Vec::new(),
            cut: HashSet::new(),
            now: Duration::from_secs(1),
        };
        for i in 0..n {
            net.nodes.push(Some(
                Membership::new(id(i, 1), MembershipConfig::default(), i as u64).unwrap(),
            ));
            net.receivers.push(SetReceiver::default());
        }
        net
    }

    fn node(&mut self, i: usize) -> &mut Membership {
        self.nodes[i].as_mut().unwrap()
    }

    fn join_all_to(&mut self, seed: usize) {
        let addr = id(seed, 1).addr;
        let now = self.now;
        for i in 0..self.nodes.len() {
            if i != seed {
                self.node(i).join(now, addr).unwrap();
            }
        }
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes
            .iter()
            .position(|m| m.as_ref().is_some_and(|m| m.identity().addr == addr))
    }

    fn flush(&mut self) {
        loop {
            let mut packets = Vec::new();
            for (i, node) in self.nodes.iter_mut().enumerate() {
                let Some(node) = node else { continue };
                while let Some(t) = node.poll_transmit() {
                    packets.push((node.identity().addr, t));
                }
                while let Some(e) = node.poll_event() {
                    self.events.push((i, e));
                }
            }
            if packets.is_empty() {
                return;
            }
            for (from, t) in packets {
                if self.cut.contains(&from) || self.cut.contains(&t.to) {
                    continue;
                }
                let Some(j) = self.index_of(t.to) else {
                    continue;
                };
                let now = self.now;
                let node = self.nodes[j].as_mut().unwrap();
                let _ = node.handle_data(now, from, &t.payload, &mut self.receivers[j]);
            }
        }
    }

    fn run_until(&mut self, limit: Duration, cond: impl Fn(&Net) -> bool) -> bool {
        let deadline = self.now + limit;
        loop {
            self.flush();
            if cond(self) {
                return true;
            }
            let next = self
                .nodes
                .iter()
                .flatten()
                .filter_map(|m| m.poll_timeout())
                .min();
            match next {
                Some(t) if t <= deadline => self.now = self.now.max(t),
                _ => return false,
            }
            let now = self.now;
            for node in self.nodes.iter_mut().flatten() {
                if node.poll_timeout().is_some_and(|t| t <= now) {
                    node.handle_timeout(now);
                }
            }
        }
    }

    fn status_seen_by(&self, observer: usize, subject: &str) -> Option<MemberStatus> {
        let m = self.nodes[observer].as_ref()?;
        m.members()
            .into_iter()
            .find(|r| r.node.as_str() == subject)
            .map(|r| r.status)
    }

    fn all_see(&self, subject: &str, status: MemberStatus, except: usize) -> bool {
        (0..self.nodes.len())
            .filter(|i| *i != except && self.nodes[*i].is_some())
            .all(|i| self.status_seen_by(i, subject) == Some(status))
    }

    fn converged(&self) -> bool {
        let live = self.nodes.iter().flatten().count();
        self.nodes
            .iter()
            .flatten()
            .all(|m| m.num_members() == live - 1)
    }
}

#[test]
fn members_join_and_see_each_other() {
    let mut net = Net::new(5);
    net.join_all_to(0);
    assert!(net.run_until(Duration::from_secs(30), Net::converged));
    let table = net.node(3).members();
    assert_eq!(table.len(), 5);
    assert_eq!(table[0].node.as_str(), "node-3");
    assert!(table.iter().all(|r| r.status == MemberStatus::Alive));
    assert!(
        net.events
            .iter()
            .any(|(i, e)| *i == 0 && *e == MemberEvent::Up(id(4, 1)))
    );
    assert!(
        net.events
            .iter()
            .any(|(i, e)| *i == 4 && *e == MemberEvent::Joined)
    );
    // Healthy cluster: no suspicion, no stretch, no foca timer error.
    assert!(!net.run_until(Duration::from_secs(20), |_| false));
    for m in net.nodes.iter().flatten() {
        let s = m.stats();
        assert_eq!(s.local_health, 0);
        assert_eq!(s.timer_errors, 0);
    }
    assert!(
        !net.events
            .iter()
            .any(|(_, e)| matches!(e, MemberEvent::Suspect(_)))
    );
}

#[test]
fn graceful_leave_is_reported_as_left() {
    let mut net = Net::new(4);
    net.join_all_to(0);
    assert!(net.run_until(Duration::from_secs(30), Net::converged));
    let now = net.now;
    net.node(2).leave(now).unwrap();
    assert!(net.run_until(Duration::from_secs(10), |n| n.all_see(
        "node-2",
        MemberStatus::Left,
        2
    )));
    assert!(
        net.events
            .iter()
            .any(|(_, e)| *e == MemberEvent::Left(id(2, 1)))
    );
    assert!(
        !net.events
            .iter()
            .any(|(_, e)| *e == MemberEvent::Down(id(2, 1)))
    );
}

#[test]
fn failed_member_is_detected_with_confirmations() {
    let mut net = Net::new(8);
    net.join_all_to(0);
    assert!(net.run_until(Duration::from_secs(30), Net::converged));
    let killed_at = net.now;
    net.nodes[5] = None;
    assert!(net.run_until(Duration::from_secs(120), |n| n.all_see(
        "node-5",
        MemberStatus::Failed,
        5
    )));
    // Several members failed to probe it, so the suspicion timeout shrank below Lifeguard's
    // maximum (6 x the minimum) plus a few probe periods.
    let (min, max) = MembershipConfig::default().suspicion_bounds(8);
    assert!(net.now - killed_at < max, "took {:?}", net.now - killed_at);
    assert!(net.now - killed_at >= min);
    assert!(
        net.events
            .iter()
            .any(|(_, e)| *e == MemberEvent::Suspect(id(5, 1)))
    );
    assert!(
        net.events
            .iter()
            .any(|(_, e)| *e == MemberEvent::Down(id(5, 1)))
    );
}

#[test]
fn restart_rejoins_with_a_new_generation() {
    let mut net = Net::new(4);
    net.join_all_to(0);
    assert!(net.run_until(Duration::from_secs(30), Net::converged));
    net.nodes[3] = None;
    assert!(net.run_until(Duration::from_secs(120), |n| n.all_see(
        "node-3",
        MemberStatus::Failed,
        3
    )));
    let mut restarted = Membership::new(id(3, 2), MembershipConfig::default(), 99).unwrap();
    restarted.join(net.now, id(1, 1).addr).unwrap();
    net.nodes[3] = Some(restarted);
    assert!(net.run_until(Duration::from_secs(30), |n| n.all_see(
        "node-3",
        MemberStatus::Alive,
        3
    ) && n.converged()));
    let row = net
        .node(0)
        .members()
        .into_iter()
        .find(|r| r.node.as_str() == "node-3")
        .unwrap();
    assert_eq!(row.incarnation, Generation(2));
    assert!(net.events.iter().any(|(_, e)| matches!(
        e,
        MemberEvent::Replaced { old, new } if *old == id(3, 1) && *new == id(3, 2)
    )));
}

#[test]
fn broadcasts_reach_everyone_and_oversize_is_refused() {
    let mut net = Net::new(6);
    net.join_all_to(0);
    assert!(net.run_until(Duration::from_secs(30), Net::converged));
    let item = b"catalog/node-2/web=v1".to_vec();
    net.receivers[2].0.insert(item.clone());
    net.node(2).broadcast(key_of(&item), &item).unwrap();
    assert!(net.run_until(Duration::from_secs(10), |n| {
        n.receivers.iter().all(|r| r.0.contains(&item))
    }));
    let big = vec![7u8; 2_000];
    assert_eq!(
        net.node(2).broadcast(key_of(&big), &big),
        Err(TooBig {
            len: 2_001,
            max: 1_024
        })
    );
}

#[test]
fn local_health_rises_when_isolated_and_recovers() {
    let mut net = Net::new(4);
    net.join_all_to(0);
    assert!(net.run_until(Duration::from_secs(30), Net::converged));
    let victim = id(1, 1).addr;
    net.cut.insert(victim);
    assert!(net.run_until(Duration::from_secs(10), |n| {
        n.nodes[1]
            .as_ref()
            .is_some_and(|m| m.stats().local_health >= 2)
    }));
    net.cut.clear();
    assert!(net.run_until(Duration::from_secs(300), |n| {
        n.nodes[1]
            .as_ref()
            .is_some_and(|m| m.stats().local_health == 0)
            && n.converged()
    }));
    let downs: HashMap<_, _> = net
        .events
        .iter()
        .filter(|(_, e)| matches!(e, MemberEvent::Down(_)))
        .map(|(i, e)| (*i, e.clone()))
        .collect();
    // The isolated node may have accused others, but only after stretched timeouts; the
    // healthy nodes never declared each other down.
    assert!(
        downs
            .keys()
            .all(|i| *i == 1 || matches!(&downs[i], MemberEvent::Down(d) if d.addr == victim))
    );
}

#[test]
fn malformed_payloads_are_typed_and_harmless() {
    let mut net = Net::new(3);
    net.join_all_to(0);
    assert!(net.run_until(Duration::from_secs(30), Net::converged));
    let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let now = net.now;
    let mut sink = SetReceiver::default();
    let node = net.node(1);
    for bad in [&[][..], &[9, 1, 2][..], &[1, 0xff, 0xff, 0xff][..]] {
        assert!(matches!(
            node.handle_data(now, from, bad, &mut sink),
            Err(MembershipError::Malformed { .. })
        ));
    }
    assert!(matches!(
        node.handle_data(now, from, &[0, 1, 2, 3], &mut sink),
        Err(MembershipError::Rejected { .. })
    ));
    assert_eq!(node.num_members(), 2);
}

#[test]
fn late_joiner_learns_the_whole_table() {
    let mut net = Net::new(3);
    net.join_all_to(0);
    assert!(net.run_until(Duration::from_secs(30), Net::converged));
    // A late joiner talks to node 0 only; the announce reply, gossip and the table exchange
    // that follows its join teach it (and everyone) the whole table.
    net.nodes.push(Some(
        Membership::new(id(3, 1), MembershipConfig::default(), 3).unwrap(),
    ));
    net.receivers.push(SetReceiver::default());
    let now = net.now;
    net.node(3).join(now, id(0, 1).addr).unwrap();
    assert!(net.run_until(Duration::from_secs(30), Net::converged));
    assert!(
        net.node(3)
            .members()
            .iter()
            .all(|r| r.status == MemberStatus::Alive)
    );
}

#[test]
fn a_refuted_suspicion_expels_nobody() {
    // Two members cut off from each other suspect each other (lone suspicions, nobody to
    // confirm). Once the link heals each refutes; the suspicion timers that fire later must
    // not expel the refuted member (foca 2.0 would still send it `TurnUndead`).
    let mut net = Net::new(2);
    net.join_all_to(0);
    assert!(net.run_until(Duration::from_secs(30), Net::converged));
    net.cut.insert(id(1, 1).addr);
    assert!(net.run_until(Duration::from_secs(30), |n| {
        n.status_seen_by(0, "node-1") == Some(MemberStatus::Suspect)
            && n.status_seen_by(1, "node-0") == Some(MemberStatus::Suspect)
    }));
    net.cut.clear();
    let (_, max) = MembershipConfig::default().suspicion_bounds(2);
    assert!(!net.run_until(max * 3, |_| false));
    let verdicts: Vec<_> = net
        .events
        .iter()
        .filter(|(_, e)| matches!(e, MemberEvent::Down(_) | MemberEvent::Rejoined(_)))
        .collect();
    assert!(verdicts.is_empty(), "{verdicts:?}");
    assert_eq!(net.status_seen_by(0, "node-1"), Some(MemberStatus::Alive));
    assert_eq!(net.status_seen_by(1, "node-0"), Some(MemberStatus::Alive));
    let refuted = net
        .events
        .iter()
        .filter(|(_, e)| matches!(e, MemberEvent::Refuted(_)))
        .count();
    assert_eq!(refuted, 2, "each member refuted once");
    let stale: u64 = net
        .nodes
        .iter()
        .flatten()
        .map(|m| m.stats().stale_verdicts)
        .sum();
    assert!(
        stale >= 2,
        "both held verdicts were dropped as stale ({stale})"
    );
}
