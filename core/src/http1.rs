//! Socket-free HTTP/1.1 message heads and body framing (RFC 9112).
//!
//! The dataplane reads bytes into a reusable buffer and asks this module what
//! they mean: [`parse_request`] and [`parse_response`] turn a head into byte
//! ranges ([`Span`]s) into that buffer, so nothing is copied and the head can
//! be re-emitted with some fields dropped or added; [`ChunkedDecoder`] walks a
//! chunked body so a proxy can forward it verbatim while knowing where it ends.

mod chunked;

pub use chunked::{ChunkedDecoder, InvalidChunk};

use std::mem::MaybeUninit;

/// Most header fields accepted in one head; more answer 431.
pub const MAX_HEADERS: usize = 128;

/// A byte range into the buffer a head was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    fn of(buf: &[u8], part: &[u8]) -> Self {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Self {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    /// The bytes this span covers in `buf`.
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    /// The text this span covers (heads are checked to be visible ASCII or
    /// obs-text; names and targets are ASCII).
    pub fn str<'a>(&self, buf: &'a [u8]) -> &'a str {
        std::str::from_utf8(self.get(buf)).unwrap_or("")
    }
}

/// One header field of a parsed head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSpan {
    /// Field name.
    pub name: Span,
    /// Field value, without surrounding whitespace.
    pub value: Span,
    /// Hop-by-hop: a proxy must not forward it (RFC 9110 §7.6.1).
    pub hop_by_hop: bool,
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// A parsed request head, as spans into the read buffer.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    /// Method token.
    pub method: Span,
    /// Request target as sent.
    pub target: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Every header field, in order.
    pub headers: Vec<HeaderSpan>,
    /// Length of the head, final CRLF included.
    pub len: usize,
    /// Body framing.
    pub body: Option<BodyKind>,
    /// The Host field's value.
    pub host: Option<Span>,
    /// Whether the connection may be reused after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
    pub upgrade: bool,
}

/// A parsed response head.
#[derive(Debug, Clone, Default)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Every header field, in order.
    pub headers: Vec<HeaderSpan>,
    /// Length of the head.
    pub len: usize,
    /// Body framing, given the request method.
    pub body: Option<BodyKind>,
    /// Whether the server lets the connection be reused.
    pub keep_alive: bool,
}

/// Why a head was refused. Each maps to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHead {
    /// Syntax error or a forbidden combination (400).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// More header fields than [`MAX_HEADERS`] (431).
    #[error("too many header fields")]
    TooManyHeaders,
    /// A transfer coding other than chunked (501 for requests).
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
}

impl InvalidHead {
    /// The status a server answers with.
    pub fn status(self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            Self::TooManyHeaders => 431,
            Self::UnsupportedTransferCoding => 501,
        }
    }
}

fn map_httparse(e: httparse::Error) -> InvalidHead {
    match e {
        httparse::Error::TooManyHeaders => InvalidHead::TooManyHeaders,
        httparse::Error::HeaderName => InvalidHead::Malformed("invalid header name"),
        httparse::Error::HeaderValue => InvalidHead::Malformed("invalid header value"),
        httparse::Error::NewLine => InvalidHead::Malformed("invalid line ending"),
        httparse::Error::Status => InvalidHead::Malformed("invalid status"),
        httparse::Error::Token => InvalidHead::Malformed("invalid token"),
        httparse::Error::Version => InvalidHead::Malformed("invalid version"),
    }
}

