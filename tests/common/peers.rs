//! Real peers for integration tests: application servers (uvicorn, gunicorn,
//! nginx) that record what they received, and real HTTP clients (curl,
//! requests, httpx, aiohttp, websockets) driven from a JSON script.
//!
//! The Python side lives in `tests/peers/` (`app.py` records one JSON line
//! per request: test id, method, path, body length and sha256; `client.py`
//! runs requests on one keep-alive session and prints one JSON line per
//! request). Tests assert both sides: what the client got and what the
//! backend received, and how many times.

use super::{find, free_port, header, python, tempdir, wait_listener};
use serde_json::Value;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

/// `tests/peers`, where app.py and client.py live.
pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// The request body the Python client sends for `id` (same generator as
/// `client.py`): byte i = (i*31 + seed) % 251, seed = byte sum of id % 251.
pub fn body_for(id: &str, n: usize) -> Vec<u8> {
    let seed = id.bytes().map(usize::from).sum::<usize>() % 251;
    (0..n).map(|i| ((i * 31 + seed) % 251) as u8).collect()
}

/// A server process started in its own process group, killed (the whole
/// group, by its id) on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let err = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdout(err.try_clone().unwrap())
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process group now (the server goes away mid-test).
    pub fn kill(&mut self) {
        let pid = self.child.id() as i32;
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until a process of `p`'s group listens on `addr`'s port and
/// `addr` accepts connections (`common::wait_listener`); panics with `log`
/// otherwise.
pub fn wait_listening(addr: SocketAddr, p: &mut Proc, what: &str) {
    match wait_listener(&mut p.child, addr, Duration::from_secs(30), true) {
        Ok(()) => {}
        Err(Some(st)) => panic!("{what} exited ({st}); log:\n{}", p.log_text()),
        Err(None) => panic!("{what} did not listen on {addr}; log:\n{}", p.log_text()),
    }
}

/// A recording application server (`tests/peers/app.py`).
pub struct AppServer {
    pub addr: SocketAddr,
    pub proc: Proc,
    record: PathBuf,
    _dir: tempdir::Dir,
}

impl AppServer {
    /// `uvicorn app:asgi` with extra CLI arguments (e.g. `--timeout-keep-alive 1`).
    pub fn uvicorn(extra: &[&str]) -> AppServer {
        Self::start("uvicorn", |port| {
            let mut c = Command::new(python());
            c.args([
                "-m",
                "uvicorn",
                "app:asgi",
                "--host",
                "127.0.0.1",
                "--log-level",
                "warning",
            ])
            .args(["--port", &port.to_string()])
            .args(extra);
            c
        })
    }

    /// `gunicorn app:wsgi` with `worker` ("sync" or "gthread") and extra arguments.
    pub fn gunicorn(worker: &str, extra: &[&str]) -> AppServer {
        let worker = worker.to_string();
        Self::start("gunicorn", move |port| {
            let mut c = Command::new(python());
            c.args(["-m", "gunicorn", "app:wsgi", "--worker-class", &worker])
                .args([
                    "--bind",
                    &format!("127.0.0.1:{port}"),
                    "--log-level",
                    "warning",
                ])
                .args(extra);
            c
        })
    }

    fn start(what: &str, cmd: impl FnOnce(u16) -> Command) -> AppServer {
        let dir = tempdir::Dir::new(what);
        let record = dir.0.join("record.jsonl");
        std::fs::write(&record, "").unwrap();
        let port = free_port();
        let mut c = cmd(port);
        c.current_dir(peers_dir())
            .env("RECORD_LOG", &record)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let mut proc = Proc::spawn(c, &dir.0.join("server.log"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr, &mut proc, what);
        AppServer {
            addr,
            proc,
            record,
            _dir: dir,
        }
    }

    /// Every request the application saw so far, in arrival order.
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The file a `/lockstep` client creates once it has event `i` of the
    /// response to request `id` (`app.py`'s `ack_path`).
    pub fn ack_path(&self, id: &str, i: usize) -> PathBuf {
        PathBuf::from(format!("{}.ack.{id}.{i}", self.record.display()))
    }

    /// The records carrying test id `id`.
    pub fn records_of(&self, id: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["id"] == id)
            .collect()
    }
}

/// Runs `tests/peers/client.py` on `spec` and returns its result lines.
pub fn py_client(spec: &Value) -> Vec<Value> {
    let dir = tempdir::Dir::new("client");
    let path = dir.0.join("spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let out = Command::new(python())
        .arg(peers_dir().join("client.py"))
        .arg(&path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run client.py");
    assert!(
        out.status.success(),
        "client.py failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// nginx as a backend: static files under `www`, `/204` → 204, `/post`
/// stores each request body in a kept file (logged), idle keep-alive
/// connections closed after `keepalive_timeout`. The access log records
/// `X-Test-Id method uri status body_bytes_sent request_body_file`.
pub struct NginxServer {
    pub addr: SocketAddr,
    pub proc: Proc,
    pub www: PathBuf,
    access: PathBuf,
    _dir: tempdir::Dir,
}

pub fn nginx_bin() -> PathBuf {
    let p = PathBuf::from("/usr/sbin/nginx");
    assert!(
        p.exists(),
        "nginx not found at /usr/sbin/nginx: install it (tests/run.sh does: apt-get install nginx); \
         this test is not skipped"
    );
    p
}

/// An nginx (one worker, in the foreground) in a fresh directory `D`:
/// `http_body(D)` is the inside of its `http {}` block, after the temp
/// paths every config needs. Starts it and waits until each of `listens`
/// accepts connections.
pub fn nginx_with(
    listens: &[SocketAddr],
    http_body: impl FnOnce(&str) -> String,
) -> (Proc, tempdir::Dir) {
    let dir = tempdir::Dir::new("nginx");
    let d = dir.0.display().to_string();
    for sub in ["bodies", "proxy", "fcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.0.join(sub)).unwrap();
    }
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 1024; }}\nhttp {{\n\
         client_body_temp_path {d}/bodies;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         {}\n}}\n",
        http_body(&d)
    );
    let conf_path = dir.0.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut c = Command::new(nginx_bin());
    c.arg("-p").arg(&dir.0).arg("-c").arg(&conf_path);
    let mut proc = Proc::spawn(c, &dir.0.join("stderr.log"));
    for a in listens {
        wait_listening(*a, &mut proc, "nginx");
    }
    (proc, dir)
}

impl NginxServer {
    pub fn start(keepalive_timeout: &str) -> NginxServer {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (proc, dir) = nginx_with(&[addr], |d| {
            std::fs::create_dir_all(format!("{d}/www")).unwrap();
            format!(
                r#"log_format rec '$http_x_test_id $request_method $uri $status $body_bytes_sent $request_body_file';
    access_log {d}/access.log rec;
    keepalive_timeout {keepalive_timeout};
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        etag on;
        client_max_body_size 64m;
        location = /204 {{ return 204; }}
        location = /sink {{ return 200 "sunk\n"; }}
        location = /post {{
            client_body_in_file_only on;
            proxy_pass http://127.0.0.1:{port}/sink;
        }}
    }}"#
            )
        });
        NginxServer {
            addr,
            proc,
            www: dir.0.join("www"),
            access: dir.0.join("access.log"),
            _dir: dir,
        }
    }

    /// Access-log lines of test id `id` (split on spaces), excluding nginx's
    /// own internal `/sink` subrequests.
    pub fn records_of(&self, id: &str) -> Vec<Vec<String>> {
        std::fs::read_to_string(&self.access)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
            .filter(|f| f[0] == id && f[2] != "/sink")
            .collect()
    }
}

