//! Load-balancer behaviour end to end: health (passive and active), retries,
//! backup servers, max_conns, routing, reload and graceful stop, with the
//! real binary, real backends and bounded client loops.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A backend answering `name` to every request; stops when `alive` is false
/// (connections are then closed and new ones refused by dropping the port).
fn named(name: &'static str) -> Backend {
    backend(move |mut s| {
        let mut buf = Vec::new();
        while read_request(&mut s, &mut buf).is_some() {
            let r = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                name.len()
            );
            if s.write_all(r.as_bytes()).is_err() {
                return;
            }
        }
    })
}

/// `n` keep-alive GETs on one connection; returns (statuses, bodies).
fn get_many(addr: SocketAddr, path: &str, n: usize) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    let mut s = connect(addr);
    let mut buf = Vec::new();
    for _ in 0..n {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            s = connect(addr);
            buf.clear();
            s.write_all(req.as_bytes()).unwrap();
        }
        match read_response(&mut s, &mut buf, false) {
            Some(r) => out.push((status_of(&r), body_of(&r).to_string())),
            None => {
                out.push((0, String::new()));
                s = connect(addr);
                buf.clear();
            }
        }
    }
    out
}

/// A real `ringlb backend` child process (killable).
struct ChildBackend {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ChildBackend {
    fn start(name: &str) -> ChildBackend {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut child = std::process::Command::new(BIN)
            .args([
                "backend",
                "--listen",
                &addr.to_string(),
                "--name",
                name,
                "--body-size",
                "6",
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            common::wait_child_listening(&mut child, addr),
            "backend did not start on {addr}"
        );
        ChildBackend { child, addr }
    }
}

impl Drop for ChildBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn killing_a_backend_under_load_costs_clients_nothing() {
    let a = ChildBackend::start("alpha");
    let mut b = ChildBackend::start("bravo");
    let admin = free_port();
    let cfg = simple_config(&[a.addr, b.addr], "retries = 1\n")
        + &format!("\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n");
    let rl = Ringlb::start(&cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, bad, total, addr) = (stop.clone(), bad.clone(), total.clone(), rl.addr);
        clients.push(thread::spawn(move || {
            // Bounded: at most 20k requests or until told to stop.
            for _ in 0..200 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for (st, _) in get_many(addr, "/", 100) {
                    total.fetch_add(1, Ordering::Relaxed);
                    if st != 200 {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    thread::sleep(Duration::from_millis(300));
    let _ = b.child.kill();
    let _ = b.child.wait();
    thread::sleep(Duration::from_millis(700));
    // After detection, bravo gets no more traffic: its failure count freezes.
    let fails_at = |json: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["address"].as_str() == Some(&b.addr.to_string()))
            .map(|s| {
                s["failures"]["connect"].as_u64().unwrap_or(0)
                    + s["failures"]["reset"].as_u64().unwrap_or(0)
            })
            .sum()
    };
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let before = fails_at(&admin_get(admin_addr, "/stats?raw=1").1);
    thread::sleep(Duration::from_millis(700));
    let after = fails_at(&admin_get(admin_addr, "/stats?raw=1").1);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert!(
        total.load(Ordering::Relaxed) > 1000,
        "load ran: {}",
        total.load(Ordering::Relaxed)
    );
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "non-2xx responses seen; log:\n{}",
        rl.log_text()
    );
    assert!(before >= 1, "bravo's death was observed");
    assert_eq!(
        before, after,
        "bravo still got traffic after being marked down"
    );
}

#[test]
fn active_checks_take_a_server_out_and_bring_it_back() {
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let a = backend(move |mut s| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            let is_check = req.starts_with(b"GET /health ");
            let r: &[u8] = if is_check && !h.load(Ordering::Relaxed) {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nalpha"
            };
            if s.write_all(r).is_err() {
                return;
            }
        }
    });
    let b = named("bravo");
    let extra = "[upstream.app.health_check]\nkind = \"http\"\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\n";
    let rl = Ringlb::start(&simple_config(&[a.addr, b.addr], extra));
    let share = |n| {
        get_many(rl.addr, "/", n)
            .iter()
            .filter(|(_, b)| b == "alpha")
            .count()
    };
    assert!(share(20) >= 8, "alpha serves while healthy");
    healthy.store(false, Ordering::Relaxed);
    let start = Instant::now();
    while share(10) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "alpha never taken out"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(share(50), 0, "alpha got traffic while failing checks");
    healthy.store(true, Ordering::Relaxed);
    let start = Instant::now();
    while share(10) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "alpha never came back"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        rl.log_text().contains("health check failing"),
        "{}",
        rl.log_text()
    );
}

#[test]
fn backup_is_used_only_when_primaries_are_down() {
    let primary = named("primary");
    let backup = named("backup");
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = format!(
        "[runtime]\nworkers = 1\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n[[listener]]\nlisten = \"127.0.0.1:{{port2}}\"\nupstream = \"gone\"\n[upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\n[[upstream.app.server]]\naddress = \"{}\"\nbackup = true\n[upstream.gone]\n[[upstream.gone.server]]\naddress = \"{dead}\"\n[[upstream.gone.server]]\naddress = \"{}\"\nbackup = true\n",
        primary.addr, backup.addr, backup.addr
    );
    let port2 = free_port();
    let rl = Ringlb::start(&cfg.replace("{port2}", &port2.to_string()));
    let r = get_many(rl.addr, "/", 20);
    assert!(r.iter().all(|(s, b)| *s == 200 && b == "primary"), "{r:?}");
    let other: SocketAddr = format!("127.0.0.1:{port2}").parse().unwrap();
    let r = get_many(other, "/", 10);
    assert!(r.iter().all(|(s, b)| *s == 200 && b == "backup"), "{r:?}");
}

#[test]
fn max_conns_overflows_then_503() {
    let slow = |name: &'static str| {
        backend(move |mut s| {
            let mut buf = Vec::new();
            while read_request(&mut s, &mut buf).is_some() {
                thread::sleep(Duration::from_millis(1500));
                let r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                    name.len()
                );
                if s.write_all(r.as_bytes()).is_err() {
                    return;
                }
            }
        })
    };
    let a = slow("alpha");
    let cfg = format!(
        "[runtime]\nworkers = 1\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n[upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\nmax_conns = 1\n",
        a.addr
    );
    let rl = Ringlb::start(&cfg);
    let addr = rl.addr;
    let first = thread::spawn(move || get_many(addr, "/", 1));
    // The first request holds alpha's only slot for 1.5 s; send the second
    // well inside that window.
    thread::sleep(Duration::from_millis(500));
    let second = get_many(addr, "/", 1);
    let first = first.join().unwrap();
    assert_eq!(first[0], (200, "alpha".to_string()));
    assert_eq!(
        second[0].0, 503,
        "second concurrent request must be refused: {second:?}"
    );
}

