//! Copying one proxied connection both ways between a TCP socket (the app on the client
//! agent, the service instance on the server agent) and the tunnel to the other agent (a
//! QUIC stream, or a TLS connection).
//!
//! Each direction holds at most one read's worth at a time (one chunk from TCP; up to
//! [`BATCH`] received chunks from the tunnel, written to TCP with one vectored write) and
//! waits until the other side took it before reading more, so a slow reader slows the
//! writer and memory per connection stays bounded (the QUIC flow-control windows bound what
//! is in flight). Read buffers are recycled ([`super::buffers`]); an idle connection holds
//! none. A TCP FIN becomes a stream FIN and back (half-close); any error or a [`Cut`]
//! resets both sides: the TCP socket is closed with RST (SO_LINGER 0), the stream is reset
//! with a [`ResetCode`]. The drain may instead close a connection at rest gracefully
//! ([`Cut::close`]): a FIN to the TCP side and the end of stream to the peer.

use super::buffers::BUFFERS;
use super::wire::ResetCode;
use bytes::{Buf as _, Bytes};
use futures::FutureExt as _;
use prometheus_client::metrics::counter::Counter;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most chunks taken from the tunnel at once (QUIC hands out one chunk per received frame).
pub const BATCH: usize = 16;
/// A TLS connection of the TLS transport (client or server side), over a read-ahead buffer.
pub type TlsConn = tokio_rustls::TlsStream<crate::dataport::DataStream>;

/// The sending half of a tunnel.
pub enum TunnelTx {
    /// A QUIC stream.
    Quic(quinn::SendStream),
    /// A TLS connection's write half.
    Tls(WriteHalf<TlsConn>),
}

/// The receiving half of a tunnel.
pub enum TunnelRx {
    /// A QUIC stream.
    Quic(quinn::RecvStream),
    /// A TLS connection's read half.
    Tls(ReadHalf<TlsConn>),
}

/// Why a tunnel read failed.
#[derive(Debug)]
pub enum RecvError {
    /// The peer reset the stream (with our code, if it is one).
    Reset(Option<ResetCode>),
    /// The connection failed (the error is kept for `Debug` output).
    Io(#[allow(dead_code)] io::Error),
}

impl TunnelTx {
    /// Sends one chunk, waiting for flow-control credit.
    pub async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        match self {
            TunnelTx::Quic(s) => s.write_chunk(chunk).await.map_err(io::Error::other),
            TunnelTx::Tls(w) => {
                w.write_all(&chunk).await?;
                w.flush().await
            }
        }
    }

    /// Sends the end of stream (half-close).
    pub async fn finish(&mut self) -> io::Result<()> {
        match self {
            TunnelTx::Quic(s) => s.finish().map_err(io::Error::other),
            TunnelTx::Tls(w) => w.shutdown().await,
        }
    }
}

impl TunnelTx {
    /// Sends the end of stream and waits until the peer has everything sent (QUIC: all
    /// acknowledged; TLS: written), so the connection may close next without losing it.
    pub async fn finish_delivered(&mut self) -> io::Result<()> {
        match self {
            TunnelTx::Quic(s) => {
                s.finish().map_err(io::Error::other)?;
                s.stopped().await.map(|_| ()).map_err(io::Error::other)
            }
            TunnelTx::Tls(w) => w.shutdown().await,
        }
    }
}

