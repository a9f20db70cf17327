//! `rhizome-testsvc`: the services and clients the namespace tests run inside hosts.
//!
//! - `echo --listen ADDR`: TCP echo; a client's half-close is passed back.
//! - `http --listen ADDR --body TEXT`: answers every HTTP request with 200 and TEXT.
//! - `client --connect ADDR --bytes N`: sends N pattern bytes, half-closes, checks that
//!   exactly the same N bytes come back. Exit 0 ok, 2 unreachable/timed out, 3 corrupt.
//! - `get --connect ADDR --path P`: HTTP/1.0 GET; prints the status, a newline, the body.
//!
//! Servers print `listening ADDR` on stdout once bound (the harness waits for that line).

use clap::{Parser, Subcommand};
use rhizome_integration::testsvc::{
    EXIT_CORRUPT, EXIT_HTTP_STATUS, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, READY_PREFIX,
    pattern_byte,
};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "rhizome-testsvc",
    about = "Test services for rhizome's namespace tests"
)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// TCP echo server.
    Echo {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// HTTP server answering 200 with a fixed body.
    Http {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Body of every answer.
        #[arg(long, default_value = "ok")]
        body: String,
    },
    /// Sends pattern bytes to an echo server and verifies what comes back.
    Client {
        /// Echo server address.
        #[arg(long)]
        connect: SocketAddr,
        /// How many bytes to send.
        #[arg(long, default_value_t = 1024)]
        bytes: u64,
        /// Connect, read and write timeout in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
    /// HTTP/1.0 GET.
    Get {
        /// Server address.
        #[arg(long)]
        connect: SocketAddr,
        /// Request path.
        #[arg(long, default_value = "/")]
        path: String,
        /// Connect and read timeout in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let code = match args.mode {
        Mode::Echo { listen } => serve(listen, echo),
        Mode::Http { listen, body } => serve(listen, move |s| http(s, &body)),
        Mode::Client {
            connect,
            bytes,
            timeout_ms,
        } => client(connect, bytes, Duration::from_millis(timeout_ms)),
        Mode::Get {
            connect,
            path,
            timeout_ms,
        } => get(connect, &path, Duration::from_millis(timeout_ms)),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Binds, says so, then serves each connection on its own thread until killed.
fn serve(listen: SocketAddr, handler: impl Fn(TcpStream) + Clone + Send + 'static) -> i32 {
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            return EXIT_USAGE;
        }
    };
    println!("{READY_PREFIX}{listen}");
    let _ = io::stdout().flush();
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let h = handler.clone();
                std::thread::spawn(move || h(stream));
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    EXIT_OK
}

fn echo(stream: TcpStream) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = stream;
    if io::copy(&mut reader, &mut writer).is_ok() {
        // The client half-closed: pass it on, so it sees the end of the echo.
        let _ = writer.shutdown(Shutdown::Write);
    }
}

fn http(mut stream: TcpStream, body: &str) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, i32> {
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        eprintln!("connect {addr}: {e}");
        EXIT_UNREACHABLE
    })?;
    let set = stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .and_then(|()| stream.set_nodelay(true));
    set.map_err(|e| {
        eprintln!("socket options: {e}");
        EXIT_USAGE
    })?;
    Ok(stream)
}

fn client(addr: SocketAddr, bytes: u64, timeout: Duration) -> i32 {
    let stream = match connect(addr, timeout) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Ok(mut writer) = stream.try_clone() else {
        return EXIT_USAGE;
    };
    let sender = std::thread::spawn(move || -> io::Result<()> {
        let mut sent = 0u64;
        let mut chunk = Vec::with_capacity(16 * 1024);
        while sent < bytes {
            chunk.clear();
            let n = (bytes - sent).min(16 * 1024);
            chunk.extend((sent..sent + n).map(pattern_byte));
            writer.write_all(&chunk)?;
            sent += n;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut reader = stream;
    let mut received = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    let mut verdict = EXIT_OK;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let expected = (received..received + n as u64).map(pattern_byte);
                if received + n as u64 > bytes || !buf[..n].iter().copied().eq(expected) {
                    eprintln!("bytes differ at offset {received}..{}", received + n as u64);
                    verdict = EXIT_CORRUPT;
                    break;
                }
                received += n as u64;
            }
            Err(e) => {
                eprintln!("read after {received} of {bytes} bytes: {e}");
                verdict = EXIT_UNREACHABLE;
                break;
            }
        }
    }
    match sender.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("write: {e}");
            if verdict == EXIT_OK {
                verdict = EXIT_UNREACHABLE;
            }
        }
        Err(_) => verdict = EXIT_USAGE,
    }
    if verdict == EXIT_OK && received != bytes {
        eprintln!("connection ended after {received} of {bytes} bytes");
        verdict = EXIT_CORRUPT;
    }
    if verdict == EXIT_OK {
        println!("{{\"sent\":{bytes},\"received\":{received}}}");
    }
    verdict
}

fn get(addr: SocketAddr, path: &str, timeout: Duration) -> i32 {
    let mut stream = match connect(addr, timeout) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
    let mut answer = Vec::new();
    let io = stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.read_to_end(&mut answer));
    if let Err(e) = io {
        eprintln!("GET {path} on {addr}: {e}");
        return EXIT_UNREACHABLE;
    }
    let text = String::from_utf8_lossy(&answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        eprintln!("not an HTTP answer: {text:?}");
        return EXIT_USAGE;
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status else {
        eprintln!("no status in {head:?}");
        return EXIT_USAGE;
    };
    print!("{status}\n{body}");
    let _ = io::stdout().flush();
    if (200..300).contains(&status) {
        EXIT_OK
    } else {
        EXIT_HTTP_STATUS
    }
}
