//! Every rejection of the verification core, each with a certificate that really is wrong in
//! that way, plus the accepted cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use rhizome_ca::extension::ALLOWED_SERVICES_OID;
use rhizome_ca::{CertKind, IssueError, SpiffeId, VerifyError, verify_chain};
use time::Duration;

const TD: &str = "rhizome.local";

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

#[test]
fn accepts_each_kind_from_its_rightful_issuer() {
    let mesh = Mesh::new(TD);
    let agent = mesh.agent("node-1", None);
    let web = workload(&agent, "default", "web");
    assert_eq!(
        check(&mesh.bundle, &web, CertKind::Workload),
        Ok(id("spiffe://rhizome.local/ns/default/svc/web"))
    );
    let me = agent.issue_agent_leaf(t0(), Duration::hours(24)).unwrap();
    assert_eq!(
        check(&mesh.bundle, &me, CertKind::Agent),
        Ok(id("spiffe://rhizome.local/agent/node-1"))
    );
    let op = mesh.operator("alice");
    assert_eq!(
        check(&mesh.bundle, &op, CertKind::Operator),
        Ok(id("spiffe://rhizome.local/operator/alice"))
    );
}

#[test]
fn leaf_is_backdated_and_lasts_72h() {
    let mesh = Mesh::new(TD);
    let web = workload(&mesh.agent("n", None), "default", "web");
    assert_eq!(web.not_before(), t0() - Duration::seconds(60));
    assert_eq!(web.not_after(), t0() + Duration::hours(72));
}

#[test]
fn expired_leaf_is_rejected() {
    let mesh = Mesh::new(TD);
    let web = workload(&mesh.agent("n", None), "default", "web");
    let late = at(t0() + Duration::hours(72) + Duration::seconds(1));
    let err = verify_chain(
        &mesh.bundle,
        web.leaf(),
        &web.chain()[1..],
        late,
        CertKind::Workload,
    );
    assert_eq!(err, Err(VerifyError::Expired));
}

#[test]
fn not_yet_valid_leaf_is_rejected() {
    let mesh = Mesh::new(TD);
    let agent = mesh.agent("n", None);
    let ns = "default".parse().unwrap();
    let future = agent
        .issue_workload(
            &ns,
            &"web".parse().unwrap(),
            t0() + Duration::days(2),
            Duration::hours(72),
        )
        .unwrap();
    assert_eq!(
        check(&mesh.bundle, &future, CertKind::Workload),
        Err(VerifyError::NotYetValid)
    );
}

#[test]
fn foreign_trust_domain_is_rejected() {
    let mesh = Mesh::new(TD);
    let agent = mesh.agent("n", None);
    // Signed by our real agent, but naming another trust domain.
    let (leaf, _) = Forge::leaf(&["spiffe://evil.example/ns/default/svc/web"])
        .sign(agent.cert(), &agent_key(&agent));
    let err = verify_chain(
        &mesh.bundle,
        &leaf,
        agent.chain(),
        now(),
        CertKind::Workload,
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::ForeignTrustDomain { ref found, .. } if found.as_str() == "evil.example"),
        "{err}"
    );
    // And a whole foreign mesh's chain does not reach our roots.
    let other = Mesh::new("evil.example");
    let theirs = workload(&other.agent("n", None), "default", "web");
    assert_eq!(
        check(&mesh.bundle, &theirs, CertKind::Workload),
        Err(VerifyError::UnknownIssuer)
    );
}

#[test]
fn unknown_root_is_rejected() {
    let mesh = Mesh::new(TD);
    let impostor = Mesh::new(TD); // same trust domain, different root key
    let web = workload(&impostor.agent("n", None), "default", "web");
    assert_eq!(
        check(&mesh.bundle, &web, CertKind::Workload),
        Err(VerifyError::UnknownIssuer)
    );
}

