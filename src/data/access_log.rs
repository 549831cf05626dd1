//! The access log: nginx `combined` lines or JSON lines, off by default.
//!
//! A shard never writes the file itself. Each request's line is built in
//! the shard's own buffer (the request-dependent half right after the head
//! is decoded, while its bytes are still buffered; status, sizes and times
//! when it ends); every shard tick, or when the buffer passes
//! [`FLUSH_BYTES`], the whole buffer is handed over a channel to one writer
//! thread that does the blocking `write`s. Lines from different shards
//! never interleave because each hand-over holds whole lines.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::AccessLogFormat;
use crate::proto::http1::{Field, FieldKind, RequestHead, Version};

/// A shard hands its buffer over once it holds this much.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// Buffers waiting for the writer; past this (a disk that cannot keep up)
/// lines are dropped and counted rather than ever blocking a shard.
pub const QUEUE: usize = 256;

/// Starts the writer thread for `path`; returns the shards' sender.
pub fn spawn_writer(path: &Path) -> std::io::Result<SyncSender<Vec<u8>>> {
    let file = open(path)?;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || writer(path, file, rx))?;
    Ok(tx)
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn writer(path: PathBuf, mut file: File, rx: Receiver<Vec<u8>>) {
    for buf in rx {
        if buf.is_empty() {
            // Reopen request (log rotation on reload).
            match open(&path) {
                Ok(f) => file = f,
                Err(e) => crate::error!("access log {}: reopen failed: {e}", path.display()),
            }
            continue;
        }
        if let Err(e) = file.write_all(&buf) {
            crate::error!("access log {}: {e}", path.display());
        }
    }
}

/// One shard's access-log buffer.
pub struct AccessLog {
    format: AccessLogFormat,
    buf: RefCell<Vec<u8>>,
    tx: SyncSender<Vec<u8>>,
    /// Lines dropped because the writer fell behind.
    dropped: Cell<u64>,
    /// (unix second, formatted time) cache: one format per second.
    time: RefCell<(u64, String)>,
}

impl AccessLog {
    pub fn new(format: AccessLogFormat, tx: SyncSender<Vec<u8>>) -> AccessLog {
        AccessLog {
            format,
            buf: RefCell::new(Vec::with_capacity(FLUSH_BYTES + 4096)),
            tx,
            time: RefCell::new((0, String::new())),
            dropped: Cell::new(0),
        }
    }

    /// Writes the request-dependent start of a line into `scratch`.
    pub fn begin(
        &self,
        scratch: &mut Vec<u8>,
        client_ip: &[u8],
        buf: &[u8],
        head: &RequestHead,
        fields: &[Field],
        tls: Option<(&str, &str)>,
    ) {
        scratch.clear();
        let field = |name: &[u8]| {
            fields
                .iter()
                .find(|f| f.kind == FieldKind::Other && f.name.get(buf).eq_ignore_ascii_case(name))
                .map_or(&b""[..], |f| f.value.get(buf))
        };
        let version: &[u8] = match head.version {
            Version::Http10 => b"HTTP/1.0",
            Version::Http11 => b"HTTP/1.1",
        };
        let time = self.now_text();
        match self.format {
            AccessLogFormat::Combined => {
                scratch.extend_from_slice(client_ip);
                scratch.extend_from_slice(b" - - [");
                scratch.extend_from_slice(time.as_bytes());
                scratch.extend_from_slice(b"] \"");
                escape_combined(scratch, head.method_span.get(buf));
                scratch.push(b' ');
                escape_combined(scratch, head.target.get(buf));
                scratch.push(b' ');
                scratch.extend_from_slice(version);
                scratch.extend_from_slice(b"\" ");
                // status and size follow; referer and agent are kept in a
                // second part after a NUL separator until `finish`.
                scratch.push(0);
                scratch.extend_from_slice(b" \"");
                escape_combined(scratch, or_dash(field(b"referer")));
                scratch.extend_from_slice(b"\" \"");
                escape_combined(scratch, or_dash(field(b"user-agent")));
                scratch.push(b'"');
            }
            AccessLogFormat::Json => {
                scratch.extend_from_slice(b"{\"time\":\"");
                scratch.extend_from_slice(time.as_bytes());
                scratch.extend_from_slice(b"\",\"remote_addr\":\"");
                scratch.extend_from_slice(client_ip);
                scratch.extend_from_slice(b"\",\"method\":\"");
                escape_json(scratch, head.method_span.get(buf));
                scratch.extend_from_slice(b"\",\"uri\":\"");
                escape_json(scratch, head.target.get(buf));
                scratch.extend_from_slice(b"\",\"protocol\":\"");
                scratch.extend_from_slice(version);
                scratch.extend_from_slice(b"\",\"referer\":\"");
                escape_json(scratch, field(b"referer"));
                scratch.extend_from_slice(b"\",\"user_agent\":\"");
                escape_json(scratch, field(b"user-agent"));
                scratch.push(b'"');
                if let Some((version, cipher)) = tls {
                    // nginx's $ssl_protocol and $ssl_cipher.
                    scratch.extend_from_slice(b",\"ssl_protocol\":\"");
                    scratch.extend_from_slice(version.as_bytes());
                    scratch.extend_from_slice(b"\",\"ssl_cipher\":\"");
                    scratch.extend_from_slice(cipher.as_bytes());
                    scratch.push(b'"');
                }
                scratch.push(0);
            }
        }
    }

