//! Idle keep-alive connections parked outside any task.
//!
//! A connection task is about 1.6 KB of boxed state, plus the runtime's
//! per-operation state of its readiness wait: kept for every idle
//! keep-alive client, that was 2 KiB per connection where nginx needs
//! about 0.6. So a plain-text connection that goes idle (and is not a busy
//! client reading its next request directly, see `conn::keepalive`)
//! leaves its task: what must survive until its next request — the socket,
//! the client and destination addresses (the PROXY header's, if any), the
//! listener, its registration with the shard ([`Slot`]: `max_connections`,
//! deadline, draining), the request count and busy streak — moves into this
//! per-shard set as a [`Parked`] value (about 170 bytes), and the task
//! ends, freeing its state.
//!
//! Readiness is awaited by the shard, not per connection: parked sockets
//! sit in one per-shard epoll set (`EPOLLIN | EPOLLRDHUP | EPOLLONESHOT`,
//! the event's data is the slot key and a generation), and one shard task
//! ([`run`]) waits for that epoll descriptor to become readable through the
//! ring (one poll operation for all of them), drains it with
//! `epoll_wait(.., 0)` and starts a fresh connection task per ready socket,
//! which continues with "read the next head" (`conn::spawn_resumed`). The epoll
//! set's own memory is kernel memory, as is nginx's. Per parked connection
//! that is one `epoll_ctl` when it parks; a socket parked before is
//! re-armed with `EPOLL_CTL_MOD` (one-shot left it registered, disabled),
//! and closing it removes it.
//!
//! Everything that ends an idle wait goes through the same event: the
//! keep-alive (or first-request header) deadline is armed on the slot
//! while parked and fired by the tick as for any connection (`deadline.rs`:
//! the socket is shut for reading, so it becomes readable), draining shuts
//! idle sockets the same way (`Shard::close_idle`), and a client that
//! closes makes its socket readable. On an event, a fired deadline or a
//! draining shard closes the connection here (counted as a close from
//! `Waiting`); anything else resumes it, and the resumed task reads the
//! request, or the end of stream, as an in-task wait would have.
//!
//! A TLS connection parks too, when rustls holds nothing unread and has
//! nothing to write: the rustls session moves into the record, boxed
//! ([`super::tls::ParkedTls`]: keys, sequence numbers, rustls' own
//! buffers), with what the handshake told the connection (client subject,
//! version and cipher); the stream's ciphertext buffers are dropped. A
//! parked TLS connection that times out or is drained gets a task again
//! just to send its close_notify (bounded, as from its own task).
//!
//! Not parked (they wait in their task, holding no buffer): new
//! connections before their first request, connections holding private
//! upstream connections (PROXY protocol to upstreams), and any connection
//! with bytes already buffered (TLS: in rustls too) — those never wait at
//! all.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use monoio::net::TcpStream;

use super::shard::{Shard, Slot};
use crate::metrics::ConnState;

/// What survives of an idle connection while it waits outside any task.
pub struct Parked {
    pub fd: OwnedFd,
    pub peer: SocketAddr,
    /// Boxed: only a PROXY-protocol client has one, and a `SocketAddr` is
    /// 32 bytes of every parked record. The listener is not kept here: the
    /// slot's deadline entry names it (`Timer::listen`).
    pub dst: Option<Box<SocketAddr>>,
    pub slot: Slot,
    pub requests: u64,
    pub streak: u32,
    pub idle_since: u64,
    /// A TLS connection's session (boxed: most parked connections are
    /// plain, and this keeps their record small).
    pub tls: Option<Box<super::tls::ParkedTls>>,
}

/// Events taken from the epoll set per `epoll_wait`.
const BATCH: usize = 64;

/// The shard's parked connections: a slab keyed by the epoll events' data.
pub struct ParkedSet {
    ep: OwnedFd,
    /// Per key: its generation (bumped on every take, so a stale event
    /// never resumes another connection) and the parked connection.
    slots: RefCell<Vec<(u32, Option<Parked>)>>,
    free: RefCell<Vec<u32>>,
    len: Cell<usize>,
}

