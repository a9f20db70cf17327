//! Typed keys of the replicated state: every key is parsed once into [`Key`], so writers and
//! authorities match on variants, never on string prefixes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted path segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 128;

/// Why a key or a segment could not be parsed. The writer of the key is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A segment is empty.
    #[error("empty segment in key {0:?}")]
    EmptySegment(String),
    /// A segment is longer than [`MAX_SEGMENT_LEN`].
    #[error("segment longer than {MAX_SEGMENT_LEN} bytes in key {0:?}")]
    SegmentTooLong(String),
    /// A segment holds a character outside `[A-Za-z0-9._:@*-]`.
    #[error("invalid character {1:?} in {0:?}")]
    InvalidChar(String, char),
    /// The first segment names no known key space.
    #[error("unknown key space in {0:?}")]
    UnknownSpace(String),
    /// The key has too many or too few segments for its space.
    #[error("wrong number of segments in {0:?}")]
    WrongShape(String),
}

/// One validated path segment (a node, instance, namespace or service name): non-empty, at
/// most [`MAX_SEGMENT_LEN`] bytes of `[A-Za-z0-9._:@*-]`, so it can never contain `/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Segment(String);

impl Segment {
    /// The segment as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Segment {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        if s.is_empty() {
            return Err(KeyError::EmptySegment(s.to_owned()));
        }
        if s.len() > MAX_SEGMENT_LEN {
            return Err(KeyError::SegmentTooLong(s.to_owned()));
        }
        if let Some(c) = s.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-' | '*'))
        }) {
            return Err(KeyError::InvalidChar(s.to_owned(), c));
        }
        Ok(Segment(s.to_owned()))
    }
}

impl TryFrom<String> for Segment {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        s.parse()
    }
}

impl From<Segment> for String {
    fn from(s: Segment) -> String {
        s.0
    }
}

impl TryFrom<&crate::membership::NodeName> for Segment {
    type Error = KeyError;
    /// Converts a membership node name (always a valid segment today) for catalog lookups.
    fn try_from(name: &crate::membership::NodeName) -> Result<Self, KeyError> {
        name.as_str().parse()
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Name of a node (agent) or of an operator: the origin of entries.
pub type NodeName = Segment;

/// A key of the replicated state. Its text form is `<space>/<segment>/...`. Keys order by
/// space (in the alphabetical order of the space names), then by segments: the iteration order
/// of the state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Key {
    /// `ca/bundle`: the trust bundle (roots); operator-signed.
    CaBundle,
    /// `catalog/<node>/<instance>`: one service instance; written only by agent `<node>`.
    Catalog {
        /// The agent that runs the instance.
        node: NodeName,
        /// The instance id, unique on that node.
        instance: Segment,
    },
    /// `certs/<node>`: the certificate chain of agent `<node>`, so that its other entries can
    /// reference their signer by fingerprint; signed by that agent (chain embedded).
    Certs(NodeName),
    /// `intentions/<namespace>/<destination>`: the intentions of one destination service;
    /// operator-signed.
    Intentions {
        /// Namespace of the destination service.
        namespace: Segment,
        /// Destination service name.
        destination: Segment,
    },
    /// `keyring/<name>`: a keyring change (install, use, remove); operator-signed.
    Keyring(Segment),
    /// `revoked/<node>`: revocation of an agent's intermediate; operator-signed.
    Revoked(NodeName),
    /// `traffic/<node>`: the per-service-pair traffic summary agent `<node>` counted as a
    /// destination (what the web UI draws mesh-wide); written only by that agent.
    Traffic(NodeName),
    /// `traffic/<node>/rest`: the pairs of that agent's traffic summary beyond what fits one
    /// gossip broadcast (carried by anti-entropy); written only by that agent.
    TrafficRest(NodeName),
}

impl Key {
    /// The node that owns the key, for keys written by an agent (`catalog/`, `certs/`);
    /// `None` for operator keys.
    pub fn owner_node(&self) -> Option<&NodeName> {
        match self {
            Key::Catalog { node, .. }
            | Key::Certs(node)
            | Key::Traffic(node)
            | Key::TrafficRest(node) => Some(node),
            _ => None,
        }
    }

    /// Whether only an operator may write this key.
    pub fn is_operator_key(&self) -> bool {
        self.owner_node().is_none()
    }

    /// Order in which a batch of entries is applied: the trust bundle, then revocations, then
    /// agent certificates, then everything else, so that entries can be verified with trust
    /// material from the same batch.
    pub fn apply_rank(&self) -> u8 {
        match self {
            Key::CaBundle => 0,
            Key::Revoked(_) => 1,
            Key::Certs(_) => 2,
            _ => 3,
        }
    }

