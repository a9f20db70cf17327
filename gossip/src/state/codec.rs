//! Wire and storage encoding: a version byte, a kind byte, then postcard. Postcard is not
//! self-describing, so the header lets a future format coexist and makes a message of one kind
//! fed to the decoder of another fail cleanly.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::entry::Entry;

/// Current wire format version.
pub const WIRE_VERSION: u8 = 1;

/// What a byte string holds; the second header byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// One [`Entry`] (broadcast item, stored record, or sync payload element).
    Entry = 1,
    /// One anti-entropy message ([`crate::sync::SyncMessage`]).
    Sync = 2,
}

/// Why bytes could not be decoded. The sender (or the storage) is at fault; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than the two header bytes.
    #[error("truncated header")]
    Truncated,
    /// A version this build does not speak.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// The kind byte names another kind of message.
    #[error("unexpected kind {found}, expected {expected}")]
    WrongKind {
        /// Kind the caller expected.
        expected: u8,
        /// Kind found in the header.
        found: u8,
    },
    /// The body is not a valid postcard encoding (including invalid keys or names).
    #[error("malformed body: {0}")]
    Malformed(String),
    /// Bytes remain after the body.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

/// Encodes a value with the header of `kind`.
pub(crate) fn encode<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION, kind as u8];
    // Encoding our own in-memory types into a Vec cannot fail (no maps with non-string keys,
    // no unsized sequences); should it ever, the empty body decodes as Malformed on the peer.
    if let Ok(body) = postcard::to_stdvec(value) {
        out.extend_from_slice(&body);
    }
    out
}

/// Decodes a value of `kind`, rejecting other versions, other kinds and trailing bytes.
pub(crate) fn decode<T: DeserializeOwned>(kind: Kind, bytes: &[u8]) -> Result<T, DecodeError> {
    let [version, found, body @ ..] = bytes else {
        return Err(DecodeError::Truncated);
    };
    if *version != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion(*version));
    }
    if *found != kind as u8 {
        return Err(DecodeError::WrongKind {
            expected: kind as u8,
            found: *found,
        });
    }
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

impl Entry {
    /// Encodes the entry for a broadcast, a sync message or the agent's store.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(Kind::Entry, self)
    }

    /// Decodes an entry encoded by [`Entry::to_bytes`]. It does not verify the signature:
    /// [`super::State::apply`] and [`super::State::load`] do, through the authority.
    pub fn from_bytes(bytes: &[u8]) -> Result<Entry, DecodeError> {
        decode(Kind::Entry, bytes)
    }
}
