//! Memory for buffered request bodies (`[http] request_buffering`).
//!
//! A request head is read into the client's small buffer. When its body is
//! to be buffered and does not fit there, the buffer's storage is swapped
//! for a larger one — a pooled shard buffer first ([`buf::POOLED`] bytes,
//! so the common case allocates nothing), grown up to the request's limit
//! only as bytes actually arrive — and swapped back once the exchange is
//! over. A slow client that trickles a body therefore holds only what it
//! sent, and no upstream connection.
//!
//! Every byte of storage beyond the client's own buffer is charged to a
//! per-shard budget ([`SHARD_BUDGET`]): ten thousand clients each sending
//! a large body cannot pin unbounded memory; once the budget is spent, a
//! body is streamed from where it got to (`proto::exchange::body_step`).

use std::cell::Cell;

use super::buf::{self, RecvBuf};

/// Most memory one shard holds for buffered request bodies at once.
pub const SHARD_BUDGET: usize = 64 << 20;

thread_local! {
    // One shard per thread: bytes charged by this shard's connections.
    static IN_USE: Cell<usize> = const { Cell::new(0) };
}

/// What is left of this shard's budget.
pub fn budget_left() -> usize {
    SHARD_BUDGET.saturating_sub(IN_USE.with(Cell::get))
}

/// A connection's body storage: the client buffer's own storage while a
/// larger one is lent, and what the larger one is charged.
#[derive(Default)]
pub struct BodyBuf {
    /// The client buffer's usual storage, kept aside (empty when not lent).
    spare: Option<Vec<u8>>,
    charged: usize,
}

impl BodyBuf {
    /// Bytes the budget would be charged to give `rbuf` more room, up to
    /// `limit` bytes of capacity (0: it cannot grow). The first step lends
    /// a pooled buffer; later ones double it.
    pub fn grow_size(&self, rbuf: &RecvBuf, limit: usize) -> usize {
        let cap = rbuf.capacity();
        if cap >= limit {
            0
        } else if self.spare.is_none() && cap < buf::POOLED {
            buf::POOLED
        } else {
            cap.min(limit - cap)
        }
    }

    /// Gives `rbuf` more storage (see [`grow_size`](Self::grow_size)),
    /// keeping its bytes, and charges the budget.
    pub fn grow(&mut self, rbuf: &mut RecvBuf, limit: usize) {
        let more = self.grow_size(rbuf, limit);
        if more == 0 {
            return;
        }
        let next = if self.spare.is_none() && rbuf.capacity() < buf::POOLED {
            buf::take_pooled()
        } else {
            Vec::with_capacity(rbuf.capacity() + more)
        };
        let old = rbuf.replace_storage(next);
        if self.spare.is_none() {
            self.spare = Some(old);
        } else {
            self.release(old.capacity());
            buf::give_back(old);
        }
        self.charge(rbuf.capacity());
    }

    /// Gives `rbuf` its own storage back when what it holds fits (the
    /// exchange is over); the lent storage returns to the shard's pool.
    pub fn restore(&mut self, rbuf: &mut RecvBuf) {
        let Some(spare) = self.spare.take() else {
            return;
        };
        if rbuf.len() > spare.capacity() {
            // Pipelined bytes beyond the small buffer: keep it for now.
            self.spare = Some(spare);
            return;
        }
        let lent = rbuf.replace_storage(spare);
        self.release(self.charged);
        buf::give_back(lent);
    }

    fn charge(&mut self, n: usize) {
        self.charged += n;
        IN_USE.with(|u| u.set(u.get() + n));
    }

    fn release(&mut self, n: usize) {
        let n = n.min(self.charged);
        self.charged -= n;
        IN_USE.with(|u| u.set(u.get().saturating_sub(n)));
    }
}

impl Drop for BodyBuf {
    fn drop(&mut self) {
        self.release(self.charged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lends_pooled_storage_and_gives_it_back() {
        let before = budget_left();
        let mut rbuf = RecvBuf::growable(4096, 8192);
        let mut b = BodyBuf::default();
        let limit = 200_000;
        assert_eq!(b.grow_size(&rbuf, limit), buf::POOLED);
        b.grow(&mut rbuf, limit);
        assert!(rbuf.capacity() >= buf::POOLED);
        assert_eq!(budget_left(), before - rbuf.capacity());
        // Grows by doubling, up to the limit, charging each step.
        b.grow(&mut rbuf, limit);
        assert_eq!(rbuf.capacity(), 2 * buf::POOLED);
        b.grow(&mut rbuf, limit);
        assert_eq!(rbuf.capacity(), limit);
        assert_eq!(b.grow_size(&rbuf, limit), 0);
        assert_eq!(budget_left(), before - limit);
        b.restore(&mut rbuf);
        assert_eq!(rbuf.capacity(), 4096);
        assert_eq!(budget_left(), before);
    }

    #[test]
    fn dropping_a_connection_releases_its_charge() {
        let before = budget_left();
        let mut rbuf = RecvBuf::growable(4096, 8192);
        let mut b = BodyBuf::default();
        b.grow(&mut rbuf, 100_000);
        assert!(budget_left() < before);
        drop(b);
        assert_eq!(budget_left(), before);
    }
}
