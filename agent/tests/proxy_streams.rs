//! Issue 15, item 4: more concurrent proxied connections between one pair of services and
//! one peer agent than one QUIC connection may carry streams (4,096, the stream limit each
//! agent grants per connection). Before the fix the pool kept one connection per (peer,
//! source, destination): the 4,097th proxied connection waited `connect_timeout` for a
//! stream ("no stream credit") and was reset, whatever `max_connections` said. Now the pool
//! opens another QUIC connection to the peer.
//!
//! Real connections on loopback: about four descriptors each (client, upstream side, the
//! server agent's connection to the backend, the backend's), so this test has a binary of
//! its own and skips when the open-files limit is too low.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use futures::StreamExt as _;
use proxy_support::*;
use rhizome_agent::catalog::Health;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Streams one QUIC connection may carry (`proxy::transport::MAX_STREAMS`).
const STREAMS_PER_CONNECTION: usize = 4096;
/// Proxied connections held open at once: past one connection's streams.
const HELD: usize = STREAMS_PER_CONNECTION + 54;

/// Sends one byte on `s` and reads it back.
async fn echo(s: &mut TcpStream, byte: u8) -> std::io::Result<()> {
    s.write_all(&[byte]).await?;
    let mut got = [0u8; 1];
    s.read_exact(&mut got).await?;
    if got[0] == byte {
        Ok(())
    } else {
        Err(std::io::Error::other("wrong byte"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_proxied_connections_than_one_quic_connection_carries() {
    let mesh = Mesh::new("test.mesh");
    let echo_addr = echo_server().await;
    let port = free_port();
    let b = mesh
        .start("b", &service("db", "db-1", echo_addr.port(), &[]))
        .await;
    // Agents raise the soft open-files limit to the hard one (this process's too).
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let needed = 4 * HELD as u64 + 1000;
    if limit < needed {
        println!("SKIPPED: open-files limit {limit} < {needed} needed for {HELD} connections");
        b.shutdown().await.unwrap();
        return;
    }
    let a = mesh
        .start_joined(
            "a",
            &[&b],
            &format!(
                "proxy {{\n  max_connections = {}\n  connect_timeout = \"10s\"\n}}\n{}",
                HELD + 100,
                web_to("db", port)
            ),
        )
        .await;
    rules(&b, &[&allow("db", "web")]);
    wait_catalog(&a, "default", "db", 1, Health::Passing).await;

    let started = Instant::now();
    let opened: Vec<std::io::Result<TcpStream>> = futures::stream::iter(0..HELD)
        .map(|i| async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
            tokio::time::timeout(Duration::from_secs(30), echo(&mut s, (i % 251) as u8))
                .await
                .map_err(|_| std::io::Error::other("no echo in 30 s"))??;
            Ok(s)
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let took = started.elapsed();
    let failed = opened.iter().filter(|r| r.is_err()).count();
    let first_error = opened
        .iter()
        .find_map(|r| r.as_ref().err().map(|e| e.to_string()));
    let mut held: Vec<TcpStream> = opened.into_iter().filter_map(Result::ok).collect();
    let text = metrics(&a);
    let quic = text
        .lines()
        .find(|l| l.starts_with("rhizome_proxy_handshake_seconds_count{transport=\"quic\"}"))
        .unwrap_or("no QUIC handshake counted")
        .to_string();
    println!(
        "{HELD} concurrent proxied connections web -> db through one peer: {} established in {} ms, \
         {failed} failed; pooled QUIC connections opened: {quic}",
        held.len(),
        took.as_millis()
    );
    assert_eq!(
        failed, 0,
        "every connection flows (first error: {first_error:?})"
    );
    assert!(
        quic.ends_with(" 2"),
        "a second QUIC connection carries the streams past the first one's: {quic}"
    );
    // All of them are still open and carry bytes both ways.
    let again = futures::stream::iter(held.iter_mut())
        .map(|s| async move {
            tokio::time::timeout(Duration::from_secs(30), echo(s, 7))
                .await
                .is_ok_and(|r| r.is_ok())
        })
        .buffer_unordered(64)
        .collect::<Vec<bool>>()
        .await;
    assert!(again.iter().all(|ok| *ok), "held connections still echo");
    drop(held);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
