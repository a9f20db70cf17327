//! Prometheus families of the gossip layer: members by state, packets dropped by reason,
//! entries rejected by reason, state size, anti-entropy exchanges. Dropped packets are also
//! counted (and logged at a bounded rate) as refusals on port `gossip_udp`.

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rhizome_gossip::keyring::OpenError;
use rhizome_gossip::membership::MembershipStats;
use rhizome_gossip::state::Counters;

use crate::api::types::{MemberRow, Status};

/// One label `name="value"`.
type Label = [(&'static str, &'static str); 1];

/// The gossip metric handles (cheap to update from any task).
#[derive(Default)]
pub struct GossipMetrics {
    members: Family<Label, Gauge>,
    dropped: Family<Label, Counter>,
    rejected: Family<Label, Counter>,
    last_rejected: Mutex<Vec<u64>>,
    state_entries: Gauge,
    received: Counter,
    sent: Counter,
    syncs: Family<[(&'static str, &'static str); 2], Counter>,
    local_health: Gauge,
    open_suspicions: Gauge,
    stale_verdicts: Gauge,
    refusals: OnceLock<crate::refusals::Refusals>,
}

impl GossipMetrics {
    /// Registers every family in the agent's registry.
    pub fn register(&self, registry: &crate::metrics::Metrics) {
        let _ = self.refusals.set(registry.refusals.clone());
        registry.register(
            "gossip_members",
            "Members of the gossip cluster by state, as this agent sees them",
            self.members.clone(),
        );
        registry.register(
            "gossip_packets_dropped",
            "Gossip packets dropped before membership saw them, by reason",
            self.dropped.clone(),
        );
        registry.register(
            "gossip_entries_rejected",
            "Replicated entries refused (bad signature, wrong owner...), by reason",
            self.rejected.clone(),
        );
        registry.register(
            "gossip_state_entries",
            "Entries in the replicated state, tombstones included",
            self.state_entries.clone(),
        );
        registry.register(
            "gossip_packets_received",
            "Gossip UDP packets received",
            self.received.clone(),
        );
        registry.register(
            "gossip_packets_sent",
            "Gossip UDP packets sent",
            self.sent.clone(),
        );
        registry.register(
            "gossip_sync_exchanges",
            "Anti-entropy exchanges by direction (inbound: a peer's, outbound: ours) and outcome (ok only when complete)",
            self.syncs.clone(),
        );
        registry.register(
            "gossip_local_health",
            "Lifeguard local health score (0 healthy; each point stretches our probe timing)",
            self.local_health.clone(),
        );
        registry.register(
            "gossip_suspicions_open",
            "Suspicions this agent is timing",
            self.open_suspicions.clone(),
        );
        registry.register(
            "gossip_stale_verdicts",
            "Suspicions whose member refuted before the deadline (no verdict given), since start",
            self.stale_verdicts.clone(),
        );
    }

    /// Refreshes the Lifeguard gauges from the membership's statistics.
    pub fn lifeguard(&self, stats: &MembershipStats) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.local_health.set(i64::from(stats.local_health));
        self.open_suspicions
            .set(gauge(stats.open_suspicions as u64));
        self.stale_verdicts.set(gauge(stats.stale_verdicts));
    }

    /// Counts one packet from `from` that failed to open.
    pub fn drop_packet(&self, reason: OpenError, from: SocketAddr) {
        let label = match reason {
            OpenError::TooShort => "too_short",
            OpenError::UnknownVersion(_) => "unknown_version",
            OpenError::Cleartext => "cleartext",
            OpenError::UnknownKey => "unknown_key",
            OpenError::Garbled => "garbled",
            OpenError::Replayed => "replayed",
        };
        self.count_drop(label, from, &reason);
    }

    /// Counts one opened packet from `from` that membership refused.
    pub fn drop_malformed(&self, from: SocketAddr, error: &dyn std::fmt::Display) {
        self.count_drop("malformed", from, error);
    }

    fn count_drop(&self, label: &'static str, from: SocketAddr, detail: &dyn std::fmt::Display) {
        self.dropped.get_or_create(&[("reason", label)]).inc();
        if let Some(refusals) = self.refusals.get() {
            refusals.refuse(crate::refusals::Port::GossipUdp, label, Some(from), detail);
        }
    }

    /// Counts one received packet.
    pub fn packet_received(&self) {
        self.received.inc();
    }

    /// Counts one sent packet.
    pub fn packet_sent(&self) {
        self.sent.inc();
    }

    /// Counts one anti-entropy exchange: `direction` `inbound` or `outbound`, `outcome`
    /// `ok` (complete) or `failed`.
    pub fn sync(&self, direction: &'static str, outcome: &'static str) {
        self.syncs
            .get_or_create(&[("direction", direction), ("outcome", outcome)])
            .inc();
    }

    /// Refreshes the gauges from the member table and the state.
    pub fn refresh(&self, members: &[MemberRow], counters: &Counters, state_len: usize) {
        for (status, label) in [
            (Status::Alive, "alive"),
            (Status::Suspect, "suspect"),
            (Status::Failed, "failed"),
            (Status::Left, "left"),
        ] {
            let n = members.iter().filter(|m| m.status == status).count();
            self.members
                .get_or_create(&[("state", label)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.state_entries
            .set(i64::try_from(state_len).unwrap_or(i64::MAX));
        let rejections = counters.rejections();
        let mut last = crate::runtime::lock_unpoisoned(&self.last_rejected);
        last.resize(rejections.len(), 0);
        for ((reason, n), seen) in rejections.iter().zip(last.iter_mut()) {
            if *n > *seen {
                self.rejected
                    .get_or_create(&[("reason", reason)])
                    .inc_by(*n - *seen);
                *seen = *n;
            }
        }
    }
}
