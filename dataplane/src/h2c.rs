//! Cleartext HTTP/2 to backends whose Service port says
//! `appProtocol: kubernetes.io/h2c`.
//!
//! Each worker keeps one HTTP/2 connection per endpoint and multiplexes its
//! requests on it ([`H2Clients`]). A request is an [`H2Exchange`]: the
//! HTTP/1.1 bytes the proxy writes become HEADERS, DATA and trailers on a new
//! stream, and the response comes back as HTTP/1.1 bytes (chunked, so
//! trailers such as `grpc-status` survive the trip), which the proxy relays
//! as it would any other.

use crate::h2::{connection_specific, h2_io, push_field, read_body, send_framed, Framing, Sent};
use bytes::Bytes;
use foldhash::HashMap;
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use monoio::net::TcpStream;
use monoio_compat::StreamWrapper;
use shardgate_core::http1::{parse_request, BodyKind, ChunkedDecoder, RequestHead};
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// One worker's HTTP/2 connections to h2c endpoints.
#[derive(Default)]
pub(crate) struct H2Clients {
    conns: RefCell<HashMap<SocketAddr, SendRequest<Bytes>>>,
}

impl H2Clients {
    /// A handle ready for a new stream to `addr`, connecting (or
    /// reconnecting) as needed.
    pub(crate) async fn ready(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> io::Result<SendRequest<Bytes>> {
        let existing = self.conns.borrow().get(&addr).cloned();
        if let Some(h) = existing {
            if let Ok(h) = h.ready().await {
                return Ok(h);
            }
            self.conns.borrow_mut().remove(&addr);
        }
        let tcp = monoio::time::timeout(connect_timeout, TcpStream::connect_addr(addr))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let _ = tcp.set_nodelay(true);
        let io = StreamWrapper::new_with_buffer_size(tcp, 16 * 1024, 16 * 1024);
        let (handle, conn) = h2::client::Builder::new()
            .initial_window_size(1024 * 1024)
            .initial_connection_window_size(4 * 1024 * 1024)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(h2_io)?;
        monoio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %addr, error = %e, "h2c connection ended");
            }
        });
        self.conns.borrow_mut().insert(addr, handle.clone());
        handle.ready().await.map_err(h2_io)
    }
}

/// One request to an h2c backend, as a byte stream speaking HTTP/1.1.
pub(crate) struct H2Exchange {
    handle: Option<SendRequest<Bytes>>,
    /// Request bytes not yet turned into frames.
    pending: Vec<u8>,
    request: RequestState,
    response: ResponseState,
}

enum RequestState {
    Head,
    Body {
        send: SendStream<Bytes>,
        framing: Framing,
    },
    Done,
}

enum ResponseState {
    /// Not sent yet.
    Idle,
    Waiting(ResponseFuture),
    Body {
        body: RecvStream,
        chunked: bool,
    },
    Done,
}

impl H2Exchange {
    pub(crate) fn new(handle: SendRequest<Bytes>) -> Self {
        Self {
            handle: Some(handle),
            pending: Vec::new(),
            request: RequestState::Head,
            response: ResponseState::Idle,
        }
    }

    async fn flush_request(&mut self) -> io::Result<()> {
        loop {
            match &mut self.request {
                RequestState::Head => {
                    let mut head = RequestHead::default();
                    match parse_request(&self.pending, &mut head) {
                        Ok(true) => {}
                        Ok(false) => return Ok(()),
                        Err(_) => return Err(io::ErrorKind::InvalidData.into()),
                    }
                    let body = head.body.unwrap_or(BodyKind::Empty);
                    let request = self.request_head(&head)?;
                    self.pending.drain(..head.len);
                    let mut handle = self.handle.take().ok_or(io::ErrorKind::BrokenPipe)?;
                    let end = body == BodyKind::Empty;
                    let (response, send) = handle.send_request(request, end).map_err(h2_io)?;
                    self.response = ResponseState::Waiting(response);
                    self.request = match body {
                        BodyKind::Length(n) => RequestState::Body {
                            send,
                            framing: Framing::Length(n),
                        },
                        BodyKind::Chunked => RequestState::Body {
                            send,
                            framing: Framing::Chunked(ChunkedDecoder::new()),
                        },
                        _ => RequestState::Done,
                    };
                }
                RequestState::Body { send, framing } => {
                    match send_framed(send, framing, &mut self.pending).await? {
                        Sent::Done => self.request = RequestState::Done,
                        Sent::NeedMore => return Ok(()),
                    }
                }
                RequestState::Done => {
                    self.pending.clear();
                    return Ok(());
                }
            }
        }
    }

