//! Finding the programs run inside the hosts.
//!
//! Both are binaries of this package (`rhizome-under-test` is the `rhizome` command line,
//! built from `rhizome_agent::cli`), so `cargo test` builds them, fresh, before it runs this
//! package's tests: no separate build step, no stale binary from an earlier build. They sit
//! next to the `deps/` directory holding the test executable.

use crate::error::{HarnessError, Result};
use std::path::{Path, PathBuf};

/// Environment variable that points the harness at another `rhizome` binary (e.g. a release
/// build: `RHIZOME_BIN=target/release/rhizome`).
pub const RHIZOME_BIN_ENV: &str = "RHIZOME_BIN";

/// Paths of the programs the harness starts in host namespaces.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The `rhizome` command line (agent and CLI).
    pub rhizome: PathBuf,
    /// `rhizome-testsvc`: echo/HTTP servers and the verifying client.
    pub testsvc: PathBuf,
}

impl Binaries {
    /// Locates the binaries next to the running test executable (or `$RHIZOME_BIN`).
    pub fn locate() -> Result<Binaries> {
        let exe = std::env::current_exe()
            .map_err(|e| HarnessError::io("cannot find the test executable", e))?;
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        let rhizome = match std::env::var_os(RHIZOME_BIN_ENV) {
            Some(p) => PathBuf::from(p),
            None => dir.join("rhizome-under-test"),
        };
        let bins = Binaries {
            rhizome,
            testsvc: dir.join("rhizome-testsvc"),
        };
        for path in [&bins.rhizome, &bins.testsvc] {
            if !path.is_file() {
                return Err(HarnessError::Usage(format!(
                    "{} not found: run the tests with `cargo test -p rhizome-integration` \
                     (cargo builds this package's binaries first) or set {RHIZOME_BIN_ENV}",
                    path.display()
                )));
            }
        }
        Ok(bins)
    }
}
