//! One translation cycle, the same in both modes: store → translate →
//! publish, with the metrics and logs that go with it.

use crate::admin::Metrics;
use crate::publisher::{Published, Publisher};
use crate::store::Store;
use crate::translate::{translate, Options, Translation};
use anyhow::Context;
use std::sync::Arc;
use std::time::Instant;

/// Translates and publishes.
pub struct Cycle {
    publisher: Publisher,
    metrics: Arc<Metrics>,
    opts: Options,
}

impl Cycle {
    /// A cycle publishing into `publisher`.
    pub fn new(publisher: Publisher, metrics: Arc<Metrics>, opts: Options) -> Self {
        metrics.generation.set(publisher.generation() as i64);
        metrics
            .health
            .update(|h| h.generation = publisher.generation());
        Self {
            publisher,
            metrics,
            opts,
        }
    }

    /// Translates `store` and publishes the snapshot if it changed.
    pub fn run(&mut self, store: &Store) -> anyhow::Result<Translation> {
        let started = Instant::now();
        for (kind, n) in store.counts() {
            self.metrics
                .objects
                .with_label_values(&[kind])
                .set(n as i64);
        }
        let t = translate(store, &self.opts);
        self.metrics
            .translation_seconds
            .observe(started.elapsed().as_secs_f64());
        let published = self
            .publisher
            .publish(&t.snapshot)
            .inspect_err(|_| self.metrics.errors.with_label_values(&["publish"]).inc())
            .context("cannot publish the snapshot")?;
        match published {
            Published::New { generation, bytes } => {
                self.metrics.snapshots_published.inc();
                self.metrics.publication_bytes.set(bytes as i64);
                self.metrics.generation.set(generation as i64);
                tracing::info!(
                    generation,
                    bytes,
                    listeners = t.snapshot.listeners.len(),
                    backends = t.snapshot.backends.len(),
                    took_us = started.elapsed().as_micros() as u64,
                    "snapshot published"
                );
            }
            Published::Unchanged => tracing::debug!("translation unchanged; not republished"),
        }
        let generation = self.publisher.generation();
        self.metrics.health.update(|h| {
            h.published = true;
            h.generation = generation;
        });
        Ok(t)
    }
}
