//! One host of a test network: a network namespace with one interface (`eth0`, an address
//! from 198.18.0.0/15) cabled to the switch. Runs commands and processes inside it, cuts
//! and restores its cable, and impairs its link.

use crate::bins::Binaries;
use crate::cmd;
use crate::error::{HarnessError, Result};
use crate::impair::{self, Backend, Impairment, Link};
use crate::process::{Proc, Registry};
use crate::testsvc;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a test service may take to bind and say so.
const SERVICE_READY: Duration = Duration::from_secs(10);

/// A host namespace of a [`crate::Net`]; cheap to clone (all clones are the same host).
#[derive(Clone)]
pub struct Host {
    pub(crate) index: usize,
    pub(crate) ns: String,
    pub(crate) switch_ns: String,
    pub(crate) port: String,
    pub(crate) addr: Ipv4Addr,
    pub(crate) dir: PathBuf,
    pub(crate) bins: Arc<Binaries>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) impairment: Arc<Mutex<Option<Backend>>>,
}

/// An HTTP answer fetched with [`Host::http_get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Body, as text.
    pub body: String,
}

impl Host {
    /// Position of the host in its network (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Short name, `h<index>`: also the default agent node name.
    pub fn name(&self) -> String {
        format!("h{}", self.index)
    }

    /// The network namespace's name (for `ip netns exec` by hand).
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The host's address (on `eth0`).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// `addr:port` on this host.
    pub fn socket(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.addr, port))
    }

    /// The host's own directory (logs, agent config and data), removed with the network.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The programs run in hosts.
    pub fn bins(&self) -> &Binaries {
        &self.bins
    }

    /// A command that runs `program` inside this host (`ip netns exec NS program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Runs `program args...` in the host to completion; its stdout, or an error with stderr.
    pub fn run<I, S>(&self, program: impl AsRef<std::ffi::OsStr>, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        cmd::checked(self.command(program).args(args))
    }

    /// Starts `program args...` in the host, stdout and stderr appended to `<dir>/<label>.log`.
    /// The process is stopped when the returned [`Proc`] or the network is dropped.
    pub fn spawn<I, S>(
        &self,
        label: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: I,
    ) -> Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let log = self.log_file(label)?;
        let err = log
            .try_clone()
            .map_err(|e| HarnessError::io("clone log file", e))?;
        let mut c = self.command(program);
        c.args(args).stdin(Stdio::null()).stdout(log).stderr(err);
        let child = c
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawn `{}`", cmd::describe(&c)), e))?;
        Ok(Proc::new(
            format!("{label} on {}", self.name()),
            self.registry.track(child),
        ))
    }

    /// Path of the log of a process spawned with `label`.
    pub fn log_path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.log"))
    }

    fn log_file(&self, label: &str) -> Result<std::fs::File> {
        let path = self.log_path(label);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| HarnessError::io(format!("open {}", path.display()), e))
    }

    /// Starts a `rhizome-testsvc` server (`args` after the program name) and waits until it
    /// prints that it listens. Its stderr goes to `<dir>/<label>.log`.
    pub fn spawn_service(&self, label: &str, args: &[&str]) -> Result<Proc> {
        let log = self.log_file(label)?;
        let mut c = self.command(&self.bins.testsvc);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = c
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawn `{}`", cmd::describe(&c)), e))?;
        let stdout = child.stdout.take();
        let proc = Proc::new(
            format!("{label} on {}", self.name()),
            self.registry.track(child),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = stdout {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(out);
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let _ = tx.send(line);
                // Keep draining so a late write never fails on a closed pipe.
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
            });
        }
        match rx.recv_timeout(SERVICE_READY) {
            Ok(line) if line.starts_with(testsvc::READY_PREFIX) => Ok(proc),
            Ok(line) => Err(HarnessError::Process {
                what: proc.label().to_string(),
                detail: format!(
                    "did not start: stdout {line:?}, log: {}",
                    read_tail(&self.log_path(label), 20)
                ),
            }),
            Err(_) => Err(HarnessError::Timeout {
                what: format!("{} to listen", proc.label()),
                waited: SERVICE_READY,
            }),
        }
    }

    /// Starts a TCP echo server on `<host addr>:port` (half-close is passed through).
    pub fn start_echo(&self, port: u16) -> Result<Proc> {
        let listen = self.socket(port).to_string();
        self.spawn_service(&format!("echo-{port}"), &["echo", "--listen", &listen])
    }

    /// Starts an HTTP server on `<host addr>:port` answering every request with 200 and `body`.
    pub fn start_http(&self, port: u16, body: &str) -> Result<Proc> {
        let listen = self.socket(port).to_string();
        self.spawn_service(
            &format!("http-{port}"),
            &["http", "--listen", &listen, "--body", body],
        )
    }

    /// Runs the test client from this host: connects to `target`, sends `bytes` bytes, and
    /// checks that exactly those come back. Errors say whether it was unreachable or corrupt.
    pub fn echo(&self, target: SocketAddr, bytes: u64, timeout: Duration) -> Result<()> {
        let out = self.client(target, bytes, timeout)?;
        match out.status.code() {
            Some(testsvc::EXIT_OK) => Ok(()),
            code => Err(HarnessError::Process {
                what: format!("echo of {bytes} bytes from {} to {target}", self.name()),
                detail: format!(
                    "client exit {code:?} ({}): {}",
                    client_verdict(code),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            }),
        }
    }

    /// Whether a 64-byte echo to `target` succeeds within `timeout`: `false` when the client
    /// cannot connect or times out; an error when bytes come back wrong.
    pub fn can_reach(&self, target: SocketAddr, timeout: Duration) -> Result<bool> {
        let out = self.client(target, 64, timeout)?;
        match out.status.code() {
            Some(testsvc::EXIT_OK) => Ok(true),
            Some(testsvc::EXIT_UNREACHABLE) => Ok(false),
            code => Err(HarnessError::Process {
                what: format!("probe from {} to {target}", self.name()),
                detail: format!(
                    "client exit {code:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            }),
        }
    }

    fn client(
        &self,
        target: SocketAddr,
        bytes: u64,
        timeout: Duration,
    ) -> Result<std::process::Output> {
        let mut c = self.command(&self.bins.testsvc);
        c.args(["client", "--connect", &target.to_string()])
            .args(["--bytes", &bytes.to_string()])
            .args(["--timeout-ms", &timeout.as_millis().to_string()]);
        cmd::output(&mut c)
    }

    /// `GET path` on `target` from inside this host (HTTP/1.0, body read to the end).
    pub fn http_get(&self, target: SocketAddr, path: &str) -> Result<HttpAnswer> {
        let mut c = self.command(&self.bins.testsvc);
        c.args(["get", "--connect", &target.to_string(), "--path", path]);
        let out = cmd::output(&mut c)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (status, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        match status.trim().parse() {
            Ok(status) => Ok(HttpAnswer {
                status,
                body: body.to_string(),
            }),
            Err(_) => Err(HarnessError::Process {
                what: format!("GET {path} on {target} from {}", self.name()),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        }
    }

    /// Pulls the host's cable: its switch port goes down, so nothing passes either way
    /// (packets vanish, as on a real cut; nothing fails fast).
    pub fn cut_link(&self) -> Result<()> {
        cmd::run(
            "ip",
            ["-n", &self.switch_ns, "link", "set", &self.port, "down"],
        )?;
        Ok(())
    }

    /// Plugs the cable back in.
    pub fn restore_link(&self) -> Result<()> {
        cmd::run(
            "ip",
            ["-n", &self.switch_ns, "link", "set", &self.port, "up"],
        )?;
        Ok(())
    }

    /// Whether the host's `eth0` has carrier (`LOWER_UP`): false while its cable is cut.
    pub fn has_carrier(&self) -> Result<bool> {
        let out = cmd::run("ip", ["-n", &self.ns, "-j", "link", "show", "eth0"])?;
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| HarnessError::Process {
                what: "ip -j link".into(),
                detail: format!("{e}: {out}"),
            })?;
        let flags = v[0]["flags"].as_array().cloned().unwrap_or_default();
        Ok(flags.iter().any(|f| f == "LOWER_UP"))
    }

    fn link(&self) -> Link<'_> {
        Link {
            host_ns: &self.ns,
            switch_ns: &self.switch_ns,
            port: &self.port,
            dir: &self.dir,
        }
    }

    /// Applies packet loss and/or delay to the host's link (replacing an earlier one) and
    /// says which backend carries it (see [`crate::impair`]).
    pub fn impair(&self, imp: Impairment) -> Result<Backend> {
        let backend = impair::apply(&self.link(), imp)?;
        *self.lock_impairment() = Some(backend);
        Ok(backend)
    }

    /// Removes the link's impairment, if any.
    pub fn clear_impairment(&self) -> Result<()> {
        impair::clear(&self.link())?;
        *self.lock_impairment() = None;
        Ok(())
    }

    /// Packets the current impairment has dropped so far; `None` when there is none.
    pub fn impairment_drops(&self) -> Result<Option<u64>> {
        let Some(backend) = *self.lock_impairment() else {
            return Ok(None);
        };
        impair::drops(&self.link(), backend).map(Some)
    }

    fn lock_impairment(&self) -> std::sync::MutexGuard<'_, Option<Backend>> {
        self.impairment
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `tc qdisc show` of both ends of the link (host `eth0`, then its switch port); empty
    /// without `tc`.
    pub fn qdisc_show(&self) -> Result<String> {
        if !cmd::exists("tc") {
            return Ok(String::new());
        }
        let host = cmd::run("tc", ["-n", &self.ns, "qdisc", "show", "dev", "eth0"])?;
        let port = cmd::run(
            "tc",
            ["-n", &self.switch_ns, "qdisc", "show", "dev", &self.port],
        )?;
        Ok(format!("{host}{port}"))
    }

    /// The host's nftables ruleset (`nft list ruleset`), or `None` without `nft`.
    pub fn nft_ruleset(&self) -> Result<Option<String>> {
        if !cmd::exists("nft") {
            return Ok(None);
        }
        impair::nft(&self.ns, &["list", "ruleset"]).map(Some)
    }
}

fn client_verdict(code: Option<i32>) -> &'static str {
    match code {
        Some(testsvc::EXIT_UNREACHABLE) => "unreachable or timed out",
        Some(testsvc::EXIT_CORRUPT) => "bytes differ",
        _ => "client error",
    }
}

/// The last `lines` lines of a text file (empty if it cannot be read).
pub(crate) fn read_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
