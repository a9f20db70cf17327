//! The accepted signed intention entries: the `intentions/` keys of the replicated state
//! (`crate::gossip::replica::Replica`), which verifies each entry's signature and owner
//! (operator keys: operators only, or the local agent on `--dev`), merges versions (the
//! greater `(hlc, origin, digest)` wins, tombstones included), persists them and spreads
//! them to every agent.

use crate::gossip::replica::Replica;
use rhizome_gossip::state::{Applied, Entry as SignedEntry, Key, Rejection, Version};
use std::sync::Arc;
use tokio::sync::watch;

/// Prefix of intention keys in the replicated state.
const PREFIX: &str = "intentions/";

/// The intention entries of the replicated state.
pub struct Ledger {
    replica: Arc<Replica>,
}

impl Ledger {
    /// The intentions of `replica`.
    pub fn new(replica: Arc<Replica>) -> Ledger {
        Ledger { replica }
    }

    /// Merges a signed entry (checked again by the replica's authority); a new version is
    /// persisted and broadcast, an old one is [`Applied::Stale`].
    pub fn submit(&self, entry: SignedEntry) -> Result<Applied, Rejection> {
        self.replica.submit(entry)
    }

    /// The live entry held for `key`.
    pub fn get(&self, key: &Key) -> Option<SignedEntry> {
        self.replica.get(key)
    }

    /// The version held for `key`, tombstones included.
    pub fn version(&self, key: &Key) -> Option<Version> {
        let text = key.to_string();
        self.replica
            .entries_with_tombstones(&text)
            .into_iter()
            .find(|e| &e.key == key)
            .map(|e| e.version())
    }

    /// Every live intention entry, in key order.
    pub fn entries(&self) -> Vec<SignedEntry> {
        self.replica.entries(PREFIX)
    }

    /// A counter that increases on every change of the replicated state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.replica.subscribe()
    }
}
