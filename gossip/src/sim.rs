//! Deterministic gossip simulator (feature `sim`): many [`Membership`] nodes in one thread,
//! a virtual clock that jumps to the next packet or timer, a seeded RNG, per-link loss and
//! delay, partitions, kills and restarts. Every packet goes through the production
//! [`Keyring`] (sealed and opened) and the production membership code.
//!
//! Scenarios read as scripts: build a [`Sim`], [`Sim::start_all`], [`Sim::run_until`] a
//! condition, [`Sim::kill`] a node, cut links with [`Sim::set_node_loss`] or
//! [`Sim::partition`], and read the results ([`Sim::down_seen_by_all`], [`Sim::false_downs`],
//! [`Sim::reach`], [`Sim::traffic`]). A run is a pure function of its [`SimConfig`]: print
//! the seed when an assertion fails and replay it with `SIM_SEED=<seed>` ([`seed_from_env`]).
//!
//! State entries travel through [`SimReceiver`], a minimal [`BroadcastReceiver`] that keeps
//! the newest version per key (the replicated state module can be plugged in the same way).

mod network;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::keyring::{Key, Keyring};
use crate::membership::{Generation, MemberEvent, Membership, MembershipConfig, NodeId};
use crate::{BroadcastKey, BroadcastReceiver};
pub use network::Network;

/// Wall-clock origin given to keyrings (any fixed UNIX time works: all nodes share it).
const UNIX_BASE_MS: u64 = 1_800_000_000_000;
/// How often `run_until` evaluates its condition and the join retries run.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Join retry interval for nodes that know nobody yet (the agent's `retry_join`).
const JOIN_RETRY: Duration = Duration::from_secs(2);

/// Reads `SIM_SEED` (to replay a failing run) or returns `default`.
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Parameters of one simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Seed of every random choice (network and nodes).
    pub seed: u64,
    /// Membership settings of every node.
    pub membership: MembershipConfig,
    /// Seal packets with a shared key (otherwise cleartext framing).
    pub encrypt: bool,
    /// One-way latency range of every link.
    pub latency: (Duration, Duration),
    /// Window over which `start_all` spreads the joins.
    pub join_spread: Duration,
}

impl SimConfig {
    /// LAN defaults: 1-3 ms latency, encryption on, joins spread over one second.
    pub fn lan(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            membership: MembershipConfig::default(),
            encrypt: true,
            latency: (Duration::from_millis(1), Duration::from_millis(3)),
            join_spread: Duration::from_secs(1),
        }
    }
}

/// Replicated-state stand-in: an item is `key_hash (8 bytes BE) || version (8 bytes BE) ||
/// payload`; the newest version per key wins.
#[derive(Debug, Default)]
pub struct SimReceiver {
    newest: HashMap<u64, u64>,
    fresh: Vec<BroadcastKey>,
}

impl SimReceiver {
    /// Encodes an item.
    pub fn item(key: BroadcastKey, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + payload.len());
        v.extend_from_slice(&key.key_hash.to_be_bytes());
        v.extend_from_slice(&key.version.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// Whether this node holds `key` at its version or newer.
    pub fn has(&self, key: BroadcastKey) -> bool {
        self.newest
            .get(&key.key_hash)
            .is_some_and(|v| *v >= key.version)
    }
}

impl BroadcastReceiver for SimReceiver {
    fn receive_broadcast(&mut self, data: &[u8]) -> Option<BroadcastKey> {
        let hash = u64::from_be_bytes(data.get(..8)?.try_into().ok()?);
        let version = u64::from_be_bytes(data.get(8..16)?.try_into().ok()?);
        let key = BroadcastKey {
            key_hash: hash,
            version,
        };
        if self.has(key) {
            return None;
        }
        self.newest.insert(hash, version);
        self.fresh.push(key);
        Some(key)
    }
}

/// One simulated host.
struct Host {
    addr: SocketAddr,
    generation: u64,
    node: Option<Membership>,
    keyring: Keyring,
    receiver: SimReceiver,
    wake: Option<Duration>,
    last_join: Duration,
    join_via: usize,
}

/// A scheduled happening.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    Wake(usize),
    Deliver {
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
}

/// A "down" verdict some node reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownVerdict {
    /// When it happened.
    pub at: Duration,
    /// Who decided (host index).
    pub observer: usize,
    /// About whom.
    pub subject: NodeId,
    /// Whether the subject's host was in fact running (a false verdict).
    pub was_running: bool,
}

