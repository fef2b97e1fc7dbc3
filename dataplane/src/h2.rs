//! HTTP/2 downstream: h2 over TLS (ALPN `h2`) and cleartext h2 with prior
//! knowledge on HTTP listeners. The protocol is the `h2` crate's, driven on
//! the worker's monoio loop through monoio-compat's stream wrapper.
//!
//! Each stream becomes an [`Exchange`]: an HTTP/1.1 request as bytes for the
//! worker's one HTTP pipeline (routing, filters, retries, mirrors, access
//! log) to read, and an HTTP/1.1 response it writes, which the exchange
//! turns back into HEADERS, DATA (within the peer's flow-control window) and
//! trailers. Bodies stream both ways; nothing is buffered whole.
//!
//! ```text
//!  h2 connection ─accept─▶ stream ─▶ Exchange ══ HTTP/1.1 bytes ══▶ http1::serve_stream ─▶ proxy
//!        ▲                               │
//!        └── HEADERS / DATA / trailers ◀─┘ (the response, parsed as it is written)
//! ```
//!
//! Abuse limits: concurrent streams, header list size, HPACK table size and
//! flow-control windows are SETTINGS the `h2` crate enforces; streams the
//! peer resets before we accept them and streams we must reset for its
//! errors are capped (rapid reset, CVE-2023-44487), and beyond the cap the
//! connection is closed with GOAWAY. An idle connection (no open stream) is
//! closed after the idle timeout.

use crate::http1::{self, TlsSession};
use crate::transfer::{Io, Stream};
use crate::worker::{BindKey, Worker};
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio_compat::StreamWrapper;
use shardgate_core::http1::{parse_response, BodyKind, ChunkedDecoder, ResponseHead};
use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The client connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/2 limits, from flags.
#[derive(Debug, Clone)]
pub struct H2Limits {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list_size: u32,
    /// SETTINGS_HEADER_TABLE_SIZE (HPACK).
    pub header_table_size: u32,
    /// Initial per-stream flow-control window.
    pub stream_window: u32,
    /// Connection flow-control window.
    pub connection_window: u32,
    /// Streams the peer may reset before we start serving them, per
    /// `RESET_WINDOW`; beyond that the connection is closed with GOAWAY
    /// (rapid reset, CVE-2023-44487). Also the `h2` crate's cap on reset
    /// streams queued for accept.
    pub max_pending_resets: usize,
    /// Streams we reset for the peer's protocol errors, at most.
    pub max_error_resets: usize,
}

impl Default for H2Limits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            max_header_list_size: 64 * 1024,
            header_table_size: 4096,
            stream_window: 1024 * 1024,
            connection_window: 4 * 1024 * 1024,
            max_pending_resets: 100,
            max_error_resets: 200,
        }
    }
}

/// The interval [`H2Limits::max_pending_resets`] counts over.
pub const RESET_WINDOW: Duration = Duration::from_secs(10);

