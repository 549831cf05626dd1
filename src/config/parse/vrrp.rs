//! `[[vrrp.instance]]` sections: the keepalived `vrrp_instance` equivalent.
//!
//! The checks here are the ones that keep two routers from disagreeing on
//! the wire or one router from fighting itself: the advertisement interval
//! must be encodable in the chosen version (v2: whole seconds in 8 bits; v3:
//! centiseconds in 12 bits), authentication exists only in v2, and no two
//! instances may share a VRID on one interface (per address family, as in
//! RFC 5798 where IPv4 and IPv6 virtual routers are separate).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::super::defaults as def;
use super::super::{DataPlaneTrack, TrackScript, TrackUpstream, VrrpInstanceConfig};
use super::addr::{parse_ip, parse_vip};
use super::fields::{Field, Table, U32, U8};
use super::span::Diags;
use super::upstream::Upstreams;

const INSTANCE_KEYS: &[&str] = &[
    "name",
    "interface",
    "virtual_router_id",
    "priority",
    "advert_interval",
    "version",
    "preempt",
    "preempt_delay",
    "accept_mode",
    "virtual_ipaddress",
    "unicast_peers",
    "unicast_src",
    "auth_pass",
    "track_upstream",
    "track_interface",
    "track_script",
    "track_data_plane",
    "notify",
    "sync_group",
    "garp_repeat",
    "garp_interval",
    "garp_refresh",
    "garp_master_delay",
];

/// keepalived's bound on tracking weights.
const MAX_TRACK_WEIGHT: i64 = 254;
/// VRRPv2 simple-text authentication carries 8 bytes.
const MAX_AUTH_PASS: usize = 8;

pub(crate) fn read_all(root: &Table, d: &mut Diags, ups: &Upstreams) -> Vec<VrrpInstanceConfig> {
    let Some(section) = root.table(d, "vrrp", "[vrrp]") else {
        return Vec::new();
    };
    section.check_keys(d, &["instance"]);
    let tables = section
        .tables(d, "instance", "[[vrrp.instance]]")
        .unwrap_or_default();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut vrids: HashMap<(String, u8, bool), (String, usize)> = HashMap::new();
    let mut out = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let Some(inst) = read_instance(t, i, d, ups) else {
            continue;
        };
        if let Some(f) = t.field("name") {
            if let Some(&first) = names.get(&inst.name) {
                let line = d.line(first);
                d.error(
                    f.at,
                    format!(
                        "duplicate vrrp instance name {:?} (already used on line {line})",
                        inst.name
                    ),
                );
            } else {
                names.insert(inst.name.clone(), f.at);
            }
        }
        let ipv4 = inst
            .virtual_ipaddress
            .first()
            .is_none_or(|(ip, _)| ip.is_ipv4());
        let key = (inst.interface.clone(), inst.virtual_router_id, ipv4);
        let vrid_at = t.field("virtual_router_id").map_or(t.at, |f| f.at);
        if let Some((other, first)) = vrids.get(&key) {
            let line = d.line(*first);
            d.error(
                vrid_at,
                format!(
                    "virtual_router_id {} is already used on interface {:?} by instance {other:?} (line {line})",
                    inst.virtual_router_id, inst.interface
                ),
            );
        } else {
            vrids.insert(key, (inst.name.clone(), vrid_at));
        }
        out.push(inst);
    }
    out
}

