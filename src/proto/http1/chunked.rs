//! A streaming scanner for chunked bodies (RFC 9112 §7.1).
//!
//! The proxy forwards chunked bodies as they arrive, so it never needs the
//! whole body: the scanner is fed whatever bytes are buffered and says which
//! of them are chunk data and which are framing, and when the message ends.
//! A relay to an HTTP/1.1 peer ([`ChunkedDecoder::forward`]) re-emits the
//! framing in one canonical form rather than copying it: each size line
//! becomes lowercase hex without leading zeros and without extensions
//! (`0003;a="b"` → `3`), and trailer fields that must not travel in
//! trailers (RFC 9110 §6.5.1, see [`forbidden_in_trailer`]) are left out.
//! So the next hop never has to agree with the proxy on how to read an
//! extension, a quoted string or a run of zeros: it sees only what the
//! proxy itself understood. A relay to an HTTP/1.0 client forwards only the
//! data pieces (de-chunking, trailers dropped).
//!
//! Syntax is strict: a bad size, a bare CR, a missing line end after
//! data, an extension that is not `;name[=token|"quoted"]`, or an oversized
//! extension/trailer section is an error, because a lenient parser here is
//! exactly where request smuggling starts.
//!
//! Line ends are the one thing that depends on who sent the body
//! ([`Sender`], [`accepts_bare_lf`]). A client's chunked request must end
//! every framing line with CRLF: a bare LF is read differently by the
//! servers behind a proxy (one ends the size line there, another takes
//! the LF as part of an extension or of the data), which is the classic
//! chunked smuggling vector, so it is a 400. An upstream's chunked
//! response may end them with a bare LF, as nginx's upstream parser (and
//! many clients) accept: the response head is read that way already, and
//! an upstream's framing cannot smuggle anything past the proxy, because
//! the client never sees it. The relay re-emits every line end as CRLF
//! (size lines and the ends after data and of the message as [`Emit`],
//! kept trailer lines with their line end rewritten), so the client gets
//! well-formed framing either way.
//!
//! A trailer field line is handed out whole (the scanner waits until its
//! LF has arrived), so it can be kept or dropped as one piece. An optional
//! limit on the sum of declared chunk sizes (`client_max_body_size`) is
//! checked at each size line, before any byte of the chunk is forwarded.
//!
//! [`forbidden_in_trailer`]: super::fields::forbidden_in_trailer

/// Longest chunk-size line extension accepted.
pub const MAX_EXT_BYTES: usize = 4096;
/// Largest trailer section accepted.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size {
        digits: u8,
        value: u64,
    },
    /// After the size: an extension (or the whitespace before one).
    Ext {
        len: u16,
        value: u64,
        at: ExtAt,
    },
    SizeLf {
        value: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// Where in `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`
/// an extension scan is (RFC 9112 §7.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtAt {
    /// Whitespace that must be followed by `;`.
    SemiBws,
    /// After `;`: whitespace, then the name's first character.
    NameStart,
    Name,
    /// Whitespace after a name: `;` or `=` must follow.
    NameBws,
    /// After `=`: whitespace, then a token or a quoted string.
    ValStart,
    Token,
    Quoted,
    /// After a backslash inside a quoted string.
    Escape,
    /// Right after the closing quote.
    QuotedEnd,
}

/// Framing the scanner re-emits in canonical form (for [`ChunkedDecoder::forward`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emit {
    /// A size line ended: `{size:x}\r\n`.
    Size(u64),
    /// The CRLF after chunk data, or the one ending the message.
    Crlf,
}

