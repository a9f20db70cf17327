//! Revocations: an operator's statement that a node (its intermediate, agent leaf and every
//! workload leaf it issued) or one certificate (by SHA-256 fingerprint) must no longer be
//! trusted, and the set of revocations a [`crate::TrustBundle`] carries, so that every
//! verification through [`crate::verify_chain_with`] (TLS in both roles, signed gossip
//! entries, joins and renewals, operator signatures) refuses a revoked chain.
//!
//! A revocation travels as the value of an operator-signed replicated entry
//! `revoked/<name>` ([`Revocation::key_name`]): the entry's signature is the operator's, checked
//! with [`crate::verify_signed`] like every operator-signed entry. This module encodes the
//! statement ([`Revocation::to_bytes`], postcard) and decides whether a chain is revoked; it
//! has no clock, the time of the statement is an argument.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::id::{IdError, NodeName, SpiffeId};
use crate::root::Fingerprint;

/// Longest reason kept in a revocation, in bytes (the entry must stay small enough to be
/// broadcast).
pub const MAX_REASON_LEN: usize = 200;

/// Version byte of the encoding (first field).
const VERSION: u8 = 1;

/// Prefix of the key name of a revocation by fingerprint (`sha256:<hex>`); a node name never
/// contains `:`, so both kinds of names never collide.
pub const FINGERPRINT_PREFIX: &str = "sha256:";

/// Why a revocation could not be made or decoded (the author's or the sender's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// Neither a node nor a fingerprint is named.
    #[error("a revocation names a node, a certificate fingerprint, or both")]
    NoTarget,
    /// The reason is longer than [`MAX_REASON_LEN`].
    #[error("reason longer than {MAX_REASON_LEN} bytes")]
    ReasonTooLong,
    /// The node name is not valid.
    #[error("revoked node: {0}")]
    Node(#[from] IdError),
    /// The bytes are not an encoded revocation.
    #[error("undecodable revocation: {0}")]
    Decode(String),
    /// The encoding is of an unknown version.
    #[error("revocation encoding version {0} is not supported (expected {VERSION})")]
    Version(u8),
}

/// One operator statement: what is revoked, why, and when it was decided (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    node: Option<NodeName>,
    fingerprint: Option<Fingerprint>,
    reason: String,
    revoked_at: u64,
}

/// The encoded form (postcard); names as text, checked again on decode.
#[derive(Serialize, Deserialize)]
struct Wire {
    version: u8,
    node: Option<String>,
    fingerprint: Option<[u8; 32]>,
    reason: String,
    revoked_at: u64,
}

impl Revocation {
    /// A revocation of `node` and/or the certificate of `fingerprint`, decided at
    /// `revoked_at` (unix seconds).
    pub fn new(
        node: Option<NodeName>,
        fingerprint: Option<Fingerprint>,
        reason: &str,
        revoked_at: u64,
    ) -> Result<Self, RevocationError> {
        if node.is_none() && fingerprint.is_none() {
            return Err(RevocationError::NoTarget);
        }
        if reason.len() > MAX_REASON_LEN {
            return Err(RevocationError::ReasonTooLong);
        }
        Ok(Self {
            node,
            fingerprint,
            reason: reason.to_owned(),
            revoked_at,
        })
    }

    /// The revoked node, if any: its intermediate and every leaf under it.
    pub fn node(&self) -> Option<&NodeName> {
        self.node.as_ref()
    }

