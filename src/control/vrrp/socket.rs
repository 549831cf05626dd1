//! The raw protocol-112 socket of one interface and address family.
//!
//! One socket per (interface, family) serves every instance on it: the
//! kernel hands a raw socket every VRRP datagram that reaches the host, so
//! the driver demultiplexes by VRID itself (as keepalived does). The socket is:
//!
//! - bound to the interface (`SO_BINDTODEVICE`), so adverts heard on another
//!   link are never believed;
//! - a member of 224.0.0.18 / ff02::12 on that interface when some instance
//!   speaks multicast, with `IP_MULTICAST_ALL` / `IPV6_MULTICAST_ALL` off so
//!   groups joined by anything else on the host are not delivered here;
//! - multicast loop off (our own adverts must not come back) and TTL / hop
//!   limit 255 for unicast and multicast (RFC 5798 §5.1.1.3, §5.1.2.3).
//!
//! **IPv4**: `IP_HDRINCL` for sending: the driver writes the IPv4 header
//! itself so the source address is exactly the instance's primary address
//! (or `unicast_src`), whatever the routing table would have picked, with
//! TTL 255 and the internetwork-control TOS keepalived uses. The kernel fills
//! in the identification and header checksum. Received datagrams carry their
//! header, which [`wire::parse_ipv4`] splits and checks.
//!
//! **IPv6**: an IPv6 raw socket never carries the IP header, in either
//! direction. Sending names the source per packet with `IPV6_PKTINFO` (the
//! interface's link-local address, as RFC 5798 §5.1.2.1 requires, or
//! `unicast_src`) and traffic class 0xc0 like keepalived; receiving asks for
//! the hop limit (`IPV6_RECVHOPLIMIT`) and the destination
//! (`IPV6_RECVPKTINFO`) as ancillary data, which [`wire::envelope_v6`]
//! assembles. Either way the driver then judges the TTL / hop limit with
//! [`wire::hops_ok`] once it knows the instance (its unicast peers). The checksum is *not* left to the kernel (`IPV6_CHECKSUM` would
//! drop bad ones silently): the v3 checksum over the IPv6 pseudo-header is
//! computed and verified by the wire module like for IPv4, so a bad one is
//! counted (`bad_checksum`) like every other drop.
//!
//! Receiving is non-blocking; the driver waits with `ppoll` on [`fd`](VrrpSocket::fd).

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};

use crate::proto::vrrp::wire;

/// IPTOS_PREC_INTERNETCONTROL, as keepalived marks its adverts.
const TOS_INTERNETCONTROL: u8 = 0xc0;
/// Length of the IPv4 header we write (no options).
const IPV4_HEADER: usize = 20;

/// Traffic class of IPv6 adverts (keepalived's, the same precedence as IPv4's TOS).
const TCLASS_V6: u32 = 0xc0;
/// Room for the IPV6_HOPLIMIT and IPV6_PKTINFO control messages.
const CMSG_SPACE: usize = 128;

/// A raw VRRP socket bound to one interface.
pub struct VrrpSocket {
    sock: Socket,
    pub ifname: String,
    pub ifindex: u32,
    /// IPv6 (ff02::12) rather than IPv4 (224.0.0.18).
    pub v6: bool,
}

/// What the kernel told about a received datagram besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    /// IPv4: the header is in the bytes.
    V4,
    /// IPv6: the bytes are the VRRP message; the rest came alongside.
    V6 {
        src: Ipv6Addr,
        dst: Option<Ipv6Addr>,
        hop_limit: Option<u8>,
    },
}

impl Meta {
    /// The checked envelope of `bytes` received with this meta.
    pub fn envelope(self, bytes: &[u8]) -> wire::Result<wire::Envelope<'_>> {
        match self {
            Meta::V4 => wire::parse_ipv4(bytes).map(wire::Envelope::from),
            Meta::V6 {
                src,
                dst,
                hop_limit,
            } => wire::envelope_v6(src, dst, hop_limit, bytes),
        }
    }
}

