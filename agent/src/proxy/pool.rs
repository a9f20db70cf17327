//! Tunnels to peer agents. QUIC: one long-lived connection per (peer agent, source
//! service, destination service), reused by every proxied connection between them (one
//! stream each), opened lazily with one attempt at a time and evicted when it closes. The
//! client presents the source workload's leaf and dials the destination's mesh DNS name as
//! SNI, so the peer serves — and we verify — the destination service's leaf. TLS: a new
//! connection per proxied connection on the peer's TCP data port, same certificates.

use super::meters::{ProxyMetrics, TransportLabel};
use super::relay::{TlsConn, TunnelRx, TunnelTx};
use super::transport::Transports;
use super::wire::{ALPN_QUIC, ALPN_TLS};
use crate::ca::identity::Identity;
use crate::readahead::ReadAhead;
use anyhow::Context as _;
use rhizome_intentions::ServiceRef;
use rustls_pki_types::ServerName;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;

/// Who talks to whom over one pooled connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The peer agent's data-plane address.
    pub agent: SocketAddr,
    /// The local source service whose leaf is presented.
    pub source: ServiceRef,
    /// The destination service whose leaf the peer must present.
    pub destination: ServiceRef,
}

type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// Outbound tunnel factory of one agent.
pub struct Pool {
    endpoint: quinn::Endpoint,
    identity: Arc<Identity>,
    transports: Arc<Transports>,
    quic_clients: Mutex<HashMap<ServiceRef, quinn::ClientConfig>>,
    tls_clients: Mutex<HashMap<ServiceRef, Arc<rustls::ClientConfig>>>,
    slots: Arc<Mutex<HashMap<PoolKey, Slot>>>,
    connect_timeout: Duration,
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
        connect_timeout: Duration,
        metrics: ProxyMetrics,
    ) -> Pool {
        Pool {
            endpoint,
            identity,
            transports,
            quic_clients: Mutex::new(HashMap::new()),
            tls_clients: Mutex::new(HashMap::new()),
            slots: Arc::new(Mutex::new(HashMap::new())),
            connect_timeout,
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

    /// The pooled connection for `key`, connecting if there is none (one attempt at a time
    /// per key; concurrent callers wait for it and share the result).
    pub async fn connection(&self, key: &PoolKey) -> anyhow::Result<quinn::Connection> {
        let slot = lock(&self.slots).entry(key.clone()).or_default().clone();
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref()
            && conn.close_reason().is_none()
        {
            return Ok(conn.clone());
        }
        *guard = None;
        let conn = self.connect(key).await?;
        *guard = Some(conn.clone());
        drop(guard);
        self.evict_on_close(key.clone(), slot, conn.clone());
        Ok(conn)
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
            let mut guard = slot.lock().await;
            if guard
                .as_ref()
                .is_some_and(|c| c.stable_id() == conn.stable_id())
            {
                *guard = None;
                drop(guard);
                if let Some(slots) = slots.upgrade() {
                    let mut map = lock(&slots);
                    if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                        map.remove(&key);
                    }
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

    /// Opens one stream on the pooled connection for `key`.
    pub async fn open_quic(&self, key: &PoolKey) -> anyhow::Result<(TunnelTx, TunnelRx)> {
        let conn = self.connection(key).await?;
        let (send, recv) = tokio::time::timeout(self.connect_timeout, conn.open_bi())
            .await
            .map_err(|_| anyhow::anyhow!("no stream credit from {} in time", key.agent))??;
        Ok((TunnelTx::Quic(send), TunnelRx::Quic(recv)))
    }

    /// Opens a TLS connection for one proxied connection.
    pub async fn open_tls(&self, key: &PoolKey) -> anyhow::Result<(TunnelTx, TunnelRx)> {
        let cfg = self.tls_client(&key.source)?;
        let sni = server_name(&self.identity, &key.destination)?;
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
        let (r, w) = tokio::io::split(TlsConn::from(tls));
        Ok((TunnelTx::Tls(w), TunnelRx::Tls(r)))
    }
}
