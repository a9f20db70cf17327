//! Tunnels to peer agents. QUIC: long-lived connections per (peer agent, source service,
//! destination service), shared by every proxied connection between them (one stream each),
//! opened lazily with one attempt at a time and evicted when they close. Usually one: a peer
//! lets each connection carry a bounded number of concurrent streams
//! ([`super::transport::MAX_STREAMS`]), and when every pooled connection has all of its
//! streams in use another connection is opened, so the number of concurrent proxied
//! connections is limited by `proxy.max_connections` alone. The client presents the source
//! workload's leaf and dials the destination's mesh DNS name as SNI, so the peer serves — and
//! we verify — the destination service's leaf. TLS: a new connection per proxied connection
//! on the peer's TCP data port, same certificates (no stream limit to run into).
//!
//! A pooled connection never outlives its peer's process: each remembers the peer's
//! generation (from the member table) when it was opened, and is dropped — closed, so its
//! streams fail at once — when the member table shows the peer restarted (a new generation)
//! or failed ([`Pool::drop_stale`]), when the next proxied connection finds the generation
//! changed ([`Pool::stream`]), or when a stream on it heard nothing from the peer in time
//! ([`Pool::discard`]). quinn alone would keep a connection to a killed-and-restarted peer
//! until its idle timeout: the new process cannot answer for the old one's connection ids.
//!
//! Trust: a pooled connection whose peer chain no longer verifies after a trust change (a
//! revocation, a root removed) is closed at once ([`Pool::drop_untrusted`]), and one older
//! than `proxy { max_connection_age }` takes no new streams: the next proxied connection
//! opens a fresh one (a full handshake), the old one closes when its last tunnel ends.

use super::meters::{ProxyMetrics, TransportLabel};
use super::registry::PeerChain;
use super::relay::{TlsConn, TunnelRx, TunnelTx};
use super::transport::Transports;
use super::wire::{ALPN_QUIC, ALPN_TLS};
use crate::api::types::{MemberRow, Status};
use crate::ca::identity::Identity;
use crate::readahead::ReadAhead;
use anyhow::Context as _;
use futures::FutureExt as _;
use rhizome_intentions::ServiceRef;
use rustls_pki_types::{CertificateDer, ServerName};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Who talks to whom over one pooled connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The peer agent's data-plane address.
    pub agent: SocketAddr,
    /// The peer agent's node name (its member row tells when it restarted or failed).
    pub node: String,
    /// The local source service whose leaf is presented.
    pub source: ServiceRef,
    /// The destination service whose leaf the peer must present.
    pub destination: ServiceRef,
}

/// A pooled connection and the peer's generation when it was opened (`None`: the member
/// table did not know the peer then), when it was opened, and the chain its peer proved.
struct Pooled {
    conn: quinn::Connection,
    generation: Option<u64>,
    /// One clone per stream handed out and still in use (see [`StreamUse`]).
    users: Arc<()>,
    opened: tokio::time::Instant,
    peer: Option<Arc<PeerChain>>,
}

impl Pooled {
    /// Whether this connection may carry another stream for `key`: not closed, not to an
    /// earlier generation of the peer (closed then), not older than `max_age` (retired then:
    /// it closes after its last stream). `now` is the peer's generation now.
    fn keep(&mut self, key: &PoolKey, now: Option<u64>, max_age: Duration) -> bool {
        if self.conn.close_reason().is_some() {
            return false;
        }
        match (self.generation, now) {
            (Some(then), Some(now)) if then != now => {
                tracing::info!(peer.node = %key.node, peer.addr = %key.agent, then, now,
                    "pooled QUIC connection dropped: the peer restarted");
                self.conn.close(CLOSE_PEER_GONE.into(), b"peer restarted");
                false
            }
            _ if self.opened.elapsed() >= max_age => {
                tracing::debug!(peer.node = %key.node, peer.addr = %key.agent,
                    "pooled QUIC connection reached max_connection_age: dialling afresh");
                retire(self.conn.clone(), self.users.clone());
                false
            }
            _ => {
                self.generation = self.generation.or(now);
                true
            }
        }
    }
}

