//! The HTTP/1.1 server side of a downstream connection.
//!
//! Connection lifecycle:
//!
//! ```text
//!  accepted ─▶ ReadHead ──complete──▶ Route ──rule──▶ proxy::forward ──keep-alive──▶ ReadHead
//!               │  │  └─ malformed: 400 / too large: 431 / slow: 408, then close   │
//!               │  └─ idle timeout, EOF or drain: close quietly                   │
//!               │               Route ──no route: 404, invalid backend: 500,      │
//!               │                        no endpoint: 503 (local response) ───────┘
//!               └─ pipelined bytes stay in the buffer and are answered in order
//! ```
//!
//! A request that fails never touches another connection: every error here
//! ends at most this connection.

use crate::access_log::{json_str, rfc3339_now};
use crate::metrics::Rejection;
use crate::proxy;
use crate::respond::{write_local, write_local_grpc, Failure};
use crate::transfer::{read_more, write_all, Stream};
use crate::worker::{Active, BindKey, SeriesRef, Worker};
use monoio::net::TcpStream;
use shardgate_core::http1::{parse_request, BodyKind, RequestHead, MAX_HEADERS};
use shardgate_core::route::{modify_path, pick_weighted, CompiledRule, Request, RouteDecision};
use shardgate_core::{BackendTarget, Cors, Redirect, Transport};
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// TLS facts of a downstream connection that routing needs.
pub(crate) struct TlsSession {
    /// The SNI the client sent, lower-case.
    pub(crate) sni: Option<String>,
}

/// A downstream connection and its reusable buffers.
pub(crate) struct Conn<S = TcpStream> {
    pub(crate) stream: S,
    /// Set when TLS was terminated for this connection.
    pub(crate) tls: Option<TlsSession>,
    /// The current request is a gRPC call (`content-type: application/grpc`):
    /// local answers are gRPC statuses.
    pub(crate) grpc: bool,
    /// Bytes read and not yet consumed: the current head, then body or the
    /// next pipelined request.
    pub(crate) buf: Vec<u8>,
    /// Bytes to write (heads, local responses).
    pub(crate) out: Vec<u8>,
    pub(crate) head: RequestHead,
    /// Scratch for the normalised host.
    host: String,
    /// Scratch for a redirect's Location.
    location: String,
    /// Scratch for a rewritten path.
    pub(crate) scratch: String,
    /// CORS header lines to add to the current request's response.
    pub(crate) cors_response: Vec<u8>,
    pub(crate) peer: SocketAddr,
    /// Bytes received and sent for the current request.
    rx: u64,
    tx: u64,
    /// The current request's method, authority and path as a JSON fragment,
    /// captured for the access log before the head is consumed.
    log_request: Vec<u8>,
}

impl<S> Conn<S> {
    pub(crate) fn received(&mut self, worker: &Worker, n: usize) {
        self.rx += n as u64;
        worker.metrics().bytes_received.add(n as u64);
    }

    pub(crate) fn sent(&mut self, worker: &Worker, n: usize) {
        self.tx += n as u64;
        worker.metrics().bytes_sent.add(n as u64);
    }
}

/// What became of one request, for metrics and the access log.
pub(crate) struct Outcome {
    pub(crate) keep_alive: bool,
    /// Status answered; 499 if the client went away first.
    pub(crate) status: u16,
    /// Upstream endpoint and its response time, when one was used.
    pub(crate) upstream: Option<(SocketAddr, Duration)>,
    /// After a 101: the upstream connection to splice with this one.
    pub(crate) upgraded: Option<crate::pool::Upstream>,
}

impl Outcome {
    pub(crate) fn local(keep_alive: bool, status: u16) -> Self {
        Self {
            keep_alive,
            status,
            upstream: None,
            upgraded: None,
        }
    }
}

/// Status recorded for a request whose client left before any response.
pub(crate) const CLIENT_CLOSED: u16 = 499;

enum HeadRead {
    Complete,
    Closed,
    Failed(Failure),
    /// The connection opened with the HTTP/2 preface.
    Http2,
}

/// Serves one HTTP/2 stream (as its one HTTP/1.1 exchange).
pub(crate) async fn serve_stream(
    worker: Rc<Worker>,
    exchange: crate::h2::Exchange,
    peer: SocketAddr,
    key: BindKey,
    tls: Option<TlsSession>,
) {
    serve(worker, exchange, peer, key, tls, false).await;
}

