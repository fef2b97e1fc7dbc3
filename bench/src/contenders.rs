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

    /// CPU seconds (user + system) used so far by the group's processes,
    /// with those of their children that exited and were reaped (workers
    /// retired by an nginx or HAProxy reload).
    pub fn cpu_seconds(&self) -> f64 {
        let ticks = clock_ticks();
        self.pids()
            .iter()
            .map(|&p| {
                (14..=17)
                    .map(|f| stat_field(p, f).unwrap_or(0))
                    .sum::<u64>() as f64
            })
            .sum::<f64>()
            / ticks
    }

    /// Waits until the group's processes are idle (under 5 % of a core over
    /// a 250 ms window), so that work left from starting — Shardgate's first
    /// status file, a reload's new workers — is not counted as the cost of
    /// the requests that follow. Gives up after `limit`, returning how long
    /// it waited either way.
    pub fn settle(&self, limit: Duration) -> Duration {
        const WINDOW: Duration = Duration::from_millis(250);
        let start = Instant::now();
        let mut before = self.cpu_seconds();
        while start.elapsed() < limit {
            std::thread::sleep(WINDOW);
            let now = self.cpu_seconds();
            if now - before < 0.05 * WINDOW.as_secs_f64() {
                break;
            }
            before = now;
        }
        start.elapsed()
    }

    /// Proportional set size (shared pages split between the processes
    /// that map them) of the group's processes now, MiB.
    pub fn pss_mib(&self) -> f64 {
        self.sum_kib_field("smaps_rollup", "Pss:") / 1024.0
    }

    /// The process we started first (nginx's or HAProxy's master; for
    /// Shardgate, the controlplane).
    pub fn leader(&self) -> u32 {
        self.children[0].id()
    }

    /// The sum over the group's processes of a `/proc/PID/<file>` line
    /// `<field> N kB`, in KiB.
    fn sum_kib_field(&self, file: &str, field: &str) -> f64 {
        self.pids()
            .iter()
            .filter_map(|p| {
                let text = std::fs::read_to_string(format!("/proc/{p}/{file}")).ok()?;
                let line = text.lines().find(|l| l.starts_with(field))?;
                line.split_whitespace().nth(1)?.parse::<f64>().ok()
            })
            .sum()
    }

    /// Peak resident memory (VmHWM) of the group's processes, MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.sum_kib_field("status", "VmHWM:") / 1024.0
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

/// Generations the controlplane published, from its log.
pub fn shardgate_published(dir: &Path) -> Vec<u64> {
    json_log(
        &dir.join("shardgate").join("controlplane.log"),
        "snapshot published",
    )
    .iter()
    .filter_map(|f| f.get("generation")?.as_u64())
    .collect()
}

/// One snapshot applied by one dataplane worker.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    /// Worker index.
    pub worker: u64,
    /// Generation.
    pub generation: u64,
    /// Publication to application, µs (the worker's own measure).
    pub delay_us: u64,
}

/// Every snapshot application the dataplane logged (it logs them at `info`,
/// which churn runs turn on).
pub fn shardgate_applied(dir: &Path) -> Vec<Applied> {
    json_log(&dir.join("shardgate").join("log"), "snapshot applied")
        .iter()
        .filter_map(|f| {
            Some(Applied {
                worker: f.get("worker")?.as_u64()?,
                generation: f.get("generation")?.as_u64()?,
                delay_us: f.get("delay_us")?.as_u64()?,
            })
        })
        .collect()
}

/// The `fields` of a tracing JSON log's lines whose message is `message`.
fn json_log(path: &Path, message: &str) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.contains(message))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("fields").cloned())
        .filter(|f| f.get("message").and_then(|m| m.as_str()) == Some(message))
        .collect()
}