/// Serves one HTTP/2 connection: `io` after the TLS handshake (ALPN h2), or
/// a cleartext connection whose first bytes, already read, are `prefix`.
pub(crate) async fn serve<T>(
    worker: Rc<Worker>,
    io: T,
    prefix: Vec<u8>,
    peer: SocketAddr,
    key: BindKey,
    sni: Option<Option<String>>,
) where
    T: AsyncReadRent + AsyncWriteRent + Unpin + 'static,
{
    let limits = &worker.cfg.h2;
    let io = Rewind::new(
        prefix,
        StreamWrapper::new_with_buffer_size(io, 16 * 1024, 16 * 1024),
    );
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        .header_table_size(limits.header_table_size)
        .initial_window_size(limits.stream_window)
        .initial_connection_window_size(limits.connection_window)
        .max_pending_accept_reset_streams(limits.max_pending_resets)
        .max_local_error_reset_streams(Some(limits.max_error_resets))
        .max_send_buffer_size(64 * 1024)
        .handshake::<_, Bytes>(io);
    let mut conn = match monoio::time::timeout(worker.cfg.header_timeout, handshake).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "h2 handshake failed");
            return;
        }
        Err(_) => return,
    };
    let open = Rc::new(Cell::new(0usize));
    let mut resets = (std::time::Instant::now(), 0usize);
    loop {
        // Only a connection without open streams can idle out.
        let idle = if open.get() == 0 {
            worker.cfg.idle_timeout
        } else {
            Duration::from_secs(3600)
        };
        let next = monoio::select! {
            r = monoio::time::timeout(idle, conn.accept()) => r,
            _ = worker.drain.wait() => {
                conn.graceful_shutdown();
                break;
            }
        };
        match next {
            Err(_) if open.get() == 0 => {
                conn.graceful_shutdown();
                break;
            }
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                // The peer's GOAWAY or a broken socket is an ordinary end; a
                // GOAWAY or error of ours is the peer breaking the rules.
                if e.is_io() || (e.is_go_away() && e.is_remote()) {
                    tracing::debug!(%peer, error = %e, "h2 connection ended");
                } else {
                    worker.metrics().h2_abuse.inc();
                    tracing::info!(%peer, error = %e, "h2 connection closed for a protocol violation");
                }
                break;
            }
            Ok(Some(Ok((req, mut respond)))) => {
                // A stream the client already cancelled is not served; many
                // of them in a row is the rapid-reset attack.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                if let Poll::Ready(Ok(_)) = respond.poll_reset(&mut cx) {
                    if resets.0.elapsed() > RESET_WINDOW {
                        resets = (std::time::Instant::now(), 0);
                    }
                    resets.1 += 1;
                    if resets.1 > limits.max_pending_resets {
                        worker.metrics().h2_abuse.inc();
                        tracing::info!(%peer, resets = resets.1, "h2 connection closed: too many reset streams");
                        conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                        break;
                    }
                    continue;
                }
                open.set(open.get() + 1);
                let guard = OpenStream(Rc::clone(&open));
                let tls = sni.clone().map(|sni| TlsSession { sni });
                let worker = Rc::clone(&worker);
                // The stream's future is several KiB: built straight into a
                // box, the task itself stays small and nothing large is
                // copied on spawn or first poll.
                monoio::spawn(async move {
                    let _guard = guard;
                    if let Some(exchange) = Exchange::new(req, respond) {
                        Box::pin(http1::serve_stream(worker, exchange, peer, key, tls)).await;
                    }
                });
            }
        }
    }
    // Let streams in flight finish (GOAWAY sent, or the peer went away).
    let _ = poll_fn(|cx| conn.poll_closed(cx)).await;
}

