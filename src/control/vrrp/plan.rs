//! What a reload (SIGHUP) does to each VRRP instance: a pure decision.
//!
//! Instances are paired by `name`. An instance's **identity** is its name,
//! interface, `virtual_router_id`, `version` and address family: what the
//! protocol and the peers know it by (the VRID and version are on the wire,
//! the interface and family pick the socket and the multicast group). While
//! the identity stays, the running state machine stays — no re-election, no
//! VIP removed and re-added — and every other setting is applied to it live:
//!
//! - `priority`: the next advert carries it at once (a master advertises
//!   immediately; a master whose priority fell keeps mastership until a peer
//!   preempts it by the protocol's rules; a backup whose priority rose above
//!   the master's takes over on the master's next advert if it preempts);
//! - `virtual_ipaddress`: added addresses are added (and announced with
//!   gratuitous ARP) on a master, removed ones removed; the advert carries
//!   the new list;
//! - advert interval, preempt, preempt delay, `auth_pass`,
//!   unicast peers/source, tracking, `notify`, GARP settings, sync group.
//!
//! A new name starts a new instance (Initialize → Backup, or Master for an
//! address owner); a name gone resigns (a master sends a priority-0 advert
//! and drops its VIPs). A name whose identity changed is **refused**: the
//! peers would see a different virtual router under the same name, so the
//! operator says so explicitly by renaming (resign the old, start the new)
//! or restarts. A refused reload changes nothing (`runtime::reload`).
//!
//! keepalived, for contrast, re-creates every instance on reload and
//! re-runs the election (its issues #349, #1425, #2159 show masters that
//! flap on a reload); ringlb keeps the machine.

use std::net::IpAddr;

use crate::config::VrrpInstanceConfig;

/// What a reload does to one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Only in the new config: start it.
    Start,
    /// Only in the old config: resign (priority-0 advert if master), drop VIPs.
    Resign,
    /// Same identity and settings: nothing to do.
    Keep,
    /// Same identity: apply these changes to the running machine.
    Update(Changes),
    /// Same name, different identity: cannot be applied live.
    Refuse(Refusal),
}

/// The identity field that changed, old value and new value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The config key (`interface`, `virtual_router_id`, `version`,
    /// `virtual_ipaddress` for the family).
    pub key: &'static str,
    pub old: String,
    pub new: String,
}

impl Refusal {
    /// The operator's message for instance `name`.
    pub fn message(&self, name: &str) -> String {
        format!(
            "vrrp instance {name:?}: `{}` changed from {} to {}; that makes it a different \
             virtual router and cannot be applied by a reload (rename the instance to replace \
             it — the old one resigns, the new one starts — or restart)",
            self.key, self.old, self.new
        )
    }
}

/// Everything that differs between two configs of one instance identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// (old, new) configured priority.
    pub priority: Option<(u8, u8)>,
    pub vips_added: Vec<(IpAddr, u8)>,
    pub vips_removed: Vec<(IpAddr, u8)>,
    /// Advert interval, preempt, preempt delay, `auth_pass`:
    /// the machine's protocol settings are replaced.
    pub protocol: bool,
    /// `unicast_peers` / `unicast_src`: destinations, accepted sources,
    /// source address (and so the socket's multicast membership).
    pub peers: bool,
    /// `track_*`: the tracker is rebuilt.
    pub tracking: bool,
    pub notify: bool,
    pub garp: bool,
    pub sync_group: bool,
}

impl Changes {
    /// A short list of what changed, for the reload log line.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some((a, b)) = self.priority {
            parts.push(format!("priority {a} -> {b}"));
        }
        for (a, p) in &self.vips_added {
            parts.push(format!("+{a}/{p}"));
        }
        for (a, p) in &self.vips_removed {
            parts.push(format!("-{a}/{p}"));
        }
        for (flag, what) in [
            (self.protocol, "advert/preempt/auth"),
            (self.peers, "peers"),
            (self.tracking, "tracking"),
            (self.notify, "notify"),
            (self.garp, "garp"),
            (self.sync_group, "sync_group"),
        ] {
            if flag {
                parts.push(what.to_string());
            }
        }
        parts.join(", ")
    }
}

fn family(c: &VrrpInstanceConfig) -> &'static str {
    match c.virtual_ipaddress.first() {
        Some((IpAddr::V6(_), _)) => "IPv6",
        _ => "IPv4",
    }
}

/// The first identity field that differs, if any.
pub fn identity_change(old: &VrrpInstanceConfig, new: &VrrpInstanceConfig) -> Option<Refusal> {
    let q = |s: &str| format!("{s:?}");
    let checks = [
        ("interface", q(&old.interface), q(&new.interface)),
        (
            "virtual_router_id",
            old.virtual_router_id.to_string(),
            new.virtual_router_id.to_string(),
        ),
        ("version", old.version.to_string(), new.version.to_string()),
        (
            "virtual_ipaddress",
            format!("{} addresses", family(old)),
            format!("{} addresses", family(new)),
        ),
    ];
    checks
        .into_iter()
        .find(|(_, a, b)| a != b)
        .map(|(key, old, new)| Refusal { key, old, new })
}

