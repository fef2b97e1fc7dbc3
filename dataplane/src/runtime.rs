//! Worker threads: one per core, each pinned and running its own monoio
//! runtime on io_uring or epoll, plus the snapshot wake thread that nudges
//! them when the controlplane publishes.

use crate::shared::Shared;
use crate::{wake, worker};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Which event-loop driver workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoDriver {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    /// io_uring only; fail if unavailable.
    Uring,
    /// epoll only.
    Epoll,
}

impl UringTaskrun {
    /// A worker's status value for this mode (0 stays for a worker not on
    /// io_uring).
    pub fn status_value(self) -> u8 {
        self as u8 + 1
    }

    /// The mode's command-line name (`defer`, `coop`, `immediate`).
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map(|p| p.get_name().to_owned())
            .unwrap_or_default()
    }

    /// The `--uring-taskrun` name of the mode in a worker's status value.
    pub fn name_from_status(v: u8) -> Option<String> {
        use clap::ValueEnum;
        let mode = Self::value_variants().get(usize::from(v).checked_sub(1)?)?;
        Some(mode.name())
    }
}

/// When the kernel runs io_uring completion work (the "task work" that turns
/// a socket's readiness into a completion) for a worker's ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UringTaskrun {
    /// Only when the worker asks for completions (IORING_SETUP_DEFER_TASKRUN
    /// with SINGLE_ISSUER, Linux 6.1+): no interrupt of a busy worker per
    /// completion, completions reaped in batches. Falls back to `coop`, then
    /// `immediate`, where the kernel refuses it.
    Defer,
    /// At the worker's next system call (IORING_SETUP_COOP_TASKRUN, 5.19+):
    /// no inter-processor interrupt per completion.
    Coop,
    /// As soon as the data arrives, interrupting the worker (the kernel's
    /// default).
    Immediate,
}

/// Everything a worker needs to know, fixed at start.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The segment to follow.
    pub shm: PathBuf,
    /// Driver choice.
    pub driver: IoDriver,
    /// io_uring task-work mode.
    pub uring_taskrun: UringTaskrun,
    /// Cores to pin workers to (worker i → cores[i % len]); empty: no pinning.
    pub cores: Vec<usize>,
    /// How often workers look for a new snapshot even without a wake (the
    /// fallback; a publication normally wakes them at once).
    pub poll_interval: Duration,
    /// Whether a wake thread nudges workers on every publication.
    pub snapshot_wake: bool,
    /// Longest request head accepted (431 beyond).
    pub max_header_bytes: usize,
    /// Time allowed to receive a whole request head (408 beyond).
    pub header_timeout: Duration,
    /// Idle keep-alive connections are closed after this.
    pub idle_timeout: Duration,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Default time to wait for an upstream's response head (504 beyond),
    /// when the route sets no timeout.
    pub upstream_timeout: Duration,
    /// Idle keep-alive connections kept per upstream endpoint, per worker.
    pub pool_max_idle: usize,
    /// How long a drain waits for open connections.
    pub drain_timeout: Duration,
    /// TCP and TLS streams with no byte either way for this long are closed.
    pub stream_idle_timeout: Duration,
    /// A UDP client's session ends after this long without a datagram
    /// either way.
    pub udp_idle_timeout: Duration,
    /// Access-log writer, when enabled.
    pub access_log: Option<crate::access_log::Sink>,
    /// HTTP/2 limits.
    pub h2: crate::h2::H2Limits,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            shm: PathBuf::from("/dev/shm/shardgate"),
            driver: IoDriver::Auto,
            uring_taskrun: UringTaskrun::Defer,
            cores: Vec::new(),
            poll_interval: Duration::from_millis(5),
            snapshot_wake: true,
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(3),
            upstream_timeout: Duration::from_secs(60),
            pool_max_idle: 1024,
            drain_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(3600),
            udp_idle_timeout: Duration::from_secs(60),
            access_log: None,
            h2: crate::h2::H2Limits::default(),
        }
    }
}

/// Whether this process can run io_uring workers.
pub fn uring_available() -> bool {
    monoio::utils::detect_uring()
}

/// Resolves `Auto`, and refuses `Uring` where the kernel does not allow it.
pub fn resolve_driver(driver: IoDriver) -> Result<IoDriver, &'static str> {
    match (driver, uring_available()) {
        (IoDriver::Auto, true) => Ok(IoDriver::Uring),
        (IoDriver::Auto, false) => Ok(IoDriver::Epoll),
        (IoDriver::Uring, false) => {
            Err("io_uring is not available (kernel, seccomp or memlock limits)")
        }
        (d, _) => Ok(d),
    }
}

/// Starts `shared.workers.len()` worker threads and the snapshot wake
/// thread. Without the wake thread (it could not start) workers still poll.
pub fn spawn_workers(
    cfg: Arc<WorkerConfig>,
    shared: Arc<Shared>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let n = shared.workers.len();
    let no_wake = || (0..n).map(|_| None).collect();
    let mut wake_ends: Vec<Option<UnixStream>> = if cfg.snapshot_wake {
        let started = wake::pairs(n).and_then(|(worker_ends, wakers)| {
            wake::spawn(cfg.shm.clone(), Arc::clone(&shared), wakers)?;
            Ok(worker_ends)
        });
        match started {
            Ok(ends) => ends.into_iter().map(Some).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the snapshot wake thread; workers poll only");
                no_wake()
            }
        }
    } else {
        no_wake()
    };
    (0..n)
        .map(|id| {
            let cfg = Arc::clone(&cfg);
            let shared = Arc::clone(&shared);
            let wake = wake_ends[id].take();
            std::thread::Builder::new()
                .name(format!("shardgate-worker-{id}"))
                .spawn(move || run_worker(id, cfg, shared, wake))
        })
        .collect()
}

