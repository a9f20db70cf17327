//! Trust bundles: the roots a peer's chain may end at, several at once during rotation, the
//! revocations in force, and a shared cell to swap them at runtime without rebuilding TLS
//! configurations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls_pki_types::{CertificateDer, TrustAnchor};

use crate::id::TrustDomain;
use crate::info::CertInfo;
use crate::pem::{self, PemError};
use crate::revocation::RevocationSet;
use crate::root::Fingerprint;

/// Why a set of roots cannot form a bundle (the bundle file's or the sender's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The PEM text is unusable.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A root is not a CA certificate carrying `spiffe://<td>` or cannot be a trust anchor.
    #[error("root #{index} is not a rhizome root: {reason}")]
    NotARoot {
        /// Position of the root in the input.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The roots belong to different trust domains.
    #[error("roots of different trust domains: {0} and {1}")]
    MixedTrustDomains(TrustDomain, TrustDomain),
    /// No roots at all.
    #[error("a trust bundle needs at least one root")]
    Empty,
}

/// The roots of one trust domain that chains may end at, and the revocations that chains
/// must not hold ([`crate::verify_chain_with`] checks both).
#[derive(Debug, Clone)]
pub struct TrustBundle {
    td: TrustDomain,
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    revoked: Arc<RevocationSet>,
}

impl TrustBundle {
    /// Builds a bundle from root certificates, all of the same trust domain.
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Result<Self, BundleError> {
        let mut td: Option<TrustDomain> = None;
        let mut anchors = Vec::with_capacity(roots.len());
        for (index, root) in roots.iter().enumerate() {
            let not_root = |reason: String| BundleError::NotARoot { index, reason };
            let info = CertInfo::from_der(root).map_err(|e| not_root(e.to_string()))?;
            let this = match (
                info.is_ca,
                info.spiffe_id,
                info.trust_domain,
                info.agent_node,
            ) {
                (true, None, Some(t), None) => t,
                _ => return Err(not_root("not a CA with a spiffe://<td> URI".to_owned())),
            };
            crate::svid::check_signing_der(root).map_err(|e| not_root(e.to_string()))?;
            match &td {
                Some(first) if *first != this => {
                    return Err(BundleError::MixedTrustDomains(first.clone(), this));
                }
                _ => td = Some(this),
            }
            let anchor =
                webpki::anchor_from_trusted_cert(root).map_err(|e| not_root(e.to_string()))?;
            anchors.push(anchor.to_owned());
        }
        let td = td.ok_or(BundleError::Empty)?;
        Ok(Self {
            td,
            roots,
            anchors,
            revoked: Arc::default(),
        })
    }

    /// A copy whose chains must also not hold anything in `revoked`.
    pub fn with_revocations(&self, revoked: Arc<RevocationSet>) -> Self {
        Self {
            revoked,
            ..self.clone()
        }
    }

    /// The revocations in force.
    pub fn revocations(&self) -> &Arc<RevocationSet> {
        &self.revoked
    }

    /// Parses `bundle.pem` (one or more root certificates).
    pub fn from_pem(text: &str) -> Result<Self, BundleError> {
        Self::new(pem::certs_from_pem(text)?)
    }

    /// `bundle.pem`: every root, in order.
    pub fn to_pem(&self) -> String {
        pem::certs_to_pem(&self.roots)
    }

    /// The trust domain of every root.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    /// The root certificates.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The fingerprints of the roots.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.roots.iter().map(Fingerprint::of).collect()
    }

    /// A copy with `root` added (rotation step 1); unchanged if already present.
    pub fn with_root(&self, root: CertificateDer<'static>) -> Result<Self, BundleError> {
        let mut roots = self.roots.clone();
        if !roots.contains(&root) {
            roots.push(root);
        }
        Ok(Self::new(roots)?.with_revocations(self.revoked.clone()))
    }

    /// A copy without the root of fingerprint `fp` (rotation's last step).
    pub fn without_root(&self, fp: &Fingerprint) -> Result<Self, BundleError> {
        let roots = self
            .roots
            .iter()
            .filter(|r| Fingerprint::of(r) != *fp)
            .cloned()
            .collect();
        Ok(Self::new(roots)?.with_revocations(self.revoked.clone()))
    }

    pub(crate) fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }
}

/// A trust bundle shared by verifiers and swapped at runtime (root rotation, revocations):
/// readers take a cheap snapshot, writers replace it. Every change bumps a generation, so
/// holders of verified sessions (pooled connections, TLS session caches) can tell that their
/// peers must be checked again.
#[derive(Debug, Clone)]
pub struct SharedBundle(Arc<Shared>);

/// Told of every change of a [`SharedBundle`], with its new generation (the agent wakes the
/// tasks that re-check live sessions).
pub type ChangeHook = Arc<dyn Fn(u64) + Send + Sync>;

struct Shared {
    current: RwLock<Arc<TrustBundle>>,
    generation: AtomicU64,
    hooks: RwLock<Vec<ChangeHook>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBundle")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl SharedBundle {
    /// A cell holding `bundle`.
    pub fn new(bundle: TrustBundle) -> Self {
        Self(Arc::new(Shared {
            current: RwLock::new(Arc::new(bundle)),
            generation: AtomicU64::new(0),
            hooks: RwLock::new(Vec::new()),
        }))
    }

    /// The bundle in force now.
    pub fn load(&self) -> Arc<TrustBundle> {
        match self.0.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the roots; the next handshake uses them. The revocations in force are kept
    /// (they are replaced only by [`SharedBundle::set_revocations`]).
    pub fn store(&self, bundle: TrustBundle) {
        self.replace(|current| bundle.with_revocations(current.revoked.clone()));
    }

    /// Replaces the revocations in force, keeping the roots.
    pub fn set_revocations(&self, revoked: RevocationSet) {
        let revoked = Arc::new(revoked);
        self.replace(|current| current.with_revocations(revoked));
    }

    /// A number that changes whenever the roots or the revocations change.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// Calls `hook` after every later change (roots or revocations), outside the cell's lock.
    pub fn on_change(&self, hook: ChangeHook) {
        match self.0.hooks.write() {
            Ok(mut g) => g.push(hook),
            Err(poisoned) => poisoned.into_inner().push(hook),
        }
    }

    fn replace(&self, f: impl FnOnce(&TrustBundle) -> TrustBundle) {
        let generation = {
            let mut guard = match self.0.current.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            *guard = Arc::new(f(&guard));
            self.0.generation.fetch_add(1, Ordering::AcqRel) + 1
        };
        let hooks = match self.0.hooks.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for hook in hooks {
            hook(generation);
        }
    }
}
