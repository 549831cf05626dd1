//! Zero-copy body relay: socket → pipe → socket with `splice(2)`.
//!
//! A large body between two plain TCP sockets spends most of the proxy's
//! CPU in copies: the kernel copies it into the receive buffer's pages
//! (`recv`), the relay copies it into the output buffer, and the kernel
//! copies it again into the client socket's pages (`send`). Measured on the
//! 1 MiB shape, those copies were over half of ringlb's CPU per request.
//! `splice` moves page references instead: from the upstream socket into a
//! pipe, and from the pipe into the client socket, without the bytes
//! entering user space.
//!
//! Where it applies ([`wanted`]): both sides plain TCP (TLS needs the bytes
//! in user space), a body delimited by `Content-Length` (the count is the
//! framing check: exactly that many bytes are spliced, never more, so a
//! backend sending more than it announced leaves the surplus in its socket,
//! where the pool's peek sees it and drops the connection), with at least
//! [`SPLICE_MIN`] bytes still to move and nothing left in the receive
//! buffer. Chunked and close-delimited bodies, small bodies and TLS keep
//! the copying relay (`io.rs`).
//!
//! The splices are plain non-blocking system calls made by the shard
//! itself, not io_uring `SPLICE` operations: the kernel runs those in an
//! io-wq worker thread (a thread switch per call). While a body is spliced
//! both sockets are put in non-blocking mode (restored afterwards, and no
//! other operation runs on them meanwhile), and the relay waits for
//! readiness with the connection's deadlines: the read limit while it waits
//! for the source, the write limit while the destination is full.
//!
//! Pipes belong to the shard, not to connections: at most [`PIPES_MAX`]
//! open (more large bodies at once are copied), at most [`PIPE_POOL_MAX`]
//! kept empty for reuse. An idle connection holds none, and a pipe that
//! still holds bytes after a failure is closed, never reused.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use monoio::net::TcpStream;

use super::deadline::{Elapsed, Shut, Timer};
use super::io::{relay, write_counted, Body, Pipe, RelayError};

/// Bodies with fewer bytes left than this are copied: setting up a splice
/// (two mode changes per socket, readiness waits) only pays on large ones,
/// and the 16–64 KiB shapes stay on the measured copying path.
pub const SPLICE_MIN: u64 = 256 * 1024;
/// Most bytes one read of a response head takes: a large body mostly stays
/// in the kernel, to be spliced rather than copied, while a head with a
/// 16 KiB body still arrives in one read (and a 64 KiB one in two, as
/// with a full buffer).
pub const HEAD_READ: usize = 32 * 1024;
/// Pipe capacity asked for (the kernel may grant less; then the default).
const PIPE_BYTES: i32 = 1 << 20;
/// Most idle pipes a shard keeps.
const PIPE_POOL_MAX: usize = 16;
/// Most pipes a shard has open at once (each costs two descriptors, which
/// the connection limit does not count): more large bodies at the same
/// time are copied.
const PIPES_MAX: usize = 64;
/// Splice steps in a row without waiting before the relay yields to the
/// shard's other connections.
const STEPS_BEFORE_YIELD: u32 = 16;

/// Whether the rest of a body is spliced: the pure decision (see the
/// module docs). `plain` is whether both sockets are plain TCP, `left` the
/// bytes still to move of a `Content-Length` body (`None` for other
/// framings), `buffered` the body bytes still in the receive buffer.
pub fn wanted(plain: bool, left: Option<u64>, buffered: usize) -> bool {
    plain && buffered == 0 && left.is_some_and(|l| l >= SPLICE_MIN)
}

/// A pipe for splicing: both ends non-blocking.
struct SplicePipe {
    r: RawFd,
    w: RawFd,
    /// Bytes it can hold.
    cap: usize,
}

impl SplicePipe {
    fn new() -> io::Result<SplicePipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let [r, w] = fds;
        // Closed by `Drop` if sizing fails.
        OPEN.with(|n| n.set(n.get() + 1));
        let mut p = SplicePipe { r, w, cap: 0 };
        // SAFETY: plain fcntls on descriptors we own.
        let mut cap = unsafe { libc::fcntl(w, libc::F_SETPIPE_SZ, PIPE_BYTES) };
        if cap <= 0 {
            cap = unsafe { libc::fcntl(w, libc::F_GETPIPE_SZ) };
        }
        if cap <= 0 {
            return Err(io::Error::last_os_error());
        }
        p.cap = cap as usize;
        Ok(p)
    }
}