/// The pooled connections of one key, oldest first.
type Slot = Arc<tokio::sync::Mutex<Vec<Pooled>>>;

/// Marks a stream of a pooled connection as in use while it is held (a connection with none
/// is idle: the drain closes it at once).
pub struct StreamUse(#[allow(dead_code)] Arc<()>);

/// The member table as gossip publishes it.
pub type MembersRx = watch::Receiver<Arc<Vec<MemberRow>>>;

/// A new stream handed out by [`Pool::stream`], and the connection it is on.
pub struct Lease {
    /// The connection.
    pub conn: quinn::Connection,
    /// Whether it was already pooled (it may have died with its peer unnoticed), rather than
    /// opened for this call.
    pub reused: bool,
    /// The stream's sending half.
    pub tx: TunnelTx,
    /// The stream's receiving half.
    pub rx: TunnelRx,
    /// Keep while the stream is in use.
    pub in_use: StreamUse,
    /// The chain the peer proved in the handshake.
    pub peer: Option<Arc<PeerChain>>,
}

/// QUIC application close code: the peer restarted or failed (the connection leads nowhere).
const CLOSE_PEER_GONE: u32 = 2;
/// QUIC application close code: a stream heard nothing from the peer in time.
const CLOSE_SILENT: u32 = 3;
/// QUIC application close code: this agent is draining and the connection carries no stream.
pub const CLOSE_DRAINING: u32 = 4;
/// QUIC application close code: the connection reached `max_connection_age` and its last
/// tunnel ended.
const CLOSE_RETIRED: u32 = 5;
/// QUIC application close code: the peer's chain no longer verifies (revoked, or its root
/// left the trust bundle).
pub const CLOSE_UNTRUSTED: u32 = 6;
/// How often a retired connection looks whether its last tunnel ended.
const RETIRED_POLL: Duration = Duration::from_secs(1);

/// Outbound tunnel factory of one agent.
pub struct Pool {
    endpoint: quinn::Endpoint,
    identity: Arc<Identity>,
    transports: Arc<Transports>,
    quic_clients: Mutex<HashMap<ServiceRef, quinn::ClientConfig>>,
    tls_clients: Mutex<HashMap<ServiceRef, Arc<rustls::ClientConfig>>>,
    slots: Arc<Mutex<HashMap<PoolKey, Slot>>>,
    members: MembersRx,
    connect_timeout: Duration,
    max_age: Duration,
    metrics: ProxyMetrics,
    /// Agents a connection attempt failed to recently, and when.
    failures: Mutex<HashMap<SocketAddr, tokio::time::Instant>>,
}

/// How long an agent that could not be reached is tried only when nothing else is left.
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(5);

use crate::runtime::lock_unpoisoned as lock;

/// The SNI for a destination service: its mesh DNS name.
pub fn server_name(identity: &Identity, dst: &ServiceRef) -> anyhow::Result<ServerName<'static>> {
    let name = format!(
        "{}.{}.svc.{}",
        dst.name.as_str(),
        dst.namespace.as_str(),
        identity.trust_domain().as_str()
    );
    ServerName::try_from(name).context("destination name is not a DNS name")
}

