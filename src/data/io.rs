//! Writes with a deadline, and the body relay shared by both directions.
//!
//! A body is relayed in "absorb, then write" steps: whatever body bytes are
//! buffered are moved into the output buffer (head first, when there is
//! one, so a small message leaves in a single write), then more is read.
//! The same code moves request bodies client → upstream and response bodies
//! upstream → client; only the framing and the timeouts differ.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use std::future::Future;

use monoio::buf::{IoBuf, IoVecBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;

use super::buf::{ReadError, RecvBuf};
use super::deadline::{ClientWatch, Shut, Timer};
use crate::proto::http1::encode::{push_chunk, LAST_CHUNK};
use crate::proto::http1::{ChunkError, ChunkedDecoder, Piece};

/// Which side a relay failure came from; drives retries and status codes.
#[derive(Debug)]
pub enum RelayError {
    /// The reading side closed before the body ended.
    SrcEof,
    SrcTimeout,
    SrcIo(io::Error),
    /// The reading side sent a malformed chunked body.
    Malformed(ChunkError),
    DstTimeout,
    DstIo(io::Error),
    /// The client that the relay's source reads were watching has gone
    /// (`deadline.rs`): the relay was abandoned.
    ClientGone,
}

/// Writes all of `out` within `limit`; gives the buffer back.
pub async fn write_all<D: AsyncWriteRent + AsRawFd>(
    dst: &mut D,
    out: Vec<u8>,
    timer: &Timer,
    limit: Duration,
) -> (Result<(), RelayError>, Vec<u8>) {
    let fd = dst.as_raw_fd();
    let (r, _, out) = write_counted(dst, fd, out, timer, limit).await;
    (r, out)
}

/// Writes all of `out` to `dst` (socket `fd`) within `limit`; returns how
/// many bytes the kernel accepted, so a caller knows whether anything of a
/// request left the proxy before a failure.
pub async fn write_counted<D: AsyncWriteRent>(
    dst: &mut D,
    fd: RawFd,
    out: Vec<u8>,
    timer: &Timer,
    limit: Duration,
) -> (Result<(), RelayError>, usize, Vec<u8>) {
    if out.is_empty() {
        return (Ok(()), 0, out);
    }
    let op = async move {
        let mut out = out;
        let mut pos = 0;
        while pos < out.len() {
            let (r, slice) = dst.write(out.slice(pos..)).await;
            out = slice.into_inner();
            match r {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), pos, out),
                Ok(n) => pos += n,
                Err(e) => return (Err(e), pos, out),
            }
        }
        (Ok(()), pos, out)
    };
    match timer.run(fd, Shut::Both, limit, op).await {
        ((_, n, out), Err(_)) => (Err(RelayError::DstTimeout), n, out),
        ((Ok(()), n, out), Ok(())) => (Ok(()), n, out),
        ((Err(e), n, out), Ok(())) => (Err(RelayError::DstIo(e)), n, out),
    }
}

/// A plain client socket that closes right after these writes: they are
/// tried at once with a non-blocking `send(MSG_MORE)`, and when all of it
/// went, the socket is shut for writing in the same breath, so the kernel
/// sends the last segment and the FIN as one packet instead of two (data,
/// then a bare FIN a moment later when the close reaches the kernel).
///
/// On loopback the receiver's TCP work for every packet runs in the
/// sender's context, so this is about 13% of the proxy's CPU per
/// `Connection: close` request (bench/RESULTS.md). The two calls are
/// synchronous on purpose: the shutdown must follow the send before any
/// other work (held bytes that no FIN follows wait for the kernel's probe
/// timer), and io_uring runs a SHUTDOWN only on a worker thread, later, by
/// descriptor number. A write that does not go at once in full (the
/// socket's buffer is full) continues as an ordinary io_uring send, and the
/// close sends the FIN.
pub struct LastWrites<'a>(pub &'a mut TcpStream);

