//! Gossip in the agent: the I/O side of `rhizome_gossip`.
//!
//! - [`replica::Replica`]: the replicated signed state (catalog, certificates, intentions,
//!   keyring), persisted in the store; on `Shared.replica`.
//! - [`authority::AgentAuthority`]: who may write what, checked with the mesh CA.
//! - [`driver`]: the membership task owning the gossip UDP socket (`ports.gossip`).
//! - [`antientropy`]: push/pull state exchanges over TCP on the same port number.
//! - [`keys`]: the keyring from `encrypt`, rotated mesh-wide through `keyring/...` entries.
//! - [`catalog`] and [`health`]: local services published with their checks' health, and
//!   `Shared.catalog` rebuilt from the state and the member table.
//! - [`api`]: `/v1/members`, `/v1/catalog/...`, `/v1/join`, `/v1/leave`, `/v1/keyring`.
//!
//! [`Gossip`] is the handle the API uses (`Shared.gossip`). [`bind`] opens the sockets in
//! `Agent::start`; [`spawn`] starts every task once `Shared` exists.

pub mod antientropy;
pub mod api;
pub mod authority;
pub mod catalog;
pub mod driver;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod replica;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rhizome_gossip::membership::{Membership, MembershipConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::agent::Shared;
use crate::config::{AgentConfig, GossipConfig};
use crate::store::Store;
use driver::{Command, Driver, MemberRow, SyncRequest};
use keys::Keys;
use metrics::GossipMetrics;
use replica::{Outgoing, Replica};

/// Wall-clock milliseconds since the Unix epoch (the gossip crate takes time as an argument).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Resolves once `shutdown` is true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Why a join or leave request failed. The caller's fault (bad address) or the agent's
/// (gossip stopped).
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// The address did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// The membership task is not running (the agent is stopping).
    #[error("gossip is not running")]
    Stopped,
    /// Nobody answered in time.
    #[error("no answer from {0} within {1:?}")]
    NoAnswer(String, Duration),
}

/// Handle on the running gossip layer, for the API and other tasks.
pub struct Gossip {
    addr: SocketAddr,
    members: watch::Receiver<Arc<Vec<MemberRow>>>,
    commands: mpsc::Sender<Command>,
    keys: Arc<Keys>,
    metrics: Arc<GossipMetrics>,
}

impl Gossip {
    /// This agent's gossip address (advertise address and bound port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current member table (this agent included).
    pub fn members(&self) -> Arc<Vec<MemberRow>> {
        self.members.borrow().clone()
    }

    /// A receiver of the member table.
    pub fn subscribe_members(&self) -> watch::Receiver<Arc<Vec<MemberRow>>> {
        self.members.clone()
    }

    /// The keyring.
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    /// Announces to `address` (`host:port` of a gossip port) and waits up to `wait` for a
    /// member at that address to be alive.
    pub async fn join(&self, address: &str, wait: Duration) -> Result<usize, GossipError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address)
            .await
            .map_err(|_| GossipError::Resolve(address.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(GossipError::Resolve(address.to_string()));
        }
        self.commands
            .send(Command::Join(addrs.clone()))
            .await
            .map_err(|_| GossipError::Stopped)?;
        let mut members = self.members.clone();
        let reached = |rows: &Arc<Vec<MemberRow>>| {
            rows.iter()
                .any(|m| addrs.contains(&m.address) && m.status == driver::Status::Alive)
        };
        match tokio::time::timeout(wait, members.wait_for(reached)).await {
            Ok(Ok(rows)) => Ok(rows.len()),
            Ok(Err(_)) => Err(GossipError::Stopped),
            Err(_) => Err(GossipError::NoAnswer(address.to_string(), wait)),
        }
    }

    /// Leaves the cluster gracefully (the agent keeps running; `join` brings it back).
    pub async fn leave(&self) -> Result<(), GossipError> {
        let (done, sent) = oneshot::channel();
        self.commands
            .send(Command::Leave(done))
            .await
            .map_err(|_| GossipError::Stopped)?;
        sent.await.map_err(|_| GossipError::Stopped)
    }
}

/// What [`bind`] prepared for [`spawn`].
pub struct Pending {
    driver: Driver,
    listener: TcpListener,
    sync_requests: mpsc::Receiver<SyncRequest>,
}

