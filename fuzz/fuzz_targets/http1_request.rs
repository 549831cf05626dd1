//! Fuzz target `http1_request`: the property is `checks::http1_request` in fuzz/checks.rs
//! (tests/fuzz_corpus.rs replays the committed inputs through it on stable).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::http1_request(data));
