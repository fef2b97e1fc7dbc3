//! The publisher: encodes snapshots and writes them into the shared-memory
//! segment, skipping translations whose bytes did not change. Every
//! publication (and every move to a larger segment) also wakes the
//! dataplane's wake thread through the segment's futex; `shm::Writer::publish`
//! does that itself, so no publication can forget it.

use shardgate_core::shm::{SegmentError, Writer};
use shardgate_core::{encode, Snapshot};
use std::path::Path;

/// Publishes snapshots to one segment.
pub struct Publisher {
    writer: Writer,
    last: Option<Vec<u8>>,
}

/// What a publish call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// A new generation is in force.
    New {
        /// Its generation.
        generation: u64,
        /// Encoded size in bytes.
        bytes: usize,
    },
    /// The snapshot equals the one in force; nothing was written.
    Unchanged,
}

impl Publisher {
    /// Opens (or creates) the segment at `path`.
    pub fn open(path: &Path) -> Result<Self, SegmentError> {
        Ok(Self {
            writer: Writer::open_or_create(path)?,
            last: None,
        })
    }

    /// The generation in force.
    pub fn generation(&self) -> u64 {
        self.writer.generation()
    }

    /// Publishes `snapshot` unless it equals the last one published by this
    /// process. After a restart the first snapshot is always written, so the
    /// dataplane learns that a controlplane is back even if nothing changed.
    pub fn publish(&mut self, snapshot: &Snapshot) -> Result<Published, SegmentError> {
        let bytes = encode(snapshot);
        if self.last.as_ref() == Some(&bytes) {
            return Ok(Published::Unchanged);
        }
        let generation = self.writer.publish(&bytes)?;
        // The publication just woke the dataplane's wake thread. Where it
        // shares our core (a pinned appliance, the benchmark) it would
        // otherwise wait for the rest of this cycle (logs, status, metrics:
        // ~0.3 ms measured) before it may tell the workers; yielding once lets
        // it run first. A no-op when nothing else waits for the core.
        std::thread::yield_now();
        let len = bytes.len();
        self.last = Some(bytes);
        Ok(Published::New {
            generation,
            bytes: len,
        })
    }
}
