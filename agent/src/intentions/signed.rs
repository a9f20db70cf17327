//! Signed intention entries: how an operator (or a `--dev` agent) signs one config entry
//! as a replicated gossip entry, and how an agent checks one before accepting it.
//!
//! An intention travels as a [`SignedEntry`] with key `intentions/<ns>/<destination>`,
//! value the entry's HCL text, origin the signer's name (operator name, or node name for a
//! `--dev` agent), signer [`Signer::Chain`] (the signer's certificate chain, leaf first) and
//! an ECDSA signature over [`SignedEntry::signing_bytes`]. Deleting is the same with
//! `tombstone = true` and an empty value. Over the HTTP API an entry is the base64 of
//! [`SignedEntry::to_bytes`].

use crate::ca::identity::Identity;
use base64::Engine as _;
use rhizome_ca::{CertKind, Credential, SpiffeId};
use rhizome_gossip::hlc::Hlc;
use rhizome_gossip::state::{Entry as SignedEntry, Key, Segment, Signer};
use rhizome_intentions::{Entry, ServicePattern, SourceError};
use rustls_pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;

/// File names of an operator directory written by `rhizome ca issue-operator`.
pub mod files {
    /// The operator certificate followed by any CA certificate above it (root excluded).
    pub const CHAIN: &str = "chain.pem";
    /// The operator certificate alone (used when `chain.pem` is absent).
    pub const CERT: &str = "cert.pem";
    /// The operator's private key.
    pub const KEY: &str = "key.pem";
}

/// Why an intention entry could not be signed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignedError {
    /// The operator directory could not be read or holds no usable credential (operator
    /// error: wrong `--operator-dir` / `operator_dir`).
    #[error("operator credentials in {dir}: {message}")]
    Credentials {
        /// The directory.
        dir: String,
        /// What is wrong.
        message: String,
    },
    /// Signing failed (bug or unusable key; nothing was signed).
    #[error("signing failed: {0}")]
    Sign(String),
    /// The key is not `intentions/<ns>/<name>` (sender's fault).
    #[error("key {0} is not an intentions key (intentions/<namespace>/<destination>)")]
    NotIntentionKey(String),
    /// The entry carries no signature and this agent is not `--dev` (sender's fault).
    #[error("unsigned intention refused: only --dev agents accept unsigned entries")]
    Unsigned,
    /// The signer is referenced by fingerprint; intentions must carry their chain
    /// (sender's fault).
    #[error("intentions must carry the signer's certificate chain (Signer::Chain)")]
    NoChain,
    /// The chain or the signature did not verify, or the signer may not write intentions
    /// (sender's fault: not an operator of this trust domain).
    #[error("signature refused: {0}")]
    Untrusted(String),
    /// The entry's origin is not its signer's name (sender's fault).
    #[error("origin {origin} is not the signer's name {signer}")]
    OriginMismatch {
        /// Origin written in the entry.
        origin: String,
        /// Name in the signer's certificate.
        signer: String,
    },
    /// The value is not UTF-8 HCL, or a tombstone carries a value (sender's fault).
    #[error("malformed intention value: {0}")]
    Malformed(String),
    /// The HCL does not parse or validate (sender's fault; carries file:line:column).
    #[error("{0}")]
    Invalid(#[from] SourceError),
    /// The entry's destination is not the one its key names (sender's fault).
    #[error("key {key} does not match the entry's destination {destination}")]
    KeyMismatch {
        /// The key.
        key: String,
        /// The destination written in the HCL.
        destination: String,
    },
    /// The bytes are not a signed entry (sender's fault).
    #[error("undecodable signed entry: {0}")]
    Decode(String),
}

/// Someone who signs intention entries: an operator (from `rhizome ca issue-operator`), or
/// the local agent of a `--dev` mesh.
#[derive(Clone)]
pub struct Author {
    origin: Segment,
    credential: Arc<Credential>,
}

impl Author {
    /// The operator whose credentials are in `dir` (`chain.pem` or `cert.pem`, `key.pem`).
    pub fn from_operator_dir(dir: &Path) -> Result<Author, SignedError> {
        let err = |message: String| SignedError::Credentials {
            dir: dir.display().to_string(),
            message,
        };
        let read = |name: &str| std::fs::read_to_string(dir.join(name));
        let chain = read(files::CHAIN)
            .or_else(|_| read(files::CERT))
            .map_err(|e| err(format!("reading {} or {}: {e}", files::CHAIN, files::CERT)))?;
        let key = read(files::KEY).map_err(|e| err(format!("reading {}: {e}", files::KEY)))?;
        let credential = Credential::from_pem(&chain, &key).map_err(|e| err(e.to_string()))?;
        Self::operator(credential).map_err(|m| err(m.to_string()))
    }

    /// An operator author from its credential; refuses other kinds of certificate.
    pub fn operator(credential: Credential) -> Result<Author, SignedError> {
        let SpiffeId::Operator { name, .. } = credential.id() else {
            return Err(SignedError::Untrusted(format!(
                "{} is not an operator certificate",
                credential.id()
            )));
        };
        let origin = segment(name.as_str())?;
        Ok(Author {
            origin,
            credential: Arc::new(credential),
        })
    }