    /// Completes the line begun in `scratch` and queues it.
    pub fn finish(
        &self,
        scratch: &[u8],
        status: u16,
        bytes_sent: u64,
        request_time: Duration,
        upstream: Option<&str>,
    ) {
        let Some(split) = scratch.iter().position(|&b| b == 0) else {
            return;
        };
        let (first, rest) = (&scratch[..split], &scratch[split + 1..]);
        let mut b = self.buf.borrow_mut();
        b.extend_from_slice(first);
        let mut num = itoa::Buffer::new();
        match self.format {
            AccessLogFormat::Combined => {
                b.extend_from_slice(num.format(status).as_bytes());
                b.push(b' ');
                b.extend_from_slice(num.format(bytes_sent).as_bytes());
                b.extend_from_slice(rest);
            }
            AccessLogFormat::Json => {
                let _ = write!(
                    b,
                    ",\"status\":{status},\"bytes_sent\":{bytes_sent},\"request_time\":{:.6},\"upstream_addr\":\"{}\"}}",
                    request_time.as_secs_f64(),
                    upstream.unwrap_or("")
                );
            }
        }
        b.push(b'\n');
        if b.len() >= FLUSH_BYTES {
            let full = std::mem::replace(&mut *b, Vec::with_capacity(FLUSH_BYTES + 4096));
            drop(b);
            self.hand_over(full);
        }
    }

    /// Hands buffered lines to the writer thread (every shard tick).
    pub fn flush(&self) {
        let mut b = self.buf.borrow_mut();
        if !b.is_empty() {
            let full = std::mem::replace(&mut *b, Vec::with_capacity(FLUSH_BYTES + 4096));
            drop(b);
            self.hand_over(full);
        }
    }

    /// Queues whole lines for the writer without ever blocking.
    fn hand_over(&self, full: Vec<u8>) {
        match self.tx.try_send(full) {
            Ok(()) => {}
            Err(TrySendError::Full(lost) | TrySendError::Disconnected(lost)) => {
                let n = lost.iter().filter(|&&c| c == b'\n').count() as u64;
                self.dropped.set(self.dropped.get() + n);
                crate::warn!(
                    "access log writer is behind: {} lines dropped so far",
                    self.dropped.get()
                );
            }
        }
    }

