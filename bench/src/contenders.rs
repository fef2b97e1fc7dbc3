//! The contenders and the shared backend: configurations that do the same
//! thing (one route to one backend, HTTP/1.1 upstream keep-alive with a pool
//! large enough for every connection, access logs off, the same number of
//! workers), started pinned to their cores, and the /proc accounting of
//! their CPU time and peak memory.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Shardgate (controlplane + dataplane).
    Shardgate,
    /// nginx.
    Nginx,
    /// HAProxy.
    Haproxy,
}

impl Kind {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shardgate => "shardgate",
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "shardgate" => Self::Shardgate,
            "nginx" => Self::Nginx,
            "haproxy" => Self::Haproxy,
            other => bail!("unknown contender {other:?} (shardgate, nginx, haproxy)"),
        })
    }
}

/// A running process group, killed on drop.
pub struct Group {
    children: Vec<Child>,
}

impl Group {
    /// Every process of the group(s), for accounting.
    pub fn pids(&self) -> Vec<u32> {
        let leaders: Vec<u32> = self.children.iter().map(Child::id).collect();
        let mut pids = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return leaders;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if stat_field(pid, 5).is_some_and(|pgid| leaders.contains(&(pgid as u32))) {
                pids.push(pid);
            }
        }
        pids
    }

    /// CPU seconds (user + system) used so far by the group's processes.
    pub fn cpu_seconds(&self) -> f64 {
        let ticks = clock_ticks();
        self.pids()
            .iter()
            .map(|&p| (stat_field(p, 14).unwrap_or(0) + stat_field(p, 15).unwrap_or(0)) as f64)
            .sum::<f64>()
            / ticks
    }

    /// Peak resident memory (VmHWM) of the group's processes, MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.pids()
            .iter()
            .filter_map(|p| {
                let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
                line.split_whitespace().nth(1)?.parse::<f64>().ok()
            })
            .sum::<f64>()
            / 1024.0
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for c in &mut self.children {
            // The whole group: nginx and HAProxy fork workers. (kill(1)
            // keeps this crate free of unsafe code.)
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat.
fn stat_field(pid: u32, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; count from after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(n - 3)?.parse().ok()
}

/// Starts `cmd` pinned to `cores` in its own process group.
fn spawn(cores: &str, program: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log)?;
    let child = Command::new("taskset")
        .arg("-c")
        .arg(cores)
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(child)
}

/// The controlplane's last "snapshot published" time (translation and
/// publication), milliseconds, from its log.
pub fn last_publication_ms(dir: &Path) -> Option<f64> {
    let log = std::fs::read_to_string(dir.join("shardgate").join("controlplane.log")).ok()?;
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("snapshot published"))?;
    let v = line.split("\"took_us\":").nth(1)?;
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<f64>().ok().map(|us| us / 1000.0)
}

/// Where the binaries are.
pub struct Bins {
    /// Directory of shardgate-controlplane and shardgate-dataplane.
    pub shardgate: PathBuf,
}

/// The backend: nginx answering `GET /` with 13 bytes and `/1m` with 1 MiB.
pub fn backend(dir: &Path, cores: &str, addr: SocketAddr, workers: usize) -> anyhow::Result<Group> {
    let root = dir.join("backend-root");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("1m"), vec![b'x'; 1 << 20])?;
    let conf = format!(
        "worker_processes {workers};\ndaemon off;\npid {dir}/backend.pid;\nerror_log stderr error;\nevents {{ worker_connections 16384; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n  server {{\n    listen {addr} reuseport backlog=4096;\n    root {root};\n    location = / {{ return 200 \"hello, world!\"; }}\n    location = /1m {{ }}\n  }}\n}}\n",
        dir = dir.display(),
        root = root.display()
    );
    let path = dir.join("backend.conf");
    std::fs::write(&path, conf)?;
    let child = spawn(
        cores,
        Path::new("nginx"),
        &[
            "-c".into(),
            path.display().to_string(),
            "-p".into(),
            dir.display().to_string(),
        ],
        &dir.join("backend.log"),
    )?;
    Ok(Group {
        children: vec![child],
    })
}

