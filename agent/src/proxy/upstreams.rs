//! The upstream listeners of the config services, changed in place on a reload.
//!
//! Each listener is keyed by its bind address. [`Upstreams::apply`] compares the wanted set
//! (from the services of the new config) with the open one:
//!
//! - **unchanged** (same address, same source and destination): untouched, its open
//!   connections never notice the reload;
//! - **added**: bound before anything else changes, so a port in use refuses the whole
//!   reload and leaves every listener as it was;
//! - **changed** (same address, another source or destination): the old accept loop stops
//!   and drains, a new one takes over the *same* socket (a dup of its descriptor), so no
//!   connection attempt is refused in between;
//! - **removed**: its socket closes, its open connections drain.
//!
//! A drained listener's connections get `proxy.drain_timeout` to end, then are cut.

use super::Proxy;
use super::outbound::{Route, Routing, serve_upstream};
use crate::config::Service;
use crate::runtime::{Shutdown, ShutdownTrigger};
use rhizome_intentions::ServiceRef;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Why a set of upstreams was not applied (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A service or destination name is not a valid reference (the config's fault).
    #[error("service {service:?}: {message}")]
    Name {
        /// The service whose upstream is wrong.
        service: String,
        /// What is wrong.
        message: String,
    },
    /// The address of a new listener cannot be bound (in use, not local): the config's or
    /// the host's fault.
    #[error("cannot bind the upstream listener on {addr}: {source}")]
    Bind {
        /// The listener's address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// What [`Upstreams::apply`] changed, as `address (source -> destination)` lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpstreamChanges {
    /// Listeners opened.
    pub added: Vec<String>,
    /// Listeners whose source or destination changed (same socket, new routing).
    pub changed: Vec<String>,
    /// Listeners closed (their connections drain).
    pub removed: Vec<String>,
}

struct Listening {
    route: Route,
    /// A dup of the listening socket, so a changed route can take it over.
    socket: std::net::TcpListener,
    stop: ShutdownTrigger,
    task: JoinHandle<anyhow::Result<()>>,
}

/// The config services' upstream listeners (pods' listeners live in [`super::pods`]).
pub struct Upstreams {
    proxy: Arc<Proxy>,
    shutdown: Shutdown,
    drain: Duration,
    open: tokio::sync::Mutex<BTreeMap<SocketAddr, Listening>>,
}

fn describe(addr: SocketAddr, route: &Route) -> String {
    format!("{addr} ({} -> {})", route.source, route.destination)
}

fn same(a: &Route, b: &Route) -> bool {
    a.source == b.source && a.destination == b.destination
}

/// The listeners `services` declare, by address.
pub fn wanted(services: &[Service]) -> Result<BTreeMap<SocketAddr, Route>, UpstreamError> {
    let mut out = BTreeMap::new();
    for svc in services {
        let name = |e: rhizome_intentions::NameError| UpstreamError::Name {
            service: svc.id.clone(),
            message: e.to_string(),
        };
        let source = ServiceRef::new(&svc.namespace, &svc.name).map_err(name)?;
        for up in &svc.upstreams {
            let destination =
                ServiceRef::new(&up.destination_namespace, &up.destination_name).map_err(name)?;
            out.insert(
                SocketAddr::new(up.local_bind_address, up.local_bind_port),
                Route {
                    source: source.clone(),
                    destination,
                },
            );
        }
    }
    Ok(out)
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, UpstreamError> {
    let bind_err = |source| UpstreamError::Bind { addr, source };
    let socket = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    socket.set_nonblocking(true).map_err(bind_err)?;
    Ok(socket)
}

impl Upstreams {
    /// No listener yet; `shutdown` stops them all with the agent (and closes their
    /// sockets at once: new connections are refused while open ones drain).
    pub fn new(proxy: Arc<Proxy>, shutdown: Shutdown) -> Arc<Upstreams> {
        let drain = proxy.config.proxy.drain_timeout.0;
        let upstreams = Arc::new(Upstreams {
            proxy,
            shutdown: shutdown.clone(),
            drain,
            open: tokio::sync::Mutex::new(BTreeMap::new()),
        });
        let weak = Arc::downgrade(&upstreams);
        tokio::spawn(async move {
            shutdown.wait().await;
            if let Some(upstreams) = weak.upgrade() {
                // Each accept loop drops its own descriptor on the same signal; the
                // copies kept here must go too, or the kernel would keep queueing connects.
                upstreams.open.lock().await.clear();
            }
        });
        upstreams
    }

    /// The open listeners' addresses.
    pub async fn addresses(&self) -> Vec<SocketAddr> {
        self.open.lock().await.keys().copied().collect()
    }

    /// Makes the open listeners those of `services`. On an error nothing changed.
    pub async fn apply(&self, services: &[Service]) -> Result<UpstreamChanges, UpstreamError> {
        let wanted = wanted(services)?;
        let mut open = self.open.lock().await;
        if self.shutdown.is_triggered() {
            return Ok(UpstreamChanges::default());
        }
        // The fallible part first: bind every new address, or change nothing.
        let mut fresh = Vec::new();
        for (addr, route) in &wanted {
            if !open.contains_key(addr) {
                fresh.push((*addr, route.clone(), bind(*addr)?));
            }
        }
        let mut changes = UpstreamChanges::default();
        let gone: Vec<SocketAddr> = open
            .keys()
            .filter(|a| !wanted.contains_key(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(old) = open.remove(&addr) {
                tracing::info!(listen = %addr, src = %old.route.source, dst = %old.route.destination,
                    "upstream listener removed: closing it, its connections drain");
                changes.removed.push(describe(addr, &old.route));
                self.retire(old);
            }
        }
        for (addr, route) in &wanted {
            let Some(old) = open.get(addr) else { continue };
            if same(&old.route, route) {
                continue;
            }
            // Take the socket over before the old loop lets go of it: no refused connect.
            let socket = match old.socket.try_clone() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(listen = %addr, error = %e,
                        "cannot share an upstream socket; keeping its old routing");
                    continue;
                }
            };
            if let Some(old) = open.remove(addr) {
                tracing::info!(listen = %addr, src = %route.source, dst = %route.destination,
                    was.src = %old.route.source, was.dst = %old.route.destination,
                    "upstream listener changed: new connections take the new route");
                changes.changed.push(describe(*addr, route));
                self.retire(old);
            }
            match self.spawn(*addr, route.clone(), socket) {
                Ok(l) => {
                    open.insert(*addr, l);
                }
                Err(e) => tracing::error!(listen = %addr, error = %e,
                    "cannot serve a changed upstream listener"),
            }
        }
        for (addr, route, socket) in fresh {
            match self.spawn(addr, route.clone(), socket) {
                Ok(l) => {
                    tracing::info!(listen = %addr, src = %route.source, dst = %route.destination,
                        "upstream listener");
                    changes.added.push(describe(addr, &route));
                    open.insert(addr, l);
                }
                Err(e) => tracing::error!(listen = %addr, error = %e,
                    "cannot serve a new upstream listener"),
            }
        }
        Ok(changes)
    }

    fn spawn(
        &self,
        addr: SocketAddr,
        route: Route,
        socket: std::net::TcpListener,
    ) -> std::io::Result<Listening> {
        let served = socket.try_clone()?;
        let listener = tokio::net::TcpListener::from_std(served)?;
        let (stop, stopped) = self.shutdown.child();
        let task = tokio::spawn(serve_upstream(
            self.proxy.clone(),
            listener,
            Routing::Fixed(route.clone()),
            stopped,
        ));
        tracing::debug!(listen = %addr, "upstream accept loop started");
        Ok(Listening {
            route,
            socket,
            stop,
            task,
        })
    }

    /// Stops accepting on `old`, gives its connections the drain timeout, then cuts them.
    fn retire(&self, old: Listening) {
        let Listening {
            route,
            socket,
            stop,
            mut task,
        } = old;
        stop.trigger();
        drop(socket);
        let drain = self.drain;
        tokio::spawn(async move {
            if tokio::time::timeout(drain, &mut task).await.is_err() {
                tracing::warn!(src = %route.source, dst = %route.destination,
                    "drain timeout of a retired upstream listener: cutting its connections");
                task.abort();
            }
        });
    }
}
