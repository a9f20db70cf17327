//! QUIC transport settings of the data plane, per kind of path, and the UDP socket they run
//! on (DEPENDENCIES §7).
//!
//! Every path: up to [`MAX_STREAMS`] concurrent streams per connection (quinn's default of
//! 100 would make the pool open a connection per hundred proxied connections; beyond the
//! limit the pool opens another connection to the same peer, so it bounds what one
//! connection carries, never how many proxied connections there are), keep-alive and an idle timeout tuned for a LAN
//! (`proxy { quic_keep_alive, quic_idle_timeout }`: 1 s and 5 s, so a peer that died is
//! noticed in seconds, not quinn's 30 s, while a live pooled connection stays open), flow-control
//! windows near quinn's defaults but bounded per connection (8 MiB / 64 MiB windows measured
//! earlier cost up to 90 MB RSS per agent under iperf3 with less throughput).
//!
//! Loopback peers (two agents on one host, the benchmark chain) also get datagrams as large as
//! the loopback interface carries instead of ~1,400 bytes: a 64 KB datagram costs about what a
//! 1.4 KB one does in quinn and the kernel, so each byte costs far less CPU. Such datagrams
//! cannot be sent in GSO batches (a batch is limited to 64 KB), so segmentation offload is off
//! on that path. Other paths keep quinn's 1,200-byte start, path MTU discovery up to 1,452
//! bytes and GSO: a larger MTU there would have to be discovered per path, and
//! quinn's GSO batches of ten datagrams above ~6.5 KB would exceed the kernel's limit.
//! The endpoint accepts datagrams up to 65,527 bytes from any peer (a peer only sends what its
//! own path MTU allows). That costs address space: quinn sizes its receive buffer as payload
//! size x GRO segments x batch, 128 MiB instead of ~3 MiB, of which only the pages datagrams
//! land in become resident (idle RSS stays ~13.5 MB). On a host with strict overcommit
//! (`vm.overcommit_memory = 2`) or a tight `RLIMIT_AS`, `RHIZOME_QUIC_TUNING=off` restores
//! quinn's defaults.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest UDP payload of an IPv4 packet (65,535 minus 20 bytes IP and 8 bytes UDP header):
/// what IPv4 loopback (MTU 65,536) carries unfragmented.
pub const LOOPBACK_MTU: u16 = 65_507;

/// Largest UDP payload over IPv6 loopback: the 65,536-byte MTU minus 40 bytes IPv6 and 8 bytes
/// UDP header. (quinn sets don't-fragment and counts `EMSGSIZE` as sent, so a larger datagram
/// would vanish silently.)
pub const LOOPBACK6_MTU: u16 = 65_488;

/// The kind of path to a peer, which decides its transport settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    /// A peer on another host.
    Remote,
    /// A peer on an IPv4 loopback address (also as an IPv4-mapped IPv6 address).
    Loopback4,
    /// A peer on `::1`.
    Loopback6,
}

impl PathKind {
    /// The kind of path to `peer`.
    pub fn of(peer: SocketAddr) -> PathKind {
        match peer.ip().to_canonical() {
            std::net::IpAddr::V4(ip) if ip.is_loopback() => PathKind::Loopback4,
            std::net::IpAddr::V6(ip) if ip.is_loopback() => PathKind::Loopback6,
            _ => PathKind::Remote,
        }
    }
}

/// Largest UDP payload the endpoint accepts (the QUIC maximum, for IPv6 loopback peers).
pub const MAX_UDP_PAYLOAD: u16 = 65_527;

/// UDP socket buffer size asked for; the kernel caps it at `net.core.rmem_max`/`wmem_max`.
/// A burst of 64 KB loopback datagrams overflows the default 208 KiB at once.
pub const UDP_BUFFER: usize = 4 << 20;

/// Concurrent bidirectional streams (proxied connections) a peer may open on one QUIC
/// connection to this agent. A bound per connection (each stream costs buffers and a task),
/// not on proxied connections: the pool opens another connection when all are in use.
pub const MAX_STREAMS: u32 = 4096;

