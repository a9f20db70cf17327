//! `rhizome ca rotate ...`: replacing the root without a dropped connection.
//!
//! 1. `new-root --ca-dir OLD --out NEW`: a new root, `cross.pem` (the new root signed by the
//!    old one) and `bundle.pem` (old and new roots) in NEW.
//! 2. `bundle-add --bundle B --root NEW/root.pem` on every agent's `bundle.pem` (agents with
//!    `ca { dir }` reload it within a minute): everyone now trusts both roots.
//! 3. Switch: issue intermediates from NEW (`ca issue-agent --ca-dir NEW`; their chains carry
//!    the cross certificate, so peers still trusting only OLD accept them) and point signers'
//!    `root_dir` at NEW.
//! 4. `bundle-remove --bundle B --root OLD/root.pem` everywhere, then `finish --ca-dir NEW`
//!    (drops `cross.pem` and the old root from NEW/bundle.pem).

use crate::ca::files::{self, OutFile};
use crate::duration::Dur;
use anyhow::Context as _;
use rhizome_ca::{CertInfo, Fingerprint, RootCa, TrustBundle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use time::OffsetDateTime;

/// The steps of a root rotation.
#[derive(clap::Subcommand, Debug)]
pub enum RotateCommand {
    /// Step 1: create a new root in --out with the cross certificate (new root signed by the
    /// old one, cross.pem) and a bundle of both roots (bundle.pem).
    NewRoot(NewRootArgs),
    /// Step 2: add a root to a bundle file in place (every agent's bundle.pem).
    BundleAdd(BundleAddArgs),
    /// Step 4: remove a root from a bundle file in place, once every agent has switched.
    BundleRemove(BundleRemoveArgs),
    /// Print the roots of a bundle file with their fingerprints and expiry.
    BundleShow(BundleShowArgs),
    /// Last step: stop carrying the cross certificate (removes --ca-dir/cross.pem) and keep
    /// only this root in --ca-dir/bundle.pem.
    Finish(FinishArgs),
}

/// `rhizome ca rotate new-root`.
#[derive(clap::Args, Debug)]
pub struct NewRootArgs {
    /// Directory of the current (old) root.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Directory for the new root (root.pem, root.key, cross.pem, bundle.pem).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Lifetime of the new root.
    #[arg(long, value_name = "DUR", default_value = "87600h")]
    pub ttl: Dur,
}

/// `rhizome ca rotate bundle-add`.
#[derive(clap::Args, Debug)]
pub struct BundleAddArgs {
    /// Bundle file to edit in place.
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
    /// Root certificate to add (e.g. NEW/root.pem).
    #[arg(long, value_name = "FILE")]
    pub root: PathBuf,
}

/// `rhizome ca rotate bundle-remove`.
#[derive(clap::Args, Debug)]
pub struct BundleRemoveArgs {
    /// Bundle file to edit in place.
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
    /// Root certificate to remove (e.g. OLD/root.pem).
    #[arg(long, value_name = "FILE", required_unless_present = "fingerprint")]
    pub root: Option<PathBuf>,
    /// Or the SHA-256 fingerprint of the root to remove (as `bundle-show` prints it).
    #[arg(long, value_name = "HEX", conflicts_with = "root")]
    pub fingerprint: Option<String>,
}

/// `rhizome ca rotate bundle-show`.
#[derive(clap::Args, Debug)]
pub struct BundleShowArgs {
    /// Bundle file.
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
}

/// `rhizome ca rotate finish`.
#[derive(clap::Args, Debug)]
pub struct FinishArgs {
    /// Directory of the new root.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
}

/// Runs one rotation step.
pub fn run(cmd: RotateCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RotateCommand::NewRoot(a) => new_root(a),
        RotateCommand::BundleAdd(a) => bundle_add(a),
        RotateCommand::BundleRemove(a) => bundle_remove(a),
        RotateCommand::BundleShow(a) => bundle_show(&a.bundle),
        RotateCommand::Finish(a) => finish(&a.ca_dir),
    }
}