impl Pool {
    /// A pool dialling from `endpoint` (the agent's QUIC endpoint, shared with inbound).
    pub fn new(
        endpoint: quinn::Endpoint,
        identity: Arc<Identity>,
        transports: Arc<Transports>,
        members: MembersRx,
        connect_timeout: Duration,
        max_age: Duration,
        metrics: ProxyMetrics,
    ) -> Pool {
        Pool {
            endpoint,
            identity,
            transports,
            quic_clients: Mutex::new(HashMap::new()),
            tls_clients: Mutex::new(HashMap::new()),
            slots: Arc::new(Mutex::new(HashMap::new())),
            members,
            connect_timeout,
            max_age,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn quic_client(&self, src: &ServiceRef) -> anyhow::Result<quinn::ClientConfig> {
        if let Some(c) = lock(&self.quic_clients).get(src) {
            return Ok(c.clone());
        }
        let tls = self.identity.client_config(
            src.namespace.as_str(),
            src.name.as_str(),
            vec![ALPN_QUIC.to_vec()],
        )?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let cfg = quinn::ClientConfig::new(Arc::new(crypto));
        lock(&self.quic_clients).insert(src.clone(), cfg.clone());
        Ok(cfg)
    }

    fn tls_client(&self, src: &ServiceRef) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        if let Some(c) = lock(&self.tls_clients).get(src) {
            return Ok(c.clone());
        }
        let cfg = Arc::new(self.identity.client_config(
            src.namespace.as_str(),
            src.name.as_str(),
            vec![ALPN_TLS.to_vec()],
        )?);
        lock(&self.tls_clients).insert(src.clone(), cfg.clone());
        Ok(cfg)
    }

    /// A new stream to the peer of `key`: on a pooled connection with a stream to spare,
    /// else on a new connection, which joins the pool (one attempt at a time per key;
    /// concurrent callers wait for it and share it). Pooled connections that are closed or
    /// lead to an earlier generation of the peer are dropped first.
    pub async fn stream(&self, key: &PoolKey) -> anyhow::Result<Lease> {
        let (slot, mut pooled) = self.slot(key).await;
        let generation = self.generation_of(&key.node);
        let max_age = self.max_age;
        pooled.retain_mut(|p| p.keep(key, generation, max_age));
        for p in pooled.iter() {
            // Ready at once while the peer allows another stream on this connection;
            // pending when all of them are in use.
            if let Some(Ok((send, recv))) = p.conn.open_bi().now_or_never() {
                return Ok(Lease {
                    conn: p.conn.clone(),
                    reused: true,
                    tx: TunnelTx::Quic(send),
                    rx: TunnelRx::Quic(recv),
                    in_use: StreamUse(p.users.clone()),
                    peer: p.peer.clone(),
                });
            }
        }
        if !pooled.is_empty() {
            tracing::info!(peer.node = %key.node, peer.addr = %key.agent, src = %key.source,
                dst = %key.destination, connections = pooled.len(),
                "every pooled QUIC connection to the peer has all its streams in use: opening another");
        }
        let trust_before = self.identity.bundle().generation();
        let conn = self.connect(key).await?;
        let peer = peer_chain(&conn);
        // The handshake may have verified the peer against the trust of before a change.
        if self.identity.bundle().generation() != trust_before
            && let Some(p) = &peer
            && let Err(e) = self.identity.still_trusts(&p.chain, p.usage)
        {
            conn.close(CLOSE_UNTRUSTED.into(), b"peer no longer trusted");
            anyhow::bail!("{} is no longer trusted: {e}", key.agent);
        }
        let users = Arc::new(());
        pooled.push(Pooled {
            conn: conn.clone(),
            generation,
            users: users.clone(),
            opened: tokio::time::Instant::now(),
            peer: peer.clone(),
        });
        drop(pooled);
        self.evict_on_close(key.clone(), slot, conn.clone());
        let (send, recv) = tokio::time::timeout(self.connect_timeout, conn.open_bi())
            .await
            .map_err(|_| anyhow::anyhow!("no stream credit from {} in time", key.agent))??;
        Ok(Lease {
            conn,
            reused: false,
            tx: TunnelTx::Quic(send),
            rx: TunnelRx::Quic(recv),
            in_use: StreamUse(users),
            peer,
        })
    }

    /// Closes every pooled connection whose peer chain `trusted` now refuses (after a trust
    /// change); returns how many. Their open streams fail at once; the next proxied
    /// connection dials afresh, and its handshake meets the new trust.
    pub fn drop_untrusted(&self, trusted: impl Fn(&PeerChain) -> bool) -> usize {
        self.each_pooled(|key, pooled| {
            let refused = pooled.conn.close_reason().is_none()
                && pooled.peer.as_deref().is_some_and(|p| !trusted(p));
            if refused {
                tracing::warn!(peer.node = %key.node, peer.addr = %key.agent, dst = %key.destination,
                    "pooled QUIC connection closed: the peer is no longer trusted");
                pooled
                    .conn
                    .close(CLOSE_UNTRUSTED.into(), b"peer no longer trusted");
            }
            refused
        })
    }

    /// The slot of `key`, locked. A slot whose last connection closed leaves the map (under
    /// its lock); one taken from the map just before is not used, so no connection is added
    /// to a slot nobody can find again.
    async fn slot(&self, key: &PoolKey) -> (Slot, tokio::sync::OwnedMutexGuard<Vec<Pooled>>) {
        let mut tries = 0;
        loop {
            let slot = lock(&self.slots).entry(key.clone()).or_default().clone();
            let guard = slot.clone().lock_owned().await;
            tries += 1;
            // Evictions race with this at most once or twice in a row.
            if tries >= 3
                || lock(&self.slots)
                    .get(key)
                    .is_some_and(|s| Arc::ptr_eq(s, &slot))
            {
                return (slot, guard);
            }
        }
    }

    /// Runs `f` on every pooled connection whose slot is not busy (being dialled); returns
    /// how many it returned true for.
    fn each_pooled(&self, mut f: impl FnMut(&PoolKey, &Pooled) -> bool) -> usize {
        let slots: Vec<(PoolKey, Slot)> = lock(&self.slots)
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        let mut hits = 0;
        for (key, slot) in slots {
            let Ok(pooled) = slot.try_lock() else {
                continue;
            };
            for p in pooled.iter() {
                if f(&key, p) {
                    hits += 1;
                }
            }
        }
        hits
    }

    /// Closes every pooled connection that carries no stream (the drain: no new stream will
    /// be opened); returns how many.
    pub fn close_idle(&self) -> usize {
        self.each_pooled(|key, p| {
            let idle = Arc::strong_count(&p.users) == 1 && p.conn.close_reason().is_none();
            if idle {
                tracing::debug!(peer.node = %key.node, peer.addr = %key.agent,
                    "idle pooled QUIC connection closed: draining");
                p.conn.close(CLOSE_DRAINING.into(), b"draining");
            }
            idle
        })
    }

    /// The generation of `node` in the member table, if it is listed.
    fn generation_of(&self, node: &str) -> Option<u64> {
        self.members
            .borrow()
            .iter()
            .find(|m| m.node == node)
            .map(|m| m.incarnation)
    }

    /// Closes every pooled connection whose peer, by `rows`, restarted (another generation)
    /// or failed; returns how many. A peer that left gracefully keeps its connections: it
    /// drains them and closes them itself. Connections being opened are left alone.
    pub fn drop_stale(&self, rows: &[MemberRow]) -> usize {
        self.each_pooled(|key, pooled| {
            let Some(row) = rows.iter().find(|m| m.node == key.node) else {
                return false;
            };
            let restarted = pooled.generation.is_some_and(|g| g != row.incarnation);
            let failed = row.status == Status::Failed && pooled.generation == Some(row.incarnation);
            let stale = (restarted || failed) && pooled.conn.close_reason().is_none();
            if stale {
                tracing::info!(peer.node = %key.node, peer.addr = %key.agent, status = %row.status,
                    generation = row.incarnation, "pooled QUIC connection dropped: the peer is gone");
                pooled.conn.close(CLOSE_PEER_GONE.into(), b"peer gone");
            }
            stale
        })
    }

    /// Closes `conn` (pooled for `key`): a stream on it heard nothing from the peer in time,
    /// so the peer is gone or unreachable, and the next proxied connection dials afresh.
    pub fn discard(&self, key: &PoolKey, conn: &quinn::Connection) {
        if conn.close_reason().is_none() {
            tracing::info!(peer.node = %key.node, peer.addr = %key.agent,
                "pooled QUIC connection dropped: the peer went silent");
            conn.close(CLOSE_SILENT.into(), b"peer silent");
        }
    }

    async fn connect(&self, key: &PoolKey) -> anyhow::Result<quinn::Connection> {
        let mut cfg = self.quic_client(&key.source)?;
        cfg.transport_config(self.transports.for_peer(key.agent));
        let sni = server_name(&self.identity, &key.destination)?;
        let started = tokio::time::Instant::now();
        let connecting = self.endpoint.connect_with(cfg, key.agent, &sni.to_str())?;
        let conn = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| anyhow::anyhow!("QUIC handshake with {} timed out", key.agent))??;
        self.metrics
            .handshake(TransportLabel::Quic, started.elapsed());
        tracing::debug!(peer = %key.agent, src = %key.source, dst = %key.destination, "quic connection up");
        Ok(conn)
    }

