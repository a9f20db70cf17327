//! The decision table of [`Authorizer`], its counting and its deny log, without an agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::intentions::verdict::DecisionLabels;
use std::io::Write;
use std::sync::Mutex;

const DB: &str = "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  { Name = \"web\", Action = \"allow\" },\n  { Name = \"batch\", Action = \"deny\" },\n]\n";

fn td() -> TrustDomain {
    "mesh.test".parse().unwrap()
}

fn rules() -> RuleSet {
    RuleSet::load([("db.hcl", DB)]).unwrap()
}

fn policy(default: Action, audit: bool) -> Policy {
    Policy { default, audit }
}

fn src(svc: &str) -> String {
    format!("spiffe://mesh.test/ns/default/svc/{svc}")
}

#[test]
fn the_decision_table() {
    let db: ServiceRef = "db".parse().unwrap();
    let other: ServiceRef = "cache".parse().unwrap();
    // (policy, source, destination) -> (allowed, outcome, decided by a rule)
    let cases = [
        (
            policy(Action::Deny, false),
            src("web"),
            &db,
            true,
            Outcome::Allow,
            true,
        ),
        (
            policy(Action::Deny, false),
            src("batch"),
            &db,
            false,
            Outcome::Deny,
            true,
        ),
        (
            policy(Action::Deny, false),
            src("api"),
            &db,
            false,
            Outcome::Deny,
            false,
        ),
        (
            policy(Action::Allow, false),
            src("api"),
            &other,
            true,
            Outcome::Allow,
            false,
        ),
        (
            policy(Action::Deny, true),
            src("batch"),
            &db,
            true,
            Outcome::AuditDeny,
            true,
        ),
        (
            policy(Action::Deny, true),
            src("api"),
            &other,
            true,
            Outcome::AuditDeny,
            false,
        ),
        (
            policy(Action::Allow, false),
            "spiffe://other.test/ns/default/svc/web".into(),
            &db,
            false,
            Outcome::Deny,
            false,
        ),
        (
            policy(Action::Allow, true),
            "not a spiffe id".into(),
            &db,
            false,
            Outcome::Deny,
            false,
        ),
    ];
    for (policy, source, dst, allowed, outcome, by_rule) in cases {
        let (authz, _writer) = Authorizer::for_test(rules(), policy, td());
        let v = authz.verdict(&source, dst);
        assert_eq!(
            (v.allowed, v.outcome, v.rule.is_some()),
            (allowed, outcome, by_rule),
            "{policy:?} {source} -> {dst}: {v:?}"
        );
        assert_eq!(v.version, authz.rules().version());
    }
}

#[test]
fn a_foreign_trust_domain_is_denied_with_a_reason_even_when_audited() {
    let (authz, _writer) = Authorizer::for_test(rules(), policy(Action::Allow, true), td());
    let v = authz.authorize(
        "spiffe://other.test/ns/default/svc/web",
        &"db".parse().unwrap(),
    );
    assert!(!v.allowed);
    assert!(v.error.unwrap().contains("not of trust domain mesh.test"));
}

#[test]
fn authorize_counts_and_verdict_does_not() {
    let (authz, _writer) = Authorizer::for_test(rules(), policy(Action::Deny, false), td());
    let db: ServiceRef = "db".parse().unwrap();
    authz.authorize(&src("web"), &db);
    authz.authorize(&src("batch"), &db);
    authz.authorize(&src("batch"), &db);
    authz.verdict(&src("batch"), &db);
    let clone = authz.clone();
    clone.authorize(&src("api"), &db);
    assert_eq!(authz.counters().get(Outcome::Allow), 1);
    assert_eq!(authz.counters().get(Outcome::Deny), 3);
    assert_eq!(authz.counters().get(Outcome::AuditDeny), 0);
}

/// Every decision is counted under the rule that made it: its patterns and `entry:line:col`.
#[test]
fn decisions_are_counted_per_rule() {
    let (authz, _writer) = Authorizer::for_test(rules(), policy(Action::Deny, false), td());
    let db: ServiceRef = "db".parse().unwrap();
    authz.authorize(&src("web"), &db);
    authz.authorize(&src("web"), &db);
    authz.authorize(&src("batch"), &db);
    authz.authorize(&src("api"), &db);
    authz.authorize("spiffe://other.test/ns/default/svc/web", &db);
    let labels = |s: &str, d: &str, rule: &str, decision| DecisionLabels {
        source: s.into(),
        destination: d.into(),
        rule: rule.into(),
        decision,
    };
    let c = authz.counters();
    let web = labels("default/web", "default/db", "db.hcl:4:3", Outcome::Allow);
    assert_eq!(c.get_labeled(&web), 2);
    let batch = labels("default/batch", "default/db", "db.hcl:5:3", Outcome::Deny);
    assert_eq!(c.get_labeled(&batch), 1);
    assert_eq!(c.get_labeled(&labels("", "", "default", Outcome::Deny)), 1);
    assert_eq!(
        c.get_labeled(&labels("", "", "invalid_source", Outcome::Deny)),
        1
    );
    assert_eq!(c.get(Outcome::Deny), 3);
}

#[test]
fn the_writer_changes_the_rules_and_wakes_subscribers_only_on_a_new_version() {
    let (authz, writer) = Authorizer::for_test(RuleSet::empty(), policy(Action::Deny, false), td());
    let mut changes = authz.subscribe();
    let db: ServiceRef = "db".parse().unwrap();
    assert!(!authz.verdict(&src("web"), &db).allowed);
    assert!(writer.replace_if_new(rules()));
    assert!(changes.has_changed().unwrap());
    changes.mark_unchanged();
    assert!(authz.verdict(&src("web"), &db).allowed);
    assert!(!writer.replace_if_new(rules()));
    assert!(!changes.has_changed().unwrap());
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(f: impl FnOnce()) -> String {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = out.0.lock().unwrap().clone();
    String::from_utf8(text).unwrap()
}

#[test]
fn every_deny_and_audited_deny_is_logged_with_its_rule() {
    let db: ServiceRef = "db".parse().unwrap();
    let (enforce, _w1) = Authorizer::for_test(rules(), policy(Action::Deny, false), td());
    let text = logged(|| {
        enforce.authorize(&src("batch"), &db);
    });
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("intention denies"), "{text}");
    assert!(
        text.contains("src.service=\"spiffe://mesh.test/ns/default/svc/batch\""),
        "{text}"
    );
    assert!(text.contains("dst.service=default/db"), "{text}");
    assert!(
        text.contains("db.hcl"),
        "the deciding rule is named: {text}"
    );

    let (audit, _w2) = Authorizer::for_test(rules(), policy(Action::Deny, true), td());
    let text = logged(|| {
        audit.authorize(&src("batch"), &db);
    });
    assert!(text.contains("intention would deny (audit mode)"), "{text}");
    assert!(text.contains("db.hcl"), "{text}");

    let text = logged(|| {
        enforce.verdict(&src("batch"), &db);
    });
    assert!(text.is_empty(), "a re-check is not logged: {text}");
}
