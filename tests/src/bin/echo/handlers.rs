//! Request handling: echo-basic's HTTP routes and Shardgate's `/_shardgate/` test endpoints.
//!
//! Route table, following echo-basic:
//!
//! | listener | path | handler |
//! |---|---|---|
//! | any | `/_shardgate/...` | Shardgate test endpoints (never used by the conformance suite) |
//! | plain HTTP, HTTPS | `/health`, `/status/NNN`, `/retry/...`, `/ws`, anything else | Go `ServeMux` routes |
//! | h2c | anything | the echo answer; HTTP/1.x without `Upgrade: h2c` gets 400 |

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{
    HeaderName, HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION,
    SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, TRANSFER_ENCODING,
    UPGRADE,
};
use hyper::http::request::Parts;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::goish::{
    canonical_header_key, clean_path, collapse_double_slashes, first_value, go_json_escape,
    parse_echo_set_header, parse_go_duration, parse_query,
};
use crate::https::TlsAssertions;
use crate::{App, ConnCtx, Listener};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// How much of an unread request body we swallow before answering. Reading it keeps the
/// HTTP/1.1 connection reusable (hyper closes connections whose body was left unread), which
/// the keep-alive tests rely on; past this we give up and let the connection close.
const DRAIN_LIMIT: u64 = 64 << 20;
/// Go's `maxFormSize` for url-encoded bodies read by `Request.FormValue`.
const MAX_FORM_SIZE: usize = 10 << 20;
/// Frame size of generated `/_shardgate/bytes` bodies.
const FRAME_SIZE: usize = 16 * 1024;
/// The byte pattern `(i * 31 + 7) % 251` repeats every 251 bytes.
const PATTERN_PERIOD: usize = 251;
/// Bound on the `X-Body-Sha256` cache; cleared wholesale when full.
const SHA_CACHE_ENTRIES: usize = 256;

const X_ECHO_POD: HeaderName = HeaderName::from_static("x-echo-pod");
const X_ECHO_SET_HEADER: HeaderName = HeaderName::from_static("x-echo-set-header");
const X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");
const X_BODY_SHA256: HeaderName = HeaderName::from_static("x-body-sha256");
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// Entry point for every request on every listener.
pub async fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Response<RespBody> {
    let listener = &ctx.listener;
    // Stats requests are not counted, so a test can read the counters without moving them.
    if req.uri().path() != "/_shardgate/stats" {
        listener.requests.fetch_add(1, Ordering::Relaxed);
    }
    if !req.uri().path().starts_with("/_shardgate/") {
        record_seen(listener, &req);
    }
    if listener.app.verbose {
        eprintln!(
            "shardgate-echo: pod={} {} {} {:?}",
            listener.pod,
            req.method(),
            req.uri(),
            req.version()
        );
    }
    let mut resp = route(&ctx, req).await;
    resp.headers_mut()
        .insert(X_ECHO_POD, listener.pod_header.clone());
    resp
}

async fn route(ctx: &ConnCtx, req: Request<Incoming>) -> Response<RespBody> {
    // Extensions work on every listener and protocol, so tests can use them anywhere.
    if let Some(endpoint) = req.uri().path().strip_prefix("/_shardgate/") {
        let endpoint = endpoint.to_owned();
        return shardgate_endpoint(ctx, &endpoint, req).await;
    }
    if ctx.listener.h2c {
        h2c_port(ctx, req).await
    } else {
        http_port(ctx, req).await
    }
}

/// echo-basic's h2c port serves the echo handler directly (no `/health`, `/status`, ...)
/// and turns down HTTP/1.x unless it asks for the upgrade. That 400 is how the conformance
/// suite notices a gateway that talks HTTP/1.1 to an `appProtocol: kubernetes.io/h2c`
/// backend, so it is kept even though the connection itself accepts HTTP/1.1.
async fn h2c_port(ctx: &ConnCtx, req: Request<Incoming>) -> Response<RespBody> {
    let asks_upgrade = req
        .headers()
        .get(UPGRADE)
        .is_some_and(|v| v.as_bytes() == b"h2c");
    if req.version() != Version::HTTP_2 && !asks_upgrade {
        drain(req.into_body()).await;
        return text(StatusCode::BAD_REQUEST, "Expected h2c request");
    }
    // Like Go, we answer an upgrade request over HTTP/1.1 without switching protocols.
    echo(ctx, req).await
}

