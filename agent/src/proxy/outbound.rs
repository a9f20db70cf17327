//! The client side: upstream listeners owned by local services, and what happens to each
//! app connection accepted there — pick an instance, open a tunnel to its agent, ask for
//! the instance, fail over before any byte is sent, then relay.

use super::Proxy;
use super::meters::{AccessLog, Direction, PairLabels, dst_bytes};
use super::picker::InstanceKey;
use super::pool::{Lease, PoolKey, StreamUse};
use super::registry::PeerChain;
use super::relay::{self, Side, TunnelRx, TunnelTx};
use super::wire::{Request, Status};
use crate::accept::Acceptor;
use crate::config::Transport;
use crate::refusals::Port;
use bytes::Bytes;
use rhizome_intentions::ServiceRef;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Instances tried for one connection before giving up.
const MAX_ATTEMPTS: usize = 3;

/// One upstream listener: connections from `source` to `destination`.
#[derive(Clone, Debug)]
pub struct Route {
    /// The local service that owns the listener (its leaf is presented).
    pub source: ServiceRef,
    /// The destination service.
    pub destination: ServiceRef,
}

/// Who the connections of one listener come from.
pub enum Routing {
    /// An upstream of a config service: every connection is from that service.
    Fixed(Route),
    /// A pod upstream listener shared by the pods of this node: a connection is attributed
    /// to a pod by its source IP, and to the pod's upstream by the listener port.
    Pods(crate::kube::PodRegistryRx),
}

impl Routing {
    fn route(&self, peer: SocketAddr, local: SocketAddr) -> Option<Route> {
        match self {
            Routing::Fixed(route) => Some(route.clone()),
            Routing::Pods(rx) => {
                let registry = rx.borrow().clone();
                let a = crate::kube::attribute(&registry, peer, local).ok()?;
                Some(Route {
                    source: ServiceRef::new(&a.service.namespace, &a.service.name).ok()?,
                    destination: ServiceRef::new(
                        &a.upstream.destination_namespace,
                        &a.upstream.destination_name,
                    )
                    .ok()?,
                })
            }
        }
    }
}

