//! Listening sockets: one `SO_REUSEPORT` socket per shard and listener.
//!
//! Sockets are made on the orchestrator's thread before the shards start,
//! so a bad address or a port in use fails the start (or the reload) with a
//! clear error instead of a shard dying later. Each shard gets its own
//! socket on the same address; the kernel spreads new connections over
//! them, and no shard ever waits on another's accept queue.
//!
//! A listener comes from a [`Source`]: an address to bind, or a file
//! descriptor inherited from another process. The second is the seam for
//! binary upgrades (the old process hands its listening sockets to the new
//! one over `SCM_RIGHTS`, so no connection attempt is refused while both
//! run); today only addresses come from the configuration.
//!
//! Every listener defers accept until the client's first bytes arrive
//! (`TCP_DEFER_ACCEPT`, [`DEFER_ACCEPT_SECS`]): HTTP, TLS and PROXY-protocol
//! clients all speak first, so an accepted connection has its first
//! request (or hello, or PROXY header) already readable, and `conn::serve`
//! reads it directly instead of waiting for readiness first. Measured with
//! `Connection: close` clients: one wake-up of the shard and one io_uring
//! operation less per connection, 15–25% less proxy CPU per request
//! (bench/RESULTS.md). A client that connects and stays silent is accepted
//! when the deferral ends (the kernel's first SYN-ACK retransmission,
//! ~1 s), then gets `client_header_timeout` as before; one that closes
//! first is accepted with its FIN at once (an L4 health check is seen, as
//! before).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Where a listening socket comes from.
#[derive(Debug)]
pub enum Source {
    /// Bind a new socket on this address (port 0 picks one).
    Bind(SocketAddr),
    /// Take over an already listening TCP socket, e.g. one received with
    /// `SCM_RIGHTS` from the process being upgraded.
    Inherited(OwnedFd),
}

/// How long a listener lets a connection wait for its first bytes before
/// accepting it anyway (seconds; the kernel rounds up to its first SYN-ACK
/// retransmission).
pub const DEFER_ACCEPT_SECS: libc::c_int = 1;

/// Accept a connection only once its first bytes arrived (or its FIN, or
/// [`DEFER_ACCEPT_SECS`] passed).
fn defer_accept(socket: &Socket) -> io::Result<()> {
    let secs = DEFER_ACCEPT_SECS;
    // SAFETY: a valid socket and a c_int option value of the given size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Binds a listening socket for one shard.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux:
    // one setsockopt here instead of one per connection.
    socket.set_nodelay(true)?;
    defer_accept(&socket)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// Takes over an inherited descriptor: it must be a listening TCP socket.
/// It is made non-blocking (the epoll driver needs that).
pub fn adopt(fd: OwnedFd) -> io::Result<TcpListener> {
    let socket = Socket::from(fd);
    if socket.r#type()? != Type::STREAM || !socket.is_listener()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "inherited descriptor is not a listening TCP socket",
        ));
    }
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    defer_accept(&socket)?;
    Ok(socket.into())
}

/// One socket from `source`.
pub fn open(source: Source, backlog: u32) -> io::Result<TcpListener> {
    match source {
        Source::Bind(addr) => bind(addr, backlog),
        Source::Inherited(fd) => adopt(fd),
    }
}

/// `shards` sockets for one listener: the first from `source`, the others
/// bound to its actual address (so port 0 and inherited sockets work: they
/// join the first one's `SO_REUSEPORT` group).
pub fn open_group(source: Source, backlog: u32, shards: usize) -> io::Result<Vec<TcpListener>> {
    let first = open(source, backlog)?;
    let actual = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..shards {
        all.push(bind(actual, backlog)?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn accepted_connections_inherit_nodelay() {
        let l = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        l.set_nonblocking(false).unwrap();
        let (a, _) = l.accept().unwrap();
        assert!(
            a.nodelay().unwrap(),
            "serve() relies on this instead of a setsockopt per connection"
        );
    }

    /// The listener's `TCP_DEFER_ACCEPT` value, as the kernel reports it.
    fn deferral(l: &TcpListener) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket, and an out value of the given size.
        let r = unsafe {
            libc::getsockopt(
                l.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        v
    }

    #[test]
    fn connections_are_accepted_with_their_first_bytes() {
        let l = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        assert!(deferral(&l) > 0, "TCP_DEFER_ACCEPT not set");
        l.set_nonblocking(true).unwrap();
        // Connected (the client's handshake is done) but silent: not
        // accepted yet (the deferral ends at the first SYN-ACK
        // retransmission, one second at the earliest).
        let mut silent = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(
            l.accept().map(|_| ()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "a silent connection was accepted"
        );
        // Its first bytes make it acceptable, and they are readable at once.
        silent.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        l.set_nonblocking(false).unwrap();
        let (a, _) = l.accept().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        let n = (&a).read(&mut b).expect("the request is already there");
        assert_eq!(&b[..n], b"GET / HTTP/1.1\r\n\r\n");
        // A client that closes without a byte (an L4 health check) is
        // accepted with its FIN, not left waiting.
        drop(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap());
        let (a, _) = l.accept().unwrap();
        assert_eq!((&a).read(&mut b).unwrap(), 0);
    }

    #[test]
    fn inherited_listeners_defer_accept_too() {
        let original = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(deferral(&original), 0);
        let adopted = adopt(original.as_fd().try_clone_to_owned().unwrap()).unwrap();
        assert!(deferral(&adopted) > 0);
    }

    #[test]
    fn group_shares_the_port_chosen_by_the_first_socket() {
        let group = open_group(Source::Bind("127.0.0.1:0".parse().unwrap()), 16, 3).unwrap();
        let addr = group[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert!(group.iter().all(|l| l.local_addr().unwrap() == addr));
    }

    #[test]
    fn an_inherited_listener_accepts_and_its_group_joins_it() {
        let original = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = original.local_addr().unwrap();
        let fd = original.as_fd().try_clone_to_owned().unwrap();
        let group = open_group(Source::Inherited(fd), 16, 2).unwrap();
        assert!(group.iter().all(|l| l.local_addr().unwrap() == addr));
        drop(original);
        // The kernel spreads connections over the group; every one is
        // accepted by one of its sockets.
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"x").unwrap();
        let mut accepted = None;
        for _ in 0..1000 {
            accepted = group.iter().find_map(|l| {
                l.set_nonblocking(true).unwrap();
                l.accept().ok()
            });
            if accepted.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let (mut s, _) = accepted.expect("no socket of the group accepted within 5 s");
        s.set_nonblocking(false).unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }

    #[test]
    fn an_inherited_descriptor_that_is_not_listening_is_refused() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = adopt(udp.as_fd().try_clone_to_owned().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let unbound = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let err = adopt(OwnedFd::from(unbound)).unwrap_err();
        assert!(
            err.to_string().contains("not a listening TCP socket"),
            "{err}"
        );
    }
}
