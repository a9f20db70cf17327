//! Unique, recognisable names for the namespaces of one test network, and the sweep that
//! removes those left behind by a test process that was killed before its `Drop` ran.
//!
//! A name is `rz<pid>x<counter>x<random>-<role>`: the pid and counter make it unique within
//! a machine at a time, the random part across pid reuse; the pid lets the sweep tell a
//! live owner (leave alone) from a dead one (clean up).

use crate::cmd;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace the harness creates.
pub const PREFIX: &str = "rz";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The unique id of one [`crate::Net`]; namespace names are built from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunId(String);

impl RunId {
    /// A fresh id: this process's pid, a per-process counter and 16 random bits.
    pub fn new() -> RunId {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut h = RandomState::new().build_hasher();
        h.write_u32(n);
        let random = h.finish() & 0xffff;
        RunId(format!("{PREFIX}{}x{n}x{random:04x}", std::process::id()))
    }

    /// The id as text (the common prefix of this network's namespace names).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Name of a namespace of this network with the given role (`sw`, `h0`, ...).
    pub fn namespace(&self, role: &str) -> String {
        format!("{}-{role}", self.0)
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

/// The pid of the process that created `name`, if `name` is a harness namespace name.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('x')?;
    let (counter, rest) = rest.split_once('x')?;
    let (random, role) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let role_ok = role == "sw" || role.strip_prefix('h').is_some_and(digits);
    if !(digits(pid) && digits(counter) && random.len() == 4 && role_ok) {
        return None;
    }
    if !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

/// The names of every network namespace (`ip netns list`).
pub fn list_namespaces() -> crate::Result<Vec<String>> {
    let out = cmd::run("ip", ["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Removes harness namespaces whose creating process no longer exists, first killing the
/// processes still inside them (by the pids `ip netns pids` reports). Returns their names.
pub fn sweep_stale() -> crate::Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list_namespaces()? {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        crate::process::kill_namespace_processes(&name);
        if cmd::run("ip", ["netns", "del", name.as_str()]).is_ok() {
            removed.push(name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_parse_back() {
        let a = RunId::new();
        let b = RunId::new();
        assert_ne!(a, b);
        let ns = a.namespace("h3");
        assert_eq!(owner_pid(&ns), Some(std::process::id()));
        assert_eq!(owner_pid(&a.namespace("sw")), Some(std::process::id()));
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for name in [
            "rzfoo",
            "rz12x3xabcd-db",
            "rz12x3xabc-h1",
            "rz12x3xabcg-h1",
            "cni-123",
        ] {
            assert_eq!(owner_pid(name), None, "{name}");
        }
        assert_eq!(owner_pid("rz12x3xab0f-h10"), Some(12));
    }
}
