//! `shardgate-bench`: Shardgate side by side with nginx and HAProxy, in
//! front of the same backend, each proxy pinned to the same cores, runs
//! interleaved (A B C A B C …), medians and min–max reported as ratios.
//!
//! ```text
//!  shardgate-bench run [--quick] [--scenarios 1,2,5] [--runs 3] [--seconds 10]
//!                      [--proxy-cores 1] [--load-cores 0] [--backend-cores 0] [--out DIR]
//!  shardgate-bench load --addr IP:PORT [--connections 64] [--seconds 10] [--rate R] [--new-connection]
//! ```
//!
//! `run` starts the backend (nginx, 13-byte and 1 MiB answers), then per
//! scenario and run each contender in turn: start it pinned to
//! `--proxy-cores`, wait until it answers, run the load generator (this
//! binary's `load`, pinned to `--load-cores`) for a warm-up and the measured
//! window, read the proxy's CPU time and peak RSS from /proc, stop it. The
//! report (Markdown and SVG) goes to `--out`.
#![forbid(unsafe_code)]

mod contenders;
mod load;
mod report;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use contenders::{Bins, Kind};
use load::{LoadResult, LoadSpec};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

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
    /// per request, 5: 1 MiB responses, 6: route-table scale (Shardgate
    /// only), 9: HTTP/2 keep-alive).
    #[arg(long, value_delimiter = ',', default_values_t = [1u8, 2, 5, 6, 9])]
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
    /// Client connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Cores for the proxies (taskset list); their worker count is the
    /// number of cores listed.
    #[arg(long, default_value = "1")]
    proxy_cores: String,
    /// Cores for the load generator.
    #[arg(long, default_value = "0")]
    load_cores: String,
    /// Cores for the backend.
    #[arg(long, default_value = "0")]
    backend_cores: String,
    /// Where the report goes (default: bench/results/<UTC date-time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Directory of shardgate-controlplane and shardgate-dataplane (default:
    /// beside this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
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
}

/// One scenario's load shape.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Number (as in the benchmark issue).
    pub id: u8,
    /// Title.
    pub title: &'static str,
    path: &'static str,
    new_connection: bool,
    /// Cleartext HTTP/2 (prior knowledge), loaded with h2load (Debian nghttp2-client).
    h2: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: 1,
        title: "HTTP/1.1 keep-alive, 13-byte response",
        path: "/",
        new_connection: false,
        h2: false,
    },
    Scenario {
        id: 2,
        title: "new connection per request",
        path: "/",
        new_connection: true,
        h2: false,
    },
    Scenario {
        id: 5,
        title: "HTTP/1.1 keep-alive, 1 MiB response",
        path: "/1m",
        new_connection: false,
        h2: false,
    },
    Scenario {
        id: 9,
        title: "HTTP/2 keep-alive (h2c, 10 streams per connection), 13-byte response",
        path: "/",
        new_connection: false,
        h2: true,
    },
];

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
    let bins = Bins { shardgate: bin_dir };
    let workers = cores_in(&a.proxy_cores);
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("bench/results").join(report::timestamp().replace(':', ""))
    });
    std::fs::create_dir_all(&out)?;
    let work = tempdir()?;
    let backend_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let _backend = contenders::backend(
        &work,
        &a.backend_cores,
        backend_addr,
        cores_in(&a.backend_cores),
    )?;
    contenders::wait_ready(backend_addr, "/", Duration::from_secs(10)).context("backend")?;

    let mut results: Vec<(Scenario, Vec<Sample>)> = Vec::new();
    for s in SCENARIOS.iter().filter(|s| a.scenarios.contains(&s.id)) {
        let mut samples = Vec::new();
        for run in 0..a.runs {
            for &kind in &contenders {
                let sample = measure(&a, &bins, &me, &work, kind, *s, backend_addr, workers)
                    .with_context(|| {
                        format!("scenario {} run {} {}", s.id, run + 1, kind.name())
                    })?;
                eprintln!(
                    "scenario {} run {} {:>9}: {:>9.0} req/s  {:>6.1} µs CPU/req  p99 {:>7} µs  errors {}",
                    s.id,
                    run + 1,
                    kind.name(),
                    sample.load.rps,
                    sample.cpu_us_per_request(),
                    sample.load.p99_us,
                    sample.load.errors
                );
                samples.push(sample);
            }
        }
        results.push((*s, samples));
    }
    let mut scale = Vec::new();
    if a.scenarios.contains(&6) && contenders.contains(&Kind::Shardgate) {
        let sizes: &[usize] = if a.quick {
            &[10, 1000]
        } else {
            &[10, 1000, 10_000, 100_000]
        };
        for &routes in sizes {
            let row = route_scale(&a, &bins, &me, &work, backend_addr, workers, routes)
                .with_context(|| format!("scenario 6 with {routes} routes"))?;
            eprintln!(
                "scenario 6 {routes:>6} routes: publication {:>8.1} ms  {:>9.0} req/s  {:>6.1} µs CPU/req  RSS {:.1} MiB  errors {}",
                row.publication_ms,
                row.sample.load.rps,
                row.sample.cpu_us_per_request(),
                row.sample.peak_rss_mib,
                row.sample.load.errors
            );
            scale.push(row);
        }
    }
    let machine = report::machine();
    let mut md = report::markdown(
        &results,
        &contenders,
        &a.proxy_cores,
        a.runs,
        a.seconds,
        &machine,
    );
    md.push_str(&report::route_scale(&scale));
    std::fs::write(out.join("report.md"), &md)?;
    for (s, samples) in &results {
        std::fs::write(
            out.join(format!("scenario-{}.svg", s.id)),
            report::svg(s, samples, &contenders),
        )?;
    }
    println!("{md}");
    eprintln!("report: {}", out.join("report.md").display());
    let errors: u64 = results
        .iter()
        .flat_map(|(_, s)| s)
        .chain(scale.iter().map(|r| &r.sample))
        .map(|s| s.load.errors)
        .sum();
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn measure(
    a: &RunArgs,
    bins: &Bins,
    me: &std::path::Path,
    work: &std::path::Path,
    kind: Kind,
    s: Scenario,
    backend: SocketAddr,
    workers: usize,
) -> anyhow::Result<Sample> {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let group = contenders::start(
        kind,
        work,
        bins,
        &a.proxy_cores,
        workers,
        listen,
        backend,
        s.h2,
        0,
    )?;
    if s.h2 {
        return measure_h2(a, &group, kind, listen);
    }
    contenders::wait_ready(listen, s.path, Duration::from_secs(15))?;
    measured_load(
        a,
        me,
        &group,
        kind,
        listen,
        "bench",
        s.path,
        s.new_connection,
    )
}