    /// The revoked certificate, if any.
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        self.fingerprint.as_ref()
    }

    /// Why (free text from the operator, possibly empty).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// When the operator decided it (unix seconds).
    pub fn revoked_at(&self) -> u64 {
        self.revoked_at
    }

    /// The name under which it is replicated (`revoked/<name>`): the node name, or
    /// `sha256:<hex>` for a revocation of a certificate alone.
    pub fn key_name(&self) -> String {
        match (&self.node, &self.fingerprint) {
            (Some(node), _) => node.to_string(),
            (None, Some(fp)) => format!("{FINGERPRINT_PREFIX}{fp}"),
            (None, None) => String::new(),
        }
    }

    /// The encoded statement (postcard), the value of its replicated entry.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = Wire {
            version: VERSION,
            node: self.node.as_ref().map(ToString::to_string),
            fingerprint: self.fingerprint.map(|f| f.0),
            reason: self.reason.clone(),
            revoked_at: self.revoked_at,
        };
        // Serializing plain owned data into a Vec cannot fail.
        postcard::to_stdvec(&wire).unwrap_or_default()
    }

    /// Decodes and checks a statement received from anyone.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RevocationError> {
        let (wire, rest): (Wire, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| RevocationError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(RevocationError::Decode(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        if wire.version != VERSION {
            return Err(RevocationError::Version(wire.version));
        }
        let node = wire.node.map(|n| n.parse()).transpose()?;
        Self::new(
            node,
            wire.fingerprint.map(Fingerprint),
            &wire.reason,
            wire.revoked_at,
        )
    }
}

impl fmt::Display for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.node, &self.fingerprint) {
            (Some(n), Some(fp)) => write!(f, "node {n} and certificate {fp}")?,
            (Some(n), None) => write!(f, "node {n}")?,
            (None, Some(fp)) => write!(f, "certificate {fp}")?,
            (None, None) => f.write_str("nothing")?,
        }
        if !self.reason.is_empty() {
            write!(f, " ({})", self.reason)?;
        }
        Ok(())
    }
}

/// What made a chain revoked (carried by [`crate::VerifyError::Revoked`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Revoked {
    /// A certificate of the chain was revoked by fingerprint.
    #[error("certificate {0} is revoked")]
    Certificate(Fingerprint),
    /// The chain belongs to a revoked node (its agent leaf or its intermediate).
    #[error("node {0} is revoked")]
    Node(NodeName),
}

/// Every revocation in force, by key name, with indexes for the checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationSet {
    by_name: BTreeMap<String, Revocation>,
    nodes: BTreeSet<NodeName>,
    fingerprints: BTreeSet<[u8; 32]>,
}