/// Worker processes of nginx or HAProxy that died abnormally, from their
/// logs (nginx: `exited on signal`; HAProxy: `exited with code` other than
/// a clean `(Exit)`); `None` for Shardgate, whose processes never change.
pub fn crashed_workers(dir: &Path, kind: Kind) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join(kind.name()).join("log")).unwrap_or_default();
    let crashed = |l: &&str| match kind {
        Kind::Nginx => l.contains("exited on signal"),
        Kind::Haproxy => l.contains("exited with code") && !l.contains("(Exit)"),
        Kind::Shardgate => false,
    };
    (kind != Kind::Shardgate).then(|| text.lines().filter(crashed).count())
}

/// Lines of a contender's own log (stdout and stderr) that hold `needle`.
pub fn log_lines(dir: &Path, kind: Kind, needle: &str) -> usize {
    std::fs::read_to_string(dir.join(kind.name()).join("log"))
        .map(|t| t.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}

/// Where the binaries are.
pub struct Bins {
    /// Directory of shardgate-controlplane and shardgate-dataplane.
    pub shardgate: PathBuf,
    /// Extra arguments for every shardgate-dataplane.
    pub dataplane_args: Vec<String>,
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

/// What a contender's configuration holds beyond the one route.
#[derive(Clone, Copy, Default)]
pub struct Setup<'a> {
    /// The listener speaks cleartext HTTP/2 with prior knowledge (nginx
    /// `http2`, HAProxy `proto h2`; Shardgate tells by the preface).
    pub h2: bool,
    /// With `routes` > 0, that many routes, one hostname each
    /// ([`route_host`]), instead of the catch-all one.
    pub routes: usize,
    /// HTTPS: TLS 1.3 termination with this certificate.
    pub tls: Option<&'a TlsFiles>,
    /// Configuration churn: the route sets request header
    /// `x-bench-config: <generation>`, so every rewrite changes the
    /// configuration; nginx logs at `notice` (its reloads show), HAProxy
    /// runs master-worker with seamless reloads, Shardgate's dataplane logs
    /// every snapshot it applies (JSON, with its delay).
    pub churn: Option<u64>,
}

/// The certificate and key every contender terminates TLS with: ECDSA
/// P-256, self-signed for [`TLS_NAME`], generated per run.
pub struct TlsFiles {
    /// Certificate, PEM file.
    pub cert: PathBuf,
    /// Private key (PKCS#8), PEM file.
    pub key: PathBuf,
    /// Both in one file (HAProxy's `crt`).
    pub combined: PathBuf,
    cert_pem: String,
    key_pem: String,
    /// The certificate, DER (the client pins it).
    pub der: Vec<u8>,
}

/// The TLS server name (SNI, certificate SAN and Host of the HTTPS
/// scenarios).
pub const TLS_NAME: &str = "bench.example";

impl TlsFiles {
    /// Generates the certificate into `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<Self> {
        let ck = rcgen::generate_simple_self_signed(vec![TLS_NAME.to_owned()])?;
        let cert_pem = ck.cert.pem();
        let key_pem = ck.signing_key.serialize_pem();
        let files = Self {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            combined: dir.join("tls.pem"),
            der: ck.cert.der().to_vec(),
            cert_pem,
            key_pem,
        };
        std::fs::write(&files.cert, &files.cert_pem)?;
        std::fs::write(&files.key, &files.key_pem)?;
        std::fs::write(
            &files.combined,
            format!("{}{}", files.cert_pem, files.key_pem),
        )?;
        Ok(files)
    }
}

