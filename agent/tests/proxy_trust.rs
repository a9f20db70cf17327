//! The server agent refuses tunnels from workloads of another trust domain, and accepts the
//! same request from a workload of its own mesh (a raw QUIC client plays the client agent).
//! An operator's revocation of an agent cuts its open connections in both directions,
//! refuses new ones and its gossip entries, and leaves the rest of the mesh working, over
//! both transports.
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

mod revocation {
    use super::*;
    use base64::Engine as _;
    use rhizome_agent::api::types::{RevocationAnswer, RevocationRequest, RevocationView};
    use rhizome_agent::app::Agent;
    use rhizome_agent::catalog::Health;
    use rhizome_agent::client::Client;
    use rhizome_agent::gossip::authority::{CredentialSigner, operator_entry};
    use rhizome_gossip::hlc::Hlc;
    use rhizome_gossip::state::{Entry, EntrySigner as _, Key, Rejection};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    const LIMIT: Duration = Duration::from_secs(20);

    /// Opens a connection through the upstream `port`, checks one echo, then waits in the
    /// background for it to end; the task yields when it ended.
    async fn hold_open(
        port: u16,
    ) -> (
        tokio::task::JoinHandle<Instant>,
        tokio::sync::mpsc::Sender<()>,
    ) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        // Each message on `poke` sends one more echo, to show the connection still carries.
        let (poke, mut pokes) = tokio::sync::mpsc::channel::<()>(1);
        let task = tokio::spawn(async move {
            let mut b = [0u8; 64];
            loop {
                tokio::select! {
                    got = s.read(&mut b) => match got {
                        Ok(0) | Err(_) => return Instant::now(),
                        Ok(_) => {}
                    },
                    Some(()) = pokes.recv() => {
                        if s.write_all(b"more").await.is_err() {
                            return Instant::now();
                        }
                    }
                }
            }
        });
        (task, poke)
    }

    async fn post_revocation(agent: &Agent, entry: &Entry) -> RevocationAnswer {
        let addr = agent.http_addr().to_string();
        let request = RevocationRequest {
            entry: base64::engine::general_purpose::STANDARD.encode(entry.to_bytes()),
        };
        tokio::task::spawn_blocking(move || {
            Client::new(addr).send("POST", "/v1/ca/revocations", &request)
        })
        .await
        .unwrap()
        .unwrap()
    }

    async fn list(agent: &Agent) -> Vec<RevocationView> {
        let addr = agent.http_addr().to_string();
        tokio::task::spawn_blocking(move || Client::new(addr).get("/v1/ca/revocations"))
            .await
            .unwrap()
            .unwrap()
    }

    fn refusals(agent: &Agent, point: &str) -> u64 {
        let text = metrics(agent);
        let needle =
            format!("rhizome_trust_refusals_total{{point=\"{point}\",reason=\"revoked\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    async fn waited(task: tokio::task::JoinHandle<Instant>, what: &str) -> Instant {
        tokio::time::timeout(LIMIT, task)
            .await
            .unwrap_or_else(|_| panic!("{what}: still open after {LIMIT:?}"))
            .unwrap()
    }

    /// a (web) reaches db on b and api on c; b (db) reaches api on c. The operator revokes
    /// node b at agent a. Then: a's open connection to b and b's open connection to c are
    /// cut (the time is printed), new connections to and from b fail, an entry b signs is
    /// refused and b's instances leave the catalogs, while web -> api keeps working (the
    /// open connection and new ones).
    async fn revoke_under_traffic(transport: &str) {
        let mesh = Mesh::new("test.mesh");
        let extra = format!("transport = \"{transport}\"\n");
        let echo = echo_server().await;
        let (a_db, a_api, b_api) = (free_port(), free_port(), free_port());
        let c = mesh
            .start(
                "c",
                &format!("{extra}{}", service("api", "api-1", echo.port(), &[])),
            )
            .await;
        let b = mesh
            .start_joined(
                "b",
                &[&c],
                &format!(
                    "{extra}{}",
                    service(
                        "db",
                        "db-1",
                        echo.port(),
                        &[Up {
                            destination: "api",
                            port: b_api
                        }]
                    )
                ),
            )
            .await;
        let a = mesh
            .start_joined(
                "a",
                &[&c],
                &format!(
                    "{extra}{}",
                    service(
                        "web",
                        "web-1",
                        echo.port(),
                        &[
                            Up {
                                destination: "db",
                                port: a_db
                            },
                            Up {
                                destination: "api",
                                port: a_api
                            },
                        ]
                    )
                ),
            )
            .await;
        for agent in [&a, &b, &c] {
            rules(agent, &[&allow("db", "web"), &allow_two("api")]);
        }
        wait_catalog(&a, "default", "db", 1, Health::Passing).await;
        wait_catalog(&a, "default", "api", 1, Health::Passing).await;
        wait_catalog(&b, "default", "api", 1, Health::Passing).await;

        let (a_to_b, _) = hold_open(a_db).await;
        let (b_to_c, _) = hold_open(b_api).await;
        let (a_to_c, poke) = hold_open(a_api).await;

        let dir = mesh.ca.operator_dir(mesh.dir.path(), "alice").unwrap();
        let cred = rhizome_ca::Credential::from_pem(
            &std::fs::read_to_string(dir.join("chain.pem")).unwrap(),
            &std::fs::read_to_string(dir.join("key.pem")).unwrap(),
        )
        .unwrap();
        let revocation =
            rhizome_ca::Revocation::new(Some("b".parse().unwrap()), None, "key stolen", 1).unwrap();
        let key: Key = "revoked/b".parse().unwrap();
        let entry = operator_entry(
            &cred,
            key,
            revocation.to_bytes(),
            false,
            rhizome_agent::gossip::now_ms(),
        )
        .unwrap();
        // An agent's signature over the same revocation is refused.
        let b_leaf = b.handles().identity.agent_leaf();
        let mut forged = entry.clone();
        forged.origin = "b".parse().unwrap();
        forged.signer = CredentialSigner::by_fingerprint(&b_leaf).signer();
        forged.signature = CredentialSigner::by_fingerprint(&b_leaf)
            .sign(&forged.signing_bytes())
            .unwrap();
        assert_eq!(
            a.handles().replica.submit(forged),
            Err(Rejection::WrongOwner)
        );

        let revoked_at = Instant::now();
        let answer = post_revocation(&a, &entry).await;
        assert_eq!(answer.key, "revoked/b");
        assert_eq!(answer.revocations.len(), 1);

        let cut_a = waited(a_to_b, "a -> b (revoked server)").await;
        let cut_b = waited(b_to_c, "b -> c (revoked client)").await;
        println!(
            "transport {transport}: revocation to cut: a->b (revoked server, local) {} ms, \
             b->c (revoked client, by gossip) {} ms",
            cut_a.duration_since(revoked_at).as_millis(),
            cut_b.duration_since(revoked_at).as_millis()
        );

        // Every agent holds the revocation (c and b by gossip).
        for agent in [&b, &c] {
            let agent_list = tokio::time::timeout(LIMIT, async {
                loop {
                    let l = list(agent).await;
                    if !l.is_empty() {
                        return l;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .unwrap();
            assert_eq!(agent_list[0].node.as_deref(), Some("b"));
            assert_eq!(agent_list[0].reason, "key stolen");
            assert_eq!(agent_list[0].revoked_by, "alice");
        }

        // The rest keeps working: the open a -> c connection and a new one.
        poke.send(()).await.unwrap();
        assert_eq!(
            roundtrip(a_api, b"still here").await.unwrap(),
            b"still here"
        );
        assert!(!a_to_c.is_finished(), "a -> c was not cut");

        // New connections to b and from b fail.
        assert!(
            roundtrip(a_db, b"x")
                .await
                .map(|v| v.is_empty())
                .unwrap_or(true)
        );
        assert!(
            roundtrip(b_api, b"x")
                .await
                .map(|v| v.is_empty())
                .unwrap_or(true)
        );
        // c refused b's new handshake because b is revoked (counted by reason).
        eventually("c counted b's refused handshake", || {
            refusals(&c, "proxy_inbound") > 0
        })
        .await;

        // b's instances left the catalogs; an entry b signs is refused and counted.
        wait_catalog(&a, "default", "db", 0, Health::Passing).await;
        wait_catalog(&c, "default", "db", 0, Health::Passing).await;
        let before = refusals(&a, "gossip");
        let mut late = Entry {
            key: "catalog/b/db-2".parse().unwrap(),
            value: b"{}".to_vec(),
            origin: "b".parse().unwrap(),
            hlc: Hlc::new(rhizome_agent::gossip::now_ms(), 0),
            tombstone: false,
            signer: CredentialSigner::by_fingerprint(&b_leaf).signer(),
            signature: vec![],
        };
        late.signature = CredentialSigner::by_fingerprint(&b_leaf)
            .sign(&late.signing_bytes())
            .unwrap();
        assert_eq!(
            a.handles().replica.submit(late),
            Err(Rejection::UnknownSigner)
        );
        assert!(refusals(&a, "gossip") > before);

        // The revocation survives a restart of c (stored), and is still enforced.
        drop(a_to_c);
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
        c.shutdown().await.unwrap();
        let c = Agent::start(mesh.config("c", &extra)).await.unwrap();
        let after = list(&c).await;
        assert_eq!(after.len(), 1, "the revocation was kept in the store");
        assert!(
            c.handles()
                .identity
                .bundle()
                .load()
                .revocations()
                .is_node_revoked(&"b".parse().unwrap())
        );
        c.shutdown().await.unwrap();
    }

    /// b's trust bundle drops the root a chains to (a rotation's last step done too early, or
    /// a root withdrawn): a's open connection into b is cut at once and new ones are refused,
    /// pooled connection and resumable TLS session notwithstanding.
    async fn root_removed_under_traffic(transport: &str) {
        let mesh = Mesh::new("test.mesh");
        let extra = format!("transport = \"{transport}\"\n");
        let (a, b, port) = web_to_db(&mesh, &extra, &extra).await;
        rules(&b, &[&allow("db", "web")]);
        assert_eq!(roundtrip(port, b"warm").await.unwrap(), b"warm");
        let (open, _) = hold_open(port).await;

        let other = rhizome_agent::testkit::TestCa::new("test.mesh").unwrap();
        let changed_at = Instant::now();
        b.handles()
            .identity
            .bundle()
            .store(TrustBundle::new(vec![other.root.cert().clone()]).unwrap());
        let cut = waited(open, "a -> b after b dropped a's root").await;
        println!(
            "transport {transport}: root removed to cut: {} ms",
            cut.duration_since(changed_at).as_millis()
        );
        for _ in 0..3 {
            assert!(
                roundtrip(port, b"x")
                    .await
                    .map(|v| v.is_empty())
                    .unwrap_or(true),
                "a new connection is refused"
            );
        }
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn removing_a_root_cuts_live_quic_connections() {
        root_removed_under_traffic("quic").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn removing_a_root_cuts_live_tls_connections() {
        root_removed_under_traffic("tls").await;
    }

    /// `Sources` db and web allowed into `dst`.
    fn allow_two(dst: &str) -> String {
        format!(
            "Kind = \"service-intentions\"\nName = \"{dst}\"\nSources = [\n  {{ Name = \"db\", Action = \"allow\" }},\n  {{ Name = \"web\", Action = \"allow\" }},\n]\n"
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revoking_an_agent_under_quic_traffic() {
        revoke_under_traffic("quic").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revoking_an_agent_under_tls_traffic() {
        revoke_under_traffic("tls").await;
    }
}
