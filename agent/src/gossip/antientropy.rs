//! Anti-entropy over TCP on the gossip port number: push/pull exchanges of the replicated
//! state ([`rhizome_gossip::sync`]) with one peer at a time.
//!
//! A frame is a 4-byte big-endian length followed by one sealed [`SyncMessage`] (sealed and
//! opened like gossip packets, see [`super::keys`]). Frames above [`MAX_FRAME`] are refused
//! before anything is allocated, every read and write has a deadline, and at most
//! [`MAX_INBOUND`] inbound exchanges run at once, each only after its peer proved it holds
//! the keyring (see [`Server`]). An exchange counts as done only when its last message
//! went through; a peer closing early is a failure.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rhizome_gossip::keyring::Keyring;
use rhizome_gossip::sync::{self, MAX_FRAME_BYTES, SyncMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use super::driver::SyncRequest;
use super::keys::Keys;
use super::metrics::GossipMetrics;
use super::now_ms;
use super::replica::Replica;
use crate::api::types::MemberRow;
use crate::refusals::{Gate, LOG_WINDOW, Port, RateLog, Refusals};

/// Largest frame accepted: the sync crate's bound.
pub const MAX_FRAME: usize = MAX_FRAME_BYTES;
/// Largest first frame of an inbound connection (a sealed `Summary`: about 2 KB); nothing
/// larger is allocated before the peer has proved it holds the keyring.
pub const MAX_FIRST_FRAME: usize = 16 * 1024;
/// Deadline of each connect, frame read or frame write once the peer is authenticated,
/// and of the wait for an exchange slot.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of the first frame of an inbound connection (the peer sends it at once).
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(2);
/// Inbound exchanges served at once (authenticated peers only); more wait for a slot.
pub const MAX_INBOUND: usize = 16;
/// Inbound connections waiting for their first frame; one more evicts the oldest.
pub const MAX_PENDING: usize = 64;

/// Why an exchange stopped. The peer (or the network) is at fault; what was applied stays.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Connect, read or write failed or timed out.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection before the exchange was complete.
    #[error("the peer closed the connection before the exchange was complete")]
    Closed,
    /// A frame longer than the limit ([`MAX_FRAME`], or [`MAX_FIRST_FRAME`] first).
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A frame did not open with the keyring.
    #[error("frame refused: {0}")]
    Open(#[from] rhizome_gossip::keyring::OpenError),
    /// A frame could not be sealed.
    #[error("cannot seal: {0}")]
    Seal(#[from] rhizome_gossip::keyring::SealError),
    /// A frame did not decode as a sync message.
    #[error("bad message: {0}")]
    Decode(#[from] rhizome_gossip::state::DecodeError),
    /// The peer's message was unusable.
    #[error("bad exchange: {0}")]
    Sync(#[from] sync::SyncError),
}

impl ExchangeError {
    /// The `reason` label of a refusal before authentication.
    fn refusal_reason(&self) -> &'static str {
        match self {
            ExchangeError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => "no_frame",
            ExchangeError::Io(_) => "io",
            ExchangeError::Closed => "closed",
            ExchangeError::TooLarge(_) => "too_large",
            ExchangeError::Open(_) => "not_authenticated",
            ExchangeError::Decode(_) | ExchangeError::Sync(_) => "malformed",
            ExchangeError::Seal(_) => "internal",
        }
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::TimedOut)
}

/// One side of an exchange: the stream, this connection's sealer and the shared opener.
struct Conn<'a> {
    stream: TcpStream,
    sealer: Keyring,
    keys: &'a Keys,
}

impl Conn<'_> {
    async fn send(&mut self, msg: &SyncMessage) -> Result<(), ExchangeError> {
        let sealed = self.sealer.seal(now_ms(), &msg.to_bytes())?;
        let len = u32::try_from(sealed.len()).map_err(|_| ExchangeError::TooLarge(sealed.len()))?;
        let write = async {
            self.stream.write_all(&len.to_be_bytes()).await?;
            self.stream.write_all(&sealed).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(IO_TIMEOUT, write)
            .await
            .map_err(|_| timed_out())??;
        Ok(())
    }

    /// The next message (at most `limit` bytes sealed, read within `deadline`); the peer
    /// closing before it is [`ExchangeError::Closed`].
    async fn recv_within(
        &mut self,
        limit: usize,
        deadline: Duration,
    ) -> Result<SyncMessage, ExchangeError> {
        let read = async {
            let mut len = [0u8; 4];
            match self.stream.read_exact(&mut len).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(ExchangeError::Closed);
                }
                Err(e) => return Err(ExchangeError::Io(e)),
            }
            let len = u32::from_be_bytes(len) as usize;
            if len > limit {
                return Err(ExchangeError::TooLarge(len));
            }
            let mut frame = vec![0u8; len];
            self.stream.read_exact(&mut frame).await?;
            Ok(frame)
        };
        let frame = tokio::time::timeout(deadline, read)
            .await
            .map_err(|_| timed_out())??;
        let payload = self.keys.open(now_ms(), &frame)?;
        Ok(SyncMessage::from_bytes(&payload)?)
    }

    /// Handles `msg` and the messages after it, sending each reply, until the exchange is
    /// complete: our reply ended it, or the peer's message did. The peer closing earlier
    /// is an error ([`ExchangeError::Closed`]), never a success.
    async fn converse(
        &mut self,
        replica: &Replica,
        mut msg: SyncMessage,
    ) -> Result<(), ExchangeError> {
        // Bounded: an exchange has at most four messages (see `rhizome_gossip::sync`).
        for _ in 0..4 {
            let reply = replica.with_state(|s| sync::handle(s, msg, now_ms()))?;
            let Some(reply) = reply else {
                return Ok(());
            };
            self.send(&reply).await?;
            if reply.ends_exchange() {
                let _ = self.stream.shutdown().await;
                return Ok(());
            }
            msg = self.recv_within(MAX_FRAME, IO_TIMEOUT).await?;
        }
        Err(ExchangeError::Closed)
    }
}

