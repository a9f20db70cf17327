//! Push/pull anti-entropy: repairs whatever the broadcasts lost, and carries entries too big to
//! broadcast. Pure functions over [`State`]; the agent runs them over a TCP connection on the
//! gossip port (sealed by the keyring), one length-prefixed [`SyncMessage`] per frame.
//!
//! The digest is a fixed array of [`BUCKETS`] 64-bit hashes (the XOR of the content digests of
//! the entries whose key falls in each bucket), about 2 KB whatever the state size, maintained
//! incrementally. Only buckets that differ are then detailed key by key.
//!
//! One exchange, initiator `I` and responder `R`:
//! 1. `I` sends [`start`]: `Summary` (its bucket hashes).
//! 2. `R` answers `Details`: the buckets that differ and `R`'s key versions in them (empty:
//!    done, the states are equal). For buckets that are empty on `I` (hash 0: a new node, or
//!    a new key space) `R` sends its entries right away instead of their versions.
//! 3. `I` answers `Push`: its entries `R` lacks or has older, and the keys it wants from `R`.
//! 4. `R` applies them and answers `Entries`: the wanted entries. `I` applies them; done.
//!
//! Both sides call [`handle`] for every message received and send back the reply it returns
//! until it returns `None`. Every entry goes through [`State::apply`], so signatures, owners
//! and clocks are checked as for broadcasts, and rejections are counted the same way.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::state::{
    Authority, BUCKETS, DecodeError, Entry, Key, Kind, State, Version, bucket_of, decode, encode,
};

/// Largest frame the agent should accept for one [`SyncMessage`]: 64 MiB. A cold start of
/// 1,000 nodes with three ~300-byte entries each takes about 0.9 MB; refuse anything larger
/// than this bound before allocating it.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// One key and the version a peer holds of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    /// The key.
    pub key: Key,
    /// The version held.
    pub version: Version,
}

/// A message of the anti-entropy exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// Step 1: the initiator's bucket hashes, [`BUCKETS`] of them.
    Summary(Vec<[u8; 8]>),
    /// Step 2: the differing buckets and the responder's versions of the keys in them.
    Details {
        /// Bucket numbers whose hashes differ.
        buckets: Vec<u8>,
        /// The responder's key versions in those buckets.
        versions: Vec<KeyVersion>,
        /// The responder's entries in differing buckets that are empty on the initiator.
        entries: Vec<Entry>,
    },
    /// Step 3: entries the responder lacks, and keys the initiator wants.
    Push {
        /// Entries newer on the initiator (or missing on the responder).
        entries: Vec<Entry>,
        /// Keys newer on the responder (or missing on the initiator).
        want: Vec<Key>,
    },
    /// Step 4: the wanted entries.
    Entries(Vec<Entry>),
}

impl SyncMessage {
    /// Encodes the message (version byte, kind byte, postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(Kind::Sync, self)
    }

    /// Whether the peer answers this message with nothing: `Entries`, or `Details` without
    /// differing buckets. The side that sends it is done once it is sent; the side that
    /// receives it is done once it is applied ([`handle`] returns `None`).
    pub fn ends_exchange(&self) -> bool {
        match self {
            SyncMessage::Entries(_) => true,
            SyncMessage::Details { buckets, .. } => buckets.is_empty(),
            SyncMessage::Summary(_) | SyncMessage::Push { .. } => false,
        }
    }

    /// Decodes a message; malformed bytes give a typed error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<SyncMessage, DecodeError> {
        decode(Kind::Sync, bytes)
    }
}

/// A peer sent a message that is well-formed but unusable. The peer is at fault; the state did
/// not change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// A summary with the wrong number of buckets (another build or a broken peer).
    #[error("summary has {0} buckets, expected {BUCKETS}")]
    BadSummary(usize),
}

/// Step 1: the summary the initiator sends first.
pub fn start<A: Authority>(state: &State<A>) -> SyncMessage {
    SyncMessage::Summary(
        state
            .bucket_hashes()
            .iter()
            .map(|h| h.to_le_bytes())
            .collect(),
    )
}

