//! TLS on a shard: rustls' sans-IO `ServerConnection` driven by monoio's
//! rent-style (owned-buffer) I/O, on the shard's own thread.
//!
//! Why an in-repo adapter and not `monoio-rustls`: that crate trails
//! rustls releases and has been idle since 2024, and what it does is small
//! — feed ciphertext to `read_tls`, run `process_new_packets`, copy
//! plaintext out of `reader()`, and push `write_tls` output to the socket.
//! Owning it lets the handshake be classified for metrics
//! ([`crate::tls::failure`]), bounded by the connection's coarse deadline
//! like every other operation, and split for an upgraded tunnel without
//! unsafe aliasing.
//!
//! Shape: [`TlsStream`] holds the socket, the rustls state and two reusable
//! ciphertext buffers (one in, one out; allocated once per connection).
//! A read returns plaintext rustls already decrypted, else feeds buffered
//! ciphertext, else reads the socket; a write hands plaintext to rustls and
//! writes every record it produced before returning. The rustls state sits
//! behind [`Session`]: owned (boxed) by a whole stream, `Rc<RefCell<…>>`
//! once split into halves. It is never borrowed across an `.await`, so the
//! two halves of a tunnel run concurrently without aliasing.
//!
//! kTLS later: after the handshake, `dangerous_extract_secrets()` would
//! hand the keys to the kernel and the stream would become a plain socket;
//! nothing outside this file would change.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::{HandshakeKind, ServerConnection};

use crate::tls::failure::{classify, HANDSHAKE_RECORD};
use crate::tls::{Failure, ListenerTls};

/// Ciphertext read buffer: one full TLS record (16 KiB + overhead).
const RX_BUF: usize = 16 * 1024 + 512;
/// Most ciphertext gathered before it is written out.
const TX_CHUNK: usize = 64 * 1024;

/// Access to the rustls state without holding a borrow across `.await`.
pub trait Session {
    fn with<R>(&mut self, f: impl FnOnce(&mut ServerConnection) -> R) -> R;
}

impl Session for Box<ServerConnection> {
    #[inline]
    fn with<R>(&mut self, f: impl FnOnce(&mut ServerConnection) -> R) -> R {
        f(self)
    }
}

/// The halves of a split stream share the state.
pub type Shared = Rc<RefCell<ServerConnection>>;

impl Session for Shared {
    #[inline]
    fn with<R>(&mut self, f: impl FnOnce(&mut ServerConnection) -> R) -> R {
        f(&mut self.borrow_mut())
    }
}

/// A TLS stream over `IO` (a socket, or one half of it).
pub struct TlsStream<IO, S> {
    io: IO,
    sess: S,
    /// Ciphertext read from the socket; `rx[rx_pos..]` not yet fed to rustls.
    rx: Vec<u8>,
    rx_pos: usize,
    /// Records waiting to be written (reused buffer).
    tx: Vec<u8>,
    eof: bool,
}

/// A whole server-side TLS connection.
pub type ServerStream = TlsStream<TcpStream, Box<ServerConnection>>;

/// How a successful handshake went (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub resumed: bool,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<IO, S: Session> TlsStream<IO, S> {
    fn new(io: IO, sess: S) -> Self {
        TlsStream {
            io,
            sess,
            rx: Vec::new(),
            rx_pos: 0,
            tx: Vec::new(),
            eof: false,
        }
    }

    /// Feeds the buffered ciphertext to rustls and processes it.
    fn feed(&mut self) -> Result<(), FeedError> {
        let rx = &self.rx[self.rx_pos..];
        let mut src = rx;
        let r = self.sess.with(|c| {
            c.read_tls(&mut src).map_err(FeedError::Io)?;
            c.process_new_packets().map_err(FeedError::Tls)?;
            Ok(())
        });
        self.rx_pos += rx.len() - src.len();
        r
    }
}

enum FeedError {
    /// rustls' buffers refused the input (a message bigger than any valid
    /// one, or plaintext the application has not read).
    Io(io::Error),
    Tls(rustls::Error),
}

impl FeedError {
    fn into_io(self) -> io::Error {
        match self {
            FeedError::Io(e) => e,
            FeedError::Tls(e) => tls_error(e),
        }
    }
}

