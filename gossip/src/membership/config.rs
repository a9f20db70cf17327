//! Membership tunables: LAN defaults comparable to Serf/memberlist, every field settable from
//! the agent's `gossip { ... }` HCL block (durations in milliseconds).

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// SWIM and Lifeguard parameters. `Default` is the LAN profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// How often a random member is probed (memberlist `ProbeInterval`), before Lifeguard's
    /// local-health stretch.
    pub probe_interval_ms: u64,
    /// How long to wait for a direct ack before asking others (memberlist `ProbeTimeout`).
    pub probe_timeout_ms: u64,
    /// Members asked to probe indirectly (memberlist `IndirectChecks`); also the fan-out of
    /// explicit gossip.
    pub indirect_checks: usize,
    /// Suspicion multiplier: the minimum suspicion timeout is
    /// `suspicion_mult * max(1, log10(n)) * probe_interval`.
    pub suspicion_mult: u32,
    /// The suspicion timeout starts at this multiple of the minimum and shrinks toward the
    /// minimum as independent confirmations arrive (1 disables the shrinking).
    pub suspicion_max_timeout_mult: u32,
    /// Periodic gossip interval (memberlist `GossipInterval`).
    pub gossip_interval_ms: u64,
    /// Members gossiped to per interval (memberlist `GossipNodes`).
    pub gossip_nodes: usize,
    /// Each update is retransmitted `retransmit_mult * log10(n + 1)` times.
    pub retransmit_mult: u32,
    /// Upper bound of the local health multiplier (memberlist `AwarenessMaxMultiplier`);
    /// probe interval and timeout are multiplied by `1 + score`. 0 disables it.
    pub awareness_max_multiplier: u32,
    /// Largest foca packet before sealing (the keyring adds its overhead on top).
    pub max_packet_size: usize,
    /// Largest custom broadcast item accepted by `broadcast` (larger state travels by
    /// anti-entropy only).
    pub max_broadcast_bytes: usize,
    /// Interval of asking a random member for its member list (foca periodic announce).
    pub announce_interval_ms: u64,
    /// Interval of announcing to members believed down, which heals partitions.
    pub announce_down_interval_ms: u64,
    /// How long a down identity is remembered (so it cannot come back unrenewed).
    pub remove_down_after_ms: u64,
    /// Interval of full member-table exchanges with a random member (memberlist
    /// `PushPullInterval`), scaled up beyond 32 members; 0 keeps only the one at join.
    pub push_pull_interval_ms: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            probe_interval_ms: 1_000,
            probe_timeout_ms: 500,
            indirect_checks: 3,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            gossip_interval_ms: 200,
            gossip_nodes: 3,
            retransmit_mult: 4,
            awareness_max_multiplier: 8,
            max_packet_size: 1_400,
            max_broadcast_bytes: 1_024,
            announce_interval_ms: 30_000,
            announce_down_interval_ms: 65_000,
            remove_down_after_ms: 24 * 3_600_000,
            push_pull_interval_ms: 30_000,
        }
    }
}

/// Why a membership config was refused. The operator's fault; nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field that must be positive is zero.
    #[error("gossip.{0} must be greater than zero")]
    Zero(&'static str),
    /// The probe timeout is not shorter than the probe interval.
    #[error("gossip.probe_timeout_ms must be shorter than gossip.probe_interval_ms")]
    TimeoutNotBelowInterval,
    /// The packet size is outside 512..=65000 bytes, or a broadcast item cannot fit a packet.
    #[error("gossip.max_packet_size must be 512..=65000 and exceed max_broadcast_bytes by 300")]
    PacketSize,
}

