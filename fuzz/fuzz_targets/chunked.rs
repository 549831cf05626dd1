//! Chunked bodies: feeding in any split gives the same verdict and the same
//! consumed length as feeding all at once, and the filtering pass-through
//! (`forward`) consumes the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringlb::proto::http1::ChunkedDecoder;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = data[0] as usize % data.len();
    let body = &data[1..];
    let mut whole = ChunkedDecoder::new();
    let all = whole.feed(body);
    let mut parts = ChunkedDecoder::new();
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
    // at most that (forbidden trailer lines are left out).
    let mut out = Vec::new();
    let forwarded = ChunkedDecoder::new().forward(body, &mut out);
    match (&all, &forwarded) {
        (Ok(a), Ok(f)) => {
            assert_eq!(a, f);
            assert!(out.len() <= *f);
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
});
