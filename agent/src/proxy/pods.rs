//! Upstream listeners of Kubernetes pods: one listener per address (`upstream_bind_addr:
//! port`) that any registered pod of this node declares, opened when the first pod needs
//! it and closed when the last one is gone. Connections are attributed to a pod by source
//! IP ([`crate::kube::attribute`]); unknown sources are reset.

use super::Proxy;
use super::outbound::{Routing, serve_upstream};
use crate::kube::PodRegistryRx;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Follows the pod registry until `stop`, then lets the pod listeners drain.
pub async fn serve(
    proxy: Arc<Proxy>,
    mut pods: PodRegistryRx,
    stop: crate::runtime::Shutdown,
) -> anyhow::Result<()> {
    let mut open: BTreeMap<SocketAddr, crate::runtime::ShutdownTrigger> = BTreeMap::new();
    let mut listeners = JoinSet::new();
    loop {
        let wanted: BTreeSet<SocketAddr> = pods
            .borrow_and_update()
            .services()
            .flat_map(|s| s.upstreams.iter())
            .map(|u| SocketAddr::new(u.local_bind_address, u.local_bind_port))
            .collect();
        open.retain(|addr, close| {
            let keep = wanted.contains(addr);
            if !keep {
                tracing::info!(listen = %addr, "pod upstream listener closed: no pod needs it");
                close.trigger();
            }
            keep
        });
        for addr in wanted {
            if open.contains_key(&addr) {
                continue;
            }
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    tracing::info!(listen = %addr, "pod upstream listener");
                    let (close, closed) = crate::runtime::shutdown();
                    listeners.spawn(serve_upstream(
                        proxy.clone(),
                        listener,
                        Routing::Pods(pods.clone()),
                        closed,
                    ));
                    open.insert(addr, close);
                }
                Err(e) => {
                    tracing::warn!(listen = %addr, error = %e, "cannot bind a pod upstream listener");
                }
            }
        }
        let discovery_ended = tokio::select! {
            () = stop.wait() => break,
            Some(_) = listeners.join_next() => false,
            changed = pods.changed() => changed.is_err(),
        };
        if discovery_ended {
            // Discovery stopped (agent shutdown): keep serving until our own stop.
            stop.wait().await;
            break;
        }
    }
    for close in open.values() {
        close.trigger();
    }
    while listeners.join_next().await.is_some() {}
    Ok(())
}