/// Liveness timers of every QUIC connection (`proxy { quic_keep_alive, quic_idle_timeout }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// Interval of keep-alive packets.
    pub keep_alive: Duration,
    /// Silence after which a connection is closed (the lower of both ends' values applies).
    pub idle_timeout: Duration,
}

impl Liveness {
    /// The timers of the `proxy { }` block.
    pub fn of(config: &crate::config::ProxyConfig) -> Liveness {
        Liveness {
            keep_alive: config.quic_keep_alive.0,
            idle_timeout: config.quic_idle_timeout.0,
        }
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::of(&crate::config::ProxyConfig::default())
    }
}

/// The QUIC transport settings for each kind of path.
pub struct Transports {
    /// Peers on other hosts.
    remote: Arc<quinn::TransportConfig>,
    /// Peers on an IPv4 loopback address.
    loopback: Arc<quinn::TransportConfig>,
    /// Peers on `::1`.
    loopback6: Arc<quinn::TransportConfig>,
    tuned: bool,
}

impl Transports {
    /// The data plane's settings; `tuned = false` gives quinn's defaults (except the stream
    /// limit and the liveness timers), for before/after measurements (`RHIZOME_QUIC_TUNING=off`).
    pub fn new(tuned: bool, liveness: Liveness) -> Transports {
        Transports {
            remote: Arc::new(transport_config(tuned, liveness, None)),
            loopback: Arc::new(transport_config(tuned, liveness, Some(LOOPBACK_MTU))),
            loopback6: Arc::new(transport_config(tuned, liveness, Some(LOOPBACK6_MTU))),
            tuned,
        }
    }

    /// The settings for a connection with `peer`.
    pub fn for_peer(&self, peer: SocketAddr) -> Arc<quinn::TransportConfig> {
        self.for_path(PathKind::of(peer))
    }

    /// The settings for one kind of path.
    pub fn for_path(&self, path: PathKind) -> Arc<quinn::TransportConfig> {
        match path {
            PathKind::Remote => self.remote.clone(),
            PathKind::Loopback4 => self.loopback.clone(),
            PathKind::Loopback6 => self.loopback6.clone(),
        }
    }

    /// The settings for peers on other hosts.
    pub fn remote(&self) -> Arc<quinn::TransportConfig> {
        self.remote.clone()
    }

    /// The settings for peers on an IPv4 loopback address.
    pub fn loopback(&self) -> Arc<quinn::TransportConfig> {
        self.loopback.clone()
    }

    /// The endpoint settings: large datagrams accepted when tuned.
    pub fn endpoint_config(&self) -> quinn::EndpointConfig {
        let mut cfg = quinn::EndpointConfig::default();
        if self.tuned {
            // In range by construction (1200..=65527); an error would only keep the default.
            let _ = cfg.max_udp_payload_size(MAX_UDP_PAYLOAD);
        }
        cfg
    }

    /// Enlarges the socket buffers of the endpoint's UDP socket when tuned.
    pub fn prepare_socket(&self, udp: &std::net::UdpSocket) {
        if self.tuned {
            let sock = socket2::SockRef::from(udp);
            let _ = sock.set_recv_buffer_size(UDP_BUFFER);
            let _ = sock.set_send_buffer_size(UDP_BUFFER);
        }
    }
}

