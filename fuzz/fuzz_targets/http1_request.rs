//! Request heads: decoding never panics, and whatever decodes re-encodes to
//! a head that decodes again with the same framing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringlb::proto::http1::encode::encode_request;
use ringlb::proto::http1::{decode_request, Limits};

fuzz_target!(|data: &[u8]| {
    let mut fields = Vec::new();
    if let Ok(Some(head)) = decode_request(data, &Limits::default(), &mut fields) {
        assert!(head.head_len <= data.len());
        let mut out = Vec::new();
        encode_request(&mut out, data, &head, &fields, b"192.0.2.1", b"upstream:80");
        let mut again = Vec::new();
        let re = decode_request(&out, &Limits { max_head_bytes: usize::MAX, max_headers: 256, max_uri_bytes: usize::MAX }, &mut again)
            .expect("re-encoded head must decode")
            .expect("re-encoded head is complete");
        assert_eq!(re.framing, head.framing);
        assert_eq!(re.head_len, out.len());
    }
});
