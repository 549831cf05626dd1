//! `ringlb loadgen` and `ringlb plot`: the lab's tools on the command line
//! (the `loadtest/` scenarios run them inside the client namespace).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::loadgen::{self, Action, LoadOpts};
use super::report;

fn duration(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
}

/// `AT:NAME:COMMAND`, e.g. `2s:crash lb1:kill -9 1234`.
fn event(s: &str) -> Result<(Duration, String, String), String> {
    let mut it = s.splitn(3, ':');
    match (it.next(), it.next(), it.next()) {
        (Some(at), Some(name), Some(cmd)) if !cmd.is_empty() => {
            Ok((duration(at)?, name.to_string(), cmd.to_string()))
        }
        _ => Err(format!("expected AT:NAME:COMMAND, got {s:?}")),
    }
}

/// `KEY=VALUE`; VALUE parsed as JSON when it is JSON, else a string.
fn field(s: &str) -> Result<(String, serde_json::Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
    Ok((k.to_string(), v))
}

#[derive(clap::Args)]
pub struct LoadgenArgs {
    /// Address to send to (IP:PORT), e.g. the VIP.
    #[arg(long)]
    pub target: SocketAddr,
    #[arg(long, default_value = "lab")]
    pub host: String,
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Requests per second, on a fixed schedule.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    #[arg(long, value_parser = duration, default_value = "5s")]
    pub duration: Duration,
    /// Per request (connect + exchange).
    #[arg(long, value_parser = duration, default_value = "200ms")]
    pub timeout: Duration,
    /// Send from N clients in turn that keep answered connections and reuse
    /// them (a client library's pool), instead of a fresh `Connection:
    /// close` connection per request.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_alive: Option<u32>,
    /// Run `sh -c COMMAND` at AT into the run: `AT:NAME:COMMAND` (repeatable).
    #[arg(long = "event", value_parser = event)]
    pub events: Vec<(Duration, String, String)>,
    /// Label of this run (plot legends, the RESULT line).
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Write the report (summary, 10 ms timeline, percentile curve) as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Extra `KEY=VALUE` for the RESULT line (repeatable).
    #[arg(long = "field", value_parser = field)]
    pub fields: Vec<(String, serde_json::Value)>,
}

fn shell(cmd: String) -> Box<dyn FnOnce() + Send> {
    Box::new(move || {
        match std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => eprintln!("loadgen: event `{cmd}` exited with {s}"),
            Err(e) => eprintln!("loadgen: event `{cmd}`: {e}"),
        }
    })
}

pub fn loadgen(a: LoadgenArgs) -> io::Result<()> {
    let actions = a
        .events
        .into_iter()
        .map(|(at, name, cmd)| Action {
            at,
            name,
            run: shell(cmd),
        })
        .collect();
    let run = loadgen::run(
        &LoadOpts {
            target: a.target,
            host: a.host,
            path: a.path,
            rate: a.rate,
            duration: a.duration,
            timeout: a.timeout,
            keep_alive: a.keep_alive,
        },
        actions,
    )?;
    let r = report::report(&a.label, &run);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec(&r).map_err(io::Error::other)?)?;
    }
    println!("{}", a.label);
    print!("{}", report::render_summary(&r));
    let extra: Vec<(&str, serde_json::Value)> = a
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    println!("{}", report::result_line(&r, &extra));
    Ok(())
}

#[derive(clap::Args)]
pub struct PlotArgs {
    /// Output SVG.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "")]
    pub title: String,
    /// Report files written by `ringlb loadgen --json` (same axes).
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
}

pub fn plot(a: PlotArgs) -> io::Result<()> {
    let mut reports = Vec::new();
    for p in &a.reports {
        let text = std::fs::read(p)?;
        reports.push(
            serde_json::from_slice::<report::Report>(&text)
                .map_err(|e| io::Error::other(format!("{}: {e}", p.display())))?,
        );
    }
    super::plot::write_svg(&a.out, &a.title, &reports)
        .map_err(|e| io::Error::other(e.to_string()))?;
    println!("{}", a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_fields() {
        let (at, name, cmd) = event("2s:crash lb1:ip -n x link set eth0 down; kill -9 1").unwrap();
        assert_eq!(at, Duration::from_secs(2));
        assert_eq!(name, "crash lb1");
        assert_eq!(cmd, "ip -n x link set eth0 down; kill -9 1");
        assert!(event("2s:nocommand").is_err());
        assert_eq!(field("n=3").unwrap().1, serde_json::json!(3));
        assert_eq!(field("s=crash").unwrap().1, serde_json::json!("crash"));
        assert!(field("nokey").is_err());
    }
}
