//! PEM files, the CSR join flow, certificate facts, signing helpers, and `openssl verify`
//! on the files we write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use rhizome_ca::{
    AgentCa, CertInfo, CertKind, Credential, IssueError, KeyError, RootCa, SignedError,
    TrustBundle, VerifyError,
};
use time::{Duration, OffsetDateTime};

#[test]
fn pem_files_round_trip_and_keep_working() {
    let mesh = Mesh::new("rhizome.local");
    let root = RootCa::from_pem(&mesh.root.cert_pem(), &mesh.root.key_pem()).unwrap();
    assert_eq!(root.fingerprint(), mesh.root.fingerprint());
    assert_eq!(
        root.fingerprint()
            .to_string()
            .parse::<rhizome_ca::Fingerprint>()
            .unwrap(),
        root.fingerprint()
    );
    let agent = root
        .issue_agent(
            &"n1".parse().unwrap(),
            Some(&["web".parse().unwrap()]),
            t0(),
            Duration::days(1),
        )
        .unwrap();
    let agent = AgentCa::from_pem(&agent.chain_pem(), &agent.key_pem()).unwrap();
    assert_eq!(agent.allowed_services().unwrap(), &["web".parse().unwrap()]);
    let web = workload(&agent, "default", "web");
    let web = Credential::from_pem(&web.chain_pem(), &web.key_pem()).unwrap();
    assert_eq!(
        web.id().to_string(),
        "spiffe://rhizome.local/ns/default/svc/web"
    );
    assert!(check(&mesh.bundle, &web, CertKind::Workload).is_ok());
    let other = Mesh::new("rhizome.local");
    let err = RootCa::from_pem(&mesh.root.cert_pem(), &other.root.key_pem()).unwrap_err();
    assert_eq!(err, IssueError::KeyMismatch);
    assert!(matches!(
        RootCa::from_pem(&agent.chain_pem(), &agent.key_pem()),
        Err(IssueError::Unusable(_))
    ));
}

