//! `rhizome ca ...`: the offline CA (files in, files out) and `ca status` (asks the agent).
//!
//! File names are an interface: `ca init` writes `root.pem` and `root.key`; `issue-agent`
//! writes `agent.pem` (the intermediate), `agent.key` and `bundle.pem`; `issue-leaf` and
//! `issue-operator` write `cert.pem`, `key.pem` and `chain.pem`. Keys get mode 0600 and no
//! command overwrites an existing file.

use super::args::ttl;
use super::ca_rotate::RotateCommand;
use super::status::{Format, FormatArgs, print_table};
use crate::api::types::{CertStatus, RevocationAnswer, RevocationRequest, RevocationView};
use crate::ca::files::{self, OutFile};
use crate::client::Client;
use crate::duration::Dur;
use anyhow::Context as _;
use rhizome_ca::{
    AgentCa, CertKind, Claims, Namespace, NodeName, NodePattern, OperatorName, RootCa, ServiceName,
    TokenId, TrustBundle, TrustDomain,
};
use std::path::PathBuf;
use std::process::ExitCode;
use time::OffsetDateTime;

/// Arguments of `rhizome ca`.
#[derive(clap::Args, Debug)]
pub struct CaArgs {
    /// The CA command to run.
    #[command(subcommand)]
    pub command: CaCommand,
}

/// Every `rhizome ca` subcommand.
#[derive(clap::Subcommand, Debug)]
pub enum CaCommand {
    /// Create the root CA of a new mesh: writes OUT/root.pem and OUT/root.key (mode 0600).
    ///
    /// Keep root.key offline, or on the few signer agents (`ca { signer = true, root_dir }`).
    Init(InitArgs),
    /// Issue an agent intermediate CA for one node from the root in --ca-dir: writes
    /// OUT/agent.pem, OUT/agent.key (0600) and OUT/bundle.pem, the files `ca { dir }` reads.
    IssueAgent(IssueAgentArgs),
    /// Issue an operator certificate (spiffe://TD/operator/NAME, signs intentions and keyring
    /// changes) from the root: writes OUT/cert.pem, OUT/key.pem (0600), OUT/chain.pem.
    IssueOperator(IssueOperatorArgs),
    /// Issue a workload leaf (spiffe://TD/ns/NS/svc/NAME) from an agent intermediate
    /// directory: writes OUT/cert.pem, OUT/key.pem (0600) and OUT/chain.pem (cert + issuing
    /// chain, without the root).
    IssueLeaf(IssueLeafArgs),
    /// Verify a certificate chain against a trust bundle and print its SPIFFE id; exits
    /// non-zero with the reason when it is refused, naming the X509-SVID or SPIFFE-ID rule
    /// the certificate breaks (e.g. "X509-SVID 4.3: a leaf SVID must not set keyCertSign").
    Verify(VerifyArgs),
    /// Join tokens: let a new agent obtain its intermediate from a signer agent.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Root rotation, step by step (new root + cross certificate, bundle add, switch,
    /// bundle remove), with no connection refused on the way.
    ///
    /// 1. `rotate new-root --ca-dir OLD --out NEW`
    /// 2. `rotate bundle-add --bundle AGENT/bundle.pem --root NEW/root.pem` on every agent
    /// 3. switch: `issue-agent --ca-dir NEW ...` for each node (the chains carry NEW/cross.pem,
    ///    so peers trusting only OLD accept them), move agent.pem/agent.key into place; point
    ///    signers' root_dir at NEW
    /// 4. `rotate bundle-remove --bundle AGENT/bundle.pem --root OLD/root.pem` everywhere
    /// 5. `rotate finish --ca-dir NEW`
    #[command(subcommand, verbatim_doc_comment)]
    Rotate(RotateCommand),
    /// Ask the local agent for every certificate it holds (roots, intermediate, agent leaf,
    /// workload leaves) with issuer, SPIFFE id, expiry and seconds left.
    Status(FormatArgs),
    /// Revoke a node (its intermediate, agent leaf and every workload leaf it issued) or one
    /// certificate (by SHA-256 fingerprint), signed with the operator credentials in
    /// --operator-dir and sent to the agent at RHIZOME_HTTP_ADDR; gossip carries it to every
    /// agent, which cuts the revoked peer's connections and refuses it from then on.
    Revoke(RevokeArgs),
    /// List the revocations in force on the local agent.
    Revocations(FormatArgs),
}

