//! The admin endpoint: `/healthz`, `/ready`, `/snapshot`.
//!
//! A small blocking HTTP/1.1 server on its own thread, bound to localhost by
//! default. It only reads what workers publish in [`Shared`]; it is never on
//! the request path and never blocks a worker.

use crate::shared::Shared;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Binds the admin endpoint and serves it on a background thread.
pub fn spawn(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("shardgate-admin".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve(stream, &shared);
            }
        })?;
    Ok(local)
}

fn serve(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    let path = loop {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => break req.path.unwrap_or("/").to_owned(),
            Ok(httparse::Status::Partial) if len < buf.len() => {}
            _ => return respond(&mut stream, 400, "text/plain", "bad request\n"),
        }
    };
    let path = path.split('?').next().unwrap_or("/");
    match path {
        "/healthz" => respond(&mut stream, 200, "text/plain", "ok\n"),
        "/ready" if shared.ready() => respond(&mut stream, 200, "text/plain", "ready\n"),
        "/ready" => respond(
            &mut stream,
            503,
            "text/plain",
            "not ready: no valid snapshot on every worker\n",
        ),
        "/snapshot" => {
            let body = snapshot_json(shared).to_string();
            respond(&mut stream, 200, "application/json", &body)
        }
        _ => respond(&mut stream, 404, "text/plain", "not found\n"),
    }
}

/// The generation in force on each worker, when it was published and
/// applied, and the counts of what it holds.
pub fn snapshot_json(shared: &Shared) -> serde_json::Value {
    let workers: Vec<_> = shared
        .workers
        .iter()
        .enumerate()
        .map(|(id, w)| {
            let published = w.published_unix_nanos.load(Ordering::Relaxed);
            let applied = w.applied_unix_nanos.load(Ordering::Relaxed);
            json!({
                "worker": id,
                "generation": w.generation.load(Ordering::Acquire),
                "published_unix_nanos": published,
                "applied_unix_nanos": applied,
                "apply_delay_micros": applied.saturating_sub(published) / 1000,
                "applied": w.applied.load(Ordering::Relaxed),
                "rejected": w.rejected.load(Ordering::Relaxed),
                "io_driver": if w.io_uring.load(Ordering::Relaxed) { "io_uring" } else { "epoll" },
                "connections": w.connections.load(Ordering::Relaxed),
                "listeners": w.listeners.load(Ordering::Relaxed),
                "bind_errors": w.bind_errors.load(Ordering::Relaxed),
                "rules": w.rules.load(Ordering::Relaxed),
                "backends": w.backends.load(Ordering::Relaxed),
                "endpoints": w.endpoints.load(Ordering::Relaxed),
            })
        })
        .collect();
    let generation = shared
        .workers
        .iter()
        .map(|w| w.generation.load(Ordering::Acquire))
        .min()
        .unwrap_or(0);
    json!({
        "generation": generation,
        "ready": shared.ready(),
        "draining": shared.draining.load(Ordering::Relaxed),
        "workers": workers,
    })
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let phrase = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}
