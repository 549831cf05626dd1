//! HTTP/1 head decode + encode, the per-request parsing work of the hot
//! path: a browser-like request head decoded and re-encoded for the
//! upstream, and a typical response head decoded and re-encoded for the
//! client. Buffers are reused across iterations, as a shard reuses its
//! per-connection buffers.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringlb::proto::http1::encode::{encode_request, encode_response, ClientConn};
use ringlb::proto::http1::{decode_request, decode_response, Limits, Version};

const REQUEST: &[u8] = b"GET /static/app.js?v=12 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nReferer: https://www.example.com/\r\nConnection: keep-alive\r\nCookie: session=0123456789abcdef; theme=dark\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: uvicorn\r\nContent-Type: application/javascript\r\nContent-Length: 5120\r\nCache-Control: max-age=3600\r\nETag: \"5f3c-1a2b\"\r\nVary: Accept-Encoding\r\nConnection: keep-alive\r\n\r\n";

const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

fn bench_heads(c: &mut Criterion) {
    let limits = Limits::default();
    let mut fields = Vec::with_capacity(32);
    let mut out = Vec::with_capacity(64 * 1024);
    c.bench_function("http1/request_decode_encode", |b| {
        b.iter(|| {
            let head = decode_request(black_box(REQUEST), &limits, &mut fields)
                .unwrap()
                .unwrap();
            out.clear();
            encode_request(&mut out, REQUEST, &head, &fields, b"192.0.2.1", b"up:80");
            black_box(out.len())
        })
    });
    c.bench_function("http1/response_decode_encode", |b| {
        b.iter(|| {
            let head = decode_response(black_box(RESPONSE), 65536, false, &mut fields)
                .unwrap()
                .unwrap();
            out.clear();
            let conn = ClientConn::KeepAlive(Version::Http11);
            encode_response(&mut out, RESPONSE, &head, &fields, conn, false, DATE);
            black_box(out.len())
        })
    });
}

criterion_group!(benches, bench_heads);
criterion_main!(benches);
