//! The replicated state: a map from [`Key`] to signed [`Entry`], merged by last-writer-wins on
//! `(hlc, origin)` — a CRDT, so every delivery order converges.
//!
//! Entries arrive three ways, all through [`State::apply`] (verify, then merge): foca custom
//! broadcasts ([`crate::BroadcastReceiver`]), anti-entropy ([`crate::sync`]) and the agent's
//! store at start ([`State::load`]). Local writes go through [`State::write`] /
//! [`State::delete`]. Every change is queued for the agent, which drains it with
//! [`State::drain_changes`] to persist it; the agent also calls [`State::set_wall_clock`] on
//! each tick, since broadcasts arrive without a time argument.
//!
//! Order of calls in the agent's driver:
//! 1. start: `State::load(authority, config, stored_records, now)`, then
//!    `restore_reaped_floor` for persisted floors;
//! 2. every tick: `set_wall_clock(now)`; periodically `gc_tombstones(now - horizon)` and
//!    `reap_down_nodes(&down_since, now, reap_after)`;
//! 3. local write: `write`/`delete`, then `broadcast_item` + `broadcast_key` to membership;
//! 4. membership hands broadcast items to the state as a [`crate::BroadcastReceiver`];
//! 5. anti-entropy: [`crate::sync::start`] / [`crate::sync::handle`] with a random peer;
//! 6. after each of the above: `drain_changes` into the store.

mod authority;
mod catalog;
mod codec;
mod entry;
mod key;

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use authority::{Authority, Counters, EntrySigner, Rejection, SignError};
pub use catalog::{DEFAULT_REAP_AFTER_MS, InstanceView, nodes_to_reap};
pub use codec::{DecodeError, WIRE_VERSION};
pub use entry::{Entry, Signer, Version};
pub use key::{Key, KeyError, MAX_SEGMENT_LEN, NodeName, Segment};

pub(crate) use codec::{Kind, decode, encode};

use crate::hlc::{Clock, DEFAULT_MAX_DRIFT_MS, Hlc};
use crate::{BroadcastKey, BroadcastReceiver};

/// Number of digest buckets anti-entropy compares (see [`crate::sync`]).
pub const BUCKETS: usize = 256;

/// Default size budget of one broadcast item, in bytes (foca drops larger items silently).
pub const DEFAULT_BROADCAST_BUDGET: usize = 1_000;

/// Default largest accepted value, in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 256 * 1024;

/// Tunables of the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// How far ahead of local wall time an entry's clock may be, in milliseconds.
    pub max_drift_ms: u64,
    /// Largest encoded entry sent as a broadcast; bigger ones travel by anti-entropy only.
    pub broadcast_budget: usize,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            max_drift_ms: DEFAULT_MAX_DRIFT_MS,
            broadcast_budget: DEFAULT_BROADCAST_BUDGET,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// What [`State::apply`] did with a valid entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The entry was newer and replaced (or created) the key's version.
    New,
    /// The state already held this or a newer version; nothing changed.
    Stale,
}

/// One change for the agent's store, drained with [`State::drain_changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key now holds this entry (maybe a tombstone): store `entry.to_bytes()` under it.
    Upserted(Entry),
    /// The key was dropped from the state (tombstone GC, reaping): delete it from the store.
    Removed(Key),
}

/// Why a local write failed; the local node is at fault and the state did not change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The signer failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The local authority refused our own entry (misconfigured identity or key).
    #[error("own entry rejected: {0}")]
    Rejected(Rejection),
}

/// Counts of [`State::load`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Records that entered the state.
    pub loaded: usize,
    /// Records skipped: undecodable, refused by the authority, or superseded.
    pub skipped: usize,
}

/// An entry held by the state with its precomputed version and digest bucket.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) entry: Entry,
    pub(crate) version: Version,
    pub(crate) bucket: u8,
}

impl Stored {
    fn new(entry: Entry) -> Self {
        let version = entry.version();
        let bucket = bucket_of(&entry.key);
        Stored {
            entry,
            version,
            bucket,
        }
    }

