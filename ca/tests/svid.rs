//! The SPIFFE standards, rule by rule (X509-SVID and SPIFFE-ID, read from spiffe/spiffe
//! `standards/`): what our CA issues follows each, and for each a certificate breaking it is
//! refused by the verifier with that rule's error. `/work/notes/spiffe-checklist.md` maps
//! every rule to its test here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use rcgen::{CustomExtension, ExtendedKeyUsagePurpose as Eku, KeyUsagePurpose as Ku};
use rhizome_ca::{
    AgentCa, CertKind, IssueError, PrivateKey, SvidRule, TrustBundle, Usage, VerifyError,
    verify_chain, verify_chain_with,
};
use rustls_pki_types::CertificateDer;
use time::Duration;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

const TD: &str = "rhizome.local";
const TD_URI: &str = "spiffe://rhizome.local";
const WEB: &str = "spiffe://rhizome.local/ns/default/svc/web";

/// A mesh and one agent intermediate to sign forged leaves with.
fn setup() -> (Mesh, AgentCa, PrivateKey) {
    let mesh = Mesh::new(TD);
    let agent = mesh.agent("n1", None);
    let key = agent_key(&agent);
    (mesh, agent, key)
}

/// Verifies a forged workload leaf under the real agent `agent`.
fn verify_leaf(
    mesh: &Mesh,
    agent: &AgentCa,
    leaf: &CertificateDer<'_>,
) -> Result<rhizome_ca::SpiffeId, VerifyError> {
    verify_chain(&mesh.bundle, leaf, agent.chain(), now(), CertKind::Workload)
}

/// Asserts `err` is `rule` and that its message (what `rhizome ca verify` prints) names the
/// section `section`.
fn assert_rule(err: Result<rhizome_ca::SpiffeId, VerifyError>, rule: SvidRule, section: &str) {
    let err = err.unwrap_err();
    assert_eq!(err, VerifyError::Svid(rule));
    assert_eq!(err.rule(), Some(section));
    assert!(err.to_string().starts_with(section), "{err}");
}

/// A key usage extension (DER BIT STRING of one byte: 0x80 digitalSignature, 0x04
/// keyCertSign) with the given criticality.
fn key_usage_ext(critical: bool, bits: u8) -> CustomExtension {
    let unused = bits.trailing_zeros() as u8;
    let mut ext =
        CustomExtension::from_oid_content(&[2, 5, 29, 15], vec![0x03, 0x02, unused, bits]);
    ext.set_criticality(critical);
    ext
}

/// A subjectAltName extension holding one URI, non-critical.
fn san_ext_non_critical(uri: &str) -> CustomExtension {
    let mut inner = vec![0x86, uri.len() as u8];
    inner.extend_from_slice(uri.as_bytes());
    let mut der = vec![0x30, inner.len() as u8];
    der.extend(inner);
    let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 17], der);
    ext.set_criticality(false);
    ext
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

use rhizome_ca::svid::uri_sans as uris;

