//! The membership driver: one task owning the gossip UDP socket and the
//! [`Membership`] state machine. It selects over received packets, the state machine's next
//! timer, commands from the API (join, leave), state items to broadcast and a one-second
//! upkeep tick; after every input it seals and sends what membership queued, reacts to its
//! events and republishes the member table.
//!
//! Seeds (`retry_join`) are retried with exponential backoff (from the probe interval, doubled
//! up to [`MAX_JOIN_BACKOFF`]) until one answers. An agent that lost every member (they
//! failed, left, or restarted as seeds do) goes back to that: it announces itself to its
//! seeds and to the members it knew, with the same backoff, for as long as it stays alone,
//! so a mesh never stays split for want of a manual `rhizome join`. On shutdown the node leaves gracefully
//! before the task ends. Each process takes a new generation from the store, so peers tell a
//! restarted agent from its previous life.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rhizome_gossip::membership::{
    Generation, MemberEvent, MemberStatus, Membership, MembershipConfig, NodeId, NodeName,
};
use rhizome_gossip::state::Key;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::keys::Keys;
use super::metrics::GossipMetrics;
use super::now_ms;
use super::replica::{Outgoing, Replica};
use crate::api::types::{MemberRow, Status};
use crate::store::{Store, TreeName};

/// Longest wait between two rounds of join attempts.
pub const MAX_JOIN_BACKOFF: Duration = Duration::from_secs(30);

/// For this many probe intervals after joining, this agent announces itself directly to each
/// member it learns of, so members that missed the epidemic news of its arrival learn it at
/// once instead of at the next member-table exchange.
const JOIN_WINDOW_PROBES: u32 = 10;

/// Most member addresses remembered for rejoining after isolation.
const MAX_KNOWN: usize = 256;

/// Most remembered member addresses announced to per rejoin attempt (taken in turn).
const KNOWN_PER_ATTEMPT: usize = 16;

/// Store key of the last generation used (in the `Meta` tree).
const GENERATION_KEY: &[u8] = b"gossip_generation";

impl From<MemberStatus> for Status {
    fn from(s: MemberStatus) -> Self {
        match s {
            MemberStatus::Alive => Status::Alive,
            MemberStatus::Suspect => Status::Suspect,
            MemberStatus::Failed => Status::Failed,
            MemberStatus::Left => Status::Left,
        }
    }
}

/// What the API asks of the driver.
#[derive(Debug)]
pub enum Command {
    /// Announce to these gossip addresses (rejoining first after a leave).
    Join(Vec<SocketAddr>),
    /// Leave gracefully; the sender learns when the leave was sent.
    Leave(oneshot::Sender<()>),
}

/// What the driver asks of the anti-entropy task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncRequest {
    /// Exchange with this member: it just came up and we lack its certificate (`cert`, the
    /// key of that entry). Skipped if the entry arrived meanwhile (by an earlier exchange):
    /// during a join storm most do, and an exchange per member would be O(n²) work.
    Peer {
        /// The member's gossip address.
        addr: SocketAddr,
        /// Its `certs/<node>` key.
        cert: Key,
    },
    /// Exchange with a random alive member (after joining).
    Random,
}

/// The driver's inputs and outputs, built by [`super::bind`].
pub struct Driver {
    pub(super) socket: UdpSocket,
    pub(super) membership: Membership,
    pub(super) config: MembershipConfig,
    pub(super) id: NodeId,
    pub(super) keys: Arc<Keys>,
    pub(super) replica: Arc<Replica>,
    pub(super) store: Store,
    pub(super) metrics: Arc<GossipMetrics>,
    pub(super) members: watch::Sender<Arc<Vec<MemberRow>>>,
    pub(super) sync: mpsc::Sender<SyncRequest>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) outgoing: mpsc::UnboundedReceiver<Outgoing>,
    pub(super) seeds: Vec<String>,
}

/// Join retry state.
struct Retry {
    at: Instant,
    backoff: Duration,
}

/// The next generation for this node, persisted (flushed to disk before it is used) so it
/// only grows: an agent killed moments after starting must not come back under the same
/// generation, or peers would not see it restarted (and keep their connections to the dead
/// process).
pub fn next_generation(store: &Store) -> anyhow::Result<Generation> {
    let generation = Generation(store.increment(TreeName::Meta, GENERATION_KEY, 1)?);
    store.flush()?;
    Ok(generation)
}