/// `rhizome ca revoke`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true)))]
pub struct RevokeArgs {
    /// Directory with the operator's chain.pem (or cert.pem) and key.pem
    /// (`rhizome ca issue-operator`).
    #[arg(long, value_name = "DIR")]
    pub operator_dir: PathBuf,
    /// The node to revoke.
    #[arg(long, value_name = "NODE", group = "target")]
    pub node: Option<NodeName>,
    /// The SHA-256 fingerprint (64 hex digits) of one certificate to revoke: the hash of its
    /// DER (`openssl x509 -in cert.pem -outform DER | sha256sum`).
    #[arg(long, value_name = "SHA256", group = "target")]
    pub fingerprint: Option<rhizome_ca::Fingerprint>,
    /// Why (kept with the revocation, at most 200 bytes).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
    /// Withdraw this revocation instead (the node or certificate is trusted again).
    #[arg(long)]
    pub withdraw: bool,
}

/// `rhizome ca init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Trust domain of the mesh (the authority of every SPIFFE id), e.g. `mesh.example`.
    #[arg(long, value_name = "TD")]
    pub trust_domain: TrustDomain,
    /// Output directory (created if missing; existing files are never overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Lifetime of the root.
    #[arg(long, value_name = "DUR", default_value = "87600h")]
    pub ttl: Dur,
}

/// `rhizome ca issue-agent`.
#[derive(clap::Args, Debug)]
pub struct IssueAgentArgs {
    /// Directory of `ca init` (root.pem, root.key; cross.pem and bundle.pem during a rotation).
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Node name the intermediate is bound to (the agent's `node_name`).
    #[arg(long, value_name = "NAME")]
    pub node: NodeName,
    /// Services this agent may issue leaves for (comma-separated); any when absent.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub services: Option<Vec<ServiceName>>,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Lifetime of the intermediate (capped at the root's expiry).
    #[arg(long, value_name = "DUR", default_value = "720h")]
    pub ttl: Dur,
}

/// `rhizome ca issue-operator`.
#[derive(clap::Args, Debug)]
pub struct IssueOperatorArgs {
    /// Directory of `ca init`.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Operator name (a person or an automation).
    #[arg(long, value_name = "NAME")]
    pub name: OperatorName,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Lifetime of the certificate.
    #[arg(long, value_name = "DUR", default_value = "720h")]
    pub ttl: Dur,
}

/// `rhizome ca issue-leaf`.
#[derive(clap::Args, Debug)]
pub struct IssueLeafArgs {
    /// Directory of `issue-agent` (agent.pem, agent.key).
    #[arg(long, value_name = "DIR")]
    pub agent_dir: PathBuf,
    /// Service name.
    #[arg(long, value_name = "NAME")]
    pub service: ServiceName,
    /// Namespace of the service.
    #[arg(long, value_name = "NS", default_value = "default")]
    pub namespace: Namespace,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Lifetime of the leaf (capped at the intermediate's expiry).
    #[arg(long, value_name = "DUR", default_value = "72h")]
    pub ttl: Dur,
}

/// `rhizome ca verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Trust bundle (one or more roots), e.g. an agent's bundle.pem or a root.pem.
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
    /// PEM file holding the certificate, followed by its issuing chain (e.g. chain.pem).
    #[arg(value_name = "CERT.pem")]
    pub cert: PathBuf,
    /// Extra intermediates, if CERT.pem holds the leaf alone.
    #[arg(long, value_name = "FILE")]
    pub chain: Option<PathBuf>,
}

/// `rhizome ca token ...`.
#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a join token signed by the root; prints it on the last line of stdout.
    ///
    /// The token holds its expiry, the node-name pattern, the allowed services, the use
    /// limit and the root's fingerprint (the joiner pins the root with it). Give it to the
    /// new agent as `ca { join_token = "..." }`.
    Create(TokenCreateArgs),
}

/// `rhizome ca token create`.
#[derive(clap::Args, Debug)]
pub struct TokenCreateArgs {
    /// Directory of `ca init` (the root key signs the token).
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Node names allowed to join: `*` matches any run of characters, `?` one character.
    #[arg(long, value_name = "GLOB")]
    pub node_pattern: NodePattern,
    /// How long the token is accepted.
    #[arg(long, value_name = "DUR")]
    pub ttl: Dur,
    /// Services the joined agent may issue leaves for (comma-separated); any when absent.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub services: Option<Vec<ServiceName>>,
    /// How many joins the token allows (counted by each signer); unlimited when absent.
    #[arg(long, value_name = "N")]
    pub max_uses: Option<u32>,
}