/// Everything rhizome issues, checked field by field against X509-SVID 2, 3.1, 3.2, 4.1,
/// 4.3, 4.4 and Appendix A.
#[test]
fn everything_we_issue_follows_x509_svid() {
    let mesh = Mesh::new(TD);
    let agent = mesh.agent("node-1", Some(&["web"]));
    let web = workload(&agent, "default", "web");
    let me = agent.issue_agent_leaf(t0(), Duration::hours(1)).unwrap();
    let op = mesh.operator("alice");
    let new_root =
        rhizome_ca::RootCa::generate(TD.parse().unwrap(), t0(), Duration::days(30)).unwrap();
    let cross = mesh
        .root
        .cross_sign(&new_root, t0(), Duration::days(30))
        .unwrap();
    for (what, leaf) in [("workload", &web), ("agent", &me), ("operator", &op)] {
        let c = parse(leaf.leaf());
        let u = uris(&c);
        assert_eq!(u.len(), 1, "{what}: exactly one URI SAN (2)");
        assert!(u[0].len() > TD_URI.len() + 1, "{what}: non-root path (3.1)");
        assert!(c.subject().iter().next().is_none(), "{what}: no subject");
        let san = c.subject_alternative_name().unwrap().unwrap();
        assert!(san.critical, "{what}: SAN critical without subject (3.1)");
        assert!(!c.is_ca(), "{what}: cA false (4.1)");
        let bc = c.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca, "{what}: basic constraints present, cA false");
        let ku = c.key_usage().unwrap().unwrap();
        assert!(ku.critical, "{what}: key usage critical (4.3)");
        assert!(
            ku.value.digital_signature(),
            "{what}: digitalSignature (4.3)"
        );
        assert!(!ku.value.key_cert_sign(), "{what}: no keyCertSign (4.3)");
        assert!(!ku.value.crl_sign(), "{what}: no cRLSign (4.3)");
        let eku = c.extended_key_usage().unwrap().unwrap();
        assert!(
            eku.value.server_auth && eku.value.client_auth,
            "{what}: EKU (4.4)"
        );
    }
    for (what, der) in [
        ("root", mesh.root.cert()),
        ("cross", &cross),
        ("agent intermediate", agent.cert()),
    ] {
        let c = parse(der);
        assert_eq!(uris(&c), [TD_URI], "{what}: spiffe://<td>, no path (3.2)");
        assert!(c.is_ca(), "{what}: cA true (4.1)");
        let ku = c.key_usage().unwrap().unwrap();
        assert!(ku.critical, "{what}: key usage critical (4.3)");
        assert!(ku.value.key_cert_sign(), "{what}: keyCertSign (4.3)");
        assert!(
            !ku.value.digital_signature(),
            "{what}: digitalSignature only on leaves (Appendix A)"
        );
    }
    // And all of it verifies.
    for (cred, kind) in [
        (&web, CertKind::Workload),
        (&me, CertKind::Agent),
        (&op, CertKind::Operator),
    ] {
        assert!(check(&mesh.bundle, cred, kind).is_ok());
    }
}

#[test]
fn x509_svid_2_exactly_one_uri_san() {
    let (mesh, agent, key) = setup();
    let (leaf, _) = Forge::leaf(&[WEB, "https://example.org/web"]).sign(agent.cert(), &key);
    assert_rule(
        verify_leaf(&mesh, &agent, &leaf),
        SvidRule::UriSanCount(2),
        "X509-SVID 2",
    );
    // Two SPIFFE ids: refused as such.
    let db = "spiffe://rhizome.local/ns/default/svc/db";
    let (leaf, _) = Forge::leaf(&[WEB, db]).sign(agent.cert(), &key);
    let err = verify_leaf(&mesh, &agent, &leaf).unwrap_err();
    assert_eq!(err, VerifyError::MultipleSpiffeIds(2));
    assert_eq!(err.rule(), Some("X509-SVID 2"));
    // A signing certificate with a second URI SAN.
    let mut two = Forge::agent(TD_URI, "n2", 0, "two uris");
    two.uris.push("https://example.org/ca");
    let (ca, ca_key) = two.sign(mesh.root.cert(), mesh.root.key());
    let (leaf, _) = Forge::leaf(&[WEB]).sign(&ca, &ca_key);
    assert_rule(
        verify_chain(&mesh.bundle, &leaf, &[ca], now(), CertKind::Workload),
        SvidRule::UriSanCount(2),
        "X509-SVID 2",
    );
}

#[test]
fn x509_svid_3_1_leaf_id_has_a_path() {
    let (mesh, agent, key) = setup();
    let (leaf, _) = Forge::leaf(&[TD_URI]).sign(agent.cert(), &key);
    assert_rule(
        verify_leaf(&mesh, &agent, &leaf),
        SvidRule::LeafIdWithoutPath,
        "X509-SVID 3.1",
    );
}

