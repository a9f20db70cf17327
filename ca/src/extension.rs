//! The private extensions of agent intermediates: the node they are bound to, and the
//! services they may issue for.
//!
//! **Agent node.** X509-SVID 3.2 forbids a path in the SPIFFE ID of a signing certificate,
//! so an agent intermediate carries only `spiffe://<td>`; the node it belongs to (which our
//! verifier checks against the agent leaves it issues) rides in a private, non-critical
//! extension whose value is DER `UTF8String`: `1.3.6.1.4.1.32473.7.2`. Its subject common
//! name (`rhizome agent <node>`) repeats it for people; only the extension counts.
//!
//! **Allowed services.** An agent intermediate may be limited to issuing leaves for some services. X.509 URI name
//! constraints would be the textbook tool, but webpki fails closed on them, so the list rides
//! in a private, NON-critical extension that webpki ignores and our verifier enforces
//! ([`crate::verify_chain`]). Its value is DER `SEQUENCE OF UTF8String`.
//!
//! The OID sits under PEN 32473, which IANA reserves for examples and documentation
//! (RFC 5612), so it collides with no real vendor: `1.3.6.1.4.1.32473.7.1`.

use crate::id::{NodeName, ServiceName};

/// OID arcs of the allowed-services extension.
pub const ALLOWED_SERVICES_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 32473, 7, 1];

/// OID arcs of the agent-node extension.
pub const AGENT_NODE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 32473, 7, 2];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_UTF8: u8 = 0x0c;

/// Builds the (non-critical) extension carrying `services`.
pub(crate) fn allowed_services_extension(services: &[ServiceName]) -> rcgen::CustomExtension {
    let mut body = Vec::new();
    for s in services {
        write_tlv(&mut body, TAG_UTF8, s.as_str().as_bytes());
    }
    let mut der = Vec::new();
    write_tlv(&mut der, TAG_SEQUENCE, &body);
    let mut ext = rcgen::CustomExtension::from_oid_content(ALLOWED_SERVICES_OID, der);
    ext.set_criticality(false);
    ext
}

/// Decodes the extension value; `None` if it is not a well-formed list of service names.
pub(crate) fn parse_allowed_services(der: &[u8]) -> Option<Vec<ServiceName>> {
    let (tag, body, rest) = read_tlv(der)?;
    if tag != TAG_SEQUENCE || !rest.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut cur = body;
    while !cur.is_empty() {
        let (tag, value, rest) = read_tlv(cur)?;
        if tag != TAG_UTF8 {
            return None;
        }
        out.push(std::str::from_utf8(value).ok()?.parse().ok()?);
        cur = rest;
    }
    Some(out)
}

/// Whether an X.509 extension OID is the allowed-services one.
pub(crate) fn is_allowed_services_oid(oid: &x509_parser::oid_registry::Oid<'_>) -> bool {
    oid.iter()
        .is_some_and(|arcs| arcs.eq(ALLOWED_SERVICES_OID.iter().copied()))
}

/// Builds the (non-critical) extension binding an intermediate to `node`.
pub(crate) fn agent_node_extension(node: &NodeName) -> rcgen::CustomExtension {
    let mut der = Vec::new();
    write_tlv(&mut der, TAG_UTF8, node.as_str().as_bytes());
    let mut ext = rcgen::CustomExtension::from_oid_content(AGENT_NODE_OID, der);
    ext.set_criticality(false);
    ext
}

/// Decodes the agent-node extension value; `None` if it is not one well-formed node name.
pub(crate) fn parse_agent_node(der: &[u8]) -> Option<NodeName> {
    let (tag, value, rest) = read_tlv(der)?;
    if tag != TAG_UTF8 || !rest.is_empty() {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Whether an X.509 extension OID is the agent-node one.
pub(crate) fn is_agent_node_oid(oid: &x509_parser::oid_registry::Oid<'_>) -> bool {
    oid.iter()
        .is_some_and(|arcs| arcs.eq(AGENT_NODE_OID.iter().copied()))
}

fn write_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

/// Reads one definite-length TLV: (tag, value, remaining input).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len_bytes, tail) = rest.split_at(n);
        rest = tail;
        len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (value, tail) = rest.split_at(len);
    Some((tag, value, tail))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_short_and_long_lists() {
        for n in [0usize, 1, 3, 40] {
            let names: Vec<ServiceName> = (0..n)
                .map(|i| format!("service-number-{i}").parse().unwrap())
                .collect();
            let ext = allowed_services_extension(&names);
            assert!(!ext.criticality());
            assert_eq!(parse_allowed_services(ext.content()), Some(names));
        }
    }

    #[test]
    fn agent_node_round_trips_and_refuses_garbage() {
        let node: NodeName = "node-1.rack2".parse().unwrap();
        let ext = agent_node_extension(&node);
        assert!(!ext.criticality());
        assert_eq!(parse_agent_node(ext.content()), Some(node));
        let der = ext.content();
        assert_eq!(parse_agent_node(&der[..der.len() - 1]), None);
        assert_eq!(parse_agent_node(&[0x0c, 3, b'A', b'.', b'.']), None);
        assert_eq!(parse_agent_node(&[0x04, 1, b'a']), None);
    }

    #[test]
    fn rejects_truncated_and_wrong_tags() {
        let ext = allowed_services_extension(&["web".parse().unwrap()]);
        let der = ext.content();
        assert_eq!(parse_allowed_services(&der[..der.len() - 1]), None);
        let mut wrong = der.to_vec();
        wrong[2] = 0x04;
        assert_eq!(parse_allowed_services(&wrong), None);
    }
}
