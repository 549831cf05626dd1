//! Replays every committed fuzz input on stable: the minimised corpora
//! (`fuzz/corpus-min/<target>/`, from `cargo fuzz cmin` after each campaign),
//! the hand-written seeds (`fuzz/seeds/<target>/`) and every crash found so
//! far (`fuzz/regressions/<target>/`) go through the same check the fuzz
//! target runs (`fuzz/checks.rs`). A panic names the file.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["corpus-min", "seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for e in dir {
            let p = e.unwrap().path();
            if p.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str) {
    let check = checks::TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .map(|(_, f)| *f)
        .unwrap();
    let files = inputs(target);
    let corpus = files
        .iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "corpus-min"))
        .count();
    assert!(
        corpus > 0,
        "fuzz/corpus-min/{target}/ is empty: run `bash fuzz/campaign.sh` (see fuzz/README.md)"
    );
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(f.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs panic:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn every_target_is_replayed_here() {
    let mut names: Vec<&str> = checks::TARGETS.iter().map(|(n, _)| *n).collect();
    names.sort();
    let mut bins: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/fuzz_targets"))
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
    bins.sort();
    assert_eq!(
        names, bins,
        "fuzz/checks.rs TARGETS and fuzz/fuzz_targets/ differ"
    );
}

#[test]
fn chunked_inputs_replay() {
    replay("chunked");
}

#[test]
fn config_inputs_replay() {
    replay("config");
}

#[test]
fn http1_request_inputs_replay() {
    replay("http1_request");
}

#[test]
fn http1_response_inputs_replay() {
    replay("http1_response");
}

#[test]
fn vrrp_packet_inputs_replay() {
    replay("vrrp_packet");
}

#[test]
fn proxy_protocol_inputs_replay() {
    replay("proxy_protocol");
}
