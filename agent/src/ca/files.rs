//! The CA's files on disk: names (part of the CLI's interface), writing new files without
//! ever overwriting one (keys with mode 0600), replacing a bundle atomically, and loading a
//! root directory (`rhizome ca init` output, plus `cross.pem` during a rotation).

use anyhow::Context as _;
use rhizome_ca::{RootCa, TrustBundle};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

// Read from `ca { dir }` and written by `rhizome ca issue-agent`:
/// The agent intermediate (followed by any cross certificate).
pub const AGENT_CERT: &str = "agent.pem";
/// The intermediate's private key.
pub const AGENT_KEY: &str = "agent.key";
/// The trust bundle (one or more roots).
pub const BUNDLE: &str = "bundle.pem";

/// The root certificate written by `rhizome ca init`.
pub const ROOT_CERT: &str = "root.pem";
/// The root's private key (mode 0600).
pub const ROOT_KEY: &str = "root.key";
/// During a rotation: the new root's certificate signed by the old root. Chains issued
/// from a root directory holding it carry it, so peers trusting only the old root accept them.
pub const CROSS_CERT: &str = "cross.pem";
/// A leaf certificate alone (`issue-leaf`, `issue-operator`).
pub const LEAF_CERT: &str = "cert.pem";
/// A leaf's private key (mode 0600).
pub const LEAF_KEY: &str = "key.pem";
/// A leaf followed by its issuing chain, without the root.
pub const LEAF_CHAIN: &str = "chain.pem";

/// One file to write: its name in the output directory, its text, and whether it is secret.
pub struct OutFile {
    /// File name.
    pub name: &'static str,
    /// PEM text.
    pub contents: String,
    /// Secret files (private keys) get mode 0600.
    pub secret: bool,
}

impl OutFile {
    /// A public file (certificates, bundles): mode 0644.
    pub fn public(name: &'static str, contents: String) -> OutFile {
        OutFile {
            name,
            contents,
            secret: false,
        }
    }

    /// A private key: mode 0600.
    pub fn secret(name: &'static str, contents: String) -> OutFile {
        OutFile {
            name,
            contents,
            secret: true,
        }
    }
}

/// Writes `files` into `dir` (created if missing). Refuses, before writing anything, if any
/// of them exists already: CA material is never overwritten by accident.
pub fn write_new(dir: &Path, files: &[OutFile]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let existing: Vec<String> = files
        .iter()
        .map(|f| dir.join(f.name))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        anyhow::bail!(
            "refusing to overwrite {} (move it away or choose another --out)",
            existing.join(", ")
        );
    }
    let mut written = Vec::with_capacity(files.len());
    for f in files {
        let path = dir.join(f.name);
        let mode = if f.secret { 0o600 } else { 0o644 };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(f.contents.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Replaces `path` with `contents` atomically (temporary file + rename), keeping mode 0644:
/// for editing a trust bundle in place during a rotation.
pub fn replace(path: &Path, contents: &str) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(contents.as_bytes())?;
    tmp.as_file().sync_all()?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Reads a UTF-8 file, naming it in the error.
pub fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Loads the root of a `rhizome ca init` directory (`root.pem`, `root.key`), making it carry
/// `cross.pem` when present (rotation in progress).
pub fn load_root(dir: &Path) -> anyhow::Result<RootCa> {
    let mut root = RootCa::from_pem(&read(&dir.join(ROOT_CERT))?, &read(&dir.join(ROOT_KEY))?)
        .with_context(|| format!("loading the root CA from {}", dir.display()))?;
    let cross = dir.join(CROSS_CERT);
    if cross.exists() {
        let certs = rhizome_ca::certs_from_pem(&read(&cross)?)
            .with_context(|| format!("parsing {}", cross.display()))?;
        root.set_cross_signed(certs);
    }
    Ok(root)
}

/// The trust bundle to hand out from a root directory: its `bundle.pem` when present (during
/// a rotation it holds the old and new roots), else the root alone.
pub fn root_dir_bundle(dir: &Path, root: &RootCa) -> anyhow::Result<TrustBundle> {
    let path = dir.join(BUNDLE);
    if path.exists() {
        let bundle = TrustBundle::from_pem(&read(&path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        if !bundle.fingerprints().contains(&root.fingerprint()) {
            anyhow::bail!(
                "{} does not contain the root of {}",
                path.display(),
                dir.display()
            );
        }
        return Ok(bundle);
    }
    Ok(TrustBundle::new(vec![root.cert().clone()])?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn writes_keys_0600_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new");
        write_new(
            &out,
            &[
                OutFile::public("a.pem", "A".into()),
                OutFile::secret("a.key", "K".into()),
            ],
        )
        .unwrap();
        let mode = |n: &str| std::fs::metadata(out.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("a.key"), 0o600);
        assert_eq!(mode("a.pem") & 0o077, 0o044);
        let err = write_new(
            &out,
            &[
                OutFile::public("b.pem", "B".into()),
                OutFile::secret("a.key", "X".into()),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert!(!out.join("b.pem").exists(), "nothing written on refusal");
        assert_eq!(std::fs::read_to_string(out.join("a.key")).unwrap(), "K");
    }
}