    /// Stable 64-bit hash of the key's text (FNV-1a), identical on every platform and build.
    pub fn stable_hash(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.to_string().bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Catalog { node, instance } => write!(f, "catalog/{node}/{instance}"),
            Key::Intentions {
                namespace,
                destination,
            } => write!(f, "intentions/{namespace}/{destination}"),
            Key::CaBundle => f.write_str("ca/bundle"),
            Key::Keyring(name) => write!(f, "keyring/{name}"),
            Key::Revoked(node) => write!(f, "revoked/{node}"),
            Key::Certs(node) => write!(f, "certs/{node}"),
            Key::Traffic(node) => write!(f, "traffic/{node}"),
            Key::TrafficRest(node) => write!(f, "traffic/{node}/rest"),
        }
    }
}

impl FromStr for Key {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let parts: Vec<&str> = s.split('/').collect();
        let shape = || KeyError::WrongShape(s.to_owned());
        let seg = |p: &str| p.parse::<Segment>();
        match parts.as_slice() {
            ["catalog", node, instance] => Ok(Key::Catalog {
                node: seg(node)?,
                instance: seg(instance)?,
            }),
            ["intentions", ns, dest] => Ok(Key::Intentions {
                namespace: seg(ns)?,
                destination: seg(dest)?,
            }),
            ["ca", "bundle"] => Ok(Key::CaBundle),
            ["keyring", name] => Ok(Key::Keyring(seg(name)?)),
            ["revoked", node] => Ok(Key::Revoked(seg(node)?)),
            ["certs", node] => Ok(Key::Certs(seg(node)?)),
            ["traffic", node] => Ok(Key::Traffic(seg(node)?)),
            ["traffic", node, "rest"] => Ok(Key::TrafficRest(seg(node)?)),
            [
                "catalog" | "intentions" | "ca" | "keyring" | "revoked" | "certs" | "traffic",
                ..,
            ] => Err(shape()),
            _ => Err(KeyError::UnknownSpace(s.to_owned())),
        }
    }
}

impl TryFrom<String> for Key {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        s.parse()
    }
}

impl From<Key> for String {
    fn from(k: Key) -> String {
        k.to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_text() {
        for text in [
            "catalog/node-1/web-8080",
            "intentions/default/db",
            "ca/bundle",
            "keyring/primary",
            "revoked/node-9",
            "certs/node-1",
            "traffic/node-1",
            "traffic/node-1/rest",
            "intentions/default/*",
        ] {
            let key: Key = text.parse().unwrap();
            assert_eq!(key.to_string(), text);
        }
    }

    #[test]
    fn malformed_keys_give_typed_errors() {
        let cases: &[(&str, KeyError)] = &[
            ("catalog/n1", KeyError::WrongShape("catalog/n1".into())),
            (
                "catalog/n1/a/b",
                KeyError::WrongShape("catalog/n1/a/b".into()),
            ),
            ("catalog//a", KeyError::EmptySegment(String::new())),
            ("ca/other", KeyError::WrongShape("ca/other".into())),
            ("traffic/a/b", KeyError::WrongShape("traffic/a/b".into())),
            (
                "traffic/a/rest/x",
                KeyError::WrongShape("traffic/a/rest/x".into()),
            ),
            ("nope/x", KeyError::UnknownSpace("nope/x".into())),
            ("revoked/a b", KeyError::InvalidChar("a b".into(), ' ')),
        ];
        for (text, want) in cases {
            assert_eq!(&text.parse::<Key>().unwrap_err(), want, "{text}");
        }
        let long = format!("certs/{}", "a".repeat(MAX_SEGMENT_LEN + 1));
        assert!(matches!(
            long.parse::<Key>(),
            Err(KeyError::SegmentTooLong(_))
        ));
    }

    #[test]
    fn membership_names_convert_to_segments() {
        let name: crate::membership::NodeName = "node-7.dc1".parse().unwrap();
        let seg = Segment::try_from(&name).unwrap();
        assert_eq!(seg.as_str(), "node-7.dc1");
    }

    #[test]
    fn owners_and_order() {
        let c: Key = "catalog/n1/web".parse().unwrap();
        assert_eq!(c.owner_node().map(Segment::as_str), Some("n1"));
        assert!(!c.is_operator_key());
        assert!(Key::CaBundle.is_operator_key());
        let mut keys: Vec<Key> = ["revoked/a", "ca/bundle", "catalog/b/x", "catalog/a/y"]
            .iter()
            .map(|k| k.parse().unwrap())
            .collect();
        keys.sort();
        let texts: Vec<String> = keys.iter().map(Key::to_string).collect();
        assert_eq!(
            texts,
            ["ca/bundle", "catalog/a/y", "catalog/b/x", "revoked/a"]
        );
        assert_ne!(c.stable_hash(), Key::CaBundle.stable_hash());
        assert_eq!(c.stable_hash(), c.clone().stable_hash());
    }
}
