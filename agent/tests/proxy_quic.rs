//! The data plane end to end on loopback: real agents, real QUIC with mTLS, real sockets.
//! Catalogs and intentions are pushed into the agents directly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use proxy_support::*;
use rhizome_agent::catalog::Health;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A client agent `a` (service web, upstream to db on `port`) and a server agent `b`
/// (service db on the echo backend), each knowing the other's instances.
async fn pair(
    mesh: &Mesh,
    extra_a: &str,
) -> (rhizome_agent::app::Agent, rhizome_agent::app::Agent, u16) {
    pair_with(mesh, extra_a, echo_server().await).await
}

/// [`pair`] with `b`'s db on `echo`.
async fn pair_with(
    mesh: &Mesh,
    extra_a: &str,
    echo: std::net::SocketAddr,
) -> (rhizome_agent::app::Agent, rhizome_agent::app::Agent, u16) {
    let port = free_port();
    let b = mesh
        .start("b", &service("db", "db-1", echo.port(), &[]))
        .await;
    let a = mesh
        .start_joined(
            "a",
            &[&b],
            &format!(
                "{extra_a}\n{}",
                service(
                    "web",
                    "web-1",
                    1,
                    &[Up {
                        destination: "db",
                        port
                    }]
                )
            ),
        )
        .await;
    wait_catalog(&a, "default", "db", 1, Health::Passing).await;
    (a, b, port)
}

