//! The rules of the SPIFFE X509-SVID standard that X.509 path validation (webpki) does not
//! check, applied to a leaf and to each signing certificate of a verified path. Each refusal
//! is an [`SvidRule`] naming its section, so `rhizome ca verify` can say which rule a
//! certificate breaks.
//!
//! Checked here: one URI SAN (2), a leaf id with a path and a critical SAN when the subject
//! is empty (3.1), signing certificates' ids without a path (3.2), `cA` (4.1), key usage
//! present, critical, `digitalSignature` and neither `keyCertSign` nor `cRLSign` on leaves,
//! `keyCertSign` on signing certificates (4.3), both TLS EKUs on leaves when present (4.4).
//! The SPIFFE ID syntax itself is [`crate::id::split_spiffe_id`] (SPIFFE-ID 2).

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::extension;
use crate::id::{NodeName, ServiceName, TrustDomain};

/// A rule of X509-SVID a certificate breaks. Always the presenter's fault (or its issuer's);
/// nothing changes state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SvidRule {
    /// X509-SVID 2: an SVID carries exactly one URI SAN; validators reject more.
    #[error("X509-SVID 2: an SVID must contain exactly one URI SAN (found {0})")]
    UriSanCount(usize),
    /// X509-SVID 3.1 and 5.2: a leaf's SPIFFE ID has a non-root path.
    #[error("X509-SVID 3.1: a leaf SVID's SPIFFE ID must have a non-root path")]
    LeafIdWithoutPath,
    /// X509-SVID 3.1: without a subject, the SAN extension must be critical (RFC 5280
    /// 4.1.2.6).
    #[error("X509-SVID 3.1: a leaf SVID without a subject must mark its SAN extension critical")]
    SanNotCritical,
    /// X509-SVID 3.2: a signing certificate's SPIFFE ID has no path (`spiffe://<td>` only).
    #[error("X509-SVID 3.2: the SPIFFE ID of a signing certificate must not have a path")]
    SigningIdWithPath,
    /// X509-SVID 4.1 and 5.2: a leaf sets `cA` to false.
    #[error("X509-SVID 4.1: a leaf SVID must set cA to false")]
    LeafIsCa,
    /// X509-SVID 4.1: a signing certificate sets `cA` to true.
    #[error("X509-SVID 4.1: a signing certificate must set cA to true")]
    SigningNotCa,
    /// X509-SVID 4.3: every SVID has the key usage extension.
    #[error("X509-SVID 4.3: the key usage extension must be set on every SVID")]
    KeyUsageMissing,
    /// X509-SVID 4.3: the key usage extension is critical.
    #[error("X509-SVID 4.3: the key usage extension must be marked critical")]
    KeyUsageNotCritical,
    /// X509-SVID 4.3: signing certificates set `keyCertSign`.
    #[error("X509-SVID 4.3: a signing certificate must set keyCertSign")]
    SigningWithoutKeyCertSign,
    /// X509-SVID 4.3: leaves set `digitalSignature`.
    #[error("X509-SVID 4.3: a leaf SVID must set digitalSignature")]
    LeafWithoutDigitalSignature,
    /// X509-SVID 4.3 and 5.2: leaves do not set `keyCertSign`.
    #[error("X509-SVID 4.3: a leaf SVID must not set keyCertSign")]
    LeafKeyCertSign,
    /// X509-SVID 4.3 and 5.2: leaves do not set `cRLSign`.
    #[error("X509-SVID 4.3: a leaf SVID must not set cRLSign")]
    LeafCrlSign,
    /// X509-SVID 4.4: a leaf's extended key usage, when present, has both TLS purposes.
    #[error(
        "X509-SVID 4.4: a leaf SVID's extended key usage must include both id-kp-serverAuth \
         and id-kp-clientAuth"
    )]
    LeafEkuIncomplete,
}

/// Every URI SAN of the certificate, whatever its scheme (X509-SVID 2 allows exactly one,
/// a SPIFFE ID).
pub fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect()
}

/// Key usage bits we check: (critical, digitalSignature, keyCertSign, cRLSign).
fn key_usage(cert: &X509Certificate<'_>) -> Result<(bool, bool, bool, bool), SvidRule> {
    match cert.key_usage() {
        Ok(Some(ku)) => Ok((
            ku.critical,
            ku.value.digital_signature(),
            ku.value.key_cert_sign(),
            ku.value.crl_sign(),
        )),
        _ => Err(SvidRule::KeyUsageMissing),
    }
}

