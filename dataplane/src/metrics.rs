//! Per-core metrics, summed at scrape time.
//!
//! Every counter here has exactly one writer, the worker that owns it, which
//! bumps it with a plain load and store (no locked read-modify-write, no
//! shared cache line written by two cores). The admin thread reads the
//! values with relaxed loads when Prometheus scrapes, sums them across
//! workers and encodes them with the `prometheus` crate's data model and
//! text encoder. A value read mid-update is at most one increment old.
//!
//! Label values are resolved when a snapshot is applied, never per request:
//! each (rule, backendRef) pair of the route table gets a [`RequestSeries`]
//! whose labels were fixed at that moment; a request only indexes into it.

mod exposition;
pub mod names;

pub use exposition::render;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`. Single writer: a plain load and store, no lock prefix.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge with a single writer.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds `n` (may be negative).
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket upper bounds in seconds: 100 µs to 60 s, roughly ×2.5 apart.
pub const BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// A latency histogram with a single writer. Buckets are stored
/// non-cumulatively and made cumulative at scrape time.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; BUCKETS.len()],
    sum_nanos: Counter,
    count: Counter,
}

impl Histogram {
    /// Records one observation.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].inc();
        }
        self.sum_nanos
            .add(d.as_nanos().min(u128::from(u64::MAX)) as u64);
        self.count.inc();
    }

    /// Adds this histogram into a cumulative snapshot.
    pub fn accumulate(&self, into: &mut HistogramSnapshot) {
        let mut running = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            running += b.get();
            into.cumulative[i] += running;
        }
        into.sum_seconds += self.sum_nanos.get() as f64 / 1e9;
        into.count += self.count.get();
    }
}

/// Summed histogram values at scrape time.
#[derive(Debug, Clone, Default)]
pub struct HistogramSnapshot {
    /// Cumulative counts per bucket of [`BUCKETS`].
    pub cumulative: [u64; BUCKETS.len()],
    /// Sum of observations.
    pub sum_seconds: f64,
    /// Number of observations.
    pub count: u64,
}

/// Why a request was answered without a backend, as a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 400: malformed request.
    BadRequest,
    /// 408: head not received in time.
    HeadTimeout,
    /// 431: head too large.
    HeadTooLarge,
    /// 404: no listener or rule matched.
    NoRoute,
    /// 501: unsupported method or coding.
    NotImplemented,
}

impl Rejection {
    /// All reasons, in label order.
    pub const ALL: [Self; 5] = [
        Self::BadRequest,
        Self::HeadTimeout,
        Self::HeadTooLarge,
        Self::NoRoute,
        Self::NotImplemented,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::HeadTimeout => "header_timeout",
            Self::HeadTooLarge => "header_too_large",
            Self::NoRoute => "no_route",
            Self::NotImplemented => "not_implemented",
        }
    }
}

/// Labels of a request series, fixed when a snapshot is applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesLabels {
    /// `namespace/name` of the Gateway, or empty when no listener matched.
    pub gateway: String,
    /// Listener name, or empty.
    pub listener: String,
    /// `namespace/name` of the route, or empty when no rule matched.
    pub route: String,
    /// Backend (`namespace/service:port`), `invalid`, or empty.
    pub backend: String,
}

/// Requests of one label set, by status class (1xx … 5xx).
#[derive(Debug)]
pub struct RequestSeries {
    /// Its labels.
    pub labels: SeriesLabels,
    /// Index 0 is 1xx, 4 is 5xx.
    pub by_class: [Counter; 5],
}

impl RequestSeries {
    /// A series with zero counts.
    pub fn new(labels: SeriesLabels) -> Self {
        Self {
            labels,
            by_class: Default::default(),
        }
    }

    /// Counts a response status.
    #[inline]
    pub fn record(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
    }
}

/// Everything one worker counts.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Downstream connections accepted.
    pub connections_total: Counter,
    /// Downstream connections open.
    pub connections_active: Gauge,
    /// Bytes read from downstream clients.
    pub bytes_received: Counter,
    /// Bytes written to downstream clients.
    pub bytes_sent: Counter,
    /// Requests answered (any status).
    pub requests: Counter,
    /// Upstream connections opened.
    pub upstream_connects: Counter,
    /// Upstream connection attempts that failed.
    pub upstream_connect_errors: Counter,
    /// Upstream requests that reused a pooled connection.
    pub pool_hits: Counter,
    /// Upstream requests that needed a new connection.
    pub pool_misses: Counter,
    /// Requests answered locally, by [`Rejection`].
    pub rejected: [Counter; Rejection::ALL.len()],
    /// TLS handshakes completed.
    pub tls_handshakes: Counter,
    /// TLS handshakes failed.
    pub tls_failures: Counter,
    /// HTTP/2 connections closed for abuse (protocol violations, reset
    /// floods, excess streams).
    pub h2_abuse: Counter,
    /// Snapshots applied.
    pub snapshots_applied: Counter,
    /// Snapshots rejected.
    pub snapshots_rejected: Counter,
    /// Generation in force.
    pub generation: Gauge,
    /// Publication → application delay of each applied snapshot.
    pub apply_delay: Histogram,
    /// Time from the first byte of a request head to the end of its response.
    pub request_duration: Histogram,
    /// Time from sending a request upstream to its response head.
    pub upstream_duration: Histogram,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
}

impl WorkerMetrics {
    /// Counts a local rejection.
    #[inline]
    pub fn reject(&self, r: Rejection) {
        self.rejected[r as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        for ms in [0, 1, 3, 700, 120_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut s = HistogramSnapshot::default();
        h.accumulate(&mut s);
        assert_eq!(s.count, 5);
        assert_eq!(s.cumulative[0], 1, "0 ms is in the first bucket");
        assert_eq!(s.cumulative[BUCKETS.len() - 1], 4, "120 s is only in +Inf");
        assert!(s.cumulative.windows(2).all(|w| w[0] <= w[1]));
        assert!((s.sum_seconds - 120.704).abs() < 1e-6);
    }

    #[test]
    fn series_count_by_status_class() {
        let s = RequestSeries::new(SeriesLabels {
            gateway: "g".into(),
            listener: "l".into(),
            route: "r".into(),
            backend: "b".into(),
        });
        for st in [200, 204, 404, 503, 101] {
            s.record(st);
        }
        let counts: Vec<u64> = s.by_class.iter().map(Counter::get).collect();
        assert_eq!(counts, [1, 2, 0, 1, 1]);
    }
}