impl<IO: AsyncReadRent, S: Session> TlsStream<IO, S> {
    /// Reads more ciphertext from the socket into `rx`. `Ok(false)`: end
    /// of stream (rustls is told).
    async fn fill(&mut self) -> io::Result<bool> {
        let mut rx = std::mem::take(&mut self.rx);
        rx.clear();
        rx.reserve(RX_BUF);
        self.rx_pos = 0;
        let (r, rx) = self.io.read(rx).await;
        self.rx = rx;
        match r {
            Ok(0) => {
                self.eof = true;
                self.sess.with(|c| {
                    let _ = c.read_tls(&mut &[][..]);
                });
                Ok(false)
            }
            Ok(_) => Ok(true),
            Err(e) => Err(e),
        }
    }

    async fn read_plain<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        loop {
            let ptr = buf.write_ptr();
            let len = buf.bytes_total();
            let r = self.sess.with(|c| {
                // SAFETY: `buf` owns `len` writable bytes at `ptr`; rustls
                // only copies plaintext into them (never reads them).
                let dst = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
                c.reader().read(dst)
            });
            match r {
                Ok(n) => {
                    // SAFETY: rustls initialised the first `n` bytes.
                    unsafe { buf.set_init(n) };
                    return (Ok(n), buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: HTTP framing says
                // whether anything was cut, so this is a plain end of stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
            if self.rx_pos < self.rx.len() {
                if let Err(e) = self.feed() {
                    return (Err(e.into_io()), buf);
                }
                continue;
            }
            if self.eof {
                return (Ok(0), buf);
            }
            if let Err(e) = self.fill().await {
                return (Err(e), buf);
            }
        }
    }
}

impl<IO: AsyncWriteRent, S: Session> TlsStream<IO, S> {
    /// Writes every record rustls has queued.
    async fn flush_tls(&mut self) -> io::Result<()> {
        loop {
            let mut tx = std::mem::take(&mut self.tx);
            tx.clear();
            let more = self.sess.with(|c| {
                while c.wants_write() && tx.len() < TX_CHUNK {
                    c.write_tls(&mut tx)?;
                }
                Ok::<_, io::Error>(c.wants_write())
            });
            let more = match more {
                Ok(m) => m,
                Err(e) => {
                    self.tx = tx;
                    return Err(e);
                }
            };
            if tx.is_empty() {
                self.tx = tx;
                return Ok(());
            }
            let (r, tx) = self.io.write_all(tx).await;
            self.tx = tx;
            r?;
            if !more {
                return Ok(());
            }
        }
    }

    async fn write_plain<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `buf` owns `bytes_init()` initialised bytes at `read_ptr()`.
        let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let n = match self.sess.with(|c| c.writer().write(src)) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        match self.flush_tls().await {
            Ok(()) => (Ok(n), buf),
            Err(e) => (Err(e), buf),
        }
    }
}

impl<IO: AsyncReadRent, S: Session> AsyncReadRent for TlsStream<IO, S> {
    fn read<T: IoBufMut>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        self.read_plain(buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer points into `buf`, which outlives the read.
        let Some(raw) = (unsafe { RawBuf::new_from_iovec_mut(&mut buf) }) else {
            return (Ok(0), buf);
        };
        let (r, _) = self.read_plain(raw).await;
        if let Ok(n) = r {
            // SAFETY: `n` bytes of the first iovec were written.
            unsafe { buf.set_init(n) };
        }
        (r, buf)
    }
}

impl<IO: AsyncWriteRent, S: Session> AsyncWriteRent for TlsStream<IO, S> {
    fn write<T: IoBuf>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        self.write_plain(buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer points into `buf`, which outlives the write.
        let Some(raw) = (unsafe { RawBuf::new_from_iovec(&buf) }) else {
            return (Ok(0), buf);
        };
        let (r, _) = self.write_plain(raw).await;
        (r, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.sess.with(|c| c.send_close_notify());
        self.flush_tls().await?;
        self.io.shutdown().await
    }
}

impl<S> AsRawFd for TlsStream<TcpStream, S> {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

/// The read half of a split stream.
pub type ReadHalf = TlsStream<OwnedReadHalf<TcpStream>, Shared>;
/// The write half of a split stream.
pub type WriteHalf = TlsStream<OwnedWriteHalf<TcpStream>, Shared>;

impl ServerStream {
    /// Splits for a tunnel: each half keeps its own buffers; unread
    /// ciphertext goes with the read half.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        let (r, w) = self.io.into_split();
        let shared: Shared = Rc::new(RefCell::new(*self.sess));
        let mut rd = TlsStream::new(r, Rc::clone(&shared));
        rd.rx = self.rx;
        rd.rx_pos = self.rx_pos;
        rd.eof = self.eof;
        let mut wr = TlsStream::new(w, shared);
        wr.tx = self.tx;
        (rd, wr)
    }

