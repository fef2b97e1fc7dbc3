//! HTTP traffic checks: one request as the Go client would send it, and the comparison Go's
//! `CompareRoundTrip` makes (CASES-CONVENTIONS.md "http_cases", README "Notes for a runner").

use super::cases::{ExpectedRequest, HttpCase, Redirect, Request};
use crate::client::{Client, Response};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Go's per-request timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request ready to go on the wire.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub protocol: String,
    pub scheme: String,
    pub method: String,
    pub host: String,
    pub path: String,
    /// The case's headers, compared at the backend when no `expected_request` is given.
    pub headers: Vec<(String, String)>,
    /// Sent too, never compared (`X-Echo-Set-Header`, entropy).
    pub extra: Vec<(String, String)>,
    /// The case named the Host (otherwise it is the dialed address, noise in messages).
    pub explicit_host: bool,
    /// For HTTPS: SNI, root pool and client certificate.
    pub tls: Option<TlsParams>,
}

/// How an HTTPS case's client is set up.
#[derive(Debug, Clone)]
pub struct TlsParams {
    pub sni: String,
    /// `namespace/name:key` of the only certificate the client trusts.
    pub trust_anchor: String,
    /// `namespace/name` of the Secret the client presents when asked.
    pub client_cert: Option<String>,
}

impl Prepared {
    /// The case's request to `addr`: `{uuid}` filled in, Host defaulting to the dialed
    /// address (without `:80`/`:443`, as Go's URL leaves them out), `X-Echo-Set-Header`
    /// carrying the response headers the echo backend should set.
    pub fn new(
        req: &Request,
        addr: SocketAddr,
        uuid: &str,
        set_headers: &BTreeMap<String, String>,
    ) -> Self {
        let default_port = if req.scheme == "https" { 443 } else { 80 };
        let host = if !req.host.is_empty() {
            req.host.clone()
        } else if addr.port() == default_port {
            addr.ip().to_string()
        } else {
            addr.to_string()
        };
        let echo_set: Vec<String> = set_headers
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        Self {
            protocol: req.protocol.clone(),
            scheme: req.scheme.clone(),
            method: req.method.clone(),
            host,
            path: req.path.replace("{uuid}", uuid),
            headers: req
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            extra: vec![("X-Echo-Set-Header".to_owned(), echo_set.join(","))],
            explicit_host: !req.host.is_empty(),
            tls: trust_anchor(req).map(|anchor| TlsParams {
                // Go sets ServerName from the case; without one, the URL's host.
                sni: req
                    .sni
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| req.host.split(':').next().unwrap_or_default().to_owned()),
                trust_anchor: anchor,
                client_cert: req.client_cert.clone(),
            }),
        }
    }

    /// `GET host/path` (`GET /path` when Host is just the Gateway's address), for messages.
    pub fn describe(&self) -> String {
        let host = if self.explicit_host {
            self.host.as_str()
        } else {
            ""
        };
        format!("{} {host}{}", self.method, self.path)
    }
}

/// The certificate an HTTPS client trusts: the case's, else (the `httproute-*` folders
/// leave it out) the suite's listener certificate, as their `needs` say.
fn trust_anchor(req: &Request) -> Option<String> {
    match (&req.trust_anchor, req.protocol.as_str()) {
        (Some(anchor), _) => Some(anchor.clone()),
        (None, "HTTPS" | "H2") => {
            Some("gateway-conformance-infra/tls-validity-checks-certificate:tls.crt".to_owned())
        }
        (None, _) => None,
    }
}

/// What the echo backend reported (Go's `CapturedRequest`).
#[derive(Debug, Default)]
pub struct Echoed {
    pub path: String,
    pub host: String,
    pub method: String,
    pub namespace: String,
    pub pod: String,
    /// Lower-cased names.
    pub headers: BTreeMap<String, Vec<String>>,
    /// `tls.serverName`: the SNI the backend saw, when it terminated TLS itself.
    pub tls_server_name: Option<String>,
    /// `tls.peerCertificates`: the client certificates (PEM) the backend was shown.
    pub peer_certificates: Vec<String>,
}

/// A response and what the backend saw.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub echo: Echoed,
}

impl Got {
    /// All values of a response header, joined with `,` as Go compares them.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }
}

