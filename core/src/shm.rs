//! The shared-memory segment through which the controlplane publishes
//! snapshots to the dataplane.
//!
//! A segment is a file (normally under `/dev/shm`, mode 0600) mapped by one
//! writer (the controlplane) read-write and by any number of readers (the
//! dataplane's workers) read-only. Every access to the mapping goes through
//! `AtomicU64` words, so concurrent access from other processes is never a
//! data race in Rust's memory model; the only unsafe code in Shardgate is the
//! line that views the mapping as such words, plus the raw system calls below
//! (the futex on the header's wake word, and one scheduling hint for the
//! thread that waits on it).
//!
//! ```text
//!  byte 0     ┌──────────────────────────── header (4096 bytes, u64 words) ─────────────┐
//!             │ 0 magic │ 1 layout version │ 2 slot capacity (bytes) │ 3 generation      │
//!             │ 4 moved flag │ 5 published-at (unix ns) │ 6 writer pid │ 7 moved-path len │
//!             │ 8..40 moved-to path (256 bytes) │ 40 wake sequence                       │
//!             │ 64.. slot 0: seq, generation, len, crc32, published-at                   │
//!             │ 72.. slot 1: seq, generation, len, crc32, published-at                   │
//!  byte 4096  ├──────────────────────────── slot 0 (capacity bytes) ─────────────────────┤
//!             ├──────────────────────────── slot 1 (capacity bytes) ─────────────────────┤
//!             └──────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Publication (single writer): generation `g` goes into slot `g & 1`, which
//! is never the slot of the generation in force (`g - 1`). The slot is written
//! under its own seqlock (sequence odd while writing), then the header's
//! generation is stored with `Release`. A reader loads the generation with
//! `Acquire`, copies the slot out between two reads of its sequence, and
//! accepts the copy only if the sequence was even and unchanged, the slot
//! holds generation `g`, and the CRC-32 matches. A reader that loses the race
//! with a fast writer simply tries again; it can never accept a torn copy.
//!
//! Growth: a snapshot larger than the slot capacity is published into a new,
//! larger segment built beside the old one and renamed over its path; the old
//! header then announces the move (flag plus path), and readers re-open.
//!
//! Wake-up: the header's wake sequence is bumped after every publication and
//! every move announcement, and the writer then does a shared `FUTEX_WAKE` on
//! its low 32 bits (not `FUTEX_PRIVATE_FLAG`: the waiters are in another
//! process, and a shared futex is keyed by file and offset, so it matches
//! across separate mappings). A reader thread may block in
//! [`Reader::wait_for_change`] (`FUTEX_WAIT` with a timeout) instead of
//! polling. The word was zero and unused in layout 1, so the layout version
//! is unchanged: a reader of a segment from an older writer just times out,
//! and an older reader ignores the word. Waking is only a hint; the
//! generation stays the truth, and readers keep polling as a fallback.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::Duration;

const MAGIC: u64 = u64::from_le_bytes(*b"SGSHM\0\0\0");
/// Layout version; readers reject any other.
pub const LAYOUT_VERSION: u64 = 1;
const HEADER_BYTES: usize = 4096;
const HEADER_WORDS: usize = HEADER_BYTES / 8;
const W_MAGIC: usize = 0;
const W_VERSION: usize = 1;
const W_CAPACITY: usize = 2;
const W_GENERATION: usize = 3;
const W_MOVED: usize = 4;
const W_PUBLISHED: usize = 5;
const W_WRITER_PID: usize = 6;
const W_MOVED_PATH_LEN: usize = 7;
const W_MOVED_PATH: usize = 8;
const MOVED_PATH_MAX: usize = 256;
const W_WAKE: usize = W_MOVED_PATH + MOVED_PATH_MAX / 8;
const W_SLOTS: usize = 64;
const SLOT_WORDS: usize = 8;
const S_SEQ: usize = 0;
const S_GENERATION: usize = 1;
const S_LEN: usize = 2;
const S_CRC: usize = 3;
const S_PUBLISHED: usize = 4;
/// Default capacity of each slot for a new segment.
pub const DEFAULT_SLOT_CAPACITY: usize = 1 << 20;
const READ_ATTEMPTS: usize = 64;

/// Errors opening or using a segment.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The file could not be created, opened, sized or mapped.
    #[error("segment {path}: {op}")]
    Io {
        /// The segment path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not a segment of this layout.
    #[error("segment {path}: {reason}")]
    Invalid {
        /// The segment path.
        path: PathBuf,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Another controlplane holds the segment's lock.
    #[error("segment {0}: another controlplane is publishing to it")]
    Locked(PathBuf),
}

/// What a reader found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Nothing has ever been published.
    Empty,
    /// The generation is the one the reader already has.
    Unchanged,
    /// The segment moved: re-open this path.
    Moved(PathBuf),
    /// The writer kept overwriting the slot; try again later.
    Busy,
    /// A consistent copy of a newer snapshot.
    Snapshot(Published),
}

