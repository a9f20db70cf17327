//! Read-only facts about a certificate, for `rhizome ca status`, the HTTP API and the
//! seconds-to-expiry metric; plus the small parsing helpers the rest of the crate shares.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::extension;
use crate::id::{NodeName, ServiceName, SpiffeId, TrustDomain};
use crate::renewal;

/// Why a certificate could not be described (the fault of whoever supplied the bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    /// Not a parsable X.509 certificate.
    #[error("malformed certificate: {0}")]
    Malformed(String),
}

/// What the agent shows about each certificate it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The SPIFFE id of a leaf (None for signing certificates, whose id is `spiffe://<td>`,
    /// and for foreign certificates). Agent intermediates issued before X509-SVID 3.2 was
    /// enforced show their old `spiffe://<td>/agent/<node>` here.
    pub spiffe_id: Option<SpiffeId>,
    /// The trust domain, from the SPIFFE id or a signing certificate's `spiffe://<td>` URI.
    pub trust_domain: Option<TrustDomain>,
    /// The node an agent intermediate is bound to (its agent-node extension); `None` for
    /// every other certificate, and for a malformed extension.
    pub agent_node: Option<NodeName>,
    /// Whether it is a CA certificate (root, cross-signed root, agent intermediate).
    pub is_ca: bool,
    /// Subject DN, RFC 4514 style.
    pub subject: String,
    /// Issuer DN, RFC 4514 style.
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Services an agent intermediate may issue for (None: unrestricted or not an agent).
    pub allowed_services: Option<Vec<ServiceName>>,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, InfoError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| InfoError::Malformed(e.to_string()))?;
        let uris = spiffe_uris(&cert);
        let spiffe_id = match uris.as_slice() {
            [one] => one.parse::<SpiffeId>().ok(),
            _ => None,
        };
        let trust_domain = match (&spiffe_id, uris.as_slice()) {
            (Some(id), _) => Some(id.trust_domain().clone()),
            (None, [one]) => TrustDomain::from_id_uri(one).ok(),
            _ => None,
        };
        let (not_before, not_after) = validity(&cert)?;
        Ok(Self {
            spiffe_id,
            trust_domain,
            agent_node: crate::svid::agent_binding(&cert)
                .ok()
                .flatten()
                .map(|b| b.node),
            is_ca: cert.is_ca(),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before,
            not_after,
            allowed_services: allowed_services(&cert).ok().flatten(),
        })
    }

    /// Seconds until `not_after` (negative once expired).
    pub fn seconds_to_expiry(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_seconds()
    }

    /// Fraction of the lifetime used at `now` (0 at not_before, 1 at not_after; may leave
    /// [0, 1] outside the validity window). The agent warns above 0.9.
    pub fn fraction_of_life_used(&self, now: OffsetDateTime) -> f64 {
        renewal::fraction_of_life_used(self.not_before, self.not_after, now)
    }
}

/// Every URI SAN of the certificate that starts with `spiffe://`.
pub(crate) fn spiffe_uris(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with("spiffe://") => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

/// The allowed-services list: Ok(None) if absent, Err if present but malformed.
pub(crate) fn allowed_services(cert: &X509Certificate<'_>) -> Result<Option<Vec<ServiceName>>, ()> {
    match cert
        .extensions()
        .iter()
        .find(|e| extension::is_allowed_services_oid(&e.oid))
    {
        None => Ok(None),
        Some(ext) => extension::parse_allowed_services(ext.value)
            .map(Some)
            .ok_or(()),
    }
}

/// The validity window as `OffsetDateTime`s.
pub(crate) fn validity(
    cert: &X509Certificate<'_>,
) -> Result<(OffsetDateTime, OffsetDateTime), InfoError> {
    let v = cert.validity();
    let conv = |t: i64| {
        OffsetDateTime::from_unix_timestamp(t).map_err(|e| InfoError::Malformed(e.to_string()))
    };
    Ok((
        conv(v.not_before.timestamp())?,
        conv(v.not_after.timestamp())?,
    ))
}
