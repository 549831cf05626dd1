//! TLS on a shard: the listener side of [`crate::tls::stream`] — the
//! bounded, classified and counted handshake, and what a connection
//! learns from it (client subject, version and cipher).

use std::future::Future;
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::buf::{IoBuf, IoVecBuf};
use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::{HandshakeKind, ServerConnection};

use crate::tls::failure::{classify, is_plain_http, plain_head_end, HANDSHAKE_RECORD};
pub use crate::tls::stream::*;
use crate::tls::{Failure, ListenerTls};

use super::deadline::{Shut, Timer};
use super::io::LastWrites;

/// A header field (name, value) a connection keeps for all its requests.
pub type OwnedField = (Box<[u8]>, Option<Box<[u8]>>);

/// What an idle TLS connection keeps while parked outside its task
/// (`idle.rs`): the rustls session (keys, sequence numbers, its own
/// buffers) and what the connection learnt from the handshake. The
/// stream's ciphertext buffers are not kept (they are empty).
pub struct ParkedTls {
    pub sess: Box<ServerConnection>,
    pub subject: Option<OwnedField>,
    pub desc: Option<(&'static str, &'static str)>,
}

/// Splits a [`ServerStream::parkable`] stream into its socket and session
/// (its empty ciphertext buffers are dropped).
pub fn park(s: ServerStream) -> (TcpStream, Box<ServerConnection>) {
    (s.io, s.sess)
}

/// The stream of a parked connection, back from its socket and session.
pub fn unpark(io: TcpStream, sess: Box<ServerConnection>) -> ServerStream {
    TlsStream::new(io, sess)
}

/// How long a closing connection may take to send its close_notify.
const CLOSE_NOTIFY_TIME: Duration = Duration::from_secs(1);

/// A TLS client connection that closes right after these writes: its
/// last records and its close_notify leave with the FIN in one packet (the
/// plain socket's [`LastWrites`]). Without it a short response took three
/// packets (the records, then close_notify, then a bare FIN), each woken
/// for at the client.
pub struct TlsLastWrites<'a>(pub &'a mut ServerStream);

impl AsyncWriteRent for TlsLastWrites<'_> {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let n = match self.0.encrypt(&buf) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        let r = if n < buf.bytes_init() {
            // rustls took part of it (its buffer limit): more writes
            // follow, so these records leave as any others do.
            self.0.flush_tls().await
        } else {
            // The last of it, and close_notify after it (the connection's
            // close then sends nothing more), all in one write: `LastWrites`
            // ends the stream once a write has left whole.
            let (io, sess, tx) = self.0.parts();
            sess.with(|c| c.send_close_notify());
            ServerStream::flush_through(sess, tx, &mut LastWrites(io), usize::MAX).await
        };
        (r.map(|()| n), buf)
    }

    fn writev<T: IoVecBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.0.writev(buf)
    }

    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> {
        self.0.flush()
    }

    fn shutdown(&mut self) -> impl Future<Output = std::io::Result<()>> {
        self.0.shutdown()
    }
}

impl ServerStream {
    /// Whether this idle stream can be parked as its socket and session:
    /// nothing buffered or pending either way (no ciphertext or plaintext
    /// unread, no record waiting to be written).
    pub fn parkable(&mut self) -> bool {
        !self.has_buffered() && !self.sess.wants_write() && !self.sess.is_handshaking()
    }

    /// Tells the client the close is deliberate, not a truncation: sends
    /// close_notify, best effort, within [`CLOSE_NOTIFY_TIME`] of the
    /// connection's `timer` (a stalled client is shut down instead).
    pub async fn close_notify(&mut self, timer: &Timer) {
        let fd = self.as_raw_fd();
        let send = async {
            self.sess.with(|c| c.send_close_notify());
            let _ = self.flush_tls().await;
        };
        let _ = timer.run(fd, Shut::Both, CLOSE_NOTIFY_TIME, send).await;
    }