/// A consistent copy of one published slot.
#[derive(Debug, PartialEq, Eq)]
pub struct Published {
    /// Generation number (starts at 1, increases by one per publication).
    pub generation: u64,
    /// When it was published, in nanoseconds since the Unix epoch.
    pub published_unix_nanos: u64,
    /// The encoded snapshot.
    pub bytes: Vec<u8>,
}

/// Why a slot's content was rejected after a consistent copy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotError {
    /// The recorded length exceeds the slot.
    #[error("slot length {len} exceeds capacity {capacity}")]
    Length {
        /// Recorded length.
        len: u64,
        /// Slot capacity.
        capacity: u64,
    },
    /// The CRC does not match the bytes.
    #[error("slot checksum mismatch")]
    Checksum,
    /// The header is damaged.
    #[error("segment header damaged: {0}")]
    Header(&'static str),
}

/// Seqlock and layout logic over the segment's words; independent of how the
/// words are mapped, so tests run it over an ordinary buffer.
#[derive(Clone, Copy)]
pub struct Words<'a>(&'a [AtomicU64]);

impl<'a> Words<'a> {
    /// Wraps a region; `words.len()` must be the header plus two slots.
    pub fn new(words: &'a [AtomicU64]) -> Self {
        Self(words)
    }

    /// The number of words a segment with this slot capacity needs.
    pub fn len_for(capacity: usize) -> usize {
        HEADER_WORDS + 2 * capacity.div_ceil(8)
    }

    fn w(&self, i: usize) -> &AtomicU64 {
        &self.0[i]
    }

    fn slot(&self, s: usize, field: usize) -> &AtomicU64 {
        &self.0[W_SLOTS + s * SLOT_WORDS + field]
    }

    /// Writes a fresh header; the segment starts at `generation` (so the next
    /// publication is `generation + 1`). Only for a region no reader sees yet.
    pub fn init(&self, capacity: usize, generation: u64) {
        for w in &self.0[..HEADER_WORDS] {
            w.store(0, Ordering::Relaxed);
        }
        self.w(W_VERSION).store(LAYOUT_VERSION, Ordering::Relaxed);
        self.w(W_CAPACITY).store(capacity as u64, Ordering::Relaxed);
        self.w(W_GENERATION).store(generation, Ordering::Relaxed);
        self.w(W_WRITER_PID)
            .store(u64::from(std::process::id()), Ordering::Relaxed);
        // Magic last, with Release: a reader that sees it sees the rest.
        self.w(W_MAGIC).store(MAGIC, Ordering::Release);
    }

