//! A worker: one core's event loop and everything it owns.
//!
//! Snapshot lifecycle on a worker, checked when the wake thread nudges it
//! (within microseconds of a publication, see `wake`), before routing each
//! request (one atomic load of the segment's generation: a saturated worker
//! collects its wake only between batches of completions) and, as the
//! fallback, every `poll_interval`:
//!
//! ```text
//!  Waiting ──segment appears──▶ Following ──new generation──▶ copy (seqlock)
//!     ▲                            │  ▲                          │
//!     └──segment replaced/moved────┘  │        decode + compile ─┤
//!                                     │                          ├─ error ─▶ rejected (count once,
//!                                     │                          │           keep the table in force)
//!                                     └──── swap Rc<RouteTable> ◀┘ ok: open new listeners,
//!                                                                    stop removed ones
//! ```
//!
//! Every trigger runs the same synchronous `Follower::poll` on the worker's
//! own thread (the main loop on its tick, a second task on a wake byte, the
//! request about to be routed), so they never overlap.
//!
//! Requests in flight hold an `Rc` of the table they started with, so a swap
//! never disturbs them. On drain the worker stops accepting, wakes idle
//! connections so they close, and returns once its connections are gone or
//! the drain deadline passes.

use crate::access_log::AccessLog;
use crate::listener;
use crate::metrics::{RequestSeries, SeriesLabels, WorkerMetrics};
use crate::pool::Pool;
use crate::runtime::WorkerConfig;
use crate::shared::{Shared, WorkerStatus};
use crate::stop::Stop;
use crate::tls::KeyCache;
use shardgate_core::shm::{ReadOutcome, Reader};
use shardgate_core::{decode, BackendTarget, RouteTable, Transport};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A bound transport, address and port.
pub(crate) type BindKey = (Transport, IpAddr, u16);

/// The route table in force and the request series of its rules, swapped
/// together; requests hold an `Rc` of the pair they started with.
pub(crate) struct Active {
    pub(crate) table: RouteTable,
    pub(crate) series: SeriesIndex,
    /// TLS server configurations by listener id (terminating listeners).
    pub(crate) tls: Vec<Option<Arc<rustls::ServerConfig>>>,
}

/// Request series of one table, indexed by the table's dense ids.
pub(crate) struct SeriesIndex {
    /// Requests that matched no listener (or failed before routing).
    pub(crate) unmatched: Arc<RequestSeries>,
    /// By listener id: requests no rule matched.
    pub(crate) no_route: Vec<Arc<RequestSeries>>,
    /// By rule id, then backendRef slot; the extra last slot is for a rule
    /// without usable backends.
    pub(crate) rules: Vec<Vec<Arc<RequestSeries>>>,
}

/// Which series a request counts into.
#[derive(Clone, Copy)]
pub(crate) enum SeriesRef {
    Unmatched,
    NoRoute(u32),
    Rule(u32, usize),
}

impl SeriesIndex {
    fn build(status: &WorkerStatus, table: &RouteTable) -> Self {
        let labels =
            |gateway: String, listener: String, route: String, backend: String| SeriesLabels {
                gateway,
                listener,
                route,
                backend,
            };
        let unmatched = status.series(labels(
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ));
        let no_route = table
            .listeners()
            .map(|l| {
                status.series(labels(
                    l.gateway.to_string(),
                    l.name.clone(),
                    String::new(),
                    String::new(),
                ))
            })
            .collect();
        let rules = table
            .rules()
            .map(|(l, r)| {
                let series = |backend: String| {
                    status.series(labels(
                        l.gateway.to_string(),
                        l.name.clone(),
                        r.source.route.to_string(),
                        backend,
                    ))
                };
                let mut slots: Vec<_> = r
                    .backends
                    .iter()
                    .map(|b| match b.target {
                        BackendTarget::Backend(i) => series(table.backend(i).name.clone()),
                        BackendTarget::Invalid { .. } => series("invalid".to_owned()),
                    })
                    .collect();
                slots.push(series(String::new()));
                slots
            })
            .collect();
        Self {
            unmatched,
            no_route,
            rules,
        }
    }

    /// The series a request counts into.
    pub(crate) fn get(&self, r: SeriesRef) -> &RequestSeries {
        match r {
            SeriesRef::Unmatched => &self.unmatched,
            SeriesRef::NoRoute(l) => self.no_route.get(l as usize).unwrap_or(&self.unmatched),
            SeriesRef::Rule(id, slot) => self
                .rules
                .get(id as usize)
                .and_then(|s| s.get(slot))
                .map_or(&self.unmatched, |s| s),
        }
    }
}

