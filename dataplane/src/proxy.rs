//! Forwarding one request to an upstream endpoint over HTTP/1.1 and relaying
//! its response, both bodies streamed.
//!
//! Exchange lifecycle:
//!
//! ```text
//!  pool.take or connect ─▶ send head (+ small buffered body) ─▶ stream body ─▶ read response head
//!        │ fail: 503            │ reused conn closed: retry once on a fresh one (replayable only)
//!        │                      └─ write fails: 502             │ timeout: 504, garbage: 502
//!        ▼                                                      ▼
//!  relay response head (+ small buffered body) ─▶ stream body ─▶ pool.put if reusable
//! ```
//!
//! Proxy headers: `X-Forwarded-For` gets the client address appended (a new
//! field when the client sent none) and `X-Forwarded-Proto` is set to the
//! listener's scheme, replacing any the client sent. Hop-by-hop fields
//! (RFC 9110 §7.6.1, including those named by Connection) are never
//! forwarded in either direction. `Expect: 100-continue` is answered by the
//! proxy itself just before it streams the body, and not forwarded.

use crate::http1::{answer_local, Conn, Outcome, CLIENT_CLOSED};
use crate::pool::{ConnectError, Upstream, UpstreamIo};
use crate::respond::{reason, Failure};
use crate::transfer::Io as _;
use crate::transfer::{copy_body, read_more, write_all, CopyError, Framing, Stream};
use crate::worker::Worker;
use monoio::io::AsyncWriteRentExt;
use shardgate_core::http1::{
    parse_response, BodyKind, ChunkedDecoder, HeaderSpan, RequestHead, ResponseHead,
};
use shardgate_core::route::modify_path;
use shardgate_core::{
    AppProtocol, Filters, HeaderModifier, Mirror, Retry, Rewrite, RouteTable, Timeouts,
};
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Bodies up to this size that are already buffered go out with their head
/// in one write (one syscall instead of two for typical small messages).
const INLINE_BODY: u64 = 64 * 1024;
/// Longest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

enum UpstreamError {
    /// Closed or reset before any response byte: a reused connection that
    /// the server had already closed.
    ClosedEarly,
    Timeout,
    Broken,
}

