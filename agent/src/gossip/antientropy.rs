//! Anti-entropy over TCP on the gossip port number: push/pull exchanges of the replicated
//! state ([`rhizome_gossip::sync`]) with one peer at a time.
//!
//! A frame is a 4-byte big-endian length followed by one sealed [`SyncMessage`] (sealed and
//! opened like gossip packets, see [`super::keys`]). Frames above [`MAX_FRAME`] are refused
//! before anything is allocated, every read and write has a deadline, and at most
//! [`MAX_INBOUND`] inbound exchanges run at once.

use std::net::SocketAddr;
use std::sync::Arc;
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

/// Largest frame accepted: the sync crate's bound.
pub const MAX_FRAME: usize = MAX_FRAME_BYTES;
/// Deadline of each connect, frame read or frame write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Inbound exchanges served at once; more wait for a slot.
pub const MAX_INBOUND: usize = 16;

/// Why an exchange stopped. The peer (or the network) is at fault; what was applied stays.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Connect, read or write failed or timed out.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame longer than [`MAX_FRAME`].
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
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        Ok(())
    }

    /// The next message, or `None` at a clean end of stream.
    async fn recv(&mut self) -> Result<Option<SyncMessage>, ExchangeError> {
        let read = async {
            let mut len = [0u8; 4];
            match self.stream.read_exact(&mut len).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(ExchangeError::Io(e)),
            }
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_FRAME {
                return Err(ExchangeError::TooLarge(len));
            }
            let mut frame = vec![0u8; len];
            self.stream.read_exact(&mut frame).await?;
            Ok(Some(frame))
        };
        let frame = tokio::time::timeout(IO_TIMEOUT, read)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let Some(frame) = frame else { return Ok(None) };
        let payload = self.keys.open(now_ms(), &frame)?;
        Ok(Some(SyncMessage::from_bytes(&payload)?))
    }

    /// Answers messages until the exchange ends.
    async fn converse(&mut self, replica: &Replica) -> Result<(), ExchangeError> {
        while let Some(msg) = self.recv().await? {
            let reply = replica.with_state(|s| sync::handle(s, msg, now_ms()))?;
            match reply {
                Some(reply) => self.send(&reply).await?,
                None => break,
            }
        }
        Ok(())
    }
}

/// Runs one exchange as initiator with the member at `addr`.
pub async fn exchange(
    addr: SocketAddr,
    replica: &Replica,
    keys: &Keys,
) -> Result<(), ExchangeError> {
    let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        sealer: keys.connection_sealer(),
        keys,
    };
    let first = replica.with_state(|s| sync::start(s));
    conn.send(&first).await?;
    conn.converse(replica).await?;
    let _ = conn.stream.shutdown().await;
    Ok(())
}

/// Serves inbound exchanges until shutdown (accept errors counted in `errors`, listener
/// `gossip`, and paused after).
pub async fn serve(
    listener: TcpListener,
    replica: Arc<Replica>,
    keys: Arc<Keys>,
    metrics: Arc<GossipMetrics>,
    errors: crate::accept::AcceptErrors,
    shutdown: crate::runtime::Shutdown,
) -> anyhow::Result<()> {
    let mut listener = crate::accept::Acceptor::new(listener, "gossip", errors);
    let slots = Arc::new(Semaphore::new(MAX_INBOUND));
    // Exchanges in flight hold the replica (and so the store): end them with the agent.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.wait() => break,
            Some(_) = conns.join_next() => continue,
            got = listener.accept() => got,
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (replica, keys, metrics) = (replica.clone(), keys.clone(), metrics.clone());
        conns.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let mut conn = Conn {
                stream,
                sealer: keys.connection_sealer(),
                keys: &keys,
            };
            match conn.converse(&replica).await {
                Ok(()) => metrics.sync("ok"),
                Err(e) => {
                    metrics.sync("failed");
                    tracing::debug!(peer.addr = %peer, error = %e, "inbound anti-entropy failed");
                }
            }
        });
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    Ok(())
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
                    self.metrics.sync("ok");
                    tracing::debug!(peer.addr = %addr, "anti-entropy exchange done");
                }
                Err(e) => {
                    self.metrics.sync("failed");
                    tracing::debug!(peer.addr = %addr, error = %e, "anti-entropy exchange failed");
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
