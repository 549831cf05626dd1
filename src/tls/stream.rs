//! A TLS stream on monoio: rustls' sans-IO connection state (server or
//! client side) driven by monoio's rent-style (owned-buffer) I/O, on the
//! calling thread (a shard, or the health thread for upstream probes).
//!
//! Why an in-repo adapter and not `monoio-rustls`: that crate trails
//! rustls releases and has been idle since 2024, and what it does is small
//! — feed ciphertext to `read_tls`, run `process_new_packets`, copy
//! plaintext out of `reader()`, and push `write_tls` output to the socket.
//! Owning it lets the handshake be classified for metrics
//! ([`crate::tls::failure`]), bounded by the connection's coarse deadline
//! like every other operation, and split for an upgraded tunnel or a
//! streamed upload without unsafe aliasing.
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
use std::ops::DerefMut;

use rustls::client::ClientConnectionData;
use rustls::server::ServerConnectionData;
use rustls::{ClientConnection, ConnectionCommon, HandshakeKind, ServerConnection};

/// Ciphertext read buffer: one full TLS record (16 KiB + overhead).
const RX_BUF: usize = 16 * 1024 + 512;
/// Most ciphertext gathered before it is written out.
const TX_CHUNK: usize = 64 * 1024;

/// A rustls connection of either side (the record layer is the same).
pub trait Conn: DerefMut<Target = ConnectionCommon<Self::Data>> {
    type Data;
}

impl Conn for ServerConnection {
    type Data = ServerConnectionData;
}

impl Conn for ClientConnection {
    type Data = ClientConnectionData;
}

/// Access to the rustls state without holding a borrow across `.await`.
pub trait Session {
    type C: Conn;
    fn with<R>(&mut self, f: impl FnOnce(&mut Self::C) -> R) -> R;
}

impl<C: Conn> Session for Box<C> {
    type C = C;
    #[inline]
    fn with<R>(&mut self, f: impl FnOnce(&mut C) -> R) -> R {
        f(self)
    }
}

/// The halves of a split stream share the state.
pub type Shared<C> = Rc<RefCell<C>>;

impl<C: Conn> Session for Shared<C> {
    type C = C;
    #[inline]
    fn with<R>(&mut self, f: impl FnOnce(&mut C) -> R) -> R {
        f(&mut self.borrow_mut())
    }
}

