//! The server side: tunnels arriving on the data port (QUIC streams, or TLS connections
//! dispatched by the TCP data-port listener). The peer's chain was verified in the
//! handshake; its SPIFFE id is the source. The destination is the service whose leaf we
//! served (by SNI) and must match the request. Intentions decide; an allowed tunnel is
//! connected to the local instance and relayed. When trust changes (a revocation, a root
//! removed), a QUIC connection whose client chain no longer verifies is closed (with all its
//! streams), and every tunnel of such a peer is cut through the registry.

use super::Proxy;
use super::meters::{AccessLog, Direction, PairLabels, dst_bytes};
use super::pool::CLOSE_DRAINING;
use super::registry::{Grant, PeerChain};
use super::relay::{self, Side, TlsConn, TunnelRx, TunnelTx};
use super::transport::PathKind;
use super::wire::{Request, Status};
use crate::ca::refusals::{Point, reason};
use crate::refusals::Port;
use bytes::Bytes;
use rhizome_ca::SpiffeId;
use rhizome_intentions::ServiceRef;
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Who is at the other end of a tunnel, from its handshake.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The source workload (its certificate's SPIFFE id).
    pub source: SpiffeId,
    /// The destination service named by SNI (whose leaf we served), if any.
    pub sni: Option<ServiceRef>,
    /// The chain the peer proved, verified again when trust changes.
    pub chain: Arc<PeerChain>,
}

impl Peer {
    /// From a verified chain and the SNI the client sent.
    pub fn from_handshake(
        certs: &[CertificateDer<'_>],
        sni: Option<&str>,
        td: &rhizome_ca::TrustDomain,
    ) -> Option<Peer> {
        let source = rhizome_ca::peer_spiffe_id(certs)?;
        let sni = sni
            .and_then(|n| SpiffeId::from_dns_name(n, td))
            .and_then(|id| match id {
                SpiffeId::Workload { ns, svc, .. } => {
                    ServiceRef::new(ns.as_str(), svc.as_str()).ok()
                }
                _ => None,
            });
        let chain = Arc::new(PeerChain {
            chain: certs.iter().map(|c| c.clone().into_owned()).collect(),
            usage: rhizome_ca::Usage::Client,
        });
        Some(Peer { source, sni, chain })
    }

    fn source_ref(&self) -> Option<ServiceRef> {
        match &self.source {
            SpiffeId::Workload { ns, svc, .. } => ServiceRef::new(ns.as_str(), svc.as_str()).ok(),
            _ => None,
        }
    }
}

/// Accepts QUIC connections until the endpoint is closed; refuses them while draining (the
/// peer gets an immediate refusal and tries another instance).
pub async fn serve_quic(proxy: Arc<Proxy>, endpoint: quinn::Endpoint) -> anyhow::Result<()> {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = conns.join_next() => {}
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                if proxy.is_draining() {
                    incoming.refuse();
                    continue;
                }
                conns.spawn(handle_quic(proxy.clone(), incoming));
            }
        }
    }
    while conns.join_next().await.is_some() {}
    Ok(())
}

async fn handle_quic(proxy: Arc<Proxy>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let timeout = proxy.config.proxy.connect_timeout.0;
    // Subscribed before the handshake: a trust change while it runs is seen below.
    let mut trust = proxy.identity.trust_changes();
    // Loopback peers get their own settings (larger datagrams, see `transport`).
    let connecting = match PathKind::of(remote) {
        PathKind::Loopback4 => incoming.accept_with(proxy.loopback_server.clone()),
        PathKind::Loopback6 => incoming.accept_with(proxy.loopback6_server.clone()),
        PathKind::Remote => incoming.accept(),
    };
    let refused = |reason: &'static str, detail: &dyn std::fmt::Display| {
        proxy
            .refusals
            .refuse(Port::DataQuic, reason, Some(remote), detail);
    };
    let connecting = match connecting {
        Ok(c) => c,
        Err(e) => return refused("refused", &e),
    };
    let conn = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return refused(quic_handshake_reason(&e), &e),
        Err(_) => return refused("handshake_timeout", &"no handshake in time"),
    };
    let certs = conn
        .peer_identity()
        .and_then(|p| p.downcast::<Vec<CertificateDer<'static>>>().ok());
    let sni = conn
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.server_name);
    let td = proxy.identity.trust_domain();
    let Some(peer) = certs.and_then(|c| Peer::from_handshake(&c, sni.as_deref(), td)) else {
        conn.close(quinn::VarInt::from_u32(1), b"no workload identity");
        return refused(
            "no_identity",
            &"no workload SPIFFE id in the client certificate",
        );
    };
    let peer = Arc::new(peer);
    let mut streams = JoinSet::new();
    // On shutdown a connection without streams is closed at once (the peer's pool drops it
    // and dials elsewhere); one with streams once they have ended.
    let mut draining = false;
    loop {
        if draining && streams.is_empty() {
            conn.close(CLOSE_DRAINING.into(), b"draining");
            break;
        }
        tokio::select! {
            () = proxy.shutdown.wait(), if !draining => draining = true,
            Some(_) = streams.join_next() => {}
            Ok(()) = trust.changed() => {
                if let Err(e) = proxy.identity.still_trusts(&peer.chain.chain, peer.chain.usage) {
                    tracing::warn!(peer = %remote, src = %peer.source, reason = %e,
                        "inbound QUIC connection closed: the peer is no longer trusted");
                    conn.close(super::pool::CLOSE_UNTRUSTED.into(), b"peer no longer trusted");
                    break;
                }
            }
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let (proxy, peer) = (proxy.clone(), peer.clone());
                    streams.spawn(async move {
                        serve_tunnel(&proxy, &peer, TunnelTx::Quic(send), TunnelRx::Quic(recv)).await;
                    });
                }
                Err(_) => break,
            },
        }
    }
    while streams.join_next().await.is_some() {}
}

