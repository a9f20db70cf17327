//! Health checks of the local services (`check { tcp = ... | http = ..., interval, timeout,
//! success_before_passing, failures_before_critical }`): one task per check probing at its
//! interval. A check starts critical, turns passing after `success_before_passing`
//! consecutive passing probes and critical again after `failures_before_critical`
//! consecutive failing ones (Consul's semantics: between thresholds it keeps its status, so
//! one failed probe during a quick restart of the service does not take the instance out).
//! A probe that cannot run because the agent itself is out of file descriptors (EMFILE,
//! ENFILE: a connection flood on its listeners) is no verdict on the service: the status
//! stays, and one WARN per such episode says so. A flood on one upstream therefore never
//! turns the host's other services critical.
//! A service is passing when all its checks are. Statuses are published through a `watch`
//! map keyed by instance id. The checks follow the services in force: a reload starts, stops
//! or replaces them.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Check, CheckKind, ConfigReader, Service};
use crate::runtime::{Shutdown, ShutdownTrigger};

/// Status of each check (true: passing), by (instance id, check index).
pub type CheckResults = BTreeMap<(String, usize), bool>;

/// Whether instance `id` passes: every one of its checks is passing (no checks: passing).
pub fn is_passing(results: &CheckResults, service: &Service) -> bool {
    (0..service.checks.len()).all(|i| results.get(&(service.id.clone(), i)) == Some(&true))
}

/// Runs the checks of the services in force until `shutdown`: one task per check, under
/// one supervisor spawned into `tasks`. When a reload changes a service's checks or removes
/// the service, its check tasks stop and its results are dropped; the checks of unchanged
/// services keep running and keep their results (no flap to critical on a reload).
/// Checks start failing (critical) until their first probe passes.
pub fn spawn(
    live: ConfigReader,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &Shutdown,
) -> watch::Receiver<CheckResults> {
    let (tx, rx) = watch::channel(CheckResults::new());
    tasks.spawn(supervise(live, tx, shutdown.clone()));
    rx
}

/// Starts and stops the check tasks as the services in force change.
async fn supervise(
    mut live: ConfigReader,
    results: watch::Sender<CheckResults>,
    stop: Shutdown,
) -> anyhow::Result<()> {
    let mut running: BTreeMap<String, (Vec<Check>, ShutdownTrigger)> = BTreeMap::new();
    let mut checks = JoinSet::new();
    loop {
        let config = live.borrow_and_update().clone();
        let wanted: BTreeMap<&str, &Vec<Check>> = config
            .services
            .iter()
            .map(|s| (s.id.as_str(), &s.checks))
            .collect();
        // Dropping a trigger stops that service's check tasks.
        running.retain(|id, (c, _)| wanted.get(id.as_str()) == Some(&&*c));
        results.send_if_modified(|m| {
            let before = m.len();
            m.retain(|(id, _), _| running.contains_key(id));
            m.len() != before
        });
        for service in &config.services {
            if running.contains_key(&service.id) {
                continue;
            }
            let (trigger, stopped) = stop.child();
            for (i, check) in service.checks.iter().enumerate() {
                let key = (service.id.clone(), i);
                checks.spawn(probe_loop(
                    key,
                    check.clone(),
                    results.clone(),
                    stopped.clone(),
                ));
            }
            running.insert(service.id.clone(), (service.checks.clone(), trigger));
        }
        tokio::select! {
            () = stop.wait() => break,
            changed = live.changed() => if changed.is_err() {
                stop.wait().await;
                break;
            },
            Some(_) = checks.join_next() => {}
        }
    }
    drop(running);
    while checks.join_next().await.is_some() {}
    Ok(())
}

/// The status of one check from its probes' results, with Consul's thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Passing (else critical).
    pub passing: bool,
    /// Consecutive passing probes so far.
    successes: u32,
    /// Consecutive failing probes so far.
    failures: u32,
}

impl Status {
    /// A check before its first probe: critical (as in Consul).
    pub fn new() -> Status {
        Status {
            passing: false,
            successes: 0,
            failures: 0,
        }
    }

