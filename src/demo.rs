//! `ringlb demo` (filled in once the backend lands).
pub fn run() -> std::io::Result<()> {
    Err(std::io::Error::other("demo not built yet"))
}
