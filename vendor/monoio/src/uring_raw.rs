//! Raw io_uring entries on the runtime's own ring (a ringlb patch).
//!
//! Operations in this runtime complete once. A multishot operation (for
//! example `IORING_OP_ACCEPT` with `IORING_ACCEPT_MULTISHOT`) completes
//! many times, so it cannot be an operation here. Instead the caller
//! queues the entry itself with [`push`], with a `user_data` that has
//! [`RAW_BIT`] set, and every completion carrying that bit is handed to
//! the thread's handler ([`set_handler`]) during the runtime's completion
//! loop. The handler must not touch the driver (no submissions, no I/O):
//! it records the completion and wakes a task.

use std::{cell::RefCell, io};

use crate::driver::{uring::UringInner, Inner, CURRENT};

/// The `user_data` bit that marks a raw entry. The rest of the value is
/// the caller's (bits 0..62; never all ones).
pub const RAW_BIT: u64 = crate::driver::uring::RAW_BIT;

type Handler = Box<dyn FnMut(u64, i32, u32)>;

thread_local! {
    static HANDLER: RefCell<Option<Handler>> = const { RefCell::new(None) };
}

/// Sets this thread's handler for raw completions: `(user_data, result,
/// flags)`, result as the kernel gave it (negative errno on error).
pub fn set_handler(handler: impl FnMut(u64, i32, u32) + 'static) {
    HANDLER.with(|h| *h.borrow_mut() = Some(Box::new(handler)));
}

pub(crate) fn complete(user_data: u64, result: i32, flags: u32) {
    HANDLER.with(|h| {
        if let Some(handler) = h.borrow_mut().as_mut() {
            handler(user_data, result, flags)
        }
    })
}

/// Queues `sqe` on the current thread's io_uring driver; it reaches the
/// kernel with the runtime's next submission. Fails when the runtime is
/// not io_uring or `sqe`'s `user_data` lacks [`RAW_BIT`].
///
/// # Safety
/// Any memory the entry points at must stay valid until its last
/// completion.
pub unsafe fn push(sqe: io_uring::squeue::Entry) -> io::Result<()> {
    if sqe.get_user_data() & RAW_BIT == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "raw entries need RAW_BIT in user_data",
        ));
    }
    if !CURRENT.is_set() {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "no runtime"));
    }
    CURRENT.with(|inner| match inner {
        Inner::Uring(this) => UringInner::push_raw(this, sqe),
        #[cfg(feature = "legacy")]
        Inner::Legacy(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "not an io_uring runtime",
        )),
    })
}

/// Hands every queued entry to the kernel now, instead of when the
/// runtime next parks (for example a cancellation that must take effect
/// before a descriptor is closed).
pub fn submit() -> io::Result<()> {
    if !CURRENT.is_set() {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "no runtime"));
    }
    CURRENT.with(|inner| match inner {
        Inner::Uring(this) => {
            // SAFETY: single-threaded runtime; no other borrow is live
            // while a task runs.
            let inner = unsafe { &mut *this.get() };
            inner.submit()
        }
        #[cfg(feature = "legacy")]
        Inner::Legacy(_) => Ok(()),
    })
}
