//! The web UI in a real headless Chromium against a running mesh: the topology shows an
//! allowed and a denied edge with the traffic the destination counted, the members page
//! shows a killed agent's status change, and every page renders without an error.
//! Screenshots go to `$CARGO_TARGET_TMPDIR/ui-screenshots/`. Skips (with one line) when
//! Chromium is not installed (`apt-get install chromium`; `.ci/run` installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_proc;
mod proxy_support;

use agent_proc::ProcAgent;
use proxy_support::*;
use rhizome_agent::catalog::Health;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Loads `url` in headless Chromium, lets the page's script run for a few (virtual) seconds,
/// saves a screenshot to `shot`, and returns the DOM as it then stands.
fn render(browser: &Path, url: &str, shot: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let base = |extra: &[String]| {
        let mut c = Command::new(browser);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,760",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
        c
    };
    let run = |mut c: Command| -> Vec<u8> {
        let mut child = c.stdout(Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish {url} in 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut out).unwrap();
        out
    };
    run(base(&[format!("--screenshot={}", shot.display())]));
    assert!(shot.exists(), "no screenshot of {url}");
    String::from_utf8(run(base(&["--dump-dom".to_string()]))).unwrap()
}

/// The opening tag of the first element carrying `attr`.
fn tags_with<'a>(dom: &'a str, attr: &str) -> Vec<&'a str> {
    dom.match_indices(attr)
        .map(|(i, _)| {
            let start = dom[..i].rfind('<').unwrap_or(0);
            let end = dom[i..].find('>').map_or(dom.len(), |e| i + e + 1);
            &dom[start..end]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_shows_the_mesh_as_it_is() {
    let Some(browser) = chromium() else {
        println!("SKIPPED ui.rs: no Chromium (apt-get install chromium)");
        return;
    };
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let mesh = Mesh::new("test.mesh");
    let echo = echo_server().await;
    let (web_port, evil_port) = (free_port(), free_port());
    // Ten more sources, allowed: more pairs than one broadcast-sized summary carries.
    let more: Vec<(String, u16)> = (0..10)
        .map(|i| {
            (
                format!("s{i}-a-source-with-a-rather-long-name"),
                free_port(),
            )
        })
        .collect();
    let more_services: String = more
        .iter()
        .map(|(name, port)| {
            service(
                name,
                &format!("{name}-1"),
                3,
                &[Up {
                    destination: "db",
                    port: *port,
                }],
            )
        })
        .collect();
    let b = mesh
        .start("b", &service("db", "db-1", echo.port(), &[]))
        .await;
    let a = mesh
        .start_joined(
            "a",
            &[&b],
            &(service(
                "web",
                "web-1",
                1,
                &[Up {
                    destination: "db",
                    port: web_port,
                }],
            ) + &service(
                "evil",
                "evil-1",
                2,
                &[Up {
                    destination: "db",
                    port: evil_port,
                }],
            ) + &more_services),
        )
        .await;
    wait_catalog(&a, "default", "db", 1, Health::Passing).await;
    let more_rules: String = more
        .iter()
        .map(|(name, _)| format!("  {{ Name = \"{name}\", Action = \"allow\" }},\n"))
        .collect();
    let db_rules = format!(
        "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  \
         {{ Name = \"web\", Action = \"allow\" }},\n  \
         {{ Name = \"evil\", Action = \"deny\" }},\n{more_rules}]\n"
    );
    for agent in [&a, &b] {
        rules(agent, &[&db_rules]);
    }
    for (_, port) in &more {
        assert_eq!(roundtrip(*port, b"ping").await.unwrap(), b"ping");
    }
    for _ in 0..3 {
        assert_eq!(roundtrip(web_port, b"ping").await.unwrap(), b"ping");
    }
    for _ in 0..2 {
        let refused = roundtrip(evil_port, b"ping").await;
        assert!(refused.is_err() || refused.unwrap().is_empty());
    }
    eventually("b counted both pairs", || {
        let m = metrics(&b);
        m.contains("source=\"default/evil\"") && m.contains("source=\"default/web\"")
    })
    .await;

    // A third agent, a process, to be killed.
    let ca_dir = mesh.ca.agent_dir(mesh.dir.path(), "c").unwrap();
    let c_agent = ProcAgent::write(
        mesh.dir.path(),
        "c",
        &ca_dir,
        &format!(
            "retry_join = [\"{}\"]\n{FAST_GOSSIP}",
            a.handles().gossip.addr()
        ),
    );
    let mut c = c_agent.spawn();
    let alive = |agent: &rhizome_agent::app::Agent| {
        rhizome_agent::testkit::member(agent, "c")
            .is_some_and(|(s, _)| s == rhizome_agent::api::types::Status::Alive)
    };
    rhizome_agent::testkit::wait_until("c joins", Duration::from_secs(20), || alive(&a)).await;
    rhizome_agent::testkit::wait_until("c's summary reaches a", Duration::from_secs(30), || {
        !a.handles().replica.entries("traffic/c").is_empty()
    })
    .await;

    let ui = |agent: &rhizome_agent::app::Agent, page: &str| {
        format!("http://{}/ui/#{page}", agent.http_addr())
    };
    // The topology is opened at `a`, the source side: what `b` counted reaches it in b's
    // replicated traffic summary.
    // b's 12 pairs reach a: the busiest in b's broadcast-sized summary, the rest in its
    // `traffic/b/rest` entry (anti-entropy).
    let pairs_at_a = || {
        let mut pairs = std::collections::BTreeSet::new();
        for e in a.handles().replica.entries("traffic/b") {
            if let Ok(s) = postcard::from_bytes::<rhizome_agent::ui::traffic::Summary>(&e.value) {
                pairs.extend(s.edges.into_iter().map(|e| e.source));
            }
        }
        pairs.len()
    };
    rhizome_agent::testkit::wait_until(
        "all of b's 12 pairs reach a",
        Duration::from_secs(30),
        || pairs_at_a() == 12,
    )
    .await;
    assert_eq!(
        a.handles().replica.entries("traffic/b").len(),
        2,
        "b's summary came in two parts"
    );
    let (b_url, a_url) = (ui(&a, "topology"), ui(&a, "members"));
    let browser2 = browser.clone();
    let shots2 = shots.clone();
    let (topology, members_before) = tokio::task::spawn_blocking(move || {
        (
            render(&browser2, &b_url, &shots2.join("topology.png")),
            render(&browser2, &a_url, &shots2.join("members-before.png")),
        )
    })
    .await
    .unwrap();

    // Topology at the source's agent: both edges, classed by decision, with b's traffic.
    let web_edge = tags_with(&topology, "data-from=\"default/web\"");
    assert!(
        web_edge
            .iter()
            .any(|t| t.contains("data-to=\"default/db\"") && t.contains("data-decision=\"allow\"")),
        "an allowed web -> db edge:\n{topology}"
    );
    let evil_edge = tags_with(&topology, "data-from=\"default/evil\"");
    assert!(
        evil_edge
            .iter()
            .any(|t| t.contains("data-to=\"default/db\"") && t.contains("data-decision=\"deny\"")),
        "a denied evil -> db edge:\n{topology}"
    );
    assert!(
        topology.contains("data-edge=\"default/web|default/db\"")
            && topology.contains("data-edge=\"default/evil|default/db\""),
        "traffic labels on both edges:\n{topology}"
    );
    assert!(!topology.contains("id=\"error\""), "{topology}");
    assert!(
        topology.contains(">3 conn ("),
        "web -> db: 3 connections, counted at b:\n{topology}"
    );
    let c_row = |dom: &str| {
        tags_with(dom, "data-member=\"c\"")
            .first()
            .map(|_| {
                let i = dom.find("data-member=\"c\"").unwrap();
                dom[i..].split("</tr>").next().unwrap_or("").to_string()
            })
            .unwrap_or_default()
    };
    assert!(
        c_row(&members_before).contains("status-alive"),
        "c alive before the kill:\n{members_before}"
    );
    // c's version and certificate expiry, from its replicated summary.
    let row = c_row(&members_before);
    assert!(
        row.contains(&format!("data-version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "c's version:\n{row}"
    );
    assert!(row.contains(">in "), "c's certificate expiry:\n{row}");

    // Kill c: a's members page shows it suspect, then failed.
    c.kill();
    rhizome_agent::testkit::wait_until("a sees c fail", Duration::from_secs(30), || !alive(&a))
        .await;
    let a_url = ui(&a, "members");
    let shots2 = shots.clone();
    let browser2 = browser.clone();
    let members_after = tokio::task::spawn_blocking(move || {
        render(&browser2, &a_url, &shots2.join("members-after-kill.png"))
    })
    .await
    .unwrap();
    let row = c_row(&members_after);
    assert!(
        row.contains("status-suspect") || row.contains("status-failed"),
        "c suspect or failed after the kill:\n{members_after}"
    );

    // The other pages render their data, without an error.
    let pages = ["services", "intentions", "certificates"].map(|p| (p, ui(&b, p)));
    let shots2 = shots.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        pages.map(|(p, url)| (p, render(&browser, &url, &shots2.join(format!("{p}.png")))))
    })
    .await
    .unwrap();
    for (page, dom) in &rendered {
        assert!(!dom.contains("id=\"error\""), "{page}:\n{dom}");
        assert!(
            dom.contains(&format!("data-loaded=\"{page}\"")),
            "{page} loaded:\n{dom}"
        );
    }
    let [services, intentions, certificates] = [&rendered[0].1, &rendered[1].1, &rendered[2].1];
    assert!(services.contains("data-instance=\"b/db-1\""), "{services}");
    assert!(
        intentions.contains("default/evil") && intentions.contains("default/web"),
        "{intentions}"
    );
    assert!(certificates.contains("data-kind="), "{certificates}");
    println!("screenshots in {}", shots.display());

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// `GET path` over HTTP/1.0: (status, lowercased headers, body).
fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(conn, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_files_are_served_with_a_strict_policy() {
    let mesh = Mesh::new("test.mesh");
    let a = mesh.start("a", "").await;
    let addr = a.http_addr();
    let answers = tokio::task::spawn_blocking(move || {
        ["/ui/", "/ui/app.js", "/ui/app.css", "/ui", "/v1/traffic"].map(|p| get(addr, p))
    })
    .await
    .unwrap();
    for ((status, headers, body), kind) in
        answers[..3]
            .iter()
            .zip(["text/html", "text/javascript", "text/css"])
    {
        assert_eq!(*status, 200);
        assert!(
            headers.contains(&format!("content-type: {kind}")),
            "{headers}"
        );
        assert!(
            headers.contains("content-security-policy: default-src 'none'"),
            "{headers}"
        );
        assert!(!body.is_empty());
    }
    let (status, headers, _) = &answers[3];
    assert_eq!(*status, 308, "/ui redirects: {headers}");
    assert!(headers.contains("location: /ui/"), "{headers}");
    let traffic: serde_json::Value = serde_json::from_str(&answers[4].2).unwrap();
    assert_eq!(traffic["node"], "a");
    assert!(traffic["edges"].as_array().unwrap().is_empty());
    a.shutdown().await.unwrap();
}
