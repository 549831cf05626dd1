//! Shared helpers for integration tests: run the real `ringlb` binary on a
//! config, small scripted backends on loopback, and raw-socket clients.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ringlb");

/// A loopback port for a process under test to bind itself (checked free,
/// then released).
///
/// It comes from below the kernel's ephemeral range, not from `bind(:0)`:
/// an ephemeral port that was free a moment ago can be taken by any
/// outgoing connection a parallel test opens (they all draw from that
/// range), and then ringlb's own bind fails with "Address already in use".
/// Ports below the range are never handed out implicitly; the per-process
/// counter keeps tests in one binary apart, and the start offset drawn from
/// the PID keeps concurrent test binaries apart.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let (lo, hi) = below_ephemeral_range();
    let span = usize::from(hi - lo);
    let start = (std::process::id() as usize).wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = lo + ((start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free loopback port in {lo}..{hi}");
}

/// `[lo, hi)`: ports no implicit bind or outgoing connection is given on
/// this host (below `net.ipv4.ip_local_port_range`, at least 10000).
fn below_ephemeral_range() -> (u16, u16) {
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    assert!(
        first_ephemeral > 12_000,
        "ip_local_port_range starts at {first_ephemeral}: tests need ports below it"
    );
    (10_000, first_ephemeral)
}

/// A running ringlb process, stopped (SIGKILL by PID) on drop.
pub struct Ringlb {
    pub child: Child,
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
    _dir: tempdir::Dir,
}

pub mod tempdir {
    use std::path::PathBuf;
    pub struct Dir(pub PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("ringlb-test-{}-{tag}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Ringlb {
    /// Starts ringlb with `body` appended to a `[runtime] workers = 1`
    /// config whose first listener is `127.0.0.1:{port}` (`{port}` in body).
    pub fn start(config_body: &str) -> Ringlb {
        Ringlb::start_with_env(config_body, &[])
    }

    /// [`Ringlb::start`] with these environment variables set for the
    /// process (e.g. `RINGLB_DRIVER=epoll`).
    ///
    /// Ready means this process listens on the port, not merely that the
    /// port answers: a port checked free can still be taken before ringlb
    /// binds it (by another program on the host), and then a connect would
    /// reach that program while ringlb has exited. A bind that fails with
    /// "Address already in use" is retried on another port.
    pub fn start_with_env(config_body: &str, env: &[(&str, &str)]) -> Ringlb {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = free_port();
            let dir = tempdir::Dir::new("rl");
            let config = dir.0.join("ringlb.toml");
            let text = config_body.replace("{port}", &port.to_string());
            std::fs::write(&config, text).unwrap();
            let log = dir.0.join("ringlb.log");
            let child = Command::new(BIN)
                .args(["run", "-c"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .envs(env.iter().copied())
                .spawn()
                .expect("spawn ringlb");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut rl = Ringlb {
                child,
                addr,
                config,
                log,
                _dir: dir,
            };
            match rl.wait_ready() {
                Ok(()) => return rl,
                Err(log) if attempts < 5 && log.contains("Address already in use") => {
                    eprintln!("ringlb could not bind port {port} (taken since it was checked free); retrying on another");
                }
                Err(log) => panic!("ringlb did not start; log:\n{log}"),
            }
        }
    }

    /// Waits until this process listens on `addr`'s port; `Err(log)` if
    /// it exits or never does.
    fn wait_ready(&mut self) -> Result<(), String> {
        if wait_child_listening(&mut self.child, self.addr) {
            Ok(())
        } else {
            Err(self.log_text())
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the process to exit (up to `limit`); returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Waits (up to 10 s) until `child` listens on `addr`'s port and `addr`
/// accepts a connection; false if the child exits first or never does.
pub fn wait_child_listening(child: &mut Child, addr: SocketAddr) -> bool {
    wait_listener(child, addr, Duration::from_secs(10), false).is_ok()
}

/// Waits (up to `limit`) until `child` — or, with `group`, any process of
/// the process group it leads (a server whose workers may hold the socket)
/// — listens on `addr`'s port, and `addr` accepts a connection. A connect
/// alone could reach another program that took the port after it was
/// checked free, while the child failed to bind it. `Err(Some(status))`:
/// the child exited first; `Err(None)`: it never listened.
pub fn wait_listener(
    child: &mut Child,
    addr: SocketAddr,
    limit: Duration,
    group: bool,
) -> Result<(), Option<std::process::ExitStatus>> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let (id, port) = (child.id(), addr.port());
        let held = if group {
            group_listens_on(id, port)
        } else {
            listens_on(id, port)
        };
        if held && TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(Some(st));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(None)
}

/// Whether any process of process group `pgid` (a server started in its
/// own group, whose workers may hold the socket instead of the master)
/// holds a listening TCP socket on `port`.
pub fn group_listens_on(pgid: u32, port: u16) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        // "pid (comm) state ppid pgrp ...": the fields after the last ')'.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|g| g.parse::<u32>().ok());
        pgrp == Some(pgid) && listens_on(pid, port)
    })
}

/// Whether process `pid` holds a listening TCP socket on `port` (any
/// address, IPv4 or IPv6): its descriptors matched against the inodes of
/// `/proc/net/tcp{,6}`'s LISTEN rows.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let local = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for row in text.lines().skip(1) {
            let f: Vec<&str> = row.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() > 9 && f[1].ends_with(&local) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

impl Drop for Ringlb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scripted backend: every accepted connection runs `handler` on its own
/// thread. Counts connections.
pub struct Backend {
    pub addr: SocketAddr,
    pub conns: Arc<AtomicUsize>,
}

pub fn backend<F>(handler: F) -> Backend
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&conns);
    let handler = Arc::new(handler);
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            c.fetch_add(1, Ordering::Relaxed);
            let h = Arc::clone(&handler);
            thread::spawn(move || h(s));
        }
    });
    Backend { addr, conns }
}

