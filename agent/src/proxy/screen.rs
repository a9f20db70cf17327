//! Counting what QUIC drops silently on the data port: datagrams that cannot be QUIC for
//! this endpoint (an unparsable header, an unsupported version, an Initial shorter than
//! 1,200 bytes, a short-header packet whose connection id this endpoint never issued).
//!
//! quinn drops such datagrams with a trace line and no counter, so garbage on the data port
//! was invisible (issue 15). [`Screened`] wraps the endpoint's UDP socket: every datagram
//! received is looked at ([`verdict`], a few byte reads and one keyed hash) before quinn
//! gets it unchanged, and refusals go to `rhizome_refused_total{port="data_quic"}`. The
//! endpoint's connection ids come from a [`HashedConnectionIdGenerator`] whose key the
//! screen shares, so it can tell ids this endpoint issued from forged ones.

use crate::refusals::{Port, Refusals};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, ConnectionId, ConnectionIdGenerator, UdpPoller};
use quinn_proto::HashedConnectionIdGenerator;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// QUIC versions quinn accepts (v1 and the drafts quinn still speaks).
const VERSIONS: &[u32] = quinn_proto::DEFAULT_SUPPORTED_VERSIONS;
/// Smallest datagram carrying a client Initial (RFC 9000 §14.1).
const MIN_INITIAL: usize = 1200;
/// Longest connection id (RFC 9000 §17.2).
const MAX_CID: usize = 20;

/// What the screen knows of this endpoint: the key of its connection ids.
#[derive(Clone)]
pub struct Screen {
    key: u64,
    cid_len: usize,
    refusals: Refusals,
}

impl fmt::Debug for Screen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Screen").finish_non_exhaustive()
    }
}

impl Screen {
    /// A screen with a fresh connection-id key; refusals are counted in `refusals`.
    pub fn new(refusals: Refusals) -> Screen {
        let key = rand::random();
        Screen {
            key,
            cid_len: HashedConnectionIdGenerator::from_key(key).cid_len(),
            refusals,
        }
    }

    /// Makes `config` issue connection ids the screen recognizes.
    pub fn configure(&self, config: &mut quinn::EndpointConfig) {
        let key = self.key;
        config.cid_generator(move || Box::new(HashedConnectionIdGenerator::from_key(key)));
    }

    /// Wraps the endpoint's socket.
    pub fn wrap(&self, udp: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, udp)?;
        Ok(Arc::new(Screened {
            inner,
            screen: self.clone(),
        }))
    }

    /// Why `datagram` cannot be QUIC for this endpoint, or `None` if it may be.
    pub fn verdict(&self, datagram: &[u8]) -> Option<&'static str> {
        verdict(datagram, self.cid_len, |cid| {
            HashedConnectionIdGenerator::from_key(self.key)
                .validate(&ConnectionId::new(cid))
                .is_ok()
        })
    }
}

/// Why `datagram` cannot be QUIC for an endpoint whose connection ids are `cid_len` bytes
/// and pass `is_ours`, or `None` if it may be (RFC 8999 invariants, RFC 9000 §14.1).
pub fn verdict(
    datagram: &[u8],
    cid_len: usize,
    is_ours: impl Fn(&[u8]) -> bool,
) -> Option<&'static str> {
    let Some(&first) = datagram.first() else {
        return Some("empty");
    };
    if first & 0x80 == 0 {
        // Short header: the first byte, then one of our connection ids.
        let cid = datagram.get(1..1 + cid_len);
        return match cid {
            None => Some("malformed"),
            Some(cid) if !is_ours(cid) => Some("unknown_connection_id"),
            Some(_) => None,
        };
    }
    // Long header: first byte, version, DCID length and DCID, SCID length and SCID.
    let Some(version) = datagram.get(1..5) else {
        return Some("malformed");
    };
    let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
    let Some(&dcid_len) = datagram.get(5) else {
        return Some("malformed");
    };
    let dcid_len = usize::from(dcid_len);
    let scid_at = 6 + dcid_len;
    let scid_len = datagram
        .get(scid_at)
        .map_or(usize::MAX, |&b| usize::from(b));
    if dcid_len > MAX_CID || scid_len > MAX_CID || datagram.len() < scid_at + 1 + scid_len {
        return Some("malformed");
    }
    if version == 0 {
        // Version negotiation goes to clients; quinn only acts on it for its own attempts.
        return None;
    }
    if !VERSIONS.contains(&version) {
        return Some("unsupported_version");
    }
    // An Initial to one of our connection ids belongs to a connection in progress (a
    // server's Initial to our client side may be small); only a new one must be padded.
    let to_us = dcid_len == cid_len && datagram.get(6..6 + dcid_len).is_some_and(&is_ours);
    let is_initial = first & 0x30 == 0;
    if is_initial && !to_us && datagram.len() < MIN_INITIAL {
        return Some("short_initial");
    }
    None
}

