//! The catalog over gossip with real agents: a registration and a failing health check reach
//! every agent; a failed node's instances turn `node_down` at once and are reaped later.
//! Health checks follow Consul's `success_before_passing` / `failures_before_critical`, and
//! by default one or two failed probes (a service restarting) do not take an instance out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gossip_kit;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use gossip_kit::{Mesh, all_alive, gossip_addr, wait_until};
use rhizome_agent::app::Agent;
use rhizome_agent::catalog::Health;

const LIMIT: Duration = Duration::from_secs(20);

fn health_of(agent: &Agent, service: &str) -> Option<Health> {
    agent
        .handles()
        .catalog
        .borrow()
        .instances_of("default", service)
        .next()
        .map(|i| i.health)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_and_health_changes_reach_every_agent() {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let service = format!(
        "service {{\n  name = \"web\"\n  port = {}\n  check {{\n    tcp = \"{backend_addr}\"\n    interval = \"100ms\"\n    timeout = \"200ms\"\n  }}\n}}\n",
        backend_addr.port()
    );
    let mesh = Mesh::new(true);
    let a = mesh.start("a", &[], &service).await;
    let seed = [gossip_addr(&a)];
    let b = mesh.start("b", &seed, "").await;
    let c = mesh.start("c", &seed, "").await;
    wait_until("all alive", LIMIT, || {
        all_alive(&[&a, &b, &c], &["a", "b", "c"])
    })
    .await;
    wait_until("web is passing everywhere", LIMIT, || {
        [&a, &b, &c]
            .iter()
            .all(|x| health_of(x, "web") == Some(Health::Passing))
    })
    .await;
    let seen = b
        .handles()
        .catalog
        .borrow()
        .instances_of("default", "web")
        .next()
        .cloned()
        .unwrap();
    assert_eq!(seen.node, "a");
    assert_eq!(seen.port, backend_addr.port());
    assert_eq!(seen.agent_addr.ip(), a.handles().config.advertise_addr);

    drop(backend);
    wait_until("web turns critical everywhere", LIMIT, || {
        [&a, &b, &c]
            .iter()
            .all(|x| health_of(x, "web") == Some(Health::Critical))
    })
    .await;

    a.abort().await.unwrap();
    wait_until("web is node_down on b and c", LIMIT, || {
        [&b, &c]
            .iter()
            .all(|x| health_of(x, "web") == Some(Health::NodeDown))
    })
    .await;
    wait_until("web is reaped after reap_after", LIMIT, || {
        [&b, &c].iter().all(|x| health_of(x, "web").is_none())
    })
    .await;
    assert!(b.handles().replica.entries("catalog/a/").is_empty());
    b.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}

/// An HTTP health endpoint the test scripts: each request is answered with the next status
/// queued in `script`, or 200 when it is empty; `served` counts the answers.
struct ScriptedHealth {
    url: String,
    script: Arc<Mutex<VecDeque<u16>>>,
    served: Arc<AtomicUsize>,
}

impl ScriptedHealth {
    async fn start() -> ScriptedHealth {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/health", l.local_addr().unwrap());
        let script: Arc<Mutex<VecDeque<u16>>> = Arc::default();
        let served = Arc::new(AtomicUsize::new(0));
        let (queue, count) = (script.clone(), served.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let code = queue.lock().unwrap().pop_front().unwrap_or(200);
                // Counted before the agent can see the answer.
                count.fetch_add(1, Ordering::SeqCst);
                let answer =
                    format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        ScriptedHealth {
            url,
            script,
            served,
        }
    }

    /// Queues answers; returns how many requests were served before them.
    fn queue(&self, codes: &[u16]) -> usize {
        let mut q = self.script.lock().unwrap();
        q.extend(codes);
        self.served.load(Ordering::SeqCst)
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

/// What the catalog showed: health of web and of strict, requests each had served then.
type Seen = (Option<Health>, Option<Health>, usize, usize);

/// A service `name` checked over HTTP at `url` every 100 ms, with `thresholds` HCL lines.
fn checked_service(name: &str, port: u16, url: &str, thresholds: &str) -> String {
    format!(
        "service {{\n  name = \"{name}\"\n  port = {port}\n  check {{\n    http = \"{url}\"\n    \
         interval = \"100ms\"\n    timeout = \"1s\"\n{thresholds}  }}\n}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_count_consecutive_results() {
    // `web`: the default thresholds. `strict`: critical at the first failure, passing only
    // after two successes in a row.
    let (web, strict) = (ScriptedHealth::start().await, ScriptedHealth::start().await);
    let config = format!(
        "{}{}",
        checked_service("web", 8080, &web.url, ""),
        checked_service(
            "strict",
            8081,
            &strict.url,
            "    success_before_passing = 2\n    failures_before_critical = 1\n"
        )
    );
    let mesh = Mesh::new(false);
    let a = mesh.start("a", &[], &config).await;
    // (The catalog at start lists local instances as passing: wait for probed health.)
    wait_until("both probed and passing", LIMIT, || {
        web.served() >= 3
            && strict.served() >= 3
            && health_of(&a, "web") == Some(Health::Passing)
            && health_of(&a, "strict") == Some(Health::Passing)
    })
    .await;

    // Every health the catalog shows from now on, with the requests served until then.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let recorder = {
        let (seen, mut catalog) = (seen.clone(), a.handles().catalog.clone());
        let (web_served, strict_served) = (web.served.clone(), strict.served.clone());
        tokio::spawn(async move {
            while catalog.changed().await.is_ok() {
                let c = catalog.borrow_and_update().clone();
                let of = |s: &str| c.instances_of("default", s).next().map(|i| i.health);
                seen.lock().unwrap().push((
                    of("web"),
                    of("strict"),
                    web_served.load(Ordering::SeqCst),
                    strict_served.load(Ordering::SeqCst),
                ));
            }
        })
    };

    // Two failed probes in a row, like a service restarting for a moment: `web` stays
    // passing; `strict` turns critical, and back only after two successes in a row (one
    // success, one failure and two successes are scripted).
    let web_from = web.queue(&[503, 503]);
    let strict_from = strict.queue(&[503, 200, 503, 200, 200]);
    wait_until("the scripted probes and a few more ran", LIMIT, || {
        web.served() >= web_from + 6 && strict.served() >= strict_from + 8
    })
    .await;
    wait_until("strict passing again", LIMIT, || {
        health_of(&a, "strict") == Some(Health::Passing)
    })
    .await;
    let history = seen.lock().unwrap().clone();
    assert!(
        history.iter().all(|(w, ..)| *w == Some(Health::Passing)),
        "two failed probes do not take web out (default failures_before_critical = 3): {history:?}"
    );
    assert!(
        history
            .iter()
            .any(|(_, s, ..)| *s == Some(Health::Critical)),
        "strict turned critical at its first failure: {history:?}"
    );
    // The first time strict shows passing again, its fifth scripted answer was served.
    let back = history
        .iter()
        .skip_while(|(_, s, ..)| *s != Some(Health::Critical))
        .find(|(_, s, ..)| *s == Some(Health::Passing))
        .map(|(_, _, _, served)| *served);
    assert!(
        back.is_some_and(|served| served >= strict_from + 5),
        "strict passing only after two successes in a row (served {back:?}, script from \
         {strict_from}): {history:?}"
    );

    // Three failures in a row do take web out; one success brings it back.
    web.queue(&[503, 503, 503]);
    wait_until("web critical after three failures", LIMIT, || {
        health_of(&a, "web") == Some(Health::Critical)
    })
    .await;
    wait_until("web passing after one success", LIMIT, || {
        health_of(&a, "web") == Some(Health::Passing)
    })
    .await;
    recorder.abort();
    a.shutdown().await.unwrap();
}
