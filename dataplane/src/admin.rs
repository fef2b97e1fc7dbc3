//! The admin endpoint: `/healthz`, `/ready`, `/snapshot`, `/metrics`.
//!
//! A small blocking HTTP/1.1 server on its own thread, bound to localhost by
//! default. It only reads what workers publish in [`Shared`]; it is never on
//! the request path and never blocks a worker.

use crate::metrics;
use crate::shared::Shared;
use serde_json::json;
use shardgate_core::admin_http::{self, Answer, JSON, PROMETHEUS, TEXT};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Binds the admin endpoint and serves it on a background thread.
pub fn spawn(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    admin_http::serve(addr, "shardgate-admin", move |path| answer(path, &shared))
}

fn answer(path: &str, shared: &Shared) -> Answer {
    match path {
        "/healthz" => (200, TEXT, "ok\n".into()),
        "/ready" if shared.ready() => (200, TEXT, "ready\n".into()),
        "/ready" => (
            503,
            TEXT,
            "not ready: no valid snapshot on every worker\n".into(),
        ),
        "/snapshot" => (200, JSON, snapshot_json(shared).to_string()),
        "/metrics" => (200, PROMETHEUS, metrics::render(shared)),
        _ => (404, TEXT, "not found\n".into()),
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
                "applied": w.metrics.snapshots_applied.get(),
                "rejected": w.metrics.snapshots_rejected.get(),
                "io_driver": if w.io_uring.load(Ordering::Relaxed) { "io_uring" } else { "epoll" },
                "uring_taskrun": crate::runtime::UringTaskrun::name_from_status(w.uring_taskrun.load(Ordering::Relaxed)),
                "connections": w.metrics.connections_active.get(),
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
