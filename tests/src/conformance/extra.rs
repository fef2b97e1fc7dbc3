//! Checks that need more than one request: weighted distributions, mirrors (counted at the
//! mirror pods through the echo backend's `/_shardgate/seen`), and the per-backend header
//! loop of HTTPRouteBackendRequestHeaderModification with weights.

use super::cases::{HttpCase, Mirror, Request, Weighted};
use super::objects::{PodPlan, HTTP_PORT};
use super::traffic::{compare, deployment_of, send, Prepared, REQUEST_TIMEOUT};
use crate::client::one_shot;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Requests per weighted batch and how many run at once (Go's sampler).
const BATCH: usize = 500;
const CONCURRENCY: usize = 10;

/// Sends `BATCH` copies of a request, `CONCURRENCY` at a time; each must pass `case` when
/// given (else be a 200). Returns the answering pod of every request.
fn batch(
    case: Option<&HttpCase>,
    template: &Prepared,
    addr: SocketAddr,
    uuid: &str,
) -> Result<Vec<String>, String> {
    let results: Vec<Result<Vec<String>, String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CONCURRENCY)
            .map(|w| {
                s.spawn(move || {
                    let mut pods = Vec::new();
                    for i in 0..BATCH / CONCURRENCY {
                        let mut p = template.clone();
                        // Go's AddEntropy: half the requests carry a random X-Jitter.
                        if (w + i) % 2 == 0 {
                            let jitter = uuid::Uuid::new_v4().as_u128() % 10_000;
                            p.extra.push(("X-Jitter".into(), jitter.to_string()));
                        }
                        let got = send(&p, addr, REQUEST_TIMEOUT)
                            .map_err(|e| format!("{}: {e}", p.describe()))?;
                        match case {
                            Some(c) => compare(c, &p, &got, uuid)
                                .map_err(|e| format!("{}: {e}", p.describe()))?,
                            None if got.status != 200 => {
                                return Err(format!("{}: status {}", p.describe(), got.status))
                            }
                            None => {}
                        }
                        pods.push(got.echo.pod);
                    }
                    Ok(pods)
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
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for pod in &pods {
            *counts.entry(deployment_of(pod).to_owned()).or_default() += 1;
        }
        if let Some(stray) = counts.keys().find(|b| !w.expected_weights.contains_key(*b)) {
            return Err(format!("weighted: answer from unexpected backend {stray}"));
        }
        let share = |b: &str| counts.get(b).copied().unwrap_or(0) as f64 / pods.len() as f64;
        let off = w.expected_weights.iter().find(|(b, want)| {
            (share(b) - **want).abs() > 0.05 || (**want > 0.0) != (share(b) > 0.0)
        });
        let Some(_) = off else { return Ok(()) };
        let got: Vec<String> = w
            .expected_weights
            .keys()
            .map(|b| format!("{b} {:.3}", share(b)))
            .collect();
        let want: Vec<String> = w
            .expected_weights
            .iter()
            .map(|(b, x)| format!("{b} {x}"))
            .collect();
        last = format!(
            "weighted: got [{}], want [{}] ±0.05",
            got.join(", "),
            want.join(", ")
        );
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
