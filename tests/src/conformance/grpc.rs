//! gRPC traffic checks (CASES-CONVENTIONS.md "grpc_cases"): a unary call to the echo
//! service as grpc-go makes it (h2c with prior knowledge, a fresh connection per call) and
//! the comparison the Go helper makes (status code; for `OK` the method, namespace and
//! pod-name prefix the echo reports). Response headers and trailers are never compared.
//!
//! How the client reads an answer, like grpc-go: an HTTP status other than 200 becomes a code
//! of its own (404 is `Unimplemented`); otherwise `grpc-status` from the trailers, or from the
//! headers of a trailers-only answer, is the code; a reset stream maps its HTTP/2 error code.

pub mod wire;

use super::cases::GrpcCase;
use bytes::Bytes;
use prost::Message as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use wire::{Code, EchoRequest, EchoResponse};

/// grpc-go's per-call deadline in the Go helpers.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One call: where it goes and what it carries.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The `:authority`; grpc-go's default is the dialed `ip:port`.
    pub authority: String,
    pub service: &'a str,
    pub method: &'a str,
    /// Request metadata; names go out lower-cased.
    pub metadata: Vec<(String, String)>,
}

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub code: Code,
    pub message: String,
    /// The decoded answer of an `OK` call.
    pub response: Option<EchoResponse>,
}

impl Reply {
    fn status(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            response: None,
        }
    }
}

/// The parts of an HTTP/2 answer that decide the call's outcome.
#[derive(Debug, Default)]
struct Answer<'a> {
    http_status: u16,
    content_type: Option<&'a str>,
    /// `grpc-status` and `grpc-message` from the trailers, else from the headers.
    grpc_status: Option<&'a str>,
    grpc_message: Option<&'a str>,
    body: &'a [u8],
}

/// grpc-go's reading of an answer (`internal/transport/http2_client.go` operateHeaders and
/// the unary receive path).
fn read_answer(a: &Answer<'_>) -> Reply {
    if a.http_status != 200 {
        return Reply::status(
            Code::from_http_status(a.http_status),
            format!(
                "unexpected HTTP status code received from server: {}",
                a.http_status
            ),
        );
    }
    if !a.content_type.is_some_and(|t| {
        t == "application/grpc"
            || t.starts_with("application/grpc+")
            || t.starts_with("application/grpc;")
    }) {
        return Reply::status(
            Code::Internal,
            format!("malformed header: content-type {:?}", a.content_type),
        );
    }
    let Some(status) = a.grpc_status else {
        return Reply::status(
            Code::Internal,
            "server closed the stream without sending trailers",
        );
    };
    let code = Code::from_status_header(status);
    let message = percent_decode(a.grpc_message.unwrap_or_default());
    if code != Code::Ok {
        return Reply::status(code, message);
    }
    let decoded = wire::unframe_one(a.body).and_then(|m| {
        EchoResponse::decode(m).map_err(|e| format!("EchoResponse does not decode: {e}"))
    });
    match decoded {
        Ok(response) => Reply {
            code,
            message,
            response: Some(response),
        },
        Err(e) => Reply::status(Code::Internal, e),
    }
}

/// `grpc-message` is percent-encoded on the wire (gRPC over HTTP/2, "Responses").
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// grpc-go's code for a stream the server reset (`http2ErrConvTab`).
fn code_of_reset(reason: h2::Reason) -> Code {
    match reason {
        h2::Reason::REFUSED_STREAM => Code::Unavailable,
        h2::Reason::CANCEL => Code::Canceled,
        h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        _ => Code::Internal,
    }
}

/// Makes one unary call over a fresh h2c connection. `Err` is a failure before any answer
/// (connect, handshake, timeout): grpc-go reports it as `Unavailable` or
/// `DeadlineExceeded`, and the Go helpers retry it.
pub fn call(addr: SocketAddr, c: &Call<'_>, timeout: Duration) -> Result<Reply, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, exchange(addr, c, timeout))
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    })
}

