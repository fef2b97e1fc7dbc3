//! `shardgate-bench`: Shardgate side by side with nginx and HAProxy, in
//! front of the same backend, each proxy pinned to the same cores, runs
//! interleaved (A B C A B C …), medians and min–max reported as ratios.
//!
//! ```text
//!  shardgate-bench run [--quick] [--scenarios 1,2,3,4,5,6,7,8,9] [--runs 3] [--seconds 10]
//!                      [--churn-seconds 30] [--proxy-cores 1] [--load-cores 0]
//!                      [--backend-cores 0] [--out DIR]
//!  shardgate-bench load --addr IP:PORT [--connections 64] [--seconds 10] [--rate R]
//!                       [--new-connection] [--tls-cert PEM [--sni NAME] [--resume]]
//! ```
//!
//! `run` starts the backend (nginx, 13-byte and 1 MiB answers), then per
//! scenario and run each contender in turn: start it pinned to
//! `--proxy-cores`, wait until it answers, run the load generator (this
//! binary's `load`, pinned to `--load-cores`) for a warm-up and the measured
//! window, read the proxy's CPU time and peak RSS from /proc, stop it.
//! Scenario 8 repeats scenario 1 with the proxy on the first 1, 2, 4, … of
//! `--proxy-cores` (one worker per core). The report (Markdown and SVG) goes
//! to `--out`.
#![forbid(unsafe_code)]

mod contenders;
mod cores;
mod load;
mod report;
mod scaling;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use contenders::{Bins, Kind, Setup, TlsFiles};
use cores::CoreList;
use load::{LoadResult, LoadSpec, TlsSpec};
use shardgate_dataplane::runtime::UringTaskrun;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(version, about = "Shardgate's benchmark harness (see bench/README.md)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the scenarios side by side and writes the report.
    Run(RunArgs),
    /// Runs the load generator alone and prints one JSON result.
    Load(LoadArgs),
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// A short smoke run of every scenario: one run each, 2 s measured.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (1: keep-alive small response, 2: new connection
    /// per request, 3: HTTPS keep-alive, 4: TLS handshakes, full and
    /// resumed, 5: 1 MiB responses, 6: route-table scale, 7: configuration
    /// churn, 8: core scaling (scenario 1 with 1, 2, 4, … workers on as
    /// many of the proxy cores; skipped with a note when --proxy-cores
    /// names one core), 9: HTTP/2 keep-alive).
    #[arg(long, value_delimiter = ',', default_values_t = [1u8, 2, 3, 4, 5, 6, 7, 8, 9])]
    scenarios: Vec<u8>,
    /// Contenders, in run order.
    #[arg(long, value_delimiter = ',', default_values = ["shardgate", "nginx", "haproxy"])]
    contenders: Vec<String>,
    /// Runs per contender and scenario (interleaved).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds before each measured window.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Measured seconds of a configuration-churn run (scenario 7), ten
    /// configuration changes per second.
    #[arg(long, default_value_t = 30)]
    churn_seconds: u64,
    /// Client connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Cores for the proxies (taskset list: `1`, `0-3`, `8-15`, `0,2,4-5`);
    /// their worker count is the number of cores listed. Scenario 8 uses
    /// the first 1, 2, 4, … of them.
    #[arg(long, default_value = "1")]
    proxy_cores: CoreList,
    /// Cores for the load generator (one load thread per core).
    #[arg(long, default_value = "0")]
    load_cores: CoreList,
    /// Cores for the backend (one nginx worker per core).
    #[arg(long, default_value = "0")]
    backend_cores: CoreList,
    /// Where the report goes (default: `bench/results/<UTC date-time>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Directory of shardgate-controlplane and shardgate-dataplane (default:
    /// beside this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Leave the working directory (configurations, certificates, every
    /// contender's log) in place instead of removing it.
    #[arg(long)]
    keep_work: bool,
    #[command(flatten)]
    client: ClientMode,
    /// Extra arguments for shardgate-dataplane, whitespace-separated
    /// (e.g. `--dataplane-args="--poll-ms 1"`).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    dataplane_args: String,
}