    fn now_text(&self) -> std::cell::Ref<'_, String> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        {
            let mut t = self.time.borrow_mut();
            if t.0 != secs || t.1.is_empty() {
                t.0 = secs;
                t.1 = match self.format {
                    AccessLogFormat::Combined => clf_time(secs),
                    AccessLogFormat::Json => iso_time(secs),
                };
            }
        }
        std::cell::Ref::map(self.time.borrow(), |t| &t.1)
    }
}

fn or_dash(v: &[u8]) -> &[u8] {
    if v.is_empty() {
        b"-"
    } else {
        v
    }
}

/// nginx-style: `"`, `\` and bytes outside printable ASCII become `\xHH`.
fn escape_combined(out: &mut Vec<u8>, v: &[u8]) {
    for &c in v {
        if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
            out.extend_from_slice(format!("\\x{c:02X}").as_bytes());
        } else {
            out.push(c);
        }
    }
}

fn escape_json(out: &mut Vec<u8>, v: &[u8]) {
    for &c in v {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(c),
            _ => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `25/Nov/2026:06:31:00 +0000` (UTC).
fn clf_time(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = crate::log::civil(secs);
    format!(
        "{d:02}/{}/{y:04}:{h:02}:{mi:02}:{s:02} +0000",
        MONTHS[(mo - 1) as usize]
    )
}

fn iso_time(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = crate::log::civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http1::{decode_request, Limits};

    fn line(format: AccessLogFormat, raw: &str) -> String {
        line_tls(format, raw, None)
    }

    fn line_tls(format: AccessLogFormat, raw: &str, tls: Option<(&str, &str)>) -> String {
        let (tx, rx) = mpsc::sync_channel(4);
        let log = AccessLog::new(format, tx);
        let mut f = Vec::new();
        let head = decode_request(raw.as_bytes(), &Limits::default(), &mut f)
            .unwrap()
            .unwrap();
        let mut scratch = Vec::new();
        log.begin(&mut scratch, b"192.0.2.1", raw.as_bytes(), &head, &f, tls);
        log.finish(
            &scratch,
            200,
            1234,
            Duration::from_millis(5),
            Some("127.0.0.1:9000"),
        );
        log.flush();
        String::from_utf8(rx.recv().unwrap()).unwrap()
    }

    #[test]
    fn combined_format() {
        let l = line(
            AccessLogFormat::Combined,
            "GET /a?\"b HTTP/1.1\r\nHost: h\r\nUser-Agent: curl/8\r\nReferer: http://r/\r\n\r\n",
        );
        let (before, after) = l.split_once(" - - [").unwrap();
        assert_eq!(before, "192.0.2.1");
        assert!(
            after.ends_with("] \"GET /a?\\x22b HTTP/1.1\" 200 1234 \"http://r/\" \"curl/8\"\n"),
            "{l}"
        );
    }

    #[test]
    fn json_format() {
        let l = line(
            AccessLogFormat::Json,
            "POST /x HTTP/1.0\r\nUser-Agent: a\"b\r\n\r\n",
        );
        let v: serde_json::Value = serde_json::from_str(l.trim_end()).unwrap();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["uri"], "/x");
        assert_eq!(v["protocol"], "HTTP/1.0");
        assert_eq!(v["user_agent"], "a\"b");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes_sent"], 1234);
        assert_eq!(v["upstream_addr"], "127.0.0.1:9000");
        assert!(v.get("ssl_protocol").is_none(), "{l}");
        let l = line_tls(
            AccessLogFormat::Json,
            "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            Some(("TLSv1.3", "TLS13_AES_128_GCM_SHA256")),
        );
        let v: serde_json::Value = serde_json::from_str(l.trim_end()).unwrap();
        assert_eq!(v["ssl_protocol"], "TLSv1.3");
        assert_eq!(v["ssl_cipher"], "TLS13_AES_128_GCM_SHA256");
        assert_eq!(v["status"], 200);
    }

    #[test]
    fn times() {
        assert_eq!(clf_time(1_795_000_000), "18/Nov/2026:11:06:40 +0000");
        assert_eq!(iso_time(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
