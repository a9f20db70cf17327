//! Accepting TCP connections without melting when the process runs out of file descriptors,
//! and the open-files limit the agent runs with.
//!
//! A failed `accept` leaves the connection in the backlog, so retrying at once fails again at
//! once: with one warning per failure that was 13 million log lines in 41 s at the default
//! limit of 1,024 (issue 15). [`Acceptor`] instead backs off after a resource error (10 ms,
//! doubling to 100 ms, reset by the next success), counts every error in
//! `rhizome_accept_errors_total{listener, kind}` and logs at most one line per second per
//! listener, saying how many it suppressed. [`raise_open_files_limit`] lifts the soft limit
//! to the hard one at start, so only a deliberate hard limit (systemd's `LimitNOFILE=`)
//! bounds the agent.
//!
//! A leaf module, like `runtime`: it imports nothing from this crate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// First pause after a resource error.
pub const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between two accepts while resources are exhausted.
pub const MAX_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per listener per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Why an accept failed, as the `kind` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// `EMFILE`: this process is at its open-files limit.
    Emfile,
    /// `ENFILE`: the system-wide file table is full.
    Enfile,
    /// `ENOBUFS`/`ENOMEM`: the kernel is short of memory.
    NoMemory,
    /// The connection died before it was accepted (`ECONNABORTED`, `EPROTO`...): the
    /// client's doing, no pause needed.
    Aborted,
    /// Anything else (a pause too, in case it repeats).
    Other,
}

impl ErrorKind {
    /// The kind of `e`.
    pub fn of(e: &io::Error) -> ErrorKind {
        match e.raw_os_error() {
            Some(libc::EMFILE) => ErrorKind::Emfile,
            Some(libc::ENFILE) => ErrorKind::Enfile,
            Some(libc::ENOBUFS | libc::ENOMEM) => ErrorKind::NoMemory,
            Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EPROTO | libc::EPERM) => {
                ErrorKind::Aborted
            }
            _ => ErrorKind::Other,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Emfile => "emfile",
            ErrorKind::Enfile => "enfile",
            ErrorKind::NoMemory => "nomem",
            ErrorKind::Aborted => "aborted",
            ErrorKind::Other => "other",
        }
    }

    /// Whether accepting again at once would fail the same way.
    pub fn needs_pause(self) -> bool {
        self != ErrorKind::Aborted
    }
}

/// Labels of `rhizome_accept_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcceptLabels {
    /// The listener: `upstream`, `data` or `gossip`.
    pub listener: String,
    /// The [`ErrorKind`] label.
    pub kind: String,
}

/// `rhizome_accept_errors_total{listener, kind}`, shared by every listener of one agent.
#[derive(Clone, Debug, Default)]
pub struct AcceptErrors(Family<AcceptLabels, Counter>);

impl AcceptErrors {
    /// The family, to register once (as `accept_errors`).
    pub fn family(&self) -> Family<AcceptLabels, Counter> {
        self.0.clone()
    }

    fn count(&self, listener: &str, kind: ErrorKind) {
        self.0
            .get_or_create(&AcceptLabels {
                listener: listener.to_string(),
                kind: kind.as_str().to_string(),
            })
            .inc();
    }
}

/// The pause after each error of a run of resource errors: from [`MIN_BACKOFF`], doubling up
/// to [`MAX_BACKOFF`]; zero again after a success.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backoff(Duration);

impl Backoff {
    /// The pause after one more error.
    pub fn next(&mut self) -> Duration {
        self.0 = (self.0 * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        self.0
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }
}

/// At most one log line per [`LOG_INTERVAL`]; counts what it suppressed.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(n)` if a line may be logged at `now` (`n` lines were suppressed since the last
    /// one), `None` if this one is suppressed.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < LOG_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// A TCP listener whose errors back off, are counted and logged at a bounded rate.
pub struct Acceptor {
    listener: TcpListener,
    name: &'static str,
    errors: AcceptErrors,
    backoff: Backoff,
    retry_at: Option<Instant>,
    log: LogLimit,
}

impl Acceptor {
    /// Wraps `listener`; `name` is its `listener` label (`upstream`, `data`, `gossip`).
    pub fn new(listener: TcpListener, name: &'static str, errors: AcceptErrors) -> Acceptor {
        Acceptor {
            listener,
            name,
            errors,
            backoff: Backoff::default(),
            retry_at: None,
            log: LogLimit::default(),
        }
    }

