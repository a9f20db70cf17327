//! Processes the harness starts inside host namespaces: stopped by PID (SIGTERM or SIGKILL),
//! always reaped, and all killed when the network is dropped.
//!
//! A [`Proc`] shares its `Child` with the network's [`Registry`], so whichever stops it
//! first reaps it and the other sees it gone: a reaped PID is never signalled again, so a
//! recycled PID can never be hit.

use crate::error::{HarnessError, Result};
use rustix::process::{Pid, Signal, kill_process};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Shared = Arc<Mutex<Child>>;

fn lock(child: &Shared) -> MutexGuard<'_, Child> {
    child
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every process started on one network, killed and reaped when the network goes away.
#[derive(Default)]
pub struct Registry {
    children: Mutex<Vec<Shared>>,
}

impl Registry {
    /// Tracks `child`, returning the shared handle a [`Proc`] keeps.
    pub(crate) fn track(&self, child: Child) -> Shared {
        let shared = Arc::new(Mutex::new(child));
        let mut children = self
            .children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        children
            .retain(|c| Arc::strong_count(c) > 1 || lock(c).try_wait().ok().flatten().is_none());
        children.push(shared.clone());
        shared
    }

    /// Kills (SIGKILL) and reaps every tracked process still running.
    pub fn kill_all(&self) {
        let children = std::mem::take(
            &mut *self
                .children
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for child in children {
            let mut c = lock(&child);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A process running in a host namespace (an agent or a test service).
pub struct Proc {
    label: String,
    pid: u32,
    child: Shared,
}

impl Proc {
    pub(crate) fn new(label: String, child: Shared) -> Proc {
        let pid = lock(&child).id();
        Proc { label, pid, child }
    }

    /// The process id (the program itself: `ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The label given at spawn (for messages).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The exit status if the process has ended (it is reaped then), `None` while it runs.
    pub fn try_status(&self) -> Result<Option<ExitStatus>> {
        lock(&self.child)
            .try_wait()
            .map_err(|e| HarnessError::io(format!("wait for {}", self.label), e))
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Sends `signal` unless the process was already reaped (then its PID may be reused).
    fn signal(&self, signal: Signal) -> Result<()> {
        // Holding the lock: nobody can reap it between this check and the kill.
        let mut child = lock(&self.child);
        if child
            .try_wait()
            .map_err(|e| HarnessError::io(format!("wait for {}", self.label), e))?
            .is_some()
        {
            return Ok(());
        }
        let pid = Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX))
            .ok_or_else(|| HarnessError::Usage(format!("{} has no valid pid", self.label)))?;
        let sent = kill_process(pid, signal);
        drop(child);
        sent.map_err(|e| HarnessError::io(format!("signal {}", self.label), e.into()))
    }

    /// `kill -9`: stops the process at once (no cleanup runs) and reaps it.
    pub fn kill(&self) -> Result<ExitStatus> {
        let mut child = lock(&self.child);
        child
            .kill()
            .map_err(|e| HarnessError::io(format!("kill {}", self.label), e))?;
        child
            .wait()
            .map_err(|e| HarnessError::io(format!("wait for {}", self.label), e))
    }

    /// Sends SIGTERM and waits up to `grace` for a clean exit; if the process is still
    /// running then, kills it and reports a [`HarnessError::Timeout`].
    pub fn terminate(&self, grace: Duration) -> Result<ExitStatus> {
        self.signal(Signal::TERM)?;
        match self.wait_exit(grace)? {
            Some(status) => Ok(status),
            None => {
                let _ = self.kill();
                Err(HarnessError::Timeout {
                    what: format!("{} to exit after SIGTERM (killed it)", self.label),
                    waited: grace,
                })
            }
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; `None` if it still runs.
    pub fn wait_exit(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let start = Instant::now();
        let mut step = Duration::from_millis(5);
        for _ in 0..10_000 {
            if let Some(status) = self.try_status()? {
                return Ok(Some(status));
            }
            if start.elapsed() >= timeout {
                break;
            }
            std::thread::sleep(step);
            step = (step * 2).min(Duration::from_millis(50));
        }
        self.try_status()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Kills (SIGKILL) every process inside namespace `ns`, by the PIDs `ip netns pids` lists.
/// Used at teardown for anything not started through the harness (a stray child).
pub(crate) fn kill_namespace_processes(ns: &str) {
    let Ok(pids) = crate::cmd::run("ip", ["netns", "pids", ns]) else {
        return;
    };
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        if let Some(pid) = Pid::from_raw(pid) {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}
