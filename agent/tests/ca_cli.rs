//! `rhizome ca ...` round trips through the real binary: files, modes, refusals, openssl's
//! opinion of the chains, and a whole root rotation on files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn rhizome(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rhizome"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let out = rhizome(args, cwd);
    assert!(
        out.status.success(),
        "rhizome {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `openssl verify` of `leaf` with `untrusted` intermediates against `ca`; None without openssl.
fn openssl_verify(cwd: &Path, ca: &str, untrusted: &str, leaf: &str) -> Option<bool> {
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", ca, "-untrusted", untrusted, leaf])
        .current_dir(cwd)
        .output();
    match out {
        Ok(o) => Some(o.status.success()),
        Err(e) => {
            println!("skipping openssl checks: cannot run openssl ({e})");
            None
        }
    }
}

#[test]
fn init_issue_verify_round_trip() {
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    let out = ok(
        &["ca", "init", "--trust-domain", "cli.test", "--out", "ca"],
        d,
    );
    assert!(out.contains("root fingerprint"), "{out}");
    assert_eq!(mode(&d.join("ca/root.key")), 0o600);
    ok(
        &[
            "ca",
            "issue-agent",
            "--ca-dir",
            "ca",
            "--node",
            "n1",
            "--services",
            "web,db",
            "--out",
            "n1",
        ],
        d,
    );
    assert_eq!(mode(&d.join("n1/agent.key")), 0o600);
    assert!(d.join("n1/agent.pem").is_file() && d.join("n1/bundle.pem").is_file());
    ok(
        &[
            "ca",
            "issue-leaf",
            "--agent-dir",
            "n1",
            "--service",
            "web",
            "--out",
            "web",
        ],
        d,
    );
    assert_eq!(mode(&d.join("web/key.pem")), 0o600);
    let chain = std::fs::read_to_string(d.join("web/chain.pem")).unwrap();
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf + intermediate, no root"
    );

    let id = ok(
        &["ca", "verify", "--bundle", "n1/bundle.pem", "web/chain.pem"],
        d,
    );
    assert_eq!(id.trim(), "spiffe://cli.test/ns/default/svc/web");
    let id = ok(
        &[
            "ca",
            "verify",
            "--bundle",
            "ca/root.pem",
            "web/cert.pem",
            "--chain",
            "n1/agent.pem",
        ],
        d,
    );
    assert_eq!(id.trim(), "spiffe://cli.test/ns/default/svc/web");

    // A leaf alone does not reach the root: refused with a reason and exit 1.
    let out = rhizome(
        &["ca", "verify", "--bundle", "ca/root.pem", "web/cert.pem"],
        d,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown issuer"));
    // Outside the intermediate's allowed services: refused at issuance.
    let out = rhizome(
        &[
            "ca",
            "issue-leaf",
            "--agent-dir",
            "n1",
            "--service",
            "api",
            "--out",
            "api",
        ],
        d,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in this agent's allowed services"));
    // Another mesh's bundle: refused.
    ok(
        &["ca", "init", "--trust-domain", "cli.test", "--out", "other"],
        d,
    );
    let out = rhizome(
        &[
            "ca",
            "verify",
            "--bundle",
            "other/root.pem",
            "web/chain.pem",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(1));
    // Nothing is overwritten.
    let before = std::fs::read(d.join("ca/root.key")).unwrap();
    let out = rhizome(
        &["ca", "init", "--trust-domain", "cli.test", "--out", "ca"],
        d,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(d.join("ca/root.key")).unwrap(), before);

    ok(
        &[
            "ca",
            "issue-operator",
            "--ca-dir",
            "ca",
            "--name",
            "alice",
            "--out",
            "op",
        ],
        d,
    );
    assert_eq!(mode(&d.join("op/key.pem")), 0o600);
    let id = ok(
        &["ca", "verify", "--bundle", "ca/root.pem", "op/chain.pem"],
        d,
    );
    assert_eq!(id.trim(), "spiffe://cli.test/operator/alice");

    if let Some(accepted) = openssl_verify(d, "ca/root.pem", "n1/agent.pem", "web/cert.pem") {
        assert!(accepted, "openssl accepts the workload chain");
        assert_eq!(
            openssl_verify(d, "ca/root.pem", "ca/root.pem", "op/cert.pem"),
            Some(true)
        );
        assert_eq!(
            openssl_verify(d, "other/root.pem", "n1/agent.pem", "web/cert.pem"),
            Some(false),
            "openssl refuses another root"
        );
    }
}

#[test]
fn token_create_prints_a_verifiable_token() {
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    ok(
        &["ca", "init", "--trust-domain", "cli.test", "--out", "ca"],
        d,
    );
    let out = ok(
        &[
            "ca",
            "token",
            "create",
            "--ca-dir",
            "ca",
            "--node-pattern",
            "web-*",
            "--ttl",
            "1h",
            "--services",
            "web",
            "--max-uses",
            "2",
        ],
        d,
    );
    let token = out.lines().last().unwrap().trim();
    let root = rhizome_ca::certs_from_pem(&std::fs::read_to_string(d.join("ca/root.pem")).unwrap())
        .unwrap()
        .remove(0);
    let now = time::OffsetDateTime::now_utc();
    let claims = rhizome_ca::verify_token(token, &root, now, &"web-7".parse().unwrap()).unwrap();
    assert_eq!(claims.max_uses, Some(2));
    assert_eq!(claims.services.unwrap()[0].as_str(), "web");
    assert!(claims.expires > now + time::Duration::minutes(59));
    let err = rhizome_ca::verify_token(token, &root, now, &"db-1".parse().unwrap()).unwrap_err();
    assert!(matches!(
        err,
        rhizome_ca::TokenError::PatternMismatch { .. }
    ));
}

#[test]
fn rotation_steps_on_files() {
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    ok(
        &["ca", "init", "--trust-domain", "rot.test", "--out", "old"],
        d,
    );
    ok(
        &[
            "ca",
            "issue-agent",
            "--ca-dir",
            "old",
            "--node",
            "a",
            "--out",
            "a",
        ],
        d,
    );
    ok(
        &[
            "ca", "rotate", "new-root", "--ca-dir", "old", "--out", "new",
        ],
        d,
    );
    for f in ["root.pem", "root.key", "cross.pem", "bundle.pem"] {
        assert!(d.join("new").join(f).is_file(), "{f}");
    }
    assert_eq!(mode(&d.join("new/root.key")), 0o600);
    // Switch: agent b is issued from the new root; its chain carries the cross certificate,
    // so agent a, still trusting only the old root, accepts b's leaves.
    ok(
        &[
            "ca",
            "issue-agent",
            "--ca-dir",
            "new",
            "--node",
            "b",
            "--out",
            "b",
        ],
        d,
    );
    let b_chain = std::fs::read_to_string(d.join("b/agent.pem")).unwrap();
    assert_eq!(
        b_chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "intermediate + cross"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("b/bundle.pem"))
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2,
        "b trusts both roots"
    );
    ok(
        &[
            "ca",
            "issue-leaf",
            "--agent-dir",
            "b",
            "--service",
            "web",
            "--out",
            "bweb",
        ],
        d,
    );
    ok(
        &["ca", "verify", "--bundle", "a/bundle.pem", "bweb/chain.pem"],
        d,
    );
    // Bundle add on a, then a trusts the new root directly; remove the old root.
    ok(
        &[
            "ca",
            "rotate",
            "bundle-add",
            "--bundle",
            "a/bundle.pem",
            "--root",
            "new/root.pem",
        ],
        d,
    );
    let shown = ok(
        &["ca", "rotate", "bundle-show", "--bundle", "a/bundle.pem"],
        d,
    );
    assert_eq!(
        shown.lines().count(),
        4,
        "trust domain line, header, two roots: {shown}"
    );
    ok(
        &[
            "ca",
            "issue-leaf",
            "--agent-dir",
            "a",
            "--service",
            "web",
            "--out",
            "aweb",
        ],
        d,
    );
    ok(
        &[
            "ca",
            "rotate",
            "bundle-remove",
            "--bundle",
            "a/bundle.pem",
            "--root",
            "old/root.pem",
        ],
        d,
    );
    // a's own old-root leaf no longer verifies against a's new bundle; b's still does.
    let out = rhizome(
        &["ca", "verify", "--bundle", "a/bundle.pem", "aweb/chain.pem"],
        d,
    );
    assert_eq!(out.status.code(), Some(1));
    ok(
        &["ca", "verify", "--bundle", "a/bundle.pem", "bweb/chain.pem"],
        d,
    );
    // Finish: the new root directory stops carrying the cross certificate.
    ok(&["ca", "rotate", "finish", "--ca-dir", "new"], d);
    assert!(!d.join("new/cross.pem").exists());
    ok(
        &[
            "ca",
            "issue-agent",
            "--ca-dir",
            "new",
            "--node",
            "c",
            "--out",
            "c",
        ],
        d,
    );
    let c_chain = std::fs::read_to_string(d.join("c/agent.pem")).unwrap();
    assert_eq!(c_chain.matches("BEGIN CERTIFICATE").count(), 1);
    let out = rhizome(
        &[
            "ca",
            "rotate",
            "bundle-remove",
            "--bundle",
            "c/bundle.pem",
            "--root",
            "new/root.pem",
        ],
        d,
    );
    assert!(!out.status.success(), "a bundle never loses its last root");
}

/// `rhizome ca verify` names the X509-SVID rule a refused certificate breaks: a leaf minted
/// with a real agent key but with keyCertSign set (X509-SVID 4.3).
#[test]
fn verify_names_the_svid_rule_a_certificate_breaks() {
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    ok(
        &["ca", "init", "--trust-domain", "cli.test", "--out", "ca"],
        d,
    );
    ok(
        &[
            "ca",
            "issue-agent",
            "--ca-dir",
            "ca",
            "--node",
            "n1",
            "--out",
            "n1",
        ],
        d,
    );
    let agent_pem = std::fs::read_to_string(d.join("n1/agent.pem")).unwrap();
    let agent_der = rhizome_ca::certs_from_pem(&agent_pem).unwrap().remove(0);
    let agent_key =
        rhizome_ca::PrivateKey::from_pem(&std::fs::read_to_string(d.join("n1/agent.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&agent_der, agent_key).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://cli.test/ns/default/svc/web".try_into().unwrap(),
    )];
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyCertSign,
    ];
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let leaf_key = rhizome_ca::PrivateKey::generate().unwrap();
    let leaf = p.signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(d.join("bad.pem"), leaf.pem()).unwrap();
    let out = rhizome(
        &[
            "ca",
            "verify",
            "--bundle",
            "n1/bundle.pem",
            "bad.pem",
            "--chain",
            "n1/agent.pem",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("X509-SVID 4.3: a leaf SVID must not set keyCertSign"),
        "{stderr}"
    );
}
