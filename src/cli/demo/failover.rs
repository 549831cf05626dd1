//! The failover show: two ringlb nodes, one VIP, a crash, in namespaces.
//!
//! ```text
//!   client 198.18.0.3 ──┐
//!   lb1    198.18.0.1 ──┼── bridge      VIP 198.18.0.100:8080
//!   lb2    198.18.0.2 ──┘
//! ```
//!
//! lb1 (priority 200) and lb2 (priority 100) each run `ringlb run` with a
//! VRRP instance at a 10 ms advert interval and two built-in backends on
//! their loopback (`lbN-a`, `lbN-b`, which name themselves in `X-Backend`,
//! so every answer says which node served it). The client sends 1000
//! requests/s to the VIP on fresh connections for 6 s (open loop,
//! [`crate::cli::lab::loadgen`]); at 2 s lb1 crashes (its link down and
//! `kill -9` of ringlb: a dead host neither answers nor advertises), at 4 s its
//! link comes back and ringlb restarts, and lb1 takes the VIP back
//! (preemption). Then the summary, the latency histogram and an SVG plot.
//!
//! Teardown: [`Lab`]'s `Drop` kills every process by PID and deletes the
//! namespaces — on success, on error, on panic, and on Ctrl-C (SIGINT and
//! SIGTERM set a flag; the run stops at the next step and returns).

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::lab::loadgen::{self, Action, LoadOpts};
use crate::cli::lab::netns::{self, Lab};
use crate::cli::lab::{plot, report};

const VIP: &str = "198.18.0.100";
const PORT: u16 = 8080;
const RATE: u32 = 1000;
const LOAD: Duration = Duration::from_secs(6);
const CRASH_AT: Duration = Duration::from_secs(2);
const BACK_AT: Duration = Duration::from_secs(4);
const TIMEOUT: Duration = Duration::from_millis(200);
const ADVERT: &str = "10ms";

fn prefix() -> String {
    format!("rld{}", std::process::id())
}

/// Why the lab can't run here (None: it can).
pub fn unavailable() -> Option<String> {
    netns::unavailable(&prefix())
}