    /// Checks magic, version and that the region fits the capacity.
    pub fn check_header(&self) -> Result<usize, &'static str> {
        if self.0.len() < HEADER_WORDS {
            return Err("shorter than its header");
        }
        if self.w(W_MAGIC).load(Ordering::Acquire) != MAGIC {
            return Err("bad magic");
        }
        if self.w(W_VERSION).load(Ordering::Relaxed) != LAYOUT_VERSION {
            return Err("unsupported layout version");
        }
        let capacity = self.w(W_CAPACITY).load(Ordering::Relaxed);
        if !capacity.is_multiple_of(8) || capacity > (1 << 40) {
            return Err("bad slot capacity");
        }
        if Self::len_for(capacity as usize) != self.0.len() {
            return Err("size does not match slot capacity");
        }
        Ok(capacity as usize)
    }

    /// The slot capacity in bytes, as recorded in the header.
    pub fn capacity(&self) -> usize {
        self.w(W_CAPACITY).load(Ordering::Relaxed) as usize
    }

    /// The generation in force (0: none).
    pub fn generation(&self) -> u64 {
        self.w(W_GENERATION).load(Ordering::Acquire)
    }

    /// Publishes `bytes` as the next generation. Single writer only. Returns
    /// the new generation, or `None` if the bytes exceed the slot capacity.
    pub fn publish(&self, bytes: &[u8], now_unix_nanos: u64) -> Option<u64> {
        let capacity = self.capacity();
        if bytes.len() > capacity {
            return None;
        }
        let generation = self.w(W_GENERATION).load(Ordering::Relaxed) + 1;
        let s = (generation & 1) as usize;
        let data = HEADER_WORDS + s * capacity / 8;

        let seq = self.slot(s, S_SEQ).load(Ordering::Relaxed);
        self.slot(s, S_SEQ).store(seq + 1, Ordering::Relaxed);
        // Release fence: a reader that observes any store below also observes
        // the odd sequence, and so discards its copy.
        fence(Ordering::Release);
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0[data + i].store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        self.slot(s, S_GENERATION)
            .store(generation, Ordering::Relaxed);
        self.slot(s, S_LEN)
            .store(bytes.len() as u64, Ordering::Relaxed);
        self.slot(s, S_CRC)
            .store(u64::from(crc32fast::hash(bytes)), Ordering::Relaxed);
        self.slot(s, S_PUBLISHED)
            .store(now_unix_nanos, Ordering::Relaxed);
        // Release: the slot's content happens-before the even sequence.
        self.slot(s, S_SEQ).store(seq + 2, Ordering::Release);
        self.w(W_PUBLISHED).store(now_unix_nanos, Ordering::Relaxed);
        // Release: a reader that loads this generation sees the finished slot.
        self.w(W_GENERATION).store(generation, Ordering::Release);
        self.bump_wake_sequence();
        Some(generation)
    }

    /// Marks a change for waiters: after the generation (or the move flag),
    /// so a waiter that sees the new sequence sees the change too.
    fn bump_wake_sequence(&self) {
        // Release: pairs with the Acquire in `wake_sequence`. Only the low 32
        // bits are the futex word; a carry into the high half is harmless.
        self.w(W_WAKE).fetch_add(1, Ordering::Release);
    }

    /// The wake sequence: changes with every publication and every move
    /// announcement (modulo 2^32). Zero forever on segments from writers
    /// that predate it.
    pub fn wake_sequence(&self) -> u32 {
        self.w(W_WAKE).load(Ordering::Acquire) as u32
    }

    /// The futex word's container; the borrow lives as long as the region.
    fn wake_word(self) -> &'a AtomicU64 {
        &self.0[W_WAKE]
    }

    /// Announces that the segment moved to `path`.
    pub fn announce_move(&self, path: &Path) {
        let bytes = path.as_os_str().as_encoded_bytes();
        let len = bytes.len().min(MOVED_PATH_MAX);
        for (i, chunk) in bytes[..len].chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.w(W_MOVED_PATH + i)
                .store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        self.w(W_MOVED_PATH_LEN)
            .store(len as u64, Ordering::Relaxed);
        // Release: a reader that sees the flag sees the path.
        self.w(W_MOVED).store(1, Ordering::Release);
        self.bump_wake_sequence();
    }

    /// Whether the segment announced a move.
    pub fn is_moved(&self) -> bool {
        self.w(W_MOVED).load(Ordering::Acquire) != 0
    }

    /// The path this segment moved to, if it did.
    pub fn moved_to(&self) -> Option<PathBuf> {
        if !self.is_moved() {
            return None;
        }
        let len = (self.w(W_MOVED_PATH_LEN).load(Ordering::Relaxed) as usize).min(MOVED_PATH_MAX);
        let mut bytes = Vec::with_capacity(MOVED_PATH_MAX);
        for i in 0..len.div_ceil(8) {
            bytes.extend_from_slice(
                &self
                    .w(W_MOVED_PATH + i)
                    .load(Ordering::Relaxed)
                    .to_le_bytes(),
            );
        }
        bytes.truncate(len);
        Some(PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Reads the generation in force if it differs from `last`.
    pub fn read(&self, last: u64) -> Result<ReadOutcome, SlotError> {
        if let Some(path) = self.moved_to() {
            return Ok(ReadOutcome::Moved(path));
        }
        let capacity = self.capacity();
        if !capacity.is_multiple_of(8) || Self::len_for(capacity) != self.0.len() {
            return Err(SlotError::Header("slot capacity changed"));
        }
        for _ in 0..READ_ATTEMPTS {
            let generation = self.generation();
            if generation == 0 {
                return Ok(ReadOutcome::Empty);
            }
            if generation == last {
                return Ok(ReadOutcome::Unchanged);
            }
            let s = (generation & 1) as usize;
            let seq1 = self.slot(s, S_SEQ).load(Ordering::Acquire);
            if seq1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let slot_generation = self.slot(s, S_GENERATION).load(Ordering::Relaxed);
            let len = self.slot(s, S_LEN).load(Ordering::Relaxed);
            let crc = self.slot(s, S_CRC).load(Ordering::Relaxed);
            let published = self.slot(s, S_PUBLISHED).load(Ordering::Relaxed);
            let copy_len = (len as usize).min(capacity);
            let data = HEADER_WORDS + s * capacity / 8;
            let mut bytes = Vec::with_capacity(copy_len.div_ceil(8) * 8);
            for w in &self.0[data..data + copy_len.div_ceil(8)] {
                bytes.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
            }
            // Acquire fence: the loads above happen-before the re-read of the
            // sequence, so a writer that touched the slot meanwhile is seen.
            fence(Ordering::Acquire);
            let seq2 = self.slot(s, S_SEQ).load(Ordering::Relaxed);
            if seq1 != seq2 || slot_generation != generation {
                std::hint::spin_loop();
                continue;
            }
            // The copy is consistent; now judge its content.
            if len > capacity as u64 {
                return Err(SlotError::Length {
                    len,
                    capacity: capacity as u64,
                });
            }
            bytes.truncate(copy_len);
            if u64::from(crc32fast::hash(&bytes)) != crc {
                return Err(SlotError::Checksum);
            }
            return Ok(ReadOutcome::Snapshot(Published {
                generation,
                published_unix_nanos: published,
                bytes,
            }));
        }
        Ok(ReadOutcome::Busy)
    }
}

/// A mapped segment file.
struct Mapping {
    map: Map,
}

enum Map {
    ReadOnly(memmap2::Mmap),
    ReadWrite(memmap2::MmapMut),
}

impl Mapping {
    fn words(&self) -> Words<'_> {
        let bytes: &[u8] = match &self.map {
            Map::ReadOnly(m) => m,
            Map::ReadWrite(m) => m,
        };
        assert!((bytes.as_ptr() as usize).is_multiple_of(8) && bytes.len().is_multiple_of(8));
        // SAFETY: the mapping is page-aligned (so 8-byte aligned, asserted above)
        // and its length is a multiple of 8 (asserted), so it is a valid
        // `[AtomicU64]` of len/8 elements, which has the same size and
        // alignment as `[u64]`. The slice borrows `self`, so it cannot outlive
        // the mapping. Other processes write to this memory concurrently, which
        // is exactly why it is only ever accessed through atomics. Atomic loads
        // from a read-only mapping are fine for word-sized atomics on every
        // platform we support (x86-64, aarch64).
        #[allow(unsafe_code)]
        let words = unsafe {
            std::slice::from_raw_parts(bytes.as_ptr().cast::<AtomicU64>(), bytes.len() / 8)
        };
        Words(words)
    }

    /// Wakes every thread, in any process, blocked in [`Mapping::wait`] on
    /// this segment.
    fn wake_all(&self) {
        futex::wake_all(self.words().wake_word());
    }

    /// Blocks until the wake sequence differs from `seen`, a writer wakes
    /// this segment's waiters, or `timeout` passes; returns the sequence.
    fn wait(&self, seen: u32, timeout: Duration) -> u32 {
        let words = self.words();
        if words.wake_sequence() == seen {
            futex::wait(words.wake_word(), seen, timeout);
        }
        words.wake_sequence()
    }
}

