//! The simulated network: per-link loss (uniform plus per-host), latency, partitions.

use std::time::Duration;

use rand::RngExt;
use rand::rngs::SmallRng;

/// Loss, latency and partitions between simulated hosts.
#[derive(Clone, Debug)]
pub struct Network {
    /// Loss probability of every packet.
    pub uniform_loss: f64,
    node_loss: Vec<f64>,
    group: Vec<u32>,
    latency: (Duration, Duration),
}

impl Network {
    /// A lossless, unpartitioned network of `hosts` with the given one-way latency range.
    pub fn new(hosts: usize, latency: (Duration, Duration)) -> Self {
        Self {
            uniform_loss: 0.0,
            node_loss: vec![0.0; hosts],
            group: vec![0; hosts],
            latency,
        }
    }

    /// Sets the loss probability of packets to or from host `i`.
    pub fn set_node_loss(&mut self, i: usize, p: f64) {
        if let Some(slot) = self.node_loss.get_mut(i) {
            *slot = p;
        }
    }

    /// Puts each listed group of hosts in its own partition (others stay in group 0).
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        self.heal();
        for (g, members) in groups.iter().enumerate() {
            for &i in members {
                if let Some(slot) = self.group.get_mut(i) {
                    *slot = u32::try_from(g + 1).unwrap_or(u32::MAX);
                }
            }
        }
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
    }

    /// Decides the fate of one packet: `Some(delay)` if it arrives.
    pub fn transit(&self, rng: &mut SmallRng, from: usize, to: usize) -> Option<Duration> {
        if self.group.get(from) != self.group.get(to) {
            return None;
        }
        let keep = (1.0 - self.uniform_loss)
            * (1.0 - self.node_loss.get(from).copied().unwrap_or(0.0))
            * (1.0 - self.node_loss.get(to).copied().unwrap_or(0.0));
        if rng.random::<f64>() >= keep {
            return None;
        }
        let (lo, hi) = self.latency;
        let span = hi.saturating_sub(lo).as_micros() as u64;
        let jitter = if span == 0 {
            0
        } else {
            rng.random_range(0..=span)
        };
        Some(lo + Duration::from_micros(jitter))
    }
}