/// Traffic counters since the start (or the last reset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Sealed packets sent.
    pub packets: u64,
    /// Sealed bytes sent (UDP payloads).
    pub bytes: u64,
    /// Packets lost by the network model.
    pub dropped: u64,
    /// Packets the receiving keyring refused.
    pub open_errors: u64,
    /// Packets membership refused.
    pub rejected: u64,
}

/// The simulation.
pub struct Sim {
    config: SimConfig,
    now: Duration,
    rng: SmallRng,
    hosts: Vec<Host>,
    by_addr: HashMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<(Duration, u64, Happening)>>,
    seq: u64,
    network: Network,
    traffic: Traffic,
    downs: Vec<DownVerdict>,
    expulsions: Vec<(Duration, usize)>,
    down_observers: HashMap<SocketAddr, HashSet<usize>>,
    reach: HashMap<BroadcastKey, usize>,
}

/// The simulated address of host `i`.
pub fn host_addr(i: usize) -> SocketAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(0x0a00_0000 | i.wrapping_add(1)),
        7946,
    ))
}

impl Sim {
    /// Builds `config.nodes` hosts, none joined yet.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let key = Key::generate(rng.random());
        let mut hosts = Vec::with_capacity(config.nodes);
        let mut by_addr = HashMap::with_capacity(config.nodes);
        for i in 0..config.nodes {
            let addr = host_addr(i);
            by_addr.insert(addr, i);
            let keyring = if config.encrypt {
                Keyring::new(key.clone(), rng.random())
            } else {
                Keyring::cleartext(rng.random())
            };
            let node = Self::make_node(&config, i, 1, rng.random());
            hosts.push(Host {
                addr,
                generation: 1,
                node,
                keyring,
                receiver: SimReceiver::default(),
                wake: None,
                last_join: Duration::ZERO,
                join_via: 0,
            });
        }
        Self {
            network: Network::new(config.nodes, config.latency),
            config,
            now: Duration::ZERO,
            rng,
            hosts,
            by_addr,
            queue: BinaryHeap::new(),
            seq: 0,
            traffic: Traffic::default(),
            downs: Vec::new(),
            expulsions: Vec::new(),
            down_observers: HashMap::new(),
            reach: HashMap::new(),
        }
    }

    fn make_node(config: &SimConfig, i: usize, generation: u64, seed: u64) -> Option<Membership> {
        let name = format!("node-{i}").parse().ok()?;
        let id = NodeId::new(name, host_addr(i), Generation(generation));
        Membership::new(id, config.membership.clone(), seed).ok()
    }

    /// The virtual clock.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The network model (loss, partitions), for scripting.
    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.network
    }

    /// Sets the loss probability of every link.
    pub fn set_uniform_loss(&mut self, p: f64) {
        self.network.uniform_loss = p;
    }

    /// Sets the loss probability of every packet to or from host `i`.
    pub fn set_node_loss(&mut self, i: usize, p: f64) {
        self.network.set_node_loss(i, p);
    }

    /// Splits the hosts into groups that cannot reach each other (unlisted hosts: group 0).
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        self.network.partition(groups);
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.network.heal();
    }

    /// Every node joins host 0, at times spread over `join_spread`.
    pub fn start_all(&mut self) {
        let spread = self.config.join_spread.as_micros().max(1) as u64;
        for i in 1..self.hosts.len() {
            let at = self.now + Duration::from_micros(self.rng.random_range(0..spread));
            self.hosts[i].last_join = at;
            self.push(at, Happening::Wake(i));
        }
    }

    /// A running host's membership.
    pub fn membership(&self, i: usize) -> Option<&Membership> {
        self.hosts.get(i)?.node.as_ref()
    }

    /// Whether host `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.hosts.get(i).is_some_and(|h| h.node.is_some())
    }

    /// Number of running hosts.
    pub fn running(&self) -> usize {
        self.hosts.iter().filter(|h| h.node.is_some()).count()
    }

    /// Whether every running node knows every other running node as active.
    pub fn is_converged(&self) -> bool {
        let n = self.running();
        self.hosts
            .iter()
            .filter_map(|h| h.node.as_ref())
            .all(|m| m.num_members() + 1 == n)
    }

    /// Stops host `i` abruptly (kill -9): no leave, packets to it vanish.
    pub fn kill(&mut self, i: usize) {
        if let Some(h) = self.hosts.get_mut(i) {
            h.node = None;
            h.wake = None;
        }
    }

    /// Restarts host `i` with the next generation and an empty state; it joins a random
    /// running host (and retries every 2 s until it knows someone).
    pub fn restart(&mut self, i: usize) {
        let seed = self.rng.random();
        let running: Vec<usize> = (0..self.hosts.len())
            .filter(|j| *j != i && self.is_running(*j))
            .collect();
        let via = if running.is_empty() {
            0
        } else {
            running[self.rng.random_range(0..running.len())]
        };
        self.down_observers.remove(&host_addr(i));
        let Some(h) = self.hosts.get_mut(i) else {
            return;
        };
        h.join_via = via;
        h.generation += 1;
        h.node = Self::make_node(&self.config, i, h.generation, seed);
        h.receiver = SimReceiver::default();
        h.keyring.reseed(self.rng.random());
        h.last_join = self.now;
        self.push(self.now, Happening::Wake(i));
    }

    /// Host `i` leaves gracefully.
    pub fn leave(&mut self, i: usize) {
        let now = self.now;
        if let Some(m) = self.hosts.get_mut(i).and_then(|h| h.node.as_mut()) {
            let _ = m.leave(now);
        }
        self.drain(i);
    }

    /// Host `i` publishes a new state entry version; returns its key.
    pub fn publish(
        &mut self,
        i: usize,
        key_hash: u64,
        version: u64,
        payload: &[u8],
    ) -> BroadcastKey {
        let key = BroadcastKey { key_hash, version };
        let item = SimReceiver::item(key, payload);
        if let Some(h) = self.hosts.get_mut(i) {
            h.receiver.receive_broadcast(&item);
            h.receiver.fresh.clear();
            if let Some(m) = h.node.as_mut() {
                let _ = m.broadcast(key, &item);
            }
        }
        *self.reach.entry(key).or_default() += 1;
        self.drain(i);
        key
    }

    /// How many hosts received `key` (including its publisher).
    pub fn reach(&self, key: BroadcastKey) -> usize {
        self.reach.get(&key).copied().unwrap_or(0)
    }

    /// Every down verdict so far.
    pub fn downs(&self) -> &[DownVerdict] {
        &self.downs
    }

    /// Running hosts told they were declared down (they rejoined under a new generation):
    /// `(when, host index)`. A verdict can reach its subject without any `Down` event at the
    /// observers (foca's `TurnUndead`), so these are counted apart.
    pub fn expulsions(&self) -> &[(Duration, usize)] {
        &self.expulsions
    }

    /// False verdicts: down verdicts about hosts that were running, plus expulsions.
    pub fn false_downs(&self) -> usize {
        self.downs.iter().filter(|d| d.was_running).count() + self.expulsions.len()
    }

    /// Whether every running host saw host `i` declared down.
    pub fn down_seen_by_all(&self, i: usize) -> bool {
        let Some(seen) = self.down_observers.get(&host_addr(i)) else {
            return false;
        };
        (0..self.hosts.len())
            .filter(|j| *j != i && self.hosts[*j].node.is_some())
            .all(|j| seen.contains(&j))
    }

    /// Traffic counters.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Runs until `cond` holds (checked every 100 ms) or `limit` elapses; returns how long it
    /// took, or `None` on timeout.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        loop {
            if cond(self) {
                return Some(self.now - start);
            }
            if self.now - start >= limit {
                return None;
            }
            let step = self.now + CHECK_EVERY;
            self.advance_to(step);
            self.retry_joins();
        }
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let _ = self.run_until(d, |_| false);
    }

    fn retry_joins(&mut self) {
        for i in 0..self.hosts.len() {
            let h = &self.hosts[i];
            if i == h.join_via {
                continue;
            }
            let lonely = h.node.as_ref().is_some_and(|m| m.num_members() == 0);
            if lonely && self.now >= h.last_join + JOIN_RETRY {
                self.hosts[i].last_join = self.now;
                self.push(self.now, Happening::Wake(i));
            }
        }
    }

    fn push(&mut self, at: Duration, what: Happening) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, what)));
    }

    /// Processes every happening up to `until`, then sets the clock there.
    fn advance_to(&mut self, until: Duration) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            let Some(Reverse((at, _, what))) = self.queue.pop() else {
                break;
            };
            self.now = at;
            match what {
                Happening::Wake(i) => self.wake(i),
                Happening::Deliver { to, from, bytes } => self.deliver(to, from, &bytes),
            }
        }
        self.now = until;
    }

    fn wake(&mut self, i: usize) {
        let now = self.now;
        let h = &mut self.hosts[i];
        let Some(m) = h.node.as_mut() else {
            return;
        };
        if h.last_join == now && m.num_members() == 0 {
            let _ = m.join(now, host_addr(h.join_via));
        }
        if m.poll_timeout().is_some_and(|t| t <= now) {
            m.handle_timeout(now);
        }
        self.drain(i);
    }

    fn deliver(&mut self, to: usize, from: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        let h = &mut self.hosts[to];
        let Some(m) = h.node.as_mut() else {
            return;
        };
        match h.keyring.open(UNIX_BASE_MS + now.as_millis() as u64, bytes) {
            Ok(payload) => {
                if m.handle_data(now, from, &payload, &mut h.receiver).is_err() {
                    self.traffic.rejected += 1;
                }
            }
            Err(_) => self.traffic.open_errors += 1,
        }
        for key in std::mem::take(&mut self.hosts[to].receiver.fresh) {
            *self.reach.entry(key).or_default() += 1;
        }
        self.drain(to);
    }

    /// Sends host `i`'s packets, records its events and re-arms its wake-up.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        let unix_ms = UNIX_BASE_MS + now.as_millis() as u64;
        let mut sends = Vec::new();
        let mut events = Vec::new();
        let h = &mut self.hosts[i];
        let Some(m) = h.node.as_mut() else {
            return;
        };
        while let Some(t) = m.poll_transmit() {
            if let Ok(sealed) = h.keyring.seal(unix_ms, &t.payload) {
                sends.push((t.to, sealed));
            }
        }
        while let Some(e) = m.poll_event() {
            events.push(e);
        }
        let next = m.poll_timeout();
        let rearm = next != h.wake;
        h.wake = next;
        let from = h.addr;
        if rearm && let Some(at) = next {
            self.push(at.max(now), Happening::Wake(i));
        }
        for (to, bytes) in sends {
            self.traffic.packets += 1;
            self.traffic.bytes += bytes.len() as u64;
            let Some(&j) = self.by_addr.get(&to) else {
                continue;
            };
            match self.network.transit(&mut self.rng, i, j) {
                Some(delay) => self.push(now + delay, Happening::Deliver { to: j, from, bytes }),
                None => self.traffic.dropped += 1,
            }
        }
        for e in events {
            self.record(i, e);
        }
    }

    fn record(&mut self, observer: usize, event: MemberEvent) {
        if let MemberEvent::Rejoined(_) = event {
            self.expulsions.push((self.now, observer));
        }
        if let MemberEvent::Down(subject) = event {
            let running = self
                .by_addr
                .get(&subject.addr)
                .is_some_and(|j| self.hosts[*j].node.is_some());
            self.down_observers
                .entry(subject.addr)
                .or_default()
                .insert(observer);
            self.downs.push(DownVerdict {
                at: self.now,
                observer,
                subject,
                was_running: running,
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