async fn exchange(addr: SocketAddr, c: &Call<'_>, timeout: Duration) -> Result<Reply, String> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("h2c handshake: {}", chain(&e)))?;
    tokio::spawn(conn);
    let uri = format!("http://{}/{}/{}", c.authority, c.service, c.method);
    let mut builder = hyper::Request::builder()
        .method("POST")
        .uri(&uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(
            "user-agent",
            "grpc-go/1.75.0 (shardgate conformance runner)",
        )
        .header("grpc-timeout", format!("{}m", timeout.as_millis().max(1)));
    for (k, v) in &c.metadata {
        builder = builder.header(k.to_ascii_lowercase(), v.as_str());
    }
    let request = builder
        .body(Full::new(wire::frame(&EchoRequest {})))
        .map_err(|e| format!("request {uri}: {e}"))?;
    let response = match sender.send_request(request).await {
        Ok(r) => r,
        Err(e) => return reset_or_error(&e),
    };
    let (parts, body) = response.into_parts();
    let collected = match body.collect().await {
        Ok(c) => c,
        Err(e) => return reset_or_error(&e),
    };
    let trailers = collected.trailers().cloned();
    let body: Bytes = collected.to_bytes();
    let text = |name: &str| {
        trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
    };
    Ok(read_answer(&Answer {
        http_status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        grpc_status: text("grpc-status"),
        grpc_message: text("grpc-message"),
        body: &body,
    }))
}

/// A reset stream is an answer with a code; any other error is a transport failure.
fn reset_or_error(e: &hyper::Error) -> Result<Reply, String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(reason) = s
            .downcast_ref::<h2::Error>()
            .filter(|h| h.is_reset())
            .and_then(h2::Error::reason)
        {
            return Ok(Reply::status(
                code_of_reset(reason),
                format!("stream terminated by RST_STREAM with error code: {reason:?}"),
            ));
        }
        source = s.source();
    }
    Err(format!("h2c: {}", chain(e)))
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

/// The Go helper's `compareResponse`: the code; for `OK`, the method that served the call,
/// the namespace (when expected) and the pod-name prefix (no `-` added).
fn compare(case: &GrpcCase, want: Code, got: &Reply) -> Result<(), String> {
    if got.code != want {
        let message = if got.message.is_empty() {
            String::new()
        } else {
            format!(" ({})", got.message)
        };
        return Err(format!(
            "want status {}, got {}{message}",
            want.go_name(),
            got.code.go_name()
        ));
    }
    if want != Code::Ok {
        return Ok(());
    }
    let assertions = got
        .response
        .as_ref()
        .and_then(|r| r.assertions.as_ref())
        .ok_or("OK answer without assertions")?;
    let method = format!("/{}/{}", case.service, case.method);
    if assertions.fully_qualified_method != method {
        return Err(format!(
            "served by method {:?}, want {method:?}",
            assertions.fully_qualified_method
        ));
    }
    let context = assertions.context.clone().unwrap_or_default();
    if !case.namespace.is_empty() && context.namespace != case.namespace {
        return Err(format!(
            "namespace {:?}, want {:?}",
            context.namespace, case.namespace
        ));
    }
    if !context.pod.starts_with(&case.expect_backend) {
        return Err(format!(
            "answered by pod {:?}, want {}",
            context.pod, case.expect_backend
        ));
    }
    Ok(())
}

