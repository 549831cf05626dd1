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

use common::peers::{
    app_pattern, body_for, curl, parse, py_client, read_until_close, sha256_hex, AppServer,
    NginxServer,
};
use common::{simple_config, Ringlb};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

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

/// Chunked uploads (requests and aiohttp with generator bodies) to a WSGI
/// application that reads the body by `CONTENT_LENGTH`, as PEP 3333 asks
/// and Django does: gunicorn gives such an application an empty body for a
/// chunked request. Behind nginx it gets the whole body, because nginx
/// sends every buffered body with a `Content-Length`; behind ringlb too,
/// with the default config (bodies up to `client_max_body_size`, 1 MiB,
/// are buffered whole). The backend must read exactly the bytes sent.
#[test]
fn chunked_uploads_reach_a_wsgi_app_that_reads_by_content_length() {
    let server = AppServer::gunicorn("sync", &["--workers", "2"]);
    let rl = Ringlb::start(&simple_config(&[server.addr], ""));
    for lib in ["requests", "aiohttp"] {
        let mut steps = Vec::new();
        for size in [0, 14, KB, 300 * KB, MB - 1] {
            steps.push(req(
                &format!("{lib}-by-length-chunked-{size}"),
                "POST",
                "/by-length",
                size,
                true,
            ));
        }
        steps.push(req(
            &format!("{lib}-by-length-cl"),
            "POST",
            "/by-length",
            300 * KB,
            false,
        ));
        let results = py_client(&json!({"lib": lib, "base": base(&rl), "steps": steps}));
        assert_eq!(results.len(), steps.len());
        assert_exchanges(&server, &results, 200);
    }
}

