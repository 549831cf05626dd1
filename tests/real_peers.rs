//! Real clients through ringlb to real application servers.
//!
//! Clients: curl, Python requests, httpx, aiohttp, websockets. Servers:
//! uvicorn (ASGI), gunicorn (sync: `Connection: close` on every response;
//! gthread: keep-alive), nginx. The application (`tests/peers/app.py`)
//! records every request it received (test id, body length and sha256), so
//! every test checks both ends: the client got the right status and bytes,
//! and the backend got each request exactly once with identical bytes.
//!
//! Needs the test venv (`RINGLB_PYTHON`, see `common::python`), curl and
//! nginx: `bash tests/run.sh` installs them. Nothing here is skipped.

mod common;

use common::peers::{body_for, curl, py_client, AppServer, NginxServer};
use common::{simple_config, Ringlb};
use serde_json::{json, Value};
use std::net::SocketAddr;

const KB: usize = 1024;
const MB: usize = 1024 * 1024;

/// ringlb in front of `server`, with request bodies up to 64 MB (the
/// default `client_max_body_size` is nginx's 1 MB).
fn ringlb_to(server: SocketAddr) -> Ringlb {
    let cfg = simple_config(&[server], "").replacen(
        "[[listener]]",
        "[http]\nclient_max_body_size = \"64m\"\n\n[[listener]]",
        1,
    );
    Ringlb::start(&cfg)
}

fn base(rl: &Ringlb) -> String {
    format!("http://{}", rl.addr)
}

fn req(id: &str, method: &str, path: &str, size: usize, chunked: bool) -> Value {
    json!({"id": id, "method": method, "path": path, "size": size, "chunked": chunked})
}

/// GETs and POSTs of 0 B / 1 KB / 300 KB / 5 MB (Content-Length and
/// chunked uploads), and downloads (Content-Length and streamed chunked).
fn matrix(tag: &str) -> Vec<Value> {
    let mut v = vec![req(&format!("{tag}-get"), "GET", "/echo", 0, false)];
    for size in [0, KB, 300 * KB, 5 * MB] {
        v.push(req(
            &format!("{tag}-post-cl-{size}"),
            "POST",
            "/echo",
            size,
            false,
        ));
    }
    for size in [KB, 300 * KB, 5 * MB] {
        v.push(req(
            &format!("{tag}-post-chunked-{size}"),
            "POST",
            "/echo",
            size,
            true,
        ));
    }
    v.push(req(&format!("{tag}-put-1k"), "PUT", "/echo", KB, false));
    for (n, path) in [
        ("dl-1k", format!("/dl/{KB}")),
        ("dl-5m", format!("/dl/{}", 5 * MB)),
        ("dl-5m-stream", format!("/dl/{}?chunked=1", 5 * MB)),
    ] {
        v.push(req(&format!("{tag}-{n}"), "GET", &path, 0, false));
    }
    v
}