/// echo-basic's plain HTTP port: `preserveSlashes` wrapped around a Go `ServeMux`.
async fn http_port(ctx: &ConnCtx, req: Request<Incoming>) -> Response<RespBody> {
    let (parts, body) = req.into_parts();

    // Go's server answers `OPTIONS *` itself.
    if parts.method == Method::OPTIONS && parts.uri.path() == "*" {
        drain(body).await;
        return with_empty_body(StatusCode::OK);
    }

    // Collapsing `//` happens before the mux sees the path; the echoed `path` keeps it.
    let path = collapse_double_slashes(parts.uri.path());
    if parts.method != Method::CONNECT {
        let cleaned = clean_path(&path);
        if cleaned != path {
            drain(body).await;
            return redirect(&parts, &cleaned);
        }
    }

    match path.as_str() {
        "/health" => {
            drain(body).await;
            text(StatusCode::OK, "OK")
        }
        // A subtree pattern (`/status/`) makes the mux redirect its bare name.
        "/status" | "/retry" => {
            drain(body).await;
            redirect(&parts, &format!("{path}/"))
        }
        p if p.starts_with("/status/") => {
            drain(body).await;
            status_handler(&parts)
        }
        p if p.starts_with("/retry/") => retry_handler(ctx, parts, body).await,
        "/ws" => {
            drain(body).await;
            websocket(ctx, parts)
        }
        _ => {
            let form = read_form(&parts, body).await;
            echo_answer(ctx, &parts, &form).await
        }
    }
}

/// echo-basic's `/ws`: the x/net/websocket handshake (`ws.rs`), then the frame echo on the
/// upgraded connection. A refused handshake is answered and the connection closed, as the
/// Go library does on the hijacked socket.
fn websocket(ctx: &ConnCtx, mut parts: Parts) -> Response<RespBody> {
    let accepted = match crate::ws::accept(&parts.method, &parts.headers) {
        Ok(accepted) => accepted,
        Err(refused) => {
            let mut resp = response(refused.status, full(refused.body));
            if refused.says_version {
                resp.headers_mut()
                    .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            }
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    };
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        // HTTP/2 has no Upgrade; x/net/websocket cannot hijack such a request either.
        return process_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "websocket: response does not implement http.Hijacker",
        );
    };
    let verbose = ctx.listener.app.verbose;
    let pod = ctx.listener.pod.clone();
    tokio::spawn(async move {
        let result = match on_upgrade.await {
            Ok(upgraded) => crate::ws::echo(TokioIo::new(upgraded)).await,
            Err(e) => Err(std::io::Error::other(e)),
        };
        if let Err(e) = result {
            if verbose {
                eprintln!("shardgate-echo: websocket on pod {pod}: {e}");
            }
        }
    });
    let mut resp = with_empty_body(StatusCode::SWITCHING_PROTOCOLS);
    let headers = resp.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = HeaderValue::from_str(&accepted.accept_key).expect("base64 is a header value");
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(protocol) = accepted.protocol {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    resp
}

/// The echo answer, reading the request (and any url-encoded form body) first.
async fn echo(ctx: &ConnCtx, req: Request<Incoming>) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    let form = read_form(&parts, body).await;
    echo_answer(ctx, &parts, &form).await
}

/// The JSON document of echo-basic's `RequestAssertions`.
#[derive(Serialize)]
struct EchoAnswer<'a> {
    path: &'a str,
    host: &'a str,
    method: &'a str,
    proto: &'a str,
    headers: BTreeMap<String, Vec<String>>,
    #[serde(rename = "httpPort")]
    http_port: &'a str,
    namespace: &'a str,
    ingress: &'a str,
    service: &'a str,
    pod: &'a str,
    /// Only on the HTTPS port.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'a TlsAssertions>,
}