/// The raw futex calls on the wake word. Everything else reaches the mapping
/// through atomics; these hand its address to the kernel, which compares
/// (`FUTEX_WAIT`) or merely hashes (`FUTEX_WAKE`) the 32-bit word there.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod futex {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    /// The address of the low 32 bits of `word`: the futex word.
    fn low_half(word: &AtomicU64) -> *const u32 {
        let p = word.as_ptr().cast::<u32>().cast_const();
        if cfg!(target_endian = "big") {
            p.wrapping_add(1)
        } else {
            p
        }
    }

    /// `FUTEX_WAIT` (shared) while the low half equals `expected`, for at
    /// most `timeout`. Returns early on a wake, a changed value (`EAGAIN`)
    /// or a signal (`EINTR`); the caller re-reads the word either way.
    pub(super) fn wait(word: &AtomicU64, expected: u32, timeout: Duration) {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            // Below 10^9: fits every platform's `c_long`.
            tv_nsec: timeout.subsec_nanos() as _,
        };
        // SAFETY: `low_half` points at 4 aligned bytes inside `word` (an
        // 8-aligned `AtomicU64`), which the borrow keeps mapped for the whole
        // call; the kernel only reads them, atomically, so a read-only
        // mapping serves, and the writer's concurrent atomic stores are no
        // data race. `ts` outlives the call. No FUTEX_PRIVATE_FLAG: the word
        // is in a shared file mapping and the waker is another process.
        // The result (0, ETIMEDOUT, EAGAIN, EINTR) is deliberately ignored.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                low_half(word),
                libc::FUTEX_WAIT,
                expected,
                &ts as *const libc::timespec,
            );
        }
    }

    /// `FUTEX_WAKE` (shared) of every waiter on `word`'s low half.
    pub(super) fn wake_all(word: &AtomicU64) {
        // SAFETY: as in `wait`: the address is valid and aligned for the
        // call; FUTEX_WAKE does not even read the word, it only finds the
        // waiters keyed by (file, offset) and wakes them. Failure (there is
        // none for a valid address) would only cost the waiters their
        // timeout.
        unsafe {
            libc::syscall(libc::SYS_futex, low_half(word), libc::FUTEX_WAKE, i32::MAX);
        }
    }
}

