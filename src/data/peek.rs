//! Non-blocking looks at a socket's receive queue that read nothing.
//!
//! Two users: the upstream pool looks at an idle connection before it
//! carries a request (closed by the backend? bytes nobody asked for?), and
//! the shard's tick looks at a client whose response has been awaited for
//! a while (gone? see `deadline.rs` and `proto::exchange::client_gone`).
//! Each look is one system call, made only where those callers decide.

use std::os::fd::RawFd;

use crate::proto::exchange::Peek;

/// `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte.
pub fn peek(fd: RawFd) -> Peek {
    let mut b = 0u8;
    // SAFETY: `fd` is an open socket of the caller; one byte into `b`.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut b as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Peek::Eof,
        n if n > 0 => Peek::Unread,
        _ => match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Peek::Idle,
            _ => Peek::Error,
        },
    }
}

/// Whether the peer's end of stream (FIN), a reset or an error is queued,
/// even behind unread bytes (`poll(POLLRDHUP)` with no wait).
pub fn read_hup(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// A connected loopback pair.
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// Waits (bounded) until `f` holds; the kernel delivers loopback
    /// segments asynchronously.
    fn eventually(f: impl Fn() -> bool) -> bool {
        for _ in 0..200 {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn peek_sees_idle_eof_and_unread_bytes() {
        let (a, b) = pair();
        assert_eq!(peek(a.as_raw_fd()), Peek::Idle);
        assert!(!read_hup(a.as_raw_fd()));
        (&b).write_all(b"x").unwrap();
        assert!(eventually(|| peek(a.as_raw_fd()) == Peek::Unread));
        assert!(!read_hup(a.as_raw_fd()), "bytes alone are not an end");
        // Bytes, then the end of stream behind them.
        b.shutdown(Shutdown::Write).unwrap();
        assert!(eventually(|| read_hup(a.as_raw_fd())));
        assert_eq!(peek(a.as_raw_fd()), Peek::Unread);
        let (a, b) = pair();
        drop(b);
        assert!(eventually(|| peek(a.as_raw_fd()) == Peek::Eof));
        assert!(read_hup(a.as_raw_fd()));
    }
}