#[test]
fn service_outside_the_allowed_list_is_rejected() {
    let mesh = Mesh::new(TD);
    let agent = mesh.agent("n", Some(&["web", "api"]));
    assert!(
        check(
            &mesh.bundle,
            &workload(&agent, "default", "api"),
            CertKind::Workload
        )
        .is_ok()
    );
    // Our issuer refuses outright...
    let refused = agent.issue_workload(
        &"default".parse().unwrap(),
        &"db".parse().unwrap(),
        t0(),
        Duration::hours(1),
    );
    assert_eq!(
        refused.unwrap_err(),
        IssueError::ServiceNotAllowed("db".into())
    );
    // ...and a leaf minted with the agent's key anyway is caught by the verifier.
    let (leaf, _) = Forge::leaf(&["spiffe://rhizome.local/ns/default/svc/db"])
        .sign(agent.cert(), &agent_key(&agent));
    let err = verify_chain(
        &mesh.bundle,
        &leaf,
        agent.chain(),
        now(),
        CertKind::Workload,
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::ServiceNotAllowed { ref service, .. } if service.as_str() == "db"),
        "{err}"
    );
}

#[test]
fn malformed_allowed_services_extension_is_rejected() {
    let mesh = Mesh::new(TD);
    let mut bad = Forge::agent("spiffe://rhizome.local", "n", 0, "bad agent");
    bad.extensions
        .push(rcgen::CustomExtension::from_oid_content(
            ALLOWED_SERVICES_OID,
            vec![0x30, 0x05, 0x0c],
        ));
    let (agent_cert, agent_key) = bad.sign(mesh.root.cert(), mesh.root.key());
    let (leaf, _) =
        Forge::leaf(&["spiffe://rhizome.local/ns/default/svc/web"]).sign(&agent_cert, &agent_key);
    let err = verify_chain(
        &mesh.bundle,
        &leaf,
        &[agent_cert],
        now(),
        CertKind::Workload,
    );
    assert_eq!(err, Err(VerifyError::MalformedAllowedServices));
}

#[test]
fn wrong_kinds_are_rejected_both_ways() {
    let mesh = Mesh::new(TD);
    let agent = mesh.agent("n", None);
    let web = workload(&agent, "default", "web");
    let me = agent.issue_agent_leaf(t0(), Duration::hours(1)).unwrap();
    let op = mesh.operator("alice");
    use CertKind::*;
    for (cred, expected, found) in [
        (&me, Workload, Agent),
        (&op, Workload, Operator),
        (&web, Agent, Workload),
        (&web, Operator, Workload),
        (&op, Agent, Operator),
        (&me, Operator, Agent),
    ] {
        assert_eq!(
            check(&mesh.bundle, cred, expected),
            Err(VerifyError::WrongKind { expected, found })
        );
    }
}

#[test]
fn rogue_sub_ca_under_an_agent_violates_path_length() {
    let mesh = Mesh::new(TD);
    let agent = mesh.agent("n", None);
    let (rogue, rogue_key) = Forge::agent("spiffe://rhizome.local", "n", 0, "rogue")
        .sign(agent.cert(), &agent_key(&agent));
    let (leaf, _) =
        Forge::leaf(&["spiffe://rhizome.local/ns/default/svc/web"]).sign(&rogue, &rogue_key);
    let err = verify_chain(
        &mesh.bundle,
        &leaf,
        &[rogue, agent.cert().clone()],
        now(),
        CertKind::Workload,
    );
    assert_eq!(err, Err(VerifyError::PathLenViolated));
}