/// Starts a contender listening on `listen`, in front of `backend`.
#[allow(clippy::too_many_arguments)]
pub fn start(
    kind: Kind,
    dir: &Path,
    bins: &Bins,
    cores: &str,
    workers: usize,
    listen: SocketAddr,
    backend: SocketAddr,
    setup: &Setup<'_>,
) -> anyhow::Result<Group> {
    let dir = dir.join(kind.name());
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("log");
    write_config(kind, &dir, workers, listen, backend, setup)?;
    match kind {
        Kind::Nginx => {
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
            let mut args = vec!["-f".into(), dir.join("haproxy.cfg").display().to_string()];
            if setup.churn.is_some() {
                // Master-worker: SIGUSR2 reloads; the new worker takes the
                // listening sockets over from the old one (the stats
                // socket's `expose-fd listeners`), so none is closed.
                args.push("-W".into());
            }
            Ok(Group {
                children: vec![spawn(cores, Path::new("haproxy"), &args, &log)?],
            })
        }
        Kind::Shardgate => {
            let shm = dir.join("segment");
            let cp = spawn(
                cores,
                &bins.shardgate.join("shardgate-controlplane"),
                &[
                    "--config-dir".into(),
                    dir.join("config").display().to_string(),
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
            let mut args: Vec<String> = vec![
                "--shm".into(),
                shm.display().to_string(),
                "--workers".into(),
                workers.to_string(),
                "--admin".into(),
                "127.0.0.1:0".into(),
            ];
            if setup.churn.is_some() {
                args.extend(["--log-level", "info", "--log-format", "json"].map(String::from));
            } else {
                args.extend(["--log-level", "warn"].map(String::from));
            }
            args.extend(bins.dataplane_args.iter().cloned());
            let dp = spawn(
                cores,
                &bins.shardgate.join("shardgate-dataplane"),
                &args,
                &log,
            )?;
            Ok(Group {
                children: vec![cp, dp],
            })
        }
    }
}

/// Churn: rewrites the running contender's configuration with `generation`
/// (each one differs from the last) and makes it take it: Shardgate's
/// controlplane sees the file change (written aside and renamed in, as a
/// ConfigMap update would), nginx gets SIGHUP (`nginx -s reload`), HAProxy's
/// master SIGUSR2.
#[allow(clippy::too_many_arguments)]
pub fn reconfigure(
    kind: Kind,
    group: &Group,
    dir: &Path,
    workers: usize,
    listen: SocketAddr,
    backend: SocketAddr,
    setup: &Setup<'_>,
    generation: u64,
) -> anyhow::Result<()> {
    let dir = dir.join(kind.name());
    let setup = Setup {
        churn: Some(generation),
        ..*setup
    };
    write_config(kind, &dir, workers, listen, backend, &setup)?;
    let signal = match kind {
        Kind::Shardgate => return Ok(()),
        Kind::Nginx => "-HUP",
        Kind::Haproxy => "-USR2",
    };
    let status = Command::new("kill")
        .args([signal, &group.leader().to_string()])
        .status()?;
    if !status.success() {
        bail!("kill {signal} {} failed", group.leader());
    }
    Ok(())
}

/// Writes the contender's configuration into its directory `dir`.
fn write_config(
    kind: Kind,
    dir: &Path,
    workers: usize,
    listen: SocketAddr,
    backend: SocketAddr,
    setup: &Setup<'_>,
) -> anyhow::Result<()> {
    match kind {
        Kind::Nginx => write_atomically(
            &dir.join("nginx.conf"),
            &nginx_conf(dir, workers, listen, backend, setup),
        ),
        Kind::Haproxy => {
            if setup.routes > 0 {
                let mut map = String::new();
                for i in 0..setup.routes {
                    map.push_str(&route_host(i));
                    map.push_str(" be\n");
                }
                std::fs::write(dir.join("hosts.map"), map)?;
            }
            write_atomically(
                &dir.join("haproxy.cfg"),
                &haproxy_cfg(dir, workers, listen, backend, setup),
            )
        }
        Kind::Shardgate => {
            let config = dir.join("config");
            std::fs::create_dir_all(&config)?;
            // Written beside the watched directory and renamed in: the
            // controlplane never reads a half-written file.
            let tmp = dir.join("bench.yaml.tmp");
            std::fs::write(&tmp, shardgate_config(listen, backend, setup))?;
            std::fs::rename(&tmp, config.join("bench.yaml"))?;
            Ok(())
        }
    }
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The nginx proxy: one `location /` (or one `server` per route), upstream
/// keep-alive; TLS 1.3 with AES-128-GCM, X25519, session tickets and a
/// shared session cache.
fn nginx_conf(
    dir: &Path,
    workers: usize,
    listen: SocketAddr,
    backend: SocketAddr,
    setup: &Setup<'_>,
) -> String {
    let log_level = if setup.churn.is_some() {
        "notice"
    } else {
        "error"
    };
    let mut c = format!(
        "worker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log stderr {log_level};\nevents {{ worker_connections 16384; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n  upstream backend {{ server {backend}; keepalive 1024; keepalive_requests 1000000; }}\n",
        d = dir.display(),
    );
    let mut listen_opts = String::from(" reuseport backlog=4096");
    if setup.h2 {
        listen_opts.push_str(" http2");
    }
    if let Some(t) = setup.tls {
        listen_opts.push_str(" ssl");
        c.push_str(&format!(
            "  ssl_certificate {};\n  ssl_certificate_key {};\n  ssl_protocols TLSv1.3;\n  ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;\n  ssl_ecdh_curve X25519;\n  ssl_session_cache shared:SSL:10m;\n  ssl_session_tickets on;\n",
            t.cert.display(),
            t.key.display()
        ));
    }
    let header = setup
        .churn
        .map(|g| format!("      proxy_set_header X-Bench-Config \"{g}\";\n"))
        .unwrap_or_default();
    let location = format!(
        "    location / {{\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n{header}      proxy_buffering on;\n    }}\n"
    );
    if setup.routes == 0 {
        c.push_str(&format!(
            "  server {{\n    listen {listen}{listen_opts};\n{location}  }}\n"
        ));
    } else {
        // One server block per hostname; anything else gets 404, as from
        // Shardgate.
        c.push_str(&format!(
            "  server_names_hash_max_size {};\n  server_names_hash_bucket_size 128;\n  server {{\n    listen {listen}{listen_opts} default_server;\n    return 404;\n  }}\n",
            (setup.routes * 2).max(512)
        ));
        for i in 0..setup.routes {
            c.push_str(&format!(
                "  server {{\n    listen {listen};\n    server_name {};\n{location}  }}\n",
                route_host(i)
            ));
        }
    }
    c.push_str("}\n");
    c
}

/// The HAProxy proxy: one frontend and backend (routes: a host map to the
/// backend, anything else 404), `http-reuse always`; TLS 1.3 with
/// AES-128-GCM and X25519 (tickets are on by default).
fn haproxy_cfg(
    dir: &Path,
    workers: usize,
    listen: SocketAddr,
    backend: SocketAddr,
    setup: &Setup<'_>,
) -> String {
    let mut c = format!("global\n  nbthread {workers}\n  maxconn 8000\n  tune.bufsize 16384\n");
    if setup.churn.is_some() {
        c.push_str(&format!(
            "  stats socket {}/admin.sock mode 600 level admin expose-fd listeners\n",
            dir.display()
        ));
    }
    c.push_str("defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n  option http-keep-alive\n");
    if setup.churn.is_some() {
        // On reload, keep idle client connections open until their next
        // response can say `Connection: close` (HAProxy's own remedy for
        // clients that do not retry a request on a closed connection).
        c.push_str("  option idle-close-on-response\n");
    }
    c.push_str("frontend fe\n");
    let mut bind = format!("  bind {listen}");
    if setup.h2 {
        bind.push_str(" proto h2");
    }
    if let Some(t) = setup.tls {
        bind.push_str(&format!(
            " ssl crt {} ssl-min-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256 curves X25519",
            t.combined.display()
        ));
    }
    c.push_str(&bind);
    c.push('\n');
    if let Some(g) = setup.churn {
        c.push_str(&format!("  http-request set-header X-Bench-Config {g}\n"));
    }
    if setup.routes == 0 {
        c.push_str("  default_backend be\n");
    } else {
        c.push_str(&format!(
            "  use_backend %[req.hdr(host),lower,map({}/hosts.map,none)]\nbackend none\n  http-request deny deny_status 404\n",
            dir.display()
        ));
    }
    c.push_str(&format!(
        "backend be\n  server s1 {backend} maxconn 10000\n"
    ));
    c
}

/// Host of route `i` in a route-scale configuration.
pub fn route_host(i: usize) -> String {
    format!("h{i}.bench.example")
}

/// The standalone configuration equivalent to the nginx and HAProxy ones.
fn shardgate_config(listen: SocketAddr, backend: SocketAddr, setup: &Setup<'_>) -> String {
    let mut y = base_config(listen, backend, setup.tls);
    let filters = setup
        .churn
        .map(|g| {
            format!(
                "filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-bench-config, value: \"{g}\"}}]}}}}], "
            )
        })
        .unwrap_or_default();
    if setup.routes == 0 {
        y.push_str(&format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: all, namespace: bench}}\nspec:\n  parentRefs: [{{name: bench}}]\n  rules: [{{{filters}backendRefs: [{{name: backend, port: 80}}]}}]\n"));
    }
    for i in 0..setup.routes {
        y.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{i}, namespace: bench}}\nspec:\n  parentRefs: [{{name: bench}}]\n  hostnames: [{}]\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: /}}}}], backendRefs: [{{name: backend, port: 80}}]}}]\n",
            route_host(i)
        ));
    }
    y
}

