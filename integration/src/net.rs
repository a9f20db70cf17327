//! A test network: one "switch" namespace holding a bridge, and N host namespaces, each
//! cabled to the bridge by a veth pair. Everything is created inside namespaces that exist
//! only for this network (nothing in the machine's own namespace), named uniquely, and
//! removed on drop, processes first.

use crate::bins::Binaries;
use crate::cmd;
use crate::error::{HarnessError, Result};
use crate::host::{Host, read_tail};
use crate::names::{self, RunId};
use crate::process::{Registry, kill_namespace_processes};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

/// Largest number of hosts in one network (they share one /24).
pub const MAX_HOSTS: usize = 250;

/// Set this environment variable to keep a network's directory (logs, configs, data) after
/// the test; its path is printed.
pub const KEEP_ENV: &str = "RHIZOME_NETNS_KEEP";

/// Address of host `index`: `198.18.0.<index + 1>` (RFC 2544 benchmarking range, routed
/// nowhere; it exists only inside the network's namespaces).
pub fn host_addr(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, u8::try_from(index + 1).unwrap_or(u8::MAX))
}

/// Trust domain of the mesh root every network creates (with `rhizome ca init`).
pub const TRUST_DOMAIN: &str = "mesh.test";

/// Prefix length of the hosts' subnet.
pub const PREFIX_LEN: u8 = 24;

/// A network of host namespaces joined by a bridge. Dropping it (also while a test panics)
/// kills every process started in it and deletes its namespaces and links.
pub struct Net {
    id: RunId,
    switch_ns: String,
    hosts: Vec<Host>,
    created: Vec<String>,
    dir: Option<tempfile::TempDir>,
    registry: Arc<Registry>,
    bins: Arc<Binaries>,
    extra_bridges: Mutex<Vec<String>>,
    ca_dir: Mutex<Option<std::path::PathBuf>>,
}

/// Why namespace tests cannot run here, if they cannot.
pub fn preflight() -> Result<()> {
    let euid = rustix::process::geteuid();
    if !euid.is_root() {
        return Err(HarnessError::Skip(format!(
            "network namespaces need root (running as uid {})",
            euid.as_raw()
        )));
    }
    if !cmd::exists("ip") {
        return Err(HarnessError::Skip(
            "`ip` not found (install iproute2)".into(),
        ));
    }
    if let Err(e) = cmd::run("ip", ["netns", "list"]) {
        return Err(HarnessError::Skip(format!("`ip netns` unavailable: {e}")));
    }
    Ok(())
}

impl Net {
    /// Builds a network of `hosts` hosts (1 to [`MAX_HOSTS`]). Returns
    /// [`HarnessError::Skip`] when this machine cannot create namespaces. Also removes
    /// namespaces left by earlier test processes that died without cleaning up.
    pub fn new(hosts: usize) -> Result<Net> {
        if hosts == 0 || hosts > MAX_HOSTS {
            return Err(HarnessError::Usage(format!(
                "a network has 1 to {MAX_HOSTS} hosts, not {hosts}"
            )));
        }
        preflight()?;
        let bins = Arc::new(Binaries::locate()?);
        let _ = names::sweep_stale();
        let id = RunId::new();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", id.as_str()))
            .tempdir()
            .map_err(|e| HarnessError::io("create the network's directory", e))?;
        let mut net = Net {
            switch_ns: id.namespace("sw"),
            id,
            hosts: Vec::with_capacity(hosts),
            created: Vec::new(),
            dir: Some(dir),
            registry: Arc::new(Registry::default()),
            bins,
            extra_bridges: Mutex::new(Vec::new()),
            ca_dir: Mutex::new(None),
        };
        net.add_switch()?;
        for index in 0..hosts {
            net.add_host(index)?;
        }
        Ok(net)
    }

