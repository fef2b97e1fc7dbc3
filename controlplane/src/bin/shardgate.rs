//! `shardgate`: the single-host launcher (`run`) and the status reader
//! (`status`).
//!
//! `run` starts the controlplane and the dataplane side by side on one
//! segment, forwards SIGINT/SIGTERM (the dataplane drains in-flight requests
//! up to its deadline), restarts a controlplane that crashes (the dataplane
//! keeps serving meanwhile), and exits non-zero with a one-line reason if a
//! child fails to start or the dataplane dies.
#![forbid(unsafe_code)]

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Shardgate: a sharded Gateway API appliance")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the controlplane and the dataplane on this host.
    Run(RunArgs),
    /// Print the status the controlplane last wrote.
    Status {
        /// Status file written by the controlplane.
        #[arg(long, default_value_os_t = default_status_file())]
        status_file: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Directory of Gateway API YAML.
    #[arg(long)]
    config_dir: PathBuf,
    /// Dataplane worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Event-loop driver: auto, uring or epoll.
    #[arg(long, default_value = "auto")]
    io_driver: String,
    /// Dataplane admin endpoint.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Shared-memory segment (default: a private one for this run).
    #[arg(long)]
    shm: Option<PathBuf>,
    /// Where the controlplane writes status.
    #[arg(long, default_value_os_t = default_status_file())]
    status_file: PathBuf,
    /// Address for Gateways without spec.addresses.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: String,
    /// Log format for both processes: text or json.
    #[arg(long, default_value = "text")]
    log_format: String,
}

fn default_status_file() -> PathBuf {
    std::env::temp_dir().join("shardgate-status.yaml")
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => run(&args),
        Cmd::Status { status_file } => status(&status_file),
    };
    if let Err(e) = result {
        eprintln!("shardgate: {e:#}");
        std::process::exit(1);
    }
}

fn status(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "no status at {} (is the controlplane running with --status-file?)",
            path.display()
        )
    })?;
    print!("{text}");
    Ok(())
}

/// A sibling binary of this executable (they are built and installed together).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot locate this executable")?;
    let path = me.with_file_name(name);
    if !path.is_file() {
        bail!("{} not found next to {}", name, me.display());
    }
    Ok(path)
}

struct Children {
    controlplane: Child,
    dataplane: Child,
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in [&mut self.controlplane, &mut self.dataplane] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    if !args.config_dir.is_dir() {
        bail!(
            "--config-dir {} is not a directory",
            args.config_dir.display()
        );
    }
    let shm = args
        .shm
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/dev/shm/shardgate-{}", std::process::id())));
    let cp_bin = sibling("shardgate-controlplane")?;
    let dp_bin = sibling("shardgate-dataplane")?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("cannot install signal handlers")?;

    let start_cp = || -> anyhow::Result<Child> {
        Command::new(&cp_bin)
            .arg("--config-dir")
            .arg(&args.config_dir)
            .arg("--shm")
            .arg(&shm)
            .arg("--status-file")
            .arg(&args.status_file)
            .args([
                "--bind-address",
                &args.bind_address,
                "--log-format",
                &args.log_format,
            ])
            .spawn()
            .context("cannot start shardgate-controlplane")
    };
    let mut dp = Command::new(&dp_bin);
    dp.arg("--shm").arg(&shm).args([
        "--io-driver",
        &args.io_driver,
        "--admin",
        &args.admin.to_string(),
        "--log-format",
        &args.log_format,
    ]);
    if let Some(n) = args.workers {
        dp.args(["--workers", &n.to_string()]);
    }
    let controlplane = start_cp()?;
    let dataplane = dp.spawn().context("cannot start shardgate-dataplane")?;
    let mut children = Children {
        controlplane,
        dataplane,
    };
    wait_started(&mut children, args.admin)?;
    eprintln!(
        "shardgate: running (admin http://{}/ready, status: shardgate status --status-file {})",
        args.admin,
        args.status_file.display()
    );

    let mut cp_restarts = Vec::<Instant>::new();
    loop {
        if let Some(signal) = signals.pending().next() {
            eprintln!("shardgate: signal {signal}, draining");
            return shutdown(children, &shm);
        }
        if let Some(st) = children.dataplane.try_wait()? {
            let _ = std::fs::remove_file(&shm);
            bail!("shardgate-dataplane exited unexpectedly ({})", describe(st));
        }
        if let Some(st) = children.controlplane.try_wait()? {
            // The dataplane keeps serving the last snapshot; bring the
            // controlplane back, but not in a tight loop.
            cp_restarts.retain(|t| t.elapsed() < Duration::from_secs(60));
            if cp_restarts.len() >= 5 {
                bail!(
                    "shardgate-controlplane keeps exiting ({}); giving up",
                    describe(st)
                );
            }
            eprintln!(
                "shardgate: controlplane exited ({}); restarting",
                describe(st)
            );
            std::thread::sleep(Duration::from_millis(200 * (1 << cp_restarts.len())));
            cp_restarts.push(Instant::now());
            children.controlplane = start_cp()?;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the dataplane's admin endpoint answers; a child that exits
/// first is a start-up failure.
fn wait_started(children: &mut Children, admin: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = children.controlplane.try_wait()? {
            bail!("shardgate-controlplane failed to start ({})", describe(st));
        }
        if let Some(st) = children.dataplane.try_wait()? {
            bail!("shardgate-dataplane failed to start ({})", describe(st));
        }
        if http_get(admin, "/healthz").is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("shardgate-dataplane's admin endpoint {admin} did not answer within 15 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Forwards SIGTERM: the dataplane drains (it bounds its own wait), then the
/// controlplane stops. The private segment is removed.
fn shutdown(mut children: Children, shm: &Path) -> anyhow::Result<()> {
    let pid = |c: &Child| Pid::from_raw(c.id() as i32);
    let _ = kill(pid(&children.dataplane), Signal::SIGTERM);
    let status = children.dataplane.wait()?;
    let _ = kill(pid(&children.controlplane), Signal::SIGTERM);
    let _ = children.controlplane.wait();
    let _ = std::fs::remove_file(shm);
    let _ = std::fs::remove_file(shardgate_core::shm::lock_path(shm));
    if !status.success() {
        bail!("shardgate-dataplane stopped with {}", describe(status));
    }
    Ok(())
}

fn describe(st: ExitStatus) -> String {
    match (
        st.code(),
        std::os::unix::process::ExitStatusExt::signal(&st),
    ) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".to_owned(),
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}
