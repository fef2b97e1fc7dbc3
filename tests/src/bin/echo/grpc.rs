//! echo-basic's gRPC mode (ECHO.md §3): the service
//! `gateway_api_conformance.echo_basic.grpcecho.GrpcEcho` over h2c with prior knowledge, as
//! grpc-go serves it on `HTTP_PORT`. `Echo` and `EchoTwo` answer with what the call carried
//! and who answered; `EchoThree` answers `UNIMPLEMENTED`, and so does any other path, as
//! grpc-go does for an unknown service or method. Server reflection is not offered.
//!
//! The messages and framing are shared with the runner's client
//! (`shardgate_tests::conformance::grpc::wire`); status and trailers are written by hand.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use shardgate_tests::conformance::grpc::wire::{
    self, Assertions, Code, EchoRequest, EchoResponse, Header,
};
use tokio::net::{TcpListener, TcpStream};

/// One gRPC-mode listener: the pod it stands for.
pub struct GrpcEcho {
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub pod: String,
    pub verbose: bool,
}

pub async fn accept_loop(socket: TcpListener, echo: Arc<GrpcEcho>) {
    loop {
        match socket.accept().await {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, Arc::clone(&echo)));
            }
            Err(e) => {
                // Typically EMFILE; back off instead of spinning, and keep serving.
                eprintln!("shardgate-echo: accept on pod {}: {e}", echo.pod);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// grpc-go's server speaks HTTP/2 only; anything else fails the connection preface.
async fn serve(stream: TcpStream, echo: Arc<GrpcEcho>) {
    let verbose = echo.verbose;
    let service = service_fn(move |req| {
        let echo = Arc::clone(&echo);
        async move { Ok::<_, Infallible>(handle(&echo, req).await) }
    });
    let result = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        if verbose {
            eprintln!("shardgate-echo: grpc connection error: {e}");
        }
    }
}

/// A gRPC response body: at most one message, then the trailers. With neither it is a
/// trailers-only answer (the status rides in the headers).
pub struct GrpcBody {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(message) = this.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.trailers.is_none()
    }
}

/// Request headers grpc-go keeps out of the metadata it hands to a handler
/// (`isReservedHeader`); `content-type` it does hand over.
const RESERVED: &[&str] = &[
    "te",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-message",
    "grpc-message-type",
    "grpc-status",
    "grpc-status-details-bin",
];

async fn handle(echo: &GrpcEcho, req: Request<Incoming>) -> Response<GrpcBody> {
    let response = route(echo, req).await;
    if echo.verbose {
        let status = response
            .headers()
            .get("grpc-status")
            .or_else(|| response.body().trailers.as_ref()?.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        eprintln!(
            "shardgate-echo: grpc pod={} http={} grpc-status={status}",
            echo.pod,
            response.status().as_u16()
        );
    }
    response
}

async fn route(echo: &GrpcEcho, req: Request<Incoming>) -> Response<GrpcBody> {
    // grpc-go turns down anything but a POST of a gRPC content type before routing.
    if req.method() != Method::POST {
        return http_error(StatusCode::METHOD_NOT_ALLOWED);
    }
    let grpc_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_grpc_content_type);
    if !grpc_type {
        return http_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let path = req.uri().path().to_owned();
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return status(
            Code::Unimplemented,
            &format!("malformed method name: {path:?}"),
        );
    };
    if service != wire::SERVICE {
        return status(Code::Unimplemented, &format!("unknown service {service}"));
    }
    match method {
        "Echo" | "EchoTwo" => answer(echo, req, method).await,
        // The generated stub of an unimplemented method.
        "EchoThree" => status(Code::Unimplemented, "method EchoThree not implemented"),
        _ => status(
            Code::Unimplemented,
            &format!("unknown method {method} for service {service}"),
        ),
    }
}

fn is_grpc_content_type(value: &str) -> bool {
    value == "application/grpc"
        || value.starts_with("application/grpc+")
        || value.starts_with("application/grpc;")
}