/// Forwards the request at the start of `conn.buf` to `endpoint`. Returns
/// whether the downstream connection may carry another request.
pub(crate) async fn forward<S: Stream>(
    worker: &Rc<Worker>,
    conn: &mut Conn<S>,
    backend: u32,
    timeouts: Timeouts,
    filters: &RouteFilters<'_>,
    table: &RouteTable,
) -> Outcome {
    let first_endpoint = next_endpoint(worker, table, backend);
    let head = &conn.head;
    let is_head = head.method.get(&conn.buf) == b"HEAD";
    let http10 = head.minor_version == 0;
    let client_keep_alive = head.keep_alive && !worker.draining();
    let body = head.body.unwrap_or(BodyKind::Empty);
    let expect_continue = head.expect_continue;
    let head_len = head.len;
    let grpc_timeout = if conn.grpc {
        head.headers
            .iter()
            .find(|h| h.name.get(&conn.buf).eq_ignore_ascii_case(b"grpc-timeout"))
            .and_then(|h| parse_grpc_timeout(h.value.get(&conn.buf)))
    } else {
        None
    };
    // WebSocket (RFC 6455) is the upgrade we relay: its Upgrade and
    // Connection fields, hop-by-hop otherwise, go on to the backend. Other
    // upgrades (h2c among them) are dropped and the request served as is.
    let upgrade = if head.upgrade && !http10 && body == BodyKind::Empty {
        head.headers
            .iter()
            .find(|h| h.name.get(&conn.buf).eq_ignore_ascii_case(b"upgrade"))
            .map(|h| h.value.str(&conn.buf).to_owned())
            .filter(|v| v.eq_ignore_ascii_case("websocket"))
    } else {
        None
    };
    let mut request = std::mem::take(&mut conn.out);
    request.clear();
    write_request_head(
        &conn.buf,
        head,
        conn.peer,
        conn.tls.is_some(),
        http10,
        filters,
        &mut conn.scratch,
        &mut request,
    );
    if let Some(u) = &upgrade {
        request.truncate(request.len() - 2);
        write_field(&mut request, "connection", "upgrade");
        write_field(&mut request, "upgrade", u);
        request.extend_from_slice(b"\r\n");
    }
    conn.buf.drain(..head_len);

    // A body that is empty, or small and already here, goes with the head,
    // which makes the request replayable on a fresh connection.
    let replayable = match body {
        BodyKind::Empty => true,
        BodyKind::Length(n) if n <= INLINE_BODY && conn.buf.len() as u64 >= n => {
            request.extend_from_slice(&conn.buf[..n as usize]);
            conn.buf.drain(..n as usize);
            true
        }
        _ => false,
    };
    let body_pending = !replayable;
    // Mirrors get a copy of replayable requests (a streamed body is not
    // teed; its mirror is skipped).
    if replayable {
        for m in filters.mirrors() {
            if worker.random() % u64::from(m.denominator) < u64::from(m.numerator) {
                let b = table.backend(m.backend);
                if !b.endpoints.is_empty() {
                    let e = b.endpoints[worker.next_endpoint(m.backend, b.endpoints.len())];
                    let h2c = b.protocol == AppProtocol::H2c;
                    monoio::spawn(mirror(Rc::clone(worker), e, h2c, request.clone()));
                }
            }
        }
    }

    let metrics = worker.metrics();
    // A gRPC client's deadline (`grpc-timeout`) bounds the exchange too:
    // past it the answer is DEADLINE_EXCEEDED, and the backend stops work.
    let deadline = grpc_timeout.into_iter().chain(timeouts.request).min();
    let overall = deadline.map(|t| Instant::now() + t);
    let per_try = timeouts
        .backend_request
        .or(timeouts.request)
        .unwrap_or(worker.cfg.upstream_timeout);
    // Only a request whose bytes we still hold can be sent again.
    let mut retries_left = if replayable {
        filters.retry.map_or(0, |r| r.attempts)
    } else {
        0
    };
    let mut endpoint = first_endpoint;
    let h2c = table.backend(backend).protocol == AppProtocol::H2c;
    let pool_entry = if upgrade.is_some() || h2c {
        // An upgraded connection is never returned, so never borrow one;
        // h2c backends multiplex on their own connection.
        None
    } else {
        worker.pool.take(endpoint)
    };
    let mut pooled = match pool_entry {
        Some(up) => {
            metrics.pool_hits.inc();
            Some(up)
        }
        None => {
            metrics.pool_misses.inc();
            None
        }
    };
    // One free replay when a pooled connection turns out closed. With a
    // retry policy, that replay counts against the policy's attempts like
    // any other connection error.
    let mut stale_retry_used = false;
    let mut resp = ResponseHead::default();
    let mut sent_at;
    let mut up = loop {
        // Moves on to the next endpoint after a pause, if the policy allows.
        let retry_now = |retries_left: &mut u32| {
            let in_time = overall.is_none_or(|d| Instant::now() < d);
            if *retries_left > 0 && in_time {
                *retries_left -= 1;
                Some(filters.retry.map_or(Duration::ZERO, |r| r.backoff))
            } else {
                None
            }
        };
        let mut up = match pooled.take() {
            Some(up) => up,
            None => match connect(worker, endpoint, h2c).await {
                Ok(up) => up,
                Err(f) => {
                    if let Some(pause) = retry_now(&mut retries_left) {
                        monoio::time::sleep(pause).await;
                        endpoint = next_endpoint(worker, table, backend);
                        continue;
                    }
                    return fail(worker, conn, request, f, body_pending, client_keep_alive).await;
                }
            },
        };
        sent_at = Instant::now();
        let deadline = overall.map_or(sent_at + per_try, |d| d.min(sent_at + per_try));
        if !write_keep(&mut up, &mut request).await {
            if up.reused && replayable && !stale_retry_used && filters.retry.is_none() {
                stale_retry_used = true;
                continue;
            }
            if let Some(pause) = retry_now(&mut retries_left) {
                monoio::time::sleep(pause).await;
                endpoint = next_endpoint(worker, table, backend);
                continue;
            }
            return fail(
                worker,
                conn,
                request,
                Failure::UpstreamBroken,
                body_pending,
                client_keep_alive,
            )
            .await;
        }
        if body_pending {
            if expect_continue && conn.buf.is_empty() {
                request.clear();
                request.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                let n = request.len();
                if write_all(&mut conn.stream, &mut request).await.is_err() {
                    conn.out = request;
                    return Outcome::local(false, CLIENT_CLOSED);
                }
                conn.sent(worker, n);
            }
            let framing = match body {
                BodyKind::Length(n) => Framing::Length(n),
                _ => Framing::Chunked(ChunkedDecoder::new()),
            };
            let copied = copy_body(
                &mut conn.stream,
                &mut conn.buf,
                &mut up.stream,
                framing,
                worker.cfg.idle_timeout,
            )
            .await;
            match copied {
                Ok(moved) => conn.received(worker, moved.read as usize),
                Err(CopyError::Write) => {
                    return fail(worker, conn, request, Failure::UpstreamBroken, true, false).await
                }
                Err(CopyError::Invalid(e)) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "malformed request body");
                    return fail(worker, conn, request, Failure::BadRequest, true, false).await;
                }
                Err(CopyError::Timeout) => {
                    return fail(worker, conn, request, Failure::HeadTimeout, true, false).await
                }
                Err(CopyError::Read) => {
                    conn.out = request;
                    return Outcome::local(false, CLIENT_CLOSED);
                }
            }
        }
        let failure = match read_response_head(
            &mut up,
            is_head,
            upgrade.is_some(),
            deadline,
            &mut resp,
        )
        .await
        {
            Ok(()) => {
                let retryable = filters
                    .retry
                    .is_some_and(|r| r.codes.contains(&resp.status));
                if retryable {
                    if let Some(pause) = retry_now(&mut retries_left) {
                        // The unread answer makes this connection unusable;
                        // it is dropped, and the request goes elsewhere.
                        monoio::time::sleep(pause).await;
                        endpoint = next_endpoint(worker, table, backend);
                        continue;
                    }
                }
                break up;
            }
            Err(UpstreamError::ClosedEarly)
                if up.reused && replayable && !stale_retry_used && filters.retry.is_none() =>
            {
                stale_retry_used = true;
                continue;
            }
            Err(UpstreamError::Timeout) => Failure::UpstreamTimeout,
            Err(UpstreamError::ClosedEarly) => Failure::UpstreamReset,
            Err(UpstreamError::Broken) => Failure::UpstreamBroken,
        };
        if let Some(pause) = retry_now(&mut retries_left) {
            monoio::time::sleep(pause).await;
            endpoint = next_endpoint(worker, table, backend);
            continue;
        }
        return fail(worker, conn, request, failure, false, client_keep_alive).await;
    };
    let upstream_time = sent_at.elapsed();
    metrics.upstream_duration.observe(upstream_time);
    let served_by = up.addr;
    let relayed = |keep_alive: bool| Outcome {
        keep_alive,
        status: resp.status,
        upstream: Some((served_by, upstream_time)),
        upgraded: None,
    };
    if resp.status == 101 {
        // Boxed, like `connect` and `fail`: a path most requests never
        // take should not widen this future, built and moved per request.
        return Box::pin(switch_protocols(
            worker,
            conn,
            up,
            &resp,
            request,
            filters,
            relayed(false),
        ))
        .await;
    }

    // Relay the response.
    let resp_body = resp.body.unwrap_or(BodyKind::Empty);
    // Re-checked here: a drain may have begun while the request was out.
    let keep_alive = client_keep_alive && !worker.draining() && resp_body != BodyKind::UntilClose;
    let mut out = request;
    out.clear();
    write_response_head(
        &up.buf,
        &resp,
        keep_alive,
        http10,
        filters,
        &conn.cors_response,
        &mut out,
    );
    up.buf.drain(..resp.len);
    let mut body_done = matches!(resp_body, BodyKind::Empty);
    if let BodyKind::Length(n) = resp_body {
        if n <= INLINE_BODY && up.buf.len() as u64 >= n {
            out.extend_from_slice(&up.buf[..n as usize]);
            up.buf.drain(..n as usize);
            body_done = true;
        }
    }
    let head_bytes = out.len();
    if write_all(&mut conn.stream, &mut out).await.is_err() {
        conn.out = out;
        return Outcome {
            status: CLIENT_CLOSED,
            ..relayed(false)
        };
    }
    conn.out = out;
    conn.sent(worker, head_bytes);
    if !body_done {
        let framing = match resp_body {
            BodyKind::Length(n) => Framing::Length(n),
            BodyKind::Chunked => Framing::Chunked(ChunkedDecoder::new()),
            _ => Framing::UntilClose,
        };
        let streamed = copy_body(
            &mut up.stream,
            &mut up.buf,
            &mut conn.stream,
            framing,
            worker.cfg.upstream_timeout,
        )
        .await;
        match streamed {
            Ok(moved) => conn.sent(worker, moved.written as usize),
            Err(e) => {
                // The head is out; all we can do is cut the connection so the
                // client sees a truncated response rather than a wrong one.
                tracing::debug!(upstream = %up.addr, error = ?e, "response body interrupted");
                return relayed(false);
            }
        }
    }
    let reusable =
        resp.keep_alive && !http10 && resp_body != BodyKind::UntilClose && up.buf.is_empty();
    if reusable {
        worker.pool.put(up);
    }
    relayed(keep_alive)
}