/// Framing facts gathered from the header fields.
#[derive(Default)]
struct Fields {
    content_length: Option<u64>,
    chunked: bool,
    transfer_encoding: bool,
    close: bool,
    keep_alive_token: bool,
    upgrade_token: bool,
    upgrade_field: bool,
    expect_continue: bool,
    host: Option<Span>,
    hosts: u32,
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Collects spans and framing facts from httparse's headers.
fn collect(
    buf: &[u8],
    parsed: &[httparse::Header<'_>],
    out: &mut Vec<HeaderSpan>,
) -> Result<Fields, InvalidHead> {
    let mut f = Fields::default();
    out.clear();
    for h in parsed {
        let name = h.name.as_bytes();
        let value = trim(h.value);
        let hop = HOP_BY_HOP.iter().any(|n| eq(name, n));
        if eq(name, "content-length") {
            // RFC 9112 §6.3: a list of identical values may be accepted;
            // anything else is unrecoverable.
            for part in value.split(|&b| b == b',') {
                let part = trim(part);
                if part.is_empty() || part.len() > 18 || !part.iter().all(u8::is_ascii_digit) {
                    return Err(InvalidHead::Malformed("invalid content-length"));
                }
                let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                if f.content_length.is_some_and(|old| old != n) {
                    return Err(InvalidHead::Malformed("conflicting content-length"));
                }
                f.content_length = Some(n);
            }
        } else if eq(name, "transfer-encoding") {
            f.transfer_encoding = true;
            for coding in value.split(|&b| b == b',') {
                let coding = trim(coding);
                if coding.is_empty() {
                    continue;
                }
                if f.chunked {
                    // Chunked must be the final coding (RFC 9112 §6.1).
                    return Err(InvalidHead::Malformed("chunked is not the final coding"));
                }
                if eq(coding, "chunked") {
                    f.chunked = true;
                } else {
                    return Err(InvalidHead::UnsupportedTransferCoding);
                }
            }
        } else if eq(name, "connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                f.close |= eq(token, "close");
                f.keep_alive_token |= eq(token, "keep-alive");
                f.upgrade_token |= eq(token, "upgrade");
            }
        } else if eq(name, "upgrade") {
            f.upgrade_field = true;
        } else if eq(name, "expect") {
            f.expect_continue |= eq(value, "100-continue");
        } else if eq(name, "host") {
            f.hosts += 1;
            f.host = Some(Span::of(buf, value));
        }
        out.push(HeaderSpan {
            name: Span::of(buf, name),
            value: Span::of(buf, value),
            hop_by_hop: hop,
        });
    }
    mark_connection_options(buf, parsed, out);
    Ok(f)
}

/// Fields a proxy never forwards (RFC 9110 §7.6.1), besides those the
/// Connection field names.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Marks fields named by Connection options as hop-by-hop.
fn mark_connection_options(buf: &[u8], parsed: &[httparse::Header<'_>], out: &mut [HeaderSpan]) {
    for h in parsed
        .iter()
        .filter(|h| eq(h.name.as_bytes(), "connection"))
    {
        for token in h.value.split(|&b| b == b',') {
            let token = trim(token);
            if token.is_empty() {
                continue;
            }
            for span in out.iter_mut() {
                if span.name.get(buf).eq_ignore_ascii_case(token) {
                    span.hop_by_hop = true;
                }
            }
        }
    }
}

/// Parses a request head at the start of `buf`. `Ok(false)`: incomplete.
pub fn parse_request(buf: &[u8], head: &mut RequestHead) -> Result<bool, InvalidHead> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
        .map_err(map_httparse)?;
    let httparse::Status::Complete(len) = status else {
        return Ok(false);
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(InvalidHead::Malformed("incomplete request line"));
    };
    let f = collect(buf, req.headers, &mut head.headers)?;
    if f.transfer_encoding && f.content_length.is_some() {
        // Both framings at once is the request-smuggling pattern; refuse.
        return Err(InvalidHead::Malformed(
            "both transfer-encoding and content-length",
        ));
    }
    if f.transfer_encoding && !f.chunked {
        return Err(InvalidHead::Malformed("transfer-encoding without chunked"));
    }
    if version == 1 && f.hosts != 1 {
        // RFC 9112 §3.2: exactly one Host in HTTP/1.1.
        return Err(InvalidHead::Malformed("missing or repeated host"));
    }
    if f.hosts > 1 {
        return Err(InvalidHead::Malformed("repeated host"));
    }
    head.method = Span::of(buf, method.as_bytes());
    head.target = Span::of(buf, path.as_bytes());
    head.minor_version = version;
    head.len = len;
    head.host = f.host;
    head.body = Some(if f.chunked {
        BodyKind::Chunked
    } else {
        match f.content_length {
            Some(0) | None => BodyKind::Empty,
            Some(n) => BodyKind::Length(n),
        }
    });
    head.keep_alive = if version == 1 {
        !f.close
    } else {
        f.keep_alive_token && !f.close
    };
    head.expect_continue = f.expect_continue && version == 1;
    head.upgrade = f.upgrade_token && f.upgrade_field;
    Ok(true)
}

/// Parses a response head at the start of `buf`, for a request whose method
/// was HEAD if `head_request`. `Ok(false)`: incomplete.
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
    head: &mut ResponseHead,
) -> Result<bool, InvalidHead> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
        .map_err(map_httparse)?;
    let httparse::Status::Complete(len) = status else {
        return Ok(false);
    };
    let (Some(code), Some(version)) = (res.code, res.version) else {
        return Err(InvalidHead::Malformed("incomplete status line"));
    };
    let f = collect(buf, res.headers, &mut head.headers)?;
    head.status = code;
    head.reason = res
        .reason
        .map(|r| Span::of(buf, r.as_bytes()))
        .unwrap_or_default();
    head.minor_version = version;
    head.len = len;
    // RFC 9112 §6.3: HEAD, 1xx, 204 and 304 never carry a body; chunked wins
    // over Content-Length; otherwise the body runs until close.
    head.body = Some(
        if head_request || (100..200).contains(&code) || code == 204 || code == 304 {
            BodyKind::Empty
        } else if f.chunked {
            BodyKind::Chunked
        } else if f.transfer_encoding {
            BodyKind::UntilClose
        } else {
            match f.content_length {
                Some(0) => BodyKind::Empty,
                Some(n) => BodyKind::Length(n),
                None => BodyKind::UntilClose,
            }
        },
    );
    head.keep_alive = if version == 1 {
        !f.close
    } else {
        f.keep_alive_token && !f.close
    };
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Result<RequestHead, InvalidHead> {
        let mut head = RequestHead::default();
        assert!(parse_request(raw.as_bytes(), &mut head)?, "incomplete");
        Ok(head)
    }

    #[test]
    fn parses_spans_and_framing() {
        let raw = "POST /a?b=c HTTP/1.1\r\nHost: Example.com:8080\r\nContent-Length: 5\r\nX-A:  v \r\n\r\nhello";
        let h = req(raw).unwrap();
        let b = raw.as_bytes();
        assert_eq!(h.method.get(b), b"POST");
        assert_eq!(h.target.get(b), b"/a?b=c");
        assert_eq!(h.host.unwrap().get(b), b"Example.com:8080");
        assert_eq!(h.body, Some(BodyKind::Length(5)));
        assert_eq!(h.headers[2].value.get(b), b"v");
        assert_eq!(h.len, raw.len() - 5);
        assert!(h.keep_alive);
    }

    #[test]
    fn incomplete_head_asks_for_more() {
        let mut head = RequestHead::default();
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", &mut head),
            Ok(false)
        );
    }

    #[test]
    fn rejects_smuggling_patterns() {
        for raw in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert!(req(raw).is_err(), "{raw:?} should be rejected");
        }
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap_err(),
            InvalidHead::UnsupportedTransferCoding
        );
    }

    #[test]
    fn marks_hop_by_hop_and_connection_options() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: 5\r\nX-Public: 2\r\n\r\n";
        let h = req(raw).unwrap();
        let hop: Vec<_> = h.headers.iter().map(|s| s.hop_by_hop).collect();
        assert_eq!(hop, vec![false, true, true, true, false]);
    }

    #[test]
    fn http10_defaults_to_close() {
        assert!(!req("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..MAX_HEADERS {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(req(&raw).unwrap_err().status(), 431);
    }

    #[test]
    fn response_framing_follows_rfc9112() {
        let mut h = ResponseHead::default();
        let ok = |raw: &str, head_req: bool, h: &mut ResponseHead| {
            assert!(parse_response(raw.as_bytes(), head_req, h).unwrap());
            h.body.unwrap()
        };
        assert_eq!(
            ok(
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                false,
                &mut h
            ),
            BodyKind::Length(3)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true, &mut h),
            BodyKind::Empty
        );
        assert_eq!(
            ok("HTTP/1.1 204 No Content\r\n\r\n", false, &mut h),
            BodyKind::Empty
        );
        assert_eq!(
            ok(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                &mut h
            ),
            BodyKind::Chunked
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\n\r\n", false, &mut h),
            BodyKind::UntilClose
        );
        assert_eq!(h.status, 200);
    }
}