/// A slow upload (a 300 KB body, most of it held back) must not occupy a
/// gunicorn sync worker: with the default config ringlb buffers every body
/// `client_max_body_size` accepts before it picks a backend, as nginx
/// does. With one worker, a GET sent while the upload stalls is answered
/// (were the upload streamed, the worker would wait on it and the GET on
/// the worker); then the upload completes and the backend reads it once,
/// whole.
#[test]
fn a_stalled_upload_holds_no_gunicorn_sync_worker() {
    use std::io::{Read, Write};
    let server = AppServer::gunicorn("sync", &["--workers", "1"]);
    let rl = Ringlb::start(&simple_config(&[server.addr], ""));
    let body = app_pattern(300 * KB);
    let mut upload = std::net::TcpStream::connect(rl.addr).unwrap();
    upload
        .write_all(
            format!(
                "POST /echo HTTP/1.1\r\nHost: a\r\nX-Test-Id: slow-upload\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    upload.write_all(&body[..200 * KB]).unwrap();
    thread::sleep(Duration::from_millis(300));
    let mut get = std::net::TcpStream::connect(rl.addr).unwrap();
    get.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    get.write_all(
        b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Test-Id: while-stalled\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = get.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200 "),
        "the GET was not answered while an upload stalled: {answer:?}"
    );
    assert!(
        server.records_of("slow-upload").is_empty(),
        "the backend got the upload before it was whole"
    );
    upload.write_all(&body[200 * KB..]).unwrap();
    upload
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = upload.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    let recs = server.records_of("slow-upload");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["sha"], sha256_hex(&body), "{recs:?}");
    assert_eq!(server.records_of("while-stalled").len(), 1);
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

/// nginx as the backend answering before it reads a body: `413` from a
/// small `client_max_body_size` (5 MB Content-Length uploads; the 64 KiB
/// ringlb buffered first are on their way when nginx answers) and `401`
/// from `return` (the body never read). Each client (requests, httpx) gets
/// the same statuses and bodies through ringlb as straight from nginx, no
/// error and no 502, nginx logs each request once (never replayed), and
/// a small request after them on the same session is served.
#[test]
fn nginx_answering_413_and_401_before_reading_the_body_is_relayed() {
    let port = common::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (nginx, dir) = common::peers::nginx_with(&[addr], |d| {
        format!(
            r#"log_format rec '$http_x_test_id $status';
    access_log {d}/access.log rec;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1k;
        location = /small {{ return 200 "small
"; }}
        location = /auth {{ client_max_body_size 64m; return 401; }}
    }}"#
        )
    });
    let rl = ringlb_to(addr);
    let plan = [
        ("/small", 413),
        ("/auth", 401),
        ("/small", 413),
        ("/auth", 401),
    ];
    for lib in ["requests", "httpx"] {
        let steps = |via: &str| -> Vec<Value> {
            let mut v: Vec<Value> = plan
                .iter()
                .enumerate()
                .map(|(i, (path, _))| req(&format!("{via}-{lib}-{i}"), "POST", path, 5 * MB, false))
                .collect();
            v.push(req(
                &format!("{via}-{lib}-after"),
                "POST",
                "/small",
                10,
                false,
            ));
            v
        };
        let direct = py_client(&json!({"lib": lib, "base": format!("http://{addr}"),
            "steps": steps("direct")}));
        let through = py_client(&json!({"lib": lib, "base": base(&rl), "steps": steps("rl")}));
        assert_eq!(through.len(), plan.len() + 1, "{through:?}");
        // nginx logs a request when its connection is done with it (after
        // a lingering close): wait, bounded, until every id is there.
        let log_path = dir.0.join("access.log");
        let all_logged = |log: &str| {
            through
                .iter()
                .all(|t| log.lines().any(|l| l.split(' ').next() == t["id"].as_str()))
        };
        let mut log = String::new();
        for _ in 0..200 {
            log = std::fs::read_to_string(&log_path).unwrap();
            if all_logged(&log) {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let wants = plan.iter().map(|p| p.1).chain([200]);
        for ((d, t), want) in direct.iter().zip(&through).zip(wants) {
            let id = t["id"].as_str().unwrap();
            assert_eq!(t["status"], want, "{lib} {id}: {t}");
            assert_eq!(t["error"], "", "{lib} {id}: {t}");
            assert_eq!(
                (&t["sha"], &t["status"]),
                (&d["sha"], &d["status"]),
                "{id}: {d} vs {t}"
            );
            let logged: Vec<&str> = log
                .lines()
                .filter(|l| l.split(' ').next() == Some(id))
                .collect();
            assert_eq!(logged, [format!("{id} {want}")], "{lib} {id}: nginx log");
        }
    }
    drop(nginx);
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

/// The statuses curl saw (`-v` lines `< HTTP/1.x NNN`), interim ones included.
fn curl_statuses(verbose: &str) -> Vec<u16> {
    verbose
        .lines()
        .filter_map(|l| l.strip_prefix("< HTTP/1."))
        .filter_map(|l| l.get(2..5)?.parse().ok())
        .collect()
}

/// `Expect: 100-continue` (curl sends it for bodies above 1 MiB): the
/// client gets one `100 Continue` and then the final answer, and the
/// backend the whole body once; a backend refusing the upload (417, 413,
/// without reading it) has its answer relayed after at most one 100.
fn expect_continue(server: &AppServer, tag: &str) {
    let rl = ringlb_to(server.addr);
    let dir = common::tempdir::Dir::new("expect");
    let big = dir.0.join("big.bin");
    let body = body_for(tag, 2 * MB);
    std::fs::write(&big, &body).unwrap();
    let data = format!("@{}", big.display());
    let url = |p: &str| format!("{}{p}", base(&rl));
    // (name, curl arguments, path, final status, body the backend must get)
    type Case<'a> = (&'a str, &'a [&'a str], &'a str, u16, Option<&'a [u8]>);
    let cases: [Case; 4] = [
        ("auto", &["--data-binary", &data], "/echo", 200, Some(&body)),
        (
            "small",
            &["-H", "Expect: 100-continue", "--data-binary", "hello"],
            "/echo",
            200,
            Some(b"hello"),
        ),
        ("417", &["--data-binary", &data], "/early/417", 417, None),
        ("413", &["--data-binary", &data], "/early/413", 413, None),
    ];
    for (name, args, path, want, sent) in cases {
        let id = format!("{tag}-expect-{name}");
        let mut a = vec!["-v", "-H"];
        let hdr = format!("X-Test-Id: {id}");
        a.push(&hdr);
        a.extend_from_slice(args);
        let u = url(path);
        a.push(&u);
        let (ok, out, err) = curl(&a);
        assert!(ok, "{id}: curl failed: {err}");
        let st = curl_statuses(&err);
        assert!(
            st.last() == Some(&want) && st.iter().filter(|s| **s == 100).count() <= 1,
            "{id}: statuses {st:?}, want at most one 100 then {want}:\n{err}"
        );
        let recs = server.records_of(&id);
        assert_eq!(recs.len(), 1, "{id}: backend saw it {} times", recs.len());
        match sent {
            Some(b) => {
                assert_eq!(st, [100, want], "{id}: the client asked for a 100");
                let v: Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(v["len"], b.len(), "{id}: {v}");
                assert_eq!(v["sha"], sha256_hex(b), "{id}: the backend got other bytes");
                assert_eq!(recs[0]["sha"], v["sha"], "{id}");
            }
            None => assert_eq!(out, b"refused early", "{id}"),
        }
    }
}

#[test]
fn expect_100_continue_through_ringlb_to_uvicorn() {
    expect_continue(&AppServer::uvicorn(&[]), "uv");
}

#[test]
fn expect_100_continue_through_ringlb_to_gunicorn() {
    expect_continue(&AppServer::gunicorn("gthread", &["--threads", "4"]), "gu");
}

/// HTTP/1.0 clients: curl `--http1.0` gets a chunked response de-chunked
/// and delimited by the close (a 1.0 client knows no chunked), and with
/// `Connection: keep-alive` keeps its connection for Content-Length
/// responses; ApacheBench (`ab`, HTTP/1.0) with and without `-k`, GETs
/// and POSTs. The backend saw each request once.
fn http10_clients(server: &AppServer, tag: &str) {
    let rl = ringlb_to(server.addr);
    let url = |p: &str| format!("{}{p}", base(&rl));
    let id = format!("{tag}-h10-chunked");
    let dir = common::tempdir::Dir::new("h10");
    let heads = dir.0.join("heads.txt");
    let (ok, out, err) = curl(&[
        "--http1.0",
        "-D",
        &heads.display().to_string(),
        "-H",
        &format!("X-Test-Id: {id}"),
        &url("/dl/200000?chunked=1"),
    ]);
    assert!(ok, "{id}: {err}");
    let head = std::fs::read_to_string(&heads)
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        !head.contains("transfer-encoding") && head.contains("connection: close"),
        "{id}: a 1.0 client got {head}"
    );
    assert!(
        out == app_pattern(200_000),
        "{id}: {} bytes, not the pattern",
        out.len()
    );
    assert_eq!(server.records_of(&id).len(), 1, "{id}");

    // Keep-alive: two Content-Length responses on one connection.
    let id = format!("{tag}-h10-ka");
    let (ok, out, err) = curl(&[
        "--http1.0",
        "-H",
        "Connection: keep-alive",
        "-H",
        &format!("X-Test-Id: {id}"),
        "-w",
        "|%{num_connects}",
        &url("/dl/1000"),
        &url("/dl/10"),
    ]);
    assert!(ok, "{id}: {err}");
    let mut want = app_pattern(1000);
    want.extend_from_slice(b"|1");
    want.extend(app_pattern(10));
    want.extend_from_slice(b"|0");
    assert!(out == want, "{id}: got {:?}", String::from_utf8_lossy(&out));
    assert_eq!(server.records_of(&id).len(), 2, "{id}");

    // ApacheBench, bounded: 200 GETs, 100 POSTs of 3000 bytes.
    let post = dir.0.join("post.bin");
    let pbody = body_for("ab-post", 3000);
    std::fs::write(&post, &pbody).unwrap();
    for ka in [false, true] {
        let k = if ka { "ka" } else { "close" };
        let gid = format!("{tag}-ab-get-{k}");
        let pid = format!("{tag}-ab-post-{k}");
        let runs: [(&str, usize, Vec<String>); 2] = [
            (&gid, 200, vec![url("/dl/1000")]),
            (
                &pid,
                100,
                vec![
                    "-p".into(),
                    post.display().to_string(),
                    "-T".into(),
                    "application/octet-stream".into(),
                    url("/echo"),
                ],
            ),
        ];
        for (id, n, args) in runs {
            let mut cmd = std::process::Command::new("ab");
            cmd.args([
                "-n",
                &n.to_string(),
                "-c",
                "4",
                "-H",
                &format!("X-Test-Id: {id}"),
            ]);
            if ka {
                cmd.arg("-k");
            }
            let out = cmd.args(&args).output().expect(
                "ab not found: install apache2-utils (tests/run.sh does); this test is not skipped",
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let field = |name: &str| -> Option<usize> {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|r| r.trim().split(' ').next()?.parse().ok())
            };
            assert!(out.status.success(), "{id}: ab failed:\n{text}");
            assert_eq!(field("Complete requests:"), Some(n), "{id}:\n{text}");
            assert_eq!(field("Failed requests:"), Some(0), "{id}:\n{text}");
            assert_eq!(field("Non-2xx responses:"), None, "{id}:\n{text}");
            if ka {
                assert_eq!(field("Keep-Alive requests:"), Some(n), "{id}:\n{text}");
            }
            let recs = server.records_of(id);
            assert_eq!(
                recs.len(),
                n,
                "{id}: the backend saw {} requests",
                recs.len()
            );
            let want_sha = if id == pid {
                sha256_hex(&pbody)
            } else {
                sha256_hex(b"")
            };
            assert!(
                recs.iter().all(|r| r["sha"] == want_sha.as_str()),
                "{id}: a request body differs"
            );
        }
    }
}

#[test]
fn http10_clients_through_ringlb_to_uvicorn() {
    http10_clients(&AppServer::uvicorn(&[]), "uv");
}

#[test]
fn http10_clients_through_ringlb_to_gunicorn() {
    http10_clients(&AppServer::gunicorn("gthread", &["--threads", "4"]), "gu");
}

/// Twelve requests in one write (GETs, POSTs, a chunked download), then a
/// closing GET: thirteen responses, in order, each with its bytes; the
/// backend saw each request once, in that order.
fn pipelined(server: &AppServer, tag: &str) {
    use std::io::Write;
    let rl = ringlb_to(server.addr);
    let mut wire = Vec::new();
    let mut want: Vec<Vec<u8>> = Vec::new();
    let mut methods = Vec::new();
    let mut ids = Vec::new();
    for i in 0..12 {
        let id = format!("{tag}-pipe-{i}");
        match i % 3 {
            0 => {
                let n = 1000 + i;
                write!(
                    wire,
                    "GET /dl/{n} HTTP/1.1\r\nHost: p\r\nX-Test-Id: {id}\r\n\r\n"
                )
                .unwrap();
                want.push(app_pattern(n));
                methods.push("GET");
            }
            1 => {
                let b = body_for(&id, i * 1000);
                write!(
                    wire,
                    "POST /echo HTTP/1.1\r\nHost: p\r\nX-Test-Id: {id}\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                )
                .unwrap();
                wire.extend_from_slice(&b);
                want.push(
                    format!("{{\"len\": {}, \"sha\": \"{}\"}}", b.len(), sha256_hex(&b))
                        .into_bytes(),
                );
                methods.push("POST");
            }
            _ => {
                let n = 70_000 + i;
                write!(
                    wire,
                    "GET /dl/{n}?chunked=1 HTTP/1.1\r\nHost: p\r\nX-Test-Id: {id}\r\n\r\n"
                )
                .unwrap();
                want.push(app_pattern(n));
                methods.push("GET");
            }
        }
        ids.push(id);
    }
    wire.extend_from_slice(b"GET /dl/3 HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n");
    want.push(app_pattern(3));
    methods.push("GET");
    let mut s = common::connect(rl.addr);
    s.write_all(&wire).unwrap();
    let (raw, closed) = read_until_close(&mut s);
    let (resps, info, stray) = parse(&raw, &methods, closed);
    assert!(
        closed,
        "{tag}: the connection stayed open after Connection: close"
    );
    assert_eq!((resps.len(), info), (13, 0), "{tag}: {resps:?}");
    assert!(stray.is_empty(), "{tag}: {} stray bytes", stray.len());
    for (i, (r, w)) in resps.iter().zip(&want).enumerate() {
        assert!(
            r.status == 200 && r.complete && &r.body == w,
            "{tag}: response {i}: {} ({} bytes, complete {})",
            r.head,
            r.body.len(),
            r.complete
        );
    }
    let seen: Vec<String> = server
        .records()
        .iter()
        .filter_map(|r| {
            r["id"]
                .as_str()
                .filter(|i| i.starts_with(tag))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(seen, ids, "{tag}: the backend's requests, in order");
}

#[test]
fn pipelined_requests_through_ringlb_to_uvicorn() {
    pipelined(&AppServer::uvicorn(&[]), "uv");
}

#[test]
fn pipelined_requests_through_ringlb_to_gunicorn() {
    pipelined(&AppServer::gunicorn("gthread", &["--threads", "4"]), "gu");
}

/// A streamed response reaches the client as it is produced: the backend
/// sends each next Server-Sent Event only once the client acknowledged
/// the previous one (`/lockstep`), so a proxy that holds the stream back
/// (until the end, or a buffer fills) stalls it and the read times out.
/// Then a long poll (the answer comes after 3 s) on requests.
fn streaming(server: &AppServer, tag: &str) {
    use std::io::{Read, Write};
    let rl = ringlb_to(server.addr);
    let id = format!("{tag}-lockstep");
    let n = 6;
    let mut s = common::connect(rl.addr);
    write!(
        s,
        "GET /lockstep/{n} HTTP/1.1\r\nHost: s\r\nX-Test-Id: {id}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut b = [0u8; 4096];
    for i in 0..n {
        let event = format!("data: tick {i}\n\n");
        while common::find(&raw, event.as_bytes()).is_none() {
            match s.read(&mut b) {
                Ok(k) if k > 0 => raw.extend_from_slice(&b[..k]),
                r => panic!(
                    "{id}: event {i} never came ({r:?}) while the backend waited for the \
                     client to acknowledge it: the stream was held back; got {:?}",
                    String::from_utf8_lossy(&raw)
                ),
            }
        }
        std::fs::write(server.ack_path(&id, i), b"").unwrap();
    }
    let (rest, closed) = read_until_close(&mut s);
    raw.extend(rest);
    let (resps, _, stray) = parse(&raw, &["GET"], closed);
    let events: String = (0..n).map(|i| format!("data: tick {i}\n\n")).collect();
    assert!(
        resps.len() == 1 && resps[0].complete && resps[0].body == events.as_bytes(),
        "{id}: {resps:?}"
    );
    assert!(stray.is_empty() && closed, "{id}");
    assert!(
        resps[0]
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{id}: {}",
        resps[0].head
    );
    let recs = server.records_of(&id);
    assert_eq!(recs.len(), 1, "{id}");
    assert_eq!(recs[0]["acked"], n, "{id}: events acknowledged in turn");

    let lp = format!("{tag}-longpoll");
    let res = py_client(&json!({"lib": "requests", "base": base(&rl),
        "steps": [req(&lp, "GET", "/wait/3000", 0, false)]}));
    assert_eq!(res[0]["status"], 200, "{lp}: {}", res[0]);
    assert_eq!(res[0]["sha"], sha256_hex(b"waited"), "{lp}");
    assert_eq!(server.records_of(&lp).len(), 1, "{lp}");
}

#[test]
fn streamed_events_and_long_poll_through_ringlb_to_uvicorn() {
    streaming(&AppServer::uvicorn(&[]), "uv");
}

#[test]
fn streamed_events_and_long_poll_through_ringlb_to_gunicorn() {
    streaming(&AppServer::gunicorn("gthread", &["--threads", "4"]), "gu");
}

/// A body trickled in ten pieces with pauses (Content-Length and chunked):
/// the backend gets it whole, once.
fn slow_uploads(server: &AppServer, rl: &Ringlb, tag: &str) {
    use std::io::Write;
    for chunked in [false, true] {
        let id = format!("{tag}-slow-{}", if chunked { "chunked" } else { "cl" });
        let body = body_for(&id, 10 * 64 * KB);
        let mut s = common::connect(rl.addr);
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {}", body.len())
        };
        write!(
            s,
            "POST /echo HTTP/1.1\r\nHost: s\r\nX-Test-Id: {id}\r\n{framing}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        for piece in body.chunks(64 * KB) {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if chunked {
                write!(s, "{:x}\r\n", piece.len()).unwrap();
                s.write_all(piece).unwrap();
                s.write_all(b"\r\n").unwrap();
            } else {
                s.write_all(piece).unwrap();
            }
        }
        if chunked {
            s.write_all(b"0\r\n\r\n").unwrap();
        }
        let (raw, closed) = read_until_close(&mut s);
        let (resps, _, _) = parse(&raw, &["POST"], closed);
        assert_eq!(resps.len(), 1, "{id}: {}", String::from_utf8_lossy(&raw));
        let v: Value = serde_json::from_slice(&resps[0].body).unwrap();
        assert_eq!(v["sha"], sha256_hex(&body), "{id}: {v}");
        let recs = server.records_of(&id);
        assert_eq!(recs.len(), 1, "{id}");
        assert_eq!(recs[0]["sha"], v["sha"], "{id}");
    }
}

/// Slow uploads, and 50 MiB uploads: requests with Content-Length and
/// with a generator (chunked), aiohttp with an async generator (chunked).
fn uploads(server: &AppServer, tag: &str) {
    let rl = ringlb_to(server.addr);
    slow_uploads(server, &rl, tag);
    for (lib, chunked) in [("requests", false), ("requests", true), ("aiohttp", true)] {
        let id = format!("{tag}-{lib}-50m-{}", if chunked { "chunked" } else { "cl" });
        let res = py_client(&json!({"lib": lib, "base": base(&rl),
            "steps": [req(&id, "POST", "/echo", 50 * MB, chunked)]}));
        assert_exchanges(server, &res, 200);
    }
}

#[test]
fn slow_and_large_uploads_through_ringlb_to_uvicorn() {
    uploads(&AppServer::uvicorn(&[]), "uv");
}

#[test]
fn slow_and_large_uploads_through_ringlb_to_gunicorn() {
    uploads(&AppServer::gunicorn("gthread", &["--threads", "4"]), "gu");
}

/// Clients that go away mid-response (Content-Length and chunked
/// downloads) and mid-upload (Content-Length and chunked bodies, a head
/// cut short): the backend never gets a complete request from them, and
/// the next requests (a fresh client, keep-alive) get their own answers,
/// each seen once by the backend: no upstream connection is reused with
/// the rest of an abandoned response in it.
fn client_aborts(server: &AppServer, tag: &str) {
    use std::io::{Read, Write};
    let rl = ringlb_to(server.addr);
    for (name, path) in [
        ("dl", "/dl/5000000"),
        ("dl-chunked", "/dl/5000000?chunked=1"),
    ] {
        let id = format!("{tag}-abort-{name}");
        let mut s = common::connect(rl.addr);
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: a\r\nX-Test-Id: {id}\r\n\r\n"
        )
        .unwrap();
        let mut got = 0;
        let mut b = vec![0u8; 64 * KB];
        while got < 100 * KB {
            let k = s.read(&mut b).unwrap();
            assert!(k > 0, "{id}: closed after {got} bytes");
            got += k;
        }
        drop(s);
    }
    let uploads: [(&str, String, Vec<u8>); 3] = [
        (
            "up",
            "Content-Length: 5000000".into(),
            vec![b'a'; 1_000_000],
        ),
        (
            "up-chunked",
            "Transfer-Encoding: chunked".into(),
            [b"100000\r\n".as_slice(), &[b'b'; 500_000]].concat(),
        ),
        ("head", String::new(), Vec::new()),
    ];
    for (name, framing, part) in uploads {
        let id = format!("{tag}-abort-{name}");
        let mut s = common::connect(rl.addr);
        if framing.is_empty() {
            write!(
                s,
                "POST /echo HTTP/1.1\r\nHost: a\r\nX-Test-Id: {id}\r\nContent-Le"
            )
            .unwrap();
        } else {
            write!(
                s,
                "POST /echo HTTP/1.1\r\nHost: a\r\nX-Test-Id: {id}\r\n{framing}\r\n\r\n"
            )
            .unwrap();
            s.write_all(&part).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(s);
    }
    // The next client: keep-alive POSTs and GETs, on one connection.
    let mut s = common::connect(rl.addr);
    let mut buf = Vec::new();
    for i in 0..6 {
        let id = format!("{tag}-after-{i}");
        let body = body_for(&id, 1000 * i);
        write!(
            s,
            "POST /echo HTTP/1.1\r\nHost: a\r\nX-Test-Id: {id}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(&body).unwrap();
        let r = common::read_response(&mut s, &mut buf, false).expect("a response");
        let v: Value = serde_json::from_str(common::body_of(&r)).unwrap();
        assert_eq!(v["sha"], sha256_hex(&body), "{id}: {r}");
        write!(
            s,
            "GET /dl/{} HTTP/1.1\r\nHost: a\r\nX-Test-Id: {id}-dl\r\n\r\n",
            100 + i
        )
        .unwrap();
        let r = common::read_response(&mut s, &mut buf, false).expect("a response");
        assert_eq!(common::status_of(&r), 200, "{id}-dl");
        for rid in [id.clone(), format!("{id}-dl")] {
            let recs = server.records_of(&rid);
            assert_eq!(recs.len(), 1, "{rid}: backend saw it {} times", recs.len());
        }
        let rec = &server.records_of(&id)[0];
        assert_eq!(rec["sha"], v["sha"], "{id}");
    }
    for (name, full) in [("up", 5_000_000), ("up-chunked", 1 << 20), ("head", 0)] {
        let id = format!("{tag}-abort-{name}");
        let recs = server.records_of(&id);
        assert!(
            recs.len() <= 1 && recs.iter().all(|r| r["len"].as_i64().unwrap() < full),
            "{id}: an abandoned request reached the backend whole, or twice: {recs:?}"
        );
        if name == "head" {
            assert!(recs.is_empty(), "{id}: {recs:?}");
        }
    }
    for name in ["dl", "dl-chunked"] {
        let id = format!("{tag}-abort-{name}");
        assert_eq!(server.records_of(&id).len(), 1, "{id}");
    }
}

#[test]
fn clients_aborting_through_ringlb_to_uvicorn() {
    client_aborts(&AppServer::uvicorn(&[]), "uv");
}

#[test]
fn clients_aborting_through_ringlb_to_gunicorn() {
    client_aborts(&AppServer::gunicorn("gthread", &["--threads", "4"]), "gu");
}

/// How long `/hold` waits for its client to leave: far beyond the second
/// after which ringlb starts looking at a waiting client, so a backend
/// that answers instead of seeing the disconnect means ringlb kept the
/// upstream connection open for a client that was gone.
const HOLD_MS: u64 = 20_000;

/// The backend's record of phase `phase` ("start" / "end") of `/hold`
/// request `id`, waited for (bounded: the hold plus a margin).
fn hold_phase(server: &AppServer, id: &str, phase: &str) -> Value {
    for _ in 0..(HOLD_MS / 20 + 500) {
        if let Some(r) = server
            .records_of(id)
            .into_iter()
            .find(|r| r["phase"] == phase)
        {
            return r;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{id}: the backend never recorded {phase:?}: {:?}\n{}",
        server.records_of(id),
        server.proc.log_text()
    );
}

/// `/hold` request `id` reached the backend once, and its end record says
/// whether the backend saw its connection close before it would answer.
fn assert_hold(server: &AppServer, id: &str, disconnected: bool) {
    let end = hold_phase(server, id, "end");
    let starts = server
        .records_of(id)
        .iter()
        .filter(|r| r["phase"] == "start")
        .count();
    assert_eq!(starts, 1, "{id}: the backend got it {starts} times");
    assert_eq!(
        end["disconnected"],
        disconnected,
        "{id}: {}",
        if disconnected {
            "the client left, but the backend kept its connection until it answered"
        } else {
            "the client stayed, but the backend saw its connection close"
        }
    );
}

/// Clients that leave while the backend is still working on their answer
/// (nginx's 499): ringlb closes the upstream connection, so the backend
/// sees its client go (uvicorn: `http.disconnect`; gunicorn sync: its
/// socket's end, and its one worker is free again). Clients that stay —
/// also pipelining, also half-closed after pipelining — get their answers.
/// Each request reaches the backend once; the access log has 499 for the
/// ones that left before a response head, the status sent for the rest.
fn clients_leaving(server: &AppServer, tag: &str) {
    use std::io::{Read, Write};
    let dir = common::tempdir::Dir::new("leaving");
    let access = dir.0.join("access.log");
    let cfg = format!(
        "[log]\naccess_log = \"{}\"\naccess_log_format = \"json\"\n\n{}",
        access.display(),
        simple_config(&[server.addr], "")
    );
    let rl = Ringlb::start(&cfg);
    let hold = |id: &str, ms: u64, extra: &str| {
        format!("GET /hold/{ms}?id={id}{extra} HTTP/1.1\r\nHost: h\r\nX-Test-Id: {id}\r\n")
    };
    let mut statuses = Vec::new();

    // Leaves once the backend has the request (closes its socket).
    let id = format!("{tag}-leaves");
    let mut s = common::connect(rl.addr);
    write!(s, "{}\r\n", hold(&id, HOLD_MS, "")).unwrap();
    hold_phase(server, &id, "start");
    drop(s);
    assert_hold(server, &id, true);
    statuses.push((id, 499));

    // Half-closes after its request (`shutdown(SHUT_WR)`): gone, as in
    // nginx; it reads the end of the connection, no response.
    let id = format!("{tag}-half-closes");
    let mut s = common::connect(rl.addr);
    write!(s, "{}\r\n", hold(&id, HOLD_MS, "")).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(HOLD_MS / 1000 + 10)))
        .unwrap();
    let (got, closed) = read_until_close(&mut s);
    assert!(closed && got.is_empty(), "{id}: {closed} {got:?}");
    assert_hold(server, &id, true);
    statuses.push((id, 499));

    // Python requests giving up after 1.5 s (a read timeout closes its
    // connection).
    let id = format!("{tag}-gives-up");
    let res = py_client(&json!({"lib": "requests", "base": base(&rl), "steps": [{
        "id": id, "method": "GET", "path": format!("/hold/{HOLD_MS}?id={id}"),
        "timeout": 1.5}]}));
    assert_eq!(res[0]["status"], 0, "{id}: {}", res[0]);
    assert!(
        res[0]["error"].as_str().unwrap().contains("Timeout"),
        "{id}: {}",
        res[0]
    );
    assert_hold(server, &id, true);
    statuses.push((id, 499));

    // Leaves an event stream that has nothing more to send for now: the
    // response head went out, so it keeps its 200.
    let id = format!("{tag}-leaves-stream");
    let mut s = common::connect(rl.addr);
    write!(s, "{}\r\n", hold(&id, HOLD_MS, "&stream=1")).unwrap();
    let mut raw = Vec::new();
    let mut b = [0u8; 4096];
    while common::find(&raw, b"data: tick 0").is_none() {
        let k = s.read(&mut b).unwrap();
        assert!(k > 0, "{id}: closed before the first event: {raw:?}");
        raw.extend_from_slice(&b[..k]);
    }
    drop(s);
    assert_hold(server, &id, true);
    statuses.push((id, 200));

    // Stays through a 2.5 s wait (ringlb looks at it twice meanwhile).
    let id = format!("{tag}-stays");
    let mut s = common::connect(rl.addr);
    write!(s, "{}Connection: close\r\n\r\n", hold(&id, 2500, "")).unwrap();
    let (raw, closed) = read_until_close(&mut s);
    let (resps, _, stray) = parse(&raw, &["GET"], closed);
    assert!(
        resps.len() == 1 && resps[0].status == 200 && resps[0].body == b"held" && stray.is_empty(),
        "{id}: {resps:?} {stray:?}"
    );
    assert_hold(server, &id, false);
    statuses.push((id, 200));

    // Pipelines its next request behind the long one; and the same, then
    // half-closes: the answers are owed, it is not gone.
    for half in [false, true] {
        let id = format!("{tag}-pipelines{}", if half { "-half-closed" } else { "" });
        let next = format!("{id}-next");
        let mut s = common::connect(rl.addr);
        write!(
            s,
            "{}\r\nGET /echo HTTP/1.1\r\nHost: h\r\nX-Test-Id: {next}\r\nConnection: close\r\n\r\n",
            hold(&id, 2500, "")
        )
        .unwrap();
        if half {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let (raw, closed) = read_until_close(&mut s);
        let (resps, _, stray) = parse(&raw, &["GET", "GET"], closed);
        assert!(
            resps.len() == 2
                && resps.iter().all(|r| r.status == 200 && r.complete)
                && resps[0].body == b"held"
                && stray.is_empty(),
            "{id}: {resps:?} {stray:?}"
        );
        assert_hold(server, &id, false);
        assert_eq!(server.records_of(&next).len(), 1, "{next}");
        statuses.push((id, 200));
    }

    // A new client afterwards is served (gunicorn sync: its one worker was
    // freed when the first client left).
    let id = format!("{tag}-after");
    let res = py_client(&json!({"lib": "requests", "base": base(&rl),
        "steps": [req(&id, "POST", "/echo", 1000, false)]}));
    assert_exchanges(server, &res, 200);

    // The access log (written by the shard's tick; waited for, bounded).
    let mut lines: Vec<Value> = Vec::new();
    for _ in 0..250 {
        lines = std::fs::read_to_string(&access)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= statuses.len() + 3 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    for (id, status) in &statuses {
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|l| {
                l["uri"].as_str().unwrap().ends_with(&format!("?id={id}"))
                    || l["uri"].as_str().unwrap().contains(&format!("?id={id}&"))
            })
            .collect();
        assert!(
            mine.len() == 1 && mine[0]["status"] == *status,
            "{id}: expected one access-log line with status {status}: {mine:?}"
        );
    }
}

#[test]
fn clients_leaving_a_long_poll_through_ringlb_to_uvicorn() {
    clients_leaving(&AppServer::uvicorn(&[]), "uv");
}

#[test]
fn clients_leaving_a_long_poll_through_ringlb_to_gunicorn_sync() {
    clients_leaving(&AppServer::gunicorn("sync", &[]), "gu");
}

/// A TLS client for [`tls_clients_leaving`]: sends a `/hold` request,
/// prints "sent", waits for a line on stdin, then leaves as `mode` says:
/// `close_notify` (then FIN) or `fin` (the socket closed without one).
const TLS_LEAVER: &str = r#"
import socket, ssl, sys
port, ca, path, tid, mode = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port))), server_hostname="a.test")
s.sendall(("GET %s HTTP/1.1\r\nHost: a.test\r\nX-Test-Id: %s\r\n\r\n" % (path, tid)).encode())
print("sent", flush=True)
sys.stdin.readline()
if mode == "close_notify":
    s.setblocking(False)
    try:
        s.unwrap()
    except (ssl.SSLWantReadError, OSError):
        pass  # close_notify sent; ringlb's is not awaited
s.close()
"#;

/// TLS clients that leave a long poll, with a close_notify then FIN, or a
/// bare FIN: ringlb closes the upstream connection (uvicorn sees
/// `http.disconnect`); a TLS client that stays gets its answer.
#[test]
fn tls_clients_leaving_a_long_poll_through_ringlb_to_uvicorn() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let server = AppServer::uvicorn(&[]);
    let pki = common::pki::Pki::new();
    pki.leaf("a", &["a.test"], 2);
    let cfg = format!(
        "[runtime]\nworkers = 1\n\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n\
         [listener.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n\n\
         [upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\n",
        pki.file("a.pem"),
        pki.file("a.key"),
        server.addr
    );
    let rl = Ringlb::start(&cfg);
    let port = rl.addr.port().to_string();
    let ca = pki.file("ca.pem");
    for mode in ["close_notify", "fin"] {
        let id = format!("tls-leaves-{mode}");
        let path = format!("/hold/{HOLD_MS}?id={id}");
        let mut child = Command::new(common::python())
            .args(["-c", TLS_LEAVER, &port, &ca, &path, &id, mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "sent", "{id}");
        hold_phase(&server, &id, "start");
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(child.wait().unwrap().success(), "{id}: the client failed");
        assert_hold(&server, &id, true);
    }
    // A TLS client that stays through a 2.5 s wait.
    let id = "tls-stays";
    let out = common::python_ok(&[
        "-c",
        r#"
import socket, ssl, sys
port, ca, tid = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port))), server_hostname="a.test")
s.sendall(("GET /hold/2500?id=%s HTTP/1.1\r\nHost: a.test\r\nX-Test-Id: %s\r\nConnection: close\r\n\r\n" % (tid, tid)).encode())
got = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    got += b
print(got.split(b"\r\n", 1)[0].decode(), got.endswith(b"\r\n\r\nheld"))
"#,
        &port,
        &ca,
        id,
    ]);
    assert_eq!(out.trim(), "HTTP/1.1 200 OK True", "{id}");
    assert_hold(&server, id, false);
}

