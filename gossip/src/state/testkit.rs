//! Test identities with real ECDSA P-256 keys (ring), and an authority that maps signer
//! fingerprints to public keys and identities and enforces key ownership like the agent's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use ring::digest::{SHA256, digest};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};

use super::{Authority, Entry, EntrySigner, Key, NodeName, Rejection, SignError, Signer};
use crate::hlc::Hlc;

/// Who a test identity is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// An agent, owner of `catalog/<name>/...` and `certs/<name>`.
    Agent,
    /// An operator, allowed the operator keys.
    Operator,
}

/// A named key pair.
pub struct Identity {
    pub name: NodeName,
    pub role: Role,
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Identity {
    pub fn new(name: &str, role: Role) -> Arc<Identity> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Arc::new(Identity {
            name: name.parse().unwrap(),
            role,
            key,
            rng,
        })
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        let d = digest(&SHA256, self.key.public_key().as_ref());
        d.as_ref().try_into().unwrap()
    }

    /// Re-signs an entry with this identity (for forging tests).
    pub fn resign(&self, entry: &mut Entry) {
        entry.signer = self.signer();
        entry.signature = self.sign(&entry.signing_bytes()).unwrap();
    }
}

impl EntrySigner for Identity {
    fn signer(&self) -> Signer {
        Signer::Fingerprint(self.fingerprint())
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.key
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| SignError("ecdsa".into()))
    }
}

/// A certificate of the test mini-CA: `[public key, name, root signature]`.
fn endorsement_message(name: &str, public: &[u8]) -> Vec<u8> {
    let mut m = b"test-cert\0".to_vec();
    m.extend_from_slice(name.as_bytes());
    m.push(0);
    m.extend_from_slice(public);
    m
}

impl Identity {
    /// A "certificate chain" for this agent signed by `root`.
    pub fn certify(&self, root: &Identity) -> Vec<Vec<u8>> {
        let public = self.key.public_key().as_ref().to_vec();
        let sig = root
            .sign(&endorsement_message(self.name.as_str(), &public))
            .unwrap();
        vec![public, self.name.as_str().as_bytes().to_vec(), sig]
    }
}

/// Signs as an identity but names the signer by its whole chain (for `certs/<node>`).
pub struct ChainSigner<'a> {
    pub id: &'a Identity,
    pub chain: Vec<Vec<u8>>,
}

impl EntrySigner for ChainSigner<'_> {
    fn signer(&self) -> Signer {
        Signer::Chain(self.chain.clone())
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.id.sign(message)
    }
}

/// Verifies signatures against known identities and enforces who may write which key.
/// Agents may also be learned from `certs/<node>` entries whose chain a root endorsed.
#[derive(Clone, Default)]
pub struct TestAuthority {
    known: BTreeMap<[u8; 32], (Vec<u8>, NodeName, Role)>,
    roots: Vec<Vec<u8>>,
}

impl TestAuthority {
    pub fn new(identities: &[&Arc<Identity>]) -> Self {
        let mut known = BTreeMap::new();
        for id in identities {
            known.insert(
                id.fingerprint(),
                (
                    id.key.public_key().as_ref().to_vec(),
                    id.name.clone(),
                    id.role.clone(),
                ),
            );
        }
        TestAuthority {
            known,
            roots: Vec::new(),
        }
    }

    /// An authority that knows `identities` and trusts chains endorsed by `roots`.
    pub fn with_roots(identities: &[&Arc<Identity>], roots: &[&Arc<Identity>]) -> Self {
        let mut auth = TestAuthority::new(identities);
        auth.roots = roots
            .iter()
            .map(|r| r.key.public_key().as_ref().to_vec())
            .collect();
        auth
    }

    /// Resolves a chain to `(public key, agent name)` if a root endorsed it.
    fn verify_chain(&self, chain: &[Vec<u8>]) -> Result<(Vec<u8>, NodeName), Rejection> {
        let [public, name, sig] = chain else {
            return Err(Rejection::UnknownSigner);
        };
        let name_text = std::str::from_utf8(name).map_err(|_| Rejection::UnknownSigner)?;
        let message = endorsement_message(name_text, public);
        let endorsed = self.roots.iter().any(|root| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, root)
                .verify(&message, sig)
                .is_ok()
        });
        let name = name_text.parse().map_err(|_| Rejection::UnknownSigner)?;
        if endorsed {
            Ok((public.clone(), name))
        } else {
            Err(Rejection::UnknownSigner)
        }
    }
}

