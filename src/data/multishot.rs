//! Multishot accept: one armed accept per listener on the shard's own
//! io_uring, instead of single-shot accepts.
//!
//! Why: a single-shot accept that completes is submitted again, tried once
//! in line (usually EAGAIN) and armed again (a poll allocation and a
//! wait-queue entry) for every connection. A multishot accept stays armed
//! and takes every queued connection each time it is woken. On a bare
//! `Connection: close` responder that is 14–18% less CPU per connection
//! (`bench/uring_probe.sh`); in ringlb, with `Connection: close` clients,
//! 5–11% less proxy CPU per request than single-shot accepts when it ran
//! on a second ring, and another ~7% since it runs on the shard's own ring
//! (bench/RESULTS.md).
//!
//! How: the runtime's operations complete once, so a multishot accept
//! cannot be one of them. The vendored runtime (`vendor/monoio`, see its
//! `RINGLB.md`) lets us queue a raw entry on the shard's ring and hands
//! every completion whose `user_data` carries `RAW_BIT` to a per-thread
//! handler during its completion loop. The handler only files the
//! completion in this module's inbox and wakes the accept task
//! ([`ready`]); the task takes them with [`MultishotAccept::completions`]. A
//! multishot accept returns no peer address, so each connection costs one
//! `getpeername(2)`.
//!
//! `max_connections` still holds: connections the kernel hands over while
//! the shard is full wait in `pending` (accepted, nothing read), and every
//! accept is cancelled until there is room again, so later clients wait in
//! the kernel's backlog as before.
//!
//! A multishot accept takes the process's `RLIMIT_NOFILE` when it is
//! armed: a limit lowered at run time (`prlimit`) applies from the next
//! arming (after a pause at `max_connections` or an accept error).
//!
//! Kernels before 5.19 have no multishot accept: [`MultishotAccept::new`] finds
//! out with a throwaway loopback listener on a small ring of its own, and
//! the shard keeps its single-shot accept loops (`RINGLB_ACCEPT=loops`
//! forces those).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::task::{Poll, Waker};

use io_uring::{cqueue, opcode, types, IoUring};
use monoio::uring_raw::RAW_BIT;

/// `user_data` of the cancellations (never a listener's token).
const CANCEL: u64 = RAW_BIT | ((1 << 62) - 1);

/// Completions handed over by the runtime's completion loop, and the task
/// waiting for them.
#[derive(Default)]
struct Inbox {
    done: VecDeque<(u64, i32, u32)>,
    waker: Option<Waker>,
}

thread_local! {
    static INBOX: RefCell<Inbox> = RefCell::new(Inbox::default());
}

