//! The server agent refuses tunnels from workloads of another trust domain, and accepts the
//! same request from a workload of its own mesh (a raw QUIC client plays the client agent).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use proxy_support::*;
use rhizome_agent::proxy::wire::{ALPN_QUIC, Request, Status};
use rhizome_ca::{
    CertKind, ClientCredential, Credential, SharedBundle, SpiffeVerifier, TrustBundle,
};
use std::sync::Arc;
use time::OffsetDateTime;

fn workload(ca: &rhizome_agent::testkit::TestCa, node: &str, svc: &str) -> Credential {
    let now = OffsetDateTime::now_utc();
    let agent = ca
        .root
        .issue_agent(
            &node.parse().unwrap(),
            None,
            now,
            rhizome_ca::DEFAULT_AGENT_TTL,
        )
        .unwrap();
    agent
        .issue_workload(
            &"default".parse().unwrap(),
            &svc.parse().unwrap(),
            now,
            rhizome_ca::DEFAULT_LEAF_TTL,
        )
        .unwrap()
}

/// Connects to `server` as `leaf` (trusting the mesh's root) and asks for db-1.
async fn ask(
    mesh: &Mesh,
    server: std::net::SocketAddr,
    leaf: &Credential,
) -> anyhow::Result<Status> {
    let bundle = SharedBundle::new(TrustBundle::new(vec![mesh.ca.root.cert().clone()])?);
    let tls = rhizome_ca::client_config(
        SpiffeVerifier::new(bundle, &[CertKind::Workload]),
        ClientCredential::new(leaf)?,
        vec![ALPN_QUIC.to_vec()],
        Arc::new(rustls::time_provider::DefaultTimeProvider),
    )?;
    let cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
    ));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let conn = endpoint
        .connect_with(cfg, server, "db.default.svc.test.mesh")?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let req = Request {
        namespace: "default".into(),
        service: "db".into(),
        instance: "db-1".into(),
    };
    send.write_all(&req.encode()?).await?;
    let mut resp = [0u8; 2];
    recv.read_exact(&mut resp).await?;
    Ok(Status::decode(resp)?)
}

#[tokio::test]
async fn a_leaf_from_another_trust_domain_is_refused() {
    let mesh = Mesh::new("test.mesh");
    let echo = echo_server().await;
    let b = mesh
        .start("b", &service("db", "db-1", echo.port(), &[]))
        .await;
    rules(&b, &[&allow("db", "web")]);
    let data =
        std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), b.handles().config.ports.data);

    let own = workload(&mesh.ca, "x", "web");
    assert_eq!(
        ask(&mesh, data, &own).await.unwrap(),
        Status::Connected,
        "control: our mesh's leaf is served"
    );

    let foreign_ca = rhizome_agent::testkit::TestCa::new("evil.mesh").unwrap();
    let foreign = workload(&foreign_ca, "x", "web");
    let refused = ask(&mesh, data, &foreign).await;
    assert!(
        refused.is_err(),
        "the server refused the foreign client certificate: {refused:?}"
    );

    // Same names, same trust domain string, but another root: refused too.
    let impostor_ca = rhizome_agent::testkit::TestCa::new("test.mesh").unwrap();
    let impostor = workload(&impostor_ca, "x", "web");
    assert!(ask(&mesh, data, &impostor).await.is_err());
    b.shutdown().await.unwrap();
}