/// Relays a 101 answer to an upgrade; the caller then splices the two
/// connections. Bytes that followed either head are passed on first.
async fn switch_protocols<S: Stream>(
    worker: &Worker,
    conn: &mut Conn<S>,
    mut up: Upstream,
    resp: &ResponseHead,
    mut out: Vec<u8>,
    filters: &RouteFilters<'_>,
    outcome: Outcome,
) -> Outcome {
    let value = resp
        .headers
        .iter()
        .find(|h| h.name.get(&up.buf).eq_ignore_ascii_case(b"upgrade"))
        .map(|h| h.value.str(&up.buf).to_owned())
        .unwrap_or_else(|| "websocket".to_owned());
    out.clear();
    write_response_head(
        &up.buf,
        resp,
        true,
        false,
        filters,
        &conn.cors_response,
        &mut out,
    );
    out.truncate(out.len() - 2);
    write_field(&mut out, "connection", "upgrade");
    write_field(&mut out, "upgrade", &value);
    out.extend_from_slice(b"\r\n");
    up.buf.drain(..resp.len);
    out.extend_from_slice(&up.buf);
    up.buf.clear();
    let n = out.len();
    let written = write_all(&mut conn.stream, &mut out).await;
    conn.out = out;
    if written.is_err() {
        return Outcome {
            status: CLIENT_CLOSED,
            ..outcome
        };
    }
    conn.sent(worker, n);
    if !conn.buf.is_empty() {
        let mut early = std::mem::take(&mut conn.buf);
        if write_all(&mut up.stream, &mut early).await.is_err() {
            return outcome;
        }
        conn.buf = early;
    }
    Outcome {
        upgraded: Some(up),
        ..outcome
    }
}

