//! The TCP side of the data port: one listener, TLS 1.3 only, services chosen by ALPN.
//!
//! The ClientHello is read first (`LazyConfigAcceptor`), then the service registered for the
//! offered ALPN supplies the server config — the join service authenticates the server only
//! (the joiner has a token, not a certificate), the TLS transport of the data plane requires
//! a workload client certificate. Unknown ALPNs are dropped and counted.

use crate::readahead::ReadAhead;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

/// The transport under TLS on the data port: the TCP connection with a read-ahead buffer.
pub type DataStream = ReadAhead<TcpStream>;

/// A TLS-over-TCP service reachable on the data port under one ALPN protocol id.
pub trait TcpService: Send + Sync + 'static {
    /// The server config for this service (fetched per connection: it may change on renewal).
    fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>>;
    /// Handles one established TLS connection from `peer`.
    fn handle(
        &self,
        stream: TlsStream<DataStream>,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
}

/// ALPN protocol id -> service.
#[derive(Default, Clone)]
pub struct TcpServices {
    services: HashMap<Vec<u8>, Arc<dyn TcpService>>,
}

impl TcpServices {
    /// Registers `service` under `alpn`.
    pub fn register(&mut self, alpn: &[u8], service: Arc<dyn TcpService>) {
        self.services.insert(alpn.to_vec(), service);
    }

    /// Whether anything is registered (the listener is only bound if so).
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// Accepts on `listener` until `stop` turns true, dispatching each connection by ALPN;
/// accept errors are counted in `errors` (listener `data`) and paused after.
pub async fn serve(
    listener: TcpListener,
    services: TcpServices,
    errors: crate::accept::AcceptErrors,
    stop: crate::runtime::Shutdown,
) -> anyhow::Result<()> {
    let services = Arc::new(services);
    let mut listener = crate::accept::Acceptor::new(listener, "data", errors);
    loop {
        tokio::select! {
            () = stop.wait() => return Ok(()),
            (tcp, peer) = listener.accept() => {
                let _ = tcp.set_nodelay(true);
                let services = services.clone();
                tokio::spawn(async move {
                    if let Err(e) = dispatch(tcp, peer, &services).await {
                        tracing::debug!(peer = %peer, error = %e, "data port: connection refused");
                    }
                });
            }
        }
    }
}

async fn dispatch(tcp: TcpStream, peer: SocketAddr, services: &TcpServices) -> anyhow::Result<()> {
    let acceptor =
        LazyConfigAcceptor::new(rustls::server::Acceptor::default(), ReadAhead::new(tcp));
    let start = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor).await??;
    let chosen = start
        .client_hello()
        .alpn()
        .and_then(|mut offered| offered.find_map(|p| services.services.get(p).cloned()));
    let Some(service) = chosen else {
        anyhow::bail!("no service for the offered ALPN");
    };
    let config = service.server_config()?;
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        start.into_stream(config),
    )
    .await??;
    service.handle(stream, peer).await;
    Ok(())
}
