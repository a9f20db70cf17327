//! Serving the API router over HTTP/1.1 with limits: a connection must send its request
//! headers within [`HEADER_READ_TIMEOUT`] (idle keep-alive connections too), a body must
//! arrive within [`BODY_TIMEOUT`] and be at most [`MAX_BODY`] bytes, at most
//! [`MAX_CONNECTIONS`] connections are open at once, and every error answer is JSON
//! (`{"error": "..."}`), whoever produced it (a handler, an extractor's rejection, the
//! router's 404/405, the limits here).
//!
//! Issue 15: with `axum::serve` an idle connection was kept forever (500 of them, all
//! kept), a chunked body announcing a 2^64−1 byte chunk was waited for, and extractor
//! rejections (413, 422) were plain text. Refusals are counted in
//! `rhizome_refused_total{port="http", reason}` and logged at a bounded rate.

use super::error::ApiError;
use crate::refusals::{Port, Refusals};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use futures::StreamExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// Time a connection has to send a request's headers, from its opening or from the end of
/// its previous response (an idle connection is closed after it).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a request has to send its whole body once its headers are in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body (the API's bodies are signed entries and HCL: a few KB).
pub const MAX_BODY: usize = 1024 * 1024;
/// Connections served at once; one more is closed at once.
pub const MAX_CONNECTIONS: usize = 512;
/// How long open connections get to finish their request at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest plain-text error body turned into JSON (extractor rejections are one line).
const MAX_ERROR_TEXT: usize = 64 * 1024;

/// What every connection task shares.
struct Shared {
    router: Router,
    refusals: Refusals,
    http: hyper::server::conn::http1::Builder,
}

/// Serves `router` on `listener` until `stop`; accept errors are counted in `accept_errors`
/// (listener `http`), refusals in `refusals`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    accept_errors: crate::accept::AcceptErrors,
    refusals: Refusals,
    stop: crate::runtime::Shutdown,
) -> anyhow::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let shared = Arc::new(Shared {
        router,
        refusals,
        http,
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut listener = crate::accept::Acceptor::new(listener, "http", accept_errors);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.wait() => break,
            Some(_) = conns.join_next() => continue,
            got = listener.accept() => got,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared.refusals.refuse(
                Port::Http,
                "too_many_connections",
                Some(peer),
                &format_args!("{MAX_CONNECTIONS} connections already open"),
            );
            continue;
        };
        let (shared, stop) = (shared.clone(), stop.clone());
        conns.spawn(async move {
            let _slot = slot;
            connection(&shared, tcp, peer, stop).await;
        });
    }
    // New connections are refused from here on; open ones finish their request in flight
    // (idle ones close at once).
    drop(listener);
    let grace = tokio::time::sleep(SHUTDOWN_GRACE);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            () = &mut grace => break,
            next = conns.join_next() => {
                if next.is_none() {
                    break;
                }
            }
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until it closes, times out or the agent stops.
async fn connection(
    shared: &Arc<Shared>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    stop: crate::runtime::Shutdown,
) {
    let _ = tcp.set_nodelay(true);
    let service = {
        let shared = shared.clone();
        hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(request(&shared, peer, req).await) }
        })
    };
    let conn = shared.http.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            () = stop.wait(), if !stopping => {
                // Ends the connection after the request in flight (at once if idle).
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        let reason = if e.is_timeout() {
            "header_timeout"
        } else if e.is_parse_too_large() {
            "headers_too_large"
        } else if e.is_parse() || e.is_parse_status() {
            "malformed_request"
        } else if e.is_incomplete_message() {
            "incomplete_request"
        } else {
            // The client went away (reset, closed mid-response): not a refusal.
            tracing::debug!(peer = %peer, error = %e, "API connection ended");
            return;
        };
        shared.refusals.refuse(Port::Http, reason, Some(peer), &e);
    }
}

/// One request: the body read within its limits, the router, errors turned into JSON.
async fn request(
    shared: &Shared,
    peer: SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let response = match read_body(&parts.headers, Body::new(body)).await {
        Ok(bytes) => {
            let req = Request::from_parts(parts, Body::from(bytes));
            match shared.router.clone().oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
        Err(refused) => axum::response::IntoResponse::into_response(refused),
    };
    let status = response.status();
    if status.is_client_error() {
        shared.refusals.refuse(
            Port::Http,
            status_reason(status),
            Some(peer),
            &format_args!("{status} for {path}"),
        );
    }
    json_error(response).await
}

/// The whole body, at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`]: 413 as soon as a
/// declared length or the bytes received pass the limit, 408 when the body stalls.
async fn read_body(headers: &axum::http::HeaderMap, body: Body) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {MAX_BODY} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("request body: {e}")))?;
            if buf.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(buf.freeze()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// The `reason` label of a 4xx answer.
fn status_reason(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "body_timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        _ => "client_error",
    }
}

/// An error answer that is not JSON (an extractor's rejection, the router's 405...) as
/// `{"error": text}`, with its status and other headers kept.
async fn json_error(response: Response<Body>) -> Response<Body> {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let json = serde_json::json!({ "error": message }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(json))
}
