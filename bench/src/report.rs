//! The report: per scenario and contender the median (min–max) of req/s,
//! proxy CPU per request, latency percentiles, peak RSS and errors, and
//! Shardgate's ratios against each peer; one SVG bar chart per scenario.

use crate::contenders::Kind;
use crate::{Sample, Scenario};
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
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {kernel}")
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
    proxy_cores: &str,
    runs: usize,
    seconds: u64,
    machine: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Shardgate benchmark report\n");
    let _ = writeln!(
        out,
        "{} on {machine}. Proxies pinned to cores `{proxy_cores}`; medians (min–max) of {runs} interleaved run(s) of {seconds} s each. CPU per request is the proxy's user + system time from /proc divided by the requests it served.\n",
        timestamp()
    );
    for (s, samples) in results {
        let _ = writeln!(out, "## Scenario {}: {}\n", s.id, s.title);
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
        let _ = writeln!(out, "\n![scenario {}](scenario-{}.svg)\n", s.id, s.id);
    }
    out
}

/// Scenario 6's table: per route-table size, translation + publication
/// time, req/s, CPU per request (and its ratio to the smallest table),
/// peak RSS.
pub fn route_scale(rows: &[crate::ScaleRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from("## Scenario 6: route-table scale (Shardgate)\n\nOne HTTPRoute per hostname; scenario 1's keep-alive load on the last route's hostname; one run each.\n\n| routes | translation + publication ms | req/s | CPU µs/request | × smallest | peak RSS MiB | errors |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    let base = rows[0].sample.cpu_us_per_request();
    for r in rows {
        let cpu = r.sample.cpu_us_per_request();
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.0} | {:.1} | {:.2} | {:.1} | {} |",
            r.routes,
            r.publication_ms,
            r.sample.load.rps,
            cpu,
            cpu / base.max(f64::MIN_POSITIVE),
            r.sample.peak_rss_mib,
            r.sample.load.errors
        );
    }
    out.push('\n');
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
        s.id,
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
}