    /// The start of a lingering close: close_notify (the client knows the
    /// response is whole), then the socket itself to drain. The drain
    /// reads the socket, not through rustls: what arrives is discarded
    /// anyway, and a read dropped mid-way (an upload cut short by an early
    /// response) may have taken part of a record, after which nothing
    /// would decrypt and the close would turn into a reset.
    pub async fn linger_socket(&mut self, timer: &Timer) -> &mut TcpStream {
        self.close_notify(timer).await;
        &mut self.io
    }

    /// Mutual TLS: the field carrying the verified client certificate's
    /// subject to backends (name, RFC 4514 value), computed once here
    /// after the handshake, never per request. On a `client_ca` listener
    /// the field is there even without a certificate (value `None`): then
    /// the client's own copies are still removed, so a backend never takes
    /// a client-written subject for a verified one.
    pub fn client_subject_field(&mut self, tls: &ListenerTls) -> Option<OwnedField> {
        let name = tls.client_subject_header.as_deref()?;
        let value = self.sess.with(|c| {
            let leaf = c.peer_certificates()?.first()?;
            crate::tls::subject::of_certificate(leaf)
        });
        Some((name.as_bytes().into(), value.map(|v| v.into_bytes().into())))
    }

    /// The negotiated protocol version and cipher suite as the access
    /// log writes them (nginx's `$ssl_protocol`, and rustls' suite name),
    /// read once per connection: static strings, nothing allocated.
    pub fn describe(&mut self) -> (&'static str, &'static str) {
        self.sess.with(|c| {
            let version = match c.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "-",
            };
            let suite = c
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("-");
            (version, suite)
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
        if !s.sess.is_handshaking() {
            // What the client's last flight left queued: in TLS 1.3 the
            // session tickets. When the client's first request came with
            // that flight, they wait for the response and leave in its
            // packet (`hold_tickets`).
            if !hold_tickets(&mut s) {
                s.flush_tls().await.map_err(|_| Some(Failure::Closed))?;
            }
            break;
        }
        s.flush_tls().await.map_err(|_| Some(Failure::Closed))?;
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
            if first.is_none() && s.rx[0] != HANDSHAKE_RECORD && is_plain_http(&s.rx) {
                answer_plain_http(s).await;
                return Err(Some(Failure::NotTls));
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

/// Whether the records queued at the end of a handshake (TLS 1.3 session
/// tickets: nothing the client waits for) stay queued until the first
/// response instead of leaving now: only when the client's first request
/// is already here, so the response follows at once. Sent now they would
/// be a packet of their own, and a wake-up of a client that is waiting for
/// its response (about 1 in 4 packets of a short HTTPS connection). A
/// client still to send its request gets them now, as a client opening
/// more connections at once needs them to resume. Not in TLS 1.2, where
/// they are part of the handshake the client waits for.
fn hold_tickets(s: &mut ServerStream) -> bool {
    let v13 = s.sess.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
    v13 && s.holds_unread()
}

/// The most of a plain-HTTP request head read before answering it.
const PLAIN_HEAD_MAX: usize = 16 * 1024;

/// A plain-HTTP request on a TLS listener: read its head (so the close is
/// a FIN, not a reset that could destroy the answer), answer the plaintext
/// `400` nginx answers, and close. Bounded in time by the handshake's
/// deadline like the handshake itself.
async fn answer_plain_http(s: ServerStream) {
    use monoio::buf::IoBufMut;
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    let mut io = s.io;
    let mut buf = s.rx;
    while plain_head_end(&buf).is_none() && buf.len() < PLAIN_HEAD_MAX {
        buf.reserve(4096);
        let len = buf.len();
        let (r, b) = io.read(buf.slice_mut(len..)).await;
        buf = b.into_inner();
        if !matches!(r, Ok(n) if n > 0) {
            return;
        }
    }
    buf.clear();
    crate::proto::http1::encode::encode_plain_http_on_tls(&mut buf, &super::date::current());
    // Dropping the socket then closes it (a FIN: the head was read).
    let _ = io.write_all(buf).await;
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
