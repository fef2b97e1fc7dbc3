//! Listening sockets: one SO_REUSEPORT socket per (address, port) in every
//! worker, so the kernel spreads connections across cores with no shared
//! accept queue.

use crate::h2;
use crate::http1::{self, TlsSession};
use crate::l4;
use crate::stop::Stop;
use crate::tls::{peek_sni, PeekError};
use crate::worker::{BindKey, Worker};
use monoio::net::{TcpListener, TcpStream};
use shardgate_core::{ListenerProtocol, Transport};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

const BACKLOG: i32 = 4096;

/// A non-blocking SO_REUSEPORT socket of this worker, bound to `key`'s
/// address and port (TCP or UDP by the key's transport).
pub(crate) fn reuseport_socket(key: BindKey) -> std::io::Result<Socket> {
    let addr = SocketAddr::new(key.1, key.2);
    let (ty, proto) = match key.0 {
        Transport::Tcp => (Type::STREAM, Protocol::TCP),
        Transport::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Binds this worker's listening socket for `key`.
pub(crate) fn bind(key: BindKey) -> std::io::Result<TcpListener> {
    let socket = reuseport_socket(key)?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Accepts until `stop` fires; each connection becomes its own task.
pub(crate) async fn accept_loop(
    worker: Rc<Worker>,
    listener: TcpListener,
    key: BindKey,
    stop: Stop,
) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => Some(r),
            _ = stop.wait() => None,
        };
        match accepted {
            None => break,
            Some(Ok((stream, peer))) => {
                // Small writes (heads) must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                let protocol = worker.active().and_then(|a| {
                    let t = &a.table;
                    let b = t.bind_index(Transport::Tcp, key.1, key.2)?;
                    t.bind(b).map(|b| b.protocol)
                });
                let worker = Rc::clone(&worker);
                match protocol {
                    Some(ListenerProtocol::Http) | None => {
                        monoio::spawn(serve_http(worker, stream, peer, key));
                    }
                    Some(ListenerProtocol::Https) => {
                        monoio::spawn(serve_https(worker, stream, peer, key));
                    }
                    Some(_) => {
                        monoio::spawn(l4::serve(worker, stream, peer, key));
                    }
                }
            }
            Some(Err(e)) => {
                // EMFILE/ENFILE and friends: back off briefly instead of spinning.
                tracing::warn!(worker = worker.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Cleartext HTTP/1.1, or HTTP/2 with prior knowledge (told apart by the
/// connection preface).
async fn serve_http(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr, key: BindKey) {
    let _guard = worker.connection_opened();
    let h2 = http1::serve(Rc::clone(&worker), stream, peer, key, None, true).await;
    if let Some((stream, prefix)) = h2 {
        h2::serve(worker, stream, prefix, peer, key, None).await;
    }
}

/// HTTPS: the SNI picks the listener and so its certificate; after the
/// handshake the connection is served as HTTP/2 (ALPN h2) or HTTP/1.1,
/// pinned to that listener.
async fn serve_https(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr, key: BindKey) {
    let _guard = worker.connection_opened();
    let sni = match peek_sni(&stream, worker.cfg.header_timeout).await {
        Ok(sni) => sni,
        Err(e) => {
            if e != PeekError::Closed {
                worker.metrics().tls_failures.inc();
                tracing::debug!(%peer, error = ?e, "no TLS ClientHello");
            }
            return;
        }
    };
    let config = worker.active().and_then(|a| {
        let t = &a.table;
        let bind = t.bind(t.bind_index(Transport::Tcp, key.1, key.2)?)?;
        a.tls.get(bind.select(sni.as_deref())?.id as usize)?.clone()
    });
    let Some(config) = config else {
        // No listener for this name (and no fallback): refuse the handshake
        // rather than show another listener's certificate.
        worker.metrics().tls_failures.inc();
        tracing::debug!(%peer, sni = sni.as_deref().unwrap_or(""), "no TLS listener for this SNI");
        return;
    };
    let acceptor = monoio_rustls::TlsAcceptor::from(config);
    match monoio::time::timeout(worker.cfg.header_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            worker.metrics().tls_handshakes.inc();
            if tls.alpn_protocol().as_deref() == Some(b"h2") {
                h2::serve(worker, tls, Vec::new(), peer, key, Some(sni)).await;
            } else {
                http1::serve(worker, tls, peer, key, Some(TlsSession { sni }), false).await;
            }
        }
        Ok(Err(e)) => {
            worker.metrics().tls_failures.inc();
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            worker.metrics().tls_failures.inc();
        }
    }
}
