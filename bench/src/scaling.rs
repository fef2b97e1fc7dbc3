//! Scenario 8, core scaling: scenario 1 (HTTP/1.1 keep-alive, 13-byte
//! response, closed loop) with the proxy given 1, 2, 4, … k workers pinned
//! to the first k cores of `--proxy-cores`, up to all N of them; reported as
//! efficiency against k × the contender's own one-core throughput.

use crate::contenders::Kind;
use crate::cores::CoreList;
use crate::{measure_run, Env, Sample, SCENARIOS};
use anyhow::Context;

/// The worker counts scenario 8 runs with `n` proxy cores: the powers of
/// two up to `n`, then `n` itself if it is not one.
pub fn worker_steps(n: usize) -> Vec<usize> {
    let mut steps: Vec<usize> = std::iter::successors(Some(1usize), |k| k.checked_mul(2))
        .take_while(|&k| k <= n)
        .collect();
    if steps.last().is_some_and(|&k| k != n) {
        steps.push(n);
    }
    steps
}

/// Scaling efficiency: the throughput with `k` workers over `k` times the
/// throughput with one (1.0 is linear; 0 when there is no one-worker
/// figure to compare with).
pub fn efficiency(rps_k: f64, k: usize, rps_1: f64) -> f64 {
    let ideal = k as f64 * rps_1;
    if ideal > 0.0 {
        rps_k / ideal
    } else {
        0.0
    }
}

/// One measured run of one contender with `workers` workers.
pub struct ScalingRow {
    /// Workers (and cores: the first `workers` of `--proxy-cores`).
    pub workers: usize,
    /// The taskset list the proxy ran on.
    pub cores: String,
    /// Scenario 1's load.
    pub sample: Sample,
}

/// Why scenario 8 cannot run on `proxy` (on a machine with
/// `machine_cores` cores), if it cannot: one core has nothing to scale to.
pub fn skip_note(proxy: &CoreList, machine_cores: usize) -> Option<String> {
    let n = proxy.len();
    (n < 2).then(|| {
        format!(
            "scenario 8 (core scaling) skipped: it needs --proxy-cores with at least 2 cores; this run has `{proxy}` ({n} core), this machine has {machine_cores} core(s)"
        )
    })
}

/// Scenario 8: for each worker count, runs alternating contenders (A B C A
/// B C …), `--runs` times, each proxy on the first k proxy cores.
pub fn run(env: &Env<'_>, contenders: &[Kind]) -> anyhow::Result<Vec<ScalingRow>> {
    let scenario = SCENARIOS
        .iter()
        .find(|s| s.tag == "1")
        .copied()
        .context("scenario 1 is not defined")?;
    let mut rows = Vec::new();
    for k in worker_steps(env.proxy.len()) {
        let env_k = env.with_proxy_cores(env.proxy.first(k));
        for run in 0..env.a.runs {
            for &kind in contenders {
                let label = format!("8 k={k} cores {}", env_k.proxy);
                let sample = measure_run(&env_k, kind, scenario, &label, run)?;
                rows.push(ScalingRow {
                    workers: k,
                    cores: env_k.proxy.to_string(),
                    sample,
                });
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_powers_of_two_then_n() {
        assert_eq!(worker_steps(1), [1]);
        assert_eq!(worker_steps(2), [1, 2]);
        assert_eq!(worker_steps(3), [1, 2, 3]);
        assert_eq!(worker_steps(8), [1, 2, 4, 8]);
        assert_eq!(worker_steps(12), [1, 2, 4, 8, 12]);
        assert_eq!(worker_steps(16), [1, 2, 4, 8, 16]);
    }

    #[test]
    fn efficiency_is_throughput_over_k_times_one_core() {
        assert_eq!(efficiency(100.0, 1, 100.0), 1.0);
        assert_eq!(efficiency(150.0, 2, 100.0), 0.75);
        assert_eq!(efficiency(800.0, 8, 100.0), 1.0);
        assert_eq!(efficiency(100.0, 4, 0.0), 0.0);
    }

    #[test]
    fn one_proxy_core_is_skipped_with_a_note() {
        let one: CoreList = "1".parse().expect("a valid core list");
        let note = skip_note(&one, 2).expect("a note for one core");
        assert!(note.contains("at least 2 cores"), "{note}");
        assert!(note.contains("this machine has 2 core(s)"), "{note}");
        let two: CoreList = "0-1".parse().expect("a valid core list");
        assert_eq!(skip_note(&two, 2), None);
    }
}
