//! Leaf renewal swaps certificates in place: a TLS connection opened before the renewal keeps
//! working, a new one is served the new leaf. Real TLS 1.3 over loopback TCP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rhizome_agent::ca::identity::Identity;
use rhizome_agent::ca::renewal::{Schedule, Target, renew_leaf};
use rhizome_agent::config::AgentConfig;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const ALPN: &[u8] = b"test/1";

fn serial_of(certs: &[rustls_pki_types::CertificateDer<'_>]) -> String {
    rhizome_ca::CertInfo::from_der(&certs[0]).unwrap().serial
}

async fn echo_server(identity: Arc<Identity>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(identity.server_config(vec![ALPN.to_vec()]).unwrap());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            tokio::spawn(async move {
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let mut buf = [0u8; 64];
                loop {
                    let n = tls.read(&mut buf).await.unwrap_or(0);
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn connect(
    identity: &Identity,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = identity
        .client_config("default", "api", vec![ALPN.to_vec()])
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("web.default.svc.rhizome.local").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

async fn round_trip(tls: &mut tokio_rustls::client::TlsStream<TcpStream>, msg: &[u8]) {
    tls.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(back, msg);
}

#[tokio::test]
async fn renewal_keeps_open_connections_and_serves_the_new_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let identity =
        Arc::new(Identity::load(&AgentConfig::dev("n1", dir.path().to_path_buf())).unwrap());
    identity.ensure_workload("default", "web").unwrap();
    let addr = echo_server(identity.clone()).await;

    let mut before = connect(&identity, addr).await;
    round_trip(&mut before, b"hello").await;
    let old_serial = serial_of(before.get_ref().1.peer_certificates().unwrap());

    // Nothing is due now; at 95 % of a 72 h life every leaf is.
    let now = OffsetDateTime::now_utc();
    let mut schedule = Schedule::new();
    let mut jitter = || 0.99;
    let (due, next) = schedule.due(&identity, now, &mut jitter);
    assert!(due.is_empty(), "{due:?}");
    let next = next.unwrap();
    assert!(
        next > now + Duration::hours(40) && next < now + Duration::hours(66),
        "{next}"
    );
    let (due, _) = schedule.due(&identity, now + Duration::hours(69), &mut jitter);
    let web = Target::Workload("default".parse().unwrap(), "web".parse().unwrap());
    assert!(
        due.contains(&web) && due.contains(&Target::AgentLeaf),
        "{due:?}"
    );
    assert!(
        !due.contains(&Target::Intermediate),
        "30-day intermediate is young"
    );

    let agent_serial = rhizome_ca::CertInfo::from_der(identity.agent_leaf().leaf())
        .unwrap()
        .serial;
    for target in &due {
        renew_leaf(&identity, target, OffsetDateTime::now_utc()).unwrap();
    }
    assert_ne!(
        rhizome_ca::CertInfo::from_der(identity.agent_leaf().leaf())
            .unwrap()
            .serial,
        agent_serial
    );

    round_trip(&mut before, b"still here").await;
    let mut after = connect(&identity, addr).await;
    round_trip(&mut after, b"new").await;
    let new_serial = serial_of(after.get_ref().1.peer_certificates().unwrap());
    assert_ne!(
        new_serial, old_serial,
        "new handshakes get the renewed leaf"
    );
    assert_eq!(
        serial_of(before.get_ref().1.peer_certificates().unwrap()),
        old_serial,
        "the old connection still runs on the old leaf"
    );
    // Renewed certificates get fresh deadlines: nothing due any more.
    let (due, _) = schedule.due(&identity, OffsetDateTime::now_utc(), &mut jitter);
    assert!(due.is_empty(), "{due:?}");
}

#[test]
fn system_jitter_stays_in_unit_interval() {
    for _ in 0..1000 {
        let j = rhizome_agent::ca::renewal::system_jitter();
        assert!((0.0..1.0).contains(&j), "{j}");
    }
}

/// The rotation's switch on an agent with `ca { dir }`: a new bundle and a new intermediate
/// (issued by the new root, carrying the cross certificate) are picked up from disk, and the
/// re-issued leaves still verify for peers that trust only the old root.
#[test]
fn ca_dir_reload_switches_bundle_and_intermediate() {
    use rhizome_ca::{CertKind, RootCa, TrustBundle};
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let old = RootCa::generate("rot.test".parse().unwrap(), now, Duration::days(365)).unwrap();
    let agent_dir = dir.path().join("n1-ca");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let first = old
        .issue_agent(&"n1".parse().unwrap(), None, now, Duration::days(10))
        .unwrap();
    std::fs::write(agent_dir.join("agent.pem"), first.chain_pem()).unwrap();
    std::fs::write(agent_dir.join("agent.key"), first.key_pem()).unwrap();
    std::fs::write(agent_dir.join("bundle.pem"), old.cert_pem()).unwrap();
    let src = format!(
        "node_name = \"n1\"\ndata_dir = \"{}/data\"\nbind_addr = \"127.0.0.1\"\nca {{\n  dir = \"{}\"\n}}\n",
        dir.path().display(),
        agent_dir.display()
    );
    let identity = Identity::load(&AgentConfig::from_str(&src, "t.hcl").unwrap()).unwrap();
    identity.ensure_workload("default", "web").unwrap();
    rhizome_agent::ca::renewal::reload_ca_dir(&identity, &agent_dir).unwrap();
    assert_eq!(
        identity.bundle().load().roots().len(),
        1,
        "unchanged files: nothing happens"
    );

    let mut new = RootCa::generate("rot.test".parse().unwrap(), now, Duration::days(365)).unwrap();
    new.set_cross_signed(vec![
        old.cross_sign(&new, now, Duration::days(365)).unwrap(),
    ]);
    let both = TrustBundle::new(vec![old.cert().clone(), new.cert().clone()]).unwrap();
    std::fs::write(agent_dir.join("bundle.pem"), both.to_pem()).unwrap();
    rhizome_agent::ca::renewal::reload_ca_dir(&identity, &agent_dir).unwrap();
    assert_eq!(
        identity.bundle().load().roots().len(),
        2,
        "bundle-add picked up"
    );

    let second = new
        .issue_agent(&"n1".parse().unwrap(), None, now, Duration::days(20))
        .unwrap();
    std::fs::write(agent_dir.join("agent.pem"), second.chain_pem()).unwrap();
    let half = rhizome_agent::ca::renewal::reload_ca_dir(&identity, &agent_dir);
    assert!(
        half.is_err(),
        "a half-moved pair (new chain, old key) is refused"
    );
    assert_eq!(identity.agent_ca().cert(), first.cert());
    std::fs::write(agent_dir.join("agent.key"), second.key_pem()).unwrap();
    rhizome_agent::ca::renewal::reload_ca_dir(&identity, &agent_dir).unwrap();
    assert_eq!(
        identity.agent_ca().cert(),
        second.cert(),
        "switched to the new intermediate"
    );

    let web = identity.ensure_workload("default", "web").unwrap();
    assert_eq!(
        &web.credential.chain()[1],
        second.cert(),
        "leaves re-issued from the new one"
    );
    let old_only = TrustBundle::new(vec![old.cert().clone()]).unwrap();
    let (leaf, rest) = web.credential.chain().split_first().unwrap();
    let id = rhizome_ca::verify_chain_with(
        &old_only,
        leaf,
        rest,
        rhizome_ca::unix_time(OffsetDateTime::now_utc()),
        &[CertKind::Workload],
        rhizome_ca::Usage::Client,
    )
    .unwrap();
    assert_eq!(id.to_string(), "spiffe://rot.test/ns/default/svc/web");
}

/// A `--dev` agent renews its intermediate from its in-memory root, and re-issues its leaves.
#[tokio::test]
async fn dev_agent_renews_its_intermediate_locally() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AgentConfig::dev("dev1", dir.path().join("data"));
    cfg.ports.http = 0;
    cfg.ports.gossip = 0;
    cfg.ports.data = 0;
    let agent = rhizome_agent::app::Agent::start(cfg).await.unwrap();
    let identity = agent.handles().identity.clone();
    let before = identity.agent_ca().cert().clone();
    let leaf_before = identity.agent_leaf().leaf().clone();
    rhizome_agent::ca::renewal::renew_intermediate(&agent.handles().renewal, None)
        .await
        .unwrap();
    assert_ne!(identity.agent_ca().cert(), &before);
    let leaf = identity.agent_leaf();
    assert_ne!(leaf.leaf(), &leaf_before, "leaves re-issued");
    assert_eq!(&leaf.chain()[1], identity.agent_ca().cert());
    let (end, rest) = leaf.chain().split_first().unwrap();
    rhizome_ca::verify_chain_with(
        &identity.bundle().load(),
        end,
        rest,
        rhizome_ca::unix_time(OffsetDateTime::now_utc()),
        &[rhizome_ca::CertKind::Agent],
        rhizome_ca::Usage::Client,
    )
    .unwrap();
    agent.shutdown().await.unwrap();
}
