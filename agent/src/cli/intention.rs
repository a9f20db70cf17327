//! `rhizome intention ...`: validate and evaluate intention files offline, or query and
//! change the intentions of the local agent (`apply` and `delete` sign with an operator).

use super::status::{Format, FormatArgs, print_table};
use crate::api::types::{CheckView, ListView, MatchView, RuleView, SubmitRequest, SubmitView};
use crate::client::Client;
use crate::intentions::signed::{self, Author};
use anyhow::Context as _;
use rhizome_gossip::hlc::Hlc;
use rhizome_gossip::state::Key;
use rhizome_intentions::{Action, Entry, Policy, RuleSet, ServicePattern, ServiceRef};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code of `check` when the connection would be denied.
pub const EXIT_DENIED: u8 = 2;

/// `rhizome intention` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum IntentionCommand {
    /// Check intention files offline: syntax, schema, wildcards, conflicts between files.
    /// Errors are printed as FILE:LINE:COLUMN: MESSAGE; exit code 1 if any.
    Validate {
        /// Intention files (one `service-intentions` entry each).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Decide whether SRC may connect to DST: prints `Allowed` or `Denied` and the rule
    /// that decided. Exit code 0 allowed, 2 denied, 1 error, 64 usage error. With --file it
    /// evaluates the files offline; otherwise it asks the agent (its rules, default and audit
    /// mode).
    Check(CheckArgs),
    /// The rules that apply to DST, highest precedence first (the first whose source
    /// matches a connection decides it).
    Match(MatchArgs),
    /// Sign intention files with an operator certificate and apply them on the agent
    /// (which replicates them). Without --operator-dir they are sent unsigned, which only
    /// `--dev` agents accept.
    Apply(ApplyArgs),
    /// List the intentions in force on the agent.
    List(FormatArgs),
    /// Delete the intentions of a destination (a signed tombstone).
    Delete(DeleteArgs),
}

/// Action when no intention matches, for offline checks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultAction {
    /// Let the connection through.
    Allow,
    /// Refuse the connection.
    Deny,
}

/// Arguments of `rhizome intention check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Evaluate these intention files instead of asking the agent (repeatable).
    #[arg(long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Action when no rule matches, with --file (deny when not given).
    #[arg(long, value_enum, requires = "files")]
    pub default: Option<DefaultAction>,
    /// Source service: NAME or NAMESPACE/NAME (the agent also takes a SPIFFE id).
    pub src: String,
    /// Destination service: NAME or NAMESPACE/NAME.
    pub dst: String,
    /// Output format: `table` prints the verdict and the rule; `json` prints the decision
    /// (allowed, action, decision, the rule with its entry and file:line, the rule-set version).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Arguments of `rhizome intention match`.
#[derive(clap::Args, Debug)]
pub struct MatchArgs {
    /// Use these intention files instead of asking the agent (repeatable).
    #[arg(long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Destination service: NAME or NAMESPACE/NAME.
    pub dst: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Arguments of `rhizome intention apply`.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// Intention files, one entry each.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Directory of the operator credentials (`rhizome ca issue-operator`: chain.pem or
    /// cert.pem, and key.pem).
    #[arg(long, value_name = "DIR", env = crate::env::OPERATOR_DIR)]
    pub operator_dir: Option<PathBuf>,
}

/// Arguments of `rhizome intention delete`.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Destination of the entry: NAME or NAMESPACE/NAME, as written in the entry
    /// (`web-*`, `*`, `*/*` included).
    pub dst: String,
    /// Directory of the operator credentials (see `apply`).
    #[arg(long, value_name = "DIR", env = crate::env::OPERATOR_DIR)]
    pub operator_dir: Option<PathBuf>,
}

/// Runs one `rhizome intention` subcommand.
pub fn run(addr: &str, command: IntentionCommand) -> anyhow::Result<ExitCode> {
    match command {
        IntentionCommand::Validate { files } => validate(&files),
        IntentionCommand::Check(args) => check(addr, &args),
        IntentionCommand::Match(args) => matching(addr, &args),
        IntentionCommand::Apply(args) => apply(addr, &args),
        IntentionCommand::List(f) => list(addr, &f),
        IntentionCommand::Delete(args) => delete(addr, &args),
    }
}