/// One worker's state. Lives in an `Rc`; only this worker's tasks touch it.
pub(crate) struct Worker {
    pub(crate) id: usize,
    pub(crate) cfg: Arc<WorkerConfig>,
    shared: Arc<Shared>,
    active: RefCell<Option<Rc<Active>>>,
    listeners: RefCell<HashMap<BindKey, Stop>>,
    failed_binds: RefCell<Vec<BindKey>>,
    pub(crate) pool: Pool,
    /// HTTP/2 connections to h2c backends.
    pub(crate) h2c: crate::h2c::H2Clients,
    rng: Cell<u64>,
    round_robin: RefCell<Vec<u32>>,
    /// Fired when the worker drains.
    pub(crate) drain: Stop,
    open_connections: Cell<u64>,
    /// Access log, if enabled.
    pub(crate) access_log: Option<AccessLog>,
    /// Signing keys built from the snapshot's certificates.
    keys: RefCell<KeyCache>,
    /// The segment and the generations seen.
    follower: RefCell<Follower>,
}

impl Worker {
    fn status(&self) -> &WorkerStatus {
        &self.shared.workers[self.id]
    }

    /// This worker's counters.
    pub(crate) fn metrics(&self) -> &WorkerMetrics {
        &self.status().metrics
    }

    /// The route table (and its series) in force, if any.
    pub(crate) fn active(&self) -> Option<Rc<Active>> {
        self.active.borrow().clone()
    }

    /// The route table for a request about to be routed, after applying a
    /// generation published since the last one applied. A busy worker
    /// collects its wake only between batches of completions (hundreds of
    /// µs under load); this check, one atomic load from the segment header,
    /// picks a publication up at the next request instead.
    pub(crate) fn active_now(self: &Rc<Self>) -> Option<Rc<Active>> {
        // Already polling (the poll tick or the wake task): nothing to add.
        if let Ok(mut follower) = self.follower.try_borrow_mut() {
            if follower.behind() {
                follower.poll(self);
            }
        }
        self.active()
    }

    /// A cheap per-worker pseudo-random number (xorshift64*), for weighted
    /// backend choice. Not for anything security-relevant.
    pub(crate) fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The next endpoint index of `backend` in round-robin order.
    pub(crate) fn next_endpoint(&self, backend: u32, endpoints: usize) -> usize {
        let mut rr = self.round_robin.borrow_mut();
        let i = backend as usize;
        if rr.len() <= i {
            rr.resize(i + 1, 0);
        }
        let n = rr[i];
        rr[i] = n.wrapping_add(1);
        n as usize % endpoints.max(1)
    }

    /// Tracks an open downstream connection until the guard drops.
    pub(crate) fn connection_opened(self: &Rc<Self>) -> ConnectionGuard {
        self.open_connections.set(self.open_connections.get() + 1);
        self.metrics().connections_total.inc();
        self.metrics().connections_active.add(1);
        ConnectionGuard(Rc::clone(self))
    }

    /// Whether the worker is draining (no new requests on kept-alive
    /// connections).
    pub(crate) fn draining(&self) -> bool {
        self.drain.is_fired()
    }
}

/// Decrements the connection count when a connection ends.
pub(crate) struct ConnectionGuard(Rc<Worker>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0
            .open_connections
            .set(self.0.open_connections.get() - 1);
        self.0.metrics().connections_active.add(-1);
    }
}

/// Follows the segment, swaps tables, manages listeners; returns after drain.
/// `wake`: this worker's end of its socket pair with the wake thread, if any.
pub(crate) async fn run(
    id: usize,
    cfg: Arc<WorkerConfig>,
    shared: Arc<Shared>,
    wake: Option<UnixStream>,
) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ ((id as u64 + 1) << 32);
    let worker = Rc::new(Worker {
        id,
        pool: Pool::new(cfg.pool_max_idle),
        h2c: crate::h2c::H2Clients::default(),
        access_log: cfg.access_log.clone().map(AccessLog::new),
        cfg,
        shared,
        active: RefCell::new(None),
        listeners: RefCell::new(HashMap::new()),
        failed_binds: RefCell::new(Vec::new()),
        rng: Cell::new(seed | 1),
        round_robin: RefCell::new(Vec::new()),
        drain: Stop::new(),
        open_connections: Cell::new(0),
        keys: RefCell::new(KeyCache::default()),
        follower: RefCell::new(Follower::default()),
    });
    if let Some(wake) = wake {
        match monoio::net::UnixStream::from_std(wake) {
            Ok(wake) => {
                monoio::spawn(follow_wakes(Rc::clone(&worker), wake));
            }
            Err(e) => {
                tracing::warn!(worker = id, error = %e, "no snapshot wake; polling only");
            }
        }
    }
    let mut last_housekeeping = Instant::now();
    while !worker.shared.draining.load(Ordering::Relaxed) {
        worker.follower.borrow_mut().poll(&worker);
        if let Some(log) = &worker.access_log {
            log.flush_if_due(worker.metrics());
        }
        if last_housekeeping.elapsed() >= Duration::from_secs(1) {
            last_housekeeping = Instant::now();
            worker.follower.borrow_mut().check_replaced();
            retry_failed_binds(&worker);
            worker.pool.expire();
        }
        // Until a first table is in force there is no request to notice a
        // publication: look often, whatever the poll interval.
        let pause = if worker.active.borrow().is_none() {
            worker.cfg.poll_interval.min(Duration::from_millis(10))
        } else {
            worker.cfg.poll_interval
        };
        monoio::time::sleep(pause).await;
    }
    drain(&worker).await;
}