/// Waits until at least one completion is in the inbox.
pub async fn ready() {
    std::future::poll_fn(|cx| {
        INBOX.with(|i| {
            let mut i = i.borrow_mut();
            if i.done.is_empty() {
                i.waker = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
    })
    .await
}

/// One listener with a multishot accept.
struct Listening {
    addr: SocketAddr,
    listener: TcpListener,
    /// The `user_data` of its multishot accept while that is in the
    /// kernel. Every arming gets a new one, so a late completion of a
    /// cancelled accept is told apart from the current accept's.
    armed: Option<u64>,
}

/// `user_data` of an accept: listener id and arming number.
fn token(id: u64, gen: u64) -> u64 {
    RAW_BIT | ((id & 0x3fff_ffff) << 32) | (gen & 0xffff_ffff)
}

/// What one accept completion asks the shard to do.
pub enum Accepted {
    /// A new connection on the listener bound to `listen`.
    Conn {
        stream: TcpStream,
        peer: SocketAddr,
        listen: SocketAddr,
    },
    /// The listener's accept failed (e.g. EMFILE) and ended; arm it again
    /// after a pause.
    Failed { listen: SocketAddr, err: io::Error },
}

pub struct MultishotAccept {
    listeners: RefCell<HashMap<u64, Listening>>,
    next_id: Cell<u64>,
    next_gen: Cell<u64>,
    /// Accepts are cancelled: the shard is at `max_connections`.
    paused: Cell<bool>,
    /// Accepted while the shard was full; served first when there is room.
    pub pending: RefCell<VecDeque<(TcpStream, SocketAddr, SocketAddr)>>,
}

impl MultishotAccept {
    /// Multishot accepts on the runtime's ring, or why not.
    pub fn new() -> io::Result<MultishotAccept> {
        let mut ring = build_ring()?;
        probe_multishot(&mut ring)?;
        monoio::uring_raw::set_handler(|data, res, flags| {
            INBOX.with(|i| {
                let mut i = i.borrow_mut();
                i.done.push_back((data, res, flags));
                if let Some(w) = i.waker.take() {
                    w.wake();
                }
            })
        });
        Ok(MultishotAccept {
            listeners: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            next_gen: Cell::new(0),
            paused: Cell::new(false),
            pending: RefCell::new(VecDeque::new()),
        })
    }

    /// Starts accepting on `listener` (replacing any listener on `addr`).
    pub fn add(&self, addr: SocketAddr, listener: TcpListener) {
        self.remove(addr);
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.listeners.borrow_mut().insert(
            id,
            Listening {
                addr,
                listener,
                armed: None,
            },
        );
        if !self.paused.get() {
            self.arm(id);
        }
    }

    /// Stops accepting on `addr` and closes its listener at once (its
    /// accept is cancelled first, so the kernel holds no reference to it).
    pub fn remove(&self, addr: SocketAddr) {
        let ids = self.ids(|l| l.addr == addr);
        for &id in &ids {
            self.cancel(id);
        }
        if !ids.is_empty() {
            flush();
        }
        for id in ids {
            self.listeners.borrow_mut().remove(&id);
        }
    }

    /// Stops accepting everywhere: listeners closed, connections accepted
    /// but not yet served closed (draining).
    pub fn remove_all(&self) {
        for id in self.ids(|_| true) {
            self.cancel(id);
        }
        flush();
        self.listeners.borrow_mut().clear();
        self.pending.borrow_mut().clear();
    }

    /// At `max_connections`: cancel every accept; [`resume`](Self::resume)
    /// arms them again.
    pub fn pause(&self) {
        if self.paused.replace(true) {
            return;
        }
        for id in self.ids(|_| true) {
            self.cancel(id);
        }
    }

    pub fn paused(&self) -> bool {
        self.paused.get()
    }

    /// Arms every listener whose accept is not in the kernel.
    pub fn resume(&self) {
        self.paused.set(false);
        for id in self.ids(|l| l.armed.is_none()) {
            self.arm(id);
        }
    }

    /// Arms the accept of listener `addr` again after it failed, unless
    /// the shard is paused (then [`resume`](Self::resume) does).
    pub fn rearm(&self, addr: SocketAddr) {
        if self.paused.get() {
            return;
        }
        for id in self.ids(|l| l.addr == addr && l.armed.is_none()) {
            self.arm(id);
        }
    }

    /// Takes the ring's completions: new connections (with their peer
    /// address) and accepts that ended with an error. An accept that ended
    /// because it was cancelled or ran out of completions is re-armed
    /// here unless paused or removed.
    pub fn completions(&self) -> Vec<Accepted> {
        let done: Vec<(u64, i32, u32)> = INBOX.with(|i| i.borrow_mut().done.drain(..).collect());
        let mut out = Vec::with_capacity(done.len());
        for (data, res, flags) in done {
            if data == CANCEL {
                continue;
            }
            let id = (data & !RAW_BIT) >> 32;
            // The listener, and whether this is its current accept ending.
            let (listen, ended) = match self.listeners.borrow_mut().get_mut(&id) {
                Some(l) => {
                    let ended = l.armed == Some(data) && !cqueue::more(flags);
                    if ended {
                        l.armed = None;
                    }
                    (Some(l.addr), ended)
                }
                None => (None, false),
            };
            if res >= 0 {
                // SAFETY: the kernel gave us this new descriptor.
                let stream = unsafe { TcpStream::from_raw_fd(res) };
                // A removed listener's last connections, or a client gone
                // before we looked (ENOTCONN): closed unanswered.
                if let (Some(listen), Ok(peer)) = (listen, stream.peer_addr()) {
                    out.push(Accepted::Conn {
                        stream,
                        peer,
                        listen,
                    });
                }
            }
            if !ended {
                continue;
            }
            match res {
                // Cancelled (paused or replaced), or stopped by the kernel
                // after a connection: armed again unless paused.
                r if r >= 0 || r == -libc::ECANCELED => {
                    if !self.paused.get() {
                        self.arm(id);
                    }
                }
                // EMFILE and the like: the shard re-arms after a pause.
                r => out.push(Accepted::Failed {
                    listen: listen.expect("ended implies a listener"),
                    err: io::Error::from_raw_os_error(-r),
                }),
            }
        }
        out
    }

    /// The ids of the listeners `keep` selects (collected, so the caller
    /// may change the set while going through them).
    fn ids(&self, keep: impl Fn(&Listening) -> bool) -> Vec<u64> {
        let listeners = self.listeners.borrow();
        listeners
            .iter()
            .filter(|(_, l)| keep(l))
            .map(|(id, _)| *id)
            .collect()
    }

    fn arm(&self, id: u64) {
        let gen = self.next_gen.get();
        self.next_gen.set(gen + 1);
        let data = token(id, gen);
        let fd = {
            let mut ls = self.listeners.borrow_mut();
            let Some(l) = ls.get_mut(&id) else { return };
            if l.armed.is_some() {
                return;
            }
            l.armed = Some(data);
            l.listener.as_raw_fd()
        };
        let sqe = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(data);
        self.submit(sqe);
    }

    fn cancel(&self, id: u64) {
        let armed = match self.listeners.borrow_mut().get_mut(&id) {
            Some(l) => l.armed.take(),
            None => None,
        };
        if let Some(data) = armed {
            self.submit(opcode::AsyncCancel::new(data).build().user_data(CANCEL));
        }
    }

    fn submit(&self, sqe: io_uring::squeue::Entry) {
        // SAFETY: accept and cancel entries point at no user memory.
        if let Err(e) = unsafe { monoio::uring_raw::push(sqe) } {
            crate::warn!("accepts: {e}");
        }
    }
}

/// Hands queued cancellations to the kernel now, before the listeners
/// they stop are closed (otherwise they would go when the shard next waits).
fn flush() {
    if let Err(e) = monoio::uring_raw::submit() {
        crate::warn!("accepts: {e}");
    }
}

fn build_ring() -> io::Result<IoUring> {
    // Only for the probe below.
    IoUring::new(4)
}

/// Whether this kernel has multishot accept (5.19+): arm one on a
/// throwaway loopback listener, then cancel it. An old kernel answers the
/// accept with EINVAL.
fn probe_multishot(ring: &mut IoUring) -> io::Result<()> {
    let probe = TcpListener::bind("127.0.0.1:0")?;
    let accept = opcode::AcceptMulti::new(types::Fd(probe.as_raw_fd()))
        .build()
        .user_data(1);
    let cancel = opcode::AsyncCancel::new(1).build().user_data(CANCEL);
    // SAFETY: neither entry points at user memory.
    unsafe {
        let mut sq = ring.submission();
        sq.push(&accept).map_err(io::Error::other)?;
        sq.push(&cancel).map_err(io::Error::other)?;
    }
    ring.submitter().submit_and_wait(2)?;
    let results: Vec<(u64, i32)> = ring
        .completion()
        .map(|c| (c.user_data(), c.result()))
        .collect();
    match results.iter().find(|(id, _)| *id == 1) {
        Some((_, res)) if *res == -libc::EINVAL => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no multishot accept on this kernel (5.19+)",
        )),
        _ => Ok(()),
    }
}