    /// The local agent as author (`--dev` meshes only: other agents refuse its entries).
    pub fn agent(identity: &Identity) -> Result<Author, SignedError> {
        Ok(Author {
            origin: segment(identity.node().as_str())?,
            credential: identity.agent_leaf(),
        })
    }

    /// The signer's SPIFFE id.
    pub fn id(&self) -> &SpiffeId {
        self.credential.id()
    }

    /// Signs `value` (HCL text, empty for a tombstone) for `key` at `hlc`.
    pub fn sign(
        &self,
        key: Key,
        value: Vec<u8>,
        tombstone: bool,
        hlc: Hlc,
    ) -> Result<SignedEntry, SignedError> {
        let mut entry = SignedEntry {
            key,
            value,
            origin: self.origin.clone(),
            hlc,
            tombstone,
            signer: Signer::Chain(
                self.credential
                    .chain()
                    .iter()
                    .map(|c| c.as_ref().to_vec())
                    .collect(),
            ),
            signature: Vec::new(),
        };
        entry.signature = self
            .credential
            .key()
            .sign(&entry.signing_bytes())
            .map_err(|e| SignedError::Sign(e.to_string()))?;
        Ok(entry)
    }
}

fn segment(text: &str) -> Result<Segment, SignedError> {
    text.parse()
        .map_err(|e| SignedError::Malformed(format!("name {text:?}: {e}")))
}

/// The gossip key of the entry for `destination`: `intentions/<ns>/<name>`.
pub fn key_for(destination: &ServicePattern) -> Result<Key, SignedError> {
    format!(
        "intentions/{}/{}",
        destination.namespace(),
        destination.name()
    )
    .parse()
    .map_err(|e| SignedError::NotIntentionKey(format!("{destination}: {e}")))
}

/// The destination pattern a key names (`intentions/ns/db-*` -> `ns/db-*`).
pub fn destination_of(key: &Key) -> Result<ServicePattern, SignedError> {
    let Key::Intentions {
        namespace,
        destination,
    } = key
    else {
        return Err(SignedError::NotIntentionKey(key.to_string()));
    };
    format!("{namespace}/{destination}")
        .parse()
        .map_err(|e| SignedError::NotIntentionKey(format!("{key}: {e}")))
}

/// Parses the HCL value of a (non-tombstone) entry, naming the key as the file in errors,
/// and checks that the destination is the one the key names.
pub fn parse_value(key: &Key, value: &[u8]) -> Result<Entry, SignedError> {
    let text = std::str::from_utf8(value)
        .map_err(|e| SignedError::Malformed(format!("not UTF-8: {e}")))?;
    let entry = Entry::parse(text, &key.to_string())?;
    if destination_of(key)? != entry.destination {
        return Err(SignedError::KeyMismatch {
            key: key.to_string(),
            destination: entry.destination.to_string(),
        });
    }
    Ok(entry)
}

/// The base64 text of a signed entry, as the HTTP API carries it.
pub fn encode(entry: &SignedEntry) -> String {
    base64::engine::general_purpose::STANDARD.encode(entry.to_bytes())
}

/// Decodes [`encode`]'s text.
pub fn decode(text: &str) -> Result<SignedEntry, SignedError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| SignedError::Decode(e.to_string()))?;
    SignedEntry::from_bytes(&bytes).map_err(|e| SignedError::Decode(e.to_string()))
}

/// Checks a signed intention entry as this agent accepts it: an intentions key, a
/// certificate chain that verifies against the trust bundle as an operator (or, on a
/// `--dev` agent, as an agent too), a signature over the entry, an origin equal to the
/// signer's name, and (unless a tombstone) HCL that parses and whose destination is the
/// key's. Returns the signer's id.
pub fn verify(
    identity: &Identity,
    dev: bool,
    entry: &SignedEntry,
) -> Result<SpiffeId, SignedError> {
    destination_of(&entry.key)?;
    if entry.signature.is_empty() {
        return Err(if dev {
            SignedError::Untrusted("empty signature".into())
        } else {
            SignedError::Unsigned
        });
    }
    let Signer::Chain(chain) = &entry.signer else {
        return Err(SignedError::NoChain);
    };
    let chain: Vec<CertificateDer<'_>> = chain
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let accept: &[CertKind] = if dev {
        &[CertKind::Operator, CertKind::Agent]
    } else {
        &[CertKind::Operator]
    };
    let id = identity
        .verify_signed(&chain, &entry.signing_bytes(), &entry.signature, accept)
        .map_err(|e| SignedError::Untrusted(format!("{e:#}")))?;
    let name = match &id {
        SpiffeId::Operator { name, .. } => name.as_str(),
        SpiffeId::Agent { node, .. } => node.as_str(),
        SpiffeId::Workload { .. } => return Err(SignedError::Untrusted(format!("{id}"))),
    };
    if entry.origin.as_str() != name {
        return Err(SignedError::OriginMismatch {
            origin: entry.origin.to_string(),
            signer: name.to_owned(),
        });
    }
    if entry.tombstone {
        if !entry.value.is_empty() {
            return Err(SignedError::Malformed("a tombstone carries a value".into()));
        }
    } else {
        parse_value(&entry.key, &entry.value)?;
    }
    Ok(id)
}