impl AsyncWriteRent for LastWrites<'_> {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let fd = self.0.as_raw_fd();
        let len = buf.bytes_init();
        // SAFETY: `buf` holds `len` initialised bytes at `read_ptr`; the fd
        // belongs to the stream, open for the whole call.
        let sent = unsafe {
            libc::send(
                fd,
                buf.read_ptr().cast(),
                len,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | libc::MSG_MORE,
            )
        };
        if sent < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return (Err(e), buf);
            }
            return self.0.write(buf).await;
        }
        if sent as usize == len {
            // SAFETY: as above. A failure here is harmless: the close
            // that follows sends the FIN.
            unsafe { libc::shutdown(fd, libc::SHUT_WR) };
        }
        (Ok(sent as usize), buf)
    }

    fn writev<T: IoVecBuf>(&mut self, buf_vec: T) -> impl Future<Output = BufResult<usize, T>> {
        self.0.writev(buf_vec)
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> {
        self.0.flush()
    }

    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        self.0.shutdown()
    }
}

/// How the rest of a body is delimited.
pub enum Body {
    Length(u64),
    /// `dechunk`: forward only the data (to an HTTP/1.0 client).
    Chunked {
        dec: ChunkedDecoder,
        dechunk: bool,
    },
    /// Until the source closes.
    Close,
    /// Until the source closes, sent chunked: a chunk per read, and the
    /// last chunk only when the source closes cleanly (a reset or a
    /// timeout leaves the client without it, so it sees the body cut).
    Rechunk,
}

impl Body {
    /// An upstream's chunked response body (its framing read as
    /// [`ChunkedDecoder::response`] does); `dechunk` as in [`Body::Chunked`].
    pub fn chunked_response(dechunk: bool) -> Body {
        Body::Chunked {
            dec: ChunkedDecoder::response(),
            dechunk,
        }
    }

    /// Moves buffered body bytes from `src` to `out`. Returns whether the
    /// body is complete.
    pub fn absorb(&mut self, src: &mut RecvBuf, out: &mut Vec<u8>) -> Result<bool, ChunkError> {
        match self {
            Body::Length(rem) => {
                let n = (*rem).min(src.len() as u64) as usize;
                out.extend_from_slice(&src.data()[..n]);
                src.consume(n);
                *rem -= n as u64;
                Ok(*rem == 0)
            }
            Body::Chunked {
                dec,
                dechunk: false,
            } => {
                let n = dec.forward(src.data(), out)?;
                src.consume(n);
                Ok(dec.is_done())
            }
            Body::Chunked { dec, dechunk: true } => {
                while !dec.is_done() {
                    let (n, piece) = dec.next(src.data())?;
                    if n == 0 {
                        break;
                    }
                    if piece == Piece::Data {
                        out.extend_from_slice(&src.data()[..n]);
                    }
                    src.consume(n);
                }
                Ok(dec.is_done())
            }
            Body::Close => {
                out.extend_from_slice(src.data());
                let n = src.len();
                src.consume(n);
                Ok(false)
            }
            Body::Rechunk => {
                push_chunk(out, src.data());
                let n = src.len();
                src.consume(n);
                Ok(false)
            }
        }
    }

    /// The source closed: whether that ends the body (a close-delimited
    /// one), after appending to `out` what ends it for the destination.
    fn source_closed(&self, out: &mut Vec<u8>) -> bool {
        match self {
            Body::Close => true,
            Body::Rechunk => {
                out.extend_from_slice(LAST_CHUNK);
                true
            }
            Body::Length(_) | Body::Chunked { .. } => false,
        }
    }
}

/// One direction of a body relay: where the bytes come from, where they
/// go, and the time each side is allowed. The descriptors are the sockets'
/// (stream halves do not expose theirs), for the deadlines.
pub struct Pipe<'a, S, D> {
    pub src: &'a mut S,
    pub src_fd: RawFd,
    pub sbuf: &'a mut RecvBuf,
    pub dst: &'a mut D,
    pub dst_fd: RawFd,
    pub timer: &'a Timer,
    pub read_limit: Duration,
    pub write_limit: Duration,
    /// The client to watch while the source is read (a response body from
    /// an upstream); `None` when the source is the client.
    pub watch: Option<ClientWatch>,
}

