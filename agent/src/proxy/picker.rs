//! Choosing the instance for a new connection: power of two choices on the number of
//! connections in flight to each instance from this agent (Mitzenmacher), among the
//! healthy instances not yet tried for this connection.

use crate::catalog::Instance;
use crate::runtime::lock_unpoisoned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// An instance as the picker keys it: its node and its id there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InstanceKey {
    /// Node of the instance's agent.
    pub node: String,
    /// Instance id on that node.
    pub id: String,
}

impl InstanceKey {
    /// The key of `i`.
    pub fn of(i: &Instance) -> InstanceKey {
        InstanceKey {
            node: i.node.clone(),
            id: i.id.clone(),
        }
    }
}

/// In-flight connection counts per instance.
#[derive(Default)]
pub struct Picker {
    inflight: Arc<Mutex<HashMap<InstanceKey, usize>>>,
}

/// Counts one connection in flight to an instance until dropped.
pub struct InFlight {
    inflight: Arc<Mutex<HashMap<InstanceKey, usize>>>,
    key: InstanceKey,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = lock_unpoisoned(&self.inflight);
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl Picker {
    fn count(&self, key: &InstanceKey) -> usize {
        lock_unpoisoned(&self.inflight)
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Picks among the healthy `candidates` not in `tried`: two at random, the one with
    /// fewer connections in flight. `random(n)` returns a number below `n`.
    pub fn pick<'a>(
        &self,
        candidates: impl Iterator<Item = &'a Instance>,
        tried: &[InstanceKey],
        mut random: impl FnMut(usize) -> usize,
    ) -> Option<&'a Instance> {
        let open: Vec<&Instance> = candidates
            .filter(|i| i.is_healthy() && !tried.contains(&InstanceKey::of(i)))
            .collect();
        match open.len() {
            0 => None,
            1 => Some(open[0]),
            n => {
                let a = random(n);
                let b = (a + 1 + random(n - 1)) % n;
                let (ia, ib) = (open[a], open[b]);
                if self.count(&InstanceKey::of(ib)) < self.count(&InstanceKey::of(ia)) {
                    Some(ib)
                } else {
                    Some(ia)
                }
            }
        }
    }

    /// Counts a connection to `i` as in flight until the guard drops.
    pub fn track(&self, i: &Instance) -> InFlight {
        let key = InstanceKey::of(i);
        *lock_unpoisoned(&self.inflight)
            .entry(key.clone())
            .or_default() += 1;
        InFlight {
            inflight: self.inflight.clone(),
            key,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::catalog::Health;

    fn inst(id: &str, health: Health) -> Instance {
        Instance {
            node: "n1".into(),
            id: id.into(),
            name: "db".into(),
            namespace: "default".into(),
            address: "127.0.0.1".parse().unwrap(),
            port: 1,
            agent_addr: "127.0.0.1:2".parse().unwrap(),
            health,
            tags: vec![],
            meta: Default::default(),
        }
    }

    #[test]
    fn skips_unhealthy_and_tried_instances() {
        let p = Picker::default();
        let all = [
            inst("a", Health::Critical),
            inst("b", Health::Passing),
            inst("c", Health::NodeDown),
        ];
        let got = p.pick(all.iter(), &[], |n| n - 1).unwrap();
        assert_eq!(got.id, "b");
        let tried = [InstanceKey::of(&all[1])];
        assert!(p.pick(all.iter(), &tried, |_| 0).is_none());
    }

    #[test]
    fn prefers_the_less_loaded_of_two() {
        let p = Picker::default();
        let all = [inst("a", Health::Passing), inst("b", Health::Passing)];
        let _busy = [p.track(&all[0]), p.track(&all[0])];
        let _one = p.track(&all[1]);
        // Whatever order the two draws come in, "b" (1 in flight) beats "a" (2).
        for first in 0..2 {
            let got = p.pick(all.iter(), &[], |n| first.min(n - 1)).unwrap();
            assert_eq!(got.id, "b");
        }
        drop(_busy);
        let got = p.pick(all.iter(), &[], |_| 0).unwrap();
        assert_eq!(got.id, "a", "after the guards drop, a has 0 in flight");
        assert!(
            p.inflight
                .lock()
                .unwrap()
                .get(&InstanceKey::of(&all[0]))
                .is_none()
        );
    }
}
