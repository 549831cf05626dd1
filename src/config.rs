//! Configuration: the TOML schema (README.md, "Configuration reference"),
//! its defaults, and validation.
//!
//! `load` turns a file into a fully resolved [`Config`]: every duration parsed,
//! every address resolved, every upstream reference turned into an index. Code
//! past this module never sees a string it has to interpret again, and never
//! sees an invalid value: every problem is reported up front as
//! `FILE:LINE:COL: message` (all of them, not just the first), so `ringlb check`
//! and a SIGHUP reload report exactly the same errors.
//!
//! Defaults live in [`defaults`] and nowhere else.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The one place where default values live.
pub mod defaults {
    use std::time::Duration;
    pub const BACKLOG: u32 = 4096;
    pub const KEEPALIVE: usize = 64;
    /// Below the usual backend idle timeouts (uvicorn 5 s, gunicorn 2 s for
    /// sync workers but those close anyway, Node 5 s), so the proxy closes
    /// an idle upstream connection before the backend does.
    pub const UPSTREAM_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(4);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
    pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
    pub const RETRIES: u32 = 1;
    pub const WEIGHT: u32 = 1;
    pub const MAX_FAILS: u32 = 1;
    pub const FAIL_TIMEOUT: Duration = Duration::from_secs(10);
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const MAX_HEADER_BYTES: usize = 32 * 1024;
    pub const MAX_HEADERS: usize = 100;
    /// Like nginx's `large_client_header_buffers 4 8k` (a request line must
    /// fit one 8k buffer).
    pub const MAX_URI_BYTES: usize = 8 * 1024;
    /// Like nginx's `client_max_body_size 1m`; 0 = unlimited.
    pub const CLIENT_MAX_BODY_SIZE: u64 = 1024 * 1024;
    pub const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
    pub const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
    pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
    pub const MAX_CONNECTIONS: usize = 16384;
    pub const TUNNEL_TIMEOUT: Duration = Duration::from_secs(3600);
    /// Request bodies are read before an upstream is chosen (nginx's
    /// `proxy_request_buffering on`): a slow client then holds no upstream
    /// connection, and a whole buffered body can be replayed.
    pub const REQUEST_BUFFERING: bool = true;
    /// Most body bytes buffered per request before the rest is streamed:
    /// `client_max_body_size`'s default, so every body the defaults accept
    /// reaches the backend whole, after the client sent it (a slow upload
    /// holds no worker of a gunicorn sync backend, as behind nginx, which
    /// buffers to a temp file). Storage grows only as bytes arrive (a
    /// pooled 64 KiB buffer first) and is charged to the shard's budget.
    pub const REQUEST_BUFFER_SIZE: usize = 1024 * 1024;
    pub const HC_INTERVAL: Duration = Duration::from_secs(1);
    pub const HC_TIMEOUT: Duration = Duration::from_millis(500);
    pub const HC_RISE: u32 = 2;
    pub const HC_FALL: u32 = 3;
    pub const HC_PATH: &str = "/";
    pub const HC_EXPECT: (u16, u16) = (200, 399);
    pub const VRRP_PRIORITY: u8 = 100;
    pub const VRRP_ADVERT: Duration = Duration::from_secs(1);
    pub const VRRP_VERSION: u8 = 3;
    pub const GARP_REPEAT: u32 = 5;
    pub const GARP_INTERVAL: Duration = Duration::from_millis(0);
    pub const GARP_REFRESH: Duration = Duration::from_secs(0);
    /// keepalived's `garp_master_delay` default.
    pub const GARP_MASTER_DELAY: Duration = Duration::from_secs(5);
    pub const WORKERS: super::Workers = super::Workers::Auto;
    pub const ACCESS_LOG_FORMAT: super::AccessLogFormat = super::AccessLogFormat::Combined;
    pub const BALANCE: super::Balance = super::Balance::RoundRobin;
    /// Used when `balance = "hash"` names no `hash_key`.
    pub const HASH_KEY: super::HashKey = super::HashKey::ClientIp;
    /// 0 = unlimited.
    pub const MAX_CONNS: u32 = 0;
    pub const SLOW_START: Duration = Duration::from_secs(0);
    pub const HC_KIND: super::HealthCheckKind = super::HealthCheckKind::Http;
    pub const VRRP_PREEMPT: bool = true;
    pub const VRRP_PREEMPT_DELAY: Duration = Duration::from_secs(0);
    /// Weight of a tracked upstream/script; 0 means "failure puts the
    /// instance into FAULT" (keepalived semantics), non-zero adjusts priority.
    pub const TRACK_WEIGHT: i32 = 0;
    pub const TRACK_SCRIPT_INTERVAL: Duration = Duration::from_secs(1);
    pub const TRACK_SCRIPT_RISE: u32 = 1;
    pub const TRACK_SCRIPT_FALL: u32 = 1;
    /// `track_data_plane`: see [`super::DataPlaneTrack`].
    pub const DATA_PLANE: super::DataPlaneTrack = super::DataPlaneTrack {
        weight: -128,
        stall_after: Duration::from_millis(30),
        starved_after: Duration::from_millis(300),
        fault_after: Duration::from_secs(1),
        fall: 1,
        rise: 10,
    };
    pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
}