fn read_files(files: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    files
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Ok((p.display().to_string(), text))
        })
        .collect()
}

/// Loads files as one rule set; on errors prints each (file:line:column) to stderr.
fn load(files: &[PathBuf]) -> anyhow::Result<Result<RuleSet, ExitCode>> {
    let texts = read_files(files)?;
    match RuleSet::load(texts.iter().map(|(f, t)| (f.as_str(), t.as_str()))) {
        Ok(set) => Ok(Ok(set)),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            Ok(Err(ExitCode::from(1)))
        }
    }
}

fn validate(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let set = match load(files)? {
        Ok(set) => set,
        Err(code) => return Ok(code),
    };
    outln!(
        "{} file(s) valid: {} rule(s), version {}",
        files.len(),
        set.rules().len(),
        set.version()
    );
    Ok(ExitCode::SUCCESS)
}

fn check(addr: &str, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let view = if args.files.is_empty() {
        let path = format!(
            "/v1/intentions/check?src={}&dst={}",
            encode(&args.src),
            encode(&args.dst)
        );
        Client::new(addr).get::<CheckView>(&path)?
    } else {
        let set = match load(&args.files)? {
            Ok(set) => set,
            Err(code) => return Ok(code),
        };
        let default = match args.default {
            Some(DefaultAction::Allow) => Action::Allow,
            Some(DefaultAction::Deny) | None => Action::Deny,
        };
        let policy = Policy {
            default,
            audit: false,
        };
        let src: ServiceRef = args.src.parse()?;
        let dst: ServiceRef = args.dst.parse()?;
        let d = set.decide(&src, &dst, policy);
        CheckView {
            source: src.to_string(),
            destination: dst.to_string(),
            allowed: d.allowed,
            action: d.action.to_string(),
            audit: d.audit,
            decision: if d.audit {
                "audit_deny"
            } else {
                d.action.as_str()
            }
            .into(),
            rule: d.rule().map(RuleView::of),
            version: set.version().to_string(),
        }
    };
    if args.format == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        let verdict = match (view.allowed, view.audit) {
            (true, true) => "Allowed (audit mode: would deny)",
            (true, false) => "Allowed",
            (false, _) => "Denied",
        };
        outln!("{verdict}");
        outln!("rule: {}", view.rule_line());
    }
    Ok(if view.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    })
}

fn rule_rows(rules: &[RuleView]) -> Vec<Vec<String>> {
    rules
        .iter()
        .map(|r| {
            vec![
                r.precedence_detail.clone(),
                r.source.clone(),
                r.destination.clone(),
                r.action.clone(),
                r.mode.clone(),
                r.origin.clone(),
            ]
        })
        .collect()
}

const RULE_HEADER: [&str; 6] = [
    "PRECEDENCE",
    "SOURCE",
    "DESTINATION",
    "ACTION",
    "MODE",
    "ORIGIN",
];

fn matching(addr: &str, args: &MatchArgs) -> anyhow::Result<ExitCode> {
    let view = if args.files.is_empty() {
        let path = format!("/v1/intentions/match?dst={}", encode(&args.dst));
        Client::new(addr).get::<MatchView>(&path)?
    } else {
        let set = match load(&args.files)? {
            Ok(set) => set,
            Err(code) => return Ok(code),
        };
        let dst: ServiceRef = args.dst.parse()?;
        MatchView {
            destination: dst.to_string(),
            rules: set.matching(&dst).into_iter().map(RuleView::of).collect(),
        }
    };
    if args.format == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print_table(&RULE_HEADER, &rule_rows(&view.rules));
    }
    Ok(ExitCode::SUCCESS)
}

