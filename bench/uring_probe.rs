//! What io_uring features monoio 0.2.4 does not expose would save per
//! connection: a bare `Connection: close` responder on a raw ring, in modes
//! that differ by one feature each, measured side by side with
//! `bench/uring_probe.sh` (on-CPU time per request from schedstat, as
//! `bench/compare.sh` measures proxies).
//!
//! ringlb runs on monoio, whose operations are crate-private: multishot
//! accept, registered (direct) descriptors and linked operations would mean
//! patching or replacing the runtime. This probe measures first what they
//! are worth for the one shape where per-connection costs dominate (a TCP
//! connection per request), without a backend, so only the client side's
//! ring operations differ between modes:
//!
//! | mode        | accept                  | descriptors | after the response            |
//! |-------------|-------------------------|-------------|-------------------------------|
//! | `ringlike`  | 64 single-shot in flight | plain fds   | POLL_ADD before RECV; CLOSE + ASYNC_CANCEL after SEND (monoio's pattern) |
//! | `single`    | 64 single-shot in flight | plain fds   | CLOSE after SEND completes    |
//! | `pollaccept`| one POLL_ADD on the listener, then `accept4(2)` until EAGAIN | plain fds | CLOSE after SEND completes |
//! | `multishot` | one multishot accept    | plain fds   | CLOSE after SEND completes    |
//! | `sidering`  | one multishot accept on a second ring, its completions signalled through an eventfd read on the first | plain fds | CLOSE after SEND completes |
//! | `fixed`     | one multishot accept    | direct (registered) | CLOSE after SEND completes |
//! | `linked`    | one multishot accept    | direct      | SEND linked to CLOSE, one submission |
//!
//! Usage: `uring_probe MODE ADDR` (e.g. `uring_probe fixed 127.0.0.1:18090`);
//! it serves until killed. Every request gets the same small response with
//! `Connection: close`; a request must arrive in one read (wrk's do).
//! `PROBE_ACCEPTS=N` sets how many single-shot accepts stay in flight.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\nhello\n";
const ACCEPTS_IN_FLIGHT: usize = 64;
const FIXED_SLOTS: u32 = 16_384;
const BUF: usize = 4096;
/// Marks an accept completion taken from the side ring (a flag bit the
/// kernel does not use in CQEs).
const MULTISHOT_VIA_SIDE: u32 = 1 << 31;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    RingLike,
    Single,
    PollAccept,
    Multishot,
    SideRing,
    Fixed,
    Linked,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "ringlike" => Mode::RingLike,
            "single" => Mode::Single,
            "pollaccept" => Mode::PollAccept,
            "multishot" => Mode::Multishot,
            "sidering" => Mode::SideRing,
            "fixed" => Mode::Fixed,
            "linked" => Mode::Linked,
            _ => return None,
        })
    }
    fn multishot(self) -> bool {
        matches!(self, Mode::Multishot | Mode::Fixed | Mode::Linked)
    }
    fn fixed(self) -> bool {
        matches!(self, Mode::Fixed | Mode::Linked)
    }
}

/// What a completion is for: the operation in the top byte, the connection
/// below.
#[derive(Clone, Copy)]
enum Kind {
    Accept = 1,
    Poll,
    Recv,
    Send,
    Close,
    Cancel,
    Event,
}

fn tag(kind: Kind, conn: usize) -> u64 {
    ((kind as u64) << 56) | conn as u64
}

fn untag(data: u64) -> (Option<Kind>, usize) {
    let kind = match data >> 56 {
        1 => Kind::Accept,
        2 => Kind::Poll,
        3 => Kind::Recv,
        4 => Kind::Send,
        5 => Kind::Close,
        6 => Kind::Cancel,
        7 => Kind::Event,
        _ => return (None, 0),
    };
    (Some(kind), (data & ((1 << 56) - 1)) as usize)
}

struct Conn {
    fd: i32,
    buf: Box<[u8; BUF]>,
}

/// `sidering`: the accept ring and the eventfd its completions bump.
struct Side {
    ring: IoUring,
    efd: i32,
    count: Box<u64>,
}

struct Probe {
    ring: IoUring,
    side: Option<Side>,
    mode: Mode,
    listen_fd: i32,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    served: u64,
}