/// The `reason` label of a failed QUIC handshake: TLS alerts travel as QUIC crypto errors
/// (0x100 + alert), `certificate_required` (116) when the client sent no certificate.
fn quic_handshake_reason(e: &quinn::ConnectionError) -> &'static str {
    const CERTIFICATE_REQUIRED: u8 = 116;
    const BAD_CERTIFICATE: u8 = 42;
    const UNKNOWN_CA: u8 = 48;
    match e {
        quinn::ConnectionError::TransportError(t) => {
            if t.code == quinn::TransportErrorCode::crypto(CERTIFICATE_REQUIRED) {
                "no_client_cert"
            } else if t.code == quinn::TransportErrorCode::crypto(BAD_CERTIFICATE)
                || t.code == quinn::TransportErrorCode::crypto(UNKNOWN_CA)
            {
                "bad_client_cert"
            } else {
                "handshake_failed"
            }
        }
        quinn::ConnectionError::TimedOut => "handshake_timeout",
        _ => "handshake_failed",
    }
}

/// Serves one TLS connection of the TLS transport (called by the data-port listener).
pub async fn serve_tls(
    proxy: Arc<Proxy>,
    tls: tokio_rustls::server::TlsStream<crate::dataport::DataStream>,
    remote: SocketAddr,
) {
    let conn = tls.get_ref().1;
    let certs = conn.peer_certificates().map(<[_]>::to_vec);
    let sni = conn.server_name().map(str::to_string);
    let td = proxy.identity.trust_domain();
    let Some(peer) = certs.and_then(|c| Peer::from_handshake(&c, sni.as_deref(), td)) else {
        proxy.refusals.refuse(
            Port::DataTls,
            "no_identity",
            Some(remote),
            &"no workload SPIFFE id in the client certificate",
        );
        return;
    };
    // The handshake ran in the data-port listener, possibly before a trust change (or it
    // resumed a session): verify the chain against the trust in force now.
    if let Err(e) = proxy
        .identity
        .still_trusts(&peer.chain.chain, peer.chain.usage)
    {
        proxy
            .identity
            .refusals()
            .count(Point::ProxyInbound, reason(&e));
        tracing::info!(peer = %remote, src = %peer.source, reason = %e,
            "inbound TLS tunnel refused: the peer is no longer trusted");
        return;
    }
    let (r, w) = tokio::io::split(TlsConn::from(tls));
    serve_tunnel(&proxy, &peer, TunnelTx::Tls(w), TunnelRx::Tls(r)).await;
}

async fn read_request(rx: &mut TunnelRx) -> anyhow::Result<Request> {
    let mut prefix = [0u8; 3];
    rx.read_exact(&mut prefix).await?;
    let mut body = vec![0u8; Request::body_len(prefix)?];
    rx.read_exact(&mut body).await?;
    Ok(Request::decode_body(&body)?)
}

async fn answer(tx: &mut TunnelTx, status: Status) {
    let _ = tx.send(Bytes::copy_from_slice(&status.encode())).await;
    let _ = tx.finish().await;
}