impl Emit {
    fn write(self, out: &mut Vec<u8>) {
        if let Emit::Size(v) = self {
            let digits = (64 - v.leading_zeros()).div_ceil(4).max(1);
            for i in (0..digits).rev() {
                out.push(b"0123456789abcdef"[(v >> (i * 4)) as usize & 0xf]);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// What the bytes consumed by one [`ChunkedDecoder::next`] call were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Chunk data.
    Data,
    /// Size lines, CRLFs, extensions or trailers.
    Framing,
    /// Framing that ended the message: nothing after it belongs to the body.
    Done,
    /// A whole trailer field line that must not be forwarded.
    Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    BadSize,
    SizeOverflow,
    /// A chunk extension that is not `;name[=token|"quoted"]`.
    BadExtension,
    BadLineEnding,
    ExtensionTooLong,
    BadTrailer,
    TrailerTooLarge,
    /// The declared chunk sizes add up to more than the decoder's limit.
    TooLarge,
}

impl ChunkError {
    /// The status a request whose body failed this way is answered with:
    /// 413 over `client_max_body_size`, else 400.
    pub fn status(self) -> u16 {
        match self {
            ChunkError::TooLarge => 413,
            _ => 400,
        }
    }
}

/// Who sent a chunked body: decides how its framing lines may end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A client's request body.
    Client,
    /// An upstream's response body.
    Upstream,
}

/// Whether a framing line of a body from `sender` may end with a bare LF
/// (see the module docs): never in a request, and in a response as nginx
/// reads its upstreams.
pub fn accepts_bare_lf(sender: Sender) -> bool {
    match sender {
        Sender::Client => false,
        Sender::Upstream => true,
    }
}

/// Incremental chunked-body scanner.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// A bare LF ends a framing line ([`accepts_bare_lf`]).
    bare_lf: bool,
    trailer_bytes: usize,
    /// Sum of the chunk sizes seen so far.
    data_total: u64,
    /// Largest allowed `data_total`; 0 = unlimited.
    max_data: u64,
}

impl ChunkedDecoder {
    /// A decoder for a client's request body (strict line ends) that fails
    /// with [`ChunkError::TooLarge`] as soon as a size line takes the body
    /// past `max_data` bytes (0 = unlimited).
    pub fn request(max_data: u64) -> Self {
        Self::new(Sender::Client, max_data)
    }

    /// A decoder for an upstream's response body (a bare LF may end a
    /// line), with no limit.
    pub fn response() -> Self {
        Self::new(Sender::Upstream, 0)
    }

    fn new(sender: Sender, max_data: u64) -> Self {
        ChunkedDecoder {
            state: State::Size {
                digits: 0,
                value: 0,
            },
            bare_lf: accepts_bare_lf(sender),
            trailer_bytes: 0,
            data_total: 0,
            max_data,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes a prefix of `buf` of one kind. Returns how many bytes were
    /// consumed and what they were; `(0, Piece::Framing)` means more input
    /// is needed (or `buf` is empty).
    pub fn next(&mut self, buf: &[u8]) -> Result<(usize, Piece), ChunkError> {
        self.scan(buf, None)
    }

    /// [`next`](Self::next), and when `out` is given, appends what a
    /// pass-through relay sends for the consumed bytes: data as is, kept
    /// trailer lines as is, and the rest of the framing canonical.
    fn scan(
        &mut self,
        buf: &[u8],
        mut out: Option<&mut Vec<u8>>,
    ) -> Result<(usize, Piece), ChunkError> {
        if let State::Data { remaining } = self.state {
            let n = (remaining.min(buf.len() as u64)) as usize;
            let remaining = remaining - n as u64;
            self.state = if remaining == 0 {
                State::DataCr
            } else {
                State::Data { remaining }
            };
            if let Some(o) = out {
                o.extend_from_slice(&buf[..n]);
            }
            return Ok((n, Piece::Data));
        }
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::Data { .. } => return Ok((i, Piece::Framing)),
                State::Done => return Ok((i, Piece::Done)),
                State::TrailerStart if buf[i] != b'\r' && buf[i] != b'\n' => {
                    if i > 0 {
                        // The trailer line is a piece of its own.
                        return Ok((i, Piece::Framing));
                    }
                    let (n, piece) = self.trailer_line(buf)?;
                    if let (Some(o), Piece::Framing, true) = (out, piece, n > 0) {
                        // The line as it came, ended with CRLF whether it
                        // ended so or with a bare LF.
                        let line = &buf[..n - 1];
                        o.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
                        o.extend_from_slice(b"\r\n");
                    }
                    return Ok((n, piece));
                }
                _ => {}
            }
            if let (Some(e), Some(o)) = (self.step(buf[i])?, out.as_deref_mut()) {
                e.write(o);
            }
            i += 1;
        }
        if self.state == State::Done {
            return Ok((i, Piece::Done));
        }
        Ok((i, Piece::Framing))
    }

