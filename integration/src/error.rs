//! The harness's error type: why a network could not be built, a command failed, or a
//! condition never came true.

use std::time::Duration;

/// Result of harness operations.
pub type Result<T> = std::result::Result<T, HarnessError>;

/// What went wrong in the harness (or why it does not run here).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// This machine cannot run namespace tests (not root, no `ip netns`): the environment's
    /// limit, not a failure. Tests print the reason and return.
    #[error("skipped: {0}")]
    Skip(String),
    /// The kernel or tools lack a feature the test asked for (e.g. delay without netem):
    /// the environment's limit; the test may skip that part and say why.
    #[error("unsupported here: {0}")]
    Unsupported(String),
    /// A command run by the harness exited with an error (the command line is in the message).
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, as a shell would show it.
        command: String,
        /// Exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Reading or writing a file, or spawning a process, failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A bounded wait ended before its condition held (the last observation is in `what`).
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// The condition and the last thing seen.
        what: String,
        /// How long the harness waited.
        waited: Duration,
    },
    /// A process under test misbehaved: exited early, printed something unexpected, or a
    /// test service reported corrupted data. The fault of the code under test.
    #[error("{what}: {detail}")]
    Process {
        /// Which process.
        what: String,
        /// What happened (log tail, output).
        detail: String,
    },
    /// `rhizome ca init` / `ca issue-agent` failed for the network's mesh root (a bug in the
    /// CA code or the harness; nothing was started).
    #[error("mesh CA: {0}")]
    Ca(String),
    /// The test used the harness wrongly (bad host index, overlapping partition groups).
    #[error("harness misuse: {0}")]
    Usage(String),
}

impl HarnessError {
    /// An I/O error with what the harness was doing.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> HarnessError {
        HarnessError::Io {
            what: what.into(),
            source,
        }
    }

    /// Whether this is a [`HarnessError::Skip`].
    pub fn is_skip(&self) -> bool {
        matches!(self, HarnessError::Skip(_))
    }
}
