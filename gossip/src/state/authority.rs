//! The two traits through which the agent plugs its CA into the state ([`Authority`] to verify,
//! [`EntrySigner`] to sign), the typed reasons an entry is refused, and their counters.

use super::entry::{Entry, Signer};

/// Why a received (or stored) entry was refused. In every case the writer or the sender is at
/// fault and the state did not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    /// The bytes did not decode, or the entry is inconsistent (a tombstone with a value).
    #[error("malformed entry")]
    Malformed,
    /// The entry carries no signature.
    #[error("missing signature")]
    MissingSignature,
    /// The signature does not verify against the signer's key.
    #[error("bad signature")]
    BadSignature,
    /// The signer's certificate is unknown, untrusted, expired or revoked.
    #[error("unknown or untrusted signer")]
    UnknownSigner,
    /// The signer may not write this key (e.g. agent `a` writing `catalog/b/...`, or an agent
    /// writing an operator key), or the origin is not the signer.
    #[error("signer does not own the key")]
    WrongOwner,
    /// The entry's clock is further ahead of local wall time than the drift bound.
    #[error("clock too far ahead")]
    ClockAhead,
    /// The entry is larger than the state accepts.
    #[error("entry too large")]
    TooLarge,
}

/// Verifies entries before they enter the state. The agent implements it with the CA crate.
///
/// `check` must verify [`Entry::signature`] over [`Entry::signing_bytes`] with the key of
/// [`Entry::signer`], that the signer's certificate chains to the trust bundle and is not
/// revoked, that [`Entry::origin`] is the signer's identity, and that this identity may write
/// [`Entry::key`]: `catalog/<node>/...` and `certs/<node>` only by agent `<node>`; intentions,
/// `ca/bundle`, `keyring/...` and `revoked/...` only by an operator.
///
/// Trust material travels in the state itself: [`Authority::observe`] sees every entry that
/// entered the state, so the agent can learn agent certificates from `certs/<node>`, the roots
/// from `ca/bundle` and revocations from `revoked/<node>`. Batches (sync messages, stored
/// records) are applied trust material first (see [`super::Key::apply_rank`]), so an entry
/// and the certificate it references can arrive together.
pub trait Authority {
    /// Accepts the entry, or says why not.
    fn check(&self, entry: &Entry) -> Result<(), Rejection>;

    /// Called after `entry` entered the state (it passed [`Authority::check`] and was newer).
    /// The default does nothing.
    fn observe(&mut self, entry: &Entry) {
        let _ = entry;
    }
}

/// The local writer's signing identity, used by [`super::State::write`].
pub trait EntrySigner {
    /// How receivers find this signer's certificate (usually its fingerprint).
    fn signer(&self) -> Signer;
    /// Signs `message` (the entry's signing bytes).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// The local signer failed (e.g. no key loaded yet). The local node is at fault; the state did
/// not change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing failed: {0}")]
pub struct SignError(pub String);

/// Counters of what happened to incoming entries, exported by the agent as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Entries that changed the state.
    pub accepted: u64,
    /// Valid entries that were not newer than what the state holds (duplicates, old versions,
    /// versions older than the GC floor or of reaped nodes).
    pub stale: u64,
    /// Rejected: [`Rejection::Malformed`].
    pub malformed: u64,
    /// Rejected: [`Rejection::MissingSignature`].
    pub missing_signature: u64,
    /// Rejected: [`Rejection::BadSignature`].
    pub bad_signature: u64,
    /// Rejected: [`Rejection::UnknownSigner`].
    pub unknown_signer: u64,
    /// Rejected: [`Rejection::WrongOwner`].
    pub wrong_owner: u64,
    /// Rejected: [`Rejection::ClockAhead`].
    pub clock_ahead: u64,
    /// Rejected: [`Rejection::TooLarge`].
    pub too_large: u64,
}

impl Counters {
    /// Counts one rejection under its reason.
    pub fn record(&mut self, rejection: Rejection) {
        let slot = match rejection {
            Rejection::Malformed => &mut self.malformed,
            Rejection::MissingSignature => &mut self.missing_signature,
            Rejection::BadSignature => &mut self.bad_signature,
            Rejection::UnknownSigner => &mut self.unknown_signer,
            Rejection::WrongOwner => &mut self.wrong_owner,
            Rejection::ClockAhead => &mut self.clock_ahead,
            Rejection::TooLarge => &mut self.too_large,
        };
        *slot += 1;
    }

    /// Total of all rejections.
    pub fn rejected(&self) -> u64 {
        self.rejections().iter().map(|(_, n)| n).sum()
    }

    /// Rejections by reason, with stable metric label values.
    pub fn rejections(&self) -> [(&'static str, u64); 7] {
        [
            ("malformed", self.malformed),
            ("missing_signature", self.missing_signature),
            ("bad_signature", self.bad_signature),
            ("unknown_signer", self.unknown_signer),
            ("wrong_owner", self.wrong_owner),
            ("clock_ahead", self.clock_ahead),
            ("too_large", self.too_large),
        ]
    }
}