/// Serves one downstream connection to its end (`tls` when the stream is
/// TLS terminated here). With `h2_preface`, a connection that opens with
/// the HTTP/2 preface is handed back with the bytes read so far.
pub(crate) async fn serve<S: Stream>(
    worker: Rc<Worker>,
    stream: S,
    peer: SocketAddr,
    key: BindKey,
    tls: Option<TlsSession>,
    h2_preface: bool,
) -> Option<(S, Vec<u8>)> {
    let mut conn = Conn {
        stream,
        tls,
        grpc: false,
        buf: Vec::with_capacity(8 * 1024),
        out: Vec::with_capacity(1024),
        head: RequestHead::default(),
        host: String::new(),
        location: String::new(),
        scratch: String::new(),
        cors_response: Vec::new(),
        peer,
        rx: 0,
        tx: 0,
        log_request: Vec::new(),
    };
    let mut first = h2_preface;
    loop {
        conn.rx = 0;
        conn.tx = 0;
        conn.log_request.clear();
        conn.cors_response.clear();
        let (read, started) = read_head(&worker, &mut conn, first).await;
        first = false;
        let active = worker.active_now();
        conn.grpc = false;
        match read {
            HeadRead::Complete => {
                conn.grpc = conn.head.headers.iter().any(|h| {
                    h.name.get(&conn.buf).eq_ignore_ascii_case(b"content-type")
                        && h.value.get(&conn.buf).starts_with(b"application/grpc")
                });
            }
            HeadRead::Closed => return None,
            HeadRead::Http2 => return Some((conn.stream, conn.buf)),
            HeadRead::Failed(f) => {
                answer_local(&worker, &mut conn, f, true).await;
                let outcome = Outcome::local(false, f.status());
                record(
                    &worker,
                    &conn,
                    active.as_deref(),
                    SeriesRef::Unmatched,
                    &outcome,
                    started,
                );
                return None;
            }
        }
        let (mut outcome, series) = handle(&worker, &mut conn, key, active.as_deref()).await;
        record(&worker, &conn, active.as_deref(), series, &outcome, started);
        if let Some(up) = outcome.upgraded.take() {
            // Switched protocols (WebSocket): bytes flow both ways as they are.
            drop(active);
            if let (Some(raw), crate::pool::UpstreamIo::Tcp(tcp)) =
                (conn.stream.into_raw(), up.stream)
            {
                crate::l4::splice(&worker, raw, tcp).await;
            }
            return None;
        }
        if !outcome.keep_alive {
            return None;
        }
    }
}

/// Counts a finished request and writes its access-log line.
fn record<S: Stream>(
    worker: &Worker,
    conn: &Conn<S>,
    active: Option<&Active>,
    series: SeriesRef,
    outcome: &Outcome,
    started: Instant,
) {
    let m = worker.metrics();
    let elapsed = started.elapsed();
    m.requests.inc();
    m.request_duration.observe(elapsed);
    let series = active.map(|a| a.series.get(series));
    if let Some(s) = series {
        s.record(outcome.status);
    }
    let Some(log) = &worker.access_log else {
        return;
    };
    log.line(m, |out| {
        out.extend_from_slice(b"{\"time\":\"");
        rfc3339_now(out);
        let _ = write!(out, "\",\"worker\":{}", worker.id);
        for (key, value) in [
            ("gateway", series.map_or("", |s| s.labels.gateway.as_str())),
            ("listener", series.map_or("", |s| s.labels.listener.as_str())),
            ("route", series.map_or("", |s| s.labels.route.as_str())),
        ] {
            let _ = write!(out, ",\"{key}\":");
            json_str(out, value.as_bytes());
        }
        out.push(b',');
        if conn.log_request.is_empty() {
            // Refused before its head could be read.
            out.extend_from_slice(b"\"method\":null,\"authority\":null,\"path\":null");
        } else {
            out.extend_from_slice(&conn.log_request);
        }
        let _ = write!(
            out,
            ",\"status\":{},\"bytes_received\":{},\"bytes_sent\":{},\"duration_ms\":{:.3},\"client\":\"{}\"",
            outcome.status,
            conn.rx,
            conn.tx,
            elapsed.as_secs_f64() * 1000.0,
            conn.peer
        );
        match outcome.upstream {
            Some((addr, t)) => {
                let _ = write!(out, ",\"upstream\":\"{addr}\",\"upstream_ms\":{:.3}}}", t.as_secs_f64() * 1000.0);
            }
            None => out.extend_from_slice(b",\"upstream\":null,\"upstream_ms\":null}"),
        }
    });
}