/// Sends the request; `Err` is a transport failure (no HTTP response).
pub fn send(p: &Prepared, addr: SocketAddr, timeout: Duration) -> Result<Got, String> {
    let resp = match p.protocol.as_str() {
        "HTTP" => send_http1(p, addr, timeout),
        "H2C_PRIOR_KNOWLEDGE" => send_h2c(p, addr, timeout),
        "HTTPS" => send_https(p, addr, timeout),
        "H2" => send_h2(p, addr, timeout),
        other => {
            return Err(format!(
            "runner cannot check: {other} requests (the runner speaks HTTP/1.1, HTTPS/1.1, h2c and h2)"
        ))
        }
    }?;
    let echo = capture(p, &resp)?;
    Ok(Got {
        status: resp.status,
        headers: resp.headers,
        echo,
    })
}

fn send_http1(p: &Prepared, addr: SocketAddr, timeout: Duration) -> Result<Response, String> {
    let mut client = Client::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    client.set_read_timeout(timeout);
    // Go's client runs with keep-alives off, so every request says `Connection: close`.
    let mut headers: Vec<(&str, &str)> = p
        .headers
        .iter()
        .chain(&p.extra)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    headers.push(("Connection", "close"));
    client
        .request(&p.method, &p.host, &p.path, &headers, None)
        .map_err(|e| e.to_string())
}

/// HTTP/1.1 over TLS (Go's client with the case's SNI and root pool).
fn send_https(p: &Prepared, addr: SocketAddr, timeout: Duration) -> Result<Response, String> {
    let tls = p.tls.as_ref().ok_or("HTTPS case without a trust anchor")?;
    let mut head = format!("{} {} HTTP/1.1\r\nHost: {}\r\n", p.method, p.path, p.host);
    for (k, v) in p.headers.iter().chain(&p.extra) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    let bytes = super::tls::exchange(
        addr,
        &tls.sni,
        &tls.trust_anchor,
        tls.client_cert.as_deref(),
        head.as_bytes(),
        timeout,
    )?;
    parse_response(&bytes, p.method == "HEAD")
}

/// A whole HTTP/1.1 response read until the server closed.
fn parse_response(bytes: &[u8], head_request: bool) -> Result<Response, String> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut res = httparse::Response::new(&mut slots);
    let head_len = match res.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("closed before a whole response head".into()),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let status = res.code.unwrap_or(0);
    let headers = crate::client::owned_headers(res.headers);
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let rest = &bytes[head_len..];
    let body = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        dechunk(rest)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len.trim().parse().map_err(|_| "bad content-length")?;
        rest.get(..len).ok_or("body cut short")?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
        close: true,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line cut short")?;
        let line = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {line:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).ok_or("chunk cut short")?);
        rest = rest.get(size + 2..).ok_or("chunk cut short")?;
    }
}

/// Cleartext HTTP/2 with prior knowledge (hyper's client on a throwaway runtime).
fn send_h2c(p: &Prepared, addr: SocketAddr, timeout: Duration) -> Result<Response, String> {
    block_on_within("h2c", timeout, async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        h2_round_trip(stream, p, "http", "h2c").await
    })
}

/// HTTP/2 over TLS as Go's `http2.Transport` sends it: a new connection per request, SNI and
/// root pool from the case, ALPN `h2` alone, `:authority` from the case's host.
fn send_h2(p: &Prepared, addr: SocketAddr, timeout: Duration) -> Result<Response, String> {
    let tls = p.tls.as_ref().ok_or("H2 case without a trust anchor")?;
    let config = super::tls::h2_client_config(&tls.trust_anchor, tls.client_cert.as_deref())?;
    let sni = tls.sni.as_str();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned())
        .map_err(|e| format!("SNI {sni:?}: {e}"))?;
    block_on_within("h2", timeout, async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS to {addr} (SNI {sni}): {e}"))?;
        require_h2(stream.get_ref().1.alpn_protocol())?;
        h2_round_trip(stream, p, "https", "h2").await
    })
}

/// Go's `http2.Transport` gives up on a connection whose server did not pick `h2`, in these
/// words.
fn require_h2(alpn: Option<&[u8]>) -> Result<(), String> {
    match alpn {
        Some(b"h2") => Ok(()),
        other => Err(format!(
            "http2: unexpected ALPN protocol {:?}; want \"h2\"",
            String::from_utf8_lossy(other.unwrap_or_default())
        )),
    }
}

/// Runs `exchange` on a throwaway runtime, giving up after `timeout`.
fn block_on_within(
    what: &str,
    timeout: Duration,
    exchange: impl std::future::Future<Output = Result<Response, String>>,
) -> Result<Response, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("{what}: no response within {timeout:?}"))?
    })
}

