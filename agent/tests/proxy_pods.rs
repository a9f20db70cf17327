//! Pod upstream listeners: an agent with Kubernetes discovery (fake API server) opens the
//! listeners its pods declare and proxies a pod's connection with the pod's identity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_kube;
mod proxy_support;

use fake_kube::{FakeApi, pod};
use proxy_support::*;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Connects from `src`, sends `data`, half-closes, reads until EOF or error.
async fn call_from(src: &str, to: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src.parse().unwrap(), 0))?;
    let mut conn = socket.connect(to).await?;
    conn.write_all(data).await?;
    conn.shutdown().await?;
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await.map(|_| out)
}

fn kubeconfig(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{ "name": "fake", "cluster": { "server": url } }],
        "users": [{ "name": "agent", "user": {} }],
        "contexts": [{ "name": "fake", "context": { "cluster": "fake", "user": "agent" } }],
        "current-context": "fake",
    });
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

#[tokio::test]
async fn a_pod_reaches_a_service_through_its_upstream_listener() {
    let mesh = Mesh::new("test.mesh");
    let echo = echo_server().await;
    let b = mesh
        .start(
            "b",
            &format!(
                "service {{\n  name = \"db\"\n  namespace = \"shop\"\n  port = {}\n}}\n",
                echo.port()
            ),
        )
        .await;
    rules(
        &b,
        &[
            "Kind = \"service-intentions\"\nName = \"db\"\nNamespace = \"shop\"\nSources = [\n  { Name = \"web\", Namespace = \"shop\", Action = \"allow\" },\n]\n",
        ],
    );

    let port = free_port();
    let mut web = pod("web", "node-1", Some("web"), true, Some("127.0.0.2"));
    web["metadata"]["annotations"]["rhizome.io/upstreams"] = format!("db:{port}").into();
    let api = FakeApi::start(vec![web]).await;
    let kcfg = kubeconfig(mesh.dir.path(), &api.url());
    let a = mesh
        .start_joined(
            "a",
            &[&b],
            &format!(
                "kubernetes {{\n  enabled = true\n  node_name = \"node-1\"\n  kubeconfig = \"{}\"\n}}\n",
                kcfg.display()
            ),
        )
        .await;
    wait_catalog(&a, "shop", "db", 1, rhizome_agent::catalog::Health::Passing).await;
    let listener = SocketAddr::from(([127, 0, 0, 1], port));

    // The listener opens once discovery has seen the pod.
    let mut answered = None;
    for _ in 0..500 {
        if let Ok(got) = call_from("127.0.0.2", listener, b"from the pod").await
            && !got.is_empty()
        {
            answered = Some(got);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(answered.unwrap(), b"from the pod");
    assert!(
        metrics(&b).contains("rhizome_proxy_connections_opened_total{direction=\"inbound\",source=\"shop/web\",destination=\"shop/db\"} 1"),
        "the server saw the pod's identity: {}",
        metrics(&b)
    );

    // Another source IP is no pod of this node: reset, nothing proxied.
    let stranger = call_from("127.0.0.3", listener, b"hi").await;
    assert!(stranger.map_or(true, |v| v.is_empty()));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
