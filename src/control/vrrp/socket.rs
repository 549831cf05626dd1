//! The raw IPv4 protocol-112 socket of one interface.
//!
//! One socket per interface serves every instance on it: the kernel hands a
//! raw socket every VRRP datagram that reaches the host, so the driver
//! demultiplexes by VRID itself (as keepalived does). The socket is:
//!
//! - bound to the interface (`SO_BINDTODEVICE`), so adverts heard on another
//!   link are never believed;
//! - a member of 224.0.0.18 on that interface when some instance speaks
//!   multicast, with `IP_MULTICAST_ALL` off so groups joined by anything else
//!   on the host are not delivered here;
//! - `IP_MULTICAST_LOOP` off (our own adverts must not come back) and
//!   `IP_MULTICAST_TTL`/`IP_TTL` 255 (RFC 5798 §5.1.1.3);
//! - `IP_HDRINCL` for sending: the driver writes the IPv4 header itself so
//!   the source address is exactly the instance's primary address (or
//!   `unicast_src`), whatever the routing table would have picked, with TTL
//!   255 and the internetwork-control TOS keepalived uses. The kernel fills
//!   in the identification and header checksum.
//!
//! Receiving is non-blocking; the driver waits with `ppoll` on [`fd`](VrrpSocket::fd).

use std::io;
use std::mem::MaybeUninit;
#[cfg(test)]
use std::net::IpAddr;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};

use crate::proto::vrrp::wire;

/// IPTOS_PREC_INTERNETCONTROL, as keepalived marks its adverts.
const TOS_INTERNETCONTROL: u8 = 0xc0;
/// Length of the IPv4 header we write (no options).
const IPV4_HEADER: usize = 20;

/// A raw VRRP socket bound to one interface.
pub struct VrrpSocket {
    sock: Socket,
    pub ifname: String,
    pub ifindex: u32,
}

impl VrrpSocket {
    /// Opens the socket on `ifname` (index `ifindex`), joining the VRRP
    /// group there if `multicast`.
    pub fn open(ifname: &str, ifindex: u32, multicast: bool) -> io::Result<VrrpSocket> {
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(wire::PROTOCOL))),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("raw IP protocol 112 socket: {e}")))?;
        sock.bind_device(Some(ifname.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("SO_BINDTODEVICE {ifname}: {e}")))?;
        sock.set_header_included_v4(true)?;
        sock.set_ttl(u32::from(wire::TTL))?;
        sock.set_multicast_ttl_v4(u32::from(wire::TTL))?;
        sock.set_multicast_loop_v4(false)?;
        sock.set_multicast_all_v4(false)?;
        if multicast {
            sock.join_multicast_v4_n(
                &wire::MULTICAST_V4,
                &InterfaceIndexOrAddress::Index(ifindex),
            )
            .map_err(|e| io::Error::new(e.kind(), format!("join 224.0.0.18 on {ifname}: {e}")))?;
        }
        sock.set_nonblocking(true)?;
        Ok(VrrpSocket {
            sock,
            ifname: ifname.to_string(),
            ifindex,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Sends one VRRP message `payload` from `src` to `dst` (TTL 255).
    pub fn send(&self, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        let mut buf = [0u8; 1500];
        let len = IPV4_HEADER + payload.len();
        if len > buf.len() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        ipv4_header(&mut buf[..IPV4_HEADER], src, dst, payload.len());
        buf[IPV4_HEADER..len].copy_from_slice(payload);
        let to = SockAddr::from(SocketAddr::V4(SocketAddrV4::new(dst, 0)));
        self.sock.send_to(&buf[..len], &to)?;
        Ok(())
    }

    /// Receives one whole IPv4 datagram into `buf`; `Ok(None)` when nothing
    /// is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: recv only writes initialised bytes into the buffer and
        // returns how many; `[u8]` and `[MaybeUninit<u8>]` share a layout.
        let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        match self.sock.recv(uninit) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Writes a 20-byte IPv4 header for a VRRP payload of `payload_len` bytes
/// (identification and checksum left 0 for the kernel to fill).
pub fn ipv4_header(out: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, payload_len: usize) {
    let total = (IPV4_HEADER + payload_len) as u16;
    out[0] = 0x45;
    out[1] = TOS_INTERNETCONTROL;
    out[2..4].copy_from_slice(&total.to_be_bytes());
    out[4..8].fill(0);
    out[8] = wire::TTL;
    out[9] = wire::PROTOCOL;
    out[10..12].fill(0);
    out[12..16].copy_from_slice(&src.octets());
    out[16..20].copy_from_slice(&dst.octets());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::vrrp::{Auth, Kind, Version};

    fn v4(ip: Ipv4Addr) -> IpAddr {
        IpAddr::V4(ip)
    }
    use crate::proto::vrrp::{Packet, Repr};

    #[test]
    fn header_round_trips_through_the_receive_parser() {
        let src = Ipv4Addr::new(198, 18, 0, 1);
        let dst = wire::MULTICAST_V4;
        let repr = Repr {
            version: Version::V3,
            kind: Kind::Advertisement,
            vrid: 51,
            priority: 100,
            auth: Auth::None,
            advert_interval: 100,
            addresses: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100))],
        };
        let payload = repr.to_bytes(v4(src), v4(dst));
        let mut dgram = vec![0u8; IPV4_HEADER];
        ipv4_header(&mut dgram, src, dst, payload.len());
        dgram.extend_from_slice(&payload);
        let env = wire::parse_ipv4(&dgram).unwrap();
        assert_eq!((env.src, env.dst, env.ttl), (src, dst, 255));
        let parsed =
            Repr::parse(&Packet::new_checked(env.payload).unwrap(), v4(src), v4(dst)).unwrap();
        assert_eq!(parsed, repr);
        assert_eq!(dgram[1], TOS_INTERNETCONTROL);
    }
}
