//! Listening sockets: one SO_REUSEPORT socket per (address, port) in every
//! worker, so the kernel spreads connections across cores with no shared
//! accept queue.

use crate::http1;
use crate::stop::Stop;
use crate::worker::{BindKey, Worker};
use monoio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

const BACKLOG: i32 = 4096;

/// Binds this worker's socket for `key`.
pub(crate) fn bind(key: BindKey) -> std::io::Result<TcpListener> {
    let addr = SocketAddr::new(key.0, key.1);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
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
                monoio::spawn(http1::serve(Rc::clone(&worker), stream, peer, key));
            }
            Some(Err(e)) => {
                // EMFILE/ENFILE and friends: back off briefly instead of spinning.
                tracing::warn!(worker = worker.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