/// Reads the request and checks it names a service, from a workload source, matching the
/// SNI: returns (request, source, destination), or `None` (answer `BadRequest`; the refusal
/// is counted on the tunnel's port and logged at a bounded rate).
async fn checked_request(
    proxy: &Proxy,
    peer: &Peer,
    rx: &mut TunnelRx,
) -> Option<(Request, ServiceRef, ServiceRef)> {
    let port = match rx {
        TunnelRx::Quic(_) => Port::DataQuic,
        TunnelRx::Tls(_) => Port::DataTls,
    };
    let refused = |reason: &'static str, detail: &dyn std::fmt::Display| {
        proxy.refusals.refuse(
            port,
            reason,
            None,
            &format_args!("from {}: {detail}", peer.source),
        );
    };
    let timeout = proxy.config.proxy.connect_timeout.0;
    let request = match tokio::time::timeout(timeout, read_request(rx)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            refused("bad_tunnel_request", &e);
            return None;
        }
        Err(_) => {
            refused("tunnel_request_timeout", &"no tunnel request in time");
            return None;
        }
    };
    let dst = match ServiceRef::new(&request.namespace, &request.service) {
        Ok(dst) => dst,
        Err(e) => {
            refused("bad_tunnel_request", &e);
            return None;
        }
    };
    let Some(src) = peer.source_ref() else {
        refused("no_identity", &"the source is not a workload");
        return None;
    };
    if peer.sni.as_ref() != Some(&dst) {
        refused(
            "sni_mismatch",
            &format_args!("tunnel to {dst} on a connection for {:?}", peer.sni),
        );
        return None;
    }
    Some((request, src, dst))
}

/// One tunnel: request, decision, local connect, relay.
async fn serve_tunnel(proxy: &Proxy, peer: &Peer, mut tx: TunnelTx, mut rx: TunnelRx) {
    let started = Instant::now();
    let timeout = proxy.config.proxy.connect_timeout.0;
    let Some((request, src, dst)) = checked_request(proxy, peer, &mut rx).await else {
        return answer(&mut tx, Status::BadRequest).await;
    };
    let pair = PairLabels {
        direction: Direction::Inbound,
        source: src.to_string(),
        destination: dst.to_string(),
    };
    let instance = format!("{}/{}", proxy.config.node_name, request.instance);
    let log = |decision: &str, rule: &str, end: &str, out: u64, inn: u64| {
        AccessLog {
            direction: Direction::Inbound,
            pair: &pair,
            instance: &instance,
            decision,
            rule,
            end,
            bytes_out: out,
            bytes_in: inn,
            duration: started.elapsed(),
        }
        .emit();
    };
    if proxy.is_draining() {
        return answer(&mut tx, Status::Draining).await;
    }
    // Registered before deciding, so a rule change racing with this decision re-checks it.
    let reg = proxy.registry.register(
        Some(Grant {
            source: peer.source.clone(),
            destination: dst.clone(),
        }),
        Some(peer.chain.clone()),
    );
    let verdict = proxy.authz.authorize(&peer.source.to_string(), &dst);
    let rule = verdict.rule_text();
    if !verdict.allowed {
        proxy.metrics.denied(&pair);
        log(verdict.outcome.as_str(), &rule, "denied", 0, 0);
        return answer(&mut tx, Status::Denied).await;
    }
    let Some(addr) = proxy.local_instance(&dst, &request.instance) else {
        proxy.metrics.failed(&pair);
        log(verdict.outcome.as_str(), &rule, "no_instance", 0, 0);
        return answer(&mut tx, Status::NoInstance).await;
    };
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        _ => {
            // The access-log line below records it; this is for debugging only.
            tracing::debug!(dst = %dst, addr = %addr, "local instance unreachable");
            proxy.metrics.failed(&pair);
            log(verdict.outcome.as_str(), &rule, "unreachable", 0, 0);
            return answer(&mut tx, Status::Unreachable).await;
        }
    };
    let _ = tcp.set_nodelay(true);
    if tx
        .send(Bytes::copy_from_slice(&Status::Connected.encode()))
        .await
        .is_err()
    {
        return;
    }
    let meters = proxy.metrics.open(&pair);
    let outcome = relay::relay(
        tcp,
        tx,
        rx,
        proxy.config.proxy.idle_timeout.0,
        &reg.cut,
        Side::Server,
        &meters,
    )
    .await;
    proxy.metrics.close(&pair, outcome.end);
    let (out, inn) = dst_bytes(&outcome, Side::Server);
    log(
        verdict.outcome.as_str(),
        &rule,
        outcome.end.as_str(),
        out,
        inn,
    );
}
