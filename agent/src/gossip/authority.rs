//! [`AgentAuthority`]: how this agent decides whether a replicated entry may enter its state,
//! with the mesh CA (`rhizome_ca`) as the source of truth.
//!
//! Every entry is signed. Its signer is either a certificate chain carried in the entry
//! (`Signer::Chain`: agent certificates under `certs/<node>`, operator-signed entries) or the
//! fingerprint of an agent leaf learned earlier from a `certs/<node>` entry
//! (`Signer::Fingerprint`: everything else an agent writes, small enough to broadcast).
//! Chains are verified against the live trust bundle at every check, so an expired,
//! untrusted or revoked signer stops being accepted without any cache to invalidate.
//!
//! Revocations (`revoked/<name>`, value a [`Revocation`], operator-signed) are learned here:
//! each accepted one goes into the revocation set of the shared trust bundle, which every
//! verifier of this agent reads (handshakes, entries, joins and renewals).
//!
//! Ownership: `catalog/<node>/..` and `certs/<node>` only by agent `<node>`; `intentions/..`,
//! `keyring/..`, `ca/bundle` and `revoked/..` only by an operator, except on a `--dev` agent,
//! which may write them itself (a dev mesh has no operator).

use std::collections::HashMap;

use rhizome_ca::{
    CertKind, Credential, Fingerprint, Revocation, RevocationSet, SharedBundle, SignedError,
    SpiffeId,
};
use rhizome_gossip::hlc::Hlc;
use rhizome_gossip::state::{
    Authority, Entry, EntrySigner, Key, Rejection, Segment, SignError, Signer,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::ca::refusals::{Point, TrustRefusals, reason};

/// A signer learned from a `certs/<node>` entry.
#[derive(Clone, Debug)]
struct KnownSigner {
    chain: Vec<CertificateDer<'static>>,
}

/// The agent's [`Authority`]: signatures and chains checked with the CA crate, key ownership
/// enforced per key space (see the module docs).
pub struct AgentAuthority {
    bundle: SharedBundle,
    node: String,
    dev: bool,
    signers: HashMap<[u8; 32], KnownSigner>,
    revoked: RevocationSet,
    refusals: TrustRefusals,
}

impl std::fmt::Debug for AgentAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentAuthority")
            .field("node", &self.node)
            .field("dev", &self.dev)
            .field("signers", &self.signers.len())
            .field("revoked", &self.revoked.len())
            .finish()
    }
}

impl AgentAuthority {
    /// An authority trusting `bundle`, run by agent `node`; `dev` lets that agent write the
    /// operator keys itself.
    pub fn new(bundle: SharedBundle, node: &str, dev: bool) -> Self {
        AgentAuthority {
            bundle,
            node: node.to_string(),
            dev,
            signers: HashMap::new(),
            revoked: RevocationSet::new(),
            refusals: TrustRefusals::default(),
        }
    }

    /// Counts refused signers into `refusals` (point `gossip`).
    pub fn with_refusals(mut self, refusals: TrustRefusals) -> Self {
        self.refusals = refusals;
        self
    }

    /// Whether the leaf with this fingerprint is known (its `certs/<node>` entry was seen).
    pub fn knows(&self, fingerprint: &[u8; 32]) -> bool {
        self.signers.contains_key(fingerprint)
    }

    /// The revocations learned from `revoked/..` entries (also in force in the bundle).
    pub fn revoked(&self) -> &RevocationSet {
        &self.revoked
    }

