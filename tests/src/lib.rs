//! End-to-end test support: start the real binaries on loopback, talk to them
//! with real clients, and wait for things with bounded polls.
//!
//! Every test gets its own loopback address (127.x.y.z) so tests run in
//! parallel without port clashes, and every child process is owned by a
//! guard that kills it by PID on drop (and prints its log if the test failed).
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod conformance;
pub mod fixture;
pub mod kubeapi;
pub mod pki;
pub mod prom;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the workspace's binaries are: `$SHARDGATE_BIN_DIR`, else the
/// profile directory this test executable was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SHARDGATE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_owned()
}

/// Path of a workspace binary; panics with the fix if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds every binary) or set SHARDGATE_BIN_DIR",
        path.display()
    );
    path
}

/// A loopback address of this test's own: `127.<pid-derived>.<counter>.<counter / 250 + 1>`.
/// The first 250 are 127.x.y.1; the conformance runner needs thousands (a Gateway and a
/// pod each get one), so the fourth byte takes over before an address comes back.
pub fn unique_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let b = 10 + (std::process::id() % 200) as u8;
    Ipv4Addr::new(127, b, (n % 250) as u8 + 1, (n / 250 % 250) as u8 + 1)
}

/// A port free on `ip` right now (the kernel picks it).
pub fn free_port(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Polls `f` every 20 ms until it returns `Ok`, for at most `timeout`.
/// Panics with `what` and the last error if it never does.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("never happened within {timeout:?}: {what} (last: {e})")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A child process killed (by PID) when dropped; its stderr goes to a log
/// file that is printed if the test is failing.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stderr captured into `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("create log file");
        cmd.stderr(file).stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.name);
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let name = self.name.clone();
        eventually(&format!("{name} exits"), timeout, || {
            self.child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "still running".to_owned())
        })
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Takes the child's stdout.
    pub fn stdout(&mut self) -> std::process::ChildStdout {
        self.child.stdout.take().expect("stdout was piped")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("----- last lines of {} -----", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// One echo backend "pod".
#[derive(Debug, Clone)]
pub struct Pod {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its pod name.
    pub pod: String,
}

/// The echo backend process serving several pods.
pub struct Echo {
    _proc: Proc,
    /// The pods, in the order asked for.
    pub pods: Vec<Pod>,
}

impl Echo {
    /// Starts one echo process with a listener per `(pod, namespace)` on `ip`.
    pub fn start(dir: &Path, ip: Ipv4Addr, pods: &[(&str, &str)]) -> Self {
        let specs: Vec<String> = pods
            .iter()
            .map(|(pod, ns)| format!("{ip}:0,pod={pod},namespace={ns}"))
            .collect();
        let echo = Self::start_specs(dir, &specs);
        let pods = pods
            .iter()
            .map(|(p, _)| {
                echo.pods
                    .iter()
                    .find(|f| f.pod == *p)
                    .expect("pod listed")
                    .clone()
            })
            .collect();
        Self {
            _proc: echo._proc,
            pods,
        }
    }

    /// Starts one echo process with the given `--serve` specs; `pods` lists every listener
    /// in the order the process announced them (a pod with two listeners appears twice).
    pub fn start_specs(dir: &Path, specs: &[String]) -> Self {
        let mut cmd = Command::new(bin("shardgate-echo"));
        for spec in specs {
            cmd.arg("--serve").arg(spec);
        }
        cmd.stdout(Stdio::piped());
        let mut proc = Proc::spawn("shardgate-echo", cmd, dir.join("echo.log"));
        let stdout = proc.stdout();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut found = Vec::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("echo backend did not report ready: {}", proc.log()));
            if line == "ready" {
                break;
            }
            if let Some(rest) = line.strip_prefix("listening ") {
                let (addr, pod) = rest.split_once(" pod=").expect("listening ADDR pod=NAME");
                found.push(Pod {
                    addr: addr.parse().expect("echo address"),
                    pod: pod.to_owned(),
                });
            }
        }
        Self {
            _proc: proc,
            pods: found,
        }
    }

    /// The pod named `name`.
    pub fn pod(&self, name: &str) -> &Pod {
        self.pods.iter().find(|p| p.pod == name).expect("known pod")
    }
}

/// Which event-loop driver the dataplane under test uses.
#[derive(Debug, Clone, Copy)]
pub enum Driver {
    /// io_uring.
    Uring,
    /// epoll.
    Epoll,
}

impl Driver {
    fn flag(self) -> &'static str {
        match self {
            Self::Uring => "uring",
            Self::Epoll => "epoll",
        }
    }
}

/// A running controlplane + dataplane pair on a private config directory.
pub struct Gateway {
    /// The config directory.
    pub config_dir: PathBuf,
    /// The segment path.
    pub shm: PathBuf,
    /// Status file.
    pub status_file: PathBuf,
    /// The dataplane's admin address.
    pub admin: SocketAddr,
    /// The controlplane's admin address (`/metrics`).
    pub cp_admin: SocketAddr,
    controlplane: Option<Proc>,
    /// The dataplane process.
    pub dataplane: Proc,
    cp_starts: u32,
    /// Temporary directory holding config, segment, logs. Declared last so
    /// it is removed after the processes (and their logs are printed).
    pub dir: tempfile::TempDir,
}

/// Options for [`Gateway::start_with`].
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Driver.
    pub driver: Driver,
    /// Worker count.
    pub workers: usize,
    /// Extra dataplane flags.
    pub dataplane_args: Vec<String>,
}

impl GatewayOptions {
    /// Two workers (the machine's core count) on `driver`.
    pub fn new(driver: Driver) -> Self {
        Self {
            driver,
            workers: 2,
            dataplane_args: Vec::new(),
        }
    }
}