async fn echo_answer(
    ctx: &ConnCtx,
    parts: &Parts,
    form: &[(String, String)],
) -> Response<RespBody> {
    if let Err(resp) = go_delay(form, "delay").await {
        return resp;
    }

    let listener = &ctx.listener;
    let app: &App = &listener.app;
    let path = request_uri(parts);
    let host = request_host(parts);
    let answer = EchoAnswer {
        path: &path,
        host: &host,
        method: parts.method.as_str(),
        proto: proto(parts.version),
        headers: go_request_headers(parts),
        http_port: &app.http_port_field,
        namespace: &listener.namespace,
        ingress: &app.ingress,
        service: &listener.service,
        pod: &listener.pod,
        tls: ctx.tls.as_ref(),
    };
    // Go uses json.MarshalIndent(v, "", " "): one space per level.
    let mut out = Vec::with_capacity(512);
    let mut serializer = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b" "),
    );
    if let Err(e) = answer.serialize(&mut serializer) {
        return process_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    let json = go_json_escape(String::from_utf8_lossy(&out).into_owned());

    let mut resp = response(StatusCode::OK, full(json));
    let headers = resp.headers_mut();
    apply_echo_set_header(parts, headers);
    // Set after X-Echo-Set-Header, as in echo-basic, so these two always win.
    headers.insert(CONTENT_TYPE, APPLICATION_JSON);
    headers.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    resp
}

/// Go's `Request.RequestURI`: the request target as received.
fn request_uri(parts: &Parts) -> String {
    request_target(&parts.uri, parts.version)
}

fn request_target(uri: &Uri, version: Version) -> String {
    // An HTTP/1 absolute-form target is echoed whole; HTTP/2 always has `:path` only.
    if version != Version::HTTP_2 && uri.scheme().is_some() {
        return uri.to_string();
    }
    match uri.path_and_query() {
        Some(pq) => pq.as_str().to_owned(),
        // Authority-form (CONNECT) targets have no path.
        None => uri.to_string(),
    }
}

