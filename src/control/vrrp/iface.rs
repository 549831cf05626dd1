//! Facts about a network interface: index, primary IPv4 address, usable
//! IPv6 link-local address, MAC, link state.
//!
//! Everything here is read through the kernel APIs that answer for the
//! *calling thread's network namespace* (`if_nametoindex`, `getifaddrs`,
//! `SIOCGIF*` ioctls), never through `/sys/class/net`, whose content depends
//! on which sysfs instance happens to be mounted. That matters because VRRP
//! nodes are tested (and often deployed) inside namespaces. The IPv6
//! link-local address is read from `/proc/thread-self/net/if_inet6`, which
//! is the calling thread's namespace too and, unlike `getifaddrs`, tells
//! whether the address is still tentative (duplicate address detection
//! running: the kernel refuses it as a source until DAD is done).
//!
//! The one-off lookups (index, address, MAC) open a throwaway datagram
//! socket per ioctl. Link state is polled every tracking tick (10 ms), so
//! [`LinkProbe`] keeps one socket open for it: a socket per poll would fail
//! with EMFILE exactly when the host is busiest, and reporting the link
//! down then would move the VIP for no reason.

use std::ffi::{CStr, CString};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Interface index of `name`.
pub fn index(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no network interface named {name:?}"),
        ));
    }
    Ok(idx)
}

/// The first IPv4 address of `name` that is not in `exclude` (the VIPs: once
/// this router is master they sit on the same interface). The kernel lists an
/// interface's primary address before its secondaries.
pub fn primary_ipv4(name: &str, exclude: &[IpAddr]) -> io::Result<Option<Ipv4Addr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { CStr::from_ptr(ifa.ifa_name) };
        if ifname.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr is non-null; sa_family says which sockaddr it is.
        if i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET {
            continue;
        }
        // SAFETY: AF_INET entries point at a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        if !exclude.contains(&IpAddr::V4(ip)) {
            found = Some(ip);
            break;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

/// `IFA_F_*` flags that make an address unusable as a source.
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;
/// `if_inet6`'s scope column for link-local addresses.
const SCOPE_LINK: u32 = 0x20;

/// The IPv6 link-local address of `name` a VRRPv3 router sends from (RFC
/// 5798 §5.1.2.1), skipping `exclude` (a link-local VIP) and addresses still
/// tentative or that failed DAD. `None` until one is usable.
pub fn link_local_v6(name: &str, exclude: &[IpAddr]) -> io::Result<Option<Ipv6Addr>> {
    let text = std::fs::read_to_string("/proc/thread-self/net/if_inet6")?;
    Ok(usable_link_local(&text, name, exclude))
}

/// The `if_inet6` parser behind [`link_local_v6`]: lines of
/// `ADDR(32 hex) IFINDEX PREFIXLEN SCOPE FLAGS NAME`, numbers in hex.
pub fn usable_link_local(if_inet6: &str, name: &str, exclude: &[IpAddr]) -> Option<Ipv6Addr> {
    if_inet6.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, _, _, scope, flags, ifname] = f[..] else {
            return None;
        };
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        if ifname != name || hex(scope)? != SCOPE_LINK {
            return None;
        }
        if hex(flags)? & (IFA_F_TENTATIVE | IFA_F_DADFAILED) != 0 {
            return None;
        }
        let ip = Ipv6Addr::from(u128::from_str_radix(addr, 16).ok()?);
        (addr.len() == 32 && !exclude.contains(&IpAddr::V6(ip))).then_some(ip)
    })
}