fn run_worker(id: usize, cfg: Arc<WorkerConfig>, shared: Arc<Shared>, wake: Option<UnixStream>) {
    if !cfg.cores.is_empty() {
        let core = cfg.cores[id % cfg.cores.len()];
        if let Err(e) = monoio::utils::bind_to_cpu_set([core]) {
            tracing::warn!(worker = id, core, error = ?e, "cannot pin worker to its core");
        }
    }
    let driver = cfg.driver;
    let status = &shared.workers[id];
    let result = match driver {
        IoDriver::Uring | IoDriver::Auto => match uring_runtime(cfg.uring_taskrun) {
            Ok((mut rt, mode)) => {
                status.io_uring.store(true, Ordering::Relaxed);
                status
                    .uring_taskrun
                    .store(mode.status_value(), Ordering::Relaxed);
                rt.block_on(worker::run(id, Arc::clone(&cfg), Arc::clone(&shared), wake));
                Ok(())
            }
            Err(e) if driver == IoDriver::Auto => {
                tracing::warn!(worker = id, error = %e, "io_uring runtime failed; using epoll");
                run_epoll(id, &cfg, &shared, wake)
            }
            Err(e) => Err(e),
        },
        IoDriver::Epoll => run_epoll(id, &cfg, &shared, wake),
    };
    if let Err(e) = result {
        tracing::error!(worker = id, error = %e, "worker could not start its runtime");
    }
}

/// Builds a worker's io_uring runtime with the task-work mode asked for, or
/// the next weaker one the kernel accepts (older kernels answer EINVAL to
/// setup flags they do not know).
pub fn uring_runtime(
    mode: UringTaskrun,
) -> std::io::Result<(
    monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>,
    UringTaskrun,
)> {
    let modes: &[UringTaskrun] = match mode {
        UringTaskrun::Defer => &[
            UringTaskrun::Defer,
            UringTaskrun::Coop,
            UringTaskrun::Immediate,
        ],
        UringTaskrun::Coop => &[UringTaskrun::Coop, UringTaskrun::Immediate],
        UringTaskrun::Immediate => &[UringTaskrun::Immediate],
    };
    let mut last = None;
    for &m in modes {
        let mut urb = io_uring::IoUring::builder();
        match m {
            UringTaskrun::Defer => {
                urb.setup_single_issuer().setup_defer_taskrun();
            }
            UringTaskrun::Coop => {
                urb.setup_coop_taskrun().setup_taskrun_flag();
            }
            UringTaskrun::Immediate => {}
        }
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .uring_builder(urb)
            .with_entries(1024)
            .enable_timer()
            .build()
        {
            Ok(rt) => {
                if m != mode {
                    tracing::info!(asked = ?mode, using = ?m, "io_uring task-run mode not supported by this kernel");
                }
                return Ok((rt, m));
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL)))
}

fn run_epoll(
    id: usize,
    cfg: &Arc<WorkerConfig>,
    shared: &Arc<Shared>,
    wake: Option<UnixStream>,
) -> std::io::Result<()> {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()?;
    rt.block_on(worker::run(id, Arc::clone(cfg), Arc::clone(shared), wake));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};

    #[test]
    fn status_values_name_the_flag_values() {
        assert_eq!(UringTaskrun::name_from_status(0), None);
        for (mode, name) in [
            (UringTaskrun::Defer, "defer"),
            (UringTaskrun::Coop, "coop"),
            (UringTaskrun::Immediate, "immediate"),
        ] {
            assert_eq!(
                UringTaskrun::name_from_status(mode.status_value()).as_deref(),
                Some(name)
            );
        }
    }

    /// Every task-run mode yields a runtime that completes socket I/O, a
    /// timer and a wait with nothing ready (where the deferred mode would
    /// hang if completions were never reaped).
    #[test]
    fn every_taskrun_mode_completes_io() {
        if !uring_available() {
            eprintln!("io_uring unavailable here; nothing to check");
            return;
        }
        for mode in [
            UringTaskrun::Defer,
            UringTaskrun::Coop,
            UringTaskrun::Immediate,
        ] {
            let (mut rt, used) = uring_runtime(mode).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            // This kernel (6.1+ in CI) takes every mode as asked.
            assert_eq!(used, mode);
            let echoed = rt.block_on(async {
                let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let server = monoio::spawn(async move {
                    let (mut conn, _) = listener.accept().await.unwrap();
                    let (res, buf) = conn.read_exact(vec![0u8; 5]).await;
                    res.unwrap();
                    // Nothing else is runnable while this sleeps: the
                    // worker parks and must still see the timer and the
                    // client's read.
                    monoio::time::sleep(Duration::from_millis(20)).await;
                    let (res, _) = conn.write_all(buf).await;
                    res.unwrap();
                });
                let mut client = monoio::net::TcpStream::connect(addr).await.unwrap();
                let (res, _) = client.write_all(b"hello".to_vec()).await;
                res.unwrap();
                let (res, buf) = client.read_exact(vec![0u8; 5]).await;
                res.unwrap();
                server.await;
                buf
            });
            assert_eq!(echoed, b"hello", "{mode:?}");
        }
    }
}