/// Go's `Request.Host`: the target's authority when it has one (`:authority`, absolute
/// form), otherwise the `Host` header.
fn request_host(parts: &Parts) -> String {
    if let Some(authority) = parts.uri.authority() {
        return authority.as_str().to_owned();
    }
    parts
        .headers
        .get(HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

fn proto(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The request headers as Go's `Request.Header` holds them: canonical names, one list
/// entry per header line, without `Host` and `Transfer-Encoding` (Go moves those into
/// other fields).
fn go_request_headers(parts: &Parts) -> BTreeMap<String, Vec<String>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        if name == HOST || name == TRANSFER_ENCODING {
            continue;
        }
        headers
            .entry(canonical_header_key(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    // Go's HTTP/2 server merges split Cookie headers back into one value.
    if parts.version == Version::HTTP_2 {
        if let Some(cookies) = headers.get_mut("Cookie") {
            if cookies.len() > 1 {
                *cookies = vec![cookies.join("; ")];
            }
        }
    }
    headers
}

/// Writes the response headers requested through `X-Echo-Set-Header`.
fn apply_echo_set_header(parts: &Parts, headers: &mut hyper::HeaderMap) {
    let values: Vec<String> = parts
        .headers
        .get_all(X_ECHO_SET_HEADER)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    for (name, value) in parse_echo_set_header(values.iter().map(String::as_str)) {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            continue;
        };
        // Framing and hop-by-hop headers would corrupt our own response (or be refused
        // outright on HTTP/2); Go would emit a broken response for them as well.
        if is_framing_or_hop_header(&name) {
            continue;
        }
        // `append`: names that differ only in case are separate entries in Go's map.
        headers.append(name, value);
    }
}

fn is_framing_or_hop_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

/// `/status/NNN`: the status taken from the raw request URI, which must be exactly
/// `/status/` plus three digits (so a query string or `//` gives 400).
fn status_handler(parts: &Parts) -> Response<RespBody> {
    let uri = request_uri(parts);
    let code = uri
        .strip_prefix("/status/")
        .filter(|d| d.len() == 3 && d.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|d| d.parse::<u16>().ok());
    match code {
        None => with_empty_body(StatusCode::BAD_REQUEST),
        // Go panics on WriteHeader(<100) and the client loses the connection; a 500 is
        // the closest thing that is still an answer.
        Some(c) if c < 100 => process_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("invalid WriteHeader code {c}"),
        ),
        // Go sends a 1xx as an informational header and then the implicit 200.
        Some(c) if c < 200 => with_empty_body(StatusCode::OK),
        Some(c) => match StatusCode::from_u16(c) {
            Ok(status) => with_empty_body(status),
            Err(_) => with_empty_body(StatusCode::BAD_REQUEST),
        },
    }
}

/// `/retry/...`: echo-basic's flaky-backend simulator. For each `uuid` the first
/// `succeedAfter` attempts fail (after `delayRetry`, if given): with status `responseCode`
/// when given, otherwise by resetting the TCP connection. Later attempts get the echo.
async fn retry_handler(ctx: &ConnCtx, parts: Parts, body: Incoming) -> Response<RespBody> {
    let query = parse_query(parts.uri.query().unwrap_or_default());
    let uuid = first_value(&query, "uuid").unwrap_or_default().to_owned();
    if uuid.is_empty() {
        drain(body).await;
        return text(StatusCode::BAD_REQUEST, "uuid is required");
    }
    let Some(succeed_after) = first_value(&query, "succeedAfter").and_then(go_atoi) else {
        drain(body).await;
        return text(StatusCode::BAD_REQUEST, "succeedAfter is required");
    };
    let response_code = first_value(&query, "responseCode").and_then(go_atoi);
    let form = read_form(&parts, body).await;

    let listener = &ctx.listener;
    let fail = {
        let mut attempts = listener
            .app
            .retry_attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = attempts
            .entry((listener.namespace.clone(), listener.pod.clone(), uuid))
            .or_insert(0);
        // Counted before the delay, as echo-basic does, so a retry that races a slow
        // attempt sees it.
        if *count < succeed_after {
            *count += 1;
            true
        } else {
            false
        }
    };
    if !fail {
        return echo_answer(ctx, &parts, &form).await;
    }

    if let Err(resp) = go_delay(&form, "delayRetry").await {
        return resp;
    }
    match response_code {
        None => abort_connection(ctx).await,
        Some(code) => match u16::try_from(code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => with_empty_body(status),
            None => process_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("invalid WriteHeader code {code}"),
            ),
        },
    }
}

/// Go's `strconv.Atoi` (optional sign, ASCII digits, 64-bit range).
fn go_atoi(s: &str) -> Option<i64> {
    s.parse().ok()
}

/// Resets the connection carrying this request. The connection task drops the socket with
/// `SO_LINGER=0`; this handler then only waits for that to happen. Over HTTP/2 the whole
/// connection goes, with every stream on it (echo-basic cannot hijack HTTP/2 at all).
async fn abort_connection(ctx: &ConnCtx) -> Response<RespBody> {
    ctx.abort.request();
    let mut closed = ctx.closed.clone();
    // Resolves with an error once the connection task has dropped the socket. Over HTTP/1
    // this future is dropped along with the connection before that.
    let _ = closed.changed().await;
    // Nobody reads this: the socket is gone.
    with_empty_body(StatusCode::INTERNAL_SERVER_ERROR)
}

/// echo-basic's `delayResponse`: sleep for the Go duration in form value `key`.
async fn go_delay(form: &[(String, String)], key: &str) -> Result<(), Response<RespBody>> {
    let Some(value) = first_value(form, key).filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    match parse_go_duration(value) {
        Ok(nanos) => {
            if let Ok(nanos @ 1..) = u64::try_from(nanos) {
                tokio::time::sleep(Duration::from_nanos(nanos)).await;
            }
            Ok(())
        }
        Err(message) => Err(process_error(StatusCode::INTERNAL_SERVER_ERROR, &message)),
    }
}

/// Go's `Request.Form` as `FormValue` sees it: url-encoded body values (POST, PUT, PATCH)
/// first, then the query. Any other body is drained.
async fn read_form(parts: &Parts, body: Incoming) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    if is_urlencoded_form(parts) {
        // Go drops the whole body form when it exceeds the limit; so do we.
        if let Some(bytes) = collect_limited(body, MAX_FORM_SIZE).await {
            pairs = parse_query(&String::from_utf8_lossy(&bytes));
        }
    } else {
        drain(body).await;
    }
    if let Some(query) = parts.uri.query() {
        pairs.extend(parse_query(query));
    }
    pairs
}

