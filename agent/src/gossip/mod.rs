//! Gossip in the agent: the I/O side of `rhizome_gossip`.
//!
//! - [`replica::Replica`]: the replicated signed state (catalog, certificates, intentions,
//!   keyring), persisted in the store.
//! - [`authority::AgentAuthority`]: who may write what, checked with the mesh CA.
//! - [`driver`]: the membership task owning the gossip UDP socket (`ports.gossip`).
//! - [`antientropy`]: push/pull state exchanges over TCP on the same port number.
//! - [`keys`]: the keyring from `encrypt`, rotated mesh-wide through `keyring/...` entries.
//! - [`catalog`] and [`health`]: local services published with their checks' health, and
//!   the catalog rebuilt from the state and the member table (the builder owns the
//!   catalog's only write end).
//! - [`api`]: `/v1/members`, `/v1/catalog/...`, `/v1/join`, `/v1/leave`, `/v1/keyring`.
//!
//! [`Gossip`] is the handle the API uses. [`bind`] opens the sockets in `Agent::start`;
//! [`spawn`] starts every task with its [`Inputs`].

pub(crate) mod antientropy;
pub(crate) mod api;
pub mod authority;
pub(crate) mod catalog;
pub(crate) mod driver;
pub(crate) mod health;
pub mod keys;
pub(crate) mod metrics;
pub(crate) mod replica;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rhizome_gossip::membership::{Membership, MembershipConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::api::types::MemberRow;
use crate::catalog::CatalogWriter;
use crate::config::{AgentConfig, ConfigReader, GossipConfig};
use crate::metrics::Metrics;
use crate::runtime::Shutdown;
use crate::store::Store;
use driver::{Command, Driver, SyncRequest};
use keys::Keys;
use metrics::GossipMetrics;
use replica::{Outgoing, Replica};

/// Wall-clock milliseconds since the Unix epoch (the gossip crate takes time as an argument).
pub fn now_ms() -> u64 {
    crate::runtime::now_unix_ms()
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
                .any(|m| addrs.contains(&m.address) && m.status == crate::api::types::Status::Alive)
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
    let (udp, tcp) = crate::runtime::bind_udp_tcp(addr, 16, "gossip").await?;
    udp.set_nonblocking(true)?;
    Ok((UdpSocket::from_std(udp)?, tcp))
}

/// What the agent gives the gossip tasks.
pub struct Inputs {
    /// The configuration at start (gossip settings).
    pub config: Arc<AgentConfig>,
    /// The configuration in force (services and their checks change on a reload).
    pub live: ConfigReader,
    /// The handle [`bind`] returned.
    pub gossip: Arc<Gossip>,
    /// The replicated signed state.
    pub replica: Arc<Replica>,
    /// The catalog's only write end, moved into the builder.
    pub catalog: CatalogWriter,
    /// The registry gossip's families are added to.
    pub metrics: Arc<Metrics>,
    /// Ends every task (the driver leaves gracefully first).
    pub shutdown: Shutdown,
}

/// Starts the gossip tasks: membership driver, anti-entropy server and initiator, keyring
/// follower, trust follower (drops entries of revoked signers), health checks, catalog publisher and builder.
pub fn spawn(pending: Pending, inputs: Inputs, tasks: &mut JoinSet<anyhow::Result<()>>) {
    let Inputs {
        config,
        live,
        gossip,
        replica,
        catalog: catalog_writer,
        metrics,
        shutdown: stop,
    } = inputs;
    gossip.metrics.register(&metrics);
    tasks.spawn(pending.driver.run(stop.clone()));
    let server = antientropy::Server {
        replica: replica.clone(),
        keys: gossip.keys.clone(),
        metrics: gossip.metrics.clone(),
        accept_errors: metrics.accept_errors.clone(),
        refusals: metrics.refusals.clone(),
    };
    tasks.spawn(server.run(pending.listener, stop.clone()));
    let initiator = antientropy::Initiator {
        requests: pending.sync_requests,
        members: gossip.subscribe_members(),
        own_addr: gossip.addr,
        replica: replica.clone(),
        keys: gossip.keys.clone(),
        metrics: gossip.metrics.clone(),
        interval: config
            .gossip
            .push_pull_interval
            .0
            .max(Duration::from_millis(100)),
    };
    tasks.spawn(initiator.run(stop.clone()));
    let (keys, r, s) = (gossip.keys.clone(), replica.clone(), stop.clone());
    tasks.spawn(async move {
        keys::follow(keys, r, s).await;
        Ok(())
    });
    let (r, s) = (replica.clone(), stop.clone());
    tasks.spawn(async move {
        r.follow_trust(s).await;
        Ok(())
    });
    let results = health::spawn(live.clone(), tasks, &stop);
    tasks.spawn(catalog::publisher(
        live,
        replica.clone(),
        results,
        stop.clone(),
    ));
    tasks.spawn(
        catalog::Builder {
            replica,
            members: gossip.subscribe_members(),
            reap_after: config.gossip.reap_after.0,
            catalog: catalog_writer,
        }
        .run(stop),
    );
}
