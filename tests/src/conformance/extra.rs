//! Checks that need more than one request: weighted distributions (HTTP, gRPC, TCP, UDP),
//! mirrors (counted at the mirror pods through the echo backend's `/_shardgate/seen`), and the
//! per-backend header loop of HTTPRouteBackendRequestHeaderModification with weights.

use super::cases::{HttpCase, Mirror, Request, Weighted};
use super::objects::{PodPlan, HTTP_PORT};
use super::probe::{Attempt, IO_TIMEOUT};
use super::tcp_echo::{Exchange, Expect};
use super::traffic::{compare, deployment_of, send, Prepared, REQUEST_TIMEOUT};
use crate::client::one_shot;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Requests per weighted batch and how many run at once (Go's sampler).
const BATCH: usize = 500;
const CONCURRENCY: usize = 10;

/// Runs `probe(k)` for k in 0..`BATCH`, `CONCURRENCY` at a time (Go's sampler); returns
/// the pod each probe reports, or the first error.
fn sample(probe: impl Fn(usize) -> Result<String, String> + Sync) -> Result<Vec<String>, String> {
    let per_worker = BATCH / CONCURRENCY;
    let probe = &probe;
    let results: Vec<Result<Vec<String>, String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CONCURRENCY)
            .map(|w| {
                s.spawn(move || {
                    (0..per_worker)
                        .map(|i| probe(w * per_worker + i))
                        .collect::<Result<Vec<String>, String>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("sender thread panicked".into()))
            })
            .collect()
    });
    let mut pods = Vec::with_capacity(BATCH);
    for r in results {
        pods.extend(r?);
    }
    Ok(pods)
}

/// Sends `BATCH` copies of a request, `CONCURRENCY` at a time; each must pass `case` when
/// given (else be a 200). Returns the answering pod of every request.
fn batch(
    case: Option<&HttpCase>,
    template: &Prepared,
    addr: SocketAddr,
    uuid: &str,
) -> Result<Vec<String>, String> {
    sample(|k| {
        let mut p = template.clone();
        // Go's AddEntropy: half the requests carry a random X-Jitter.
        if k % 2 == 0 {
            let jitter = uuid::Uuid::new_v4().as_u128() % 10_000;
            p.extra.push(("X-Jitter".into(), jitter.to_string()));
        }
        let got = send(&p, addr, REQUEST_TIMEOUT).map_err(|e| format!("{}: {e}", p.describe()))?;
        match case {
            Some(c) => compare(c, &p, &got, uuid).map_err(|e| format!("{}: {e}", p.describe()))?,
            None if got.status != 200 => {
                return Err(format!("{}: status {}", p.describe(), got.status))
            }
            None => {}
        }
        Ok(got.echo.pod)
    })
}

/// Why a batch's shares do not pass.
#[derive(Debug, PartialEq)]
enum SharesError {
    /// A reply from a backend that is not listed: no later batch can mend that.
    Stray(String),
    /// Shares off, or traffic on a zero-weight backend: the next batch may pass.
    Off(String),
}

/// Go's verdict on one batch: every pod maps to a listed backend, exactly the backends with
/// weight > 0 get traffic, and each share is within ±0.05 of its weight.
fn check_shares(expected: &BTreeMap<String, f64>, pods: &[String]) -> Result<(), SharesError> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for pod in pods {
        *counts.entry(deployment_of(pod)).or_default() += 1;
    }
    if let Some(stray) = counts.keys().find(|b| !expected.contains_key(**b)) {
        return Err(SharesError::Stray(format!(
            "weighted: answer from unexpected backend {stray}"
        )));
    }
    let share = |b: &str| counts.get(b).copied().unwrap_or(0) as f64 / pods.len().max(1) as f64;
    let off = expected
        .iter()
        .any(|(b, want)| (share(b) - *want).abs() > 0.05 || (*want > 0.0) != (share(b) > 0.0));
    if !off {
        return Ok(());
    }
    let got: Vec<String> = expected
        .keys()
        .map(|b| format!("{b} {:.3}", share(b)))
        .collect();
    let want: Vec<String> = expected.iter().map(|(b, x)| format!("{b} {x}")).collect();
    Err(SharesError::Off(format!(
        "weighted: got [{}], want [{}] ±0.05",
        got.join(", "),
        want.join(", ")
    )))
}

