//! The HTTP API of a real agent on loopback, queried with the CLI's client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rhizome_agent::api::types::AgentSelf;
use rhizome_agent::app::Agent;
use rhizome_agent::client::{Client, ClientError};
use rhizome_agent::config::AgentConfig;

/// A port that was free a moment ago: the agent binds its upstream listener there.
fn upstream_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &std::path::Path, node: &str) -> AgentConfig {
    config_with_upstream(dir, node, upstream_port())
}

fn config_with_upstream(dir: &std::path::Path, node: &str, upstream: u16) -> AgentConfig {
    let ca = rhizome_agent::testkit::TestCa::new("test.mesh").unwrap();
    let ca_dir = ca.agent_dir(dir, node).unwrap();
    let src = format!(
        "node_name = \"{node}\"\ndata_dir = \"{}/data\"\nca {{\n  dir = \"{}\"\n}}\nbind_addr = \"127.0.0.1\"\nports {{\n  http = 0\n  gossip = 0\n  data = 0\n}}\nservice {{\n  name = \"web\"\n  port = 8080\n  tags = [\"v2\"]\n  upstreams {{\n    destination_name = \"db\"\n    local_bind_port = {upstream}\n  }}\n}}\n",
        dir.display(),
        ca_dir.display()
    );
    AgentConfig::from_str(&src, "test.hcl").unwrap()
}

async fn get<T: serde::de::DeserializeOwned + Send + 'static>(
    addr: std::net::SocketAddr,
    path: &'static str,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(move || Client::new(addr.to_string()).get(path))
        .await
        .unwrap()
}

#[tokio::test]
async fn self_services_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = upstream_port();
    let agent = Agent::start(config_with_upstream(dir.path(), "api-node", upstream))
        .await
        .unwrap();
    let addr = agent.http_addr();

    let me: AgentSelf = get(addr, "/v1/agent/self").await.unwrap();
    assert_eq!(me.node_name, "api-node");
    assert_eq!(me.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(me.addresses.http, addr.to_string());
    assert_eq!(me.boot_count, 1);

    let services: serde_json::Value = get(addr, "/v1/agent/services").await.unwrap();
    let web = &services[0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["namespace"], "default");
    assert_eq!(web["port"], 8080);
    assert_eq!(web["tags"][0], "v2");
    assert_eq!(web["upstreams"][0]["destination_name"], "db");
    assert_eq!(web["upstreams"][0]["local_bind_port"], upstream);

    let health: serde_json::Value = get(addr, "/v1/health").await.unwrap();
    assert_eq!(health["status"], "ok");

    let metrics =
        tokio::task::spawn_blocking(move || Client::new(addr.to_string()).get_raw("/metrics"))
            .await
            .unwrap()
            .unwrap();
    assert!(
        String::from_utf8(metrics)
            .unwrap()
            .contains("rhizome_agent_uptime_seconds")
    );

    let missing = get::<serde_json::Value>(addr, "/v1/nope")
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ClientError::Status { status: 404, .. }),
        "{missing}"
    );
    agent.shutdown().await.unwrap();

    let gone = get::<serde_json::Value>(addr, "/v1/health")
        .await
        .unwrap_err();
    assert!(
        matches!(gone, ClientError::Connect { .. }),
        "API closed after shutdown: {gone}"
    );
}

#[tokio::test]
async fn restart_on_same_data_dir_counts_boots_and_second_agent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Agent::start(config(dir.path(), "a")).await.unwrap();
    let err = Agent::start(config(dir.path(), "a"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("in use by another rhizome agent"), "{err}");
    first.shutdown().await.unwrap();

    let second = Agent::start(config(dir.path(), "a")).await.unwrap();
    let me: AgentSelf = get(second.http_addr(), "/v1/agent/self").await.unwrap();
    assert_eq!(
        me.boot_count, 2,
        "the restarted agent sees its stored state"
    );
    second.shutdown().await.unwrap();
}

/// Issue 15, item 8: one raw HTTP/1.1 exchange (`Connection: close`): the status and the
/// body, read within `limit`.
async fn raw_exchange(
    addr: std::net::SocketAddr,
    head: &str,
    body: &[u8],
    limit: std::time::Duration,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "no answer within {limit:?} to {head:?}");
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The body is `{"error": "..."}` with a non-empty message.
fn assert_json_error(what: &str, body: &str) {
    let v: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{what}: the error is not JSON ({e}): {body:?}"));
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(!msg.is_empty(), "{what}: no error message in {body}");
}

