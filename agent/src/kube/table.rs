//! The pod table: a state machine fed with raw watcher events, whose output is a
//! [`PodRegistry`] snapshot after each change.
//!
//! Order of calls: [`PodTable::handle`] for every event, then [`PodTable::snapshot`] when it
//! returned [`Change::Changed`]. A relist (`Init`, `InitApply`..., `InitDone`, as after a
//! 410 Gone) is buffered and swapped in at `InitDone`: until then the previous set stays
//! published, so no registration flickers; afterwards pods absent from the list are gone,
//! so none is kept twice or forever. Entries are keyed by pod uid.

use super::registry::{PodEntry, PodRegistry, PodState, Settings, SkipReason};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;
use std::collections::BTreeMap;

/// Whether an event changed the published set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Publish a new snapshot.
    Changed,
    /// Nothing to publish (buffered relist, or an update that changed nothing we keep).
    Unchanged,
}

/// A pod whose annotations became bad with this event: log and count it once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadPod {
    /// `namespace/name` of the pod.
    pub pod: String,
    /// The annotation problem.
    pub reason: SkipReason,
}

/// The current pods of this node, built from watcher events.
#[derive(Debug)]
pub struct PodTable {
    settings: Settings,
    pods: BTreeMap<String, PodEntry>,
    relist: Option<BTreeMap<String, PodEntry>>,
    synced: bool,
    generation: u64,
    bad: Vec<BadPod>,
}

impl PodTable {
    /// An empty, not yet synced table.
    pub fn new(settings: Settings) -> PodTable {
        PodTable {
            settings,
            pods: BTreeMap::new(),
            relist: None,
            synced: false,
            generation: 0,
            bad: Vec::new(),
        }
    }

    /// Applies one watcher event.
    pub fn handle(&mut self, event: Event<Pod>) -> Change {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                Change::Unchanged
            }
            Event::InitApply(pod) => {
                let entry = self.entry(&pod);
                match &mut self.relist {
                    Some(buffer) => {
                        buffer.insert(entry.uid.clone(), entry);
                        Change::Unchanged
                    }
                    // InitApply outside Init: the watcher contract forbids it; apply it.
                    None => self.upsert(entry),
                }
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let changed = !self.synced || listed != self.pods;
                self.pods = listed;
                self.synced = true;
                self.bump(changed)
            }
            Event::Apply(pod) => {
                let entry = self.entry(&pod);
                self.upsert(entry)
            }
            Event::Delete(pod) => {
                let removed = self.pods.remove(&uid_of(&pod)).is_some();
                self.bump(removed)
            }
        }
    }

    /// The current published set.
    pub fn snapshot(&self) -> PodRegistry {
        PodRegistry::new(self.pods.clone(), self.synced, self.generation)
    }

    /// Pods whose annotations turned bad since the last call (each reported once per
    /// change, not on every update of an unchanged bad pod).
    pub fn take_bad(&mut self) -> Vec<BadPod> {
        std::mem::take(&mut self.bad)
    }

    /// Maps a pod, noting it as bad when its annotations turned bad (compared with the
    /// published entry, so a relist does not report it again).
    fn entry(&mut self, pod: &Pod) -> PodEntry {
        let entry = PodEntry::from_pod(pod, &self.settings);
        if let PodState::Skipped(reason @ SkipReason::BadAnnotation(_)) = &entry.state {
            let previous = self.pods.get(&entry.uid);
            if previous.and_then(PodEntry::skip_reason) != Some(reason) {
                self.bad.push(BadPod {
                    pod: format!("{}/{}", entry.namespace, entry.name),
                    reason: reason.clone(),
                });
            }
        }
        entry
    }

    fn upsert(&mut self, entry: PodEntry) -> Change {
        let changed = self.pods.get(&entry.uid) != Some(&entry);
        if changed {
            self.pods.insert(entry.uid.clone(), entry);
        }
        self.bump(changed)
    }

    fn bump(&mut self, changed: bool) -> Change {
        if changed {
            self.generation += 1;
            Change::Changed
        } else {
            Change::Unchanged
        }
    }
}

fn uid_of(pod: &Pod) -> String {
    let m = &pod.metadata;
    m.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default()
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