fn ctx(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl VrrpSocket {
    /// Opens the socket of family `v6` on `ifname` (index `ifindex`),
    /// joining the VRRP group there if `multicast`.
    pub fn open(ifname: &str, ifindex: u32, multicast: bool, v6: bool) -> io::Result<VrrpSocket> {
        if v6 {
            return Self::open_v6(ifname, ifindex, multicast);
        }
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
            v6: false,
        })
    }

    fn open_v6(ifname: &str, ifindex: u32, multicast: bool) -> io::Result<VrrpSocket> {
        let sock = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(i32::from(wire::PROTOCOL))),
        )
        .map_err(|e| ctx(e, "raw IPv6 protocol 112 socket"))?;
        sock.bind_device(Some(ifname.as_bytes()))
            .map_err(|e| ctx(e, format_args!("SO_BINDTODEVICE {ifname}")))?;
        sock.set_unicast_hops_v6(u32::from(wire::TTL))?;
        sock.set_multicast_hops_v6(u32::from(wire::TTL))?;
        sock.set_multicast_loop_v6(false)?;
        sock.set_multicast_all_v6(false)?;
        sock.set_tclass_v6(TCLASS_V6)?;
        sock.set_recv_hoplimit_v6(true)?;
        set_int(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
            .map_err(|e| ctx(e, "IPV6_RECVPKTINFO"))?;
        if multicast {
            sock.join_multicast_v6(&wire::MULTICAST_V6, ifindex)
                .map_err(|e| ctx(e, format_args!("join ff02::12 on {ifname}")))?;
        }
        sock.set_nonblocking(true)?;
        Ok(VrrpSocket {
            sock,
            ifname: ifname.to_string(),
            ifindex,
            v6: true,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Sends one VRRP message `payload` from `src` to `dst` (TTL / hop
    /// limit 255). Both must be of the socket's family.
    pub fn send(&self, src: IpAddr, dst: IpAddr, payload: &[u8]) -> io::Result<()> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) if !self.v6 => self.send_v4(s, d, payload),
            (IpAddr::V6(s), IpAddr::V6(d)) if self.v6 => self.send_v6(s, d, payload),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{src} -> {dst} on an IPv{} VRRP socket",
                    if self.v6 { 6 } else { 4 }
                ),
            )),
        }
    }

    fn send_v4(&self, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
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

    /// From `src` (the source, via `IPV6_PKTINFO`, on this interface) to
    /// `dst`; a link-local destination is scoped to the interface.
    fn send_v6(&self, src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> io::Result<()> {
        let to = SockAddr::from(SocketAddr::V6(SocketAddrV6::new(dst, 0, 0, self.ifindex)));
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: src.octets(),
            },
            ipi6_ifindex: self.ifindex,
        };
        let mut control = [0u64; CMSG_SPACE / 8];
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        // SAFETY: msghdr is plain data; every pointer set below outlives the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = to.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = to.len();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        let info_len = std::mem::size_of::<libc::in6_pktinfo>() as u32;
        // SAFETY: CMSG_SPACE/LEN are pure size computations.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(info_len) } as _;
        // SAFETY: the control buffer holds one cmsg of `info_len` bytes
        // (checked by the assertion in the tests); the pointers come from
        // the CMSG macros over that buffer.
        let n = unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::IPPROTO_IPV6;
            (*c).cmsg_type = libc::IPV6_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(info_len) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>(), info);
            libc::sendmsg(self.sock.as_raw_fd(), &msg, 0)
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one datagram into `buf`: its length and what came with it
    /// (IPv4: a whole datagram, header included; IPv6: the VRRP message).
    /// `Ok(None)` when nothing is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<(usize, Meta)>> {
        if self.v6 {
            return self.recv_v6(buf);
        }
        // SAFETY: recv only writes initialised bytes into the buffer and
        // returns how many; `[u8]` and `[MaybeUninit<u8>]` share a layout.
        let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        match self.sock.recv(uninit) {
            Ok(n) => Ok(Some((n, Meta::V4))),
            Err(e) => quiet(e),
        }
    }

    fn recv_v6(&self, buf: &mut [u8]) -> io::Result<Option<(usize, Meta)>> {
        // SAFETY: sockaddr_in6 is plain data; all-zero is valid.
        let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut control = [0u64; CMSG_SPACE / 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; every pointer set below outlives the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: `msg` describes valid buffers for the kernel to fill.
        let n = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return quiet(io::Error::last_os_error());
        }
        let (mut dst, mut hop_limit) = (None, None);
        // SAFETY: walking the control messages the kernel wrote, with the
        // CMSG macros, reading each payload unaligned by its declared type.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let data = libc::CMSG_DATA(c);
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                        let h = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                        hop_limit = u8::try_from(h).ok();
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                        let i = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                        dst = Some(Ipv6Addr::from(i.ipi6_addr.s6_addr));
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let src = Ipv6Addr::from(from.sin6_addr.s6_addr);
        Ok(Some((
            n as usize,
            Meta::V6 {
                src,
                dst,
                hop_limit,
            },
        )))
    }
}

/// Nothing waiting (or a signal) is not an error for a non-blocking drain.
fn quiet<T>(e: io::Error) -> io::Result<Option<T>> {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

fn set_int(sock: &Socket, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt with a c_int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

    /// A real IPv6 raw socket on loopback: what one sends the other end
    /// receives with hop limit 255 and its destination, and the envelope
    /// check passes; the same bytes claimed with a hop limit of 64 carry it
    /// (for `wire::hops_ok`), and without one they do not pass.
    #[test]
    fn ipv6_loopback_round_trip() {
        let lo = crate::control::vrrp::iface::index("lo").unwrap();
        let s = match VrrpSocket::open("lo", lo, false, true) {
            Ok(s) => s,
            Err(e) => panic!("raw IPv6 socket (needs CAP_NET_RAW, as the VRRP tests do): {e}"),
        };
        let one = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let repr = Repr {
            version: Version::V3,
            kind: Kind::Advertisement,
            vrid: 213,
            priority: 77,
            auth: Auth::None,
            advert_interval: 10,
            addresses: vec!["2001:2::100".parse().unwrap()],
        };
        let bytes = repr.to_bytes(one, one);
        s.send(one, one, &bytes).unwrap();
        assert!(s.send(v4(Ipv4Addr::LOCALHOST), one, &bytes).is_err());
        let mut buf = [0u8; 512];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let (n, meta) = loop {
            match s.recv(&mut buf).unwrap() {
                Some((n, m)) if buf[..n] == bytes[..] => break (n, m),
                _ if std::time::Instant::now() > deadline => panic!("own datagram never came back"),
                _ => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        };
        let env = meta.envelope(&buf[..n]).unwrap();
        assert_eq!((env.src, env.dst, env.ttl), (one, one, 255));
        let parsed = Repr::parse(&Packet::new_checked(env.payload).unwrap(), env.src, env.dst);
        assert_eq!(parsed.unwrap(), repr);
        let Meta::V6 { src, dst, .. } = meta else {
            panic!("an IPv6 socket reported {meta:?}")
        };
        let low = Meta::V6 {
            src,
            dst,
            hop_limit: Some(64),
        };
        assert_eq!(low.envelope(&buf[..n]).unwrap().ttl, 64);
        let unknown = Meta::V6 {
            src,
            dst,
            hop_limit: None,
        };
        assert_eq!(unknown.envelope(&buf[..n]), Err(wire::Error::BadTtl));
    }
}
