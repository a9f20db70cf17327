//! Join tokens: what lets a new agent obtain its intermediate from a signer.
//!
//! A token is `rhz1.<base64url(JSON claims)>.<base64url(signature)>`, one copy-pastable
//! string. The signature is ECDSA P-256 SHA-256 by the ROOT key over `rhz1.<payload>`, so
//! nobody can alter the claims (expiry, node-name pattern, services, root fingerprint, use
//! limit). The joiner pins the root by the fingerprint inside, as kubeadm does. Counting
//! uses is the signer agent's job (it has the store): it keys the count by [`TokenId`].

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::id::{IdError, NodeName, ServiceName};
use crate::key::{self, KeyError};
use crate::root::{Fingerprint, RootCa, decode_hex};

const PREFIX: &str = "rhz1";

/// Why a token was refused. Always the token holder's fault (or an attacker's); checking a
/// token changes no state. The agent prints these to the joiner as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a `rhz1.<payload>.<signature>` string, or the claims do not parse.
    #[error("malformed join token: {0}")]
    Malformed(String),
    /// The signature does not match: the token was altered or not made by this root.
    #[error("join token signature is invalid (altered token?)")]
    BadSignature,
    /// The token names another root than the one it is checked against.
    #[error("join token is for root {token}, not {ours}")]
    WrongRoot {
        /// Fingerprint in the token.
        token: Fingerprint,
        /// Fingerprint of the root checked against.
        ours: Fingerprint,
    },
    /// The token's expiry has passed.
    #[error("join token expired at {0}")]
    Expired(OffsetDateTime),
    /// The joining node's name does not match the token's pattern.
    #[error("node {node} does not match the token's pattern {pattern}")]
    PatternMismatch {
        /// The joining node.
        node: NodeName,
        /// The pattern in the token.
        pattern: NodePattern,
    },
    /// The token could not be signed (key failure on the signer's side).
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A node-name glob: `*` matches any run of characters (dots included), `?` exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodePattern(String);

impl NodePattern {
    /// Whether `node` matches the pattern.
    pub fn matches(&self, node: &NodeName) -> bool {
        glob_match(self.0.as_bytes(), node.as_str().as_bytes())
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodePattern {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.*?".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Name {
                what: "node pattern",
                value: s.to_owned(),
                rule: "[a-z0-9.-] with * and ?",
            })
        }
    }
}

impl fmt::Display for NodePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Glob matching with `*` and `?`, linear backtracking on the last `*`.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                last_star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match last_star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    last_star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A token's identifier (16 random bytes), the key of the signer's use counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId(pub [u8; 16]);

impl TokenId {
    /// A fresh random id from the system random generator.
    pub fn random() -> Result<Self, KeyError> {
        let mut b = [0u8; 16];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| KeyError::Random)?;
        Ok(Self(b))
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// What a join token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Identifier, for counting uses.
    pub id: TokenId,
    /// The token is refused from this instant on.
    pub expires: OffsetDateTime,
    /// Node names that may join with it.
    pub node_pattern: NodePattern,
    /// Services the joined agent's intermediate may issue for (None: any).
    pub services: Option<Vec<ServiceName>>,
    /// The root that signed it; the joiner pins this root.
    pub root: Fingerprint,
    /// How many joins it allows (None: unlimited until expiry); enforced by the signer.
    pub max_uses: Option<u32>,
}

/// Wire form of the claims (version 1).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    id: String,
    exp: i64,
    node: String,
    svc: Option<Vec<String>>,
    root: String,
    uses: Option<u32>,
}

impl Claims {
    /// Encodes and signs the claims with `root`'s key; `self.root` should be
    /// `root.fingerprint()` (the verifier rejects the token otherwise).
    pub fn sign(&self, root: &RootCa) -> Result<String, TokenError> {
        let wire = Wire {
            id: self.id.to_string(),
            exp: self.expires.unix_timestamp(),
            node: self.node_pattern.to_string(),
            svc: self
                .services
                .as_ref()
                .map(|v| v.iter().map(ToString::to_string).collect()),
            root: self.root.to_string(),
            uses: self.max_uses,
        };
        let json = serde_json::to_vec(&wire).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let signed = format!("{PREFIX}.{}", B64.encode(json));
        let sig = key::sign(root.key(), signed.as_bytes())?;
        Ok(format!("{signed}.{}", B64.encode(sig)))
    }
}

/// Reads a token's claims WITHOUT checking anything: for the joiner to learn which root to
/// pin before it has that root. Never authorise from this alone.
pub fn peek_claims(token: &str) -> Result<Claims, TokenError> {
    let (_, payload, _) = split(token)?;
    decode_claims(&payload)
}

/// Checks a token against the root certificate it claims, at `now`, for the joining `node`;
/// returns its claims. The signer still has to enforce `max_uses`.
pub fn verify_token(
    token: &str,
    root_cert: &CertificateDer<'_>,
    now: OffsetDateTime,
    node: &NodeName,
) -> Result<Claims, TokenError> {
    let (signed, payload, sig) = split(token)?;
    let claims = decode_claims(&payload)?;
    let ours = Fingerprint::of(root_cert);
    if claims.root != ours {
        return Err(TokenError::WrongRoot {
            token: claims.root,
            ours,
        });
    }
    key::verify_signature(root_cert, signed.as_bytes(), &sig)
        .map_err(|_| TokenError::BadSignature)?;
    if now >= claims.expires {
        return Err(TokenError::Expired(claims.expires));
    }
    if !claims.node_pattern.matches(node) {
        return Err(TokenError::PatternMismatch {
            node: node.clone(),
            pattern: claims.node_pattern,
        });
    }
    Ok(claims)
}

/// Splits into (signed text, decoded payload, decoded signature).
fn split(token: &str) -> Result<(&str, Vec<u8>, Vec<u8>), TokenError> {
    let token = token.trim();
    let bad = |why: &str| TokenError::Malformed(why.to_owned());
    let (signed, sig) = token
        .rsplit_once('.')
        .ok_or_else(|| bad("missing signature"))?;
    let (prefix, payload) = signed
        .split_once('.')
        .ok_or_else(|| bad("missing payload"))?;
    if prefix != PREFIX {
        return Err(bad("unknown token version (expected rhz1)"));
    }
    let payload = B64
        .decode(payload)
        .map_err(|_| bad("payload is not base64url"))?;
    let sig = B64
        .decode(sig)
        .map_err(|_| bad("signature is not base64url"))?;
    Ok((signed, payload, sig))
}

fn decode_claims(payload: &[u8]) -> Result<Claims, TokenError> {
    let bad = |e: String| TokenError::Malformed(e);
    let w: Wire = serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?;
    let id = decode_hex(&w.id).ok_or_else(|| bad("bad token id".to_owned()))?;
    let services = w
        .svc
        .map(|v| {
            v.iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<ServiceName>, _>>()
        })
        .transpose()
        .map_err(|e| bad(e.to_string()))?;
    Ok(Claims {
        id: TokenId(id),
        expires: OffsetDateTime::from_unix_timestamp(w.exp).map_err(|e| bad(e.to_string()))?,
        node_pattern: w.node.parse().map_err(|e: IdError| bad(e.to_string()))?,
        services,
        root: w
            .root
            .parse()
            .map_err(|_| bad("bad root fingerprint".to_owned()))?,
        max_uses: w.uses,
    })
}

#[cfg(test)]
mod tests;
