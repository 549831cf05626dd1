//! keepalived directive tree → `[[vrrp.instance]]` sections.
//!
//! Also two passes: `global_defs` (the VRRP version, gratuitous-ARP
//! defaults), `vrrp_script` and `vrrp_sync_group` are read first, because an
//! instance refers to scripts and groups defined anywhere in the file. Then
//! each `vrrp_instance` becomes one section with every keepalived default
//! that differs from ringlb's written out explicitly: above all
//! `version = 2` (keepalived's default; ringlb's is 3).
//!
//! Scripts that only check that nginx (or haproxy) runs are dropped with a
//! comment: ringlb is its own data plane and already gives up mastership
//! when its shards stall. Every other tracked script is inlined into the
//! instances that track it, with the instance's weight override.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::emit::{quote, Section, Value};
use super::lexer::{Dialect, Pos};
use super::syntax::Directive;
use super::units::seconds;
use super::{covered, Warnings};

const D: Dialect = Dialect::Keepalived;
/// VRRPv2 simple-text authentication carries 8 bytes; keepalived truncates.
const MAX_AUTH_PASS: usize = 8;

struct Script {
    script: Option<String>,
    interval: Option<Duration>,
    weight: Option<i64>,
    rise: Option<i64>,
    fall: Option<i64>,
    pos: Pos,
    notes: Vec<String>,
    used: bool,
}

struct Globals {
    version: u8,
    version_from: Option<String>,
    garp_repeat: Option<(i64, String)>,
    garp_refresh: Option<(Duration, String)>,
    garp_master_delay: Option<(Duration, String)>,
    garp_interval: Option<(Duration, String)>,
}

pub(crate) fn map(tree: &[Directive], upstreams: &[String], w: &mut Warnings) -> Vec<Section> {
    let mut notes = Vec::new();
    let mut g = Globals {
        version: 2,
        version_from: None,
        garp_repeat: None,
        garp_refresh: None,
        garp_master_delay: None,
        garp_interval: None,
    };
    let mut scripts: Vec<(String, Script)> = Vec::new();
    let mut groups: HashMap<String, String> = HashMap::new();
    for d in tree {
        match d.name.as_str() {
            "global_defs" => globals(d, &mut g, &mut notes, w),
            "vrrp_script" => {
                if let Some(name) = d.arg(0) {
                    scripts.push((name.to_string(), script(d, w)));
                } else {
                    w.skip(&mut notes, d, D, "`vrrp_script` needs a name");
                }
            }
            "vrrp_sync_group" => {
                let Some(name) = d.arg(0) else {
                    w.skip(&mut notes, d, D, "`vrrp_sync_group` needs a name");
                    continue;
                };
                for c in d.children() {
                    match c.name.as_str() {
                        "group" => {
                            for m in c.children() {
                                groups.insert(m.name.clone(), name.to_string());
                                for a in &m.args {
                                    groups.insert(a.text.clone(), name.to_string());
                                }
                            }
                        }
                        _ => w.skip(
                            &mut notes,
                            c,
                            D,
                            "sync group options are not supported (notify is per instance in ringlb)",
                        ),
                    }
                }
            }
            _ => {}
        }
    }

    let mut out = Vec::new();
    if !notes.is_empty() {
        out.push(Section {
            before: std::mem::take(&mut notes),
            ..Section::default()
        });
    }
    for d in tree {
        match d.name.as_str() {
            "global_defs" | "vrrp_script" | "vrrp_sync_group" => {}
            "vrrp_instance" => out.push(instance(d, &g, &mut scripts, &groups, upstreams, w)),
            "virtual_server" | "virtual_server_group" => w.skip(
                &mut notes,
                d,
                D,
                "LVS virtual servers are not supported; ringlb balances HTTP itself ([upstream.*])",
            ),
            "include" => w.skip(&mut notes, d, D, "the included file was not found"),
            _ => w.skip(&mut notes, d, D, "not supported by ringlb"),
        }
    }
    for (name, s) in &scripts {
        if !s.used {
            notes.push(format!(
                "vrrp_script {name} ({}) is not tracked by any instance; not imported",
                s.pos.short()
            ));
        }
    }
    if !notes.is_empty() {
        out.push(Section {
            before: notes,
            ..Section::default()
        });
    }
    out
}

