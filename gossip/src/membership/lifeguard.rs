//! Lifeguard's two additions to SWIM, kept outside foca: local health awareness (a score
//! that stretches our own probe timing) and suspicion timeouts that shrink with independent
//! confirmations. See the `membership` module docs for how they are wired into foca.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use super::identity::{Generation, NodeId, NodeName};
use foca::Timer;

/// Local health multiplier ("LHM" in the Lifeguard paper): grows when our probes go
/// unanswered or when we must refute a suspicion about ourselves, shrinks on each answered
/// probe. Our probe interval and timeout are multiplied by `1 + score`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Awareness {
    score: u32,
    max: u32,
}

impl Awareness {
    /// A healthy score with the given ceiling (0 disables awareness).
    pub(crate) fn new(max: u32) -> Self {
        Self { score: 0, max }
    }

    /// Adds `delta` (may be negative), clamped to `0..=max`.
    pub(crate) fn apply(&mut self, delta: i32) {
        let next = i64::from(self.score) + i64::from(delta);
        self.score = next.clamp(0, i64::from(self.max)) as u32;
    }

    /// The current score.
    pub(crate) fn score(&self) -> u32 {
        self.score
    }

    /// `base` stretched by the current score.
    pub(crate) fn scale(&self, base: Duration) -> Duration {
        base * (1 + self.score)
    }
}

/// Which suspicion an entry tracks: a member identity at one SWIM incarnation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SuspectKey {
    pub(crate) addr: SocketAddr,
    pub(crate) generation: Generation,
    pub(crate) incarnation: u16,
}

impl SuspectKey {
    pub(crate) fn new(id: &NodeId, incarnation: u16) -> Self {
        Self {
            addr: id.addr,
            generation: id.generation,
            incarnation,
        }
    }
}

/// How many times a suspicion nobody confirmed is rechecked before its verdict.
pub(crate) const LONE_RECHECKS: u8 = 3;

/// One suspicion: who confirmed it, and foca's down timers waiting for its deadline.
#[derive(Debug)]
struct Suspicion {
    /// When our own probe first failed (`None`: we only heard others' claims so far).
    started: Option<Duration>,
    /// When the entry may be forgotten if we never suspect it ourselves.
    expires: Duration,
    min: Duration,
    max: Duration,
    /// Independent suspecters other than us.
    confirmers: HashSet<NodeName>,
    /// Confirmations that bring the timeout down to `min`.
    expected: u32,
    timers: Vec<Timer<NodeId>>,
    /// Added to the deadline when a lone suspicion is rechecked (see [`Suspicions::take_due`]).
    extension: Duration,
    /// Lone-accuser rechecks done so far (at most [`LONE_RECHECKS`]).
    rechecks: u8,
}

impl Suspicion {
    /// Lifeguard's timeout: `max - (max - min) * log(C + 1) / log(K + 1)`, floored at `min`.
    fn deadline(&self) -> Option<Duration> {
        let start = self.started?;
        let c = self.confirmers.len() as f64;
        let k = f64::from(self.expected);
        let frac = if k <= 0.0 {
            1.0
        } else {
            ((c + 1.0).ln() / (k + 1.0).ln()).min(1.0)
        };
        let span = self.max.saturating_sub(self.min).mul_f64(frac);
        Some(start + self.max.saturating_sub(span).max(self.min) + self.extension)
    }
}

/// What [`Suspicions::take_due`] found due.
#[derive(Debug, Default)]
pub(crate) struct Due {
    /// Foca's down timers to deliver now (verdicts).
    pub(crate) timers: Vec<Timer<NodeId>>,
    /// Lone suspicions to recheck before their verdict.
    pub(crate) recheck: Vec<SuspectKey>,
    /// Due suspicions dropped because the member refuted or is gone.
    pub(crate) stale: u64,
}

/// All open suspicions of one node.
#[derive(Debug, Default)]
pub(crate) struct Suspicions {
    open: HashMap<SuspectKey, Suspicion>,
}