#[test]
fn host_and_path_routes_pick_upstreams() {
    let web = named("web");
    let api = named("api");
    let admin = named("adm");
    let cfg = format!(
        "[runtime]\nworkers = 1\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"web\"\n[[listener.route]]\nhost = \"*.api.test\"\nupstream = \"api\"\n[[listener.route]]\npath_prefix = \"/admin\"\nupstream = \"adm\"\n[upstream.web]\n[[upstream.web.server]]\naddress = \"{}\"\n[upstream.api]\n[[upstream.api.server]]\naddress = \"{}\"\n[upstream.adm]\n[[upstream.adm.server]]\naddress = \"{}\"\n",
        web.addr, api.addr, admin.addr
    );
    let rl = Ringlb::start(&cfg);
    let get = |host: &str, path: &str| {
        let r = roundtrip_close(
            rl.addr,
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        body_of(&r).to_string()
    };
    assert_eq!(get("v1.API.test:80", "/x"), "api");
    assert_eq!(get("example.test", "/admin/users"), "adm");
    assert_eq!(get("example.test", "/administrator"), "web");
    assert_eq!(get("example.test", "/"), "web");
}

#[test]
fn sighup_swaps_servers_under_load_without_errors() {
    let a = named("alpha");
    let b = named("bravo");
    let rl = Ringlb::start(&simple_config(&[a.addr], ""));
    let stop = Arc::new(AtomicBool::new(false));
    let (st, addr) = (stop.clone(), rl.addr);
    let client = thread::spawn(move || {
        let mut all = Vec::new();
        for _ in 0..300 {
            if st.load(Ordering::Relaxed) {
                break;
            }
            all.extend(get_many(addr, "/", 20));
        }
        all
    });
    thread::sleep(Duration::from_millis(200));
    std::fs::write(
        &rl.config,
        simple_config(&[b.addr], "").replace("{port}", &rl.addr.port().to_string()),
    )
    .unwrap();
    rl.signal(libc::SIGHUP);
    let start = Instant::now();
    while !rl.log_text().contains("generation") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no reload: {}",
            rl.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let all = client.join().unwrap();
    assert!(
        all.iter().all(|(s, _)| *s == 200),
        "failed requests across reload: {:?}",
        all.iter().filter(|(s, _)| *s != 200).count()
    );
    assert!(all.iter().any(|(_, b)| b == "alpha") && all.iter().any(|(_, b)| b == "bravo"));
    // Once switched, never back.
    let first_b = all.iter().position(|(_, b)| b == "bravo").unwrap();
    assert!(all[first_b..].iter().all(|(_, b)| b == "bravo"));
    let r = get_many(rl.addr, "/", 5);
    assert!(r.iter().all(|(_, b)| b == "bravo"), "{r:?}");
}

#[test]
fn sighup_with_a_broken_file_keeps_the_old_config() {
    let a = named("alpha");
    let rl = Ringlb::start(&simple_config(&[a.addr], ""));
    std::fs::write(
        &rl.config,
        "[runtime]\nworkers = 1\n[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"nope\"\n",
    )
    .unwrap();
    rl.signal(libc::SIGHUP);
    let start = Instant::now();
    while !rl.log_text().contains("reload failed") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no reload error: {}",
            rl.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let log = rl.log_text();
    let path = rl.config.display().to_string();
    assert!(
        log.contains(&format!("{path}:5:")),
        "error must name file:line:col: {log}"
    );
    let r = get_many(rl.addr, "/", 3);
    assert!(r.iter().all(|(s, b)| *s == 200 && b == "alpha"), "{r:?}");
}

#[test]
fn sighup_adds_and_removes_listeners() {
    let a = named("alpha");
    let rl = Ringlb::start(&simple_config(&[a.addr], ""));
    let port2 = free_port();
    let text = simple_config(&[a.addr], "").replace("{port}", &rl.addr.port().to_string())
        + &format!("\n[[listener]]\nlisten = \"127.0.0.1:{port2}\"\nupstream = \"app\"\n");
    std::fs::write(&rl.config, text).unwrap();
    rl.signal(libc::SIGHUP);
    let second: SocketAddr = format!("127.0.0.1:{port2}").parse().unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(second).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "new listener never opened: {}",
            rl.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        get_many(second, "/", 2),
        vec![(200, "alpha".into()), (200, "alpha".into())]
    );
    // Now drop the first listener; the second keeps serving.
    let text = simple_config(&[a.addr], "").replace("{port}", &port2.to_string());
    std::fs::write(&rl.config, text).unwrap();
    rl.signal(libc::SIGHUP);
    let start = Instant::now();
    while std::net::TcpStream::connect(rl.addr).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "old listener never closed"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get_many(second, "/", 1), vec![(200, "alpha".into())]);
}