/// Handles one received message at wall time `now_ms` and returns the reply to send, or `None`
/// when the exchange is over.
pub fn handle<A: Authority>(
    state: &mut State<A>,
    message: SyncMessage,
    now_ms: u64,
) -> Result<Option<SyncMessage>, SyncError> {
    match message {
        SyncMessage::Summary(remote) => details(state, &remote).map(Some),
        SyncMessage::Details {
            buckets,
            mut versions,
            entries,
        } => {
            if buckets.is_empty() {
                return Ok(None);
            }
            // What the responder sent in full, it holds: count it among its versions.
            versions.extend(entries.iter().map(|e| KeyVersion {
                key: e.key.clone(),
                version: e.version(),
            }));
            apply_all(state, entries, now_ms);
            Ok(Some(push(state, &buckets, versions)))
        }
        SyncMessage::Push { entries, want } => {
            apply_all(state, entries, now_ms);
            let found = want
                .iter()
                .filter_map(|key| state.entry(key).cloned())
                .collect();
            Ok(Some(SyncMessage::Entries(found)))
        }
        SyncMessage::Entries(entries) => {
            apply_all(state, entries, now_ms);
            Ok(None)
        }
    }
}

/// Step 2: compares the remote summary with ours and details the buckets that differ.
fn details<A: Authority>(state: &State<A>, remote: &[[u8; 8]]) -> Result<SyncMessage, SyncError> {
    if remote.len() != BUCKETS {
        return Err(SyncError::BadSummary(remote.len()));
    }
    let buckets: Vec<u8> = state
        .bucket_hashes()
        .iter()
        .zip(remote)
        .enumerate()
        .filter(|(_, (ours, theirs))| ours.to_le_bytes() != **theirs)
        .filter_map(|(i, _)| u8::try_from(i).ok())
        .collect();
    let differing: BTreeSet<u8> = buckets.iter().copied().collect();
    let is_empty_there = |bucket: u8| remote[usize::from(bucket)] == [0; 8];
    let (full, summarized): (Vec<_>, Vec<_>) = state
        .stored()
        .filter(|s| differing.contains(&s.bucket))
        .partition(|s| is_empty_there(s.bucket));
    let versions = summarized
        .into_iter()
        .map(|s| KeyVersion {
            key: s.entry.key.clone(),
            version: s.version.clone(),
        })
        .collect();
    let entries = full.into_iter().map(|s| s.entry.clone()).collect();
    Ok(SyncMessage::Details {
        buckets,
        versions,
        entries,
    })
}

/// Step 3: what we have newer in the differing buckets, and what we want.
fn push<A: Authority>(state: &State<A>, buckets: &[u8], versions: Vec<KeyVersion>) -> SyncMessage {
    let differing: BTreeSet<u8> = buckets.iter().copied().collect();
    let remote: BTreeMap<Key, Version> = versions
        .into_iter()
        .filter(|kv| differing.contains(&bucket_of(&kv.key)))
        .map(|kv| (kv.key, kv.version))
        .collect();
    let entries = state
        .stored()
        .filter(|s| differing.contains(&s.bucket))
        .filter(|s| {
            remote
                .get(&s.entry.key)
                .is_none_or(|theirs| *theirs < s.version)
        })
        .map(|s| s.entry.clone())
        .collect();
    let want = remote
        .into_iter()
        .filter(|(key, theirs)| {
            state
                .stored_entry(key)
                .is_none_or(|ours| ours.version < *theirs)
        })
        .map(|(key, _)| key)
        .collect();
    SyncMessage::Push { entries, want }
}

/// Applies entries from a peer, trust material first; outcomes land in the state's counters.
fn apply_all<A: Authority>(state: &mut State<A>, entries: Vec<Entry>, now_ms: u64) {
    let _ = state.apply_batch(entries, now_ms);
}

#[cfg(test)]
mod tests;