fn globals(d: &Directive, g: &mut Globals, notes: &mut Vec<String>, w: &mut Warnings) {
    for c in d.children() {
        let src = format!("{} ({})", c.render(D), c.pos.short());
        match c.name.as_str() {
            "vrrp_version" => match c.arg(0) {
                Some("2") => {
                    g.version = 2;
                    g.version_from = Some(src);
                }
                Some("3") => {
                    g.version = 3;
                    g.version_from = Some(src);
                }
                _ => w.skip(notes, c, D, "expected 2 or 3"),
            },
            "vrrp_garp_master_repeat" => match c.arg(0).and_then(|s| s.parse().ok()) {
                Some(n) => g.garp_repeat = Some((n, src)),
                None => w.skip(notes, c, D, "expected a number"),
            },
            "vrrp_garp_master_delay" => match c.arg(0).and_then(seconds) {
                Some(v) => g.garp_master_delay = Some((v, src)),
                None => w.skip(notes, c, D, "expected seconds"),
            },
            "vrrp_garp_master_refresh" => match c.arg(0).and_then(seconds) {
                Some(v) => g.garp_refresh = Some((v, src)),
                None => w.skip(notes, c, D, "expected seconds"),
            },
            "vrrp_garp_interval" => match c.arg(0).and_then(seconds) {
                Some(v) => g.garp_interval = Some((v, src)),
                None => w.skip(notes, c, D, "expected seconds"),
            },
            "router_id" | "enable_script_security" | "script_user" | "max_auto_priority" => {
                covered(notes, c, D, "not needed by ringlb")
            }
            n if n.starts_with("notification_email") || n.starts_with("smtp_") => {
                w.skip(notes, c, D, "e-mail alerts are not supported; use `notify`")
            }
            _ => w.skip(notes, c, D, "not supported by ringlb"),
        }
    }
}

fn script(d: &Directive, w: &mut Warnings) -> Script {
    let mut s = Script {
        script: None,
        interval: None,
        weight: None,
        rise: None,
        fall: None,
        pos: d.pos.clone(),
        notes: Vec::new(),
        used: false,
    };
    for c in d.children() {
        let int = c.arg(0).and_then(|v| v.parse::<i64>().ok());
        match (c.name.as_str(), int) {
            ("script", _) => {
                let words: Vec<&str> = c.args.iter().map(|a| a.text.as_str()).collect();
                s.script = Some(words.join(" "));
            }
            ("interval", _) => match c.arg(0).and_then(seconds).filter(|v| !v.is_zero()) {
                Some(v) => s.interval = Some(v),
                None => w.skip(&mut s.notes, c, D, "expected seconds"),
            },
            ("weight", Some(n)) => {
                s.weight = Some(n);
                if c.args.len() > 1 {
                    w.skip(&mut s.notes, c, D, "`reverse` weights are not supported");
                }
            }
            ("rise", Some(n)) if n >= 1 => s.rise = Some(n),
            ("fall", Some(n)) if n >= 1 => s.fall = Some(n),
            ("timeout", _) | ("user", _) | ("init_fail", _) => {
                w.skip(&mut s.notes, c, D, "not supported for track scripts")
            }
            _ => w.skip(
                &mut s.notes,
                c,
                D,
                "invalid or unsupported vrrp_script option",
            ),
        }
    }
    s
}

/// A script that only checks that the old data plane runs.
fn checks_old_data_plane(cmd: &str) -> bool {
    let c = cmd.to_ascii_lowercase();
    c.contains("nginx") || c.contains("haproxy")
}