/// Runs one exchange as initiator with the member at `addr`. `Ok` only when the exchange
/// completed: a peer that closes early (overloaded, restarting, refusing us) is an error.
pub async fn exchange(
    addr: SocketAddr,
    replica: &Replica,
    keys: &Keys,
) -> Result<(), ExchangeError> {
    let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out())??;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        sealer: keys.connection_sealer(),
        keys,
    };
    let first = replica.with_state(|s| sync::start(s));
    conn.send(&first).await?;
    let answer = conn.recv_within(MAX_FRAME, IO_TIMEOUT).await?;
    conn.converse(replica, answer).await
}

/// The anti-entropy server: serves inbound exchanges until shutdown.
///
/// An inbound connection is *pending* until its first frame opens with the keyring: that
/// frame must come within [`FIRST_FRAME_TIMEOUT`] and be at most [`MAX_FIRST_FRAME`] bytes,
/// and at most [`MAX_PENDING`] connections are pending at once (one more evicts the oldest).
/// Only then does the peer wait (at most [`IO_TIMEOUT`]) for one of [`MAX_INBOUND`]
/// exchange slots, released as soon as its exchange ends. So idle or hostile connections
/// cost a pending place for two seconds at most and never hold an exchange slot (issue 15:
/// 200 idle connections stalled state sync for minutes). Refusals before authentication
/// are counted in `rhizome_refused_total{port="gossip_tcp"}`; authenticated exchanges in
/// `rhizome_gossip_sync_exchanges_total{direction="inbound", outcome}`.
pub struct Server {
    /// The state exchanged.
    pub replica: Arc<Replica>,
    /// Opens the first frame (the proof) and every later one.
    pub keys: Arc<Keys>,
    /// Exchange outcomes.
    pub metrics: Arc<GossipMetrics>,
    /// Accept errors (listener `gossip`), paused after.
    pub accept_errors: crate::accept::AcceptErrors,
    /// Refusals before authentication.
    pub refusals: Refusals,
}

/// A pending connection: aborted when evicted.
struct PendingConn {
    proven: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
    peer: SocketAddr,
}

impl PendingConn {
    fn is_pending(&self) -> bool {
        !self.proven.load(Ordering::Acquire) && !self.task.is_finished()
    }
}