/// Reads until `conn.buf` starts with a complete request head. Returns
/// when the head's first byte arrived (the request's start).
async fn read_head<S: Stream>(
    worker: &Worker,
    conn: &mut Conn<S>,
    h2_preface: bool,
) -> (HeadRead, Instant) {
    let mut first_byte: Option<Instant> = None;
    let result = read_head_inner(worker, conn, &mut first_byte, h2_preface).await;
    (result, first_byte.unwrap_or_else(Instant::now))
}

async fn read_head_inner<S: Stream>(
    worker: &Worker,
    conn: &mut Conn<S>,
    first_byte: &mut Option<Instant>,
    h2_preface: bool,
) -> HeadRead {
    loop {
        let preface = if h2_preface && !conn.buf.is_empty() {
            crate::h2::preface(&conn.buf)
        } else {
            None
        };
        if preface == Some(true) {
            return HeadRead::Http2;
        }
        if !conn.buf.is_empty() && preface.is_none() {
            first_byte.get_or_insert_with(Instant::now);
            match parse_request(&conn.buf, &mut conn.head) {
                Ok(true) => return HeadRead::Complete,
                Ok(false) if conn.buf.len() >= worker.cfg.max_header_bytes => {
                    return HeadRead::Failed(Failure::HeadTooLarge)
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "malformed request");
                    return HeadRead::Failed(match e.status() {
                        431 => Failure::HeadTooLarge,
                        501 => Failure::NotImplemented,
                        _ => Failure::BadRequest,
                    });
                }
            }
        }
        let read = match *first_byte {
            // Idle between requests: wait up to the idle timeout, and give
            // up at once if the worker drains.
            None => {
                if worker.draining() {
                    return HeadRead::Closed;
                }
                let drain = worker.drain.wait();
                monoio::select! {
                    r = monoio::time::timeout(worker.cfg.idle_timeout, read_more(&mut conn.stream, &mut conn.buf)) => r.ok(),
                    _ = drain => return HeadRead::Closed,
                }
            }
            Some(start) => {
                let left = worker.cfg.header_timeout.saturating_sub(start.elapsed());
                monoio::time::timeout(left, read_more(&mut conn.stream, &mut conn.buf))
                    .await
                    .ok()
            }
        };
        match read {
            None if first_byte.is_some() => return HeadRead::Failed(Failure::HeadTimeout),
            None | Some(Err(_)) | Some(Ok(0)) => return HeadRead::Closed,
            Some(Ok(n)) => conn.received(worker, n),
        }
    }
}

/// Writes a local response; the connection stays usable unless `close`.
pub(crate) async fn answer_local<S: Stream>(
    worker: &Worker,
    conn: &mut Conn<S>,
    failure: Failure,
    close: bool,
) {
    if let Some(r) = rejection(failure) {
        worker.metrics().reject(r);
    }
    conn.out.clear();
    if conn.grpc {
        write_local_grpc(&mut conn.out, failure.status(), close);
    } else {
        write_local(&mut conn.out, failure.status(), close);
    }
    let n = conn.out.len();
    if write_all(&mut conn.stream, &mut conn.out).await.is_ok() {
        conn.sent(worker, n);
    }
}

/// The rejection reason a local answer counts as, if it is one.
fn rejection(f: Failure) -> Option<Rejection> {
    Some(match f {
        Failure::BadRequest => Rejection::BadRequest,
        Failure::HeadTimeout => Rejection::HeadTimeout,
        Failure::HeadTooLarge => Rejection::HeadTooLarge,
        Failure::NoRoute => Rejection::NoRoute,
        Failure::NotImplemented => Rejection::NotImplemented,
        _ => return None,
    })
}

/// Where the request goes, decided while the head is still borrowed.
enum Decision<'t> {
    Local(Failure),
    /// Answer with this redirect status; `conn.location` holds the target.
    Redirect(u16),
    /// Answer a CORS preflight; `conn.cors_response` holds its headers.
    Preflight,
    Forward {
        rule: &'t CompiledRule,
        slot: usize,
        backend: u32,
    },
}

