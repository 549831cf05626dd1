//! HTTP/1.1 message heads and body framing, sans-IO.
//!
//! The proxy never hands a client's head to a backend as it arrived: it decodes
//! it into spans (offsets into the receive buffer, no copies, no allocation),
//! decides the body framing once with the strict rules of RFC 9112 §6.3, and
//! re-encodes a fresh head from the spans. Anything ambiguous about where a
//! message ends (the raw material of request smuggling) is rejected here,
//! before a single byte is forwarded.
//!
//! - [`request`]: request heads, client-side validation (400/431/501/505).
//! - [`response`]: response heads from upstreams (malformed → 502).
//! - [`fields`]: header classification shared by both directions.
//! - `host`: `Host` and absolute-form authority syntax, and when two name
//!   the same host.
//! - [`chunked`]: a streaming chunked-body scanner (pass-through or de-chunk).
//! - [`encode`]: heads rewritten for the other side, canned error responses.
//! - [`target`]: the canonical form of a path (routing, paths above the root).

pub mod chunked;
pub mod encode;
pub mod fields;
mod host;
pub mod request;
pub mod response;
pub mod target;

pub use chunked::{ChunkError, ChunkedDecoder, Piece};
pub use fields::{Field, FieldKind};
pub use request::{decode_request, Method, RequestError, RequestHead, TargetForm};
pub use response::{decode_response, ResponseError, ResponseHead};

/// Hard cap on header fields in one head, whatever the config says; it sizes
/// the parser's stack array.
pub const MAX_HEADERS_CAP: usize = 256;

/// A byte range inside the buffer a head was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The span of `part`, which must be a sub-slice of `base`.
    #[inline]
    pub(crate) fn of(base: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - base.as_ptr() as usize;
        debug_assert!(start + part.len() <= base.len());
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    #[inline]
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    #[inline]
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// HTTP versions this proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the body of a message is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    Close,
}

/// Limits applied while decoding a request head.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
    /// Longest request target; longer is a 414.
    pub max_uri_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: crate::config::defaults::MAX_HEADER_BYTES,
            max_headers: crate::config::defaults::MAX_HEADERS,
            max_uri_bytes: crate::config::defaults::MAX_URI_BYTES,
        }
    }
}