    fn request_head(&self, head: &RequestHead) -> io::Result<Request<()>> {
        let buf = &self.pending;
        let method = Method::from_bytes(head.method.get(buf))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        let authority = head.host.map_or("localhost", |h| h.str(buf));
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(head.target.str(buf))
            .build()
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        let mut request = Request::builder().method(method).uri(uri);
        let headers = request.headers_mut().ok_or(io::ErrorKind::InvalidData)?;
        let mut grpc = false;
        for h in head.headers.iter().filter(|h| !h.hop_by_hop) {
            let Ok(name) = HeaderName::from_bytes(h.name.get(buf)) else {
                continue;
            };
            if connection_specific(name.as_str()) || name == http::header::HOST {
                continue;
            }
            grpc |= name == http::header::CONTENT_TYPE
                && h.value.get(buf).starts_with(b"application/grpc");
            if let Ok(v) = HeaderValue::from_bytes(h.value.get(buf)) {
                headers.append(name, v);
            }
        }
        if grpc {
            // gRPC servers insist on it; it is hop-by-hop in HTTP/1.1.
            headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        }
        request
            .body(())
            .map_err(|_| io::ErrorKind::InvalidData.into())
    }
}

impl crate::transfer::Io for H2Exchange {
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            match &mut self.response {
                ResponseState::Idle | ResponseState::Done => return Ok(0),
                ResponseState::Waiting(fut) => {
                    let response = fut.await.map_err(h2_io)?;
                    let (parts, body) = response.into_parts();
                    let before = buf.len();
                    buf.extend_from_slice(b"HTTP/1.1 ");
                    buf.extend_from_slice(parts.status.as_str().as_bytes());
                    buf.push(b' ');
                    buf.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
                    buf.extend_from_slice(b"\r\n");
                    let mut length = false;
                    for (name, value) in &parts.headers {
                        length |= name == http::header::CONTENT_LENGTH;
                        push_field(buf, name.as_str(), value.as_bytes());
                    }
                    let no_body = parts.status.is_informational()
                        || parts.status == http::StatusCode::NO_CONTENT
                        || parts.status == http::StatusCode::NOT_MODIFIED;
                    let ended = body.is_end_stream();
                    let chunked = !length && !no_body && !ended;
                    if chunked {
                        push_field(buf, "transfer-encoding", b"chunked");
                    } else if !length && !no_body {
                        push_field(buf, "content-length", b"0");
                    }
                    buf.extend_from_slice(b"\r\n");
                    self.response = if ended {
                        ResponseState::Done
                    } else {
                        ResponseState::Body { body, chunked }
                    };
                    return Ok(buf.len() - before);
                }
                ResponseState::Body { body, chunked } => {
                    let (n, ended) = read_body(body, *chunked, buf).await?;
                    if ended {
                        self.response = ResponseState::Done;
                    }
                    if n > 0 || ended {
                        return Ok(n);
                    }
                }
            }
        }
    }

    async fn write_prefix(&mut self, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
        self.pending.extend_from_slice(&buf[..n]);
        buf.drain(..n);
        self.flush_request().await
    }
}

impl Drop for H2Exchange {
    fn drop(&mut self) {
        // A request abandoned midway (client gone, timeout) is reset so the
        // backend stops working on it.
        // (A response still flowing ends when its RecvStream drops.)
        if let RequestState::Body { send, .. } = &mut self.request {
            send.send_reset(h2::Reason::CANCEL);
        }
    }
}