#[test]
fn x509_svid_3_1_san_critical_without_subject() {
    let (mesh, agent, key) = setup();
    let mut f = Forge::leaf(&[]);
    f.extensions.push(san_ext_non_critical(WEB));
    let (leaf, _) = f.sign(agent.cert(), &key);
    assert_rule(
        verify_leaf(&mesh, &agent, &leaf),
        SvidRule::SanNotCritical,
        "X509-SVID 3.1",
    );
    // With a subject, a non-critical SAN is fine.
    let mut f = Forge::leaf(&[]);
    f.cn = Some("web");
    f.extensions.push(san_ext_non_critical(WEB));
    let (leaf, _) = f.sign(agent.cert(), &key);
    assert_eq!(verify_leaf(&mesh, &agent, &leaf).unwrap().to_string(), WEB);
}

#[test]
fn x509_svid_3_2_signing_certificate_id_has_no_path() {
    let mesh = Mesh::new(TD);
    // The format rhizome used before: spiffe://<td>/agent/<node> on the intermediate.
    let (old, old_key) = Forge::ca(&["spiffe://rhizome.local/agent/n1"], 0, "rhizome agent n1")
        .sign(mesh.root.cert(), mesh.root.key());
    let (leaf, _) = Forge::leaf(&[WEB]).sign(&old, &old_key);
    assert_rule(
        verify_chain(
            &mesh.bundle,
            &leaf,
            std::slice::from_ref(&old),
            now(),
            CertKind::Workload,
        ),
        SvidRule::SigningIdWithPath,
        "X509-SVID 3.2",
    );
    // Even with the agent-node extension added.
    let mut both = Forge::ca(&["spiffe://rhizome.local/agent/n1"], 0, "rhizome agent n1");
    both.extensions.push(agent_node_ext("n1"));
    let (ca, ca_key) = both.sign(mesh.root.cert(), mesh.root.key());
    let (leaf, _) = Forge::leaf(&[WEB]).sign(&ca, &ca_key);
    assert_rule(
        verify_chain(&mesh.bundle, &leaf, &[ca], now(), CertKind::Workload),
        SvidRule::SigningIdWithPath,
        "X509-SVID 3.2",
    );
    // Loading such an intermediate says what to do.
    let err = AgentCa::from_chain(vec![old], old_key).unwrap_err();
    assert_eq!(err, IssueError::LegacyIntermediate("n1".into()));
    assert!(err.to_string().contains("rhizome ca issue-agent"), "{err}");
    // A root with a path in its id cannot enter a bundle.
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![Ku::KeyCertSign];
    p.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://rhizome.local/root".try_into().unwrap(),
    )];
    let root = p.self_signed(&PrivateKey::generate().unwrap()).unwrap();
    assert!(TrustBundle::new(vec![root.der().clone()]).is_err());
}

#[test]
fn x509_svid_4_1_leaf_ca_false_signing_ca_true() {
    let (mesh, agent, key) = setup();
    let mut f = Forge::leaf(&[WEB]);
    f.leaf_is_ca = true;
    let (leaf, _) = f.sign(agent.cert(), &key);
    let err = verify_leaf(&mesh, &agent, &leaf).unwrap_err();
    assert_eq!(err, VerifyError::CaAsEndEntity);
    assert_eq!(err.rule(), Some("X509-SVID 4.1"));
    assert!(err.to_string().starts_with("X509-SVID 4.1"), "{err}");
    // A non-CA certificate used as the issuer (a leaf signing a leaf).
    let me = agent.issue_agent_leaf(t0(), Duration::hours(1)).unwrap();
    let (leaf, _) = Forge::leaf(&[WEB]).sign(me.leaf(), me.key());
    assert_rule(
        verify_chain(&mesh.bundle, &leaf, me.chain(), now(), CertKind::Workload),
        SvidRule::SigningNotCa,
        "X509-SVID 4.1",
    );
}