#[test]
fn sigterm_finishes_requests_in_flight() {
    stop_finishes_requests_in_flight(libc::SIGTERM);
}

/// SIGQUIT is nginx's graceful stop: ringlb stops the same way, so the
/// scripts that stop an nginx it replaces do not cut requests.
#[test]
fn sigquit_finishes_requests_in_flight_as_nginx_s_graceful_stop() {
    stop_finishes_requests_in_flight(libc::SIGQUIT);
}

fn stop_finishes_requests_in_flight(sig: i32) {
    let slow = backend(|mut s| {
        let mut buf = Vec::new();
        while read_request(&mut s, &mut buf).is_some() {
            thread::sleep(Duration::from_millis(600));
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
                .is_err()
            {
                return;
            }
        }
    });
    let mut rl = Ringlb::start(&simple_config(&[slow.addr], ""));
    let addr = rl.addr;
    let inflight: Vec<_> = (0..3)
        .map(|_| {
            thread::spawn(move || {
                let mut s = connect(addr);
                s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
                read_response(&mut s, &mut Vec::new(), false)
            })
        })
        .collect();
    // An idle keep-alive connection is closed by the drain.
    let mut idle = connect(addr);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(200));
    rl.signal(sig);
    for h in inflight {
        let r = h.join().unwrap().expect("request in flight was cut");
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("slow"),
            "{r}"
        );
        assert!(
            r.contains("Connection: close\r\n"),
            "draining responses close: {r}"
        );
    }
    let status = rl
        .wait_exit(Duration::from_secs(10))
        .expect("ringlb did not exit after draining");
    assert!(status.success(), "{status:?}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after stop"
    );
}

/// logrotate's stock `postrotate` for nginx sends SIGUSR1 after moving
/// the log away: ringlb reopens its access log there (lines after the
/// signal go to a new file at the configured path) and keeps serving.
/// (SIGUSR2 is ignored in release builds; the test build's
/// `fault-injection` feature gives it another use, so it is not sent here.)
#[test]
fn sigusr1_reopens_the_access_log() {
    let be = backend(|mut s| {
        let mut buf = Vec::new();
        while read_request(&mut s, &mut buf).is_some() {
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    });
    let dir = common::tempdir::Dir::new("logrotate");
    let alog = dir.0.join("access.log");
    let rotated = dir.0.join("access.log.1");
    let cfg = format!(
        "{}\n[log]\naccess_log = \"{}\"\n",
        simple_config(&[be.addr], ""),
        alog.display()
    );
    let mut rl = Ringlb::start(&cfg);
    let lines = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(what))
            .count()
    };
    let addr = rl.addr;
    let get = |path: &str| {
        let r = roundtrip_close(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{path}: {r}");
    };
    let eventually = |what: &str, done: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            thread::sleep(Duration::from_millis(50));
        }
    };
    get("/before-rotation");
    eventually("the first line was not logged", &|| {
        lines(&alog, "/before-rotation") == 1
    });
    std::fs::rename(&alog, &rotated).unwrap();
    rl.signal(libc::SIGUSR1);
    eventually("the log was not reopened", &|| alog.exists());
    get("/after-rotation");
    eventually(
        "the line after the rotation is not in the new file",
        &|| lines(&alog, "/after-rotation") == 1,
    );
    assert_eq!(lines(&rotated, "/after-rotation"), 0);
    assert_eq!(lines(&rotated, "/before-rotation"), 1);

    get("/after-reopen");
    assert!(
        rl.wait_exit(Duration::from_millis(10)).is_none(),
        "SIGUSR1 ended ringlb:\n{}",
        rl.log_text()
    );
}
