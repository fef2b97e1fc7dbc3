//! `shardgate-controlplane`: watches a configuration directory (standalone
//! mode) or the Kubernetes API (`--kube`), translates what it finds and
//! publishes snapshots into the shared-memory segment.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use shardgate_controlplane::admin::{self, Metrics};
use shardgate_controlplane::cluster::{self, KubeSettings};
use shardgate_controlplane::cycle::Cycle;
use shardgate_controlplane::leader::LeaseConfig;
use shardgate_controlplane::provider::file::{ConfigDir, ConfigError};
use shardgate_controlplane::publisher::Publisher;
use shardgate_controlplane::status::{now_rfc3339, to_yaml_stream, StatusBook};
use shardgate_controlplane::translate::Options;
use shardgate_core::logging::{self, LogFormat};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

// The controlplane keeps the system allocator: mimalloc's default purging
// (freed pages returned to the OS after 10 ms, transparent huge pages) made
// translating 100 000 routes 2.7x slower (3.2 s vs 1.2 s, bench scenario 6),
// re-zeroing pages it had just freed. Allocation speed does not matter here;
// the dataplane, where it does, uses mimalloc.

/// Shardgate control plane: standalone mode (`--config-dir`, a directory of
/// YAML) or Kubernetes mode (`--kube`).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Directory of *.yaml / *.yml files holding Gateway API objects.
    #[arg(long, required_unless_present = "kube", conflicts_with = "kube")]
    config_dir: Option<PathBuf>,
    /// Watch the Kubernetes API instead of a directory.
    #[arg(long)]
    kube: bool,
    /// Kubeconfig for `--kube` (default: the in-cluster service account).
    #[arg(long, requires = "kube")]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "shardgate-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "shardgate-controlplane")]
    lease_name: String,
    /// This controlplane's identity in the Lease (default: $NODE_NAME,
    /// $POD_NAME or the host name).
    #[arg(long)]
    identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_secs: u64,
    /// Seconds the leader keeps writing status without a successful renewal
    /// (less than the lease duration).
    #[arg(long, default_value_t = 10)]
    renew_deadline_secs: u64,
    /// Milliseconds between Lease acquire/renew attempts.
    #[arg(long, default_value_t = 2000)]
    lease_retry_ms: u64,
    /// Status writes per second (kube mode), and the burst allowed.
    #[arg(long, default_value_t = 20.0)]
    status_qps: f64,
    /// Status write burst (kube mode).
    #[arg(long, default_value_t = 50)]
    status_burst: u32,
    /// Milliseconds between API reachability probes (kube mode).
    #[arg(long, default_value_t = 5000)]
    api_probe_ms: u64,
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
    if let Some(dir) = &args.config_dir {
        if !dir.is_dir() {
            anyhow::bail!("--config-dir {} is not a directory", dir.display());
        }
    }
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = args.admin {
        let bound = admin::spawn(addr, Arc::clone(&metrics))
            .with_context(|| format!("cannot bind --admin {addr}"))?;
        tracing::info!(admin = %bound, "admin endpoint listening");
    }
    let publisher = Publisher::open(&args.shm).context("cannot open the segment")?;
    tracing::info!(shm = %args.shm.display(), generation = publisher.generation(), "segment open");
    let opts = Options {
        default_address: args.bind_address,
    };
    let cycle = Cycle::new(publisher, Arc::clone(&metrics), opts);
    match &args.config_dir {
        Some(dir) => run_files(args, dir, cycle, &metrics),
        None => cluster::run(kube_settings(args), cycle, metrics),
    }
}

fn kube_settings(args: &Args) -> KubeSettings {
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
        .or_else(|| hostname::get().ok().and_then(|h| h.into_string().ok()))
        .unwrap_or_else(|| format!("shardgate-{}", std::process::id()));
    KubeSettings {
        kubeconfig: args.kubeconfig.clone(),
        lease: LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity,
            lease_duration: Duration::from_secs(args.lease_duration_secs),
            renew_deadline: Duration::from_secs(args.renew_deadline_secs)
                .min(Duration::from_secs(args.lease_duration_secs)),
            retry_period: Duration::from_millis(args.lease_retry_ms),
        },
        status_qps: args.status_qps,
        status_burst: args.status_burst,
        coalesce: Duration::from_millis(args.coalesce_ms),
        secret_sync_grace: Duration::from_secs(5),
        probe_interval: Duration::from_millis(args.api_probe_ms.max(100)),
    }
}

/// Standalone mode: the directory is the configuration.
fn run_files(
    args: &Args,
    config_dir: &Path,
    mut cycle: Cycle,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    metrics.health.update(|h| h.mode = "file");
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    let _watcher = watch(config_dir, tx);
    let mut dir = ConfigDir::new(config_dir);
    let mut book = StatusBook::default();
    let mut reported: Vec<ConfigError> = Vec::new();
    let mut last_status = String::new();
    let mut first = true;
    loop {
        let scan = dir
            .rescan()
            .context("cannot scan the configuration directory")?;
        metrics.config_scans.inc();
        for e in scan.errors.iter().filter(|e| !reported.contains(e)) {
            metrics.errors.with_label_values(&["config"]).inc();
            tracing::error!(error = %e, "configuration file rejected; its last good objects stay in force");
        }
        reported = scan.errors;
        if scan.changed || first {
            first = false;
            let t = cycle.run(&dir.store())?;
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
        if event.as_ref().is_ok_and(is_change) {
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

/// Whether a notification can mean new content. Opening and reading
/// (inotify's IN_OPEN, IN_CLOSE_NOWRITE) cannot, and our own scan does both:
/// counting them made every scan trigger the next one, a rescan every
/// `--coalesce-ms` forever.
fn is_change(event: &notify::Event) -> bool {
    !matches!(event.kind, notify::EventKind::Access(_))
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind};
    use notify::{Event, EventKind};

    #[test]
    fn reads_are_not_changes() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
        ] {
            assert!(!is_change(&Event::new(kind)), "{kind:?}");
        }
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
            EventKind::Other,
        ] {
            assert!(is_change(&Event::new(kind)), "{kind:?}");
        }
    }

    /// A scan of a watched directory (it opens the directory and every
    /// file) raises no change; a write after it does.
    #[test]
    fn our_own_scan_does_not_wake_us() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "").unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let _watcher = watch(dir.path(), tx).expect("inotify here");
        ConfigDir::new(dir.path()).rescan().unwrap();
        std::fs::write(dir.path().join("b.yaml"), "").unwrap();
        // inotify reports in order: whatever the scan raised comes first.
        // The write raises create, modify and close-write; nothing else
        // may have come before them.
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the write is seen");
        let mut seen = 1;
        while rx.recv_timeout(Duration::from_millis(200)).is_ok() {
            seen += 1;
        }
        assert!(seen <= 3, "{seen} notifications for one write after a scan");
    }
}