/// How the load generator drives its sockets (for `run` and `load` alike).
#[derive(clap::Args, Clone, Copy)]
struct ClientMode {
    /// When the load generator's io_uring runs completion work: `defer`
    /// (only when a load thread waits for completions: the cheapest for the
    /// load core and for the proxy, whose every send to an `immediate`
    /// client interrupts that client's core, a cost a remote client would
    /// not put on it), `coop`, or `immediate` (the kernel's default).
    /// Falls back to epoll where io_uring is unavailable.
    #[arg(long, value_enum, default_value = "defer")]
    load_taskrun: UringTaskrun,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Target address.
    #[arg(long)]
    addr: SocketAddr,
    /// Host header.
    #[arg(long, default_value = "bench")]
    host: String,
    /// Path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Open loop: total requests per second.
    #[arg(long)]
    rate: Option<f64>,
    /// A new connection per request.
    #[arg(long)]
    new_connection: bool,
    #[command(flatten)]
    client: ClientMode,
    /// HTTPS: the certificate (PEM) the server must present (pinned; TLS
    /// 1.3, TLS_AES_128_GCM_SHA256, X25519).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// HTTPS: the server name (SNI).
    #[arg(long, default_value = contenders::TLS_NAME)]
    sni: String,
    /// HTTPS: keep a session cache and resume (TLS 1.3 tickets).
    #[arg(long)]
    resume: bool,
    /// Successes and errors per interval of this many ms (0: none).
    #[arg(long, default_value_t = 0)]
    timeline_ms: u64,
}

/// One scenario's load shape.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Number (as in the benchmark issue).
    pub id: u8,
    /// Its name in headings and file names (`4a` and `4b` share id 4).
    pub tag: &'static str,
    /// Title.
    pub title: &'static str,
    path: &'static str,
    /// A new connection per request.
    pub new_connection: bool,
    /// Cleartext HTTP/2 (prior knowledge), loaded with h2load (Debian nghttp2-client).
    h2: bool,
    /// HTTPS (TLS 1.3 termination, plain HTTP/1.1 to the backend).
    pub tls: bool,
    /// TLS session resumption (client session cache).
    resume: bool,
}

/// What the scenarios below do unless they say otherwise.
const PLAIN: Scenario = Scenario {
    id: 0,
    tag: "",
    title: "",
    path: "/",
    new_connection: false,
    h2: false,
    tls: false,
    resume: false,
};

const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: 1,
        tag: "1",
        title: "HTTP/1.1 keep-alive, 13-byte response",
        ..PLAIN
    },
    Scenario {
        id: 2,
        tag: "2",
        title: "new connection per request",
        new_connection: true,
        ..PLAIN
    },
    Scenario {
        id: 3,
        tag: "3",
        title: "HTTPS keep-alive (TLS 1.3, ECDSA P-256, AES-128-GCM), 13-byte response",
        tls: true,
        ..PLAIN
    },
    Scenario {
        id: 4,
        tag: "4a",
        title: "TLS full handshakes: a new TLS 1.3 connection per request, no resumption",
        new_connection: true,
        tls: true,
        ..PLAIN
    },
    Scenario {
        id: 4,
        tag: "4b",
        title: "TLS resumed handshakes: a new TLS 1.3 connection per request, session tickets",
        new_connection: true,
        tls: true,
        resume: true,
        ..PLAIN
    },
    Scenario {
        id: 5,
        tag: "5",
        title: "HTTP/1.1 keep-alive, 1 MiB response",
        path: "/1m",
        ..PLAIN
    },
    Scenario {
        id: 9,
        tag: "9",
        title: "HTTP/2 keep-alive (h2c, 10 streams per connection), 13-byte response",
        h2: true,
        ..PLAIN
    },
];

/// Scenario 1 in open loop: latency at a fixed rate, 80 % of nginx's
/// median scenario-1 throughput, measured without coordinated omission.
const OPEN_LOOP: Scenario = Scenario {
    id: 1,
    tag: "1o",
    title: "HTTP/1.1 keep-alive, 13-byte response, open loop at 80 % of nginx's scenario-1 req/s",
    ..PLAIN
};