    fn evict_on_close(&self, key: PoolKey, slot: Slot, conn: quinn::Connection) {
        let slots = Arc::downgrade(&self.slots);
        tokio::spawn(async move {
            let reason = conn.closed().await;
            tracing::debug!(peer = %key.agent, reason = %reason, "quic connection closed");
            let mut pooled = slot.lock().await;
            pooled.retain(|p| p.conn.stable_id() != conn.stable_id());
            // The slot leaves the map under its own lock: no caller can have added a
            // connection to it in between.
            if pooled.is_empty()
                && let Some(slots) = slots.upgrade()
            {
                let mut map = lock(&slots);
                if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    map.remove(&key);
                }
            }
        });
    }

    /// Remembers that `agent` could not be reached (or clears it after a success).
    pub fn record(&self, agent: SocketAddr, reachable: bool) {
        let mut map = lock(&self.failures);
        if reachable {
            map.remove(&agent);
        } else {
            map.insert(agent, tokio::time::Instant::now());
        }
    }

    /// Whether `agent` failed within [`FAILURE_BACKOFF`].
    pub fn recently_failed(&self, agent: SocketAddr) -> bool {
        lock(&self.failures)
            .get(&agent)
            .is_some_and(|at| at.elapsed() < FAILURE_BACKOFF)
    }

    /// Opens a TLS connection for one proxied connection; also returns the chain the peer
    /// proved.
    pub async fn open_tls(
        &self,
        key: &PoolKey,
    ) -> anyhow::Result<(TunnelTx, TunnelRx, Arc<PeerChain>)> {
        let cfg = self.tls_client(&key.source)?;
        let sni = server_name(&self.identity, &key.destination)?;
        let trust_before = self.identity.bundle().generation();
        let started = tokio::time::Instant::now();
        let tls = tokio::time::timeout(self.connect_timeout, async {
            let tcp = TcpStream::connect(key.agent).await?;
            tcp.set_nodelay(true)?;
            tokio_rustls::TlsConnector::from(cfg)
                .connect(sni, ReadAhead::new(tcp))
                .await
        })
        .await
        .map_err(|_| anyhow::anyhow!("TLS connection to {} timed out", key.agent))??;
        self.metrics
            .handshake(TransportLabel::Tls, started.elapsed());
        let peer = Arc::new(PeerChain {
            chain: tls
                .get_ref()
                .1
                .peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
            usage: rhizome_ca::Usage::Server,
        });
        if self.identity.bundle().generation() != trust_before
            && let Err(e) = self.identity.still_trusts(&peer.chain, peer.usage)
        {
            anyhow::bail!("{} is no longer trusted: {e}", key.agent);
        }
        let (r, w) = tokio::io::split(TlsConn::from(tls));
        Ok((TunnelTx::Tls(w), TunnelRx::Tls(r), peer))
    }
}

/// The chain a QUIC peer proved in the handshake.
fn peer_chain(conn: &quinn::Connection) -> Option<Arc<PeerChain>> {
    let chain = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    Some(Arc::new(PeerChain {
        chain: *chain,
        usage: rhizome_ca::Usage::Server,
    }))
}

/// Takes a connection that reached its maximum age out of service: it serves its open
/// tunnels and is closed once the last of them ended (or when it closes by itself).
fn retire(conn: quinn::Connection, uses: Arc<()>) {
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(RETIRED_POLL);
        loop {
            tokio::select! {
                _ = conn.closed() => return,
                _ = poll.tick() => {
                    // Only this task holds the token: no stream is left.
                    if Arc::strong_count(&uses) == 1 {
                        conn.close(CLOSE_RETIRED.into(), b"max connection age");
                        return;
                    }
                }
            }
        }
    });
}
