//! The receive buffer each side of a proxied connection reads into, and
//! the shard's pools of buffers that connections borrow while active.
//!
//! monoio reads are "rent" style: the buffer is moved into the kernel
//! operation and handed back with the result. [`RecvBuf`] keeps unconsumed
//! bytes at `[start..len)` and reads new bytes into the spare capacity
//! after them, compacting only when the spare room runs low, so parsing a
//! head or scanning a body never copies bytes that are still needed.
//!
//! # Idle connections hold no buffer
//!
//! A keep-alive connection waiting for its next request owns no receive
//! buffer, no output buffer and no field table: it waits for readiness
//! first (`conn/`), then borrows them from its shard's pools here, and
//! gives them back when it is idle again. Memory therefore follows active
//! connections, not open ones (nginx frees its header buffer the same way).
//! The pools are bounded: what a burst of closing connections returns
//! beyond [`POOL_MAX`] goes back to the allocator, what no connection took
//! for a second is freed by [`sweep_pools`], and the shard's tick then
//! hands the freed pages back to the OS (`shard.rs`, `malloc_trim`).
//! [`in_use`] counts receive buffers held by connections (the
//! `buffers_in_use` figure of `/stats`): zero when every connection idles.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;

use super::deadline::{ClientWatch, Shut, Timer};
use crate::proto::http1::Field;

/// Outcome of a read with a deadline.
#[derive(Debug)]
pub enum ReadError {
    Eof,
    Timeout,
    Io(io::Error),
    /// An upstream read that watched its client was cut off because the
    /// client had gone (`deadline.rs`).
    ClientGone,
}

/// The error of a read whose deadline ended it: the client's departure if
/// that is why (a watched read), else a timeout.
fn cut_off(timer: &Timer) -> ReadError {
    if timer.client_gone() {
        ReadError::ClientGone
    } else {
        ReadError::Timeout
    }
}

/// Size of pooled buffers (upstream receive buffers and output buffers).
pub const POOLED: usize = 64 * 1024;
/// Size of a client receive buffer (grown up to `max_header_bytes` for a
/// large head; a grown buffer is freed, not pooled).
pub const CLIENT: usize = 4096;
/// Most buffers of each kind (and field tables) a shard keeps for reuse.
const POOL_MAX: usize = 256;
/// Field tables start with room for this many fields.
const FIELDS: usize = 32;

thread_local! {
    // Per shard thread: buffers of idle connections are parked here instead
    // of pinned by the connection, so memory follows active connections.
    static POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
    static CLIENT_POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
    static FIELD_POOL: std::cell::RefCell<Vec<Vec<Field>>> = const { std::cell::RefCell::new(Vec::new()) };
    static IN_USE: Cell<usize> = const { Cell::new(0) };
    // Fewest buffers each pool held since the last `sweep_pools`: that
    // many were not needed in the meantime.
    static LOW: [Cell<usize>; 3] = const { [Cell::new(0), Cell::new(0), Cell::new(0)] };
}

/// Notes a pool's length after a take (its low-water mark).
#[inline]
fn note_low(pool: usize, len: usize) {
    LOW.with(|l| {
        if len < l[pool].get() {
            l[pool].set(len);
        }
    });
}

/// Frees the buffers and field tables no connection took since the last
/// sweep (each pool's low-water mark), so a shard whose connections went
/// idle or closed keeps none; returns how many were freed. Called by the
/// shard's tick about once a second.
pub fn sweep_pools() -> usize {
    fn sweep<T>(pool: &std::cell::RefCell<Vec<T>>, low: &Cell<usize>) -> usize {
        let mut p = pool.borrow_mut();
        let unused = low.get().min(p.len());
        let keep = p.len() - unused;
        p.truncate(keep);
        if p.is_empty() {
            *p = Vec::new();
        }
        low.set(p.len());
        unused
    }
    LOW.with(|l| {
        POOL.with(|p| sweep(p, &l[0]))
            + CLIENT_POOL.with(|p| sweep(p, &l[1]))
            + FIELD_POOL.with(|p| sweep(p, &l[2]))
    })
}

