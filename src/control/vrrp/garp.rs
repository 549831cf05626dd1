//! Gratuitous ARP: tell the segment that a VIP now lives at our MAC.
//!
//! A new master must repoint every neighbour's ARP cache at once, or clients
//! keep sending to the dead master's MAC until their entries expire. Like
//! keepalived, the frame is an ARP *request* for the VIP from the VIP
//! (sender IP = target IP = VIP, sender MAC = the interface MAC), broadcast;
//! Linux neighbours update an existing entry from it. It is sent on an
//! `AF_PACKET` socket bound to the interface, built with `pnet_packet`.
//! IPv6 VIPs get the IPv6 equivalent, an unsolicited Neighbor
//! Advertisement (`nd.rs`), on the same socket and schedule.
//!
//! [`Schedule`] is the sans-IO part: `garp_repeat` frames `garp_interval`
//! apart right after becoming master, the same burst again
//! `garp_master_delay` later (if non-zero; 5 s by default, as keepalived),
//! then one round every `garp_refresh` (if non-zero), until the instance
//! leaves Master. The second burst repairs what the first could not: a
//! neighbour that missed it, or one that asked for the VIP while the
//! previous master still answered for it (a gracefully stopping ringlb
//! keeps its VIPs for a short linger after the handover:
//! `handover.rs`).

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use pnet_base::MacAddr;
use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, MutableEthernetPacket};

/// Ethernet header + ARP for IPv4 over Ethernet.
pub const FRAME_LEN: usize = 14 + 28;

/// Builds one gratuitous ARP frame for `ip` from `mac`.
pub fn frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut buf = [0u8; FRAME_LEN];
    let src = MacAddr::from(mac);
    {
        let mut eth = MutableEthernetPacket::new(&mut buf[..]).expect("frame fits");
        eth.set_destination(MacAddr::broadcast());
        eth.set_source(src);
        eth.set_ethertype(EtherTypes::Arp);
    }
    let mut arp = MutableArpPacket::new(&mut buf[14..]).expect("arp fits");
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(ArpOperations::Request);
    arp.set_sender_hw_addr(src);
    arp.set_sender_proto_addr(ip);
    arp.set_target_hw_addr(MacAddr::broadcast());
    arp.set_target_proto_addr(ip);
    buf
}

/// An `AF_PACKET` socket for sending frames on one interface. It is opened
/// with protocol 0, so the kernel queues nothing on it: it only sends.
pub struct ArpSocket {
    fd: OwnedFd,
    ifindex: u32,
    /// The Router flag of neighbour advertisements (the host forwards IPv6
    /// on this interface, keepalived's rule).
    router_v6: bool,
}

impl ArpSocket {
    pub fn open(ifindex: u32) -> io::Result<ArpSocket> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes, NUL-terminated.
        let router_v6 = !unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) }.is_null()
            // SAFETY: a non-null return means `name` holds a NUL-terminated name.
            && unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
                .to_str()
                .is_ok_and(super::nd::forwarding);
        Ok(ArpSocket {
            fd,
            ifindex,
            router_v6,
        })
    }

    /// Announces `ip` at `mac`: a gratuitous ARP for IPv4, an unsolicited
    /// neighbour advertisement for IPv6.
    pub fn send(&self, mac: [u8; 6], ip: IpAddr) -> io::Result<()> {
        match ip {
            IpAddr::V4(v4) => self.send_frame(&frame(mac, v4), libc::ETH_P_ARP, [0xff; 6]),
            IpAddr::V6(v6) => {
                let f = super::nd::frame(mac, v6, self.router_v6);
                let mut dst = [0u8; 6];
                dst.copy_from_slice(&f[..6]);
                self.send_frame(&f, libc::ETH_P_IPV6, dst)
            }
        }
    }

    fn send_frame(&self, f: &[u8], ethertype: libc::c_int, dst: [u8; 6]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (ethertype as u16).to_be();
        to.sll_ifindex = self.ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&dst);
        // SAFETY: `f` and `to` are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                f.as_ptr().cast(),
                f.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// When to send the next gratuitous ARP round (sans-IO).
