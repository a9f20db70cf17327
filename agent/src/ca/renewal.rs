//! Certificate renewal: workload leaves, the agent leaf and the intermediate are renewed at
//! a jittered point between 60 % and 90 % of their life (`rhizome_ca::renewal_at`), and
//! swapped in place: new handshakes get the new leaf, open connections keep theirs.
//!
//! [`Schedule`] is the decision (pure: `now` and the jitter source are inputs); [`run`] is
//! the task that drives it once a minute or at the next deadline, re-reads `ca { dir }`
//! (a new bundle.pem or agent.pem is picked up without restart: the rotation's switch), and
//! refreshes the expiry gauges and warnings.
//!
//! An intermediate that has expired (or is not valid yet) issues nothing: leaves are not
//! "renewed" from it (they would be dead on arrival and due again at once), one ERROR names
//! it and the fix ([`IntermediateAlarm`]), `rhizome_ca_intermediate_usable` drops to 0, and
//! renewal of the intermediate itself keeps being tried.

use crate::ca::expiry::{self, ExpiryWatch};
use crate::ca::files;
use crate::ca::identity::Identity;
use crate::ca::join::{self, Signer};
use crate::ca::obtain::save_credentials;
use crate::config::AgentConfig;
use crate::runtime::Shutdown;
use crate::store::Store;
use rhizome_ca::{AgentCa, Credential, Namespace, ServiceName, TrustBundle};
use ring::rand::{SecureRandom as _, SystemRandom};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Longest sleep of the renewal task between two checks.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);
/// Shortest sleep, so that a certificate that cannot be renewed does not spin the task.
pub const MIN_SLEEP: Duration = Duration::from_secs(1);
/// Time between two attempts to renew the intermediate over the network.
pub const INTERMEDIATE_RETRY: Duration = Duration::from_secs(300);

/// What renewal reads and writes: the credentials it replaces (the one writer of the
/// agent's intermediate and leaves after the start), the store they are saved in, and the
/// configuration (`ca { dir }`, where signers are).
#[derive(Clone)]
pub struct Inputs {
    /// The credentials renewed in place.
    pub identity: Arc<Identity>,
    /// Where a renewed intermediate and bundle are saved.
    pub store: Store,
    /// `ca { dir, signer_addrs }`, `retry_join`, `dev`.
    pub config: Arc<AgentConfig>,
}

/// A certificate the agent renews.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The agent's intermediate CA (needs a signer, or the local root on signers).
    Intermediate,
    /// The agent's own leaf.
    AgentLeaf,
    /// A local workload's leaf.
    Workload(Namespace, ServiceName),
}

/// Renewal deadlines: one jitter draw per certificate (by serial), kept until it is renewed.
#[derive(Default)]
pub struct Schedule {
    jitter: HashMap<String, f64>,
}

/// A uniform draw in [0, 1) from the system random generator (0.5 if it fails).
pub fn system_jitter() -> f64 {
    let mut b = [0u8; 8];
    if SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    // 53 random bits as a fraction: exact in an f64.
    let x = (u64::from_be_bytes(b) >> 11) as f64;
    x / (1u64 << 53) as f64
}

fn facts(der: &[u8]) -> Option<(String, OffsetDateTime, OffsetDateTime)> {
    let info = rhizome_ca::CertInfo::from_der(der).ok()?;
    Some((info.serial, info.not_before, info.not_after))
}

impl Schedule {
    /// An empty schedule.
    pub fn new() -> Schedule {
        Schedule::default()
    }

    /// Every certificate with its renewal deadline, drawing a jitter for new ones.
    pub fn deadlines(
        &mut self,
        identity: &Identity,
        jitter: &mut dyn FnMut() -> f64,
    ) -> Vec<(Target, OffsetDateTime)> {
        let mut certs = vec![
            (Target::Intermediate, identity.agent_ca().cert().clone()),
            (Target::AgentLeaf, identity.agent_leaf().leaf().clone()),
        ];
        for ((ns, svc), w) in identity.workloads() {
            certs.push((Target::Workload(ns, svc), w.credential.leaf().clone()));
        }
        let mut out = Vec::with_capacity(certs.len());
        let mut live = Vec::with_capacity(certs.len());
        for (target, der) in certs {
            let Some((serial, nb, na)) = facts(&der) else {
                continue;
            };
            let j = *self
                .jitter
                .entry(serial.clone())
                .or_insert_with(&mut *jitter);
            out.push((target, rhizome_ca::renewal_at(nb, na, j)));
            live.push(serial);
        }
        self.jitter.retain(|s, _| live.contains(s));
        out
    }

