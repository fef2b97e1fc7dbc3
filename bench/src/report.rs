//! The report: per scenario and contender the median (min–max) of req/s,
//! proxy CPU per request, latency percentiles, peak RSS and errors, and
//! Shardgate's ratios against each peer; one SVG bar chart per scenario;
//! the route-scale table; the churn tables and a req/s timeline; the
//! core-scaling table and its efficiency curve.

use crate::contenders::Kind;
use crate::scaling::{efficiency, ScalingRow};
use crate::{ChurnRow, Sample, ScaleRow, Scenario};
use std::fmt::Write as _;

/// UTC date and time, for file names and headings.
pub fn timestamp() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown-time".into(), |s| s.trim().to_owned())
}

/// The machine, in one line: CPU model, cores, kernel.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = machine_cores();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {kernel}")
}

/// The cores this process may run on (0 if unknown).
pub fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The `q` quantile of `values` (nearest rank; 0 when empty).
pub fn percentile(values: &[u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Median, min and max of `values`.
pub fn stats(values: &mut [f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

fn column(samples: &[Sample], kind: Kind, f: impl Fn(&Sample) -> f64) -> (f64, f64, f64) {
    let mut v: Vec<f64> = samples
        .iter()
        .filter(|s| s.contender == kind)
        .map(f)
        .collect();
    stats(&mut v)
}

fn cell((median, min, max): (f64, f64, f64), digits: usize) -> String {
    format!("{median:.digits$} ({min:.digits$}–{max:.digits$})")
}

/// A latency cell; h2load runs report none (`n/a`).
fn latency((median, min, max): (f64, f64, f64)) -> String {
    if max == 0.0 {
        "n/a".to_owned()
    } else {
        cell((median, min, max), 0)
    }
}

/// The Markdown report.
pub fn markdown(
    results: &[(Scenario, Vec<Sample>)],
    contenders: &[Kind],
    layout: &str,
    runs: usize,
    seconds: u64,
    machine: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Shardgate benchmark report\n");
    let _ = writeln!(
        out,
        "{} on {machine}. {layout}; medians (min–max) of {runs} interleaved run(s) of {seconds} s each. CPU per request is the proxy's user + system time from /proc divided by the requests it served.\n",
        timestamp()
    );
    for (s, samples) in results {
        let _ = writeln!(out, "## Scenario {}: {}\n", s.tag, s.title);
        if s.tls {
            let _ = writeln!(
                out,
                "TLS 1.3 terminated by the proxy with one ECDSA P-256 certificate, TLS_AES_128_GCM_SHA256 and X25519 (the client offers nothing else), plain HTTP/1.1 keep-alive to the backend.{}\n",
                if s.new_connection {
                    " One request per connection, so req/s is handshakes/s and CPU per request is CPU per handshake (plus one proxied request)."
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(
            out,
            "| contender | req/s | CPU µs/request | p50 µs | p99 µs | p99.9 µs | peak RSS MiB | errors |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for &k in contenders {
            let errors: u64 = samples
                .iter()
                .filter(|x| x.contender == k)
                .map(|x| x.load.errors)
                .sum();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {errors} |",
                k.name(),
                cell(column(samples, k, |x| x.load.rps), 0),
                cell(column(samples, k, Sample::cpu_us_per_request), 1),
                latency(column(samples, k, |x| x.load.p50_us as f64)),
                latency(column(samples, k, |x| x.load.p99_us as f64)),
                latency(column(samples, k, |x| x.load.p999_us as f64)),
                cell(column(samples, k, |x| x.peak_rss_mib), 1),
            );
        }
        if contenders.contains(&Kind::Shardgate) {
            let ours_rps = column(samples, Kind::Shardgate, |x| x.load.rps).0;
            let ours_cpu = column(samples, Kind::Shardgate, Sample::cpu_us_per_request).0;
            for &k in contenders.iter().filter(|k| **k != Kind::Shardgate) {
                let rps = column(samples, k, |x| x.load.rps).0;
                let cpu = column(samples, k, Sample::cpu_us_per_request).0;
                let _ = writeln!(
                    out,
                    "\nShardgate vs {}: req/s × {:.2}, CPU per request × {:.2}.",
                    k.name(),
                    ours_rps / rps.max(f64::MIN_POSITIVE),
                    ours_cpu / cpu.max(f64::MIN_POSITIVE)
                );
            }
        }
        if s.tls && s.new_connection {
            let resumed: Vec<String> = contenders
                .iter()
                .map(|&k| {
                    let (h, r) = samples
                        .iter()
                        .filter(|x| x.contender == k)
                        .fold((0, 0), |(h, r), x| {
                            (h + x.load.handshakes, r + x.load.resumed)
                        });
                    format!(
                        "{} {:.0} % ({r} of {h})",
                        k.name(),
                        100.0 * r as f64 / h.max(1) as f64
                    )
                })
                .collect();
            let _ = writeln!(out, "\nResumed handshakes: {}.", resumed.join(", "));
        }
        let _ = writeln!(out, "\n![scenario {}](scenario-{}.svg)\n", s.tag, s.tag);
    }
    out
}

/// Scenario 6's table: per route-table size and contender, the time from
/// start to serving the last route (and Shardgate's translation +
/// publication), req/s, CPU per request (and its ratio to the contender's
/// smallest table), PSS.
pub fn route_scale(rows: &[ScaleRow], contenders: &[Kind]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from("## Scenario 6: route-table scale\n\nOne route per hostname (Shardgate: an HTTPRoute each; nginx: a `server` block each; HAProxy: a host → backend map file), scenario 1's keep-alive load on the last route's hostname; one run each. *Ready* is from starting the contender to the last route answering 200 (configuration parsing, for Shardgate translation, publication and the dataplane's compilation); PSS counts shared pages once (nginx's master and worker share the parsed configuration; Shardgate's controlplane and dataplane map the same segment). The load starts once the contender's processes are idle; *settled* is how long that took after ready (startup work that outlasts readiness, such as Shardgate's first status file).\n\n| routes | contender | ready ms | settled ms | Shardgate translation + publication ms | req/s | CPU µs/request | × its smallest | PSS MiB | errors |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let cpu = r.sample.cpu_us_per_request();
        let base = rows
            .iter()
            .find(|x| x.contender == r.contender)
            .map_or(cpu, |x| x.sample.cpu_us_per_request());
        let publication = if r.publication_ms.is_nan() {
            "n/a".to_owned()
        } else {
            format!("{:.1}", r.publication_ms)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {publication} | {:.0} | {:.1} | {:.2} | {:.1} | {} |",
            r.routes,
            r.contender.name(),
            r.ready_ms,
            r.settled_ms,
            r.sample.load.rps,
            cpu,
            cpu / base.max(f64::MIN_POSITIVE),
            r.pss_mib,
            r.sample.load.errors
        );
    }
    let largest = rows.iter().map(|r| r.routes).max().unwrap_or(0);
    let smallest = rows.iter().map(|r| r.routes).min().unwrap_or(0);
    if contenders.contains(&Kind::Shardgate) && largest > smallest {
        for &k in contenders.iter().filter(|k| **k != Kind::Shardgate) {
            let cpu_at = |kind: Kind, n: usize| {
                rows.iter()
                    .find(|r| r.contender == kind && r.routes == n)
                    .map(|r| r.sample.cpu_us_per_request())
            };
            if let (Some(ours), Some(theirs)) =
                (cpu_at(Kind::Shardgate, largest), cpu_at(k, largest))
            {
                let _ = writeln!(
                    out,
                    "\nAt {largest} routes, Shardgate vs {}: CPU per request × {:.2}.",
                    k.name(),
                    ours / theirs.max(f64::MIN_POSITIVE)
                );
            }
        }
    }
    out.push('\n');
    out
}

/// Scenario 7's tables: per contender the load during churn and its
/// failures; Shardgate's publish→apply delay per worker.
pub fn churn(rows: &[ChurnRow], contenders: &[Kind], seconds: u64) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut out = format!("## Scenario 7: configuration churn\n\nScenario 1's keep-alive load for {seconds} s while the configuration changes ten times a second: the route's request header `x-bench-config` gets a new value each time. Shardgate: the file in the controlplane's directory is replaced (written aside, renamed in); nginx: `nginx.conf` rewritten and SIGHUP to the master (`nginx -s reload`); HAProxy (master-worker, `-W`, listening sockets handed over through `expose-fd listeners`): `haproxy.cfg` rewritten and SIGUSR2 to the master. *Applied* is what the logs show took effect: Shardgate generations published, nginx reconfigurations, HAProxy workers started. *Retryable* failures are requests on a reused keep-alive connection that the proxy closed before any byte of the response (an HTTP client may retry those, RFC 9112 §9.3.1); they count as failures all the same. HAProxy runs with `option idle-close-on-response` (its remedy for clients that do not retry: an idle connection is kept until its next response can say `Connection: close`); nginx has no equivalent. *Crashed workers*: nginx or HAProxy worker processes their master saw die abnormally (plus one if the master itself could no longer be signalled). Medians (min–max) over runs; failures summed.\n\n| contender | req/s | CPU µs/request | p99 µs | max µs | changes | applied | failed requests | of which retryable | crashed workers |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for &k in contenders {
        let mine: Vec<&ChurnRow> = rows.iter().filter(|r| r.contender == k).collect();
        if mine.is_empty() {
            continue;
        }
        let samples: Vec<Sample> = mine.iter().map(|r| r.sample.clone()).collect();
        let applied: Vec<String> = mine
            .iter()
            .map(|r| r.applied.map_or_else(|| "n/a".into(), |n| n.to_string()))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            k.name(),
            cell(column(&samples, k, |x| x.load.rps), 0),
            cell(column(&samples, k, Sample::cpu_us_per_request), 1),
            latency(column(&samples, k, |x| x.load.p99_us as f64)),
            latency(column(&samples, k, |x| x.load.max_us as f64)),
            mine.iter().map(|r| r.changes).sum::<u64>(),
            applied.join(" + "),
            mine.iter().map(|r| r.sample.load.errors).sum::<u64>(),
            mine.iter()
                .map(|r| r.sample.load.retryable_errors)
                .sum::<u64>(),
            if k == Kind::Shardgate {
                "n/a".to_owned()
            } else {
                mine.iter()
                    .filter_map(|r| r.crashed)
                    .sum::<usize>()
                    .to_string()
            },
        );
    }
    let ours: Vec<&ChurnRow> = rows
        .iter()
        .filter(|r| r.contender == Kind::Shardgate)
        .collect();
    if !ours.is_empty() {
        out.push_str("\nShardgate, publish→apply delay per worker: from the controlplane's publication timestamp in the segment to the worker having compiled and swapped in the new route table, as each worker logs it for every generation it applies (all runs pooled). A generation a worker never applied (a newer one came first) counts as skipped. Target: p99 < 1 ms on every worker, no failed request.\n\n| worker | published | applied | skipped | p50 µs | p99 µs | max µs |\n|---:|---:|---:|---:|---:|---:|---:|\n");
        let workers = ours.iter().map(|r| r.delays.len()).max().unwrap_or(0);
        for w in 0..workers {
            let published: usize = ours
                .iter()
                .filter_map(|r| r.delays.get(w))
                .map(|d| d.published)
                .sum();
            let delays: Vec<u64> = ours
                .iter()
                .filter_map(|r| r.delays.get(w))
                .flat_map(|d| d.delays_us.iter().copied())
                .collect();
            let _ = writeln!(
                out,
                "| {w} | {published} | {} | {} | {} | {} | {} |",
                delays.len(),
                published.saturating_sub(delays.len()),
                percentile(&delays, 0.5),
                percentile(&delays, 0.99),
                delays.iter().max().copied().unwrap_or(0)
            );
        }
    }
    out.push_str("\n![scenario 7](scenario-7.svg)\n\n");
    out
}

/// Scenario 7's timeline: req/s per 100 ms of each contender's first churn
/// run, failures marked below the axis.
pub fn churn_svg(rows: &[ChurnRow], contenders: &[Kind]) -> String {
    let (w, h, left, top, plot_h) = (720.0, 320.0, 60.0, 40.0, 200.0);
    let plot_w = w - left - 20.0;
    let firsts: Vec<&ChurnRow> = contenders
        .iter()
        .filter_map(|&k| rows.iter().find(|r| r.contender == k))
        .collect();
    let rate = |r: &ChurnRow, n: u64| n as f64 * 1000.0 / r.sample.load.timeline_ms.max(1) as f64;
    let max_rps = firsts
        .iter()
        .flat_map(|r| r.sample.load.timeline.iter().map(move |b| rate(r, b[0])))
        .fold(1.0, f64::max);
    let points = firsts
        .iter()
        .map(|r| r.sample.load.timeline.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let seconds = firsts.first().map_or(0.0, |r| r.sample.load.seconds);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"10\" y=\"20\" font-size=\"14\">Scenario 7: req/s per 100 ms under ten configuration changes per second (failures: marks below the axis)</text>\n<line x1=\"{left}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#999\"/>\n<text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{max_rps:.0}</text>\n<text x=\"{lx}\" y=\"{y0}\" text-anchor=\"end\">0</text>\n<text x=\"{x1}\" y=\"{sy}\" text-anchor=\"end\">{seconds:.0} s</text>\n",
        y0 = top + plot_h,
        x1 = left + plot_w,
        lx = left - 5.0,
        ty = top + 10.0,
        sy = top + plot_h + 15.0,
    );
    let colors = ["#2b6cb0", "#38a169", "#d69e2e"];
    for (i, r) in firsts.iter().enumerate() {
        let color = colors[i % colors.len()];
        let x = |j: usize| left + plot_w * j as f64 / (points - 1) as f64;
        let path: Vec<String> = r
            .sample
            .load
            .timeline
            .iter()
            .enumerate()
            .map(|(j, b)| {
                format!(
                    "{:.1},{:.1}",
                    x(j),
                    top + plot_h - plot_h * rate(r, b[0]) / max_rps
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            path.join(" ")
        );
        for (j, b) in r.sample.load.timeline.iter().enumerate() {
            if b[1] > 0 {
                let y = top + plot_h + 22.0 + 8.0 * i as f64;
                let _ = writeln!(
                    out,
                    "<rect x=\"{:.1}\" y=\"{y:.0}\" width=\"3\" height=\"6\" fill=\"{color}\"><title>{} failed</title></rect>",
                    x(j) - 1.5,
                    b[1]
                );
            }
        }
        let _ = writeln!(
            out,
            "<rect x=\"{:.0}\" y=\"{:.0}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{:.0}\" y=\"{:.0}\">{} ({} failed)</text>",
            left + 200.0 * i as f64,
            h - 22.0,
            left + 200.0 * i as f64 + 16.0,
            h - 12.0,
            xml(r.contender.name()),
            r.sample.load.errors
        );
    }
    out.push_str("</svg>\n");
    out
}

/// A bar chart of median CPU µs per request and req/s per contender.
pub fn svg(s: &Scenario, samples: &[Sample], contenders: &[Kind]) -> String {
    let bars: Vec<(String, f64, f64)> = contenders
        .iter()
        .map(|&k| {
            (
                k.name().to_owned(),
                column(samples, k, Sample::cpu_us_per_request).0,
                column(samples, k, |x| x.load.rps).0,
            )
        })
        .collect();
    let max_cpu = bars.iter().map(|b| b.1).fold(1e-9, f64::max);
    let max_rps = bars.iter().map(|b| b.2).fold(1e-9, f64::max);
    let (w, row) = (640.0, 28.0);
    let h = 70.0 + row * 2.0 * bars.len() as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"10\" y=\"20\" font-size=\"14\">Scenario {}: {}</text>\n",
        s.tag,
        xml(s.title)
    );
    let colors = ["#2b6cb0", "#38a169", "#d69e2e"];
    for (i, (name, cpu, rps)) in bars.iter().enumerate() {
        let y = 40.0 + row * 2.0 * i as f64;
        let color = colors[i % colors.len()];
        let cw = 380.0 * cpu / max_cpu;
        let rw = 380.0 * rps / max_rps;
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{:.0}\">{}</text>\n<rect x=\"110\" y=\"{:.0}\" width=\"{cw:.1}\" height=\"12\" fill=\"{color}\"/>\n<text x=\"{:.0}\" y=\"{:.0}\">{cpu:.1} µs CPU/request</text>\n<rect x=\"110\" y=\"{:.0}\" width=\"{rw:.1}\" height=\"12\" fill=\"{color}\" opacity=\"0.5\"/>\n<text x=\"{:.0}\" y=\"{:.0}\">{rps:.0} req/s</text>",
            y + 10.0,
            xml(name),
            y,
            115.0 + cw,
            y + 10.0,
            y + 16.0,
            115.0 + rw,
            y + 26.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Scenario 8's medians for one contender and worker count: req/s, CPU
/// µs per request, p99 µs, each as (median, min, max).
struct ScalingPoint {
    workers: usize,
    cores: String,
    rps: (f64, f64, f64),
    cpu: (f64, f64, f64),
    p99: (f64, f64, f64),
    errors: u64,
}

/// The worker counts scenario 8 ran with, ascending.
fn scaling_steps(rows: &[ScalingRow]) -> Vec<usize> {
    let mut steps: Vec<usize> = rows.iter().map(|r| r.workers).collect();
    steps.sort_unstable();
    steps.dedup();
    steps
}

/// Scenario 8's rows, per contender (in `contenders` order) and worker
/// count (ascending).
fn scaling_points(rows: &[ScalingRow], contenders: &[Kind]) -> Vec<(Kind, Vec<ScalingPoint>)> {
    let steps = scaling_steps(rows);
    contenders
        .iter()
        .map(|&k| {
            let points = steps
                .iter()
                .filter_map(|&w| {
                    let mine: Vec<&ScalingRow> = rows
                        .iter()
                        .filter(|r| r.workers == w && r.sample.contender == k)
                        .collect();
                    let samples: Vec<Sample> = mine.iter().map(|r| r.sample.clone()).collect();
                    Some(ScalingPoint {
                        workers: w,
                        cores: mine.first()?.cores.clone(),
                        rps: column(&samples, k, |x| x.load.rps),
                        cpu: column(&samples, k, Sample::cpu_us_per_request),
                        p99: column(&samples, k, |x| x.load.p99_us as f64),
                        errors: samples.iter().map(|x| x.load.errors).sum(),
                    })
                })
                .collect();
            (k, points)
        })
        .collect()
}

/// Efficiency of each point against the contender's one-worker median
/// req/s.
fn efficiencies(points: &[ScalingPoint]) -> Vec<f64> {
    let one = points
        .iter()
        .find(|p| p.workers == 1)
        .map_or(0.0, |p| p.rps.0);
    points
        .iter()
        .map(|p| efficiency(p.rps.0, p.workers, one))
        .collect()
}

/// Scenario 8's table: per worker count and contender, req/s, CPU per
/// request, p99 and efficiency against k × one worker; or, when it was
/// skipped, the note saying why.
pub fn scaling(rows: &[ScalingRow], contenders: &[Kind], skipped: Option<&str>) -> String {
    if let Some(note) = skipped {
        return format!("## Scenario 8: core scaling\n\n{note}.\n\n");
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from("## Scenario 8: core scaling\n\nScenario 1 (HTTP/1.1 keep-alive, 13-byte response, closed loop) with k workers pinned to the first k proxy cores (Shardgate `--workers k`, nginx `worker_processes k`, HAProxy `nbthread k`); the load generator and backend keep their own cores. *Efficiency* is the median req/s with k workers over k × the same contender's median req/s with one (1.00: linear scaling). Medians (min–max) of the interleaved runs.\n\n| workers | cores | contender | req/s | CPU µs/request | p99 µs | efficiency | errors |\n|---:|---|---|---:|---:|---:|---:|---:|\n");
    let points = scaling_points(rows, contenders);
    let steps = scaling_steps(rows);
    for &w in &steps {
        for (k, mine) in &points {
            let eff = efficiencies(mine);
            if let Some((p, e)) = mine.iter().zip(eff).find(|(p, _)| p.workers == w) {
                let _ = writeln!(
                    out,
                    "| {w} | `{}` | {} | {} | {} | {} | {e:.2} | {} |",
                    p.cores,
                    k.name(),
                    cell(p.rps, 0),
                    cell(p.cpu, 1),
                    latency(p.p99),
                    p.errors
                );
            }
        }
    }
    if let Some(&n) = steps.last() {
        let at_n: Vec<String> = points
            .iter()
            .filter_map(|(k, mine)| {
                let e = *efficiencies(mine).last()?;
                (mine.last()?.workers == n).then(|| format!("{} {e:.2}", k.name()))
            })
            .collect();
        let _ = writeln!(out, "\nEfficiency with {n} workers: {}.", at_n.join(", "));
    }
    out.push_str("\n![scenario 8](scenario-8.svg)\n\n");
    out
}

/// Scenario 8's chart: efficiency against worker count per contender, the
/// linear-scaling line at 1.0 dashed; each point's title gives its req/s.
pub fn scaling_svg(rows: &[ScalingRow], contenders: &[Kind]) -> String {
    let (w, left, top, plot_h) = (640.0, 60.0, 40.0, 200.0);
    let h = top + plot_h + 50.0 + 16.0 * contenders.len() as f64;
    let plot_w = w - left - 40.0;
    let points = scaling_points(rows, contenders);
    let steps = scaling_steps(rows);
    let curves: Vec<(Kind, Vec<(&ScalingPoint, f64)>)> = points
        .iter()
        .map(|(k, mine)| (*k, mine.iter().zip(efficiencies(mine)).collect()))
        .collect();
    let max_eff = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|(_, e)| *e))
        .fold(1.2, f64::max);
    let y = |e: f64| top + plot_h - plot_h * e / max_eff;
    // Worker counts are spaced evenly (1, 2, 4, 8, … read as a log scale).
    let x = |workers: usize| {
        let i = steps.iter().position(|&s| s == workers).unwrap_or(0);
        left + plot_w * i as f64 / (steps.len().max(2) - 1) as f64
    };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"10\" y=\"20\" font-size=\"14\">Scenario 8: core scaling, efficiency = req/s(k) / (k × req/s(1))</text>\n<line x1=\"{left}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#999\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{y0}\" stroke=\"#999\"/>\n<line x1=\"{left}\" y1=\"{y1:.1}\" x2=\"{x1}\" y2=\"{y1:.1}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>\n<text x=\"{lx}\" y=\"{y1:.1}\" text-anchor=\"end\">1.0</text>\n<text x=\"{lx}\" y=\"{yh:.1}\" text-anchor=\"end\">0.5</text>\n<text x=\"{lx}\" y=\"{y0}\" text-anchor=\"end\">0</text>\n<text x=\"{x1}\" y=\"{ky}\" text-anchor=\"end\">workers (cores)</text>\n",
        y0 = top + plot_h,
        x1 = left + plot_w,
        y1 = y(1.0),
        yh = y(0.5),
        lx = left - 5.0,
        ky = top + plot_h + 30.0,
    );
    for &s in &steps {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{s}</text>",
            x(s),
            top + plot_h + 15.0
        );
    }
    let colors = ["#2b6cb0", "#38a169", "#d69e2e"];
    for (i, (k, curve)) in curves.iter().enumerate() {
        let color = colors[i % colors.len()];
        let path: Vec<String> = curve
            .iter()
            .map(|(p, e)| format!("{:.1},{:.1}", x(p.workers), y(*e)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            path.join(" ")
        );
        for (p, e) in curve {
            let _ = writeln!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{} with {} worker(s): {:.0} req/s, efficiency {e:.2}</title></circle>",
                x(p.workers),
                y(*e),
                xml(k.name()),
                p.workers,
                p.rps.0
            );
        }
        let last = curve.last().map_or(0.0, |(p, _)| p.rps.0);
        let _ = writeln!(
            out,
            "<rect x=\"{left}\" y=\"{:.0}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{:.0}\" y=\"{:.0}\">{} ({last:.0} req/s with {} workers)</text>",
            top + plot_h + 40.0 + 16.0 * i as f64,
            left + 16.0,
            top + plot_h + 50.0 + 16.0 * i as f64,
            xml(k.name()),
            curve.last().map_or(0, |(p, _)| p.workers)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(stats(&mut [3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(stats(&mut [4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert_eq!(stats(&mut []), (0.0, 0.0, 0.0));
    }

    fn scaling_row(kind: Kind, workers: usize, rps: f64) -> ScalingRow {
        ScalingRow {
            workers,
            cores: format!("0-{}", workers - 1),
            sample: Sample {
                contender: kind,
                load: crate::load::LoadResult {
                    requests: rps as u64,
                    seconds: 1.0,
                    rps,
                    p99_us: 100,
                    ..Default::default()
                },
                cpu_seconds: workers as f64,
                peak_rss_mib: 1.0,
            },
        }
    }

    #[test]
    fn scaling_table_gives_efficiency_against_one_worker() {
        let kinds = [Kind::Shardgate, Kind::Nginx];
        let rows = [
            scaling_row(Kind::Shardgate, 1, 1000.0),
            scaling_row(Kind::Nginx, 1, 800.0),
            scaling_row(Kind::Shardgate, 2, 1900.0),
            scaling_row(Kind::Nginx, 2, 1200.0),
        ];
        let md = scaling(&rows, &kinds, None);
        assert!(
            md.contains("| 2 | `0-1` | shardgate | 1900 (1900–1900) |"),
            "{md}"
        );
        assert!(md.contains("| 0.95 |"), "{md}");
        assert!(md.contains("| 0.75 |"), "{md}");
        assert!(
            md.contains("Efficiency with 2 workers: shardgate 0.95, nginx 0.75."),
            "{md}"
        );
        let svg = scaling_svg(&rows, &kinds);
        assert_eq!(svg.matches("<circle").count(), 4, "{svg}");
    }

    #[test]
    fn skipped_scaling_is_a_note() {
        let md = scaling(&[], &[Kind::Nginx], Some("scenario 8 skipped"));
        assert_eq!(md, "## Scenario 8: core scaling\n\nscenario 8 skipped.\n\n");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
