//! `shardgate-controlplane`: watches a configuration directory, translates it
//! and publishes snapshots into the shared-memory segment.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use shardgate_controlplane::admin::{self, Metrics};
use shardgate_controlplane::provider::file::{ConfigDir, ConfigError};
use shardgate_controlplane::publisher::{Published, Publisher};
use shardgate_controlplane::status::{now_rfc3339, to_yaml_stream, StatusBook};
use shardgate_controlplane::translate::{translate, Options};
use shardgate_core::logging::{self, LogFormat};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Shardgate control plane (standalone mode: a directory of YAML).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Directory of *.yaml / *.yml files holding Gateway API objects.
    #[arg(long)]
    config_dir: PathBuf,
    /// Shared-memory segment to publish into (e.g. /dev/shm/shardgate).
    #[arg(long)]
    shm: PathBuf,
    /// Where to write object status as YAML, in the Kubernetes shape.
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Address for Gateways without spec.addresses.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Quiet time after a change before translating, to coalesce bursts.
    #[arg(long, default_value_t = 10)]
    coalesce_ms: u64,
    /// Full rescan interval, a safety net under file-system notifications.
    #[arg(long, default_value_t = 2000)]
    rescan_ms: u64,
    /// Admin endpoint (`/metrics`, `/healthz`); off unless given.
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
    /// Log level or filter (overrides RUST_LOG).
    #[arg(long)]
    log_level: Option<String>,
}

fn main() {
    let args = Args::parse();
    logging::init(args.log_format, args.log_level.as_deref());
    if let Err(e) = run(&args) {
        eprintln!("shardgate-controlplane: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if !args.config_dir.is_dir() {
        anyhow::bail!(
            "--config-dir {} is not a directory",
            args.config_dir.display()
        );
    }
    let metrics = std::sync::Arc::new(Metrics::new());
    if let Some(addr) = args.admin {
        let bound = admin::spawn(addr, std::sync::Arc::clone(&metrics))
            .with_context(|| format!("cannot bind --admin {addr}"))?;
        tracing::info!(admin = %bound, "admin endpoint listening");
    }
    let mut publisher = Publisher::open(&args.shm).context("cannot open the segment")?;
    metrics.generation.set(publisher.generation() as i64);
    tracing::info!(shm = %args.shm.display(), generation = publisher.generation(), "segment open");
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    let _watcher = watch(&args.config_dir, tx);
    let mut dir = ConfigDir::new(&args.config_dir);
    let mut book = StatusBook::default();
    let mut reported: Vec<ConfigError> = Vec::new();
    let mut last_status = String::new();
    let opts = Options {
        default_address: args.bind_address,
    };
    let mut first = true;
    loop {
        let scan = dir
            .rescan()
            .context("cannot scan the configuration directory")?;
        for e in scan.errors.iter().filter(|e| !reported.contains(e)) {
            metrics.errors.with_label_values(&["config"]).inc();
            tracing::error!(error = %e, "configuration file rejected; its last good objects stay in force");
        }
        reported = scan.errors;
        if scan.changed || first {
            first = false;
            let started = Instant::now();
            let store = dir.store();
            for (kind, n) in store.counts() {
                metrics.objects.with_label_values(&[kind]).set(n as i64);
            }
            let t = translate(&store, &opts);
            metrics
                .translation_seconds
                .observe(started.elapsed().as_secs_f64());
            let published = publisher.publish(&t.snapshot).inspect_err(|_| {
                metrics.errors.with_label_values(&["publish"]).inc();
            })?;
            if let Published::New { generation, bytes } = published {
                metrics.snapshots_published.inc();
                metrics.publication_bytes.set(bytes as i64);
                metrics.generation.set(generation as i64);
            }
            match published {
                Published::New { generation, bytes } => tracing::info!(
                    generation,
                    bytes,
                    listeners = t.snapshot.listeners.len(),
                    backends = t.snapshot.backends.len(),
                    took_us = started.elapsed().as_micros() as u64,
                    "snapshot published"
                ),
                Published::Unchanged => tracing::debug!("translation unchanged; not republished"),
            }
            if let Some(path) = &args.status_file {
                let docs = book.render(&t.status, &now_rfc3339());
                let text = to_yaml_stream(&docs);
                if text != last_status {
                    write_atomically(path, &text)
                        .inspect_err(|_| metrics.errors.with_label_values(&["status"]).inc())
                        .with_context(|| format!("cannot write status file {}", path.display()))?;
                    metrics.status_writes.inc();
                    last_status = text;
                }
            }
        }
        wait_for_change(&rx, args);
    }
}

/// Blocks until the directory changed (then waits for a quiet moment, so an
/// editor's burst of writes becomes one translation) or the rescan interval
/// passes.
fn wait_for_change(rx: &crossbeam_channel::Receiver<()>, args: &Args) {
    if rx
        .recv_timeout(Duration::from_millis(args.rescan_ms))
        .is_err()
    {
        return;
    }
    let quiet = Duration::from_millis(args.coalesce_ms);
    let deadline = Instant::now() + Duration::from_millis(args.coalesce_ms * 10);
    while Instant::now() < deadline && rx.recv_timeout(quiet).is_ok() {}
}

fn watch(dir: &Path, tx: crossbeam_channel::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    });
    match watcher {
        Ok(mut w) => match w.watch(dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the directory; falling back to periodic rescans");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "no file-system notifications; falling back to periodic rescans");
            None
        }
    }
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
