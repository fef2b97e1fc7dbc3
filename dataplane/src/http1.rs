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

use crate::proxy;
use crate::respond::{write_local, Failure};
use crate::transfer::{read_more, write_all};
use crate::worker::{BindKey, Worker};
use monoio::net::TcpStream;
use shardgate_core::http1::{parse_request, BodyKind, RequestHead, MAX_HEADERS};
use shardgate_core::route::{pick_weighted, Request, RouteDecision};
use shardgate_core::BackendTarget;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// A downstream connection and its reusable buffers.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    /// Bytes read and not yet consumed: the current head, then body or the
    /// next pipelined request.
    pub(crate) buf: Vec<u8>,
    /// Bytes to write (heads, local responses).
    pub(crate) out: Vec<u8>,
    pub(crate) head: RequestHead,
    /// Scratch for the normalised host.
    host: String,
    pub(crate) peer: SocketAddr,
}

enum HeadRead {
    Complete,
    Closed,
    Failed(Failure),
}

/// Serves one downstream connection to its end.
pub(crate) async fn serve(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr, key: BindKey) {
    let _guard = worker.connection_opened();
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(8 * 1024),
        out: Vec::with_capacity(1024),
        head: RequestHead::default(),
        host: String::new(),
        peer,
    };
    loop {
        match read_head(&worker, &mut conn).await {
            HeadRead::Complete => {}
            HeadRead::Closed => return,
            HeadRead::Failed(f) => {
                answer_local(&mut conn, f, true).await;
                return;
            }
        }
        let keep_alive = handle(&worker, &mut conn, key).await;
        if !keep_alive {
            return;
        }
    }
}

/// Reads until `conn.buf` starts with a complete request head.
async fn read_head(worker: &Worker, conn: &mut Conn) -> HeadRead {
    let mut first_byte: Option<Instant> = None;
    loop {
        if !conn.buf.is_empty() {
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
        let read = match first_byte {
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
            Some(Ok(_)) => {}
        }
    }
}

/// Writes a local response; the connection stays usable unless `close`.
pub(crate) async fn answer_local(conn: &mut Conn, failure: Failure, close: bool) {
    conn.out.clear();
    write_local(&mut conn.out, failure.status(), close);
    let _ = write_all(&mut conn.stream, &mut conn.out).await;
}

/// Where the request goes, decided while the head is still borrowed.
enum Decision {
    Local(Failure),
    Forward {
        backend: u32,
        rule_timeout: Option<std::time::Duration>,
    },
}

/// Handles the request whose head is at the start of `conn.buf`. Returns
/// whether the connection may carry another request.
async fn handle(worker: &Rc<Worker>, conn: &mut Conn, key: BindKey) -> bool {
    let Some(table) = worker.table() else {
        return local_and_skip(worker, conn, Failure::NotReady).await;
    };
    let decision = decide(worker, conn, &table, key);
    match decision {
        Decision::Local(f) => local_and_skip(worker, conn, f).await,
        Decision::Forward {
            backend,
            rule_timeout,
        } => {
            let b = table.backend(backend);
            if b.endpoints.is_empty() {
                return local_and_skip(worker, conn, Failure::NoEndpoints).await;
            }
            let endpoint = b.endpoints[worker.next_endpoint(backend, b.endpoints.len())];
            let timeout = rule_timeout.unwrap_or(worker.cfg.upstream_timeout);
            proxy::forward(worker, conn, endpoint, timeout).await
        }
    }
}

/// Answers locally. The request's body, if any, is not read: the connection
/// closes after the answer so no unread body is mistaken for a request.
async fn local_and_skip(worker: &Worker, conn: &mut Conn, failure: Failure) -> bool {
    let has_body = !matches!(conn.head.body, Some(BodyKind::Empty));
    let keep = conn.head.keep_alive && !has_body && !worker.draining();
    let head_len = conn.head.len;
    answer_local(conn, failure, !keep).await;
    if keep {
        conn.buf.drain(..head_len);
    }
    keep
}

fn decide(
    worker: &Worker,
    conn: &mut Conn,
    table: &shardgate_core::RouteTable,
    key: BindKey,
) -> Decision {
    let buf = &conn.buf;
    let head = &conn.head;
    let method = head.method.str(buf);
    let target = head.target.str(buf);
    if method == "CONNECT" {
        return Decision::Local(Failure::NotImplemented);
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
        return Decision::Local(Failure::BadRequest);
    };
    normalize_host(authority, &mut conn.host);
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let Some(bind) = table.bind_index(key.0, key.1) else {
        return Decision::Local(Failure::NoRoute);
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
    let rule = match table.route(bind, &req) {
        RouteDecision::NoListener | RouteDecision::NoRoute(_) => {
            return Decision::Local(Failure::NoRoute)
        }
        RouteDecision::Rule(_, rule) => rule,
    };
    // Spec: a rule without usable backendRefs answers 500.
    let Some(i) = pick_weighted(rule.backends.iter().map(|b| b.weight), worker.random()) else {
        return Decision::Local(Failure::InvalidBackend(500));
    };
    match rule.backends[i].target {
        BackendTarget::Invalid { status } => Decision::Local(Failure::InvalidBackend(status)),
        BackendTarget::Backend(backend) => Decision::Forward {
            backend,
            rule_timeout: match (rule.timeouts.request, rule.timeouts.backend_request) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        },
    }
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
