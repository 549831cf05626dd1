//! Where the test venv's Python is (shared by `common` and `netns`).

use std::path::PathBuf;

/// The Python interpreter of the test venv (real application servers and
/// client libraries: uvicorn, gunicorn, requests, httpx, aiohttp). Set by
/// `tests/run.sh` through `RINGLB_PYTHON`; otherwise the repository's
/// `.venv`. Missing → the test fails with how to fix it (never a skip).
pub fn python() -> PathBuf {
    let p = std::env::var_os("RINGLB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(
        p.exists(),
        "{} not found: run `bash tests/run.sh` once (it creates the venv from \
         tests/requirements.txt); this test is not skipped",
        p.display()
    );
    p
}
