//! The PROXY protocol (HAProxy's, versions 1 and 2): reading the header an
//! L4 balancer puts in front of a connection, and writing one in front of
//! an upstream connection. Sans-IO: bytes in, a verdict out.
//!
//! Written here rather than taken from the `ppp` crate: what the accept
//! path needs is one function over the bytes buffered so far that answers
//! "need more", "done, the header is the first `len` bytes" or "invalid,
//! for this reason" — the length is what lets the caller consume exactly
//! the header and not one byte of the HTTP request or TLS ClientHello that
//! follows in the same segment, and the reason is the metrics label. `ppp`
//! (2.x) parses v1 into owned strings (it allocates per header), reports
//! incomplete input and errors through one loose enum, and accepts some
//! inputs the specification forbids; this is ~300 lines, allocates
//! nothing, is strict, and is fuzzed (`fuzz/`, target `proxy_protocol`).
//!
//! Strict means: v1 is `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` with
//! single spaces, addresses of the named family, decimal ports without
//! leading zeros, at most 107 bytes; `PROXY UNKNOWN…\r\n` carries no
//! address. v2 is the 12-byte signature, version 2, command LOCAL or
//! PROXY, a known family and transport, and a length that holds the
//! family's address block; TLVs after it are skipped unread (they are
//! inside the announced length, which is bounded by [`V2_MAX_LEN`]).
//! LOCAL, UNKNOWN and the unspecified family or transport carry no
//! address: the caller keeps the socket's own peer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature (12 bytes).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 header's first bytes.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (the specification's bound).
pub const V1_MAX_LEN: usize = 107;
/// The longest v2 header accepted, TLVs included. The wire format allows
/// 16 + 65535; real balancers send a few hundred bytes at most (AWS NLB's
/// and HAProxy's TLVs included), and a bound keeps a slow client from
/// making the proxy buffer 64 KiB before a request.
pub const V2_MAX_LEN: usize = 16 + 2048;

/// The client and destination addresses a header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    /// The original client.
    pub src: SocketAddr,
    /// The address the client connected to.
    pub dst: SocketAddr,
}

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its length: the bytes after it belong to the connection's protocol.
    pub len: usize,
    /// `None`: LOCAL, UNKNOWN, or no address family; use the socket's peer.
    pub addrs: Option<Addrs>,
}

/// What the bytes so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// A prefix of a header: read more. Every byte seen so far is part of
    /// the header (see [`parse`]).
    Incomplete,
    Done(Header),
}

/// Why a connection on a `proxy_protocol` listener was closed before its
/// header was complete (a metrics label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The connection did not start with a PROXY header at all.
    Missing,
    /// A header, but not a valid one.
    Malformed,
    /// Longer than [`V1_MAX_LEN`] / [`V2_MAX_LEN`].
    TooLong,
    /// The header did not arrive within the listener's timeout.
    Timeout,
    /// The client closed (or reset) the connection mid-header.
    Closed,
}

impl Error {
    pub const ALL: [Error; 5] = [
        Error::Missing,
        Error::Malformed,
        Error::TooLong,
        Error::Timeout,
        Error::Closed,
    ];

    /// Metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Error::Missing => "missing",
            Error::Malformed => "malformed",
            Error::TooLong => "too_long",
            Error::Timeout => "timeout",
            Error::Closed => "closed",
        }
    }

    /// Index into [`Error::ALL`] (counter arrays).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Parses the start of a connection. `Incomplete` is only returned while