fn base_config(listen: SocketAddr, backend: SocketAddr, tls: Option<&TlsFiles>) -> String {
    let listener = match tls {
        None => format!("{{name: http, protocol: HTTP, port: {}}}", listen.port()),
        Some(_) => format!(
            "{{name: https, protocol: HTTPS, port: {}, tls: {{mode: Terminate, certificateRefs: [{{name: bench-tls}}]}}}}",
            listen.port()
        ),
    };
    let mut y = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: shardgate}}\nspec: {{controllerName: shardgate.dev/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: bench, namespace: bench}}\nspec:\n  gatewayClassName: shardgate\n  addresses: [{{type: IPAddress, value: \"{}\"}}]\n  listeners: [{listener}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: backend, namespace: bench}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: backend-0, namespace: bench, labels: {{kubernetes.io/service-name: backend}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n",
        listen.ip(),
        backend.port(),
        backend.ip()
    );
    if let Some(t) = tls {
        let indent = |pem: &str| {
            pem.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        };
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: bench-tls, namespace: bench}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&t.cert_pem),
            indent(&t.key_pem)
        ));
    }
    y
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
    wait_until(addr, path, timeout, || {
        let s = connect(addr)?;
        probe(s, host, path)
    })
}

/// [`wait_ready`] over TLS, with the pinned certificate and [`TLS_NAME`]
/// as SNI and Host.
pub fn wait_ready_tls(addr: SocketAddr, tls: &TlsFiles, timeout: Duration) -> anyhow::Result<()> {
    let config = crate::load::client_config(&crate::load::TlsSpec {
        server_name: TLS_NAME.to_owned(),
        pinned: tls.der.clone(),
        resume: false,
    })?;
    wait_until(addr, "/", timeout, || {
        let conn = rustls::ClientConnection::new(
            std::sync::Arc::clone(&config),
            rustls::pki_types::ServerName::try_from(TLS_NAME)?.to_owned(),
        )?;
        probe(
            rustls::StreamOwned::new(conn, connect(addr)?),
            TLS_NAME,
            "/",
        )
    })
}

fn connect(addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    Ok(s)
}

/// One `GET path` with `Connection: close`: whether it answered 200.
fn probe(
    mut s: impl std::io::Read + std::io::Write,
    host: &str,
    path: &str,
) -> anyhow::Result<bool> {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    s.flush()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    Ok(&head[9..12] == b"200")
}

fn wait_until(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if matches!(ok(), Ok(true)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr}{path} did not answer 200 within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