impl Suspicions {
    /// Registers foca's down timer after our own probe failed; returns `true` when this is our
    /// first suspicion of that member incarnation (so we should tell others).
    pub(crate) fn suspect(
        &mut self,
        now: Duration,
        key: SuspectKey,
        timer: Timer<NodeId>,
        bounds: (Duration, Duration),
        expected: u32,
    ) -> bool {
        let entry = self.open.entry(key).or_insert_with(|| Suspicion {
            started: None,
            expires: now + bounds.1,
            min: bounds.0,
            max: bounds.1,
            confirmers: HashSet::new(),
            expected,
            timers: Vec::new(),
            extension: Duration::ZERO,
            rechecks: 0,
        });
        entry.timers.push(timer);
        if entry.started.is_some() {
            return false;
        }
        entry.started = Some(now);
        entry.min = bounds.0;
        entry.max = bounds.1;
        entry.expected = expected;
        true
    }

    /// Records another node's claim; returns `true` if that confirmer is new (worth
    /// re-gossiping).
    pub(crate) fn confirm(
        &mut self,
        now: Duration,
        key: SuspectKey,
        origin: NodeName,
        bounds: (Duration, Duration),
        expected: u32,
    ) -> bool {
        let entry = self.open.entry(key).or_insert_with(|| Suspicion {
            started: None,
            expires: now + bounds.1,
            min: bounds.0,
            max: bounds.1,
            confirmers: HashSet::new(),
            expected,
            timers: Vec::new(),
            extension: Duration::ZERO,
            rechecks: 0,
        });
        entry.confirmers.insert(origin)
    }