impl RevocationSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces, under the same key name) one revocation.
    pub fn insert(&mut self, revocation: Revocation) {
        self.by_name.insert(revocation.key_name(), revocation);
        self.reindex();
    }

    /// Removes the revocation of this key name (an operator withdrew it); whether it was there.
    pub fn remove(&mut self, key_name: &str) -> bool {
        let removed = self.by_name.remove(key_name).is_some();
        self.reindex();
        removed
    }

    fn reindex(&mut self) {
        self.nodes = self
            .by_name
            .values()
            .filter_map(|r| r.node.clone())
            .collect();
        self.fingerprints = self
            .by_name
            .values()
            .filter_map(|r| r.fingerprint.map(|f| f.0))
            .collect();
    }

    /// The revocations, by key name.
    pub fn iter(&self) -> impl Iterator<Item = &Revocation> {
        self.by_name.values()
    }

    /// Number of revocations.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether `node` is revoked.
    pub fn is_node_revoked(&self, node: &NodeName) -> bool {
        self.nodes.contains(node)
    }

    /// Whether the certificate of fingerprint `fp` is revoked.
    pub fn is_fingerprint_revoked(&self, fp: &Fingerprint) -> bool {
        self.fingerprints.contains(&fp.0)
    }

    /// Whether one certificate is revoked: by its fingerprint, or as the agent leaf or the
    /// intermediate of a revoked node. Unparsable certificates are not judged here (chain
    /// verification refuses them).
    pub fn check_cert(&self, der: &CertificateDer<'_>) -> Result<(), Revoked> {
        if self.is_empty() {
            return Ok(());
        }
        let fp = Fingerprint::of(der);
        if self.is_fingerprint_revoked(&fp) {
            return Err(Revoked::Certificate(fp));
        }
        if self.nodes.is_empty() {
            return Ok(());
        }
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return Ok(());
        };
        if let Ok(Some(binding)) = crate::svid::agent_binding(&cert)
            && self.is_node_revoked(&binding.node)
        {
            return Err(Revoked::Node(binding.node));
        }
        for uri in crate::svid::uri_sans(&cert) {
            if let Ok(SpiffeId::Agent { node, .. }) = uri.parse::<SpiffeId>()
                && self.is_node_revoked(&node)
            {
                return Err(Revoked::Node(node));
            }
        }
        Ok(())
    }

    /// Whether a chain (leaf first, any order after) holds a revoked certificate: one revoked
    /// by fingerprint, or an agent leaf or intermediate bound to a revoked node (which covers
    /// every workload leaf that intermediate issued).
    pub fn check_chain(&self, chain: &[CertificateDer<'_>]) -> Result<(), Revoked> {
        chain.iter().try_for_each(|c| self.check_cert(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    #[test]
    fn encoding_round_trips_and_names_the_key() {
        let by_node = Revocation::new(Some(node("node-2")), None, "key leaked", 1_800).unwrap();
        assert_eq!(by_node.key_name(), "node-2");
        assert_eq!(Revocation::from_bytes(&by_node.to_bytes()), Ok(by_node));
        let fp = Fingerprint([7; 32]);
        let by_fp = Revocation::new(None, Some(fp), "", 5).unwrap();
        assert_eq!(by_fp.key_name(), format!("sha256:{}", "07".repeat(32)));
        assert_eq!(Revocation::from_bytes(&by_fp.to_bytes()), Ok(by_fp));
    }

    #[test]
    fn bad_statements_are_refused() {
        assert_eq!(
            Revocation::new(None, None, "x", 1),
            Err(RevocationError::NoTarget)
        );
        let long = "x".repeat(MAX_REASON_LEN + 1);
        assert_eq!(
            Revocation::new(Some(node("a")), None, &long, 1),
            Err(RevocationError::ReasonTooLong)
        );
        // Garbled bytes, truncated, trailing, wrong version, bad node name, no target.
        let good = Revocation::new(Some(node("a")), None, "r", 1)
            .unwrap()
            .to_bytes();
        for bad in [
            vec![],
            vec![0xff; 3],
            good[..good.len() - 1].to_vec(),
            [good.as_slice(), &[0]].concat(),
        ] {
            assert!(
                matches!(
                    Revocation::from_bytes(&bad),
                    Err(RevocationError::Decode(_))
                ),
                "{bad:?}"
            );
        }
        let wire = |version, node: Option<&str>, fp: Option<[u8; 32]>| {
            postcard::to_stdvec(&Wire {
                version,
                node: node.map(str::to_owned),
                fingerprint: fp,
                reason: String::new(),
                revoked_at: 0,
            })
            .unwrap()
        };
        assert_eq!(
            Revocation::from_bytes(&wire(2, Some("a"), None)),
            Err(RevocationError::Version(2))
        );
        assert!(matches!(
            Revocation::from_bytes(&wire(1, Some("A B"), None)),
            Err(RevocationError::Node(_))
        ));
        assert_eq!(
            Revocation::from_bytes(&wire(1, None, None)),
            Err(RevocationError::NoTarget)
        );
    }

    #[test]
    fn set_indexes_follow_inserts_and_removals() {
        let mut set = RevocationSet::new();
        let fp = Fingerprint([1; 32]);
        set.insert(Revocation::new(Some(node("n1")), None, "", 1).unwrap());
        set.insert(Revocation::new(None, Some(fp), "", 1).unwrap());
        assert!(set.is_node_revoked(&node("n1")));
        assert!(!set.is_node_revoked(&node("n2")));
        assert!(set.is_fingerprint_revoked(&fp));
        assert_eq!(set.len(), 2);
        assert!(set.remove("n1"));
        assert!(!set.is_node_revoked(&node("n1")));
        assert!(set.remove(&format!("sha256:{fp}")));
        assert!(set.is_empty());
        assert!(!set.remove("n1"));
    }
}