#[derive(Debug, Clone)]
pub struct Schedule {
    repeat: u32,
    interval: Duration,
    refresh: Duration,
    master_delay: Duration,
    /// Rounds left in the current burst.
    left: u32,
    next: Option<Instant>,
    /// The delayed second burst is still to come.
    second: bool,
}

impl Schedule {
    pub fn new(
        repeat: u32,
        interval: Duration,
        refresh: Duration,
        master_delay: Duration,
    ) -> Schedule {
        Schedule {
            repeat: repeat.max(1),
            interval,
            refresh,
            master_delay,
            left: 0,
            next: None,
            second: false,
        }
    }

    /// Became master: a burst starts now (and another one after
    /// `master_delay`).
    pub fn start(&mut self, now: Instant) {
        self.left = self.repeat;
        self.next = Some(now);
        self.second = !self.master_delay.is_zero();
    }

    /// Left master: nothing more to send.
    pub fn stop(&mut self) {
        self.left = 0;
        self.next = None;
        self.second = false;
    }

    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// Whether a round is due at `now`; if so, it is consumed and the next
    /// one scheduled.
    pub fn take_due(&mut self, now: Instant) -> bool {
        match self.next {
            Some(t) if t <= now => {}
            _ => return false,
        }
        self.left = self.left.saturating_sub(1);
        self.next = if self.left > 0 {
            Some(now + self.interval)
        } else if self.second {
            self.second = false;
            self.left = self.repeat;
            Some(now + self.master_delay)
        } else if !self.refresh.is_zero() {
            // One refresh round, then the next refresh.
            self.left = 1;
            Some(now + self.refresh)
        } else {
            None
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout() {
        let mac = [0x02, 0, 0, 0, 0, 0x0a];
        let ip = Ipv4Addr::new(198, 18, 0, 100);
        let f = frame(mac, ip);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        // htype 1, ptype 0x0800, hlen 6, plen 4, op 1 (request)
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[28..32], &ip.octets());
        assert_eq!(&f[32..38], &[0xff; 6]);
        assert_eq!(&f[38..42], &ip.octets());
    }

    #[test]
    fn a_second_burst_after_the_master_delay_then_refresh() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Schedule::new(2, ms(10), ms(60_000), ms(5000));
        s.start(t0);
        let mut sent = Vec::new();
        while let Some(t) = s.next().filter(|t| *t < t0 + ms(70_000)) {
            assert!(s.take_due(t));
            sent.push(t.duration_since(t0));
        }
        assert_eq!(sent, [ms(0), ms(10), ms(5010), ms(5020), ms(65_020)]);
        // Master again later: the delayed burst comes again.
        s.stop();
        assert_eq!(s.next(), None);
        s.start(t0 + ms(100_000));
        assert!(s.take_due(t0 + ms(100_000)));
        assert!(s.take_due(t0 + ms(100_010)));
        assert_eq!(s.next(), Some(t0 + ms(105_010)));
    }

    #[test]
    fn burst_then_refresh() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Schedule::new(3, ms(10), ms(1000), Duration::ZERO);
        assert_eq!(s.next(), None);
        assert!(!s.take_due(t0));
        s.start(t0);
        assert!(s.take_due(t0));
        assert!(!s.take_due(t0 + ms(5)));
        assert!(s.take_due(t0 + ms(10)));
        assert!(s.take_due(t0 + ms(20)));
        // Burst over: the next one is the refresh.
        assert_eq!(s.next(), Some(t0 + ms(1020)));
        assert!(s.take_due(t0 + ms(1020)));
        assert_eq!(s.next(), Some(t0 + ms(2020)));
        s.stop();
        assert!(!s.take_due(t0 + ms(5000)));
    }

    #[test]
    fn burst_without_refresh_ends() {
        let t0 = Instant::now();
        let mut s = Schedule::new(2, Duration::from_millis(10), Duration::ZERO, Duration::ZERO);
        s.start(t0);
        assert!(s.take_due(t0));
        assert!(s.take_due(t0 + Duration::from_millis(10)));
        assert_eq!(s.next(), None);
    }
}
