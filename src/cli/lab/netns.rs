//! A throwaway L2 lab: network namespaces on one bridge, torn down on drop.
//!
//! ```text
//!   <prefix>-sw : bridge br0 ("the switch")
//!   <prefix>-N  : eth0 ADDR/24, one per node, veth to the bridge
//! ```
//!
//! The prefix contains the PID, so concurrent runs never share a name.
//! Every process is started through `ip netns exec` and remembered with
//! its PID; `Drop` (normal exit, early return, panic unwinding) kills them
//! by PID and deletes the namespaces. A Ctrl-C is turned into an early
//! return by the caller (see `demo`), so it ends up here too.
//!
//! Addresses stay inside 198.18.0.0/15 (RFC 2544 benchmarking range), in
//! namespaces nothing else can reach.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `ip ARGS…`; the error carries `ip`'s stderr.
pub fn ip(args: &[&str]) -> io::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("ip: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why this host can't run the lab, if it can't: not root, no `ip`, or
/// namespaces not permitted (a container without CAP_SYS_ADMIN).
pub fn unavailable(prefix: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (network namespaces need it)".into());
    }
    let probe = format!("{prefix}-probe");
    match ip(&["netns", "add", &probe]) {
        Ok(_) => {
            let _ = ip(&["netns", "del", &probe]);
            None
        }
        Err(e) => Some(format!("cannot create a network namespace: {e}")),
    }
}

struct Proc {
    name: String,
    child: Child,
}

pub struct Lab {
    prefix: String,
    pub dir: PathBuf,
    namespaces: Vec<String>,
    /// (node, its port on the bridge).
    ports: Vec<(String, String)>,
    procs: Vec<Proc>,
}

impl Lab {
    /// The bridge plus one namespace per `(node, ipv4)`.
    pub fn new(prefix: &str, nodes: &[(&str, &str)]) -> io::Result<Lab> {
        let dir = std::env::temp_dir().join(format!("ringlb-lab-{prefix}"));
        std::fs::create_dir_all(&dir)?;
        let mut lab = Lab {
            prefix: prefix.to_string(),
            dir,
            namespaces: Vec::new(),
            ports: Vec::new(),
            procs: Vec::new(),
        };
        let sw = lab.ns("sw");
        lab.add_ns(&sw)?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for (i, (node, addr)) in nodes.iter().enumerate() {
            let ns = lab.ns(node);
            lab.add_ns(&ns)?;
            // Interface names are limited to 15 bytes: prefix + index.
            let port = format!("{prefix}v{i}");
            ip(&[
                "link", "add", &port, "netns", &sw, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            lab.ports.push((node.to_string(), port.clone()));
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            lab.exec(node, &["sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"])?;
        }
        Ok(lab)
    }

    fn add_ns(&mut self, ns: &str) -> io::Result<()> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        Ok(())
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// Set the MTU of `node`'s link, both ends (e.g. jumbo frames for
    /// tests that send oversized datagrams unfragmented).
    pub fn set_mtu(&self, node: &str, mtu: u32) -> io::Result<()> {
        let port = self
            .ports
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, p)| p.as_str())
            .ok_or_else(|| io::Error::other(format!("no node {node} in the lab")))?;
        let mtu = mtu.to_string();
        ip(&["-n", &self.ns("sw"), "link", "set", port, "mtu", &mtu])?;
        ip(&["-n", &self.ns(node), "link", "set", "eth0", "mtu", &mtu]).map(|_| ())
    }

    /// Run a command to completion in `node`'s namespace.
    pub fn exec(&self, node: &str, args: &[&str]) -> io::Result<String> {
        let mut v = vec!["netns", "exec"];
        let ns = self.ns(node);
        v.push(&ns);
        v.extend_from_slice(args);
        ip(&v)
    }

    /// Start `args` in `node`'s namespace as process `name` (log in the
    /// lab dir); returns its PID.
    pub fn spawn(&mut self, name: &str, node: &str, args: &[&str]) -> io::Result<u32> {
        let log = File::create(self.log(name))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        self.procs.push(Proc {
            name: name.to_string(),
            child,
        });
        Ok(pid)
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// `kill -9` process `name` (every process of that name) and reap it.
    pub fn kill(&mut self, name: &str) {
        for p in self.procs.iter_mut().filter(|p| p.name == name) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.procs.retain(|p| p.name != name);
    }

    /// `kill -9` process `name` without waiting for it to exit (a killed
    /// io_uring process can take a while on a busy host: its rings are torn
    /// down first); it is reaped on drop.
    pub fn kill_now(&mut self, name: &str) {
        let (dying, rest): (Vec<Proc>, Vec<Proc>) = std::mem::take(&mut self.procs)
            .into_iter()
            .partition(|p| p.name == name);
        self.procs = rest;
        for mut p in dying {
            let _ = p.child.kill();
            p.name.insert(0, '~');
            self.procs.push(p);
        }
    }

    /// Whether process `name` is still running.
    pub fn running(&mut self, name: &str) -> bool {
        self.procs
            .iter_mut()
            .any(|p| p.name == name && matches!(p.child.try_wait(), Ok(None)))
    }

    pub fn link(&self, node: &str, up: bool) -> io::Result<()> {
        ip(&self.link_args(node, up).each_ref().map(String::as_str)).map(|_| ())
    }

    /// Starts setting `node`'s link up or down and waits for it at most
    /// `limit`; the returned child is still running if `ip` took longer
    /// (reap it with `wait`). `ip` can stall for seconds on a busy host
    /// (the rtnl lock, page-ins), and a crash that waits for it is not a
    /// crash on time.
    pub fn link_within(&self, node: &str, up: bool, limit: Duration) -> io::Result<Child> {
        let mut child = Command::new("ip")
            .args(self.link_args(node, up))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let t0 = Instant::now();
        while child.try_wait()?.is_none() && t0.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(child)
    }

    fn link_args(&self, node: &str, up: bool) -> [String; 6] {
        let state = if up { "up" } else { "down" };
        ["-n", self.ns(node).as_str(), "link", "set", "eth0", state].map(String::from)
    }

    /// Whether `node` has `addr` configured on eth0.
    pub fn has_addr(&self, node: &str, addr: &str) -> bool {
        ip(&[
            "-n",
            &self.ns(node),
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ])
        .map(|out| out.contains(&format!(" {addr}/")))
        .unwrap_or(false)
    }

    /// Move the calling thread into `node`'s network namespace (threads it
    /// spawns afterwards are in it too).
    pub fn enter(&self, node: &str) -> io::Result<()> {
        enter_ns(&self.ns(node))
    }
}

/// Move the calling thread into the named network namespace.
pub fn enter_ns(name: &str) -> io::Result<()> {
    let f = File::open(Path::new("/run/netns").join(name))?;
    // SAFETY: a valid namespace fd; setns only affects the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Teardown in the order the kernel handles cheaply: processes killed and
/// reaped (their sockets and rings gone), then the links, then the empty
/// namespaces.
impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
        }
        for p in &mut self.procs {
            let _ = p.child.wait();
        }
        let sw = self.ns("sw");
        for (_, port) in &self.ports {
            let _ = ip(&["-n", &sw, "link", "del", port]);
        }
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
        if std::env::var_os("RINGLB_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
