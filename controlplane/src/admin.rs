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
use shardgate_core::admin_http::{self, PROMETHEUS, TEXT};
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
    /// Errors by kind (`config`, `publish`, `status`).
    pub errors: IntCounterVec,
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
        let errors = IntCounterVec::new(
            Opts::new("shardgate_controlplane_errors_total", "Errors, by kind."),
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
            Box::new(errors.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        for kind in ["config", "publish", "status"] {
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
            errors,
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

/// Serves `/metrics` and `/healthz` on `addr` from a background thread.
pub fn spawn(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    admin_http::serve(addr, "shardgate-cp-admin", move |path| match path {
        "/metrics" => (200, PROMETHEUS, metrics.render()),
        "/healthz" => (200, TEXT, "ok\n".to_owned()),
        _ => (404, TEXT, "not found\n".to_owned()),
    })
}