/// 80 % of nginx's median scenario-1 req/s, when scenario 1 ran with nginx.
fn open_loop_rate(results: &[(Scenario, Vec<Sample>)], contenders: &[Kind]) -> Option<f64> {
    if !contenders.contains(&Kind::Nginx) {
        return None;
    }
    let (_, samples) = results.iter().find(|(s, _)| s.tag == "1")?;
    let mut rps: Vec<f64> = samples
        .iter()
        .filter(|s| s.contender == Kind::Nginx)
        .map(|s| s.load.rps)
        .collect();
    let (median, _, _) = report::stats(&mut rps);
    (median > 0.0).then_some(median * 0.8)
}

fn measure_open_loop(env: &Env<'_>, kind: Kind, rate: f64) -> anyhow::Result<Sample> {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let group = env.start(kind, listen, &Setup::default())?;
    contenders::wait_ready(listen, "/", Duration::from_secs(15))?;
    let mut load = Load::new("/");
    load.rate = Some(rate);
    measured_load(env, &group, kind, listen, &load)
}

/// One measured run of one contender.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Which contender.
    pub contender: Kind,
    /// What the load generator saw.
    pub load: LoadResult,
    /// Proxy CPU seconds (user + system) in the measured window.
    pub cpu_seconds: f64,
    /// Proxy peak RSS, MiB.
    pub peak_rss_mib: f64,
}