/// Frees every pooled buffer and field table (no connection of the shard
/// holds a buffer: all idle or gone); returns how many were freed.
pub fn free_pools() -> usize {
    fn free<T>(pool: &std::cell::RefCell<Vec<T>>, low: &Cell<usize>) -> usize {
        low.set(0);
        std::mem::take(&mut *pool.borrow_mut()).len()
    }
    LOW.with(|l| {
        POOL.with(|p| free(p, &l[0]))
            + CLIENT_POOL.with(|p| free(p, &l[1]))
            + FIELD_POOL.with(|p| free(p, &l[2]))
    })
}

/// Receive buffers ([`RecvBuf`] storage) held by this shard's connections.
pub fn in_use() -> usize {
    IN_USE.with(Cell::get)
}

/// Buffers this shard keeps for reuse (receive, output and client ones).
pub fn pooled() -> usize {
    POOL.with(|p| p.borrow().len()) + CLIENT_POOL.with(|p| p.borrow().len())
}

/// One of this thread's pools.
type Pool<T> = std::thread::LocalKey<std::cell::RefCell<Vec<Vec<T>>>>;

/// Takes an empty vector from `pool` (index `low` for the sweep's low-water
/// mark), or allocates one of `cap`.
fn take_from<T>(pool: &'static Pool<T>, low: usize, cap: usize) -> Vec<T> {
    pool.with(|p| {
        let mut p = p.borrow_mut();
        let v = p.pop();
        note_low(low, p.len());
        v
    })
    .unwrap_or_else(|| Vec::with_capacity(cap))
}

/// Puts `v` back into `pool` when `keep` (its size is one the pool holds)
/// and the pool is not full; drops it otherwise.
fn put_into<T>(pool: &'static Pool<T>, mut v: Vec<T>, keep: bool) {
    if keep {
        v.clear();
        pool.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(v);
            }
        });
    }
}

/// An empty buffer of at least [`POOLED`] bytes, from this thread's pool.
pub fn take_pooled() -> Vec<u8> {
    take_from(&POOL, 0, POOLED)
}

/// Returns a buffer to this thread's pool (dropped when the pool is full or
/// the buffer is an odd size).
pub fn give_back(v: Vec<u8>) {
    let keep = v.capacity() >= POOLED && v.capacity() <= 4 * POOLED;
    put_into(&POOL, v, keep);
}

fn take_client() -> Vec<u8> {
    take_from(&CLIENT_POOL, 1, CLIENT)
}

fn give_back_client(v: Vec<u8>) {
    let keep = v.capacity() == CLIENT;
    put_into(&CLIENT_POOL, v, keep);
}

/// An empty field table from this thread's pool.
pub fn take_fields() -> Vec<Field> {
    take_from(&FIELD_POOL, 2, FIELDS)
}

/// Returns a field table (one that grew past a few times [`FIELDS`] is
/// freed instead).
pub fn give_back_fields(v: Vec<Field>) {
    let keep = v.capacity() >= FIELDS && v.capacity() <= 4 * FIELDS;
    put_into(&FIELD_POOL, v, keep);
}

/// `v` itself if it has an allocation, else a pooled buffer; cleared.
pub fn ensure_pooled(v: Vec<u8>) -> Vec<u8> {
    let mut v = if v.capacity() == 0 { take_pooled() } else { v };
    v.clear();
    v
}

/// Which pool a [`RecvBuf`]'s storage comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// [`CLIENT`] bytes, growable up to the buffer's limit.
    Client,
    /// [`POOLED`] bytes.
    Upstream,
}

pub struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    /// Largest size the buffer may grow to.
    limit: usize,
    /// The pool storage is taken from on first use (and returned by
    /// `release`).
    class: Class,
    /// This buffer holds storage counted in [`in_use`].
    counted: bool,
}

impl RecvBuf {
    /// A client receive buffer: [`CLIENT`] bytes taken from the shard's
    /// pool on first use, growing up to `limit` when a head needs it.
    pub fn client(limit: usize) -> Self {
        RecvBuf {
            buf: Vec::new(),
            start: 0,
            limit: limit.max(CLIENT),
            class: Class::Client,
            counted: false,
        }
    }

