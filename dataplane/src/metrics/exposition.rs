//! Scrape: sums every worker's counters and encodes them in the Prometheus
//! text format with the `prometheus` crate's model and encoder.

use super::names::{self, Name};
use super::{Counter, HistogramSnapshot, Rejection, SeriesLabels, BUCKETS};
use crate::shared::Shared;
use prometheus::proto::{Bucket, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::Encoder;
use std::collections::BTreeMap;

type Labels = Vec<(&'static str, String)>;

fn labels(pairs: Labels) -> Vec<LabelPair> {
    pairs
        .into_iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name(k.to_owned());
            l.set_value(v);
            l
        })
        .collect()
}

fn family(name: Name, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.0.to_owned());
    f.set_help(name.1.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(name: Name, samples: Vec<(Labels, u64)>) -> MetricFamily {
    let metrics = samples
        .into_iter()
        .map(|(l, v)| {
            let mut c = prometheus::proto::Counter::default();
            c.set_value(v as f64);
            let mut m = Metric::default();
            m.set_label(labels(l));
            m.set_counter(c);
            m
        })
        .collect();
    family(name, MetricType::COUNTER, metrics)
}

fn gauge(name: Name, samples: Vec<(Labels, i64)>) -> MetricFamily {
    let metrics = samples
        .into_iter()
        .map(|(l, v)| {
            let mut g = prometheus::proto::Gauge::default();
            g.set_value(v as f64);
            let mut m = Metric::default();
            m.set_label(labels(l));
            m.set_gauge(g);
            m
        })
        .collect();
    family(name, MetricType::GAUGE, metrics)
}

fn histogram(name: Name, samples: Vec<(Labels, HistogramSnapshot)>) -> MetricFamily {
    let metrics = samples
        .into_iter()
        .map(|(l, s)| {
            let mut h = prometheus::proto::Histogram::default();
            h.set_sample_count(s.count);
            h.set_sample_sum(s.sum_seconds);
            h.set_bucket(
                BUCKETS
                    .iter()
                    .zip(s.cumulative)
                    .map(|(&upper, count)| {
                        let mut b = Bucket::default();
                        b.set_upper_bound(upper);
                        b.set_cumulative_count(count);
                        b
                    })
                    .collect(),
            );
            let mut m = Metric::default();
            m.set_label(labels(l));
            m.set_histogram(h);
            m
        })
        .collect();
    family(name, MetricType::HISTOGRAM, metrics)
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Renders every dataplane metric.
pub fn render(shared: &Shared) -> String {
    let workers = &shared.workers;
    let sum = |f: &dyn Fn(&super::WorkerMetrics) -> &Counter| -> u64 {
        workers.iter().map(|w| f(&w.metrics).get()).sum()
    };
    let per_worker_counter = |f: &dyn Fn(&super::WorkerMetrics) -> &Counter| -> Vec<(Labels, u64)> {
        workers
            .iter()
            .enumerate()
            .map(|(i, w)| (vec![("worker", i.to_string())], f(&w.metrics).get()))
            .collect()
    };
    let mut families = Vec::new();

    // Requests by labels, merged across workers.
    let mut merged: BTreeMap<SeriesLabels, [u64; 5]> = BTreeMap::new();
    for w in workers {
        for s in w.series_snapshot() {
            let e = merged.entry(s.labels.clone()).or_default();
            for (i, c) in s.by_class.iter().enumerate() {
                e[i] += c.get();
            }
        }
    }
    let mut samples = Vec::new();
    for (l, counts) in merged {
        for (class, count) in CLASSES.iter().zip(counts) {
            samples.push((
                vec![
                    ("gateway", l.gateway.clone()),
                    ("listener", l.listener.clone()),
                    ("route", l.route.clone()),
                    ("backend", l.backend.clone()),
                    ("code", (*class).to_owned()),
                ],
                count,
            ));
        }
    }
    families.push(counter(names::REQUESTS, samples));
    families.push(counter(
        names::WORKER_REQUESTS,
        per_worker_counter(&|m| &m.requests),
    ));

    let mut duration = HistogramSnapshot::default();
    let mut upstream = HistogramSnapshot::default();
    for w in workers {
        w.metrics.request_duration.accumulate(&mut duration);
        w.metrics.upstream_duration.accumulate(&mut upstream);
    }
    families.push(histogram(names::REQUEST_DURATION, vec![(vec![], duration)]));
    families.push(histogram(
        names::UPSTREAM_DURATION,
        vec![(vec![], upstream)],
    ));

    families.push(counter(
        names::CONNECTIONS_TOTAL,
        vec![(vec![], sum(&|m| &m.connections_total))],
    ));
    families.push(gauge(
        names::CONNECTIONS_ACTIVE,
        workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                (
                    vec![("worker", i.to_string())],
                    w.metrics.connections_active.get(),
                )
            })
            .collect(),
    ));
    families.push(counter(
        names::BYTES_RECEIVED,
        vec![(vec![], sum(&|m| &m.bytes_received))],
    ));
    families.push(counter(
        names::BYTES_SENT,
        vec![(vec![], sum(&|m| &m.bytes_sent))],
    ));
    families.push(counter(
        names::UPSTREAM_CONNECTS,
        vec![(vec![], sum(&|m| &m.upstream_connects))],
    ));
    families.push(counter(
        names::UPSTREAM_CONNECT_ERRORS,
        vec![(vec![], sum(&|m| &m.upstream_connect_errors))],
    ));
    families.push(counter(
        names::POOL_HITS,
        vec![(vec![], sum(&|m| &m.pool_hits))],
    ));
    families.push(counter(
        names::POOL_MISSES,
        vec![(vec![], sum(&|m| &m.pool_misses))],
    ));
    families.push(counter(
        names::REJECTED,
        Rejection::ALL
            .iter()
            .map(|r| {
                let n = workers
                    .iter()
                    .map(|w| w.metrics.rejected[*r as usize].get())
                    .sum();
                (vec![("reason", r.label().to_owned())], n)
            })
            .collect(),
    ));
    families.push(counter(
        names::TLS_HANDSHAKES,
        vec![(vec![], sum(&|m| &m.tls_handshakes))],
    ));
    families.push(counter(
        names::TLS_FAILURES,
        vec![(vec![], sum(&|m| &m.tls_failures))],
    ));
    families.push(counter(
        names::H2_ABUSE,
        vec![(vec![], sum(&|m| &m.h2_abuse))],
    ));
    families.push(gauge(
        names::SNAPSHOT_GENERATION,
        workers
            .iter()
            .enumerate()
            .map(|(i, w)| (vec![("worker", i.to_string())], w.metrics.generation.get()))
            .collect(),
    ));
    families.push(counter(
        names::SNAPSHOTS_APPLIED,
        per_worker_counter(&|m| &m.snapshots_applied),
    ));
    families.push(counter(
        names::SNAPSHOTS_REJECTED,
        per_worker_counter(&|m| &m.snapshots_rejected),
    ));
    families.push(histogram(
        names::APPLY_DELAY,
        workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut s = HistogramSnapshot::default();
                w.metrics.apply_delay.accumulate(&mut s);
                (vec![("worker", i.to_string())], s)
            })
            .collect(),
    ));
    families.push(counter(
        names::ACCESS_LOG_DROPPED,
        vec![(vec![], sum(&|m| &m.access_log_dropped))],
    ));

    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families, &mut out)
        .expect("encoding into a Vec cannot fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}