/// The call a case makes to `addr`.
fn case_call(case: &GrpcCase, addr: SocketAddr) -> Call<'_> {
    Call {
        authority: if case.host.is_empty() {
            addr.to_string()
        } else {
            case.host.clone()
        },
        service: &case.service,
        method: &case.method,
        metadata: case
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Runs a case until it passes 3 times in a row or `budget` is spent (Go: 30 s), pausing
/// 100 ms after a failed attempt.
pub fn converge(case: &GrpcCase, addr: SocketAddr, budget: Duration) -> Result<(), String> {
    let want = Code::from_name(&case.expected_status).ok_or_else(|| {
        format!(
            "runner cannot check: gRPC status {:?}",
            case.expected_status
        )
    })?;
    let request = case_call(case, addr);
    let deadline = Instant::now() + budget;
    let mut passes = 0;
    loop {
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_secs(1), CALL_TIMEOUT);
        let outcome = call(addr, &request, timeout).and_then(|got| compare(case, want, &got));
        match outcome {
            Ok(()) => {
                passes += 1;
                if passes == 3 {
                    return Ok(());
                }
            }
            Err(e) if Instant::now() >= deadline => {
                let host = if case.host.is_empty() {
                    String::new()
                } else {
                    format!(" (:authority {})", case.host)
                };
                let metadata: Vec<String> = case
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                let metadata = if metadata.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", metadata.join(", "))
                };
                return Err(format!("{}{host}{metadata} → {e}", case.method));
            }
            Err(_) => {
                passes = 0;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The gRPC cases in order, each resolved to its Gateway's address by `addr_of(gateway,
/// listener_port)`. After the first failure each case gets one short try: the
/// configuration has long converged by then.
pub fn run_cases(
    cases: &[GrpcCase],
    addr_of: impl Fn(&str, Option<u16>) -> Result<SocketAddr, String>,
    budget: Duration,
) -> Result<(), String> {
    let mut first_error: Option<String> = None;
    let mut also = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let budget = if first_error.is_some() {
            Duration::ZERO
        } else {
            budget
        };
        let result = addr_of(&case.gateway, case.listener_port)
            .and_then(|addr| converge(case, addr, budget));
        match result {
            Ok(()) => {}
            Err(e) if first_error.is_none() => {
                first_error = Some(format!("grpc case {i}: {e}"));
            }
            Err(_) => also.push(i.to_string()),
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) if also.is_empty() => Err(e),
        Some(e) => Err(format!("{e} (grpc cases {} fail too)", also.join(", "))),
    }
}

/// One sample of the Go weight sampler: `Echo` over a fresh connection to the dialed
/// address, half the calls with metadata `x-jitter` (Go's entropy); any status but `OK` is
/// an error. Returns the answering pod.
pub fn probe_pod(addr: SocketAddr, k: usize) -> Result<String, String> {
    let mut metadata = Vec::new();
    if k.is_multiple_of(2) {
        let jitter = uuid::Uuid::new_v4().as_u128() % 10_000;
        metadata.push(("x-jitter".to_owned(), jitter.to_string()));
    }
    let c = Call {
        authority: addr.to_string(),
        service: wire::SERVICE,
        method: "Echo",
        metadata,
    };
    let got = call(addr, &c, CALL_TIMEOUT)?;
    if got.code != Code::Ok {
        return Err(format!(
            "Echo: status {} ({})",
            got.code.go_name(),
            got.message
        ));
    }
    got.response
        .and_then(|r| r.assertions)
        .and_then(|a| a.context)
        .map(|c| c.pod)
        .ok_or_else(|| "Echo: OK answer without a pod".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::{Assertions, Context};

    fn answer(body: &[u8]) -> Answer<'_> {
        Answer {
            http_status: 200,
            content_type: Some("application/grpc"),
            grpc_status: Some("0"),
            grpc_message: None,
            body,
        }
    }

    fn echo(method: &str, namespace: &str, pod: &str) -> EchoResponse {
        EchoResponse {
            assertions: Some(Assertions {
                fully_qualified_method: format!("/{}/{method}", wire::SERVICE),
                context: Some(Context {
                    namespace: namespace.into(),
                    pod: pod.into(),
                    ..Context::default()
                }),
                ..Assertions::default()
            }),
            request: Some(EchoRequest {}),
        }
    }

    fn case(method: &str, backend: &str, namespace: &str, status: &str) -> GrpcCase {
        serde_json::from_value(serde_json::json!({
            "gateway": "ns/gw",
            "listener_port": 80,
            "service": wire::SERVICE,
            "method": method,
            "expect_backend": backend,
            "namespace": namespace,
            "expected_status": status,
        }))
        .expect("case parses")
    }

    #[test]
    fn an_http_404_reads_as_unimplemented() {
        let mut a = answer(b"");
        a.http_status = 404;
        a.content_type = Some("text/plain");
        a.grpc_status = None;
        assert_eq!(read_answer(&a).code, Code::Unimplemented);
    }

    #[test]
    fn a_trailers_only_answer_carries_its_code_in_the_headers() {
        let mut a = answer(b"");
        a.grpc_status = Some("12");
        a.grpc_message = Some("unknown method");
        let got = read_answer(&a);
        assert_eq!(
            (got.code, got.message.as_str()),
            (Code::Unimplemented, "unknown method")
        );
    }

    #[test]
    fn an_ok_answer_decodes_the_echo_response() {
        let framed = wire::frame(&echo("Echo", "ns", "v1-0-0"));
        let got = read_answer(&answer(&framed));
        assert_eq!(got.code, Code::Ok);
        assert_eq!(got.response, Some(echo("Echo", "ns", "v1-0-0")));
    }

    #[test]
    fn answers_without_grpc_content_type_or_status_are_internal() {
        let mut a = answer(b"");
        a.content_type = Some("application/json");
        assert_eq!(read_answer(&a).code, Code::Internal);
        let mut a = answer(b"");
        a.grpc_status = None;
        assert_eq!(read_answer(&a).code, Code::Internal);
        assert_eq!(read_answer(&answer(b"\0\0\0")).code, Code::Internal);
    }

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode("404 Not%20Found"), "404 Not Found");
        assert_eq!(percent_decode("%C3%A9 100%"), "é 100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn resets_map_like_grpc_go() {
        assert_eq!(code_of_reset(h2::Reason::REFUSED_STREAM), Code::Unavailable);
        assert_eq!(code_of_reset(h2::Reason::PROTOCOL_ERROR), Code::Internal);
    }

    #[test]
    fn ok_cases_check_method_namespace_and_pod_prefix() {
        let ok = |r: EchoResponse| Reply {
            code: Code::Ok,
            message: String::new(),
            response: Some(r),
        };
        let c = case("EchoTwo", "grpc-infra-backend-v2", "ns", "OK");
        let good = echo("EchoTwo", "ns", "grpc-infra-backend-v2-0-1");
        assert_eq!(compare(&c, Code::Ok, &ok(good)), Ok(()));
        let wrong_method = echo("Echo", "ns", "grpc-infra-backend-v2-0-1");
        assert!(
            compare(&c, Code::Ok, &ok(wrong_method)).is_err_and(|e| e.contains("served by method"))
        );
        let wrong_pod = echo("EchoTwo", "ns", "grpc-infra-backend-v1-0-1");
        assert!(compare(&c, Code::Ok, &ok(wrong_pod)).is_err_and(|e| e.contains("pod")));
        let wrong_ns = echo("EchoTwo", "other", "grpc-infra-backend-v2-0-1");
        assert!(compare(&c, Code::Ok, &ok(wrong_ns)).is_err_and(|e| e.contains("namespace")));
        // An empty expectation skips the namespace and matches every pod.
        let any = case("Echo", "", "", "OK");
        assert_eq!(
            compare(&any, Code::Ok, &ok(echo("Echo", "x", "y-0-0"))),
            Ok(())
        );
    }

    #[test]
    fn other_statuses_compare_only_the_code() {
        let c = case("EchoThree", "", "", "Unimplemented");
        let got = Reply::status(Code::Unimplemented, "anything");
        assert_eq!(compare(&c, Code::Unimplemented, &got), Ok(()));
        let got = Reply::status(Code::Unavailable, "no healthy upstream");
        assert!(compare(&c, Code::Unimplemented, &got)
            .is_err_and(|e| e.contains("want status Unimplemented, got Unavailable")));
    }

    #[test]
    fn the_default_authority_is_the_dialed_address() {
        let addr: SocketAddr = "127.0.0.9:80".parse().expect("addr");
        let mut c = case("Echo", "", "", "OK");
        assert_eq!(case_call(&c, addr).authority, "127.0.0.9:80");
        c.host = "foo.bar.com".into();
        assert_eq!(case_call(&c, addr).authority, "foo.bar.com");
    }
}