/// The membership tunables from the agent's `gossip { }` block.
pub fn membership_config(g: &GossipConfig) -> MembershipConfig {
    let ms = |d: &crate::duration::Dur| u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX);
    MembershipConfig {
        probe_interval_ms: ms(&g.probe_interval),
        probe_timeout_ms: ms(&g.probe_timeout),
        suspicion_mult: g.suspicion_mult,
        gossip_interval_ms: ms(&g.gossip_interval),
        gossip_nodes: usize::try_from(g.gossip_nodes).unwrap_or(usize::MAX),
        retransmit_mult: g.retransmit_mult,
        push_pull_interval_ms: ms(&g.push_pull_interval),
        ..MembershipConfig::default()
    }
}

/// Binds the gossip UDP socket and the anti-entropy TCP listener on the same port (port 0
/// picks one free for both), builds the keyring and the membership state machine.
pub async fn bind(
    config: &AgentConfig,
    store: &Store,
    replica: &Arc<Replica>,
    outgoing: mpsc::UnboundedReceiver<Outgoing>,
) -> anyhow::Result<(Arc<Gossip>, Pending)> {
    let (socket, listener) = bind_pair(config.gossip_addr()).await?;
    let port = socket.local_addr()?.port();
    let addr = SocketAddr::new(config.advertise_addr, port);
    let config_key = config
        .encrypt
        .as_deref()
        .map(str::parse::<rhizome_gossip::keyring::Key>)
        .transpose()
        .context("encrypt: not a gossip key (use `rhizome keyring generate`)")?;
    if config_key.is_none() {
        tracing::warn!("no `encrypt` key: gossip travels in the clear");
    }
    let keys = Arc::new(Keys::new(config_key, rand::random()));
    let mconfig = membership_config(&config.gossip);
    mconfig.validate()?;
    let generation = driver::next_generation(store)?;
    let id = driver::node_id(&config.node_name, addr, generation)?;
    let membership = Membership::new(id.clone(), mconfig.clone(), rand::random())?;
    let (members_tx, members_rx) = watch::channel(Arc::new(Vec::new()));
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let (sync_tx, sync_rx) = mpsc::channel(64);
    let metrics = Arc::new(GossipMetrics::default());
    let driver = Driver {
        socket,
        membership,
        config: mconfig,
        id,
        keys: keys.clone(),
        replica: replica.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        members: members_tx,
        sync: sync_tx,
        commands: commands_rx,
        outgoing,
        seeds: config.retry_join.clone(),
    };
    tracing::info!(gossip = %addr, incarnation = generation.0, "gossip bound");
    let gossip = Arc::new(Gossip {
        addr,
        members: members_rx,
        commands: commands_tx,
        keys,
        metrics,
    });
    Ok((
        gossip,
        Pending {
            driver,
            listener,
            sync_requests: sync_rx,
        },
    ))
}

/// UDP and TCP on one port number; with port 0, retries until both bind.
async fn bind_pair(addr: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let socket = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot bind the gossip UDP socket on {addr}"))?;
        let bound = socket.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(listener) => return Ok((socket, listener)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot bind the anti-entropy TCP listener on {bound}")
                });
            }
        }
    }
    Err(anyhow::anyhow!(
        "cannot find a port free for both UDP and TCP gossip: {last:?}"
    ))
}

/// Starts the gossip tasks: membership driver, anti-entropy server and initiator, keyring
/// follower, health checks, catalog publisher and builder.
pub fn spawn(pending: Pending, shared: &Arc<Shared>, tasks: &mut JoinSet<anyhow::Result<()>>) {
    let gossip = &shared.gossip;
    gossip.metrics.register(&shared.metrics);
    let stop = shared.shutdown.clone();
    tasks.spawn(pending.driver.run(stop.clone()));
    tasks.spawn(antientropy::serve(
        pending.listener,
        shared.replica.clone(),
        gossip.keys.clone(),
        gossip.metrics.clone(),
        stop.clone(),
    ));
    let initiator = antientropy::Initiator {
        requests: pending.sync_requests,
        members: gossip.subscribe_members(),
        own_addr: gossip.addr,
        replica: shared.replica.clone(),
        keys: gossip.keys.clone(),
        metrics: gossip.metrics.clone(),
        interval: shared
            .config
            .gossip
            .push_pull_interval
            .0
            .max(Duration::from_millis(100)),
    };
    tasks.spawn(initiator.run(stop.clone()));
    let (keys, replica, s) = (gossip.keys.clone(), shared.replica.clone(), stop.clone());
    tasks.spawn(async move {
        keys::follow(keys, replica, s).await;
        Ok(())
    });
    let results = health::spawn(&shared.config.services, tasks, &stop);
    tasks.spawn(catalog::publisher(shared.clone(), results));
    tasks.spawn(catalog::builder(shared.clone()));
}
