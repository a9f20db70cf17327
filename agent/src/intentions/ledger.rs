//! The accepted signed intention entries, persisted in the store (tree `intentions`).
//!
//! This stands in for the gossip layer's replicated state on this agent: it offers the
//! same calls (`submit` of a verified, signed entry; `entries` snapshot; a change counter
//! to `subscribe` to) and merges the same way (the greater [`Version`], i.e. `(hlc,
//! origin, digest)`, wins; tombstones are kept so an old version cannot come back), so
//! moving intentions onto the replica is a change of this one type.

use crate::store::{Store, StoreError, TreeName};
use rhizome_gossip::state::{Applied, Entry as SignedEntry, Key, Version};
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// Prefix of entry records in the tree (`entry/intentions/<ns>/<name>`).
const ENTRY_PREFIX: &str = "entry/";

/// The signed entries this agent accepted, by key.
pub struct Ledger {
    store: Store,
    entries: Mutex<BTreeMap<Key, SignedEntry>>,
    changes: watch::Sender<u64>,
}

impl Ledger {
    /// Loads the stored entries, keeping those `check` still accepts (the trust bundle may
    /// have changed since they were stored); the others are dropped from the store.
    pub fn open(store: Store, check: impl Fn(&SignedEntry) -> bool) -> Result<Ledger, StoreError> {
        let mut entries = BTreeMap::new();
        for (k, v) in store.scan(TreeName::Intentions, ENTRY_PREFIX.as_bytes())? {
            match SignedEntry::from_bytes(&v) {
                Ok(e) if check(&e) => {
                    entries.insert(e.key.clone(), e);
                }
                Ok(e) => {
                    tracing::warn!(key = %e.key, "stored intention no longer verifies; dropped");
                    store.remove(TreeName::Intentions, &k)?;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "undecodable stored intention; dropped");
                    store.remove(TreeName::Intentions, &k)?;
                }
            }
        }
        let (changes, _) = watch::channel(0);
        Ok(Ledger {
            store,
            entries: Mutex::new(entries),
            changes,
        })
    }

    /// Merges a verified entry: stored and announced when its version is greater than the
    /// one held for its key, otherwise [`Applied::Stale`] and nothing changes.
    pub fn submit(&self, entry: SignedEntry) -> Result<Applied, StoreError> {
        let mut entries = self.lock();
        let newer = |old: &SignedEntry| entry.version() > old.version();
        if entries.get(&entry.key).is_some_and(|old| !newer(old)) {
            return Ok(Applied::Stale);
        }
        let record = format!("{ENTRY_PREFIX}{}", entry.key);
        self.store
            .put(TreeName::Intentions, record.as_bytes(), &entry.to_bytes())?;
        self.store.flush()?;
        entries.insert(entry.key.clone(), entry);
        drop(entries);
        self.changes.send_modify(|n| *n += 1);
        Ok(Applied::New)
    }

    /// The entry held for `key` (maybe a tombstone).
    pub fn get(&self, key: &Key) -> Option<SignedEntry> {
        self.lock().get(key).cloned()
    }

    /// The version held for `key`.
    pub fn version(&self, key: &Key) -> Option<Version> {
        self.lock().get(key).map(SignedEntry::version)
    }

    /// Every entry, tombstones included, in key order.
    pub fn entries(&self) -> Vec<SignedEntry> {
        self.lock().values().cloned().collect()
    }

    /// A counter that increases on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, SignedEntry>> {
        match self.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}