    /// Consumes as much of `buf` as belongs to the body. Returns the number
    /// of bytes consumed; [`is_done`](Self::is_done) tells whether the body
    /// ended within them. Use this for pass-through relays.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, ChunkError> {
        let mut at = 0;
        while at < buf.len() && !self.is_done() {
            let (n, _) = self.next(&buf[at..])?;
            if n == 0 {
                break;
            }
            at += n;
        }
        Ok(at)
    }

    /// Like [`feed`](Self::feed), and appends to `out` what a pass-through
    /// relay sends for the consumed bytes: the data, the trailer fields that
    /// may be forwarded, and canonical framing (size lines in lowercase hex
    /// without leading zeros or extensions, every line ended with CRLF).
    /// Never longer than the input, but for one byte per bare LF it ended
    /// with.
    pub fn forward(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut at = 0;
        while at < buf.len() && !self.is_done() {
            let (n, _) = self.scan(&buf[at..], Some(out))?;
            if n == 0 {
                break;
            }
            at += n;
        }
        Ok(at)
    }

    /// Like [`feed`](Self::feed), and appends only the chunk data to `out`:
    /// what a body whole in the buffer becomes when it is sent with a
    /// `Content-Length` instead (nginx does this to every buffered chunked
    /// request body; WSGI servers hand an application the body by
    /// `CONTENT_LENGTH`, so a chunked request reaches many of them empty).
    /// Trailer fields are dropped, as they are then.
    pub fn dechunk(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut at = 0;
        while at < buf.len() && !self.is_done() {
            let (n, piece) = self.next(&buf[at..])?;
            if n == 0 {
                break;
            }
            if piece == Piece::Data {
                out.extend_from_slice(&buf[at..at + n]);
            }
            at += n;
        }
        Ok(at)
    }

    /// The sum of the chunk sizes read so far (the body's length once
    /// [`is_done`](Self::is_done)).
    pub fn data_len(&self) -> u64 {
        self.data_total
    }