/// A `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The next endpoint of `backend` in this worker's round robin (the caller
/// checked that it has endpoints).
fn next_endpoint(worker: &Worker, table: &RouteTable, backend: u32) -> SocketAddr {
    let b = table.backend(backend);
    b.endpoints[worker.next_endpoint(backend, b.endpoints.len())]
}

/// Connects to `endpoint`, counting the outcome. Boxed: `forward`'s future
/// is built and moved on every request, and most requests take a pooled
/// connection; this future inline would widen it.
fn connect(
    worker: &Worker,
    endpoint: SocketAddr,
    h2c: bool,
) -> Pin<Box<impl Future<Output = Result<Upstream, Failure>> + '_>> {
    Box::pin(async move {
        let result = if h2c {
            Upstream::h2c(&worker.h2c, endpoint, worker.cfg.connect_timeout).await
        } else {
            Upstream::connect(endpoint, worker.cfg.connect_timeout).await
        };
        match result {
            Ok(up) => {
                worker.metrics().upstream_connects.inc();
                Ok(up)
            }
            Err(e) => {
                worker.metrics().upstream_connect_errors.inc();
                tracing::debug!(upstream = %endpoint, error = ?e, "upstream connect failed");
                Err(match e {
                    ConnectError::Failed | ConnectError::Timeout => Failure::ConnectFailed,
                })
            }
        }
    })
}