impl Gateway {
    /// Starts both processes with `files` (name → YAML) in the config
    /// directory, and waits until the dataplane is ready.
    pub fn start(driver: Driver, files: &[(&str, String)]) -> Self {
        Self::start_with(GatewayOptions::new(driver), files)
    }

    /// [`Gateway::start`] with options.
    pub fn start_with(opts: GatewayOptions, files: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_dir = dir.path().join("config");
        std::fs::create_dir(&config_dir).expect("config dir");
        for (name, yaml) in files {
            std::fs::write(config_dir.join(name), yaml).expect("write config");
        }
        // Segments live in /dev/shm where it exists, as in production.
        let shm = if Path::new("/dev/shm").is_dir() {
            PathBuf::from(format!(
                "/dev/shm/shardgate-test-{}-{}",
                std::process::id(),
                dir.path()
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("x")
            ))
        } else {
            dir.path().join("segment")
        };
        let admin_ip = unique_ip();
        let admin = SocketAddr::from((admin_ip, free_port(admin_ip)));
        let cp_admin = SocketAddr::from((admin_ip, free_port(admin_ip)));
        let mut dp = Command::new(bin("shardgate-dataplane"));
        dp.arg("--shm")
            .arg(&shm)
            .args(["--io-driver", opts.driver.flag()])
            .args(["--workers", &opts.workers.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(["--log-level", "info"])
            .args(&opts.dataplane_args);
        let dataplane = Proc::spawn("shardgate-dataplane", dp, dir.path().join("dataplane.log"));
        let status_file = dir.path().join("status.yaml");
        let mut gw = Self {
            config_dir,
            shm,
            status_file,
            admin,
            cp_admin,
            controlplane: None,
            dataplane,
            cp_starts: 0,
            dir,
        };
        gw.start_controlplane();
        gw.wait_ready();
        gw
    }

    /// (Re)starts the controlplane on the same segment and directory.
    pub fn start_controlplane(&mut self) {
        self.cp_starts += 1;
        let mut cp = Command::new(bin("shardgate-controlplane"));
        cp.arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--shm")
            .arg(&self.shm)
            .arg("--status-file")
            .arg(&self.status_file)
            .args(["--admin", &self.cp_admin.to_string()])
            .args(["--bind-address", "127.0.0.1", "--log-level", "debug"]);
        let log = self
            .dir
            .path()
            .join(format!("controlplane-{}.log", self.cp_starts));
        self.controlplane = Some(Proc::spawn("shardgate-controlplane", cp, log));
    }

    /// The controlplane process.
    pub fn controlplane(&mut self) -> &mut Proc {
        self.controlplane.as_mut().expect("controlplane started")
    }

    /// Kills the controlplane with SIGKILL and waits for it to die.
    pub fn kill_controlplane(&mut self) {
        let mut cp = self.controlplane.take().expect("controlplane running");
        cp.signal("KILL");
        cp.wait_exit(Duration::from_secs(5));
    }

    /// Writes (or replaces) a config file atomically, as editors and
    /// deployment tools do (write beside, then rename).
    pub fn write_config(&self, name: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!("{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, self.config_dir.join(name)).expect("rename config");
    }

    /// GETs a dataplane admin path; `(status, body)`.
    pub fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        http_get(self.admin, path)
    }

    /// GETs a controlplane admin path; `(status, body)`.
    pub fn cp_admin_get(&self, path: &str) -> Result<(u16, String), String> {
        http_get(self.cp_admin, path)
    }

    /// The admin `/snapshot` document.
    pub fn snapshot(&self) -> serde_json::Value {
        let (_, body) = self.admin_get("/snapshot").expect("admin /snapshot");
        serde_json::from_str(&body).expect("snapshot JSON")
    }

    /// Waits until every worker has a snapshot in force; fails at once if
    /// either process has exited.
    pub fn wait_ready(&mut self) {
        eventually(
            "dataplane /ready answers 200",
            Duration::from_secs(15),
            || {
                if let Some(cp) = self.controlplane.as_mut() {
                    if !cp.running() {
                        panic!("the controlplane exited during start-up:\n{}", cp.log());
                    }
                }
                if !self.dataplane.running() {
                    panic!(
                        "the dataplane exited during start-up:\n{}",
                        self.dataplane.log()
                    );
                }
                match self.admin_get("/ready")? {
                    (200, _) => Ok(()),
                    (s, b) => Err(format!("{s} {b}")),
                }
            },
        );
    }

    /// Waits until every worker runs a generation above `generation`;
    /// returns the lowest generation in force.
    pub fn wait_generation_above(&self, generation: u64) -> u64 {
        eventually(
            &format!("every worker applies a generation above {generation}"),
            Duration::from_secs(10),
            || {
                let g = self.snapshot()["generation"].as_u64().unwrap_or(0);
                if g > generation {
                    Ok(g)
                } else {
                    Err(format!("generation {g}"))
                }
            },
        )
    }

    /// The generation in force on every worker.
    pub fn generation(&self) -> u64 {
        self.snapshot()["generation"].as_u64().unwrap_or(0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.shm);
        let _ = std::fs::remove_file(shardgate_core::shm::lock_path(&self.shm));
    }
}

/// A one-shot `GET` with `Connection: close`; `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Defines `mod uring` and `mod epoll`, each with one `#[test]` per named
/// function (`fn name(driver: Driver)` in the calling file), so every
/// end-to-end case runs on both event-loop drivers.
#[macro_export]
macro_rules! on_both_drivers {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $( #[test] fn $name() { super::$name($crate::Driver::Uring) } )*
        }
        mod epoll {
            $( #[test] fn $name() { super::$name($crate::Driver::Epoll) } )*
        }
    };
}
