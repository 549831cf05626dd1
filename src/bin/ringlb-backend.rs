//! `ringlb-backend`: the built-in test/benchmark origin server as its own
//! binary, so benchmark scripts can start it without the full `ringlb` CLI.
//! All logic lives in `ringlb::cli::backend`; this is only argument parsing.

use clap::Parser;

/// A tiny fast HTTP/1.1 server that answers every request with 200 and a
/// fixed body, plus `X-Backend: NAME`.
#[derive(Parser)]
#[command(name = "ringlb-backend", version)]
struct Cli {
    #[command(flatten)]
    args: ringlb::cli::backend::BackendArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = ringlb::cli::backend::run(cli.args.into()) {
        eprintln!("ringlb-backend: {e}");
        std::process::exit(1);
    }
}