#[test]
fn intermediate_without_agent_id_is_rejected() {
    let mesh = Mesh::new(TD);
    let web_uri = "spiffe://rhizome.local/ns/default/svc/web";
    // A root-issued CA with no SPIFFE id at all.
    let (anon, anon_key) =
        Forge::ca(&[], 0, "anonymous sub-ca").sign(mesh.root.cert(), mesh.root.key());
    let (leaf, _) = Forge::leaf(&[web_uri]).sign(&anon, &anon_key);
    assert_eq!(
        verify_chain(&mesh.bundle, &leaf, &[anon], now(), CertKind::Workload),
        Err(VerifyError::IssuerMissingId)
    );
    // A CA carrying a workload id instead of an agent binding: a signing certificate's id
    // must not have a path (X509-SVID 3.2).
    let (odd, odd_key) =
        Forge::ca(&[web_uri], 0, "odd sub-ca").sign(mesh.root.cert(), mesh.root.key());
    let (leaf, _) = Forge::leaf(&[web_uri]).sign(&odd, &odd_key);
    assert_eq!(
        verify_chain(&mesh.bundle, &leaf, &[odd], now(), CertKind::Workload),
        Err(VerifyError::Svid(rhizome_ca::SvidRule::SigningIdWithPath))
    );
    // A CA with the trust domain's id but no agent binding (a sub-root) is no agent.
    let (sub, sub_key) = Forge::ca(&["spiffe://rhizome.local"], 0, "sub-root")
        .sign(mesh.root.cert(), mesh.root.key());
    let (leaf, _) = Forge::leaf(&[web_uri]).sign(&sub, &sub_key);
    assert_eq!(
        verify_chain(&mesh.bundle, &leaf, &[sub], now(), CertKind::Workload),
        Err(VerifyError::IssuerNotAgent)
    );
    // A workload leaf straight from the root.
    let (leaf, _) = Forge::leaf(&[web_uri]).sign(mesh.root.cert(), mesh.root.key());
    assert_eq!(
        verify_chain(&mesh.bundle, &leaf, &[], now(), CertKind::Workload),
        Err(VerifyError::IssuerNotAgent)
    );
}

#[test]
fn agents_cannot_mint_operators_or_other_agents() {
    let mesh = Mesh::new(TD);
    let agent = mesh.agent("node-a", None);
    let key = agent_key(&agent);
    let (op, _) =
        Forge::leaf(&["spiffe://rhizome.local/operator/mallory"]).sign(agent.cert(), &key);
    assert_eq!(
        verify_chain(&mesh.bundle, &op, agent.chain(), now(), CertKind::Operator),
        Err(VerifyError::OperatorNotRootIssued)
    );
    let (other, _) = Forge::leaf(&["spiffe://rhizome.local/agent/node-b"]).sign(agent.cert(), &key);
    let err =
        verify_chain(&mesh.bundle, &other, agent.chain(), now(), CertKind::Agent).unwrap_err();
    assert!(matches!(err, VerifyError::NodeMismatch { .. }), "{err}");
}

#[test]
fn spiffe_id_count_must_be_exactly_one() {
    let mesh = Mesh::new(TD);
    let agent = mesh.agent("n", None);
    let key = agent_key(&agent);
    let (none, _) = Forge::leaf(&["https://example.org/x"]).sign(agent.cert(), &key);
    assert_eq!(
        verify_chain(
            &mesh.bundle,
            &none,
            agent.chain(),
            now(),
            CertKind::Workload
        ),
        Err(VerifyError::NoSpiffeId)
    );
    let (two, _) = Forge::leaf(&[
        "spiffe://rhizome.local/ns/default/svc/web",
        "spiffe://rhizome.local/ns/default/svc/db",
    ])
    .sign(agent.cert(), &key);
    assert_eq!(
        verify_chain(&mesh.bundle, &two, agent.chain(), now(), CertKind::Workload),
        Err(VerifyError::MultipleSpiffeIds(2))
    );
    let (bad, _) = Forge::leaf(&["spiffe://rhizome.local/jobs/x"]).sign(agent.cert(), &key);
    let err =
        verify_chain(&mesh.bundle, &bad, agent.chain(), now(), CertKind::Workload).unwrap_err();
    assert!(matches!(err, VerifyError::BadSpiffeId(_)), "{err}");
}

