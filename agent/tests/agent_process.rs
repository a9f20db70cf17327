//! The `rhizome` binary as an operator runs it: `rhizome agent --dev --config-dir DIR`
//! proxies to a service on itself, SIGHUP reloads it (and does not kill it), `rhizome
//! reload` reports an invalid config, SIGTERM stops it cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rhizome_agent::client::Client;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the agent if the test fails before stopping it.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Sends `signal` (`HUP`, `TERM`) with kill(1) (the crate forbids `unsafe`).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An echo server on a thread (echoes until EOF).
fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    port
}

/// Polls `cond` (bounded: 30 s) until it holds.
fn wait_until(what: &str, running: &Running, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting: {what}\nagent log:\n{}",
            running.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `data` on `conn` and reads as many bytes back.
fn echo_once(conn: &mut TcpStream, data: &[u8]) -> std::io::Result<Vec<u8>> {
    conn.write_all(data)?;
    let mut got = vec![0u8; data.len()];
    conn.read_exact(&mut got)?;
    Ok(got)
}

/// A new connection to `port` echoes `data`.
fn echoes(port: u16, data: &[u8]) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    echo_once(&mut conn, data).is_ok_and(|got| got == data)
}

struct Ports {
    gossip: u16,
    data: u16,
    http: u16,
}

impl Ports {
    fn free() -> Ports {
        Ports {
            gossip: free_port(),
            data: free_port(),
            http: free_port(),
        }
    }

    fn hcl(&self) -> String {
        format!(
            "ports {{\n  gossip = {}\n  data = {}\n  http = {}\n}}\n",
            self.gossip, self.data, self.http
        )
    }

    fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http)
    }
}

fn service(name: &str, port: u16, upstreams: &[(&str, u16)]) -> String {
    let mut s = format!("service {{\n  name = \"{name}\"\n  port = {port}\n");
    for (dst, local) in upstreams {
        s += &format!(
            "  upstreams {{\n    destination_name = \"{dst}\"\n    local_bind_port = {local}\n  }}\n"
        );
    }
    s + "}\n"
}

fn start_dev(dir: &Path) -> Running {
    let log = dir.join("agent.log");
    let child = Command::new(env!("CARGO_BIN_EXE_rhizome"))
        .args(["agent", "--dev", "--config-dir"])
        .arg(dir.join("conf"))
        .env("RHIZOME_LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Running { child, log }
}

fn service_ids(http: &str) -> Option<Vec<String>> {
    let v: Vec<serde_json::Value> = Client::new(http).get("/v1/agent/services").ok()?;
    Some(
        v.iter()
            .filter_map(|s| s.get("id")?.as_str().map(str::to_string))
            .collect(),
    )
}

#[test]
fn a_dev_agent_proxies_to_a_service_on_itself() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_server();
    let (ports, upstream) = (Ports::free(), free_port());
    std::fs::create_dir_all(dir.path().join("conf")).unwrap();
    std::fs::write(
        dir.path().join("conf/services.hcl"),
        format!(
            "{}{}{}",
            ports.hcl(),
            service("echo", echo, &[]),
            service("web", 8080, &[("echo", upstream)])
        ),
    )
    .unwrap();
    let agent = start_dev(dir.path());
    // Through the upstream listener, the agent's own QUIC data port, back to the echo.
    wait_until("bytes come back through the mesh", &agent, || {
        echoes(upstream, b"hello through the mesh")
    });
    // The agent's inbound side served it (its access log line comes when it closed).
    wait_until("the inbound side logged the connection", &agent, || {
        agent.log().lines().any(|l| {
            l.contains("direction=\"inbound\"")
                && l.contains("source=default/web")
                && l.contains("destination=default/echo")
        })
    });
}

#[test]
fn sighup_reloads_a_running_agent_and_it_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_server();
    let (ports, first, second) = (Ports::free(), free_port(), free_port());
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let base = format!("{}{}", ports.hcl(), service("echo", echo, &[]));
    std::fs::write(
        conf.join("agent.hcl"),
        format!("{base}{}", service("web", 8080, &[("echo", first)])),
    )
    .unwrap();
    let mut agent = start_dev(dir.path());
    let http = ports.http_addr();
    wait_until("the API answers", &agent, || {
        service_ids(&http).is_some_and(|ids| ids == ["echo", "web"])
    });
    wait_until("the first upstream echoes", &agent, || echoes(first, b"x"));
    let mut long_lived = TcpStream::connect(("127.0.0.1", first)).unwrap();
    long_lived
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(echo_once(&mut long_lived, b"before").unwrap(), b"before");

    // SIGHUP with a new service and upstream: reloaded, still running.
    std::fs::write(
        conf.join("agent.hcl"),
        format!(
            "{base}{}{}",
            service("web", 8080, &[("echo", first)]),
            service("api", 9090, &[("echo", second)])
        ),
    )
    .unwrap();
    agent.signal("HUP");
    wait_until("the reload shows the new service", &agent, || {
        service_ids(&http).is_some_and(|ids| ids == ["echo", "web", "api"])
    });
    assert!(agent.child.try_wait().unwrap().is_none(), "still running");
    wait_until("the new upstream echoes", &agent, || echoes(second, b"y"));
    assert_eq!(echo_once(&mut long_lived, b"after").unwrap(), b"after");
    let metrics = String::from_utf8(Client::new(&http).get_raw("/metrics").unwrap()).unwrap();
    assert!(
        metrics.contains("rhizome_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );

    // `rhizome reload` with a broken file: exit 1, the file:line:column, nothing changed.
    std::fs::write(conf.join("broken.hcl"), "service {\n  name = \n}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rhizome"))
        .args(["reload", "--http-addr", &http])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not reloaded (invalid)"), "{stderr}");
    assert!(stderr.contains("broken.hcl:2:"), "{stderr}");
    assert_eq!(
        service_ids(&http).unwrap(),
        ["echo", "web", "api"],
        "the config in force stays"
    );
    assert!(
        agent.log().contains("broken.hcl:2:"),
        "the log says why too"
    );

    // `rhizome reload` once fixed: exit 0, says what changed.
    std::fs::remove_file(conf.join("broken.hcl")).unwrap();
    std::fs::write(
        conf.join("agent.hcl"),
        format!("{base}{}", service("web", 8080, &[("echo", first)])),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rhizome"))
        .args(["reload", "--http-addr", &http])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("service removed: api"), "{stdout}");
    assert_eq!(echo_once(&mut long_lived, b"still").unwrap(), b"still");
    drop(long_lived);

    // SIGTERM still stops it, cleanly.
    agent.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "agent did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}\n{}", agent.log());
    assert!(agent.log().contains("store flushed"));
}