/// Asks the scheduler to run the calling thread promptly whenever it wakes:
/// a short EEVDF slice (Linux 6.12 and later: `sched_runtime` of a
/// `SCHED_OTHER` thread), so a thread woken by [`Writer::publish`] preempts
/// a busy thread on its core instead of waiting out that thread's slice
/// (measured here: up to ~2 ms, 1 wake in 100, with the dataplane's worker
/// saturating the core). For a thread that sleeps in
/// [`Reader::wait_for_change`] and does little when woken: a short slice
/// only costs it preemption if it runs long. Needs no privilege. Returns
/// whether the kernel took the request; older kernels accept and ignore it,
/// and a thread under a real-time or idle policy is left alone.
pub fn prefer_prompt_wakeups() -> bool {
    sched::short_slice(Duration::from_micros(100))
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sched {
    use std::time::Duration;

    pub(super) fn short_slice(slice: Duration) -> bool {
        let size = std::mem::size_of::<libc::sched_attr>() as u32;
        let mut attr = libc::sched_attr {
            size,
            sched_policy: 0,
            sched_flags: 0,
            sched_nice: 0,
            sched_priority: 0,
            sched_runtime: 0,
            sched_deadline: 0,
            sched_period: 0,
        };
        // SAFETY: `attr` is a valid, writable `sched_attr` of `size` bytes,
        // and the kernel writes at most `size` bytes into it; tid 0 is the
        // calling thread.
        let got = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut libc::sched_attr,
                size,
                0,
            )
        };
        if got != 0 || attr.sched_policy != libc::SCHED_OTHER as u32 {
            return false;
        }
        attr.size = size;
        attr.sched_flags = 0;
        attr.sched_runtime = slice.as_nanos() as u64;
        // SAFETY: `attr` is a valid `sched_attr` of `size` bytes that the
        // kernel only reads; it keeps the policy and nice value just read and
        // changes only the slice of the calling thread (tid 0).
        let set = unsafe {
            libc::syscall(
                libc::SYS_sched_setattr,
                0,
                &attr as *const libc::sched_attr,
                0,
            )
        };
        set == 0
    }
}

#[cfg(not(target_os = "linux"))]
mod sched {
    pub(super) fn short_slice(_slice: std::time::Duration) -> bool {
        false
    }
}

/// Elsewhere waiters just sleep out their timeout (polling).
#[cfg(not(target_os = "linux"))]
mod futex {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    pub(super) fn wait(_word: &AtomicU64, _expected: u32, timeout: Duration) {
        std::thread::sleep(timeout);
    }

    pub(super) fn wake_all(_word: &AtomicU64) {}
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SegmentError + 'a {
    move |source| SegmentError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

/// The controlplane's side: publishes snapshots, growing the segment on need.
pub struct Writer {
    path: PathBuf,
    mapping: Mapping,
    _lock: File,
}

impl Writer {
    /// Opens the segment at `path` for writing, continuing its generation if
    /// it already holds a valid segment (so running dataplanes keep following
    /// it across a controlplane restart), else creating a new one.
    pub fn open_or_create(path: &Path) -> Result<Self, SegmentError> {
        let lock_path = lock_path(path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(path, "create lock file"))?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => SegmentError::Locked(path.to_owned()),
            std::fs::TryLockError::Error(source) => SegmentError::Io {
                path: path.to_owned(),
                op: "lock",
                source,
            },
        })?;
        if let Ok(existing) = Self::map_existing(path) {
            if existing.words().check_header().is_ok() {
                return Ok(Self {
                    path: path.to_owned(),
                    mapping: existing,
                    _lock: lock,
                });
            }
        }
        let mapping = create_segment(path, DEFAULT_SLOT_CAPACITY, 0)?;
        Ok(Self {
            path: path.to_owned(),
            mapping,
            _lock: lock,
        })
    }

    fn map_existing(path: &Path) -> Result<Mapping, SegmentError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path, "open"))?;
        // SAFETY: see `Mapping::words`: the file is only accessed through
        // atomics, so concurrent modification by other processes is sound.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(io_err(path, "map"))?;
        Ok(Mapping {
            map: Map::ReadWrite(map),
        })
    }

    /// The generation in force.
    pub fn generation(&self) -> u64 {
        self.mapping.words().generation()
    }

    /// The slot capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.mapping.words().capacity()
    }

    /// Publishes `bytes`, moving to a larger segment if they do not fit,
    /// and wakes readers blocked in [`Reader::wait_for_change`].
    pub fn publish(&mut self, bytes: &[u8]) -> Result<u64, SegmentError> {
        let now = unix_nanos();
        if let Some(g) = self.mapping.words().publish(bytes, now) {
            self.mapping.wake_all();
            return Ok(g);
        }
        let capacity = (bytes.len() * 2)
            .next_multiple_of(8)
            .max(self.capacity() * 2);
        let generation = self.generation();
        let bigger = create_segment(&self.path, capacity, generation)?;
        let g = bigger
            .words()
            .publish(bytes, now)
            .expect("a segment sized for these bytes holds them");
        // A reader that found the new file already (a replaced inode) may
        // wait on it.
        bigger.wake_all();
        // The new file now sits at `path`; tell readers of the old mapping,
        // and wake them while we still map it.
        self.mapping.words().announce_move(&self.path);
        self.mapping.wake_all();
        self.mapping = bigger;
        Ok(g)
    }

    /// Words of the live mapping, for fault-injection tests.
    pub fn words(&self) -> Words<'_> {
        self.mapping.words()
    }
}

