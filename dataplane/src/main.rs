//! `shardgate-dataplane`: per-core workers serving the snapshot published in
//! the shared-memory segment.
#![forbid(unsafe_code)]

use clap::Parser;
use shardgate_core::logging::{self, LogFormat};
use shardgate_dataplane::runtime::{resolve_driver, spawn_workers, UringTaskrun};
use shardgate_dataplane::{access_log, admin, H2Limits, IoDriver, Shared, WorkerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Shardgate data plane.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Shared-memory segment published by the controlplane.
    #[arg(long)]
    shm: PathBuf,
    /// Worker threads (default: one per available core).
    #[arg(long)]
    workers: Option<usize>,
    /// Event-loop driver.
    #[arg(long, value_enum, default_value = "auto")]
    io_driver: IoDriver,
    /// When io_uring completion work runs (see `UringTaskrun`): `defer`
    /// batches it until the worker waits, sparing a busy worker an
    /// interrupt per completion.
    #[arg(long, value_enum, default_value = "defer")]
    uring_taskrun: UringTaskrun,
    /// Admin endpoint address (/healthz, /ready, /snapshot).
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Cores to pin workers to, e.g. `0-3` or `1,3`; `none` disables
    /// pinning. Default: worker i on the i-th core this process may run on
    /// (its affinity mask: taskset, a cgroup cpuset), when there are enough.
    #[arg(long)]
    cores: Option<String>,
    /// Longest request head accepted, in bytes (431 beyond).
    #[arg(long, default_value_t = 64 * 1024)]
    max_header_bytes: usize,
    /// Seconds allowed to receive a request head (408 beyond).
    #[arg(long, default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds an idle keep-alive connection is kept.
    #[arg(long, default_value_t = 60)]
    idle_timeout_secs: u64,
    /// Seconds to wait for an upstream response head when the route sets no
    /// timeout (504 beyond).
    #[arg(long, default_value_t = 60)]
    upstream_timeout_secs: u64,
    /// Idle upstream keep-alive connections kept per endpoint and worker
    /// (like nginx's `keepalive`); beyond it, returned connections close.
    #[arg(long, default_value_t = 1024)]
    upstream_pool_size: usize,
    /// Seconds a drain (SIGTERM/SIGINT) waits for open connections.
    #[arg(long, default_value_t = 10)]
    drain_timeout_secs: u64,
    /// Seconds a TCP/TLS stream may carry no byte either way before it is
    /// closed.
    #[arg(long, default_value_t = 3600)]
    stream_idle_timeout_secs: u64,
    /// Seconds a UDP client's session lives without a datagram either way.
    #[arg(long, default_value_t = 60)]
    udp_idle_timeout_secs: u64,
    /// HTTP/2: streams a client may have open at once.
    #[arg(long, default_value_t = 256)]
    h2_max_concurrent_streams: u32,
    /// HTTP/2: per-stream flow-control window, bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    h2_stream_window: u32,
    /// HTTP/2: connection flow-control window, bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    h2_connection_window: u32,
    /// HTTP/2: HPACK dynamic table size, bytes.
    #[arg(long, default_value_t = 4096)]
    h2_header_table_size: u32,
    /// HTTP/2: streams the client may cancel before they are served, per
    /// 10 s (rapid reset); beyond this the connection is closed with GOAWAY.
    #[arg(long, default_value_t = 100)]
    h2_max_pending_resets: usize,
    /// HTTP/2: streams we may reset for the client's errors before closing
    /// the connection with GOAWAY.
    #[arg(long, default_value_t = 200)]
    h2_max_error_resets: usize,
    /// Milliseconds between checks for a new snapshot (the fallback: a
    /// publication wakes workers at once, and a busy worker also checks at
    /// every request).
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// Diagnostics: no wake thread; workers see publications at their next
    /// request or poll tick only.
    #[arg(long)]
    no_snapshot_wake: bool,
    /// Access log: one JSON line per request, to a file path or `stdout`.
    /// Written off the request path; lines are dropped (and counted) rather
    /// than ever delaying traffic.
    #[arg(long)]
    access_log: Option<access_log::Target>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
    /// Log level or filter (overrides RUST_LOG).
    #[arg(long)]
    log_level: Option<String>,
}