impl Authority for TestAuthority {
    fn check(&self, entry: &Entry) -> Result<(), Rejection> {
        let (public, name, role) = match &entry.signer {
            Signer::Fingerprint(fp) => self.known.get(fp).ok_or(Rejection::UnknownSigner)?,
            Signer::Chain(chain) => {
                let (public, name) = self.verify_chain(chain)?;
                &(public, name, Role::Agent)
            }
        };
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public)
            .verify(&entry.signing_bytes(), &entry.signature)
            .map_err(|_| Rejection::BadSignature)?;
        if &entry.origin != name {
            return Err(Rejection::WrongOwner);
        }
        let allowed = match (entry.key.owner_node(), role) {
            (Some(owner), Role::Agent) => owner == name,
            (None, Role::Operator) => true,
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Rejection::WrongOwner)
        }
    }

    fn observe(&mut self, entry: &Entry) {
        if let (Key::Certs(_), Signer::Chain(chain)) = (&entry.key, &entry.signer)
            && let Ok((public, name)) = self.verify_chain(chain)
        {
            let fp: [u8; 32] = digest(&SHA256, &public).as_ref().try_into().unwrap();
            self.known.insert(fp, (public, name, Role::Agent));
        }
    }
}

/// A catalog key.
pub fn catalog(node: &str, instance: &str) -> Key {
    format!("catalog/{node}/{instance}").parse().unwrap()
}

/// An intentions key in namespace `default`.
pub fn intentions(dest: &str) -> Key {
    format!("intentions/default/{dest}").parse().unwrap()
}

/// A correctly signed entry with a chosen clock.
pub fn signed(id: &Identity, key: Key, value: &[u8], hlc: Hlc, tombstone: bool) -> Entry {
    let mut e = Entry {
        key,
        value: value.to_vec(),
        origin: id.name.clone(),
        hlc,
        tombstone,
        signer: id.signer(),
        signature: Vec::new(),
    };
    id.resign(&mut e);
    e
}

/// Wall time of the pool's entries.
pub const NOW: u64 = 1_800_000_000_000;

/// Number of entries in [`pool`].
pub const POOL_SIZE: usize = 28;

/// A pool of signed versions over few keys, with clock ties between origins and even two
/// different contents with the same `(hlc, origin)`.
pub fn pool() -> (TestAuthority, Vec<Entry>) {
    let ops: Vec<Arc<Identity>> = (0..3)
        .map(|i| Identity::new(&format!("op-{i}"), Role::Operator))
        .collect();
    let agent = Identity::new("node-a", Role::Agent);
    let refs: Vec<&Arc<Identity>> = ops.iter().chain([&agent]).collect();
    let auth = TestAuthority::new(&refs);
    let mut entries = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        for t in 0..3u64 {
            let hlc = Hlc::new(NOW - 100 + t, 0);
            let tomb = (i + t as usize).is_multiple_of(4);
            let value = if tomb {
                Vec::new()
            } else {
                vec![i as u8, t as u8]
            };
            entries.push(signed(op, intentions("db"), &value, hlc, tomb));
            entries.push(signed(
                op,
                Key::CaBundle,
                &[t as u8],
                Hlc::new(NOW - 50, t as u16),
                false,
            ));
        }
        // Same (hlc, origin), different contents.
        entries.push(signed(
            op,
            intentions("web"),
            b"x",
            Hlc::new(NOW - 10, 0),
            false,
        ));
        entries.push(signed(
            op,
            intentions("web"),
            b"y",
            Hlc::new(NOW - 10, 0),
            false,
        ));
    }
    for t in 0..4u64 {
        let value: &[u8] = if t == 2 { &[] } else { &[t as u8] };
        entries.push(signed(
            &agent,
            catalog("node-a", "web"),
            value,
            Hlc::new(NOW - 20 + t, 0),
            t == 2,
        ));
    }
    (auth, entries)
}