/// every byte of `buf` is certainly part of the header (a strict prefix of
/// one), so a caller may consume all of them and wait for more; `Done`
/// tells how many bytes the header has, never more than `buf.len()`.
pub fn parse(buf: &[u8]) -> Result<Parse, Error> {
    if buf.is_empty() {
        return Ok(Parse::Incomplete);
    }
    if buf[0] == V1_PREFIX[0] {
        let n = buf.len().min(V1_PREFIX.len());
        if buf[..n] != V1_PREFIX[..n] {
            return Err(Error::Missing);
        }
        parse_v1(buf)
    } else if buf[0] == V2_SIGNATURE[0] {
        let n = buf.len().min(V2_SIGNATURE.len());
        if buf[..n] != V2_SIGNATURE[..n] {
            return Err(Error::Missing);
        }
        parse_v2(buf)
    } else {
        Err(Error::Missing)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parse, Error> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        // A CR is only allowed as the last byte so far (right before the LF).
        let last = window.len() - 1;
        let ok = |(i, &b): (usize, &u8)| is_v1_byte(b) || (b == b'\r' && i == last);
        if !window.iter().enumerate().all(ok) {
            return Err(Error::Malformed);
        }
        return if buf.len() >= V1_MAX_LEN {
            Err(Error::TooLong)
        } else {
            Ok(Parse::Incomplete)
        };
    };
    if lf < V1_PREFIX.len() + 1 || buf[lf - 1] != b'\r' {
        return Err(Error::Malformed);
    }
    let line = &buf[V1_PREFIX.len()..lf - 1];
    if line.iter().any(|&b| !is_v1_byte(b)) {
        return Err(Error::Malformed);
    }
    let len = lf + 1;
    if let Some(rest) = line.strip_prefix(b"UNKNOWN") {
        // Whatever follows UNKNOWN is to be ignored (but it is one field
        // or a space-separated rest, never glued to the word).
        return if rest.is_empty() || rest[0] == b' ' {
            Ok(Parse::Done(Header { len, addrs: None }))
        } else {
            Err(Error::Malformed)
        };
    }
    let mut f = line.split(|&b| b == b' ');
    let (proto, src, dst, sport, dport) = (f.next(), f.next(), f.next(), f.next(), f.next());
    let (Some(proto), Some(src), Some(dst), Some(sport), Some(dport), None) =
        (proto, src, dst, sport, dport, f.next())
    else {
        return Err(Error::Malformed);
    };
    let v6 = match proto {
        b"TCP4" => false,
        b"TCP6" => true,
        _ => return Err(Error::Malformed),
    };
    let ip = |s: &[u8]| -> Result<IpAddr, Error> {
        let s = std::str::from_utf8(s).map_err(|_| Error::Malformed)?;
        if v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        }
        .map_err(|_| Error::Malformed)
    };
    let addrs = Addrs {
        src: SocketAddr::new(ip(src)?, port(sport)?),
        dst: SocketAddr::new(ip(dst)?, port(dport)?),
    };
    Ok(Parse::Done(Header {
        len,
        addrs: Some(addrs),
    }))
}

/// Printable ASCII and space: what a v1 line may hold.
fn is_v1_byte(b: u8) -> bool {
    (b' '..=b'~').contains(&b)
}

/// A decimal port, 0..=65535, no sign, no leading zero.
fn port(s: &[u8]) -> Result<u16, Error> {
    if s.is_empty() || s.len() > 5 || (s.len() > 1 && s[0] == b'0') {
        return Err(Error::Malformed);
    }
    let mut v: u32 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return Err(Error::Malformed);
        }
        v = v * 10 + u32::from(b - b'0');
    }
    u16::try_from(v).map_err(|_| Error::Malformed)
}

const V2_FIXED: usize = 16;
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;
const T_STREAM: u8 = 0x1;
const T_DGRAM: u8 = 0x2;