/// Every result is `status` with no client error, and the backend recorded
/// that request exactly once with the bytes the client sent, and sent the
/// bytes the client received.
fn assert_exchanges(server: &AppServer, results: &[Value], status: u64) {
    let mut bad = Vec::new();
    for r in results {
        let id = r["id"].as_str().unwrap();
        let recs = server.records_of(id);
        let ok = r["status"] == status
            && r["error"] == ""
            && recs.len() == 1
            && recs[0]["sha"] == r["sent_sha"]
            && recs[0]["resp_sha"] == r["sha"];
        if !ok {
            bad.push(format!(
                "{id}: client status {} error {:?}; backend saw it {} time(s){}",
                r["status"],
                r["error"],
                recs.len(),
                recs.first()
                    .map(|x| format!(
                        " (len {}{}, body {}, response {})",
                        x["len"],
                        if x["disconnected"] == true {
                            ", client side disconnected"
                        } else {
                            ""
                        },
                        if x["sha"] == r["sent_sha"] {
                            "identical"
                        } else {
                            "DIFFERENT"
                        },
                        if x["resp_sha"] == r["sha"] {
                            "identical"
                        } else {
                            "DIFFERENT"
                        }
                    ))
                    .unwrap_or_default()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} exchanges wrong:\n{}",
        bad.len(),
        results.len(),
        bad.join("\n")
    );
}

fn run_matrix(lib: &str, server: &AppServer) {
    let rl = ringlb_to(server.addr);
    let steps = matrix(lib);
    let results = py_client(&json!({"lib": lib, "base": base(&rl), "steps": steps}));
    assert_eq!(results.len(), steps.len());
    assert_exchanges(server, &results, 200);
}

#[test]
fn requests_through_ringlb_to_uvicorn() {
    run_matrix("requests", &AppServer::uvicorn(&[]));
}

#[test]
fn httpx_through_ringlb_to_uvicorn() {
    run_matrix("httpx", &AppServer::uvicorn(&[]));
}

#[test]
fn aiohttp_through_ringlb_to_uvicorn() {
    run_matrix("aiohttp", &AppServer::uvicorn(&[]));
}

/// gunicorn's sync worker closes the connection after every response: ringlb
/// must never send a request on such a connection again.
#[test]
fn requests_through_ringlb_to_gunicorn_sync_closing_every_connection() {
    run_matrix(
        "requests",
        &AppServer::gunicorn("sync", &["--workers", "2"]),
    );
}

#[test]
fn httpx_through_ringlb_to_gunicorn_gthread() {
    run_matrix(
        "httpx",
        &AppServer::gunicorn("gthread", &["--threads", "4"]),
    );
}

/// Issue item 1: the backend closes idle keep-alive connections after 1 s;
/// after 8 concurrent requests filled ringlb's pool and 2 s of idleness,
/// further requests (GETs and a 300 KB POST) must all succeed, each reaching
/// the backend once.
fn idle_close_then_more(lib: &str, server: &AppServer) {
    let rl = ringlb_to(server.addr);
    let first: Vec<Value> = (0..8)
        .map(|i| req(&format!("{lib}-warm-{i}"), "GET", "/echo", 0, false))
        .collect();
    let mut steps = vec![json!({"parallel": first}), json!({"sleep": 2})];
    for i in 0..11 {
        steps.push(req(
            &format!("{lib}-after-idle-{i}"),
            "GET",
            "/echo",
            0,
            false,
        ));
    }
    steps.push(json!({"sleep": 2}));
    steps.push(req(
        &format!("{lib}-post-after-idle"),
        "POST",
        "/echo",
        300 * KB,
        false,
    ));
    steps.push(json!({"sleep": 2}));
    steps.push(req(
        &format!("{lib}-chunked-post-after-idle"),
        "POST",
        "/echo",
        300 * KB,
        true,
    ));
    let results = py_client(&json!({"lib": lib, "base": base(&rl), "steps": steps}));
    assert_eq!(results.len(), 21);
    assert_exchanges(server, &results, 200);
}

/// A burst of new connections: aiohttp sends 200 `Connection: close`
/// requests (GETs and 1 KB POSTs) at once, 100 connections at a time,
/// through ringlb (several accepts in flight) to uvicorn. Every client got
/// 200 and its bytes, and uvicorn got every request once, with its bytes.
#[test]
fn aiohttp_burst_of_connection_close_requests_to_uvicorn() {
    let server = AppServer::uvicorn(&[]);
    let rl = ringlb_to(server.addr);
    let burst: Vec<Value> = (0..200)
        .map(|i| {
            let (method, size) = if i % 2 == 0 { ("GET", 0) } else { ("POST", KB) };
            let mut r = req(&format!("burst-{i}"), method, "/echo", size, false);
            r["headers"] = json!({"Connection": "close"});
            r
        })
        .collect();
    let steps = vec![json!({ "parallel": burst })];
    let results = py_client(&json!({"lib": "aiohttp", "base": base(&rl), "steps": steps}));
    assert_eq!(results.len(), 200);
    assert_exchanges(&server, &results, 200);
    // Each answer closed its connection, as the client asked.
    for r in &results {
        assert_eq!(r["headers"]["connection"], "close", "{r}");
    }
}

#[test]
fn uvicorn_closing_idle_keepalive_connections_costs_requests_nothing() {
    let server = AppServer::uvicorn(&["--timeout-keep-alive", "1"]);
    idle_close_then_more("requests", &server);
    idle_close_then_more("aiohttp", &server);
}

#[test]
fn gunicorn_gthread_closing_idle_keepalive_connections_costs_requests_nothing() {
    let server = AppServer::gunicorn("gthread", &["--threads", "8", "--keep-alive", "1"]);
    idle_close_then_more("httpx", &server);
}

/// A backend that answers (413, 401, 302) without reading the request body:
/// the client gets that answer, the backend saw the request once. The same
/// exchange straight to the backend first proves the client handles it.
fn early_answers(server: &AppServer, tag: &str) {
    let rl = ringlb_to(server.addr);
    let mut steps = Vec::new();
    for (i, code) in [413, 401, 302, 413, 413].iter().enumerate() {
        steps.push(json!({"id": format!("{tag}-early-{i}"), "method": "POST",
            "path": format!("/early/{code}"), "size": 5 * MB, "chunked": i % 2 == 1,
            "headers": {}, "expect": code}));
    }
    steps.push(req(
        &format!("{tag}-after-early"),
        "POST",
        "/echo",
        300 * KB,
        false,
    ));
    let codes: Vec<u64> = steps
        .iter()
        .map(|s| s["expect"].as_u64().unwrap_or(200))
        .collect();
    // Control: straight to the backend.
    let direct: Vec<Value> = steps
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s["id"] = json!(format!("direct-{}", s["id"].as_str().unwrap()));
            s
        })
        .collect();
    for (name, b, st) in [
        ("direct", format!("http://{}", server.addr), direct),
        ("through ringlb", base(&rl), steps),
    ] {
        let results = py_client(&json!({"lib": "requests", "base": b, "steps": st}));
        let mut bad = Vec::new();
        for (r, want) in results.iter().zip(&codes) {
            let recs = server.records_of(r["id"].as_str().unwrap());
            if r["status"] != *want || recs.len() != 1 || recs[0]["resp_sha"] != r["sha"] {
                bad.push(format!(
                    "{}: status {} (want {want}) error {:?}, backend saw it {} time(s)",
                    r["id"],
                    r["status"],
                    r["error"],
                    recs.len()
                ));
            }
        }
        assert!(bad.is_empty(), "{name} to {tag}:\n{}", bad.join("\n"));
    }
}

