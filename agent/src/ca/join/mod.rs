//! The join protocol: how an agent obtains (and later renews) its intermediate CA from a
//! signer agent, over TLS 1.3 on the signer's TCP data port with ALPN `rhizome-join/1`.
//!
//! Wire: each side sends one frame, a 4-byte big-endian length then a JSON [`Request`] or
//! [`Response`] (at most 64 KiB). The signer presents its agent leaf chain followed by the
//! root; a joiner pins that root by the fingerprint in its token (it has no bundle yet) and
//! sends no client certificate; a renewing agent verifies the signer against its bundle and
//! proves itself with its agent leaf as TLS client certificate.
//!
//! Where signers are: `ca { signer_addrs = ["host:port"] }` (their data ports) when set;
//! otherwise each `retry_join` gossip address with the port shifted by this agent's own
//! `ports.data - ports.gossip` (1 with the defaults 7946/7947), i.e. signers are assumed to
//! lay out their ports like this agent.
//!
//! This file holds the wire (messages and frames); [`signer`] the signer's policy and its
//! TLS service; [`client`] the joining and renewing side.

mod client;
mod signer;

pub use client::{check_issued, join_mesh, renew_intermediate, signer_targets};
pub use signer::{JoinService, Signer};

use futures::{SinkExt as _, StreamExt as _};
use rhizome_ca::TokenError;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec, LengthDelimitedCodecError};

/// ALPN protocol id of join and renewal requests on the data port.
pub const JOIN_ALPN: &[u8] = b"rhizome-join/1";
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;
/// How long one exchange (connect, handshake, request, answer) may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a joiner keeps retrying unreachable signers before giving up.
pub const JOIN_PATIENCE: Duration = Duration::from_secs(60);

/// What a client asks a signer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// A new agent: a join token, its node name and a CSR for its intermediate's key.
    Join {
        /// Node name to bind the intermediate to.
        node: String,
        /// Token from `rhizome ca token create`.
        token: String,
        /// PEM CSR (only its key is used).
        csr: String,
    },
    /// An agent renewing its intermediate; authenticated by its TLS client certificate.
    Renew {
        /// PEM CSR for the new intermediate's key.
        csr: String,
    },
}

/// A signer's answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The new intermediate chain (intermediate, then any cross certificate) and the trust
    /// bundle, both PEM.
    Issued {
        /// `agent.pem` contents.
        chain: String,
        /// `bundle.pem` contents.
        bundle: String,
    },
    /// Refused, with the reason the client prints.
    Refused {
        /// Why, for the person reading the joiner's log.
        reason: String,
    },
}

