//! Response-head decoding for what upstream servers send back.
//!
//! An upstream is trusted more than a client but not blindly: a head that
//! cannot be framed unambiguously is a 502 for the client and the upstream
//! connection is never reused. Body framing follows RFC 9112 §6.3 in order:
//! HEAD / 1xx / 204 / 304 have no body, then `Transfer-Encoding`, then
//! `Content-Length`, else the body runs until the upstream closes.
//!
//! Also refused (502): a status outside 100–599 (RFC 9110 §15), any
//! `Transfer-Encoding` in an HTTP/1.0 response (RFC 9112 §6.1: the framing
//! is faulty, whatever it says), and a `101` without the `Upgrade` field
//! that must name the new protocol (RFC 9110 §15.2.2).

use std::mem::MaybeUninit;

use super::fields::{self, classify, ConnectionOpts, Field, FieldKind, FramingError};
use super::{Framing, Span, Version, MAX_HEADERS_CAP};

/// A decoded response head; spans point into the buffer it came from.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead {
    pub head_len: usize,
    pub status: u16,
    pub version: Version,
    /// The reason phrase (may be empty).
    pub reason: Span,
    pub framing: Framing,
    pub conn: ConnectionOpts,
    /// The `Content-Length` value, when the fields carry one (all of them
    /// agreeing: `5` twice or `5, 5` is 5). The encoder sends it once.
    pub content_length: Option<u64>,
}

impl ResponseHead {
    /// Whether the upstream lets the connection be reused afterwards
    /// (framing permitting).
    pub fn keep_alive(&self) -> bool {
        let by_version = match self.version {
            Version::Http11 => !self.conn.close,
            Version::Http10 => self.conn.keep_alive && !self.conn.close,
        };
        by_version && self.framing != Framing::Close
    }

    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

/// Why a response head was refused (502 for the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    Malformed,
    HeadTooLarge,
    Framing(FramingError),
}

/// Decodes a response head from the start of `buf`. `head_request`: the
/// request was a HEAD (no body whatever the fields say).
pub fn decode_response(
    buf: &[u8],
    max_head_bytes: usize,
    head_request: bool,
    fields: &mut Vec<Field>,
) -> Result<Option<ResponseHead>, ResponseError> {
    let mut storage: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_CAP] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let mut res = httparse::Response::new(&mut []);
    let status = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut storage,
    ) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::HeadTooLarge),
        Err(_) => return Err(ResponseError::Malformed),
    };
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            return if buf.len() >= max_head_bytes {
                Err(ResponseError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
    };
    let (Some(code), Some(minor)) = (res.code, res.version) else {
        return Err(ResponseError::Malformed);
    };
    if !(100..=599).contains(&code) {
        return Err(ResponseError::Malformed);
    }
    // No reason phrase (`HTTP/1.1 200\r\n`) is legal: an empty span, never
    // a span of a string that is not in `buf`.
    let reason = match res.reason {
        Some(r) if !r.is_empty() => Span::of(buf, r.as_bytes()),
        _ => Span::default(),
    };
    fields.clear();
    for h in res.headers.iter() {
        fields.push(Field {
            name: Span::of(buf, h.name.as_bytes()),
            value: Span::of(buf, h.value),
            kind: classify(h.name.as_bytes()),
        });
    }
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    let bodiless = head_request || (100..200).contains(&code) || code == 204 || code == 304;
    if code == 101 && !fields.iter().any(|f| f.kind == FieldKind::Upgrade) {
        return Err(ResponseError::Malformed);
    }
    let te = fields::transfer_encoding(buf, fields).map_err(ResponseError::Framing)?;
    if te.is_some() && version == Version::Http10 {
        return Err(ResponseError::Framing(FramingError::BadTransferEncoding));
    }
    let cl = fields::content_length(buf, fields).map_err(ResponseError::Framing)?;
    let framing = if bodiless {
        Framing::None
    } else {
        match (te, cl) {
            (Some(_), Some(_)) => return Err(ResponseError::Framing(FramingError::BothLengths)),
            (Some(true), None) => Framing::Chunked,
            (Some(false), None) | (None, None) => Framing::Close,
            (None, Some(0)) => Framing::None,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    let conn = fields::connection_opts(buf, fields);
    Ok(Some(ResponseHead {
        head_len,
        status: code,
        version,
        reason,
        framing,
        conn,
        content_length: cl,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str, head: bool) -> Result<Option<ResponseHead>, ResponseError> {
        decode_response(s.as_bytes(), 16384, head, &mut Vec::new())
    }

    #[test]
    fn framings() {
        let f = |s: &str, head: bool| dec(s, head).unwrap().unwrap().framing;
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            Framing::Length(5)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Framing::None
        );
        assert_eq!(f("HTTP/1.1 204 No Content\r\n\r\n", false), Framing::None);
        assert_eq!(
            f(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            ),
            Framing::None
        );
        assert_eq!(f("HTTP/1.1 100 Continue\r\n\r\n", false), Framing::None);
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Framing::Chunked
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n", false), Framing::Close);
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            Framing::Close
        );
    }

    #[test]
    fn keep_alive_rules() {
        let k = |s: &str| dec(s, false).unwrap().unwrap().keep_alive();
        assert!(k("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!k(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!k("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(k(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!k("HTTP/1.1 200 OK\r\n\r\n"));
    }

    #[test]
    fn missing_reason_phrase_is_an_empty_span() {
        for raw in [
            "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.0 110\n\n\x04",
            "HTTP/1.1 204 \r\n\r\n",
        ] {
            let mut f = Vec::new();
            let h = decode_response(raw.as_bytes(), 16384, false, &mut f)
                .unwrap()
                .unwrap();
            assert!(h.reason.get(raw.as_bytes()).is_empty(), "{raw:?}");
        }
    }

    #[test]
    fn repeated_identical_lengths_are_one_value() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
        ] {
            let h = dec(raw, false).unwrap().unwrap();
            assert_eq!(h.framing, Framing::Length(5));
            assert_eq!(h.content_length, Some(5));
        }
        let h = dec(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.framing, h.content_length), (Framing::None, Some(7)));
    }

    #[test]
    fn malformed() {
        assert!(dec(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        )
        .is_err());
        assert!(dec(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        )
        .is_err());
        assert!(dec("HTTX/1.1 200 OK\r\n\r\n", false).is_err());
        for bad in [
            "HTTP/1.1 600 X\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 999 X\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.0 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n",
        ] {
            assert!(dec(bad, false).is_err(), "{bad:?}");
        }
        for good in [
            "HTTP/1.1 599 X\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert!(dec(good, false).unwrap().is_some(), "{good:?}");
        }
        assert!(dec("HTTP/1.1 2000 OK\r\n\r\n", false).is_err());
        assert!(dec("HTTP/1.1 200 OK\r\nContent", false).unwrap().is_none());
    }
}