#[test]
fn x509_svid_4_3_key_usage_present_and_critical() {
    let (mesh, agent, key) = setup();
    // Leaf without key usage.
    let mut f = Forge::leaf(&[WEB]);
    f.key_usages = Some(vec![]);
    let (leaf, _) = f.sign(agent.cert(), &key);
    assert_rule(
        verify_leaf(&mesh, &agent, &leaf),
        SvidRule::KeyUsageMissing,
        "X509-SVID 4.3",
    );
    // Leaf with a non-critical key usage (digitalSignature).
    let mut f = Forge::leaf(&[WEB]);
    f.key_usages = Some(vec![]);
    f.extensions.push(key_usage_ext(false, 0x80));
    let (leaf, _) = f.sign(agent.cert(), &key);
    assert_rule(
        verify_leaf(&mesh, &agent, &leaf),
        SvidRule::KeyUsageNotCritical,
        "X509-SVID 4.3",
    );
    // The same extension marked critical is accepted (the helper is not the problem).
    let mut f = Forge::leaf(&[WEB]);
    f.key_usages = Some(vec![]);
    f.extensions.push(key_usage_ext(true, 0x80));
    let (leaf, _) = f.sign(agent.cert(), &key);
    assert!(verify_leaf(&mesh, &agent, &leaf).is_ok());
    // An intermediate without key usage, and one with a non-critical one (keyCertSign).
    let mut f = Forge::agent(TD_URI, "n2", 0, "no ku");
    f.key_usages = Some(vec![]);
    let (ca, ca_key) = f.sign(mesh.root.cert(), mesh.root.key());
    let (leaf, _) = Forge::leaf(&[WEB]).sign(&ca, &ca_key);
    assert_rule(
        verify_chain(&mesh.bundle, &leaf, &[ca], now(), CertKind::Workload),
        SvidRule::KeyUsageMissing,
        "X509-SVID 4.3",
    );
    let mut f = Forge::agent(TD_URI, "n2", 0, "soft ku");
    f.key_usages = Some(vec![]);
    f.extensions.push(key_usage_ext(false, 0x04));
    let (ca, ca_key) = f.sign(mesh.root.cert(), mesh.root.key());
    let (leaf, _) = Forge::leaf(&[WEB]).sign(&ca, &ca_key);
    assert_rule(
        verify_chain(&mesh.bundle, &leaf, &[ca], now(), CertKind::Workload),
        SvidRule::KeyUsageNotCritical,
        "X509-SVID 4.3",
    );
}

#[test]
fn x509_svid_4_3_signing_certificate_sets_key_cert_sign() {
    let mesh = Mesh::new(TD);
    let mut f = Forge::agent(TD_URI, "n2", 0, "no keyCertSign");
    f.key_usages = Some(vec![Ku::DigitalSignature, Ku::CrlSign]);
    let (ca, ca_key) = f.sign(mesh.root.cert(), mesh.root.key());
    let (leaf, _) = Forge::leaf(&[WEB]).sign(&ca, &ca_key);
    assert_rule(
        verify_chain(&mesh.bundle, &leaf, &[ca], now(), CertKind::Workload),
        SvidRule::SigningWithoutKeyCertSign,
        "X509-SVID 4.3",
    );
    // A root without keyCertSign cannot enter a bundle.
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![Ku::DigitalSignature];
    p.subject_alt_names = vec![rcgen::SanType::URI(TD_URI.try_into().unwrap())];
    let root = p.self_signed(&PrivateKey::generate().unwrap()).unwrap();
    let err = TrustBundle::new(vec![root.der().clone()]).unwrap_err();
    assert!(err.to_string().contains("X509-SVID 4.3"), "{err}");
}