fn read_instance(
    t: &Table,
    index: usize,
    d: &mut Diags,
    ups: &Upstreams,
) -> Option<VrrpInstanceConfig> {
    t.check_keys(d, INSTANCE_KEYS);
    // Required keys first, but keep going on failure to report the rest.
    let interface = t.required(d, "interface").and_then(|f| {
        let s = f.str(d)?;
        if s.is_empty() {
            d.error(f.at, "`interface` must name a network interface");
            return None;
        }
        Some(s.to_string())
    });
    let vrid = t
        .required(d, "virtual_router_id")
        .and_then(|f| f.int::<u8>(d, 1..=U8));
    let vips = t
        .required(d, "virtual_ipaddress")
        .and_then(|f| read_vips(&f, d));

    let version = t.int::<u8>(d, "version", 2..=3);
    let version_ok = version.is_some() || t.field("version").is_none();
    let version = version.unwrap_or(def::VRRP_VERSION);
    let name = match t.field("name") {
        Some(f) => f.str(d).map(str::to_string),
        None => Some(format!("VI_{}", index + 1)),
    };
    let priority = t.int(d, "priority", 1..=U8).unwrap_or(def::VRRP_PRIORITY);
    let mut advert_interval = def::VRRP_ADVERT;
    if let Some(f) = t.field("advert_interval") {
        if let Some(v) = f.duration(d) {
            if version_ok {
                check_advert(&f, v, version, d);
            }
            advert_interval = v;
        }
    }
    let auth_pass = t.field("auth_pass").and_then(|f| {
        if version_ok && version != 2 {
            let why = if t.field("version").is_some() {
                ""
            } else {
                " (`version` defaults to 3)"
            };
            d.error(
                f.key_at,
                format!("`auth_pass` is only supported with version = 2; VRRPv3 has no authentication{why}"),
            );
        }
        let s = f.str(d)?;
        if s.is_empty() || s.len() > MAX_AUTH_PASS {
            d.error(
                f.at,
                format!(
                    "`auth_pass` must be 1 to {MAX_AUTH_PASS} bytes (VRRPv2 simple-text authentication), found {}",
                    s.len()
                ),
            );
        }
        Some(s.to_string())
    });
    if let (Some(vips), true) = (&vips, version_ok && version == 2) {
        if vips.iter().any(|(ip, _)| ip.is_ipv6()) {
            let at = t.field("virtual_ipaddress").map_or(t.at, |f| f.at);
            d.error(
                at,
                "VRRP version 2 supports IPv4 only; use version = 3 for IPv6",
            );
        }
    }

    let family_v6 = vips
        .as_ref()
        .and_then(|v| v.first())
        .map(|(ip, _)| ip.is_ipv6());
    let unicast_peers = t
        .strings(d, "unicast_peers")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(s, at)| {
            let ip = parse_ip(s).map_err(|e| d.error(at, e)).ok()?;
            check_family(d, at, "unicast_peers", ip, family_v6);
            Some(ip)
        })
        .collect();
    let unicast_src = t.field("unicast_src").and_then(|f| {
        let ip = parse_ip(f.str(d)?).map_err(|e| d.error(f.at, e)).ok()?;
        check_family(d, f.at, "unicast_src", ip, family_v6);
        Some(ip)
    });

    let track_upstream = t
        .tables(d, "track_upstream", "a track_upstream entry")
        .unwrap_or_default()
        .iter()
        .filter_map(|tt| {
            tt.check_keys(d, &["upstream", "weight"]);
            let weight = track_weight(tt, d);
            let f = tt.required(d, "upstream")?;
            // Checked against the defined upstreams (unknown name = error);
            // kept by name, looked up in each snapshot.
            ups.lookup(d, &f)?;
            let upstream = f.str(d)?.to_string();
            Some(TrackUpstream { upstream, weight })
        })
        .collect();
    let track_interface = t
        .strings(d, "track_interface")
        .unwrap_or_default()
        .into_iter()
        .map(|(s, _)| s.to_string())
        .collect();
    let track_script = t
        .tables(d, "track_script", "a track_script entry")
        .unwrap_or_default()
        .iter()
        .filter_map(|ts| read_track_script(ts, d))
        .collect();
    let track_data_plane = t
        .table(d, "track_data_plane", "track_data_plane")
        .map_or(def::DATA_PLANE, |tt| read_data_plane(&tt, d));

    // Every key is read (and so checked) before any missing one ends this.
    let preempt = t.bool(d, "preempt").unwrap_or(def::VRRP_PREEMPT);
    let preempt_delay = t
        .duration(d, "preempt_delay")
        .unwrap_or(def::VRRP_PREEMPT_DELAY);
    check_accept_mode(t, d);
    let notify = t.str(d, "notify").map(str::to_string);
    let sync_group = t.str(d, "sync_group").map(str::to_string);
    let garp_repeat = t.int(d, "garp_repeat", 0..=U32).unwrap_or(def::GARP_REPEAT);
    let garp_interval = t.duration(d, "garp_interval").unwrap_or(def::GARP_INTERVAL);
    let garp_refresh = t.duration(d, "garp_refresh").unwrap_or(def::GARP_REFRESH);
    let garp_master_delay = t
        .duration(d, "garp_master_delay")
        .unwrap_or(def::GARP_MASTER_DELAY);

    Some(VrrpInstanceConfig {
        name: name?,
        interface: interface?,
        virtual_router_id: vrid?,
        priority,
        advert_interval,
        version,
        preempt,
        preempt_delay,
        virtual_ipaddress: vips?,
        unicast_peers,
        unicast_src,
        auth_pass,
        track_upstream,
        track_interface,
        track_script,
        track_data_plane,
        notify,
        sync_group,
        garp_repeat,
        garp_interval,
        garp_refresh,
        garp_master_delay,
        positions: identity_positions(t, d),
    })
}

