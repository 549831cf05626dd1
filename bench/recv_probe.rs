//! What a multishot receive with a provided-buffer ring would save per
//! keep-alive request, against the one-RECV-per-request pattern ringlb's
//! runtime issues: a bare keep-alive responder on a raw ring, in two modes
//! that differ only in how requests are received, measured side by side with
//! `bench/recv_probe.sh` (on-CPU time per request from schedstat, as
//! `bench/compare.sh` measures proxies).
//!
//! | mode        | receive                                                   |
//! |-------------|-----------------------------------------------------------|
//! | `single`    | one RECV into the connection's own buffer per request (the kernel tries once, finds nothing, arms a poll, retries on wake-up) |
//! | `pollfirst` | the same RECV with `IORING_RECVSEND_POLL_FIRST` (no first try) |
//! | `multishot` | one multishot RECV per connection, armed once; each request lands in a buffer taken from a provided-buffer ring and given back after parsing |
//!
//! Usage: `recv_probe MODE ADDR`; it serves until killed. Every request gets
//! the same small keep-alive response; a request must arrive in one read
//! (wrk's do).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Type: text/plain\r\n\r\nhello\n";
const BUF: usize = 4096;
/// Buffers in the provided ring (a power of two).
const RING_BUFS: u16 = 1024;
const GROUP: u16 = 7;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Single,
    PollFirst,
    Multishot,
}

#[derive(Clone, Copy)]
enum Kind {
    Accept = 1,
    Recv,
    Send,
}

fn tag(kind: Kind, conn: usize) -> u64 {
    ((kind as u64) << 56) | conn as u64
}

fn untag(data: u64) -> (u64, usize) {
    (data >> 56, (data & ((1 << 56) - 1)) as usize)
}

struct Conn {
    fd: i32,
    buf: Box<[u8; BUF]>,
}