fn instance(
    d: &Directive,
    g: &Globals,
    scripts: &mut [(String, Script)],
    groups: &HashMap<String, String>,
    upstreams: &[String],
    w: &mut Warnings,
) -> Section {
    let name = d.arg(0).unwrap_or("VI_1").to_string();
    let mut s = Section::new("[[vrrp.instance]]");
    s.before.push(format!(
        "keepalived: vrrp_instance {name} ({})",
        d.pos.short()
    ));
    let mut notes: Vec<String> = Vec::new();
    let find = |key: &str| d.children().iter().rev().find(|c| c.name == key);
    let src = |c: &Directive| format!("{} ({})", c.render(D), c.pos.short());

    // The version decides how the rest is written.
    let mut version = g.version;
    let mut version_note = g
        .version_from
        .clone()
        .unwrap_or_else(|| "keepalived's default (ringlb's default is 3)".into());
    if let Some(c) = find("version") {
        match c.arg(0) {
            Some("2") => version = 2,
            Some("3") => version = 3,
            _ => w.warn(&c.pos, "`version` must be 2 or 3, ignored"),
        }
        version_note = src(c);
    }
    let mut vips: Vec<String> = Vec::new();
    let mut vip_family: Option<bool> = None;
    if let Some(c) = find("virtual_ipaddress") {
        let iface = find("interface").and_then(|i| i.arg(0));
        for v in c.children() {
            let addr = v.name.as_str();
            let ip = addr.split('/').next().unwrap_or("").parse::<IpAddr>();
            let Ok(ip) = ip else {
                w.warn(&v.pos, format!("`{addr}` is not an IP address, left out"));
                notes.push(format!(
                    "not imported: virtual_ipaddress {addr} ({})",
                    v.pos.short()
                ));
                continue;
            };
            if *vip_family.get_or_insert(ip.is_ipv4()) != ip.is_ipv4() {
                w.warn(
                    &v.pos,
                    format!("`{addr}`: one instance cannot mix IPv4 and IPv6 addresses (keepalived excludes it from adverts too); left out"),
                );
                notes.push(format!(
                    "not imported: virtual_ipaddress {addr} ({}): other address family; make a second instance",
                    v.pos.short()
                ));
                continue;
            }
            let opts: Vec<&str> = v.args.iter().map(|a| a.text.as_str()).collect();
            match opts.as_slice() {
                [] => {}
                ["dev", dev] if Some(*dev) == iface => {}
                _ => {
                    w.warn(
                        &v.pos,
                        format!("virtual_ipaddress options `{}` are not supported; the address goes on the instance interface", opts.join(" ")),
                    );
                    notes.push(format!(
                        "not imported: options `{}` of virtual_ipaddress {addr} ({})",
                        opts.join(" "),
                        v.pos.short()
                    ));
                }
            }
            vips.push(addr.to_string());
        }
    }
    if vip_family == Some(false) && version == 2 {
        w.warn(
            &d.pos,
            "IPv6 virtual addresses need VRRPv3 (keepalived switches too); version = 3 is used",
        );
        version = 3;
        version_note = "IPv6 needs VRRPv3".into();
    }

    s.set("name", Value::Str(name.clone()), None);
    if let Some(c) = find("state") {
        s.before.push(format!(
            "{}: not needed; ringlb elects the master by priority (highest wins), like keepalived after startup",
            src(c)
        ));
    }
    match find("interface").and_then(|c| c.arg(0).map(|i| (c, i))) {
        Some((c, i)) => s.set("interface", Value::Str(i.into()), Some(src(c))),
        None => {
            w.warn(
                &d.pos,
                format!("vrrp_instance {name} has no `interface`; \"eth0\" is written, check it"),
            );
            s.set(
                "interface",
                Value::Str("eth0".into()),
                Some("not in keepalived.conf: CHECK".into()),
            );
        }
    }
    match find("virtual_router_id")
        .and_then(|c| c.arg(0).and_then(|v| v.parse::<i64>().ok()).map(|v| (c, v)))
    {
        Some((c, v)) => s.set("virtual_router_id", Value::Int(v), Some(src(c))),
        None => w.warn(
            &d.pos,
            format!("vrrp_instance {name} has no valid `virtual_router_id`"),
        ),
    }
    if let Some(c) = find("priority") {
        match c.arg(0).and_then(|v| v.parse::<i64>().ok()) {
            Some(p) => s.set("priority", Value::Int(p), Some(src(c))),
            None => w.warn(&c.pos, "invalid `priority`, ignored"),
        }
    }
    s.set(
        "version",
        Value::Int(i64::from(version)),
        Some(version_note),
    );
    let advert = match find("advert_int") {
        Some(c) => match c.arg(0).and_then(seconds).filter(|v| !v.is_zero()) {
            Some(v) => Some((v, c)),
            None => {
                w.warn(&c.pos, "invalid `advert_int`, ignored");
                None
            }
        },
        None => None,
    };
    let advert_v = advert.as_ref().map_or(Duration::from_secs(1), |a| a.0);
    let fixed = fit_advert(advert_v, version);
    let mut advert_note = advert
        .as_ref()
        .map_or("keepalived's default 1s".into(), |(_, c)| src(c));
    if fixed != advert_v {
        let p = advert.as_ref().map_or(&d.pos, |(_, c)| &c.pos);
        w.warn(
            p,
            format!(
                "advert_int {advert_v:?} cannot be sent with VRRPv{version}; {} is used",
                super::emit::duration(fixed)
            ),
        );
        advert_note.push_str(&format!("; rounded for VRRPv{version}"));
    }
    s.set("advert_interval", Value::Dur(fixed), Some(advert_note));
    if let Some(c) = find("nopreempt") {
        s.set("preempt", Value::Bool(false), Some(src(c)));
    }
    if let Some(c) = find("preempt_delay") {
        match c.arg(0).and_then(seconds) {
            Some(v) => s.set("preempt_delay", Value::Dur(v), Some(src(c))),
            None => w.warn(&c.pos, "invalid `preempt_delay`, ignored"),
        }
    }
    if let Some(c) = find("accept") {
        s.set(
            "accept_mode",
            Value::Bool(true),
            Some(format!("{}; what a ringlb master always does", src(c))),
        );
    } else if let Some(c) = find("no_accept") {
        w.warn(
            &c.pos,
            "`no_accept` not carried over: a ringlb master serves its virtual addresses itself, \
             so it always accepts packets sent to them (accept_mode = true)",
        );
    }
    if !vips.is_empty() {
        let from = find("virtual_ipaddress")
            .map(|c| c.pos.short())
            .unwrap_or_default();
        s.set(
            "virtual_ipaddress",
            Value::StrList(vips),
            Some(format!("virtual_ipaddress ({from}); no /N = /32 (/128)")),
        );
    } else {
        w.warn(
            &d.pos,
            format!("vrrp_instance {name} has no usable virtual_ipaddress"),
        );
    }
    if let Some(c) = find("unicast_src_ip") {
        match c.arg(0) {
            Some(ip) => s.set("unicast_src", Value::Str(ip.into()), Some(src(c))),
            None => w.warn(&c.pos, "`unicast_src_ip` needs an address"),
        }
    }
    if let Some(c) = find("unicast_peer") {
        let peers: Vec<String> = c.children().iter().map(|p| p.name.clone()).collect();
        for p in c.children().iter().filter(|p| !p.args.is_empty()) {
            w.warn(&p.pos, "unicast_peer options are not supported, ignored");
            notes.push(format!(
                "not imported: options of unicast_peer {} ({})",
                p.name,
                p.pos.short()
            ));
        }
        s.set(
            "unicast_peers",
            Value::StrList(peers),
            Some(format!("unicast_peer ({})", c.pos.short())),
        );
    }
    if let Some(c) = find("authentication") {
        auth(c, version, &mut s, &mut notes, w);
    }
    if let Some(c) = find("track_interface") {
        let names: Vec<String> = c.children().iter().map(|i| i.name.clone()).collect();
        for i in c.children().iter().filter(|i| !i.args.is_empty()) {
            w.warn(&i.pos, "track_interface weights are not supported: a down interface puts the instance into FAULT");
            notes.push(format!(
                "not imported: weight of track_interface {} ({})",
                i.name,
                i.pos.short()
            ));
        }
        s.set(
            "track_interface",
            Value::StrList(names),
            Some(format!("track_interface ({})", c.pos.short())),
        );
    }
    if let Some(c) = find("track_script") {
        track_scripts(c, scripts, upstreams, &mut s, &mut notes, w);
    }
    if let Some(c) = find("notify") {
        let words: Vec<&str> = c.args.iter().map(|a| a.text.as_str()).collect();
        s.set(
            "notify",
            Value::Str(words.join(" ")),
            Some(format!(
                "{}; called as SCRIPT INSTANCE NAME STATE PRIORITY",
                c.pos.short()
            )),
        );
    }
    if let Some(group) = groups.get(&name) {
        s.set(
            "sync_group",
            Value::Str(group.clone()),
            Some("vrrp_sync_group".into()),
        );
    }
    let int = |v: &str| v.parse::<i64>().ok().map(Value::Int);
    let dur = |v: &str| seconds(v).map(Value::Dur);
    let global = |v: &Option<(Duration, String)>| v.clone().map(|(d, from)| (Value::Dur(d), from));
    let garp = [
        (
            "garp_master_repeat",
            "garp_repeat",
            &int as &dyn Fn(&str) -> Option<Value>,
            g.garp_repeat.clone().map(|(n, from)| (Value::Int(n), from)),
        ),
        (
            "garp_master_delay",
            "garp_master_delay",
            &dur,
            global(&g.garp_master_delay),
        ),
        (
            "garp_master_refresh",
            "garp_refresh",
            &dur,
            global(&g.garp_refresh),
        ),
    ];
    if let Some((v, from)) = &g.garp_interval {
        s.set("garp_interval", Value::Dur(*v), Some(from.clone()));
    }
    // The instance's keyword, else the global one (`vrrp_garp_…`).
    for (theirs, ours, parse, global) in garp {
        if let Some(c) = find(theirs) {
            match c.arg(0).and_then(parse) {
                Some(v) => s.set(ours, v, Some(src(c))),
                None => w.warn(&c.pos, format!("invalid `{theirs}`, ignored")),
            }
        } else if let Some((v, from)) = global {
            s.set(ours, v, Some(from));
        }
    }

    const MAPPED: &[&str] = &[
        "state",
        "interface",
        "virtual_router_id",
        "priority",
        "version",
        "advert_int",
        "nopreempt",
        "preempt_delay",
        "accept",
        "no_accept",
        "virtual_ipaddress",
        "unicast_src_ip",
        "unicast_peer",
        "authentication",
        "track_interface",
        "track_script",
        "notify",
        "garp_master_repeat",
        "garp_master_refresh",
        "garp_master_delay",
    ];
    for c in d.children() {
        if MAPPED.contains(&c.name.as_str()) {
            continue;
        }
        let why = match c.name.as_str() {
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
                "ringlb has one `notify` script that receives the new state as an argument; wrap these in one script"
            }
            "virtual_ipaddress_excluded" => "addresses outside the adverts are not supported; list them in virtual_ipaddress",
            "virtual_routes" | "virtual_rules" => "routes and rules are not managed by ringlb",
            "use_vmac" | "vmac_xmit_base" => "VMAC interfaces are not supported",
            "dont_track_primary" => "ringlb always tracks the instance interface",
            "smtp_alert" => "e-mail alerts are not supported; use `notify`",
            _ => "not supported by ringlb",
        };
        w.skip(&mut notes, c, D, why);
    }
    s.after = notes;
    s
}