/// Large response heads: 50 `Set-Cookie` fields and a 31 KB head are
/// relayed intact (nginx, with its default `proxy_buffer_size` of one
/// 4 KB page, answers 502 to the latter); a 70 KB head is beyond ringlb's
/// 64 KB and is a 502 for
/// that request only, logged, not retried; the next request is answered.
#[test]
fn large_response_heads_through_ringlb_to_uvicorn() {
    let server = AppServer::uvicorn(&[]);
    let rl = ringlb_to(server.addr);
    let dir = common::tempdir::Dir::new("heads");
    let heads = dir.0.join("heads.txt");
    let h = heads.display().to_string();
    let u = |p: &str| format!("{}{p}", base(&rl));
    let (ok, out, err) = curl(&[
        "-D",
        &h,
        "-H",
        "X-Test-Id: heads",
        &u("/cookies/50"),
        &u("/fill/31"),
        &u("/fill/70"),
        &u("/dl/10"),
    ]);
    assert!(ok, "curl: {err}");
    let text = std::fs::read_to_string(&heads).unwrap();
    let blocks: Vec<&str> = text.split("\r\n\r\n").filter(|b| !b.is_empty()).collect();
    assert_eq!(blocks.len(), 4, "{text}");
    let cookies: Vec<&str> = blocks[0]
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .collect();
    assert_eq!(cookies.len(), 50, "{}", blocks[0]);
    for (i, c) in cookies.iter().enumerate() {
        let want = format!("c{i}={}; Path=/; HttpOnly", "v".repeat(40));
        assert_eq!(c.split_once(": ").unwrap().1, want);
    }
    let fill = "f".repeat(1000);
    let fills = blocks[1]
        .lines()
        .filter(|l| l.split_once(": ").is_some_and(|(_, v)| v == fill))
        .count();
    assert_eq!(
        fills, 31,
        "a 31 KB head arrived with {fills} of its 31 fields"
    );
    assert_eq!(common::status_of(blocks[2]), 502, "{}", blocks[2]);
    assert_eq!(common::status_of(blocks[3]), 200, "{}", blocks[3]);
    let mut want = b"ok\r\n".to_vec();
    want.extend_from_slice(b"ok\r\n");
    let body_502 = &out[8..out.len() - 10];
    assert!(
        out.starts_with(&want) && out.ends_with(&app_pattern(10)),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(body_502).contains("502"),
        "the 502's body: {:?}",
        String::from_utf8_lossy(body_502)
    );
    let paths: Vec<String> = server
        .records_of("heads")
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["/cookies/50", "/fill/31", "/fill/70", "/dl/10"]);
    assert!(
        rl.log_text()
            .contains("malformed response head (HeadTooLarge)"),
        "{}",
        rl.log_text()
    );
}