/// The provided-buffer ring: entries the kernel takes buffers from, and the
/// buffers themselves.
struct BufRing {
    entries: *mut types::BufRingEntry,
    bufs: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring) -> io::Result<BufRing> {
        let size = RING_BUFS as usize * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: a fresh anonymous mapping, page-aligned as the kernel asks.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            entries: mem.cast(),
            bufs: vec![0; RING_BUFS as usize * BUF],
            tail: 0,
        };
        // SAFETY: the mapping lives as long as the process.
        unsafe {
            ring.submitter()
                .register_buf_ring(mem as u64, RING_BUFS, GROUP)?
        };
        for bid in 0..RING_BUFS {
            br.give(bid);
        }
        Ok(br)
    }

    fn buf(&self, bid: u16) -> &[u8] {
        &self.bufs[bid as usize * BUF..][..BUF]
    }

    /// Hands buffer `bid` back to the kernel.
    fn give(&mut self, bid: u16) {
        let idx = (self.tail & (RING_BUFS - 1)) as usize;
        // SAFETY: idx < RING_BUFS, inside the mapping.
        let e = unsafe { &mut *self.entries.add(idx) };
        e.set_addr(self.bufs[bid as usize * BUF..].as_ptr() as u64);
        e.set_len(BUF as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field of the ring's first entry; a release store
        // so the kernel sees the entry before the new tail.
        unsafe {
            let tail =
                types::BufRingEntry::tail(self.entries) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }
}

struct Probe {
    ring: IoUring,
    mode: Mode,
    listen_fd: i32,
    conns: Vec<Option<Conn>>,
    bufs: Option<BufRing>,
    served: u64,
}

impl Probe {
    fn push(&mut self, sqe: squeue::Entry) {
        // SAFETY: every buffer an entry points to (a connection's `buf`, the
        // static response, the provided ring) outlives the operation:
        // connections are never freed while the probe runs (their fd is
        // closed, the slot kept).
        while unsafe { self.ring.submission().push(&sqe) }.is_err() {
            self.ring.submit().expect("io_uring_enter");
        }
    }

    fn arm_accept(&mut self) {
        let sqe = opcode::Accept::new(
            types::Fd(self.listen_fd),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .build();
        self.push(sqe.user_data(tag(Kind::Accept, 0)));
    }

    fn read(&mut self, i: usize) {
        let conn = self.conns[i].as_mut().expect("open connection");
        let fd = types::Fd(conn.fd);
        let sqe = match self.mode {
            Mode::Multishot => opcode::RecvMulti::new(fd, GROUP).build(),
            Mode::Single => opcode::Recv::new(fd, conn.buf.as_mut_ptr(), BUF as u32).build(),
            Mode::PollFirst => {
                let mut sqe = opcode::Recv::new(fd, conn.buf.as_mut_ptr(), BUF as u32).build();
                // IORING_RECVSEND_POLL_FIRST sits in ioprio; the crate's
                // builder has no setter for it in 0.6.
                set_ioprio(&mut sqe, 1);
                sqe
            }
        };
        self.push(sqe.user_data(tag(Kind::Recv, i)));
    }

    fn close(&mut self, i: usize) {
        if let Some(conn) = self.conns[i].take() {
            // SAFETY: the connection's own descriptor, closed once.
            unsafe { libc::close(conn.fd) };
        }
    }

    fn complete(&mut self, data: u64, res: i32, flags: u32) {
        let (kind, i) = untag(data);
        match kind {
            1 => {
                if res >= 0 {
                    let conn = Conn {
                        fd: res,
                        buf: Box::new([0; BUF]),
                    };
                    self.conns.push(Some(conn));
                    let c = self.conns.len() - 1;
                    self.read(c);
                }
                self.arm_accept();
            }
            2 => {
                if self.conns[i].is_none() {
                    if let (Some(bid), Some(b)) = (cqueue::buffer_select(flags), self.bufs.as_mut())
                    {
                        b.give(bid);
                    }
                    return;
                }
                let whole = if res > 0 {
                    let data: &[u8] = match (self.mode, cqueue::buffer_select(flags)) {
                        (Mode::Multishot, Some(bid)) => self.bufs.as_ref().expect("ring").buf(bid),
                        _ => &self.conns[i].as_ref().expect("open").buf[..],
                    };
                    data[..res as usize].windows(4).any(|w| w == b"\r\n\r\n")
                } else {
                    false
                };
                if let (Some(bid), Some(b)) = (cqueue::buffer_select(flags), self.bufs.as_mut()) {
                    b.give(bid);
                }
                if !whole {
                    self.close(i);
                    return;
                }
                self.served += 1;
                let fd = self.conns[i].as_ref().expect("open").fd;
                let send =
                    opcode::Send::new(types::Fd(fd), RESPONSE.as_ptr(), RESPONSE.len() as u32)
                        .build()
                        .user_data(tag(Kind::Send, i));
                self.push(send);
                if self.mode == Mode::Multishot && !cqueue::more(flags) {
                    self.read(i); // the kernel ended the multishot (e.g. no buffer): re-arm
                }
            }
            3 => {
                if res < 0 {
                    self.close(i);
                } else if self.mode != Mode::Multishot && self.conns[i].is_some() {
                    self.read(i);
                }
            }
            _ => {}
        }
    }

    fn run(&mut self) -> io::Result<()> {
        self.arm_accept();
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

/// Sets an SQE's `ioprio` field (where RECV's flags live).
fn set_ioprio(sqe: &mut squeue::Entry, ioprio: u16) {
    // SAFETY: squeue::Entry is repr(C) over io_uring_sqe, whose layout is
    // fixed by the kernel ABI: opcode u8, flags u8, ioprio u16, ...
    unsafe {
        let p = (sqe as *mut squeue::Entry)
            .cast::<u8>()
            .add(2)
            .cast::<u16>();
        p.write_unaligned(ioprio);
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = match args.get(1).map(String::as_str) {
        Some("single") => Mode::Single,
        Some("pollfirst") => Mode::PollFirst,
        Some("multishot") => Mode::Multishot,
        _ => {
            eprintln!("usage: recv_probe single|pollfirst|multishot ADDR");
            std::process::exit(2);
        }
    };
    let Some(addr) = args.get(2).and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: recv_probe single|pollfirst|multishot ADDR");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(addr)?;
    socket2::SockRef::from(&listener).set_nodelay(true)?;
    let ring = IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_single_issuer()
        .build(4096)?;
    let bufs = if mode == Mode::Multishot {
        Some(BufRing::new(&ring)?)
    } else {
        None
    };
    let mut probe = Probe {
        ring,
        mode,
        listen_fd: listener.as_raw_fd(),
        conns: Vec::new(),
        bufs,
        served: 0,
    };
    eprintln!("recv_probe {} on {addr}", args[1]);
    let r = probe.run();
    eprintln!("served {}", probe.served);
    r
}