fn is_urlencoded_form(parts: &Parts) -> bool {
    if !matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        return false;
    }
    parts.headers.get(CONTENT_TYPE).is_some_and(|v| {
        let media_type = v
            .as_bytes()
            .split(|&c| c == b';')
            .next()
            .unwrap_or_default();
        media_type
            .trim_ascii()
            .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
    })
}

/// Reads a whole body of at most `limit` bytes; `None` if it is larger or fails.
async fn collect_limited(mut body: Incoming, limit: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            if out.len() + data.len() > limit {
                return None;
            }
            out.extend_from_slice(&data);
        }
    }
    Some(out)
}

/// Reads and discards up to `DRAIN_LIMIT` bytes of body; errors just end the draining.
async fn drain(mut body: Incoming) {
    let mut seen: u64 = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            seen += data.len() as u64;
            if seen > DRAIN_LIMIT {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shardgate test endpoints
// ---------------------------------------------------------------------------------------

async fn shardgate_endpoint(
    ctx: &ConnCtx,
    endpoint: &str,
    req: Request<Incoming>,
) -> Response<RespBody> {
    let method = req.method().clone();
    let read_only = method == Method::GET || method == Method::HEAD;
    let uploads = method == Method::POST || method == Method::PUT;
    match endpoint {
        "stats" | "bytes" | "seen" if !read_only => method_not_allowed(req, "GET, HEAD").await,
        "digest" | "echo-body" if !uploads => method_not_allowed(req, "POST, PUT").await,
        "stats" => {
            drain(req.into_body()).await;
            stats(ctx)
        }
        "seen" => {
            let (parts, body) = req.into_parts();
            drain(body).await;
            seen(ctx, &parts)
        }
        "bytes" => pattern_bytes(ctx, req).await,
        "digest" => digest(ctx, req).await,
        "echo-body" => echo_body(req),
        "sleep" => sleep(req).await,
        _ => {
            drain(req.into_body()).await;
            process_error(StatusCode::NOT_FOUND, "unknown /_shardgate/ endpoint")
        }
    }
}

/// `GET /_shardgate/stats`: this listener's counters.
fn stats(ctx: &ConnCtx) -> Response<RespBody> {
    let listener = &ctx.listener;
    let body = serde_json::json!({
        "pod": listener.pod,
        "connections": listener.connections.load(Ordering::Relaxed),
        "requests": listener.requests.load(Ordering::Relaxed),
    });
    json(StatusCode::OK, body.to_string())
}

/// Bound on the distinct request targets `/_shardgate/seen` remembers per listener; the map
/// is cleared when full (a conformance check only asks about targets it just sent).
const SEEN_ENTRIES: usize = 100_000;

/// Counts the request under its raw target, for `/_shardgate/seen`.
fn record_seen(listener: &Listener, req: &Request<Incoming>) {
    let target = request_target(req.uri(), req.version());
    let mut seen = listener.seen.lock().unwrap_or_else(PoisonError::into_inner);
    if seen.len() >= SEEN_ENTRIES && !seen.contains_key(&target) {
        seen.clear();
    }
    *seen.entry(target).or_insert(0) += 1;
}

/// `GET /_shardgate/seen?uri=TARGET`: how many requests this listener received whose raw
/// request target (path and query, as echoed in `path`) was exactly TARGET.
fn seen(ctx: &ConnCtx, parts: &Parts) -> Response<RespBody> {
    let query = parse_query(parts.uri.query().unwrap_or_default());
    let Some(target) = first_value(&query, "uri") else {
        return process_error(StatusCode::BAD_REQUEST, "uri=<request target> is required");
    };
    let count = ctx
        .listener
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(target)
        .copied()
        .unwrap_or(0);
    let body = serde_json::json!({ "pod": ctx.listener.pod, "uri": target, "count": count });
    json(StatusCode::OK, body.to_string())
}

/// `POST|PUT /_shardgate/digest`: length and SHA-256 of the request body, hashed frame by
/// frame as it arrives so arbitrarily large uploads cost no memory.
async fn digest(ctx: &ConnCtx, req: Request<Incoming>) -> Response<RespBody> {
    let chunked = req.headers().get_all(TRANSFER_ENCODING).iter().any(|v| {
        v.as_bytes()
            .split(|&c| c == b',')
            .any(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    });
    let mut body = req.into_body();
    let mut hasher = Sha256::new();
    let mut length: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    length += data.len() as u64;
                    hasher.update(data);
                }
            }
            Err(e) => {
                return process_error(
                    StatusCode::BAD_REQUEST,
                    &format!("reading request body after {length} bytes: {e}"),
                )
            }
        }
    }
    let body = serde_json::json!({
        "length": length,
        "sha256": to_hex(&hasher.finalize()),
        "chunked": chunked,
        "pod": ctx.listener.pod,
    });
    json(StatusCode::OK, body.to_string())
}