    /// Earliest instant at which something is due (a deadline or an expiry).
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.open
            .values()
            .map(|s| s.deadline().unwrap_or(s.expires))
            .min()
    }

    /// Removes every suspicion due at `now`, returning foca's timers to deliver (in order),
    /// the members to recheck, and how many due suspicions were already stale.
    ///
    /// `live` tells whether we still hold a suspicion's member suspect at its incarnation. A
    /// due suspicion that is not live any more (the member refuted, or is gone) is dropped
    /// with its timers: foca would leave the member's state alone but still send it
    /// `TurnUndead` (foca 2.0 honours `notify_down_members` even when its incarnation check
    /// fails), which makes a healthy member rejoin.
    ///
    /// A live suspicion nobody else confirmed is not turned into a down verdict at once: its
    /// deadline moves `min` past `now` (up to [`LONE_RECHECKS`] times; each exchange may be
    /// lost on the lossy link that caused the accusation), and it is returned for a recheck so
    /// the caller can ask the member (and a random member) for their tables. If the member is
    /// alive, the exchange brings its newer incarnation and the suspicion goes stale; if it is
    /// dead, the verdict comes `LONE_RECHECKS * min` later.
    pub(crate) fn take_due(&mut self, now: Duration, live: impl Fn(&SuspectKey) -> bool) -> Due {
        let mut out = Due::default();
        self.open.retain(|key, s| match s.deadline() {
            Some(d) if d <= now && !live(key) => {
                out.stale += 1;
                false
            }
            Some(d) if d <= now && s.confirmers.is_empty() && s.rechecks < LONE_RECHECKS => {
                s.rechecks += 1;
                s.extension += now.saturating_sub(d) + s.min;
                out.recheck.push(key.clone());
                true
            }
            Some(d) if d <= now => {
                out.timers.append(&mut s.timers);
                false
            }
            Some(_) => true,
            None => s.expires > now,
        });
        out
    }

    /// Number of open suspicions (a metric).
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::new(
            format!("n{n}").parse().unwrap(),
            format!("127.0.0.{n}:7946").parse().unwrap(),
            Generation(1),
        )
    }

    fn live(_: &SuspectKey) -> bool {
        true
    }

    fn down_timer(n: u8) -> Timer<NodeId> {
        Timer::ChangeSuspectToDown {
            member_id: id(n),
            incarnation: 0,
            token: 0,
        }
    }

    #[test]
    fn awareness_is_clamped_and_stretches() {
        let mut a = Awareness::new(8);
        a.apply(-1);
        assert_eq!(a.score(), 0);
        for _ in 0..20 {
            a.apply(1);
        }
        assert_eq!(a.score(), 8);
        assert_eq!(
            a.scale(Duration::from_millis(500)),
            Duration::from_millis(4_500)
        );
        let mut off = Awareness::new(0);
        off.apply(3);
        assert_eq!(off.scale(Duration::from_secs(1)), Duration::from_secs(1));
    }

    #[test]
    fn confirmations_shrink_the_timeout_to_the_minimum() {
        let bounds = (Duration::from_secs(4), Duration::from_secs(24));
        let key = SuspectKey::new(&id(2), 0);
        let mut s = Suspicions::default();
        let t0 = Duration::from_secs(100);
        assert!(s.suspect(t0, key.clone(), down_timer(2), bounds, 2));
        assert!(!s.suspect(t0, key.clone(), down_timer(2), bounds, 2));
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(24)));
        assert!(s.confirm(t0, key.clone(), "a".parse().unwrap(), bounds, 2));
        assert!(!s.confirm(t0, key.clone(), "a".parse().unwrap(), bounds, 2));
        let one = s.next_deadline().unwrap();
        assert!(one < t0 + Duration::from_secs(24) && one > t0 + Duration::from_secs(4));
        assert!(
            s.take_due(one - Duration::from_millis(1), live)
                .timers
                .is_empty()
        );
        assert!(s.confirm(t0, key.clone(), "b".parse().unwrap(), bounds, 2));
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(4)));
        assert_eq!(
            s.take_due(t0 + Duration::from_secs(4), live).timers.len(),
            2
        );
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn claims_alone_expire_without_timers() {
        let bounds = (Duration::from_secs(4), Duration::from_secs(24));
        let mut s = Suspicions::default();
        s.confirm(
            Duration::ZERO,
            SuspectKey::new(&id(3), 1),
            "a".parse().unwrap(),
            bounds,
            2,
        );
        assert_eq!(s.next_deadline(), Some(Duration::from_secs(24)));
        let Due {
            timers: due,
            recheck,
            ..
        } = s.take_due(Duration::from_secs(24), live);
        assert!(due.is_empty() && recheck.is_empty());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_lone_suspicion_is_rechecked_before_its_verdict() {
        let bounds = (Duration::from_secs(4), Duration::from_secs(24));
        let key = SuspectKey::new(&id(2), 0);
        let mut s = Suspicions::default();
        assert!(s.suspect(Duration::ZERO, key, down_timer(2), bounds, 2));
        let mut now = Duration::from_secs(25);
        for round in 0..LONE_RECHECKS {
            let Due {
                timers: due,
                recheck,
                ..
            } = s.take_due(now, live);
            assert!(due.is_empty(), "no verdict during recheck {round}");
            assert_eq!(recheck, vec![SuspectKey::new(&id(2), 0)]);
            assert_eq!(
                s.next_deadline(),
                Some(now + Duration::from_secs(4)),
                "min after now"
            );
            let Due {
                timers: due,
                recheck,
                ..
            } = s.take_due(now + Duration::from_secs(3), live);
            assert!(due.is_empty() && recheck.is_empty());
            now += Duration::from_secs(4);
        }
        let Due {
            timers: due,
            recheck,
            ..
        } = s.take_due(now, live);
        assert_eq!(due.len(), 1, "the verdict after the last recheck window");
        assert!(recheck.is_empty());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_confirmed_suspicion_is_not_rechecked() {
        let bounds = (Duration::from_secs(4), Duration::from_secs(24));
        let key = SuspectKey::new(&id(2), 0);
        let mut s = Suspicions::default();
        assert!(s.suspect(Duration::ZERO, key.clone(), down_timer(2), bounds, 2));
        assert!(s.confirm(Duration::ZERO, key, "a".parse().unwrap(), bounds, 2));
        let Due {
            timers: due,
            recheck,
            ..
        } = s.take_due(Duration::from_secs(24), live);
        assert_eq!(due.len(), 1);
        assert!(recheck.is_empty());
    }

    #[test]
    fn a_refuted_suspicion_is_dropped_without_verdict_or_recheck() {
        let bounds = (Duration::from_secs(4), Duration::from_secs(24));
        let key = SuspectKey::new(&id(2), 0);
        let mut s = Suspicions::default();
        assert!(s.suspect(Duration::ZERO, key.clone(), down_timer(2), bounds, 2));
        assert!(!s.suspect(Duration::ZERO, key, down_timer(2), bounds, 2));
        let due = s.take_due(Duration::from_secs(24), |_| false);
        assert!(due.timers.is_empty() && due.recheck.is_empty());
        assert_eq!(due.stale, 1);
        assert_eq!(s.len(), 0);
    }
}
