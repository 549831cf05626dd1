//! Planned changes under load, with real peers: a reload (SIGHUP) that
//! changes the server list, a graceful stop (SIGTERM), and backends that
//! restart their workers as planned (gunicorn `--max-requests`). "Planned"
//! means no request is lost: every test asserts what each client got and
//! how many times the backend saw each request (never a POST twice).
//!
//! Real servers (uvicorn, gunicorn) and clients (Python requests) come from
//! the test venv (`common::python`); the scripted backends pin down the
//! exact retry rules those real peers only hit by chance.

mod common;

use common::peers::{py_client, read_until_close, AppServer};
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Polls `done` every 20 ms for up to 15 s; panics with `what` otherwise.
/// (A bound on waiting for something that must happen, not a timing check.)
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(15), "never: {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// ringlb's established connections to `server` (its side: destination
/// port = the server's), by `ss`.
fn conns_to(server: SocketAddr) -> usize {
    let out = std::process::Command::new("ss")
        .args(["-Htn", "state", "established"])
        .arg(format!("( dport = :{} )", server.port()))
        .output()
        .expect("ss (iproute2; tests/run.sh installs it)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Sockets among `pid`'s open descriptors (rings, event and epoll
/// descriptors are made as shards start and are not counted).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count()
}

fn stats(admin: SocketAddr) -> Value {
    let (status, body) = admin_get(admin, "/stats");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Request lines a scripted backend read, with the number of the
/// connection (in accept order) that carried each.
type Seen = Arc<Mutex<Vec<(usize, String)>>>;

/// A backend whose connections answer one request each, then read the next
/// one whole and close without answering (a worker going away with its
/// idle connections). Records each request line with its connection number.
fn one_answer_per_connection() -> (Backend, Seen, Arc<AtomicUsize>) {
    let seen: Seen = Arc::default();
    let rec = Arc::clone(&seen);
    let conn_no = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&conn_no);
    // The first three requests wait for each other, so that three upstream
    // connections are open at once and all go to the pool.
    let arrived = Arc::new(AtomicUsize::new(0));
    let be = backend(move |mut s| {
        let me = n.fetch_add(1, Ordering::SeqCst);
        let mut buf = Vec::new();
        if let Some(req) = read_request(&mut s, &mut buf) {
            rec.lock().unwrap().push((me, request_line(&req)));
            arrived.fetch_add(1, Ordering::SeqCst);
            let start = Instant::now();
            while arrived.load(Ordering::SeqCst) < 3 && start.elapsed() < Duration::from_secs(10) {
                thread::sleep(Duration::from_millis(5));
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        }
        if let Some(req) = read_request(&mut s, &mut buf) {
            rec.lock().unwrap().push((me, request_line(&req)));
        }
    });
    (be, seen, conn_no)
}

/// Three idle pooled connections whose backend closes each as it is used:
/// a GET is retried on a *new* connection, not on the next pooled one (the
/// old rule took the next pooled one twice, met three closes and answered
/// 502).
#[test]
fn a_get_meeting_closing_pooled_connections_is_answered_on_a_new_one() {
    let (be, seen, conns) = one_answer_per_connection();
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let warm: Vec<_> = (0..3)
        .map(|i| {
            let addr = rl.addr;
            thread::spawn(move || {
                let mut s = connect(addr);
                s.write_all(format!("GET /warm/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
                    .unwrap();
                read_response(&mut s, &mut Vec::new(), false).unwrap_or_default()
            })
        })
        .collect();
    for w in warm {
        assert_eq!(status_of(&w.join().unwrap()), 200);
    }
    assert_eq!(conns.load(Ordering::SeqCst), 3);
    // All three are pooled now (each answered completely). Use one.
    let r = roundtrip_close(
        rl.addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(body_of(&r), "ok");
    let seen = seen.lock().unwrap().clone();
    let x: Vec<usize> = seen
        .iter()
        .filter(|(_, l)| l == "GET /x HTTP/1.1")
        .map(|(c, _)| *c)
        .collect();
    // Once on a pooled connection (read, then closed), once on a new one.
    assert_eq!(x.len(), 2, "{seen:?}");
    assert!(x[0] < 3 && x[1] == 3, "{seen:?}");
    assert_eq!(conns.load(Ordering::SeqCst), 4, "{seen:?}");
}

/// A backend whose first `resets` connections are reset as soon as a
/// request arrives (an exiting worker dropping the connections it had just
/// accepted); later ones answer. Records (connection, request line).
fn resetting_first(resets: usize) -> (Backend, Seen) {
    let seen: Seen = Arc::default();
    let rec = Arc::clone(&seen);
    let conn_no = Arc::new(AtomicUsize::new(0));
    let be = backend(move |mut s| {
        let me = conn_no.fetch_add(1, Ordering::SeqCst);
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            rec.lock().unwrap().push((me, request_line(&req)));
            if me < resets {
                socket2::SockRef::from(&s)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                return;
            }
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    });
    (be, seen)
}

fn lines_of(seen: &Mutex<Vec<(usize, String)>>, line: &str) -> Vec<usize> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(_, l)| l == line)
        .map(|(c, _)| *c)
        .collect()
}

/// A lone server resetting a new connection before answering: a GET goes
/// to it again on another new connection, within `retries` (nginx has no
/// other server to go to and answers 502; gunicorn's recycled workers do
/// this). A POST is never sent again, and `retries = 0` means no retry.
#[test]
fn a_lone_server_resetting_a_new_connection_gets_the_get_again() {
    const GET: &[u8] = b"GET /g HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    const POST: &[u8] =
        b"POST /g HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    // (connections reset, upstream settings, request, status, connections
    // that carried it)
    type Case = (usize, &'static str, &'static [u8], u16, &'static [usize]);
    let cases: [Case; 4] = [
        (1, "", GET, 200, &[0, 1]),
        // Both tries reset: the budget (retries = 1) is spent.
        (2, "", GET, 502, &[0, 1]),
        (1, "retries = 0\n", GET, 502, &[0]),
        // A POST that reached the server is never sent again.
        (1, "retries = 3\n", POST, 502, &[0]),
    ];
    for (resets, extra, req, status, carried) in cases {
        let (be, seen) = resetting_first(resets);
        let rl = Ringlb::start(&simple_config(&[be.addr], extra));
        let r = roundtrip_close(rl.addr, req);
        assert_eq!(status_of(&r), status, "{resets} {extra:?}: {r}");
        if status == 200 {
            assert_eq!(body_of(&r), "ok");
        }
        let line = request_line(req);
        assert_eq!(lines_of(&seen, &line), carried, "{resets} {extra:?} {line}");
    }
}

/// `n` rounds of keep-alive requests from one Python `requests` session,
/// each round in parallel: `gets` GETs of `path` and `posts` POSTs of 2 KB.
/// Ids are `{tag}-{round}-{i}`.
fn load_steps(tag: &str, rounds: usize, gets: usize, posts: usize, path: &str) -> Vec<Value> {
    (0..rounds)
        .map(|r| {
            let mut par = Vec::new();
            for i in 0..gets {
                par.push(json!({"id": format!("{tag}-{r}-g{i}"), "method": "GET", "path": path}));
            }
            for i in 0..posts {
                par.push(json!({"id": format!("{tag}-{r}-p{i}"), "method": "POST",
                    "path": "/up", "size": 2048}));
            }
            json!({"parallel": par})
        })
        .collect()
}

/// Runs `tests/peers/client.py` (`lib`) with `steps` against `addr` on a thread.
fn client_thread(lib: &str, addr: SocketAddr, steps: Vec<Value>) -> thread::JoinHandle<Vec<Value>> {
    let spec = json!({"lib": lib, "base": format!("http://{addr}"), "steps": steps});
    thread::spawn(move || py_client(&spec))
}

/// How many times each server's application saw test id `id`.
fn seen_times(servers: &[&AppServer], id: &str) -> usize {
    servers
        .iter()
        .map(|s| {
            s.records_of(id)
                .iter()
                .filter(|r| r.get("phase").is_none() || r["phase"] == "end")
                .count()
        })
        .sum()
}

/// Every result answered `200` and seen exactly once by one of `servers`.
fn assert_all_once(results: &[Value], servers: &[&AppServer]) {
    let bad: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let id = r["id"].as_str().unwrap();
            let n = seen_times(servers, id);
            (r["status"] != 200 || n != 1).then(|| {
                format!(
                    "{id}: status {} error {:?}, seen {n} time(s)",
                    r["status"], r["error"]
                )
            })
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests wrong:\n{}",
        bad.len(),
        results.len(),
        bad.join("\n")
    );
}

fn uvicorn_long_keepalive() -> AppServer {
    // Idle connections stay open on the server's side: only ringlb closes them.
    AppServer::uvicorn(&["--timeout-keep-alive", "60"])
}

/// SIGHUP four times while real clients keep sending GETs and POSTs to
/// uvicorn: the same file, a server removed (with a long request in flight
/// on it and idle pooled connections to it) and another added, weights
/// changed with a route added, and back. No client sees an error, each
/// request reaches exactly one server once, the request in flight on the
/// removed server finishes there, ringlb closes its idle connections to the
/// removed server (and only those), and afterwards no client connection is
/// left open and no socket leaked.
#[test]
fn sighup_under_load_changes_servers_and_loses_nothing() {
    let b: Vec<AppServer> = (0..3).map(|_| uvicorn_long_keepalive()).collect();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = |servers: &[(usize, u32)], route: bool| {
        let mut s = format!(
            "[runtime]\nworkers = 1\n[admin]\nlisten = \"{admin}\"\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n"
        );
        if route {
            s += "[[listener.route]]\npath_prefix = \"/r2\"\nupstream = \"two\"\n";
        }
        s += "[upstream.app]\nkeepalive_timeout = \"60s\"\n";
        for (i, w) in servers {
            s += &format!(
                "[[upstream.app.server]]\naddress = \"{}\"\nweight = {w}\n",
                b[*i].addr
            );
        }
        if route {
            s += &format!(
                "[upstream.two]\n[[upstream.two.server]]\naddress = \"{}\"\n",
                b[2].addr
            );
        }
        s
    };
    let rl = Ringlb::start(&cfg(&[(0, 1), (1, 1)], false));
    wait_admin(&rl, admin);
    // Listening sockets (the proxy's, the admin's), counted once the admin
    // endpoint has answered a whole request (it closes its side first).
    assert_eq!(stats(admin)["generation"], 1);
    let sockets_at_start = open_sockets(rl.child.id());
    let reload = |text: String, generation: u64| {
        std::fs::write(
            &rl.config,
            text.replace("{port}", &rl.addr.port().to_string()),
        )
        .unwrap();
        rl.signal(libc::SIGHUP);
        eventually(&format!("generation {generation}"), || {
            stats(admin)["generation"] == generation
        });
    };
    let total = |b: &AppServer| b.records().len();

    // Two long polls: round robin puts one on each server.
    let holds = client_thread(
        "requests",
        rl.addr,
        vec![json!({"parallel": [
            {"id": "hold-a", "method": "GET", "path": "/hold/2000"},
            {"id": "hold-b", "method": "GET", "path": "/hold/2000"},
        ]})],
    );
    eventually("a long poll in flight on b1", || {
        b[1].records().iter().any(|r| r["phase"] == "start")
    });
    let load = client_thread("requests", rl.addr, load_steps("L", 80, 3, 3, "/wait/10"));
    let load2 = client_thread(
        "requests",
        rl.addr,
        load_steps("R", 80, 2, 0, "/r2/x")
            .into_iter()
            .chain(load_steps("M", 40, 2, 2, "/x"))
            .collect(),
    );
    eventually("load on b1", || total(&b[1]) > 20);
    reload(cfg(&[(0, 1), (1, 1)], false), 2);
    let b1_before = total(&b[1]);
    eventually("more load on b1", || total(&b[1]) > b1_before + 10);
    // b1 leaves while its long poll is in flight; b2 joins.
    reload(cfg(&[(0, 1), (2, 1)], false), 3);
    eventually("load on b2", || total(&b[2]) > 20);
    let b2_now = total(&b[2]);
    reload(cfg(&[(0, 3), (2, 1)], true), 4);
    eventually("more load on b2", || total(&b[2]) > b2_now + 10);
    reload(cfg(&[(0, 1), (2, 1)], false), 5);

    let mut results = load.join().unwrap();
    results.extend(load2.join().unwrap());
    let holds = holds.join().unwrap();
    assert_eq!(results.len(), 80 * 6 + 80 * 2 + 40 * 4);
    let all = [&b[0], &b[1], &b[2]];
    assert_all_once(&results, &all);
    assert_all_once(&holds, &all);
    for h in &holds {
        let id = h["id"].as_str().unwrap();
        let end: Vec<Value> = all
            .iter()
            .flat_map(|s| s.records_of(id))
            .filter(|r| r["phase"] == "end")
            .collect();
        assert_eq!(end[0]["disconnected"], false, "{id} was cut: {end:?}");
        assert_eq!(h["len"], 4, "{id}: {h}");
    }
    assert!(
        b[1].records_of("hold-a").len() + b[1].records_of("hold-b").len() == 2,
        "one long poll ran on b1, which was removed meanwhile"
    );
    // ringlb closes its idle connections to the removed server; those to
    // the servers it keeps stay pooled.
    eventually("no connection to the removed server", || {
        conns_to(b[1].addr) == 0
    });
    assert!(
        conns_to(b[0].addr) > 0,
        "idle connections to b0 were dropped"
    );
    eventually("no client connection left", || {
        stats(admin)["connections"]["active"] == 0
    });
    let pid = rl.child.id();
    let mut seen = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        seen = (open_sockets(pid), conns_to(b[0].addr) + conns_to(b[2].addr));
        if seen.0 <= sockets_at_start + seen.1 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    // At most: the count at start may still hold the admin connection of
    // `wait_admin`, closed since.
    assert!(
        seen.0 <= sockets_at_start + seen.1,
        "sockets leaked: {} at start, {} now with {} pooled upstream connections",
        sockets_at_start,
        seen.0,
        seen.1
    );
    let log = rl.log_text();
    assert!(!log.contains("panicked") && !log.contains("ERROR"), "{log}");
}

/// SIGTERM while real and raw clients are mid-way: a long poll (Python
/// requests, 3 s), a 30 MB download the client reads slowly, an 8 MB upload
/// half sent, a keep-alive client between requests, one that connected and
/// sent nothing, and one half-way through its second request head. The
/// listener closes first (new connections refused); then every started
/// exchange finishes, with `Connection: close`; idle clients get a FIN, not
/// a reset; the process exits 0; the backend saw each request once.
#[test]
fn sigterm_under_load_finishes_every_started_exchange() {
    let be = uvicorn_long_keepalive();
    let cfg = simple_config(&[be.addr], "")
        .replacen(
            "[[listener]]",
            "[http]\nclient_max_body_size = \"64m\"\n\n[[listener]]",
            1,
        )
        .replacen(
            "workers = 1\n",
            "workers = 1\nshutdown_timeout = \"30s\"\n",
            1,
        );
    let mut rl = Ringlb::start(&cfg);
    let addr = rl.addr;
    let head_of = |s: &mut TcpStream| {
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        while find(&buf, b"\r\n\r\n").is_none() {
            assert_eq!(s.read(&mut b).unwrap(), 1, "closed before a head: {buf:?}");
            buf.push(b[0]);
        }
        String::from_utf8(buf).unwrap()
    };

    // Between requests: one answered, then quiet.
    let mut idle = connect(addr);
    idle.write_all(b"GET /status/200 HTTP/1.1\r\nHost: a\r\nX-Test-Id: idle\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut idle, &mut Vec::new(), false).is_some());
    // Connected, nothing sent.
    let mut silent = connect(addr);
    // One request answered, the next one's head half sent.
    let mut mid = connect(addr);
    mid.write_all(b"GET /status/200 HTTP/1.1\r\nHost: a\r\nX-Test-Id: mid-0\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut mid, &mut Vec::new(), false).is_some());
    mid.write_all(b"GET /dl/100 HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    // A download read slowly: the head and nothing more for now.
    let dl_len = 30_000_000;
    let mut dl = connect(addr);
    dl.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    dl.write_all(
        format!("GET /dl/{dl_len} HTTP/1.1\r\nHost: a\r\nX-Test-Id: dl\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let dl_head = head_of(&mut dl);
    assert!(dl_head.starts_with("HTTP/1.1 200"), "{dl_head}");
    // An upload, half of it sent.
    let up_len = 8 * 1024 * 1024;
    let mut up = connect(addr);
    up.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    up.write_all(
        format!(
            "POST /up HTTP/1.1\r\nHost: a\r\nX-Test-Id: up\r\nContent-Length: {up_len}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    up.write_all(&vec![b'u'; up_len / 2]).unwrap();
    // A long poll from a real client.
    let poll = client_thread(
        "requests",
        addr,
        vec![json!({"id": "poll", "method": "GET", "path": "/hold/3000"})],
    );
    eventually("the long poll reached the backend", || {
        !be.records_of("poll").is_empty()
    });

    rl.signal(libc::SIGTERM);
    eventually("the listener closed", || TcpStream::connect(addr).is_err());

    // Everything started before finishes after the listener closed.
    mid.write_all(b"X-Test-Id: mid-1\r\n\r\n").unwrap();
    let (raw, closed) = read_until_close(&mut mid);
    let text = String::from_utf8_lossy(&raw);
    assert!(closed, "{text}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    let head_end = find(&raw, b"\r\n\r\n").unwrap() + 4;
    assert_eq!(raw.len() - head_end, 100, "{text}");

    up.write_all(&vec![b'u'; up_len - up_len / 2]).unwrap();
    let (raw, closed) = read_until_close(&mut up);
    let text = String::from_utf8_lossy(&raw);
    assert!(closed && text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(&format!("\"len\": {up_len}")), "{text}");

    let (body, closed) = read_until_close(&mut dl);
    assert!(closed);
    assert_eq!(body.len(), dl_len, "download cut");
    assert!(
        body == common::peers::app_pattern(dl_len),
        "download bytes differ"
    );

    let poll = poll.join().unwrap();
    assert_eq!(poll[0]["status"], 200, "{poll:?}");
    assert_eq!(poll[0]["headers"]["connection"], "close", "{poll:?}");
    assert_eq!(poll[0]["len"], 4, "{poll:?}");

    // Idle clients: a FIN (read returns 0), not a reset.
    for (name, s) in [("idle", &mut idle), ("silent", &mut silent)] {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => {}
            other => panic!("{name}: expected a clean close, got {other:?}"),
        }
    }

    let status = rl
        .wait_exit(Duration::from_secs(40))
        .expect("ringlb did not exit");
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", rl.log_text());
    for id in ["idle", "mid-0", "mid-1", "dl", "up"] {
        assert_eq!(be.records_of(id).len(), 1, "{id}: {:?}", be.records_of(id));
    }
    assert_eq!(be.records_of("up")[0]["len"], up_len as u64);
    assert_eq!(
        be.records_of("poll")
            .iter()
            .filter(|r| r["phase"] == "end")
            .count(),
        1
    );
}

/// gunicorn gthread workers recycled every ~20 requests (`--max-requests
/// 20 --max-requests-jitter 5`) under keep-alive load from Python
/// requests: each exiting worker closes its idle keep-alive connections
/// and drops the ones it had just accepted. Every GET is answered (a retry
/// on a new connection, within `retries = 2`) and seen once; a POST is
/// seen at most once, and one that failed (502, as behind nginx, which
/// cannot know either whether the worker read it) was never seen.
#[test]
fn gunicorn_recycling_workers_cost_no_get_and_never_a_duplicate_post() {
    let be = AppServer::gunicorn(
        "gthread",
        &[
            "--workers",
            "2",
            "--threads",
            "4",
            "--max-requests",
            "20",
            "--max-requests-jitter",
            "5",
            "--log-level",
            "info",
        ],
    );
    let rl = Ringlb::start(&simple_config(&[be.addr], "retries = 2\n"));
    let results = client_thread("requests", rl.addr, load_steps("G", 60, 3, 3, "/x"))
        .join()
        .unwrap();
    assert_eq!(results.len(), 360);
    let recycled = be.proc.log_text().matches("Autorestarting worker").count();
    assert!(recycled >= 5, "workers recycled {recycled} times");
    let mut wrong = Vec::new();
    let mut post_502 = 0;
    for r in &results {
        let id = r["id"].as_str().unwrap();
        let seen = be.records_of(id).len();
        let post = id.contains("-p");
        let ok = match (post, r["status"].as_u64()) {
            (_, Some(200)) => seen == 1,
            (true, Some(502)) => {
                post_502 += 1;
                seen == 0
            }
            _ => false,
        };
        if !ok {
            wrong.push(format!(
                "{id}: status {} {:?}, seen {seen}",
                r["status"], r["error"]
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    eprintln!("{recycled} worker recycles, {post_502} of 180 POSTs answered 502 (never seen)");
}

/// `max_conns` counts the requests in flight across a reload: one started
/// before the reload still holds its slot afterwards (the count used to
/// start from zero with every new snapshot — a reload, or any health or
/// VRRP change — so a server limited to one request got two), and the
/// slot is freed when it finishes (no count left behind).
#[test]
fn max_conns_counts_requests_started_before_a_reload() {
    let (a, release_a, seen_a) = holding_backend();
    let (b, release_b, seen_b) = holding_backend();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = |servers: &[SocketAddr]| {
        let mut s = format!(
            "[runtime]\nworkers = 1\n[admin]\nlisten = \"{admin}\"\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n[upstream.app]\n"
        );
        for a in servers {
            s += &format!("[[upstream.app.server]]\naddress = \"{a}\"\nmax_conns = 1\n");
        }
        s
    };
    let rl = Ringlb::start(&cfg(&[a.addr]));
    wait_admin(&rl, admin);
    let reload = |servers: &[SocketAddr], generation: u64| {
        let text = cfg(servers).replace("{port}", &rl.addr.port().to_string());
        std::fs::write(&rl.config, text).unwrap();
        rl.signal(libc::SIGHUP);
        eventually(&format!("generation {generation}"), || {
            stats(admin)["generation"] == generation
        });
    };
    let addr = rl.addr;
    let slow = |path: &'static str| {
        thread::spawn(move || {
            roundtrip_close(
                addr,
                format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
            )
        })
    };
    let get = |path: &str| {
        roundtrip_close(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    let first = slow("/slow1");
    eventually("/slow1 at a", || seen_a.lock().unwrap().len() == 1);
    assert_eq!(status_of(&get("/full0")), 503);
    // The same file again: /slow1 still holds a's only slot.
    reload(&[a.addr], 2);
    let r = get("/full1");
    assert_eq!(status_of(&r), 503, "{r}");
    // A server added: the next request goes there; then both are full.
    reload(&[a.addr, b.addr], 3);
    let second = slow("/slow2");
    eventually("/slow2 at b", || seen_b.lock().unwrap().len() == 1);
    let r = get("/full2");
    assert_eq!(status_of(&r), 503, "{r}");
    release_a.store(true, Ordering::Release);
    release_b.store(true, Ordering::Release);
    assert_eq!(status_of(&first.join().unwrap()), 200);
    assert_eq!(status_of(&second.join().unwrap()), 200);
    // Both slots are free again: two requests at once are both served.
    release_a.store(false, Ordering::Release);
    release_b.store(false, Ordering::Release);
    let (x, y) = (slow("/slow3"), slow("/slow4"));
    eventually("/slow3 and /slow4 held", || {
        seen_a.lock().unwrap().len() + seen_b.lock().unwrap().len() == 4
    });
    release_a.store(true, Ordering::Release);
    release_b.store(true, Ordering::Release);
    assert_eq!(status_of(&x.join().unwrap()), 200);
    assert_eq!(status_of(&y.join().unwrap()), 200);
    let all: Vec<String> = seen_a
        .lock()
        .unwrap()
        .iter()
        .chain(seen_b.lock().unwrap().iter())
        .cloned()
        .collect();
    assert!(!all.iter().any(|l| l.contains("/full")), "{all:?}");
}

/// A backend answering its `name` to every request.
fn named(name: &'static str) -> Backend {
    backend(move |mut s| {
        let mut buf = Vec::new();
        while read_request(&mut s, &mut buf).is_some() {
            let r = format!("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n{name}");
            if s.write_all(r.as_bytes()).is_err() {
                return;
            }
        }
    })
}

/// `slow_start` after a reload: a server set from `down = true` back up,
/// or added, starts with a tiny share (here a 1-hour ramp: about 1 in 1000
/// requests for the rest of the test) instead of its full weight at once.
#[test]
fn servers_a_reload_brings_in_ramp_up_with_slow_start() {
    let (a, b, c) = (named("a"), named("b"), named("c"));
    let cfg = |b_down: bool, with_c: bool| {
        let mut s = String::from(
            "[runtime]\nworkers = 1\n[[listener]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"app\"\n[upstream.app]\n",
        );
        s += &format!(
            "[[upstream.app.server]]\naddress = \"{}\"\nslow_start = \"1h\"\n",
            a.addr
        );
        s += &format!(
            "[[upstream.app.server]]\naddress = \"{}\"\nslow_start = \"1h\"\ndown = {b_down}\n",
            b.addr
        );
        if with_c {
            s += &format!(
                "[[upstream.app.server]]\naddress = \"{}\"\nslow_start = \"1h\"\n",
                c.addr
            );
        }
        s
    };
    let rl = Ringlb::start(&cfg(true, false));
    let count = |n: usize| {
        let mut s = connect(rl.addr);
        let mut buf = Vec::new();
        let mut got: std::collections::BTreeMap<String, usize> = Default::default();
        for _ in 0..n {
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
            let r = read_response(&mut s, &mut buf, false).unwrap();
            assert_eq!(status_of(&r), 200, "{r}");
            *got.entry(body_of(&r).to_string()).or_default() += 1;
        }
        got
    };
    assert_eq!(count(50).get("a"), Some(&50));
    std::fs::write(
        &rl.config,
        cfg(false, true).replace("{port}", &rl.addr.port().to_string()),
    )
    .unwrap();
    rl.signal(libc::SIGHUP);
    eventually("the reload", || {
        rl.log_text().contains("generation 2 published")
    });
    let got = count(300);
    let (gb, gc) = (
        got.get("b").copied().unwrap_or(0),
        got.get("c").copied().unwrap_or(0),
    );
    // Full weight at once would be ~100 each.
    assert!(gb <= 10 && gc <= 10, "{got:?}");
    assert_eq!(got.values().sum::<usize>(), 300);
}

/// A reload that removes a listener winds its keep-alive connections down
/// as a graceful stop does (nginx's old worker does the same): the answer
/// in flight says `Connection: close` and the connection closes after it,
/// an idle connection is closed, and nothing is sent twice. (Without this,
/// the answer kept the connection, and the client's next request on it met
/// a close: its listener is gone from the new configuration.)
#[test]
fn a_listener_removed_by_a_reload_closes_its_keep_alive_connections_after_the_answer() {
    let (be, release, seen) = holding_backend();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gone: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = |with_gone: bool| {
        let mut s = format!(
            "[runtime]\nworkers = 1\n[admin]\nlisten = \"{admin}\"\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n"
        );
        if with_gone {
            s += &format!("[[listener]]\nlisten = \"{gone}\"\nupstream = \"app\"\n");
        }
        s + &format!(
            "[upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\n",
            be.addr
        )
    };
    let rl = Ringlb::start(&cfg(true));
    wait_admin(&rl, admin);
    // Two keep-alive connections on the listener to be removed, answered
    // once each: one gets a slow request next, the other stays idle.
    let (mut busy, mut idle) = (connect(gone), connect(gone));
    let (mut busy_buf, mut idle_buf) = (Vec::new(), Vec::new());
    for (s, buf, path) in [
        (&mut busy, &mut busy_buf, "/first"),
        (&mut idle, &mut idle_buf, "/idle"),
    ] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(s, buf, false).expect("an answer");
        assert_eq!(status_of(&r), 200, "{r}");
        assert!(!r.contains("Connection: close"), "{r}");
    }
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    eventually("/slow at the backend", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("GET /slow"))
    });
    // The reload removes the listener while /slow is in flight.
    let text = cfg(false).replace("{port}", &rl.addr.port().to_string());
    std::fs::write(&rl.config, text).unwrap();
    rl.signal(libc::SIGHUP);
    eventually("generation 2", || stats(admin)["generation"] == 2);
    eventually("the removed listener closed", || {
        TcpStream::connect(gone).is_err()
    });
    // The idle connection is closed, with nothing sent on it.
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).ok(), Some(0), "{rest:?}");
    assert!(idle_buf.is_empty());
    // The answer in flight closes its connection, and ringlb closes it.
    release.store(true, Ordering::Release);
    let r = read_response(&mut busy, &mut busy_buf, false).expect("the answer in flight");
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(body_of(&r), "ok", "{r}");
    assert!(r.contains("\r\nConnection: close\r\n"), "{r}");
    let mut rest = Vec::new();
    assert_eq!(busy.read_to_end(&mut rest).ok(), Some(0), "{rest:?}");
    assert!(busy_buf.is_empty(), "{busy_buf:?}");
    // The listener that stays serves as before.
    let r = roundtrip_close(
        rl.addr,
        b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "GET /first HTTP/1.1",
            "GET /idle HTTP/1.1",
            "GET /slow HTTP/1.1",
            "GET /after HTTP/1.1"
        ],
        "each request reached the backend once"
    );
}