/// What a reload from `old` to `new` (either absent) does to one instance.
pub fn decide(old: Option<&VrrpInstanceConfig>, new: Option<&VrrpInstanceConfig>) -> Action {
    let (old, new) = match (old, new) {
        (None, None) => return Action::Keep,
        (None, Some(_)) => return Action::Start,
        (Some(_), None) => return Action::Resign,
        (Some(o), Some(n)) => (o, n),
    };
    if let Some(r) = identity_change(old, new) {
        return Action::Refuse(r);
    }
    let c = Changes {
        priority: (old.priority != new.priority).then_some((old.priority, new.priority)),
        vips_added: new
            .virtual_ipaddress
            .iter()
            .filter(|v| !old.virtual_ipaddress.contains(v))
            .copied()
            .collect(),
        vips_removed: old
            .virtual_ipaddress
            .iter()
            .filter(|v| !new.virtual_ipaddress.contains(v))
            .copied()
            .collect(),
        protocol: old.advert_interval != new.advert_interval
            || old.preempt != new.preempt
            || old.preempt_delay != new.preempt_delay
            || old.auth_pass != new.auth_pass,
        peers: old.unicast_peers != new.unicast_peers || old.unicast_src != new.unicast_src,
        tracking: old.track_interface != new.track_interface
            || old.track_data_plane != new.track_data_plane
            || !same_by(&old.track_upstream, &new.track_upstream, |a, b| {
                a.upstream == b.upstream && a.weight == b.weight
            })
            || !same_by(&old.track_script, &new.track_script, |a, b| {
                (&a.script, a.interval, a.rise, a.fall, a.weight)
                    == (&b.script, b.interval, b.rise, b.fall, b.weight)
            }),
        notify: old.notify != new.notify,
        garp: (
            old.garp_repeat,
            old.garp_interval,
            old.garp_refresh,
            old.garp_master_delay,
        ) != (
            new.garp_repeat,
            new.garp_interval,
            new.garp_refresh,
            new.garp_master_delay,
        ),
        sync_group: old.sync_group != new.sync_group,
    };
    if c == Changes::default() {
        Action::Keep
    } else {
        Action::Update(c)
    }
}

fn same_by<T>(a: &[T], b: &[T], eq: impl Fn(&T, &T) -> bool) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| eq(x, y))
}

/// A reload's plan: `(instance name, action)`, or the refused instances.
pub type Plan = Result<Vec<(String, Action)>, Vec<(String, Refusal)>>;