/// The writer's lock file: the segment path with `.lock` appended (not an
/// extension swap: `/dev/shm/a.b` and `/dev/shm/a.c` must not share a lock).
pub fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Builds a complete segment beside `path`, then renames it over `path`, so
/// no reader ever maps a half-initialised file.
fn create_segment(path: &Path, capacity: usize, generation: u64) -> Result<Mapping, SegmentError> {
    let capacity = capacity.next_multiple_of(8);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".new-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(path, "create"))?;
    file.set_len((Words::len_for(capacity) * 8) as u64)
        .map_err(io_err(path, "size"))?;
    // SAFETY: see `Mapping::words`.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(io_err(path, "map"))?;
    let mapping = Mapping {
        map: Map::ReadWrite(map),
    };
    mapping.words().init(capacity, generation);
    std::fs::rename(&tmp, path).map_err(io_err(path, "rename"))?;
    Ok(mapping)
}

/// The dataplane's side: a read-only view of the segment.
pub struct Reader {
    path: PathBuf,
    mapping: Mapping,
    inode: u64,
}

impl Reader {
    /// Maps the segment at `path` read-only and checks its header.
    pub fn open(path: &Path) -> Result<Self, SegmentError> {
        let file = File::open(path).map_err(io_err(path, "open"))?;
        let inode = file.metadata().map_err(io_err(path, "stat"))?.ino();
        // SAFETY: see `Mapping::words`.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path, "map"))?;
        let mapping = Mapping {
            map: Map::ReadOnly(map),
        };
        mapping
            .words()
            .check_header()
            .map_err(|reason| SegmentError::Invalid {
                path: path.to_owned(),
                reason,
            })?;
        Ok(Self {
            path: path.to_owned(),
            mapping,
            inode,
        })
    }

    /// Whether another file now sits at this reader's path (a fresh
    /// controlplane replaced a deleted or incompatible segment): re-open then.
    pub fn is_replaced(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.ino() != self.inode)
    }

    /// The path this reader was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The generation in force, without copying anything.
    pub fn generation(&self) -> u64 {
        self.mapping.words().generation()
    }

    /// Whether the writer announced that the segment moved (re-open the
    /// path then; [`Reader::read`] follows moves by itself).
    pub fn is_moved(&self) -> bool {
        self.mapping.words().is_moved()
    }

    /// The wake sequence in force; pass it to [`Reader::wait_for_change`].
    pub fn wake_sequence(&self) -> u32 {
        self.mapping.words().wake_sequence()
    }

    /// Blocks the calling thread until the writer publishes or announces a
    /// move (the wake sequence differs from `seen`), or `timeout` passes;
    /// returns the wake sequence then. It may return early without a change
    /// (a signal), and a writer that predates the wake sequence never wakes
    /// it, so callers loop and keep their own fallback. A blocking call: for
    /// a dedicated thread, never inside an event loop.
    pub fn wait_for_change(&self, seen: u32, timeout: Duration) -> u32 {
        self.mapping.wait(seen, timeout)
    }

    /// Reads the snapshot in force if it is newer than `last`; follows moves.
    pub fn read(&mut self, last: u64) -> Result<ReadOutcome, SlotError> {
        match self.mapping.words().read(last)? {
            ReadOutcome::Moved(path) => match Reader::open(&path) {
                Ok(next) => {
                    *self = next;
                    self.mapping.words().read(last)
                }
                Err(_) => Ok(ReadOutcome::Moved(path)),
            },
            other => Ok(other),
        }
    }
}

