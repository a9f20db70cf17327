//! Reloading a running agent's config directory: services, upstream listeners and checks
//! change in place; an unchanged upstream's open connection is never cut; an invalid or
//! refused config changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use proxy_support::{echo_server, free_port, metrics, name_server, read_all};
use rhizome_agent::api::types::ReloadResult;
use rhizome_agent::app::Agent;
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