impl TunnelRx {
    /// Reads exactly `buf.len()` bytes (protocol headers).
    pub async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match self {
            TunnelRx::Quic(r) => r.read_exact(buf).await.map_err(io::Error::other),
            TunnelRx::Tls(r) => r.read_exact(buf).await.map(|_| ()),
        }
    }

    /// Waits for data and fills `batch` with what is there; `false` at the end of stream.
    pub async fn recv(&mut self, batch: &mut Batch) -> Result<bool, RecvError> {
        batch.clear();
        match self {
            TunnelRx::Quic(r) => match r.read_chunks(&mut batch.chunks).await {
                Ok(Some(n)) => {
                    batch.len = n;
                    Ok(true)
                }
                Ok(None) => Ok(false),
                Err(quinn::ReadError::Reset(code)) => {
                    Err(RecvError::Reset(ResetCode::from_varint(code)))
                }
                Err(e) => Err(RecvError::Io(io::Error::other(e))),
            },
            TunnelRx::Tls(r) => {
                // Waits without holding a buffer.
                let mut first = [0u8; 1];
                match r.read(&mut first).await {
                    Ok(0) => return Ok(false),
                    Ok(_) => {}
                    Err(e) => return Err(RecvError::Io(e)),
                }
                let mut buf = BUFFERS.take();
                buf[0] = first[0];
                let mut len = 1;
                // One read returns one TLS record (16 KiB at most): take the records already
                // here too, so they go to TCP in one write. EOF and errors show on the next call.
                while len < buf.len() {
                    match r.read(&mut buf[len..]).now_or_never() {
                        Some(Ok(n)) if n > 0 => len += n,
                        _ => break,
                    }
                }
                batch.chunks[0] = BUFFERS.freeze(buf, len);
                batch.len = 1;
                Ok(true)
            }
        }
    }
}

/// Chunks received from the tunnel, written to TCP together.
#[derive(Default)]
pub struct Batch {
    chunks: [Bytes; BATCH],
    len: usize,
}

impl Batch {
    /// Drops the chunks (frees their buffers).
    fn clear(&mut self) {
        for c in &mut self.chunks[..self.len] {
            *c = Bytes::new();
        }
        self.len = 0;
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        self.chunks[..self.len].iter().map(Bytes::len).sum()
    }

    /// The chunks, some possibly partly written.
    fn chunks_mut(&mut self) -> &mut [Bytes] {
        &mut self.chunks[..self.len]
    }
}

/// Ends a tunnel abnormally: a QUIC stream is reset and stopped with `code`; a TLS
/// connection is closed with a TCP RST and no close_notify, which its peer sees as an error.
pub fn abort_tunnel(tx: TunnelTx, rx: TunnelRx, code: ResetCode) {
    match (tx, rx) {
        (TunnelTx::Quic(mut s), TunnelRx::Quic(mut r)) => {
            let _ = s.reset(code.varint());
            let _ = r.stop(code.varint());
        }
        (TunnelTx::Tls(w), TunnelRx::Tls(r)) => {
            let tls = r.unsplit(w);
            let _ = tls.get_ref().0.get_ref().set_zero_linger();
        }
        (TunnelTx::Quic(mut s), TunnelRx::Tls(_)) => {
            let _ = s.reset(code.varint());
        }
        (TunnelTx::Tls(_), TunnelRx::Quic(mut r)) => {
            let _ = r.stop(code.varint());
        }
    }
}

/// Closes a TCP socket with RST instead of FIN, so the app sees a reset, not an end.
pub fn reset_tcp(tcp: TcpStream) {
    let _ = tcp.set_zero_linger();
    drop(tcp);
}

/// A handle to one open connection from outside: cut it (rule change, drain timeout), close
/// it gracefully (drain), and see when and in which direction it last moved bytes (the
/// drain closes a connection at rest; the idle timer).
pub struct Cut {
    token: CancellationToken,
    reason: AtomicU8,
    /// When the connection was registered: the origin of `last_ms`.
    base: Instant,
    /// Milliseconds from `base` to the last byte either way.
    last_ms: AtomicU64,
    /// Who sent the last bytes: [`NOBODY`], [`SOURCE`] or [`DESTINATION`].
    last_from: AtomicU8,
}

/// `Cut::last_from`: no byte moved yet.
const NOBODY: u8 = 0;
/// `Cut::last_from`: the last bytes went toward the destination service.
const SOURCE: u8 = 1;
/// `Cut::last_from`: the last bytes came from the destination service.
const DESTINATION: u8 = 2;
/// `Cut::reason` of a graceful close (not a [`ResetCode`]).
const GRACEFUL: u8 = 255;

impl Default for Cut {
    fn default() -> Self {
        Cut {
            token: CancellationToken::new(),
            reason: AtomicU8::new(0),
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            last_from: AtomicU8::new(NOBODY),
        }
    }
}

impl Cut {
    /// Cuts the connection with `code` (the first reason wins): both sides are reset.
    pub fn cut(&self, code: ResetCode) {
        self.end(code as u8);
    }