/// The CPUs this process may run on, in order.
fn allowed_cores() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

fn parse_cores(spec: &str) -> Result<Vec<usize>, String> {
    if spec == "none" {
        return Ok(Vec::new());
    }
    let mut cores = Vec::new();
    for part in spec.split(',') {
        let bad = || format!("invalid --cores {spec:?}");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cores.extend(a..=b);
            }
            None => cores.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(cores)
}

fn main() {
    let args = Args::parse();
    logging::init(args.log_format, args.log_level.as_deref());
    if let Err(e) = run(args) {
        eprintln!("shardgate-dataplane: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.workers.unwrap_or(available);
    if workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    let driver = resolve_driver(args.io_driver).map_err(|e| format!("--io-driver uring: {e}"))?;
    let cores = match &args.cores {
        Some(spec) => parse_cores(spec)?,
        None => {
            let allowed = allowed_cores();
            if workers <= allowed.len() {
                allowed[..workers].to_vec()
            } else {
                Vec::new()
            }
        }
    };
    let access_log = match &args.access_log {
        Some(target) => {
            Some(access_log::start(target).map_err(|e| format!("cannot open --access-log: {e}"))?)
        }
        None => None,
    };
    let cfg = Arc::new(WorkerConfig {
        access_log: access_log.clone(),
        shm: args.shm.clone(),
        driver,
        uring_taskrun: args.uring_taskrun,
        cores,
        poll_interval: Duration::from_millis(args.poll_ms.max(1)),
        snapshot_wake: !args.no_snapshot_wake,
        max_header_bytes: args.max_header_bytes,
        header_timeout: Duration::from_secs(args.header_timeout_secs),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        upstream_timeout: Duration::from_secs(args.upstream_timeout_secs),
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        pool_max_idle: args.upstream_pool_size,
        stream_idle_timeout: Duration::from_secs(args.stream_idle_timeout_secs),
        udp_idle_timeout: Duration::from_secs(args.udp_idle_timeout_secs),
        h2: H2Limits {
            max_concurrent_streams: args.h2_max_concurrent_streams,
            // The HTTP/1.1 head limit bounds HTTP/2 header lists too.
            max_header_list_size: u32::try_from(args.max_header_bytes).unwrap_or(u32::MAX),
            header_table_size: args.h2_header_table_size,
            stream_window: args.h2_stream_window,
            connection_window: args.h2_connection_window,
            max_pending_resets: args.h2_max_pending_resets,
            max_error_resets: args.h2_max_error_resets,
        },
        ..WorkerConfig::default()
    });
    let shared = Arc::new(Shared::new(workers).map_err(|e| format!("cannot set up TLS: {e}"))?);
    // Signals first, so a signal during start-up is not lost.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let admin = admin::spawn(args.admin, Arc::clone(&shared))
        .map_err(|e| format!("cannot bind admin endpoint {}: {e}", args.admin))?;
    let handles = spawn_workers(Arc::clone(&cfg), Arc::clone(&shared))
        .map_err(|e| format!("cannot start workers: {e}"))?;
    tracing::info!(workers, driver = ?driver, admin = %admin, shm = %args.shm.display(), "dataplane started");

    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "draining");
    }
    shared.draining.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + cfg.drain_timeout + Duration::from_secs(1);
    for h in handles {
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if let Some(sink) = &access_log {
        // Give the writer a moment to write what the workers flushed.
        let until = Instant::now() + Duration::from_secs(2);
        while !sink.idle() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    tracing::info!(open_connections = shared.connections(), "dataplane stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_cores;

    #[test]
    fn core_lists_parse() {
        assert_eq!(parse_cores("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(parse_cores("none").unwrap(), Vec::<usize>::new());
        assert!(parse_cores("3-1").is_err());
        assert!(parse_cores("x").is_err());
    }
}