impl Sample {
    /// Proxy CPU microseconds per request.
    pub fn cpu_us_per_request(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.load.requests.max(1) as f64
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Load(a) => {
            let r = load::run(&LoadSpec {
                addr: a.addr,
                host: a.host,
                path: a.path,
                connections: a.connections,
                threads: a.threads,
                duration: Duration::from_secs(a.seconds),
                warmup: Duration::from_secs(a.warmup),
                rate: a.rate,
                new_connection: a.new_connection,
                tls: match &a.tls_cert {
                    Some(path) => {
                        use rustls::pki_types::pem::PemObject;
                        let cert = rustls::pki_types::CertificateDer::from_pem_file(path)
                            .with_context(|| format!("reading {}", path.display()))?;
                        Some(TlsSpec {
                            server_name: a.sni,
                            pinned: cert.to_vec(),
                            resume: a.resume,
                        })
                    }
                    None => None,
                },
                timeline_ms: a.timeline_ms,
                taskrun: a.client.load_taskrun,
            })?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Cmd::Run(a) => run(a),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(mut a: RunArgs) -> anyhow::Result<()> {
    if a.quick {
        a.runs = 1;
        a.seconds = 2;
        a.warmup = 1;
        a.churn_seconds = 5;
    }
    let contenders: Vec<Kind> = a
        .contenders
        .iter()
        .map(|c| Kind::parse(c))
        .collect::<Result<_, _>>()?;
    for tool in ["nginx", "taskset"]
        .iter()
        .chain(contenders.contains(&Kind::Haproxy).then_some(&"haproxy"))
    {
        if which(tool).is_none() {
            bail!("{tool} is not installed (Debian: apt-get install nginx haproxy util-linux)");
        }
    }
    let me = std::env::current_exe()?;
    let bin_dir = a
        .bin_dir
        .clone()
        .unwrap_or_else(|| me.parent().map(PathBuf::from).unwrap_or_default());
    let bins = Bins {
        shardgate: bin_dir,
        dataplane_args: a
            .dataplane_args
            .split_whitespace()
            .map(String::from)
            .collect(),
    };
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("bench/results").join(report::timestamp().replace(':', ""))
    });
    std::fs::create_dir_all(&out)?;
    let work = tempdir()?;
    let result = run_in(&a, &contenders, &bins, &me, &work, &out);
    if a.keep_work {
        eprintln!("working directory kept: {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

fn run_in(
    a: &RunArgs,
    contenders: &[Kind],
    bins: &Bins,
    me: &Path,
    work: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    let backend_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let _backend = contenders::backend(
        work,
        &a.backend_cores.to_string(),
        backend_addr,
        a.backend_cores.len(),
    )?;
    contenders::wait_ready(backend_addr, "/", Duration::from_secs(10)).context("backend")?;
    let tls = TlsFiles::generate(work)?;
    let env = Env {
        a,
        bins,
        me,
        work,
        backend: backend_addr,
        proxy: a.proxy_cores.clone(),
        tls: &tls,
    };

    let mut results: Vec<(Scenario, Vec<Sample>)> = Vec::new();
    for s in SCENARIOS.iter().filter(|s| a.scenarios.contains(&s.id)) {
        let mut samples = Vec::new();
        for run in 0..a.runs {
            for &kind in contenders {
                samples.push(measure_run(&env, kind, *s, &format!("{:<2}", s.tag), run)?);
            }
        }
        results.push((*s, samples));
    }
    if let Some(rate) = open_loop_rate(&results, contenders) {
        let s = OPEN_LOOP;
        let mut samples = Vec::new();
        for run in 0..a.runs {
            for &kind in contenders {
                let sample = measure_open_loop(&env, kind, rate).with_context(|| {
                    format!("scenario {} run {} {}", s.tag, run + 1, kind.name())
                })?;
                eprintln!(
                    "scenario {:<2} run {} {:>9}: {:>9.0} req/s (asked {rate:.0})  {:>6.1} µs CPU/req  p50 {} µs  p99 {} µs  errors {}",
                    s.tag,
                    run + 1,
                    kind.name(),
                    sample.load.rps,
                    sample.cpu_us_per_request(),
                    sample.load.p50_us,
                    sample.load.p99_us,
                    sample.load.errors,
                );
                samples.push(sample);
            }
        }
        results.push((s, samples));
    }
    let mut scale = Vec::new();
    if a.scenarios.contains(&6) {
        let sizes: &[usize] = if a.quick {
            &[10, 1000]
        } else {
            &[10, 1000, 10_000, 100_000]
        };
        for &routes in sizes {
            for &kind in contenders {
                let row = route_scale(&env, kind, routes)
                    .with_context(|| format!("scenario 6 with {routes} routes, {}", kind.name()))?;
                eprintln!(
                    "scenario 6 {routes:>6} routes {:>9}: ready {:>8.1} ms  settled {:>7.1} ms  {:>9.0} req/s  {:>6.1} µs CPU/req  PSS {:.1} MiB  errors {}",
                    kind.name(),
                    row.ready_ms,
                    row.settled_ms,
                    row.sample.load.rps,
                    row.sample.cpu_us_per_request(),
                    row.pss_mib,
                    row.sample.load.errors
                );
                scale.push(row);
            }
        }
    }
    let mut churn = Vec::new();
    if a.scenarios.contains(&7) {
        for run in 0..a.runs {
            for &kind in contenders {
                let row = churn_run(&env, kind)
                    .with_context(|| format!("scenario 7 run {} {}", run + 1, kind.name()))?;
                eprintln!(
                    "scenario 7  run {} {:>9}: {:>9.0} req/s  {:>6.1} µs CPU/req  changes {} applied {}  errors {} (retryable {}){}{}",
                    run + 1,
                    kind.name(),
                    row.sample.load.rps,
                    row.sample.cpu_us_per_request(),
                    row.changes,
                    row.applied.map_or_else(|| "n/a".into(), |n| n.to_string()),
                    row.sample.load.errors,
                    row.sample.load.retryable_errors,
                    row.crashed
                        .filter(|&n| n > 0)
                        .map(|n| format!("  crashed workers {n}"))
                        .unwrap_or_default(),
                    row.delays
                        .iter()
                        .map(|d| format!(
                            "  worker {}: {} applied, p50 {} µs p99 {} µs max {} µs",
                            d.worker,
                            d.delays_us.len(),
                            report::percentile(&d.delays_us, 0.5),
                            report::percentile(&d.delays_us, 0.99),
                            d.delays_us.iter().max().copied().unwrap_or(0)
                        ))
                        .collect::<String>()
                );
                churn.push(row);
            }
        }
    }
    let mut scaling_rows = Vec::new();
    let mut scaling_note = None;
    if a.scenarios.contains(&8) {
        scaling_note = scaling::skip_note(&env.proxy, report::machine_cores());
        match &scaling_note {
            Some(note) => eprintln!("{note}"),
            None => scaling_rows = scaling::run(&env, contenders)?,
        }
    }
    let machine = report::machine();
    let layout = format!(
        "Proxies pinned to cores `{}`, the load generator (io_uring task-run `{}`) to `{}`, the backend to `{}`",
        a.proxy_cores,
        a.client.load_taskrun.name(),
        a.load_cores,
        a.backend_cores
    );
    let mut md = report::markdown(&results, contenders, &layout, a.runs, a.seconds, &machine);
    md.push_str(&report::route_scale(&scale, contenders));
    md.push_str(&report::churn(&churn, contenders, a.churn_seconds));
    md.push_str(&report::scaling(
        &scaling_rows,
        contenders,
        scaling_note.as_deref(),
    ));
    std::fs::write(out.join("report.md"), &md)?;
    for (s, samples) in &results {
        std::fs::write(
            out.join(format!("scenario-{}.svg", s.tag)),
            report::svg(s, samples, contenders),
        )?;
    }
    if !churn.is_empty() {
        std::fs::write(
            out.join("scenario-7.svg"),
            report::churn_svg(&churn, contenders),
        )?;
    }
    if !scaling_rows.is_empty() {
        std::fs::write(
            out.join("scenario-8.svg"),
            report::scaling_svg(&scaling_rows, contenders),
        )?;
    }
    println!("{md}");
    eprintln!("report: {}", out.join("report.md").display());
    // Failures during configuration churn are a result (the report counts
    // them); anywhere else a failed request fails the run.
    let errors: u64 = results
        .iter()
        .flat_map(|(_, s)| s)
        .chain(scale.iter().map(|r| &r.sample))
        .chain(scaling_rows.iter().map(|r| &r.sample))
        .map(|s| s.load.errors)
        .sum();
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}

/// What every measurement needs.
#[derive(Clone)]
struct Env<'a> {
    a: &'a RunArgs,
    bins: &'a Bins,
    me: &'a Path,
    work: &'a Path,
    backend: SocketAddr,
    /// The proxy's cores, one worker (nginx worker process, HAProxy
    /// thread, Shardgate worker) on each: `--proxy-cores`, or in scenario
    /// 8 a prefix of it.
    proxy: CoreList,
    tls: &'a TlsFiles,
}

impl<'a> Env<'a> {
    /// The same, with the proxy on `cores` instead (and as many workers).
    fn with_proxy_cores(&self, cores: CoreList) -> Env<'a> {
        Env {
            proxy: cores,
            ..self.clone()
        }
    }

    /// Workers per proxy: one per proxy core.
    fn workers(&self) -> usize {
        self.proxy.len()
    }

    fn start(
        &self,
        kind: Kind,
        listen: SocketAddr,
        setup: &Setup<'_>,
    ) -> anyhow::Result<contenders::Group> {
        contenders::start(
            kind,
            self.work,
            self.bins,
            &self.proxy.to_string(),
            self.workers(),
            listen,
            self.backend,
            setup,
        )
    }
}

/// One measured run of scenario `s` (`label` names it in errors and in the
/// progress line on stderr; `run` counts from 0).
fn measure_run(
    env: &Env<'_>,
    kind: Kind,
    s: Scenario,
    label: &str,
    run: usize,
) -> anyhow::Result<Sample> {
    let sample = measure(env, kind, s)
        .with_context(|| format!("scenario {} run {} {}", label.trim(), run + 1, kind.name()))?;
    eprintln!(
        "scenario {label} run {} {:>9}: {:>9.0} req/s  {:>6.1} µs CPU/req  p99 {:>7} µs  errors {}{}",
        run + 1,
        kind.name(),
        sample.load.rps,
        sample.cpu_us_per_request(),
        sample.load.p99_us,
        sample.load.errors,
        if s.tls && s.new_connection {
            format!("  resumed {}/{}", sample.load.resumed, sample.load.handshakes)
        } else {
            String::new()
        }
    );
    Ok(sample)
}

fn measure(env: &Env<'_>, kind: Kind, s: Scenario) -> anyhow::Result<Sample> {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let setup = Setup {
        h2: s.h2,
        tls: s.tls.then_some(env.tls),
        ..Setup::default()
    };
    let group = env.start(kind, listen, &setup)?;
    if s.h2 {
        return measure_h2(env.a, &group, kind, listen);
    }
    let mut load = Load::new(s.path);
    if s.tls {
        contenders::wait_ready_tls(listen, env.tls, Duration::from_secs(15))?;
        load.host = contenders::TLS_NAME.to_owned();
        load.tls = Some((env.tls.cert.clone(), s.resume));
    } else {
        contenders::wait_ready(listen, s.path, Duration::from_secs(15))?;
    }
    load.new_connection = s.new_connection;
    measured_load(env, &group, kind, listen, &load)
}

/// What the load generator does in a run.
struct Load {
    host: String,
    path: String,
    new_connection: bool,
    /// HTTPS: the pinned certificate's PEM file, and whether to resume.
    tls: Option<(PathBuf, bool)>,
    timeline_ms: u64,
    /// Open loop at this total rate (requests/s) instead of closed loop.
    rate: Option<f64>,
}

impl Load {
    fn new(path: &str) -> Self {
        Self {
            host: "bench".into(),
            path: path.into(),
            new_connection: false,
            tls: None,
            timeline_ms: 0,
            rate: None,
        }
    }

