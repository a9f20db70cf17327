//! Health checks of the local services (`check { tcp = ... | http = ..., interval, timeout }`):
//! one task per check probing at its interval; a service is passing when all its checks
//! passed their last probe. Results are published through a `watch` map keyed by instance id.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Check, CheckKind, Service};

/// Last result of each check, by (instance id, check index).
pub type CheckResults = BTreeMap<(String, usize), bool>;

/// Whether instance `id` passes: every one of its checks passed (no checks: passing).
pub fn is_passing(results: &CheckResults, service: &Service) -> bool {
    (0..service.checks.len()).all(|i| results.get(&(service.id.clone(), i)) == Some(&true))
}

/// Spawns one task per check of `services` into `tasks`; they stop on `shutdown`.
/// Checks start failing (critical) until their first probe passes.
pub fn spawn(
    services: &[Service],
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &crate::runtime::Shutdown,
) -> watch::Receiver<CheckResults> {
    let (tx, rx) = watch::channel(CheckResults::new());
    for service in services {
        for (i, check) in service.checks.iter().enumerate() {
            let key = (service.id.clone(), i);
            let (tx, check, stop) = (tx.clone(), check.clone(), shutdown.clone());
            tasks.spawn(async move {
                let mut tick =
                    tokio::time::interval(check.interval.0.max(Duration::from_millis(10)));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = stop.wait() => return Ok(()),
                        _ = tick.tick() => {}
                    }
                    let passed = probe(&check).await;
                    tx.send_if_modified(|m| m.insert(key.clone(), passed) != Some(passed));
                }
            });
        }
    }
    rx
}

/// Runs one probe within the check's timeout.
pub async fn probe(check: &Check) -> bool {
    let attempt = async {
        match &check.kind {
            CheckKind::Tcp { target } => TcpStream::connect(target.as_str()).await.is_ok(),
            CheckKind::Http { url } => http_get_ok(url).await.unwrap_or(false),
        }
    };
    tokio::time::timeout(check.timeout.0, attempt)
        .await
        .unwrap_or(false)
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