#[test]
fn x509_svid_4_3_leaf_key_usage_bits() {
    let (mesh, agent, key) = setup();
    let cases = [
        (
            vec![Ku::KeyEncipherment],
            SvidRule::LeafWithoutDigitalSignature,
        ),
        (
            vec![Ku::DigitalSignature, Ku::KeyCertSign],
            SvidRule::LeafKeyCertSign,
        ),
        (
            vec![Ku::DigitalSignature, Ku::CrlSign],
            SvidRule::LeafCrlSign,
        ),
    ];
    for (usages, rule) in cases {
        let mut f = Forge::leaf(&[WEB]);
        f.key_usages = Some(usages);
        let (leaf, _) = f.sign(agent.cert(), &key);
        assert_rule(verify_leaf(&mesh, &agent, &leaf), rule, "X509-SVID 4.3");
    }
    // keyEncipherment and keyAgreement next to digitalSignature are allowed (MAY).
    let mut f = Forge::leaf(&[WEB]);
    f.key_usages = Some(vec![
        Ku::DigitalSignature,
        Ku::KeyEncipherment,
        Ku::KeyAgreement,
    ]);
    let (leaf, _) = f.sign(agent.cert(), &key);
    assert!(verify_leaf(&mesh, &agent, &leaf).is_ok());
    // The message `rhizome ca verify` prints.
    let mut f = Forge::leaf(&[WEB]);
    f.key_usages = Some(vec![Ku::DigitalSignature, Ku::KeyCertSign]);
    let (leaf, _) = f.sign(agent.cert(), &key);
    assert_eq!(
        verify_leaf(&mesh, &agent, &leaf).unwrap_err().to_string(),
        "X509-SVID 4.3: a leaf SVID must not set keyCertSign"
    );
}

#[test]
fn x509_svid_4_4_leaf_eku_has_both_tls_purposes() {
    let (mesh, agent, key) = setup();
    // clientAuth only: a client check passes webpki, and still breaks 4.4.
    let mut f = Forge::leaf(&[WEB]);
    f.ekus = Some(vec![Eku::ClientAuth]);
    let (leaf, _) = f.sign(agent.cert(), &key);
    assert_rule(
        verify_leaf(&mesh, &agent, &leaf),
        SvidRule::LeafEkuIncomplete,
        "X509-SVID 4.4",
    );
    // serverAuth only, checked as a client: webpki's refusal names the same rule.
    let mut f = Forge::leaf(&[WEB]);
    f.ekus = Some(vec![Eku::ServerAuth]);
    let (leaf, _) = f.sign(agent.cert(), &key);
    let err = verify_chain_with(
        &mesh.bundle,
        &leaf,
        agent.chain(),
        now(),
        &[CertKind::Workload],
        Usage::Client,
    )
    .unwrap_err();
    assert_eq!(err, VerifyError::WrongUsage);
    assert_eq!(err.rule(), Some("X509-SVID 4.4"));
    // No EKU at all is allowed (SHOULD include it, not MUST).
    let mut f = Forge::leaf(&[WEB]);
    f.ekus = Some(vec![]);
    let (leaf, _) = f.sign(agent.cert(), &key);
    assert!(verify_leaf(&mesh, &agent, &leaf).is_ok());
}

