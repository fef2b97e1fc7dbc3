//! What workers tell the rest of the process (admin endpoint, shutdown).
//!
//! Every field of a [`WorkerStatus`] is written only by its own worker, and
//! only on lifecycle events (snapshot applied or rejected, connection opened
//! or closed), never once per request; readers load them with `Relaxed` or
//! `Acquire` and tolerate a value that is a moment old.

use crate::metrics::{RequestSeries, SeriesLabels, WorkerMetrics};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// One worker's published state.
#[derive(Default)]
pub struct WorkerStatus {
    /// Generation of the snapshot in force (0: none yet).
    pub generation: AtomicU64,
    /// When the segment says it was published (unix ns).
    pub published_unix_nanos: AtomicU64,
    /// When this worker applied it (unix ns).
    pub applied_unix_nanos: AtomicU64,
    /// Whether the worker runs on io_uring (else epoll).
    pub io_uring: AtomicBool,
    /// The io_uring task-run mode in use (`UringTaskrun::status_value`; 0:
    /// not on io_uring).
    pub uring_taskrun: AtomicU8,
    /// Listening sockets open.
    pub listeners: AtomicU64,
    /// Listening sockets that failed to bind.
    pub bind_errors: AtomicU64,
    /// Sizes of the snapshot in force.
    pub rules: AtomicU64,
    /// Backends in the snapshot in force.
    pub backends: AtomicU64,
    /// Endpoints in the snapshot in force.
    pub endpoints: AtomicU64,
    /// Counters and histograms, written by this worker only.
    pub metrics: WorkerMetrics,
    /// Request series by labels, registered when snapshots are applied
    /// (never per request) and read at scrape time.
    #[allow(clippy::disallowed_types)]
    // taken at snapshot apply and scrape only, never per request
    series: std::sync::Mutex<BTreeMap<SeriesLabels, Arc<RequestSeries>>>,
}

impl WorkerStatus {
    /// The series for `labels`, created on first use. Called when a
    /// snapshot is applied; an existing series keeps counting.
    pub fn series(&self, labels: SeriesLabels) -> Arc<RequestSeries> {
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            map.entry(labels.clone())
                .or_insert_with(|| Arc::new(RequestSeries::new(labels))),
        )
    }

    /// Every series of this worker, for a scrape.
    pub fn series_snapshot(&self) -> Vec<Arc<RequestSeries>> {
        let map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }
}

/// State shared by all workers and the control threads.
pub struct Shared {
    /// One entry per worker.
    pub workers: Vec<WorkerStatus>,
    /// Set once by the main thread on SIGTERM/SIGINT.
    pub draining: AtomicBool,
    /// TLS session tickets and cache, shared so resumption works on any core.
    pub(crate) tls: crate::tls::TlsShared,
}

impl Shared {
    /// State for `n` workers.
    pub fn new(n: usize) -> anyhow::Result<Self> {
        Ok(Self {
            workers: (0..n).map(|_| WorkerStatus::default()).collect(),
            draining: AtomicBool::new(false),
            tls: crate::tls::TlsShared::new()?,
        })
    }

    /// Ready: every worker has a valid snapshot in force.
    pub fn ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
            && self
                .workers
                .iter()
                .all(|w| w.generation.load(Ordering::Acquire) > 0)
    }

    /// Open downstream connections across workers.
    pub fn connections(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.metrics.connections_active.get().max(0) as u64)
            .sum()
    }
}