/// Counts a stream open until dropped.
struct OpenStream(Rc<Cell<usize>>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Whether `buf` is, or starts like, the HTTP/2 connection preface:
/// `Some(true)` complete, `Some(false)` a prefix of it so far, `None` not it.
pub(crate) fn preface(buf: &[u8]) -> Option<bool> {
    let n = buf.len().min(PREFACE.len());
    (buf[..n] == PREFACE[..n]).then_some(buf.len() >= PREFACE.len())
}

/// Bytes already read from the connection, served before the rest of it.
struct Rewind<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Rewind<T> {
    fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One HTTP/2 stream, seen by the HTTP/1.1 pipeline as a connection that
/// carries exactly one exchange.
pub(crate) struct Exchange {
    /// The request head as HTTP/1.1, until read.
    head: Vec<u8>,
    /// The request body, while it lasts.
    body: Option<RecvStream>,
    /// Whether the body is sent on as chunked (no Content-Length).
    chunked_body: bool,
    head_request: bool,
    respond: Option<SendResponse<Bytes>>,
    /// Response bytes not yet turned into frames.
    pending: Vec<u8>,
    response: ResponseState,
}

enum ResponseState {
    /// Waiting for the whole head.
    Head,
    /// Sending the body; `None` framing: the body ended with the head.
    Body {
        send: SendStream<Bytes>,
        framing: Framing,
    },
    /// The response is complete.
    Done,
}

/// How the HTTP/1.1 body being turned into DATA frames ends.
pub(crate) enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// What [`send_framed`] got to.
pub(crate) enum Sent {
    /// The body and its trailers are out; the stream is ended.
    Done,
    /// Everything given is out; more body is to come.
    NeedMore,
}

/// Sends the part of an HTTP/1.1 body that `pending` holds as DATA frames
/// (framing removed), and at its end the chunked trailers as HTTP/2
/// trailers. Consumes what it sent from `pending`.
pub(crate) async fn send_framed(
    send: &mut SendStream<Bytes>,
    framing: &mut Framing,
    pending: &mut Vec<u8>,
) -> io::Result<Sent> {
    loop {
        if pending.is_empty() {
            return Ok(Sent::NeedMore);
        }
        let mut data = Vec::new();
        let mut trailers = Vec::new();
        let (used, done) = match framing {
            Framing::Length(left) => {
                let n = (*left).min(pending.len() as u64) as usize;
                data.extend_from_slice(&pending[..n]);
                *left -= n as u64;
                (n, *left == 0)
            }
            Framing::Chunked(d) => {
                let n = d
                    .decode(pending, &mut data, &mut trailers)
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
                (n, d.is_done())
            }
            Framing::UntilClose => {
                data.extend_from_slice(pending);
                (pending.len(), false)
            }
        };
        pending.drain(..used);
        send_data(send, Bytes::from(data), done && trailers.is_empty()).await?;
        if done {
            if !trailers.is_empty() {
                send.send_trailers(parse_trailers(&trailers))
                    .map_err(h2_io)?;
            }
            return Ok(Sent::Done);
        }
        if used == 0 {
            return Ok(Sent::NeedMore);
        }
    }
}

/// Reads the next DATA frame of `body` onto `buf` as HTTP/1.1 body bytes
/// (a chunk when `chunked`), or at its end the last chunk with the
/// trailers. Returns the bytes added and whether the body ended.
pub(crate) async fn read_body(
    body: &mut RecvStream,
    chunked: bool,
    buf: &mut Vec<u8>,
) -> io::Result<(usize, bool)> {
    let before = buf.len();
    loop {
        match body.data().await {
            Some(Ok(data)) if data.is_empty() => continue,
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                append_data(buf, &data, chunked);
                return Ok((buf.len() - before, false));
            }
            Some(Err(e)) => return Err(h2_io(e)),
            None => {
                let trailers = body.trailers().await.map_err(h2_io)?;
                if chunked {
                    append_last_chunk(buf, trailers.as_ref());
                }
                return Ok((buf.len() - before, true));
            }
        }
    }
}

/// Appends one DATA frame's bytes to an HTTP/1.1 body: as a chunk when the
/// body is chunked.
fn append_data(buf: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if chunked {
        use std::io::Write as _;
        let _ = write!(buf, "{:x}\r\n", data.len());
        buf.extend_from_slice(data);
        buf.extend_from_slice(b"\r\n");
    } else {
        buf.extend_from_slice(data);
    }
}

/// Appends the end of a chunked HTTP/1.1 body, with the HTTP/2 trailers.
fn append_last_chunk(buf: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    buf.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        push_field(buf, name.as_str(), value.as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
}

/// Fields that are about one HTTP/1.1 connection and never cross into
/// HTTP/2 (RFC 9113 §8.2.2), nor come from it.
pub(crate) fn connection_specific(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te"
    )
}

impl Exchange {
    fn new(req: Request<RecvStream>, respond: SendResponse<Bytes>) -> Option<Self> {
        let (parts, body) = req.into_parts();
        let mut head = Vec::with_capacity(512);
        head.extend_from_slice(parts.method.as_str().as_bytes());
        head.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        if parts.method == http::Method::CONNECT {
            // Extended CONNECT is not enabled; plain CONNECT is refused by
            // the pipeline (501), which needs a target it can parse.
            head.extend_from_slice(parts.uri.authority().map_or("/", |a| a.as_str()).as_bytes());
        } else {
            head.extend_from_slice(target.as_bytes());
        }
        head.extend_from_slice(b" HTTP/1.1\r\n");
        let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
        if let Some(a) = &authority {
            push_field(&mut head, "host", a.as_bytes());
        }
        let mut cookies: Vec<&[u8]> = Vec::new();
        let mut has_length = false;
        for (name, value) in &parts.headers {
            let n = name.as_str();
            if connection_specific(n) || n == "expect" || (n == "host" && authority.is_some()) {
                continue;
            }
            if n == "cookie" {
                cookies.push(value.as_bytes());
                continue;
            }
            has_length |= n == "content-length";
            push_field(&mut head, n, value.as_bytes());
        }
        if !cookies.is_empty() {
            // RFC 9113 §8.2.3: cookie crumbs join with "; " for HTTP/1.1.
            push_field(&mut head, "cookie", &cookies.join(&b"; "[..]));
        }
        let has_body = !body.is_end_stream();
        let chunked_body = has_body && !has_length;
        if chunked_body {
            push_field(&mut head, "transfer-encoding", b"chunked");
        }
        head.extend_from_slice(b"\r\n");
        Some(Self {
            head,
            body: has_body.then_some(body),
            chunked_body,
            head_request: parts.method == http::Method::HEAD,
            respond: Some(respond),
            pending: Vec::new(),
            response: ResponseState::Head,
        })
    }

    /// Turns what `pending` holds into frames, as far as it goes.
    async fn flush_response(&mut self) -> io::Result<()> {
        loop {
            match &mut self.response {
                ResponseState::Head => {
                    let mut resp = ResponseHead::default();
                    match parse_response(&self.pending, self.head_request, &mut resp) {
                        Ok(true) => {}
                        Ok(false) => return Ok(()),
                        Err(_) => return Err(io::ErrorKind::InvalidData.into()),
                    }
                    if (100..200).contains(&resp.status) {
                        // Interim answers (100 Continue) are ours to drop.
                        self.pending.drain(..resp.len);
                        continue;
                    }
                    let body = resp.body.unwrap_or(BodyKind::Empty);
                    let response = self.response_head(&resp, body)?;
                    self.pending.drain(..resp.len);
                    let end = body == BodyKind::Empty;
                    let mut respond = self.respond.take().ok_or(io::ErrorKind::BrokenPipe)?;
                    let send = respond.send_response(response, end).map_err(h2_io)?;
                    self.response = match body {
                        BodyKind::Empty => ResponseState::Done,
                        BodyKind::Length(n) => ResponseState::Body {
                            send,
                            framing: Framing::Length(n),
                        },
                        BodyKind::Chunked => ResponseState::Body {
                            send,
                            framing: Framing::Chunked(ChunkedDecoder::new()),
                        },
                        BodyKind::UntilClose => ResponseState::Body {
                            send,
                            framing: Framing::UntilClose,
                        },
                    };
                }
                ResponseState::Body { send, framing } => {
                    match send_framed(send, framing, &mut self.pending).await? {
                        Sent::Done => self.response = ResponseState::Done,
                        Sent::NeedMore => return Ok(()),
                    }
                }
                ResponseState::Done => {
                    self.pending.clear();
                    return Ok(());
                }
            }
        }
    }

    fn response_head(&self, resp: &ResponseHead, body: BodyKind) -> io::Result<Response<()>> {
        let mut out = Response::builder()
            .status(StatusCode::from_u16(resp.status).map_err(|_| io::ErrorKind::InvalidData)?);
        let headers = out.headers_mut().ok_or(io::ErrorKind::InvalidData)?;
        for h in resp.headers.iter().filter(|h| !h.hop_by_hop) {
            let name = h.name.get(&self.pending);
            let Ok(name) = HeaderName::from_bytes(name) else {
                continue;
            };
            if connection_specific(name.as_str()) {
                continue;
            }
            if let Ok(v) = HeaderValue::from_bytes(h.value.get(&self.pending)) {
                headers.append(name, v);
            }
        }
        if let BodyKind::Length(n) = body {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        out.body(()).map_err(|_| io::ErrorKind::InvalidData.into())
    }
}

/// Sends `data` within the peer's flow-control window, waiting for
/// capacity as it opens.
pub(crate) async fn send_data(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> io::Result<()> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(h2_io(e)),
            None => return Err(io::ErrorKind::BrokenPipe.into()),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        send.send_data(chunk, end && data.is_empty())
            .map_err(h2_io)?;
    }
    if end && data.is_empty() {
        // An empty end (the last bytes were sent already, or there were none).
        let _ = send.send_data(Bytes::new(), true);
    }
    Ok(())
}

pub(crate) fn parse_trailers(raw: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            if !connection_specific(n.as_str()) {
                map.append(n, v);
            }
        }
    }
    map
}