/// The settings of one kind of path (see the module docs): `loopback_mtu` is the datagram
/// size of a loopback path, `None` for a path to another host.
pub fn transport_config(
    tuned: bool,
    liveness: Liveness,
    loopback_mtu: Option<u16>,
) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS))
        .keep_alive_interval(Some(liveness.keep_alive));
    // Out of range only beyond 2^62 ms: quinn's default (30 s) is kept then.
    if let Ok(idle) = quinn::IdleTimeout::try_from(liveness.idle_timeout) {
        t.max_idle_timeout(Some(idle));
    }
    if !tuned {
        return t;
    }
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .stream_receive_window(quinn::VarInt::from_u32(1 << 20))
        .receive_window(quinn::VarInt::from_u32(8 << 20))
        .send_window(4 << 20);
    if let Some(mtu) = loopback_mtu {
        let mut mtud = quinn::MtuDiscoveryConfig::default();
        mtud.upper_bound(mtu);
        // quinn's initial congestion window (14,720 bytes) must hold one datagram, or nothing,
        // not even the handshake, is sent; RFC 9002 §7.2 allows two datagrams.
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window(2 * u64::from(mtu));
        t.congestion_controller_factory(Arc::new(cubic))
            .initial_mtu(mtu)
            .mtu_discovery_config(Some(mtud))
            .enable_segmentation_offload(false);
    }
    t
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn loopback_peers_get_the_loopback_settings() {
        let t = Transports::new(true, Liveness::default());
        for ip in [
            Ipv4Addr::LOCALHOST.into(),
            Ipv4Addr::new(127, 0, 0, 9).into(),
            Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
        ] {
            assert!(
                Arc::ptr_eq(&t.for_peer(SocketAddr::new(ip, 7947)), &t.loopback()),
                "{ip}"
            );
        }
        let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 7947);
        assert_eq!(PathKind::of(v6), PathKind::Loopback6);
        assert!(Arc::ptr_eq(
            &t.for_peer(v6),
            &t.for_path(PathKind::Loopback6)
        ));
        let remote = SocketAddr::from(([192, 0, 2, 1], 7947));
        assert!(Arc::ptr_eq(&t.for_peer(remote), &t.remote()));
    }

    /// Two endpoints on IPv4 and on IPv6 loopback with the data plane's settings: the path MTU
    /// of their connection is the family's loopback one, not quinn's 1,200-byte start, and no
    /// datagram vanished (a size the interface cannot carry would trip black-hole detection).
    #[tokio::test]
    async fn loopback_connections_use_large_datagrams() {
        for (host, mtu) in [("127.0.0.1", LOOPBACK_MTU), ("::1", LOOPBACK6_MTU)] {
            let ip: std::net::IpAddr = host.parse().unwrap();
            if std::net::UdpSocket::bind((ip, 0)).is_err() {
                eprintln!("skipping {host}: no such loopback address here");
                continue;
            }
            one_loopback_connection(ip, mtu).await;
        }
    }

    async fn one_loopback_connection(ip: std::net::IpAddr, mtu: u16) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let transports = Transports::new(true, Liveness::default());
        let cert = rcgen::generate_simple_self_signed(vec!["loop.test".into()]).unwrap();
        let der = cert.cert.der().clone();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let mut server_tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        server_tls.alpn_protocols = vec![b"t".to_vec()];
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).unwrap(),
        ));
        server.transport_config(transports.loopback());
        let bind = |server: Option<quinn::ServerConfig>| {
            let udp = std::net::UdpSocket::bind((ip, 0)).unwrap();
            transports.prepare_socket(&udp);
            quinn::Endpoint::new(
                transports.endpoint_config(),
                server,
                udp,
                Arc::new(quinn::TokioRuntime),
            )
            .unwrap()
        };
        let server_ep = bind(Some(server));
        let addr = server_ep.local_addr().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let mut client_tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_tls.alpn_protocols = vec![b"t".to_vec()];
        let mut client = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).unwrap(),
        ));
        client.transport_config(transports.for_peer(addr));
        let client_ep = bind(None);

        let accept = tokio::spawn(async move {
            let conn = server_ep.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let got = recv.read_to_end(1 << 20).await.unwrap();
            send.write_all(&got).await.unwrap();
            send.finish().unwrap();
            conn.closed().await;
        });
        let conn = client_ep
            .connect_with(client, addr, "loop.test")
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let data: Vec<u8> = (0..200_000).map(|i| (i % 251) as u8).collect();
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        let back = recv.read_to_end(1 << 20).await.unwrap();
        assert!(back == data, "echoed byte-exact");
        let path = conn.stats().path;
        assert_eq!(path.current_mtu, mtu, "{ip}");
        assert_eq!(path.black_holes_detected, 0, "{ip}: datagrams vanished");
        conn.close(0u32.into(), b"done");
        accept.await.unwrap();
    }
}
