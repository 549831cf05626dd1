//! A throwaway L2 lab for VRRP tests: network namespaces on one bridge.
//!
//! Layout per lab (prefix `rl<pid><n>`, unique per test in this run):
//!
//! ```text
//!   <prefix>-sw : bridge br0   (the "switch")
//!   <prefix>-a  : eth0 198.18.0.1/24   node a
//!   <prefix>-b  : eth0 198.18.0.2/24   node b
//!   <prefix>-c  : eth0 198.18.0.3/24   client
//! ```
//!
//! Every node can run the real `ringlb` binary (with the built-in backend on
//! 127.0.0.1:9000 of its namespace as upstream) or keepalived. Processes
//! are tracked by PID and killed on drop; namespaces are always deleted on
//! drop, and on a failing test the logs of every process are printed.
#![allow(dead_code)]

pub mod peer_view;
#[path = "../common/python.rs"]
pub mod python;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use ringlb::cli::lab::netns;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ringlb");
pub const VIP: &str = "198.18.0.100";
/// The admin endpoint of a ringlb started with [`Lab::ringlb_opts`] (inside its node).
pub const ADMIN: &str = "127.0.0.1:9901";

/// A started process in a lab namespace.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    /// keepalived's VRRP child writes its PID here.
    pub extra_pidfile: Option<PathBuf>,
    pub alive: bool,
}

pub struct Lab {
    pub prefix: String,
    pub dir: PathBuf,
    /// Namespaces, links and their teardown (dropped after `procs` are killed).
    net: netns::Lab,
    pub procs: Vec<Proc>,
    /// This lab's share of the host, released last (after teardown).
    _host: HostShare,
}

/// The host the labs of one test binary share. Labs run side by side
/// (`cargo test` runs tests on parallel threads), which is fine while each
/// keeps to its own namespaces; a test that disturbs the whole host on
/// purpose — busy loops and real-time bursts on the CPUs, a flood of
/// console writes that holds a CPU with interrupts off — runs alone, or
/// another lab's ringlb would be starved by it and see a dead data plane
/// that is not its own (seen: a console-flood test failing with "shard 0
/// starved of CPU, no progress for 310ms" while the CPU-hog test ran).
static HOST: RwLock<()> = RwLock::new(());