fn list(addr: &str, f: &FormatArgs) -> anyhow::Result<ExitCode> {
    let view: ListView = Client::new(addr).get("/v1/intentions")?;
    if f.format == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "version {}, default {}{}, {} entries",
        view.version,
        view.default,
        if view.audit { " (audit mode)" } else { "" },
        view.entries.len()
    );
    let rules: Vec<RuleView> = view
        .entries
        .iter()
        .flat_map(|e| e.sources.iter().cloned())
        .collect();
    print_table(&RULE_HEADER, &rule_rows(&rules));
    for p in view.problems.dir.iter().chain(&view.problems.rules) {
        eprintln!("warning: not applied: {p}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A clock for a new version of `key`, after the one the agent shows for it.
fn hlc_after(held: &ListView, key: &Key) -> Hlc {
    let now = crate::runtime::now_unix_ms();
    let written = held
        .entries
        .iter()
        .find(|e| e.key == key.to_string())
        .and_then(|e| e.origin.as_ref())
        .map(|o| Hlc::new(o.written_ms, u16::MAX));
    crate::intentions::next_hlc(now, written)
}

fn author(dir: &Path) -> anyhow::Result<Author> {
    Ok(Author::from_operator_dir(dir)?)
}

fn apply(addr: &str, args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    if let Err(code) = load(&args.files)? {
        return Ok(code);
    }
    let client = Client::new(addr);
    let author = args.operator_dir.as_deref().map(author).transpose()?;
    let held: Option<ListView> = match author {
        Some(_) => Some(client.get("/v1/intentions")?),
        None => None,
    };
    for (file, text) in read_files(&args.files)? {
        let entry = Entry::parse(&text, &file)?;
        let key = signed::key_for(&entry.destination)?;
        let request = match (&author, &held) {
            (Some(author), Some(held)) => {
                let signed =
                    author.sign(key.clone(), text.into_bytes(), false, hlc_after(held, &key))?;
                SubmitRequest {
                    entry: Some(signed::encode(&signed)),
                    ..SubmitRequest::default()
                }
            }
            _ => SubmitRequest {
                hcl: Some(text),
                file: Some(file.clone()),
                ..SubmitRequest::default()
            },
        };
        let answer: SubmitView = client
            .send("POST", "/v1/intentions", &request)
            .with_context(|| format!("applying {file}"))?;
        outln!(
            "applied {} ({}), signed by {}",
            answer.key,
            file,
            answer.signer
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn delete(addr: &str, args: &DeleteArgs) -> anyhow::Result<ExitCode> {
    let dst: ServicePattern = args.dst.parse()?;
    let key = signed::key_for(&dst)?;
    let client = Client::new(addr);
    let request = match &args.operator_dir {
        Some(dir) => {
            let held: ListView = client.get("/v1/intentions")?;
            let tombstone =
                author(dir)?.sign(key.clone(), Vec::new(), true, hlc_after(&held, &key))?;
            SubmitRequest {
                entry: Some(signed::encode(&tombstone)),
                ..SubmitRequest::default()
            }
        }
        None => SubmitRequest::default(),
    };
    let path = format!(
        "/v1/intentions/{}/{}",
        encode(&dst.namespace().to_string()),
        encode(&dst.name().to_string())
    );
    let answer: SubmitView = client.send("DELETE", &path, &request)?;
    outln!("deleted {}, signed by {}", answer.key, answer.signer);
    Ok(ExitCode::SUCCESS)
}

/// What [`encode`] leaves as is: ASCII letters and digits, `-._~` (RFC 3986 unreserved)
/// and `/:*` (so paths, SPIFFE ids and wildcard patterns stay readable).
const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b':')
    .remove(b'*');

/// Percent-encodes a query or path value (names, patterns, SPIFFE ids).
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, KEEP).to_string()
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("payments/api-*"), "payments/api-*");
        assert_eq!(encode("spiffe://td/ns/a/svc/b"), "spiffe://td/ns/a/svc/b");
        assert_eq!(encode("a b&c=d"), "a%20b%26c%3Dd");
    }
}