    /// Verifies the chain and the signature; returns the signer's identity.
    fn verify(&self, chain: &[CertificateDer<'_>], entry: &Entry) -> Result<SpiffeId, Rejection> {
        let now = rhizome_ca::unix_time(OffsetDateTime::now_utc());
        rhizome_ca::verify_signed(
            &self.bundle.load(),
            chain,
            now,
            &[CertKind::Agent, CertKind::Operator],
            &entry.signing_bytes(),
            &entry.signature,
        )
        .map_err(|e| match e {
            SignedError::Signature(_) => Rejection::BadSignature,
            SignedError::NoCertificate => Rejection::UnknownSigner,
            SignedError::Chain(e) => {
                self.refusals.count(Point::Gossip, reason(&e));
                Rejection::UnknownSigner
            }
        })
    }

    /// Whether `id` may write `entry` (key ownership, origin, revocation).
    fn authorize(&self, id: &SpiffeId, entry: &Entry) -> Result<(), Rejection> {
        let origin = entry.origin.as_str();
        match id {
            SpiffeId::Agent { node, .. } => {
                if origin != node.as_str() {
                    return Err(Rejection::WrongOwner);
                }
                match entry.key.owner_node() {
                    Some(owner) if owner.as_str() == node.as_str() => Ok(()),
                    None if self.dev && node.as_str() == self.node => Ok(()),
                    _ => Err(Rejection::WrongOwner),
                }
            }
            SpiffeId::Operator { name, .. } => {
                if origin == name.as_str() && entry.key.is_operator_key() {
                    Ok(())
                } else {
                    Err(Rejection::WrongOwner)
                }
            }
            SpiffeId::Workload { .. } => Err(Rejection::WrongOwner),
        }
    }
}

/// A `revoked/<name>` entry must carry a decodable revocation filed under its own name.
fn check_revocation(name: &Segment, entry: &Entry) -> Result<(), Rejection> {
    if entry.tombstone {
        return Ok(());
    }
    let revocation = Revocation::from_bytes(&entry.value).map_err(|_| Rejection::Malformed)?;
    if revocation.key_name() == name.as_str() {
        Ok(())
    } else {
        Err(Rejection::Malformed)
    }
}

impl Authority for AgentAuthority {
    fn check(&self, entry: &Entry) -> Result<(), Rejection> {
        if let Key::Revoked(name) = &entry.key {
            check_revocation(name, entry)?;
        }
        let id = match &entry.signer {
            Signer::Chain(chain) => {
                let chain: Vec<CertificateDer<'_>> = chain
                    .iter()
                    .map(|c| CertificateDer::from(c.as_slice()))
                    .collect();
                self.verify(&chain, entry)?
            }
            Signer::Fingerprint(_) if matches!(entry.key, Key::Certs(_)) => {
                // The chain of a certs entry is what others learn: it must be carried.
                return Err(Rejection::Malformed);
            }
            Signer::Fingerprint(fp) => {
                let known = self.signers.get(fp).ok_or(Rejection::UnknownSigner)?;
                self.verify(&known.chain, entry)?
            }
        };
        self.authorize(&id, entry)
    }

    fn observe(&mut self, entry: &Entry) {
        match (&entry.key, &entry.signer) {
            (Key::Certs(_), Signer::Chain(chain)) if !entry.tombstone => {
                if let Some(leaf) = chain.first() {
                    let leaf = CertificateDer::from(leaf.clone());
                    let fp = Fingerprint::of(&leaf).0;
                    let chain = chain
                        .iter()
                        .map(|c| CertificateDer::from(c.clone()))
                        .collect();
                    self.signers.insert(fp, KnownSigner { chain });
                }
            }
            (Key::Revoked(name), _) => {
                if entry.tombstone {
                    self.revoked.remove(name.as_str());
                } else if let Ok(revocation) = Revocation::from_bytes(&entry.value) {
                    tracing::warn!(revoked = %revocation, by = %entry.origin,
                        "revocation in force: chains holding it are refused from now on");
                    self.revoked.insert(revocation);
                }
                self.bundle.set_revocations(self.revoked.clone());
            }
            _ => {}
        }
    }
}

/// Signs entries with a credential (the agent leaf, or an operator's): by fingerprint, or
/// with the whole chain for `certs/<node>` and operator entries.
pub struct CredentialSigner<'a> {
    credential: &'a Credential,
    with_chain: bool,
}

