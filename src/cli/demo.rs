//! `ringlb demo`: the README's first command.
//!
//! As root (with network namespaces) it is the failover show: a namespace
//! lab with two ringlb nodes sharing a VIP, load through the VIP, the
//! master crashed and brought back, and what the clients saw (see
//! [`crate::cli::demo::failover`] in `demo/failover.rs`).
//!
//! Otherwise — and with `--loopback` — it is the loopback demo: two
//! built-in backends on loopback, ringlb in front of them with an embedded
//! config, the address and a wrk command to try, and on Ctrl-C it drains,
//! stops and prints the latency histogram the shards recorded — the same
//! view `ringlb stats` gives of a running node.

use std::io;
use std::net::{SocketAddr, TcpListener};

use crate::cli::backend::{self, BackendOpts};
use crate::metrics::JsonOptions;

/// Preferred demo port; a free one is used when it is taken.
pub const DEMO_PORT: u16 = 8080;

/// The embedded configuration, with the addresses filled in.
pub fn config_text(listen: SocketAddr, admin: SocketAddr, a: SocketAddr, b: SocketAddr) -> String {
    format!(
        r#"# ringlb demo: two built-in backends behind one listener.
[runtime]
workers = "auto"
shutdown_timeout = "5s"

[admin]
listen = "{admin}"

[[listener]]
listen = "{listen}"
upstream = "app"

[upstream.app]
balance = "round_robin"
keepalive = 64

[[upstream.app.server]]
address = "{a}"

[[upstream.app.server]]
address = "{b}"
"#
    )
}

fn free_or(port: u16) -> io::Result<SocketAddr> {
    let preferred = SocketAddr::from(([127, 0, 0, 1], port));
    if TcpListener::bind(preferred).is_ok() {
        return Ok(preferred);
    }
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

pub mod failover;

/// `ringlb demo` options.
#[derive(clap::Args, Default)]
pub struct DemoArgs {
    /// The loopback demo even when the namespace lab could run.
    #[arg(long)]
    pub loopback: bool,
    /// Directory for the plot and the report (default: a temp dir).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

pub fn run(args: DemoArgs) -> io::Result<()> {
    if !args.loopback {
        match failover::unavailable() {
            None => return failover::run(args.out),
            Some(why) => {
                println!("ringlb demo: no failover lab: {why}; running the loopback demo instead.");
                println!("             (as root: `sudo ringlb demo` shows a VRRP failover in network namespaces)");
                println!();
            }
        }
    }
    run_loopback()
}

fn run_loopback() -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let (a, _ha) = backend::spawn(BackendOpts::new(any).name("backend-a"))?;
    let (b, _hb) = backend::spawn(BackendOpts::new(any).name("backend-b"))?;
    let listen = free_or(DEMO_PORT)?;
    let admin = free_or(9901)?;
    let text = config_text(listen, admin, a, b);
    let config =
        crate::config::parse_str(&text, "<demo>").map_err(|e| io::Error::other(e.to_string()))?;
    let running = crate::runtime::start(config)?;
    println!("ringlb demo");
    println!("  proxy:    http://{listen}/  →  backend-a {a}, backend-b {b} (round robin)");
    println!("  admin:    http://{admin}/stats  /metrics  /healthz");
    println!();
    println!("  try:      curl -i http://{listen}/");
    println!("            wrk -t1 -c64 -d10s --latency http://{listen}/");
    println!("            ringlb stats --admin {admin}");
    println!();
    println!("  Ctrl-C prints the latency histogram and exits.");
    let _ = signals.forever().next();
    let registry = std::sync::Arc::clone(&running.registry);
    running.stop();
    let stats = registry
        .snapshot()
        .to_json_value(JsonOptions { buckets: true });
    println!();
    print!("{}", crate::cli::stats::render_summary(admin, &stats, None));
    print!("{}", crate::cli::stats::render_distribution(&stats));
    Ok(())
}