impl Drop for SplicePipe {
    fn drop(&mut self) {
        OPEN.with(|n| n.set(n.get() - 1));
        // SAFETY: we own both descriptors.
        unsafe {
            libc::close(self.r);
            libc::close(self.w);
        }
    }
}

thread_local! {
    static PIPES: RefCell<Vec<SplicePipe>> = const { RefCell::new(Vec::new()) };
    /// Pipes of this shard that are open (pooled or in use).
    static OPEN: Cell<usize> = const { Cell::new(0) };
}

fn take_pipe() -> Option<SplicePipe> {
    if let Some(p) = PIPES.with(|p| p.borrow_mut().pop()) {
        return Some(p);
    }
    if OPEN.with(Cell::get) >= PIPES_MAX {
        return None;
    }
    SplicePipe::new().ok()
}

/// Returns an empty pipe to the shard's pool (closed if the pool is full).
fn give_back(p: SplicePipe) {
    PIPES.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < PIPE_POOL_MAX {
            pool.push(p);
        }
    });
}

/// Idle pipes this shard keeps (for tests).
pub fn pooled_pipes() -> usize {
    PIPES.with(|p| p.borrow().len())
}

/// Puts a socket in non-blocking mode for as long as it lives, then
/// restores its flags (a socket already non-blocking, as under the epoll
/// driver, is left alone).
struct NonBlocking {
    fd: RawFd,
    old: Option<libc::c_int>,
}

impl NonBlocking {
    fn set(fd: RawFd) -> io::Result<NonBlocking> {
        // SAFETY: fcntl on a socket the caller keeps open.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK != 0 {
            return Ok(NonBlocking { fd, old: None });
        }
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NonBlocking {
            fd,
            old: Some(flags),
        })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        if let Some(flags) = self.old {
            // SAFETY: as in `set`; the socket is still open (the guard
            // lives inside the relay that borrows it).
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, flags) };
        }
    }
}

/// One non-blocking splice of up to `len` bytes; `Ok(None)` = would block.
fn splice_once(from: RawFd, to: RawFd, len: usize) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: no offsets (sockets and pipes); descriptors are open.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

/// Lets the shard's other tasks run once.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// [`relay`] between two plain sockets: sends `out`, then splices the
/// rest of a large `Content-Length` body ([`wanted`]); anything else (or
/// no pipe to be had) goes through the copying relay. Same contract as
/// [`relay`]: `written` counts the bytes handed to the destination, `body`
/// is left with what was not moved.
pub async fn relay_plain(
    p: Pipe<'_, TcpStream, TcpStream>,
    out: Vec<u8>,
    body: &mut Body,
    done: bool,
    written: &mut u64,
) -> (Result<(), RelayError>, Vec<u8>) {
    let left = match body {
        Body::Length(l) if !done => Some(*l),
        _ => None,
    };
    if !wanted(true, left, p.sbuf.len()) {
        return relay(p, out, body, done, written).await;
    }
    let Some(pipe) = take_pipe() else {
        return relay(p, out, body, done, written).await;
    };
    let (r, n, mut out) = write_counted(p.dst, p.dst_fd, out, p.timer, p.write_limit).await;
    *written += n as u64;
    out.clear();
    if let Err(e) = r {
        give_back(pipe);
        return (Err(e), out);
    }
    let Body::Length(left) = body else {
        unreachable!("checked above")
    };
    let r = splice_body(&p, &pipe, left, written).await;
    match r {
        Ok(0) => give_back(pipe),
        // Bytes still in the pipe: it is closed, never reused.
        Ok(_) | Err(_) => drop(pipe),
    }
    (r.map(|_| ()), out)
}

