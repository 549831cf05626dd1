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

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;

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
            "connection tasks rely on this instead of a setsockopt per connection"
        );
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