    /// This entry's contribution to its bucket hash.
    pub(crate) fn hash(&self) -> u64 {
        u64::from_le_bytes(self.version.digest)
    }
}

/// The digest bucket of a key.
pub(crate) fn bucket_of(key: &Key) -> u8 {
    (key.stable_hash() % BUCKETS as u64) as u8
}

/// The replicated signed key/value state of one node.
#[derive(Debug, Clone)]
pub struct State<A> {
    authority: A,
    config: StateConfig,
    clock: Clock,
    entries: BTreeMap<Key, Stored>,
    /// XOR of the content digests of the entries in each bucket.
    buckets: Vec<u64>,
    /// Highest catalog clock purged per reaped node: older entries are not taken back.
    reaped: BTreeMap<NodeName, Hlc>,
    counters: Counters,
    changes: Vec<Change>,
    wall_ms: u64,
}

impl<A: Authority> State<A> {
    /// An empty state verifying entries with `authority`.
    pub fn new(authority: A, config: StateConfig) -> Self {
        State {
            clock: Clock::new(config.max_drift_ms),
            authority,
            config,
            entries: BTreeMap::new(),
            buckets: vec![0; BUCKETS],
            reaped: BTreeMap::new(),
            counters: Counters::default(),
            changes: Vec::new(),
            wall_ms: 0,
        }
    }