    /// At the start of a trailer field line: consumes it whole once its LF
    /// is buffered, and says whether it may be forwarded.
    fn trailer_line(&mut self, buf: &[u8]) -> Result<(usize, Piece), ChunkError> {
        let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
            if self.trailer_bytes + buf.len() > MAX_TRAILER_BYTES {
                return Err(ChunkError::TrailerTooLarge);
            }
            return Ok((0, Piece::Framing));
        };
        for &b in &buf[..=lf] {
            // A trailer line emits nothing: it is kept or dropped whole.
            self.step(b)?;
        }
        // The steps validated `name ":" value CRLF`.
        let colon = buf.iter().position(|&b| b == b':').unwrap_or(0);
        let piece = if super::fields::forbidden_in_trailer(&buf[..colon]) {
            Piece::Dropped
        } else {
            Piece::Framing
        };
        Ok((lf + 1, piece))
    }

    /// Advances over one framing byte; says what canonical framing (if
    /// any) that byte completed.
    fn step(&mut self, b: u8) -> Result<Option<Emit>, ChunkError> {
        let mut emit = None;
        self.state = match self.state {
            State::Size { digits, value } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits >= 16 {
                        return Err(ChunkError::SizeOverflow);
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    State::Size {
                        digits: digits + 1,
                        value: value << 4 | d,
                    }
                }
                _ if digits == 0 => return Err(ChunkError::BadSize),
                b'\r' => State::SizeLf { value },
                b'\n' if self.bare_lf => self.size_line_end(value, &mut emit)?,
                b';' => State::Ext {
                    len: 1,
                    value,
                    at: ExtAt::NameStart,
                },
                b' ' | b'\t' => State::Ext {
                    len: 1,
                    value,
                    at: ExtAt::SemiBws,
                },
                _ => return Err(ChunkError::BadSize),
            },
            State::Ext { len, value, at } => {
                if b == b'\r' && ext_may_end(at) {
                    State::SizeLf { value }
                } else if b == b'\n' && self.bare_lf && ext_may_end(at) {
                    self.size_line_end(value, &mut emit)?
                } else {
                    if len as usize >= MAX_EXT_BYTES {
                        return Err(ChunkError::ExtensionTooLong);
                    }
                    State::Ext {
                        len: len + 1,
                        value,
                        at: ext_step(at, b)?,
                    }
                }
            }
            State::SizeLf { value } => match b {
                b'\n' => self.size_line_end(value, &mut emit)?,
                _ => return Err(ChunkError::BadLineEnding),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                b'\n' if self.bare_lf => data_end(&mut emit),
                _ => return Err(ChunkError::BadLineEnding),
            },
            State::DataLf => match b {
                b'\n' => data_end(&mut emit),
                _ => return Err(ChunkError::BadLineEnding),
            },
            State::TrailerStart => match b {
                b'\r' => State::EndLf,
                b'\n' if self.bare_lf => message_end(&mut emit),
                _ if super::fields::is_tchar(b) => {
                    self.count_trailer()?;
                    State::TrailerName
                }
                _ => return Err(ChunkError::BadTrailer),
            },
            State::TrailerName => {
                self.count_trailer()?;
                match b {
                    b':' => State::TrailerValue,
                    _ if super::fields::is_tchar(b) => State::TrailerName,
                    _ => return Err(ChunkError::BadTrailer),
                }
            }
            State::TrailerValue => {
                self.count_trailer()?;
                match b {
                    b'\r' => State::TrailerLf,
                    b'\n' if self.bare_lf => State::TrailerStart,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => State::TrailerValue,
                    _ => return Err(ChunkError::BadTrailer),
                }
            }
            State::TrailerLf => match b {
                b'\n' => State::TrailerStart,
                _ => return Err(ChunkError::BadLineEnding),
            },
            State::EndLf => match b {
                b'\n' => message_end(&mut emit),
                _ => return Err(ChunkError::BadLineEnding),
            },
            State::Data { .. } | State::Done => unreachable!("handled by scan()"),
        };
        Ok(emit)
    }

    /// A size line of `value` ended (its LF): the trailer section after
    /// the last chunk, else the chunk's data, within the body limit.
    fn size_line_end(&mut self, value: u64, emit: &mut Option<Emit>) -> Result<State, ChunkError> {
        *emit = Some(Emit::Size(value));
        if value == 0 {
            return Ok(State::TrailerStart);
        }
        self.data_total = self.data_total.saturating_add(value);
        if self.max_data != 0 && self.data_total > self.max_data {
            return Err(ChunkError::TooLarge);
        }
        Ok(State::Data { remaining: value })
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkError::TrailerTooLarge);
        }
        Ok(())
    }
}

/// The line end after chunk data: the next size line follows.
fn data_end(emit: &mut Option<Emit>) -> State {
    *emit = Some(Emit::Crlf);
    State::Size {
        digits: 0,
        value: 0,
    }
}

/// The empty line that ends the trailer section, and the message.
fn message_end(emit: &mut Option<Emit>) -> State {
    *emit = Some(Emit::Crlf);
    State::Done
}

/// Whether a size line's extension may end (CR or LF) here: after the size
/// digits' whitespace was never followed by `;`, or an extension ends
/// mid-name, mid-whitespace or without a value, it may not.
fn ext_may_end(at: ExtAt) -> bool {
    matches!(at, ExtAt::Name | ExtAt::Token | ExtAt::QuotedEnd)
}