#[test]
fn uvicorn_answering_before_reading_the_body_is_relayed() {
    early_answers(&AppServer::uvicorn(&[]), "uvicorn");
}

#[test]
fn gunicorn_answering_before_reading_the_body_is_relayed() {
    early_answers(
        &AppServer::gunicorn("sync", &["--workers", "2"]),
        "gunicorn-sync",
    );
}

/// HEAD, 204 and 304 carry no body: the next response on the same
/// keep-alive connection must be intact.
#[test]
fn head_204_304_through_ringlb_to_uvicorn() {
    let server = AppServer::uvicorn(&[]);
    let rl = ringlb_to(server.addr);
    let mut steps = Vec::new();
    for i in 0..3 {
        steps.push(req(&format!("head-{i}"), "HEAD", "/dl/1000", 0, false));
        steps.push(req(&format!("204-{i}"), "GET", "/status/204", 0, false));
        let mut cond = req(&format!("304-{i}"), "GET", "/etag", 0, false);
        cond["headers"] = json!({"If-None-Match": "\"v1\""});
        steps.push(cond);
        steps.push(req(&format!("etag-{i}"), "GET", "/etag", 0, false));
        steps.push(req(&format!("after-{i}"), "POST", "/echo", KB, false));
    }
    let results = py_client(&json!({"lib": "requests", "base": base(&rl), "steps": steps}));
    let by_id = |id: &str| results.iter().find(|r| r["id"] == id).unwrap().clone();
    for i in 0..3 {
        let head = by_id(&format!("head-{i}"));
        assert_eq!(
            (head["status"].as_u64(), head["len"].as_u64()),
            (Some(200), Some(0)),
            "{head}"
        );
        assert_eq!(head["headers"]["content-length"], "1000", "{head}");
        for (id, code) in [("204", 204), ("304", 304)] {
            let r = by_id(&format!("{id}-{i}"));
            assert_eq!(
                (r["status"].as_u64(), r["len"].as_u64()),
                (Some(code), Some(0)),
                "{r}"
            );
            assert_eq!(server.records_of(&format!("{id}-{i}")).len(), 1);
        }
        assert_eq!(server.records_of(&format!("head-{i}")).len(), 1);
        let etag = by_id(&format!("etag-{i}"));
        assert_eq!(etag["status"], 200, "{etag}");
        assert_eq!(etag["headers"]["etag"], "\"v1\"", "{etag}");
    }
    let after: Vec<Value> = results
        .iter()
        .filter(|r| r["id"].as_str().unwrap().starts_with("after-"))
        .cloned()
        .collect();
    assert_eq!(after.len(), 3);
    assert_exchanges(&server, &after, 200);
}

