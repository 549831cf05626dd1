//! Writes with a deadline, and the body relay shared by both directions.
//!
//! A body is relayed in "absorb, then write" steps: whatever body bytes are
//! buffered are moved into the output buffer (head first, when there is
//! one, so a small message leaves in a single write), then more is read.
//! The same code moves request bodies client → upstream and response bodies
//! upstream → client; only the framing and the timeouts differ.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::buf::{ReadError, RecvBuf};
use super::deadline::{Shut, Timer};
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
}

/// Writes all of `out` within `limit`; gives the buffer back.
pub async fn write_all(
    dst: &mut TcpStream,
    out: Vec<u8>,
    timer: &Timer,
    limit: Duration,
) -> (Result<(), RelayError>, Vec<u8>) {
    if out.is_empty() {
        return (Ok(()), out);
    }
    let fd = dst.as_raw_fd();
    match timer.run(fd, Shut::Both, limit, dst.write_all(out)).await {
        ((_, out), Err(_)) => (Err(RelayError::DstTimeout), out),
        ((Ok(_), out), Ok(())) => (Ok(()), out),
        ((Err(e), out), Ok(())) => (Err(RelayError::DstIo(e)), out),
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

/// Sends `out` (which may already hold a head and body bytes), then relays
/// the rest of `body` from `src` to `dst`. `out` is returned for reuse.
/// For a `Close` body, the source closing is the normal end. `written`
/// is increased by the bytes handed to `dst`.
#[allow(clippy::too_many_arguments)]
pub async fn relay(
    src: &mut TcpStream,
    sbuf: &mut RecvBuf,
    dst: &mut TcpStream,
    mut out: Vec<u8>,
    body: &mut Body,
    mut done: bool,
    timer: &Timer,
    read_limit: Duration,
    write_limit: Duration,
    written: &mut u64,
) -> (Result<(), RelayError>, Vec<u8>) {
    loop {
        *written += out.len() as u64;
        let (r, o) = write_all(dst, out, timer, write_limit).await;
        out = o;
        out.clear();
        if let Err(e) = r {
            return (Err(e), out);
        }
        if done {
            return (Ok(()), out);
        }
        match sbuf.fill(src, timer, read_limit).await {
            Ok(_) => {}
            Err(ReadError::Eof) if matches!(body, Body::Close) => return (Ok(()), out),
            Err(ReadError::Eof) => return (Err(RelayError::SrcEof), out),
            Err(ReadError::Timeout) => return (Err(RelayError::SrcTimeout), out),
            Err(ReadError::Io(e)) => return (Err(RelayError::SrcIo(e)), out),
        }
        match body.absorb(sbuf, &mut out) {
            Ok(d) => done = d,
            Err(e) => return (Err(RelayError::Malformed(e)), out),
        }
    }
}
