//! Open-loop HTTP load: a fixed request rate, whatever the server does.
//!
//! Request `i` is *due* at `start + i / rate`. A pool of blocking worker
//! threads takes the next due request, sleeps until it is due, sends it on
//! a fresh TCP connection (`Connection: close`: every request exercises
//! connect, so a moved VIP or a dead listener shows in the next request)
//! and records its latency **from the due time**. When every worker is
//! stuck (a dead node swallowing SYNs), requests start late and that delay
//! is part of their latency — the schedule never slows down to match the
//! server, so no coordinated omission. The pool is sized for the whole
//! timeout window (`rate × timeout × 2`) so it normally keeps up anyway.
//!
//! Why not an existing tool: wrk is closed-loop; wrk2 is not packaged in
//! Debian; `oha -q RATE --latency-correction` gets the schedule right but
//! reports failures only as totals (its per-request database keeps only
//! successes), so neither yields the per-10 ms timeline of failures *by
//! kind* the failover scenarios are about. This is ~200 lines on std.
//!
//! Events (a crash, a reload) run on their own thread at fixed offsets;
//! their actual start times are recorded with the samples.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::report::{Event, Kind, Outcome, Run, Sample};

/// Something to do to the system under test at `at` into the run.
pub struct Action {
    pub at: Duration,
    pub name: String,
    pub run: Box<dyn FnOnce() + Send>,
}

pub struct LoadOpts {
    pub target: SocketAddr,
    pub host: String,
    pub path: String,
    pub rate: u32,
    pub duration: Duration,
    /// Per request, from connect to the end of the response.
    pub timeout: Duration,
}

/// Worker threads needed to keep `rate` going while every request in a
/// `timeout` window hangs, with headroom; bounded.
pub fn workers_for(rate: u32, timeout: Duration) -> usize {
    let in_flight = (rate as f64 * timeout.as_secs_f64() * 2.0).ceil() as usize;
    (in_flight + 8).clamp(4, 2048)
}

/// Classify an I/O error from connect (`connecting`) or from the exchange.
pub fn classify(e: &io::Error, connecting: bool) -> Kind {
    use io::ErrorKind as E;
    match e.kind() {
        E::ConnectionRefused => Kind::Refused,
        E::TimedOut | E::WouldBlock if connecting => Kind::ConnectTimeout,
        E::TimedOut | E::WouldBlock => Kind::Timeout,
        E::ConnectionReset | E::ConnectionAborted | E::BrokenPipe => Kind::Reset,
        E::UnexpectedEof => Kind::Closed,
        _ if matches!(
            e.raw_os_error(),
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::ENETDOWN)
        ) =>
        {
            Kind::Unreachable
        }
        _ if connecting => Kind::Unreachable,
        _ => Kind::Reset,
    }
}

/// What a complete response head says.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    /// `X-Backend`.
    server: String,
    /// Bytes of the head.
    len: usize,
    /// Content-Length (None: until close).
    body: Option<usize>,
}

/// The response head in `buf`, once it is complete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Kind> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let mut server = String::new();
            let mut len = None;
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("x-backend") {
                    server = String::from_utf8_lossy(h.value).into_owned();
                } else if h.name.eq_ignore_ascii_case("content-length") {
                    len = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok());
                }
            }
            Ok(Some(Head {
                status: resp.code.unwrap_or(0),
                server,
                len: n,
                body: len,
            }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(Kind::BadResponse),
    }
}