    /// The next connection. Errors are handled here (counted, logged at a bounded rate,
    /// paused after). Cancel-safe: a pause cut short by `select!` resumes on the next call.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            match self.listener.accept().await {
                Ok(conn) => {
                    self.backoff.reset();
                    return conn;
                }
                Err(e) => self.on_error(&e),
            }
        }
    }

    fn on_error(&mut self, e: &io::Error) {
        let kind = ErrorKind::of(e);
        self.errors.count(self.name, kind);
        let now = Instant::now();
        let pause = kind.needs_pause().then(|| self.backoff.next());
        if let Some(pause) = pause {
            self.retry_at = Some(now + pause);
        }
        if let Some(suppressed) = self.log.allow(now) {
            tracing::warn!(listener = self.name, kind = kind.as_str(), error = %e, suppressed,
                pause_ms = pause.map_or(0, |p| u64::try_from(p.as_millis()).unwrap_or(u64::MAX)),
                "accept failed");
        }
    }
}

/// The open-files limit after [`raise_open_files_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit before.
    pub was: Option<u64>,
    /// The soft limit now (`None`: unlimited).
    pub soft: Option<u64>,
    /// The hard limit (`None`: unlimited).
    pub hard: Option<u64>,
}

/// Most descriptors asked for when the hard limit is unlimited (Linux refuses an unlimited
/// soft limit for open files; `fs.nr_open` defaults to this).
const UNLIMITED_CAP: u64 = 1 << 20;

/// Raises the soft open-files limit (RLIMIT_NOFILE) to the hard limit and logs what the
/// agent got: systemd starts services with a soft limit of 1,024, which ~300 proxied
/// connections exhaust. A refusal is logged and the limit kept.
pub fn raise_open_files_limit() -> OpenFiles {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let want = before.maximum.unwrap_or(UNLIMITED_CAP);
    let mut now = OpenFiles {
        was: before.current,
        soft: before.current,
        hard: before.maximum,
    };
    if before.current.is_some_and(|soft| soft < want) {
        let raised = Rlimit {
            current: Some(want),
            maximum: before.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => now.soft = Some(want),
            Err(e) => {
                tracing::warn!(error = %e, soft = ?before.current, hard = ?before.maximum,
                    "cannot raise the open-files limit");
            }
        }
    }
    tracing::info!(soft = ?now.soft, hard = ?now.hard, was = ?now.was,
        "open-files limit (RLIMIT_NOFILE)");
    now
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..6).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 100, 100]);
        b.reset();
        assert_eq!(b.next(), MIN_BACKOFF);
    }

    #[test]
    fn log_limit_allows_one_line_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut l = LogLimit::default();
        assert_eq!(l.allow(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(l.allow(t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(l.allow(t0 + LOG_INTERVAL), Some(500));
        assert_eq!(l.allow(t0 + LOG_INTERVAL), None);
    }

    #[test]
    fn errors_are_classified() {
        let kind = |code| ErrorKind::of(&io::Error::from_raw_os_error(code));
        assert_eq!(kind(libc::EMFILE), ErrorKind::Emfile);
        assert_eq!(kind(libc::ENFILE), ErrorKind::Enfile);
        assert_eq!(kind(libc::ENOBUFS), ErrorKind::NoMemory);
        assert_eq!(kind(libc::ECONNABORTED), ErrorKind::Aborted);
        assert!(!ErrorKind::Aborted.needs_pause());
        assert!(ErrorKind::Emfile.needs_pause());
        assert_eq!(kind(libc::EINVAL), ErrorKind::Other);
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let got = raise_open_files_limit();
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(now.current, got.soft);
        if let (Some(soft), Some(hard)) = (got.soft, got.hard) {
            assert_eq!(soft, hard);
        }
    }
}
