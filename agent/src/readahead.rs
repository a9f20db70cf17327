//! A read-ahead buffer under TLS: rustls asks its socket for 4 KiB at a time, so a 16 KiB
//! record costs four or five `recv` calls (and as many TCP ACK decisions). [`ReadAhead`]
//! reads up to [`READ_AHEAD`] bytes per call and serves rustls from memory. The buffer is
//! allocated when a read needs it and freed once it is drained and the socket has nothing
//! more, so an idle connection holds none. Writes go straight through (vectored).

use bytes::{Buf as _, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at once.
pub const READ_AHEAD: usize = 64 * 1024;

/// An I/O object whose reads go through a read-ahead buffer (see the module docs).
#[derive(Debug)]
pub struct ReadAhead<T> {
    inner: T,
    buf: BytesMut,
}

impl<T> ReadAhead<T> {
    /// Wraps `inner`; no buffer is allocated until a read needs one.
    pub fn new(inner: T) -> ReadAhead<T> {
        ReadAhead {
            inner,
            buf: BytesMut::new(),
        }
    }

    /// The wrapped I/O object.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Bytes read from the socket and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            if out.remaining() >= READ_AHEAD {
                this.buf = BytesMut::new();
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            // Reuses the drained buffer's space when it is still allocated.
            this.buf.reserve(READ_AHEAD);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buf) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    this.buf = BytesMut::new();
                    return Poll::Pending;
                }
            }
            if this.buf.is_empty() {
                this.buf = BytesMut::new();
                return Poll::Ready(Ok(()));
            }
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use futures::FutureExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (ReadAhead<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (ReadAhead::new(accepted.unwrap().0), client.unwrap())
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_socket_read_in_order() {
        let (mut ra, mut peer) = pair().await;
        let data = pattern(200_000);
        let writer = tokio::spawn(async move {
            peer.write_all(&data).await.unwrap();
            peer.shutdown().await.unwrap();
            data
        });
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        let mut saw_read_ahead = false;
        loop {
            let n = ra.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            saw_read_ahead |= ra.buffered() > 0;
            assert!(ra.buffered() <= READ_AHEAD - n);
            got.extend_from_slice(&small[..n]);
        }
        let data = writer.await.unwrap();
        assert!(got == data, "every byte, in order");
        assert!(saw_read_ahead, "4 KiB reads were served from a read-ahead");
        assert_eq!(ra.read(&mut small).await.unwrap(), 0, "EOF stays EOF");
    }

    #[tokio::test]
    async fn large_reads_bypass_the_buffer_and_idle_holds_none() {
        let (mut ra, mut peer) = pair().await;
        peer.write_all(b"hello").await.unwrap();
        let mut one = [0u8; 1];
        ra.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"h");
        assert_eq!(ra.buffered(), 4);
        assert!(ra.buf.capacity() > 0);
        let mut big = vec![0u8; READ_AHEAD];
        let n = ra.read(&mut big).await.unwrap();
        assert_eq!(&big[..n], b"ello", "the buffered rest comes first");
        // Nothing more to read: the poll is pending and the buffer is released.
        assert!(ra.read(&mut one).now_or_never().is_none());
        assert_eq!(ra.buf.capacity(), 0, "an idle connection holds no buffer");
        peer.write_all(b"world").await.unwrap();
        let n = ra.read(&mut big).await.unwrap();
        assert_eq!(&big[..n], b"world");
        assert_eq!(
            ra.buf.capacity(),
            0,
            "a large read went straight to the caller"
        );
        // Writes pass through.
        ra.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        peer.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }
}
