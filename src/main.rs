//! The `ringlb` command line: parse arguments, hand over to the library.
//!
//! No logic lives here: `run` goes to the orchestrator
//! ([`ringlb::runtime::run`]), the tools to [`ringlb::cli`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ringlb",
    version,
    about = "HTTP/1.1 load balancer with built-in VRRP failover"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run in the foreground; logs go to stderr.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration file.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// The demo: as root, a VRRP failover in a namespace lab; else two backends behind ringlb on loopback.
    Demo(ringlb::cli::demo::DemoArgs),
    /// Open-loop HTTP load at a fixed rate, with a 10 ms timeline (the HA lab's client).
    #[command(hide = true)]
    Loadgen(ringlb::cli::lab::commands::LoadgenArgs),
    /// Plot `loadgen --json` reports on the same axes (SVG).
    #[command(hide = true)]
    Plot(ringlb::cli::lab::commands::PlotArgs),
    /// Print counters and latency percentiles from a running node's admin endpoint.
    Stats {
        /// Admin address (default: `[admin] listen` of --config, else 127.0.0.1:9901).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Read `[admin] listen` and `[admin] token` from this config file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Bearer token for `--reset` (else $RINGLB_ADMIN_TOKEN, else the config's `[admin] token`).
        #[arg(long)]
        token: Option<String>,
        /// Refresh every interval (e.g. `1s`), showing per-interval rates.
        #[arg(long, value_parser = ringlb::cli::stats::parse_interval)]
        watch: Option<std::time::Duration>,
        /// Start a fresh measurement window first.
        #[arg(long)]
        reset: bool,
    },
    /// Print a ringlb config equivalent to an nginx (+ keepalived) setup.
    Import {
        #[arg(long)]
        nginx: PathBuf,
        #[arg(long)]
        keepalived: Option<PathBuf>,
    },
    /// A tiny built-in HTTP backend (tests, benchmarks, demo).
    #[command(hide = true)]
    Backend {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long, default_value_t = 6)]
        body_size: usize,
        #[arg(long, default_value = "backend")]
        name: String,
        #[arg(long)]
        cpu: Option<usize>,
    },
}

fn report(what: &str, r: std::io::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringlb {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { config } => match ringlb::config::load(&config) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("{w}");
                }
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run { config } => {
            let cfg = match ringlb::config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match ringlb::runtime::run(config, cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringlb: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Demo(args) => report("demo", ringlb::cli::demo::run(args)),
        Cmd::Loadgen(args) => report("loadgen", ringlb::cli::lab::commands::loadgen(args)),
        Cmd::Plot(args) => report("plot", ringlb::cli::lab::commands::plot(args)),
        Cmd::Stats {
            admin,
            config,
            token,
            watch,
            reset,
        } => match ringlb::cli::stats::target_from_cli(admin, config.as_deref(), token)
            .and_then(|t| ringlb::cli::stats::run(&t, watch, reset))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringlb stats: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Import { nginx, keepalived } => {
            match ringlb::cli::import::import_files(&nginx, keepalived.as_deref()) {
                Ok(imported) => {
                    for w in &imported.warnings {
                        eprintln!("{}", ringlb::cli::import::warning_line(w));
                    }
                    print!("{}", imported.toml);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Backend {
            listen,
            body_size,
            name,
            cpu,
        } => {
            match ringlb::cli::backend::run(ringlb::cli::backend::BackendOpts {
                listen,
                body_size,
                name,
                cpu,
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringlb backend: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
