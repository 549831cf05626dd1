//! Fuzz target `proxy_protocol`: the property is `checks::proxy_protocol` in fuzz/checks.rs
//! (tests/fuzz_corpus.rs replays the committed inputs through it on stable).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::proxy_protocol(data));