#[test]
fn csr_join_flow_uses_the_signers_names_not_the_joiners() {
    let mesh = Mesh::new("rhizome.local");
    let td = "rhizome.local".parse().unwrap();
    // The joiner asks to be node-a; the signer (authorised by a token) decides node-b.
    let (csr, key) = AgentCa::new_csr(&td, &"node-a".parse().unwrap()).unwrap();
    let services = ["web".parse().unwrap()];
    let chain = mesh
        .root
        .sign_agent_csr(
            &csr.0,
            &"node-b".parse().unwrap(),
            Some(&services),
            t0(),
            Duration::days(7),
        )
        .unwrap();
    let agent = AgentCa::from_chain(chain, key).unwrap();
    assert_eq!(
        agent.id().to_string(),
        "spiffe://rhizome.local/agent/node-b"
    );
    assert_eq!(agent.allowed_services(), Some(&services[..]));
    assert!(
        check(
            &mesh.bundle,
            &workload(&agent, "default", "web"),
            CertKind::Workload
        )
        .is_ok()
    );
    // Garbage and tampered CSRs are refused.
    assert!(matches!(
        mesh.root
            .sign_agent_csr("nope", &"x".parse().unwrap(), None, t0(), Duration::days(1)),
        Err(IssueError::Csr(_))
    ));
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(csr.0.as_bytes())
        .map(|d: rustls_pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
        .unwrap();
    let mut bad = der.clone();
    let n = bad.len();
    bad[n - 3] ^= 0x01;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        b64(&bad)
    );
    assert!(matches!(
        mesh.root.sign_agent_csr(
            &tampered,
            &"x".parse().unwrap(),
            None,
            t0(),
            Duration::days(1)
        ),
        Err(IssueError::Csr(_))
    ));
    // The joiner's key must match what the signer certified.
    let (_, wrong_key) = AgentCa::new_csr(&td, &"node-a".parse().unwrap()).unwrap();
    let (csr2, _) = AgentCa::new_csr(&td, &"node-a".parse().unwrap()).unwrap();
    let chain = mesh
        .root
        .sign_agent_csr(
            &csr2.0,
            &"node-a".parse().unwrap(),
            None,
            t0(),
            Duration::days(1),
        )
        .unwrap();
    assert_eq!(
        AgentCa::from_chain(chain, wrong_key).unwrap_err(),
        IssueError::KeyMismatch
    );
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn cert_info_reports_identity_issuer_and_expiry() {
    let mesh = Mesh::new("rhizome.local");
    let agent = mesh.agent("node-1", Some(&["web"]));
    let web = workload(&agent, "default", "web");
    let info = CertInfo::from_der(web.leaf()).unwrap();
    assert_eq!(info.spiffe_id.as_ref(), Some(web.id()));
    assert!(
        info.issuer.contains("rhizome agent node-1"),
        "{}",
        info.issuer
    );
    assert!(!info.is_ca && !info.serial.is_empty());
    assert_eq!(info.seconds_to_expiry(t0()), 72 * 3600);
    assert!(info.fraction_of_life_used(t0() + Duration::hours(65)) > 0.9);
    let a = CertInfo::from_der(agent.cert()).unwrap();
    assert!(a.is_ca);
    assert_eq!(
        a.spiffe_id, None,
        "a signing certificate's id is spiffe://<td>"
    );
    assert_eq!(
        a.trust_domain.map(|t| t.to_string()),
        Some("rhizome.local".into())
    );
    assert_eq!(a.agent_node, Some("node-1".parse().unwrap()));
    assert_eq!(a.allowed_services, Some(vec!["web".parse().unwrap()]));
    let r = CertInfo::from_der(mesh.root.cert()).unwrap();
    assert_eq!(
        (r.spiffe_id, r.trust_domain.map(|t| t.to_string())),
        (None, Some("rhizome.local".to_owned()))
    );
    assert_eq!(r.subject, r.issuer);
    assert!(CertInfo::from_der(b"junk").is_err());
}

#[test]
fn gossip_signatures_verify_only_with_the_signers_cert() {
    let mesh = Mesh::new("rhizome.local");
    let agent = mesh.agent("node-1", None);
    let me = agent.issue_agent_leaf(t0(), Duration::hours(1)).unwrap();
    let op = mesh.operator("alice");
    let sig = rhizome_ca::sign(me.key(), b"catalog/node-1/web-1=v1").unwrap();
    assert_eq!(
        rhizome_ca::verify_signature(me.leaf(), b"catalog/node-1/web-1=v1", &sig),
        Ok(())
    );
    assert_eq!(
        rhizome_ca::verify_signature(me.leaf(), b"catalog/node-1/web-1=v2", &sig),
        Err(KeyError::BadSignature)
    );
    assert_eq!(
        rhizome_ca::verify_signature(op.leaf(), b"catalog/node-1/web-1=v1", &sig),
        Err(KeyError::BadSignature)
    );
    // Chain and signature together, as the agent checks gossip entries.
    let msg = b"intentions/default/db=allow web";
    let op_sig = rhizome_ca::sign(op.key(), msg).unwrap();
    let got = rhizome_ca::verify_signed(
        &mesh.bundle,
        op.chain(),
        now(),
        &[CertKind::Operator],
        msg,
        &op_sig,
    );
    assert_eq!(got, Ok(op.id().clone()));
    let agent_sig = rhizome_ca::sign(me.key(), msg).unwrap();
    let got = rhizome_ca::verify_signed(
        &mesh.bundle,
        me.chain(),
        now(),
        &[CertKind::Operator],
        msg,
        &agent_sig,
    );
    assert!(
        matches!(got, Err(SignedError::Chain(VerifyError::WrongKind { .. }))),
        "{got:?}"
    );
    let got = rhizome_ca::verify_signed(
        &mesh.bundle,
        op.chain(),
        now(),
        &[CertKind::Operator],
        b"other",
        &op_sig,
    );
    assert_eq!(got, Err(SignedError::Signature(KeyError::BadSignature)));
    let got = rhizome_ca::verify_signed(
        &mesh.bundle,
        &[],
        now(),
        &[CertKind::Operator],
        msg,
        &op_sig,
    );
    assert_eq!(got, Err(SignedError::NoCertificate));
}

fn openssl_available() -> bool {
    match Command::new("openssl").arg("version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            println!("skipping: `openssl` is not on PATH");
            false
        }
    }
}

