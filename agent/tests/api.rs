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