    fn add_switch(&mut self) -> Result<()> {
        let sw = self.switch_ns.clone();
        if let Err(e) = cmd::run("ip", ["netns", "add", sw.as_str()]) {
            return Err(HarnessError::Skip(format!(
                "cannot create a namespace: {e}"
            )));
        }
        self.created.push(sw.clone());
        cmd::run("ip", ["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        cmd::run("ip", ["-n", &sw, "link", "set", "br0", "up"])?;
        Ok(())
    }

    fn add_host(&mut self, index: usize) -> Result<()> {
        let ns = self.id.namespace(&format!("h{index}"));
        let sw = self.switch_ns.clone();
        let port = format!("p{index}");
        let addr = host_addr(index);
        cmd::run("ip", ["netns", "add", ns.as_str()])?;
        self.created.push(ns.clone());
        // Both ends are created inside the namespaces: never a name in the root namespace.
        cmd::run(
            "ip",
            [
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ],
        )?;
        cmd::run(
            "ip",
            ["-n", &sw, "link", "set", &port, "master", "br0", "up"],
        )?;
        let cidr = format!("{addr}/{PREFIX_LEN}");
        cmd::run("ip", ["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        // No IPv6 link-local address: the hosts speak only the IPv4 the test gave them.
        cmd::run(
            "ip",
            [
                "-n",
                &ns,
                "link",
                "set",
                "eth0",
                "addrgenmode",
                "none",
                "up",
            ],
        )?;
        cmd::run("ip", ["-n", &ns, "link", "set", "lo", "up"])?;
        let dir = self.dir().join(format!("h{index}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| HarnessError::io(format!("create {}", dir.display()), e))?;
        self.hosts.push(Host {
            index,
            ns,
            switch_ns: sw,
            port,
            addr,
            dir,
            bins: self.bins.clone(),
            registry: self.registry.clone(),
            impairment: Arc::default(),
        });
        Ok(())
    }

    /// This network's unique id (the prefix of its namespace names).
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    /// The names of every namespace of this network (switch first).
    pub fn namespaces(&self) -> &[String] {
        &self.created
    }

    /// The hosts, in index order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `index`; panics on a bad index (a bug in the test).
    pub fn host(&self, index: usize) -> &Host {
        &self.hosts[index]
    }

    /// The network's directory (one sub-directory per host).
    pub fn dir(&self) -> &std::path::Path {
        self.dir
            .as_ref()
            .map_or(std::path::Path::new("/nonexistent"), |d| d.path())
    }

    /// The mesh root's directory (`root.pem`, `root.key`), made with `rhizome ca init` on
    /// first use; agents get intermediates issued from it (`rhizome ca issue-agent`) unless
    /// their spec says otherwise. Signer agents can point `ca { root_dir }` at it.
    pub fn ca_dir(&self) -> Result<std::path::PathBuf> {
        let mut slot = self
            .ca_dir
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(dir) = slot.as_ref() {
            return Ok(dir.clone());
        }
        let dir = self.dir().join("mesh-ca");
        cmd::run(
            &self.bins.rhizome,
            [
                "ca".as_ref(),
                "init".as_ref(),
                "--trust-domain".as_ref(),
                TRUST_DOMAIN.as_ref(),
                "--out".as_ref(),
                dir.as_os_str(),
            ],
        )
        .map_err(|e| HarnessError::Ca(e.to_string()))?;
        *slot = Some(dir.clone());
        Ok(dir)
    }

    /// The programs run in hosts.
    pub fn bins(&self) -> &Binaries {
        &self.bins
    }

    /// Splits the network: each group gets its own bridge, so hosts reach only the hosts of
    /// their own group (packets to others vanish, as in a real partition). Hosts in no group
    /// stay with the first group. Replaces an earlier partition.
    pub fn partition(&self, groups: &[&[usize]]) -> Result<()> {
        let mut seen = vec![false; self.hosts.len()];
        for &i in groups.iter().flat_map(|g| g.iter()) {
            match seen.get_mut(i) {
                Some(s) if !*s => *s = true,
                Some(_) => return Err(HarnessError::Usage(format!("host {i} in two groups"))),
                None => return Err(HarnessError::Usage(format!("no host {i}"))),
            }
        }
        self.heal_partition()?;
        let sw = self.switch_ns.as_str();
        let mut bridges = self.lock_bridges();
        for (g, group) in groups.iter().enumerate().skip(1) {
            let br = format!("br{g}");
            cmd::run("ip", ["-n", sw, "link", "add", &br, "type", "bridge"])?;
            bridges.push(br.clone());
            cmd::run("ip", ["-n", sw, "link", "set", &br, "up"])?;
            for &i in group.iter() {
                cmd::run(
                    "ip",
                    ["-n", sw, "link", "set", &self.hosts[i].port, "master", &br],
                )?;
            }
        }
        Ok(())
    }

    /// Undoes [`Net::partition`]: every host back on one bridge.
    pub fn heal_partition(&self) -> Result<()> {
        let sw = self.switch_ns.as_str();
        let mut bridges = self.lock_bridges();
        if bridges.is_empty() {
            return Ok(());
        }
        for h in &self.hosts {
            cmd::run("ip", ["-n", sw, "link", "set", &h.port, "master", "br0"])?;
        }
        for br in bridges.drain(..) {
            cmd::run("ip", ["-n", sw, "link", "del", &br])?;
        }
        Ok(())
    }

    fn lock_bridges(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.extra_bridges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Prints the last lines of every log in the network's directory to stderr (done
    /// automatically when a test panics with the network alive).
    pub fn print_logs(&self, lines: usize) {
        for host in &self.hosts {
            let Ok(entries) = std::fs::read_dir(host.dir()) else {
                continue;
            };
            let mut logs: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            for log in logs {
                eprintln!("----- {} ({}) -----", log.display(), host.name());
                eprintln!("{}", read_tail(&log, lines));
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs(40);
        }
        self.registry.kill_all();
        for ns in self.created.iter().rev() {
            kill_namespace_processes(ns);
            if let Err(e) = cmd::run("ip", ["netns", "del", ns.as_str()]) {
                eprintln!("warning: could not delete namespace {ns}: {e}");
            }
        }
        if std::env::var_os(KEEP_ENV).is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("kept {}", dir.keep().display());
        }
    }
}