impl ParkedSet {
    pub fn new() -> std::io::Result<ParkedSet> {
        // SAFETY: plain syscall; the result is checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ParkedSet {
            // SAFETY: a fresh descriptor owned by nothing else.
            ep: unsafe { OwnedFd::from_raw_fd(ep) },
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            len: Cell::new(0),
        })
    }

    /// Connections parked now.
    pub fn count(&self) -> usize {
        self.len.get()
    }

    /// Parks `p` until its socket is readable. `rearm`: the socket was
    /// parked before (still registered, disabled). `false`: the kernel
    /// refused, and `p` was dropped (the connection is closed).
    pub fn park(&self, p: Parked, rearm: bool) -> bool {
        let fd = p.fd.as_raw_fd();
        let (key, gen) = {
            let mut slots = self.slots.borrow_mut();
            match self.free.borrow_mut().pop() {
                Some(k) => (k, slots[k as usize].0),
                None => {
                    slots.push((0, None));
                    ((slots.len() - 1) as u32, 0)
                }
            }
        };
        let data = u64::from(key) | (u64::from(gen) << 32);
        if let Err(e) = self.ctl(fd, data, rearm) {
            crate::warn!("parking an idle connection: {e}");
            self.free.borrow_mut().push(key);
            drop(p);
            return false;
        }
        self.slots.borrow_mut()[key as usize].1 = Some(p);
        self.len.set(self.len.get() + 1);
        true
    }

    fn ctl(&self, fd: RawFd, data: u64, rearm: bool) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: data,
        };
        let ep = self.ep.as_raw_fd();
        let mut op = if rearm {
            libc::EPOLL_CTL_MOD
        } else {
            libc::EPOLL_CTL_ADD
        };
        loop {
            // SAFETY: both descriptors are open; `ev` outlives the call.
            if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            op = match (op, e.raw_os_error()) {
                // The registration state was not what the caller thought.
                (libc::EPOLL_CTL_MOD, Some(libc::ENOENT)) => libc::EPOLL_CTL_ADD,
                (libc::EPOLL_CTL_ADD, Some(libc::EEXIST)) if !rearm => libc::EPOLL_CTL_MOD,
                _ => return Err(e),
            };
        }
    }

    /// Takes the connection an event's data names, if it is still parked.
    fn take(&self, data: u64) -> Option<Parked> {
        let (key, gen) = (data as u32, (data >> 32) as u32);
        let mut slots = self.slots.borrow_mut();
        let s = slots.get_mut(key as usize)?;
        if s.0 != gen || s.1.is_none() {
            return None;
        }
        s.0 = s.0.wrapping_add(1);
        let p = s.1.take();
        self.free.borrow_mut().push(key);
        self.len.set(self.len.get() - 1);
        p
    }

    /// Frees the slab's storage once nothing is parked (after a burst of
    /// idle connections closed; called with the allocator trim).
    pub fn shrink(&self) {
        if self.len.get() == 0 {
            // No socket is armed in the epoll set: no event can name a key.
            *self.slots.borrow_mut() = Vec::new();
            *self.free.borrow_mut() = Vec::new();
        }
    }

    /// Drops every parked connection (the shard is exiting).
    pub fn clear(&self) {
        let slots = std::mem::take(&mut *self.slots.borrow_mut());
        self.free.borrow_mut().clear();
        self.len.set(0);
        drop(slots);
    }
}

/// What to do with a parked connection whose socket became readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Give it a task again: a request (or the client's close) is there.
    Resume,
    /// Close it: its idle deadline fired, or the shard drains.
    Close,
}

/// The decision on an event: `timed_out` (the slot's deadline fired while
/// parked), `draining` (the shard closes idle connections).
pub fn on_event(timed_out: bool, draining: bool) -> Wake {
    if timed_out || draining {
        Wake::Close
    } else {
        Wake::Resume
    }
}

/// Something to wait on for `fd` to become readable on the shard's own
/// ring. monoio 0.2.4 offers a readiness wait on its socket types only, so
/// a duplicate of `fd` is wrapped in one: never read or written, only
/// polled (an io_uring POLL_ADD; with the epoll fallback driver, a nested
/// epoll registration). The caller reads `fd` itself.
pub fn readiness_waiter(fd: RawFd) -> std::io::Result<TcpStream> {
    // SAFETY: plain syscall; the result is checked.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor; the wrapper owns and closes it.
    TcpStream::from_std(unsafe { std::net::TcpStream::from_raw_fd(dup) })
}

/// The shard task that waits for parked sockets and resumes them; runs
/// until the shard's runtime ends.
pub async fn run(shard: Rc<Shard>) {
    let waiter = match readiness_waiter(shard.parked.ep.as_raw_fd()) {
        Ok(w) => w,
        Err(e) => {
            crate::error!("shard {}: idle connections cannot be parked: {e}", shard.id);
            return;
        }
    };
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
    loop {
        if let Err(e) = waiter.readable(false).await {
            crate::warn!("shard {}: waiting for idle connections: {e}", shard.id);
            monoio::time::sleep(super::shard::TICK).await;
        }
        loop {
            // SAFETY: `events` has room for BATCH entries; timeout 0.
            let n = unsafe {
                libc::epoll_wait(
                    shard.parked.ep.as_raw_fd(),
                    events.as_mut_ptr(),
                    BATCH as i32,
                    0,
                )
            };
            if n <= 0 {
                break;
            }
            for ev in &events[..n as usize] {
                let data = ev.u64;
                if let Some(p) = shard.parked.take(data) {
                    wake(&shard, p);
                }
            }
            if (n as usize) < BATCH {
                break;
            }
        }
    }
}

fn wake(shard: &Rc<Shard>, p: Parked) {
    let timed_out = p.slot.timer.finish().is_err();
    match on_event(timed_out, shard.draining()) {
        // A TLS client is told the close is deliberate (close_notify), from
        // a task, as an in-task wait would.
        Wake::Close if p.tls.is_some() => super::conn::spawn_resumed(Rc::clone(shard), p, true),
        Wake::Close => {
            drop(p);
            shard.rec.borrow_mut().on_close(ConnState::Waiting);
        }
        Wake::Resume => super::conn::spawn_resumed(Rc::clone(shard), p, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_resumes_unless_timed_out_or_draining() {
        for (timed_out, draining, want) in [
            (false, false, Wake::Resume),
            (true, false, Wake::Close),
            (false, true, Wake::Close),
            (true, true, Wake::Close),
        ] {
            assert_eq!(
                on_event(timed_out, draining),
                want,
                "timed out {timed_out} draining {draining}"
            );
        }
    }

    #[test]
    fn parked_state_is_small() {
        // What an idle plain-text connection keeps in the slab (its Slot's
        // two small Rc allocations and registry entry come on top).
        assert!(
            std::mem::size_of::<Option<Parked>>() <= 192,
            "{}",
            std::mem::size_of::<Option<Parked>>()
        );
    }
}
