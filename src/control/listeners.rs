//! Listening sockets: one `SO_REUSEPORT` socket per shard and listener.
//!
//! Sockets are made on the control thread before the shards start, so a
//! bad address or a port in use fails the start (or the reload) with a
//! clear error instead of a shard dying later. Each shard gets its own
//! socket on the same address; the kernel spreads new connections over
//! them, and no shard ever waits on another's accept queue.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a listening socket for one shard.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// Binds `shards` sockets for `addr`. With port 0 the first socket picks
/// the port and the others join it.
pub fn bind_group(
    addr: SocketAddr,
    backlog: u32,
    shards: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind(addr, backlog)?;
    let actual = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..shards {
        all.push(bind(actual, backlog)?);
    }
    Ok(all)
}