fn openssl_verify(dir: &Path, bundle: &str, chain: &str, cert: &str) -> (bool, String) {
    for (name, text) in [
        ("bundle.pem", bundle),
        ("chain.pem", chain),
        ("cert.pem", cert),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "verify",
            "-CAfile",
            "bundle.pem",
            "-untrusted",
            "chain.pem",
            "cert.pem",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn openssl_accepts_our_chain_files() {
    if !openssl_available() {
        return;
    }
    // openssl checks validity against the real clock, so issue at the real time here.
    let now = OffsetDateTime::now_utc();
    let dir = tempfile::tempdir().unwrap();
    let td = "rhizome.local".parse().unwrap();
    let root = RootCa::generate(td, now, Duration::days(365)).unwrap();
    let bundle = TrustBundle::new(vec![root.cert().clone()]).unwrap();
    let agent = root
        .issue_agent(
            &"node-1".parse().unwrap(),
            Some(&["web".parse().unwrap()]),
            now,
            Duration::days(30),
        )
        .unwrap();
    let web = agent
        .issue_workload(
            &"default".parse().unwrap(),
            &"web".parse().unwrap(),
            now,
            Duration::hours(72),
        )
        .unwrap();
    let (ok, text) = openssl_verify(
        dir.path(),
        &bundle.to_pem(),
        &web.chain_pem(),
        &web.cert_pem(),
    );
    assert!(ok && text.contains("cert.pem: OK"), "{text}");
    let op = root
        .issue_operator(&"alice".parse().unwrap(), now, Duration::days(1))
        .unwrap();
    let (ok, text) = openssl_verify(
        dir.path(),
        &bundle.to_pem(),
        &op.chain_pem(),
        &op.cert_pem(),
    );
    assert!(ok, "{text}");

    // A rotated chain (with the cross certificate) against the old-only bundle.
    let mut new_root =
        RootCa::generate("rhizome.local".parse().unwrap(), now, Duration::days(365)).unwrap();
    new_root.set_cross_signed(vec![
        root.cross_sign(&new_root, now, Duration::days(30)).unwrap(),
    ]);
    let agent2 = new_root
        .issue_agent(&"node-2".parse().unwrap(), None, now, Duration::days(30))
        .unwrap();
    let db = agent2
        .issue_workload(
            &"default".parse().unwrap(),
            &"db".parse().unwrap(),
            now,
            Duration::hours(72),
        )
        .unwrap();
    let (ok, text) = openssl_verify(
        dir.path(),
        &bundle.to_pem(),
        &db.chain_pem(),
        &db.cert_pem(),
    );
    assert!(ok, "{text}");

    // And openssl refuses a chain from a root it does not trust.
    let stranger =
        RootCa::generate("rhizome.local".parse().unwrap(), now, Duration::days(365)).unwrap();
    let s_agent = stranger
        .issue_agent(&"x".parse().unwrap(), None, now, Duration::days(1))
        .unwrap();
    let s_web = s_agent
        .issue_workload(
            &"default".parse().unwrap(),
            &"web".parse().unwrap(),
            now,
            Duration::hours(1),
        )
        .unwrap();
    let (ok, text) = openssl_verify(
        dir.path(),
        &bundle.to_pem(),
        &s_web.chain_pem(),
        &s_web.cert_pem(),
    );
    assert!(!ok, "{text}");

    // The intermediate reads well with `openssl x509 -text`.
    std::fs::write(dir.path().join("agent.pem"), agent.chain_pem()).unwrap();
    let out = Command::new("openssl")
        .current_dir(dir.path())
        .args(["x509", "-noout", "-text", "-in", "agent.pem"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // A signing certificate's SPIFFE id has no path (X509-SVID 3.2): the node it is bound
    // to is in the agent-node extension (and, for people, the subject).
    assert!(text.contains("URI:spiffe://rhizome.local\n"), "{text}");
    assert!(!text.contains("URI:spiffe://rhizome.local/"), "{text}");
    assert!(text.contains("rhizome agent node-1"), "{text}");
    assert!(text.contains("1.3.6.1.4.1.32473.7.2"), "{text}");
    assert!(text.contains("pathlen:0"), "{text}");
    assert!(text.contains("1.3.6.1.4.1.32473.7.1"), "{text}");
}
