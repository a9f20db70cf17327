//! The L4 data plane (DESIGN.md "Data plane").
//!
//! ```text
//! app ──tcp──▶ upstream listener ─┐                    ┌─▶ inbound ──tcp──▶ service
//!              (client agent)     └── QUIC + mTLS ─────┘   (server agent: verify, check intentions)
//! ```
//!
//! - [`outbound`]: upstream listeners (one per `upstreams` block of a local service; a
//!   connection there comes from that service), instance choice ([`picker`]), failover.
//! - [`pods`]: the listeners of Kubernetes pods' upstreams, opened and closed as pods come
//!   and go (a connection is attributed to its pod by source IP).
//! - [`pool`]: QUIC connections to peer agents, pooled per (agent, source, destination);
//!   TLS connections for `transport = "tls"`.
//! - [`inbound`]: the QUIC endpoint on the data port and the TLS service on the TCP data
//!   port; intentions decide ([`crate::intentions::Authorizer`]), the local instance is
//!   dialled.
//! - [`wire`]: the tunnel header; [`relay`]: copying with half-close, back-pressure, idle
//!   timeout; [`registry`]: open connections, re-decided when the rules change and cut on
//!   drain; [`meters`]: metrics and the access log.
//!
//! Both transports are always served inbound; `transport` selects what this agent dials.

pub(crate) mod buffers;
pub(crate) mod inbound;
pub(crate) mod meters;
pub(crate) mod outbound;
pub(crate) mod picker;
pub(crate) mod pods;
pub(crate) mod pool;
pub(crate) mod registry;
pub(crate) mod relay;
pub(crate) mod screen;
pub(crate) mod transport;
pub mod upstreams;
pub mod wire;

use crate::ca::identity::Identity;
use crate::catalog::CatalogReader;
use crate::config::{AgentConfig, ConfigReader};
use crate::dataport::{TcpService, TcpServices};
use crate::intentions::Authorizer;
use crate::kube::PodRegistryRx;
use crate::runtime::Shutdown;
use rhizome_intentions::ServiceRef;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The data-port sockets, bound before the agent's shared state exists so that a port 0
/// in the config resolves to one port number for both UDP (QUIC) and TCP (TLS, join).
pub struct DataSockets {
    /// QUIC's UDP socket.
    pub udp: std::net::UdpSocket,
    /// The TCP data-port listener.
    pub tcp: TcpListener,
}

impl DataSockets {
    /// Binds UDP and TCP on `config.data_addr()` (the same port number for both).
    pub async fn bind(config: &AgentConfig) -> anyhow::Result<DataSockets> {
        // With port 0 the UDP port is picked first; the same TCP port is almost always free.
        let (udp, tcp) = crate::runtime::bind_udp_tcp(config.data_addr(), 8, "data").await?;
        Ok(DataSockets { udp, tcp })
    }

    /// The port both are bound to.
    pub fn port(&self) -> u16 {
        self.udp.local_addr().map_or(0, |a| a.port())
    }
}

/// What the agent gives the data plane: nothing more (no store, no rules writer).
pub struct Inputs {
    /// The configuration at start (proxy settings, node name: restart-only settings).
    pub config: Arc<AgentConfig>,
    /// The configuration in force (local services change on a reload).
    pub live: ConfigReader,
    /// Workload leaves and the trust bundle (mTLS both ways).
    pub identity: Arc<Identity>,
    /// Instances to dial, and local instances to serve.
    pub catalog: CatalogReader,
    /// The per-connection decision (and the rules' changes, to re-check open connections).
    pub authz: Authorizer,
    /// Pods of this node (`None`: `kubernetes` disabled).
    pub pods: Option<PodRegistryRx>,
    /// The gossip member table: pooled connections to a peer that restarted or failed are
    /// dropped on the change.
    pub members: pool::MembersRx,
    /// The registry the proxy's families are added to.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Starts the drain.
    pub shutdown: Shutdown,
}

/// The data plane's state, shared by its tasks.
pub struct Proxy {
    config: Arc<AgentConfig>,
    live: ConfigReader,
    identity: Arc<Identity>,
    catalog: CatalogReader,
    authz: Authorizer,
    pool: pool::Pool,
    registry: Arc<registry::Registry>,
    metrics: meters::ProxyMetrics,
    picker: picker::Picker,
    accept_errors: crate::accept::AcceptErrors,
    /// Refused handshakes and tunnels (ports `data_quic`, `data_tls`, `upstream`).
    refusals: crate::refusals::Refusals,
    endpoint: quinn::Endpoint,
    /// Server settings for IPv4 loopback peers (larger datagrams; see [`transport`]).
    loopback_server: Arc<quinn::ServerConfig>,
    /// Server settings for peers on `::1`.
    loopback6_server: Arc<quinn::ServerConfig>,
    draining: AtomicBool,
    /// Fires when the agent stops: the drain starts.
    shutdown: Shutdown,
}