/// Accepts app connections on `listener` until `stop`, at most `proxy.max_connections`
/// at once (beyond that a connection is reset at once and counted as failed), then waits
/// for the open ones to end (the drain cuts them when its time is up).
pub async fn serve_upstream(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    routing: Routing,
    stop: crate::runtime::Shutdown,
) -> anyhow::Result<()> {
    let max = usize::try_from(proxy.config.proxy.max_connections).unwrap_or(usize::MAX);
    let limit = Arc::new(Semaphore::new(max));
    let local = listener.local_addr()?;
    let mut listener = Acceptor::new(listener, "upstream", proxy.accept_errors.clone());
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.wait() => break,
            Some(_) = conns.join_next() => {}
            (tcp, peer) = listener.accept() => {
                let Some(route) = routing.route(peer, local) else {
                    proxy.refusals.refuse(Port::Upstream, "unknown_source", Some(peer),
                        &format_args!("no pod with this address has an upstream on {local}"));
                    relay::reset_tcp(tcp);
                    continue;
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    proxy.refusals.refuse(Port::Upstream, "max_connections", Some(peer),
                        &format_args!("{} -> {}: {max} connections open, connection reset",
                            route.source, route.destination));
                    proxy.metrics.failed(&pair(&route));
                    relay::reset_tcp(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let proxy = proxy.clone();
                conns.spawn(async move {
                    handle_app(&proxy, tcp, &route).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
}

fn pair(route: &Route) -> PairLabels {
    PairLabels {
        direction: Direction::Outbound,
        source: route.source.to_string(),
        destination: route.destination.to_string(),
    }
}

/// An established tunnel to one instance.
struct Established {
    tx: TunnelTx,
    rx: TunnelRx,
    instance: String,
    hold: Hold,
    _inflight: super::picker::InFlight,
}

/// What a tunnel keeps of its connection: the chain the peer proved (checked again when
/// trust changes) and, over QUIC, its stream's share of the pooled connection (a connection
/// with none is idle: the drain and `max_connection_age` close it).
struct Hold {
    peer: Option<Arc<PeerChain>>,
    _uses: Option<StreamUse>,
}

/// Why no tunnel was established.
enum Refused {
    /// The destination's agent refused by intentions.
    Denied { instance: String },
    /// No instance could be reached.
    Failed { reason: String },
}

async fn handle_app(proxy: &Proxy, tcp: TcpStream, route: &Route) {
    let started = Instant::now();
    let pair = pair(route);
    // The destination's agent decides; this names the rule its (replicated) copy holds.
    let source_id = route
        .source
        .spiffe_id(proxy.identity.trust_domain().as_str());
    let rule = proxy
        .authz
        .verdict(&source_id, &route.destination)
        .rule_text();
    let log = |instance: &str, decision: &str, end: &str, out: u64, inn: u64| {
        AccessLog {
            direction: Direction::Outbound,
            pair: &pair,
            instance,
            decision,
            rule: &rule,
            end,
            bytes_out: out,
            bytes_in: inn,
            duration: started.elapsed(),
        }
        .emit();
    };
    match establish(proxy, route).await {
        Ok(est) => {
            proxy.metrics.connected(&pair, started.elapsed());
            let meters = proxy.metrics.open(&pair);
            let reg = proxy.registry.register(None, est.hold.peer.clone());
            let outcome = relay::relay(
                tcp,
                est.tx,
                est.rx,
                proxy.config.proxy.idle_timeout.0,
                &reg.cut,
                Side::Client,
                &meters,
            )
            .await;
            proxy.metrics.close(&pair, outcome.end);
            let (out, inn) = dst_bytes(&outcome, Side::Client);
            log(&est.instance, "allow", outcome.end.as_str(), out, inn);
        }
        Err(Refused::Denied { instance }) => {
            proxy.metrics.denied(&pair);
            relay::reset_tcp(tcp);
            log(&instance, "deny", "denied", 0, 0);
        }
        Err(Refused::Failed { reason }) => {
            proxy.metrics.failed(&pair);
            relay::reset_tcp(tcp);
            proxy.refusals.refuse(
                Port::Upstream,
                "failed",
                None,
                &format_args!("{} -> {}: {reason}", route.source, route.destination),
            );
            log("", "error", "failed", 0, 0);
        }
    }
}

/// Tries up to [`MAX_ATTEMPTS`] healthy instances until one is connected.
async fn establish(proxy: &Proxy, route: &Route) -> Result<Established, Refused> {
    let mut tried: Vec<InstanceKey> = Vec::new();
    let mut last = String::from("no healthy instance");
    for _ in 0..MAX_ATTEMPTS {
        let catalog = proxy.catalog.borrow().clone();
        let dst = &route.destination;
        let healthy = || catalog.healthy(dst.namespace.as_str(), dst.name.as_str());
        // Agents that just failed are tried only when no other instance is left.
        let picked = proxy
            .picker
            .pick(
                healthy().filter(|i| !proxy.pool.recently_failed(i.agent_addr)),
                &tried,
                random_below,
            )
            .or_else(|| proxy.picker.pick(healthy(), &tried, random_below));
        let Some(inst) = picked else { break };
        tried.push(InstanceKey::of(inst));
        let inflight = proxy.picker.track(inst);
        let instance = format!("{}/{}", inst.node, inst.id);
        let request = Request {
            namespace: inst.namespace.clone(),
            service: inst.name.clone(),
            instance: inst.id.clone(),
        };
        let key = PoolKey {
            agent: inst.agent_addr,
            node: inst.node.clone(),
            source: route.source.clone(),
            destination: route.destination.clone(),
        };
        let result = attempt(proxy, &key, &request).await;
        proxy.pool.record(inst.agent_addr, result.is_ok());
        match result {
            Ok((Status::Connected, tx, rx, hold)) => {
                return Ok(Established {
                    tx,
                    rx,
                    instance,
                    hold,
                    _inflight: inflight,
                });
            }
            Ok((Status::Denied, ..)) => return Err(Refused::Denied { instance }),
            Ok((status, ..)) if status.is_retryable() => {
                last = format!("{instance}: {status}");
            }
            Ok((status, ..)) => {
                return Err(Refused::Failed {
                    reason: format!("{instance}: {status}"),
                });
            }
            Err(e) => {
                tracing::debug!(instance = %instance, agent = %inst.agent_addr, error = %e,
                    "instance unreachable, trying another");
                last = format!("{instance} via {}: {e:#}", inst.agent_addr);
            }
        }
    }
    Err(Refused::Failed { reason: last })
}

/// Opens a tunnel, sends the request, reads the status. Over QUIC, a pooled connection that
/// turns out dead (closed, or silent: see [`exchange_quic`]) is dropped and the request is
/// sent once more over a fresh connection, so a peer that restarted serves this very
/// connection.
async fn attempt(
    proxy: &Proxy,
    key: &PoolKey,
    request: &Request,
) -> anyhow::Result<(Status, TunnelTx, TunnelRx, Hold)> {
    if proxy.config.transport == Transport::Tls {
        let (tx, rx, peer) = proxy.pool.open_tls(key).await?;
        let timeout = proxy.config.proxy.connect_timeout.0;
        let (status, tx, rx) = tokio::time::timeout(timeout, exchange(tx, rx, request))
            .await
            .map_err(|_| anyhow::anyhow!("no answer from {} in time", key.agent))??;
        let hold = Hold {
            peer: Some(peer),
            _uses: None,
        };
        return Ok((status, tx, rx, hold));
    }
    let lease = proxy.pool.stream(key).await?;
    let (conn, reused, peer) = (lease.conn.clone(), lease.reused, lease.peer.clone());
    let (answer, peer) = match exchange_quic(proxy, key, lease, request).await {
        Err(e) if reused && conn.close_reason().is_some() => {
            tracing::debug!(peer.node = %key.node, peer.addr = %key.agent, error = %e,
                "pooled QUIC connection dead: trying a fresh one");
            let lease = proxy.pool.stream(key).await?;
            let peer = lease.peer.clone();
            (exchange_quic(proxy, key, lease, request).await, peer)
        }
        other => (other, peer),
    };
    let (status, tx, rx, uses) = answer?;
    let hold = Hold { peer, _uses: uses };
    Ok((status, tx, rx, hold))
}

/// Sends the request on the leased stream and reads the status, within `connect_timeout`.
/// A peer that sent nothing at all for twice the keep-alive interval (a live one answers
/// keep-alives and acknowledges the request at once) is gone: the connection is discarded
/// then, without waiting for the rest of the timeout.
async fn exchange_quic(
    proxy: &Proxy,
    key: &PoolKey,
    lease: Lease,
    request: &Request,
) -> anyhow::Result<(Status, TunnelTx, TunnelRx, Option<StreamUse>)> {
    let Lease {
        conn,
        tx,
        rx,
        in_use,
        ..
    } = lease;
    let timeout = proxy.config.proxy.connect_timeout.0;
    let silence = (proxy.config.proxy.quic_keep_alive.0 * 2)
        .min(timeout)
        .max(std::time::Duration::from_millis(10));
    let heard = || conn.stats().udp_rx.datagrams;
    let before = heard();
    let answer = exchange(tx, rx, request);
    tokio::pin!(answer);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + silence, silence);
    loop {
        tokio::select! {
            got = &mut answer => return got.map(|(status, tx, rx)| (status, tx, rx, Some(in_use))),
            () = &mut deadline => break,
            _ = check.tick() => {
                if heard() == before {
                    break;
                }
            }
        }
    }
    if heard() == before {
        proxy.pool.discard(key, &conn);
    }
    Err(anyhow::anyhow!("no answer from {} in time", key.agent))
}

/// Sends the request and reads the status.
async fn exchange(
    mut tx: TunnelTx,
    mut rx: TunnelRx,
    request: &Request,
) -> anyhow::Result<(Status, TunnelTx, TunnelRx)> {
    tx.send(Bytes::from(request.encode()?)).await?;
    let mut resp = [0u8; 2];
    rx.read_exact(&mut resp).await?;
    Ok((Status::decode(resp)?, tx, rx))
}

fn random_below(n: usize) -> usize {
    use rand::RngExt as _;
    rand::rng().random_range(0..n.max(1))
}