/// Checks the segment whenever the wake thread writes to this worker's end
/// of their socket pair. One read stays pending between wakes (a poll on the
/// socket in either driver); it costs nothing per request. Ends on drain, or
/// if the thread's end closes (the poll tick carries on alone).
async fn follow_wakes(worker: Rc<Worker>, mut wake: monoio::net::UnixStream) {
    use monoio::io::AsyncReadRent;
    // Bytes pile up only while the worker is busy; one read takes them all.
    let mut buf = vec![0u8; 64];
    loop {
        let (read, b) = monoio::select! {
            r = wake.read(buf) => r,
            () = worker.drain.wait() => return,
        };
        buf = b;
        // The main loop stops polling before it drains; so do we (a snapshot
        // applied now would re-open the listeners the drain closes).
        if worker.shared.draining.load(Ordering::Relaxed) || worker.draining() {
            return;
        }
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!(worker = worker.id, error = %e, "snapshot wake failed; polling only");
                return;
            }
        }
        let mut follower = worker.follower.borrow_mut();
        // Any wake may follow a replacement: the thread and this worker
        // open the path at different moments, so a segment replaced before
        // the thread first opened it is news to us, not to the thread. One
        // stat per wake.
        follower.check_replaced();
        follower.poll(&worker);
    }
}

async fn drain(worker: &Rc<Worker>) {
    tracing::info!(
        worker = worker.id,
        connections = worker.open_connections.get(),
        "draining"
    );
    for (_, stop) in worker.listeners.borrow_mut().drain() {
        stop.fire();
    }
    worker.status().listeners.store(0, Ordering::Relaxed);
    worker.drain.fire();
    let deadline = Instant::now() + worker.cfg.drain_timeout;
    while worker.open_connections.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if worker.open_connections.get() > 0 {
        tracing::warn!(
            worker = worker.id,
            connections = worker.open_connections.get(),
            "drain deadline passed"
        );
    }
    if let Some(log) = &worker.access_log {
        log.flush(worker.metrics());
    }
}

/// Tracks the segment and the generations seen.
#[derive(Default)]
struct Follower {
    reader: Option<Reader>,
    /// Last generation read, applied or rejected: not read again.
    seen: u64,
    waiting_logged: bool,
}

impl Follower {
    /// Whether the segment holds a generation this worker has not read.
    fn behind(&self) -> bool {
        self.reader
            .as_ref()
            .is_some_and(|r| r.generation() != self.seen)
    }

    fn poll(&mut self, worker: &Rc<Worker>) {
        let reader = match &mut self.reader {
            Some(r) => r,
            None => match Reader::open(&worker.cfg.shm) {
                Ok(r) => {
                    tracing::info!(worker = worker.id, shm = %worker.cfg.shm.display(), "following segment");
                    self.reader.insert(r)
                }
                Err(e) => {
                    if !self.waiting_logged {
                        tracing::info!(worker = worker.id, reason = %e, "waiting for the controlplane's segment");
                        self.waiting_logged = true;
                    }
                    return;
                }
            },
        };
        match reader.read(self.seen) {
            Ok(ReadOutcome::Snapshot(p)) => {
                self.seen = p.generation;
                apply(worker, p.generation, p.published_unix_nanos, &p.bytes);
            }
            Ok(ReadOutcome::Moved(_)) => self.reader = None,
            Ok(ReadOutcome::Empty | ReadOutcome::Unchanged | ReadOutcome::Busy) => {}
            Err(e) => {
                let generation = reader.generation();
                if generation != self.seen {
                    self.seen = generation;
                    reject(worker, generation, &e);
                }
            }
        }
    }