#[test]
fn ca_presented_as_end_entity_and_tampered_chain_are_rejected() {
    let mesh = Mesh::new(TD);
    let agent = mesh.agent("n", None);
    let err = verify_chain(&mesh.bundle, agent.cert(), &[], now(), CertKind::Agent);
    assert_eq!(err, Err(VerifyError::CaAsEndEntity));
    let web = workload(&agent, "default", "web");
    let mut bytes = web.leaf().to_vec();
    let n = bytes.len();
    bytes[n - 5] ^= 0x01; // inside the signature
    let err = verify_chain(
        &mesh.bundle,
        &bytes.into(),
        &web.chain()[1..],
        now(),
        CertKind::Workload,
    )
    .unwrap_err();
    assert_eq!(err, VerifyError::BadSignature);
    let err = verify_chain(
        &mesh.bundle,
        &vec![1u8, 2, 3].into(),
        &[],
        now(),
        CertKind::Workload,
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Malformed(_)), "{err}");
}

#[test]
fn agent_under_another_agent_is_an_unexpected_ca() {
    let mesh = Mesh::new(TD);
    // A forged "agent" allowed one CA below it, issuing a real-looking agent intermediate.
    let (upper, upper_key) = Forge::agent("spiffe://rhizome.local", "upper", 1, "upper")
        .sign(mesh.root.cert(), mesh.root.key());
    let (lower, lower_key) =
        Forge::agent("spiffe://rhizome.local", "lower", 0, "lower").sign(&upper, &upper_key);
    let (leaf, _) =
        Forge::leaf(&["spiffe://rhizome.local/ns/default/svc/web"]).sign(&lower, &lower_key);
    let err = verify_chain(
        &mesh.bundle,
        &leaf,
        &[lower, upper],
        now(),
        CertKind::Workload,
    );
    assert_eq!(err, Err(VerifyError::UnexpectedCa));
}

fn revoking(
    bundle: &rhizome_ca::TrustBundle,
    r: &[rhizome_ca::Revocation],
) -> rhizome_ca::TrustBundle {
    let mut set = rhizome_ca::RevocationSet::new();
    for one in r {
        set.insert(one.clone());
    }
    bundle.with_revocations(std::sync::Arc::new(set))
}

/// A revoked node takes its intermediate, its agent leaf and every workload leaf it issued
/// with it; a certificate revoked by fingerprint (a leaf, an intermediate, an operator) is
/// refused wherever it appears in a chain; other nodes are untouched.
#[test]
fn revoked_chains_are_refused() {
    use rhizome_ca::{Fingerprint, Revocation, Revoked};
    let mesh = Mesh::new(TD);
    let (a, b) = (mesh.agent("node-a", None), mesh.agent("node-b", None));
    let web_a = workload(&a, "default", "web");
    let me_a = a.issue_agent_leaf(t0(), Duration::hours(1)).unwrap();
    let web_b = workload(&b, "default", "web");
    let op = mesh.operator("alice");

    let by_node = revoking(
        &mesh.bundle,
        &[Revocation::new(Some("node-a".parse().unwrap()), None, "stolen", 1).unwrap()],
    );
    let revoked_a = Err(VerifyError::Revoked(Revoked::Node(
        "node-a".parse().unwrap(),
    )));
    assert_eq!(check(&by_node, &web_a, CertKind::Workload), revoked_a);
    assert_eq!(check(&by_node, &me_a, CertKind::Agent), revoked_a);
    assert!(check(&by_node, &web_b, CertKind::Workload).is_ok());
    assert!(check(&by_node, &op, CertKind::Operator).is_ok());
    assert_eq!(
        VerifyError::Revoked(Revoked::Node("node-a".parse().unwrap())).to_string(),
        "revoked: node node-a is revoked"
    );

    // By fingerprint: the intermediate of b (every leaf under it), one leaf of a, an operator.
    let fp_b = Fingerprint::of(&web_b.chain()[1]);
    let fp_leaf = Fingerprint::of(web_a.leaf());
    let fp_op = Fingerprint::of(op.leaf());
    let by_fp = revoking(
        &mesh.bundle,
        &[
            Revocation::new(None, Some(fp_b), "", 1).unwrap(),
            Revocation::new(None, Some(fp_leaf), "", 1).unwrap(),
            Revocation::new(None, Some(fp_op), "", 1).unwrap(),
        ],
    );
    assert_eq!(
        check(&by_fp, &web_b, CertKind::Workload),
        Err(VerifyError::Revoked(Revoked::Certificate(fp_b)))
    );
    assert_eq!(
        check(&by_fp, &web_a, CertKind::Workload),
        Err(VerifyError::Revoked(Revoked::Certificate(fp_leaf)))
    );
    assert_eq!(
        check(&by_fp, &op, CertKind::Operator),
        Err(VerifyError::Revoked(Revoked::Certificate(fp_op)))
    );
    assert!(check(&by_fp, &me_a, CertKind::Agent).is_ok());
    // The library check on a raw chain agrees.
    assert!(by_fp.revocations().check_chain(web_b.chain()).is_err());
    assert!(by_fp.revocations().check_chain(me_a.chain()).is_ok());
}