/// The address a router on `name` sends its adverts from: the primary IPv4
/// address, or for IPv6 the usable link-local one (neither a VIP).
pub fn source(name: &str, v6: bool, exclude: &[IpAddr]) -> io::Result<Option<IpAddr>> {
    Ok(if v6 {
        link_local_v6(name, exclude)?.map(IpAddr::V6)
    } else {
        primary_ipv4(name, exclude)?.map(IpAddr::V4)
    })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

fn dgram_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl_on(sock: &OwnedFd, name: &str, request: libc::c_ulong) -> io::Result<libc::ifreq> {
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIF* ioctls read the name and fill the union of `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req)
}

fn ioctl(name: &str, request: libc::c_ulong) -> io::Result<libc::ifreq> {
    ioctl_on(&dgram_socket()?, name, request)
}

/// `IFF_UP` and `IFF_RUNNING` both set.
fn up_and_running(req: &libc::ifreq) -> bool {
    // SAFETY: SIOCGIFFLAGS filled ifru_flags.
    let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
    flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0
}

/// Link-state polling on one long-lived socket (see the module docs).
pub struct LinkProbe {
    sock: OwnedFd,
}

impl LinkProbe {
    pub fn open() -> io::Result<LinkProbe> {
        Ok(LinkProbe {
            sock: dgram_socket()?,
        })
    }

    /// `Some(up)` as [`link_up`] defines it (a missing interface is down);
    /// `None` when the kernel could not answer (the caller keeps what it
    /// knew rather than inventing a link failure).
    pub fn link_up(&self, name: &str) -> Option<bool> {
        match ioctl_on(&self.sock, name, libc::SIOCGIFFLAGS) {
            Ok(req) => Some(up_and_running(&req)),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Some(false),
            Err(_) => None,
        }
    }
}

/// Hardware (MAC) address of `name`.
pub fn mac(name: &str) -> io::Result<[u8; 6]> {
    let req = ioctl(name, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled ifru_hwaddr.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut out = [0u8; 6];
    for (d, s) in out.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(out)
}

/// Whether `name` is administratively up and has carrier (`IFF_UP` and
/// `IFF_RUNNING`, which the kernel derives from the operational state). A
/// missing interface counts as down.
pub fn link_up(name: &str) -> bool {
    match ioctl(name, libc::SIOCGIFFLAGS) {
        Ok(req) => up_and_running(&req),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_facts() {
        let idx = index("lo").unwrap();
        assert!(idx >= 1);
        assert!(link_up("lo"));
        assert_eq!(primary_ipv4("lo", &[]).unwrap(), Some(Ipv4Addr::LOCALHOST));
        // Excluding the only address leaves none.
        assert_eq!(
            primary_ipv4("lo", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap(),
            None
        );
        assert_eq!(mac("lo").unwrap(), [0; 6]);
    }

    #[test]
    fn link_local_choice() {
        let table = "\
20010002000000000000000000000001 02 40 00 80     eth0
fe80000000000000000000fffe00000b 03 40 20 40     eth1
fe800000000000000000000000000001 02 40 20 80     eth0
fe80000000000000000000fffe00000a 02 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
";
        let ll = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        // Global addresses are skipped; the first link-local one wins.
        assert_eq!(usable_link_local(table, "eth0", &[]), Some(ll("fe80::1")));
        // A link-local VIP is not the router's own address.
        let vip = [IpAddr::V6(ll("fe80::1"))];
        assert_eq!(
            usable_link_local(table, "eth0", &vip),
            Some(ll("fe80::ff:fe00:a"))
        );
        // Tentative (DAD running) is not usable yet.
        assert_eq!(usable_link_local(table, "eth1", &[]), None);
        assert_eq!(usable_link_local(table, "lo", &[]), None);
        assert_eq!(usable_link_local("garbage\n", "eth0", &[]), None);
        // The real file parses (this thread's namespace).
        assert!(link_local_v6("lo", &[]).is_ok());
    }

    #[test]
    fn missing_interface() {
        assert_eq!(
            index("rl-nonexistent0").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(!link_up("rl-nonexistent0"));
        assert_eq!(primary_ipv4("rl-nonexistent0", &[]).unwrap(), None);
        assert!(ifreq("").is_err());
        assert!(ifreq("a-name-that-is-far-too-long").is_err());
    }
}