/// The X509-SVID rules of a leaf (everything but the SPIFFE ID's syntax, parsed after).
/// The leaf has exactly one URI SAN when this passes; the caller counts `spiffe://` ones
/// first, to report a missing or doubled SPIFFE ID as such.
pub(crate) fn check_leaf(cert: &X509Certificate<'_>) -> Result<(), SvidRule> {
    let uris = uri_sans(cert);
    if uris.len() != 1 {
        return Err(SvidRule::UriSanCount(uris.len()));
    }
    if uris
        .first()
        .is_some_and(|u| TrustDomain::from_id_uri(u).is_ok())
    {
        return Err(SvidRule::LeafIdWithoutPath);
    }
    let subject_empty = cert.subject().iter().next().is_none();
    let san_critical = matches!(cert.subject_alternative_name(), Ok(Some(san)) if san.critical);
    if subject_empty && !san_critical {
        return Err(SvidRule::SanNotCritical);
    }
    if cert.is_ca() {
        return Err(SvidRule::LeafIsCa);
    }
    let (critical, digital_signature, key_cert_sign, crl_sign) = key_usage(cert)?;
    if !critical {
        return Err(SvidRule::KeyUsageNotCritical);
    }
    if !digital_signature {
        return Err(SvidRule::LeafWithoutDigitalSignature);
    }
    if key_cert_sign {
        return Err(SvidRule::LeafKeyCertSign);
    }
    if crl_sign {
        return Err(SvidRule::LeafCrlSign);
    }
    if let Ok(Some(eku)) = cert.extended_key_usage()
        && !(eku.value.server_auth && eku.value.client_auth)
    {
        return Err(SvidRule::LeafEkuIncomplete);
    }
    Ok(())
}

/// The X509-SVID rules of a signing certificate that do not depend on its SPIFFE ID: `cA`
/// true, key usage present, critical, with `keyCertSign`. (`digitalSignature` is tolerated:
/// roots issued before these checks carry it, and X509-SVID's body text does not forbid it.)
pub(crate) fn check_signing(cert: &X509Certificate<'_>) -> Result<(), SvidRule> {
    if !cert.is_ca() {
        return Err(SvidRule::SigningNotCa);
    }
    let (critical, _, key_cert_sign, _) = key_usage(cert)?;
    if !critical {
        return Err(SvidRule::KeyUsageNotCritical);
    }
    if !key_cert_sign {
        return Err(SvidRule::SigningWithoutKeyCertSign);
    }
    Ok(())
}

/// What a well-formed agent intermediate says about itself beyond its `spiffe://<td>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentBinding {
    /// The node (agent-node extension).
    pub node: NodeName,
    /// The services it may issue for (`None`: any).
    pub allowed: Option<Vec<ServiceName>>,
}

/// Why a private extension of an intermediate could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindingError {
    /// The agent-node extension is not one node name.
    MalformedNode,
    /// The allowed-services extension is not a list of service names.
    MalformedServices,
}

/// The agent binding of a CA certificate: `Ok(None)` for roots and cross-signed roots (no
/// agent-node extension).
pub(crate) fn agent_binding(
    cert: &X509Certificate<'_>,
) -> Result<Option<AgentBinding>, BindingError> {
    let Some(ext) = cert
        .extensions()
        .iter()
        .find(|e| extension::is_agent_node_oid(&e.oid))
    else {
        return Ok(None);
    };
    let node = extension::parse_agent_node(ext.value).ok_or(BindingError::MalformedNode)?;
    let allowed =
        crate::info::allowed_services(cert).map_err(|()| BindingError::MalformedServices)?;
    Ok(Some(AgentBinding { node, allowed }))
}

/// [`check_signing`] on DER, for the roots of a trust bundle (which callers have parsed
/// already; bytes that do not parse report [`SvidRule::KeyUsageMissing`]).
pub(crate) fn check_signing_der(der: &[u8]) -> Result<(), SvidRule> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => check_signing(&cert),
        Err(_) => Err(SvidRule::KeyUsageMissing),
    }
}