fn parse_v2(buf: &[u8]) -> Result<Parse, Error> {
    if buf.len() > V2_SIGNATURE.len() {
        let ver_cmd = buf[12];
        if ver_cmd >> 4 != 2 || !matches!(ver_cmd & 0xf, CMD_LOCAL | CMD_PROXY) {
            return Err(Error::Malformed);
        }
    }
    if buf.len() > 13 {
        let fam = buf[13];
        if fam >> 4 > AF_UNIX || fam & 0xf > T_DGRAM {
            return Err(Error::Malformed);
        }
    }
    if buf.len() < V2_FIXED {
        return Ok(Parse::Incomplete);
    }
    let body = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = V2_FIXED + body;
    let (cmd, family, transport) = (buf[12] & 0xf, buf[13] >> 4, buf[13] & 0xf);
    let need = match family {
        AF_INET => 12,
        AF_INET6 => 36,
        AF_UNIX => 216,
        _ => 0,
    };
    // LOCAL ignores the address block, whatever it says.
    if cmd == CMD_PROXY && body < need {
        return Err(Error::Malformed);
    }
    if len > V2_MAX_LEN {
        return Err(Error::TooLong);
    }
    if buf.len() < len {
        return Ok(Parse::Incomplete);
    }
    let a = &buf[V2_FIXED..len];
    let addrs = match (cmd, family, transport) {
        (CMD_PROXY, AF_INET, T_STREAM) => {
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            Some(Addrs {
                src: SocketAddr::new(ip(0), be16(a, 8)),
                dst: SocketAddr::new(ip(4), be16(a, 10)),
            })
        }
        (CMD_PROXY, AF_INET6, T_STREAM) => {
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            Some(Addrs {
                src: SocketAddr::new(ip(0), be16(a, 32)),
                dst: SocketAddr::new(ip(16), be16(a, 34)),
            })
        }
        // LOCAL (a health check from the balancer itself), UNSPEC, UNIX
        // sockets and datagrams: nothing usable as a TCP client address.
        _ => None,
    };
    Ok(Parse::Done(Header { len, addrs }))
}

fn be16(a: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([a[o], a[o + 1]])
}

/// The header version `[upstream.X] send_proxy_protocol` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Appends the header announcing a connection from `src` to `dst`. Mixed
/// families are both written as IPv6 (IPv4 as `::ffff:a.b.c.d`), since a
/// header has one family.
pub fn encode(v: Version, src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    let (s, d) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
        (s, d) => (IpAddr::V6(to_v6(s)), IpAddr::V6(to_v6(d))),
    };
    match v {
        Version::V1 => {
            use std::io::Write;
            let fam = if s.is_ipv4() { "TCP4" } else { "TCP6" };
            let _ = write!(out, "PROXY {fam} {s} {d} {} {}\r\n", src.port(), dst.port());
        }
        Version::V2 => {
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x20 | CMD_PROXY);
            match (s, d) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(AF_INET << 4 | T_STREAM);
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(AF_INET6 << 4 | T_STREAM);
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&to_v6(s).octets());
                    out.extend_from_slice(&to_v6(d).octets());
                }
            }
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
        }
    }
}