/// The echo answer of `Echo`/`EchoTwo`.
async fn answer(echo: &GrpcEcho, req: Request<Incoming>, method: &str) -> Response<GrpcBody> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, wire::MAX_MESSAGE + 5).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return status(Code::Internal, &format!("reading the request: {e}")),
    };
    let request =
        wire::unframe_one(&body).and_then(|m| EchoRequest::decode(m).map_err(|e| e.to_string()));
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            return status(
                Code::Internal,
                &format!("grpc: error unmarshalling request: {e}"),
            )
        }
    };
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| text(parts.headers.get(HOST)))
        .unwrap_or_default();
    let response = EchoResponse {
        assertions: Some(Assertions {
            fully_qualified_method: format!("/{}/{method}", wire::SERVICE),
            headers: metadata(&authority, &parts.headers),
            authority,
            context: Some(wire::Context {
                namespace: echo.namespace.clone(),
                ingress: echo.ingress.clone(),
                service_name: echo.service.clone(),
                pod: echo.pod.clone(),
            }),
            tls_assertions: None,
        }),
        request: Some(request),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "grpc-status",
        HeaderValue::from_static(Code::Ok.as_header()),
    );
    grpc_response(GrpcBody {
        message: Some(wire::frame(&response)),
        trailers: Some(trailers),
    })
}

/// Every metadata value the handler sees, as grpc-go builds it: `:authority` first, then the
/// headers in the order received, minus the reserved ones.
fn metadata(authority: &str, headers: &HeaderMap) -> Vec<Header> {
    let mut out = Vec::with_capacity(headers.len() + 1);
    if !authority.is_empty() {
        out.push(Header {
            key: ":authority".to_owned(),
            value: authority.to_owned(),
        });
    }
    for (name, value) in headers {
        if RESERVED.contains(&name.as_str()) || name == HOST {
            continue;
        }
        out.push(Header {
            key: name.as_str().to_owned(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        });
    }
    out
}

fn text(value: Option<&HeaderValue>) -> Option<String> {
    value.and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn grpc_response(body: GrpcBody) -> Response<GrpcBody> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// A trailers-only answer with a non-OK status.
fn status(code: Code, message: &str) -> Response<GrpcBody> {
    let mut response = grpc_response(GrpcBody {
        message: None,
        trailers: None,
    });
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("grpc-status"),
        HeaderValue::from_static(code.as_header()),
    );
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert(HeaderName::from_static("grpc-message"), value);
    }
    response
}

fn http_error(code: StatusCode) -> Response<GrpcBody> {
    let mut response = Response::new(GrpcBody {
        message: None,
        trailers: None,
    });
    *response.status_mut() = code;
    response
}

/// `grpc-message` is percent-encoded: everything outside printable ASCII, and `%` itself.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_lists_authority_first_and_leaves_out_reserved_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert("grpc-timeout", HeaderValue::from_static("10S"));
        headers.append("version", HeaderValue::from_static("one"));
        headers.append("version", HeaderValue::from_static("two"));
        let got: Vec<(String, String)> = metadata("foo.bar.com", &headers)
            .into_iter()
            .map(|h| (h.key, h.value))
            .collect();
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            got,
            [
                pair(":authority", "foo.bar.com"),
                pair("content-type", "application/grpc"),
                pair("version", "one"),
                pair("version", "two"),
            ]
        );
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent_encode("unknown method X"), "unknown method X");
        assert_eq!(percent_encode("100% é\n"), "100%25 %C3%A9%0A");
    }

    #[test]
    fn content_types_with_a_codec_suffix_count_as_grpc() {
        assert!(is_grpc_content_type("application/grpc"));
        assert!(is_grpc_content_type("application/grpc+proto"));
        assert!(!is_grpc_content_type("application/grpc-web"));
        assert!(!is_grpc_content_type("application/json"));
    }
}
