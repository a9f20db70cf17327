//! Two real agents on loopback: B joins with a token through signer A's data port, bad
//! tokens are refused with the reason, and a joined agent renews its intermediate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rhizome_agent::api::types::CertStatus;
use rhizome_agent::app::Agent;
use rhizome_agent::client::Client;
use rhizome_agent::config::AgentConfig;
use rhizome_ca::{CertKind, Claims, NodePattern, RootCa, ServiceName, TokenId, TrustBundle};
use std::net::SocketAddr;
use std::path::Path;
use time::{Duration, OffsetDateTime};

const TD: &str = "join.test";

fn root_dir(dir: &Path) -> RootCa {
    let root = RootCa::generate(
        TD.parse().unwrap(),
        OffsetDateTime::now_utc(),
        Duration::days(30),
    )
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("root.pem"), root.cert_pem()).unwrap();
    std::fs::write(dir.join("root.key"), root.key_pem()).unwrap();
    root
}

fn base(node: &str, dir: &Path, extra: &str) -> AgentConfig {
    let src = format!(
        "node_name = \"{node}\"\ndata_dir = \"{}/{node}-data\"\nbind_addr = \"127.0.0.1\"\n\
         ports {{\n  http = 0\n  gossip = 0\n  data = 0\n}}\n\
         service {{\n  name = \"web\"\n  port = 8080\n}}\n{extra}",
        dir.display()
    );
    AgentConfig::from_str(&src, "test.hcl").unwrap()
}

async fn signer(dir: &Path) -> (Agent, RootCa, SocketAddr) {
    let root = root_dir(&dir.join("root"));
    let cfg = base(
        "signer-a",
        dir,
        &format!(
            "ca {{\n  signer = true\n  root_dir = \"{}\"\n}}\n",
            dir.join("root").display()
        ),
    );
    let a = Agent::start(cfg).await.unwrap();
    let addr = a.handles().config.data_addr();
    assert_ne!(addr.port(), 0, "signers bind the TCP data port");
    (a, root, addr)
}

fn token(root: &RootCa, pattern: &str, ttl: Duration, max_uses: Option<u32>) -> String {
    Claims {
        id: TokenId::random().unwrap(),
        expires: OffsetDateTime::now_utc() + ttl,
        node_pattern: pattern.parse::<NodePattern>().unwrap(),
        services: Some(vec!["web".parse::<ServiceName>().unwrap()]),
        root: root.fingerprint(),
        max_uses,
    }
    .sign(root)
    .unwrap()
}

fn joiner(node: &str, dir: &Path, token: &str, signer: SocketAddr) -> AgentConfig {
    base(
        node,
        dir,
        &format!("ca {{\n  join_token = \"{token}\"\n  signer_addrs = [\"{signer}\"]\n}}\n"),
    )
}

async fn join_error(cfg: AgentConfig) -> String {
    match Agent::start(cfg).await {
        Ok(_) => panic!("the join should have been refused"),
        Err(e) => format!("{e:#}"),
    }
}

