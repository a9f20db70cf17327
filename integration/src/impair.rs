//! Packet loss and delay on one host's link, in both directions, and their removal.
//!
//! The first choice is `tc netem` on both ends of the host's veth (the host's `eth0` and its
//! switch port). Kernels built without `sch_netem` (as some CI machines are) fall back to
//! nftables: a `numgen random` drop rule on the host's input and output. That backend can
//! drop but not delay; asking it for delay is [`HarnessError::Unsupported`], and so is any
//! impairment on a machine with neither (no `tc`, or no sch_netem, and no `nft`): tests skip
//! with [`crate::impair_or_skip!`] then.

use crate::cmd;
use crate::error::{HarnessError, Result};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// nftables table the fallback backend owns inside a host namespace.
pub const NFT_TABLE: &str = "rhizome_impair";

/// Faults applied to a host's link. Each direction is impaired separately, so a round trip
/// sees the delay twice and loses a packet with probability about `2 p - p^2`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Impairment {
    /// Percentage of packets dropped in each direction (0 to 100).
    pub loss_percent: u8,
    /// Added one-way delay (netem only).
    pub delay: Duration,
}

impl Impairment {
    /// Drops `percent` % of packets each way.
    pub fn loss(percent: u8) -> Impairment {
        Impairment {
            loss_percent: percent.min(100),
            delay: Duration::ZERO,
        }
    }

    /// Delays every packet by `delay` each way.
    pub fn delay(delay: Duration) -> Impairment {
        Impairment {
            loss_percent: 0,
            delay,
        }
    }

    /// Adds a delay to this impairment.
    pub fn with_delay(self, delay: Duration) -> Impairment {
        Impairment { delay, ..self }
    }
}

/// The mechanism that carries an impairment on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `tc qdisc ... netem` on both ends of the link (loss and delay); see `tc qdisc show`.
    Netem,
    /// An nftables drop rule in the host (loss only); see `nft list table inet rhizome_impair`.
    Nftables,
}

/// Both ends of one host's link.
pub(crate) struct Link<'a> {
    /// The host's namespace (its end is `eth0`).
    pub host_ns: &'a str,
    /// The switch namespace.
    pub switch_ns: &'a str,
    /// The host's port on the switch.
    pub port: &'a str,
    /// Directory for the nft script.
    pub dir: &'a Path,
}

impl Link<'_> {
    fn ends(&self) -> [(&str, &str); 2] {
        [(self.host_ns, "eth0"), (self.switch_ns, self.port)]
    }
}

/// Applies `imp` (replacing any earlier impairment) and says which backend carries it.
pub(crate) fn apply(link: &Link<'_>, imp: Impairment) -> Result<Backend> {
    if imp == Impairment::default() {
        return Err(HarnessError::Usage(
            "an empty impairment: call clear_impairment to remove one".into(),
        ));
    }
    clear(link)?;
    // Why netem cannot carry it: `tc` missing, or a kernel without sch_netem.
    let no_netem = if cmd::exists("tc") {
        match apply_netem(link, imp) {
            Ok(()) => return Ok(Backend::Netem),
            Err(HarnessError::Command { stderr, .. }) if stderr.contains("unknown") => {}
            Err(e) => return Err(e),
        }
        clear(link)?;
        "this kernel has no sch_netem (CONFIG_NET_SCH_NETEM)"
    } else {
        "`tc` (Debian package iproute2) is not installed"
    };
    if !imp.delay.is_zero() {
        return Err(HarnessError::Unsupported(format!(
            "{no_netem}, so packet delay cannot be emulated; packet loss still can (nftables)"
        )));
    }
    if !cmd::exists("nft") {
        return Err(HarnessError::Unsupported(format!(
            "{no_netem} and `nft` (Debian package nftables) is not installed, so packet loss \
             cannot be emulated"
        )));
    }
    apply_nft(link, imp.loss_percent)?;
    Ok(Backend::Nftables)
}