/// `weighted_distribution` for HTTP: shares within ±0.05 of the weights and traffic on
/// exactly the backends with weight > 0; up to 10 batches, the first good one passes.
pub fn weighted(w: &Weighted, case: Option<&HttpCase>, addr: SocketAddr) -> Result<(), String> {
    if w.protocol.is_some() {
        return Err(format!(
            "runner cannot check: {} weighted distributions",
            w.protocol.as_deref().unwrap_or_default()
        ));
    }
    let request: Request = serde_json::from_value(w.request.clone())
        .map_err(|e| format!("weighted_distribution.request: {e}"))?;
    let mut last = String::new();
    for _ in 0..10 {
        let template = Prepared::new(&request, addr, "", &BTreeMap::new());
        let pods = batch(case, &template, addr, "")?;
        match check_shares(&w.expected_weights, &pods) {
            Ok(()) => return Ok(()),
            Err(SharesError::Stray(e)) => return Err(e),
            Err(SharesError::Off(e)) => last = e,
        }
    }
    Err(last)
}

/// The datagram of the Go UDP weight sampler.
const UDP_WEIGHT_PAYLOAD: &[u8] = b"gateway-api-conformance-udp-weight\n";

/// `weighted_distribution` for TCP (a fresh connection per sample: welcome line, `TEST`,
/// the JSON's pod, 10 s deadline), UDP (one datagram from a fresh socket, 2 s deadline) and
/// gRPC (`Echo` over a fresh h2c connection, [`super::grpc::probe_pod`]): up to 10
/// batches, the first good one passes. A failed sample fails its batch only.
pub fn weighted_l4(w: &Weighted, addr: SocketAddr) -> Result<(), String> {
    let tcp = match w.protocol.as_deref() {
        Some("tcp") => true,
        Some("udp") => false,
        Some("grpc") => {
            return weighted_batches(w, |k| super::grpc::probe_pod(addr, k));
        }
        other => {
            return Err(format!(
                "runner cannot check: {} weighted distributions",
                other.unwrap_or("http")
            ))
        }
    };
    let expect = Expect {
        exchange: Exchange::TestOnly,
        is_tls: false,
        namespace: "",
        backend: "",
        forbidden: None,
        observed_sni: None,
    };
    let probe = |_: usize| {
        let pod = if tcp {
            super::tcp_echo::probe(addr, &expect, IO_TIMEOUT).map(Option::unwrap_or_default)
        } else {
            super::udp_echo::probe_pod(addr, UDP_WEIGHT_PAYLOAD, super::udp_echo::REPLY_TIMEOUT)
        };
        pod.map_err(Attempt::into_reason)
    };
    weighted_batches(w, probe)
}

/// Up to 10 batches of `probe`, the first whose shares pass wins.
fn weighted_batches(
    w: &Weighted,
    probe: impl Fn(usize) -> Result<String, String> + Sync,
) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..10 {
        match sample(&probe).map(|pods| check_shares(&w.expected_weights, &pods)) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(SharesError::Stray(e))) => return Err(e),
            Ok(Err(SharesError::Off(e))) | Err(e) => last = e,
        }
    }
    Err(last)
}

/// How many requests with exactly this target the pods of `mirror` received.
pub fn seen_count(pods: &[PodPlan], mirror: &Mirror, target: &str) -> Result<u64, String> {
    let mut total = 0;
    let mut found = false;
    for pod in pods
        .iter()
        .filter(|p| p.deployment == mirror.backend && p.namespace == mirror.namespace)
    {
        found = true;
        let addr = SocketAddr::from((pod.ip, HTTP_PORT));
        let path = format!("/_shardgate/seen?uri={}", percent_encode(target));
        let resp = one_shot(addr, "echo", &path).map_err(|e| format!("echo {}: {e}", pod.name))?;
        let json: serde_json::Value = serde_json::from_slice(&resp.body)
            .map_err(|e| format!("echo {} /_shardgate/seen: {e}", pod.name))?;
        total += json["count"].as_u64().unwrap_or(0);
    }
    if found {
        Ok(total)
    } else {
        Err(format!(
            "runner cannot check: no pods of mirror backend {}/{}",
            mirror.namespace, mirror.backend
        ))
    }
}