impl Probe {
    fn push(&mut self, sqe: squeue::Entry) {
        // SAFETY: every buffer an entry points to (a connection's `buf`,
        // the static response) outlives the operation: a connection is
        // freed only when its CLOSE completes, after its RECV and SEND.
        while unsafe { self.ring.submission().push(&sqe) }.is_err() {
            self.ring.submit().expect("io_uring_enter");
        }
    }

    fn target(&self, fd: i32) -> (types::Fd, types::Fixed, bool) {
        (types::Fd(fd), types::Fixed(fd as u32), self.mode.fixed())
    }

    fn arm_accept(&mut self) {
        if let Some(side) = &mut self.side {
            let sqe = opcode::AcceptMulti::new(types::Fd(self.listen_fd)).build();
            // SAFETY: no buffer involved.
            unsafe {
                side.ring
                    .submission()
                    .push(&sqe.user_data(tag(Kind::Accept, 0)))
            }
            .expect("side ring has room");
            side.ring.submit().expect("io_uring_enter (side)");
            return;
        }
        let sqe = if self.mode == Mode::PollAccept {
            opcode::PollAdd::new(types::Fd(self.listen_fd), libc::POLLIN as u32).build()
        } else if self.mode.multishot() {
            opcode::AcceptMulti::new(types::Fd(self.listen_fd))
                .allocate_file_index(self.mode.fixed())
                .build()
        } else {
            opcode::Accept::new(
                types::Fd(self.listen_fd),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
            .build()
        };
        self.push(sqe.user_data(tag(Kind::Accept, 0)));
    }

    fn new_conn(&mut self, fd: i32) -> usize {
        let conn = Conn {
            fd,
            buf: Box::new([0; BUF]),
        };
        match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(conn);
                i
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        }
    }

    fn read(&mut self, i: usize) {
        let conn = self.conns[i].as_mut().expect("open connection");
        let (ptr, raw) = (conn.buf.as_mut_ptr(), conn.fd);
        let (fd, fixed, is_fixed) = self.target(raw);
        let sqe = if is_fixed {
            opcode::Recv::new(fixed, ptr, BUF as u32).build()
        } else {
            opcode::Recv::new(fd, ptr, BUF as u32).build()
        };
        self.push(sqe.user_data(tag(Kind::Recv, i)));
    }

    fn wait_readable(&mut self, i: usize) {
        let fd = self.conns[i].as_ref().expect("open connection").fd;
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build();
        self.push(sqe.user_data(tag(Kind::Poll, i)));
    }

    fn respond(&mut self, i: usize) {
        let fd = self.conns[i].as_ref().expect("open connection").fd;
        let (plain, fixed, is_fixed) = self.target(fd);
        let send = if is_fixed {
            opcode::Send::new(fixed, RESPONSE.as_ptr(), RESPONSE.len() as u32).build()
        } else {
            opcode::Send::new(plain, RESPONSE.as_ptr(), RESPONSE.len() as u32).build()
        };
        if self.mode == Mode::Linked {
            // The close runs right after the send, in the same submission;
            // the send's completion is not needed.
            self.push(
                send.user_data(tag(Kind::Send, i))
                    .flags(squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS),
            );
            self.close(i);
        } else {
            self.push(send.user_data(tag(Kind::Send, i)));
        }
    }

    fn close(&mut self, i: usize) {
        let fd = self.conns[i].as_ref().expect("open connection").fd;
        let sqe = if self.mode.fixed() {
            opcode::Close::new(types::Fixed(fd as u32)).build()
        } else {
            opcode::Close::new(types::Fd(fd)).build()
        };
        self.push(sqe.user_data(tag(Kind::Close, i)));
        if self.mode == Mode::RingLike {
            // monoio drops its close operation at once, which cancels it.
            let cancel = opcode::AsyncCancel::new(tag(Kind::Close, i)).build();
            self.push(cancel.user_data(tag(Kind::Cancel, i)));
        }
    }

