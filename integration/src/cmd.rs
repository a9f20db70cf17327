//! Running the system tools the harness drives (`ip`, `tc`, `nft`) and reporting their
//! failures with the full command line and stderr.

use crate::error::{HarnessError, Result};
use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

/// A command line as a shell would show it, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` to completion, capturing its output; fails only if it cannot be spawned.
pub(crate) fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| HarnessError::io(format!("cannot run `{}`", describe(cmd)), e))
}

/// Runs `cmd` and returns its stdout; a non-zero exit is an error carrying stderr.
pub(crate) fn checked(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(HarnessError::Command {
            command: describe(cmd),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `program args...` and returns its stdout (error on non-zero exit).
pub(crate) fn run<P, I, S>(program: P, args: I) -> Result<String>
where
    P: AsRef<OsStr>,
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    checked(Command::new(program).args(args))
}

/// Whether `program` can be found on `PATH` (or is a path to an existing file).
pub(crate) fn exists(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
