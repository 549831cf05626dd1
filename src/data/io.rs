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

use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent};

use super::buf::{ReadError, RecvBuf};
use super::deadline::{ClientWatch, Shut, Timer};
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
}

impl Body {
    pub fn chunked(dechunk: bool) -> Body {
        Body::Chunked {
            dec: ChunkedDecoder::new(),
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
            Err(ReadError::Eof) if matches!(body, Body::Close) => return (Ok(()), out),
            Err(ReadError::Eof) => return (Err(RelayError::SrcEof), out),
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
