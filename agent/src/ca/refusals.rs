//! `rhizome_trust_refusals_total{point, reason}`: every chain, signature or entry this agent
//! refused on trust grounds, by where (handshakes in each direction, gossip entries, joins
//! and renewals at a signer, operator-signed submissions) and why (revoked, expired,
//! unknown issuer...). An operator who revoked a node watches `reason="revoked"` rise.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rhizome_ca::{RefusalHook, VerifyError};
use std::sync::Arc;

/// Where a refusal happened (the `point` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// A data-plane client's certificate (QUIC or TLS), checked by this agent as server.
    ProxyInbound,
    /// A data-plane server's certificate, checked by this agent as client.
    ProxyOutbound,
    /// A replicated entry's signer (agent or operator), from gossip or the store.
    Gossip,
    /// A join or an intermediate renewal at this signer.
    Signer,
}

impl Point {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Point::ProxyInbound => "proxy_inbound",
            Point::ProxyOutbound => "proxy_outbound",
            Point::Gossip => "gossip",
            Point::Signer => "signer",
        }
    }
}

/// Labels of `rhizome_trust_refusals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// [`Point::as_str`].
    pub point: String,
    /// [`reason`] of the refusal.
    pub reason: String,
}

/// The stable `reason` label of a chain refusal.
pub fn reason(e: &VerifyError) -> &'static str {
    match e {
        VerifyError::Revoked(_) => "revoked",
        VerifyError::Expired => "expired",
        VerifyError::NotYetValid => "not_yet_valid",
        VerifyError::UnknownIssuer | VerifyError::PinnedRootMissing => "unknown_issuer",
        VerifyError::BadSignature => "bad_signature",
        VerifyError::ForeignTrustDomain { .. } => "foreign_trust_domain",
        VerifyError::WrongKind { .. } | VerifyError::UnexpectedPeer { .. } => "wrong_identity",
        _ => "invalid_certificate",
    }
}

/// The counter family; cheap to clone, one per agent (held by the [`super::Identity`]).
#[derive(Clone, Debug, Default)]
pub struct TrustRefusals(Family<RefusalLabels, Counter>);

impl TrustRefusals {
    /// The family, to register once (as `trust_refusals`).
    pub fn family(&self) -> Family<RefusalLabels, Counter> {
        self.0.clone()
    }

    /// Counts one refusal.
    pub fn count(&self, point: Point, reason: &str) {
        self.0
            .get_or_create(&RefusalLabels {
                point: point.as_str().to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// How many refusals of `reason` at `point` so far.
    pub fn get(&self, point: Point, reason: &str) -> u64 {
        self.0
            .get_or_create(&RefusalLabels {
                point: point.as_str().to_string(),
                reason: reason.to_string(),
            })
            .get()
    }

    /// A hook for a TLS verifier at `point`.
    pub fn hook(&self, point: Point) -> RefusalHook {
        let me = self.clone();
        Arc::new(move |e: &VerifyError| me.count(point, reason(e)))
    }
}