/// Handles the request whose head is at the start of `conn.buf`.
async fn handle<S: Stream>(
    worker: &Rc<Worker>,
    conn: &mut Conn<S>,
    key: BindKey,
    active: Option<&Active>,
) -> (Outcome, SeriesRef) {
    let Some(active) = active else {
        let outcome = local_and_skip(worker, conn, Failure::NotReady).await;
        return (outcome, SeriesRef::Unmatched);
    };
    if worker.access_log.is_some() {
        capture_for_log(conn);
    }
    let table = &active.table;
    let (decision, series) = decide(worker, conn, table, key);
    let outcome = match decision {
        Decision::Local(f) => local_and_skip(worker, conn, f).await,
        Decision::Redirect(status) => redirect(worker, conn, status).await,
        Decision::Preflight => preflight(worker, conn).await,
        Decision::Forward {
            rule,
            slot,
            backend,
        } => {
            if table.backend(backend).endpoints.is_empty() {
                local_and_skip(worker, conn, Failure::NoEndpoints).await
            } else {
                let filters = proxy::RouteFilters {
                    retry: rule.retry.as_ref(),
                    rule: &rule.filters,
                    backend: &rule.backends[slot].filters,
                    prefix: rule.matched_prefix(),
                };
                proxy::forward(worker, conn, backend, rule.timeouts, &filters, table).await
            }
        }
    };
    (outcome, series)
}

/// Copies method, authority and path out of the head (which the exchange
/// consumes) as a JSON fragment for the access log.
fn capture_for_log<S: Stream>(conn: &mut Conn<S>) {
    let Conn {
        buf,
        head,
        log_request,
        ..
    } = conn;
    log_request.extend_from_slice(b"\"method\":");
    json_str(log_request, head.method.get(buf));
    log_request.extend_from_slice(b",\"authority\":");
    json_str(log_request, head.host.map_or(&b""[..], |h| h.get(buf)));
    log_request.extend_from_slice(b",\"path\":");
    json_str(log_request, head.target.get(buf));
}

/// Answers a CORS preflight with the headers in `conn.cors_response` (none
/// when the origin is not allowed, which the browser reads as a refusal).
async fn preflight<S: Stream>(worker: &Worker, conn: &mut Conn<S>) -> Outcome {
    let has_body = !matches!(conn.head.body, Some(BodyKind::Empty));
    let keep = conn.head.keep_alive && !has_body && !worker.draining();
    let head_len = conn.head.len;
    conn.out.clear();
    conn.out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    conn.out.extend_from_slice(&conn.cors_response);
    conn.out.extend_from_slice(b"content-length: 0\r\n");
    if !keep {
        conn.out.extend_from_slice(b"connection: close\r\n");
    }
    conn.out.extend_from_slice(b"server: shardgate\r\n\r\n");
    let n = conn.out.len();
    if write_all(&mut conn.stream, &mut conn.out).await.is_ok() {
        conn.sent(worker, n);
    }
    if keep {
        conn.buf.drain(..head_len);
    }
    Outcome::local(keep, 200)
}

/// Answers with a redirect to `conn.location`. Like other local answers, an
/// unread request body closes the connection afterwards.
async fn redirect<S: Stream>(worker: &Worker, conn: &mut Conn<S>, status: u16) -> Outcome {
    let has_body = !matches!(conn.head.body, Some(BodyKind::Empty));
    let keep = conn.head.keep_alive && !has_body && !worker.draining();
    let head_len = conn.head.len;
    conn.out.clear();
    write_redirect(&mut conn.out, status, &conn.location, !keep);
    let n = conn.out.len();
    if write_all(&mut conn.stream, &mut conn.out).await.is_ok() {
        conn.sent(worker, n);
    }
    if keep {
        conn.buf.drain(..head_len);
    }
    Outcome::local(keep, status)
}

/// Answers locally. The request's body, if any, is not read: the connection
/// closes after the answer so no unread body is mistaken for a request.
async fn local_and_skip<S: Stream>(
    worker: &Worker,
    conn: &mut Conn<S>,
    failure: Failure,
) -> Outcome {
    let has_body = !matches!(conn.head.body, Some(BodyKind::Empty));
    let keep = conn.head.keep_alive && !has_body && !worker.draining();
    let head_len = conn.head.len;
    answer_local(worker, conn, failure, !keep).await;
    if keep {
        conn.buf.drain(..head_len);
    }
    Outcome::local(keep, failure.status())
}