enum HostShare {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(args: &[&str]) -> String {
    run(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `f` every 20 ms for up to `limit`; true once it holds.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` every 20 ms for `window`; true if it held every time.
pub fn always(window: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < window {
        if !f() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

impl Lab {
    /// Switch + nodes `a`, `b` and client `c` (the library's lab,
    /// `ringlb::cli::lab::netns`, with jumbo frames). Panics with a clear
    /// message when namespaces can't be made (not root / no netns support).
    pub fn new() -> Lab {
        // A test that panicked holding its share poisons nothing here.
        let share = HOST.read().unwrap_or_else(|e| e.into_inner());
        Lab::with_share(HostShare::Shared(share))
    }

    /// A lab for a test that disturbs the whole host: it waits for every
    /// other lab of this binary to end, and none starts while it runs.
    pub fn alone() -> Lab {
        let share = HOST.write().unwrap_or_else(|e| e.into_inner());
        Lab::with_share(HostShare::Alone(share))
    }

    fn with_share(host: HostShare) -> Lab {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("rl{}{n}", std::process::id());
        let nodes = [
            ("a", "198.18.0.1"),
            ("b", "198.18.0.2"),
            ("c", "198.18.0.3"),
        ];
        let net = netns::Lab::new(&prefix, &nodes).unwrap_or_else(|e| {
            panic!("VRRP namespace tests need root and network namespaces (CI has them): {e}")
        });
        for (node, _) in nodes {
            // Jumbo MTU so tests can send oversized VRRP datagrams unfragmented.
            net.set_mtu(node, 9000)
                .unwrap_or_else(|e| panic!("mtu 9000 on {node}: {e}"));
        }
        Lab {
            prefix,
            dir: net.dir.clone(),
            net,
            procs: Vec::new(),
            _host: host,
        }
    }

    pub fn ns(&self, node: &str) -> String {
        self.net.ns(node)
    }

    fn spawn(&mut self, name: &str, node: &str, args: &[&str]) -> usize {
        let log = self.dir.join(format!("{name}.log"));
        let ns = self.ns(node);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(self.dir.join(format!("{name}.err"))).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
            extra_pidfile: None,
            alive: true,
        });
        self.procs.len() - 1
    }

    /// Starts the built-in backend on 127.0.0.1:9000 in `node` (X-Backend: node<node>),
    /// the upstream of that node's ringlb.
    pub fn backend(&mut self, node: &str) -> usize {
        self.backend_on(node, "127.0.0.1:9000")
    }

    /// Starts the built-in backend on `listen` in `node`. A keepalived node
    /// serves the VIP with a backend on 0.0.0.0:8080 directly.
    pub fn backend_on(&mut self, node: &str, listen: &str) -> usize {
        let name = format!("node{node}");
        let n = self.procs.len();
        self.spawn(
            &format!("backend-{node}-{n}"),
            node,
            &[BIN, "backend", "--listen", listen, "--name", &name],
        )
    }

    /// Starts `ringlb run` in `node` with a listener on 0.0.0.0:8080 and the
    /// given `[[vrrp.instance]]` body appended.
    pub fn ringlb(&mut self, node: &str, vrrp_instance: &str) -> usize {
        self.ringlb_opts(node, vrrp_instance, "", &[])
    }

    /// [`Lab::ringlb`] with `extra` TOML before the instance (e.g. `[admin]`)
    /// and the command run under `wrapper` (e.g. `setpriv ...`).
    pub fn ringlb_opts(
        &mut self,
        node: &str,
        vrrp_instance: &str,
        extra: &str,
        wrapper: &[&str],
    ) -> usize {
        let n = self.procs.len();
        let cfg = self.dir.join(format!("ringlb-{node}-{n}.toml"));
        let text = format!(
            "[runtime]\nworkers = 1\n\n[[listener]]\nlisten = \"0.0.0.0:8080\"\nupstream = \"app\"\n\n\
             [upstream.app]\nconnect_timeout = \"200ms\"\n[[upstream.app.server]]\naddress = \"127.0.0.1:9000\"\n\n\
             {extra}\n[[vrrp.instance]]\n{vrrp_instance}\n"
        );
        std::fs::write(&cfg, text).unwrap();
        let cfg = cfg.to_str().unwrap().to_string();
        let mut args: Vec<&str> = wrapper.to_vec();
        args.extend([BIN, "run", "-c", &cfg]);
        self.spawn(&format!("ringlb-{node}-{n}"), node, &args)
    }

    /// `[admin]` at [`ADMIN`], for [`Lab::ringlb_opts`].
    pub fn admin_section() -> String {
        format!("[admin]\nlisten = \"{ADMIN}\"\n")
    }

    /// `method path` on `node`'s admin endpoint: the body (panics unless 200).
    pub fn admin(&self, node: &str, method: &str, path: &str) -> String {
        let url = format!("http://{ADMIN}{path}");
        must(&[
            "ip",
            "netns",
            "exec",
            &self.ns(node),
            "curl",
            "-sf",
            "--max-time",
            "5",
            "-X",
            method,
            &url,
        ])
    }

    /// `node`'s `/stats` as JSON.
    pub fn stats(&self, node: &str) -> serde_json::Value {
        serde_json::from_str(&self.admin(node, "GET", "/stats")).unwrap()
    }

    /// Polls who holds the VIP for `window` (as fast as `ip` answers).
    pub fn watch_vip(&self, window: Duration) -> VipWatch {
        let start = Instant::now();
        let mut w = VipWatch::default();
        let mut last: Option<(Instant, bool, bool)> = None;
        let (mut none_since, mut both_since): (Option<Instant>, Option<Instant>) = (None, None);
        while start.elapsed() < window {
            let (a, b) = (self.has_vip("a"), self.has_vip("b"));
            let now = Instant::now();
            w.samples += 1;
            w.a_held += usize::from(a);
            w.b_held += usize::from(b);
            if let Some((_, la, lb)) = last {
                if (la, lb) != (a, b) {
                    w.changes += 1;
                }
            }
            match (a || b, none_since) {
                (false, None) => none_since = Some(last.map_or(now, |l| l.0)),
                (true, Some(t)) => {
                    w.max_none = w.max_none.max(now - t);
                    none_since = None;
                }
                _ => {}
            }
            match (a && b, both_since) {
                (true, None) => both_since = Some(now),
                (false, Some(t)) => {
                    w.max_both = w.max_both.max(now - t);
                    both_since = None;
                }
                _ => {}
            }
            last = Some((now, a, b));
        }
        let end = Instant::now();
        if let Some(t) = none_since {
            w.max_none = w.max_none.max(end - t);
        }
        if let Some(t) = both_since {
            w.max_both = w.max_both.max(end - t);
        }
        w
    }

    /// Starts keepalived (VRRP only, foreground, log to stderr) in `node`.
    /// Never to syslog (`-G`): with no syslog daemon, glibc writes every
    /// line to /dev/console, and on a VM's serial console that keeps a CPU
    /// busy with interrupts off for ~1.5 ms per line — a 25-VIP takeover
    /// logs ~100 lines, enough to wake a ringlb shard's tick 30–250 ms late
    /// on the same host. ringlb blames the host for that (see
    /// `vrrp_netns::a_console_logging_neighbour_does_not_move_the_vip`);
    /// the other tests keep keepalived quiet so they measure what they mean to.
    pub fn keepalived(&mut self, node: &str, conf: &str) -> usize {
        self.keepalived_logging(node, conf, false)
    }

    /// [`Lab::keepalived`], with `syslog` also logging to syslog the way
    /// keepalived's own docs run it (`keepalived -P -n -l`): with no syslog
    /// daemon on the host, glibc writes every line to /dev/console.
    pub fn keepalived_logging(&mut self, node: &str, conf: &str, syslog: bool) -> usize {
        let n = self.procs.len();
        let tag = format!("keepalived-{node}-{n}");
        let file = self.dir.join(format!("{tag}.conf"));
        std::fs::write(&file, conf).unwrap();
        let pid = self.dir.join(format!("{tag}.pid"));
        let vpid = self.dir.join(format!("{tag}.vrrp.pid"));
        let mut args = vec!["keepalived", "-P", "-n", "-l", "-D"];
        if !syslog {
            args.push("-G");
        }
        args.extend([
            "-f",
            file.to_str().unwrap(),
            "-p",
            pid.to_str().unwrap(),
            "-r",
            vpid.to_str().unwrap(),
        ]);
        let i = self.spawn(&tag, node, &args);
        self.procs[i].extra_pidfile = Some(vpid);
        i
    }

    pub fn signal(&mut self, i: usize, sig: i32) {
        let p = &mut self.procs[i];
        if !p.alive {
            return;
        }
        // keepalived's VRRP child: read its PID before the parent can remove the file.
        let extra = p
            .extra_pidfile
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| s.trim().parse::<i32>().ok());
        // `ip netns exec` execs the command, so the child PID is the process itself.
        // SAFETY: kill(2) on a PID we started and have not reaped.
        unsafe { libc::kill(p.child.id() as i32, sig) };
        if sig == libc::SIGKILL {
            if let Some(pid) = extra {
                // SAFETY: the VRRP child of the keepalived we started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// SIGKILL, like a crash, and reap.
    pub fn kill9(&mut self, i: usize) {
        self.signal(i, libc::SIGKILL);
        let p = &mut self.procs[i];
        let _ = p.child.wait();
        p.alive = false;
    }

    /// SIGTERM (graceful stop); waits up to 10 s for the exit.
    pub fn term(&mut self, i: usize) {
        self.signal(i, libc::SIGTERM);
        self.wait_exit(i);
    }

    /// Waits up to 10 s for process `i` to exit (after a signal).
    pub fn wait_exit(&mut self, i: usize) {
        let p = &mut self.procs[i];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = p.child.try_wait() {
                p.alive = false;
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{} did not exit within 10 s of SIGTERM", p.name);
    }

    /// Takes `node`'s link down (a crashed host's VIP must become unreachable).
    pub fn link_down(&self, node: &str) {
        must(&["ip", "-n", &self.ns(node), "link", "set", "eth0", "down"]);
    }

    pub fn link_up(&self, node: &str) {
        must(&["ip", "-n", &self.ns(node), "link", "set", "eth0", "up"]);
    }

    /// Whether `node` has the VIP on eth0.
    pub fn has_vip(&self, node: &str) -> bool {
        self.net.has_addr(node, VIP)
    }

    /// Only `node` (of a, b) holds the VIP.
    pub fn only(&self, node: &str) -> bool {
        let other = if node == "a" { "b" } else { "a" };
        self.has_vip(node) && !self.has_vip(other)
    }

    /// `X-Backend` of a GET to VIP:8080 from the client namespace, if 200.
    pub fn curl_vip(&self) -> Option<String> {
        let url = format!("http://{VIP}:8080/");
        let out = run(&[
            "ip",
            "netns",
            "exec",
            &self.ns("c"),
            "curl",
            "-s",
            "-i",
            "--max-time",
            "1",
            &url,
        ])
        .ok()?;
        if !out.starts_with("HTTP/1.1 200") {
            return None;
        }
        out.lines()
            .find_map(|l| l.strip_prefix("X-Backend: "))
            .map(|s| s.trim().to_string())
    }

    /// Polls until a GET to the VIP is answered by `backend`'s node.
    pub fn served_by(&self, backend: &str, limit: Duration) -> bool {
        eventually(limit, || self.curl_vip().as_deref() == Some(backend))
    }

    /// Starts `args` in `node`'s namespace with its input and output
    /// piped (a client the test drives; the caller waits for it).
    pub fn client(&self, node: &str, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", args.join(" ")))
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for p in &self.procs {
            let out = std::fs::read_to_string(&p.log).unwrap_or_default();
            let err = std::fs::read_to_string(p.log.with_extension("err")).unwrap_or_default();
            s.push_str(&format!("----- {} -----\n{out}{err}\n", p.name));
        }
        s
    }
}

/// What [`Lab::watch_vip`] saw.
#[derive(Debug, Default, Clone)]
pub struct VipWatch {
    pub samples: usize,
    pub a_held: usize,
    pub b_held: usize,
    /// Holder changes between consecutive samples.
    pub changes: usize,
    /// Longest stretch with nobody holding the VIP (from the last sample
    /// that saw a holder to the first that saw one again: an upper bound).
    pub max_none: Duration,
    /// Longest stretch with both holding it.
    pub max_both: Duration,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("lab {} logs:\n{}", self.prefix, self.logs());
        }
        for i in 0..self.procs.len() {
            if self.procs[i].alive {
                self.kill9(i);
            }
        }
        // `net` (dropped next) deletes the links, the namespaces and `dir`.
    }
}

/// A ringlb `[[vrrp.instance]]` body for VIP 198.18.0.100/24 on eth0.
pub fn instance(priority: u8, advert: &str, extra: &str) -> String {
    format!(
        "name = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = {priority}\n\
         advert_interval = \"{advert}\"\nvirtual_ipaddress = [\"{VIP}/24\"]\ngarp_repeat = 3\n\
         garp_interval = \"10ms\"\n{extra}"
    )
}

/// A keepalived config with one instance for the same VIP.
pub fn keepalived_conf(version: u8, priority: u8, advert: &str, auth: Option<&str>) -> String {
    let auth = auth
        .map(|p| format!("  authentication {{\n    auth_type PASS\n    auth_pass {p}\n  }}\n"))
        .unwrap_or_default();
    format!(
        "global_defs {{\n  router_id ka\n  vrrp_version {version}\n}}\n\
         vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n\
         \x20 priority {priority}\n  advert_int {advert}\n{auth}  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n"
    )
}

/// Runs `f` on a fresh thread inside network namespace `ns` (threads it
/// spawns inherit the namespace; the test harness thread is untouched).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        netns::enter_ns(&ns).unwrap_or_else(|e| panic!("setns {ns}: {e}"));
        f()
    })
    .join()
    .unwrap()
}

/// A raw IPv4 sender in `node` that writes whole datagrams (own IP header).
pub fn raw_sender(lab: &Lab, node: &str) -> socket2::Socket {
    in_netns(&lab.ns(node), || {
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
        )
        .unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        s
    })
}

/// An advert for the lab's VIP as a whole IPv4 datagram from `src` to
/// 224.0.0.18, with the given TTL, VRID, version and priority; `corrupt`
/// flips checksum bits.
pub fn advert_dgram(
    src: std::net::Ipv4Addr,
    ttl: u8,
    vrid: u8,
    version: u8,
    priority: u8,
    corrupt: bool,
) -> Vec<u8> {
    use ringlb::proto::vrrp::{Auth, Kind, Repr, Version};
    use std::net::{IpAddr, Ipv4Addr};
    let dst = Ipv4Addr::new(224, 0, 0, 18);
    let repr = Repr {
        version: if version == 2 {
            Version::V2
        } else {
            Version::V3
        },
        kind: Kind::Advertisement,
        vrid,
        priority,
        auth: Auth::None,
        advert_interval: 100,
        addresses: vec![IpAddr::V4(VIP.parse().unwrap())],
    };
    let mut msg = repr.to_bytes(IpAddr::V4(src), IpAddr::V4(dst));
    if corrupt {
        msg[6] ^= 0xff;
    }
    ip_dgram(src, ttl, &msg)
}

/// `payload` behind an IPv4 header (protocol 112) from `src` to 224.0.0.18.
pub fn ip_dgram(src: std::net::Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let dst = std::net::Ipv4Addr::new(224, 0, 0, 18);
    let mut dgram = vec![0u8; 20];
    ringlb::control::vrrp::socket::ipv4_header(&mut dgram, src, dst, payload.len());
    dgram[8] = ttl;
    dgram.extend_from_slice(payload);
    dgram
}

/// Sends one datagram built by [`advert_dgram`] / [`ip_dgram`].
pub fn send_dgram(s: &socket2::Socket, dgram: &[u8]) -> std::io::Result<usize> {
    let to: std::net::SocketAddr = "224.0.0.18:0".parse().unwrap();
    s.send_to(dgram, &to.into())
}

/// An advert from node b (198.18.0.2): see [`advert_dgram`].
pub fn send_advert(
    s: &socket2::Socket,
    ttl: u8,
    vrid: u8,
    version: u8,
    priority: u8,
    corrupt: bool,
) {
    let src = std::net::Ipv4Addr::new(198, 18, 0, 2);
    send_dgram(s, &advert_dgram(src, ttl, vrid, version, priority, corrupt)).unwrap();
}