    /// The certificates due for renewal at `now`, and the next deadline after `now`.
    pub fn due(
        &mut self,
        identity: &Identity,
        now: OffsetDateTime,
        jitter: &mut dyn FnMut() -> f64,
    ) -> (Vec<Target>, Option<OffsetDateTime>) {
        let all = self.deadlines(identity, jitter);
        let next = all.iter().map(|(_, d)| *d).filter(|d| *d > now).min();
        let due = all
            .into_iter()
            .filter(|(_, d)| *d <= now)
            .map(|(t, _)| t)
            .collect();
        (due, next)
    }
}

fn leaf_ttl(identity: &Identity) -> time::Duration {
    time::Duration::try_from(identity.leaf_ttl()).unwrap_or(rhizome_ca::DEFAULT_LEAF_TTL)
}

/// Why the intermediate cannot issue at `now` (expired, or not valid yet), naming it.
pub fn intermediate_unusable(identity: &Identity, now: OffsetDateTime) -> Option<String> {
    let ca = identity.agent_ca();
    let (serial, not_before, not_after) = facts(ca.cert())?;
    let what = format!("intermediate of node {} (serial {serial})", ca.node());
    if now >= not_after {
        Some(format!("{what} expired at {not_after}"))
    } else if now < not_before {
        Some(format!("{what} is not valid before {not_before}"))
    } else {
        None
    }
}

/// What an operator must do about an unusable intermediate, by where it came from.
fn intermediate_fix(config: &AgentConfig) -> &'static str {
    if config.ca.dir.is_some() {
        "issue a new one (`rhizome ca issue-agent`) and move agent.pem/agent.key into ca { dir }"
    } else {
        "make a signer reachable (ca { signer_addrs } or retry_join) so it renews, or rejoin \
         with a new join token"
    }
}

/// Reports an unusable intermediate once (one ERROR per intermediate, not per pass).
#[derive(Default)]
pub struct IntermediateAlarm {
    reported: Option<String>,
}

impl IntermediateAlarm {
    /// Checks the intermediate at `now`; logs one ERROR the first time a given intermediate
    /// is found unusable. Returns whether it can issue, and whether this call logged.
    pub fn check(
        &mut self,
        identity: &Identity,
        config: &AgentConfig,
        now: OffsetDateTime,
    ) -> (bool, bool) {
        let Some(problem) = intermediate_unusable(identity, now) else {
            if self.reported.take().is_some() {
                tracing::info!("the intermediate is valid again: leaves are issued from it");
            }
            return (true, false);
        };
        if self.reported.as_deref() == Some(problem.as_str()) {
            return (false, false);
        }
        tracing::error!(
            problem = %problem,
            fix = intermediate_fix(config),
            "the {problem}: no leaf is issued from it until it is replaced; peers refuse this \
             agent once its leaves expire"
        );
        self.reported = Some(problem);
        (false, true)
    }
}

/// Renews one leaf (agent or workload) from the current intermediate, issued at `now`, and
/// installs it in place. The intermediate is renewed by [`renew_intermediate`]. Refused
/// while the intermediate is expired or not valid yet (the leaf would be dead on arrival).
pub fn renew_leaf(identity: &Identity, target: &Target, now: OffsetDateTime) -> anyhow::Result<()> {
    if let (Some(problem), false) = (
        intermediate_unusable(identity, now),
        matches!(target, Target::Intermediate),
    ) {
        anyhow::bail!("the {problem}: not issuing a leaf from it");
    }
    let ca = identity.agent_ca();
    match target {
        Target::AgentLeaf => {
            identity.replace_agent_leaf(ca.issue_agent_leaf(now, leaf_ttl(identity))?);
        }
        Target::Workload(ns, svc) => {
            let cred: Credential = ca.issue_workload(ns, svc, now, leaf_ttl(identity))?;
            identity.install_workload((ns.clone(), svc.clone()), cred)?;
        }
        Target::Intermediate => anyhow::bail!("the intermediate is renewed by a signer"),
    }
    Ok(())
}