    /// A client-class buffer with its own `initial`-byte storage (not from
    /// the pool), growing up to `limit`.
    pub fn growable(initial: usize, limit: usize) -> Self {
        RecvBuf {
            buf: Vec::with_capacity(initial.min(limit)),
            start: 0,
            limit,
            class: Class::Client,
            counted: false,
        }
    }

    /// A [`POOLED`]-byte buffer taken from the shard's pool on first use.
    pub fn pooled() -> Self {
        RecvBuf {
            buf: Vec::new(),
            start: 0,
            limit: POOLED,
            class: Class::Upstream,
            counted: false,
        }
    }

    /// Gives the storage back to the pool if it holds nothing (idle
    /// connection).
    pub fn release(&mut self) {
        if self.is_empty() && self.buf.capacity() > 0 {
            let v = std::mem::take(&mut self.buf);
            match self.class {
                Class::Client => give_back_client(v),
                Class::Upstream => give_back(v),
            }
            self.start = 0;
            self.uncount();
        }
    }

    /// Whether this buffer holds storage (for tests and assertions).
    pub fn holds_storage(&self) -> bool {
        self.buf.capacity() > 0
    }

    fn uncount(&mut self) {
        if self.counted {
            self.counted = false;
            IN_USE.with(|n| n.set(n.get() - 1));
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
        self.fill_fd(stream, fd, timer, limit, None).await
    }

    /// [`fill`](Self::fill) for a stream half that does not expose its
    /// descriptor (`fd` is the socket's, for the deadline). An upstream
    /// read passes the client to `watch` (`deadline.rs`).
    pub async fn fill_fd<S: AsyncReadRent>(
        &mut self,
        stream: &mut S,
        fd: RawFd,
        timer: &Timer,
        limit: Duration,
        watch: Option<ClientWatch>,
    ) -> Result<usize, ReadError> {
        let (res, in_time) = timer
            .run_watched(fd, Shut::Read, limit, watch, self.fill_untimed(stream))
            .await;
        if in_time.is_err() {
            return Err(cut_off(timer));
        }
        res
    }

    /// A read without a deadline, for an operation that runs alongside
    /// another one holding the connection's deadline (the response watch
    /// of a full-duplex upload); the caller bounds it otherwise.
    pub fn fill_untimed<'a, S: AsyncReadRent>(
        &'a mut self,
        stream: &'a mut S,
    ) -> impl std::future::Future<Output = Result<usize, ReadError>> + 'a {
        // Not an `async fn`: a layer around the read would copy it.
        self.fill_untimed_upto(stream, usize::MAX)
    }

    /// [`fill_fd`](Self::fill_fd) reading at most `max` bytes (a response
    /// head's reads, which leave a large body in the kernel for
    /// `splice.rs`).
    pub async fn fill_upto<S: AsyncReadRent + AsRawFd>(
        &mut self,
        stream: &mut S,
        timer: &Timer,
        limit: Duration,
        max: usize,
        watch: Option<ClientWatch>,
    ) -> Result<usize, ReadError> {
        let fd = stream.as_raw_fd();
        let op = self.fill_untimed_upto(stream, max);
        let (res, in_time) = timer.run_watched(fd, Shut::Read, limit, watch, op).await;
        if in_time.is_err() {
            return Err(cut_off(timer));
        }
        res
    }

    async fn fill_untimed_upto<S: AsyncReadRent>(
        &mut self,
        stream: &mut S,
        max: usize,
    ) -> Result<usize, ReadError> {
        self.make_room();
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let cap = buf.capacity().min(len.saturating_add(max));
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
        if self.buf.capacity() == 0 {
            self.uncount();
        }
    }

    fn make_room(&mut self) {
        if self.buf.capacity() == 0 {
            self.buf = match self.class {
                Class::Client => take_client(),
                Class::Upstream => take_pooled(),
            };
            self.start = 0;
            if !self.counted {
                self.counted = true;
                IN_USE.with(|n| n.set(n.get() + 1));
            }
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

impl Drop for RecvBuf {
    fn drop(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.release();
        self.uncount();
    }
}