/// Answers `failure` downstream. If the request body was not consumed, the
/// connection must close after the answer. Boxed, as `connect` is, to keep
/// this rarely taken path out of `forward`'s future.
fn fail<'a, S: Stream>(
    worker: &'a Worker,
    conn: &'a mut Conn<S>,
    request: Vec<u8>,
    failure: Failure,
    body_unread: bool,
    keep_alive: bool,
) -> Pin<Box<impl Future<Output = Outcome> + 'a>> {
    Box::pin(async move {
        conn.out = request;
        let keep = keep_alive && !body_unread;
        answer_local(worker, conn, failure, !keep).await;
        Outcome::local(keep, failure.status())
    })
}

/// Writes the whole request, keeping its bytes for a possible replay.
async fn write_keep(up: &mut Upstream, request: &mut Vec<u8>) -> bool {
    match &mut up.stream {
        UpstreamIo::Tcp(s) => {
            let b = std::mem::take(request);
            let (result, b) = s.write_all(b).await;
            *request = b;
            result.is_ok()
        }
        UpstreamIo::H2(s) => {
            let mut copy = request.clone();
            let n = copy.len();
            s.write_prefix(&mut copy, n).await.is_ok()
        }
    }
}

async fn read_response_head(
    up: &mut Upstream,
    head_request: bool,
    upgrade: bool,
    deadline: Instant,
    resp: &mut ResponseHead,
) -> Result<(), UpstreamError> {
    loop {
        if !up.buf.is_empty() {
            match parse_response(&up.buf, head_request, resp) {
                // Interim responses (100, 102, 103) are not relayed: we
                // answered Expect ourselves.
                Ok(true) if (100..200).contains(&resp.status) && resp.status != 101 => {
                    up.buf.drain(..resp.len);
                    continue;
                }
                // 101 only answers an upgrade we asked for.
                Ok(true) if resp.status == 101 && !upgrade => return Err(UpstreamError::Broken),
                Ok(true) => return Ok(()),
                Ok(false) if up.buf.len() > MAX_RESPONSE_HEAD => return Err(UpstreamError::Broken),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(upstream = %up.addr, error = %e, "malformed response");
                    return Err(UpstreamError::Broken);
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let got_bytes = !up.buf.is_empty();
        match monoio::time::timeout(left, read_more(&mut up.stream, &mut up.buf)).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Ok(0) | Err(_)) if !got_bytes => return Err(UpstreamError::ClosedEarly),
            Ok(Ok(0) | Err(_)) => return Err(UpstreamError::Broken),
            Ok(Ok(_)) => {}
        }
    }
}

/// Appends an address as text: IPv4 without the formatting machinery (it
/// goes into every forwarded request), IPv6 through `Display`.
fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// The origin-form part of a request target.
fn origin_form(target: &str) -> &str {
    if target.starts_with('/') || target == "*" {
        return target;
    }
    let rest = target.find("://").map_or(target, |i| &target[i + 3..]);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// The filters that shape one forwarded request: the rule's and the chosen
/// backendRef's (applied in that order), and the PathPrefix the rule matched
/// (for ReplacePrefixMatch).
pub(crate) struct RouteFilters<'t> {
    pub(crate) retry: Option<&'t Retry>,
    pub(crate) rule: &'t Filters,
    pub(crate) backend: &'t Filters,
    pub(crate) prefix: Option<&'t str>,
}