/// Renews every leaf at once (after the intermediate changed).
pub fn renew_all_leaves(identity: &Identity, now: OffsetDateTime) -> anyhow::Result<()> {
    renew_leaf(identity, &Target::AgentLeaf, now)?;
    for ((ns, svc), _) in identity.workloads() {
        renew_leaf(identity, &Target::Workload(ns, svc), now)?;
    }
    Ok(())
}

/// Renews the intermediate: from the local root on signers (and `--dev` agents), else from
/// a signer over the join protocol. Stores it (and the bundle the signer sent), then re-issues every leaf.
pub async fn renew_intermediate(ca: &Inputs, signer: Option<&Signer>) -> anyhow::Result<()> {
    let identity = &ca.identity;
    let now = OffsetDateTime::now_utc();
    let local_root = signer
        .map(Signer::root)
        .or_else(|| identity.dev_root().map(|r| r.as_ref()));
    let (agent, bundle): (AgentCa, TrustBundle) = match local_root {
        Some(root) => {
            let services = identity.agent_ca().allowed_services().map(<[_]>::to_vec);
            let agent = root.issue_agent(
                identity.node(),
                services.as_deref(),
                now,
                rhizome_ca::DEFAULT_AGENT_TTL,
            )?;
            (agent, identity.bundle().load().as_ref().clone())
        }
        None => {
            let targets = join::signer_targets(&ca.config);
            anyhow::ensure!(
                !targets.is_empty(),
                "no signer known (set ca {{ signer_addrs }} or retry_join) to renew the intermediate"
            );
            join::renew_intermediate(identity, &targets).await?
        }
    };
    save_credentials(&ca.store, &agent, &bundle)?;
    tracing::info!(not_after = %agent.not_after(), "intermediate renewed");
    identity.replace_agent_ca(agent);
    identity.bundle().store(bundle);
    renew_all_leaves(identity, now)
}

/// Re-reads `ca { dir }`: a changed bundle.pem replaces the bundle; an agent.pem holding
/// another, later-expiring intermediate replaces it and every leaf is re-issued.
pub fn reload_ca_dir(identity: &Identity, dir: &std::path::Path) -> anyhow::Result<()> {
    let bundle = TrustBundle::from_pem(&crate::ca::files::read(&dir.join(files::BUNDLE))?)?;
    if bundle.fingerprints() != identity.bundle().load().fingerprints() {
        tracing::info!(
            roots = bundle.roots().len(),
            "trust bundle changed on disk: reloaded"
        );
        identity.bundle().store(bundle);
    }
    let chain = crate::ca::files::read(&dir.join(files::AGENT_CERT))?;
    let current = identity.agent_ca();
    if rhizome_ca::certs_to_pem(current.chain()) == chain {
        return Ok(());
    }
    let key = crate::ca::files::read(&dir.join(files::AGENT_KEY))?;
    let agent = AgentCa::from_pem(&chain, &key)?;
    if agent.node() == identity.node() && agent.not_after() > current.not_after() {
        tracing::info!(not_after = %agent.not_after(), "new intermediate on disk: switching");
        identity.replace_agent_ca(agent);
        renew_all_leaves(identity, OffsetDateTime::now_utc())?;
    }
    Ok(())
}

/// What the renewal task remembers between passes.
struct TaskState {
    schedule: Schedule,
    watch: ExpiryWatch,
    last_intermediate_try: Option<std::time::Instant>,
    alarm: IntermediateAlarm,
}

impl TaskState {
    /// Whether to try renewing the intermediate now: only with a way to do it (a local root
    /// or known signers), and at most once per [`INTERMEDIATE_RETRY`] over the network.
    fn may_renew_intermediate(&mut self, ca: &Inputs, signer: Option<&Signer>) -> bool {
        if signer.is_some() || ca.identity.dev_root().is_some() {
            return true;
        }
        if join::signer_targets(&ca.config).is_empty() {
            tracing::debug!("intermediate due but no signer known; expiry warnings will follow");
            return false;
        }
        let now = std::time::Instant::now();
        if self
            .last_intermediate_try
            .is_some_and(|t| now.duration_since(t) < INTERMEDIATE_RETRY)
        {
            return false;
        }
        self.last_intermediate_try = Some(now);
        true
    }
}

