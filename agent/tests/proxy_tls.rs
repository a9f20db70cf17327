//! The TLS-over-TCP transport (`transport = "tls"`) end to end on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use proxy_support::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[tokio::test]
async fn tls_transport_carries_allowed_traffic_and_refuses_denied() {
    let mesh = Mesh::new("test.mesh");
    let echo = echo_server().await;
    let port = free_port();
    let b = mesh
        .start("b", &service("db", "db-1", echo.port(), &[]))
        .await;
    let a = mesh
        .start_joined(
            "a",
            &[&b],
            &format!(
                "transport = \"tls\"\n{}",
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
    wait_catalog(
        &a,
        "default",
        "db",
        1,
        rhizome_agent::catalog::Health::Passing,
    )
    .await;

    let refused = roundtrip(port, b"secret").await;
    assert!(
        refused.as_ref().map_or(true, Vec::is_empty),
        "default deny: nothing comes back, got {refused:?}"
    );

    rules(&b, &[&allow("db", "web")]);
    assert_eq!(roundtrip(port, b"x").await.unwrap(), b"x");
    let mib = pattern(1 << 20);
    assert!(
        roundtrip(port, &mib).await.unwrap() == mib,
        "1 MiB byte-exact"
    );

    // A live connection is cut when the rules change.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    rules(&b, &[&allow("db", "api")]);
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "cut after the rule change");
    assert!(rest.is_empty());

    let text = metrics(&a);
    assert!(
        text.contains("rhizome_proxy_handshake_seconds_count{transport=\"tls\"} 4"),
        "one TLS handshake per proxied connection: {text}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
