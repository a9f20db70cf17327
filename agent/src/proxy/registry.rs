//! Every open proxied connection of this agent, so they can be cut from outside: inbound
//! ones are re-decided whenever the intentions change (and cut if now denied), every one
//! whose peer's chain no longer verifies is cut when trust changes (a revocation, a root
//! removed); on shutdown the drain closes each one gracefully once it is at rest, waits for
//! the others, and cuts what is left when the drain time is up.

use super::relay::Cut;
use super::wire::ResetCode;
use rhizome_ca::SpiffeId;
use rhizome_intentions::ServiceRef;
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What an inbound connection was authorized for, re-checked on every rule change.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The source workload, from its certificate.
    pub source: SpiffeId,
    /// The destination service.
    pub destination: ServiceRef,
}

/// The peer's certificate chain (leaf first) as verified at its handshake, and the TLS role
/// it was verified in, to verify again when trust changes.
#[derive(Debug)]
pub struct PeerChain {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The peer's role: [`rhizome_ca::Usage::Client`] for inbound tunnels.
    pub usage: rhizome_ca::Usage,
}

struct Entry {
    cut: Arc<Cut>,
    grant: Option<Grant>,
    peer: Option<Arc<PeerChain>>,
}

/// The open connections.
pub struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
    count: watch::Sender<usize>,
}

/// Membership of one connection in the registry; leaving scope removes it.
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
    /// Cuts this connection.
    pub cut: Arc<Cut>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry {
            next: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            count: watch::channel(0).0,
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<u64, Entry>) -> R) -> R {
        f(&mut crate::runtime::lock_unpoisoned(&self.open))
    }

    /// Adds a connection; `grant` for inbound ones that intentions must keep allowing, `peer`
    /// for ones whose peer's chain must keep verifying.
    pub fn register(
        self: &Arc<Self>,
        grant: Option<Grant>,
        peer: Option<Arc<PeerChain>>,
    ) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cut = Arc::new(Cut::default());
        let n = self.with(|m| {
            m.insert(
                id,
                Entry {
                    cut: cut.clone(),
                    grant,
                    peer,
                },
            );
            m.len()
        });
        self.count.send_replace(n);
        Registration {
            registry: self.clone(),
            id,
            cut,
        }
    }

    fn remove(&self, id: u64) {
        let n = self.with(|m| {
            m.remove(&id);
            m.len()
        });
        self.count.send_replace(n);
    }

    /// Open connections now.
    pub fn len(&self) -> usize {
        *self.count.borrow()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cuts every inbound connection whose grant `allowed` now refuses; returns how many.
    pub fn recheck(&self, allowed: impl Fn(&Grant) -> bool) -> usize {
        let denied: Vec<Arc<Cut>> = self.with(|m| {
            m.values()
                .filter(|e| e.grant.as_ref().is_some_and(|g| !allowed(g)))
                .map(|e| e.cut.clone())
                .collect()
        });
        for cut in &denied {
            cut.cut(ResetCode::Denied);
        }
        denied.len()
    }

    /// Cuts every connection whose peer chain `trusted` now refuses; returns how many.
    pub fn recheck_trust(&self, trusted: impl Fn(&PeerChain) -> bool) -> usize {
        let refused: Vec<Arc<Cut>> = self.with(|m| {
            m.values()
                .filter(|e| e.peer.as_deref().is_some_and(|p| !trusted(p)))
                .map(|e| e.cut.clone())
                .collect()
        });
        for cut in &refused {
            cut.cut(ResetCode::Denied);
        }
        refused.len()
    }

    /// Cuts every open connection with `code`.
    pub fn cut_all(&self, code: ResetCode) {
        let all: Vec<Arc<Cut>> = self.with(|m| m.values().map(|e| e.cut.clone()).collect());
        for cut in all {
            cut.cut(code);
        }
    }

    /// Closes gracefully every connection at rest for `quiet` ([`Cut::at_rest`]); returns
    /// how many.
    pub fn close_at_rest(&self, quiet: std::time::Duration) -> usize {
        let resting: Vec<Arc<Cut>> = self.with(|m| {
            m.values()
                .filter(|e| !e.cut.is_cut() && e.cut.at_rest(quiet))
                .map(|e| e.cut.clone())
                .collect()
        });
        for cut in &resting {
            cut.close();
        }
        resting.len()
    }

    /// Resolves once no connection is open.
    pub async fn wait_empty(&self) {
        let mut rx = self.count.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recheck_cuts_only_refused_grants_and_drop_unregisters() {
        let reg = Registry::new();
        let grant = |src: &str| Grant {
            source: format!("spiffe://t.test/ns/default/svc/{src}")
                .parse()
                .unwrap(),
            destination: "db".parse().unwrap(),
        };
        let web = reg.register(Some(grant("web")), None);
        let api = reg.register(Some(grant("api")), None);
        let outbound = reg.register(None, None);
        assert_eq!(reg.len(), 3);
        let cut = reg.recheck(|g| g.source.to_string().ends_with("/web"));
        assert_eq!(cut, 1);
        assert!(!web.cut.is_cut());
        assert!(api.cut.is_cut());
        assert!(!outbound.cut.is_cut(), "outbound entries carry no grant");
        drop(api);
        drop(web);
        assert_eq!(reg.len(), 1);
        reg.cut_all(ResetCode::Shutdown);
        assert!(outbound.cut.is_cut());
        drop(outbound);
        reg.wait_empty().await;
        assert!(reg.is_empty());
    }

    #[test]
    fn recheck_trust_cuts_only_connections_whose_peer_is_refused() {
        let reg = Registry::new();
        let chain = |byte: u8| {
            Some(Arc::new(PeerChain {
                chain: vec![CertificateDer::from(vec![byte])],
                usage: rhizome_ca::Usage::Client,
            }))
        };
        let revoked = reg.register(None, chain(1));
        let fine = reg.register(None, chain(2));
        let unknown = reg.register(None, None);
        let cut = reg.recheck_trust(|p| p.chain[0].as_ref() != [1]);
        assert_eq!(cut, 1);
        assert!(revoked.cut.is_cut());
        assert!(!fine.cut.is_cut());
        assert!(!unknown.cut.is_cut());
    }
}