/// The nearest interval the version can encode: v2 whole seconds 1..=255,
/// v3 centiseconds 1..=4095.
fn fit_advert(v: Duration, version: u8) -> Duration {
    if version == 2 {
        let s = (v.as_millis() + 500) / 1000;
        Duration::from_secs(s.clamp(1, 255) as u64)
    } else {
        let cs = (v.as_millis() + 5) / 10;
        Duration::from_millis(cs.clamp(1, 4095) as u64 * 10)
    }
}

fn auth(c: &Directive, version: u8, s: &mut Section, notes: &mut Vec<String>, w: &mut Warnings) {
    let get = |k: &str| c.children().iter().find(|x| x.name == k);
    let kind = get("auth_type").and_then(|x| x.arg(0)).unwrap_or("PASS");
    if kind != "PASS" {
        w.skip(
            notes,
            c,
            D,
            &format!("auth_type {kind} is not supported (only PASS)"),
        );
        return;
    }
    if version != 2 {
        w.skip(
            notes,
            c,
            D,
            "VRRPv3 has no authentication (keepalived ignores it too)",
        );
        return;
    }
    let Some(p) = get("auth_pass") else {
        w.skip(notes, c, D, "no auth_pass");
        return;
    };
    let pass = p.arg(0).unwrap_or("");
    if pass.is_empty() {
        w.skip(notes, c, D, "empty auth_pass");
        return;
    }
    let mut comment = format!("auth_type PASS ({})", p.pos.short());
    let mut end = pass.len().min(MAX_AUTH_PASS);
    while !pass.is_char_boundary(end) {
        end -= 1;
    }
    if end < pass.len() {
        w.warn(
            &p.pos,
            format!("auth_pass is longer than {MAX_AUTH_PASS} bytes; VRRPv2 sends only the first {MAX_AUTH_PASS} (keepalived truncates it the same way)"),
        );
        comment.push_str(&format!(
            "; truncated to {MAX_AUTH_PASS} bytes like keepalived does"
        ));
    }
    s.set(
        "auth_pass",
        Value::Str(pass[..end].to_string()),
        Some(comment),
    );
}