    /// Sends close_notify (best effort: the caller bounds it in time).
    pub async fn close_notify(&mut self) {
        self.sess.with(|c| c.send_close_notify());
        let _ = self.flush_tls().await;
    }

    /// Mutual TLS: the field carrying the verified client certificate's
    /// subject to backends (name, RFC 4514 value), computed once here
    /// after the handshake, never per request.
    pub fn client_subject_field(&mut self, tls: &ListenerTls) -> Option<(Box<[u8]>, Box<[u8]>)> {
        let name = tls.client_subject_header.as_deref()?;
        let value = self.sess.with(|c| {
            let leaf = c.peer_certificates()?.first()?;
            crate::tls::subject::of_certificate(leaf)
        })?;
        Some((name.as_bytes().into(), value.into_bytes().into()))
    }

    /// The negotiated protocol version and cipher suite, for logs.
    pub fn describe(&mut self) -> (Option<rustls::ProtocolVersion>, Option<rustls::CipherSuite>) {
        self.sess.with(|c| {
            (
                c.protocol_version(),
                c.negotiated_cipher_suite().map(|s| s.suite()),
            )
        })
    }
}

/// Runs the server side of a handshake on `io`. The caller bounds it in
/// time (the connection deadline shuts the socket down, which ends it with
/// [`Failure::Closed`]; the caller then reports a timeout). `Err(None)`:
/// the client closed before sending a byte (a TCP health check of an L4
/// balancer, a port probe), which is not a failed handshake.
pub async fn accept(
    io: TcpStream,
    tls: &ListenerTls,
) -> Result<(ServerStream, Accepted), Option<Failure>> {
    let conn = ServerConnection::new(std::sync::Arc::clone(&tls.server))
        .map_err(|_| Some(Failure::Other))?;
    let mut s = TlsStream::new(io, Box::new(conn));
    let mut first: Option<u8> = None;
    loop {
        s.flush_tls().await.map_err(|_| Some(Failure::Closed))?;
        if !s.sess.is_handshaking() {
            break;
        }
        if s.rx_pos >= s.rx.len() {
            match s.fill().await {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    return Err(match first {
                        None => None,
                        Some(HANDSHAKE_RECORD) => Some(Failure::Closed),
                        Some(_) => Some(Failure::NotTls),
                    })
                }
            }
            first.get_or_insert(s.rx[0]);
        }
        match s.feed() {
            Ok(()) => {}
            Err(FeedError::Io(_)) => {
                // Larger than any handshake message rustls accepts.
                return Err(Some(if first == Some(HANDSHAKE_RECORD) {
                    Failure::Malformed
                } else {
                    Failure::NotTls
                }));
            }
            Err(FeedError::Tls(e)) => {
                let sni_unknown = s
                    .sess
                    .server_name()
                    .is_some_and(|n| tls.sni.find(n).is_none());
                // Send the alert rustls queued, then give up.
                let _ = s.flush_tls().await;
                return Err(Some(classify(&e, first, sni_unknown)));
            }
        }
    }
    let resumed = s.sess.handshake_kind() == Some(HandshakeKind::Resumed);
    Ok((s, Accepted { resumed }))
}

/// [`accept`] bounded by the listener's `handshake_timeout` on the
/// connection's deadline, counted in the shard's metrics. `None`: the
/// handshake failed (counted by reason) and the connection is done.
pub async fn handshake(
    shard: &super::shard::Shard,
    io: TcpStream,
    tls: &ListenerTls,
    timer: &super::deadline::Timer,
) -> Option<ServerStream> {
    let fd = io.as_raw_fd();
    let started = std::time::Instant::now();
    let (r, in_time) = timer
        .run(
            fd,
            super::deadline::Shut::Both,
            tls.handshake_timeout,
            accept(io, tls),
        )
        .await;
    let mut rec = shard.rec.borrow_mut();
    match (r, in_time) {
        (Ok((s, a)), Ok(())) => {
            rec.on_tls_handshake(a.resumed, started.elapsed().as_micros() as u64);
            Some(s)
        }
        (Ok(_), Err(_)) | (Err(_), Err(_)) => {
            rec.on_tls_failure(Failure::Timeout);
            None
        }
        (Err(why), Ok(())) => {
            if let Some(why) = why {
                rec.on_tls_failure(why);
            }
            None
        }
    }
}
