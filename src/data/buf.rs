//! The receive buffer each side of a proxied connection reads into.
//!
//! monoio reads are "rent" style: the buffer is moved into the kernel
//! operation and handed back with the result. [`RecvBuf`] keeps unconsumed
//! bytes at `[start..len)` and reads new bytes into the spare capacity
//! after them, compacting only when the spare room runs low, so parsing a
//! head or scanning a body never copies bytes that are still needed.

use std::io;
use std::os::fd::AsRawFd;
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

pub struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
}

impl RecvBuf {
    pub fn with_capacity(cap: usize) -> Self {
        RecvBuf {
            buf: Vec::with_capacity(cap),
            start: 0,
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

    /// Marks `n` bytes as consumed.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.buf.len());
        if self.start == self.buf.len() {
            self.start = 0;
            self.buf.clear();
        }
    }

    /// Whether the buffer holds as many bytes as it can.
    pub fn is_full(&self) -> bool {
        self.start == 0 && self.buf.len() == self.buf.capacity()
    }

    /// Reads more bytes after the unconsumed ones. Returns how many arrived;
    /// end of stream is `Err(Eof)`.
    pub async fn fill<S: AsyncReadRent + AsRawFd>(
        &mut self,
        stream: &mut S,
        timer: &Timer,
        limit: Duration,
    ) -> Result<usize, ReadError> {
        self.make_room();
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let cap = buf.capacity();
        let slice = buf.slice_mut(len..cap);
        let fd = stream.as_raw_fd();
        let ((res, slice), in_time) = timer.run(fd, Shut::Read, limit, stream.read(slice)).await;
        self.buf = slice.into_inner();
        if in_time.is_err() {
            return Err(ReadError::Timeout);
        }
        match res {
            Ok(0) => Err(ReadError::Eof),
            Ok(n) => Ok(n),
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    fn make_room(&mut self) {
        let spare = self.buf.capacity() - self.buf.len();
        if self.start > 0 && spare < self.buf.capacity() / 4 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.start = 0;
        }
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