/// One byte of a chunk extension (not its ending CR).
fn ext_step(at: ExtAt, b: u8) -> Result<ExtAt, ChunkError> {
    use super::fields::is_tchar;
    let ws = b == b' ' || b == b'\t';
    Ok(match (at, b) {
        (ExtAt::SemiBws | ExtAt::NameBws | ExtAt::Token | ExtAt::QuotedEnd, b';') => {
            ExtAt::NameStart
        }
        (ExtAt::Name, b';') => ExtAt::NameStart,
        (ExtAt::Name | ExtAt::NameBws, b'=') => ExtAt::ValStart,
        (ExtAt::SemiBws | ExtAt::Token | ExtAt::QuotedEnd, _) if ws => ExtAt::SemiBws,
        (ExtAt::Name | ExtAt::NameBws, _) if ws => ExtAt::NameBws,
        (ExtAt::NameStart, _) if ws => ExtAt::NameStart,
        (ExtAt::ValStart, _) if ws => ExtAt::ValStart,
        (ExtAt::NameStart | ExtAt::Name, _) if is_tchar(b) => ExtAt::Name,
        (ExtAt::ValStart | ExtAt::Token, _) if is_tchar(b) => ExtAt::Token,
        (ExtAt::ValStart, b'"') => ExtAt::Quoted,
        (ExtAt::Quoted, b'"') => ExtAt::QuotedEnd,
        (ExtAt::Quoted, b'\\') => ExtAt::Escape,
        // qdtext: HTAB, SP, VCHAR but `"` and `\`, obs-text.
        (ExtAt::Quoted, b'\t' | 0x20..=0x7e | 0x80..=0xff) => ExtAt::Quoted,
        // quoted-pair: HTAB, SP, VCHAR, obs-text.
        (ExtAt::Escape, b'\t' | 0x20..=0x7e | 0x80..=0xff) => ExtAt::Quoted,
        _ => return Err(ChunkError::BadExtension),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_answer_413_over_the_limit_else_400() {
        use ChunkError::*;
        for (e, status) in [
            (TooLarge, 413),
            (BadSize, 400),
            (SizeOverflow, 400),
            (BadExtension, 400),
            (BadLineEnding, 400),
            (ExtensionTooLong, 400),
            (BadTrailer, 400),
            (TrailerTooLarge, 400),
        ] {
            assert_eq!(e.status(), status, "{e:?}");
        }
    }

    /// Feeds `input` in pieces of `step` bytes; returns (data, consumed).
    fn dechunk(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = ChunkedDecoder::request(0);
        let mut data = Vec::new();
        let mut at = 0;
        let mut avail = 0;
        while !d.is_done() {
            if avail == input.len() && at == avail {
                break;
            }
            avail = (avail + step).min(input.len());
            at += d.dechunk(&input[at..avail], &mut data)?;
        }
        assert!(d.is_done(), "incomplete");
        assert_eq!(d.data_len(), data.len() as u64);
        Ok((data, at))
    }

    #[test]
    fn decodes_any_split() {
        let msg = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..msg.len() {
            let (data, used) = dechunk(msg, step).unwrap();
            assert_eq!(data, b"hello world");
            assert_eq!(&msg[used..], b"NEXT", "step {step}");
        }
    }

    #[test]
    fn feed_stops_at_end() {
        let msg = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1";
        let mut d = ChunkedDecoder::request(0);
        let n = d.feed(msg).unwrap();
        assert!(d.is_done());
        assert_eq!(&msg[n..], b"GET / HTTP/1.1");
    }

    #[test]
    fn rejects_bad_syntax() {
        let bad: [&[u8]; 12] = [
            b"x\r\n",
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"-5\r\n",
            b"5 6\r\n",
            b"0x5\r\n",
            b"0\r\n bad: fold\r\n\r\n",
            b"0\r\nNo-Colon\r\n\r\n",
            b"0\r\n\n",
        ];
        for b in bad {
            let mut d = ChunkedDecoder::request(0);
            assert!(d.feed(b).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn limits() {
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', MAX_EXT_BYTES + 1));
        assert_eq!(
            ChunkedDecoder::request(0).feed(&long_ext),
            Err(ChunkError::ExtensionTooLong)
        );
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"X-Trailer: 0123456789\r\n");
        }
        assert_eq!(
            ChunkedDecoder::request(0).feed(&trailers),
            Err(ChunkError::TrailerTooLarge)
        );
    }

    #[test]
    fn forbidden_trailers_are_dropped_in_any_split() {
        let msg = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nContent-Length: 9\r\nHost: evil\r\nTransfer-Encoding: chunked\r\nX-Other: 2\r\nConnection: close\r\n\r\nNEXT";
        let want: &[u8] = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n";
        for step in 1..msg.len() {
            let mut d = ChunkedDecoder::request(0);
            let mut out = Vec::new();
            let mut at = 0;
            let mut avail = 0;
            while !d.is_done() {
                avail = (avail + step).min(msg.len());
                at += d.forward(&msg[at..avail], &mut out).unwrap();
            }
            assert_eq!(&msg[at..], b"NEXT", "step {step}");
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(want),
                "step {step}"
            );
        }
    }

    /// `forward` on `msg` fed in pieces of `step` bytes: (output, consumed).
    fn forward_split(msg: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = ChunkedDecoder::request(0);
        let mut out = Vec::new();
        let (mut at, mut avail) = (0, 0);
        while !d.is_done() && avail < msg.len() {
            avail = (avail + step).min(msg.len());
            at += d.forward(&msg[at..avail], &mut out)?;
        }
        assert!(
            d.is_done(),
            "incomplete: {:?}",
            String::from_utf8_lossy(msg)
        );
        Ok((out, at))
    }

    #[test]
    fn forwarded_framing_is_canonical_in_any_split() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"3\r\nabc\r\n0\r\n\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
            (b"0003\r\nabc\r\n000\r\n\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
            (
                b"A;name=\"a;b\\\"c\" ; n2 = v2\r\n0123456789\r\n0;last\r\nX-T: 1\r\n\r\n",
                b"a\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
            ),
            (
                b"1 ;x\r\nz\r\n0000000000000000\r\n\r\n",
                b"1\r\nz\r\n0\r\n\r\n",
            ),
            (b"FFFFFFFFFFFFFFFF\r\n", b"ffffffffffffffff\r\n"),
        ];
        for (msg, want) in cases {
            let mut d = ChunkedDecoder::request(0);
            let mut out = Vec::new();
            let n = d.forward(msg, &mut out).unwrap();
            assert_eq!(n, msg.len());
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(want),
                "{:?}",
                String::from_utf8_lossy(msg)
            );
            if !d.is_done() {
                continue;
            }
            for step in 1..msg.len() {
                let (out, used) = forward_split(msg, step).unwrap();
                assert_eq!(used, msg.len());
                assert_eq!(&out[..], *want, "step {step}");
            }
        }
    }

    #[test]
    fn extension_grammar() {
        let ok: &[&[u8]] = &[
            b"1;a\r\nx\r\n0\r\n\r\n",
            b"1;a=b\r\nx\r\n0\r\n\r\n",
            b"1;a=\"\"\r\nx\r\n0\r\n\r\n",
            b"1 ; a = \"q d\" ;b\r\nx\r\n0\r\n\r\n",
            b"1;a=\"\\\"\"\r\nx\r\n0\r\n\r\n",
            b"1;a;b;c=d\r\nx\r\n0\r\n\r\n",
        ];
        for m in ok {
            assert!(
                ChunkedDecoder::request(0).feed(m).is_ok(),
                "{:?}",
                String::from_utf8_lossy(m)
            );
        }
        let bad: &[&[u8]] = &[
            b"1;\r\n",
            b"1; \r\n",
            b"1;a \r\n",
            b"1;a=\r\n",
            b"1;a= \r\n",
            b"1;=b\r\n",
            b"1;a b\r\n",
            b"1;a=b c\r\n",
            b"1;a=\"b\r\n",
            b"1;a=\"b\"c\r\n",
            b"1;a=\"b\rc\"\r\n",
            b"1;a=\"b\nc\"\r\n",
            b"1;a=\"b\x00\"\r\n",
            b"1;a\nx",
            b"1;a\rx\r\n",
            b"1;a\x00\r\n",
            b"1;a(b)\r\n",
            b"1;a=b;\r\n",
            b"1 \r\n",
            b"1\t\r\n",
        ];
        for m in bad {
            assert!(
                ChunkedDecoder::request(0).feed(m).is_err(),
                "{:?}",
                String::from_utf8_lossy(m)
            );
        }
    }

    #[test]
    fn partial_trailer_line_waits_for_its_end() {
        let mut d = ChunkedDecoder::request(0);
        assert_eq!(d.feed(b"0\r\nContent-Le").unwrap(), 3);
        assert!(!d.is_done());
        let mut long = b"0\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_TRAILER_BYTES));
        assert_eq!(
            ChunkedDecoder::request(0).feed(&long),
            Err(ChunkError::TrailerTooLarge)
        );
    }

    #[test]
    fn body_limit_is_checked_at_the_size_line() {
        // Exactly at the limit: fine.
        let mut d = ChunkedDecoder::request(5);
        assert_eq!(d.feed(b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n").unwrap(), 20);
        assert!(d.is_done());
        // One byte over: refused at the size line, before its data.
        let mut d = ChunkedDecoder::request(5);
        assert_eq!(d.feed(b"2\r\nab\r\n").unwrap(), 7);
        assert_eq!(d.feed(b"4\r\n"), Err(ChunkError::TooLarge));
        let mut d = ChunkedDecoder::request(0);
        assert!(d.feed(b"ffffffff\r\n").is_ok());
    }

    #[test]
    fn max_size_ok() {
        let mut d = ChunkedDecoder::request(0);
        assert_eq!(d.feed(b"ffffffffffffffff\r\n").unwrap(), 18);
        assert!(!d.is_done());
    }
    #[test]
    fn only_an_upstream_may_end_framing_lines_with_a_bare_lf() {
        for (sender, bare_lf) in [(Sender::Client, false), (Sender::Upstream, true)] {
            assert_eq!(accepts_bare_lf(sender), bare_lf, "{sender:?}");
        }
    }

    /// [`forward_split`] with a decoder for `sender`.
    fn forward_from(
        sender: Sender,
        msg: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new(sender, 0);
        let mut out = Vec::new();
        let (mut at, mut avail) = (0, 0);
        while !d.is_done() && avail < msg.len() {
            avail = (avail + step).min(msg.len());
            at += d.forward(&msg[at..avail], &mut out)?;
        }
        Ok((out, at, d.is_done()))
    }

    #[test]
    fn bare_lf_line_ends_are_read_in_responses_and_refused_in_requests() {
        // (body, what a relay sends on: canonical CRLF framing)
        let cases: &[(&[u8], &[u8])] = &[
            (b"5\nhello\n0\n\n", b"5\r\nhello\r\n0\r\n\r\n"),
            // each line end alone
            (b"5\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
            (b"5\r\nhello\n0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
            (b"5\r\nhello\r\n0\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
            (b"5\r\nhello\r\n0\r\n\n", b"5\r\nhello\r\n0\r\n\r\n"),
            // after an extension, and trailer lines (a forbidden one dropped)
            (
                b"5;a=\"b\"\nhello\n0;x\nX-T: 1\nHost: evil\nX-U: 2\r\n\n",
                b"5\r\nhello\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n",
            ),
        ];
        for (msg, want) in cases {
            let shown = String::from_utf8_lossy(msg);
            for step in 1..=msg.len() {
                let (out, used, done) = forward_from(Sender::Upstream, msg, step).unwrap();
                assert!(done, "{shown:?} step {step}");
                assert_eq!(used, msg.len(), "{shown:?} step {step}");
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(want),
                    "{shown:?} step {step}"
                );
                assert!(
                    forward_from(Sender::Client, msg, step).is_err(),
                    "a request's bare LF: {shown:?} step {step}"
                );
            }
            // De-chunked (HTTP/1.0 client): only the data.
            let mut data = Vec::new();
            let mut d = ChunkedDecoder::response();
            assert_eq!(d.dechunk(msg, &mut data).unwrap(), msg.len());
            assert!(d.is_done() && data == b"hello", "{shown:?}");
        }
    }

    #[test]
    fn a_response_is_still_strict_but_for_bare_lf() {
        let bad: &[&[u8]] = &[
            // a bare CR anywhere
            b"5\rhello\r\n",
            b"5\r\nhello\rX",
            b"0\r\n\rX",
            b"0\r\nX-T: 1\rX\n",
            // data longer than its size, an LF where a digit must be
            b"5\nhelloX\n",
            b"\n",
            // extensions that may not end where the LF is
            b"1;\n",
            b"1;a=\n",
            b"1 \n",
            // a trailer line without a colon, a folded one
            b"0\nNo-Colon\n\n",
            b"0\n bad: fold\n\n",
        ];
        for m in bad {
            assert!(
                ChunkedDecoder::response().feed(m).is_err(),
                "{:?}",
                String::from_utf8_lossy(m)
            );
        }
    }
}