/// One request on a fresh HTTP/2 connection over `io` (hyper's client); `what` names the
/// protocol in errors.
async fn h2_round_trip<IO>(
    io: IO,
    p: &Prepared,
    scheme: &str,
    what: &str,
) -> Result<Response, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|e| format!("{what} handshake: {}", chain(&e)))?;
    tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method(p.method.as_str())
        .uri(format!("{scheme}://{}{}", p.host, p.path));
    for (k, v) in p.headers.iter().chain(&p.extra) {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("{what} request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{what}: {}", chain(&e)))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{what} body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(Response {
        status,
        headers,
        body,
        close: false,
    })
}

/// An error with its causes (hyper's own text is often just "http2 error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Go parses the body only when it is `application/json`; otherwise it assumes the request
/// arrived as sent and leaves everything else empty.
fn capture(p: &Prepared, resp: &Response) -> Result<Echoed, String> {
    if resp.header("content-type") != Some("application/json") {
        return Ok(Echoed {
            method: p.method.clone(),
            ..Echoed::default()
        });
    }
    let json: serde_json::Value = serde_json::from_slice(&resp.body)
        .map_err(|e| format!("status {} with an unreadable JSON body ({e})", resp.status))?;
    let text = |k: &str| json[k].as_str().unwrap_or_default().to_owned();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, values) in json["headers"].as_object().into_iter().flatten() {
        let values = values
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned));
        headers
            .entry(name.to_ascii_lowercase())
            .or_default()
            .extend(values);
    }
    let tls = &json["tls"];
    Ok(Echoed {
        path: text("path"),
        host: text("host"),
        method: text("method"),
        namespace: text("namespace"),
        pod: text("pod"),
        headers,
        tls_server_name: tls["serverName"].as_str().map(str::to_owned),
        peer_certificates: tls["peerCertificates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect(),
    })
}

fn is_timeout(code: u16) -> bool {
    code == 408 || code == 504
}

fn is_redirect(code: u16) -> bool {
    matches!(code, 301 | 302 | 303 | 307 | 308)
}

/// Go's `CompareRoundTrip`.
pub fn compare(case: &HttpCase, p: &Prepared, got: &Got, uuid: &str) -> Result<(), String> {
    let want = &case.response.status_codes;
    // 408 and 504 stand for each other.
    if is_timeout(got.status) && want.iter().copied().any(is_timeout) {
        return Ok(());
    }
    if !want.contains(&got.status) {
        return Err(format!("want status {want:?}, got {}", got.status));
    }
    if got.status == 200 || got.status == 204 {
        compare_echo(case, p, got, uuid)
    } else if is_redirect(got.status) {
        match &case.redirect_request {
            Some(r) => compare_redirect(r, p, got),
            None => Ok(()),
        }
    } else {
        Ok(())
    }
}