/// The whole reload: one `(name, action)` per instance in either config
/// (old order, then instances only in the new one), or every refusal's
/// message when any instance cannot be applied (then nothing is).
pub fn plan(old: &[VrrpInstanceConfig], new: &[VrrpInstanceConfig]) -> Plan {
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for o in old {
        let n = new.iter().find(|n| n.name == o.name);
        match decide(Some(o), n) {
            Action::Refuse(r) => refused.push((o.name.clone(), r)),
            a => out.push((o.name.clone(), a)),
        }
    }
    for n in new.iter().filter(|n| !old.iter().any(|o| o.name == n.name)) {
        out.push((n.name.clone(), Action::Start));
    }
    if refused.is_empty() {
        Ok(out)
    } else {
        Err(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TrackScript, TrackUpstream};
    use std::time::Duration;

    fn base() -> VrrpInstanceConfig {
        crate::config::parse_str(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"app\"\n[upstream.app]\n\
             [[upstream.app.server]]\naddress = \"127.0.0.1:9\"\n[[vrrp.instance]]\nname = \"VI_1\"\n\
             interface = \"eth0\"\nvirtual_router_id = 51\npriority = 100\n\
             virtual_ipaddress = [\"198.18.0.100/24\"]\n",
            "t.toml",
        )
        .unwrap()
        .vrrp
        .remove(0)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_instance_table() {
        type Edit = fn(&mut VrrpInstanceConfig);
        let upd = |c: Changes| Action::Update(c);
        // (what changes, edit of the new config, expected action)
        let cases: Vec<(&str, Edit, Action)> = vec![
            ("nothing", |_| {}, Action::Keep),
            (
                "priority",
                |c| c.priority = 150,
                upd(Changes {
                    priority: Some((100, 150)),
                    ..Default::default()
                }),
            ),
            (
                "vip added",
                |c| c.virtual_ipaddress.push((ip("198.18.0.101"), 32)),
                upd(Changes {
                    vips_added: vec![(ip("198.18.0.101"), 32)],
                    ..Default::default()
                }),
            ),
            (
                "vip replaced",
                |c| c.virtual_ipaddress = vec![(ip("198.18.0.102"), 24)],
                upd(Changes {
                    vips_added: vec![(ip("198.18.0.102"), 24)],
                    vips_removed: vec![(ip("198.18.0.100"), 24)],
                    ..Default::default()
                }),
            ),
            (
                "vip prefix",
                |c| c.virtual_ipaddress = vec![(ip("198.18.0.100"), 32)],
                upd(Changes {
                    vips_added: vec![(ip("198.18.0.100"), 32)],
                    vips_removed: vec![(ip("198.18.0.100"), 24)],
                    ..Default::default()
                }),
            ),
            (
                "advert interval",
                |c| c.advert_interval = Duration::from_millis(20),
                upd(Changes {
                    protocol: true,
                    ..Default::default()
                }),
            ),
            (
                "preempt",
                |c| c.preempt = !c.preempt,
                upd(Changes {
                    protocol: true,
                    ..Default::default()
                }),
            ),
            (
                "peers",
                |c| c.unicast_peers = vec![ip("198.18.0.2")],
                upd(Changes {
                    peers: true,
                    ..Default::default()
                }),
            ),
            (
                "unicast_src",
                |c| c.unicast_src = Some(ip("198.18.0.1")),
                upd(Changes {
                    peers: true,
                    ..Default::default()
                }),
            ),
            (
                "track_upstream weight",
                |c| {
                    c.track_upstream = vec![TrackUpstream {
                        upstream: "app".into(),
                        weight: -50,
                    }]
                },
                upd(Changes {
                    tracking: true,
                    ..Default::default()
                }),
            ),
            (
                "track_script",
                |c| {
                    c.track_script = vec![TrackScript {
                        script: "/bin/true".into(),
                        interval: Duration::from_secs(1),
                        rise: 1,
                        fall: 1,
                        weight: 0,
                    }]
                },
                upd(Changes {
                    tracking: true,
                    ..Default::default()
                }),
            ),
            (
                "notify",
                |c| c.notify = Some("/bin/true".into()),
                upd(Changes {
                    notify: true,
                    ..Default::default()
                }),
            ),
            (
                "garp",
                |c| c.garp_repeat += 1,
                upd(Changes {
                    garp: true,
                    ..Default::default()
                }),
            ),
            (
                "sync group",
                |c| c.sync_group = Some("g".into()),
                upd(Changes {
                    sync_group: true,
                    ..Default::default()
                }),
            ),
            (
                "interface",
                |c| c.interface = "eth1".into(),
                Action::Refuse(Refusal {
                    key: "interface",
                    old: "\"eth0\"".into(),
                    new: "\"eth1\"".into(),
                }),
            ),
            (
                "vrid",
                |c| c.virtual_router_id = 52,
                Action::Refuse(Refusal {
                    key: "virtual_router_id",
                    old: "51".into(),
                    new: "52".into(),
                }),
            ),
            (
                "version",
                |c| c.version = 2,
                Action::Refuse(Refusal {
                    key: "version",
                    old: "3".into(),
                    new: "2".into(),
                }),
            ),
            (
                "family",
                |c| c.virtual_ipaddress = vec![(ip("fe80::1"), 64)],
                Action::Refuse(Refusal {
                    key: "virtual_ipaddress",
                    old: "IPv4 addresses".into(),
                    new: "IPv6 addresses".into(),
                }),
            ),
        ];
        let old = base();
        for (what, edit, want) in cases {
            let mut new = old.clone();
            edit(&mut new);
            assert_eq!(decide(Some(&old), Some(&new)), want, "{what}");
        }
        assert_eq!(decide(None, Some(&old)), Action::Start);
        assert_eq!(decide(Some(&old), None), Action::Resign);
        assert_eq!(decide(None, None), Action::Keep);
    }

    #[test]
    fn whole_reload_is_refused_if_any_instance_is() {
        let a = base();
        let mut b = base();
        b.name = "VI_2".into();
        b.virtual_router_id = 52;
        let mut c = base();
        c.name = "VI_3".into();
        c.virtual_router_id = 53;
        let mut a2 = a.clone();
        a2.priority = 200;
        // a updated, b removed, c added.
        let p = plan(&[a.clone(), b.clone()], &[a2, c.clone()]).unwrap();
        let names: Vec<(&str, bool)> = p
            .iter()
            .map(|(n, act)| (n.as_str(), matches!(act, Action::Update(_))))
            .collect();
        assert_eq!(names, [("VI_1", true), ("VI_2", false), ("VI_3", false)]);
        assert_eq!(p[1].1, Action::Resign);
        assert_eq!(p[2].1, Action::Start);
        // b changes VRID under its name: the whole plan is refused.
        let mut b2 = b.clone();
        b2.virtual_router_id = 60;
        let err = plan(&[a.clone(), b], &[a, b2]).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].0, "VI_2");
        let msg = err[0].1.message("VI_2");
        assert!(
            msg.contains("`virtual_router_id` changed from 52 to 60"),
            "{msg}"
        );
    }

    #[test]
    fn describe_lists_the_changes() {
        let c = Changes {
            priority: Some((100, 150)),
            vips_added: vec![(ip("198.18.0.101"), 32)],
            tracking: true,
            ..Default::default()
        };
        assert_eq!(
            c.describe(),
            "priority 100 -> 150, +198.18.0.101/32, tracking"
        );
    }
}