fn apply_netem(link: &Link<'_>, imp: Impairment) -> Result<()> {
    let mut spec = Vec::new();
    if !imp.delay.is_zero() {
        spec.push("delay".to_string());
        spec.push(format!("{}us", imp.delay.as_micros()));
    }
    if imp.loss_percent > 0 {
        spec.push("loss".to_string());
        spec.push(format!("{}%", imp.loss_percent));
    }
    for (ns, dev) in link.ends() {
        cmd::checked(
            Command::new("tc")
                .args(["-n", ns, "qdisc", "replace", "dev", dev, "root", "netem"])
                .args(&spec),
        )?;
    }
    Ok(())
}

fn apply_nft(link: &Link<'_>, percent: u8) -> Result<()> {
    // nft's numgen compares within 0..=99: total loss is an unconditional drop.
    let chance = if percent >= 100 {
        String::new()
    } else {
        format!("numgen random mod 100 < {percent} ")
    };
    let script = format!(
        "table inet {NFT_TABLE} {{\n\
         \tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n\
         \t\tiifname \"eth0\" {chance}counter drop\n\t}}\n\
         \tchain output {{\n\t\ttype filter hook output priority 0; policy accept;\n\
         \t\toifname \"eth0\" {chance}counter drop\n\t}}\n}}\n"
    );
    let path = link.dir.join("impair.nft");
    std::fs::write(&path, script).map_err(|e| HarnessError::io(path.display().to_string(), e))?;
    cmd::checked(
        Command::new("ip")
            .args(["netns", "exec", link.host_ns, "nft", "-f"])
            .arg(&path),
    )?;
    Ok(())
}

/// Removes whatever impairment the link has (both backends); a clean link stays clean.
pub(crate) fn clear(link: &Link<'_>) -> Result<()> {
    for (ns, dev) in link.ends().into_iter().filter(|_| cmd::exists("tc")) {
        let shown = cmd::run("tc", ["-n", ns, "qdisc", "show", "dev", dev, "root"])?;
        if shown.contains("netem") {
            cmd::run("tc", ["-n", ns, "qdisc", "del", "dev", dev, "root"])?;
        }
    }
    if cmd::exists("nft") {
        let tables = nft(link.host_ns, &["list", "tables"])?;
        if tables.contains(NFT_TABLE) {
            nft(link.host_ns, &["delete", "table", "inet", NFT_TABLE])?;
        }
    }
    Ok(())
}

/// Packets dropped by the impairment so far (both ends / both rules).
pub(crate) fn drops(link: &Link<'_>, backend: Backend) -> Result<u64> {
    let mut total = 0;
    match backend {
        Backend::Netem => {
            for (ns, dev) in link.ends() {
                let out = cmd::run("tc", ["-n", ns, "-s", "-j", "qdisc", "show", "dev", dev])?;
                let v: serde_json::Value = parse_json(&out)?;
                for q in v.as_array().into_iter().flatten() {
                    if q["kind"] == "netem" {
                        total += q["drops"].as_u64().unwrap_or(0);
                    }
                }
            }
        }
        Backend::Nftables => {
            let out = nft(link.host_ns, &["-j", "list", "table", "inet", NFT_TABLE])?;
            let v = parse_json(&out)?;
            sum_counters(&v, &mut total);
        }
    }
    Ok(total)
}

fn sum_counters(v: &serde_json::Value, total: &mut u64) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(packets) = map.get("counter").and_then(|c| c["packets"].as_u64()) {
                *total += packets;
            }
            map.values().for_each(|x| sum_counters(x, total));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|x| sum_counters(x, total)),
        _ => {}
    }
}

fn parse_json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| HarnessError::Process {
        what: "tool JSON output".into(),
        detail: format!("{e}: {text}"),
    })
}

/// Runs `nft ARGS` inside namespace `ns`.
pub(crate) fn nft(ns: &str, args: &[&str]) -> Result<String> {
    cmd::checked(
        Command::new("ip")
            .args(["netns", "exec", ns, "nft"])
            .args(args),
    )
}
