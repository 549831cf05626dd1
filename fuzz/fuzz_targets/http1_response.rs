//! Response heads from upstreams: decoding never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringlb::proto::http1::decode_response;

fuzz_target!(|data: &[u8]| {
    let mut fields = Vec::new();
    for head in [false, true] {
        if let Ok(Some(r)) = decode_response(data, 16 * 1024, head, &mut fields) {
            assert!(r.head_len <= data.len());
        }
    }
});