/// `accept_mode`: only `true`, which is what a ringlb master always does.
///
/// VRRPv3's Accept_Mode says whether a master that is not the address owner
/// accepts packets addressed to the VIPs. ringlb *is* the service on the
/// VIP — its listeners must accept them — and on Linux a VIP is a local
/// address, so they are always accepted: `true`. `false` would need a
/// firewall rule dropping them (keepalived's `vrrp_iptables` /
/// `vrrp_nftables`), which would leave a backup-turned-master unable to
/// serve; it is refused rather than parsed and ignored.
fn check_accept_mode(t: &Table, d: &mut Diags) {
    if let (Some(f), Some(false)) = (t.field("accept_mode"), t.bool(d, "accept_mode")) {
        d.error(
            f.at,
            "`accept_mode = false` is not supported: a ringlb master serves its virtual addresses \
             itself, so it always accepts packets sent to them (VRRPv3 Accept_Mode = true; on \
             Linux a VIP is a local address). Dropping them would need a firewall rule and leave \
             the node unable to serve. Remove the line (or set `true`)",
        );
    }
}

/// Where the identity keys are (see `VrrpInstanceConfig::positions`).
fn identity_positions(t: &Table, d: &Diags) -> Vec<(&'static str, usize, usize)> {
    let mut out = vec![("", d.position(t.at).0, d.position(t.at).1)];
    for key in [
        "name",
        "interface",
        "virtual_router_id",
        "version",
        "virtual_ipaddress",
    ] {
        if let Some(f) = t.field(key) {
            let (line, col) = d.position(f.at);
            out.push((key, line, col));
        }
    }
    out
}

/// v2: whole seconds 1..=255 (8-bit field); v3: centiseconds 1..=4095 (12 bits).
fn check_advert(f: &Field, v: Duration, version: u8, d: &mut Diags) {
    let ok = if version == 2 {
        v.subsec_nanos() == 0 && (1..=255).contains(&v.as_secs())
    } else {
        let ns = v.as_nanos();
        ns.is_multiple_of(10_000_000) && (1..=4095).contains(&(ns / 10_000_000))
    };
    if !ok {
        let rule = if version == 2 {
            "a whole number of seconds from 1s to 255s"
        } else {
            "a multiple of 10ms from 10ms to 40.95s"
        };
        d.error(
            f.at,
            format!("with version = {version}, `advert_interval` must be {rule}, found {v:?}"),
        );
    }
}