#[tokio::test]
async fn allowed_traffic_flows_byte_exact_with_half_close_and_is_counted() {
    let mesh = Mesh::new("test.mesh");
    let (a, b, port) = pair(&mesh, "").await;
    rules(&b, &[&allow("db", "web")]);

    assert_eq!(roundtrip(port, b"x").await.unwrap(), b"x");
    let mib = pattern(1 << 20);
    assert!(
        roundtrip(port, &mib).await.unwrap() == mib,
        "1 MiB echoed byte-exact"
    );
    // Several at once over the one pooled QUIC connection.
    let many = futures::future::join_all((0..20).map(|i| {
        let data = pattern(1000 + i);
        async move { roundtrip(port, &data).await.unwrap() == data }
    }))
    .await;
    assert!(many.iter().all(|ok| *ok));

    eventually("connections closed on both sides", || {
        metrics(&a).contains(
            "rhizome_proxy_connections_active{direction=\"outbound\",source=\"default/web\",destination=\"default/db\"} 0",
        ) && metrics(&b).contains(
            "rhizome_proxy_connections_active{direction=\"inbound\",source=\"default/web\",destination=\"default/db\"} 0",
        )
    })
    .await;
    let text = metrics(&a);
    assert!(
        text.contains("rhizome_proxy_connections_opened_total{direction=\"outbound\",source=\"default/web\",destination=\"default/db\"} 22"),
        "{text}"
    );
    let sent: u64 = 1 + (1 << 20) + (0..20).map(|i| 1000 + i).sum::<u64>();
    assert!(
        text.contains(&format!("rhizome_proxy_bytes_to_destination_total{{direction=\"outbound\",source=\"default/web\",destination=\"default/db\"}} {sent}")),
        "{text}"
    );
    assert!(text.contains("rhizome_proxy_connect_seconds_count"));
    assert!(
        text.contains("rhizome_proxy_handshake_seconds_count{transport=\"quic\"} 1"),
        "one pooled QUIC connection: {text}"
    );
    let text_b = metrics(&b);
    assert!(
        text_b.contains(&format!("rhizome_proxy_bytes_from_destination_total{{direction=\"inbound\",source=\"default/web\",destination=\"default/db\"}} {sent}")),
        "{text_b}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn denied_traffic_is_refused_without_data() {
    let mesh = Mesh::new("test.mesh");
    let (a, b, port) = pair(&mesh, "").await;
    // Default deny, and an explicit rule for another source.
    rules(&b, &[&allow("db", "api")]);
    let got = roundtrip(port, b"secret").await;
    assert!(
        got.as_ref().map_or(true, Vec::is_empty),
        "denied: reset or EOF without data, got {got:?}"
    );
    eventually("deny counted on both sides", || {
        metrics(&a).contains("rhizome_proxy_connections_denied_total{direction=\"outbound\",source=\"default/web\",destination=\"default/db\"} 1")
            && metrics(&b).contains("rhizome_proxy_connections_denied_total{direction=\"inbound\",source=\"default/web\",destination=\"default/db\"} 1")
    })
    .await;
    // Allowing it afterwards works without restarting anything.
    rules(&b, &[&allow("db", "web")]);
    assert_eq!(roundtrip(port, b"now").await.unwrap(), b"now");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rule_change_cuts_a_live_connection() {
    let mesh = Mesh::new("test.mesh");
    let (a, b, port) = pair(&mesh, "").await;
    rules(&b, &[&allow("db", "web")]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    rules(&b, &[&allow("db", "api")]);
    // The connection ends (reset, or EOF) without any further byte, within the bound.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the live connection was cut");
    assert!(rest.is_empty());
    eventually("cut counted as denied", || {
        metrics(&b).contains("rhizome_proxy_connections_denied_total{direction=\"inbound\",source=\"default/web\",destination=\"default/db\"} 1")
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn unhealthy_instances_get_no_connections_and_failures_fail_over() {
    let mesh = Mesh::new("test.mesh");
    let ((name_b, backend_b), (name_c, _backend_c)) =
        (name_server("b").await, name_server("c").await);
    let health_b = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let check = |target: std::net::SocketAddr| {
        format!(
            "  check {{\n    tcp = \"{target}\"\n    interval = \"100ms\"\n    timeout = \"200ms\"\n  }}\n"
        )
    };
    let svc_b = service("db", "db-b", name_b.port(), &[]).replace(
        "}\n",
        &format!("{}}}\n", check(health_b.local_addr().unwrap())),
    );
    let port = free_port();
    let b = mesh.start("b", &svc_b).await;
    let c = mesh
        .start_joined("c", &[&b], &service("db", "db-c", name_c.port(), &[]))
        .await;
    let a = mesh
        .start_joined(
            "a",
            &[&b],
            &format!(
                "proxy {{\n  connect_timeout = \"300ms\"\n}}\n{}",
                service(
                    "web",
                    "web-1",
                    1,
                    &[Up {
                        destination: "db",
                        port
                    }]
                )
            ),
        )
        .await;
    for server in [&b, &c] {
        rules(server, &[&allow("db", "web")]);
    }
    wait_catalog(&a, "default", "db", 2, Health::Passing).await;

    // Both healthy: over enough connections both serve (power of two choices spreads load).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        seen.insert(read_all(port).await.unwrap());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "both instances served: {seen:?}");

    // b's health check fails: once the catalog says so, no new connection goes there.
    drop(health_b);
    wait_catalog(&a, "default", "db", 1, Health::Critical).await;
    for _ in 0..10 {
        assert_eq!(read_all(port).await.unwrap(), b"c");
    }
    assert!(
        !metrics(&a).contains("rhizome_proxy_connections_failed_total{direction=\"outbound\""),
        "no connection failed"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
    backend_b.abort();
}

#[tokio::test]
async fn connections_fail_over_before_any_byte_is_sent() {
    let mesh = Mesh::new("test.mesh");
    let ((name_b, backend_b), (name_c, _backend_c)) =
        (name_server("b").await, name_server("c").await);
    let port = free_port();
    let b = mesh
        .start("b", &service("db", "db-b", name_b.port(), &[]))
        .await;
    let c = mesh
        .start_joined("c", &[&b], &service("db", "db-c", name_c.port(), &[]))
        .await;
    let a = mesh
        .start_joined(
            "a",
            &[&b],
            &format!(
                "proxy {{\n  connect_timeout = \"300ms\"\n}}\n{}",
                service(
                    "web",
                    "web-1",
                    1,
                    &[Up {
                        destination: "db",
                        port
                    }]
                )
            ),
        )
        .await;
    for server in [&b, &c] {
        rules(server, &[&allow("db", "web")]);
    }
    wait_catalog(&a, "default", "db", 2, Health::Passing).await;

    // b's instance stops accepting (its check has not noticed: there is none): b answers
    // `unreachable` and a tries c, every time.
    backend_b.abort();
    for _ in 0..8 {
        assert_eq!(read_all(port).await.unwrap(), b"c", "failed over to c");
    }
    // b's agent dies without a goodbye: until gossip notices, connections that pick b time out
    // connecting to it and go to c.
    b.abort().await.unwrap();
    for _ in 0..8 {
        assert_eq!(read_all(port).await.unwrap(), b"c", "failed over to c");
    }
    assert!(
        !metrics(&a).contains("rhizome_proxy_connections_failed_total{direction=\"outbound\""),
        "no connection failed"
    );
    a.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn max_connections_per_listener_is_enforced() {
    let mesh = Mesh::new("test.mesh");
    let (a, b, port) = pair(&mesh, "proxy {\n  max_connections = 1\n}").await;
    rules(&b, &[&allow("db", "web")]);
    let mut first = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    first.write_all(b"1").await.unwrap();
    let mut one = [0u8; 1];
    first.read_exact(&mut one).await.unwrap();

    let second = roundtrip(port, b"2").await;
    assert!(
        second.as_ref().map_or(true, Vec::is_empty),
        "over the limit: reset without data, got {second:?}"
    );
    drop(first);
    let mut third = Err(std::io::ErrorKind::Other.into());
    for _ in 0..100 {
        third = roundtrip(port, b"3").await;
        if third.as_ref().is_ok_and(|v| v == b"3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        third.unwrap(),
        b"3",
        "a slot is free again once the first closed"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_hundred_mib_flows_byte_exact() {
    let mesh = Mesh::new("test.mesh");
    let sink = digest_server().await;
    let port = free_port();
    let b = mesh
        .start("b", &service("sink", "sink-1", sink.port(), &[]))
        .await;
    let a = mesh
        .start_joined(
            "a",
            &[&b],
            &service(
                "web",
                "web-1",
                1,
                &[Up {
                    destination: "sink",
                    port,
                }],
            ),
        )
        .await;
    wait_catalog(&a, "default", "sink", 1, Health::Passing).await;
    rules(&b, &[&allow("sink", "web")]);
    let data = pattern(100 << 20);
    let got = roundtrip(port, &data).await.unwrap();
    assert_eq!(got, sha256(&data), "the sink saw exactly the 100 MiB sent");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_open_connections_finish() {
    let mesh = Mesh::new("test.mesh");
    // A backend answering whole lines: a partial line is a request still being sent.
    let lines = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = lines.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = lines.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = tokio::io::BufReader::new(r);
                let mut line = Vec::new();
                while tokio::io::AsyncBufReadExt::read_until(&mut r, b'\n', &mut line)
                    .await
                    .is_ok_and(|n| n > 0)
                {
                    if w.write_all(&line).await.is_err() {
                        return;
                    }
                    line.clear();
                }
                let _ = w.shutdown().await;
            });
        }
    });
    let (a, b, port) = pair_with(&mesh, "proxy {\n  drain_timeout = \"20s\"\n}", backend).await;
    rules(&b, &[&allow("db", "web")]);
    let mut open = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    open.write_all(b"befor\n").await.unwrap();
    let mut buf = [0u8; 6];
    open.read_exact(&mut buf).await.unwrap();
    // A request half sent when the drain starts: the connection is busy, however long the
    // pause (an idle one would be closed).
    open.write_all(b"dur").await.unwrap();

    let stopping = tokio::spawn(a.shutdown());
    // The upstream listener closes at once...
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "no new connections while draining");
    // ...while the busy connection keeps working until the app closes it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    open.write_all(b"in\n").await.unwrap();
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"durin\n");
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    // The drain ends as soon as nothing is open, long before its 20 s limit.
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("drain finished once the connection closed")
        .unwrap()
        .unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let mesh = Mesh::new("test.mesh");
    let (a, b, port) = pair(&mesh, "proxy {\n  idle_timeout = \"300ms\"\n}").await;
    rules(&b, &[&allow("db", "web")]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    // Nothing more is sent: the agents close it (reset), long before the bound.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the idle connection was closed");
    assert!(rest.is_empty());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// `rhizome_proxy_handshake_seconds_count{transport="quic"}` of `agent`.
fn quic_handshakes(agent: &rhizome_agent::app::Agent) -> u64 {
    metrics(agent)
        .lines()
        .find_map(|l| l.strip_prefix("rhizome_proxy_handshake_seconds_count{transport=\"quic\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A pooled connection older than `proxy { max_connection_age }` takes no new streams: the
/// next proxied connection makes a fresh handshake (against the trust in force), while a
/// connection opened earlier keeps working over the retired one until it ends.
#[tokio::test]
async fn pooled_connections_past_their_max_age_are_replaced() {
    let mesh = Mesh::new("test.mesh");
    let (a, b, port) = pair(&mesh, "proxy {\n  max_connection_age = \"1s\"\n}\n").await;
    rules(&b, &[&allow("db", "web")]);
    let mut long = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut one = [0u8; 1];
    long.write_all(b"1").await.unwrap();
    long.read_exact(&mut one).await.unwrap();
    assert_eq!(roundtrip(port, b"x").await.unwrap(), b"x");
    assert_eq!(quic_handshakes(&a), 1, "both over one pooled connection");
    // Past the maximum age of the pooled connection.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(roundtrip(port, b"y").await.unwrap(), b"y");
    assert_eq!(
        quic_handshakes(&a),
        2,
        "a fresh handshake after max_connection_age"
    );
    assert_eq!(roundtrip(port, b"z").await.unwrap(), b"z");
    assert_eq!(
        quic_handshakes(&a),
        2,
        "the new connection is pooled in turn"
    );
    // The connection opened before still carries bytes over the retired connection.
    long.write_all(b"2").await.unwrap();
    long.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"2");
    drop(long);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