impl<'a> CredentialSigner<'a> {
    /// Names the signer by its leaf's fingerprint (receivers must know the chain already).
    pub fn by_fingerprint(credential: &'a Credential) -> Self {
        CredentialSigner {
            credential,
            with_chain: false,
        }
    }

    /// Carries the whole chain in the entry.
    pub fn with_chain(credential: &'a Credential) -> Self {
        CredentialSigner {
            credential,
            with_chain: true,
        }
    }
}

impl EntrySigner for CredentialSigner<'_> {
    fn signer(&self) -> Signer {
        if self.with_chain {
            Signer::Chain(self.credential.chain().iter().map(|c| c.to_vec()).collect())
        } else {
            Signer::Fingerprint(Fingerprint::of(self.credential.leaf()).0)
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.credential
            .key()
            .sign(message)
            .map_err(|e| SignError(e.to_string()))
    }
}

/// Why an operator entry could not be made. The operator's fault (wrong credential).
#[derive(Debug, thiserror::Error)]
pub enum OperatorSignError {
    /// The credential is not an operator certificate.
    #[error("{0} is not an operator identity (use the files of `rhizome ca issue-operator`)")]
    NotOperator(String),
    /// The operator name is not a valid origin.
    #[error("operator name: {0}")]
    Name(#[from] rhizome_gossip::state::KeyError),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// Builds an entry signed by an operator credential (chain embedded), stamped `now_ms`: how
/// the CLI signs keyring changes and intentions before sending them to an agent.
pub fn operator_entry(
    credential: &Credential,
    key: Key,
    value: Vec<u8>,
    tombstone: bool,
    now_ms: u64,
) -> Result<Entry, OperatorSignError> {
    let SpiffeId::Operator { name, .. } = credential.id() else {
        return Err(OperatorSignError::NotOperator(credential.id().to_string()));
    };
    let origin: Segment = name.as_str().parse()?;
    let signer = CredentialSigner::with_chain(credential);
    let mut entry = Entry {
        key,
        value: if tombstone { Vec::new() } else { value },
        origin,
        hlc: Hlc::new(now_ms, 0),
        tombstone,
        signer: signer.signer(),
        signature: Vec::new(),
    };
    entry.signature = signer.sign(&entry.signing_bytes())?;
    Ok(entry)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rhizome_ca::{RootCa, TrustBundle};
    use rhizome_gossip::state::{State, StateConfig};

    const NOW: u64 = 1_800_000_000_000;

    struct Fixture {
        root: RootCa,
        bundle: SharedBundle,
    }

    impl Fixture {
        fn new() -> Fixture {
            let root = RootCa::generate(
                "auth.test".parse().unwrap(),
                OffsetDateTime::now_utc(),
                rhizome_ca::DEFAULT_ROOT_TTL,
            )
            .unwrap();
            let bundle = SharedBundle::new(TrustBundle::new(vec![root.cert().clone()]).unwrap());
            Fixture { root, bundle }
        }

        fn agent_leaf(&self, node: &str) -> Credential {
            let ca = self
                .root
                .issue_agent(
                    &node.parse().unwrap(),
                    None,
                    OffsetDateTime::now_utc(),
                    rhizome_ca::DEFAULT_AGENT_TTL,
                )
                .unwrap();
            ca.issue_agent_leaf(OffsetDateTime::now_utc(), time::Duration::hours(1))
                .unwrap()
        }

        fn operator(&self, name: &str) -> Credential {
            self.root
                .issue_operator(
                    &name.parse().unwrap(),
                    OffsetDateTime::now_utc(),
                    time::Duration::hours(1),
                )
                .unwrap()
        }

        fn state(&self, node: &str, dev: bool) -> State<AgentAuthority> {
            State::new(
                AgentAuthority::new(self.bundle.clone(), node, dev),
                StateConfig::default(),
            )
        }
    }

    fn seg(s: &str) -> Segment {
        s.parse().unwrap()
    }

    fn catalog(node: &str) -> Key {
        format!("catalog/{node}/web").parse().unwrap()
    }

    #[test]
    fn agents_write_only_their_own_keys_and_need_a_published_certificate() {
        let f = Fixture::new();
        let leaf_a = f.agent_leaf("a");
        let leaf_b = f.agent_leaf("b");
        let mut writer_a = f.state("a", false);
        let mut writer_b = f.state("b", false);
        let mut observer = f.state("c", false);

        let web = writer_a
            .write(
                &CredentialSigner::by_fingerprint(&leaf_a),
                &seg("a"),
                catalog("a"),
                b"{}".to_vec(),
                NOW,
            )
            .err();
        assert!(
            web.is_some(),
            "a's own authority does not know its leaf yet"
        );
        let certs = writer_a
            .write(
                &CredentialSigner::with_chain(&leaf_a),
                &seg("a"),
                Key::Certs(seg("a")),
                vec![],
                NOW,
            )
            .unwrap();
        let web = writer_a
            .write(
                &CredentialSigner::by_fingerprint(&leaf_a),
                &seg("a"),
                catalog("a"),
                b"{}".to_vec(),
                NOW,
            )
            .unwrap();
        assert_eq!(
            observer.apply(web.clone(), NOW),
            Err(Rejection::UnknownSigner)
        );
        assert!(observer.apply(certs, NOW).is_ok());
        assert!(observer.apply(web.clone(), NOW).is_ok());

        // b signs an entry about a's instance: wrong owner, even with a valid chain.
        writer_b
            .write(
                &CredentialSigner::with_chain(&leaf_b),
                &seg("b"),
                Key::Certs(seg("b")),
                vec![],
                NOW,
            )
            .map(|e| observer.apply(e, NOW))
            .unwrap()
            .unwrap();
        let mut forged = web.clone();
        forged.origin = seg("b");
        forged.hlc = Hlc::new(NOW + 1, 0);
        let signer = CredentialSigner::by_fingerprint(&leaf_b);
        forged.signer = signer.signer();
        forged.signature = signer.sign(&forged.signing_bytes()).unwrap();
        assert_eq!(observer.apply(forged, NOW), Err(Rejection::WrongOwner));

        // A changed value under a's valid signature.
        let mut tampered = web;
        tampered.value = b"{\"evil\":1}".to_vec();
        tampered.hlc = Hlc::new(NOW + 2, 0);
        assert_eq!(observer.apply(tampered, NOW), Err(Rejection::BadSignature));

        // Agents may not write operator keys outside --dev.
        let intent: Key = "intentions/default/db".parse().unwrap();
        let by_agent = writer_b.write(
            &CredentialSigner::by_fingerprint(&leaf_b),
            &seg("b"),
            intent,
            b"x".to_vec(),
            NOW,
        );
        assert!(by_agent.is_err());
    }

    #[test]
    fn revocations_are_operator_only_well_formed_and_cut_the_revoked_agent_off() {
        let f = Fixture::new();
        let op = f.operator("alice");
        let leaf_a = f.agent_leaf("node-a");
        let refusals = TrustRefusals::default();
        let mut observer = State::new(
            AgentAuthority::new(f.bundle.clone(), "c", false).with_refusals(refusals.clone()),
            StateConfig::default(),
        );
        let mut writer_a = f.state("node-a", false);
        let certs = writer_a
            .write(
                &CredentialSigner::with_chain(&leaf_a),
                &seg("node-a"),
                Key::Certs(seg("node-a")),
                vec![],
                NOW,
            )
            .unwrap();
        observer.apply(certs, NOW).unwrap();
        let web = |n: u64| {
            let mut e = Entry {
                key: catalog("node-a"),
                value: b"{}".to_vec(),
                origin: seg("node-a"),
                hlc: Hlc::new(NOW + n, 0),
                tombstone: false,
                signer: CredentialSigner::by_fingerprint(&leaf_a).signer(),
                signature: vec![],
            };
            e.signature = CredentialSigner::by_fingerprint(&leaf_a)
                .sign(&e.signing_bytes())
                .unwrap();
            e
        };
        assert!(observer.apply(web(1), NOW).is_ok());

        let statement = Revocation::new(Some("node-a".parse().unwrap()), None, "stolen", 1)
            .unwrap()
            .to_bytes();
        let key: Key = "revoked/node-a".parse().unwrap();
        // Garbled value, and a revocation filed under another name: malformed.
        let garbled = operator_entry(&op, key.clone(), vec![9, 9, 9], false, NOW).unwrap();
        assert_eq!(observer.apply(garbled, NOW), Err(Rejection::Malformed));
        let elsewhere: Key = "revoked/node-b".parse().unwrap();
        let misfiled = operator_entry(&op, elsewhere, statement.clone(), false, NOW).unwrap();
        assert_eq!(observer.apply(misfiled, NOW), Err(Rejection::Malformed));
        // An agent may not revoke (not --dev).
        let mut by_agent = operator_entry(&op, key.clone(), statement.clone(), false, NOW).unwrap();
        by_agent.origin = seg("node-a");
        let signer = CredentialSigner::by_fingerprint(&leaf_a);
        by_agent.signer = signer.signer();
        by_agent.signature = signer.sign(&by_agent.signing_bytes()).unwrap();
        assert_eq!(observer.apply(by_agent, NOW), Err(Rejection::WrongOwner));
        assert!(f.bundle.load().revocations().is_empty());

        // The operator's revocation: in force in the shared bundle, a's entries refused.
        let revocation = operator_entry(&op, key.clone(), statement, false, NOW).unwrap();
        assert!(observer.apply(revocation, NOW).is_ok());
        assert!(
            f.bundle
                .load()
                .revocations()
                .is_node_revoked(&"node-a".parse().unwrap())
        );
        assert_eq!(observer.apply(web(2), NOW), Err(Rejection::UnknownSigner));
        assert_eq!(refusals.get(Point::Gossip, "revoked"), 1);
        assert_eq!(
            observer.drop_refused(|k| k.owner_node().is_some()),
            vec![catalog("node-a"), Key::Certs(seg("node-a"))]
        );

        // Withdrawn by a tombstone: a's new entries are accepted again.
        let withdraw = operator_entry(&op, key, vec![], true, NOW + 10).unwrap();
        assert!(observer.apply(withdraw, NOW).is_ok());
        assert!(f.bundle.load().revocations().is_empty());
        assert!(observer.apply(web(3), NOW).is_ok());
    }

    #[test]
    fn operators_sign_operator_keys_and_dev_agents_may_too() {
        let f = Fixture::new();
        let op = f.operator("alice");
        let mut observer = f.state("c", false);
        let intent: Key = "keyring/primary".parse().unwrap();
        let entry = operator_entry(&op, intent.clone(), b"k".to_vec(), false, NOW).unwrap();
        assert_eq!(entry.origin.as_str(), "alice");
        assert!(observer.apply(entry, NOW).is_ok());
        let on_catalog = operator_entry(&op, catalog("c"), b"{}".to_vec(), false, NOW + 1).unwrap();
        assert_eq!(observer.apply(on_catalog, NOW), Err(Rejection::WrongOwner));
        let leaf = f.agent_leaf("a");
        assert!(operator_entry(&leaf, intent.clone(), vec![], false, NOW).is_err());

        let mut dev = f.state("a", true);
        let certs = dev
            .write(
                &CredentialSigner::with_chain(&leaf),
                &seg("a"),
                Key::Certs(seg("a")),
                vec![],
                NOW,
            )
            .unwrap();
        let own = dev
            .write(
                &CredentialSigner::by_fingerprint(&leaf),
                &seg("a"),
                intent,
                b"k2".to_vec(),
                NOW,
            )
            .unwrap();
        // Another dev agent accepts a's certificate but not a's operator-key writes.
        let mut other = f.state("a2", true);
        assert!(other.apply(certs, NOW).is_ok());
        assert_eq!(other.apply(own, NOW), Err(Rejection::WrongOwner));
    }
}