/// Why a signer refused a request. All but `Internal` are the requester's fault; a refusal
/// changes no state except a consumed token use (counted before signing).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The token is malformed, altered, expired, for another root or another node.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token's use limit is reached.
    #[error("join token {id} is used up ({max} use(s) allowed)")]
    UsedUp {
        /// Token id.
        id: String,
        /// Its limit.
        max: u32,
    },
    /// The node name is not a valid name.
    #[error("invalid node name: {0}")]
    Node(#[from] rhizome_ca::IdError),
    /// A renewal without a valid agent client certificate.
    #[error("renewal needs the agent's current certificate as TLS client certificate")]
    NotAnAgent,
    /// The CSR is unusable.
    #[error(transparent)]
    Issue(#[from] rhizome_ca::IssueError),
    /// The node, or a certificate of the renewing chain, is revoked by an operator.
    #[error("refused: {0} (an operator revoked it; `rhizome ca revocations` lists why)")]
    Revoked(#[from] rhizome_ca::Revoked),
    /// The signer's store failed (the signer's fault).
    #[error("signer store error: {0}")]
    Internal(String),
}

/// The join protocol's framing: a big-endian `u32` length, then that many bytes, at most
/// [`MAX_FRAME`] (`tokio-util`'s length-delimited codec; the same bytes as before it).
fn frames() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Writes one length-prefixed JSON frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(msg)?;
    anyhow::ensure!(body.len() <= MAX_FRAME, "frame too large");
    // `send` flushes.
    FramedWrite::new(w, frames())
        .send(bytes::Bytes::from(body))
        .await?;
    Ok(())
}

/// Reads one length-prefixed JSON frame (refusing frames above [`MAX_FRAME`]). Each side
/// of an exchange sends one frame and then waits, so nothing after the frame is read.
pub async fn read_frame<R: AsyncRead + Unpin, T: serde::de::DeserializeOwned>(
    r: &mut R,
) -> anyhow::Result<T> {
    let body = match FramedRead::new(r, frames()).next().await {
        Some(Ok(body)) => body,
        Some(Err(e))
            if e.get_ref()
                .is_some_and(|e| e.is::<LengthDelimitedCodecError>()) =>
        {
            anyhow::bail!("frame exceeds {MAX_FRAME} bytes")
        }
        Some(Err(e)) => return Err(e.into()),
        None => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
    };
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ca::identity::Identity;
    use crate::config::AgentConfig;
    use crate::store::Store;
    use rhizome_ca::{AgentCa, NodeName, RootCa, TrustBundle};
    use std::sync::Arc;
    use time::OffsetDateTime;
    use tokio::io::AsyncWriteExt as _;

    #[test]
    fn signer_targets_follow_the_port_layout() {
        let mut cfg = AgentConfig::dev("n1", "/tmp/x".into());
        cfg.retry_join = vec!["10.0.0.1:7946".into(), "h:28000".into(), "bad".into()];
        cfg.ports.gossip = 7946;
        cfg.ports.data = 7947;
        assert_eq!(signer_targets(&cfg), ["10.0.0.1:7947", "h:28001"]);
        cfg.ports.gossip = 28001;
        cfg.ports.data = 29001;
        assert_eq!(signer_targets(&cfg), ["10.0.0.1:8946", "h:29000"]);
        cfg.ca.signer_addrs = vec!["s:1".into()];
        assert_eq!(signer_targets(&cfg), ["s:1"]);
    }

    #[test]
    fn signer_refuses_anonymous_renewals_and_other_roots_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let td: rhizome_ca::TrustDomain = "s.test".parse().unwrap();
        let root = RootCa::generate(td.clone(), now, time::Duration::days(1)).unwrap();
        let node: NodeName = "signer".parse().unwrap();
        let agent = root
            .issue_agent(&node, None, now, time::Duration::days(1))
            .unwrap();
        let bundle = TrustBundle::new(vec![root.cert().clone()]).unwrap();
        let cfg = AgentConfig::dev("signer", dir.path().to_path_buf());
        let identity = Arc::new(Identity::from_credentials(&cfg, agent, bundle).unwrap());
        let other = RootCa::generate(td.clone(), now, time::Duration::days(1)).unwrap();
        let signer = Signer::new(root, identity, store, time::Duration::days(1));
        let (csr, _) = AgentCa::new_csr(&td, &"j".parse().unwrap()).unwrap();

        let anonymous = signer.decide(Request::Renew { csr: csr.0.clone() }, None, now);
        assert!(
            matches!(anonymous, Err(Refusal::NotAnAgent)),
            "{anonymous:?}"
        );

        let claims = rhizome_ca::Claims {
            id: rhizome_ca::TokenId::random().unwrap(),
            expires: now + time::Duration::hours(1),
            node_pattern: "*".parse().unwrap(),
            services: None,
            root: other.fingerprint(),
            max_uses: None,
        };
        let token = claims.sign(&other).unwrap();
        let join = Request::Join {
            node: "j".into(),
            token,
            csr: csr.0,
        };
        let refused = signer.decide(join, None, now).unwrap_err();
        assert!(
            matches!(refused, Refusal::Token(TokenError::WrongRoot { .. })),
            "{refused}"
        );
    }

    /// A join token of `root` for any node, valid for an hour from `now`.
    fn any_node_token(root: &RootCa, now: OffsetDateTime) -> String {
        rhizome_ca::Claims {
            id: rhizome_ca::TokenId::random().unwrap(),
            expires: now + time::Duration::hours(1),
            node_pattern: "*".parse().unwrap(),
            services: None,
            root: root.fingerprint(),
            max_uses: None,
        }
        .sign(root)
        .unwrap()
    }

    #[test]
    fn signer_refuses_joins_and_renewals_of_revoked_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let td: rhizome_ca::TrustDomain = "s.test".parse().unwrap();
        let root = RootCa::generate(td.clone(), now, time::Duration::days(1)).unwrap();
        let signer_ca = root
            .issue_agent(
                &"signer".parse().unwrap(),
                None,
                now,
                time::Duration::days(1),
            )
            .unwrap();
        let renewing = root
            .issue_agent(&"r".parse().unwrap(), None, now, time::Duration::days(1))
            .unwrap()
            .issue_agent_leaf(now, time::Duration::hours(1))
            .unwrap();
        let token = any_node_token(&root, now);
        let bundle = TrustBundle::new(vec![root.cert().clone()]).unwrap();
        let cfg = AgentConfig::dev("signer", dir.path().to_path_buf());
        let identity = Arc::new(Identity::from_credentials(&cfg, signer_ca, bundle).unwrap());
        let signer = Signer::new(root, identity.clone(), store, time::Duration::days(1));
        let join = |node: &str| {
            let (csr, _) = AgentCa::new_csr(&td, &node.parse().unwrap()).unwrap();
            Request::Join {
                node: node.into(),
                token: token.clone(),
                csr: csr.0,
            }
        };
        let (csr, _) = AgentCa::new_csr(&td, &"r".parse().unwrap()).unwrap();
        let renew = || Request::Renew { csr: csr.0.clone() };
        let peer = renewing.chain().to_vec();
        assert!(signer.decide(join("j"), None, now).is_ok());
        assert!(signer.decide(renew(), Some(&peer), now).is_ok());

        let mut revoked = rhizome_ca::RevocationSet::new();
        for node in ["j", "r"] {
            revoked.insert(
                rhizome_ca::Revocation::new(Some(node.parse().unwrap()), None, "", 1).unwrap(),
            );
        }
        identity.bundle().set_revocations(revoked);
        let refused = signer.decide(join("j"), None, now).unwrap_err();
        assert!(matches!(refused, Refusal::Revoked(_)), "{refused}");
        let refused = signer.decide(renew(), Some(&peer), now).unwrap_err();
        assert!(matches!(refused, Refusal::Revoked(_)), "{refused}");
        assert!(
            signer.decide(join("k"), None, now).is_ok(),
            "others still join"
        );
        let counted = identity
            .refusals()
            .get(crate::ca::refusals::Point::Signer, "revoked");
        assert_eq!(counted, 2);
    }

    #[tokio::test]
    async fn unreachable_signers_are_retried_then_reported() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let now = OffsetDateTime::now_utc();
        let root =
            RootCa::generate("u.test".parse().unwrap(), now, time::Duration::days(1)).unwrap();
        let token = any_node_token(&root, now);
        let mut cfg = AgentConfig::dev("n1", "/tmp/x".into());
        cfg.ca.signer_addrs = vec![addr.to_string()];
        let err = join_mesh(&cfg, &token, Duration::from_millis(500))
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("could not reach any signer"), "{text}");
        assert!(
            text.contains(&format!("connecting to signer {addr}")),
            "{text}"
        );
    }

    #[test]
    fn requests_are_parsed_strictly() {
        let ok: Request = serde_json::from_str(r#"{"op":"renew","csr":"c"}"#).unwrap();
        assert_eq!(ok, Request::Renew { csr: "c".into() });
        for bad in [
            r#"{"op":"renew","csr":"c","extra":1}"#,
            r#"{"op":"steal","csr":"c"}"#,
            r#"{"op":"join","node":"n","csr":"c"}"#,
            r#"{"csr":"c"}"#,
            "[]",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
        let answer: Response =
            serde_json::from_str(r#"{"refused":{"reason":"join token expired"}}"#).unwrap();
        assert_eq!(
            answer,
            Response::Refused {
                reason: "join token expired".into()
            }
        );
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let req = Request::Renew { csr: "x".into() };
        write_frame(&mut a, &req).await.unwrap();
        let back: Request = read_frame(&mut b).await.unwrap();
        assert_eq!(back, req);
        a.write_all(&(u32::try_from(MAX_FRAME).unwrap() + 1).to_be_bytes())
            .await
            .unwrap();
        let err = read_frame::<_, Request>(&mut b).await.unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