impl RouteFilters<'_> {
    fn request_headers(&self) -> impl Iterator<Item = &HeaderModifier> + Clone {
        self.rule
            .request_headers
            .iter()
            .chain(&self.backend.request_headers)
    }

    fn response_headers(&self) -> impl Iterator<Item = &HeaderModifier> + Clone {
        self.rule
            .response_headers
            .iter()
            .chain(&self.backend.response_headers)
    }

    /// The URLRewrite in force: the backendRef's if it has one.
    fn rewrite(&self) -> Option<&Rewrite> {
        self.backend.rewrite.as_ref().or(self.rule.rewrite.as_ref())
    }

    fn mirrors(&self) -> impl Iterator<Item = &Mirror> {
        self.rule.mirrors.iter().chain(&self.backend.mirrors)
    }
}

/// Writes header fields with modifiers applied (Gateway API
/// HTTPHeaderFilter): a field named by `remove` or `set` is dropped, `add`
/// values are appended to the last field of that name (comma-joined) or
/// added, and `set` fields come last. `skip` drops fields unconditionally;
/// `extra` may append to a field's value.
fn write_fields<'m>(
    buf: &[u8],
    fields: &[HeaderSpan],
    mods: impl Iterator<Item = &'m HeaderModifier> + Clone,
    mut skip: impl FnMut(&[u8]) -> bool,
    mut extra: impl FnMut(usize, &mut Vec<u8>),
    out: &mut Vec<u8>,
) {
    let named =
        |list: &[String], name: &[u8]| list.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes()));
    let replaced = |name: &[u8]| {
        mods.clone().any(|m| {
            named(&m.remove, name)
                || m.set
                    .iter()
                    .any(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
        })
    };
    let last_of = |name: &str| {
        fields
            .iter()
            .rposition(|f| !f.hop_by_hop && f.name.get(buf).eq_ignore_ascii_case(name.as_bytes()))
    };
    for (i, f) in fields.iter().enumerate() {
        let name = f.name.get(buf);
        if f.hop_by_hop || skip(name) || replaced(name) {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(f.value.get(buf));
        extra(i, out);
        for m in mods.clone() {
            for (n, v) in &m.add {
                if last_of(n) == Some(i) {
                    out.push(b',');
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    for m in mods.clone() {
        for (n, v) in &m.add {
            let present = last_of(n).is_some_and(|i| !replaced(fields[i].name.get(buf)));
            if !present {
                write_field(out, n, v);
            }
        }
        for (n, v) in &m.set {
            write_field(out, n, v);
        }
    }
}

fn write_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[allow(clippy::too_many_arguments)]
fn write_request_head(
    buf: &[u8],
    head: &RequestHead,
    peer: SocketAddr,
    https: bool,
    http10: bool,
    filters: &RouteFilters<'_>,
    scratch: &mut String,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(head.method.get(buf));
    out.push(b' ');
    let target = origin_form(head.target.str(buf));
    match filters.rewrite().and_then(|r| r.path.as_ref()) {
        Some(m) => {
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (target, None),
            };
            modify_path(path, filters.prefix, m, scratch);
            out.extend_from_slice(scratch.as_bytes());
            if let Some(q) = query {
                out.push(b'?');
                out.extend_from_slice(q.as_bytes());
            }
        }
        None => out.extend_from_slice(target.as_bytes()),
    }
    out.extend_from_slice(if http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let new_host = filters.rewrite().and_then(|r| r.hostname.as_deref());
    let last_xff = head
        .headers
        .iter()
        .rposition(|h| h.name.get(buf).eq_ignore_ascii_case(b"x-forwarded-for"));
    write_fields(
        buf,
        &head.headers,
        filters.request_headers(),
        |name| {
            name.eq_ignore_ascii_case(b"expect")
                || name.eq_ignore_ascii_case(b"x-forwarded-proto")
                || (new_host.is_some() && name.eq_ignore_ascii_case(b"host"))
        },
        |i, out| {
            if Some(i) == last_xff {
                out.extend_from_slice(b", ");
                push_ip(out, peer.ip());
            }
        },
        out,
    );
    if let Some(h) = new_host {
        write_field(out, "host", h);
    }
    if last_xff.is_none() {
        out.extend_from_slice(b"x-forwarded-for: ");
        push_ip(out, peer.ip());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if https {
        b"x-forwarded-proto: https\r\n"
    } else {
        b"x-forwarded-proto: http\r\n"
    });
    if head.body == Some(BodyKind::Chunked) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn write_response_head(
    buf: &[u8],
    resp: &ResponseHead,
    keep_alive: bool,
    http10: bool,
    filters: &RouteFilters<'_>,
    extra: &[u8],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(resp.status).as_bytes());
    out.push(b' ');
    let phrase = resp.reason.get(buf);
    if phrase.is_empty() {
        out.extend_from_slice(reason(resp.status).as_bytes());
    } else {
        out.extend_from_slice(phrase);
    }
    out.extend_from_slice(b"\r\n");
    // Fields the proxy adds itself (CORS) replace any the backend sent.
    let ours = |name: &[u8]| {
        extra
            .split(|&b| b == b'\n')
            .filter_map(|l| l.split(|&b| b == b':').next())
            .any(|n| !n.is_empty() && n.eq_ignore_ascii_case(name))
    };
    write_fields(
        buf,
        &resp.headers,
        filters.response_headers(),
        ours,
        |_, _| {},
        out,
    );
    out.extend_from_slice(extra);
    if resp.body == Some(BodyKind::Chunked) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Sends a copy of a request to a mirror endpoint and discards the answer.
/// Runs as its own task: a slow or dead mirror never delays the response.
async fn mirror(worker: Rc<Worker>, endpoint: SocketAddr, h2c: bool, mut request: Vec<u8>) {
    let Ok(mut up) = connect(&worker, endpoint, h2c).await else {
        return;
    };
    if write_all(&mut up.stream, &mut request).await.is_err() {
        return;
    }
    let mut resp = ResponseHead::default();
    let deadline = Instant::now() + worker.cfg.upstream_timeout.min(Duration::from_secs(10));
    let _ = read_response_head(&mut up, false, false, deadline, &mut resp).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_core::http1::parse_request;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.3.45",
            "255.255.255.255",
            "::1",
            "2001:db8::8:1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = b"x".to_vec();
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x{ip}").into_bytes());
        }
    }

    #[test]
    fn grpc_timeouts_parse_with_their_units() {
        assert_eq!(parse_grpc_timeout(b"1S"), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_grpc_timeout(b"250m"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout(b"S"), None);
        assert_eq!(parse_grpc_timeout(b"123456789S"), None);
        assert_eq!(parse_grpc_timeout(b"5x"), None);
    }

    #[test]
    fn request_head_drops_hop_by_hop_and_adds_forwarding_fields() {
        let raw = b"POST http://h.example/p?q=1 HTTP/1.1\r\nHost: h.example\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\nX-Keep: k\r\n\r\n";
        let mut head = RequestHead::default();
        assert!(parse_request(raw, &mut head).unwrap());
        let mut out = Vec::new();
        let none = Filters::default();
        let filters = RouteFilters {
            retry: None,
            rule: &none,
            backend: &none,
            prefix: None,
        };
        write_request_head(
            raw,
            &head,
            "127.0.0.9:5555".parse().unwrap(),
            false,
            false,
            &filters,
            &mut String::new(),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "POST /p?q=1 HTTP/1.1\r\nHost: h.example\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.9\r\nX-Keep: k\r\nx-forwarded-proto: http\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