/// One pass: reload files, renew what is due, refresh expiry gauges. Returns the next
/// renewal deadline.
async fn tick(
    ca: &Inputs,
    signer: Option<&Signer>,
    state: &mut TaskState,
) -> Option<OffsetDateTime> {
    let identity = &ca.identity;
    if let Some(dir) = &ca.config.ca.dir
        && !ca.config.dev
        && let Err(e) = reload_ca_dir(identity, dir)
    {
        tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"), "cannot re-read the CA directory");
    }
    let now = OffsetDateTime::now_utc();
    let (usable, _) = state.alarm.check(identity, &ca.config, now);
    state.watch.set_intermediate_usable(usable);
    let (mut due, _) = state.schedule.due(identity, now, &mut system_jitter);
    if !usable {
        // Only the intermediate itself can be renewed (the alarm said why, once).
        due = vec![Target::Intermediate];
    }
    for target in due {
        let outcome = match &target {
            Target::Intermediate if !state.may_renew_intermediate(ca, signer) => continue,
            Target::Intermediate => renew_intermediate(ca, signer).await,
            leaf => renew_leaf(identity, leaf, now),
        };
        match outcome {
            Ok(()) => tracing::info!(cert = ?target, "certificate renewed"),
            Err(e) => {
                tracing::warn!(cert = ?target, error = %format!("{e:#}"), "renewal failed; retrying")
            }
        }
    }
    state
        .watch
        .update(&expiry::report(identity, now), std::time::Instant::now());
    state.schedule.due(identity, now, &mut system_jitter).1
}

/// The renewal task: runs until the agent shuts down.
pub async fn run(
    ca: Inputs,
    signer: Option<Arc<Signer>>,
    watch: ExpiryWatch,
    stop: Shutdown,
) -> anyhow::Result<()> {
    let mut state = TaskState {
        schedule: Schedule::new(),
        watch,
        last_intermediate_try: None,
        alarm: IntermediateAlarm::default(),
    };
    loop {
        let next = tick(&ca, signer.as_deref(), &mut state).await;
        let wait = next
            .map(|d| d - OffsetDateTime::now_utc())
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(CHECK_EVERY)
            .clamp(MIN_SLEEP, CHECK_EVERY);
        tokio::select! {
            () = stop.wait() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An expired intermediate: leaves are refused (not issued dead on arrival), one ERROR per
    /// intermediate however often the task checks, and a valid one clears the alarm.
    #[test]
    fn an_expired_intermediate_issues_nothing_and_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AgentConfig::dev("n1", dir.path().to_path_buf());
        let identity = Identity::load(&cfg).unwrap();
        let root = identity.dev_root().unwrap().clone();
        let now = OffsetDateTime::now_utc();
        let mut alarm = IntermediateAlarm::default();
        assert_eq!(alarm.check(&identity, &cfg, now), (true, false));

        let expired = root
            .issue_agent(
                identity.node(),
                None,
                now - time::Duration::days(2),
                time::Duration::days(1),
            )
            .unwrap();
        identity.replace_agent_ca(expired);
        let problem = intermediate_unusable(&identity, now).unwrap();
        assert!(problem.contains("expired at"), "{problem}");
        assert!(problem.contains("node n1"), "{problem}");
        let before = identity.agent_leaf().leaf().clone();
        let refused = renew_leaf(&identity, &Target::AgentLeaf, now).unwrap_err();
        assert!(refused.to_string().contains("not issuing"), "{refused}");
        assert_eq!(
            identity.agent_leaf().leaf(),
            &before,
            "nothing was installed"
        );
        assert_eq!(alarm.check(&identity, &cfg, now), (false, true), "reported");
        for s in 1..=60 {
            let later = now + time::Duration::seconds(s);
            assert_eq!(alarm.check(&identity, &cfg, later), (false, false), "once");
        }

        let fresh = root
            .issue_agent(identity.node(), None, now, time::Duration::days(1))
            .unwrap();
        identity.replace_agent_ca(fresh);
        assert_eq!(alarm.check(&identity, &cfg, now), (true, false));
        assert!(renew_leaf(&identity, &Target::AgentLeaf, now).is_ok());
    }
}
