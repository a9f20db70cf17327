//! Reloading a running agent's config directory: services, upstream listeners and checks
//! change in place; an unchanged upstream's open connection is never cut; an invalid or
//! refused config changes nothing. Registering services through the API (and the CLI):
//! they reach the mesh, survive a restart and a reload, and never touch the files' services.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use proxy_support::{
    FAST_GOSSIP, Mesh, allow, echo_server, free_port, metrics, name_server, read_all, roundtrip,
    rules,
};
use rhizome_agent::api::types::{RegisterAnswer, ReloadResult};
use rhizome_agent::app::Agent;
use rhizome_agent::client::{Client, ClientError};
use rhizome_agent::config::ConfigSource;
use rhizome_agent::testkit::{TestCa, wait_until_async};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A config directory: `00-agent.hcl` (node, CA, ports 0, default allow) and
/// `10-services.hcl` (what the test edits).
fn write_config(dir: &Path, ca: &TestCa, services: &str) {
    let ca_dir = ca.agent_dir(dir, "n1").unwrap();
    let agent = format!(
        "node_name = \"n1\"\ndata_dir = \"{}/data\"\nbind_addr = \"127.0.0.1\"\n\
         default_intention_policy = \"allow\"\nports {{\n  http = 0\n  gossip = 0\n  data = 0\n}}\n\
         ca {{\n  dir = \"{}\"\n}}\n",
        dir.display(),
        ca_dir.display()
    );
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    std::fs::write(dir.join("conf/00-agent.hcl"), agent).unwrap();
    std::fs::write(dir.join("conf/10-services.hcl"), services).unwrap();
}

fn service(name: &str, addr: SocketAddr, upstreams: &[(&str, u16)]) -> String {
    let mut s = format!(
        "service {{\n  name = \"{name}\"\n  port = {}\n",
        addr.port()
    );
    for (dst, port) in upstreams {
        s += &format!(
            "  upstreams {{\n    destination_name = \"{dst}\"\n    local_bind_port = {port}\n  }}\n"
        );
    }
    s + "}\n"
}

/// Writes `b` on `conn` and reads it back (the echo through the mesh).
async fn echo_once(conn: &mut TcpStream, b: &[u8]) -> std::io::Result<Vec<u8>> {
    conn.write_all(b).await?;
    let mut got = vec![0u8; b.len()];
    conn.read_exact(&mut got).await?;
    Ok(got)
}

/// Waits until a fresh connection to `port` reads `want`.
async fn wait_read(port: u16, want: &str) {
    wait_until_async(
        &format!("127.0.0.1:{port} answers {want:?}"),
        Duration::from_secs(15),
        || async move { read_all(port).await.is_ok_and(|b| b == want.as_bytes()) },
    )
    .await;
}

fn local_port(agent: &Agent, service: &str) -> Option<u16> {
    agent
        .handles()
        .catalog
        .borrow()
        .instances_of("default", service)
        .find(|i| i.node == "n1")
        .map(|i| i.port)
}

