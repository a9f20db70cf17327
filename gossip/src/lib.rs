//! rhizome-gossip: membership (foca SWIM plus Lifeguard-style additions), keyring encryption of
//! gossip packets, and the replicated signed key/value state (a CRDT) with anti-entropy.
//!
//! Pure state machines: no sockets, no clock, no thread RNG. Time and randomness are arguments;
//! the agent's tokio runtime drives them.
#![deny(missing_docs)]

pub mod hlc;
pub mod keyring;
pub mod membership;
pub mod state;
pub mod sync;

#[cfg(feature = "sim")]
pub mod sim;

/// Identifies one version of one replicated entry inside a foca custom broadcast, so that foca
/// can drop older versions of the same entry from its backlog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BroadcastKey {
    /// Stable 64-bit hash of the entry's key.
    pub key_hash: u64,
    /// Version of the entry (its packed hybrid logical clock).
    pub version: u64,
}

/// What membership calls when a custom broadcast arrives; implemented by the replicated state.
pub trait BroadcastReceiver {
    /// Applies one broadcast item. Returns `Some` only when it carried new information (foca
    /// then gossips it further); `None` for stale, duplicate or rejected items.
    fn receive_broadcast(&mut self, data: &[u8]) -> Option<BroadcastKey>;
}