fn read_vips(f: &Field, d: &mut Diags) -> Option<Vec<(IpAddr, u8)>> {
    let items = f.array(d)?;
    if items.is_empty() {
        d.error(f.at, "`virtual_ipaddress` must list at least one address");
        return None;
    }
    let mut vips = Vec::new();
    let mut ok = true;
    for item in &items {
        match item.str(d).map(parse_vip) {
            Some(Ok(v)) => vips.push((v, item.at)),
            Some(Err(e)) => {
                d.error(item.at, e);
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(((first, _), rest)) = vips.split_first() {
        for ((ip, _), at) in rest {
            if ip.is_ipv4() != first.0.is_ipv4() {
                d.error(
                    *at,
                    "an instance cannot mix IPv4 and IPv6 virtual addresses; use one instance per family",
                );
                ok = false;
            }
        }
    }
    ok.then(|| vips.into_iter().map(|(v, _)| v).collect())
}

/// A peer or source address must be of the instance's family (that of its
/// virtual addresses): IPv4 and IPv6 virtual routers are separate (RFC 5798).
fn check_family(d: &mut Diags, at: usize, key: &str, ip: IpAddr, family_v6: Option<bool>) {
    if let Some(v6) = family_v6.filter(|v6| *v6 != ip.is_ipv6()) {
        let (want, vips) = if v6 { (6, "IPv6") } else { (4, "IPv4") };
        d.error(
            at,
            format!("`{key}` {ip} is not IPv{want}: this instance's virtual addresses are {vips}"),
        );
    }
}

fn track_weight(t: &Table, d: &mut Diags) -> i32 {
    t.int(d, "weight", -MAX_TRACK_WEIGHT..=MAX_TRACK_WEIGHT)
        .unwrap_or(def::TRACK_WEIGHT)
}

fn read_data_plane(t: &Table, d: &mut Diags) -> DataPlaneTrack {
    t.check_keys(
        d,
        &[
            "weight",
            "stall_after",
            "starved_after",
            "fault_after",
            "fall",
            "rise",
        ],
    );
    let mut p = def::DATA_PLANE;
    if let Some(w) = t.int(d, "weight", -MAX_TRACK_WEIGHT..=0) {
        p.weight = w;
    }
    for (key, slot) in [
        ("stall_after", &mut p.stall_after),
        ("starved_after", &mut p.starved_after),
        ("fault_after", &mut p.fault_after),
    ] {
        if let Some(v) = t.positive_duration(d, key) {
            *slot = v;
        }
    }
    if let Some(v) = t.int(d, "fall", 1..=U32) {
        p.fall = v;
    }
    if let Some(v) = t.int(d, "rise", 1..=U32) {
        p.rise = v;
    }
    if !(p.stall_after <= p.starved_after && p.starved_after <= p.fault_after) {
        d.error(
            t.at,
            format!(
                "track_data_plane needs stall_after <= starved_after <= fault_after, found {:?}, {:?}, {:?}",
                p.stall_after, p.starved_after, p.fault_after
            ),
        );
    }
    p
}

fn read_track_script(t: &Table, d: &mut Diags) -> Option<TrackScript> {
    t.check_keys(d, &["script", "interval", "rise", "fall", "weight"]);
    let interval = t
        .positive_duration(d, "interval")
        .unwrap_or(def::TRACK_SCRIPT_INTERVAL);
    let rise = t.int(d, "rise", 1..=U32).unwrap_or(def::TRACK_SCRIPT_RISE);
    let fall = t.int(d, "fall", 1..=U32).unwrap_or(def::TRACK_SCRIPT_FALL);
    let weight = track_weight(t, d);
    let script = t.required(d, "script").and_then(|f| {
        let s = f.str(d)?;
        if s.trim().is_empty() {
            d.error(f.at, "`script` must be a command to run");
            return None;
        }
        Some(s.to_string())
    })?;
    Some(TrackScript {
        script,
        interval,
        rise,
        fall,
        weight,
    })
}
