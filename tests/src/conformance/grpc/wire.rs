//! What the conformance gRPC client and `shardgate-echo`'s gRPC mode agree on: the echo
//! service's protobuf messages (ECHO.md §3, with its field numbers), the message framing of
//! gRPC over HTTP/2, and the status codes as grpc-go names them.
//!
//! The messages are written by hand for prost's derive: the service is small and fixed, and
//! a build script with `protoc` would be one more tool to install.

use bytes::{BufMut, Bytes, BytesMut};

/// The echo service's full name (`package.Service`).
pub const SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// Largest message either side accepts (grpc-go's default receive limit is 4 MiB).
pub const MAX_MESSAGE: usize = 4 << 20;

/// `EchoRequest {}`: the client sends nothing but the call itself.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {}

/// `EchoResponse`: what the echo saw, and the request it got.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoResponse {
    #[prost(message, optional, tag = "1")]
    pub assertions: Option<Assertions>,
    #[prost(message, optional, tag = "2")]
    pub request: Option<EchoRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Assertions {
    /// `/<service>/<method>` of the method that served the call.
    #[prost(string, tag = "1")]
    pub fully_qualified_method: String,
    /// Every metadata value received, keys lower-case, `:authority` included.
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<Header>,
    #[prost(string, tag = "3")]
    pub authority: String,
    #[prost(message, optional, tag = "4")]
    pub context: Option<Context>,
    /// Filled only on echo-basic's TLS port, which the runner does not use.
    #[prost(message, optional, tag = "5")]
    pub tls_assertions: Option<TlsAssertions>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// The pod's identity (ECHO.md §1).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Context {
    #[prost(string, tag = "1")]
    pub namespace: String,
    #[prost(string, tag = "2")]
    pub ingress: String,
    #[prost(string, tag = "3")]
    pub service_name: String,
    #[prost(string, tag = "4")]
    pub pod: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TlsAssertions {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub negotiated_protocol: String,
    #[prost(string, tag = "3")]
    pub server_name: String,
    #[prost(string, tag = "4")]
    pub cipher_suite: String,
    #[prost(string, repeated, tag = "5")]
    pub peer_certificates: Vec<String>,
}

/// One length-prefixed message: a compressed flag (always 0: neither side compresses),
/// the length as a big-endian u32, then the encoded message.
pub fn frame(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(u32::try_from(len).expect("echo messages are far below 4 GiB"));
    message
        .encode(&mut out)
        .expect("the buffer was sized by encoded_len");
    out.freeze()
}

/// Splits a whole stream body into its messages.
pub fn unframe(mut body: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        let Some((head, rest)) = body.split_first_chunk::<5>() else {
            return Err(format!(
                "{} bytes left, less than a message prefix",
                body.len()
            ));
        };
        if head[0] != 0 {
            return Err(format!(
                "compressed flag {} on a stream without grpc-encoding",
                head[0]
            ));
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(format!(
                "message of {len} bytes, over the {MAX_MESSAGE} limit"
            ));
        }
        if rest.len() < len {
            return Err(format!(
                "message of {len} bytes cut short at {}",
                rest.len()
            ));
        }
        let (message, rest) = rest.split_at(len);
        messages.push(message);
        body = rest;
    }
    Ok(messages)
}

/// The one message of a unary request or response.
pub fn unframe_one(body: &[u8]) -> Result<&[u8], String> {
    match unframe(body)?.as_slice() {
        [one] => Ok(one),
        many => Err(format!(
            "{} messages where a unary call has one",
            many.len()
        )),
    }
}

/// gRPC status codes (`google.golang.org/grpc/codes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok = 0,
    Canceled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