/// Fault injection for end-to-end tests (feature `testing`, never shipped):
/// publishes `bytes` into the live segment at `path` as the next generation,
/// bypassing the controlplane's lock, with a valid seqlock and checksum, as a
/// buggy writer would. Proves the dataplane rejects what does not decode.
#[cfg(feature = "testing")]
pub fn inject_for_testing(path: &Path, bytes: &[u8]) -> Result<u64, SegmentError> {
    let mapping = Writer::map_existing(path)?;
    mapping
        .words()
        .check_header()
        .map_err(|reason| SegmentError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
    let generation = mapping
        .words()
        .publish(bytes, unix_nanos())
        .ok_or(SegmentError::Invalid {
            path: path.to_owned(),
            reason: "injected bytes exceed the slot",
        })?;
    mapping.wake_all();
    Ok(generation)
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn region(capacity: usize) -> Vec<AtomicU64> {
        (0..Words::len_for(capacity))
            .map(|_| AtomicU64::new(0))
            .collect()
    }

    /// A payload whose every byte and length derive from its generation, so a
    /// reader can tell a torn copy from a consistent one without the CRC.
    fn payload(generation: u64) -> Vec<u8> {
        let len = 1 + (generation as usize * 7919) % 3000;
        vec![generation as u8; len]
    }

    #[test]
    fn publishes_alternating_slots_and_reads_back() {
        let r = region(4096);
        let w = Words::new(&r);
        w.init(4096, 0);
        assert_eq!(w.read(0).unwrap(), ReadOutcome::Empty);
        assert_eq!(w.publish(b"one", 7), Some(1));
        assert_eq!(w.publish(b"two!", 8), Some(2));
        match w.read(0).unwrap() {
            ReadOutcome::Snapshot(p) => {
                assert_eq!(p.generation, 2);
                assert_eq!(p.bytes, b"two!");
                assert_eq!(p.published_unix_nanos, 8);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(w.read(2).unwrap(), ReadOutcome::Unchanged);
    }

    #[test]
    fn refuses_bytes_beyond_capacity() {
        let r = region(16);
        let w = Words::new(&r);
        w.init(16, 0);
        assert_eq!(w.publish(&[1; 17], 0), None);
        assert_eq!(w.generation(), 0);
    }

    #[test]
    fn detects_checksum_corruption() {
        let r = region(64);
        let w = Words::new(&r);
        w.init(64, 0);
        w.publish(b"hello world", 0);
        // Flip a data bit of slot 1 (generation 1) behind the seqlock's back.
        r[HEADER_WORDS + 64 / 8].fetch_xor(1, Ordering::Relaxed);
        assert_eq!(w.read(0), Err(SlotError::Checksum));
    }

    #[test]
    fn a_writer_racing_readers_never_yields_a_torn_snapshot() {
        let capacity = 4096;
        let r: Arc<Vec<AtomicU64>> = Arc::new(region(capacity));
        Words::new(&r).init(capacity, 0);
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let r = Arc::clone(&r);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let w = Words::new(&r);
                    let (mut last, mut accepted) = (0, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        match w.read(last).expect("no corruption in this test") {
                            ReadOutcome::Snapshot(p) => {
                                assert_eq!(p.bytes, payload(p.generation), "torn read");
                                assert!(p.generation > last);
                                last = p.generation;
                                accepted += 1;
                            }
                            ReadOutcome::Empty | ReadOutcome::Unchanged | ReadOutcome::Busy => {}
                            ReadOutcome::Moved(_) => unreachable!(),
                        }
                    }
                    accepted
                })
            })
            .collect();
        let writes = if cfg!(miri) { 50 } else { 20_000 };
        let w = Words::new(&r);
        for g in 1..=writes {
            assert_eq!(w.publish(&payload(g), g), Some(g));
        }
        stop.store(true, Ordering::Relaxed);
        for h in readers {
            h.join().expect("reader saw a torn snapshot");
        }
    }

    #[test]
    fn file_segment_grows_and_readers_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut writer = Writer::open_or_create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(writer.publish(b"small").unwrap(), 1);
        let mut reader = Reader::open(&path).unwrap();
        let big = vec![42u8; DEFAULT_SLOT_CAPACITY + 10];
        assert_eq!(writer.publish(&big).unwrap(), 2);
        match reader.read(1).unwrap() {
            ReadOutcome::Snapshot(p) => {
                assert_eq!(p.generation, 2);
                assert_eq!(p.bytes.len(), big.len());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(reader.mapping.words().capacity() > DEFAULT_SLOT_CAPACITY);
    }

    #[test]
    fn the_wake_sequence_changes_with_every_publication_and_move() {
        let r = region(64);
        let w = Words::new(&r);
        w.init(64, 0);
        let mut seen = vec![w.wake_sequence()];
        for g in 1..=3u8 {
            w.publish(&[g], 0);
            seen.push(w.wake_sequence());
        }
        w.announce_move(Path::new("/dev/shm/elsewhere"));
        seen.push(w.wake_sequence());
        assert!(w.is_moved());
        assert!(seen.windows(2).all(|p| p[0] != p[1]), "{seen:?}");
        // A refused publication changes nothing.
        let before = w.wake_sequence();
        assert_eq!(w.publish(&[0; 65], 0), None);
        assert_eq!(w.wake_sequence(), before);
    }

    /// Whether this process's thread named `name` is asleep (state `S`):
    /// the waiter below has nothing to sleep in but the futex.
    #[cfg(target_os = "linux")]
    fn thread_asleep(name: &str) -> bool {
        std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .any(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
                })
            })
    }

    /// Runs `change` on the writer while a thread, holding its own read-only
    /// mapping of the same file, is asleep in `wait_for_change` with a
    /// timeout far beyond the test's bound; returns what the waiter saw:
    /// (sequence before, sequence after, moved).
    #[cfg(target_os = "linux")]
    fn wake_across_mappings(
        writer: &mut Writer,
        reader: Reader,
        name: &str,
        change: impl FnOnce(&mut Writer),
    ) -> (u32, u32, bool) {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let waiter = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let seen = reader.wake_sequence();
                ready_tx.send(()).expect("test alive");
                let now = reader.wait_for_change(seen, Duration::from_secs(600));
                done_tx
                    .send((seen, now, reader.is_moved()))
                    .expect("test alive");
            })
            .expect("spawn waiter");
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the waiter started");
        // Bounded poll until the waiter sleeps in the futex, so that only a
        // wake (not a change it saw before sleeping) can return it in time.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !thread_asleep(name) {
            assert!(
                std::time::Instant::now() < deadline,
                "the waiter never went to sleep"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        change(writer);
        let seen = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer's change woke the waiter in the other mapping");
        waiter.join().expect("waiter");
        seen
    }

    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore = "Miri cannot map files or make syscalls")]
    fn a_publication_wakes_a_reader_waiting_in_another_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut writer = Writer::open_or_create(&path).unwrap();
        writer.publish(b"first").unwrap();
        for round in 0..3 {
            let reader = Reader::open(&path).unwrap();
            let (before, after, moved) =
                wake_across_mappings(&mut writer, reader, "shm-wait-pub", |w| {
                    w.publish(format!("round {round}").as_bytes()).unwrap();
                });
            assert_ne!(before, after);
            assert!(!moved);
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore = "Miri cannot map files or make syscalls")]
    fn a_move_wakes_a_reader_waiting_on_the_old_segment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut writer = Writer::open_or_create(&path).unwrap();
        writer.publish(b"small").unwrap();
        let reader = Reader::open(&path).unwrap();
        let (before, after, moved) =
            wake_across_mappings(&mut writer, reader, "shm-wait-move", |w| {
                w.publish(&vec![7u8; DEFAULT_SLOT_CAPACITY + 1]).unwrap();
            });
        assert_ne!(before, after);
        assert!(moved, "the old segment announces the move");
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot map files or make syscalls")]
    fn a_wait_without_a_change_ends_at_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut writer = Writer::open_or_create(&path).unwrap();
        writer.publish(b"only").unwrap();
        let reader = Reader::open(&path).unwrap();
        let seen = reader.wake_sequence();
        assert_eq!(reader.wait_for_change(seen, Duration::from_millis(1)), seen);
        // A stale `seen` returns at once with the sequence in force.
        assert_eq!(
            reader.wait_for_change(seen.wrapping_sub(1), Duration::from_secs(600)),
            seen
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore = "Miri cannot make syscalls")]
    fn prompt_wakeups_keep_the_threads_nice_value() {
        // Field 19 of /proc/thread-self/stat, counted after the command name.
        fn nice() -> String {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let (_, rest) = stat.rsplit_once(')').unwrap();
            rest.split_whitespace().nth(16).unwrap().to_owned()
        }
        std::thread::spawn(|| {
            // SAFETY: a plain syscall on the calling thread (Linux applies
            // PRIO_PROCESS with who 0 to the caller's thread only); raising
            // one's own nice value needs no privilege.
            #[allow(unsafe_code)]
            let raised = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 5) };
            assert_eq!(raised, 0);
            assert_eq!(nice(), "5");
            prefer_prompt_wakeups();
            assert_eq!(nice(), "5");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_second_writer_is_refused_and_a_restarted_one_continues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut writer = Writer::open_or_create(&path).unwrap();
        writer.publish(b"a").unwrap();
        assert!(matches!(
            Writer::open_or_create(&path),
            Err(SegmentError::Locked(_))
        ));
        drop(writer);
        let mut again = Writer::open_or_create(&path).unwrap();
        assert_eq!(again.publish(b"b").unwrap(), 2);
    }
}