    /// A segment file replaced behind our back (deleted and recreated by a
    /// fresh controlplane) is re-opened; the mapping we hold is orphaned.
    fn check_replaced(&mut self) {
        if self.reader.as_ref().is_some_and(Reader::is_replaced) {
            self.reader = None;
            // The new segment counts its generations afresh (a fresh
            // controlplane starts at 1): one equal to ours is not ours.
            self.seen = 0;
        }
    }
}

fn reject(worker: &Worker, generation: u64, error: &dyn std::fmt::Display) {
    worker.metrics().snapshots_rejected.inc();
    tracing::warn!(worker = worker.id, generation, %error, "snapshot rejected; keeping the one in force");
}

fn apply(worker: &Rc<Worker>, generation: u64, published: u64, bytes: &[u8]) {
    let table = match decode(bytes) {
        Ok(snapshot) => match RouteTable::compile(&snapshot) {
            Ok(t) => (t, snapshot.summary()),
            Err(e) => return reject(worker, generation, &e),
        },
        Err(e) => return reject(worker, generation, &e),
    };
    let (table, summary) = table;
    let tls = crate::tls::server_configs(&table, &worker.shared.tls, &mut worker.keys.borrow_mut());
    sync_listeners(worker, &table);
    let series = SeriesIndex::build(worker.status(), &table);
    *worker.active.borrow_mut() = Some(Rc::new(Active { table, series, tls }));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let s = worker.status();
    s.rules.store(summary.rules as u64, Ordering::Relaxed);
    s.backends.store(summary.backends as u64, Ordering::Relaxed);
    s.endpoints
        .store(summary.endpoints as u64, Ordering::Relaxed);
    s.published_unix_nanos.store(published, Ordering::Relaxed);
    s.applied_unix_nanos.store(now, Ordering::Relaxed);
    let m = &s.metrics;
    m.snapshots_applied.inc();
    m.generation.set(generation as i64);
    m.apply_delay
        .observe(Duration::from_nanos(now.saturating_sub(published)));
    // Release: /ready readers that see the generation see the rest.
    s.generation.store(generation, Ordering::Release);
    tracing::info!(
        worker = worker.id,
        generation,
        listeners = summary.listeners,
        rules = summary.rules,
        delay_us = now.saturating_sub(published) / 1000,
        "snapshot applied"
    );
}

/// Opens sockets for new binds and stops accept loops of removed ones.
fn sync_listeners(worker: &Rc<Worker>, table: &RouteTable) {
    let wanted: Vec<BindKey> = table
        .binds()
        .iter()
        .map(|b| (b.transport(), b.address, b.port))
        .collect();
    {
        let mut listeners = worker.listeners.borrow_mut();
        listeners.retain(|key, stop| {
            let keep = wanted.contains(key);
            if !keep {
                stop.fire();
                tracing::info!(worker = worker.id, transport = ?key.0, address = %key.1, port = key.2, "listener closed");
            }
            keep
        });
    }
    worker
        .failed_binds
        .borrow_mut()
        .retain(|k| wanted.contains(k));
    for key in wanted {
        if !worker.listeners.borrow().contains_key(&key)
            && !worker.failed_binds.borrow().contains(&key)
        {
            open_listener(worker, key, true);
        }
    }
    update_listener_count(worker);
}

fn open_listener(worker: &Rc<Worker>, key: BindKey, first_try: bool) {
    let stop = Stop::new();
    let bound = match key.0 {
        Transport::Tcp => listener::bind(key).map(|l| {
            monoio::spawn(listener::accept_loop(
                Rc::clone(worker),
                l,
                key,
                stop.clone(),
            ));
        }),
        Transport::Udp => crate::udp::bind(key).map(|s| {
            monoio::spawn(crate::udp::serve(Rc::clone(worker), s, key, stop.clone()));
        }),
    };
    match bound {
        Ok(()) => {
            worker.listeners.borrow_mut().insert(key, stop);
            tracing::info!(worker = worker.id, transport = ?key.0, address = %key.1, port = key.2, "listener bound");
        }
        Err(e) => {
            worker.failed_binds.borrow_mut().push(key);
            if first_try {
                worker.status().bind_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(worker = worker.id, transport = ?key.0, address = %key.1, port = key.2, error = %e, "cannot bind listener; retrying every second");
            }
        }
    }
}

fn retry_failed_binds(worker: &Rc<Worker>) {
    let failed: Vec<BindKey> = worker.failed_binds.borrow_mut().drain(..).collect();
    for key in failed {
        open_listener(worker, key, false);
    }
    update_listener_count(worker);
}

fn update_listener_count(worker: &Worker) {
    worker
        .status()
        .listeners
        .store(worker.listeners.borrow().len() as u64, Ordering::Relaxed);
}
