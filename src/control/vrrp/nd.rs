//! Unsolicited Neighbor Advertisements: IPv6's gratuitous ARP.
//!
//! A new master of an IPv6 VIP must repoint every neighbour's cache entry
//! for it at once (RFC 5798 §6.4.2: "for each IPv6 address ... send an
//! Unsolicited Neighbor Advertisement with the Router Flag (R) set ... and
//! the Override flag (O) set"). The frame is built here exactly as
//! keepalived 2.2.7 sends it (captured; see the test), on the same
//! `AF_PACKET` socket and schedule as gratuitous ARP (`garp.rs`):
//!
//! - Ethernet to 33:33:00:00:00:01 (all-nodes) from the interface MAC;
//! - IPv6 from the VIP to ff02::1, hop limit 255 (RFC 4861 §7.1.2: a
//!   neighbour drops NDP messages with any other hop limit);
//! - ICMPv6 type 136, Override flag set, target = the VIP, one Target
//!   Link-Layer Address option with the MAC.
//!
//! keepalived sets the Router flag only when the host forwards; so does
//! [`frame`]'s caller via `router` (a load balancer does not route, and
//! setting R on a host would make neighbours treat it as a router).
//!
//! The source is the VIP itself: it was just added with `IFA_F_NODAD`
//! (`vip.rs`), so it is usable at once, and a frame on a packet socket needs
//! no route or source selection from the kernel.

use std::net::{IpAddr, Ipv6Addr};

use crate::proto::vrrp::wire::{finish, pseudo_header_v6_for, sum_words};

/// Ethernet + IPv6 + NA (24) + target link-layer address option (8).
pub const FRAME_LEN: usize = 14 + 40 + 32;
/// ICMPv6 type of a Neighbor Advertisement.
const NEIGHBOR_ADVERT: u8 = 136;
/// Next header: ICMPv6.
const ICMPV6: u8 = 58;
/// RFC 4861 §4.4 flags (first byte of the flags word).
const FLAG_ROUTER: u8 = 0x80;
const FLAG_OVERRIDE: u8 = 0x20;
/// Option type: Target Link-Layer Address.
const OPT_TARGET_LLADDR: u8 = 2;
/// All-nodes multicast and its Ethernet mapping (RFC 2464 §7).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];

/// One unsolicited Neighbor Advertisement for `vip` at `mac`.
pub fn frame(mac: [u8; 6], vip: Ipv6Addr, router: bool) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&ALL_NODES_MAC);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV6);
    let ip = &mut f[14..54];
    ip[0] = 0x60; // version 6, traffic class 0, flow label 0
    ip[4..6].copy_from_slice(&32u16.to_be_bytes());
    ip[6] = ICMPV6;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&vip.octets());
    ip[24..40].copy_from_slice(&ALL_NODES.octets());
    let na = &mut f[54..];
    na[0] = NEIGHBOR_ADVERT;
    na[4] = FLAG_OVERRIDE | if router { FLAG_ROUTER } else { 0 };
    na[8..24].copy_from_slice(&vip.octets());
    na[24] = OPT_TARGET_LLADDR;
    na[25] = 1; // in units of 8 bytes
    na[26..32].copy_from_slice(&mac);
    let sum = pseudo_header_v6_for(vip, ALL_NODES, 32, ICMPV6) + sum_words(na);
    na[2..4].copy_from_slice(&finish(sum).to_be_bytes());
    f
}

/// Whether the host forwards IPv6 on `ifname` (keepalived's rule for the
/// Router flag), read for the calling thread's namespace; false when unknown.
pub fn forwarding(ifname: &str) -> bool {
    // /proc/sys/net answers for the opening thread's network namespace.
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/forwarding");
    std::fs::read_to_string(path).is_ok_and(|s| s.trim() == "1")
}

/// The IPv6 addresses of a VIP list (the ones announced with NAs).
pub fn v6s(list: &[IpAddr]) -> impl Iterator<Item = Ipv6Addr> + '_ {
    list.iter().filter_map(|a| match a {
        IpAddr::V6(v) => Some(*v),
        IpAddr::V4(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// keepalived 2.2.7's unsolicited NA for 2001:2::100 from MAC
    /// 02:00:00:00:00:0a (tcpdump on the other end of a veth pair), whole
    /// Ethernet frame.
    const KEEPALIVED_NA: &str = "33330000000102000000000a86dd6000000000203aff\
                                 20010002000000000000000000000100ff020000000000000000000000000001\
                                 880012902000000020010002000000000000000000000100\
                                 020102000000000a";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn matches_keepalived_byte_for_byte() {
        let mac = [2, 0, 0, 0, 0, 0x0a];
        let f = frame(mac, "2001:2::100".parse().unwrap(), false);
        assert_eq!(f.to_vec(), hex(KEEPALIVED_NA));
    }

    #[test]
    fn router_flag_and_checksum() {
        let mac = [2, 0, 0, 0, 0, 0x0b];
        let vip: Ipv6Addr = "fd00::1".parse().unwrap();
        let f = frame(mac, vip, true);
        assert_eq!(f[54 + 4], FLAG_ROUTER | FLAG_OVERRIDE);
        // A correct ICMPv6 checksum sums (with the pseudo-header) to 0xffff.
        let sum = pseudo_header_v6_for(vip, ALL_NODES, 32, ICMPV6) + sum_words(&f[54..]);
        assert_eq!(finish(sum), 0);
        assert_eq!(&f[54 + 8..54 + 24], &vip.octets());
        assert_eq!(&f[54 + 26..], &mac);
    }
}
