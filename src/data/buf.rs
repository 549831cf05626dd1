//! The receive buffer each side of a proxied connection reads into.
//!
//! monoio reads are "rent" style: the buffer is moved into the kernel
//! operation and handed back with the result. [`RecvBuf`] keeps unconsumed
//! bytes at `[start..len)` and reads new bytes into the spare capacity
//! after them, compacting only when the spare room runs low, so parsing a
//! head or scanning a body never copies bytes that are still needed.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;

use super::deadline::{Shut, Timer};

/// Outcome of a read with a deadline.
#[derive(Debug)]
pub enum ReadError {
    Eof,
    Timeout,
    Io(io::Error),
}

/// Size of pooled buffers (upstream receive buffers and output buffers).
pub const POOLED: usize = 64 * 1024;
/// Most buffers a shard keeps for reuse.
const POOL_MAX: usize = 256;

thread_local! {
    // Per shard thread: buffers of idle connections are parked here instead
    // of pinning 16 KiB each, so memory follows active, not open, connections.
    static POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty buffer of at least [`POOLED`] bytes, from this thread's pool.
pub fn take_pooled() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(POOLED))
}

/// Returns a buffer to this thread's pool (dropped when the pool is full or
/// the buffer is an odd size).
pub fn give_back(mut v: Vec<u8>) {
    if v.capacity() >= POOLED && v.capacity() <= 4 * POOLED {
        v.clear();
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(v);
            }
        });
    }
}

/// `v` itself if it has an allocation, else a pooled buffer; cleared.
pub fn ensure_pooled(v: Vec<u8>) -> Vec<u8> {
    let mut v = if v.capacity() == 0 { take_pooled() } else { v };
    v.clear();
    v
}

pub struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    /// Largest size the buffer may grow to.
    limit: usize,
    /// Allocate from the pool on first use (and allow `release`).
    pooled: bool,
}

impl RecvBuf {
    /// A buffer that starts at `initial` bytes and grows up to `limit` when
    /// a head needs it.
    pub fn growable(initial: usize, limit: usize) -> Self {
        RecvBuf {
            buf: Vec::with_capacity(initial.min(limit)),
            start: 0,
            limit,
            pooled: false,
        }
    }

    /// A [`POOLED`]-byte buffer taken from the shard's pool on first use.
    pub fn pooled() -> Self {
        RecvBuf {
            buf: Vec::new(),
            start: 0,
            limit: POOLED,
            pooled: true,
        }
    }

    /// Parks the buffer in the pool if it holds nothing (idle connection).
    pub fn release(&mut self) {
        if self.pooled && self.is_empty() && self.buf.capacity() > 0 {
            give_back(std::mem::take(&mut self.buf));
            self.start = 0;
        }
    }

    /// Unconsumed bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks `n` bytes as consumed (at most what is buffered: consuming
    /// more is a caller bug, caught in debug builds, never an underflow).
    #[inline]
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len(), "consume({n}) of {} bytes", self.len());
        self.start += n.min(self.len());
        if self.start == self.buf.len() {
            self.start = 0;
            self.buf.clear();
        }
    }

    /// Reads more bytes after the unconsumed ones. Returns how many arrived;
    /// end of stream is `Err(Eof)`.
    pub async fn fill<S: AsyncReadRent + AsRawFd>(
        &mut self,
        stream: &mut S,
        timer: &Timer,
        limit: Duration,
    ) -> Result<usize, ReadError> {
        let fd = stream.as_raw_fd();
        self.fill_fd(stream, fd, timer, limit).await
    }

    /// [`fill`](Self::fill) for a stream half that does not expose its
    /// descriptor (`fd` is the socket's, for the deadline).
    pub async fn fill_fd<S: AsyncReadRent>(
        &mut self,
        stream: &mut S,
        fd: RawFd,
        timer: &Timer,
        limit: Duration,
    ) -> Result<usize, ReadError> {
        let (res, in_time) = timer
            .run(fd, Shut::Read, limit, self.fill_untimed(stream))
            .await;
        if in_time.is_err() {
            return Err(ReadError::Timeout);
        }
        res
    }

    /// A read without a deadline, for an operation that runs alongside
    /// another one holding the connection's deadline (the response watch
    /// of a full-duplex upload); the caller bounds it otherwise.
    pub async fn fill_untimed<S: AsyncReadRent>(
        &mut self,
        stream: &mut S,
    ) -> Result<usize, ReadError> {
        self.make_room();
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let cap = buf.capacity();
        let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        match res {
            Ok(0) => Err(ReadError::Eof),
            Ok(n) => Ok(n),
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// Empties the buffer after a read was abandoned mid-flight (its
    /// storage went with the cancelled operation).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    fn make_room(&mut self) {
        if self.buf.capacity() == 0 && self.pooled {
            self.buf = take_pooled();
            self.start = 0;
        }
        let spare = self.buf.capacity() - self.buf.len();
        if self.start > 0 && spare < self.buf.capacity() / 4 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.start = 0;
        }
        if self.buf.len() == self.buf.capacity() && self.buf.capacity() < self.limit {
            let grow = self
                .buf
                .capacity()
                .max(1024)
                .min(self.limit - self.buf.capacity());
            self.buf.reserve_exact(grow);
        }
    }

    /// Bytes the buffer can hold without growing.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Moves the unconsumed bytes into `storage` (cleared first) and makes
    /// it the buffer's; returns the old storage. For request-body
    /// buffering, which lends a client buffer larger storage for a while.
    pub fn replace_storage(&mut self, mut storage: Vec<u8>) -> Vec<u8> {
        storage.clear();
        storage.extend_from_slice(self.data());
        self.start = 0;
        std::mem::replace(&mut self.buf, storage)
    }

    /// Hands the whole buffer (for a zero-copy write of `data()`), to be
    /// returned with [`restore`](Self::restore).
    pub fn take(&mut self) -> (Vec<u8>, usize) {
        (std::mem::take(&mut self.buf), self.start)
    }

    pub fn restore(&mut self, buf: Vec<u8>, start: usize) {
        self.buf = buf;
        self.start = start;
    }
}