/// The request line of a request read by [`read_request`] (lossy UTF-8).
pub fn request_line(req: &[u8]) -> String {
    String::from_utf8_lossy(req)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Reads one request (head + Content-Length or chunked body) from `s`.
/// Returns the raw bytes, or None on EOF.
pub fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    read_message(s, buf, true)
}

/// Reads one HTTP/1.1 message from `s` into `buf` and takes it off the front:
/// the head, then a body framed by Content-Length or chunked (to the last
/// chunk and an empty trailer) when `with_body`; nothing else (a request
/// without either has no body). None on EOF before the message is complete.
fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>, with_body: bool) -> Option<Vec<u8>> {
    let end = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end;
        }
        if !fill(s, buf) {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end + 4]).to_ascii_lowercase();
    let mut total = end + 4;
    if with_body {
        if let Some(cl) = header(&head, "content-length") {
            total += cl.parse::<usize>().unwrap();
        } else if header(&head, "transfer-encoding").is_some() {
            while find(&buf[end..], b"\r\n0\r\n\r\n").is_none() {
                if !fill(s, buf) {
                    return None;
                }
            }
            total = end + find(&buf[end..], b"\r\n0\r\n\r\n").unwrap() + 7;
        }
    }
    while buf.len() < total {
        if !fill(s, buf) {
            return None;
        }
    }
    Some(buf.drain(..total).collect())
}

fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 8192];
    match s.read(&mut tmp) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

pub fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

pub fn header<'a>(lower_head: &'a str, name: &str) -> Option<&'a str> {
    lower_head.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// A backend that answers every request with 200 and the raw request it
/// received as the body (so tests can see what the upstream saw).
pub fn echo_backend() -> Backend {
    backend(|mut s| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            let mut resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Upstream: echo\r\n\r\n",
                req.len()
            )
            .into_bytes();
            resp.extend_from_slice(&req);
            if s.write_all(&resp).is_err() {
                return;
            }
        }
    })
}

/// A backend that answers every request with a fixed response.
pub fn fixed_backend(resp: &'static [u8]) -> Backend {
    backend(move |mut s| {
        let mut buf = Vec::new();
        while read_request(&mut s, &mut buf).is_some() {
            if s.write_all(resp).is_err() {
                return;
            }
        }
    })
}