/// curl: Content-Length and chunked uploads (`-T -` from stdin is chunked),
/// a 5 MB download, several URLs on one connection.
#[test]
fn curl_through_ringlb_to_uvicorn() {
    let server = AppServer::uvicorn(&[]);
    let rl = ringlb_to(server.addr);
    let dir = common::tempdir::Dir::new("curl");
    let file = dir.0.join("up.bin");
    let body = body_for("curl-up", 5 * MB);
    std::fs::write(&file, &body).unwrap();
    let url = |p: &str| format!("{}{p}", base(&rl));
    // Content-Length upload.
    let (ok, out, err) = curl(&[
        "--fail",
        "-H",
        "X-Test-Id: curl-cl",
        "--data-binary",
        &format!("@{}", file.display()),
        &url("/echo"),
    ]);
    assert!(ok, "curl: {err}");
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["len"], 5 * MB, "{v}");
    // Chunked upload.
    let (ok, out, err) = curl(&[
        "--fail",
        "-H",
        "X-Test-Id: curl-chunked",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", file.display()),
        &url("/echo"),
    ]);
    assert!(ok, "curl: {err}");
    let v2: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v2, v, "chunked upload differs from the Content-Length one");
    for id in ["curl-cl", "curl-chunked"] {
        let recs = server.records_of(id);
        assert_eq!(recs.len(), 1, "{id}: {recs:?}");
        assert_eq!(recs[0]["sha"], v["sha"], "{id}");
        assert_eq!(recs[0]["len"], 5 * MB);
    }
    // Downloads, three on one connection (curl reuses it).
    let (ok, out, err) = curl(&[
        "--fail",
        "-H",
        "X-Test-Id: curl-dl",
        &url(&format!("/dl/{}", 5 * MB)),
        &url(&format!("/dl/{}?chunked=1", 5 * MB)),
        &url("/dl/10"),
    ]);
    assert!(ok, "curl: {err}");
    let mut want = common::peers::app_pattern(5 * MB);
    want.extend(common::peers::app_pattern(5 * MB));
    want.extend(common::peers::app_pattern(10));
    assert_eq!(out.len(), want.len());
    assert!(out == want, "downloaded bytes differ");
    assert_eq!(server.records_of("curl-dl").len(), 3);
}

