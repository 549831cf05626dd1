//! How a client connection's task begins: for a socket just accepted
//! ([`spawn_accepted`]) or for a parked keep-alive connection whose socket
//! became readable ([`spawn_resumed`]).
//!
//! A plain connection's task is the keep-alive loop itself
//! (`keepalive::drive`), built straight into its box ([`spawn_task`]): the
//! task's state is several KiB, and every copy of it would be a `memmove`
//! of that size per connection. Only PROXY-protocol and TLS listeners run
//! a first step ([`greet`]) before the loop. A panic while a task is built
//! ([`unwound`]) or while it runs (`CatchUnwind`) costs that connection
//! only, and is logged.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;

use monoio::net::TcpStream;

use super::keepalive::drive;
use super::Client;
use crate::data::client_stream::ClientStream;
use crate::data::idle::Parked;
use crate::data::shard::{Shard, Slot};
use crate::data::unwind::{self, CatchUnwind};
use crate::metrics::ConnState;

/// Starts the task of an accepted client connection; a panic in it costs
/// only that connection.
///
/// A plain connection's task is the keep-alive loop itself ([`drive`]),
/// built straight into its box ([`spawn_task`]): a connection task's
/// state is several KiB, and each copy of it was one `memmove` of that
/// size per connection (two per `Connection: close` request before, one
/// left from an outer `async` block awaiting the loop). A PROXY header or
/// a TLS handshake comes first in [`greet`], which then runs the loop.
pub fn spawn_accepted(
    shard: &Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    listen: SocketAddr,
    slot: Slot,
) {
    {
        let mut rec = shard.rec.borrow_mut();
        rec.on_accept();
        rec.on_handled();
    }
    let front = shard
        .view()
        .snap
        .config
        .listeners
        .iter()
        .find(|l| l.listen == listen)
        .map(|l| (l.tls.clone(), l.proxy_protocol));
    match front {
        Some((None, false)) | None => spawn_task(peer, || {
            let timer = slot.timer.clone();
            let c = Client::new(shard, ClientStream::Plain(stream), peer, None, timer);
            drive(c, Rc::clone(shard), slot, ConnState::Reading, listen, false)
        }),
        Some((tls, proxy_protocol)) => spawn_task(peer, || {
            greet(
                Rc::clone(shard),
                stream,
                peer,
                listen,
                slot,
                tls,
                proxy_protocol,
            )
        }),
    }
}

/// Spawns a connection's task, its future built by `make` directly in its
/// box (allocated first, so the call's result can be written there
/// instead of being built on the stack and copied). A panic, in `make` or
/// in the task, is caught and logged, and costs only this connection.
fn spawn_task<F: Future<Output = ()> + 'static>(peer: SocketAddr, make: impl FnOnce() -> F) {
    let Some(built) = unwound(peer, move || Box::write(Box::new_uninit(), make())) else {
        return;
    };
    let task = CatchUnwind(Box::into_pin(built));
    // The size of the first task spawned (a plain connection's, unless a
    // TLS or PROXY-protocol listener's came first).
    static TASK_SIZE: std::sync::Once = std::sync::Once::new();
    TASK_SIZE.call_once(|| {
        crate::info!(
            "connection task state: {} bytes",
            std::mem::size_of_val(&*task.0)
        )
    });
    monoio::spawn(async move {
        if let Err(e) = task.await {
            crate::error!(
                "connection from {peer}: task panicked: {}",
                unwind::message(&*e)
            );
        }
    });
}

/// Runs `f`, the synchronous start of a connection's task: a panic in it
/// is logged and costs only this connection (`None`), as one in the task
/// does.
fn unwound<T>(peer: SocketAddr, f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(e) => {
            crate::error!(
                "connection from {peer}: panicked before its task ran: {}",
                unwind::message(&*e)
            );
            None
        }
    }
}

