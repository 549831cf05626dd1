//! The property each fuzz target checks, as plain functions: the libFuzzer
//! targets (`fuzz_targets/*.rs`, nightly, `cargo fuzz`) call them on
//! generated inputs, and `tests/fuzz_corpus.rs` calls them on every committed
//! corpus and crash input with stable `cargo test`. A panic is a finding.
#![allow(dead_code)] // each fuzz binary uses one of these

use ringlb::config::parse_str;
use ringlb::proto::http1::encode::encode_request;
use ringlb::proto::http1::{decode_request, decode_response, ChunkedDecoder, Limits, Piece};
use ringlb::proto::proxy_protocol as pp;
use ringlb::proto::vrrp::wire::{parse_ipv4, Packet, Repr};

/// A property: panics on a finding.
pub type Check = fn(&[u8]);

/// Every target: (name, check).
pub const TARGETS: &[(&str, Check)] = &[
    ("chunked", chunked),
    ("config", config),
    ("http1_request", http1_request),
    ("http1_response", http1_response),
    ("proxy_protocol", proxy_protocol),
    ("vrrp_packet", vrrp_packet),
];

/// Chunked bodies, read as a request's (strict) and as a response's (a
/// bare LF may end a line): feeding in any split gives the same verdict
/// and the same consumed length as feeding all at once, and the filtering
/// pass-through (`forward`) consumes the same bytes. What `forward` emits
/// for a complete body is canonical: forwarding it again, even as a
/// request, gives the same bytes, with the same data. Whatever a request's
/// decoder accepts, a response's reads the same way.
pub fn chunked(data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let strict = chunked_as(data, || ChunkedDecoder::request(0));
    let lenient = chunked_as(data, ChunkedDecoder::response);
    if let Some(strict) = strict {
        assert_eq!(
            Some(strict),
            lenient,
            "a response reads a valid request body alike"
        );
    }
}

/// [`chunked`]'s properties for decoders made by `new`; the relay's output
/// when the body is complete: (consumed, forwarded bytes).
fn chunked_as(data: &[u8], new: fn() -> ChunkedDecoder) -> Option<(usize, Vec<u8>)> {
    let split = data[0] as usize % data.len();
    let body = &data[1..];
    let mut whole = new();
    let all = whole.feed(body);
    let mut parts = new();
    let split = split.min(body.len());
    let first = parts.feed(&body[..split]);
    let combined = match first {
        Err(e) => Err(e),
        Ok(n) if parts.is_done() => Ok(n), // ended inside the first part
        // Unconsumed bytes (a trailer line still arriving) stay buffered
        // and are fed again with the rest, as a relay does.
        Ok(n) => parts.feed(&body[n..]).map(|m| n + m),
    };
    // The pass-through relay consumes exactly what feed() does and forwards
    // at most that, but for a CR added to each bare LF (forbidden trailer
    // lines are left out).
    let mut out = Vec::new();
    let forwarded = new().forward(body, &mut out);
    let mut complete = None;
    match (&all, &forwarded) {
        (Ok(a), Ok(f)) => {
            assert_eq!(a, f);
            let lfs = body[..*f].iter().filter(|&&b| b == b'\n').count();
            assert!(out.len() <= *f + lfs);
            if whole.is_done() {
                let mut again = Vec::new();
                let mut d = ChunkedDecoder::request(0);
                let n = d
                    .forward(&out, &mut again)
                    .expect("canonical output decodes strictly");
                assert!(d.is_done() && n == out.len(), "canonical output is whole");
                assert_eq!(again, out, "canonical output is a fixed point");
                assert_eq!(data_of(&body[..*a]), data_of(&out), "same data");
                complete = Some((*a, out));
            }
        }
        (Err(_), Err(_)) => {}
        (a, f) => panic!("forward changed the verdict: {a:?} vs {f:?}"),
    }
    match (all, combined) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            assert_eq!(whole.is_done(), parts.is_done());
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("split changed the verdict: {a:?} vs {b:?}"),
    }
    complete
}

/// The chunk data of a complete chunked body.
fn data_of(body: &[u8]) -> Vec<u8> {
    let mut d = ChunkedDecoder::response();
    let (mut at, mut data) = (0, Vec::new());
    while !d.is_done() {
        let (n, piece) = d.next(&body[at..]).expect("valid body");
        assert!(n > 0, "complete body");
        if piece == Piece::Data {
            data.extend_from_slice(&body[at..at + n]);
        }
        at += n;
    }
    data
}

