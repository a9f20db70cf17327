//! `rhizome agent` as a child process of a test (a real `kill -9`, its own resource limits),
//! with its config written from the test CA.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A `rhizome agent` process, killed (SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// `kill -9`, then reaps it.
    pub fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// `kill -TERM` (what systemd and Kubernetes send to stop it), then waits (bounded by
    /// `limit`, killed after it) for it to exit; returns how long that took and whether it
    /// exited by itself with success.
    pub fn terminate(&mut self, limit: std::time::Duration) -> (std::time::Duration, bool) {
        let started = std::time::Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {}", self.pid());
        while started.elapsed() < limit {
            if let Some(status) = self.0.try_wait().unwrap() {
                return (started.elapsed(), status.success());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.kill();
        (started.elapsed(), false)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free for both UDP and TCP a moment ago.
pub fn free_udp_tcp_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Where one agent process keeps its config, data and log.
pub struct ProcAgent {
    pub dir: PathBuf,
    pub gossip: u16,
    pub data: u16,
    pub http: u16,
}

impl ProcAgent {
    /// Writes the config of `node` (fixed ports on 127.0.0.1, credentials from `ca_dir`,
    /// `extra` HCL) under `root/<node>`.
    pub fn write(root: &Path, node: &str, ca_dir: &Path, extra: &str) -> ProcAgent {
        let dir = root.join(node);
        std::fs::create_dir_all(dir.join("config")).unwrap();
        let (gossip, data, http) = (
            free_udp_tcp_port(),
            free_udp_tcp_port(),
            free_udp_tcp_port(),
        );
        std::fs::write(
            dir.join("config/agent.hcl"),
            format!(
                "node_name = \"{node}\"\ndata_dir = \"{}\"\nbind_addr = \"127.0.0.1\"\n\
                 log_level = \"info\"\n\
                 ports {{\n  gossip = {gossip}\n  data = {data}\n  http = {http}\n}}\n\
                 ca {{\n  dir = \"{}\"\n}}\n{extra}",
                dir.join("data").display(),
                ca_dir.display(),
            ),
        )
        .unwrap();
        ProcAgent {
            dir,
            gossip,
            data,
            http,
        }
    }

    /// The agent's log (appended across restarts).
    pub fn log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Starts (or restarts) the process.
    pub fn spawn(&self) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rhizome"))
            .args(["agent", "--config-dir"])
            .arg(self.dir.join("config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Proc(child)
    }

    /// `GET path` on its API (`None` while it does not answer).
    pub async fn get(&self, path: &str) -> Option<String> {
        let addr = format!("127.0.0.1:{}", self.http);
        let path = path.to_string();
        tokio::task::spawn_blocking(move || {
            rhizome_agent::client::Client::new(addr)
                .get_raw(&path)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
        .await
        .unwrap()
    }
}
