//! The client side of a connection: a plain socket or a TLS stream.
//!
//! An enum rather than a type parameter on the whole connection code, so
//! `conn/` is compiled once; a plaintext connection pays one predictable
//! branch per read or write (nothing allocated, nothing shared).
//!
//! An idle keep-alive connection waits with [`ClientStream::readable`]
//! (after [`ClientStream::has_buffered`] said nothing is pending), so no
//! receive buffer is lent to the kernel while the client says nothing.

use std::os::fd::{AsRawFd, RawFd};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use monoio::BufResult;

use super::tls::{ReadHalf, ServerStream, WriteHalf};

pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<ServerStream>),
}

pub enum ClientRead {
    Plain(OwnedReadHalf<TcpStream>),
    Tls(Box<ReadHalf>),
}

pub enum ClientWrite {
    Plain(OwnedWriteHalf<TcpStream>),
    Tls(Box<WriteHalf>),
}

impl ClientStream {
    /// Waits until the socket is readable (an io_uring poll: no buffer is
    /// lent to the kernel while the client is idle).
    pub async fn readable(&self) -> std::io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.readable(true).await,
            ClientStream::Tls(s) => s.get_ref().readable(true).await,
        }
    }

    /// Bytes already received and not yet read (TLS: decrypted plaintext
    /// or ciphertext buffered in the stream), so a read would not wait.
    pub fn has_buffered(&mut self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            ClientStream::Tls(s) => s.has_buffered(),
        }
    }

    /// Bytes the client sent that the stream holds past the socket (TLS:
    /// plaintext or ciphertext not read yet); cheap, unlike
    /// [`has_buffered`](Self::has_buffered).
    pub fn holds_unread(&mut self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            ClientStream::Tls(s) => s.holds_unread(),
        }
    }

    /// Frees the stream's own buffers while the connection is idle (TLS:
    /// its ciphertext buffers, when empty).
    pub fn release_idle(&mut self) {
        if let ClientStream::Tls(s) = self {
            s.release_idle();
        }
    }

    /// Whether an idle connection's stream can wait outside its task as
    /// its socket (and TLS session): nothing buffered or pending.
    pub fn is_idle(&mut self) -> bool {
        match self {
            ClientStream::Plain(_) => true,
            ClientStream::Tls(s) => s.parkable(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// Splits for an upgraded tunnel.
    pub fn into_split(self) -> (ClientRead, ClientWrite) {
        match self {
            ClientStream::Plain(s) => {
                let (r, w) = s.into_split();
                (ClientRead::Plain(r), ClientWrite::Plain(w))
            }
            ClientStream::Tls(s) => {
                let (r, w) = s.into_split();
                (ClientRead::Tls(Box::new(r)), ClientWrite::Tls(Box::new(w)))
            }
        }
    }
}

impl AsRawFd for ClientStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            ClientStream::Plain(s) => s.as_raw_fd(),
            ClientStream::Tls(s) => s.as_raw_fd(),
        }
    }
}

impl AsyncReadRent for ClientStream {
    #[inline]
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.read(buf).await,
            ClientStream::Tls(s) => s.read(buf).await,
        }
    }

    #[inline]
    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.readv(buf).await,
            ClientStream::Tls(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for ClientStream {
    #[inline]
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.write(buf).await,
            ClientStream::Tls(s) => s.write(buf).await,
        }
    }

    #[inline]
    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.writev(buf).await,
            ClientStream::Tls(s) => s.writev(buf).await,
        }
    }

    #[inline]
    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush().await,
            ClientStream::Tls(s) => s.flush().await,
        }
    }

    #[inline]
    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.shutdown().await,
            ClientStream::Tls(s) => s.shutdown().await,
        }
    }
}

impl AsyncReadRent for ClientRead {
    #[inline]
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientRead::Plain(s) => s.read(buf).await,
            ClientRead::Tls(s) => s.read(buf).await,
        }
    }

    #[inline]
    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientRead::Plain(s) => s.readv(buf).await,
            ClientRead::Tls(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for ClientWrite {
    #[inline]
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientWrite::Plain(s) => s.write(buf).await,
            ClientWrite::Tls(s) => s.write(buf).await,
        }
    }

    #[inline]
    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientWrite::Plain(s) => s.writev(buf).await,
            ClientWrite::Tls(s) => s.writev(buf).await,
        }
    }

    #[inline]
    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            ClientWrite::Plain(s) => s.flush().await,
            ClientWrite::Tls(s) => s.flush().await,
        }
    }

    #[inline]
    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            ClientWrite::Plain(s) => s.shutdown().await,
            ClientWrite::Tls(s) => s.shutdown().await,
        }
    }
}