/// `POST /_shardgate/echo-body`: the request body streamed straight back, chunked.
fn echo_body(req: Request<Incoming>) -> Response<RespBody> {
    let body = DataOnly(req.into_body()).boxed_unsync();
    let mut resp = response(StatusCode::OK, body);
    resp.headers_mut().insert(CONTENT_TYPE, OCTET_STREAM);
    resp
}

/// `GET /_shardgate/bytes?n=N[&chunked=1]`: N pattern bytes in 16 KiB frames, with the
/// expected digest in `X-Body-Sha256` so the client can check what the proxy delivered.
async fn pattern_bytes(ctx: &ConnCtx, req: Request<Incoming>) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    drain(body).await;
    let query = parse_query(parts.uri.query().unwrap_or_default());
    let Some(n) = first_value(&query, "n").and_then(|v| v.parse::<u64>().ok()) else {
        return process_error(StatusCode::BAD_REQUEST, "n=<byte count> is required");
    };
    let chunked = matches!(first_value(&query, "chunked"), Some("1" | "true"));
    let sha = match pattern_sha256_cached(&ctx.listener.app, n).await {
        Ok(sha) => sha,
        Err(message) => return process_error(StatusCode::INTERNAL_SERVER_ERROR, &message),
    };
    let Ok(sha) = HeaderValue::from_str(&sha) else {
        return process_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "digest is not a header value",
        );
    };

    let body = PatternBody {
        pattern: ctx.listener.app.pattern.clone(),
        offset: 0,
        remaining: n,
        sized: !chunked,
    };
    let mut resp = response(StatusCode::OK, body.boxed_unsync());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, OCTET_STREAM);
    headers.insert(X_BODY_SHA256, sha);
    if !chunked {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    resp
}

/// `/_shardgate/sleep?ms=N`: answers `slept` after N milliseconds (for timeout tests).
async fn sleep(req: Request<Incoming>) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    drain(body).await;
    let query = parse_query(parts.uri.query().unwrap_or_default());
    let Some(ms) = first_value(&query, "ms").and_then(|v| v.parse::<u64>().ok()) else {
        return process_error(StatusCode::BAD_REQUEST, "ms=<milliseconds> is required");
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    text(StatusCode::OK, "slept")
}

async fn method_not_allowed(req: Request<Incoming>, allow: &'static str) -> Response<RespBody> {
    drain(req.into_body()).await;
    let mut resp = process_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

/// The `/_shardgate/bytes` pattern: byte i is `(i * 31 + 7) % 251`. It is one frame plus
/// one period long, so a frame starting at any offset is a zero-copy slice of it.
pub fn bytes_pattern() -> Bytes {
    (0..FRAME_SIZE + PATTERN_PERIOD)
        .map(|i| ((i * 31 + 7) % PATTERN_PERIOD) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Hex SHA-256 of the first `n` pattern bytes. Hashing large bodies takes a while, so it
/// runs on the blocking pool and results are cached (tests ask for the same sizes again).
async fn pattern_sha256_cached(app: &App, n: u64) -> Result<String, String> {
    let cached = app
        .bytes_sha_cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&n)
        .cloned();
    if let Some(sha) = cached {
        return Ok(sha);
    }
    let pattern = app.pattern.clone();
    let sha = tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        for_each_pattern_frame(&pattern, 0, n, |frame| hasher.update(frame));
        to_hex(&hasher.finalize())
    })
    .await
    .map_err(|e| format!("hashing the pattern: {e}"))?;
    let mut cache = app
        .bytes_sha_cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= SHA_CACHE_ENTRIES {
        cache.clear();
    }
    cache.insert(n, sha.clone());
    Ok(sha)
}

