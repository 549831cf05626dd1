//! Keeping a shard alive when one connection's task panics.
//!
//! A panic is a bug, but it must cost one connection, not every connection
//! of the shard: each connection task runs inside [`CatchUnwind`], which
//! turns a panic during `poll` into an error result (the task's state,
//! buffers and sockets are dropped by unwinding, and `RefCell` guards are
//! released on the way out). Nothing here is on the hot path beyond the
//! `catch_unwind` frame around `poll`.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future that reports a panic of the wrapped future as `Err`.
pub struct CatchUnwind<F>(pub F);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of the only field; it is never moved.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.0) };
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// The panic payload as text, for the log.
pub fn message(e: &(dyn Any + Send)) -> &str {
    e.downcast_ref::<&str>()
        .copied()
        .or_else(|| e.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_the_runtime_goes_on() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        let out = rt.block_on(async {
            let bad = monoio::spawn(CatchUnwind(async { panic!("boom") }));
            let good = monoio::spawn(CatchUnwind(async { 7 }));
            (
                bad.await.map_err(|e| message(&*e).to_string()),
                good.await.ok(),
            )
        });
        assert_eq!(out, (Err("boom".to_string()), Some(7)));
    }
}
