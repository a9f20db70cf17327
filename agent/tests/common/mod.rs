//! Helpers shared by the intentions tests: agent configs with the test CA, blocking API
//! calls from async tests, bounded waits.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use rhizome_agent::client::{Client, ClientError};
use rhizome_agent::config::AgentConfig;
use rhizome_agent::testkit::TestCa;
use rhizome_gossip::hlc::Hlc;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `db`: `web` allowed, every other `default` service denied.
pub const DB_HCL: &str = "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  { Name = \"web\", Action = \"allow\" },\n  { Name = \"*\", Action = \"deny\" },\n]\n";

/// A non-dev agent config for `node` with credentials from `ca`, ports 0, a `web` service,
/// and `extra` HCL appended.
pub fn config(ca: &TestCa, dir: &Path, node: &str, extra: &str) -> AgentConfig {
    let ca_dir = ca.agent_dir(dir, node).unwrap();
    let src = format!(
        "node_name = \"{node}\"\ndata_dir = \"{}/data-{node}\"\nca {{\n  dir = \"{}\"\n}}\nbind_addr = \"127.0.0.1\"\nports {{\n  http = 0\n  gossip = 0\n  data = 0\n}}\nservice {{\n  name = \"web\"\n  port = 8080\n}}\n{extra}",
        dir.display(),
        ca_dir.display()
    );
    AgentConfig::from_str(&src, "test.hcl").unwrap()
}

/// An API call with an optional JSON body, decoded as `T`.
pub async fn call<T: serde::de::DeserializeOwned + Send + 'static>(
    addr: SocketAddr,
    method: &'static str,
    path: &str,
    body: Option<rhizome_agent::api::types::SubmitRequest>,
) -> Result<T, ClientError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let client = Client::new(addr.to_string());
        match body {
            Some(b) => client.send(method, &path, &b),
            None if method == "GET" => client.get(&path),
            None => client.send(method, &path, &serde_json::json!({})),
        }
    })
    .await
    .unwrap()
}

/// Wall-clock HLC for signing test entries.
pub fn now_hlc() -> Hlc {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Hlc::new(u64::try_from(ms).unwrap(), 0)
}

/// Waits (bounded: 15 s) until `cond` holds; panics otherwise.
pub async fn wait_until<F, Fut>(cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    rhizome_agent::testkit::wait_until_async("condition", Duration::from_secs(15), cond).await;
}
