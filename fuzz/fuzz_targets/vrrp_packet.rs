//! VRRP datagrams from the wire: parsing never panics, and anything that
//! parses re-emits to bytes that parse to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringlb::proto::vrrp::wire::{parse_ipv4, Packet, Repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = parse_ipv4(data) {
        let (src, dst) = (env.src.into(), env.dst.into());
        if let Ok(pkt) = Packet::new_checked(env.payload) {
            if let Ok(repr) = Repr::parse(&pkt, src, dst) {
                let bytes = repr.to_bytes(src, dst);
                let again = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap(), src, dst).unwrap();
                assert_eq!(again, repr);
            }
        }
    }
});
