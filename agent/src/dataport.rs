//! The TCP side of the data port: one listener, TLS 1.3 only, services chosen by ALPN.
//!
//! The ClientHello is read first (`LazyConfigAcceptor`), then the service registered for the
//! offered ALPN supplies the server config — the join service authenticates the server only
//! (the joiner has a token, not a certificate), the TLS transport of the data plane requires
//! a workload client certificate. Every connection refused before a service gets it (no
//! ClientHello in time, not TLS, unknown ALPN, a failed handshake such as one without a
//! client certificate) is counted in `rhizome_refused_total{port="data_tls", reason}` and
//! logged at a bounded rate.

use crate::readahead::ReadAhead;
use crate::refusals::{Port, Refusals};
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

/// Time a client has for its ClientHello, then again for the rest of the handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts on `listener` until `stop` turns true, dispatching each connection by ALPN;
/// accept errors are counted in `errors` (listener `data`) and paused after, refused
/// handshakes in `refusals` (port `data_tls`).
pub async fn serve(
    listener: TcpListener,
    services: TcpServices,
    errors: crate::accept::AcceptErrors,
    refusals: Refusals,
    stop: crate::runtime::Shutdown,
) -> anyhow::Result<()> {
    let services = Arc::new(services);
    let mut listener = crate::accept::Acceptor::new(listener, "data", errors);
    loop {
        tokio::select! {
            () = stop.wait() => return Ok(()),
            (tcp, peer) = listener.accept() => {
                let _ = tcp.set_nodelay(true);
                let (services, refusals) = (services.clone(), refusals.clone());
                tokio::spawn(async move {
                    if let Err(refused) = dispatch(tcp, peer, &services).await {
                        refusals.refuse(Port::DataTls, refused.reason, Some(peer), &refused.detail);
                    }
                });
            }
        }
    }
}

/// A connection refused before its service got it: the label and what happened.
struct Refused {
    reason: &'static str,
    detail: String,
}

impl Refused {
    fn new(reason: &'static str, detail: impl std::fmt::Display) -> Refused {
        Refused {
            reason,
            detail: detail.to_string(),
        }
    }

    /// A failed handshake, by the TLS error under the I/O error.
    fn handshake(e: &std::io::Error) -> Refused {
        let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        let reason = match tls {
            Some(rustls::Error::NoCertificatesPresented) => "no_client_cert",
            Some(rustls::Error::InvalidCertificate(_)) => "bad_client_cert",
            Some(_) => "handshake_failed",
            None => "handshake_io",
        };
        Refused::new(reason, e)
    }
}

async fn dispatch(tcp: TcpStream, peer: SocketAddr, services: &TcpServices) -> Result<(), Refused> {
    let acceptor =
        LazyConfigAcceptor::new(rustls::server::Acceptor::default(), ReadAhead::new(tcp));
    let start = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor)
        .await
        .map_err(|_| Refused::new("handshake_timeout", "no ClientHello in time"))?
        .map_err(|e| Refused::new("not_tls", e))?;
    let chosen = start
        .client_hello()
        .alpn()
        .and_then(|mut offered| offered.find_map(|p| services.services.get(p).cloned()));
    let Some(service) = chosen else {
        return Err(Refused::new(
            "unknown_alpn",
            "no service for the offered ALPN",
        ));
    };
    let config = service
        .server_config()
        .map_err(|e| Refused::new("no_server_config", e))?;
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config))
        .await
        .map_err(|_| Refused::new("handshake_timeout", "handshake not finished in time"))?
        .map_err(|e| Refused::handshake(&e))?;
    service.handle(stream, peer).await;
    Ok(())
}