/// The SPIFFE id in a signed entry's leaf certificate, for display (not a verification).
pub fn signer_id(entry: &SignedEntry) -> Option<SpiffeId> {
    let Signer::Chain(chain) = &entry.signer else {
        return None;
    };
    rhizome_ca::CertInfo::from_der(chain.first()?)
        .ok()?
        .spiffe_id
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

    const DB: &str = "Kind = \"service-intentions\"\nName = \"db-*\"\nSources = [\n  { Name = \"web\", Action = \"allow\" },\n]\n";

    fn dev_identity(node: &str) -> Identity {
        let dir = tempfile::tempdir().unwrap();
        Identity::load(&AgentConfig::dev(node, dir.path().to_path_buf())).unwrap()
    }

    fn key(text: &str) -> Key {
        text.parse().unwrap()
    }

    #[test]
    fn keys_follow_destinations_with_wildcards() {
        let p: ServicePattern = "db-*".parse().unwrap();
        assert_eq!(key_for(&p).unwrap().to_string(), "intentions/default/db-*");
        let any: ServicePattern = "*/*".parse().unwrap();
        let k = key_for(&any).unwrap();
        assert_eq!(k.to_string(), "intentions/*/*");
        assert_eq!(destination_of(&k).unwrap(), any);
        assert!(destination_of(&key("certs/n1")).is_err());
    }

    #[test]
    fn dev_agent_signatures_verify_only_on_dev_agents() {
        let id = dev_identity("n1");
        let author = Author::agent(&id).unwrap();
        let entry = author
            .sign(
                key("intentions/default/db-*"),
                DB.into(),
                false,
                Hlc::new(5, 0),
            )
            .unwrap();
        let round = decode(&encode(&entry)).unwrap();
        assert_eq!(round, entry);
        let who = verify(&id, true, &round).unwrap();
        assert_eq!(who.to_string(), "spiffe://rhizome.local/agent/n1");
        assert!(matches!(
            verify(&id, false, &round),
            Err(SignedError::Untrusted(_))
        ));
        assert!(
            matches!(
                verify(&dev_identity("n2"), true, &round),
                Err(SignedError::Untrusted(_))
            ),
            "another dev root"
        );
    }

    #[test]
    fn malformed_entries_are_refused_with_their_reason() {
        let id = dev_identity("n1");
        let author = Author::agent(&id).unwrap();
        let sign = |k: &str, v: &str, tomb: bool| {
            author
                .sign(key(k), v.as_bytes().to_vec(), tomb, Hlc::new(5, 0))
                .unwrap()
        };
        let mismatch = sign("intentions/default/db", DB, false);
        assert!(matches!(
            verify(&id, true, &mismatch),
            Err(SignedError::KeyMismatch { .. })
        ));
        let bad_hcl = sign(
            "intentions/default/db-*",
            "Kind = \"service-intentions\"\nName = \"db-*\"\nSources = [ { Name = \"web\", Action = \"maybe\" } ]\n",
            false,
        );
        let err = verify(&id, true, &bad_hcl).unwrap_err().to_string();
        assert!(err.starts_with("intentions/default/db-*:3:"), "{err}");
        let tomb = sign("intentions/default/db-*", DB, true);
        assert!(matches!(
            verify(&id, true, &tomb),
            Err(SignedError::Malformed(_))
        ));
        let not_intention = sign("keyring/primary", DB, false);
        assert!(matches!(
            verify(&id, true, &not_intention),
            Err(SignedError::NotIntentionKey(_))
        ));

        let mut by_fp = sign("intentions/default/db-*", DB, false);
        by_fp.signer = Signer::Fingerprint([7; 32]);
        assert!(matches!(
            verify(&id, true, &by_fp),
            Err(SignedError::NoChain)
        ));
        let mut unsigned = sign("intentions/default/db-*", DB, false);
        unsigned.signature.clear();
        assert!(matches!(
            verify(&id, false, &unsigned),
            Err(SignedError::Unsigned)
        ));

        // Correctly signed, but claiming another writer.
        let mut forged = Author {
            origin: "someone-else".parse().unwrap(),
            credential: author.credential.clone(),
        }
        .sign(
            key("intentions/default/db-*"),
            DB.into(),
            false,
            Hlc::new(5, 0),
        )
        .unwrap();
        assert!(matches!(
            verify(&id, true, &forged),
            Err(SignedError::OriginMismatch { .. })
        ));
        forged.origin = "n1".parse().unwrap();
        assert!(
            matches!(verify(&id, true, &forged), Err(SignedError::Untrusted(_))),
            "origin is covered by the signature"
        );
    }
}