/// X509-SVID 5.2: the leaf's SPIFFE ID uses the spiffe scheme; SPIFFE-ID 2 to 2.3 on ids
/// presented in certificates.
#[test]
fn spiffe_id_syntax_in_certificates_is_refused_with_its_rule() {
    let (mesh, agent, key) = setup();
    let long = format!("spiffe://rhizome.local/ns/default/svc/{}", "a".repeat(2040));
    let cases: &[(&str, &str)] = &[
        (
            "spiffe://rhizome.local/ns/default/svc/web?x=1",
            "SPIFFE-ID 2",
        ),
        ("spiffe://rhizome.local/ns/default/svc/web#f", "SPIFFE-ID 2"),
        (
            "spiffe://rhizome.local:443/ns/default/svc/web",
            "SPIFFE-ID 2.1",
        ),
        (
            "spiffe://me@rhizome.local/ns/default/svc/web",
            "SPIFFE-ID 2.1",
        ),
        ("spiffe://Rhizome.local/ns/default/svc/web", "SPIFFE-ID 2.1"),
        (
            "spiffe://rhizome%2elocal/ns/default/svc/web",
            "SPIFFE-ID 2.1",
        ),
        (
            "spiffe://rhizome.local/ns/default/svc/w%65b",
            "SPIFFE-ID 2.2",
        ),
        (
            "spiffe://rhizome.local/ns/default/svc/../web",
            "SPIFFE-ID 2.2",
        ),
        (
            "spiffe://rhizome.local/ns/./default/svc/web",
            "SPIFFE-ID 2.2",
        ),
        (
            "spiffe://rhizome.local/ns//default/svc/web",
            "SPIFFE-ID 2.2",
        ),
        (
            "spiffe://rhizome.local/ns/default/svc/web/",
            "SPIFFE-ID 2.2",
        ),
        ("spiffe://rhizome.local/ns/default/svc/w*b", "SPIFFE-ID 2.2"),
        (&long, "SPIFFE-ID 2.3"),
    ];
    for (uri, section) in cases {
        let (leaf, _) = Forge::leaf(&[uri]).sign(agent.cert(), &key);
        let err = verify_leaf(&mesh, &agent, &leaf).unwrap_err();
        assert!(matches!(err, VerifyError::BadSpiffeId(_)), "{uri}: {err}");
        assert_eq!(err.rule(), Some(*section), "{uri}: {err}");
        assert!(err.to_string().contains(section), "{uri}: {err}");
    }
    // Another scheme is no SPIFFE id at all.
    let (leaf, _) =
        Forge::leaf(&["SPIFFE://rhizome.local/ns/default/svc/web"]).sign(agent.cert(), &key);
    assert_eq!(
        verify_leaf(&mesh, &agent, &leaf),
        Err(VerifyError::NoSpiffeId)
    );
}

/// The node binding moved from the intermediate's id to its agent-node extension; every
/// node check still holds.
#[test]
fn agent_node_binding_lives_in_the_extension() {
    let mesh = Mesh::new(TD);
    let agent = mesh.agent("node-a", None);
    assert_eq!(agent.node().as_str(), "node-a");
    assert_eq!(
        agent.id().to_string(),
        "spiffe://rhizome.local/agent/node-a",
        "the agent's own leaf id is unchanged"
    );
    let me = agent.issue_agent_leaf(t0(), Duration::hours(1)).unwrap();
    assert_eq!(
        check(&mesh.bundle, &me, CertKind::Agent)
            .unwrap()
            .to_string(),
        "spiffe://rhizome.local/agent/node-a"
    );
    // node-a's intermediate cannot issue node-b's agent leaf.
    let (other, _) = Forge::leaf(&["spiffe://rhizome.local/agent/node-b"])
        .sign(agent.cert(), &agent_key(&agent));
    let err =
        verify_chain(&mesh.bundle, &other, agent.chain(), now(), CertKind::Agent).unwrap_err();
    assert!(matches!(err, VerifyError::NodeMismatch { .. }), "{err}");
    // A malformed agent-node extension is refused.
    let mut f = Forge::ca(&[TD_URI], 0, "bad node");
    f.extensions.push(CustomExtension::from_oid_content(
        rhizome_ca::extension::AGENT_NODE_OID,
        vec![0x0c, 0x03, b'A', b'.', b'.'],
    ));
    let (ca, ca_key) = f.sign(mesh.root.cert(), mesh.root.key());
    let (leaf, _) = Forge::leaf(&[WEB]).sign(&ca, &ca_key);
    assert_eq!(
        verify_chain(&mesh.bundle, &leaf, &[ca], now(), CertKind::Workload),
        Err(VerifyError::MalformedAgentNode)
    );
    // An agent intermediate is not a root: it cannot enter a bundle.
    assert!(TrustBundle::new(vec![agent.cert().clone()]).is_err());
}