/// A TLS stream over `IO` (a socket, or one half of it).
pub struct TlsStream<IO, S> {
    pub(crate) io: IO,
    pub(crate) sess: S,
    /// Ciphertext read from the socket; `rx[rx_pos..]` not yet fed to rustls.
    pub(crate) rx: Vec<u8>,
    pub(crate) rx_pos: usize,
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
    pub(crate) fn new(io: IO, sess: S) -> Self {
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
    pub(crate) fn feed(&mut self) -> Result<(), FeedError> {
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

pub(crate) enum FeedError {
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
    pub(crate) async fn fill(&mut self) -> io::Result<bool> {
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
}

/// The socket side a TLS stream reads from. Processing input can queue
/// records to send back: the `no_renegotiation` alert for a TLS 1.2
/// peer's renegotiation request, the answer to a TLS 1.3 key update. A
/// whole socket sends them before it waits for more input (else a peer
/// waiting for them, as `openssl s_client` after `R`, hangs until a
/// timeout); a read half cannot, and its write half sends them with its
/// next write.
pub trait ReadIo: AsyncReadRent + Sized {
    fn send_queued<S: Session>(
        s: &mut TlsStream<Self, S>,
    ) -> impl std::future::Future<Output = io::Result<()>>;
}

impl ReadIo for TcpStream {
    async fn send_queued<S: Session>(s: &mut TlsStream<Self, S>) -> io::Result<()> {
        if s.sess.with(|c| c.wants_write()) {
            s.flush_tls().await?;
        }
        Ok(())
    }
}

impl ReadIo for OwnedReadHalf<TcpStream> {
    async fn send_queued<S: Session>(_: &mut TlsStream<Self, S>) -> io::Result<()> {
        Ok(())
    }
}

impl<IO: ReadIo, S: Session> TlsStream<IO, S> {
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
                // Records already queued (session tickets held back at the
                // end of the handshake, see `data::tls::accept`) go with
                // the next write, and so does anything this input adds to
                // them (a TLS 1.3 key update answer may wait for our next
                // record by design).
                let held = self.sess.with(|c| c.wants_write());
                if let Err(e) = self.feed() {
                    return (Err(e.into_io()), buf);
                }
                if !held {
                    if let Err(e) = IO::send_queued(self).await {
                        return (Err(e), buf);
                    }
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

impl<IO, S: Session> TlsStream<IO, S> {
    /// Writes every record rustls has queued through `io` (the stream's
    /// own socket, or a wrapper of it), at most about `chunk` bytes per
    /// write. `usize::MAX`: all of them in one write, for a writer that
    /// ends the stream after a write it sent whole (`data::io::LastWrites`).
    pub(crate) async fn flush_through<W: AsyncWriteRent>(
        sess: &mut S,
        txbuf: &mut Vec<u8>,
        io: &mut W,
        chunk: usize,
    ) -> io::Result<()> {
        loop {
            let mut tx = std::mem::take(txbuf);
            tx.clear();
            let more = sess.with(|c| {
                while c.wants_write() && tx.len() < chunk {
                    c.write_tls(&mut tx)?;
                }
                Ok::<_, io::Error>(c.wants_write())
            });
            let more = match more {
                Ok(m) => m,
                Err(e) => {
                    *txbuf = tx;
                    return Err(e);
                }
            };
            if tx.is_empty() {
                *txbuf = tx;
                return Ok(());
            }
            let (r, tx) = io.write_all(tx).await;
            *txbuf = tx;
            r?;
            if !more {
                return Ok(());
            }
        }
    }

    /// Hands the plaintext in `buf` to rustls, which queues its records
    /// (written by the next flush); returns how much of it rustls took.
    pub(crate) fn encrypt<T: IoBuf>(&mut self, buf: &T) -> io::Result<usize> {
        // SAFETY: `buf` owns `bytes_init()` initialised bytes at `read_ptr()`.
        let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        self.sess.with(|c| c.writer().write(src))
    }

    /// The socket, the rustls state and the output buffer, apart.
    pub(crate) fn parts(&mut self) -> (&mut IO, &mut S, &mut Vec<u8>) {
        (&mut self.io, &mut self.sess, &mut self.tx)
    }
}

impl<IO: AsyncWriteRent, S: Session> TlsStream<IO, S> {
    /// Writes every record rustls has queued.
    pub(crate) async fn flush_tls(&mut self) -> io::Result<()> {
        let (io, sess, tx) = self.parts();
        Self::flush_through(sess, tx, io, TX_CHUNK).await
    }

    async fn write_plain<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let n = match self.encrypt(&buf) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        match self.flush_tls().await {
            Ok(()) => (Ok(n), buf),
            Err(e) => (Err(e), buf),
        }
    }
}

impl<IO: ReadIo, S: Session> AsyncReadRent for TlsStream<IO, S> {
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

impl<S: Session> TlsStream<TcpStream, S> {
    /// The socket (for a readiness wait while the connection is idle).
    pub fn get_ref(&self) -> &TcpStream {
        &self.io
    }

    /// Ciphertext not yet fed to rustls, or plaintext not yet read: a read
    /// would return without waiting for the socket.
    pub fn has_buffered(&mut self) -> bool {
        self.rx_pos < self.rx.len()
            || self.sess.with(
                |c| !matches!(c.process_new_packets(), Ok(s) if s.plaintext_bytes_to_read() == 0),
            )
    }

    /// Whether the client sent bytes this stream holds and nobody read:
    /// ciphertext not yet fed to rustls, or plaintext it decrypted. Unlike
    /// [`has_buffered`](Self::has_buffered) it processes nothing (a compare
    /// and a look at rustls' plaintext queue), so it may be asked per
    /// request.
    pub fn holds_unread(&mut self) -> bool {
        self.rx_pos < self.rx.len()
            || self
                .sess
                .with(|c| matches!(c.reader().into_first_chunk(), Ok(chunk) if !chunk.is_empty()))
    }

    /// Frees both ciphertext buffers when they hold nothing still needed
    /// (an idle keep-alive connection; the next read or write allocates
    /// again). Between flushes `tx` only holds bytes already written
    /// (`flush_tls` writes all of it or fails), so it always goes.
    pub fn release_idle(&mut self) {
        if self.rx_pos >= self.rx.len() {
            self.rx = Vec::new();
            self.rx_pos = 0;
        }
        self.tx = Vec::new();
    }
}

impl<S> AsRawFd for TlsStream<TcpStream, S> {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

/// The read half of a split stream of either side.
pub type TlsRead<C> = TlsStream<OwnedReadHalf<TcpStream>, Shared<C>>;
/// The write half of a split stream of either side.
pub type TlsWrite<C> = TlsStream<OwnedWriteHalf<TcpStream>, Shared<C>>;
/// The read half of a split server stream.
pub type ReadHalf = TlsRead<ServerConnection>;
/// The write half of a split server stream.
pub type WriteHalf = TlsWrite<ServerConnection>;

impl<C: Conn> TlsStream<TcpStream, Box<C>> {
    /// Splits for a tunnel or a streamed upload: each half keeps its own
    /// buffers; unread ciphertext goes with the read half.
    pub fn into_split(self) -> (TlsRead<C>, TlsWrite<C>) {
        let (r, w) = self.io.into_split();
        let shared: Shared<C> = Rc::new(RefCell::new(*self.sess));
        let mut rd = TlsStream::new(r, Rc::clone(&shared));
        rd.rx = self.rx;
        rd.rx_pos = self.rx_pos;
        rd.eof = self.eof;
        let mut wr = TlsStream::new(w, shared);
        wr.tx = self.tx;
        (rd, wr)
    }

    /// Whether nothing is buffered or pending on the stream beyond what
    /// was read: no unread ciphertext or plaintext, no end of stream seen.
    /// A pooled upstream connection must be clean (the socket peek sees
    /// only what is still in the kernel).
    pub fn is_clean(&mut self) -> bool {
        if self.eof || self.rx_pos < self.rx.len() {
            return false;
        }
        self.sess.with(|c| {
            let mut probe = [0u8; 1];
            matches!(
                c.reader().read(&mut probe),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            )
        })
    }
}

impl<C: Conn> TlsRead<C> {
    /// The whole stream back from its halves (`None` if they are not of
    /// one stream, or a half is still shared elsewhere).
    pub fn reunite(self, w: TlsWrite<C>) -> Option<TlsStream<TcpStream, Box<C>>> {
        let io = self.io.reunite(w.io).ok()?;
        drop(w.sess);
        let conn = Rc::try_unwrap(self.sess).ok()?.into_inner();
        let mut s = TlsStream::new(io, Box::new(conn));
        s.rx = self.rx;
        s.rx_pos = self.rx_pos;
        s.eof = self.eof;
        s.tx = w.tx;
        Some(s)
    }
}

/// A TLS stream to an upstream server.
pub type ClientStream = TlsStream<TcpStream, Box<ClientConnection>>;

/// Why a handshake with an upstream server failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The socket failed or closed mid-handshake.
    Io,
    /// rustls refused: the certificate did not verify, no common
    /// parameters, or the server sent an alert.
    Tls(rustls::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Io => f.write_str("connection closed"),
            ConnectError::Tls(e) => f.write_str(&super::upstream::explain(e)),
        }
    }
}

/// Runs the client side of a handshake on `io` (the caller bounds it in
/// time). Returns the stream and whether the session was resumed.
pub async fn connect(
    io: TcpStream,
    conn: ClientConnection,
) -> Result<(ClientStream, bool), ConnectError> {
    let mut s = TlsStream::new(io, Box::new(conn));
    loop {
        s.flush_tls().await.map_err(|_| ConnectError::Io)?;
        if !s.sess.is_handshaking() {
            break;
        }
        if s.rx_pos >= s.rx.len() {
            match s.fill().await {
                Ok(true) => {}
                Ok(false) | Err(_) => return Err(ConnectError::Io),
            }
        }
        match s.feed() {
            Ok(()) => {}
            Err(FeedError::Io(_)) => return Err(ConnectError::Io),
            Err(FeedError::Tls(e)) => {
                // Send the alert rustls queued, then give up.
                let _ = s.flush_tls().await;
                return Err(ConnectError::Tls(e));
            }
        }
    }
    // The client's last flight (Finished) goes out with the first request.
    let resumed = s.sess.handshake_kind() == Some(HandshakeKind::Resumed);
    Ok((s, resumed))
}