/// A node's config: listener on every address (the VIP arrives with
/// mastership), two local backends, one VRRP instance.
pub fn node_config(priority: u8) -> String {
    format!(
        r#"# ringlb demo node (priority {priority})
[runtime]
workers = 1
shutdown_timeout = "1s"

[[listener]]
listen = "0.0.0.0:{PORT}"
upstream = "app"

[upstream.app]
keepalive = 16
connect_timeout = "100ms"

[[upstream.app.server]]
address = "127.0.0.1:9000"

[[upstream.app.server]]
address = "127.0.0.1:9001"

[[vrrp.instance]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 51
priority = {priority}
advert_interval = "{ADVERT}"
virtual_ipaddress = ["{VIP}/24"]
"#
    )
}

fn interrupted(stop: &AtomicBool) -> io::Result<()> {
    if stop.load(Ordering::Relaxed) {
        return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
    }
    Ok(())
}

/// Poll `f` every 10 ms until it holds, `limit` passes or Ctrl-C.
fn wait_for(
    stop: &AtomicBool,
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> bool,
) -> io::Result<()> {
    let t0 = Instant::now();
    while !f() {
        interrupted(stop)?;
        if t0.elapsed() > limit {
            return Err(io::Error::other(format!("timed out waiting for {what}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn start_node(lab: &mut Lab, exe: &str, node: &str) -> io::Result<u32> {
    let cfg = lab.dir.join(format!("{node}.toml"));
    lab.spawn(
        &format!("{node}-ringlb"),
        node,
        &[exe, "run", "-c", &cfg.to_string_lossy()],
    )
}

pub fn run(out: Option<PathBuf>) -> io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let exe = std::env::current_exe()?.to_string_lossy().into_owned();
    let out = out.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ringlb-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&out)?;

    println!("ringlb demo: VRRP failover in a network-namespace lab");
    let lab = Lab::new(
        &prefix(),
        &[
            ("lb1", "198.18.0.1"),
            ("lb2", "198.18.0.2"),
            ("client", "198.18.0.3"),
        ],
    )?;
    let lab = Arc::new(Mutex::new(lab));
    let result = show(&lab, &exe, &out, &stop);
    let keep = lab.lock().map(|l| l.dir.clone()).ok();
    if result
        .as_ref()
        .is_err_and(|e| e.kind() != io::ErrorKind::Interrupted)
    {
        if let (Ok(l), Some(dir)) = (lab.lock(), keep) {
            for node in ["lb1", "lb2"] {
                let log = l.log(&format!("{node}-ringlb"));
                if let Ok(text) = std::fs::read_to_string(&log) {
                    eprintln!(
                        "--- {node} log ({}) ---\n{}",
                        dir.display(),
                        text.trim_end()
                    );
                }
            }
        }
    }
    drop(lab); // tears the lab down (also on the error paths above)
    println!("  lab torn down (namespaces {}-*)", prefix());
    result
}

fn lock(lab: &Mutex<Lab>) -> std::sync::MutexGuard<'_, Lab> {
    lab.lock().unwrap_or_else(|e| e.into_inner())
}

fn show(
    lab: &Arc<Mutex<Lab>>,
    exe: &str,
    out: &std::path::Path,
    stop: &Arc<AtomicBool>,
) -> io::Result<()> {
    {
        let mut l = lock(lab);
        for (node, prio) in [("lb1", 200u8), ("lb2", 100)] {
            std::fs::write(l.dir.join(format!("{node}.toml")), node_config(prio))?;
            for (name, port) in [("a", 9000), ("b", 9001)] {
                let listen = format!("127.0.0.1:{port}");
                let backend = format!("{node}-{name}");
                l.spawn(
                    &backend,
                    node,
                    &[exe, "backend", "--listen", &listen, "--name", &backend],
                )?;
            }
            start_node(&mut l, exe, node)?;
        }
        println!(
            "  lab:      namespaces {p}-{{lb1,lb2,client}} on a bridge; VIP {VIP}:{PORT}",
            p = l.ns("").trim_end_matches('-')
        );
        println!("            lb1 198.18.0.1 priority 200, lb2 198.18.0.2 priority 100, advert_interval {ADVERT}");
        println!("            each node: ringlb + two built-in backends (lbN-a, lbN-b)");
    }
    wait_for(
        stop,
        Duration::from_secs(15),
        "lb1 to hold the VIP alone",
        || {
            let l = lock(lab);
            l.has_addr("lb1", VIP) && !l.has_addr("lb2", VIP)
        },
    )?;
    std::thread::sleep(Duration::from_millis(300));
    interrupted(stop)?;
    println!(
        "  load:     {RATE} requests/s to the VIP for {} s, a fresh connection each, {} ms timeout (open loop)",
        LOAD.as_secs(),
        TIMEOUT.as_millis()
    );
    println!(
        "  faults:   at {} s lb1 crashes (link down + kill -9); at {} s it comes back",
        CRASH_AT.as_secs(),
        BACK_AT.as_secs()
    );
    println!();

    let crash = {
        let lab = Arc::clone(lab);
        Box::new(move || {
            let mut l = lock(&lab);
            // The link goes down first (a dead host sends no resets), but
            // the kill does not wait long for `ip`: on a busy host it has
            // stalled for seconds, and the crash came after the load.
            let down = l.link_within("lb1", false, Duration::from_millis(100));
            // Not waiting for it to exit: the next event must not wait too.
            l.kill_now("lb1-ringlb");
            if let Ok(mut ip) = down {
                let _ = ip.wait();
            }
        })
    };
    let back = {
        let (lab, exe) = (Arc::clone(lab), exe.to_string());
        Box::new(move || {
            let mut l = lock(&lab);
            // A killed ringlb leaves its VIP configured: a rebooted host wouldn't have it.
            let _ = netns::ip(&[
                "-n",
                &l.ns("lb1"),
                "addr",
                "del",
                &format!("{VIP}/24"),
                "dev",
                "eth0",
            ]);
            let _ = l.link("lb1", true);
            if let Err(e) = start_node(&mut l, &exe, "lb1") {
                eprintln!("ringlb demo: restarting lb1: {e}");
            }
        })
    };
    let actions = vec![
        Action {
            at: CRASH_AT,
            name: "lb1 crashes".into(),
            run: crash,
        },
        Action {
            at: BACK_AT,
            name: "lb1 back".into(),
            run: back,
        },
    ];
    let client_ns = lock(lab).ns("client");
    let run = std::thread::spawn(move || -> io::Result<report::Run> {
        netns::enter_ns(&client_ns)?;
        loadgen::run(
            &LoadOpts {
                target: format!("{VIP}:{PORT}").parse().expect("static address"),
                host: "demo".into(),
                path: "/".into(),
                rate: RATE,
                duration: LOAD,
                timeout: TIMEOUT,
                keep_alive: None,
            },
            actions,
        )
    })
    .join()
    .map_err(|_| io::Error::other("the load generator panicked"))??;
    interrupted(stop)?;

    let r = report::report("ringlb (demo)", &run);
    println!("What the clients saw:");
    print!("{}", report::render_summary(&r));
    println!();
    println!("Latency histogram (answered requests, from the intended send time):");
    print!("{}", report::render_histogram(&run));
    let svg = out.join("failover.svg");
    let json = out.join("failover.json");
    std::fs::write(&json, serde_json::to_vec(&r).map_err(io::Error::other)?)?;
    plot::write_svg(
        &svg,
        "ringlb demo: master crash at 10 ms adverts",
        std::slice::from_ref(&r),
    )
    .map_err(|e| io::Error::other(e.to_string()))?;
    println!();
    println!("  plot:     {}", svg.display());
    println!("  report:   {}", json.display());
    println!(
        "{}",
        report::result_line(&r, &[("demo", "failover".into())])
    );
    Ok(())
}