/// Appends a header that carries no client: v1 `PROXY UNKNOWN`, v2 the
/// `LOCAL` command. For connections the proxy makes on its own behalf
/// (health checks), which a backend requiring the header must still accept.
pub fn encode_local(v: Version, out: &mut Vec<u8>) {
    match v {
        Version::V1 => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
        Version::V2 => {
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x20 | CMD_LOCAL);
            out.push(0);
            out.extend_from_slice(&0u16.to_be_bytes());
        }
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_headers_parse_back_without_an_address() {
        for v in [Version::V1, Version::V2] {
            let mut out = Vec::new();
            encode_local(v, &mut out);
            let n = out.len();
            out.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(
                parse(&out),
                Ok(Parse::Done(Header {
                    len: n,
                    addrs: None
                })),
                "{v:?}"
            );
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn done(len: usize, src: &str, dst: &str) -> Result<Parse, Error> {
        Ok(Parse::Done(Header {
            len,
            addrs: Some(Addrs {
                src: sa(src),
                dst: sa(dst),
            }),
        }))
    }

    #[test]
    fn v1_table() {
        let t4 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        let t6 = b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
        let cases: &[(&[u8], Result<Parse, Error>)] = &[
            (t4, done(t4.len(), "192.0.2.1:56324", "198.51.100.2:443")),
            (t6, done(t6.len(), "[2001:db8::1]:1", "[::1]:65535")),
            (
                b"PROXY UNKNOWN\r\n",
                Ok(Parse::Done(Header {
                    len: 15,
                    addrs: None,
                })),
            ),
            (
                b"PROXY UNKNOWN ffff::1 ::1 1 2\r\nGET",
                Ok(Parse::Done(Header {
                    len: 31,
                    addrs: None,
                })),
            ),
            (b"", Ok(Parse::Incomplete)),
            (b"PRO", Ok(Parse::Incomplete)),
            (b"PROXY TCP4 1.2.3.4", Ok(Parse::Incomplete)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", Ok(Parse::Incomplete)),
            (b"GET / HTTP/1.1\r\n", Err(Error::Missing)),
            (b"PRX", Err(Error::Missing)),
            (b"\x16\x03\x01", Err(Error::Missing)),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", Err(Error::Malformed)),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
                Err(Error::Malformed),
            ),
            (
                b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
                Err(Error::Malformed),
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", Err(Error::Malformed)),
            (b"PROXY TCP4 ::1 ::1 1 2\r\n", Err(Error::Malformed)),
            (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", Err(Error::Malformed)),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
                Err(Error::Malformed),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
                Err(Error::Malformed),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
                Err(Error::Malformed),
            ),
            (
                b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
                Err(Error::Malformed),
            ),
            (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", Err(Error::Malformed)),
            (b"PROXY UNKNOWNX\r\n", Err(Error::Malformed)),
            (b"PROXY \r\n", Err(Error::Malformed)),
            (
                b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
                Err(Error::Malformed),
            ),
            (b"PROXY TCP4 1.2.3.4\x00", Err(Error::Malformed)),
            (b"PROXY TCP4 1.2.3.4\r5", Err(Error::Malformed)),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn v1_length_bound() {
        // 107 bytes exactly is fine (UNKNOWN with padding), 108 is not.
        let mut ok = b"PROXY UNKNOWN ".to_vec();
        ok.resize(105, b'x');
        ok.extend_from_slice(b"\r\n");
        assert_eq!(ok.len(), V1_MAX_LEN);
        assert!(matches!(parse(&ok), Ok(Parse::Done(h)) if h.len == 107));
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(106, b'x');
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), Err(Error::TooLong));
        assert_eq!(parse(&long[..107]), Err(Error::TooLong));
        assert_eq!(parse(&long[..106]), Ok(Parse::Incomplete));
    }

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn v2_table() {
        let inet = [192, 0, 2, 1, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb];
        let mut inet_tlv = inet.to_vec();
        inet_tlv.extend_from_slice(&[0x04, 0x00, 0x03, b'a', b'b', b'c']); // a NOOP TLV
        let mut inet6 = vec![0u8; 36];
        inet6[15] = 1; // ::1
        inet6[16] = 0x20;
        inet6[17] = 0x01; // 2001::
        inet6[32..36].copy_from_slice(&[0, 80, 0, 81]);
        let cases: Vec<(Vec<u8>, Result<Parse, Error>)> = vec![
            (
                v2(1, 0x11, &inet),
                done(28, "192.0.2.1:56324", "10.0.0.1:443"),
            ),
            (
                v2(1, 0x11, &inet_tlv),
                done(34, "192.0.2.1:56324", "10.0.0.1:443"),
            ),
            (v2(1, 0x21, &inet6), done(52, "[::1]:80", "[2001::]:81")),
            // LOCAL: whatever the block, no address.
            (
                v2(0, 0x00, &[]),
                Ok(Parse::Done(Header {
                    len: 16,
                    addrs: None,
                })),
            ),
            (
                v2(0, 0x11, &[]),
                Ok(Parse::Done(Header {
                    len: 16,
                    addrs: None,
                })),
            ),
            (
                v2(1, 0x00, &[1, 2, 3]),
                Ok(Parse::Done(Header {
                    len: 19,
                    addrs: None,
                })),
            ),
            (
                v2(1, 0x12, &inet),
                Ok(Parse::Done(Header {
                    len: 28,
                    addrs: None,
                })),
            ),
            (
                v2(1, 0x31, &[0u8; 216]),
                Ok(Parse::Done(Header {
                    len: 232,
                    addrs: None,
                })),
            ),
            (v2(1, 0x11, &inet[..11]), Err(Error::Malformed)),
            (v2(1, 0x21, &inet6[..35]), Err(Error::Malformed)),
            (v2(2, 0x11, &inet), Err(Error::Malformed)),
            (v2(1, 0x41, &inet), Err(Error::Malformed)),
            (v2(1, 0x13, &inet), Err(Error::Malformed)),
            (v2(1, 0x11, &[0u8; V2_MAX_LEN - 15]), Err(Error::TooLong)),
            (
                {
                    let mut v = v2(1, 0x11, &inet);
                    v[12] = 0x11; // version 1 in a v2 header
                    v
                },
                Err(Error::Malformed),
            ),
            (V2_SIGNATURE[..5].to_vec(), Ok(Parse::Incomplete)),
            (b"\r\n\r\n\0\r\nQUIX".to_vec(), Err(Error::Missing)),
            (b"\r\n".to_vec(), Ok(Parse::Incomplete)),
        ];
        for (input, want) in cases {
            assert_eq!(parse(&input), want, "{input:02x?}");
        }
        // The longest accepted, and a prefix of it.
        let max = v2(1, 0x11, &[0u8; V2_MAX_LEN - 16]);
        assert!(matches!(parse(&max), Ok(Parse::Done(h)) if h.len == V2_MAX_LEN));
        assert_eq!(parse(&max[..V2_MAX_LEN - 1]), Ok(Parse::Incomplete));
    }

    #[test]
    fn every_prefix_is_incomplete_and_trailing_bytes_are_not_consumed() {
        let mut headers = Vec::new();
        for v in [Version::V1, Version::V2] {
            for (s, d) in [
                ("203.0.113.7:40000", "10.1.2.3:8443"),
                ("[2001:db8::7]:1", "[::1]:2"),
                ("203.0.113.7:40000", "[::1]:2"),
            ] {
                let mut h = Vec::new();
                encode(v, sa(s), sa(d), &mut h);
                headers.push((h, sa(s), sa(d)));
            }
        }
        for (h, s, d) in headers {
            for n in 0..h.len() {
                assert_eq!(parse(&h[..n]), Ok(Parse::Incomplete), "{:?}", &h[..n]);
            }
            for tail in [&b""[..], b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00"] {
                let mut all = h.clone();
                all.extend_from_slice(tail);
                let Ok(Parse::Done(got)) = parse(&all) else {
                    panic!("{all:?}")
                };
                assert_eq!(got.len, h.len());
                let a = got.addrs.unwrap();
                // Mixed families come back as IPv6 (v4-mapped).
                if s.is_ipv4() == d.is_ipv4() {
                    assert_eq!((a.src, a.dst), (s, d));
                } else {
                    assert_eq!(a.src.port(), s.port());
                    assert_eq!(a.dst, d);
                }
            }
        }
    }

    #[test]
    fn encode_matches_the_specification_bytes() {
        let mut v1 = Vec::new();
        encode(
            Version::V1,
            sa("192.0.2.1:56324"),
            sa("10.0.0.1:443"),
            &mut v1,
        );
        assert_eq!(v1, b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\n");
        let mut v2b = Vec::new();
        encode(
            Version::V2,
            sa("192.0.2.1:56324"),
            sa("10.0.0.1:443"),
            &mut v2b,
        );
        assert_eq!(
            v2b,
            v2(
                1,
                0x11,
                &[192, 0, 2, 1, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb]
            )
        );
    }

    #[test]
    fn labels_are_distinct_and_indexed() {
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(
                Error::ALL.iter().filter(|x| x.label() == e.label()).count(),
                1
            );
        }
    }
}