/// Every listed mirror must receive `target` within 10 s (Go's RequestTimeout).
pub fn expect_mirrored(pods: &[PodPlan], mirrors: &[Mirror], target: &str) -> Result<(), String> {
    for m in mirrors.iter().filter(|m| m.percent.is_none()) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = seen_count(pods, m, target)?;
            if n > 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "mirror {}/{} never received {target}",
                    m.namespace, m.backend
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// HTTPRouteRequestPercentageMirror: 500 requests tagged with a fresh request id must
/// reach the mirror about `percent`% of the time (expected ± 3σ); up to 5 batches.
pub fn percentage_mirror(
    case: &HttpCase,
    pods: &[PodPlan],
    addr: SocketAddr,
) -> Result<(), String> {
    let Some(mirror) = case.mirrored_to.iter().find(|m| m.percent.is_some()) else {
        return Ok(());
    };
    let p = mirror.percent.unwrap_or_default() / 100.0;
    let n = BATCH as f64;
    let (expected, spread) = (n * p, 3.0 * (n * p * (1.0 - p)).sqrt());
    let mut last = String::new();
    for _ in 0..5 {
        let uuid = uuid::Uuid::new_v4().to_string();
        let mut c = case.clone();
        let tag = format!("gateway-api-conformance-request-id={uuid}");
        let join = |path: &str| {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}{tag}")
        };
        c.request.path = join(&c.request.path);
        if let Some(e) = c.expected_request.as_mut() {
            e.path = join(&e.path);
        }
        let template = Prepared::new(&c.request, addr, &uuid, &c.backend_set_response_headers);
        batch(Some(&c), &template, addr, &uuid)?;
        // Mirrors are fire-and-forget: read until the count settles (bounded).
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut count = seen_count(pods, mirror, &template.path)?;
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let again = seen_count(pods, mirror, &template.path)?;
            if again == count || Instant::now() >= deadline {
                count = again;
                break;
            }
            count = again;
        }
        if (count as f64 - expected).abs() <= spread {
            return Ok(());
        }
        last = format!(
            "mirror {} got {count} of {BATCH} requests, want {expected:.0} ± {spread:.1} ({}%)",
            mirror.backend,
            mirror.percent.unwrap_or_default()
        );
    }
    Err(last)
}

/// HTTPRouteBackendRequestHeaderModification with weights: 100 requests, each backend's own
/// filter applied only to its requests (one `Backend` header naming the answering pod).
pub fn backend_header_loop(case: &HttpCase, addr: SocketAddr) -> Result<(), String> {
    for i in 0..100 {
        let p = Prepared::new(&case.request, addr, "", &case.backend_set_response_headers);
        let got = send(&p, addr, REQUEST_TIMEOUT).map_err(|e| format!("request {i}: {e}"))?;
        let values = got.echo.headers.get("backend").cloned().unwrap_or_default();
        match values.as_slice() {
            [one] if got.echo.pod.starts_with(one.as_str()) => {}
            _ => {
                return Err(format!(
                    "request {i}: pod {:?} got Backend headers {values:?}, want exactly one naming its backend",
                    got.echo.pod
                ))
            }
        }
    }
    Ok(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(b, w)| ((*b).to_owned(), *w)).collect()
    }

    fn pods(counts: &[(&str, usize)]) -> Vec<String> {
        counts
            .iter()
            .flat_map(|(b, n)| (0..*n).map(move |i| format!("{b}-0-{}", i % 2)))
            .collect()
    }

    #[test]
    fn shares_within_five_points_on_exactly_the_weighted_backends_pass() {
        let w = weights(&[("v1", 0.7), ("v2", 0.3), ("v3", 0.0)]);
        assert_eq!(check_shares(&w, &pods(&[("v1", 360), ("v2", 140)])), Ok(()));
        assert!(matches!(
            check_shares(&w, &pods(&[("v1", 300), ("v2", 200)])),
            Err(SharesError::Off(_))
        ));
        // A zero-weight backend that answers at all is off, however small its share.
        assert!(matches!(
            check_shares(&w, &pods(&[("v1", 349), ("v2", 150), ("v3", 1)])),
            Err(SharesError::Off(_))
        ));
        assert!(matches!(
            check_shares(&w, &pods(&[("v1", 350), ("tcp-backend", 150)])),
            Err(SharesError::Stray(e)) if e.contains("tcp-backend")
        ));
    }
}
