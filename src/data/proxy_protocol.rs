//! The PROXY protocol on the shard: reading a `proxy_protocol` listener's
//! header before anything else on the connection, and the header an
//! upstream with `send_proxy_protocol` gets first on each new connection.
//! The bytes are `proto::proxy_protocol`'s; this is the I/O around them.
//!
//! Reading must not take one byte past the header: the HTTP request, or
//! the TLS ClientHello the rustls adapter reads itself, often arrives in
//! the same segment. So the socket is *peeked* (`recv(MSG_PEEK)`), the
//! bytes parsed, and only the header's bytes taken off the queue: all of
//! them while the header is incomplete (every byte of an incomplete
//! header belongs to it, `proto::proxy_protocol::parse` guarantees that,
//! so the next peek waits for new bytes instead of spinning), exactly its
//! length once complete. A header split over many segments costs one
//! peek and one read per segment. The whole read is bounded by the
//! listener's timeout (`handshake_timeout` on a TLS listener,
//! `client_header_timeout` otherwise) through the connection's deadline.
//!
//! Only `proxy_protocol` listeners come here; others pay one `bool` test
//! per connection.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use monoio::net::TcpStream;

use super::deadline::{Shut, Timer};
use crate::proto::proxy_protocol::{encode, parse, Addrs, Error, Parse, Version, V2_MAX_LEN};

/// What one peek or take on the socket gave.
enum Got {
    Bytes(usize),
    Empty,
    Eof,
}

/// Reads the PROXY header at the start of `stream`, leaving every byte
/// after it unread. `Ok(None)`: a valid header that carries no address
/// (LOCAL, UNKNOWN): keep the socket's own.
pub async fn read_header(
    stream: &TcpStream,
    timer: &Timer,
    limit: Duration,
) -> Result<Option<Addrs>, Error> {
    let fd = stream.as_raw_fd();
    let (r, in_time) = timer
        .run(fd, Shut::Both, limit, read_until_done(stream, fd))
        .await;
    match (r, in_time) {
        (_, Err(_)) => Err(Error::Timeout),
        (r, Ok(())) => r,
    }
}

async fn read_until_done(stream: &TcpStream, fd: RawFd) -> Result<Option<Addrs>, Error> {
    // Header bytes taken off the socket so far, then the peeked ones.
    let mut buf: Vec<u8> = Vec::with_capacity(128);
    loop {
        if buf.len() == buf.capacity() {
            // Bounded: parse() refuses anything longer than V2_MAX_LEN.
            buf.reserve(buf.len().min(V2_MAX_LEN));
        }
        let taken = buf.len();
        match recv(fd, &mut buf, libc::MSG_PEEK) {
            Got::Eof => return Err(Error::Closed),
            Got::Empty => {
                stream.readable(false).await.map_err(|_| Error::Closed)?;
                continue;
            }
            Got::Bytes(_) => {}
        }
        let verdict = parse(&buf)?;
        let header_len = match verdict {
            Parse::Incomplete => buf.len(),
            Parse::Done(h) => h.len,
        };
        // Take exactly the header's bytes (already queued: no wait).
        buf.truncate(taken);
        if !recv_exact(fd, &mut buf, header_len - taken) {
            return Err(Error::Closed);
        }
        if let Parse::Done(h) = verdict {
            return Ok(h.addrs);
        }
    }
}

/// `recv` into `buf`'s spare capacity (non-blocking), with `flags`.
fn recv(fd: RawFd, buf: &mut Vec<u8>, flags: i32) -> Got {
    recv_n(fd, buf, buf.capacity() - buf.len(), flags)
}

/// Takes `n` queued bytes into `buf`; false if fewer were there.
fn recv_exact(fd: RawFd, buf: &mut Vec<u8>, n: usize) -> bool {
    n == 0 || matches!(recv_n(fd, buf, n, 0), Got::Bytes(m) if m == n)
}

fn recv_n(fd: RawFd, buf: &mut Vec<u8>, n: usize, flags: i32) -> Got {
    buf.reserve(n);
    let spare = buf.spare_capacity_mut();
    let n = n.min(spare.len());
    // SAFETY: `fd` is the connection's open socket; at most `n` bytes are
    // written into `buf`'s spare capacity, and only the written ones are
    // marked initialised below.
    let r = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), n, flags | libc::MSG_DONTWAIT) };
    match r {
        0 => Got::Eof,
        r if r > 0 => {
            // SAFETY: the kernel initialised `r` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + r as usize) };
            Got::Bytes(r as usize)
        }
        _ => match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Got::Empty,
            _ => Got::Eof,
        },
    }
}

/// The address a client connected to, for the header sent upstream when
/// no PROXY header said otherwise.
fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: `fd` is a live socket owned by the caller for this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&fd).local_addr().ok()?.as_socket()
}

/// The accept-path hook of a `proxy_protocol` listener: reads the header
/// within the listener's timeout and counts the outcome. `Some((client,
/// destination))`, the socket's own peer when the header carries no
/// address; `None`: close the connection (counted by reason).
pub async fn accept(
    shard: &super::shard::Shard,
    stream: &TcpStream,
    peer: SocketAddr,
    tls: &Option<std::sync::Arc<crate::tls::ListenerTls>>,
    timer: &Timer,
) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let limit = match tls {
        Some(t) => t.handshake_timeout,
        None => shard.view().snap.config.http.client_header_timeout,
    };
    let r = read_header(stream, timer, limit).await;
    shard.rec.borrow_mut().on_proxy_protocol(r.map(|_| ()));
    match r {
        Ok(Some(a)) => Some((a.src, Some(a.dst))),
        Ok(None) => Some((peer, None)),
        Err(e) => {
            crate::warn!(
                "{peer}: PROXY protocol header {}: connection closed",
                e.label()
            );
            None
        }
    }
}

/// Appends the header an upstream with `send_proxy_protocol = v` gets
/// first on a new connection: from the client `src` (possibly carried by
/// a PROXY header in front) to the address it connected to — `dst` when a
/// PROXY header carried it, else the client socket's (`client_fd`) local
/// address.
///
/// Such a connection then speaks for that one client for its lifetime,
/// so it is never put in the shard's shared pool: it stays private to the
/// client's connection (`conn/`, `Client::private`) and closes with it,
/// as HAProxy does with `send-proxy` connections. Keying the shared pool
/// by client address instead would keep idle connections for clients that
/// have left until their keep-alive timeout, and one client's connections
/// are all it could ever reuse anyway.
pub fn upstream_header(
    v: Version,
    src: SocketAddr,
    dst: Option<SocketAddr>,
    client_fd: RawFd,
    out: &mut Vec<u8>,
) {
    let dst = dst
        .or_else(|| local_addr(client_fd))
        .unwrap_or(SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0));
    encode(v, src, dst, out);
}