pub(crate) fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn h2_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io().unwrap_or_else(|| io::ErrorKind::Other.into())
    } else {
        io::Error::other(e)
    }
}

impl Io for Exchange {
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        if !self.head.is_empty() {
            let n = self.head.len();
            buf.append(&mut self.head);
            return Ok(n);
        }
        let Some(body) = self.body.as_mut() else {
            return Ok(0);
        };
        let (n, ended) = read_body(body, self.chunked_body, buf).await?;
        if ended {
            self.body = None;
        }
        Ok(n)
    }

    async fn write_prefix(&mut self, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
        self.pending.extend_from_slice(&buf[..n]);
        buf.drain(..n);
        self.flush_response().await
    }
}

impl Stream for Exchange {
    type Raw = TcpStream;

    fn into_raw(self) -> Option<TcpStream> {
        None
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        match &mut self.response {
            // The pipeline ended without a complete response head.
            ResponseState::Head => {
                if let Some(r) = self.respond.as_mut() {
                    r.send_reset(h2::Reason::INTERNAL_ERROR);
                }
            }
            // A body that runs until close ends here; a cut one is reset.
            ResponseState::Body { send, framing } => match framing {
                Framing::UntilClose => {
                    let _ = send.send_data(Bytes::new(), true);
                }
                _ => send.send_reset(h2::Reason::INTERNAL_ERROR),
            },
            ResponseState::Done => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_is_recognised_by_its_prefix() {
        assert_eq!(preface(b"PRI * HT"), Some(false));
        assert_eq!(preface(PREFACE), Some(true));
        assert_eq!(preface(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn trailers_parse_and_drop_connection_fields() {
        let t = parse_trailers(b"grpc-status: 0\r\ngrpc-message: ok \r\nconnection: x\r\n");
        assert_eq!(t.get("grpc-status").unwrap(), "0");
        assert_eq!(t.get("grpc-message").unwrap(), "ok");
        assert!(t.get("connection").is_none());
    }
}
