//! One signed entry of the replicated state, the bytes its signature covers, and the total
//! order that decides which of two versions of a key wins.

use std::cmp::Ordering;

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

use super::key::{Key, NodeName};
use crate::hlc::Hlc;

/// Domain separation prefix of the signed bytes, so an entry signature can never be replayed
/// as a signature over anything else (and vice versa).
const SIGNING_CONTEXT: &[u8] = b"rhizome-gossip-entry-v1\0";

/// Who signed an entry, as the receiver's [`super::Authority`] needs it to find the key.
///
/// A leaf plus intermediate DER chain is ~1-1.4 KB, beyond the ~1 KB broadcast budget, so
/// ordinary entries carry a 32-byte fingerprint and the certificate chain travels once, in a
/// `certs/<node>` entry whose own signer is [`Signer::Chain`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Signer {
    /// SHA-256 of the signer's certificate DER (the certificate published under `certs/...`
    /// or known to the authority otherwise, e.g. operator certificates in the trust bundle).
    Fingerprint([u8; 32]),
    /// The signer's certificate chain, leaf first, DER-encoded.
    Chain(Vec<Vec<u8>>),
}

/// One replicated entry: a value (or a tombstone) for a key, stamped with the writer's hybrid
/// logical clock and signed by the writer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What the entry is about; decides who may write it.
    pub key: Key,
    /// Opaque value bytes (empty for a tombstone); the agent defines their encoding per space.
    pub value: Vec<u8>,
    /// The node (or operator) that wrote this version.
    pub origin: NodeName,
    /// When it was written; with `origin`, the version that merge compares.
    pub hlc: Hlc,
    /// Whether this version deletes the key.
    pub tombstone: bool,
    /// Who signed it.
    pub signer: Signer,
    /// Signature over [`Entry::signing_bytes`] (ECDSA P-256 ASN.1 with the agent's keys).
    pub signature: Vec<u8>,
}

/// The borrowed fields covered by the signature, in their wire order.
#[derive(Serialize)]
struct SignedFields<'a> {
    key: &'a Key,
    value: &'a [u8],
    origin: &'a NodeName,
    hlc: Hlc,
    tombstone: bool,
    signer: &'a Signer,
}

impl Entry {
    /// The exact bytes a signer signs and an authority verifies: a context string followed by
    /// the postcard encoding of every field except the signature.
    pub fn signing_bytes(&self) -> Vec<u8> {
        signing_bytes(
            &self.key,
            &self.value,
            &self.origin,
            self.hlc,
            self.tombstone,
            &self.signer,
        )
    }

    /// SHA-256 over the signed fields and the signature: identifies this exact version.
    pub fn content_digest(&self) -> [u8; 32] {
        let mut bytes = self.signing_bytes();
        bytes.extend_from_slice(&self.signature);
        let d = digest(&SHA256, &bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// The version of this entry as merge compares it.
    pub fn version(&self) -> Version {
        Version {
            hlc: self.hlc,
            origin: self.origin.clone(),
            digest: short_digest(&self.content_digest()),
        }
    }
}

/// Builds the signed bytes from the fields (used before the signature exists).
pub(crate) fn signing_bytes(
    key: &Key,
    value: &[u8],
    origin: &NodeName,
    hlc: Hlc,
    tombstone: bool,
    signer: &Signer,
) -> Vec<u8> {
    let fields = SignedFields {
        key,
        value,
        origin,
        hlc,
        tombstone,
        signer,
    };
    let mut out = SIGNING_CONTEXT.to_vec();
    // Serializing plain structs into a Vec cannot fail; an empty tail would only make the
    // signature fail to verify, never accept anything extra.
    if let Ok(encoded) = postcard::to_stdvec(&fields) {
        out.extend_from_slice(&encoded);
    }
    out
}

/// The first 8 bytes of a content digest, used as the last tie-breaker of [`Version`].
pub(crate) fn short_digest(full: &[u8; 32]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&full[..8]);
    out
}

/// The version of an entry: merge keeps the greatest. Ordered by `hlc`, then `origin`, then a
/// digest of the content, so that even two different entries with the same `(hlc, origin)`
/// (a buggy or malicious writer) resolve the same way on every node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Hybrid logical clock of the write.
    pub hlc: Hlc,
    /// Writer.
    pub origin: NodeName,
    /// First 8 bytes of [`Entry::content_digest`].
    pub digest: [u8; 8],
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.hlc
            .cmp(&other.hlc)
            .then_with(|| self.origin.cmp(&other.origin))
            .then_with(|| self.digest.cmp(&other.digest))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