/// nginx as the backend: static downloads, HEAD, 304, 204, POST bodies
/// (kept by nginx in files, compared byte for byte), and nginx closing idle
/// keep-alive connections after 1 s.
#[test]
fn requests_through_ringlb_to_nginx() {
    let nginx = NginxServer::start("1s");
    std::fs::write(
        nginx.www.join("big.bin"),
        common::peers::app_pattern(5 * MB),
    )
    .unwrap();
    std::fs::write(nginx.www.join("small.txt"), b"small file\n").unwrap();
    let rl = ringlb_to(nginx.addr);
    let mut steps = vec![
        req("ng-big", "GET", "/big.bin", 0, false),
        req("ng-head", "HEAD", "/big.bin", 0, false),
        req("ng-204", "GET", "/204", 0, false),
        req("ng-post-300k", "POST", "/post", 300 * KB, false),
        req("ng-post-5m", "POST", "/post", 5 * MB, false),
        req("ng-small", "GET", "/small.txt", 0, false),
        json!({"sleep": 2}),
    ];
    for i in 0..6 {
        steps.push(req(&format!("ng-idle-{i}"), "GET", "/small.txt", 0, false));
    }
    steps.push(json!({"sleep": 2}));
    steps.push(req("ng-post-idle", "POST", "/post", 300 * KB, false));
    let results = py_client(&json!({"lib": "requests", "base": base(&rl), "steps": steps}));
    let by_id = |id: &str| results.iter().find(|r| r["id"] == id).unwrap().clone();
    let big = by_id("ng-big");
    assert_eq!(
        (big["status"].as_u64(), big["len"].as_u64()),
        (Some(200), Some(5 * MB as u64)),
        "{big}"
    );
    let etag = big["headers"]["etag"]
        .as_str()
        .expect("nginx sends an ETag")
        .to_string();
    let head = by_id("ng-head");
    assert_eq!(
        (head["status"].as_u64(), head["len"].as_u64()),
        (Some(200), Some(0)),
        "{head}"
    );
    assert_eq!(by_id("ng-204")["status"], 204);
    // 304 on the same session, then another request.
    let cond = py_client(&json!({"lib": "requests", "base": base(&rl), "steps": [
        {"id": "ng-304", "method": "GET", "path": "/big.bin", "headers": {"If-None-Match": etag}},
        {"id": "ng-after-304", "method": "GET", "path": "/small.txt"}]}));
    assert_eq!(
        (cond[0]["status"].as_u64(), cond[0]["len"].as_u64()),
        (Some(304), Some(0)),
        "{}",
        cond[0]
    );
    assert_eq!(
        (cond[1]["status"].as_u64(), cond[1]["len"].as_u64()),
        (Some(200), Some(11)),
        "{}",
        cond[1]
    );
    let mut bad = Vec::new();
    for r in results.iter().chain(&cond) {
        let id = r["id"].as_str().unwrap();
        let recs = nginx.records_of(id);
        if r["error"] != "" || recs.len() != 1 {
            bad.push(format!(
                "{id}: status {} error {:?}, nginx logged it {} time(s)",
                r["status"],
                r["error"],
                recs.len()
            ));
            continue;
        }
        if id.starts_with("ng-post") {
            let size = if id == "ng-post-5m" { 5 * MB } else { 300 * KB };
            let kept = std::fs::read(&recs[0][5]).unwrap_or_default();
            if r["status"] != 200 || kept != body_for(id, size) {
                bad.push(format!(
                    "{id}: status {}, nginx got {} bytes (want {size} identical)",
                    r["status"],
                    kept.len()
                ));
            }
        } else if (id.starts_with("ng-idle") || id == "ng-small")
            && (r["status"] != 200 || r["len"] != 11)
        {
            bad.push(format!("{id}: status {} len {}", r["status"], r["len"]));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// WebSocket through ringlb to uvicorn (websockets on both ends): every
/// message echoed, the backend saw all of them, identical.
#[test]
fn websocket_through_ringlb_to_uvicorn() {
    let server = AppServer::uvicorn(&["--ws", "websockets"]);
    let rl = ringlb_to(server.addr);
    let out =
        py_client(&json!({"lib": "websockets", "base": base(&rl), "id": "ws-1", "messages": 20}));
    assert_eq!(out.len(), 1);
    let echoed = out[0]["echoed"].as_array().unwrap();
    assert_eq!(echoed.len(), 20);
    assert!(echoed.iter().all(|e| e == true), "{}", out[0]);
    // The backend records the session when the client closes it.
    let start = std::time::Instant::now();
    while server.records_of("ws-1").is_empty()
        && start.elapsed() < std::time::Duration::from_secs(10)
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let recs = server.records_of("ws-1");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["messages"], 20);
    assert_eq!(recs[0]["sha"], out[0]["sha"]);
}