    fn complete(&mut self, data: u64, res: i32, flags: u32) {
        let (kind, i) = untag(data);
        let Some(kind) = kind else { return };
        match kind {
            Kind::Accept if self.mode == Mode::PollAccept => {
                // Readable: take every queued connection, then wait again.
                loop {
                    // SAFETY: accept4 on the listener's fd, no address wanted.
                    let fd = unsafe {
                        libc::accept4(
                            self.listen_fd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_CLOEXEC,
                        )
                    };
                    if fd < 0 {
                        break;
                    }
                    let c = self.new_conn(fd);
                    self.read(c);
                }
                self.arm_accept();
            }
            Kind::Accept => {
                assert!(
                    res != -libc::EINVAL,
                    "accept: EINVAL (multishot accept needs Linux 5.19+)"
                );
                if res >= 0 {
                    let c = self.new_conn(res);
                    if self.mode == Mode::RingLike {
                        self.wait_readable(c);
                    } else {
                        self.read(c);
                    }
                }
                let from_side = flags & MULTISHOT_VIA_SIDE != 0;
                if (!self.mode.multishot() && !from_side) || !cqueue::more(flags) {
                    self.arm_accept();
                }
            }
            Kind::Poll => self.read(i),
            Kind::Recv => {
                let conn = self.conns[i].as_ref().expect("open connection");
                if res > 0
                    && conn.buf[..res as usize]
                        .windows(4)
                        .any(|w| w == b"\r\n\r\n")
                {
                    self.served += 1;
                    self.respond(i);
                } else {
                    self.close(i);
                }
            }
            Kind::Send => {
                // Linked: only a failed send completes (SKIP_SUCCESS), and
                // its linked close is cancelled: close again.
                if self.mode != Mode::Linked || res < 0 {
                    self.close(i);
                }
            }
            Kind::Close => {
                if res == -libc::ECANCELED {
                    return; // the linked close after a failed send: re-issued above
                }
                self.conns[i] = None;
                self.free.push(i);
            }
            Kind::Cancel => {} // finds nothing: the close ran inline
            Kind::Event => {
                let side = self.side.as_mut().expect("sidering");
                let done: Vec<(i32, u32)> = side
                    .ring
                    .completion()
                    .map(|c| (c.result(), c.flags()))
                    .collect();
                for (res, flags) in done {
                    self.complete(tag(Kind::Accept, 0), res, flags | MULTISHOT_VIA_SIDE);
                }
                self.wait_event();
            }
        }
    }

    fn wait_event(&mut self) {
        let side = self.side.as_mut().expect("sidering");
        let sqe = opcode::Read::new(
            types::Fd(side.efd),
            (&mut *side.count as *mut u64).cast(),
            8,
        )
        .build();
        self.push(sqe.user_data(tag(Kind::Event, 0)));
    }

    fn run(&mut self) -> io::Result<()> {
        if self.side.is_some() {
            self.wait_event();
        }
        let first = if self.mode.multishot() || self.mode == Mode::PollAccept {
            1
        } else {
            // PROBE_ACCEPTS: how many single-shot accepts to keep in flight.
            std::env::var("PROBE_ACCEPTS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(ACCEPTS_IN_FLIGHT)
        };
        for _ in 0..first {
            self.arm_accept();
        }
        let mut done = Vec::with_capacity(256);
        loop {
            self.ring.submit_and_wait(1)?;
            done.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for (data, res, flags) in done.drain(..) {
                self.complete(data, res, flags);
            }
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(addr)) = (
        args.get(1).and_then(|m| Mode::parse(m)),
        args.get(2).and_then(|a| a.parse::<SocketAddr>().ok()),
    ) else {
        eprintln!("usage: uring_probe ringlike|single|pollaccept|multishot|fixed|linked ADDR");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(addr)?;
    // `pollaccept` drains the queue with accept4 until EAGAIN.
    listener.set_nonblocking(mode == Mode::PollAccept)?;
    // Accepted sockets inherit it, as ringlb's listeners set it.
    socket2::SockRef::from(&listener).set_nodelay(true)?;
    let ring = IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_single_issuer()
        .build(4096)?;
    if mode.fixed() {
        ring.submitter().register_files_sparse(FIXED_SLOTS)?;
    }
    let side = if mode == Mode::SideRing {
        let side_ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_single_issuer()
            .build(256)?;
        // SAFETY: a new eventfd, owned by the probe for its whole run.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        side_ring.submitter().register_eventfd(efd)?;
        Some(Side {
            ring: side_ring,
            efd,
            count: Box::new(0),
        })
    } else {
        None
    };
    let mut probe = Probe {
        ring,
        side,
        mode,
        listen_fd: listener.as_raw_fd(),
        conns: Vec::new(),
        free: Vec::new(),
        served: 0,
    };
    eprintln!("uring_probe {} on {addr}", args[1]);
    let r = probe.run();
    eprintln!("served {}", probe.served);
    r
}
