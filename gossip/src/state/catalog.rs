//! Down-node handling for the catalog: instances of nodes that membership declares down are
//! seen as unhealthy at once, and their entries are reaped after a configurable time.
//!
//! Reaping cannot write signed tombstones (only agent `<node>` may sign `catalog/<node>/...`),
//! so every observer purges the entries locally and remembers the newest clock it purged per
//! node; older copies pushed back by peers that have not reaped yet are treated as stale, and
//! the node's own newer writes are accepted when it returns.

use std::collections::{BTreeMap, BTreeSet};

use super::key::{Key, NodeName, Segment};
use super::{Authority, Entry, State};
use crate::hlc::Hlc;

/// Default time a node stays down before its catalog entries are reaped: 72 hours.
pub const DEFAULT_REAP_AFTER_MS: u64 = 72 * 3600 * 1000;

/// One catalog instance as the agent shows and routes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceView<'a> {
    /// The node running the instance.
    pub node: &'a NodeName,
    /// The instance id.
    pub instance: &'a Segment,
    /// The signed entry; its value holds the instance and its last gossiped health.
    pub entry: &'a Entry,
    /// Membership declares the node down: treat the instance as unhealthy whatever its value
    /// says.
    pub is_node_down: bool,
}

/// The nodes down for at least `reap_after_ms` at `now_ms`, given when each went down.
pub fn nodes_to_reap(
    down_since: &BTreeMap<NodeName, u64>,
    now_ms: u64,
    reap_after_ms: u64,
) -> Vec<NodeName> {
    down_since
        .iter()
        .filter(|(_, since)| now_ms.saturating_sub(**since) >= reap_after_ms)
        .map(|(node, _)| node.clone())
        .collect()
}

impl<A: Authority> State<A> {
    /// Live catalog instances in key order, flagged when their node is in `down`.
    pub fn catalog<'a>(
        &'a self,
        down: &'a BTreeSet<NodeName>,
    ) -> impl Iterator<Item = InstanceView<'a>> + 'a {
        self.iter().filter_map(move |entry| match &entry.key {
            Key::Catalog { node, instance } => Some(InstanceView {
                node,
                instance,
                entry,
                is_node_down: down.contains(node),
            }),
            _ => None,
        })
    }

    /// The nodes that have live catalog entries. Nodes among them that membership does not
    /// know at all (e.g. long gone before this agent started) should be given a `down_since`
    /// by the agent (the time it first noticed) so that they are reaped too.
    pub fn catalog_nodes(&self) -> BTreeSet<NodeName> {
        self.iter()
            .filter_map(|e| match &e.key {
                Key::Catalog { node, .. } => Some(node.clone()),
                _ => None,
            })
            .collect()
    }

    /// The newest purged catalog clock per reaped node, for the agent to persist.
    pub fn reaped_floors(&self) -> &BTreeMap<NodeName, Hlc> {
        &self.reaped
    }

    /// Restores a persisted reaped floor (see [`State::reaped_floors`]) after a restart.
    pub fn restore_reaped_floor(&mut self, node: NodeName, floor: Hlc) {
        let slot = self.reaped.entry(node).or_default();
        *slot = (*slot).max(floor);
    }

    /// Purges every catalog entry (live or tombstone) of `node`, and refuses older copies
    /// from then on. Returns how many entries were removed.
    pub fn reap_node(&mut self, node: &NodeName) -> usize {
        let keys: Vec<(Key, Hlc)> = self
            .iter_all()
            .filter(|e| matches!(&e.key, Key::Catalog { node: n, .. } if n == node))
            .map(|e| (e.key.clone(), e.hlc))
            .collect();
        let newest = keys.iter().map(|(_, hlc)| *hlc).max();
        for (key, _) in &keys {
            self.remove(key);
        }
        if let Some(newest) = newest {
            self.restore_reaped_floor(node.clone(), newest);
        }
        keys.len()
    }

    /// Reaps the catalog of every node down for at least `reap_after_ms` (see
    /// [`nodes_to_reap`]); returns each reaped node with the number of entries removed.
    pub fn reap_down_nodes(
        &mut self,
        down_since: &BTreeMap<NodeName, u64>,
        now_ms: u64,
        reap_after_ms: u64,
    ) -> Vec<(NodeName, usize)> {
        nodes_to_reap(down_since, now_ms, reap_after_ms)
            .into_iter()
            .map(|node| {
                let removed = self.reap_node(&node);
                (node, removed)
            })
            .filter(|(_, removed)| *removed > 0)
            .collect()
    }
}
