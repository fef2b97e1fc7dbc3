//! L4 forwarding: TCP listeners, TLS passthrough (routed on the peeked
//! SNI, bytes untouched) and TLS terminated here with the plaintext
//! forwarded.
//!
//! ```text
//!  TCP:         accept ─────────────────────────────▶ rule ─▶ connect ─▶ splice
//!  Passthrough: accept ─▶ peek SNI ─────────────────▶ rule ─▶ connect ─▶ splice (TLS bytes)
//!  Terminate:   accept ─▶ peek SNI ─▶ TLS handshake ─▶ rule ─▶ connect ─▶ splice (plaintext)
//! ```
//!
//! Both directions run until each side has finished: an end of stream on
//! one side is passed on as a half-close (`shutdown(SHUT_WR)`, or
//! close_notify on TLS) and the other direction keeps flowing. An error on
//! either side, or no byte either way for the idle timeout, ends both.

use crate::tls::{peek_sni, PeekError};
use crate::transfer::READ_CHUNK;
use crate::worker::{BindKey, SeriesRef, Worker};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use shardgate_core::route::{pick_weighted, CompiledRule};
use shardgate_core::{BackendTarget, ListenerProtocol, RouteTable, Transport};
use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Serves one accepted connection of a TCP, TLS passthrough or TLS
/// terminate listener.
pub(crate) async fn serve(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr, key: BindKey) {
    let _guard = worker.connection_opened();
    let Some(active) = worker.active_now() else {
        return;
    };
    let table = &active.table;
    let Some(bind) = table
        .bind_index(Transport::Tcp, key.1, key.2)
        .and_then(|i| table.bind(i))
    else {
        return;
    };
    let protocol = bind.protocol;
    let sni = if matches!(protocol, ListenerProtocol::Tcp) {
        None
    } else {
        match peek_sni(&stream, worker.cfg.header_timeout).await {
            Ok(sni) => sni,
            Err(e) => {
                if e != PeekError::Closed {
                    tracing::debug!(%peer, error = ?e, "no TLS ClientHello");
                }
                return;
            }
        }
    };
    let Some((_, rule)) = bind.l4_rule(sni.as_deref()) else {
        tracing::debug!(%peer, sni = sni.as_deref().unwrap_or(""), "no route for connection");
        let series = bind
            .select(sni.as_deref())
            .map_or(SeriesRef::Unmatched, |l| SeriesRef::NoRoute(l.id));
        active.series.get(series).record(404);
        return;
    };
    // Connections count into the rule's request series: 2xx forwarded,
    // 5xx refused for want of a reachable backend.
    let record = |slot: Option<usize>, ok: bool| {
        let slot = slot.unwrap_or(rule.backends.len());
        active
            .series
            .get(SeriesRef::Rule(rule.id, slot))
            .record(if ok { 200 } else { 503 });
    };
    match protocol {
        ListenerProtocol::TlsTerminate => {
            let Some(config) = bind
                .select(sni.as_deref())
                .and_then(|l| active.tls.get(l.id as usize).cloned().flatten())
            else {
                return;
            };
            let acceptor = monoio_rustls::TlsAcceptor::from(config);
            let tls =
                match monoio::time::timeout(worker.cfg.header_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(tls)) => {
                        worker.metrics().tls_handshakes.inc();
                        tls
                    }
                    Ok(Err(e)) => {
                        worker.metrics().tls_failures.inc();
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        worker.metrics().tls_failures.inc();
                        return;
                    }
                };
            let (slot, upstream) = connect(&worker, table, rule).await;
            record(slot, upstream.is_some());
            let Some(upstream) = upstream else { return };
            splice(&worker, tls, upstream).await;
        }
        _ => {
            let (slot, upstream) = connect(&worker, table, rule).await;
            record(slot, upstream.is_some());
            let Some(upstream) = upstream else { return };
            splice(&worker, stream, upstream).await;
        }
    }
}

/// Connects to an endpoint of the rule's weighted choice of backend, trying
/// the backend's other endpoints when one refuses. Returns the backendRef
/// slot chosen, if any.
async fn connect(
    worker: &Worker,
    table: &RouteTable,
    rule: &CompiledRule,
) -> (Option<usize>, Option<TcpStream>) {
    let Some(i) = pick_weighted(rule.backends.iter().map(|b| b.weight), worker.random()) else {
        return (None, None);
    };
    let BackendTarget::Backend(backend) = rule.backends[i].target else {
        return (Some(i), None); // an invalid backendRef: its share is refused
    };
    let endpoints = &table.backend(backend).endpoints;
    for _ in 0..endpoints.len().min(3) {
        let addr = endpoints[worker.next_endpoint(backend, endpoints.len())];
        match monoio::time::timeout(worker.cfg.connect_timeout, TcpStream::connect_addr(addr)).await
        {
            Ok(Ok(s)) => {
                worker.metrics().upstream_connects.inc();
                let _ = s.set_nodelay(true);
                return (Some(i), Some(s));
            }
            _ => {
                worker.metrics().upstream_connect_errors.inc();
                tracing::debug!(upstream = %addr, "upstream connect failed");
            }
        }
    }
    (Some(i), None)
}

/// Copies both ways until both directions ended, one failed, or the
/// connection idled out. Reads are never abandoned midway except when the
/// whole connection is torn down, so no byte read is ever dropped.
pub(crate) async fn splice<A, B>(worker: &Worker, a: A, b: B)
where
    A: Splitable,
    B: Splitable,
    A::OwnedRead: AsyncReadRent,
    A::OwnedWrite: AsyncWriteRent,
    B::OwnedRead: AsyncReadRent,
    B::OwnedWrite: AsyncWriteRent,
{
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let activity = Cell::new(Instant::now());
    let both = async {
        let mut down = pin!(pump(worker, ar, bw, &activity, true));
        let mut up = pin!(pump(worker, br, aw, &activity, false));
        monoio::select! {
            r = &mut down => if r.is_ok() { let _ = up.await; },
            r = &mut up => if r.is_ok() { let _ = down.await; },
        }
    };
    monoio::select! {
        _ = both => {},
        _ = idle_out(worker.cfg.stream_idle_timeout, &activity) => {
            tracing::debug!("stream idle timeout");
        },
    }
}

/// Returns once `activity` is older than `idle`.
async fn idle_out(idle: Duration, activity: &Cell<Instant>) {
    loop {
        let since = activity.get().elapsed();
        if since >= idle {
            return;
        }
        monoio::time::sleep(idle - since).await;
    }
}

/// One direction: reads `from`, writes `to`, passes the end of stream on.
async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(
    worker: &Worker,
    mut from: R,
    mut to: W,
    activity: &Cell<Instant>,
    downstream: bool,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        let (r, b) = from.read(buf).await;
        buf = b;
        let n = r?;
        if n == 0 {
            return to.shutdown().await;
        }
        activity.set(Instant::now());
        let m = worker.metrics();
        if downstream {
            m.bytes_received.add(n as u64);
        } else {
            m.bytes_sent.add(n as u64);
        }
        let (w, b) = to.write_all(buf).await;
        buf = b;
        buf.clear();
        w?;
    }
}