/// The outcome of a readiness wait under a deadline, as one side's
/// timeout or I/O error.
fn waited(
    r: (io::Result<()>, Result<(), Elapsed>),
    timer: &Timer,
    timeout: RelayError,
    failed: fn(io::Error) -> RelayError,
) -> Result<(), RelayError> {
    match r {
        (_, Err(_)) if timer.client_gone() => Err(RelayError::ClientGone),
        (_, Err(_)) => Err(timeout),
        (Err(e), Ok(())) => Err(failed(e)),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Moves `*left` bytes from `p.src` to `p.dst` through `pipe`. Returns the
/// bytes left in the pipe (0 on success).
async fn splice_body(
    p: &Pipe<'_, TcpStream, TcpStream>,
    pipe: &SplicePipe,
    left: &mut u64,
    written: &mut u64,
) -> Result<usize, RelayError> {
    let _src_nb = NonBlocking::set(p.src_fd).map_err(RelayError::SrcIo)?;
    let _dst_nb = NonBlocking::set(p.dst_fd).map_err(RelayError::DstIo)?;
    let mut in_pipe = 0usize;
    // Why the source stopped early (end of stream or an error); what it
    // sent before is still delivered.
    let mut src_end: Option<RelayError> = None;
    let mut steps = 0u32;
    loop {
        let mut moved = false;
        if *left > 0 && src_end.is_none() && in_pipe < pipe.cap {
            let want = (*left).min((pipe.cap - in_pipe) as u64) as usize;
            match splice_once(p.src_fd, pipe.w, want) {
                Ok(Some(0)) => src_end = Some(RelayError::SrcEof),
                Ok(Some(n)) => {
                    *left -= n as u64;
                    in_pipe += n;
                    moved = true;
                }
                Ok(None) => {}
                Err(e) => src_end = Some(RelayError::SrcIo(e)),
            }
        }
        if in_pipe > 0 {
            match splice_once(pipe.r, p.dst_fd, in_pipe) {
                Ok(Some(n)) => {
                    in_pipe -= n;
                    *written += n as u64;
                    moved |= n > 0;
                }
                Ok(None) => {}
                Err(e) => return Err(RelayError::DstIo(e)),
            }
        }
        if in_pipe == 0 {
            if let Some(e) = src_end {
                return Err(e);
            }
            if *left == 0 {
                return Ok(0);
            }
        }
        if moved {
            steps += 1;
            if steps >= STEPS_BEFORE_YIELD {
                steps = 0;
                YieldNow(false).await;
            }
            continue;
        }
        steps = 0;
        // Blocked: bytes in the pipe wait for the destination (the source
        // may be blocked only by the full pipe); an empty pipe waits for
        // the source.
        if in_pipe > 0 {
            let r = p
                .timer
                .run(p.dst_fd, Shut::Both, p.write_limit, p.dst.writable(false))
                .await;
            waited(r, p.timer, RelayError::DstTimeout, RelayError::DstIo)?;
        } else {
            let wait = p.src.readable(false);
            let r = p
                .timer
                .run_watched(p.src_fd, Shut::Read, p.read_limit, p.watch, wait)
                .await;
            waited(r, p.timer, RelayError::SrcTimeout, RelayError::SrcIo)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_bodies_are_spliced() {
        // (both plain, Content-Length left, buffered bytes) → spliced?
        let table: &[(bool, Option<u64>, usize, bool)] = &[
            (true, Some(SPLICE_MIN), 0, true),
            (true, Some(1 << 30), 0, true),
            // Small bodies stay on the copying path.
            (true, Some(SPLICE_MIN - 1), 0, false),
            (true, Some(0), 0, false),
            // TLS on either side: the bytes must pass through user space.
            (false, Some(1 << 20), 0, false),
            // Chunked or close-delimited: no count to splice exactly.
            (true, None, 0, false),
            // Body bytes already buffered go out first by copying.
            (true, Some(1 << 20), 1, false),
        ];
        for &(plain, left, buffered, want) in table {
            assert_eq!(
                wanted(plain, left, buffered),
                want,
                "{plain} {left:?} {buffered}"
            );
        }
    }

    #[test]
    fn pipes_hold_at_least_a_default_pipe_and_pool_is_bounded() {
        let p = SplicePipe::new().expect("pipe");
        assert!(p.cap >= 64 * 1024, "capacity {}", p.cap);
        drop(p);
        for _ in 0..PIPE_POOL_MAX + 3 {
            give_back(SplicePipe::new().expect("pipe"));
        }
        assert_eq!(pooled_pipes(), PIPE_POOL_MAX);
        assert_eq!(OPEN.with(Cell::get), PIPE_POOL_MAX);
    }

    #[test]
    fn open_pipes_are_bounded() {
        let mut held = Vec::new();
        while let Some(p) = take_pipe() {
            held.push(p);
            assert!(held.len() <= PIPES_MAX);
        }
        assert_eq!(held.len(), PIPES_MAX);
        drop(held.pop());
        assert!(take_pipe().is_some(), "a closed pipe frees its place");
    }
}