/// Calls `f` with successive frames (at most `FRAME_SIZE`) covering pattern bytes
/// `offset .. offset + len`.
fn for_each_pattern_frame(pattern: &[u8], mut offset: u64, len: u64, mut f: impl FnMut(&[u8])) {
    let end = offset + len;
    while offset < end {
        let (start, frame_len) = pattern_frame(offset, end - offset);
        f(&pattern[start..start + frame_len]);
        offset += frame_len as u64;
    }
}

/// Where in the pattern buffer the frame for stream `offset` starts, and its length.
fn pattern_frame(offset: u64, remaining: u64) -> (usize, usize) {
    let start = (offset % PATTERN_PERIOD as u64) as usize;
    let len = remaining.min(FRAME_SIZE as u64) as usize;
    (start, len)
}

/// Streams pattern bytes as `Bytes` sub-slices of the shared buffer.
struct PatternBody {
    pattern: Bytes,
    offset: u64,
    remaining: u64,
    /// Advertise the exact length (so hyper sends Content-Length); otherwise leave it
    /// unknown, which makes HTTP/1.1 use chunked encoding.
    sized: bool,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let (start, len) = pattern_frame(this.offset, this.remaining);
        let frame = this.pattern.slice(start..start + len);
        this.offset += len as u64;
        this.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        // An unsized empty body must still look open, or hyper would add Content-Length: 0.
        self.sized && self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

/// A request body passed through as a response body: data frames only (trailers dropped),
/// and without the request's size hint, so the echo goes out chunked as it arrives.
struct DataOnly(Incoming);

impl Body for DataOnly {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match ready!(Pin::new(&mut this.0).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if frame.is_data() {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => return Poll::Ready(None),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Response helpers
// ---------------------------------------------------------------------------------------

fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn response(status: StatusCode, body: RespBody) -> Response<RespBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp
}

fn with_empty_body(status: StatusCode) -> Response<RespBody> {
    response(
        status,
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    )
}

/// A plain-text answer, with the content type Go's sniffing would pick.
fn text(status: StatusCode, body: &'static str) -> Response<RespBody> {
    let mut resp = response(status, full(body));
    resp.headers_mut().insert(CONTENT_TYPE, TEXT_PLAIN);
    resp
}

fn json(status: StatusCode, body: String) -> Response<RespBody> {
    let mut resp = response(status, full(body));
    resp.headers_mut().insert(CONTENT_TYPE, APPLICATION_JSON);
    resp
}

/// echo-basic's `processError`: `{"message": ...}` as JSON, with `nosniff`.
fn process_error(status: StatusCode, message: &str) -> Response<RespBody> {
    let body = go_json_escape(serde_json::json!({ "message": message }).to_string());
    let mut resp = json(status, body);
    resp.headers_mut().insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    resp
}

/// Go's `ServeMux` redirect (`http.Redirect` with 301), keeping the query string.
fn redirect(parts: &Parts, path: &str) -> Response<RespBody> {
    let location = match parts.uri.query() {
        Some(query) if !query.is_empty() => format!("{path}?{query}"),
        _ => path.to_owned(),
    };
    let Ok(location_value) = HeaderValue::from_str(&location) else {
        return with_empty_body(StatusCode::BAD_REQUEST);
    };
    let body = if parts.method == Method::GET {
        full(format!(
            "<a href=\"{}\">Moved Permanently</a>.\n\n",
            html_escape(&location)
        ))
    } else {
        full(Bytes::new())
    };
    let mut resp = response(StatusCode::MOVED_PERMANENTLY, body);
    let headers = resp.headers_mut();
    headers.insert(LOCATION, location_value);
    if parts.method == Method::GET || parts.method == Method::HEAD {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    resp
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_frames_reproduce_the_formula() {
        let pattern = bytes_pattern();
        let mut streamed = Vec::new();
        // Start mid-period to exercise the slicing.
        for_each_pattern_frame(&pattern, 1000, 100_000, |f| {
            assert!(f.len() <= FRAME_SIZE);
            streamed.extend_from_slice(f);
        });
        let expected: Vec<u8> = (1000u64..101_000)
            .map(|i| ((i * 31 + 7) % 251) as u8)
            .collect();
        assert_eq!(streamed, expected);
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(to_hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