impl Proxy {
    /// Whether shutdown began (new tunnels are refused with `Draining`).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Open proxied connections (both directions).
    pub fn open_connections(&self) -> usize {
        self.registry.len()
    }

    /// The address of local instance `id` of `dst` on this node: from the catalog (config
    /// services, pods), else from the config services in force.
    pub fn local_instance(&self, dst: &ServiceRef, id: &str) -> Option<SocketAddr> {
        let node = &self.config.node_name;
        let catalog = self.catalog.borrow().clone();
        let live = self.live.borrow().clone();
        catalog
            .instances_of(dst.namespace.as_str(), dst.name.as_str())
            .find(|i| &i.node == node && i.id == id)
            .map(|i| SocketAddr::new(i.address, i.port))
            .or_else(|| {
                live.services
                    .iter()
                    .find(|s| {
                        s.namespace == dst.namespace.as_str()
                            && s.name == dst.name.as_str()
                            && s.id == id
                    })
                    .map(|s| SocketAddr::new(s.address, s.port))
            })
    }
}

/// The TLS transport as a service of the TCP data-port listener.
struct TlsIngress {
    proxy: Arc<Proxy>,
    config: Arc<rustls::ServerConfig>,
}

impl TcpService for TlsIngress {
    fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        Ok(self.config.clone())
    }

    fn handle(
        &self,
        stream: tokio_rustls::server::TlsStream<crate::dataport::DataStream>,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(inbound::serve_tls(self.proxy.clone(), stream, peer))
    }
}

/// Whether quinn runs with our tuning (`RHIZOME_QUIC_TUNING=off` gives quinn's defaults,
/// for before/after measurements).
fn quic_tuned() -> bool {
    std::env::var(crate::env::QUIC_TUNING).map_or(true, |v| v != "off")
}

/// Starts the data plane: the QUIC endpoint on `udp`, the TLS service (registered in
/// `tcp_services`), one listener per upstream of every local service, the rules watcher
/// and the drain on shutdown. Fails if an upstream listener cannot be bound. Returns the
/// upstream listeners, which a reload changes ([`upstreams::Upstreams::apply`]).
pub async fn start(
    inputs: Inputs,
    udp: std::net::UdpSocket,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    tcp_services: &mut TcpServices,
) -> anyhow::Result<Arc<upstreams::Upstreams>> {
    let Inputs {
        config,
        live,
        identity,
        catalog,
        authz,
        pods,
        members,
        metrics,
        shutdown,
    } = inputs;
    let transports = Arc::new(transport::Transports::new(
        quic_tuned(),
        transport::Liveness::of(&config.proxy),
    ));
    let tls = identity.server_config(vec![wire::ALPN_QUIC.to_vec()])?;
    let crypto = Arc::new(quinn::crypto::rustls::QuicServerConfig::try_from(tls)?);
    let mut server = quinn::ServerConfig::with_crypto(crypto.clone());
    let mut loopback_server = quinn::ServerConfig::with_crypto(crypto.clone());
    let mut loopback6_server = quinn::ServerConfig::with_crypto(crypto);
    server.transport_config(transports.remote());
    loopback_server.transport_config(transports.loopback());
    loopback6_server.transport_config(transports.for_path(transport::PathKind::Loopback6));
    transports.prepare_socket(&udp);
    // Datagrams quinn would drop silently are counted as refusals (see `screen`).
    let screen = screen::Screen::new(metrics.refusals.clone());
    let mut endpoint_config = transports.endpoint_config();
    screen.configure(&mut endpoint_config);
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        endpoint_config,
        Some(server),
        screen.wrap(udp)?,
        Arc::new(quinn::TokioRuntime),
    )?;
    let accept_errors = metrics.accept_errors.clone();
    let refusals = metrics.refusals.clone();
    let metrics = meters::ProxyMetrics::register(&metrics);
    let proxy = Arc::new(Proxy {
        pool: pool::Pool::new(
            endpoint.clone(),
            identity.clone(),
            transports,
            members.clone(),
            config.proxy.connect_timeout.0,
            config.proxy.max_connection_age.0,
            metrics.clone(),
        ),
        config: config.clone(),
        live,
        identity: identity.clone(),
        catalog,
        authz,
        registry: registry::Registry::new(),
        metrics,
        picker: picker::Picker::default(),
        accept_errors,
        refusals,
        endpoint: endpoint.clone(),
        loopback_server: Arc::new(loopback_server),
        loopback6_server: Arc::new(loopback6_server),
        draining: AtomicBool::new(false),
        shutdown: shutdown.clone(),
    });
    let tls_config = identity.server_config(vec![wire::ALPN_TLS.to_vec()])?;
    tcp_services.register(
        wire::ALPN_TLS,
        Arc::new(TlsIngress {
            proxy: proxy.clone(),
            config: Arc::new(tls_config),
        }),
    );
    let upstreams = upstreams::Upstreams::new(proxy.clone(), shutdown.clone());
    upstreams.apply(&config.services).await?;
    if let Some(rx) = pods {
        tasks.spawn(pods::serve(proxy.clone(), rx, shutdown.clone()));
    }
    tasks.spawn(inbound::serve_quic(proxy.clone(), endpoint));
    tasks.spawn(watch_rules(proxy.clone(), shutdown.clone()));
    tasks.spawn(watch_members(proxy.clone(), members, shutdown.clone()));
    tasks.spawn(watch_trust(proxy.clone(), shutdown.clone()));
    tasks.spawn(drain(proxy.clone(), shutdown));
    Ok(upstreams)
}