/// Starts a contender listening on `listen`, in front of `backend`.
/// With `h2`, the listener speaks cleartext HTTP/2 with prior knowledge
/// (nginx `http2`, HAProxy `proto h2`; Shardgate tells by the preface).
#[allow(clippy::too_many_arguments)]
pub fn start(
    kind: Kind,
    dir: &Path,
    bins: &Bins,
    cores: &str,
    workers: usize,
    listen: SocketAddr,
    backend: SocketAddr,
    h2: bool,
    routes: usize,
) -> anyhow::Result<Group> {
    let dir = dir.join(kind.name());
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("log");
    match kind {
        Kind::Nginx => {
            let conf = format!(
                "worker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log stderr error;\nevents {{ worker_connections 16384; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n  upstream backend {{ server {backend}; keepalive 1024; keepalive_requests 1000000; }}\n  server {{\n    listen {listen} reuseport backlog=4096{http2};\n    location / {{\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering on;\n    }}\n  }}\n}}\n",
                d = dir.display(),
                http2 = if h2 { " http2" } else { "" }
            );
            std::fs::write(dir.join("nginx.conf"), conf)?;
            let args = vec![
                "-c".into(),
                dir.join("nginx.conf").display().to_string(),
                "-p".into(),
                dir.display().to_string(),
            ];
            Ok(Group {
                children: vec![spawn(cores, Path::new("nginx"), &args, &log)?],
            })
        }
        Kind::Haproxy => {
            let conf = format!(
                "global\n  nbthread {workers}\n  maxconn 8000\n  tune.bufsize 16384\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n  option http-keep-alive\nfrontend fe\n  bind {listen}{proto}\n  default_backend be\nbackend be\n  server s1 {backend} maxconn 10000\n",
                proto = if h2 { " proto h2" } else { "" }
            );
            std::fs::write(dir.join("haproxy.cfg"), conf)?;
            let args = vec!["-f".into(), dir.join("haproxy.cfg").display().to_string()];
            Ok(Group {
                children: vec![spawn(cores, Path::new("haproxy"), &args, &log)?],
            })
        }
        Kind::Shardgate => {
            let config = dir.join("config");
            std::fs::create_dir_all(&config)?;
            std::fs::write(
                config.join("bench.yaml"),
                shardgate_config(listen, backend, routes),
            )?;
            let shm = dir.join("segment");
            let cp = spawn(
                cores,
                &bins.shardgate.join("shardgate-controlplane"),
                &[
                    "--config-dir".into(),
                    config.display().to_string(),
                    "--shm".into(),
                    shm.display().to_string(),
                    "--status-file".into(),
                    dir.join("status.yaml").display().to_string(),
                    "--log-level".into(),
                    "info".into(),
                    "--log-format".into(),
                    "json".into(),
                ],
                &dir.join("controlplane.log"),
            )?;
            let dp = spawn(
                cores,
                &bins.shardgate.join("shardgate-dataplane"),
                &[
                    "--shm".into(),
                    shm.display().to_string(),
                    "--workers".into(),
                    workers.to_string(),
                    "--admin".into(),
                    "127.0.0.1:0".into(),
                    "--log-level".into(),
                    "warn".into(),
                ],
                &log,
            )?;
            Ok(Group {
                children: vec![cp, dp],
            })
        }
    }
}

/// Host of route `i` in a route-scale configuration.
pub fn route_host(i: usize) -> String {
    format!("h{i}.bench.example")
}

/// The standalone configuration equivalent to the nginx and HAProxy ones;
/// with `routes` > 0, that many HTTPRoutes instead, one hostname each
/// ([`route_host`]).
fn shardgate_config(listen: SocketAddr, backend: SocketAddr, routes: usize) -> String {
    let mut y = base_config(listen, backend);
    if routes == 0 {
        y.push_str("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: all, namespace: bench}\nspec:\n  parentRefs: [{name: bench}]\n  rules: [{backendRefs: [{name: backend, port: 80}]}]\n");
    }
    for i in 0..routes {
        y.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{i}, namespace: bench}}\nspec:\n  parentRefs: [{{name: bench}}]\n  hostnames: [{}]\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: /}}}}], backendRefs: [{{name: backend, port: 80}}]}}]\n",
            route_host(i)
        ));
    }
    y
}

fn base_config(listen: SocketAddr, backend: SocketAddr) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: shardgate}}\nspec: {{controllerName: shardgate.dev/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: bench, namespace: bench}}\nspec:\n  gatewayClassName: shardgate\n  addresses: [{{type: IPAddress, value: \"{}\"}}]\n  listeners: [{{name: http, protocol: HTTP, port: {}}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: backend, namespace: bench}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: backend-0, namespace: bench, labels: {{kubernetes.io/service-name: backend}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n",
        listen.ip(),
        listen.port(),
        backend.port(),
        backend.ip()
    )
}

/// Waits until `GET path` on `addr` answers 200.
pub fn wait_ready(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<()> {
    wait_ready_host(addr, "bench", path, timeout)
}

/// [`wait_ready`] with a Host.
pub fn wait_ready_host(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + timeout;
    loop {
        let ok = (|| -> std::io::Result<bool> {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            )?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head)?;
            Ok(&head[9..12] == b"200")
        })();
        if matches!(ok, Ok(true)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr}{path} did not answer 200 within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