/// Sends `out` (which may already hold a head and body bytes), then relays
/// the rest of `body` from `p.src` to `p.dst`. `out` is returned for reuse.
/// For a `Close` body, the source closing is the normal end. `written`
/// is increased by the bytes handed to `dst`.
pub async fn relay<S: AsyncReadRent, D: AsyncWriteRent>(
    p: Pipe<'_, S, D>,
    mut out: Vec<u8>,
    body: &mut Body,
    mut done: bool,
    written: &mut u64,
) -> (Result<(), RelayError>, Vec<u8>) {
    loop {
        let (r, n, o) = write_counted(p.dst, p.dst_fd, out, p.timer, p.write_limit).await;
        *written += n as u64;
        out = o;
        out.clear();
        if let Err(e) = r {
            return (Err(e), out);
        }
        if done {
            return (Ok(()), out);
        }
        let read = p
            .sbuf
            .fill_fd(p.src, p.src_fd, p.timer, p.read_limit, p.watch);
        match read.await {
            Ok(_) => {}
            Err(ReadError::Eof) => {
                if !body.source_closed(&mut out) {
                    return (Err(RelayError::SrcEof), out);
                }
                // Whatever ends the body goes out, then the relay is done.
                done = true;
                continue;
            }
            Err(ReadError::Timeout) => return (Err(RelayError::SrcTimeout), out),
            Err(ReadError::Io(e)) => return (Err(RelayError::SrcIo(e)), out),
            Err(ReadError::ClientGone) => return (Err(RelayError::ClientGone), out),
        }
        match body.absorb(p.sbuf, &mut out) {
            Ok(d) => done = d,
            Err(e) => return (Err(RelayError::Malformed(e)), out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::SocketAddr;

    const LEN: usize = 300_000;

    fn data() -> Vec<u8> {
        (0..LEN).map(|i| (i % 251) as u8).collect()
    }

    /// A client that reads late, to the end: what it got, or its error.
    fn late_reader() -> (SocketAddr, std::thread::JoinHandle<io::Result<Vec<u8>>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = l.accept()?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut got = Vec::new();
            s.read_to_end(&mut got).map(|_| got)
        });
        (addr, reader)
    }

    /// Writes `data()` with `LastWrites` through a small locked send
    /// buffer, then drops (closes) the socket; returns the write calls.
    async fn write_through_a_small_buffer(addr: SocketAddr) -> usize {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let small: libc::c_int = 4096;
        // SAFETY: a valid option value for an open socket.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        let mut out = data();
        let (mut pos, mut calls) = (0, 0);
        let mut last = LastWrites(&mut s);
        while pos < LEN {
            calls += 1;
            let (r, slice) = last.write(out.slice(pos..)).await;
            out = slice.into_inner();
            pos += r.unwrap();
        }
        // The close as a shard makes it: queued when the socket drops, in
        // the kernel when the runtime next waits.
        drop(s);
        monoio::time::sleep(std::time::Duration::from_millis(10)).await;
        calls
    }

    /// `LastWrites` when the kernel cannot take the write at once (short
    /// writes, would-blocks): every byte still arrives, in order, then a
    /// FIN.
    fn check(calls: usize, reader: std::thread::JoinHandle<io::Result<Vec<u8>>>) {
        let got = reader.join().unwrap().expect("no FIN after the data");
        assert!(
            calls > 1,
            "the write went at once: nothing short was tested"
        );
        assert_eq!(got.len(), LEN);
        assert!(got == data(), "bytes altered or reordered");
    }

    #[test]
    fn a_short_last_write_still_delivers_everything_io_uring() {
        let (addr, reader) = late_reader();
        let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let calls = rt.block_on(write_through_a_small_buffer(addr));
        check(calls, reader);
    }

    #[test]
    fn a_short_last_write_still_delivers_everything_epoll() {
        let (addr, reader) = late_reader();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let calls = rt.block_on(write_through_a_small_buffer(addr));
        check(calls, reader);
    }
}
