//! HTTP/1 head decode + encode, the per-request parsing work of the hot
//! path: a browser-like request head decoded and re-encoded for the
//! upstream, and a typical response head decoded and re-encoded for the
//! client. Buffers are reused across iterations, as a shard reuses its
//! per-connection buffers. The chunked benchmarks scan a chunked body the
//! way the relay does (`feed`: framing only; `forward`: framing plus the
//! copy to the output buffer): 16 chunks of 1 KiB, and 64 small ones.
//!
//! `cargo bench --bench http1 -- --warm-up-time 1 --measurement-time 3`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringlb::proto::http1::encode::{encode_request, encode_response, BodyOut, ClientConn};
use ringlb::proto::http1::{decode_request, decode_response, ChunkedDecoder, Limits, Version};

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
            encode_request(
                &mut out,
                REQUEST,
                &head,
                &fields,
                b"192.0.2.1",
                b"up:80",
                false,
            );
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
            encode_response(
                &mut out,
                RESPONSE,
                &head,
                &fields,
                conn,
                BodyOut::AsIs,
                DATE,
            );
            black_box(out.len())
        })
    });
}

/// A chunked body of `count` chunks of `size` bytes, then the last chunk.
fn chunked_body(count: usize, size: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for _ in 0..count {
        b.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        b.extend(std::iter::repeat_n(b'x', size));
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b"0\r\n\r\n");
    b
}

fn bench_chunked(c: &mut Criterion) {
    let mut out = Vec::with_capacity(64 * 1024);
    for (label, body) in [
        ("16x1KiB", chunked_body(16, 1024)),
        ("64x32B", chunked_body(64, 32)),
    ] {
        c.bench_function(&format!("chunked/feed_{label}"), |b| {
            b.iter(|| {
                let mut d = ChunkedDecoder::response();
                let n = d.feed(black_box(&body)).unwrap();
                assert!(d.is_done());
                black_box(n)
            })
        });
        c.bench_function(&format!("chunked/forward_{label}"), |b| {
            b.iter(|| {
                let mut d = ChunkedDecoder::response();
                out.clear();
                let n = d.forward(black_box(&body), &mut out).unwrap();
                black_box((n, out.len()))
            })
        });
    }
}

criterion_group!(benches, bench_heads, bench_chunked);
criterion_main!(benches);
