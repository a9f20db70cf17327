//! Issue 15, item 2: an agent out of file descriptors. The agent runs as a child process;
//! once it serves, its open-files limit (soft and hard) is cut to a few more than it has
//! open, and 300 connections are held on its upstream listener. Before the fix every
//! failed accept was retried at once and logged (millions of lines); now accepts back off,
//! are logged at most once a second and counted, and the agent serves again once the flood
//! is gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_proc;
mod proxy_support;

use agent_proc::ProcAgent;
use proxy_support::*;
use std::time::Duration;
use tokio::net::TcpStream;

/// Descriptors the agent may open beyond those it holds when the limit is cut.
const HEADROOM: u64 = 12;
/// Connections held open against the upstream listener.
const FLOOD: usize = 300;

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

fn cut_open_files_limit(pid: u32, to: u64) {
    use rustix::process::{Pid, Resource, Rlimit, prlimit};
    let pid = Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    let limit = Rlimit {
        current: Some(to),
        maximum: Some(to),
    };
    prlimit(Some(pid), Resource::Nofile, limit).unwrap();
}

async fn served(port: u16) -> bool {
    tokio::time::timeout(Duration::from_secs(10), roundtrip(port, b"ping"))
        .await
        .is_ok_and(|r| r.is_ok_and(|got| got == b"ping"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_out_of_descriptors_logs_little_and_serves_after_the_flood() {
    let mesh = Mesh::new("test.mesh");
    let echo = echo_server().await;
    let port = free_port();
    let ca_dir = mesh.ca.agent_dir(mesh.dir.path(), "solo").unwrap();
    // One agent: `web` has an upstream to `db`, whose instance is on the same node.
    let agent = ProcAgent::write(
        mesh.dir.path(),
        "solo",
        &ca_dir,
        &format!(
            "default_intention_policy = \"allow\"\n{}{}",
            service("db", "db-1", echo.port(), &[]),
            service(
                "web",
                "web-1",
                1,
                &[Up {
                    destination: "db",
                    port,
                }],
            )
        ),
    );
    let proc = agent.spawn();
    rhizome_agent::testkit::wait_until_async(
        "the agent serves its upstream",
        Duration::from_secs(30),
        || served(port),
    )
    .await;

    let pid = proc.pid();
    let log_len = || std::fs::metadata(agent.log()).map_or(0, |m| m.len());
    let before = log_len();
    cut_open_files_limit(pid, open_fds(pid) + HEADROOM);
    let cut_at = std::time::Instant::now();
    // Once the listener's backlog is full the kernel drops further SYNs and a plain connect
    // retries them for minutes: each connect gets a short deadline, the whole flood a bound.
    let mut flood = Vec::new();
    let mut unanswered = 0;
    let flood_until = std::time::Instant::now() + Duration::from_secs(10);
    for _ in 0..FLOOD {
        if std::time::Instant::now() > flood_until {
            break;
        }
        match tokio::time::timeout(
            Duration::from_millis(200),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            Ok(Ok(s)) => flood.push(s),
            _ => unanswered += 1,
        }
    }
    println!(
        "flood: {} connections held, {unanswered} not answered (backlog full)",
        flood.len()
    );
    // The flood is held a while: long enough for a hot accept loop to log megabytes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = log_len() - before;
    assert!(
        grown < 256 * 1024,
        "the log grew by {grown} bytes in 3 s of descriptor exhaustion"
    );
    let during = agent.log_text();
    let lines = during
        .lines()
        .filter(|l| l.contains("accept failed"))
        .count();
    let exhausted_secs = cut_at.elapsed().as_secs() as usize;
    drop(flood);

    rhizome_agent::testkit::wait_until_async(
        "the agent serves again after the flood",
        Duration::from_secs(30),
        || served(port),
    )
    .await;
    let metrics = agent.get("/metrics").await.unwrap_or_default();
    let emfile = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("rhizome_accept_errors_total{listener=\"upstream\",kind=\"emfile\"} ")
        })
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    println!(
        "{FLOOD} connections against {HEADROOM} spare descriptors for 3 s: log grew by {grown} \
         bytes, {lines} \"accept failed\" lines in {exhausted_secs} s, {emfile} EMFILE accept \
         errors counted, served after"
    );
    assert!(
        lines <= exhausted_secs + 2,
        "at most one line a second per listener, got {lines} in {exhausted_secs} s"
    );
    assert!(emfile > 0.0, "EMFILE counted:\n{metrics}");
    assert!(
        during.contains("open-files limit"),
        "the limit is logged at start"
    );
}
