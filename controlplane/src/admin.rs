//! The controlplane's admin endpoint: `/metrics` (Prometheus text format)
//! and `/healthz`, on a background thread.
//!
//! Metrics here are ordinary `prometheus` crate collectors: the controlplane
//! is never on the request path, and updates happen a few times per
//! configuration change.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use shardgate_core::admin_http::{self, JSON, PROMETHEUS, TEXT};
use std::net::SocketAddr;
use std::sync::Arc;

/// Every controlplane metric.
pub struct Metrics {
    registry: Registry,
    /// Objects held, by kind.
    pub objects: IntGaugeVec,
    /// Translation time.
    pub translation_seconds: Histogram,
    /// Snapshots published.
    pub snapshots_published: IntCounter,
    /// Size of the last publication.
    pub publication_bytes: IntGauge,
    /// Generation in force in the segment.
    pub generation: IntGauge,
    /// Status file writes.
    pub status_writes: IntCounter,
    /// Scans of the configuration directory (standalone mode).
    pub config_scans: IntCounter,
    /// Errors by kind (`config`, `publish`, `status`, `status_conflict`).
    pub errors: IntCounterVec,
    /// 1 while this controlplane holds the leader Lease (kube mode).
    pub leader: IntGauge,
    /// 1 while the Kubernetes API answers (kube mode).
    pub api_reachable: IntGauge,
    /// Failed lists and watches, by kind (kube mode).
    pub watch_errors: IntCounterVec,
    /// What `/readyz` and `/status` report.
    pub health: Health,
}

/// The controlplane's state as `/readyz` and `/status` tell it.
#[derive(Default)]
pub struct Health {
    state: std::sync::Mutex<HealthState>,
}

/// A copy of [`Health`]'s state.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HealthState {
    /// `file` or `kube`.
    pub mode: &'static str,
    /// A snapshot was published by this process.
    pub published: bool,
    /// Generation in force.
    pub generation: u64,
    /// Kube mode: whether the API answers.
    pub api_reachable: bool,
    /// Kube mode: Unix seconds since when the API has not answered.
    pub api_unreachable_since: Option<u64>,
    /// Kube mode: the last API error.
    pub last_api_error: Option<String>,
    /// Kube mode: kinds (or `Secret/<namespace>`) not listed yet.
    pub unsynced: Vec<String>,
    /// Kube mode: whether this process holds the Lease.
    pub leader: bool,
}

impl Health {
    /// Changes the state.
    pub fn update(&self, f: impl FnOnce(&mut HealthState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// A copy of the state.
    pub fn get(&self) -> HealthState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records whether the API answered; `error` says why not.
    pub fn api(&self, reachable: bool, error: Option<String>) {
        self.update(|h| {
            if reachable {
                h.api_unreachable_since = None;
            } else if h.api_unreachable_since.is_none() {
                h.api_unreachable_since = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs());
            }
            h.api_reachable = reachable;
            if error.is_some() {
                h.last_api_error = error;
            }
        });
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let objects = IntGaugeVec::new(
            Opts::new(
                "shardgate_controlplane_objects",
                "Objects watched, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let translation_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "shardgate_controlplane_translation_seconds",
                "Time to translate the store into a snapshot and status.",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
        )
        .expect("valid metric");
        let snapshots_published = IntCounter::new(
            "shardgate_controlplane_snapshots_published_total",
            "Snapshots published into the segment.",
        )
        .expect("valid metric");
        let publication_bytes = IntGauge::new(
            "shardgate_controlplane_publication_bytes",
            "Encoded size of the last published snapshot.",
        )
        .expect("valid metric");
        let generation = IntGauge::new(
            "shardgate_controlplane_snapshot_generation",
            "Generation in force in the segment.",
        )
        .expect("valid metric");
        let status_writes = IntCounter::new(
            "shardgate_controlplane_status_writes_total",
            "Status writes (file in standalone mode).",
        )
        .expect("valid metric");
        let config_scans = IntCounter::new(
            "shardgate_controlplane_config_scans_total",
            "Scans of the configuration directory (standalone mode): one per change burst and per --rescan-ms.",
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new("shardgate_controlplane_errors_total", "Errors, by kind."),
            &["kind"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "shardgate_controlplane_leader",
            "1 while this controlplane holds the leader Lease and writes status.",
        )
        .expect("valid metric");
        let api_reachable = IntGauge::new(
            "shardgate_controlplane_api_reachable",
            "1 while the Kubernetes API answers; 0 while the last snapshot is served without it.",
        )
        .expect("valid metric");
        let watch_errors = IntCounterVec::new(
            Opts::new(
                "shardgate_controlplane_watch_errors_total",
                "Failed lists and watches of the Kubernetes API, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        for c in [
            Box::new(objects.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(translation_seconds.clone()),
            Box::new(snapshots_published.clone()),
            Box::new(publication_bytes.clone()),
            Box::new(generation.clone()),
            Box::new(status_writes.clone()),
            Box::new(config_scans.clone()),
            Box::new(errors.clone()),
            Box::new(leader.clone()),
            Box::new(api_reachable.clone()),
            Box::new(watch_errors.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        for kind in ["config", "publish", "status", "status_conflict"] {
            errors.with_label_values(&[kind]);
        }
        Self {
            registry,
            objects,
            translation_seconds,
            snapshots_published,
            publication_bytes,
            generation,
            status_writes,
            config_scans,
            errors,
            leader,
            api_reachable,
            watch_errors,
            health: Health::default(),
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves on `addr`, from a background thread: `/metrics`; `/healthz` (the
/// process runs); `/readyz` (200 once this process published a snapshot,
/// else 503 saying what it waits for); `/status` (JSON: mode, generation,
/// API reachability, unsynced kinds, leadership).
pub fn spawn(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    admin_http::serve(addr, "shardgate-cp-admin", move |path| match path {
        "/metrics" => (200, PROMETHEUS, metrics.render()),
        "/healthz" => (200, TEXT, "ok\n".to_owned()),
        "/readyz" => {
            let h = metrics.health.get();
            if h.published {
                (200, TEXT, "ready\n".to_owned())
            } else if h.unsynced.is_empty() {
                (503, TEXT, "no snapshot published yet\n".to_owned())
            } else {
                (
                    503,
                    TEXT,
                    format!("waiting for the first list of: {}\n", h.unsynced.join(", ")),
                )
            }
        }
        "/status" => (
            200,
            JSON,
            serde_json::to_string_pretty(&metrics.health.get()).unwrap_or_default() + "\n",
        ),
        _ => (404, TEXT, "not found\n".to_owned()),
    })
}
