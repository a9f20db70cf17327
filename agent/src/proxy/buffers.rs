//! Recycled read buffers of the relay.
//!
//! A chunk read from a socket is handed on as [`Bytes`] and lives until the peer has taken
//! it (a QUIC chunk until it is acknowledged), so every read used to allocate a fresh 64 KiB
//! buffer. At gigabytes per second that churn made the allocator return memory to the
//! kernel and fault it back in, page by page (about a tenth of the client agent's CPU). Here
//! a buffer comes back to a small shared free list when the last [`Bytes`] made from it is
//! dropped. The list keeps at most [`KEEP`] buffers (2 MiB), so an idle agent holds little.

use bytes::Bytes;
use std::sync::{Mutex, MutexGuard};

/// Size of one read buffer.
pub const SIZE: usize = 64 * 1024;
/// Reads shorter than this are copied out, so the buffer is reused at once.
pub const SMALL: usize = 4 * 1024;
/// Most buffers kept on the free list.
pub const KEEP: usize = 32;

/// A free list of read buffers.
pub struct Recycler {
    free: Mutex<Vec<Vec<u8>>>,
}

/// The agent's free list, shared by all relays.
pub static BUFFERS: Recycler = Recycler::new();

impl Recycler {
    /// An empty free list.
    pub const fn new() -> Recycler {
        Recycler {
            free: Mutex::new(Vec::new()),
        }
    }

    fn list(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        crate::runtime::lock_unpoisoned(&self.free)
    }

    /// A buffer of [`SIZE`] bytes: a recycled one, or a new one.
    pub fn take(&self) -> Vec<u8> {
        let recycled = self.list().pop();
        recycled.unwrap_or_else(|| vec![0; SIZE])
    }

    /// Puts `buf` back on the free list (dropped if the list is full).
    pub fn give_back(&self, buf: Vec<u8>) {
        if buf.len() == SIZE {
            let mut list = self.list();
            if list.len() < KEEP {
                list.push(buf);
            }
        }
    }

    /// The first `len` bytes of `buf`: copied out (and `buf` given back) when short, else
    /// shared, with `buf` given back once the last clone is dropped.
    pub fn freeze(&'static self, buf: Vec<u8>, len: usize) -> Bytes {
        let len = len.min(buf.len());
        if len < SMALL {
            let bytes = Bytes::copy_from_slice(&buf[..len]);
            self.give_back(buf);
            bytes
        } else {
            Bytes::from_owner(Filled {
                buf,
                len,
                home: self,
            })
        }
    }
}

impl Default for Recycler {
    fn default() -> Self {
        Recycler::new()
    }
}

/// A filled buffer owned by [`Bytes`]; it returns to its free list on drop.
struct Filled {
    buf: Vec<u8>,
    len: usize,
    home: &'static Recycler,
}

impl AsRef<[u8]> for Filled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Filled {
    fn drop(&mut self) {
        self.home.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_are_copied_and_long_ones_shared_then_recycled() {
        let recycler: &'static Recycler = Box::leak(Box::new(Recycler::new()));
        let mut buf = recycler.take();
        assert_eq!(buf.len(), SIZE);
        buf[..5].copy_from_slice(b"hello");
        let ptr = buf.as_ptr();
        let short = recycler.freeze(buf, 5);
        assert_eq!(&short[..], b"hello");
        assert_eq!(
            recycler.list().len(),
            1,
            "a short read's buffer is back at once"
        );

        let mut buf = recycler.take();
        assert_eq!(buf.as_ptr(), ptr, "the buffer was reused");
        buf[..SMALL].fill(7);
        let long = recycler.freeze(buf, SMALL);
        assert_eq!(long.len(), SMALL);
        assert!(long.iter().all(|b| *b == 7));
        assert_eq!(long.as_ptr(), ptr, "a long read is not copied");
        assert!(recycler.list().is_empty());
        let clone = long.slice(10..20);
        drop(long);
        assert!(recycler.list().is_empty(), "still referenced by the clone");
        drop(clone);
        assert_eq!(recycler.list().len(), 1);
    }

    #[test]
    fn the_free_list_is_bounded() {
        let recycler: &'static Recycler = Box::leak(Box::new(Recycler::new()));
        let held: Vec<Bytes> = (0..KEEP + 5)
            .map(|_| recycler.freeze(recycler.take(), SIZE))
            .collect();
        drop(held);
        assert_eq!(recycler.list().len(), KEEP);
    }
}