fn refused_http(text: &str, reason: &str) -> f64 {
    let sample = format!("rhizome_refused_total{{port=\"http\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&sample))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_text(addr: std::net::SocketAddr) -> String {
    let raw =
        tokio::task::spawn_blocking(move || Client::new(addr.to_string()).get_raw("/metrics"))
            .await
            .unwrap()
            .unwrap();
    String::from_utf8(raw).unwrap()
}

/// Issue 15, item 8: idle connections (no request, or nothing after a response) are
/// closed after the header-read timeout, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_api_connections_are_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    const IDLE: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(config(dir.path(), "idle")).await.unwrap();
    let addr = agent.http_addr();
    let started = std::time::Instant::now();
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let limit =
        rhizome_agent::api::server::HEADER_READ_TIMEOUT + std::time::Duration::from_secs(20);
    for mut s in idle {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(limit, s.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an idle API connection is closed: {read:?}"
        );
    }
    let closed_after = started.elapsed();
    let text = metrics_text(addr).await;
    let counted = refused_http(&text, "header_timeout");
    println!(
        "{IDLE} idle API connections all closed after {closed_after:?}; {counted} counted as header_timeout"
    );
    assert!(counted >= IDLE as f64, "refusals counted: {counted}");
    agent.shutdown().await.unwrap();
}

/// Issue 15, item 8: body limits answer at once with the documented JSON error, names are
/// validated, and every error answer (404, 405, 413, 415, 422, 400) is JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_json_and_bodies_are_bounded() {
    use rhizome_agent::api::server::{BODY_TIMEOUT, MAX_BODY};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(config(dir.path(), "limits")).await.unwrap();
    let addr = agent.http_addr();
    let prompt = Duration::from_secs(20);

    // A chunk announced as 2^64-1 bytes: 413 as soon as the limit is passed.
    let head = "POST /v1/intentions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n";
    let t = Instant::now();
    let (status, body) = raw_exchange(addr, head, &vec![b'a'; MAX_BODY + 1], prompt).await;
    println!(
        "2^64-1 chunk, {} bytes sent: {status} after {:?}",
        MAX_BODY + 1,
        t.elapsed()
    );
    assert_eq!(status, 413, "{body}");
    assert_json_error("giant chunk", &body);

    // The same announcement, then nothing: the body timeout answers.
    let t = Instant::now();
    let (status, body) = raw_exchange(addr, head, b"{", BODY_TIMEOUT + prompt).await;
    println!(
        "2^64-1 chunk, then silence: {status} after {:?}",
        t.elapsed()
    );
    assert_eq!(status, 408, "{body}");
    assert_json_error("stalled body", &body);

    // A declared length over the limit: 413 before any byte of the body.
    let head = "PUT /v1/join HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n";
    let (status, body) = raw_exchange(addr, head, b"", prompt).await;
    assert_eq!(status, 413, "{body}");
    assert_json_error("declared length", &body);

    // An 8 KB service name: 400, not `200 []`.
    let name = "a".repeat(8192);
    let head =
        format!("GET /v1/catalog/service/{name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (status, body) = raw_exchange(addr, &head, b"", prompt).await;
    assert_eq!(status, 400, "{body}");
    assert_json_error("8 KB name", &body);
    assert!(
        body.len() < 1024,
        "the name is not echoed whole: {} bytes",
        body.len()
    );
    let head =
        "GET /v1/catalog/service/Web?ns=default HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, body) = raw_exchange(addr, head, b"", prompt).await;
    assert_eq!(
        status, 400,
        "uppercase is refused as the config refuses it: {body}"
    );

    // Every error is JSON: router, method, extractor rejections.
    let cases = [
        ("GET /v1/nope HTTP/1.1\r\n", "", 404),
        ("DELETE /v1/health HTTP/1.1\r\n", "", 405),
        ("PUT /v1/join HTTP/1.1\r\n", "{\"address\": 1}", 415),
        (
            "PUT /v1/join HTTP/1.1\r\nContent-Type: application/json\r\n",
            "{\"nope\": 1}",
            422,
        ),
        (
            "PUT /v1/join HTTP/1.1\r\nContent-Type: application/json\r\n",
            "{not json",
            400,
        ),
    ];
    for (start, body, want) in cases {
        let head = format!(
            "{start}Host: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let (status, answer) = raw_exchange(addr, &head, body.as_bytes(), prompt).await;
        assert_eq!(status, want, "{start:?}: {answer}");
        assert_json_error(start, &answer);
    }
    let text = metrics_text(addr).await;
    for reason in ["body_too_large", "body_timeout", "bad_request", "not_found"] {
        assert!(refused_http(&text, reason) >= 1.0, "{reason} counted");
    }
    agent.shutdown().await.unwrap();
}