/// Re-decides every open inbound connection whenever the rules change; cuts the denied.
async fn watch_rules(proxy: Arc<Proxy>, stop: crate::runtime::Shutdown) -> anyhow::Result<()> {
    let mut rules = proxy.authz.subscribe();
    loop {
        tokio::select! {
            () = stop.wait() => return Ok(()),
            changed = rules.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let cut = proxy.registry.recheck(|g| {
                    proxy.authz.verdict(&g.source.to_string(), &g.destination).allowed
                });
                if cut > 0 {
                    tracing::info!(cut, "intentions changed: open connections now denied were cut");
                }
            }
        }
    }
}

/// Whenever trust changes (a revocation, roots added or removed): closes every pooled QUIC
/// connection and cuts every open tunnel whose peer chain no longer verifies. (Inbound QUIC
/// connections close themselves, see `inbound`; TLS session caches forget their sessions.)
async fn watch_trust(proxy: Arc<Proxy>, stop: crate::runtime::Shutdown) -> anyhow::Result<()> {
    let mut trust = proxy.identity.trust_changes();
    loop {
        tokio::select! {
            () = stop.wait() => return Ok(()),
            changed = trust.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let trusted = |p: &registry::PeerChain| {
                    proxy.identity.still_trusts(&p.chain, p.usage).is_ok()
                };
                let pooled = proxy.pool.drop_untrusted(trusted);
                let cut = proxy.registry.recheck_trust(trusted);
                if pooled + cut > 0 {
                    tracing::warn!(pooled, cut,
                        "trust changed: connections of peers no longer trusted were closed");
                }
            }
        }
    }
}

/// Drops pooled connections to peers that restarted or failed as soon as the member table
/// says so (open streams on them fail at once instead of at the idle timeout).
async fn watch_members(
    proxy: Arc<Proxy>,
    mut members: pool::MembersRx,
    stop: crate::runtime::Shutdown,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = stop.wait() => return Ok(()),
            changed = members.changed() => {
                if changed.is_err() {
                    // Gossip stopped (the agent is stopping): nothing more to watch.
                    stop.wait().await;
                    return Ok(());
                }
                let rows = members.borrow_and_update().clone();
                proxy.pool.drop_stale(&rows);
            }
        }
    }
}

/// How long a proxied connection must have been silent, its destination having spoken last,
/// to count as at rest when the drain looks at it ([`relay::Cut::at_rest`]).
pub const DRAIN_QUIET: Duration = Duration::from_millis(500);

/// How often the drain looks for connections come to rest.
const DRAIN_TICK: Duration = Duration::from_millis(100);

/// On shutdown (the upstream listeners close on the same signal, and gossip leaves, so peers
/// stop picking this node): refuse new tunnels, close idle pooled connections, close each
/// open connection gracefully as soon as it is at rest (at once for idle ones held by a
/// client's pool), wait for the busy ones for (nearly) the drain timeout, cut the rest,
/// close the QUIC endpoint. A restart is as long as the longest busy connection, not the
/// drain timeout.
async fn drain(proxy: Arc<Proxy>, stop: crate::runtime::Shutdown) -> anyhow::Result<()> {
    stop.wait().await;
    proxy.draining.store(true, Ordering::Release);
    let started = tokio::time::Instant::now();
    let deadline = started
        + proxy
            .config
            .proxy
            .drain_timeout
            .0
            .saturating_sub(Duration::from_millis(300));
    let idle_pooled = proxy.pool.close_idle();
    let open = proxy.registry.len();
    let mut closed = 0;
    if open > 0 || idle_pooled > 0 {
        tracing::info!(
            open,
            idle_pooled,
            "draining: idle connections close now, busy ones may finish"
        );
    }
    let mut tick = tokio::time::interval(DRAIN_TICK);
    loop {
        closed += proxy.registry.close_at_rest(DRAIN_QUIET);
        if proxy.registry.is_empty() {
            break;
        }
        tokio::select! {
            () = proxy.registry.wait_empty() => break,
            _ = tick.tick() => {}
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    open = proxy.registry.len(),
                    "drain timeout: cutting open connections"
                );
                proxy.registry.cut_all(wire::ResetCode::Shutdown);
                let _ = tokio::time::timeout(Duration::from_millis(100), proxy.registry.wait_empty()).await;
                break;
            }
        }
    }
    if open > 0 {
        tracing::info!(
            open,
            closed_at_rest = closed,
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "drained"
        );
    }
    proxy
        .endpoint
        .close(quinn::VarInt::from_u32(0), b"agent shutdown");
    Ok(())
}