/// (connection number, request line) of each request a backend received.
type Seen = Arc<Mutex<Vec<(usize, String)>>>;

/// A backend that answers the first request on each connection and drops
/// the connection (a reset, no answer) when a second one arrives on it:
/// the request crossing the backend's idle close. Records (connection
/// number, request line) for each request it received.
fn closing_on_reuse() -> (common::Backend, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let conn_no = Arc::new(AtomicUsize::new(0));
    let be = common::backend(move |mut s| {
        use std::io::Write;
        let no = conn_no.fetch_add(1, Ordering::SeqCst);
        let mut buf = Vec::new();
        for nth in 0.. {
            let Some(req) = common::read_request(&mut s, &mut buf) else {
                return;
            };
            let line = common::request_line(&req);
            let post = line.starts_with("POST");
            s2.lock().unwrap().push((no, line));
            if nth > 0 {
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                return;
            }
            // A POST's connection is not kept, so only GETs leave one idle.
            let conn = if post { "close" } else { "keep-alive" };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: {conn}\r\n\r\nok"
            );
            if post {
                return;
            }
        }
    });
    (be, seen)
}

/// A POST after a quiet spell is not sent on the idle pooled connection
/// (the backend may be closing it just then, and a POST that met that
/// close could not be sent again: the client would get a 502 for a
/// request the backend never processed) but on a new one; a GET is, and
/// when that connection turns out closed, it goes once more on a fresh
/// connection. The backend here drops every reused connection, so a POST
/// given one fails.
#[test]
fn a_post_after_a_quiet_spell_is_not_sent_on_a_connection_the_backend_may_be_closing() {
    let (be, seen) = closing_on_reuse();
    let rl = Ringlb::start(&simple_config(&[be.addr], "keepalive_timeout = \"60s\""));
    let mut s = common::connect(rl.addr);
    let mut buf = Vec::new();
    let mut ask = |req: &str| {
        use std::io::Write;
        s.write_all(req.as_bytes()).unwrap();
        common::read_response(&mut s, &mut buf, false).expect("a response")
    };
    let r = ask("GET /first HTTP/1.1\r\nHost: q\r\n\r\n");
    assert_eq!(common::status_of(&r), 200, "{r}");
    thread::sleep(Duration::from_millis(700));
    let r = ask("POST /post HTTP/1.1\r\nHost: q\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(common::status_of(&r), 200, "the POST: {r}");
    thread::sleep(Duration::from_millis(700));
    let r = ask("GET /again HTTP/1.1\r\nHost: q\r\n\r\n");
    assert_eq!(common::status_of(&r), 200, "the GET: {r}");
    let seen = seen.lock().unwrap().clone();
    let lines: Vec<(usize, &str)> = seen.iter().map(|(c, l)| (*c, l.as_str())).collect();
    assert_eq!(
        lines,
        [
            (0, "GET /first HTTP/1.1"),
            (1, "POST /post HTTP/1.1"),
            (0, "GET /again HTTP/1.1"),
            (2, "GET /again HTTP/1.1"),
        ],
        "(connection, request) as the backend saw them"
    );
}

/// The real race: uvicorn closes idle connections after 1 s, and requests
/// come about a second apart, so some meet the close. Every POST reaches
/// the backend exactly once and is answered; every GET is answered (sent
/// at most twice: once more on a fresh connection after a lost one).
#[test]
fn requests_meeting_uvicorns_idle_close_are_answered_and_posts_never_replayed() {
    let server = AppServer::uvicorn(&["--timeout-keep-alive", "1"]);
    let rl = ringlb_to(server.addr);
    let mut steps = Vec::new();
    for i in 0..8 {
        steps.push(json!({"sleep": 1.0}));
        let (m, size) = if i % 2 == 0 {
            ("POST", 2000)
        } else {
            ("GET", 0)
        };
        steps.push(req(&format!("race-{i}"), m, "/echo", size, false));
    }
    let res = py_client(&json!({"lib": "requests", "base": base(&rl), "steps": steps}));
    assert_eq!(res.len(), 8);
    for r in &res {
        let id = r["id"].as_str().unwrap();
        assert_eq!(r["status"], 200, "{id}: {r}");
        let recs = server.records_of(id);
        let post = id.ends_with(['0', '2', '4', '6']);
        assert!(
            recs.len() == 1 || (!post && recs.len() == 2),
            "{id}: the backend saw it {} times",
            recs.len()
        );
        assert!(recs.iter().all(|x| x["sha"] == r["sent_sha"]), "{id}");
    }
}
