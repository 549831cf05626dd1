//! Open-loop HTTP load: a fixed request rate, whatever the server does.
//!
//! Request `i` is *due* at `start + i / rate`. One thread runs the whole
//! schedule on an epoll loop (mio): at each due time it opens a fresh,
//! non-blocking TCP connection (`Connection: close`: every request exercises
//! connect, so a moved VIP or a dead listener shows in the next request),
//! sends the request, and records its latency **from the due time** when
//! the response is complete. The schedule never waits for the server (a
//! dead node swallowing SYNs costs nothing but an open socket until the
//! timeout), so there is no coordinated omission. A timerfd wakes the loop
//! at the next due time or deadline with nanosecond precision (epoll's own
//! timeout is in milliseconds).
//!
//! How late the generator itself started each request (`Lateness`) is
//! recorded: on an overloaded host the client is the first to fall behind,
//! and a run whose client was tens of milliseconds late says nothing about
//! failover times.
//!
//! Two things here keep the lab from hurting the host it measures (both
//! were the cause of multi-second host-wide stalls in the first version):
//!
//! - **one thread**, not a pool of blocking threads sized for the timeout
//!   window (~400 at 1000 req/s): when the host hiccuped they all became
//!   runnable at once and all entered the kernel's port search together;
//! - **the server closes first**: after the response the client reads to
//!   end-of-file before closing, so the `TIME_WAIT` state stays on the
//!   server's side. Closed first by the client, every request left a
//!   `TIME_WAIT` socket holding an ephemeral port for 60 s; at 1000 req/s
//!   that filled the half of the port range `connect()` searches first
//!   within ~15 s, and each `connect()` then scanned thousands of ports
//!   under bottom-half-disabling locks.
//!
//! Why not an existing tool: wrk is closed-loop; wrk2 is not packaged in
//! Debian; `oha -q RATE --latency-correction` gets the schedule right but
//! reports failures only as totals (its per-request database keeps only
//! successes), so neither yields the per-10 ms timeline of failures *by
//! kind* the failover scenarios are about.
//!
//! With `keep_alive: Some(n)`, the requests come from `n` clients in turn,
//! each with a pool of its own: answered connections are kept (unless the
//! response said `Connection: close`), and a client's due request takes
//! the one it used last before it opens a new one, as the connection pool
//! of an HTTP client library does. A server that closes an idle connection takes
//! it out of the pool (the close is seen while it waits, as urllib3 and
//! httpx check before reuse); a request that fails on a reused connection
//! counts as failed: no retry. This is what a planned handover does to
//! keep-alive clients.
//!
//! Events (a crash, a reload) start at fixed offsets, each on a thread of
//! its own (a slow one never delays the next); their actual start times are
//! recorded with the samples.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::report::{Event, Kind, Lateness, Outcome, Run, Sample};

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
    /// `Some(n)`: `n` clients that reuse answered connections (see the
    /// module docs); `None`: a fresh connection per request.
    pub keep_alive: Option<u32>,
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
    /// The response said `Connection: close`.
    close: bool,
}

/// The response head in `buf`, once it is complete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Kind> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let mut server = String::new();
            let mut len = None;
            let mut close = false;
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("x-backend") {
                    server = String::from_utf8_lossy(h.value).into_owned();
                } else if h.name.eq_ignore_ascii_case("connection") {
                    close = h.value.eq_ignore_ascii_case(b"close");
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
                close,
            }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(Kind::BadResponse),
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

const TIMER: Token = Token(usize::MAX);

/// A one-shot timer as a file descriptor epoll can wait on.
struct Timer(OwnedFd);