/// A fully validated, resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for reload messages).
    pub source: PathBuf,
    /// Problems that do not stop the config from running (a certificate
    /// about to expire), as `FILE:LINE:COL: warning: …`.
    pub warnings: Vec<Diagnostic>,
    pub runtime: RuntimeConfig,
    pub http: HttpConfig,
    pub admin: Option<AdminConfig>,
    pub log: LogConfig,
    pub listeners: Vec<ListenerConfig>,
    /// Indexed by upstream id; listeners and routes refer to upstreams by
    /// index. Shared (`Arc`) so that a snapshot's upstream can hand its
    /// settings to the shards as they are, without copying them.
    pub upstreams: Vec<Arc<UpstreamConfig>>,
    pub vrrp: Vec<VrrpInstanceConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Auto,
    Count(usize),
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub workers: Workers,
    pub control_cpu: Option<usize>,
    pub worker_cpus: Option<Vec<usize>>,
    /// Graceful-stop limit (SIGTERM/SIGINT).
    pub shutdown_timeout: Duration,
}

/// Client-side HTTP limits (section `[http]`).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request head (request line + headers) accepted; bigger is a 431.
    pub max_header_bytes: usize,
    /// Most header fields in one head; more is a 431.
    pub max_headers: usize,
    /// Longest request target; longer is a 414.
    pub max_uri_bytes: usize,
    /// Largest request body (0 = unlimited); larger is a 413. Listeners and
    /// routes may override it.
    pub client_max_body_size: u64,
    /// Time allowed for a whole request head to arrive (slowloris guard) → 408.
    pub client_header_timeout: Duration,
    /// Time allowed between two reads of a request body.
    pub client_body_timeout: Duration,
    /// Idle time of a client keep-alive connection between requests.
    pub keepalive_timeout: Duration,
    /// Connections one shard serves at once; past it, accept waits.
    pub max_connections: usize,
    /// Idle time of an upgraded (`101`) connection: it is closed once no
    /// byte moved either way for this long.
    pub tunnel_timeout: Duration,
    /// Read request bodies before choosing an upstream, up to
    /// `request_buffer_size` (nginx's `proxy_request_buffering`).
    pub request_buffering: bool,
    /// Most body bytes buffered per request; the rest is streamed.
    pub request_buffer_size: usize,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token required by state-changing admin routes (`/reset`).
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Combined,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Access log file; `None` = off (default).
    pub access_log: Option<PathBuf>,
    pub access_log_format: AccessLogFormat,
    /// Record latency histograms (on by default; off only to measure their
    /// cost — counters stay on either way).
    pub latency_histograms: bool,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub listen: SocketAddr,
    /// Default upstream (index into `Config::upstreams`).
    pub upstream: Option<usize>,
    pub routes: Vec<RouteConfig>,
    pub backlog: u32,
    /// Resolved: the listener's own value, else `[http]`'s.
    pub client_max_body_size: u64,
    /// `[listener.tls]`: this listener speaks HTTPS.
    pub tls: Option<Arc<crate::tls::ListenerTls>>,
    /// `proxy_protocol = true`: every connection starts with a PROXY
    /// header (v1 or v2) whose client address replaces the socket's.
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Exact host or `*.example.com`, lower-cased, no port.
    pub host: Option<String>,
    /// Path prefix, starts with `/`.
    pub path_prefix: Option<String>,
    pub upstream: usize,
    /// Resolved: the route's own value, else its listener's.
    pub client_max_body_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    RandomTwo,
    Hash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Uri,
    /// Header name, lower-cased.
    Header(String),
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub balance: Balance,
    pub hash_key: HashKey,
    /// Idle upstream connections kept per shard.
    pub keepalive: usize,
    /// How long an idle upstream connection stays pooled (nginx's upstream
    /// `keepalive_timeout`); 0 = none is kept.
    pub keepalive_timeout: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    pub retries: u32,
    pub servers: Vec<ServerConfig>,
    pub health_check: Option<HealthCheckConfig>,
    /// `send_proxy_protocol`: a PROXY header first on every new connection.
    pub send_proxy_protocol: Option<crate::proto::proxy_protocol::Version>,
    /// `tls = true`: TLS to the servers (see `tls::upstream`).
    pub tls: Option<Arc<crate::tls::upstream::UpstreamTls>>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address as written in the file (host name or IP, with port).
    pub spec: String,
    /// Resolved address. A host name resolving to several addresses yields
    /// several servers, like nginx.
    pub addr: SocketAddr,
    pub weight: u32,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub backup: bool,
    pub down: bool,
    /// 0 = unlimited.
    pub max_conns: u32,
    pub slow_start: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheckKind {
    Http,
    Tcp,
}