    /// Ends the connection gracefully (the first reason wins): a FIN to the TCP side and the
    /// end of stream to the peer, as if both had closed their halves.
    pub fn close(&self) {
        self.end(GRACEFUL);
    }

    fn end(&self, reason: u8) {
        let _ = self
            .reason
            .compare_exchange(0, reason, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    /// Whether it was cut or closed.
    pub fn is_cut(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once cut, with the reason (`None`: closed gracefully).
    async fn cut_reason(&self) -> Option<ResetCode> {
        self.token.cancelled().await;
        match self.reason.load(Ordering::Acquire) {
            GRACEFUL => None,
            2 => Some(ResetCode::Denied),
            3 => Some(ResetCode::Idle),
            4 => Some(ResetCode::Shutdown),
            _ => Some(ResetCode::Aborted),
        }
    }

    /// Notes bytes moved now, toward the destination or from it.
    fn touch(&self, from_destination: bool) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
        self.last_from.store(
            if from_destination {
                DESTINATION
            } else {
                SOURCE
            },
            Ordering::Relaxed,
        );
    }

    /// When the last byte moved (registration if none did).
    fn last_activity(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Whether the connection is at rest: nothing moved for `quiet`, and the last bytes came
    /// from the destination (a request/response protocol between requests: the answer was
    /// delivered) or nothing moved at all. A connection whose source spoke last may be
    /// waiting for an answer, however long the silence: it is not at rest.
    pub fn at_rest(&self, quiet: Duration) -> bool {
        self.last_from.load(Ordering::Relaxed) != SOURCE && self.last_activity().elapsed() >= quiet
    }
}

/// Live byte counters of one connection; `to_dst` is toward the destination service.
pub struct ByteMeters {
    /// Bytes toward the destination (metric family, shared by the service pair).
    pub to_dst: Counter,
    /// Bytes from the destination.
    pub from_dst: Counter,
}

/// How a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed their half cleanly.
    Closed,
    /// Cut from outside, or by the idle timer.
    Cut(ResetCode),
    /// Closed gracefully by the drain while at rest (FIN both ways).
    Drained,
    /// The TCP side failed or was reset.
    TcpError,
    /// The peer agent reset the stream.
    PeerReset(Option<ResetCode>),
    /// The tunnel failed (connection lost, TLS error).
    TunnelError,
}

impl End {
    /// A short label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Cut(ResetCode::Denied) => "cut_denied",
            End::Cut(ResetCode::Idle) => "idle_timeout",
            End::Cut(ResetCode::Shutdown) => "shutdown",
            End::Cut(ResetCode::Aborted) => "cut",
            End::Drained => "drained",
            End::TcpError => "tcp_error",
            End::PeerReset(Some(ResetCode::Denied)) => "peer_denied",
            End::PeerReset(_) => "peer_reset",
            End::TunnelError => "tunnel_error",
        }
    }
}

/// What a relay moved and how it ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// How it ended.
    pub end: End,
    /// Bytes read from the TCP side and sent into the tunnel.
    pub tcp_to_tunnel: u64,
    /// Bytes received from the tunnel and written to the TCP side.
    pub tunnel_to_tcp: u64,
}

/// Which side of the tunnel this relay is on, to count bytes in the destination's frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Client agent: the TCP side is the app (source).
    Client,
    /// Server agent: the TCP side is the destination instance.
    Server,
}