fn verify_as_agent(
    bundle: &TrustBundle,
    chain: &[rustls_pki_types::CertificateDer<'static>],
    kind: CertKind,
) -> String {
    let (leaf, rest) = chain.split_first().unwrap();
    rhizome_ca::verify_chain_with(
        bundle,
        leaf,
        rest,
        rhizome_ca::unix_time(OffsetDateTime::now_utc()),
        &[kind],
        rhizome_ca::Usage::Client,
    )
    .unwrap()
    .to_string()
}

#[tokio::test]
async fn agent_joins_through_a_signer_and_renews_its_intermediate() {
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    let (a, root, addr) = signer(d).await;
    let a_bundle = a.handles().identity.bundle().load();

    let b = Agent::start(joiner(
        "web-1",
        d,
        &token(&root, "web-*", Duration::hours(1), Some(1)),
        addr,
    ))
    .await
    .unwrap();
    let id = &b.handles().identity;
    let ca = id.agent_ca();
    assert_eq!(ca.id().to_string(), format!("spiffe://{TD}/agent/web-1"));
    assert_eq!(
        ca.allowed_services().unwrap()[0].as_str(),
        "web",
        "the token's services"
    );
    assert_eq!(id.bundle().load().fingerprints(), vec![root.fingerprint()]);
    // B's leaves verify against A's bundle.
    let web = id.ensure_workload("default", "web").unwrap();
    assert_eq!(
        verify_as_agent(&a_bundle, web.credential.chain(), CertKind::Workload),
        format!("spiffe://{TD}/ns/default/svc/web")
    );
    assert_eq!(
        verify_as_agent(&a_bundle, id.agent_leaf().chain(), CertKind::Agent),
        format!("spiffe://{TD}/agent/web-1")
    );
    assert!(
        id.ensure_workload("default", "db").is_err(),
        "db is outside the token's services"
    );

    // Renewal of the intermediate, authenticated by B's agent certificate.
    let old_serial = rhizome_ca::CertInfo::from_der(ca.cert()).unwrap().serial;
    rhizome_agent::ca::renewal::renew_intermediate(&b.handles().renewal, None)
        .await
        .unwrap();
    let renewed = id.agent_ca();
    assert_ne!(
        rhizome_ca::CertInfo::from_der(renewed.cert())
            .unwrap()
            .serial,
        old_serial
    );
    assert_eq!(
        renewed.allowed_services().unwrap()[0].as_str(),
        "web",
        "limits kept"
    );
    assert_eq!(
        verify_as_agent(&a_bundle, id.agent_leaf().chain(), CertKind::Agent),
        format!("spiffe://{TD}/agent/web-1"),
        "leaves re-issued from the renewed intermediate"
    );

    // ca status over the HTTP API lists every certificate.
    let http = b.http_addr();
    let certs: Vec<CertStatus> =
        tokio::task::spawn_blocking(move || Client::new(http.to_string()).get("/v1/ca/status"))
            .await
            .unwrap()
            .unwrap();
    let kinds: Vec<&str> = certs.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, ["root", "intermediate", "agent", "workload"]);
    assert!(
        certs
            .iter()
            .all(|c| c.seconds_to_expiry > 3000 && c.fraction_used < 0.1)
    );
    let table = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rhizome"))
            .args(["--http-addr", &http.to_string(), "ca", "status"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("SECONDS LEFT") && table.contains(&format!("spiffe://{TD}/agent/web-1")),
        "{table}"
    );
    // The expiry gauges appear once the renewal task has made its first pass.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics =
            tokio::task::spawn_blocking(move || Client::new(http.to_string()).get_raw("/metrics"))
                .await
                .unwrap()
                .map(|m| String::from_utf8(m).unwrap())
                .unwrap();
        if metrics.contains("rhizome_cert_expiry_seconds{kind=\"workload\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(metrics.contains("rhizome_cert_expiry_seconds{kind=\"workload\",spiffe_id=\"spiffe://join.test/ns/default/svc/web\""), "{metrics}");
    b.shutdown().await.unwrap();

    // Restarted, B uses the stored intermediate: the used-up token is not needed again.
    let b = Agent::start(joiner(
        "web-1",
        d,
        &token(&root, "web-*", Duration::hours(1), Some(1)),
        addr,
    ))
    .await
    .unwrap();
    assert_eq!(
        rhizome_ca::CertInfo::from_der(b.handles().identity.agent_ca().cert())
            .unwrap()
            .serial,
        rhizome_ca::CertInfo::from_der(renewed.cert())
            .unwrap()
            .serial
    );
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_tokens_are_refused_with_the_reason() {
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    let (a, root, addr) = signer(d).await;

    let expired = token(&root, "*", Duration::seconds(-5), None);
    let err = join_error(joiner("n-expired", d, &expired, addr)).await;
    assert!(err.contains("join token expired"), "{err}");

    let wrong_pattern = token(&root, "db-*", Duration::hours(1), None);
    let err = join_error(joiner("web-2", d, &wrong_pattern, addr)).await;
    assert!(
        err.contains("does not match the token's pattern db-*"),
        "{err}"
    );

    // Altered: the claims are re-encoded with a wider pattern, the signature kept.
    let good = token(&root, "db-*", Duration::hours(1), None);
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = String::from_utf8(b64.decode(&parts[1]).unwrap()).unwrap();
    parts[1] = b64.encode(claims.replace("\"db-*\"", "\"*\""));
    let err = join_error(joiner("web-3", d, &parts.join("."), addr)).await;
    assert!(err.contains("signature is invalid"), "{err}");

    let once = token(&root, "once-*", Duration::hours(1), Some(1));
    let first = Agent::start(joiner("once-1", d, &once, addr))
        .await
        .unwrap();
    first.shutdown().await.unwrap();
    let err = join_error(joiner("once-2", d, &once, addr)).await;
    assert!(err.contains("used up (1 use(s) allowed)"), "{err}");

    // A token of another mesh pins a root this signer cannot prove.
    let other = RootCa::generate(
        TD.parse().unwrap(),
        OffsetDateTime::now_utc(),
        Duration::days(1),
    )
    .unwrap();
    let foreign = token(&other, "*", Duration::hours(1), None);
    let err = join_error(joiner("web-4", d, &foreign, addr)).await;
    assert!(
        err.contains("does not prove the root pinned by the token"),
        "{err}"
    );

    let err = join_error(joiner("web-5", d, "rhz1.garbage", addr)).await;
    assert!(err.contains("malformed join token"), "{err}");
    a.shutdown().await.unwrap();
}

/// A signer whose root directory is switched to a new root (rotation) issues itself a new
/// intermediate under it at restart, and joins with tokens of the new root work.
#[tokio::test]
async fn signer_follows_a_rotated_root_dir() {
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    let (a, old, _) = signer(d).await;
    let first = a.handles().identity.agent_ca().cert().clone();
    a.shutdown().await.unwrap();

    let now = OffsetDateTime::now_utc();
    let mut new = RootCa::generate(TD.parse().unwrap(), now, Duration::days(30)).unwrap();
    let cross = old.cross_sign(&new, now, Duration::days(30)).unwrap();
    new.set_cross_signed(vec![cross.clone()]);
    let dir = d.join("root");
    std::fs::write(dir.join("root.pem"), new.cert_pem()).unwrap();
    std::fs::write(dir.join("root.key"), new.key_pem()).unwrap();
    std::fs::write(dir.join("cross.pem"), rhizome_ca::certs_to_pem(&[cross])).unwrap();
    let both = TrustBundle::new(vec![old.cert().clone(), new.cert().clone()]).unwrap();
    std::fs::write(dir.join("bundle.pem"), both.to_pem()).unwrap();

    let cfg = base(
        "signer-a",
        d,
        &format!(
            "ca {{\n  signer = true\n  root_dir = \"{}\"\n}}\n",
            dir.display()
        ),
    );
    let a = Agent::start(cfg).await.unwrap();
    let ca = a.handles().identity.agent_ca();
    assert_ne!(ca.cert(), &first, "a new intermediate under the new root");
    assert_eq!(ca.chain().len(), 2, "carrying the cross certificate");
    let addr = a.handles().config.data_addr();
    let b = Agent::start(joiner(
        "web-9",
        d,
        &token(&new, "web-*", Duration::hours(1), None),
        addr,
    ))
    .await
    .unwrap();
    assert_eq!(b.handles().identity.bundle().load().roots().len(), 2);
    let old_only = TrustBundle::new(vec![old.cert().clone()]).unwrap();
    assert_eq!(
        verify_as_agent(
            &old_only,
            b.handles().identity.agent_leaf().chain(),
            CertKind::Agent
        ),
        format!("spiffe://{TD}/agent/web-9"),
        "peers still trusting only the old root accept B"
    );
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// `ca { dir, join_token }` (the Kubernetes DaemonSet's config): the first start joins and
/// writes agent.pem, agent.key (0600) and bundle.pem into the directory; later starts load
/// them and need no token use.
#[tokio::test]
async fn join_writes_the_ca_dir_once() {
    use std::os::unix::fs::PermissionsExt as _;
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    let (a, root, addr) = signer(d).await;
    let ca_dir = d.join("k8s-1-ca");
    let once = token(&root, "k8s-*", Duration::hours(1), Some(1));
    let extra = format!(
        "ca {{\n  dir = \"{}\"\n  join_token = \"{once}\"\n  signer_addrs = [\"{addr}\"]\n}}\n",
        ca_dir.display()
    );
    let b = Agent::start(base("k8s-1", d, &extra)).await.unwrap();
    let joined = b.handles().identity.agent_ca().cert().clone();
    b.shutdown().await.unwrap();
    let mode = std::fs::metadata(ca_dir.join("agent.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let on_disk =
        rhizome_ca::certs_from_pem(&std::fs::read_to_string(ca_dir.join("agent.pem")).unwrap())
            .unwrap();
    assert_eq!(on_disk[0], joined);
    assert!(ca_dir.join("bundle.pem").is_file());

    // A fresh data_dir (store lost), same CA directory: no join, the token stays unused.
    std::fs::remove_dir_all(d.join("k8s-1-data")).unwrap();
    let b = Agent::start(base("k8s-1", d, &extra)).await.unwrap();
    assert_eq!(b.handles().identity.agent_ca().cert(), &joined);
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}