const CODES: [Code; 17] = [
    Code::Ok,
    Code::Canceled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    /// The code of a `grpc-status` value; grpc-go reads anything else as `Unknown`.
    pub fn from_status_header(value: &str) -> Self {
        value
            .parse::<usize>()
            .ok()
            .and_then(|n| CODES.get(n).copied())
            .unwrap_or(Self::Unknown)
    }

    /// Go's `codes.Code.String()`: `OK`, `Canceled`, `Unimplemented`, ...
    pub fn go_name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Canceled => "Canceled",
            Self::Unknown => "Unknown",
            Self::InvalidArgument => "InvalidArgument",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::NotFound => "NotFound",
            Self::AlreadyExists => "AlreadyExists",
            Self::PermissionDenied => "PermissionDenied",
            Self::ResourceExhausted => "ResourceExhausted",
            Self::FailedPrecondition => "FailedPrecondition",
            Self::Aborted => "Aborted",
            Self::OutOfRange => "OutOfRange",
            Self::Unimplemented => "Unimplemented",
            Self::Internal => "Internal",
            Self::Unavailable => "Unavailable",
            Self::DataLoss => "DataLoss",
            Self::Unauthenticated => "Unauthenticated",
        }
    }

    /// A code by its Go name; the proto spelling (`UNIMPLEMENTED`, `CANCELLED`) works too.
    pub fn from_name(name: &str) -> Option<Self> {
        let squashed: String = name
            .chars()
            .filter(|c| *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        let squashed = if squashed == "cancelled" {
            "canceled".to_owned()
        } else {
            squashed
        };
        CODES
            .iter()
            .copied()
            .find(|c| c.go_name().eq_ignore_ascii_case(&squashed))
    }

    /// What grpc-go reports for a response whose HTTP status is not 200
    /// (`internal/transport/http_util.go`, `HTTPStatusConvTab`).
    pub fn from_http_status(status: u16) -> Self {
        match status {
            400 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::Unimplemented,
            429 | 502 | 503 | 504 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }

    /// The `grpc-status` value.
    pub fn as_header(self) -> &'static str {
        const DIGITS: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        DIGITS[self as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn response() -> EchoResponse {
        EchoResponse {
            assertions: Some(Assertions {
                fully_qualified_method: format!("/{SERVICE}/Echo"),
                headers: vec![Header {
                    key: ":authority".into(),
                    value: "a.example".into(),
                }],
                authority: "a.example".into(),
                context: Some(Context {
                    namespace: "ns".into(),
                    ingress: String::new(),
                    service_name: String::new(),
                    pod: "grpc-infra-backend-v1-0-0".into(),
                }),
                tls_assertions: None,
            }),
            request: Some(EchoRequest {}),
        }
    }

    #[test]
    fn messages_use_the_field_numbers_of_the_echo_proto() {
        let ctx = Context {
            namespace: "n".into(),
            ingress: "i".into(),
            service_name: "s".into(),
            pod: "p".into(),
        };
        // Tags 1..4, wire type 2 (length-delimited): 0x0a, 0x12, 0x1a, 0x22.
        assert_eq!(
            ctx.encode_to_vec(),
            b"\x0a\x01n\x12\x01i\x1a\x01s\x22\x01p".to_vec()
        );
        let r = EchoResponse {
            assertions: Some(Assertions {
                fully_qualified_method: "/m".into(),
                headers: vec![Header {
                    key: "k".into(),
                    value: "v".into(),
                }],
                authority: "a".into(),
                context: None,
                tls_assertions: None,
            }),
            request: Some(EchoRequest {}),
        };
        assert_eq!(
            r.encode_to_vec(),
            b"\x0a\x0f\x0a\x02/m\x12\x06\x0a\x01k\x12\x01v\x1a\x01a\x12\x00".to_vec()
        );
    }

    #[test]
    fn a_framed_response_decodes_back() {
        let framed = frame(&response());
        assert_eq!(framed[0], 0);
        assert_eq!(
            u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize,
            framed.len() - 5
        );
        let message = unframe_one(&framed).expect("one message");
        assert_eq!(EchoResponse::decode(message).expect("decodes"), response());
    }

    #[test]
    fn an_empty_request_is_a_zero_length_message() {
        assert_eq!(frame(&EchoRequest {}).as_ref(), b"\0\0\0\0\0");
        assert_eq!(unframe(b"\0\0\0\0\0"), Ok(vec![&b""[..]]));
    }

    #[test]
    fn truncated_compressed_or_repeated_messages_are_refused() {
        assert!(unframe(b"\0\0\0").is_err());
        assert!(unframe(b"\0\0\0\0\x05abc").is_err());
        assert!(unframe(b"\x01\0\0\0\0").is_err());
        assert!(unframe(b"\0\xff\xff\xff\xff").is_err());
        assert_eq!(unframe(b""), Ok(vec![]));
        assert!(unframe_one(b"").is_err());
        assert!(unframe_one(b"\0\0\0\0\0\0\0\0\0\0").is_err());
    }

    #[test]
    fn codes_read_like_grpc_go() {
        assert_eq!(Code::from_status_header("12"), Code::Unimplemented);
        assert_eq!(Code::from_status_header("99"), Code::Unknown);
        assert_eq!(Code::from_status_header("x"), Code::Unknown);
        assert_eq!(Code::from_name("Unimplemented"), Some(Code::Unimplemented));
        assert_eq!(Code::from_name("UNIMPLEMENTED"), Some(Code::Unimplemented));
        assert_eq!(Code::from_name("OK"), Some(Code::Ok));
        assert_eq!(Code::from_name("CANCELLED"), Some(Code::Canceled));
        assert_eq!(
            Code::from_name("DEADLINE_EXCEEDED"),
            Some(Code::DeadlineExceeded)
        );
        assert_eq!(Code::from_name("Nope"), None);
        assert_eq!(Code::from_http_status(404), Code::Unimplemented);
        assert_eq!(Code::from_http_status(503), Code::Unavailable);
        assert_eq!(Code::from_http_status(500), Code::Unknown);
        for c in CODES {
            assert_eq!(Code::from_status_header(c.as_header()), c);
        }
    }
}
