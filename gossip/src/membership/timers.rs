//! Foca's timers, held until their (possibly stretched) deadline. Every timer foca submits is
//! delivered exactly once, in deadline order; ties follow foca's own `Timer` order (an
//! indirect probe before the next probe), then submission order.

use std::collections::BTreeMap;
use std::time::Duration;

use foca::Timer;

use super::identity::NodeId;

/// Rank of a timer among timers due at the same instant (foca's `Timer` ordering).
fn rank(timer: &Timer<NodeId>) -> u8 {
    match timer {
        Timer::SendIndirectProbe { .. } => 0,
        Timer::ProbeRandomMember(_) => 1,
        Timer::ChangeSuspectToDown { .. } => 2,
        Timer::PeriodicAnnounce(_) => 3,
        Timer::PeriodicGossip(_) => 4,
        Timer::RemoveDown(_) => 5,
        Timer::PeriodicAnnounceDown(_) => 6,
    }
}

/// Pending foca timers keyed by `(deadline, rank, sequence)`.
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    queue: BTreeMap<(Duration, u8, u64), Timer<NodeId>>,
    seq: u64,
}

impl TimerQueue {
    /// Schedules `timer` at `deadline`.
    pub(crate) fn push(&mut self, deadline: Duration, timer: Timer<NodeId>) {
        self.seq += 1;
        self.queue.insert((deadline, rank(&timer), self.seq), timer);
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.queue.keys().next().map(|k| k.0)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Duration) -> Option<Timer<NodeId>> {
        let entry = self.queue.first_entry()?;
        if entry.key().0 <= now {
            Some(entry.remove())
        } else {
            None
        }
    }

    /// Number of pending timers.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}
