//! Locally generated responses, and the one place that maps a failure to its
//! status code (DESIGN.md: no route → 404, invalid backends → 500, no
//! endpoint, connect failure or reset before the response → 503, upstream
//! timeout → 504, malformed request → 400, malformed response → 502).

/// Why Shardgate answered a request itself. Each variant says who caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Downstream: the request is malformed.
    BadRequest,
    /// Downstream: the head exceeded the size limit.
    HeadTooLarge,
    /// Downstream: the head did not arrive in time.
    HeadTimeout,
    /// Downstream: a transfer coding or method we do not implement.
    NotImplemented,
    /// Configuration: no listener or rule matches.
    NoRoute,
    /// Downstream: on TLS, the host belongs to another listener than the
    /// one the SNI selected.
    Misdirected,
    /// Configuration: the chosen backendRef is invalid (status given).
    InvalidBackend(u16),
    /// Internal: no snapshot is in force yet.
    NotReady,
    /// Upstream: the backend has no ready endpoint.
    NoEndpoints,
    /// Upstream: connecting failed or timed out (a retry elsewhere may help).
    ConnectFailed,
    /// Upstream: the connection closed or reset before any response byte
    /// (Envoy and HAProxy answer 503 here too: the backend is unavailable).
    UpstreamReset,
    /// Upstream: no response head in time.
    UpstreamTimeout,
    /// Upstream: the response was malformed or the connection broke.
    UpstreamBroken,
}

impl Failure {
    /// The status answered.
    pub(crate) fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::HeadTooLarge => 431,
            Self::HeadTimeout => 408,
            Self::NotImplemented => 501,
            Self::NoRoute => 404,
            Self::Misdirected => 421,
            Self::InvalidBackend(s) => s,
            Self::NotReady | Self::NoEndpoints | Self::ConnectFailed | Self::UpstreamReset => 503,
            Self::UpstreamTimeout => 504,
            Self::UpstreamBroken => 502,
        }
    }
}

/// Reason phrase for a status we generate or relay without one.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Writes a complete local response with a short text body.
pub(crate) fn write_local(out: &mut Vec<u8>, status: u16, close: bool) {
    let phrase = reason(status);
    let mut code = itoa::Buffer::new();
    let code = code.format(status);
    let mut len = itoa::Buffer::new();
    // Body: the status line's text plus a newline, e.g. "404 Not Found\n".
    let body_len = code.len() + 1 + phrase.len() + 1;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(code.as_bytes());
    out.push(b' ');
    out.extend_from_slice(phrase.as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain\r\ncontent-length: ");
    out.extend_from_slice(len.format(body_len).as_bytes());
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\nserver: shardgate\r\n\r\n");
    out.extend_from_slice(code.as_bytes());
    out.push(b' ');
    out.extend_from_slice(phrase.as_bytes());
    out.push(b'\n');
}

/// The gRPC status for an HTTP status we answer with ourselves (the
/// mapping gRPC's own clients apply to HTTP errors, with 504 as the
/// deadline it is).
pub(crate) fn grpc_status(status: u16) -> (u8, &'static str) {
    match status {
        400 => (13, "INTERNAL"),
        401 => (16, "UNAUTHENTICATED"),
        403 => (7, "PERMISSION_DENIED"),
        404 => (12, "UNIMPLEMENTED"),
        429 | 502 | 503 => (14, "UNAVAILABLE"),
        504 => (4, "DEADLINE_EXCEEDED"),
        _ => (2, "UNKNOWN"),
    }
}

/// A local answer to a gRPC call: HTTP 200 with `grpc-status` and
/// `grpc-message` and no body, which an HTTP/2 hop sends as a trailers-only
/// response (gRPC over HTTP/2, "Trailers-Only").
pub(crate) fn write_local_grpc(out: &mut Vec<u8>, status: u16, close: bool) {
    let (code, name) = grpc_status(status);
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ngrpc-status: ");
    out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
    out.extend_from_slice(b"\r\ngrpc-message: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b" (shardgate: ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).replace(' ', "%20").as_bytes());
    out.extend_from_slice(b")\r\ncontent-length: 0\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"server: shardgate\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_responses_are_well_formed() {
        let mut out = Vec::new();
        write_local(&mut out, 404, true);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut res = httparse::Response::new(&mut headers);
        let n = match res.parse(&out).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("incomplete"),
        };
        assert_eq!(res.code, Some(404));
        assert_eq!(&out[n..], b"404 Not Found\n");
        let cl = res
            .headers
            .iter()
            .find(|h| h.name == "content-length")
            .unwrap();
        assert_eq!(cl.value, b"14");
    }
}