/// Warms up (not measured), then runs the load generator pinned to the load
/// cores, with the contender's CPU time read around the measured window.
#[allow(clippy::too_many_arguments)]
fn measured_load(
    a: &RunArgs,
    me: &std::path::Path,
    group: &contenders::Group,
    kind: Kind,
    listen: SocketAddr,
    host: &str,
    path: &str,
    new_connection: bool,
) -> anyhow::Result<Sample> {
    let run = |seconds: u64| -> anyhow::Result<std::process::Output> {
        let mut cmd = std::process::Command::new("taskset");
        cmd.arg("-c")
            .arg(&a.load_cores)
            .arg(me)
            .arg("load")
            .args([
                "--addr",
                &listen.to_string(),
                "--host",
                host,
                "--path",
                path,
            ])
            .args(["--connections", &a.connections.to_string()])
            .args(["--threads", &cores_in(&a.load_cores).to_string()])
            .args(["--seconds", &seconds.to_string()]);
        if new_connection {
            cmd.arg("--new-connection");
        }
        let out = cmd.output()?;
        if !out.status.success() {
            bail!(
                "load generator failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    };
    run(a.warmup)?;
    let cpu_before = group.cpu_seconds();
    let out = run(a.seconds)?;
    let cpu = group.cpu_seconds() - cpu_before;
    let load: LoadResult = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
    Ok(Sample {
        contender: kind,
        load,
        cpu_seconds: cpu,
        peak_rss_mib: group.peak_rss_mib(),
    })
}

/// One route-table size: how long the controlplane took to translate and
/// publish it, and what a request costs with it in force.
pub struct ScaleRow {
    /// HTTPRoutes (one hostname each).
    pub routes: usize,
    /// Translation and publication, ms (the controlplane's own timing).
    pub publication_ms: f64,
    /// Keep-alive load against the last route's host.
    pub sample: Sample,
}

/// Scenario 6: Shardgate with `routes` HTTPRoutes, scenario 1's load on
/// the last one's hostname.
fn route_scale(
    a: &RunArgs,
    bins: &Bins,
    me: &std::path::Path,
    work: &std::path::Path,
    backend: SocketAddr,
    workers: usize,
    routes: usize,
) -> anyhow::Result<ScaleRow> {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let group = contenders::start(
        Kind::Shardgate,
        work,
        bins,
        &a.proxy_cores,
        workers,
        listen,
        backend,
        false,
        routes,
    )?;
    let host = contenders::route_host(routes - 1);
    contenders::wait_ready_host(listen, &host, "/", Duration::from_secs(120))?;
    let sample = measured_load(a, me, &group, Kind::Shardgate, listen, &host, "/", false)?;
    Ok(ScaleRow {
        routes,
        publication_ms: contenders::last_publication_ms(work).unwrap_or(f64::NAN),
        sample,
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
            .arg(&a.load_cores)
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

/// How many cores a taskset list names (`1`, `0-3`, `0,2`).
fn cores_in(list: &str) -> usize {
    list.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum::<usize>()
        .max(1)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_count() {
        assert_eq!(cores_in("1"), 1);
        assert_eq!(cores_in("0-3"), 4);
        assert_eq!(cores_in("0,2,4-5"), 4);
    }
}