/// Runs `rhizome ca ...`.
pub fn run(args: CaArgs, http_addr: &str) -> anyhow::Result<ExitCode> {
    match args.command {
        CaCommand::Init(a) => init(a),
        CaCommand::IssueAgent(a) => issue_agent(a),
        CaCommand::IssueOperator(a) => issue_operator(a),
        CaCommand::IssueLeaf(a) => issue_leaf(a),
        CaCommand::Verify(a) => verify(a),
        CaCommand::Token(TokenCommand::Create(a)) => token_create(a),
        CaCommand::Rotate(r) => super::ca_rotate::run(r),
        CaCommand::Status(f) => status(http_addr, &f),
        CaCommand::Revoke(a) => revoke(http_addr, &a),
        CaCommand::Revocations(f) => revocations(http_addr, &f),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn report(paths: &[PathBuf]) {
    for p in paths {
        outln!("wrote {}", p.display());
    }
}

fn init(a: InitArgs) -> anyhow::Result<ExitCode> {
    let root = RootCa::generate(a.trust_domain, now(), ttl(a.ttl)?)?;
    let written = files::write_new(
        &a.out,
        &[
            OutFile::public(files::ROOT_CERT, root.cert_pem()),
            OutFile::secret(files::ROOT_KEY, root.key_pem()),
        ],
    )?;
    report(&written);
    outln!("trust domain: {}", root.trust_domain());
    outln!("root fingerprint (sha256): {}", root.fingerprint());
    Ok(ExitCode::SUCCESS)
}

fn issue_agent(a: IssueAgentArgs) -> anyhow::Result<ExitCode> {
    let root = files::load_root(&a.ca_dir)?;
    let bundle = files::root_dir_bundle(&a.ca_dir, &root)?;
    let agent = root.issue_agent(&a.node, a.services.as_deref(), now(), ttl(a.ttl)?)?;
    let written = files::write_new(
        &a.out,
        &[
            OutFile::public(files::AGENT_CERT, agent.chain_pem()),
            OutFile::secret(files::AGENT_KEY, agent.key_pem()),
            OutFile::public(files::BUNDLE, bundle.to_pem()),
        ],
    )?;
    report(&written);
    outln!("agent: {}", agent.id());
    Ok(ExitCode::SUCCESS)
}

fn issue_operator(a: IssueOperatorArgs) -> anyhow::Result<ExitCode> {
    let root = files::load_root(&a.ca_dir)?;
    let cred = root.issue_operator(&a.name, now(), ttl(a.ttl)?)?;
    write_leaf(&a.out, &cred)?;
    outln!("operator: {}", cred.id());
    Ok(ExitCode::SUCCESS)
}

fn issue_leaf(a: IssueLeafArgs) -> anyhow::Result<ExitCode> {
    let agent = AgentCa::from_pem(
        &files::read(&a.agent_dir.join(files::AGENT_CERT))?,
        &files::read(&a.agent_dir.join(files::AGENT_KEY))?,
    )
    .with_context(|| format!("loading the intermediate from {}", a.agent_dir.display()))?;
    let cred = agent.issue_workload(&a.namespace, &a.service, now(), ttl(a.ttl)?)?;
    write_leaf(&a.out, &cred)?;
    outln!("workload: {}", cred.id());
    Ok(ExitCode::SUCCESS)
}

fn write_leaf(out: &std::path::Path, cred: &rhizome_ca::Credential) -> anyhow::Result<()> {
    let written = files::write_new(
        out,
        &[
            OutFile::public(files::LEAF_CERT, cred.cert_pem()),
            OutFile::secret(files::LEAF_KEY, cred.key_pem()),
            OutFile::public(files::LEAF_CHAIN, cred.chain_pem()),
        ],
    )?;
    report(&written);
    Ok(())
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let bundle = TrustBundle::from_pem(&files::read(&a.bundle)?)
        .with_context(|| format!("parsing the bundle {}", a.bundle.display()))?;
    let mut certs = rhizome_ca::certs_from_pem(&files::read(&a.cert)?)
        .with_context(|| format!("parsing {}", a.cert.display()))?;
    if let Some(chain) = &a.chain {
        certs.extend(
            rhizome_ca::certs_from_pem(&files::read(chain)?)
                .with_context(|| format!("parsing {}", chain.display()))?,
        );
    }
    let (leaf, rest) = certs
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("{} holds no certificate", a.cert.display()))?;
    let kinds = [CertKind::Workload, CertKind::Agent, CertKind::Operator];
    match rhizome_ca::verify_chain_with(
        &bundle,
        leaf,
        rest,
        rhizome_ca::unix_time(now()),
        &kinds,
        rhizome_ca::Usage::Client,
    ) {
        Ok(id) => {
            outln!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("refused: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn token_create(a: TokenCreateArgs) -> anyhow::Result<ExitCode> {
    let root = files::load_root(&a.ca_dir)?;
    let claims = Claims {
        id: TokenId::random()?,
        expires: now() + ttl(a.ttl)?,
        node_pattern: a.node_pattern,
        services: a.services,
        root: root.fingerprint(),
        max_uses: a.max_uses,
    };
    let token = claims.sign(&root)?;
    eprintln!(
        "token {} for nodes {:?}, expires {}, root {}",
        claims.id,
        claims.node_pattern.as_str(),
        claims.expires,
        claims.root
    );
    outln!("{token}");
    Ok(ExitCode::SUCCESS)
}

fn status(http_addr: &str, f: &FormatArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(http_addr);
    if f.format == Format::Json {
        let v: serde_json::Value = client.get("/v1/ca/status")?;
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let certs: Vec<CertStatus> = client.get("/v1/ca/status")?;
    let rows: Vec<Vec<String>> = certs
        .iter()
        .map(|c| {
            vec![
                c.kind.clone(),
                c.spiffe_id.clone(),
                c.issuer.clone(),
                c.not_after.clone(),
                c.seconds_to_expiry.to_string(),
                format!("{:.0}%", c.fraction_used * 100.0),
            ]
        })
        .collect();
    print_table(
        &[
            "KIND",
            "SPIFFE ID",
            "ISSUER",
            "EXPIRES",
            "SECONDS LEFT",
            "USED",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// The signed `revoked/<name>` entry (or its withdrawal) for `args`, base64-encoded.
pub fn revocation_entry(args: &RevokeArgs, now: OffsetDateTime) -> anyhow::Result<String> {
    use base64::Engine as _;
    let revocation = rhizome_ca::Revocation::new(
        args.node.clone(),
        args.fingerprint,
        &args.reason,
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    )?;
    let key: rhizome_gossip::state::Key = format!("revoked/{}", revocation.key_name())
        .parse()
        .context("revocation key")?;
    let cred = super::gossip::load_operator(&args.operator_dir)?;
    let entry = crate::gossip::authority::operator_entry(
        &cred,
        key,
        revocation.to_bytes(),
        args.withdraw,
        crate::gossip::now_ms(),
    )?;
    Ok(base64::engine::general_purpose::STANDARD.encode(entry.to_bytes()))
}

fn revoke(http_addr: &str, args: &RevokeArgs) -> anyhow::Result<ExitCode> {
    let request = RevocationRequest {
        entry: revocation_entry(args, now())?,
    };
    let answer: RevocationAnswer =
        Client::new(http_addr).send("POST", "/v1/ca/revocations", &request)?;
    let what = if answer.withdrawn {
        "withdrawn"
    } else {
        "revoked"
    };
    let stale = if answer.stale {
        " (the agent already held it)"
    } else {
        ""
    };
    outln!("{what}: {}{stale}", answer.key);
    print_revocations(&answer.revocations);
    Ok(ExitCode::SUCCESS)
}

fn revocations(http_addr: &str, f: &FormatArgs) -> anyhow::Result<ExitCode> {
    let list: Vec<RevocationView> = Client::new(http_addr).get("/v1/ca/revocations")?;
    if f.format == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print_revocations(&list);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_revocations(list: &[RevocationView]) {
    let at = |secs: u64| {
        OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| secs.to_string())
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.node.clone().unwrap_or_else(|| "-".into()),
                r.fingerprint.clone().unwrap_or_else(|| "-".into()),
                r.reason.clone(),
                at(r.revoked_at),
                r.revoked_by.clone(),
            ]
        })
        .collect();
    print_table(
        &["NODE", "FINGERPRINT", "REASON", "REVOKED AT", "BY"],
        &rows,
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `ca revoke` signs a `revoked/<name>` entry that decodes to the revocation asked for.
    #[test]
    fn revocation_entries_are_signed_by_the_operator_and_name_their_target() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::testkit::TestCa::new("cli.test").unwrap();
        let operator_dir = ca.operator_dir(dir.path(), "alice").unwrap();
        let fp = rhizome_ca::Fingerprint([0xab; 32]);
        for (node, fingerprint, key) in [
            (Some("node-7"), None, "revoked/node-7".to_string()),
            (None, Some(fp), format!("revoked/sha256:{fp}")),
        ] {
            let args = RevokeArgs {
                operator_dir: operator_dir.clone(),
                node: node.map(|n| n.parse().unwrap()),
                fingerprint,
                reason: "leaked".into(),
                withdraw: false,
            };
            let text = revocation_entry(&args, OffsetDateTime::now_utc()).unwrap();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap();
            let entry = rhizome_gossip::state::Entry::from_bytes(&bytes).unwrap();
            assert_eq!(entry.key.to_string(), key);
            assert_eq!(entry.origin.as_str(), "alice");
            let r = rhizome_ca::Revocation::from_bytes(&entry.value).unwrap();
            assert_eq!(r.reason(), "leaked");
            assert_eq!(r.node().map(|n| n.as_str()), node);
        }
        let missing = RevokeArgs {
            operator_dir: dir.path().join("nowhere"),
            node: Some("n".parse().unwrap()),
            fingerprint: None,
            reason: String::new(),
            withdraw: false,
        };
        assert!(revocation_entry(&missing, OffsetDateTime::now_utc()).is_err());
    }
}
