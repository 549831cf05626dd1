//! `ringlb stats --reset` against a real node whose `[admin] token` is set:
//! without a token the reset is refused (401, non-zero exit, nothing reset);
//! with the token from `--config`, `--token` or `RINGLB_ADMIN_TOKEN` the
//! window starts over.

mod common;

use std::process::{Command, Output};

use common::*;

const TOKEN: &str = "s3cret-token";

fn requests_in_window(admin: std::net::SocketAddr) -> u64 {
    let (code, body) = admin_get(admin, "/stats");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["connections"]["requests"].as_u64().unwrap()
}

fn stats(args: &[&str], env_token: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("stats").args(args).env_remove("RINGLB_ADMIN_TOKEN");
    if let Some(t) = env_token {
        cmd.env("RINGLB_ADMIN_TOKEN", t);
    }
    cmd.output().expect("run ringlb stats")
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn proxied(rl: &Ringlb, n: usize) {
    for _ in 0..n {
        let r = roundtrip_close(
            rl.addr,
            b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status_of(&r), 200, "{r}");
    }
}

#[test]
fn stats_reset_sends_the_admin_token() {
    let be = echo_backend();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = simple_config(&[be.addr], "")
        + &format!("\n[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n");
    let rl = Ringlb::start(&cfg);
    wait_admin(&rl, admin);
    proxied(&rl, 2);
    assert_eq!(requests_in_window(admin), 2);
    let a = admin.to_string();

    // No token: refused, says why, resets nothing.
    let out = stats(&["--admin", &a, "--reset"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "reset without a token must fail");
    assert!(err.contains("401") && err.contains("--token"), "{err}");
    assert_eq!(
        requests_in_window(admin),
        2,
        "a refused reset reset nothing"
    );

    // A wrong token: refused as well.
    let out = stats(&["--admin", &a, "--reset", "--token", "nope"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"));
    assert_eq!(requests_in_window(admin), 2);

    // The token (and the admin address) from the config file.
    let config = rl.config.to_str().unwrap();
    let out = stats(&["--config", config, "--reset"], None);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("stats window reset on {a}")));
    assert_eq!(requests_in_window(admin), 0);

    // From the environment.
    proxied(&rl, 3);
    assert_eq!(requests_in_window(admin), 3);
    let out = stats(&["--admin", &a, "--reset"], Some(TOKEN));
    assert_ok(&out);
    assert_eq!(requests_in_window(admin), 0);

    // From the flag, which wins over a wrong environment value.
    proxied(&rl, 1);
    let out = stats(&["--admin", &a, "--reset", "--token", TOKEN], Some("wrong"));
    assert_ok(&out);
    assert_eq!(requests_in_window(admin), 0);

    // The read-only view works with --config too.
    proxied(&rl, 1);
    let out = stats(&["--config", config], None);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&a));
}