async fn start(dir: &Path) -> Agent {
    Agent::start_from(ConfigSource::Dir(dir.join("conf")))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_changes_and_removes_services_and_upstreams_without_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("reload.test").unwrap();
    let echo = echo_server().await;
    let (db_one, _a) = name_server("db-one").await;
    let (db_two, _b) = name_server("db-two").await;
    let (old, _c) = name_server("old").await;
    let (cache, _d) = name_server("cache").await;
    let (kept, changed, removed, added) = (free_port(), free_port(), free_port(), free_port());
    let v1 = [
        service("echo", echo, &[]),
        service("db", db_one, &[]),
        service("old", old, &[]),
        service(
            "web",
            "127.0.0.1:8080".parse().unwrap(),
            &[("echo", kept), ("db", changed), ("echo", removed)],
        ),
    ]
    .concat();
    write_config(dir.path(), &ca, &v1);
    let agent = start(dir.path()).await;
    wait_read(changed, "db-one").await;
    // Long-lived connections: one through the upstream that stays, one through the one
    // that goes away.
    let mut through_kept = TcpStream::connect(("127.0.0.1", kept)).await.unwrap();
    assert_eq!(
        echo_once(&mut through_kept, b"before").await.unwrap(),
        b"before"
    );
    let mut through_removed = TcpStream::connect(("127.0.0.1", removed)).await.unwrap();
    assert_eq!(
        echo_once(&mut through_removed, b"old").await.unwrap(),
        b"old"
    );

    let v2 = [
        service("echo", echo, &[]),
        service("db", db_two, &[]),
        service("cache", cache, &[]),
        service(
            "web",
            "127.0.0.1:8080".parse().unwrap(),
            &[("echo", kept), ("cache", changed), ("cache", added)],
        ),
    ]
    .concat();
    std::fs::write(dir.path().join("conf/10-services.hcl"), v2).unwrap();
    let answer = agent.handles().reloader.reload().await;
    assert_eq!(answer.result, ReloadResult::Ok, "{answer:?}");
    for line in [
        "service added: cache (default/cache)",
        "service changed: db (address)",
        "service removed: old",
        "service changed: web (upstreams)",
    ] {
        assert!(
            answer.changes.iter().any(|c| c == line),
            "{line} in {answer:?}"
        );
    }
    let upstream_lines = |kind: &str, port: u16| {
        answer
            .changes
            .iter()
            .filter(|c| c.starts_with(kind) && c.contains(&format!(":{port} ")))
            .count()
    };
    assert_eq!(upstream_lines("upstream added", added), 1, "{answer:?}");
    assert_eq!(upstream_lines("upstream changed", changed), 1, "{answer:?}");
    assert_eq!(upstream_lines("upstream removed", removed), 1, "{answer:?}");
    assert!(
        !answer
            .changes
            .iter()
            .any(|c| c.contains(&format!(":{kept} "))),
        "the unchanged upstream is not touched: {answer:?}"
    );

    // The connection through the unchanged upstream was not cut, and carries on.
    assert_eq!(
        echo_once(&mut through_kept, b"after").await.unwrap(),
        b"after"
    );
    // The removed upstream no longer accepts, but its open connection drains.
    assert!(TcpStream::connect(("127.0.0.1", removed)).await.is_err());
    assert_eq!(
        echo_once(&mut through_removed, b"drain").await.unwrap(),
        b"drain"
    );
    // The changed and added upstreams route to the new service once it is published.
    wait_read(changed, "cache").await;
    wait_read(added, "cache").await;
    // The catalog follows: db moved, old withdrawn.
    let db_port = db_two.port();
    wait_until_async(
        "catalog follows the reload",
        Duration::from_secs(15),
        || {
            let ok =
                local_port(&agent, "db") == Some(db_port) && local_port(&agent, "old").is_none();
            async move { ok }
        },
    )
    .await;
    let live: Vec<String> = agent
        .handles()
        .live
        .borrow()
        .services
        .iter()
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(live, ["echo", "db", "cache", "web"]);
    assert!(metrics(&agent).contains("rhizome_config_reloads_total{result=\"ok\"} 1"));
    assert_eq!(echo_once(&mut through_kept, b"end").await.unwrap(), b"end");
    drop((through_kept, through_removed));
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_or_refused_reload_keeps_the_config_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("reload.test").unwrap();
    let echo = echo_server().await;
    let up = free_port();
    let v1 = [
        service("echo", echo, &[]),
        service("web", "127.0.0.1:8080".parse().unwrap(), &[("echo", up)]),
    ]
    .concat();
    write_config(dir.path(), &ca, &v1);
    let agent = start(dir.path()).await;
    let mut conn = TcpStream::connect(("127.0.0.1", up)).await.unwrap();
    assert_eq!(echo_once(&mut conn, b"one").await.unwrap(), b"one");
    let services_file = dir.path().join("conf/10-services.hcl");
    let ids = |agent: &Agent| -> Vec<String> {
        let live = agent.handles().live.borrow().clone();
        live.services.iter().map(|s| s.id.clone()).collect()
    };

    // A syntax error: the answer names file:line:column, nothing changes.
    std::fs::write(
        &services_file,
        format!("{v1}service {{\n  name = \"new\"\n  port = \n}}\n"),
    )
    .unwrap();
    let answer = agent.handles().reloader.reload().await;
    assert_eq!(answer.result, ReloadResult::Invalid, "{answer:?}");
    let error = answer.error.unwrap();
    assert!(error.contains("10-services.hcl:"), "{error}");
    assert!(
        error.split("10-services.hcl:").nth(1).is_some_and(|rest| {
            let mut parts = rest.split(':');
            parts.next().is_some_and(|l| l.parse::<u32>().is_ok())
                && parts
                    .next()
                    .is_some_and(|c| c.trim().parse::<u32>().is_ok())
        }),
        "file:line:column in {error}"
    );
    assert_eq!(ids(&agent), ["echo", "web"]);

    // A new upstream on a port in use: invalid, and the service added alongside is not.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let (cache, _c) = name_server("cache").await;
    std::fs::write(
        &services_file,
        [
            v1.clone(),
            service("cache", cache, &[]),
            service(
                "api",
                "127.0.0.1:9000".parse().unwrap(),
                &[("cache", taken_port)],
            ),
        ]
        .concat(),
    )
    .unwrap();
    let answer = agent.handles().reloader.reload().await;
    assert_eq!(answer.result, ReloadResult::Invalid, "{answer:?}");
    assert!(
        answer
            .error
            .unwrap()
            .contains(&format!("127.0.0.1:{taken_port}"))
    );
    assert_eq!(ids(&agent), ["echo", "web"]);

    // A restart-only setting (the node name) with a service change: refused, neither applied.
    std::fs::write(
        &services_file,
        format!("{v1}{}", service("cache", cache, &[])),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("conf/20-node.hcl"),
        "node_name = \"renamed\"\nports {\n  http = 7999\n}\n",
    )
    .unwrap();
    let answer = agent.handles().reloader.reload().await;
    assert_eq!(answer.result, ReloadResult::Refused, "{answer:?}");
    let error = answer.error.unwrap();
    assert!(error.contains("node_name, ports"), "{error}");
    assert_eq!(ids(&agent), ["echo", "web"]);

    // Undo the restart-only edit: the service change now applies.
    std::fs::remove_file(dir.path().join("conf/20-node.hcl")).unwrap();
    let answer = agent.handles().reloader.reload().await;
    assert_eq!(answer.result, ReloadResult::Ok, "{answer:?}");
    assert_eq!(ids(&agent), ["echo", "web", "cache"]);

    // The open connection lived through all of it.
    assert_eq!(echo_once(&mut conn, b"two").await.unwrap(), b"two");
    let text = metrics(&agent);
    for line in [
        "rhizome_config_reloads_total{result=\"ok\"} 1",
        "rhizome_config_reloads_total{result=\"invalid\"} 2",
        "rhizome_config_reloads_total{result=\"refused\"} 1",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    drop((taken, conn));
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_started_from_a_value_refuses_to_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("reload.test").unwrap();
    write_config(dir.path(), &ca, "");
    let config = rhizome_agent::config::AgentConfig::load_dir(&dir.path().join("conf")).unwrap();
    let agent = Agent::start(config).await.unwrap();
    let answer = agent.handles().reloader.reload().await;
    assert_eq!(answer.result, ReloadResult::Refused);
    agent.shutdown().await.unwrap();
}

/// `PUT path` with `body` on `agent`'s API (the CLI's client, off the runtime).
async fn put(
    agent: &Agent,
    path: &str,
    body: serde_json::Value,
) -> Result<RegisterAnswer, ClientError> {
    let (addr, path) = (agent.http_addr().to_string(), path.to_string());
    tokio::task::spawn_blocking(move || Client::new(addr).send("PUT", &path, &body))
        .await
        .unwrap()
}

/// `PUT path` with a raw body: the status and the `error` of the answer.
async fn put_raw(agent: &Agent, path: &str, body: &'static str) -> (u16, String) {
    let addr = agent.http_addr();
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "PUT {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        let json = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let error = serde_json::from_str::<serde_json::Value>(json)
            .map(|v| v["error"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|_| json.to_string());
        (status, error)
    })
    .await
    .unwrap()
}