/// Request heads: decoding never panics, and whatever decodes re-encodes to
/// a head that decodes again with the same framing.
pub fn http1_request(data: &[u8]) {
    let mut fields = Vec::new();
    if let Ok(Some(head)) = decode_request(data, &Limits::default(), &mut fields) {
        assert!(head.head_len <= data.len());
        let mut out = Vec::new();
        encode_request(
            &mut out,
            data,
            &head,
            &fields,
            b"192.0.2.1",
            b"upstream:80",
            false,
        );
        let mut again = Vec::new();
        let limits = Limits {
            max_head_bytes: usize::MAX,
            max_headers: 256,
            max_uri_bytes: usize::MAX,
        };
        let re = decode_request(&out, &limits, &mut again)
            .expect("re-encoded head must decode")
            .expect("re-encoded head is complete");
        assert_eq!(re.framing, head.framing);
        assert_eq!(re.head_len, out.len());
    }
}

/// Response heads from upstreams: decoding never panics.
pub fn http1_response(data: &[u8]) {
    let mut fields = Vec::new();
    for head in [false, true] {
        if let Ok(Some(r)) = decode_response(data, 16 * 1024, head, &mut fields) {
            assert!(r.head_len <= data.len());
        }
    }
}

/// VRRP datagrams from the wire: parsing never panics, and anything that
/// parses re-emits to bytes that parse to the same value.
pub fn vrrp_packet(data: &[u8]) {
    if let Ok(env) = parse_ipv4(data) {
        let (src, dst) = (env.src.into(), env.dst.into());
        if let Ok(pkt) = Packet::new_checked(env.payload) {
            if let Ok(repr) = Repr::parse(&pkt, src, dst) {
                let bytes = repr.to_bytes(src, dst);
                let again =
                    Repr::parse(&Packet::new_checked(&bytes[..]).unwrap(), src, dst).unwrap();
                assert_eq!(again, repr);
            }
        }
    }
}

/// Config files: loading any text never panics; a rejected file gets at
/// least one diagnostic, each naming the file and a LINE:COL inside the text
/// (1-based, at most one past the end of its line).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = parse_str(text, "fuzz.toml") {
        assert!(!e.diagnostics.is_empty(), "an error without a diagnostic");
        let lines: Vec<&str> = text.split('\n').collect();
        for d in &e.diagnostics {
            assert_eq!(d.file, "fuzz.toml");
            assert!(d.line >= 1 && d.col >= 1, "0-based position: {d}");
            assert!(d.line <= lines.len(), "line past the end: {d}");
            let width = lines[d.line - 1].chars().count();
            assert!(
                d.col <= width + 1,
                "column past the end of line {}: {d}",
                d.line
            );
            assert!(d
                .to_string()
                .starts_with(&format!("fuzz.toml:{}:{}: ", d.line, d.col)));
        }
    }
}

/// PROXY headers: parsing never panics; a complete header is no longer
/// than the input, parses the same from exactly its own bytes, and every
/// shorter prefix of it is `Incomplete` (so a reader that takes the bytes
/// of an incomplete header never takes a byte past the header); an error
/// stays an error whatever follows (only the header's own faults, never
/// the I/O reasons); carried addresses re-encode (v1 and v2) to headers
/// that parse back to them.
pub fn proxy_protocol(data: &[u8]) {
    let r = pp::parse(data);
    match r {
        Ok(pp::Parse::Done(h)) => {
            assert!(h.len <= data.len() && h.len > 0);
            assert_eq!(pp::parse(&data[..h.len]), r);
            for n in 0..h.len {
                assert_eq!(
                    pp::parse(&data[..n]),
                    Ok(pp::Parse::Incomplete),
                    "prefix {n}"
                );
            }
            if let Some(a) = h.addrs {
                assert_eq!(a.src.is_ipv4(), a.dst.is_ipv4());
                for v in [pp::Version::V1, pp::Version::V2] {
                    let mut out = Vec::new();
                    pp::encode(v, a.src, a.dst, &mut out);
                    let back = pp::parse(&out);
                    assert_eq!(
                        back,
                        Ok(pp::Parse::Done(pp::Header {
                            len: out.len(),
                            addrs: Some(a)
                        }))
                    );
                }
            }
        }
        Ok(pp::Parse::Incomplete) => {
            assert!(data.len() < pp::V2_MAX_LEN);
        }
        Err(e) => {
            assert!(matches!(
                e,
                pp::Error::Missing | pp::Error::Malformed | pp::Error::TooLong
            ));
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\0");
            assert!(pp::parse(&more).is_err());
        }
    }
}
