//! Hybrid logical clock: versions for replicated entries that follow wall time closely yet
//! stay monotonic and causally ordered when peers' clocks disagree.
//!
//! A timestamp packs the physical part (milliseconds since the Unix epoch, 48 bits, good
//! until the year 10889) and a logical counter (16 bits) into one `u64`, so that comparing the
//! integers compares the timestamps. The wall time is always an argument: the clock never reads
//! the system time itself.

use serde::{Deserialize, Serialize};

/// Number of low bits holding the logical counter.
const LOGICAL_BITS: u32 = 16;
/// Mask of the logical counter.
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;
/// Largest physical time representable (48 bits of milliseconds).
const MAX_PHYSICAL_MS: u64 = u64::MAX >> LOGICAL_BITS;

/// One hybrid logical clock timestamp; its integer order is its causal/time order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Hlc(u64);

impl Hlc {
    /// The smallest timestamp, older than every real one.
    pub const ZERO: Hlc = Hlc(0);

    /// Builds a timestamp from its physical milliseconds and logical counter; the physical part
    /// is saturated to 48 bits.
    pub fn new(physical_ms: u64, logical: u16) -> Self {
        Hlc((physical_ms.min(MAX_PHYSICAL_MS) << LOGICAL_BITS) | u64::from(logical))
    }

    /// Reinterprets a packed value (as stored or sent on the wire).
    pub fn from_u64(packed: u64) -> Self {
        Hlc(packed)
    }

    /// The packed value, used as the broadcast version.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Physical part, in milliseconds since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Logical counter, which orders events within one millisecond.
    pub fn logical(self) -> u16 {
        // The mask keeps 16 bits, so the conversion cannot fail.
        u16::try_from(self.0 & LOGICAL_MASK).unwrap_or(u16::MAX)
    }

    /// The next timestamp after this one (logical + 1, carrying into the physical part).
    fn successor(self) -> Self {
        Hlc(self.0.saturating_add(1))
    }
}

impl std::fmt::Display for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// Errors of the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HlcError {
    /// A remote timestamp lies further in the future than the allowed drift. The peer's clock
    /// (or the peer itself) is at fault; the local clock did not change.
    #[error(
        "remote clock {remote} is {ahead_ms} ms ahead of local wall time (max drift {max_drift_ms} ms)"
    )]
    TooFarAhead {
        /// The offending timestamp.
        remote: Hlc,
        /// How far ahead of the local wall time it is.
        ahead_ms: u64,
        /// The configured bound.
        max_drift_ms: u64,
    },
}

/// Default bound on how far a remote timestamp may run ahead of local wall time: 60 s.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 60_000;

/// The local hybrid logical clock of one node.
///
/// Call [`Clock::now`] to stamp a local write and [`Clock::update`] for every timestamp
/// received from a peer; both take the current wall time in milliseconds.
#[derive(Debug, Clone)]
pub struct Clock {
    last: Hlc,
    max_drift_ms: u64,
}

impl Clock {
    /// A clock that rejects remote timestamps more than `max_drift_ms` ahead of wall time.
    pub fn new(max_drift_ms: u64) -> Self {
        Clock {
            last: Hlc::ZERO,
            max_drift_ms,
        }
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// The configured drift bound in milliseconds.
    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// A fresh timestamp for a local event at wall time `wall_ms`: strictly greater than every
    /// timestamp issued or observed before, and at least the wall time.
    pub fn now(&mut self, wall_ms: u64) -> Hlc {
        let wall = Hlc::new(wall_ms, 0);
        self.last = if wall > self.last {
            wall
        } else {
            self.last.successor()
        };
        self.last
    }

    /// Checks that `remote` is not too far ahead of `wall_ms`, without changing the clock.
    pub fn check(&self, remote: Hlc, wall_ms: u64) -> Result<(), HlcError> {
        let limit = wall_ms.saturating_add(self.max_drift_ms);
        if remote.physical_ms() > limit {
            return Err(HlcError::TooFarAhead {
                remote,
                ahead_ms: remote.physical_ms() - wall_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        Ok(())
    }

    /// Merges a timestamp received from a peer, so that later local events order after it.
    /// Rejects (and ignores) timestamps beyond the drift bound.
    pub fn update(&mut self, remote: Hlc, wall_ms: u64) -> Result<(), HlcError> {
        self.check(remote, wall_ms)?;
        if remote > self.last {
            self.last = remote;
        }
        Ok(())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new(DEFAULT_MAX_DRIFT_MS)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_and_orders() {
        let a = Hlc::new(1_700_000_000_000, 7);
        assert_eq!(a.physical_ms(), 1_700_000_000_000);
        assert_eq!(a.logical(), 7);
        assert_eq!(Hlc::from_u64(a.as_u64()), a);
        assert!(Hlc::new(5, 0) > Hlc::new(4, u16::MAX));
        assert!(Hlc::new(5, 2) > Hlc::new(5, 1));
        assert_eq!(a.to_string(), "1700000000000.7");
    }

    #[test]
    fn now_follows_wall_time_and_stays_monotonic() {
        let mut clock = Clock::default();
        let t1 = clock.now(1000);
        assert_eq!(t1, Hlc::new(1000, 0));
        // Same millisecond: the logical counter advances.
        let t2 = clock.now(1000);
        assert_eq!(t2, Hlc::new(1000, 1));
        // Wall clock stepped backwards: still monotonic.
        let t3 = clock.now(900);
        assert!(t3 > t2);
        let t4 = clock.now(2000);
        assert_eq!(t4, Hlc::new(2000, 0));
    }

    #[test]
    fn logical_overflow_carries_into_physical() {
        let mut clock = Clock::default();
        clock
            .update(Hlc::new(1000, u16::MAX), 1000)
            .expect("within drift");
        let next = clock.now(1000);
        assert_eq!(next, Hlc::new(1001, 0));
    }

    #[test]
    fn update_orders_later_local_events_after_remote() {
        let mut clock = Clock::new(10_000);
        clock.now(1000);
        let remote = Hlc::new(5000, 3);
        clock.update(remote, 1000).expect("within drift");
        let local = clock.now(1001);
        assert!(local > remote);
        assert_eq!(local, Hlc::new(5000, 4));
    }

    #[test]
    fn too_far_ahead_is_rejected_and_leaves_clock_unchanged() {
        let mut clock = Clock::new(1000);
        let before = clock.now(10_000);
        let err = clock.update(Hlc::new(11_001, 0), 10_000).unwrap_err();
        assert_eq!(
            err,
            HlcError::TooFarAhead {
                remote: Hlc::new(11_001, 0),
                ahead_ms: 1001,
                max_drift_ms: 1000
            }
        );
        assert_eq!(clock.last(), before);
        // Exactly at the bound is accepted.
        clock
            .update(Hlc::new(11_000, 0), 10_000)
            .expect("at the bound");
        assert_eq!(clock.last(), Hlc::new(11_000, 0));
    }
}