/// One exchange on a fresh connection; the backend's name on success.
fn exchange(target: SocketAddr, request: &[u8], timeout: Duration) -> Result<String, Kind> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let mut s = TcpStream::connect_timeout(&target, timeout).map_err(|e| classify(&e, true))?;
    let _ = s.set_nodelay(true);
    s.set_write_timeout(left().or(Some(Duration::from_micros(1))))
        .map_err(|_| Kind::Timeout)?;
    s.write_all(request).map_err(|e| classify(&e, false))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let mut head: Option<Head> = None;
    loop {
        if let Some(Head {
            len, body: Some(b), ..
        }) = &head
        {
            if buf.len() >= len + b {
                break;
            }
        }
        let Some(d) = left() else {
            return Err(Kind::Timeout);
        };
        s.set_read_timeout(Some(d)).map_err(|_| Kind::Timeout)?;
        let n = s.read(&mut chunk).map_err(|e| classify(&e, false))?;
        if n == 0 {
            if head.is_none() {
                return Err(Kind::Closed);
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if head.is_none() {
            head = parse_head(&buf)?;
        }
    }
    let head = head.ok_or(Kind::Closed)?;
    match head.status {
        200..=399 => Ok(head.server),
        500..=599 => Err(Kind::Http5xx),
        _ => Err(Kind::BadResponse),
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Run the load and the actions; returns every request's fate.
pub fn run(opts: &LoadOpts, actions: Vec<Action>) -> io::Result<Run> {
    if opts.rate == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "rate must be > 0",
        ));
    }
    let total = (opts.duration.as_secs_f64() * opts.rate as f64).round() as u64;
    let period_ns = 1e9 / opts.rate as f64;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringlb-loadgen\r\nConnection: close\r\n\r\n",
        opts.path, opts.host
    )
    .into_bytes();
    let servers: Arc<Mutex<Vec<String>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(20);
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();

    let actor = {
        let events = Arc::clone(&events);
        std::thread::Builder::new()
            .name("loadgen-events".into())
            .spawn(move || {
                let mut actions = actions;
                actions.sort_by_key(|a| a.at);
                for a in actions {
                    sleep_until(start + a.at);
                    let at_us = Instant::now().saturating_duration_since(start).as_micros() as u64;
                    events
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Event {
                            name: a.name,
                            at_us,
                        });
                    (a.run)();
                }
            })?
    };

    let mut handles = Vec::new();
    for w in 0..workers_for(opts.rate, opts.timeout) {
        let (next, servers, request) = (Arc::clone(&next), Arc::clone(&servers), request.clone());
        let (target, timeout) = (opts.target, opts.timeout);
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadgen-{w}"))
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break;
                        }
                        let due = start + Duration::from_nanos((i as f64 * period_ns) as u64);
                        sleep_until(due);
                        let result = exchange(target, &request, timeout);
                        let done = Instant::now();
                        let outcome = match result {
                            Ok(name) => {
                                let mut names = servers.lock().unwrap_or_else(|e| e.into_inner());
                                let idx = match names.iter().position(|n| *n == name) {
                                    Some(i) => i,
                                    None => {
                                        names.push(name);
                                        names.len() - 1
                                    }
                                };
                                Outcome::Ok(idx as u16)
                            }
                            Err(k) => Outcome::Failed(k),
                        };
                        mine.push(Sample {
                            intended_us: due.saturating_duration_since(start).as_micros() as u64,
                            latency_us: done.saturating_duration_since(due).as_micros() as u64,
                            outcome,
                        });
                    }
                    mine
                })?,
        );
    }
    let mut samples = Vec::with_capacity(total as usize);
    for h in handles {
        samples.extend(
            h.join()
                .map_err(|_| io::Error::other("a loadgen worker panicked"))?,
        );
    }
    actor
        .join()
        .map_err(|_| io::Error::other("a lab action panicked"))?;
    let servers = std::mem::take(&mut *servers.lock().unwrap_or_else(|e| e.into_inner()));
    let events = std::mem::take(&mut *events.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Run {
        rate: opts.rate,
        duration_us: opts.duration.as_micros() as u64,
        servers,
        samples,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_covers_the_timeout_window() {
        assert_eq!(workers_for(1000, Duration::from_millis(100)), 208);
        assert_eq!(workers_for(1, Duration::from_millis(1)), 9);
        assert_eq!(workers_for(1_000_000, Duration::from_secs(1)), 2048);
    }

    #[test]
    fn error_kinds() {
        let e = |k| io::Error::from(k);
        use io::ErrorKind as E;
        assert_eq!(classify(&e(E::ConnectionRefused), true), Kind::Refused);
        assert_eq!(classify(&e(E::TimedOut), true), Kind::ConnectTimeout);
        assert_eq!(classify(&e(E::WouldBlock), false), Kind::Timeout);
        assert_eq!(classify(&e(E::ConnectionReset), false), Kind::Reset);
        assert_eq!(
            classify(&io::Error::from_raw_os_error(libc::EHOSTUNREACH), true),
            Kind::Unreachable
        );
    }

    #[test]
    fn heads() {
        let h = b"HTTP/1.1 200 OK\r\nX-Backend: lb1-a\r\nContent-Length: 6\r\n\r\nhello\n";
        let head = parse_head(h).unwrap().unwrap();
        assert_eq!(
            (head.status, head.server.as_str(), head.body),
            (200, "lb1-a", Some(6))
        );
        assert_eq!(&h[head.len..], b"hello\n");
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert_eq!(parse_head(b"garbage\r\n\r\n"), Err(Kind::BadResponse));
    }

    /// Against the built-in backend on loopback: every request answered,
    /// by that backend, at the scheduled count.
    #[test]
    fn against_a_real_backend() {
        let opts = crate::cli::backend::BackendOpts::new(SocketAddr::from(([127, 0, 0, 1], 0)))
            .name("lb9-x");
        let (addr, _h) = crate::cli::backend::spawn(opts).unwrap();
        let run = run(
            &LoadOpts {
                target: addr,
                host: "demo".into(),
                path: "/".into(),
                rate: 200,
                duration: Duration::from_millis(250),
                timeout: Duration::from_secs(5),
            },
            vec![Action {
                at: Duration::from_millis(100),
                name: "mark".into(),
                run: Box::new(|| ()),
            }],
        )
        .unwrap();
        assert_eq!(run.samples.len(), 50);
        assert!(run.samples.iter().all(|s| s.outcome == Outcome::Ok(0)));
        assert_eq!(run.servers, vec!["lb9-x".to_string()]);
        assert_eq!(run.events.len(), 1);
        assert!(run.events[0].at_us >= 100_000);
    }

    #[test]
    fn refused_is_recorded_not_dropped() {
        // A port nobody listens on: bind, learn it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let run = run(
            &LoadOpts {
                target: port,
                host: "x".into(),
                path: "/".into(),
                rate: 100,
                duration: Duration::from_millis(100),
                timeout: Duration::from_secs(1),
            },
            Vec::new(),
        )
        .unwrap();
        assert_eq!(run.samples.len(), 10);
        assert!(run
            .samples
            .iter()
            .all(|s| s.outcome == Outcome::Failed(Kind::Refused)));
    }
}