fn track_scripts(
    c: &Directive,
    scripts: &mut [(String, Script)],
    upstreams: &[String],
    s: &mut Section,
    notes: &mut Vec<String>,
    w: &mut Warnings,
) {
    let mut items = Vec::new();
    for t in c.children() {
        let Some((_, sc)) = scripts.iter_mut().find(|(n, _)| *n == t.name) else {
            w.warn(
                &t.pos,
                format!(
                    "track_script `{}`: no vrrp_script of that name, left out",
                    t.name
                ),
            );
            notes.push(format!(
                "not imported: track_script {} ({}): no such vrrp_script",
                t.name,
                t.pos.short()
            ));
            continue;
        };
        sc.used = true;
        notes.append(&mut sc.notes);
        let Some(cmd) = sc.script.clone() else {
            w.warn(
                &sc.pos,
                format!("vrrp_script `{}` has no `script`, left out", t.name),
            );
            continue;
        };
        if checks_old_data_plane(&cmd) {
            notes.push(format!(
                "vrrp_script {} (\"{cmd}\", {}) dropped: ringlb tracks its own data plane (stalled shards = FAULT), so a process check is unnecessary",
                t.name,
                sc.pos.short()
            ));
            if let Some(u) = upstreams.first() {
                notes.push(format!(
                    "to lower the priority when every backend is down instead: track_upstream = [{{ upstream = {}, weight = -50 }}]",
                    quote(u)
                ));
            }
            continue;
        }
        let mut weight = sc.weight;
        match (t.args.first().map(|a| a.text.as_str()), t.args.get(1)) {
            (Some("weight"), Some(a)) => match a.text.parse::<i64>() {
                Ok(n) => weight = Some(n),
                Err(_) => w.warn(&a.pos, "invalid track_script weight, ignored"),
            },
            (None, _) => {}
            _ => w.warn(&t.pos, "unsupported track_script options, ignored"),
        }
        let mut fields = vec![format!("script = {}", quote(&cmd))];
        if let Some(i) = sc.interval {
            fields.push(format!("interval = {}", quote(&super::emit::duration(i))));
        }
        if let Some(r) = sc.rise {
            fields.push(format!("rise = {r}"));
        }
        if let Some(f) = sc.fall {
            fields.push(format!("fall = {f}"));
        }
        if let Some(wt) = weight {
            fields.push(format!("weight = {}", wt.clamp(-254, 254)));
        }
        items.push(format!("{{ {} }}", fields.join(", ")));
    }
    if !items.is_empty() {
        s.set(
            "track_script",
            Value::Raw(format!("[{}]", items.join(", "))),
            Some(format!("track_script ({})", c.pos.short())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advert_intervals_fit_the_version() {
        let ms = Duration::from_millis;
        assert_eq!(fit_advert(ms(1000), 2), ms(1000));
        assert_eq!(fit_advert(ms(100), 2), ms(1000));
        assert_eq!(fit_advert(ms(2400), 2), ms(2000));
        assert_eq!(fit_advert(ms(100), 3), ms(100));
        assert_eq!(fit_advert(ms(15), 3), ms(20));
        assert_eq!(fit_advert(ms(1), 3), ms(10));
        assert_eq!(fit_advert(Duration::from_secs(60), 3), ms(40_950));
    }

    #[test]
    fn process_checks_are_recognised() {
        assert!(checks_old_data_plane("/bin/pidof nginx"));
        assert!(checks_old_data_plane("killall -0 haproxy"));
        assert!(!checks_old_data_plane("/usr/local/bin/check_db"));
    }
}
