//! The admin HTTP server shared by both binaries (feature `admin`): a small
//! blocking server on its own thread for `/metrics`, `/ready` and friends.
//! Never on the request path.

use std::net::SocketAddr;

/// An admin answer: status, content type, body.
pub type Answer = (u16, &'static str, String);

/// Plain-text content type.
pub const TEXT: &str = "text/plain; charset=utf-8";
/// JSON content type.
pub const JSON: &str = "application/json";
/// The Prometheus text exposition content type.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr` and answers every request with `handler(path)` (the query
/// string removed) from a thread named `name`. Returns the bound address.
pub fn serve(
    addr: SocketAddr,
    name: &str,
    handler: impl Fn(&str) -> Answer + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let server = tiny_http::Server::http(addr).map_err(|e| std::io::Error::other(e.to_string()))?;
    let local = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("admin endpoint is not a TCP socket"))?;
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            for request in server.incoming_requests() {
                let path = request.url().split('?').next().unwrap_or("/").to_owned();
                let (status, content_type, body) = handler(&path);
                let header = tiny_http::Header::from_bytes("content-type", content_type)
                    .expect("static header is valid");
                let response = tiny_http::Response::from_string(body)
                    .with_status_code(status)
                    .with_header(header);
                let _ = request.respond(response);
            }
        })?;
    Ok(local)
}
