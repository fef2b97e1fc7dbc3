//! The access log: one JSON line per request, written without ever blocking
//! a worker.
//!
//! Each worker appends lines to its own buffer. A full buffer (or one older
//! than `FLUSH_INTERVAL`) is handed to the writer thread over a bounded
//! channel with `try_send`; if the writer has fallen behind, the lines are
//! dropped and counted (`shardgate_access_log_dropped_total`), and traffic
//! never waits. Emptied buffers come back over a second channel for reuse.

use crate::metrics::WorkerMetrics;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Buffer size at which a worker hands its lines over.
const FLUSH_BYTES: usize = 32 * 1024;
/// Longest a line waits in a worker's buffer.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Buffers in flight to the writer before lines are dropped.
const QUEUE: usize = 64;

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "stdout" || s == "-" {
            Self::Stdout
        } else {
            Self::File(PathBuf::from(s))
        })
    }
}

/// The workers' end of the log writer: cloned into every worker.
#[derive(Debug, Clone)]
pub struct Sink {
    full: Sender<Vec<u8>>,
    empty: Receiver<Vec<u8>>,
}

impl Sink {
    /// Whether every handed-over buffer has been written.
    pub fn idle(&self) -> bool {
        self.full.is_empty()
    }
}

/// Starts the writer thread for `target`.
pub fn start(target: &Target) -> std::io::Result<Sink> {
    let mut out: Box<dyn Write + Send> = match target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
    };
    let (full_tx, full_rx) = bounded::<Vec<u8>>(QUEUE);
    let (empty_tx, empty_rx) = bounded::<Vec<u8>>(QUEUE);
    std::thread::Builder::new()
        .name("shardgate-access-log".into())
        .spawn(move || {
            for mut buf in full_rx {
                if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
                    tracing::warn!(error = %e, "access log write failed");
                }
                buf.clear();
                let _ = empty_tx.try_send(buf);
            }
        })?;
    Ok(Sink {
        full: full_tx,
        empty: empty_rx,
    })
}

/// One worker's access-log buffer.
pub(crate) struct AccessLog {
    sink: Sink,
    buf: RefCell<Vec<u8>>,
    lines: Cell<u64>,
    since: Cell<Instant>,
}

impl AccessLog {
    pub(crate) fn new(sink: Sink) -> Self {
        Self {
            sink,
            buf: RefCell::new(Vec::with_capacity(FLUSH_BYTES * 2)),
            lines: Cell::new(0),
            since: Cell::new(Instant::now()),
        }
    }

    /// Appends one line written by `write` (which must not add the newline).
    pub(crate) fn line(&self, metrics: &WorkerMetrics, write: impl FnOnce(&mut Vec<u8>)) {
        let full = {
            let mut buf = self.buf.borrow_mut();
            write(&mut buf);
            buf.push(b'\n');
            buf.len() >= FLUSH_BYTES
        };
        self.lines.set(self.lines.get() + 1);
        if full {
            self.flush(metrics);
        }
    }

    /// Hands buffered lines over if they have waited long enough.
    pub(crate) fn flush_if_due(&self, metrics: &WorkerMetrics) {
        if self.lines.get() > 0 && self.since.get().elapsed() >= FLUSH_INTERVAL {
            self.flush(metrics);
        }
    }

    /// Hands buffered lines to the writer, or drops and counts them.
    pub(crate) fn flush(&self, metrics: &WorkerMetrics) {
        self.since.set(Instant::now());
        if self.lines.get() == 0 {
            return;
        }
        let mut buf = self.buf.borrow_mut();
        let next = self
            .sink
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(FLUSH_BYTES * 2));
        let full = std::mem::replace(&mut *buf, next);
        match self.sink.full.try_send(full) {
            Ok(()) => {}
            Err(TrySendError::Full(mut back) | TrySendError::Disconnected(mut back)) => {
                metrics.access_log_dropped.add(self.lines.get());
                back.clear();
                *buf = back;
            }
        }
        self.lines.set(0);
    }
}

/// Appends `s` as a JSON string (quoted, escaped).
pub(crate) fn json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => {
                // Control bytes and non-ASCII (request targets are bytes, not
                // necessarily UTF-8): \u00XX keeps the line valid JSON.
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
        }
    }
    out.push(b'"');
}

/// Appends the current UTC time as RFC 3339 with milliseconds.
pub(crate) fn rfc3339_now(out: &mut Vec<u8>) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_into_valid_json() {
        let mut out = Vec::new();
        json_str(&mut out, b"a\"b\\c\n\xff");
        let parsed: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, "a\"b\\c\n\u{ff}");
    }

    #[test]
    fn time_is_rfc3339() {
        let mut out = Vec::new();
        rfc3339_now(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.len(), 24, "{s}");
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T', "{s}");
    }

    #[test]
    fn a_stalled_writer_drops_and_counts_lines() {
        let (full, full_rx) = bounded(1);
        let (_empty_tx, empty) = bounded(1);
        let log = AccessLog::new(Sink { full, empty });
        let m = WorkerMetrics::default();
        log.line(&m, |b| b.extend_from_slice(b"one"));
        log.flush(&m);
        log.line(&m, |b| b.extend_from_slice(b"two"));
        log.line(&m, |b| b.extend_from_slice(b"three"));
        log.flush(&m);
        assert_eq!(m.access_log_dropped.get(), 2);
        assert_eq!(full_rx.try_recv().unwrap(), b"one\n");
    }
}
