//! Placeholder until the built-in backend lands.
pub struct BackendOpts {
    pub listen: std::net::SocketAddr,
    pub body_size: usize,
    pub name: String,
    pub cpu: Option<usize>,
}
pub fn run(_o: BackendOpts) -> std::io::Result<()> {
    Err(std::io::Error::other("backend not built yet"))
}
