//! Root rotation by cross-signing: add new root, cross-sign, switch, remove old. Peers on
//! old-root and new-root chains keep verifying each other throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use rhizome_ca::{CertKind, Credential, RootCa, SharedBundle, TrustBundle, VerifyError};
use time::Duration;

const W: &[CertKind] = &[CertKind::Workload];

struct Rotation {
    old: Mesh,
    new_root: RootCa,
    old_web: Credential,
    new_db: Credential,
    new_op: Credential,
}

fn rotate() -> Rotation {
    let old = Mesh::new("rhizome.local");
    let old_web = workload(&old.agent("node-a", None), "default", "web");
    let mut new_root =
        RootCa::generate("rhizome.local".parse().unwrap(), t0(), Duration::days(730)).unwrap();
    let cross = old
        .root
        .cross_sign(&new_root, t0(), Duration::days(90))
        .unwrap();
    new_root.set_cross_signed(vec![cross]);
    let agent_b = new_root
        .issue_agent(&"node-b".parse().unwrap(), None, t0(), Duration::days(30))
        .unwrap();
    assert_eq!(
        agent_b.chain().len(),
        2,
        "agent chain carries the cross certificate"
    );
    let new_db = workload(&agent_b, "default", "db");
    let new_op = new_root
        .issue_operator(&"alice".parse().unwrap(), t0(), Duration::days(1))
        .unwrap();
    Rotation {
        old,
        new_root,
        old_web,
        new_db,
        new_op,
    }
}

#[test]
fn chains_verify_against_old_both_and_new_bundles() {
    let r = rotate();
    let old_only = r.old.bundle.clone();
    let both = old_only.with_root(r.new_root.cert().clone()).unwrap();
    let new_only = both.without_root(&r.old.root.fingerprint()).unwrap();
    assert_eq!(both.roots().len(), 2);
    assert_eq!(new_only.fingerprints(), vec![r.new_root.fingerprint()]);

    // Before anyone learned the new root: new chains verify through the cross certificate.
    assert!(check(&old_only, &r.new_db, CertKind::Workload).is_ok());
    assert!(check(&old_only, &r.new_op, CertKind::Operator).is_ok());
    // During rotation: everything verifies.
    for cred in [&r.old_web, &r.new_db] {
        assert!(check(&both, cred, CertKind::Workload).is_ok());
    }
    // After the old root is removed: new chains verify, old ones are refused.
    assert!(check(&new_only, &r.new_db, CertKind::Workload).is_ok());
    assert!(check(&new_only, &r.new_op, CertKind::Operator).is_ok());
    assert_eq!(
        check(&new_only, &r.old_web, CertKind::Workload),
        Err(VerifyError::UnknownIssuer)
    );
    // Without the cross certificate an old-only peer cannot verify a new chain.
    let bare = &r.new_db.chain()[..2];
    let err = rhizome_ca::verify_chain(&old_only, &bare[0], &bare[1..], now(), CertKind::Workload);
    assert_eq!(err, Err(VerifyError::UnknownIssuer));
}

#[tokio::test]
async fn peers_keep_handshaking_through_the_rotation() {
    let r = rotate();
    let sni_db = "db.default.svc.rhizome.local";
    let sni_web = "web.default.svc.rhizome.local";
    // Peer A (old chain) still trusts only the old root; peer B (new chain) trusts both.
    let a_bundle = SharedBundle::new(r.old.bundle.clone());
    let both = r.old.bundle.with_root(r.new_root.cert().clone()).unwrap();
    let b_bundle = SharedBundle::new(both.clone());
    let a_server = server_cfg(&a_bundle, W, serving(&[&r.old_web]));
    let b_server = server_cfg(&b_bundle, W, serving(&[&r.new_db]));

    let (seen, _) = handshake(
        client_cfg(&a_bundle, W, &r.old_web),
        b_server.clone(),
        sni_db,
    )
    .await
    .unwrap();
    assert_eq!(seen, r.new_db.id().clone());
    let (seen, _) = handshake(
        client_cfg(&b_bundle, W, &r.new_db),
        a_server.clone(),
        sni_web,
    )
    .await
    .unwrap();
    assert_eq!(seen, r.old_web.id().clone());

    // A learns the new root (same verifier objects, bundle swapped underneath).
    a_bundle.store(both);
    assert!(
        handshake(
            client_cfg(&a_bundle, W, &r.old_web),
            b_server.clone(),
            sni_db
        )
        .await
        .is_ok()
    );

    // Old root removed everywhere, A re-issued under the new root.
    let new_only = TrustBundle::new(vec![r.new_root.cert().clone()]).unwrap();
    a_bundle.store(new_only.clone());
    b_bundle.store(new_only);
    let a2 = r
        .new_root
        .issue_agent(&"node-a".parse().unwrap(), None, t0(), Duration::days(30))
        .unwrap();
    let new_web = workload(&a2, "default", "web");
    let (seen_by_a, seen_by_b) =
        handshake(client_cfg(&a_bundle, W, &new_web), b_server.clone(), sni_db)
            .await
            .unwrap();
    assert_eq!(
        (seen_by_a, seen_by_b),
        (r.new_db.id().clone(), new_web.id().clone())
    );
    // A straggler still on the old chain is now refused by B.
    let err = handshake(client_cfg(&a_bundle, W, &r.old_web), b_server, sni_db)
        .await
        .unwrap_err();
    assert!(err.starts_with("server:"), "{err}");
}

#[test]
fn bundles_refuse_mixed_trust_domains_and_non_roots() {
    let a = Mesh::new("one.example");
    let b = Mesh::new("two.example");
    let err = TrustBundle::new(vec![a.root.cert().clone(), b.root.cert().clone()]).unwrap_err();
    assert!(
        matches!(err, rhizome_ca::BundleError::MixedTrustDomains(..)),
        "{err}"
    );
    let agent = a.agent("n", None);
    let err = TrustBundle::new(vec![agent.cert().clone()]).unwrap_err();
    assert!(
        matches!(err, rhizome_ca::BundleError::NotARoot { index: 0, .. }),
        "{err}"
    );
    assert_eq!(
        TrustBundle::new(vec![]).unwrap_err(),
        rhizome_ca::BundleError::Empty
    );
    let pem = a.bundle.with_root(b.root.cert().clone());
    assert!(pem.is_err());
    let round = TrustBundle::from_pem(&a.bundle.to_pem()).unwrap();
    assert_eq!(round.roots(), a.bundle.roots());
}