struct Running {
    d: Driver,
    start: Instant,
    retry: Option<Retry>,
    left: bool,
    /// Until when members we learn of get a direct announce (see [`JOIN_WINDOW_PROBES`]).
    greet_until: Option<Instant>,
    /// Gossip addresses of members seen up (at most [`MAX_KNOWN`]): tried again, with the
    /// seeds, when this agent is left alone.
    known: std::collections::BTreeSet<SocketAddr>,
    /// Rejoin attempts so far (which slice of `known` the next one announces to).
    attempts: usize,
}

impl Driver {
    /// Runs until `shutdown` turns true, then leaves the cluster.
    pub async fn run(self, shutdown: crate::runtime::Shutdown) -> anyhow::Result<()> {
        let first = Duration::from_millis(self.config.probe_interval_ms);
        let retry = (!self.seeds.is_empty()).then(|| Retry {
            at: Instant::now(),
            backoff: first,
        });
        let mut r = Running {
            d: self,
            start: Instant::now(),
            retry,
            left: false,
            greet_until: None,
            known: std::collections::BTreeSet::new(),
            attempts: 0,
        };
        let mut buf = vec![0u8; 65_536];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let timer = r.d.membership.poll_timeout().map(|d| r.start + d);
            let retry_at = r.retry.as_ref().map(|x| x.at);
            tokio::select! {
                biased;
                () = shutdown.wait() => break,
                got = r.d.socket.recv_from(&mut buf) => match got {
                    Ok((n, from)) => r.on_packet(&buf[..n], from),
                    Err(e) => tracing::debug!(error = %e, "gossip receive failed"),
                },
                () = sleep_until(timer) => {
                    let now = r.now();
                    r.d.membership.handle_timeout(now);
                }
                Some(cmd) = r.d.commands.recv() => r.on_command(cmd).await,
                Some(out) = r.d.outgoing.recv() => r.broadcast(out),
                () = sleep_until(retry_at) => r.retry_join().await,
                _ = tick.tick() => r.upkeep(),
            }
            r.flush().await;
        }
        if !r.left {
            r.leave().await;
        }
        Ok(())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Running {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn on_packet(&mut self, packet: &[u8], from: SocketAddr) {
        self.d.metrics.packet_received();
        let payload = match self.d.keys.open(now_ms(), packet) {
            Ok(p) => p,
            Err(reason) => {
                self.d.metrics.drop_packet(reason, from);
                return;
            }
        };
        if self.left {
            return;
        }
        let now = self.now();
        let membership = &mut self.d.membership;
        let res = self
            .d
            .replica
            .with_state(|state| membership.handle_data(now, from, &payload, state));
        if let Err(e) = res {
            self.d.metrics.drop_malformed(from, &e);
        }
    }

    fn broadcast(&mut self, out: Outgoing) {
        if let Err(e) = self.d.membership.broadcast(out.key, &out.item) {
            tracing::debug!(error = %e, "entry travels by anti-entropy only");
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Join(addrs) => {
                if self.left {
                    self.rejoin();
                }
                let now = self.now();
                for addr in addrs {
                    tracing::info!(peer.addr = %addr, "joining");
                    if let Err(e) = self.d.membership.join(now, addr) {
                        tracing::warn!(peer.addr = %addr, error = %e, "join failed");
                    }
                }
            }
            Command::Leave(done) => {
                self.leave().await;
                let _ = done.send(());
            }
        }
    }

    /// A fresh membership with a new generation, after a graceful leave.
    fn rejoin(&mut self) {
        let generation = match next_generation(&self.d.store) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "cannot persist the gossip generation");
                Generation(self.d.id.generation.0 + 1)
            }
        };
        self.d.id = NodeId::new(self.d.id.name.clone(), self.d.id.addr, generation);
        match Membership::new(self.d.id.clone(), self.d.config.clone(), rand::random()) {
            Ok(m) => {
                self.d.membership = m;
                self.start = Instant::now();
                self.left = false;
            }
            Err(e) => tracing::warn!(error = %e, "cannot restart membership"),
        }
    }

    async fn leave(&mut self) {
        let now = self.now();
        if let Err(e) = self.d.membership.leave(now) {
            tracing::warn!(error = %e, "leave failed");
        }
        self.flush().await;
        self.left = true;
        self.retry = None;
        tracing::info!(node = %self.d.id.name, "left the gossip cluster");
    }

    async fn retry_join(&mut self) {
        let Some(retry) = self.retry.as_mut() else {
            return;
        };
        let backoff = retry.backoff;
        retry.backoff = (backoff * 2).min(MAX_JOIN_BACKOFF);
        retry.at = Instant::now() + backoff;
        let mut addrs = Vec::new();
        for seed in &self.d.seeds {
            match tokio::net::lookup_host(seed.as_str()).await {
                Ok(found) => addrs.extend(found.filter(|a| *a != self.d.id.addr)),
                Err(e) => tracing::warn!(seed = %seed, error = %e, "cannot resolve seed"),
            }
        }
        let known = self.known_slice();
        tracing::info!(
            seeds = ?self.d.seeds,
            known = ?known,
            next_attempt_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
            "joining the gossip cluster"
        );
        for addr in known {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        self.on_command(Command::Join(addrs)).await;
    }

    /// The remembered members to announce to in this attempt: all of them, or the next
    /// [`KNOWN_PER_ATTEMPT`] in turn.
    fn known_slice(&mut self) -> Vec<SocketAddr> {
        let all: Vec<SocketAddr> = self.known.iter().copied().collect();
        if all.len() <= KNOWN_PER_ATTEMPT {
            return all;
        }
        let start = (self.attempts * KNOWN_PER_ATTEMPT) % all.len();
        self.attempts = self.attempts.wrapping_add(1);
        all.iter()
            .cycle()
            .skip(start)
            .take(KNOWN_PER_ATTEMPT)
            .copied()
            .collect()
    }

    /// Starts the join retries if this agent, not leaving, knows no active member and has
    /// someone to ask (seeds or members it knew). Retries stop when it is `Joined` again.
    fn retry_if_alone(&mut self) {
        let alone = self.d.membership.num_members() == 0;
        let has_targets = !self.d.seeds.is_empty() || !self.known.is_empty();
        if self.left || self.retry.is_some() || !alone || !has_targets {
            return;
        }
        let first = Duration::from_millis(self.d.config.probe_interval_ms);
        tracing::warn!(
            seeds = self.d.seeds.len(),
            known = self.known.len(),
            "no gossip member left: trying seeds and known members again"
        );
        self.retry = Some(Retry {
            at: Instant::now() + first,
            backoff: first,
        });
    }

    /// Seals and sends every queued packet, handles events (which may queue more packets),
    /// republishes the member table.
    async fn flush(&mut self) {
        loop {
            let mut idle = true;
            while let Some(t) = self.d.membership.poll_transmit() {
                idle = false;
                match self.d.keys.seal(now_ms(), &t.payload) {
                    Ok(sealed) => match self.d.socket.send_to(&sealed, t.to).await {
                        Ok(_) => self.d.metrics.packet_sent(),
                        Err(e) => {
                            tracing::debug!(peer.addr = %t.to, error = %e, "gossip send failed");
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "cannot seal a gossip packet"),
                }
            }
            while let Some(event) = self.d.membership.poll_event() {
                idle = false;
                self.on_event(event);
            }
            if idle {
                break;
            }
        }
        let rows = Arc::new(self.rows());
        self.d.members.send_if_modified(|current| {
            if **current == *rows {
                false
            } else {
                *current = rows;
                true
            }
        });
    }

    fn on_event(&mut self, event: MemberEvent) {
        match event {
            MemberEvent::Up(id) => {
                tracing::info!(peer.node = %id.name, peer.addr = %id.addr, incarnation = id.generation.0, "member up");
                if self.known.len() < MAX_KNOWN && id.addr != self.d.id.addr {
                    self.known.insert(id.addr);
                }
                if let Ok(node) = id.name.as_str().parse() {
                    let cert = Key::Certs(node);
                    if self.d.replica.get(&cert).is_none() {
                        let _ = self.d.sync.try_send(SyncRequest::Peer {
                            addr: id.addr,
                            cert,
                        });
                    }
                }
                if self.greet_until.is_some_and(|t| Instant::now() < t) {
                    self.greet(id.addr);
                }
            }
            MemberEvent::Suspect(id) => {
                tracing::info!(peer.node = %id.name, peer.addr = %id.addr, "member suspect");
            }
            MemberEvent::Down(id) => {
                tracing::warn!(peer.node = %id.name, peer.addr = %id.addr, "member failed");
            }
            MemberEvent::Left(id) => {
                tracing::info!(peer.node = %id.name, peer.addr = %id.addr, "member left");
            }
            MemberEvent::Replaced { old, new } => tracing::info!(
                peer.node = %new.name,
                old = old.generation.0,
                new = new.generation.0,
                "member restarted"
            ),
            MemberEvent::Joined => {
                tracing::info!(
                    members = self.d.membership.num_members(),
                    "joined the gossip cluster"
                );
                self.retry = None;
                let _ = self.d.sync.try_send(SyncRequest::Random);
                let window =
                    Duration::from_millis(self.d.config.probe_interval_ms) * JOIN_WINDOW_PROBES;
                self.greet_until = Some(Instant::now() + window);
                let known: Vec<SocketAddr> = self
                    .d
                    .membership
                    .members()
                    .iter()
                    .skip(1)
                    .filter(|m| m.status == MemberStatus::Alive)
                    .map(|m| m.address)
                    .collect();
                for addr in known {
                    self.greet(addr);
                }
            }
            MemberEvent::Isolated => {
                tracing::warn!("no other gossip member is reachable");
                self.retry_if_alone();
            }
            MemberEvent::Rejoined(id) => {
                tracing::warn!(
                    incarnation = id.generation.0,
                    "declared down by the cluster: rejoined"
                );
                let _ = self.d.store.put(
                    TreeName::Meta,
                    GENERATION_KEY,
                    &id.generation.0.to_be_bytes(),
                );
                self.d.id = id;
            }
            MemberEvent::Defunct if self.left => tracing::info!("left the gossip cluster"),
            MemberEvent::Defunct => tracing::warn!("gossip identity defunct"),
            MemberEvent::Recheck {
                member,
                incarnation,
            } => tracing::info!(
                peer.node = %member.name,
                incarnation,
                "lone suspicion rechecked before its verdict"
            ),
            MemberEvent::Refuted(incarnation) => {
                tracing::info!(incarnation, "refuted a suspicion about us")
            }
        }
    }

    /// Announces ourselves to `addr` directly (it adds us and answers with members it knows).
    fn greet(&mut self, addr: SocketAddr) {
        let now = self.now();
        if let Err(e) = self.d.membership.join(now, addr) {
            tracing::debug!(peer.addr = %addr, error = %e, "announce failed");
        }
    }

    /// The member table, one row per node name (its newest generation).
    fn rows(&self) -> Vec<MemberRow> {
        let mut by_name: BTreeMap<String, MemberRow> = BTreeMap::new();
        for (i, m) in self.d.membership.members().into_iter().enumerate() {
            let status = if i == 0 && self.left {
                Status::Left
            } else {
                Status::from(m.status)
            };
            let row = MemberRow {
                node: m.node.to_string(),
                address: m.address,
                status,
                incarnation: m.incarnation.0,
            };
            match by_name.get(&row.node) {
                Some(old) if old.incarnation >= row.incarnation => {}
                _ => {
                    by_name.insert(row.node.clone(), row);
                }
            }
        }
        by_name.into_values().collect()
    }

    fn upkeep(&mut self) {
        self.retry_if_alone();
        let rows = self.d.members.borrow().clone();
        let (counters, len) = self
            .d
            .replica
            .with_state(|s| (s.counters().clone(), s.len()));
        self.d.metrics.refresh(&rows, &counters, len);
        self.d.metrics.lifeguard(&self.d.membership.stats());
    }
}

/// The membership identity of this agent.
pub fn node_id(name: &str, addr: SocketAddr, generation: Generation) -> anyhow::Result<NodeId> {
    let name: NodeName = name.parse()?;
    Ok(NodeId::new(name, addr, generation))
}
