//! The upstream side of an exchange: a plain socket or a TLS stream
//! (`[upstream.X] tls = true`), and the connector that makes either.
//!
//! Like [`super::client_stream`], an enum rather than a type parameter, so
//! the exchange code is compiled once; a plain upstream pays one
//! predictable branch per read or write. The TLS handshake runs inside
//! `connect_timeout` (what nginx's `proxy_connect_timeout` covers too), on
//! the shard, with the upstream's one `ClientConfig` (shared session
//! cache: later connections resume).
//!
//! When `connect_timeout` runs out, where it ran out is part of the answer
//! ([`timed_out`]): before the TCP connect completed, a connect timeout;
//! after, a stalled TLS handshake (a server that accepts and never answers
//! the ClientHello, or stops mid-handshake). Both end the attempt the same
//! way for the client and for the server's passive health, but the second
//! is a TLS problem of that server and is logged and counted as one.

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::ClientConnection;

use super::tls::{ClientStream as TlsClient, ConnectError, TlsRead, TlsWrite};
use crate::tls::upstream::UpstreamTls;

pub enum UpStream {
    Plain(TcpStream),
    Tls(Box<TlsClient>),
}

pub enum UpRead {
    Plain(OwnedReadHalf<TcpStream>),
    Tls(Box<TlsRead<ClientConnection>>),
}

pub enum UpWrite {
    Plain(OwnedWriteHalf<TcpStream>),
    Tls(Box<TlsWrite<ClientConnection>>),
}

/// Why a connection to a server could not be made.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The TCP connect failed (the OS error).
    Tcp(std::io::Error),
    /// The TCP connect took longer than `connect_timeout`.
    Timeout,
    /// TCP connected, but the TLS handshake had not finished when
    /// `connect_timeout` ran out.
    TlsTimeout,
    /// The TLS handshake failed (certificate, name, parameters, alert, or
    /// the server closed mid-handshake).
    Tls(ConnectError),
}

/// A new connection to `addr`: TCP, then TLS when `tls` is set (server
/// `si` of the upstream), all within `limit`. On success, whether a TLS
/// session was resumed (`None`: plain).
///
/// `preamble` (a PROXY header) is written on the TCP connection before the
/// TLS handshake; on a plain connection the caller sends it with the
/// request head instead (one write), so it must be empty then.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<(&UpstreamTls, usize)>,
    preamble: Vec<u8>,
    limit: Duration,
) -> Result<(UpStream, Option<bool>), ConnectFailure> {
    let connected = Cell::new(false);
    let op = async {
        let mut s = TcpStream::connect_addr(addr)
            .await
            .map_err(ConnectFailure::Tcp)?;
        let _ = s.set_nodelay(true);
        let Some((tls, si)) = tls else {
            return Ok((UpStream::Plain(s), None));
        };
        connected.set(true);
        if !preamble.is_empty() {
            let (r, _) = s.write_all(preamble).await;
            r.map_err(ConnectFailure::Tcp)?;
        }
        let name = tls.names[si].clone();
        let conn = ClientConnection::new(std::sync::Arc::clone(&tls.client), name)
            .map_err(|e| ConnectFailure::Tls(ConnectError::Tls(e)))?;
        let (s, resumed) = super::tls::connect(s, conn)
            .await
            .map_err(ConnectFailure::Tls)?;
        Ok((UpStream::Tls(Box::new(s)), Some(resumed)))
    };
    match monoio::time::timeout(limit, op).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(connected.get())),
    }
}

/// What `connect_timeout` running out was: a TLS handshake timeout once
/// the TCP connection of a TLS upstream was made, else a connect timeout.
fn timed_out(tls_started: bool) -> ConnectFailure {
    if tls_started {
        ConnectFailure::TlsTimeout
    } else {
        ConnectFailure::Timeout
    }
}

impl UpStream {
    /// Splits for a streamed upload or a tunnel.
    pub fn into_split(self) -> (UpRead, UpWrite) {
        match self {
            UpStream::Plain(s) => {
                let (r, w) = s.into_split();
                (UpRead::Plain(r), UpWrite::Plain(w))
            }
            UpStream::Tls(s) => {
                let (r, w) = s.into_split();
                (UpRead::Tls(Box::new(r)), UpWrite::Tls(Box::new(w)))
            }
        }
    }

    /// Whether the connection holds nothing beyond the last response (TLS:
    /// no buffered record, no close_notify or end of stream seen), so it
    /// may be pooled; the pool's socket peek covers what is still in the
    /// kernel.
    pub fn is_clean(&mut self) -> bool {
        match self {
            UpStream::Plain(_) => true,
            UpStream::Tls(s) => s.is_clean(),
        }
    }
}

impl UpRead {
    /// The whole stream back from its halves.
    pub fn reunite(self, w: UpWrite) -> Option<UpStream> {
        match (self, w) {
            (UpRead::Plain(r), UpWrite::Plain(w)) => r.reunite(w).ok().map(UpStream::Plain),
            (UpRead::Tls(r), UpWrite::Tls(w)) => r.reunite(*w).map(|s| UpStream::Tls(Box::new(s))),
            _ => None,
        }
    }
}

impl AsRawFd for UpStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            UpStream::Plain(s) => s.as_raw_fd(),
            UpStream::Tls(s) => s.as_raw_fd(),
        }
    }
}

macro_rules! read_impl {
    ($t:ident) => {
        impl AsyncReadRent for $t {
            #[inline]
            async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $t::Plain(s) => s.read(buf).await,
                    $t::Tls(s) => s.read(buf).await,
                }
            }

            #[inline]
            async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $t::Plain(s) => s.readv(buf).await,
                    $t::Tls(s) => s.readv(buf).await,
                }
            }
        }
    };
}

macro_rules! write_impl {
    ($t:ident) => {
        impl AsyncWriteRent for $t {
            #[inline]
            async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $t::Plain(s) => s.write(buf).await,
                    $t::Tls(s) => s.write(buf).await,
                }
            }

            #[inline]
            async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $t::Plain(s) => s.writev(buf).await,
                    $t::Tls(s) => s.writev(buf).await,
                }
            }

            #[inline]
            async fn flush(&mut self) -> std::io::Result<()> {
                match self {
                    $t::Plain(s) => s.flush().await,
                    $t::Tls(s) => s.flush().await,
                }
            }

            #[inline]
            async fn shutdown(&mut self) -> std::io::Result<()> {
                match self {
                    $t::Plain(s) => s.shutdown().await,
                    $t::Tls(s) => s.shutdown().await,
                }
            }
        }
    };
}

read_impl!(UpStream);
read_impl!(UpRead);
write_impl!(UpStream);
write_impl!(UpWrite);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_after_the_tcp_connect_is_a_tls_handshake_timeout() {
        // (TCP connected on a TLS upstream, is a TLS handshake timeout)
        for (tls_started, tls_timeout) in [(false, false), (true, true)] {
            let f = timed_out(tls_started);
            assert_eq!(
                matches!(f, ConnectFailure::TlsTimeout),
                tls_timeout,
                "{f:?}"
            );
            assert_eq!(matches!(f, ConnectFailure::Timeout), !tls_timeout, "{f:?}");
        }
    }
}