impl Timer {
    fn new() -> io::Result<Timer> {
        // SAFETY: plain syscall; the fd is owned by the returned value.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is not owned elsewhere.
        Ok(Timer(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Fire once, `after` from now (at least 1 ns: zero would disarm it).
    fn arm(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid fd and a valid itimerspec; no old value wanted.
        let rc =
            unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Consume the expiry (the fd is non-blocking; nothing to read is fine).
    fn clear(&self) {
        let mut n = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local buffer.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
    }
}

/// Where one request's connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Connecting,
    Sending,
    Receiving,
    /// Answered and recorded; reading to the server's close so that the
    /// `TIME_WAIT` is the server's (see the module docs).
    Draining,
    /// Answered, kept alive: in the idle pool until a request takes it or
    /// the server closes it.
    Idle,
}

struct Conn {
    stream: TcpStream,
    due: Instant,
    state: State,
    written: usize,
    buf: Vec<u8>,
    head: Option<Head>,
    /// The keep-alive client whose pool the connection joins after a
    /// response that allows it (`None`: not kept).
    client: Option<usize>,
}

/// What an event on a connection led to.
enum Step {
    /// Waiting for more readiness.
    Pending,
    /// The exchange is over; `true`: the connection is still open (drain
    /// it, or keep it idle).
    Done(Result<String, Kind>, bool),
    /// Draining is over, or an idle connection was closed: close.
    Closed,
}

/// The verdict on a complete response head.
fn judge(head: &Head) -> Result<String, Kind> {
    match head.status {
        200..=399 => Ok(head.server.clone()),
        500..=599 => Err(Kind::Http5xx),
        _ => Err(Kind::BadResponse),
    }
}

impl Conn {
    /// Drive the connection as far as readiness allows.
    fn advance(&mut self, request: &[u8]) -> Step {
        if self.state == State::Idle {
            return self.watch_idle();
        }
        if self.state == State::Connecting {
            match self.stream.take_error() {
                Ok(Some(e)) | Err(e) => return Step::Done(Err(classify(&e, true)), false),
                Ok(None) => {}
            }
            match self.stream.peer_addr() {
                Ok(_) => {
                    let _ = self.stream.set_nodelay(true);
                    self.state = State::Sending;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Step::Pending,
                Err(e) => return Step::Done(Err(classify(&e, true)), false),
            }
        }
        if self.state == State::Sending {
            while self.written < request.len() {
                match self.stream.write(&request[self.written..]) {
                    Ok(n) => self.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Pending,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Step::Done(Err(classify(&e, false)), false),
                }
            }
            self.state = State::Receiving;
        }
        let mut chunk = [0u8; 4096];
        loop {
            if self.state == State::Receiving {
                if let Some(
                    h @ Head {
                        len, body: Some(b), ..
                    },
                ) = &self.head
                {
                    if self.buf.len() >= len + b {
                        self.state = if self.client.is_some() && !h.close {
                            State::Idle
                        } else {
                            State::Draining
                        };
                        return Step::Done(judge(h), true);
                    }
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return match (self.state, &self.head) {
                        (State::Draining, _) => Step::Closed,
                        // A response framed by the close.
                        (_, Some(h)) if h.body.is_none() => Step::Done(judge(h), false),
                        _ => Step::Done(Err(Kind::Closed), false),
                    };
                }
                Ok(_) if self.state == State::Draining => {}
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if self.head.is_none() {
                        match parse_head(&self.buf) {
                            Ok(h) => self.head = h,
                            Err(k) => return Step::Done(Err(k), false),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if self.state == State::Draining => return Step::Closed,
                Err(e) => return Step::Done(Err(classify(&e, false)), false),
            }
        }
    }
}

impl Conn {
    /// An idle kept connection became readable: the server closed it (or
    /// sent what no request asked for); either way it leaves the pool.
    fn watch_idle(&mut self) -> Step {
        let mut chunk = [0u8; 512];
        match self.stream.read(&mut chunk) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Pending,
            _ => Step::Closed,
        }
    }

    /// Takes this idle connection for the request due at `due`.
    fn reuse(&mut self, due: Instant) {
        self.due = due;
        self.state = State::Sending;
        self.written = 0;
        self.buf.clear();
        self.head = None;
    }
}

/// Connections by slot (the mio token), reused; a generation per slot so a
/// stale deadline never hits the slot's next connection.
#[derive(Default)]
struct Slots {
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<usize>,
    /// Exchanges not yet answered.
    busy: usize,
}

impl Slots {
    fn insert(&mut self, c: Conn) -> (usize, u32) {
        self.busy += 1;
        let i = match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(c);
                i
            }
            None => {
                self.conns.push(Some(c));
                self.gens.push(0);
                self.conns.len() - 1
            }
        };
        (i, self.gens[i])
    }

    fn get(&mut self, i: usize, gen: u32) -> Option<&mut Conn> {
        if self.gens.get(i) == Some(&gen) {
            self.conns[i].as_mut()
        } else {
            None
        }
    }

    fn remove(&mut self, poll: &Poll, i: usize) {
        if let Some(mut c) = self.conns[i].take() {
            if !matches!(c.state, State::Draining | State::Idle) {
                self.busy -= 1;
            }
            let _ = poll.registry().deregister(&mut c.stream);
            self.gens[i] = self.gens[i].wrapping_add(1);
            self.free.push(i);
        }
    }
}

/// The one-thread loop's state.
struct Gen<'a> {
    start: Instant,
    request: &'a [u8],
    timeout: Duration,
    poll: Poll,
    slots: Slots,
    /// (deadline, slot, generation), in deadline order (deadlines are
    /// start + timeout and starts are in order).
    deadlines: VecDeque<(Instant, usize, u32)>,
    /// Same for draining connections (end of the answer + timeout).
    drains: VecDeque<(Instant, usize, u32)>,
    /// Per client, its kept-alive idle connections (slot, generation),
    /// last used on top; empty without keep-alive.
    idle: Vec<Vec<(usize, u32)>>,
    servers: Vec<String>,
    samples: Vec<Sample>,
    late_us: Vec<u64>,
}

impl Gen<'_> {
    fn record(&mut self, due: Instant, result: Result<String, Kind>) {
        let done = Instant::now();
        let outcome = match result {
            Ok(name) => {
                let idx = match self.servers.iter().position(|n| *n == name) {
                    Some(i) => i,
                    None => {
                        self.servers.push(name);
                        self.servers.len() - 1
                    }
                };
                Outcome::Ok(idx as u16)
            }
            Err(k) => Outcome::Failed(k),
        };
        self.samples.push(Sample {
            intended_us: due.saturating_duration_since(self.start).as_micros() as u64,
            latency_us: done.saturating_duration_since(due).as_micros() as u64,
            outcome,
        });
    }

    /// Start request `nth`, due at `due`: on the idle connection its client
    /// used last, if there is one, else on a new one.
    fn open(&mut self, target: SocketAddr, nth: u64, due: Instant) {
        let now = Instant::now();
        self.late_us
            .push(now.saturating_duration_since(due).as_micros() as u64);
        let client = match self.idle.len() {
            0 => None,
            n => Some((nth % n as u64) as usize),
        };
        while let Some((i, gen)) = client.and_then(|k| self.idle[k].pop()) {
            let Some(c) = self.slots.get(i, gen) else {
                continue;
            };
            if c.state != State::Idle {
                continue;
            }
            // Closed while its event waits in this turn's queue: checked
            // before reuse, as client libraries do.
            if let Step::Closed = c.watch_idle() {
                self.slots.remove(&self.poll, i);
                continue;
            }
            let c = self.slots.get(i, gen).expect("checked above");
            c.reuse(due);
            // A new generation: the deadlines of its earlier requests are
            // still queued and must not hit this one.
            self.slots.gens[i] = gen.wrapping_add(1);
            self.slots.busy += 1;
            self.deadlines
                .push_back((now + self.timeout, i, gen.wrapping_add(1)));
            // Writable already: edge-triggered readiness will not say so
            // again, so send now.
            return self.ready(i);
        }
        let mut stream = match TcpStream::connect(target) {
            Ok(s) => s,
            Err(e) => return self.record(due, Err(classify(&e, true))),
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        let (i, gen) = {
            // Register under the slot it is about to take.
            let slot = self
                .slots
                .free
                .last()
                .copied()
                .unwrap_or(self.slots.conns.len());
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut stream, Token(slot), interest)
            {
                return self.record(due, Err(classify(&e, true)));
            }
            self.slots.insert(Conn {
                stream,
                due,
                state: State::Connecting,
                written: 0,
                buf: Vec::with_capacity(512),
                head: None,
                client,
            })
        };
        self.deadlines.push_back((now + self.timeout, i, gen));
    }

    fn ready(&mut self, i: usize) {
        let gen = self.slots.gens.get(i).copied().unwrap_or(0);
        let request = self.request;
        // Edge-triggered: drive until the connection waits again (an
        // answered connection goes on to drain in the same call).
        loop {
            let Some(c) = self.slots.get(i, gen) else {
                return;
            };
            let due = c.due;
            match c.advance(request) {
                Step::Pending => return,
                Step::Done(result, open) => {
                    self.record(due, result);
                    if !open {
                        return self.slots.remove(&self.poll, i);
                    }
                    self.slots.busy -= 1;
                    // Either way the loop goes on reading: a close that
                    // came with the answer takes it out of the pool now.
                    let kept = self
                        .slots
                        .get(i, gen)
                        .and_then(|c| c.client.filter(|_| c.state == State::Idle));
                    if let Some(k) = kept {
                        self.idle[k].push((i, gen));
                    } else {
                        self.drains
                            .push_back((Instant::now() + self.timeout, i, gen));
                    }
                }
                Step::Closed => return self.slots.remove(&self.poll, i),
            }
        }
    }

    /// Fail what is past its deadline; close drains that took too long.
    fn expire(&mut self, now: Instant) {
        while let Some(&(t, i, gen)) = self.deadlines.front() {
            if t > now {
                break;
            }
            self.deadlines.pop_front();
            let Some(c) = self.slots.get(i, gen) else {
                continue;
            };
            let kind = match c.state {
                State::Draining | State::Idle => continue,
                State::Connecting => Kind::ConnectTimeout,
                State::Sending | State::Receiving => Kind::Timeout,
            };
            let due = c.due;
            self.record(due, Err(kind));
            self.slots.remove(&self.poll, i);
        }
        while let Some(&(t, i, gen)) = self.drains.front() {
            if t > now {
                break;
            }
            self.drains.pop_front();
            if self.slots.get(i, gen).is_some() {
                self.slots.remove(&self.poll, i);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let a = self.deadlines.front().map(|d| d.0);
        let b = self.drains.front().map(|d| d.0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
    let connection = match opts.keep_alive {
        Some(_) => "",
        None => "Connection: close\r\n",
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringlb-loadgen\r\n{connection}\r\n",
        opts.path, opts.host
    )
    .into_bytes();
    let poll = Poll::new()?;
    let timer = Timer::new()?;
    poll.registry().register(
        &mut SourceFd(&timer.0.as_raw_fd()),
        TIMER,
        Interest::READABLE,
    )?;
    let start = Instant::now() + Duration::from_millis(20);
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();

    let actor = {
        let events = Arc::clone(&events);
        std::thread::Builder::new()
            .name("loadgen-events".into())
            .spawn(move || {
                let mut actions = actions;
                actions.sort_by_key(|a| a.at);
                // Each action on its own thread: a slow one (a process that
                // takes seconds to die) never delays the next one's start.
                let mut running = Vec::new();
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
                    running.push(std::thread::spawn(a.run));
                }
                running.into_iter().all(|t| t.join().is_ok())
            })?
    };

    let mut g = Gen {
        start,
        request: &request,
        timeout: opts.timeout,
        poll,
        slots: Slots::default(),
        deadlines: VecDeque::new(),
        drains: VecDeque::new(),
        idle: vec![Vec::new(); opts.keep_alive.unwrap_or(0) as usize],
        servers: Vec::new(),
        samples: Vec::with_capacity(total as usize),
        late_us: Vec::with_capacity(total as usize),
    };
    let due = |i: u64| start + Duration::from_nanos((i as f64 * period_ns) as u64);
    let mut events_buf = Events::with_capacity(1024);
    let mut next = 0u64;
    loop {
        let now = Instant::now();
        while next < total && due(next) <= now {
            g.open(opts.target, next, due(next));
            next += 1;
        }
        g.expire(Instant::now());
        if next >= total && g.slots.busy == 0 {
            break;
        }
        let wake = [(next < total).then(|| due(next)), g.next_deadline()]
            .into_iter()
            .flatten()
            .min();
        if let Some(w) = wake {
            timer.arm(w.saturating_duration_since(Instant::now()))?;
        }
        match g.poll.poll(&mut events_buf, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events_buf.iter() {
            match ev.token() {
                TIMER => timer.clear(),
                Token(i) => g.ready(i),
            }
        }
    }
    if !actor.join().unwrap_or(false) {
        return Err(io::Error::other("a lab action panicked"));
    }
    let late = Lateness::of(&mut g.late_us);
    let events = std::mem::take(&mut *events.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Run {
        rate: opts.rate,
        duration_us: opts.duration.as_micros() as u64,
        servers: g.servers,
        samples: g.samples,
        events,
        late,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
                keep_alive: None,
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

    /// A server that answers every request on a connection with 200 after
    /// `delay` and counts the connections; `close_after` closes each one
    /// after its first answer (an idle close, with no `Connection: close`
    /// said).
    fn counting_server(
        close_after: bool,
        delay: Duration,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while let Ok(n @ 1..) = s.read(&mut chunk) {
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            std::thread::sleep(delay);
                            let ok =
                                b"HTTP/1.1 200 OK\r\nX-Backend: t\r\nContent-Length: 2\r\n\r\nok";
                            if s.write_all(ok).is_err() || close_after {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// 50 requests from two keep-alive clients.
    fn keep_alive_run(target: SocketAddr, timeout: Duration) -> Run {
        run(
            &LoadOpts {
                target,
                host: "x".into(),
                path: "/".into(),
                rate: 100,
                duration: Duration::from_millis(500),
                timeout,
                keep_alive: Some(2),
            },
            Vec::new(),
        )
        .unwrap()
    }

    #[test]
    fn keep_alive_reuses_answered_connections() {
        let (addr, accepted) = counting_server(false, Duration::ZERO);
        let run = keep_alive_run(addr, Duration::from_secs(5));
        assert_eq!(run.samples.len(), 50);
        assert!(run.samples.iter().all(|s| s.outcome == Outcome::Ok(0)));
        let conns = accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert!(conns >= 2, "two clients, {conns} connections");
        assert!(
            conns < 50,
            "50 requests on {conns} connections: none reused"
        );
    }

    /// Answers take 30 ms; each request of a reused connection has a 200 ms
    /// deadline of its own (the deadline of the connection's first request
    /// falls while a later one waits for its answer).
    #[test]
    fn a_reused_connection_gets_its_own_deadline() {
        let (addr, _) = counting_server(false, Duration::from_millis(30));
        let run = keep_alive_run(addr, Duration::from_millis(200));
        assert_eq!(run.samples.len(), 50);
        let failed: Vec<_> = run
            .samples
            .iter()
            .filter(|s| s.outcome != Outcome::Ok(0))
            .collect();
        assert!(failed.is_empty(), "{failed:?}");
    }

    #[test]
    fn an_idle_connection_the_server_closed_is_not_reused() {
        let (addr, accepted) = counting_server(true, Duration::ZERO);
        let run = keep_alive_run(addr, Duration::from_secs(5));
        assert_eq!(run.samples.len(), 50);
        assert!(
            run.samples.iter().all(|s| s.outcome == Outcome::Ok(0)),
            "{:?}",
            run.samples.iter().find(|s| s.outcome != Outcome::Ok(0))
        );
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 50);
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
                keep_alive: None,
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
