//! UDP listeners: datagrams forwarded per client address.
//!
//! ```text
//!  client ─▶ listening socket (SO_REUSEPORT: a client's flow hashes to one worker)
//!              │ first datagram: rule ─▶ weighted backend ─▶ endpoint; new session with
//!              │ its own connected upstream socket and a task relaying replies back
//!              ▼
//!            session.upstream ─▶ backend ─▶ replies ─▶ send_to(client) from the listening socket
//! ```
//!
//! A session keeps the backend it chose (weights apply per session) and ends
//! after the idle timeout without a datagram either way.

use crate::stop::Stop;
use crate::worker::{BindKey, SeriesRef, Worker};
use monoio::buf::IoBuf;
use monoio::net::udp::UdpSocket;
use shardgate_core::route::pick_weighted;
use shardgate_core::{BackendTarget, Transport};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 64 * 1024;

/// Binds this worker's UDP socket for `key`.
pub(crate) fn bind(key: BindKey) -> std::io::Result<UdpSocket> {
    UdpSocket::from_std(crate::listener::reuseport_socket(key)?.into())
}

struct Session {
    upstream: Rc<UdpSocket>,
    activity: Rc<Cell<Instant>>,
}

/// Receives datagrams until `stop` fires.
pub(crate) async fn serve(worker: Rc<Worker>, socket: UdpSocket, key: BindKey, stop: Stop) {
    let socket = Rc::new(socket);
    let sessions: Rc<RefCell<HashMap<SocketAddr, Session>>> = Rc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = monoio::select! {
            r = socket.recv_from(buf) => r,
            _ = stop.wait() => break,
        };
        let (result, b) = received;
        buf = b;
        let (n, client) = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(worker = worker.id, error = %e, "udp receive failed");
                buf = vec![0u8; MAX_DATAGRAM];
                continue;
            }
        };
        worker.metrics().bytes_received.add(n as u64);
        let existing = sessions
            .borrow()
            .get(&client)
            .map(|s| (Rc::clone(&s.upstream), Rc::clone(&s.activity)));
        let (upstream, activity) = match existing {
            Some(s) => s,
            None => match open_session(&worker, key, client, &socket, &sessions).await {
                Some(s) => s,
                None => continue, // no route or backend: dropped, as a router would
            },
        };
        activity.set(Instant::now());
        // The receive buffer itself goes out and comes back: no copy.
        let (r, slice) = upstream.send(buf.slice(..n)).await;
        buf = slice.into_inner();
        if let Err(e) = r {
            tracing::debug!(worker = worker.id, %client, error = %e, "udp send upstream failed");
        }
    }
}

/// Picks the backend for a new client and starts relaying its replies.
async fn open_session(
    worker: &Rc<Worker>,
    key: BindKey,
    client: SocketAddr,
    listening: &Rc<UdpSocket>,
    sessions: &Rc<RefCell<HashMap<SocketAddr, Session>>>,
) -> Option<(Rc<UdpSocket>, Rc<Cell<Instant>>)> {
    let active = worker.active()?;
    let table = &active.table;
    let bind = table
        .bind_index(Transport::Udp, key.1, key.2)
        .and_then(|i| table.bind(i))?;
    let Some((_, rule)) = bind.l4_rule(None) else {
        let series = bind
            .select(None)
            .map_or(SeriesRef::Unmatched, |l| SeriesRef::NoRoute(l.id));
        active.series.get(series).record(404);
        return None;
    };
    // Sessions count into the rule's request series (2xx opened, 5xx refused).
    let refused = |slot: usize| {
        active
            .series
            .get(SeriesRef::Rule(rule.id, slot))
            .record(503);
        None
    };
    let Some(i) = pick_weighted(rule.backends.iter().map(|b| b.weight), worker.random()) else {
        return refused(rule.backends.len());
    };
    let BackendTarget::Backend(backend) = rule.backends[i].target else {
        return refused(i);
    };
    let endpoints = &table.backend(backend).endpoints;
    if endpoints.is_empty() {
        return refused(i);
    }
    let endpoint = endpoints[worker.next_endpoint(backend, endpoints.len())];
    let local: IpAddr = match endpoint {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let upstream = match UdpSocket::bind(SocketAddr::new(local, 0)) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(worker = worker.id, error = %e, "cannot open a udp upstream socket");
            return refused(i);
        }
    };
    if let Err(e) = upstream.connect(endpoint).await {
        tracing::debug!(worker = worker.id, %endpoint, error = %e, "udp connect failed");
        return refused(i);
    }
    active.series.get(SeriesRef::Rule(rule.id, i)).record(200);
    let upstream = Rc::new(upstream);
    let activity = Rc::new(Cell::new(Instant::now()));
    sessions.borrow_mut().insert(
        client,
        Session {
            upstream: Rc::clone(&upstream),
            activity: Rc::clone(&activity),
        },
    );
    monoio::spawn(relay_replies(
        Rc::clone(worker),
        Rc::clone(&upstream),
        Rc::clone(listening),
        client,
        Rc::clone(&activity),
        Rc::clone(sessions),
    ));
    Some((upstream, activity))
}

/// Sends the backend's replies to the client until the session idles out.
async fn relay_replies(
    worker: Rc<Worker>,
    upstream: Rc<UdpSocket>,
    listening: Rc<UdpSocket>,
    client: SocketAddr,
    activity: Rc<Cell<Instant>>,
    sessions: Rc<RefCell<HashMap<SocketAddr, Session>>>,
) {
    let idle = worker.cfg.udp_idle_timeout;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let left = idle.saturating_sub(activity.get().elapsed());
        if left.is_zero() {
            break;
        }
        // A receive abandoned here ends the session: nothing is lost that
        // a UDP client would not retry anyway.
        let Ok((r, b)) = monoio::time::timeout(left, upstream.recv(buf)).await else {
            buf = vec![0u8; MAX_DATAGRAM];
            continue; // re-check: the client may have sent meanwhile
        };
        buf = b;
        // An error (ECONNREFUSED after an ICMP port unreachable) keeps the
        // session: the backend may come back.
        let Ok(n) = r else {
            monoio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        activity.set(Instant::now());
        let (r, slice) = listening.send_to(buf.slice(..n), client).await;
        buf = slice.into_inner();
        match r {
            Ok(sent) => worker.metrics().bytes_sent.add(sent as u64),
            Err(e) => tracing::debug!(%client, error = %e, "udp reply failed"),
        }
    }
    sessions.borrow_mut().remove(&client);
}
