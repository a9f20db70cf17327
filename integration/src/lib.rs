//! rhizome-integration: multi-host tests of rhizome on one machine.
//!
//! The harness builds a real network out of Linux network namespaces: a [`Net`] is a
//! "switch" namespace holding a bridge, plus N host namespaces, each cabled to the bridge by
//! a veth pair and given one address from 198.18.0.0/15 (RFC 2544, routed nowhere). Hosts
//! have no default route: they reach each other and nothing else. Tests start real
//! `rhizome agent` processes in the hosts ([`AgentProc`]), real TCP services
//! (`rhizome-testsvc`), and inject faults: kill -9, SIGTERM, restart on the same data_dir,
//! cable cut ([`Host::cut_link`]), partitions ([`Net::partition`]), loss and delay
//! ([`Host::impair`]).
//!
//! Everything a network creates is removed when it is dropped, also when the test panics:
//! processes are killed by PID, then the namespaces (and with them every veth and bridge)
//! are deleted. Names are `rz<pid>x<counter>x<random>-<role>`, so parallel tests and test
//! processes never collide, and a later run removes what a killed one left behind.
//!
//! Needs root and iproute2 (`ip`, `tc`); loss on kernels without `sch_netem` needs `nft`.
//! Elsewhere [`Net::new`] returns [`HarnessError::Skip`] and [`net_or_skip!`] prints why.
//! See `integration/README.md` for how to write a scenario.
//!
//! Non-goals: simulation (see the gossip simulator), timing measurements (benchmarks).

#![deny(missing_docs)]

pub mod agent;
pub mod bins;
mod cmd;
pub mod error;
pub mod host;
pub mod impair;
pub mod names;
pub mod net;
pub mod process;
pub mod testsvc;
pub mod wait;

pub use agent::{AgentProc, AgentSpec};
pub use bins::Binaries;
pub use error::{HarnessError, Result};
pub use host::{Host, HttpAnswer};
pub use impair::{Backend, Impairment};
pub use net::Net;
pub use process::Proc;
pub use wait::wait_until;

/// Prints the one line a skipped test (or part of one) leaves: `SKIPPED file:line: reason`,
/// straight to stderr, past the test harness's capture, so a skip is seen.
#[doc(hidden)]
pub fn print_skip(file: &str, line: u32, reason: &dyn std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {file}:{line}: {reason}");
}

/// Whether `program` is on `PATH` (the tools the harness and scenarios drive: `ip`, `tc`,
/// `nft`).
pub fn has_tool(program: &str) -> bool {
    cmd::exists(program)
}

/// `return`s from the calling test with one `SKIPPED file:line: ...` line unless tool
/// `$program` (from Debian package `$package`) is on `PATH`.
#[macro_export]
macro_rules! tool_or_skip {
    ($program:expr, $package:expr) => {
        if !$crate::has_tool($program) {
            $crate::print_skip(
                file!(),
                line!(),
                &format!(
                    "`{}` is not installed (Debian package {})",
                    $program, $package
                ),
            );
            return;
        }
    };
}

/// Applies impairment `$imp` to host `$host` and yields the [`Backend`] carrying it, or
/// prints what this machine lacks to impair a link (no `tc`/sch_netem and no `nft`) and
/// `return`s from the calling test. Any other failure panics.
#[macro_export]
macro_rules! impair_or_skip {
    ($host:expr, $imp:expr) => {
        match $host.impair($imp) {
            Ok(backend) => backend,
            Err($crate::HarnessError::Unsupported(reason)) => {
                $crate::print_skip(file!(), line!(), &reason);
                return;
            }
            Err(e) => panic!("cannot impair the link of {}: {e}", $host.name()),
        }
    };
}

/// Builds a [`Net`] of `$hosts` hosts, or prints why namespace tests cannot run here and
/// `return`s from the calling test. Any other failure panics.
#[macro_export]
macro_rules! net_or_skip {
    ($hosts:expr) => {
        match $crate::Net::new($hosts) {
            Ok(net) => net,
            Err($crate::HarnessError::Skip(reason)) => {
                $crate::print_skip(file!(), line!(), &reason);
                return;
            }
            Err(e) => panic!("cannot build the test network: {e}"),
        }
    };
}