impl MembershipConfig {
    /// Checks the invariants foca and Lifeguard rely on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&'static str, u64); 8] = [
            ("probe_interval_ms", self.probe_interval_ms),
            ("probe_timeout_ms", self.probe_timeout_ms),
            ("indirect_checks", self.indirect_checks as u64),
            ("suspicion_mult", u64::from(self.suspicion_mult)),
            (
                "suspicion_max_timeout_mult",
                u64::from(self.suspicion_max_timeout_mult),
            ),
            ("gossip_interval_ms", self.gossip_interval_ms),
            ("gossip_nodes", self.gossip_nodes as u64),
            ("retransmit_mult", u64::from(self.retransmit_mult)),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        if self.probe_timeout_ms >= self.probe_interval_ms {
            return Err(ConfigError::TimeoutNotBelowInterval);
        }
        if !(512..=65_000).contains(&self.max_packet_size)
            || self.max_broadcast_bytes + 300 > self.max_packet_size
        {
            return Err(ConfigError::PacketSize);
        }
        Ok(())
    }

    /// The probe interval as a duration.
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms)
    }

    /// Retransmissions per update for a cluster of `n` members (memberlist's
    /// `retransmit_mult * ceil(log10(n + 1))`).
    pub fn max_transmissions(&self, n: usize) -> NonZeroU8 {
        let tx = f64::from(self.retransmit_mult) * ((n as f64) + 1.0).log10().ceil();
        let tx = tx.clamp(1.0, 255.0) as u8;
        NonZeroU8::new(tx).unwrap_or(NonZeroU8::MIN)
    }

    /// Minimum and maximum suspicion timeouts for a cluster of `n` members.
    pub fn suspicion_bounds(&self, n: usize) -> (Duration, Duration) {
        let scale = (n.max(1) as f64).log10().max(1.0);
        let min = self
            .probe_interval()
            .mul_f64(f64::from(self.suspicion_mult) * scale);
        (min, min * self.suspicion_max_timeout_mult)
    }

    /// The foca configuration derived from these settings (for `n` members). Foca's own
    /// suspicion timer is set to the maximum; Lifeguard delivers it earlier when confirmed.
    pub(crate) fn to_foca(&self, n: usize) -> foca::Config {
        let nz = |v: usize| NonZeroUsize::new(v).unwrap_or(NonZeroUsize::MIN);
        let periodic = |ms: u64, members: usize| {
            Some(foca::PeriodicParams {
                frequency: Duration::from_millis(ms.max(1)),
                num_members: nz(members),
            })
        };
        foca::Config {
            probe_period: self.probe_interval(),
            probe_rtt: Duration::from_millis(self.probe_timeout_ms),
            num_indirect_probes: nz(self.indirect_checks),
            max_transmissions: self.max_transmissions(n),
            suspect_to_down_after: self.suspicion_bounds(n).1,
            remove_down_after: Some(Duration::from_millis(self.remove_down_after_ms.max(1))),
            max_packet_size: nz(self.max_packet_size),
            notify_down_members: true,
            periodic_announce: periodic(self.announce_interval_ms, 1),
            periodic_announce_to_down_members: periodic(self.announce_down_interval_ms, 2),
            periodic_gossip: periodic(self.gossip_interval_ms, self.gossip_nodes),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_lan_like() {
        let c = MembershipConfig::default();
        c.validate().unwrap();
        assert_eq!(
            c.suspicion_bounds(10),
            (Duration::from_secs(4), Duration::from_secs(24))
        );
        assert_eq!(c.suspicion_bounds(1000).0, Duration::from_secs(12));
        assert_eq!(c.max_transmissions(1000).get(), 16);
        assert_eq!(c.max_transmissions(30).get(), 8);
        let f = c.to_foca(1000);
        assert_eq!(f.probe_rtt, Duration::from_millis(500));
        assert_eq!(f.suspect_to_down_after, Duration::from_secs(72));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let c = MembershipConfig {
            probe_timeout_ms: 1_000,
            ..Default::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::TimeoutNotBelowInterval));
        let c = MembershipConfig {
            gossip_nodes: 0,
            ..Default::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero("gossip_nodes")));
        let c = MembershipConfig {
            max_broadcast_bytes: 1_350,
            ..Default::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::PacketSize));
    }

    #[test]
    fn partial_config_takes_defaults() {
        let c: MembershipConfig = serde_json::from_str(r#"{"probe_interval_ms": 2000}"#).unwrap();
        assert_eq!(c.probe_interval_ms, 2000);
        assert_eq!(c.gossip_nodes, 3);
        assert!(serde_json::from_str::<MembershipConfig>(r#"{"nope": 1}"#).is_err());
    }
}
