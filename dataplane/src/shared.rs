//! What workers tell the rest of the process (admin endpoint, shutdown).
//!
//! Every field of a [`WorkerStatus`] is written only by its own worker, and
//! only on lifecycle events (snapshot applied or rejected, connection opened
//! or closed), never once per request; readers load them with `Relaxed` or
//! `Acquire` and tolerate a value that is a moment old.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One worker's published state.
#[derive(Default)]
pub struct WorkerStatus {
    /// Generation of the snapshot in force (0: none yet).
    pub generation: AtomicU64,
    /// When the segment says it was published (unix ns).
    pub published_unix_nanos: AtomicU64,
    /// When this worker applied it (unix ns).
    pub applied_unix_nanos: AtomicU64,
    /// Snapshots applied.
    pub applied: AtomicU64,
    /// Snapshots rejected (failed to copy, decode or compile).
    pub rejected: AtomicU64,
    /// Whether the worker runs on io_uring (else epoll).
    pub io_uring: AtomicBool,
    /// Open downstream connections.
    pub connections: AtomicU64,
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
    /// The worker has stopped.
    pub stopped: AtomicBool,
}

/// State shared by all workers and the control threads.
pub struct Shared {
    /// One entry per worker.
    pub workers: Vec<WorkerStatus>,
    /// Set once by the main thread on SIGTERM/SIGINT.
    pub draining: AtomicBool,
}

impl Shared {
    /// State for `n` workers.
    pub fn new(n: usize) -> Self {
        Self {
            workers: (0..n).map(|_| WorkerStatus::default()).collect(),
            draining: AtomicBool::new(false),
        }
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
            .map(|w| w.connections.load(Ordering::Relaxed))
            .sum()
    }
}