#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    pub path: String,
    /// Inclusive range of statuses that count as healthy.
    pub expect_status: (u16, u16),
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// `track_data_plane`: how the shards' progress feeds an instance's priority
/// (see `control::vrrp::liveness`). A shard whose heartbeat has not moved
/// for `stall_after` by its own fault (blocked in a call other than waiting
/// on its ring, or spinning), or for `starved_after` by the host's (waiting
/// for a CPU, or asleep in its ring with its tick timer woken late), makes
/// the data plane *degraded*: after `fall` such checks in a row `weight` is
/// added to the priority, until `rise` good checks in a row. No progress at
/// all for `fault_after` by the shard's own fault, or a shard thread gone,
/// is FAULT. `weight = 0` turns degraded into FAULT as well (keepalived's
/// weight-0 rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPlaneTrack {
    pub weight: i32,
    pub stall_after: Duration,
    pub starved_after: Duration,
    pub fault_after: Duration,
    pub fall: u32,
    pub rise: u32,
}

#[derive(Debug, Clone)]
pub struct TrackUpstream {
    /// The upstream's name: resolved against each snapshot, so a reload
    /// that reorders `[upstream.*]` sections keeps tracking the same one.
    pub upstream: String,
    pub weight: i32,
}

#[derive(Debug, Clone)]
pub struct TrackScript {
    pub script: String,
    pub interval: Duration,
    pub rise: u32,
    pub fall: u32,
    pub weight: i32,
}

#[derive(Debug, Clone)]
pub struct VrrpInstanceConfig {
    pub name: String,
    pub interface: String,
    pub virtual_router_id: u8,
    pub priority: u8,
    pub advert_interval: Duration,
    pub version: u8,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// (address, prefix length)
    pub virtual_ipaddress: Vec<(IpAddr, u8)>,
    pub unicast_peers: Vec<IpAddr>,
    pub unicast_src: Option<IpAddr>,
    pub auth_pass: Option<String>,
    pub track_upstream: Vec<TrackUpstream>,
    pub track_interface: Vec<String>,
    pub track_script: Vec<TrackScript>,
    pub track_data_plane: DataPlaneTrack,
    pub notify: Option<String>,
    pub sync_group: Option<String>,
    pub garp_repeat: u32,
    pub garp_interval: Duration,
    pub garp_refresh: Duration,
    /// A second burst of `garp_repeat` this long after becoming master
    /// (0: none).
    pub garp_master_delay: Duration,
    /// `(key, line, column)` in the file of the keys that make the
    /// instance's identity (and of the section itself as `""`), so that a
    /// reload refusing a change can point at it.
    pub positions: Vec<(&'static str, usize, usize)>,
}

impl VrrpInstanceConfig {
    /// `LINE:COL` of `key` in its file (or of the section), if known.
    pub fn position(&self, key: &str) -> Option<(usize, usize)> {
        let find = |k: &str| self.positions.iter().find(|p| p.0 == k);
        find(key).or_else(|| find("")).map(|p| (p.1, p.2))
    }
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        diagnostics: vec![Diagnostic {
            file: name.clone(),
            line: 1,
            col: 1,
            message: format!("cannot read file: {e}"),
        }],
    })?;
    let mut cfg = parse_str(&text, &name)?;
    cfg.source = path.to_path_buf();
    Ok(cfg)
}

/// Parses and validates TOML text; `file` names it in diagnostics.
pub fn parse_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    parse::parse(text, file)
}

mod parse;

pub use parse::duration::parse_duration;