/// Copies both ways until both halves closed, an error, `cut`, or `idle` without bytes.
/// `cut` also records the connection's activity (see [`Cut::at_rest`]).
pub async fn relay(
    tcp: TcpStream,
    mut tx: TunnelTx,
    mut rx: TunnelRx,
    idle: Duration,
    cut: &Cut,
    side: Side,
    meters: &ByteMeters,
) -> Outcome {
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let (up_meter, down_meter) = match side {
        Side::Client => (&meters.to_dst, &meters.from_dst),
        Side::Server => (&meters.from_dst, &meters.to_dst),
    };
    // Bytes read from TCP come from the destination on the server side, from the source
    // (the app) on the client side.
    let tcp_is_destination = side == Side::Server;
    let end = {
        let tcp_to_tunnel = async {
            loop {
                let chunk = match read_tcp(&tcp).await {
                    Ok(Some(c)) => c,
                    Ok(None) => return tx.finish().await.map_err(|_| End::TunnelError),
                    Err(_) => return Err(End::TcpError),
                };
                cut.touch(tcp_is_destination);
                let n = chunk.len() as u64;
                tx.send(chunk).await.map_err(|_| End::TunnelError)?;
                up.fetch_add(n, Ordering::Relaxed);
                up_meter.inc_by(n);
            }
        };
        let tunnel_to_tcp = async {
            let mut batch = Batch::default();
            loop {
                match rx.recv(&mut batch).await {
                    Ok(true) => {
                        cut.touch(!tcp_is_destination);
                        let n = batch.bytes() as u64;
                        write_tcp(&tcp, batch.chunks_mut())
                            .await
                            .map_err(|_| End::TcpError)?;
                        batch.clear();
                        down.fetch_add(n, Ordering::Relaxed);
                        down_meter.inc_by(n);
                    }
                    Ok(false) => {
                        let _ = socket2::SockRef::from(&tcp).shutdown(std::net::Shutdown::Write);
                        return Ok(());
                    }
                    Err(RecvError::Reset(code)) => return Err(End::PeerReset(code)),
                    Err(RecvError::Io(_)) => return Err(End::TunnelError),
                }
            }
        };
        tokio::select! {
            r = async { tokio::try_join!(tcp_to_tunnel, tunnel_to_tcp) } => match r {
                Ok(_) => End::Closed,
                Err(e) => e,
            },
            code = cut.cut_reason() => code.map_or(End::Drained, End::Cut),
            () = idle_timer(cut, idle) => End::Cut(ResetCode::Idle),
        }
    };
    match end {
        End::Closed => {}
        End::Drained => {
            // Both ends see an orderly end of stream; what they send after it is refused.
            let _ = socket2::SockRef::from(&tcp).shutdown(std::net::Shutdown::Write);
            let _ = tokio::time::timeout(FINISH_TIMEOUT, tx.finish_delivered()).await;
        }
        _ => {
            let code = match end {
                End::Cut(code) => code,
                _ => ResetCode::Aborted,
            };
            abort_tunnel(tx, rx, code);
            reset_tcp(tcp);
        }
    }
    Outcome {
        end,
        tcp_to_tunnel: up.load(Ordering::Relaxed),
        tunnel_to_tcp: down.load(Ordering::Relaxed),
    }
}

/// Longest wait for the peer to receive the end of stream on a graceful close.
const FINISH_TIMEOUT: Duration = Duration::from_secs(1);

async fn idle_timer(cut: &Cut, idle: Duration) {
    loop {
        let deadline = cut.last_activity() + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Waits for data and reads one chunk; `None` at EOF. No buffer is held while waiting.
async fn read_tcp(tcp: &TcpStream) -> io::Result<Option<Bytes>> {
    loop {
        tcp.readable().await?;
        let mut buf = BUFFERS.take();
        match tcp.try_read(&mut buf) {
            Ok(0) => {
                BUFFERS.give_back(buf);
                return Ok(None);
            }
            Ok(n) => return Ok(Some(BUFFERS.freeze(buf, n))),
            Err(e) => {
                BUFFERS.give_back(buf);
                if e.kind() != io::ErrorKind::WouldBlock {
                    return Err(e);
                }
            }
        }
    }
}

/// Writes all of `chunks` (vectored), waiting for the socket to drain (back-pressure).
async fn write_tcp(tcp: &TcpStream, chunks: &mut [Bytes]) -> io::Result<()> {
    let mut first = 0;
    while first < chunks.len() {
        if chunks[first].is_empty() {
            first += 1;
            continue;
        }
        tcp.writable().await?;
        let slices: [IoSlice<'_>; BATCH] =
            std::array::from_fn(|i| IoSlice::new(chunks.get(first + i).map_or(&[], |c| &c[..])));
        let count = (chunks.len() - first).min(BATCH);
        match tcp.try_write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                for c in &mut chunks[first..] {
                    let take = n.min(c.len());
                    c.advance(take);
                    n -= take;
                    if n == 0 {
                        break;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
