//! Virtual addresses on and off an interface, over rtnetlink.
//!
//! A master adds its VIPs with `RTM_NEWADDR` and a router leaving Master (or
//! exiting) removes them with `RTM_DELADDR`, like keepalived does. The
//! messages are small and fixed in shape (`nlmsghdr` + `ifaddrmsg` + two
//! attributes), so they are written by hand with `libc` rather than pulling
//! in a netlink crate: one request, one acknowledgement, synchronous, on a
//! socket opened once per driver. Every request asks for an ACK so errors
//! are reported, not guessed; "already there" on add and "not there" on
//! delete count as success, which makes both operations idempotent (a
//! restarted router may find its VIP still present, a crashed one may have
//! lost it with its link).
//!
//! IPv6 VIPs are added with `IFA_F_NODAD`, as keepalived does: without it the
//! address is *tentative* for the duplicate address detection time (~1 s),
//! unusable as a source or destination, and can end up `dadfailed` when the
//! old master still answers for it — exactly when a takeover needs it.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const NETLINK_ROUTE: libc::c_int = 0;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RT_SCOPE_UNIVERSE: u8 = 0;
/// `ifaddrmsg.ifa_flags`: skip duplicate address detection (IPv6).
const IFA_F_NODAD: u8 = 0x02;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDR: usize = 16;
/// `sizeof(struct ifaddrmsg)`.
const IFADDRMSG: usize = 8;
/// How long to wait for the kernel's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Remove,
}

/// A NETLINK_ROUTE socket for address changes.
pub struct Netlink {
    fd: OwnedFd,
    seq: AtomicU32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: ACK_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval of the given size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(Netlink {
            fd,
            seq: AtomicU32::new(1),
        })
    }

    /// Add `addr/prefix` to interface `ifindex` (already present = Ok).
    pub fn add(&self, ifindex: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        self.request(Op::Add, ifindex, addr, prefix)
    }

    /// Remove `addr/prefix` from interface `ifindex` (already absent = Ok).
    pub fn remove(&self, ifindex: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        self.request(Op::Remove, ifindex, addr, prefix)
    }

    fn request(&self, op: Op, ifindex: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let msg = encode(op, seq, ifindex, addr, prefix);
        // SAFETY: a zeroed sockaddr_nl with nl_family set addresses the kernel (pid 0).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg and kernel are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            match parse_ack(&buf[..n as usize], seq) {
                Some(0) => return Ok(()),
                Some(errno) => {
                    let ok = match op {
                        Op::Add => errno == libc::EEXIST,
                        Op::Remove => errno == libc::EADDRNOTAVAIL || errno == libc::ENODEV,
                    };
                    return if ok {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(errno))
                    };
                }
                // Not our answer (a stale one from an earlier timeout): read on.
                None => continue,
            }
        }
    }
}

fn put_attr(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// One `RTM_NEWADDR`/`RTM_DELADDR` request with `IFA_LOCAL` and `IFA_ADDRESS`.
pub fn encode(op: Op, seq: u32, ifindex: u32, addr: IpAddr, prefix: u8) -> Vec<u8> {
    let (family, bytes): (u8, Vec<u8>) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let ifa_flags = match (op, addr) {
        (Op::Add, IpAddr::V6(_)) => IFA_F_NODAD,
        _ => 0,
    };
    let (kind, flags) = match op {
        Op::Add => (
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ),
        Op::Remove => (RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK),
    };
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&0u32.to_ne_bytes()); // length, patched below
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: let the kernel fill it
                                                // struct ifaddrmsg
    out.extend_from_slice(&[family, prefix, ifa_flags, RT_SCOPE_UNIVERSE]);
    out.extend_from_slice(&ifindex.to_ne_bytes());
    put_attr(&mut out, IFA_LOCAL, &bytes);
    put_attr(&mut out, IFA_ADDRESS, &bytes);
    let len = out.len() as u32;
    out[..4].copy_from_slice(&len.to_ne_bytes());
    out
}

/// The errno (0 = success) of the `NLMSG_ERROR` answering `seq` in `buf`, if any.
pub fn parse_ack(buf: &[u8], seq: u32) -> Option<i32> {
    let mut off = 0;
    while off + NLMSG_HDR <= buf.len() {
        let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
        let len = u32_at(off) as usize;
        if len < NLMSG_HDR || off + len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let mseq = u32_at(off + 8);
        if kind == NLMSG_ERROR && mseq == seq && len >= NLMSG_HDR + 4 {
            let err = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
            return Some(-err);
        }
        off += (len + 3) & !3;
    }
    None
}

// Keep the layout constant honest.
const _: () = assert!(NLMSG_HDR + IFADDRMSG == 24);

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn encode_add_v4() {
        let m = encode(
            Op::Add,
            7,
            3,
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
            24,
        );
        assert_eq!(m.len(), 24 + 8 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 40);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWADDR);
        assert_eq!(
            u16::from_ne_bytes([m[6], m[7]]),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 24, 0, 0]);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 3);
        // IFA_LOCAL then IFA_ADDRESS, each len 8.
        assert_eq!(u16::from_ne_bytes([m[24], m[25]]), 8);
        assert_eq!(u16::from_ne_bytes([m[26], m[27]]), IFA_LOCAL);
        assert_eq!(&m[28..32], &[198, 18, 0, 100]);
        assert_eq!(u16::from_ne_bytes([m[34], m[35]]), IFA_ADDRESS);
        assert_eq!(&m[36..40], &[198, 18, 0, 100]);
    }

    #[test]
    fn encode_remove_v6() {
        let m = encode(Op::Remove, 1, 2, "2001:db8::1".parse().unwrap(), 64);
        assert_eq!(m.len(), 24 + 20 + 20);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_DELADDR);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(m[16], libc::AF_INET6 as u8);
    }

    #[test]
    fn ipv6_add_skips_dad_v4_and_remove_do_not_ask() {
        let m = encode(Op::Add, 1, 2, "2001:2::100".parse().unwrap(), 64);
        assert_eq!(&m[16..20], &[libc::AF_INET6 as u8, 64, IFA_F_NODAD, 0]);
        assert_eq!(
            &m[28..44],
            &"2001:2::100"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        let m = encode(Op::Remove, 1, 2, "2001:2::100".parse().unwrap(), 64);
        assert_eq!(m[18], 0);
        let m = encode(Op::Add, 1, 2, "198.18.0.1".parse().unwrap(), 24);
        assert_eq!(m[18], 0);
    }

    fn ack(seq: u32, err: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&36u32.to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&err.to_ne_bytes());
        b.extend_from_slice(&[0u8; 16]);
        b
    }

    #[test]
    fn acks() {
        assert_eq!(parse_ack(&ack(5, 0), 5), Some(0));
        assert_eq!(parse_ack(&ack(5, -libc::EEXIST), 5), Some(libc::EEXIST));
        assert_eq!(parse_ack(&ack(4, 0), 5), None);
        let mut two = ack(4, -1);
        two.extend(ack(5, -libc::EPERM));
        assert_eq!(parse_ack(&two, 5), Some(libc::EPERM));
        assert_eq!(parse_ack(&[0u8; 3], 5), None);
        // A length field pointing past the buffer is not trusted.
        let mut bad = ack(5, 0);
        bad[0] = 200;
        assert_eq!(parse_ack(&bad, 5), None);
    }
}