fn decide<'t, S: Stream>(
    worker: &Worker,
    conn: &mut Conn<S>,
    table: &'t shardgate_core::RouteTable,
    key: BindKey,
) -> (Decision<'t>, SeriesRef) {
    let buf = &conn.buf;
    let head = &conn.head;
    let method = head.method.str(buf);
    let target = head.target.str(buf);
    let unmatched = SeriesRef::Unmatched;
    if method == "CONNECT" {
        return (Decision::Local(Failure::NotImplemented), unmatched);
    }
    // Origin-form is the norm; absolute-form names the authority itself
    // (RFC 9112 §3.2.2: it then overrides Host).
    let (authority, path_and_query) = if target.starts_with('/') || target == "*" {
        (head.host.map_or("", |h| h.str(buf)), target)
    } else if let Some(rest) = strip_scheme(target) {
        match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        }
    } else {
        return (Decision::Local(Failure::BadRequest), unmatched);
    };
    normalize_host(authority, &mut conn.host);
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let Some(bind) = table.bind_index(Transport::Tcp, key.1, key.2) else {
        return (Decision::Local(Failure::NoRoute), unmatched);
    };
    // On TLS the SNI chose the listener (and certificate); the request must
    // stay within it.
    let pinned = match &conn.tls {
        None => None,
        Some(tls) => match table.bind(bind).and_then(|b| b.select(tls.sni.as_deref())) {
            Some(l) => Some(l.id),
            None => return (Decision::Local(Failure::Misdirected), unmatched),
        },
    };
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let n = head.headers.len().min(MAX_HEADERS);
    for (slot, h) in slots.iter_mut().zip(&head.headers) {
        *slot = httparse::Header {
            name: h.name.str(buf),
            value: h.value.get(buf),
        };
    }
    let req = Request {
        method,
        host: &conn.host,
        path,
        query,
        headers: &slots[..n],
    };
    let rule = match table.route(bind, pinned, &req) {
        RouteDecision::NoListener => return (Decision::Local(Failure::NoRoute), unmatched),
        RouteDecision::Misdirected(l) => {
            return (
                Decision::Local(Failure::Misdirected),
                SeriesRef::NoRoute(l.id),
            )
        }
        RouteDecision::NoRoute(l) => {
            return (Decision::Local(Failure::NoRoute), SeriesRef::NoRoute(l.id))
        }
        RouteDecision::Rule(_, rule) => rule,
    };
    if let Some(cors) = &rule.filters.cors {
        let value = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
        };
        if let Some(origin) = value("origin") {
            let allowed = cors.allows_origin(origin);
            let requested = value("access-control-request-method");
            if method == "OPTIONS" && requested.is_some() {
                if allowed {
                    let headers = value("access-control-request-headers");
                    cors_headers(cors, origin, requested, headers, &mut conn.cors_response);
                }
                let no_backend = SeriesRef::Rule(rule.id, rule.backends.len());
                return (Decision::Preflight, no_backend);
            }
            if allowed {
                cors_headers(cors, origin, None, None, &mut conn.cors_response);
            }
        }
    }
    let (scheme, default_port) = if conn.tls.is_some() {
        ("https", 443)
    } else {
        ("http", 80)
    };
    if let Some(r) = &rule.filters.redirect {
        build_location(
            r,
            scheme,
            default_port,
            key.2,
            &conn.host,
            path,
            query,
            rule.matched_prefix(),
            &mut conn.location,
            &mut conn.scratch,
        );
        return (
            Decision::Redirect(r.status),
            SeriesRef::Rule(rule.id, rule.backends.len()),
        );
    }
    // Spec: a rule without usable backendRefs answers 500.
    let Some(i) = pick_weighted(rule.backends.iter().map(|b| b.weight), worker.random()) else {
        let no_backend = SeriesRef::Rule(rule.id, rule.backends.len());
        return (Decision::Local(Failure::InvalidBackend(500)), no_backend);
    };
    let series = SeriesRef::Rule(rule.id, i);
    if let Some(r) = &rule.backends[i].filters.redirect {
        let prefix = rule.matched_prefix();
        build_location(
            r,
            scheme,
            default_port,
            key.2,
            &conn.host,
            path,
            query,
            prefix,
            &mut conn.location,
            &mut conn.scratch,
        );
        return (Decision::Redirect(r.status), series);
    }
    let decision = match rule.backends[i].target {
        BackendTarget::Invalid { status } => Decision::Local(Failure::InvalidBackend(status)),
        BackendTarget::Backend(backend) => Decision::Forward {
            rule,
            slot: i,
            backend,
        },
    };
    (decision, series)
}

