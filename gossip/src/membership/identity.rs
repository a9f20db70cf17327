//! Node identities as foca sees them: a validated node name, the gossip address and a
//! per-process generation so that a restarted (or renewed) process is a new identity.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted node name, in bytes.
pub const MAX_NODE_NAME: usize = 128;

/// A node name: 1 to 128 ASCII letters, digits, `-`, `_` or `.`. Cheap to clone (shared).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(Arc<str>);

impl NodeName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a node name was refused. The operator's fault (config) or the peer's (wire data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    /// Empty or longer than 128 bytes.
    #[error("node name must be 1 to {MAX_NODE_NAME} bytes long")]
    Length,
    /// Contains a character outside `[A-Za-z0-9._-]`.
    #[error("node name may only contain letters, digits, '-', '_' and '.'")]
    Character,
}

impl FromStr for NodeName {
    type Err = NodeNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_NODE_NAME {
            return Err(NodeNameError::Length);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(NodeNameError::Character);
        }
        Ok(Self(Arc::from(s)))
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl Serialize for NodeName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <&str>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Process generation of an identity. The agent starts each process with a value higher than
/// any it used before (e.g. a persisted counter plus one, or the start time in milliseconds);
/// foca's auto-rejoin adds one. The higher generation wins when two identities share an
/// address, so peers never confuse an old process with its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Generation(pub u64);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A cluster member's identity: name, gossip address and generation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// The node's unique name.
    pub name: NodeName,
    /// Where its gossip socket listens (also the identity's unique address for foca).
    pub addr: SocketAddr,
    /// Process generation; see [`Generation`].
    pub generation: Generation,
}

impl NodeId {
    /// Builds an identity.
    pub fn new(name: NodeName, addr: SocketAddr, generation: Generation) -> Self {
        Self {
            name,
            addr,
            generation,
        }
    }

    /// A placeholder identity used only to announce to an address whose node is unknown yet
    /// (foca accepts an announce addressed to any identity with the right address).
    pub(crate) fn placeholder(addr: SocketAddr) -> Self {
        Self {
            name: NodeName(Arc::from("unknown")),
            addr,
            generation: Generation(0),
        }
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            name: self.name.clone(),
            addr: self.addr,
            generation: Generation(self.generation.0.checked_add(1)?),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, &self.name) > (adversary.generation, &adversary.name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use foca::Identity as _;

    #[test]
    fn names_are_validated() {
        assert!("node-1.example_a".parse::<NodeName>().is_ok());
        assert_eq!("".parse::<NodeName>(), Err(NodeNameError::Length));
        assert_eq!("a b".parse::<NodeName>(), Err(NodeNameError::Character));
        let long = "a".repeat(MAX_NODE_NAME + 1);
        assert_eq!(long.parse::<NodeName>(), Err(NodeNameError::Length));
        let bad: Result<NodeName, _> = postcard::from_bytes(&postcard::to_allocvec("x/y").unwrap());
        assert!(bad.is_err());
    }

    #[test]
    fn renewed_identity_wins_the_address() {
        let id = NodeId::new(
            "a".parse().unwrap(),
            "127.0.0.1:1".parse().unwrap(),
            Generation(5),
        );
        let next = id.renew().unwrap();
        assert_eq!(next.generation, Generation(6));
        assert!(next.win_addr_conflict(&id));
        assert!(!id.win_addr_conflict(&next));
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert_eq!(postcard::from_bytes::<NodeId>(&bytes).unwrap(), id);
    }
}
