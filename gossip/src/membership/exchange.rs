//! Push/pull membership exchange, as memberlist does over TCP: on join and periodically, a
//! node sends its whole member table (in packet-sized chunks) to one random member, which
//! merges it and answers with its own. Foca's epidemic spread sends each update a bounded
//! number of times, so during a join storm a few (node, member) pairs are missed; this
//! repairs them within one exchange instead of waiting for periodic announces.

use std::net::SocketAddr;
use std::time::Duration;

use foca::{Member, State};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::{Membership, MembershipError, NodeId, Transmit, Wire};

/// Exchanges done at a fast pace after each join.
const FAST_SYNCS: u32 = 3;
/// Probe periods between those fast exchanges.
const FAST_SYNC_PERIODS: u32 = 5;

/// Leading part of a sync chunk.
#[derive(Debug, Serialize, Deserialize)]
struct SyncHeader {
    /// The sender (where a reply goes).
    from: NodeId,
    /// Whether the receiver should answer with its own table (first chunk of a push only).
    reply: bool,
}

impl Membership {
    /// Interval between periodic exchanges for `n` members (memberlist's scaling: doubles
    /// per doubling of the cluster beyond 32 members).
    fn sync_interval(&self, n: usize) -> Option<Duration> {
        let base = self.config.push_pull_interval_ms;
        if base == 0 {
            return None;
        }
        let scale = if n <= 32 {
            1.0
        } else {
            ((n as f64).log2() - 32f64.log2()).ceil() + 1.0
        };
        Some(Duration::from_millis(base).mul_f64(scale))
    }

    /// Pushes our table to a random active member (asking for its table back) and schedules
    /// the next exchange.
    pub(super) fn start_sync(&mut self, now: Duration) {
        let n = self.foca.num_members();
        self.next_sync = self.sync_interval(n + 1).map(|d| now + d);
        if self.syncs_since_join < FAST_SYNCS {
            // Right after joining (often while many others join too), the first partner may
            // know little: exchange again soon before settling on the periodic interval.
            self.syncs_since_join += 1;
            let soon = now + self.config.probe_interval() * FAST_SYNC_PERIODS;
            self.next_sync = Some(self.next_sync.map_or(soon, |t| t.min(soon)));
        }
        if n == 0 {
            return;
        }
        let pick = self.rng.random_range(0..n);
        let Some(peer) = self.foca.iter_members().nth(pick).map(|m| m.id().addr) else {
            return;
        };
        self.send_table(peer, true);
    }

    /// Sends our member table (ourselves first) to `to` in chunks of at most
    /// `max_packet_size` bytes.
    pub(super) fn send_table(&mut self, to: SocketAddr, reply: bool) {
        let me = self.identity().clone();
        let own = Member::new(me.clone(), self.swim_incarnation, State::Alive);
        let mut encoded: Vec<Vec<u8>> =
            Vec::with_capacity(self.foca.iter_membership_state().len() + 1);
        for m in std::iter::once(&own).chain(self.foca.iter_membership_state()) {
            if let Ok(bytes) = postcard::to_allocvec(m) {
                encoded.push(bytes);
            }
        }
        let start_chunk = |reply: bool| -> Option<Vec<u8>> {
            let mut chunk = vec![Wire::SyncPush as u8];
            let header = SyncHeader {
                from: me.clone(),
                reply,
            };
            chunk.extend_from_slice(&postcard::to_allocvec(&header).ok()?);
            Some(chunk)
        };
        let Some(mut chunk) = start_chunk(reply) else {
            return;
        };
        let mut in_chunk = 0;
        for m in encoded {
            if in_chunk > 0 && chunk.len() + m.len() > self.config.max_packet_size {
                let full = std::mem::replace(&mut chunk, start_chunk(false).unwrap_or_default());
                self.transmits.push_back(Transmit { to, payload: full });
                in_chunk = 0;
            }
            chunk.extend_from_slice(&m);
            in_chunk += 1;
        }
        if in_chunk > 0 {
            self.transmits.push_back(Transmit { to, payload: chunk });
        }
    }

    /// Merges one received chunk (without re-gossiping it) and answers a push.
    pub(super) fn handle_sync(
        &mut self,
        now: Duration,
        from: SocketAddr,
        body: &[u8],
    ) -> Result<(), MembershipError> {
        let malformed = MembershipError::Malformed { from };
        let (header, mut rest) =
            postcard::take_from_bytes::<SyncHeader>(body).map_err(|_| malformed)?;
        let mut members = Vec::new();
        while !rest.is_empty() {
            let (m, tail) = postcard::take_from_bytes::<Member<NodeId>>(rest)
                .map_err(|_| MembershipError::Malformed { from })?;
            members.push(m);
            rest = tail;
        }
        let res = self
            .foca
            .apply_many(members.into_iter(), false, &mut self.effects);
        self.absorb(now);
        if header.reply && header.from.addr != self.identity().addr {
            self.send_table(header.from.addr, false);
        }
        res.map_err(|source| MembershipError::Rejected { from, source })
    }
}