/// The endpoint's socket, screening what it receives.
#[derive(Debug)]
struct Screened {
    inner: Arc<dyn AsyncUdpSocket>,
    screen: Screen,
}

impl Screened {
    fn look(&self, datagram: &[u8], from: SocketAddr) {
        if let Some(reason) = self.screen.verdict(datagram) {
            self.screen.refusals.refuse(
                Port::DataQuic,
                reason,
                Some(from),
                &format_args!(
                    "{} byte datagram is not QUIC for this endpoint",
                    datagram.len()
                ),
            );
        }
    }
}

impl AsyncUdpSocket for Screened {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let polled = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(n)) = &polled {
            for (buf, m) in bufs.iter().zip(meta.iter()).take(*n) {
                let received = buf.get(..m.len).unwrap_or(&buf[..]);
                // Coalesced datagrams (GRO) are `stride` bytes each.
                for datagram in received.chunks(m.stride.max(1)) {
                    self.look(datagram, m.addr);
                }
            }
        }
        polled
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn screen() -> Screen {
        Screen::new(Refusals::default())
    }

    #[test]
    fn garbage_is_refused_by_reason() {
        let s = screen();
        assert_eq!(s.verdict(b""), Some("empty"));
        assert_eq!(s.verdict(b"\xc0\x00\x00\x00\x01"), Some("malformed"));
        assert_eq!(s.verdict(b"\x40ab"), Some("malformed"));
        assert_eq!(
            s.verdict(b"\x40forged-cid-and-payload"),
            Some("unknown_connection_id")
        );
        assert_eq!(s.verdict(b"\xc0\x00\x00"), Some("malformed"));
        let mut v2 = vec![0xc0, 0x6b, 0x33, 0x43, 0xcf, 8];
        v2.extend([1; 8]);
        v2.push(0);
        v2.resize(1200, 0);
        assert_eq!(s.verdict(&v2), Some("unsupported_version"));
        let mut short_initial = vec![0xc0, 0, 0, 0, 1, 8];
        short_initial.extend([1; 8]);
        short_initial.push(0);
        short_initial.resize(300, 0);
        assert_eq!(s.verdict(&short_initial), Some("short_initial"));
        short_initial.resize(1200, 0);
        assert_eq!(s.verdict(&short_initial), None);
        // A small Initial to an id this endpoint issued (a server answering our client).
        let mut generator = HashedConnectionIdGenerator::from_key(s.key);
        let mut answer = vec![0xc0, 0, 0, 0, 1, 8];
        answer.extend_from_slice(&generator.generate_cid());
        answer.push(0);
        answer.resize(60, 0);
        assert_eq!(s.verdict(&answer), None);
        let mut bad_cid = vec![0xc0, 0, 0, 0, 1, 21];
        bad_cid.resize(1200, 0);
        assert_eq!(s.verdict(&bad_cid), Some("malformed"));
    }

    #[test]
    fn ids_the_endpoint_issued_pass() {
        let s = screen();
        let mut generator = HashedConnectionIdGenerator::from_key(s.key);
        let cid = generator.generate_cid();
        let mut packet = vec![0x41];
        packet.extend_from_slice(&cid);
        packet.extend_from_slice(&[0u8; 40]);
        assert_eq!(s.verdict(&packet), None);
    }
}
