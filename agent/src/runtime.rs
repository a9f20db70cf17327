//! Small runtime pieces every task shares, each written once: the shutdown signal
//! ([`Shutdown`], after ztunnel's `drain`), poison-tolerant locking, one port number for UDP
//! and TCP, and wall-clock milliseconds.
//!
//! A leaf module: it imports nothing from this crate, so anything may import it.

use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// The write end of a shutdown signal: kept by whoever decides when its tasks stop (the
/// agent, or a listener's owner). Dropping it also stops the watchers, so a task never
/// outlives the owner of its trigger.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// The read end of a shutdown signal, cloned into every task: [`Shutdown::wait`] resolves
/// once the trigger fired or was dropped.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new signal: the trigger and its first watcher.
pub fn shutdown() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Tells every watcher to stop (idempotent).
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Resolves once the signal fired or its trigger is gone. Cancel-safe (it holds no
    /// guard across an await), so it can sit in a `select!` loop.
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Whether the signal fired (or its trigger is gone).
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}

/// Locks `m`, taking the data of a poisoned lock as it is: a panicking task must not take
/// the agent's other tasks down with it, and every value guarded here stays consistent
/// between statements.
pub fn lock_unpoisoned<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// [`lock_unpoisoned`] for a read lock.
pub fn read_unpoisoned<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// [`lock_unpoisoned`] for a write lock.
pub fn write_unpoisoned<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Milliseconds since the Unix epoch of `at` (0 before the epoch, saturating far after):
/// the libraries take wall time as an argument, and this is the one conversion.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// [`unix_ms`] of now.
pub fn now_unix_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// Binds UDP on `addr`, then TCP on the port UDP got, so both protocols share one port
/// number (gossip: SWIM and anti-entropy; data: QUIC and TLS). With port 0 the TCP port may
/// be taken: up to `tries` ports are tried. `what` names the port in errors.
pub async fn bind_udp_tcp(
    addr: SocketAddr,
    tries: usize,
    what: &str,
) -> anyhow::Result<(std::net::UdpSocket, tokio::net::TcpListener)> {
    let mut last_err = None;
    for _ in 0..tries {
        let udp = std::net::UdpSocket::bind(addr)
            .with_context(|| format!("cannot bind the {what} port on udp/{addr}"))?;
        let bound = udp.local_addr()?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last_err = Some(e),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot bind the {what} port on tcp/{bound}"));
            }
        }
    }
    Err(anyhow::anyhow!(
        "cannot bind one {what} port for both UDP and TCP on {}: {last_err:?}",
        addr.ip()
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_resolves_on_trigger_and_on_drop() {
        let (trigger, watcher) = shutdown();
        assert!(!watcher.is_triggered());
        trigger.trigger();
        watcher.wait().await;
        assert!(watcher.is_triggered());
        let (trigger, watcher) = shutdown();
        drop(trigger);
        watcher.wait().await;
        assert!(watcher.is_triggered());
    }

    #[test]
    fn poisoned_locks_still_give_their_data() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock();
            panic!("poison");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock_unpoisoned(&m), 1);
    }

    #[test]
    fn unix_ms_is_zero_before_the_epoch() {
        assert_eq!(unix_ms(UNIX_EPOCH), 0);
        assert_eq!(
            unix_ms(UNIX_EPOCH + std::time::Duration::from_millis(1500)),
            1500
        );
        if let Some(before) = UNIX_EPOCH.checked_sub(std::time::Duration::from_secs(1)) {
            assert_eq!(unix_ms(before), 0);
        }
    }

    #[tokio::test]
    async fn one_port_for_udp_and_tcp() {
        let (udp, tcp) = bind_udp_tcp("127.0.0.1:0".parse().unwrap(), 8, "test")
            .await
            .unwrap();
        assert_eq!(
            udp.local_addr().unwrap().port(),
            tcp.local_addr().unwrap().port()
        );
    }
}
