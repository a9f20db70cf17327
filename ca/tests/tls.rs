//! Real rustls handshakes over an in-memory duplex pipe: mutual SPIFFE identities, SNI leaf
//! selection, kind filtering, renewal without dropping connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use rhizome_ca::{CertKind, SharedBundle, SpiffeId, peer_spiffe_id};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

const W: &[CertKind] = &[CertKind::Workload];

#[tokio::test]
async fn both_sides_see_each_others_spiffe_id() {
    let mesh = Mesh::new("rhizome.local");
    let bundle = SharedBundle::new(mesh.bundle.clone());
    let (a, b) = (
        mesh.agent("node-a", None),
        mesh.agent("node-b", Some(&["db", "api"])),
    );
    let web = workload(&a, "default", "web");
    let (db, api) = (workload(&b, "default", "db"), workload(&b, "prod", "api"));
    let server = server_cfg(&bundle, W, serving(&[&db, &api]));
    let client = client_cfg(&bundle, W, &web);

    let (seen_by_client, seen_by_server) = handshake(
        client.clone(),
        server.clone(),
        "db.default.svc.rhizome.local",
    )
    .await
    .unwrap();
    assert_eq!(
        seen_by_client,
        id("spiffe://rhizome.local/ns/default/svc/db")
    );
    assert_eq!(
        seen_by_server,
        id("spiffe://rhizome.local/ns/default/svc/web")
    );
    // SNI chooses the leaf.
    let (seen, _) = handshake(client, server, "api.prod.svc.rhizome.local")
        .await
        .unwrap();
    assert_eq!(seen, id("spiffe://rhizome.local/ns/prod/svc/api"));
}

#[tokio::test]
async fn client_refuses_a_server_that_is_not_the_dialled_service() {
    let mesh = Mesh::new("rhizome.local");
    let bundle = SharedBundle::new(mesh.bundle.clone());
    let a = mesh.agent("node-a", None);
    let (web, db) = (
        workload(&a, "default", "web"),
        workload(&a, "default", "db"),
    );
    // The server answers every name with db's leaf.
    let resolver = serving(&[]);
    resolver.set_default(Some(&db)).unwrap();
    let server = server_cfg(&bundle, W, resolver);
    let client = client_cfg(&bundle, W, &web);
    let err = handshake(
        client.clone(),
        server.clone(),
        "cache.default.svc.rhizome.local",
    )
    .await
    .unwrap_err();
    assert!(
        err.starts_with("client:") && err.contains("UnexpectedPeer"),
        "{err}"
    );
    // A placeholder name is not a mesh name, so any workload identity is accepted.
    assert!(handshake(client, server, "db.mesh.invalid").await.is_ok());
}

#[tokio::test]
async fn server_accepting_workloads_refuses_agent_and_foreign_clients() {
    let mesh = Mesh::new("rhizome.local");
    let bundle = SharedBundle::new(mesh.bundle.clone());
    let a = mesh.agent("node-a", None);
    let db = workload(&a, "default", "db");
    let me = a.issue_agent_leaf(t0(), time::Duration::hours(1)).unwrap();
    let server = server_cfg(&bundle, W, serving(&[&db]));
    let sni = "db.default.svc.rhizome.local";
    let agent_client = client_cfg(&bundle, &[CertKind::Workload], &me);
    let err = handshake(agent_client.clone(), server, sni)
        .await
        .unwrap_err();
    assert!(err.starts_with("server:"), "{err}");
    // The join protocol's signer accepts agents.
    let signer = server_cfg(
        &bundle,
        &[CertKind::Agent, CertKind::Operator],
        serving(&[&db]),
    );
    let (_, seen) = handshake(agent_client, signer, sni).await.unwrap();
    assert_eq!(seen, id("spiffe://rhizome.local/agent/node-a"));
    // A client from another mesh is refused.
    let other = Mesh::new("rhizome.local");
    let foreign = workload(&other.agent("x", None), "default", "web");
    let err = handshake(
        client_cfg(&bundle, W, &foreign),
        server_cfg(&bundle, W, serving(&[&db])),
        sni,
    )
    .await
    .unwrap_err();
    assert!(err.starts_with("server:"), "{err}");
}