/// Connects to `addr` with a 5 s read timeout.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Writes `req` and reads until the peer closes (or 5 s pass).
pub fn roundtrip_close(addr: SocketAddr, req: &[u8]) -> String {
    let mut s = connect(addr);
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one response (by Content-Length or chunked, or none for HEAD/204/304
/// when `bodiless`) from `s`.
pub fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, bodiless: bool) -> Option<String> {
    let r = read_message(s, buf, !bodiless)?;
    Some(String::from_utf8_lossy(&r).into_owned())
}

/// The status code of a raw response text (0 when there is none).
pub fn status_of(resp: &str) -> u16 {
    resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The body of a raw response text (everything after the head).
pub fn body_of(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// One GET to the admin endpoint on a fresh connection; returns (status, body).
pub fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let r = roundtrip_close(
        admin,
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    (status_of(&r), body_of(&r).to_string())
}

/// A Prometheus sample's value from the admin endpoint at `admin`
/// (`name{labels}` exactly as exposed); panics when it is not there.
pub fn metric(admin: SocketAddr, sample: &str) -> u64 {
    let (st, text) = admin_get(admin, "/metrics");
    assert_eq!(st, 200);
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{sample} not in /metrics:\n{text}"))
}

/// Waits (up to 10 s) until `rl`'s admin endpoint accepts connections;
/// panics with ringlb's log otherwise.
pub fn wait_admin(rl: &Ringlb, admin: SocketAddr) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(admin).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "admin endpoint {admin} never came up; log:\n{}",
        rl.log_text()
    );
}

/// A config with one listener on `{port}` and one upstream `app` of `servers`.
pub fn simple_config(servers: &[SocketAddr], extra_upstream: &str) -> String {
    let mut s = String::from("[runtime]\nworkers = 1\n\n[[listener]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"app\"\n\n[upstream.app]\n");
    s.push_str(extra_upstream);
    s.push('\n');
    for a in servers {
        s.push_str(&format!("[[upstream.app.server]]\naddress = \"{a}\"\n"));
    }
    s
}

/// Runs the test venv's Python with `args` (e.g. `["-c", script, url]`);
/// fails the test with its output unless it exits 0. Its stdout.
pub fn python_ok(args: &[&str]) -> String {
    let out = Command::new(python())
        .args(args)
        .output()
        .expect("run python");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed ({}): {text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

pub mod peers;
pub mod pki;
mod python;
pub use python::python;

/// A backend that records every request it gets (raw bytes as text) and
/// answers each with `200 ok`, keeping connections alive.
pub fn recording_backend() -> (Backend, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let be = backend(move |mut s: TcpStream| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            s2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&req).into_owned());
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    });
    (be, seen)
}

/// A backend that answers at once except `GET /slow…`, held until
/// `release` is set (or 15 s pass); records every request line it read.
pub fn holding_backend() -> (
    Backend,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (r, sn) = (Arc::clone(&release), Arc::clone(&seen));
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            let line = request_line(&req);
            sn.lock().unwrap().push(line.clone());
            if line.starts_with("GET /slow") {
                let start = Instant::now();
                while !r.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(15) {
                    thread::sleep(Duration::from_millis(5));
                }
            }
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    });
    (be, release, seen)
}

/// One backend connection as the table tests' recording backends serve
/// it: every request [`message_len`] can frame goes to `on_request`, then
/// gets `200 ok` (no body for a HEAD); `on_read` sees every byte as read.
/// `Some(rest)`: the client closed (or reading failed) with `rest` still
/// unframed; `None`: an answer could not be written.
pub fn serve_framed(
    mut s: TcpStream,
    mut on_read: impl FnMut(&[u8]),
    mut on_request: impl FnMut(Vec<u8>),
) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        while let Some(n) = message_len(&buf) {
            let msg: Vec<u8> = buf.drain(..n).collect();
            let answer: &[u8] = if msg.starts_with(b"HEAD ") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            };
            on_request(msg);
            s.write_all(answer).ok()?;
        }
        match s.read(&mut tmp) {
            Ok(n) if n > 0 => {
                on_read(&tmp[..n]);
                buf.extend_from_slice(&tmp[..n]);
            }
            _ => return Some(buf),
        }
    }
}

/// The length of the first whole request in `b` (head, then a
/// Content-Length body or a chunked body through its trailer section), for
/// backends that record raw bytes. Chunked bodies must be canonical, as
/// ringlb forwards them (`hex CRLF data CRLF`).
pub fn message_len(b: &[u8]) -> Option<usize> {
    let end = find(b, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
    if let Some(cl) = header(&head, "content-length") {
        let n = end + cl.parse::<usize>().unwrap();
        return (b.len() >= n).then_some(n);
    }
    if header(&head, "transfer-encoding").is_none() {
        return Some(end);
    }
    // Forwarded chunked bodies are canonical: `hex CRLF data CRLF`.
    let mut at = end;
    loop {
        let line = find(&b[at..], b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[at..at + line]).ok()?, 16).ok()?;
        at += line + 2;
        if size == 0 {
            return find(&b[at - 2..], b"\r\n\r\n").map(|q| at - 2 + q + 4);
        }
        at += size + 2;
        if at > b.len() {
            return None;
        }
    }
}
