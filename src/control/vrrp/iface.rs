//! Facts about a network interface: index, primary IPv4 address, MAC, link state.
//!
//! Everything here is read through the kernel APIs that answer for the
//! *calling thread's network namespace* (`if_nametoindex`, `getifaddrs`,
//! `SIOCGIF*` ioctls), never through `/sys/class/net`, whose content depends
//! on which sysfs instance happens to be mounted. That matters because VRRP
//! nodes are tested (and often deployed) inside namespaces.
//!
//! The one-off lookups (index, address, MAC) open a throwaway datagram
//! socket per ioctl. Link state is polled every tracking tick (10 ms), so
//! [`LinkProbe`] keeps one socket open for it: a socket per poll would fail
//! with EMFILE exactly when the host is busiest, and reporting the link
//! down then would move the VIP for no reason.

use std::ffi::{CStr, CString};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
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
