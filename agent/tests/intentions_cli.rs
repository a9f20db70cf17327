//! The `rhizome intention` and `rhizome graph` commands, run as the real binary: offline
//! validate/check exit codes and messages, and apply/list/check/delete against an agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{DB_HCL, config};
use rhizome_agent::app::Agent;
use rhizome_agent::testkit::TestCa;
use std::path::Path;
use std::process::{Command, Output};

fn rhizome(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rhizome"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn offline_validate_and_check_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let db = write(dir.path(), "db.hcl", DB_HCL);
    let bad = write(
        dir.path(),
        "bad.hcl",
        "Kind = \"service-intentions\"\nName = \"cache\"\nSources = [\n  { Name = \"web\", Action = \"permit\" },\n]\n",
    );

    let (code, out, _) = text(&rhizome(&["intention", "validate", &db]));
    assert_eq!(code, 0);
    assert!(out.contains("2 rule(s)"), "{out}");
    let (code, _, err) = text(&rhizome(&["intention", "validate", &db, &bad]));
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.hcl:4:19: Sources[0].Action must be set to 'allow' or 'deny'"),
        "{err}"
    );

    let (code, out, _) = text(&rhizome(&[
        "intention",
        "check",
        "--file",
        &db,
        "web",
        "db",
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("Allowed\n"), "{out}");
    assert!(
        out.contains("default/web => default/db (allow, precedence 16, "),
        "{out}"
    );
    assert!(out.contains("db.hcl:4:3"), "{out}");

    let (code, out, _) = text(&rhizome(&[
        "intention",
        "check",
        "--file",
        &db,
        "api",
        "default/db",
    ]));
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("Denied\n"), "{out}");
    assert!(
        out.contains("default/* => default/db (deny, precedence 14"),
        "{out}"
    );

    let (code, out, _) = text(&rhizome(&["intention", "check", "--file", &db, "x", "y"]));
    assert_eq!(
        (code, out.lines().next()),
        (2, Some("Denied")),
        "default deny"
    );
    let (code, out, _) = text(&rhizome(&[
        "intention",
        "check",
        "--file",
        &db,
        "--default",
        "allow",
        "x",
        "y",
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("default allow (no intention matches)"),
        "{out}"
    );

    let (code, _, err) = text(&rhizome(&[
        "intention",
        "check",
        "--file",
        &bad,
        "web",
        "cache",
    ]));
    assert_eq!(code, 1, "a bad file is an error: {err}");
    let (code, _, err) = text(&rhizome(&[
        "intention",
        "check",
        "--file",
        &db,
        "a/b/c",
        "db",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("a/b/c"), "{err}");

    let (code, out, _) = text(&rhizome(&["intention", "match", "--file", &db, "db"]));
    assert_eq!(code, 0);
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert!(
        rows[0].starts_with("16") && rows[1].starts_with("14"),
        "{out}"
    );
}

/// Usage errors exit 64, never a verdict's code; `--format json` gives the decision with its
/// rule; a closed output pipe ends the command quietly (141), never with a panic.
#[test]
fn usage_errors_json_verdicts_and_closed_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let db = write(dir.path(), "db.hcl", DB_HCL);
    // A usage error (unknown flag, missing argument) is 64; `--help` is 0.
    let (code, _, err) = text(&rhizome(&["intention", "check", "--bogus", "web", "db"]));
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = text(&rhizome(&["intention", "check", "web"]));
    assert_eq!(code, 64, "{err}");
    let (code, out, _) = text(&rhizome(&["intention", "check", "--help"]));
    assert_eq!(code, 0);
    assert!(out.contains("64 usage error"), "{out}");

    let json = |args: &[&str]| {
        let o = rhizome(args);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (o.status.code().unwrap(), v)
    };
    let (code, v) = json(&[
        "intention",
        "check",
        "--file",
        &db,
        "--format",
        "json",
        "web",
        "db",
    ]);
    assert_eq!(code, 0);
    assert_eq!(v["allowed"], true);
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["source"], "default/web");
    assert!(
        v["rule"]["origin"]
            .as_str()
            .unwrap()
            .ends_with("db.hcl:4:3"),
        "{v}"
    );
    let (code, v) = json(&[
        "intention",
        "check",
        "--file",
        &db,
        "--format",
        "json",
        "api",
        "db",
    ]);
    assert_eq!(code, 2);
    assert_eq!(v["allowed"], false);
    assert_eq!(v["decision"], "deny");

    // Standard output is a pipe whose reader is already gone.
    for args in [
        vec!["intention", "check", "--file", db.as_str(), "web", "db"],
        vec!["intention", "match", "--file", db.as_str(), "db"],
        vec!["intention", "validate", db.as_str()],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_rhizome"))
            .args(&args)
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(o.status.code(), Some(141), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_list_check_delete_and_graph_against_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test.mesh").unwrap();
    let op_dir = ca.operator_dir(dir.path(), "alice").unwrap();
    let agent = Agent::start(config(&ca, dir.path(), "n1", ""))
        .await
        .unwrap();
    let addr = agent.http_addr().to_string();
    let db = write(dir.path(), "db.hcl", DB_HCL);
    let op = op_dir.display().to_string();

    let run = |args: Vec<String>| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut all = vec!["--http-addr".to_string(), addr.clone()];
            all.extend(args);
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            text(&rhizome(&refs))
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let (code, _, err) = run(args(&["intention", "apply", &db])).await.unwrap();
    assert_eq!(code, 1, "unsigned refused by a non-dev agent");
    assert!(err.contains("403"), "{err}");

    let (code, out, err) = run(args(&["intention", "apply", &db, "--operator-dir", &op]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applied intentions/default/db"), "{out}");
    assert!(out.contains("spiffe://test.mesh/operator/alice"), "{out}");

    // The rebuild follows the apply asynchronously: bounded retries of the online check.
    let mut last = (0, String::new(), String::new());
    for _ in 0..100 {
        last = run(args(&["intention", "check", "web", "db"]))
            .await
            .unwrap();
        if last.0 == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last.0, 0, "{last:?}");
    assert!(last.1.contains("intentions/default/db:4:3"), "{last:?}");
    let (code, out, _) = run(args(&["intention", "check", "api", "db"]))
        .await
        .unwrap();
    assert_eq!(code, 2, "{out}");

    let (code, out, _) = run(args(&["intention", "list"])).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("default deny, 1 entries"), "{out}");
    assert!(out.contains("default/web"), "{out}");

    let (code, out, _) = run(args(&["graph", "--format", "dot"])).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("\"default/web\" -> \"default/db\""), "{out}");

    let (code, out, err) = run(args(&["intention", "delete", "db", "--operator-dir", &op]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted intentions/default/db"), "{out}");
    let (code, _, err) = run(args(&["intention", "delete", "db", "--operator-dir", &op]))
        .await
        .unwrap();
    assert_eq!(code, 1, "nothing left to delete: {err}");
    agent.shutdown().await.unwrap();
}