/// A connection whose listener wants a PROXY header or a TLS handshake
/// first: those, then the keep-alive loop.
async fn greet(
    shard: Rc<Shard>,
    stream: TcpStream,
    mut peer: SocketAddr,
    listen: SocketAddr,
    slot: Slot,
    tls: Option<std::sync::Arc<crate::tls::ListenerTls>>,
    proxy_protocol: bool,
) {
    // TCP_NODELAY is inherited from the listener (runtime::listeners).
    // `slot` unregisters on every exit, including unwinding from a panic.
    let timer = slot.timer.clone();
    // A PROXY header first: its client address replaces the socket's.
    let mut dst = None;
    if proxy_protocol {
        let Some((src, to)) =
            crate::data::proxy_protocol::accept(&shard, &stream, peer, &tls, &timer).await
        else {
            shard.rec.borrow_mut().on_close(ConnState::Reading);
            return;
        };
        (peer, dst) = (src, to);
    }
    // A TLS listener: the handshake first (bounded by its own timeout).
    let mut subject = None;
    let mut tls_desc = None;
    let stream = match tls {
        None => ClientStream::Plain(stream),
        // Boxed, like every rare large step below (tunnel, linger, a
        // new upstream connection, a streamed upload): the task keeps
        // only the state of the per-request path.
        Some(tls) => {
            match Box::pin(crate::data::tls::handshake(&shard, stream, &tls, &timer)).await {
                Some(mut s) => {
                    subject = s.client_subject_field(&tls);
                    tls_desc = Some(s.describe());
                    ClientStream::Tls(Box::new(s))
                }
                None => {
                    shard.rec.borrow_mut().on_close(ConnState::Reading);
                    return;
                }
            }
        }
    };
    // Built in the call (a `Client` local would be a second copy in the
    // task's state), and awaited after the statement, so the call's
    // temporaries take no room in it either.
    let run = drive(
        Client {
            subject,
            tls_desc,
            ..Client::new(&shard, stream, peer, dst, timer)
        },
        shard,
        slot,
        ConnState::Reading,
        listen,
        false,
    );
    run.await;
}

/// Starts the task of a parked connection whose socket became readable
/// (`idle.rs`). `close`: a TLS connection that timed out or is drained,
/// which only sends its close_notify. A plain one resumes straight in the
/// keep-alive loop, built in its box as a new connection's is.
pub fn spawn_resumed(shard: Rc<Shard>, p: Parked, close: bool) {
    let peer = p.peer;
    if p.tls.is_some() || close {
        spawn_task(peer, || resume_tls(shard, p, close));
        return;
    }
    let Some(Some((c, slot, listen))) = unwound(peer, || unpark(&shard, p)) else {
        return;
    };
    spawn_task(peer, || {
        drive(c, shard, slot, ConnState::Waiting, listen, true)
    });
}

/// What a parked connection resumes with: its client state, slot and
/// listener; `None` (counted closed) when its socket cannot be taken back
/// or its slot names no listener (it could not be routed).
fn unpark(shard: &Shard, p: Parked) -> Option<(Client, Slot, SocketAddr)> {
    let Parked {
        fd,
        peer,
        dst,
        slot,
        requests,
        streak,
        idle_since,
        tls,
    } = p;
    let timer = slot.timer.clone();
    let (listen, stream) = match (
        timer.listen(),
        TcpStream::from_std(std::net::TcpStream::from(fd)),
    ) {
        (Some(listen), Ok(s)) => (listen, s),
        (_, r) => {
            if let Err(e) = r {
                crate::warn!("{peer}: resuming an idle connection: {e}");
            }
            shard.rec.borrow_mut().on_close(ConnState::Waiting);
            return None;
        }
    };
    let (stream, subject, tls_desc) = match tls {
        None => (ClientStream::Plain(stream), None, None),
        Some(t) => {
            let t = *t;
            let s = crate::data::tls::unpark(stream, t.sess);
            (ClientStream::Tls(Box::new(s)), t.subject, t.desc)
        }
    };
    let c = Client {
        requests,
        streak,
        idle_since,
        rearm: true,
        subject,
        tls_desc,
        ..Client::new(shard, stream, peer, dst.map(|d| *d), timer)
    };
    Some((c, slot, listen))
}

/// Serves a parked TLS connection again, or only sends its close_notify
/// (`close`).
async fn resume_tls(shard: Rc<Shard>, p: Parked, close: bool) {
    let Some((mut c, slot, listen)) = unpark(&shard, p) else {
        return;
    };
    if close {
        if let ClientStream::Tls(s) = &mut c.stream {
            Box::pin(s.close_notify(&c.timer)).await;
        }
        // The socket closes before its slot is given up, as from a task.
        drop(c);
        drop(slot);
        shard.rec.borrow_mut().on_close(ConnState::Waiting);
        return;
    }
    // Awaited after the statement: the call's temporaries take no room in
    // the task state.
    let run = drive(c, shard, slot, ConnState::Waiting, listen, true);
    run.await;
}

#[cfg(test)]
mod tests {
    use super::unwound;

    #[test]
    fn a_panic_starting_a_task_is_caught_and_costs_only_that_start() {
        let peer = "127.0.0.1:1".parse().unwrap();
        assert_eq!(unwound(peer, || 7), Some(7));
        assert_eq!(unwound(peer, || -> u8 { panic!("starting") }), None);
        assert_eq!(unwound(peer, || 8), Some(8), "the next start is unaffected");
    }
}