impl Server {
    /// Serves `listener` until `shutdown`.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: crate::runtime::Shutdown,
    ) -> anyhow::Result<()> {
        let mut listener =
            crate::accept::Acceptor::new(listener, "gossip", self.accept_errors.clone());
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(MAX_INBOUND));
        let failures = Arc::new(failure_log());
        let mut pending: VecDeque<PendingConn> = VecDeque::new();
        // Exchanges in flight hold the replica (and so the store): end them with the agent.
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (stream, peer) = tokio::select! {
                () = shutdown.wait() => break,
                Some(_) = conns.join_next() => continue,
                got = listener.accept() => got,
            };
            pending.retain(PendingConn::is_pending);
            while pending.len() >= MAX_PENDING {
                let Some(oldest) = pending.pop_front() else {
                    break;
                };
                oldest.task.abort();
                this.refusals.refuse(
                    Port::GossipTcp,
                    "evicted",
                    Some(oldest.peer),
                    &"no authenticated frame yet and the pending places are full",
                );
            }
            let proven = Arc::new(AtomicBool::new(false));
            let task = conns.spawn(this.clone().inbound(
                stream,
                peer,
                slots.clone(),
                proven.clone(),
                failures.clone(),
            ));
            pending.push_back(PendingConn { proven, task, peer });
        }
        conns.abort_all();
        while conns.join_next().await.is_some() {}
        Ok(())
    }

    /// One inbound connection: the proof, a slot, the exchange.
    async fn inbound(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        slots: Arc<Semaphore>,
        proven: Arc<AtomicBool>,
        failures: Arc<RateLog<&'static str>>,
    ) {
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            sealer: self.keys.connection_sealer(),
            keys: &self.keys,
        };
        let first = match conn.recv_within(MAX_FIRST_FRAME, FIRST_FRAME_TIMEOUT).await {
            Ok(first) => first,
            Err(e) => {
                let reason = e.refusal_reason();
                self.refusals
                    .refuse(Port::GossipTcp, reason, Some(peer), &e);
                return;
            }
        };
        proven.store(true, Ordering::Release);
        let slot = tokio::time::timeout(IO_TIMEOUT, slots.acquire_owned()).await;
        let Ok(Ok(_slot)) = slot else {
            self.metrics.sync("inbound", "failed");
            self.refusals.refuse(
                Port::GossipTcp,
                "busy",
                Some(peer),
                &"every exchange slot stayed taken",
            );
            return;
        };
        match conn.converse(&self.replica, first).await {
            Ok(()) => self.metrics.sync("inbound", "ok"),
            Err(e) => {
                self.metrics.sync("inbound", "failed");
                log_failure(&failures, "inbound", peer, &e);
            }
        }
    }
}

/// Failed exchanges are logged at most this many times per [`LOG_WINDOW`] per direction.
const FAILURE_LINES: u32 = 5;

fn failure_log() -> RateLog<&'static str> {
    RateLog::new(FAILURE_LINES, LOG_WINDOW)
}

/// Logs a failed exchange (`inbound` or `outbound`) unless too many were logged lately.
fn log_failure(
    log: &RateLog<&'static str>,
    direction: &'static str,
    peer: SocketAddr,
    e: &ExchangeError,
) {
    if let Gate::Log { suppressed } = log.gate(direction, tokio::time::Instant::now()) {
        tracing::info!(direction, peer.addr = %peer, error = %e, suppressed,
            "anti-entropy exchange failed");
    }
}

/// Initiates exchanges: on request (after join, when a member without a known certificate
/// comes up) and with a random alive member every `interval` (jittered ±25 %).
pub struct Initiator {
    /// Requests from the membership driver.
    pub requests: mpsc::Receiver<SyncRequest>,
    /// The member table.
    pub members: watch::Receiver<Arc<Vec<MemberRow>>>,
    /// This agent's gossip address (never picked).
    pub own_addr: SocketAddr,
    /// The state.
    pub replica: Arc<Replica>,
    /// The keyring.
    pub keys: Arc<Keys>,
    /// Metrics.
    pub metrics: Arc<GossipMetrics>,
    /// Period of random exchanges.
    pub interval: Duration,
}

impl Initiator {
    /// Runs until shutdown.
    pub async fn run(mut self, shutdown: crate::runtime::Shutdown) -> anyhow::Result<()> {
        let failures = failure_log();
        loop {
            let jitter = self.interval.mul_f64(0.75 + rand::random::<f64>() * 0.5);
            let target = tokio::select! {
                () = shutdown.wait() => return Ok(()),
                Some(req) = self.requests.recv() => req,
                () = tokio::time::sleep(jitter) => SyncRequest::Random,
            };
            let addr = match target {
                SyncRequest::Peer { addr, cert } => {
                    if self.replica.get(&cert).is_some() {
                        continue;
                    }
                    Some(addr)
                }
                SyncRequest::Random => self.random_member(),
            };
            let Some(addr) = addr else { continue };
            match exchange(addr, &self.replica, &self.keys).await {
                Ok(()) => {
                    self.metrics.sync("outbound", "ok");
                    tracing::debug!(peer.addr = %addr, "anti-entropy exchange done");
                }
                Err(e) => {
                    self.metrics.sync("outbound", "failed");
                    log_failure(&failures, "outbound", addr, &e);
                }
            }
        }
    }

    fn random_member(&self) -> Option<SocketAddr> {
        let alive: Vec<SocketAddr> = self
            .members
            .borrow()
            .iter()
            .filter(|m| m.status == crate::api::types::Status::Alive && m.address != self.own_addr)
            .map(|m| m.address)
            .collect();
        if alive.is_empty() {
            None
        } else {
            Some(alive[rand::random_range(0..alive.len())])
        }
    }
}