    /// The load generator pinned to the load cores, for `seconds`.
    fn command(&self, a: &RunArgs, me: &Path, listen: SocketAddr, seconds: u64) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(a.load_cores.to_string())
            .arg(me)
            .arg("load")
            .args([
                "--addr",
                &listen.to_string(),
                "--host",
                &self.host,
                "--path",
                &self.path,
            ])
            .args(["--connections", &a.connections.to_string()])
            .args(["--threads", &a.load_cores.len().to_string()])
            .args(["--seconds", &seconds.to_string()])
            .args(["--timeline-ms", &self.timeline_ms.to_string()])
            .args(["--load-taskrun", &a.client.load_taskrun.name()]);
        if self.new_connection {
            cmd.arg("--new-connection");
        }
        if let Some(rate) = self.rate {
            cmd.args(["--rate", &format!("{rate:.0}")]);
        }
        if let Some((cert, resume)) = &self.tls {
            cmd.arg("--tls-cert").arg(cert);
            if *resume {
                cmd.arg("--resume");
            }
        }
        cmd
    }
}

/// The load generator's result from its output.
fn load_result(out: &std::process::Output) -> anyhow::Result<LoadResult> {
    if !out.status.success() {
        bail!(
            "load generator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Warms up (not measured), then runs the load generator pinned to the load
/// cores, with the contender's CPU time read around the measured window.
fn measured_load(
    env: &Env<'_>,
    group: &contenders::Group,
    kind: Kind,
    listen: SocketAddr,
    load: &Load,
) -> anyhow::Result<Sample> {
    let a = env.a;
    load_result(&load.command(a, env.me, listen, a.warmup).output()?)?;
    let cpu_before = group.cpu_seconds();
    let out = load.command(a, env.me, listen, a.seconds).output()?;
    let cpu = group.cpu_seconds() - cpu_before;
    Ok(Sample {
        contender: kind,
        load: load_result(&out)?,
        cpu_seconds: cpu,
        peak_rss_mib: group.peak_rss_mib(),
    })
}

/// One route-table size for one contender: how long it took from start
/// to serving the last route, what that costs in memory, and what a request
/// costs with it in force.
pub struct ScaleRow {
    /// Which contender.
    pub contender: Kind,
    /// Routes (one hostname each).
    pub routes: usize,
    /// Shardgate: translation and publication, ms (the controlplane's own
    /// timing); NaN for the others.
    pub publication_ms: f64,
    /// From starting the contender to the last route answering 200, ms.
    pub ready_ms: f64,
    /// From then until its processes were idle (startup work done), ms.
    pub settled_ms: f64,
    /// Proportional set size of the contender's processes after the run, MiB.
    pub pss_mib: f64,
    /// Keep-alive load against the last route's host.
    pub sample: Sample,
}

/// Scenario 6: `routes` host routes (Shardgate: HTTPRoutes; nginx: server
/// blocks; HAProxy: a host map), scenario 1's load on the last one's
/// hostname.
fn route_scale(env: &Env<'_>, kind: Kind, routes: usize) -> anyhow::Result<ScaleRow> {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let started = Instant::now();
    let group = env.start(
        kind,
        listen,
        &Setup {
            routes,
            ..Setup::default()
        },
    )?;
    let host = contenders::route_host(routes - 1);
    contenders::wait_ready_host(listen, &host, "/", Duration::from_secs(180))?;
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    let settled_ms = group.settle(Duration::from_secs(30)).as_secs_f64() * 1000.0;
    let mut load = Load::new("/");
    load.host = host;
    let sample = measured_load(env, &group, kind, listen, &load)?;
    Ok(ScaleRow {
        contender: kind,
        routes,
        publication_ms: if kind == Kind::Shardgate {
            contenders::last_publication_ms(env.work).unwrap_or(f64::NAN)
        } else {
            f64::NAN
        },
        ready_ms,
        settled_ms,
        pss_mib: group.pss_mib(),
        sample,
    })
}

/// One worker's publish→apply delays in a churn run.
pub struct WorkerDelays {
    /// Worker index.
    pub worker: u64,
    /// Generations published in the window.
    pub published: usize,
    /// Delay of each generation it applied, µs.
    pub delays_us: Vec<u64>,
}

/// Scenario 7: one churn run of one contender.
pub struct ChurnRow {
    /// Which contender.
    pub contender: Kind,
    /// The load (with its 100 ms timeline).
    pub sample: Sample,
    /// Configuration changes made (files rewritten and, for nginx and
    /// HAProxy, reload signals sent).
    pub changes: u64,
    /// Changes seen taking effect: Shardgate generations published, nginx
    /// reconfigurations and HAProxy new workers from their logs.
    pub applied: Option<usize>,
    /// Shardgate: per worker, publish→apply delays.
    pub delays: Vec<WorkerDelays>,
    /// nginx and HAProxy: worker processes that died abnormally (their
    /// logs), plus one if the master itself was gone.
    pub crashed: Option<usize>,
}

/// Scenario 7: scenario 1's load for `--churn-seconds` while the
/// configuration changes ten times a second.
fn churn_run(env: &Env<'_>, kind: Kind) -> anyhow::Result<ChurnRow> {
    let a = env.a;
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let setup = Setup {
        churn: Some(0),
        ..Setup::default()
    };
    let group = env.start(kind, listen, &setup)?;
    contenders::wait_ready(listen, "/", Duration::from_secs(15))?;
    // What happened before the window (the first publication, the first
    // worker) is not counted.
    let published_before = contenders::shardgate_published(env.work);
    let reload_marker = match kind {
        Kind::Nginx => Some(": reconfiguring"),
        Kind::Haproxy => Some("New worker"),
        Kind::Shardgate => None,
    };
    let logged = |marker: Option<&str>| marker.map(|m| contenders::log_lines(env.work, kind, m));
    let mut load = Load::new("/");
    load.timeline_ms = 100;
    load_result(&load.command(a, env.me, listen, a.warmup).output()?)?;
    let reloads_before = logged(reload_marker);
    let cpu_before = group.cpu_seconds();
    let child = load
        .command(a, env.me, listen, a.churn_seconds)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The load generator starts its clock ~50 ms after it is up; the
    // changes start 100 ms in and stop with the window.
    let t0 = Instant::now() + Duration::from_millis(50);
    let period = Duration::from_millis(100);
    let mut changes = 0u64;
    let mut master_gone = false;
    let mut next = t0 + period;
    while next + period / 2 < t0 + Duration::from_secs(a.churn_seconds) {
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        changes += 1;
        if let Err(e) = contenders::reconfigure(
            kind,
            &group,
            env.work,
            env.workers(),
            listen,
            env.backend,
            &setup,
            changes,
        ) {
            // nginx's or HAProxy's master gone (it cannot be signalled):
            // a result, reported as a crash; the load runs on.
            if kind == Kind::Shardgate {
                return Err(e);
            }
            eprintln!(
                "scenario 7 {}: {e:#}; no more changes this run",
                kind.name()
            );
            master_gone = true;
            break;
        }
        next += period;
    }
    let out = child.wait_with_output()?;
    let cpu = group.cpu_seconds() - cpu_before;
    let sample = Sample {
        contender: kind,
        load: load_result(&out)?,
        cpu_seconds: cpu,
        peak_rss_mib: group.peak_rss_mib(),
    };
    // Let the last change land before reading the logs.
    std::thread::sleep(Duration::from_millis(300));
    let (applied, delays) = if kind == Kind::Shardgate {
        let g0 = published_before.iter().copied().max().unwrap_or(0);
        let published: Vec<u64> = contenders::shardgate_published(env.work)
            .into_iter()
            .filter(|&g| g > g0)
            .collect();
        let applied = contenders::shardgate_applied(env.work);
        let delays = (0..env.workers() as u64)
            .map(|w| WorkerDelays {
                worker: w,
                published: published.len(),
                delays_us: applied
                    .iter()
                    .filter(|x| x.worker == w && x.generation > g0)
                    .map(|x| x.delay_us)
                    .collect(),
            })
            .collect();
        (Some(published.len()), delays)
    } else {
        let after = logged(reload_marker);
        (
            after.zip(reloads_before).map(|(a, b)| a.saturating_sub(b)),
            Vec::new(),
        )
    };
    drop(group);
    Ok(ChurnRow {
        contender: kind,
        sample,
        changes,
        applied,
        delays,
        crashed: contenders::crashed_workers(env.work, kind).map(|n| n + usize::from(master_gone)),
    })
}

/// HTTP/2 runs use h2load (Debian nghttp2-client) as the client: it
/// reports throughput and failures; our load generator speaks HTTP/1.1
/// only, so no latency percentiles for this scenario.
fn measure_h2(
    a: &RunArgs,
    group: &contenders::Group,
    kind: Kind,
    listen: SocketAddr,
) -> anyhow::Result<Sample> {
    let url = format!("http://{listen}/");
    let h2load = |seconds: u64| {
        std::process::Command::new("taskset")
            .arg("-c")
            .arg(a.load_cores.to_string())
            .args(["h2load", "-c", &a.connections.to_string(), "-m", "10"])
            .args(["-D", &seconds.to_string(), &url])
            .output()
    };
    // Readiness: h2load's own first requests, retried briefly.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let o = std::process::Command::new("h2load")
            .args(["-n", "1", "-c", "1", &url])
            .output()?;
        if String::from_utf8_lossy(&o.stdout).contains("1 succeeded") {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("{} does not answer HTTP/2 on {listen}", kind.name());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = h2load(a.warmup.max(1))?;
    let cpu_before = group.cpu_seconds();
    let out = h2load(a.seconds)?;
    let cpu = group.cpu_seconds() - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let number = |after: &str, before: &str| -> Option<f64> {
        let line = text
            .lines()
            .find(|l| l.contains(after) && l.contains(before))?;
        let rest = &line[line.find(after)? + after.len()..];
        rest.split(before)
            .next()?
            .trim()
            .replace(',', "")
            .parse()
            .ok()
    };
    let succeeded =
        number("done,", "succeeded").with_context(|| format!("h2load output: {text}"))?;
    let failed = number("succeeded,", "failed").unwrap_or(0.0);
    let errored = number("failed,", "errored").unwrap_or(0.0);
    let seconds = a.seconds as f64;
    Ok(Sample {
        contender: kind,
        load: LoadResult {
            requests: succeeded as u64,
            errors: (failed + errored) as u64,
            seconds,
            rps: succeeded / seconds,
            ..LoadResult::default()
        },
        cpu_seconds: cpu,
        peak_rss_mib: group.peak_rss_mib(),
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| PathBuf::from(d).join(tool))
        .find(|p| p.is_file())
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("shardgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