fn new_root(a: NewRootArgs) -> anyhow::Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    let old = files::load_root(&a.ca_dir)?;
    let old_bundle = files::root_dir_bundle(&a.ca_dir, &old)?;
    let ttl = super::args::ttl(a.ttl)?;
    let new = RootCa::generate(old.trust_domain().clone(), now, ttl)?;
    let cross = old.cross_sign(&new, now, ttl)?;
    let bundle = old_bundle.with_root(new.cert().clone())?;
    let written = files::write_new(
        &a.out,
        &[
            OutFile::public(files::ROOT_CERT, new.cert_pem()),
            OutFile::secret(files::ROOT_KEY, new.key_pem()),
            OutFile::public(
                files::CROSS_CERT,
                rhizome_ca::certs_to_pem(std::slice::from_ref(&cross)),
            ),
            OutFile::public(files::BUNDLE, bundle.to_pem()),
        ],
    )?;
    for p in &written {
        outln!("wrote {}", p.display());
    }
    outln!("old root: {}", old.fingerprint());
    outln!("new root: {}", new.fingerprint());
    outln!(
        "next: `rhizome ca rotate bundle-add --bundle <agent dir>/bundle.pem --root {}` on every agent",
        a.out.join(files::ROOT_CERT).display()
    );
    Ok(ExitCode::SUCCESS)
}

fn load_bundle(path: &Path) -> anyhow::Result<TrustBundle> {
    TrustBundle::from_pem(&files::read(path)?)
        .with_context(|| format!("parsing the bundle {}", path.display()))
}

fn one_cert(path: &Path) -> anyhow::Result<rustls_pki_types::CertificateDer<'static>> {
    rhizome_ca::certs_from_pem(&files::read(path)?)
        .with_context(|| format!("parsing {}", path.display()))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("{} holds no certificate", path.display()))
}

fn bundle_add(a: BundleAddArgs) -> anyhow::Result<ExitCode> {
    let bundle = load_bundle(&a.bundle)?;
    let root = one_cert(&a.root)?;
    let fp = Fingerprint::of(&root);
    let updated = bundle.with_root(root)?;
    files::replace(&a.bundle, &updated.to_pem())?;
    outln!(
        "{}: {} root(s), added {fp}",
        a.bundle.display(),
        updated.roots().len()
    );
    Ok(ExitCode::SUCCESS)
}

fn bundle_remove(a: BundleRemoveArgs) -> anyhow::Result<ExitCode> {
    let bundle = load_bundle(&a.bundle)?;
    let fp = match (&a.root, &a.fingerprint) {
        (Some(path), _) => Fingerprint::of(&one_cert(path)?),
        (None, Some(hex)) => hex
            .parse::<Fingerprint>()
            .map_err(|e| anyhow::anyhow!("--fingerprint: {e}"))?,
        (None, None) => anyhow::bail!("give --root or --fingerprint"),
    };
    if !bundle.fingerprints().contains(&fp) {
        anyhow::bail!("{} does not contain root {fp}", a.bundle.display());
    }
    let updated = bundle
        .without_root(&fp)
        .context("the bundle would have no root left")?;
    files::replace(&a.bundle, &updated.to_pem())?;
    outln!(
        "{}: {} root(s), removed {fp}",
        a.bundle.display(),
        updated.roots().len()
    );
    Ok(ExitCode::SUCCESS)
}

fn bundle_show(path: &Path) -> anyhow::Result<ExitCode> {
    let bundle = load_bundle(path)?;
    let rows: Vec<Vec<String>> = bundle
        .roots()
        .iter()
        .map(|r| {
            let info = CertInfo::from_der(r)?;
            Ok(vec![
                Fingerprint::of(r).to_string(),
                info.subject,
                info.not_after.to_string(),
            ])
        })
        .collect::<anyhow::Result<_>>()?;
    outln!("trust domain: {}", bundle.trust_domain());
    super::status::print_table(&["FINGERPRINT", "SUBJECT", "EXPIRES"], &rows);
    Ok(ExitCode::SUCCESS)
}

fn finish(dir: &Path) -> anyhow::Result<ExitCode> {
    let root = files::load_root(dir)?;
    let bundle = TrustBundle::new(vec![root.cert().clone()])?;
    let bundle_path = dir.join(files::BUNDLE);
    files::replace(&bundle_path, &bundle.to_pem())?;
    let cross = dir.join(files::CROSS_CERT);
    if cross.exists() {
        std::fs::remove_file(&cross).with_context(|| format!("removing {}", cross.display()))?;
        outln!("removed {}", cross.display());
    }
    outln!(
        "{}: only root {}",
        bundle_path.display(),
        root.fingerprint()
    );
    Ok(ExitCode::SUCCESS)
}
