//! The snapshot wake: how workers learn of a publication within microseconds
//! instead of at their next `--poll-ms` tick, without polling faster.
//!
//! One background thread per process ("shardgate-snapshot-wake") sleeps in
//! the segment's futex ([`Reader::wait_for_change`]); the controlplane wakes
//! it after every publication and move. It then writes one byte to each
//! worker's end of a socket pair. Workers read their end with their own
//! event loop (io_uring or epoll alike: a pending read on a socket, no
//! cross-thread wakers, nothing on the request path) and check the segment
//! at once. It is only a hint: the byte carries no generation, and workers
//! keep polling every `--poll-ms`, so a lost, late or missing wake (a
//! controlplane that predates the wake sequence, a full socket buffer, this
//! thread gone) costs at most one poll interval.
//!
//! ```text
//!  controlplane: publish ─▶ FUTEX_WAKE ─┐
//!  wake thread:  FUTEX_WAIT (≤ WAIT) ◀──┘ ─▶ write b'p' to every worker's pair
//!  worker i:     read pair ─▶ Follower::poll (as the poll tick does)
//! ```
//!
//! The thread also notices segment changes that no futex announces: a file
//! replaced behind the mapping (a fresh controlplane after the old segment
//! was deleted) is re-opened and workers are nudged; every nudge makes a
//! worker check whether the file at the path is still the one it maps (the
//! thread and a worker open the path at different moments, so only the
//! worker can tell), instead of at its once-a-second check.

use crate::shared::Shared;
use shardgate_core::shm::Reader;
use socket2::Socket;
use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest sleep in the futex: bounds how late the thread notices a
/// replaced segment or a drain.
const WAIT: Duration = Duration::from_millis(100);

/// The wake byte: the segment, or the file at its path, may have changed.
const NUDGE: u8 = b'p';

/// The thread's ends of the workers' socket pairs, by worker.
pub(crate) struct Wakers(Vec<Socket>);

impl Wakers {
    /// Nudges every worker. Never blocks: a full buffer means a wake is
    /// already pending there, and a closed end a worker that has stopped.
    fn nudge(&self) {
        for end in &self.0 {
            match end.send_with_flags(&[NUDGE], libc::MSG_NOSIGNAL) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => tracing::debug!(error = %e, "snapshot wake not delivered"),
            }
        }
    }
}

/// One socket pair per worker, both ends non-blocking: the workers' ends
/// (by worker) and the thread's.
pub(crate) fn pairs(workers: usize) -> std::io::Result<(Vec<UnixStream>, Wakers)> {
    let mut worker_ends = Vec::with_capacity(workers);
    let mut thread_ends = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (worker, thread) = Socket::pair(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
        worker.set_nonblocking(true)?;
        thread.set_nonblocking(true)?;
        worker_ends.push(UnixStream::from(worker));
        thread_ends.push(thread);
    }
    Ok((worker_ends, Wakers(thread_ends)))
}

/// Starts the wake thread for the segment at `shm`. It ends once the process
/// drains (within [`WAIT`]).
pub(crate) fn spawn(
    shm: PathBuf,
    shared: Arc<Shared>,
    wakers: Wakers,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("shardgate-snapshot-wake".into())
        .spawn(move || run(&shm, &shared, &wakers))
}

fn run(shm: &std::path::Path, shared: &Shared, wakers: &Wakers) {
    // A short scheduler slice: woken, this thread preempts a saturated
    // worker on its core at once instead of after that worker's slice
    // (p99 of the benchmark's publish→apply delay: ~1.1–1.7 ms without,
    // ~0.3–0.8 ms with, two workers on two busy cores).
    let prompt = shardgate_core::shm::prefer_prompt_wakeups();
    tracing::debug!(prompt, "snapshot wake thread started");
    let mut reader: Option<Reader> = None;
    let mut seen = 0u32;
    while !shared.draining.load(Ordering::Relaxed) {
        let Some(current) = &reader else {
            match Reader::open(shm) {
                Ok(r) => {
                    seen = r.wake_sequence();
                    reader = Some(r);
                    // A publication between the workers' last check and our
                    // reading of `seen` would otherwise wait for their poll.
                    wakers.nudge();
                }
                // No segment yet, or not a valid one: workers log that; look
                // again shortly.
                Err(_) => std::thread::sleep(WAIT),
            }
            continue;
        };
        let now = current.wait_for_change(seen, WAIT);
        if now != seen {
            seen = now;
            wakers.nudge();
        }
        // A move (workers follow it on their next read; the writer renamed
        // the new segment to the path) or a replaced file: re-open the path
        // and wait there; the nudge on opening sends workers to look.
        if current.is_moved() || current.is_replaced() {
            reader = None;
        }
    }
}