    /// Counts one probe of `check`; returns whether the status changed.
    pub fn record(&mut self, check: &Check, passed: bool) -> bool {
        let before = self.passing;
        if passed {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= check.success_before_passing {
                self.passing = true;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= check.failures_before_critical {
                self.passing = false;
            }
        }
        self.passing != before
    }
}

impl Default for Status {
    fn default() -> Self {
        Status::new()
    }
}

/// Probes `check` at its interval, writing its status under `key`, until `stop`.
async fn probe_loop(
    key: (String, usize),
    check: Check,
    results: watch::Sender<CheckResults>,
    stop: Shutdown,
) {
    let mut tick = tokio::time::interval(check.interval.0.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut status = Status::new();
    let mut starved = false;
    loop {
        tokio::select! {
            () = stop.wait() => return,
            _ = tick.tick() => {}
        }
        let outcome = tokio::select! {
            () = stop.wait() => return,
            outcome = run_probe(&check) => outcome,
        };
        let passed = match outcome {
            Probe::NotRun(e) => {
                if !starved {
                    tracing::warn!(instance = %key.0, check = key.1, error = %e,
                        "health check not run: this agent is out of file descriptors; \
                         the status stays as it was");
                }
                starved = true;
                continue;
            }
            Probe::Passed => true,
            Probe::Failed => false,
        };
        starved = false;
        let changed = status.record(&check, passed);
        if changed {
            tracing::info!(instance = %key.0, check = key.1, passing = status.passing,
                "health check status changed");
        } else if !passed && status.passing {
            tracing::info!(instance = %key.0, check = key.1, failures = status.failures,
                failures_before_critical = check.failures_before_critical,
                "health check probe failed; still passing");
        }
        let passing = status.passing;
        results.send_if_modified(|m| m.insert(key.clone(), passing) != Some(passing));
    }
}

/// What one probe found.
#[derive(Debug)]
pub enum Probe {
    /// The service answered as the check wants.
    Passed,
    /// It did not (refused, wrong status, timeout).
    Failed,
    /// The agent could not open a socket (out of descriptors): no verdict.
    NotRun(std::io::Error),
}

/// Runs one probe within the check's timeout.
pub async fn run_probe(check: &Check) -> Probe {
    let attempt = async {
        match &check.kind {
            CheckKind::Tcp { target } => TcpStream::connect(target.as_str()).await.map(|_| true),
            CheckKind::Http { url } => http_get_ok(url).await,
        }
    };
    match tokio::time::timeout(check.timeout.0, attempt).await {
        Ok(Ok(true)) => Probe::Passed,
        Ok(Err(e)) if out_of_descriptors(&e) => Probe::NotRun(e),
        _ => Probe::Failed,
    }
}

/// EMFILE or ENFILE: the failure is this process's (or the host's), not the service's.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// `GET url` over HTTP/1.1; true on a 2xx status.
async fn http_get_ok(url: &str) -> std::io::Result<bool> {
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an http:// URL");
    let rest = url.strip_prefix("http://").ok_or_else(invalid)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let target = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut stream = TcpStream::connect(target).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: rhizome-health\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 32];
    let mut n = 0;
    while n < 12 {
        let got = stream.read(&mut head[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    Ok(status.is_some_and(|s| (200..300).contains(&s)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::CheckKind;
    use crate::duration::Dur;

    fn check(success_before_passing: u32, failures_before_critical: u32) -> Check {
        Check {
            kind: CheckKind::Tcp {
                target: "127.0.0.1:1".into(),
            },
            interval: Dur(Duration::from_secs(1)),
            timeout: Dur(Duration::from_secs(1)),
            success_before_passing,
            failures_before_critical,
        }
    }

    /// The status after each probe of `results` (true: passed).
    fn run(check: &Check, results: &[bool]) -> Vec<bool> {
        let mut status = Status::new();
        results
            .iter()
            .map(|&passed| {
                status.record(check, passed);
                status.passing
            })
            .collect()
    }

    #[tokio::test]
    async fn a_probe_the_agent_cannot_run_is_no_verdict() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = Check {
            kind: CheckKind::Tcp {
                target: listener.local_addr().unwrap().to_string(),
            },
            ..check(0, 1)
        };
        assert!(matches!(run_probe(&c).await, Probe::Passed));
        drop(listener);
        assert!(matches!(run_probe(&c).await, Probe::Failed));
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!out_of_descriptors(&std::io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
    }

    #[test]
    fn thresholds_follow_consul() {
        // Consul's defaults (0, 0): every probe decides.
        assert_eq!(run(&check(0, 0), &[true, false, true]), [true, false, true]);
        assert_eq!(run(&check(1, 1), &[true, false]), [true, false]);
        // Failures below the threshold keep it passing; a success resets the count.
        let c = check(0, 3);
        assert_eq!(
            run(&c, &[true, false, false, true, false, false, false]),
            [true, true, true, true, true, true, false]
        );
        // It starts critical and needs `success_before_passing` successes in a row.
        let c = check(2, 1);
        assert_eq!(
            run(&c, &[true, false, true, true, false, true]),
            [false, false, false, true, false, false]
        );
    }
}