/// The Location of a RequestRedirect (Gateway API HTTPRequestRedirectFilter):
/// scheme, host and path default to the request's; without an explicit port,
/// a changed scheme takes its well-known port and otherwise the listener's
/// port is kept; well-known ports are left out of the URL.
#[allow(clippy::too_many_arguments)]
fn build_location(
    r: &Redirect,
    listener_scheme: &str,
    listener_default_port: u16,
    listener_port: u16,
    host: &str,
    path: &str,
    query: Option<&str>,
    prefix: Option<&str>,
    out: &mut String,
    scratch: &mut String,
) {
    use std::fmt::Write as _;
    let scheme = r.scheme.as_deref().unwrap_or(listener_scheme);
    let well_known = |s: &str| if s == "https" { 443 } else { 80 };
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => p,
        (None, Some(s)) => well_known(s),
        (None, None) if listener_port == listener_default_port => well_known(scheme),
        (None, None) => listener_port,
    };
    out.clear();
    out.push_str(scheme);
    out.push_str("://");
    out.push_str(r.hostname.as_deref().unwrap_or(host));
    if port != well_known(scheme) {
        let _ = write!(out, ":{port}");
    }
    match &r.path {
        Some(m) => {
            modify_path(path, prefix, m, scratch);
            out.push_str(scratch);
        }
        None => out.push_str(path),
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
}

/// CORS response header lines (Fetch standard): for a preflight (`method`
/// given) the allowed methods, headers and max age too. Wildcards answer
/// with what was asked, which is valid with credentials as well.
fn cors_headers(
    cors: &Cors,
    origin: &str,
    method: Option<&str>,
    headers: Option<&str>,
    out: &mut Vec<u8>,
) {
    let mut line = |name: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    line("access-control-allow-origin", origin);
    if cors.allow_credentials {
        line("access-control-allow-credentials", "true");
    }
    if !cors.expose_headers.is_empty() {
        line(
            "access-control-expose-headers",
            &cors.expose_headers.join(", "),
        );
    }
    let Some(method) = method else { return };
    if cors.allow_methods.iter().any(|m| m == "*") {
        line("access-control-allow-methods", method);
    } else if !cors.allow_methods.is_empty() {
        line(
            "access-control-allow-methods",
            &cors.allow_methods.join(", "),
        );
    }
    if cors.allow_headers.iter().any(|h| h == "*") {
        if let Some(h) = headers {
            line("access-control-allow-headers", h);
        }
    } else if !cors.allow_headers.is_empty() {
        line(
            "access-control-allow-headers",
            &cors.allow_headers.join(", "),
        );
    }
    line(
        "access-control-max-age",
        itoa::Buffer::new().format(cors.max_age),
    );
    out.extend_from_slice(b"vary: origin\r\n");
}

/// A redirect response with an empty body.
fn write_redirect(out: &mut Vec<u8>, status: u16, location: &str, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(crate::respond::reason(status).as_bytes());
    out.extend_from_slice(b"\r\nlocation: ");
    out.extend_from_slice(location.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: 0\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"server: shardgate\r\n\r\n");
}

fn strip_scheme(target: &str) -> Option<&str> {
    let colon = target.find("://")?;
    target[..colon]
        .eq_ignore_ascii_case("http")
        .then(|| &target[colon + 3..])
}

/// Lower-cases the host, drops the port and a trailing dot, into `out`.
fn normalize_host(authority: &str, out: &mut String) {
    out.clear();
    let host = if authority.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port.
        authority.find(']').map_or(authority, |i| &authority[..=i])
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                authority
            }
        })
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    out.extend(host.chars().map(|c| c.to_ascii_lowercase()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalised_for_routing() {
        let mut out = String::new();
        for (input, want) in [
            ("Example.COM:8080", "example.com"),
            ("example.com.", "example.com"),
            ("[::1]:80", "[::1]"),
            ("foo", "foo"),
        ] {
            normalize_host(input, &mut out);
            assert_eq!(out, want);
        }
    }

    #[test]
    fn absolute_form_targets_give_their_authority() {
        assert_eq!(strip_scheme("http://a.b/c"), Some("a.b/c"));
        assert_eq!(strip_scheme("HTTP://a.b"), Some("a.b"));
        assert_eq!(strip_scheme("ftp://a.b"), None);
    }
}