fn compare_echo(case: &HttpCase, p: &Prepared, got: &Got, uuid: &str) -> Result<(), String> {
    let echo = &got.echo;
    // Without `expected_request` the backend must see the request exactly as sent.
    let (host, method, path, headers, absent) = match &case.expected_request {
        Some(e) => (
            e.host.clone(),
            if e.method.is_empty() {
                "GET".to_owned()
            } else {
                e.method.clone()
            },
            e.path.replace("{uuid}", uuid),
            e.headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            e.absent_headers.clone(),
        ),
        None => (
            p.host.clone(),
            p.method.clone(),
            p.path.clone(),
            p.headers.clone(),
            Vec::new(),
        ),
    };
    if !host.is_empty() && host != echo.host {
        return Err(format!("backend saw Host {:?}, want {host:?}", echo.host));
    }
    if path != echo.path {
        return Err(format!("backend saw path {:?}, want {path:?}", echo.path));
    }
    if method != echo.method {
        return Err(format!("backend saw method {}, want {method}", echo.method));
    }
    if case.namespace != echo.namespace {
        return Err(format!(
            "answered from namespace {:?} (pod {:?}), want {:?}",
            echo.namespace, echo.pod, case.namespace
        ));
    }
    for (name, value) in &headers {
        match echo.headers.get(&name.to_ascii_lowercase()) {
            None => return Err(format!("backend did not get header {name}")),
            Some(v) if v.join(",") != *value => {
                return Err(format!(
                    "backend got {name}: {:?}, want {value:?}",
                    v.join(",")
                ))
            }
            Some(_) => {}
        }
    }
    for name in &absent {
        if let Some(v) = echo.headers.get(&name.to_ascii_lowercase()) {
            return Err(format!("backend got header {name}: {v:?}, want it absent"));
        }
    }
    let resp = &case.response;
    for (name, value) in &resp.headers {
        match got.header(name) {
            None => return Err(format!("response lacks header {name}")),
            Some(v) if v != *value => {
                return Err(format!("response {name}: {v:?}, want {value:?}"))
            }
            Some(_) => {}
        }
    }
    for name in &resp.absent_headers {
        if let Some(v) = got.header(name) {
            return Err(format!("response has {name}: {v:?}, want it absent"));
        }
    }
    let squash = |s: &str| {
        if resp.ignore_whitespace {
            s.replace(' ', "")
        } else {
            s.to_owned()
        }
    };
    for (name, valid) in &resp.valid_header_values {
        let Some(v) = got.header(name) else {
            return Err(format!("response lacks header {name}"));
        };
        if !valid.iter().any(|ok| squash(ok) == squash(&v)) {
            return Err(format!("response {name}: {v:?}, want one of {valid:?}"));
        }
    }
    if !echo.pod.starts_with(&case.backend) {
        return Err(format!(
            "answered by pod {:?}, want a pod of {}",
            echo.pod, case.backend
        ));
    }
    if let Some(expected) = &case.expected_request {
        compare_backend_tls(expected, echo)?;
    }
    Ok(())
}

/// What a backend that terminates TLS itself must have seen: the SNI and, when given, the
/// client certificate (echo-basic's `tls` object).
fn compare_backend_tls(expected: &ExpectedRequest, echo: &Echoed) -> Result<(), String> {
    if let Some(sni) = expected.sni.as_deref().filter(|s| !s.is_empty()) {
        let seen = echo.tls_server_name.as_deref();
        if seen != Some(sni) {
            return Err(format!(
                "backend saw TLS server name {seen:?}, want {sni:?}"
            ));
        }
    }
    if let Some(cert) = expected.client_cert.as_deref().filter(|c| !c.is_empty()) {
        if !super::tls::certificate_among(cert, &echo.peer_certificates)? {
            return Err(format!(
                "backend was not shown the client certificate {cert} ({} shown)",
                echo.peer_certificates.len()
            ));
        }
    }
    Ok(())
}

/// Compares the `Location` header with the expectation, defaults filled in as Go does.
fn compare_redirect(want: &Redirect, p: &Prepared, got: &Got) -> Result<(), String> {
    let location = got
        .header("location")
        .ok_or_else(|| format!("status {} without a Location header", got.status))?;
    let (scheme, host, port, path) = split_location(&location, p);
    let want_scheme = if want.scheme.is_empty() {
        p.scheme.as_str()
    } else {
        want.scheme.as_str()
    };
    let req_path = p.path.split('?').next().unwrap_or_default();
    let want_path = if want.path.is_empty() {
        req_path
    } else {
        want.path.as_str()
    };
    let default_port = if want_scheme == "https" { "443" } else { "80" };
    let port_ok = if want.port.is_empty() {
        port.is_empty() || port == default_port
    } else {
        port == want.port
    };
    let host_ok = want.host.is_empty() || host == want.host;
    if scheme == want_scheme && host_ok && port_ok && path == want_path {
        return Ok(());
    }
    let want_port = if want.port.is_empty() {
        "(none)"
    } else {
        want.port.as_str()
    };
    let want_host = if want.host.is_empty() {
        "*"
    } else {
        want.host.as_str()
    };
    Err(format!(
        "redirected to {location:?}, want scheme {want_scheme} host {want_host} port {want_port} path {want_path}"
    ))
}

/// `(scheme, hostname, port, path)` of a Location, resolved against the request.
fn split_location(location: &str, p: &Prepared) -> (String, String, String, String) {
    let (scheme, rest) = match location.split_once("://") {
        Some((s, rest)) => (s.to_ascii_lowercase(), rest.to_owned()),
        None => (p.scheme.clone(), format!("{}{location}", p.host)),
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    let path = tail.split(['?', '#']).next().unwrap_or_default().to_owned();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            (h.to_owned(), port.to_owned())
        }
        _ => (authority.to_owned(), String::new()),
    };
    (scheme, host, port, path)
}