#[tokio::test]
async fn renewal_swaps_leaves_without_dropping_open_connections() {
    let mesh = Mesh::new("rhizome.local");
    let bundle = SharedBundle::new(mesh.bundle.clone());
    let a = mesh.agent("node-a", None);
    let (web, db_old) = (
        workload(&a, "default", "web"),
        workload(&a, "default", "db"),
    );
    let resolver = serving(&[&db_old]);
    let server = server_cfg(&bundle, W, resolver.clone());
    let client = client_cfg(&bundle, W, &web);

    // Open a connection with the old leaf.
    let (c_io, s_io) = tokio::io::duplex(64 * 1024);
    let name = rustls_pki_types::ServerName::try_from("db.default.svc.rhizome.local").unwrap();
    let connect = tokio_rustls::TlsConnector::from(client.clone()).connect(name, c_io);
    let accept = tokio_rustls::TlsAcceptor::from(server.clone()).accept(s_io);
    let (c, s) = tokio::join!(connect, accept);
    let (mut c, mut s) = (c.unwrap(), s.unwrap());
    assert_eq!(
        c.get_ref().1.peer_certificates().unwrap()[0],
        *db_old.leaf()
    );

    // Renew: the next handshake gets the new leaf...
    let db_new = workload(&a, "default", "db");
    resolver.insert(&db_new).unwrap();
    let (seen, _) = handshake(
        client.clone(),
        server.clone(),
        "db.default.svc.rhizome.local",
    )
    .await
    .unwrap();
    assert_eq!(seen, id("spiffe://rhizome.local/ns/default/svc/db"));
    let probe = {
        let (c_io, s_io) = tokio::io::duplex(64 * 1024);
        let name = rustls_pki_types::ServerName::try_from("db.default.svc.rhizome.local").unwrap();
        let (c2, s2) = tokio::join!(
            tokio_rustls::TlsConnector::from(client).connect(name, c_io),
            tokio_rustls::TlsAcceptor::from(server).accept(s_io)
        );
        drop(s2.unwrap());
        c2.unwrap().get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(probe, *db_new.leaf());
    assert_ne!(db_new.leaf(), db_old.leaf());
    // ...while the old connection keeps working.
    c.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    assert_eq!(
        peer_spiffe_id(s.get_ref().1.peer_certificates().unwrap()),
        Some(web.id().clone())
    );
}

#[tokio::test]
async fn client_credential_can_be_replaced() {
    let mesh = Mesh::new("rhizome.local");
    let bundle = SharedBundle::new(mesh.bundle.clone());
    let a = mesh.agent("node-a", None);
    let (web, web2, db) = (
        workload(&a, "default", "web"),
        workload(&a, "default", "web"),
        workload(&a, "default", "db"),
    );
    let cred = rhizome_ca::ClientCredential::new(&web).unwrap();
    let v = rhizome_ca::SpiffeVerifier::new(bundle.clone(), W);
    let client = Arc::new(rhizome_ca::client_config(v, cred.clone(), vec![], clock()).unwrap());
    let server = server_cfg(&bundle, W, serving(&[&db]));
    cred.replace(&web2).unwrap();
    let (c_io, s_io) = tokio::io::duplex(64 * 1024);
    let name = rustls_pki_types::ServerName::try_from("db.default.svc.rhizome.local").unwrap();
    let (c, s) = tokio::join!(
        tokio_rustls::TlsConnector::from(client).connect(name, c_io),
        tokio_rustls::TlsAcceptor::from(server).accept(s_io)
    );
    drop(c.unwrap());
    assert_eq!(
        s.unwrap().get_ref().1.peer_certificates().unwrap()[0],
        *web2.leaf()
    );
}

/// The join protocol's TLS: the joiner pins the root by fingerprint and accepts only an
/// agent identity under it; the signer asks for no client certificate.
async fn join_handshake(
    joiner: Arc<rustls::ClientConfig>,
    signer: Arc<rustls::ServerConfig>,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    let (c_io, s_io) = tokio::io::duplex(64 * 1024);
    let name = rustls_pki_types::ServerName::try_from("signer.mesh.invalid").unwrap();
    let (c, s) = tokio::join!(
        tokio_rustls::TlsConnector::from(joiner).connect(name, c_io),
        tokio_rustls::TlsAcceptor::from(signer).accept(s_io)
    );
    let c = c.map_err(|e| format!("joiner: {e}"))?;
    s.map_err(|e| format!("signer: {e}"))?;
    Ok(c.get_ref().1.peer_certificates().unwrap().to_vec())
}

#[tokio::test]
async fn joiner_pins_the_root_by_fingerprint() {
    let mesh = Mesh::new("rhizome.local");
    let a = mesh.agent("signer-1", None);
    let me = a.issue_agent_leaf(t0(), time::Duration::hours(1)).unwrap();
    let alpn = vec![b"rhizome-join/1".to_vec()];
    let signer = Arc::new(
        rhizome_ca::join_server_config(&me, mesh.root.cert(), alpn.clone(), clock()).unwrap(),
    );
    let fp = mesh.root.fingerprint();
    let joiner = Arc::new(rhizome_ca::join_client_config(fp, alpn.clone(), clock()).unwrap());
    let certs = join_handshake(joiner, signer.clone()).await.unwrap();
    assert_eq!(
        peer_spiffe_id(&certs),
        Some(id("spiffe://rhizome.local/agent/signer-1"))
    );
    assert_eq!(
        rhizome_ca::pinned_root(&certs, &fp).as_ref(),
        Some(mesh.root.cert())
    );

    // A token pinning another root refuses this signer.
    let other = Mesh::new("rhizome.local").root.fingerprint();
    let wrong = Arc::new(rhizome_ca::join_client_config(other, alpn.clone(), clock()).unwrap());
    let err = join_handshake(wrong, signer).await.unwrap_err();
    assert!(
        err.starts_with("joiner:") && err.contains("PinnedRootMissing"),
        "{err}"
    );

    // A workload leaf cannot pose as a signer.
    let web = workload(&a, "default", "web");
    let fake = Arc::new(
        rhizome_ca::join_server_config(&web, mesh.root.cert(), alpn.clone(), clock()).unwrap(),
    );
    let joiner = Arc::new(rhizome_ca::join_client_config(fp, alpn, clock()).unwrap());
    let err = join_handshake(joiner, fake).await.unwrap_err();
    assert!(err.contains("WrongKind"), "{err}");
}

/// One handshake whose client also reads from the server (so it receives the session
/// tickets); whether it was a resumption, or the side that failed.
async fn connect_once(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    sni: &str,
) -> Result<bool, String> {
    let (c_io, s_io) = tokio::io::duplex(64 * 1024);
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let connect = tokio_rustls::TlsConnector::from(client).connect(name, c_io);
    let accept = tokio_rustls::TlsAcceptor::from(server).accept(s_io);
    let (c, s) = tokio::join!(connect, accept);
    let mut c = c.map_err(|e| format!("client: {e}"))?;
    let mut s = s.map_err(|e| format!("server: {e}"))?;
    s.write_all(b"pong").await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(c.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
}

/// A revocation refuses the revoked side in both TLS roles, and a session resumed from
/// before the change does not bypass it (rustls does not verify certificates again on
/// resumption, so the session caches must be forgotten).
#[tokio::test]
async fn revocation_refuses_handshakes_and_resumption_does_not_bypass_it() {
    use rhizome_ca::{Revocation, RevocationSet};
    let mesh = Mesh::new("rhizome.local");
    let bundle = SharedBundle::new(mesh.bundle.clone());
    let (a, b) = (mesh.agent("node-a", None), mesh.agent("node-b", None));
    let web = workload(&a, "default", "web");
    let db = workload(&b, "default", "db");
    let server = server_cfg(&bundle, W, serving(&[&db]));
    let client = client_cfg(&bundle, W, &web);
    let sni = "db.default.svc.rhizome.local";
    assert_eq!(
        connect_once(client.clone(), server.clone(), sni).await,
        Ok(false)
    );
    assert_eq!(
        connect_once(client.clone(), server.clone(), sni).await,
        Ok(true),
        "the second connection resumes"
    );
    // node-a (the client's node) is revoked: the server refuses it, resumption or not.
    let mut set = RevocationSet::new();
    set.insert(Revocation::new(Some("node-a".parse().unwrap()), None, "stolen", 1).unwrap());
    bundle.set_revocations(set);
    let err = connect_once(client.clone(), server.clone(), sni)
        .await
        .unwrap_err();
    assert!(err.contains("Revoked"), "{err}");
    // The other way round: the server's leaf is revoked by fingerprint; the client refuses.
    let client_b = client_cfg(&bundle, W, &workload(&b, "default", "api"));
    let server_a = server_cfg(&bundle, W, serving(&[&db]));
    bundle.set_revocations(RevocationSet::new());
    assert_eq!(
        connect_once(client_b.clone(), server_a.clone(), sni).await,
        Ok(false)
    );
    assert_eq!(
        connect_once(client_b.clone(), server_a.clone(), sni).await,
        Ok(true)
    );
    let mut set = RevocationSet::new();
    let fp = rhizome_ca::Fingerprint::of(db.leaf());
    set.insert(Revocation::new(None, Some(fp), "", 1).unwrap());
    bundle.set_revocations(set);
    let err = connect_once(client_b, server_a, sni).await.unwrap_err();
    assert!(err.starts_with("client:"), "{err}");
}