/// A revocation is an operator-signed statement, checked on the path every operator-signed
/// entry takes (`verify_signed`, operators only): an agent's signature, a signature over other
/// bytes, an operator of another root, and a revoked operator are all refused.
#[test]
fn revocation_statements_are_checked_as_operator_signatures() {
    use rhizome_ca::{Fingerprint, Revocation, SignedError, verify_signed};
    let mesh = Mesh::new(TD);
    let op = mesh.operator("alice");
    let statement = Revocation::new(Some("node-a".parse().unwrap()), None, "leaked", 1_800)
        .unwrap()
        .to_bytes();
    let ops = [CertKind::Operator];
    let signed_by = |cred: &rhizome_ca::Credential, msg: &[u8]| cred.key().sign(msg).unwrap();
    let check_sig =
        |bundle: &rhizome_ca::TrustBundle,
         cred: &rhizome_ca::Credential,
         msg: &[u8],
         sig: &[u8]| { verify_signed(bundle, cred.chain(), now(), &ops, msg, sig) };
    let sig = signed_by(&op, &statement);
    assert_eq!(
        check_sig(&mesh.bundle, &op, &statement, &sig),
        Ok(id("spiffe://rhizome.local/operator/alice"))
    );
    assert_eq!(
        Revocation::from_bytes(&statement)
            .unwrap()
            .node()
            .unwrap()
            .as_str(),
        "node-a"
    );
    // Forged: signed by an agent leaf.
    let me = mesh
        .agent("node-b", None)
        .issue_agent_leaf(t0(), Duration::hours(1))
        .unwrap();
    assert!(matches!(
        check_sig(&mesh.bundle, &me, &statement, &signed_by(&me, &statement)),
        Err(SignedError::Chain(VerifyError::WrongKind { .. }))
    ));
    // Tampered: the signature is over another statement.
    let other = Revocation::new(Some("node-c".parse().unwrap()), None, "", 1)
        .unwrap()
        .to_bytes();
    assert!(matches!(
        check_sig(&mesh.bundle, &op, &other, &sig),
        Err(SignedError::Signature(_))
    ));
    // Garbled signature bytes.
    assert!(check_sig(&mesh.bundle, &op, &statement, &sig[..sig.len() / 2]).is_err());
    // An operator of another mesh with the same trust domain.
    let stranger = Mesh::new(TD).operator("alice");
    assert!(matches!(
        check_sig(
            &mesh.bundle,
            &stranger,
            &statement,
            &signed_by(&stranger, &statement)
        ),
        Err(SignedError::Chain(VerifyError::UnknownIssuer))
    ));
    // A revoked operator.
    let revoked = revoking(
        &mesh.bundle,
        &[Revocation::new(None, Some(Fingerprint::of(op.leaf())), "", 1).unwrap()],
    );
    assert!(matches!(
        check_sig(&revoked, &op, &statement, &sig),
        Err(SignedError::Chain(VerifyError::Revoked(_)))
    ));
}