/// Runs a case until it passes `needed` times in a row (Go: 3) or `budget` is spent;
/// a new request id per attempt unless `uuid` is fixed. Returns the id of the last attempt.
pub fn converge(
    case: &HttpCase,
    addr: SocketAddr,
    budget: Duration,
    fixed_uuid: Option<&str>,
) -> Result<String, String> {
    let deadline = Instant::now() + budget;
    let mut passes = 0;
    loop {
        let uuid = fixed_uuid.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let p = Prepared::new(
            &case.request,
            addr,
            &uuid,
            &case.backend_set_response_headers,
        );
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_secs(1), REQUEST_TIMEOUT);
        let outcome = match (case.expect.as_deref(), send(&p, addr, timeout)) {
            (Some("transport_error"), Err(_)) => Ok(()),
            (Some("transport_error"), Ok(got)) => Err(format!(
                "want a transport error, got an HTTP {} response",
                got.status
            )),
            (Some(other), _) => Err(format!("runner cannot check: expectation {other:?}")),
            (None, Ok(got)) => compare(case, &p, &got, &uuid),
            (None, Err(e)) => Err(e),
        };
        match outcome {
            Ok(()) => {
                passes += 1;
                if passes == 3 {
                    return Ok(uuid);
                }
            }
            Err(e) if e.starts_with("runner cannot check") => return Err(e),
            Err(e) if Instant::now() >= deadline => {
                // The template reads better than this attempt's random request id.
                let what = p.describe().replace(&uuid, "{uuid}");
                return Err(format!("{what} → {}", e.replace(&uuid, "{uuid}")));
            }
            Err(_) => {
                passes = 0;
                // Go pauses 100 ms after a failed attempt before the next poll.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The deployment a pod belongs to: its name without the last two `-` parts.
pub fn deployment_of(pod: &str) -> &str {
    let parts: Vec<&str> = pod.rsplitn(3, '-').collect();
    match parts.as_slice() {
        [_, _, base] => base,
        _ => pod,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2_needs_the_server_to_pick_h2() {
        assert_eq!(require_h2(Some(b"h2")), Ok(()));
        assert_eq!(
            require_h2(None),
            Err("http2: unexpected ALPN protocol \"\"; want \"h2\"".to_owned())
        );
        assert!(require_h2(Some(b"http/1.1")).is_err());
    }

    #[test]
    fn backend_tls_expectations_compare_sni_and_client_certificate() {
        let expected: ExpectedRequest = serde_json::from_value(serde_json::json!({
            "sni": "abc.example.com",
            "client_cert": "gateway-conformance-infra/tls-checks-client-certificate:tls.crt",
        }))
        .expect("parses");
        let pem = |r: &str| super::super::tls::runtime_pem(r).expect("run-time object");
        let client = pem("gateway-conformance-infra/tls-checks-client-certificate:tls.crt");
        let other = pem("gateway-conformance-infra/tls-checks-certificate:tls.crt");
        let mut echo = Echoed {
            tls_server_name: Some("abc.example.com".into()),
            peer_certificates: vec![other.clone(), client],
            ..Echoed::default()
        };
        assert_eq!(compare_backend_tls(&expected, &echo), Ok(()));
        echo.peer_certificates = vec![other];
        assert!(compare_backend_tls(&expected, &echo)
            .unwrap_err()
            .contains("client certificate"));
        echo.tls_server_name = None;
        assert!(compare_backend_tls(&expected, &echo)
            .unwrap_err()
            .contains("TLS server name"));
    }

    #[test]
    fn pod_names_map_to_their_deployment() {
        assert_eq!(deployment_of("infra-backend-v1-0-1"), "infra-backend-v1");
        assert_eq!(deployment_of("a-b"), "a-b");
    }

    #[test]
    fn relative_and_absolute_locations_split_like_go_urls() {
        let p = Prepared {
            protocol: "HTTP".into(),
            scheme: "http".into(),
            method: "GET".into(),
            host: "127.0.0.1".into(),
            path: "/a?b".into(),
            headers: Vec::new(),
            extra: Vec::new(),
            explicit_host: false,
            tls: None,
        };
        assert_eq!(
            split_location("https://example.org:8443/p?q", &p),
            (
                "https".into(),
                "example.org".into(),
                "8443".into(),
                "/p".into()
            )
        );
        assert_eq!(
            split_location("/x", &p),
            (
                "http".into(),
                "127.0.0.1".into(),
                String::new(),
                "/x".into()
            )
        );
    }
}