fn status_of(r: Result<RegisterAnswer, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Status { status, message }) => (status, message),
        other => panic!("expected an error status, got {other:?}"),
    }
}

fn live_ids(agent: &Agent) -> Vec<String> {
    let live = agent.handles().live.borrow().clone();
    live.services.iter().map(|s| s.id.clone()).collect()
}

/// Waits until `agent`'s catalog holds `n` instances of `default/name`, whatever their
/// health; returns how long it took.
async fn wait_instances(agent: &Agent, name: &str, n: usize) -> Duration {
    let started = std::time::Instant::now();
    wait_until_async(
        &format!("{n} instance(s) of {name}"),
        Duration::from_secs(20),
        || {
            let count = agent
                .handles()
                .catalog
                .borrow()
                .instances_of("default", name)
                .count();
            async move { count == n }
        },
    )
    .await;
    started.elapsed()
}

/// Waits until `port` echoes through the mesh.
async fn wait_echo(port: u16) {
    wait_until_async(
        &format!("127.0.0.1:{port} echoes through the mesh"),
        Duration::from_secs(20),
        || async move {
            roundtrip(port, b"through")
                .await
                .is_ok_and(|b| b == b"through")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_registrations_reach_the_mesh_survive_restarts_and_reloads_and_leave_files_alone() {
    let mesh = Mesh::new("register.test");
    let dir = mesh.dir.path().join("n1");
    let files_service = "service {\n  name = \"files\"\n  port = 1234\n}\n";
    write_config(&dir, &mesh.ca, &format!("{FAST_GOSSIP}{files_service}"));
    let n1 = start(&dir).await;
    let n2 = mesh.start_joined("n2", &[&n1], "").await;
    let rule = allow("echo", "client");
    rules(&n2, &[rule.as_str()]);
    let echo = echo_server().await;
    let up = free_port();

    // Register echo on n1 with Consul's spelling and a check; it is published to n2.
    let answer = put(
        &n1,
        "/v1/agent/service/register",
        serde_json::json!({
            "Name": "echo", "Port": echo.port(), "Tags": ["v1"],
            "Check": {"TCP": echo.to_string(), "Interval": "1s"}
        }),
    )
    .await
    .unwrap();
    assert_eq!(answer.id, "echo");
    assert_eq!(answer.changes, ["service added: echo (default/echo)"]);
    assert_eq!(live_ids(&n1), ["files", "echo"]);
    let took = wait_instances(&n2, "echo", 1).await;
    println!("registered instance in the peer's catalog after {took:?}");
    // Register a client with an upstream on n2 (Connect's upstreams): it reaches echo.
    let answer = put(
        &n2,
        "/v1/agent/service/register",
        serde_json::json!({
            "Name": "client", "Port": 9,
            "Connect": {"SidecarService": {"Proxy": {"Upstreams": [
                {"DestinationName": "echo", "LocalBindPort": up}
            ]}}}
        }),
    )
    .await
    .unwrap();
    assert!(
        answer
            .changes
            .iter()
            .any(|c| c.starts_with("upstream added:")),
        "{answer:?}"
    );
    wait_echo(up).await;

    // The files own their services: no overwrite, no deregistration through the API.
    for (path, body) in [
        ("/v1/agent/service/deregister/files", serde_json::json!({})),
        (
            "/v1/agent/service/register",
            serde_json::json!({"Name": "files", "Port": 4321}),
        ),
    ] {
        let (status, error) = status_of(put(&n1, path, body).await);
        assert_eq!(status, 409, "{path}: {error}");
        assert!(error.contains("config files"), "{error}");
    }
    assert_eq!(live_ids(&n1), ["files", "echo"]);
    // Invalid bodies: 400 naming the field; unknown ids: 404.
    for (body, want) in [
        (
            r#"{"Name": "x", "Port": 1, "Weights": {"Passing": 1}}"#,
            "\"Weights\"",
        ),
        (r#"{"Name": "x", "Port": "one"}"#, "\"port\""),
        (r#"{"Name": "x", "Port": 0}"#, "port must be 1-65535"),
        (r#"{"Name": "Bad", "Port": 1}"#, "is not a valid name"),
        ("not json", "not JSON"),
    ] {
        let (status, error) = put_raw(&n1, "/v1/agent/service/register", body).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert!(error.contains(want), "{want} in {error}");
    }
    // An upstream on a port another upstream holds: refused with the config's message.
    let (status, error) = status_of(
        put(
            &n2,
            "/v1/agent/service/register",
            serde_json::json!({"Name": "other", "Port": 9, "upstreams": [
                {"destination_name": "echo", "local_bind_port": up}
            ]}),
        )
        .await,
    );
    assert_eq!(status, 400, "{error}");
    assert!(error.contains("is used by two upstreams"), "{error}");
    let (status, _) = status_of(
        put(
            &n1,
            "/v1/agent/service/deregister/nope",
            serde_json::json!({}),
        )
        .await,
    );
    assert_eq!(status, 404);

    // A reload keeps the registrations, and refuses a file that takes a registered id.
    let services_file = dir.join("conf/10-services.hcl");
    let more = "service {\n  name = \"more\"\n  port = 4444\n}\n";
    std::fs::write(
        &services_file,
        format!("{FAST_GOSSIP}{files_service}{more}"),
    )
    .unwrap();
    let answer = n1.handles().reloader.reload().await;
    assert_eq!(answer.result, ReloadResult::Ok, "{answer:?}");
    assert_eq!(live_ids(&n1), ["files", "more", "echo"]);
    let clash = "service {\n  name = \"echo\"\n  port = 4445\n}\n";
    std::fs::write(
        &services_file,
        format!("{FAST_GOSSIP}{files_service}{clash}"),
    )
    .unwrap();
    let answer = n1.handles().reloader.reload().await;
    assert_eq!(answer.result, ReloadResult::Invalid, "{answer:?}");
    assert!(
        answer
            .error
            .as_deref()
            .unwrap()
            .contains("registered through the API"),
        "{answer:?}"
    );
    assert_eq!(live_ids(&n1), ["files", "more", "echo"]);
    std::fs::write(&services_file, format!("{FAST_GOSSIP}{files_service}")).unwrap();

    // Deregistering withdraws the instance from the peer promptly (a broadcast tombstone).
    let answer = put(
        &n1,
        "/v1/agent/service/deregister/echo",
        serde_json::json!({}),
    )
    .await
    .unwrap();
    assert_eq!(answer.changes, ["service removed: echo"]);
    let took = wait_instances(&n2, "echo", 0).await;
    println!("deregistered instance gone from the peer's catalog after {took:?}");
    // A registration made and withdrawn before the restart stays withdrawn; one in force
    // comes back with the agent.
    put(
        &n1,
        "/v1/agent/service/register",
        serde_json::json!({"Name": "echo", "Port": echo.port()}),
    )
    .await
    .unwrap();
    put(
        &n1,
        "/v1/agent/service/register",
        serde_json::json!({"Name": "gone", "Port": 5555}),
    )
    .await
    .unwrap();
    put(
        &n1,
        "/v1/agent/service/deregister/gone",
        serde_json::json!({}),
    )
    .await
    .unwrap();
    n1.shutdown().await.unwrap();
    let n1 = start(&dir).await;
    assert_eq!(live_ids(&n1), ["files", "echo"]);
    let services: serde_json::Value = {
        let addr = n1.http_addr().to_string();
        tokio::task::spawn_blocking(move || Client::new(addr).get("/v1/agent/services"))
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(services[1]["id"], "echo");
    assert_eq!(services[1]["port"], echo.port());
    assert_eq!(services[1]["source"], "api");
    assert_eq!(services[0]["source"], "config");
    // Back in the mesh: the peer's upstream reaches it again.
    n1.handles()
        .gossip
        .join(
            &n2.handles().gossip.addr().to_string(),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    wait_echo(up).await;
    n2.shutdown().await.unwrap();
    n1.shutdown().await.unwrap();

    // The files, edited while the agent was down, now define "echo": they win at start and
    // the registration is dropped from the store (it does not come back without the file).
    std::fs::write(
        &services_file,
        format!("{FAST_GOSSIP}{files_service}{clash}"),
    )
    .unwrap();
    let n1 = start(&dir).await;
    assert_eq!(live_ids(&n1), ["files", "echo"]);
    let echo_now = n1.handles().live.borrow().services[1].clone();
    assert_eq!(echo_now.port, 4445, "the file's echo");
    assert!(n1.handles().live.borrow().registered.is_empty());
    n1.shutdown().await.unwrap();
    std::fs::write(&services_file, format!("{FAST_GOSSIP}{files_service}")).unwrap();
    let n1 = start(&dir).await;
    assert_eq!(live_ids(&n1), ["files"]);
    n1.shutdown().await.unwrap();
}

/// Runs the `rhizome` binary against `agent` (off the runtime): exit code, stdout, stderr.
async fn cli(agent: &Agent, args: &[&str]) -> (i32, String, String) {
    let addr = agent.http_addr().to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rhizome"))
            .args(&args)
            .env("RHIZOME_HTTP_ADDR", addr)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_registers_and_deregisters_services() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("reload.test").unwrap();
    write_config(
        dir.path(),
        &ca,
        "service {\n  name = \"files\"\n  port = 1234\n}\n",
    );
    let agent = start(dir.path()).await;
    let up = free_port();
    let hcl = dir.path().join("web.hcl");
    std::fs::write(
        &hcl,
        format!("service {{\n  name = \"web\"\n  port = 8080\n  upstreams {{\n    destination_name = \"files\"\n    local_bind_port = {up}\n  }}\n}}\n"),
    )
    .unwrap();
    let json = dir.path().join("db.json");
    std::fs::write(
        &json,
        r#"{"Service": {"ID": "db-1", "Name": "db", "Port": 5432}}"#,
    )
    .unwrap();

    let (code, out, err) = cli(&agent, &["services", "register", hcl.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("registered web:"), "{out}");
    assert!(out.contains("service added: web (default/web)"), "{out}");
    let (code, out, err) = cli(&agent, &["services", "register", json.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(live_ids(&agent), ["files", "db-1", "web"]);
    let (code, out, _) = cli(&agent, &["services"]).await;
    assert_eq!(code, 0);
    for (id, source) in [("files", "config"), ("db-1", "api"), ("web", "api")] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{id} ")) && l.trim_end().ends_with(source)),
            "{id} ({source}) in {out}"
        );
    }
    // Registering the same definition again changes nothing.
    let (code, out, _) = cli(&agent, &["services", "register", hcl.to_str().unwrap()]).await;
    assert_eq!(code, 0);
    assert!(out.contains("registered web: nothing changed"), "{out}");

    // Refusals: the files' service, an unknown id, a bad file (at its line), no file.
    let (code, _, err) = cli(&agent, &["services", "deregister", "files"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("config files"), "{err}");
    let bad = dir.path().join("bad.hcl");
    std::fs::write(&bad, "service {\n  name = \"x\"\n  prot = 1\n}\n").unwrap();
    let (code, _, err) = cli(&agent, &["services", "register", bad.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(err.contains("bad.hcl:3:3:"), "{err}");
    let (code, _, err) = cli(&agent, &["services", "register", "/nonexistent/x.hcl"]).await;
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = cli(&agent, &["services", "deregister"]).await;
    assert_eq!(code, 64, "a usage error");
    let (code, out, _) = cli(&agent, &["services", "register", "--help"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("Consul"), "{out}");

    let (code, out, err) = cli(&agent, &["services", "deregister", "web"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("service removed: web"), "{out}");
    assert!(
        TcpStream::connect(("127.0.0.1", up)).await.is_err(),
        "its upstream is closed"
    );
    let (code, _, err) = cli(&agent, &["services", "deregister", "web"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no service is registered"), "{err}");
    assert_eq!(live_ids(&agent), ["files", "db-1"]);
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_intentions_dir_on_reload_deletes_the_entries_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("reload.test").unwrap();
    let operator = ca.operator_dir(dir.path(), "ops").unwrap();
    let idir = dir.path().join("intentions");
    std::fs::create_dir_all(&idir).unwrap();
    std::fs::write(
        idir.join("db.hcl"),
        "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  { Name = \"web\", Action = \"allow\" },\n]\n",
    )
    .unwrap();
    write_config(
        dir.path(),
        &ca,
        &format!(
            "intentions_dir = \"{}\"\noperator_dir = \"{}\"\n",
            idir.display(),
            operator.display()
        ),
    );
    let agent = start(dir.path()).await;
    let entries = |agent: &Agent| {
        let addr = agent.http_addr().to_string();
        async move {
            tokio::task::spawn_blocking(move || {
                Client::new(addr)
                    .get::<rhizome_agent::api::types::ListView>("/v1/intentions")
                    .unwrap()
                    .entries
                    .len()
            })
            .await
            .unwrap()
        }
    };
    assert_eq!(entries(&agent).await, 1, "loaded at start");
    std::fs::write(dir.path().join("conf/10-services.hcl"), "").unwrap();
    let answer = agent.handles().reloader.reload().await;
    assert_eq!(answer.result, ReloadResult::Ok, "{answer:?}");
    assert!(
        answer
            .changes
            .iter()
            .any(|c| c.starts_with("intentions_dir: (none)")),
        "{answer:?}"
    );
    wait_until_async(
        "the directory's entry is deleted",
        Duration::from_secs(15),
        || {
            let n = entries(&agent);
            async move { n.await == 0 }
        },
    )
    .await;
    agent.shutdown().await.unwrap();
}