    /// Rebuilds a state from the agent's stored records (each an [`Entry::to_bytes`]),
    /// verifying every one again: the trust bundle or revocations may have changed.
    pub fn load<'a>(
        authority: A,
        config: StateConfig,
        records: impl IntoIterator<Item = &'a [u8]>,
        now_ms: u64,
    ) -> (Self, LoadReport) {
        let mut state = State::new(authority, config);
        let mut report = LoadReport::default();
        let mut entries = Vec::new();
        for record in records {
            match Entry::from_bytes(record) {
                Ok(entry) => entries.push(entry),
                Err(_) => report.skipped += 1,
            }
        }
        for outcome in state.apply_batch(entries, now_ms) {
            match outcome {
                Ok(Applied::New) => report.loaded += 1,
                Ok(Applied::Stale) | Err(_) => report.skipped += 1,
            }
        }
        state.changes.clear();
        state.counters = Counters::default();
        (state, report)
    }

    /// Records the current wall time (ms since the epoch); used for entries that arrive
    /// without a time argument (broadcasts). Never moves backwards.
    pub fn set_wall_clock(&mut self, now_ms: u64) {
        self.wall_ms = self.wall_ms.max(now_ms);
    }

    /// Decodes and applies one encoded entry; undecodable bytes count as malformed.
    pub fn apply_bytes(&mut self, bytes: &[u8], now_ms: u64) -> Result<Applied, Rejection> {
        match Entry::from_bytes(bytes) {
            Ok(entry) => self.apply(entry, now_ms),
            Err(_) => {
                self.counters.record(Rejection::Malformed);
                Err(Rejection::Malformed)
            }
        }
    }

    /// Applies a batch (e.g. a sync message) trust material first (see [`Key::apply_rank`]),
    /// otherwise in the given order; returns each outcome in application order.
    pub fn apply_batch(
        &mut self,
        mut entries: Vec<Entry>,
        now_ms: u64,
    ) -> Vec<Result<Applied, Rejection>> {
        entries.sort_by_key(|e| e.key.apply_rank());
        entries
            .into_iter()
            .map(|entry| self.apply(entry, now_ms))
            .collect()
    }

    /// Verifies and merges one entry received from a peer or the store. Counts the outcome.
    pub fn apply(&mut self, entry: Entry, now_ms: u64) -> Result<Applied, Rejection> {
        self.set_wall_clock(now_ms);
        match self.admit(&entry) {
            Ok(Applied::New) => {}
            Ok(Applied::Stale) => {
                self.counters.stale += 1;
                return Ok(Applied::Stale);
            }
            Err(rejection) => {
                self.counters.record(rejection);
                return Err(rejection);
            }
        }
        // `admit` checked the drift bound, so the update cannot fail.
        let _ = self.clock.update(entry.hlc, self.wall_ms);
        self.counters.accepted += 1;
        self.authority.observe(&entry);
        self.insert(Stored::new(entry));
        Ok(Applied::New)
    }

    /// Decides whether `entry` would be new, stale or rejected, without changing anything.
    /// Cheap checks come first so duplicates never cost a signature verification.
    fn admit(&self, entry: &Entry) -> Result<Applied, Rejection> {
        if entry.value.len() > self.config.max_value_bytes {
            return Err(Rejection::TooLarge);
        }
        if entry.tombstone && !entry.value.is_empty() {
            return Err(Rejection::Malformed);
        }
        if entry.signature.is_empty() {
            return Err(Rejection::MissingSignature);
        }
        if self.clock.check(entry.hlc, self.wall_ms).is_err() {
            return Err(Rejection::ClockAhead);
        }
        if let Some(current) = self.entries.get(&entry.key)
            && current.version >= entry.version()
        {
            return Ok(Applied::Stale);
        }
        if let Key::Catalog { node, .. } = &entry.key
            && self
                .reaped
                .get(node)
                .is_some_and(|floor| entry.hlc <= *floor)
        {
            return Ok(Applied::Stale);
        }
        self.authority.check(entry)?;
        Ok(Applied::New)
    }

    /// Writes `value` under `key` as `origin`, signed by `signer`, stamped at `now_ms`.
    /// Returns the entry so the agent can broadcast it ([`State::broadcast_item`]).
    pub fn write(
        &mut self,
        signer: &dyn EntrySigner,
        origin: &NodeName,
        key: Key,
        value: Vec<u8>,
        now_ms: u64,
    ) -> Result<Entry, WriteError> {
        self.write_version(signer, origin, key, value, false, now_ms)
    }

    /// Deletes `key` by writing a tombstone (which replicates like any entry).
    pub fn delete(
        &mut self,
        signer: &dyn EntrySigner,
        origin: &NodeName,
        key: Key,
        now_ms: u64,
    ) -> Result<Entry, WriteError> {
        self.write_version(signer, origin, key, Vec::new(), true, now_ms)
    }

    fn write_version(
        &mut self,
        signer: &dyn EntrySigner,
        origin: &NodeName,
        key: Key,
        value: Vec<u8>,
        tombstone: bool,
        now_ms: u64,
    ) -> Result<Entry, WriteError> {
        self.set_wall_clock(now_ms);
        let hlc = self.clock.now(self.wall_ms);
        let signer_ref = signer.signer();
        let message = entry::signing_bytes(&key, &value, origin, hlc, tombstone, &signer_ref);
        let signature = signer.sign(&message)?;
        let entry = Entry {
            key,
            value,
            origin: origin.clone(),
            hlc,
            tombstone,
            signer: signer_ref,
            signature,
        };
        match self.apply(entry.clone(), now_ms) {
            Ok(_) => Ok(entry),
            Err(rejection) => Err(WriteError::Rejected(rejection)),
        }
    }

    /// Encodes `entry` as a broadcast item if it fits the configured budget; `None` means it
    /// travels by anti-entropy only.
    pub fn broadcast_item(&self, entry: &Entry) -> Option<Vec<u8>> {
        broadcast_item(entry, self.config.broadcast_budget)
    }

    /// Drops tombstones written before `horizon_ms` (physical ms since the epoch) and returns
    /// how many. The horizon must be older than the longest partition a node may come back
    /// from, or a deleted key may be resurrected by a peer that missed its tombstone.
    pub fn gc_tombstones(&mut self, horizon_ms: u64) -> usize {
        let old: Vec<Key> = self
            .entries
            .values()
            .filter(|s| s.entry.tombstone && s.entry.hlc.physical_ms() < horizon_ms)
            .map(|s| s.entry.key.clone())
            .collect();
        for key in &old {
            self.remove(key);
        }
        old.len()
    }

    /// Drops every live entry of the keys `which` selects that the authority refuses now (its
    /// signer was revoked, or left the trust bundle, since it was accepted) and returns their
    /// keys. Peers that still hold such an entry cannot bring it back: it is refused again on
    /// arrival. Tombstones are kept (a deletion is never undone this way).
    pub fn drop_refused(&mut self, which: impl Fn(&Key) -> bool) -> Vec<Key> {
        let refused: Vec<Key> = self
            .entries
            .values()
            .filter(|s| {
                !s.entry.tombstone && which(&s.entry.key) && self.authority.check(&s.entry).is_err()
            })
            .map(|s| s.entry.key.clone())
            .collect();
        for key in &refused {
            self.remove(key);
        }
        refused
    }

    /// The live (non-tombstone) entry of `key`.
    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.entry(key).filter(|e| !e.tombstone)
    }

    /// The entry of `key`, tombstone or not.
    pub fn entry(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key).map(|s| &s.entry)
    }

    /// Live entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.iter_all().filter(|e| !e.tombstone)
    }

    /// All entries including tombstones, in key order (e.g. for a full store snapshot).
    pub fn iter_all(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().map(|s| &s.entry)
    }

    /// Number of entries including tombstones.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the state holds no entry at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counters of incoming entries, for metrics.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The local hybrid logical clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The authority, e.g. to inspect the trust material it learned.
    pub fn authority(&self) -> &A {
        &self.authority
    }

    /// The authority, mutably, e.g. to update roots or revocations known out of band.
    pub fn authority_mut(&mut self) -> &mut A {
        &mut self.authority
    }

    /// The tunables in force.
    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    /// Takes the queued changes, oldest first, for the agent's store. The queue grows until
    /// drained, so the agent drains it after every batch of calls.
    pub fn drain_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// The per-bucket XOR hashes, maintained on every change.
    pub(crate) fn bucket_hashes(&self) -> &[u64] {
        &self.buckets
    }

    /// Stored entries in key order.
    pub(crate) fn stored(&self) -> impl Iterator<Item = &Stored> {
        self.entries.values()
    }

    /// The stored version of `key`.
    pub(crate) fn stored_entry(&self, key: &Key) -> Option<&Stored> {
        self.entries.get(key)
    }

    fn insert(&mut self, stored: Stored) {
        self.buckets[usize::from(stored.bucket)] ^= stored.hash();
        self.changes.push(Change::Upserted(stored.entry.clone()));
        if let Some(old) = self.entries.insert(stored.entry.key.clone(), stored) {
            self.buckets[usize::from(old.bucket)] ^= old.hash();
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Stored> {
        let old = self.entries.remove(key)?;
        self.buckets[usize::from(old.bucket)] ^= old.hash();
        self.changes.push(Change::Removed(key.clone()));
        Some(old)
    }
}

/// Encodes `entry` as a broadcast item if its encoding fits in `budget` bytes.
pub fn broadcast_item(entry: &Entry, budget: usize) -> Option<Vec<u8>> {
    let bytes = entry.to_bytes();
    (bytes.len() <= budget).then_some(bytes)
}

/// The foca broadcast key of an entry: its key's stable hash and its clock.
pub fn broadcast_key(entry: &Entry) -> BroadcastKey {
    BroadcastKey {
        key_hash: entry.key.stable_hash(),
        version: entry.hlc.as_u64(),
    }
}

impl<A: Authority> BroadcastReceiver for State<A> {
    /// Decodes, verifies (at the wall time of [`State::set_wall_clock`]) and merges one item.
    fn receive_broadcast(&mut self, data: &[u8]) -> Option<BroadcastKey> {
        let Ok(entry) = Entry::from_bytes(data) else {
            self.counters.record(Rejection::Malformed);
            return None;
        };
        let key = broadcast_key(&entry);
        match self.apply(entry, self.wall_ms) {
            Ok(Applied::New) => Some(key),
            Ok(Applied::Stale) | Err(_) => None,
        }
    }
}