/// Runs curl with `args` (plus `-sS`); returns (exit ok, stdout bytes, stderr).
pub fn curl(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new("curl")
        .arg("-sS")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl not found: install it (tests/run.sh does); this test is not skipped");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// sha256 of `b` in lower-case hex (as `app.py` records it), by coreutils'
/// `sha256sum`.
pub fn sha256_hex(b: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    let mut stdin = c.stdin.take().unwrap();
    let data = b.to_vec();
    let w = thread::spawn(move || stdin.write_all(&data));
    let out = c.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// Reads from `s` until the peer closes it or a read times out: (bytes,
/// whether it closed).
pub fn read_until_close(s: &mut TcpStream) -> (Vec<u8>, bool) {
    use std::io::Read;
    let mut out = Vec::new();
    let mut b = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut b) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

/// The bytes `app.py` serves for `/dl/N` (its `pattern(n)`, seed 7).
pub fn app_pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

/// One parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    /// The body ended as its framing says (false: cut by the close).
    pub complete: bool,
}

/// Parses `raw` as the responses to `methods`, strictly (CRLF heads,
/// Content-Length / chunked / close-delimited bodies, 1xx skipped).
pub fn parse(raw: &[u8], methods: &[&str], closed: bool) -> (Vec<Resp>, usize, Vec<u8>) {
    let mut out = Vec::new();
    let mut info = 0;
    let mut rest = raw;
    let mut i = 0;
    while i < methods.len() && !rest.is_empty() {
        let Some(end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..end + 4]).into_owned();
        let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let lower = head.to_ascii_lowercase();
        let after = &rest[end + 4..];
        if (100..200).contains(&status) && status != 101 {
            info += 1;
            rest = after;
            continue;
        }
        let bodiless = methods[i] == "HEAD" || status == 204 || status == 304;
        let (body, used, complete) = if bodiless {
            (Vec::new(), 0, true)
        } else if header(&lower, "transfer-encoding").is_some() {
            dechunk(after)
        } else if let Some(cl) = header(&lower, "content-length") {
            let n: usize = cl.parse().unwrap_or(usize::MAX);
            let take = n.min(after.len());
            (after[..take].to_vec(), take, take == n)
        } else {
            (after.to_vec(), after.len(), closed)
        };
        out.push(Resp {
            status,
            head,
            body,
            complete,
        });
        rest = &after[used..];
        i += 1;
        if !complete {
            break;
        }
    }
    (out, info, rest.to_vec())
}

/// Decodes a chunked body: (data, bytes used, ended with the last chunk).
pub fn dechunk(b: &[u8]) -> (Vec<u8>, usize, bool) {
    let mut data = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = find(&b[pos..], b"\r\n") else {
            return (data, b.len(), false);
        };
        let line = String::from_utf8_lossy(&b[pos..pos + eol]).into_owned();
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16);
        let Ok(size) = size else {
            return (data, b.len(), false);
        };
        pos += eol + 2;
        if size == 0 {
            // Trailers up to the empty line.
            let Some(t) = find(&b[pos - 2..], b"\r\n\r\n") else {
                return (data, b.len(), false);
            };
            return (data, pos - 2 + t + 4, true);
        }
        if b.len() < pos + size + 2 {
            data.extend_from_slice(&b[pos..b.len().min(pos + size)]);
            return (data, b.len(), false);
        }
        data.extend_from_slice(&b[pos..pos + size]);
        pos += size + 2;
    }
}
