//! UDP probes (CASES-CONVENTIONS.md "udp_cases"; ECHO.md §5): one datagram from a fresh
//! socket and one reply, checked against the echo JSON's `service`/`namespace`; the
//! "N probes in a row from one backend" check of `udproute-multiple-routes-attachment`; and
//! the DNS query of `udproute-simple`.

use super::cases::UdpCase;
use super::probe::{poll, Attempt};
use super::traffic::deployment_of;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// How long a probe waits for its reply. Go waits up to 10 s; on loopback a reply that has
/// not come within 2 s (the Go weighted sampler's deadline) was dropped, and polling again
/// is quicker than waiting.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `payload` to `addr` from a fresh socket and returns the first reply datagram.
pub fn exchange(addr: SocketAddr, payload: &[u8], timeout: Duration) -> Result<Vec<u8>, Attempt> {
    let socket = UdpSocket::bind(("0.0.0.0", 0)).map_err(Attempt::retry)?;
    // Connected, so an ICMP "port unreachable" surfaces as an error instead of a timeout.
    socket
        .connect(addr)
        .and_then(|()| socket.set_read_timeout(Some(timeout)))
        .map_err(|e| Attempt::Retry(format!("udp {addr}: {e}")))?;
    socket
        .send(payload)
        .map_err(|e| Attempt::Retry(format!("udp send to {addr}: {e}")))?;
    let mut buf = vec![0u8; 65_536];
    let n = socket
        .recv(&mut buf)
        .map_err(|e| Attempt::Retry(format!("no udp reply from {addr}: {e}")))?;
    buf.truncate(n);
    Ok(buf)
}

/// The echo JSON of a reply.
fn echo_json(reply: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(reply).map_err(|e| {
        format!(
            "reply {:?} is not the echo JSON: {e}",
            String::from_utf8_lossy(reply)
        )
    })
}

/// One probe's pod (the weighted sampler's view of a reply).
pub fn probe_pod(addr: SocketAddr, payload: &[u8], timeout: Duration) -> Result<String, Attempt> {
    let json = echo_json(&exchange(addr, payload, timeout)?).map_err(Attempt::Fatal)?;
    Ok(super::objects::str_at(&json, &["pod"]).to_owned())
}

/// `udp.ExpectEchoResponse…`: any reply when neither is set, else the echo JSON with this
/// service and namespace.
fn check_echo(reply: &[u8], service: &str, namespace: &str) -> Result<(), String> {
    if service.is_empty() && namespace.is_empty() {
        return Ok(());
    }
    let json = echo_json(reply)?;
    for (field, want) in [("service", service), ("namespace", namespace)] {
        let got = super::objects::str_at(&json, &[field]);
        if !want.is_empty() && got != want {
            return Err(format!(
                "reply from {field} {got:?} (pod {:?}), want {want:?}",
                super::objects::str_at(&json, &["pod"])
            ));
        }
    }
    Ok(())
}

/// `N probes in a row all answered by a pod of BACKEND` in a case's `expect`.
fn parse_run_of_probes(expect: &str) -> Option<(usize, &str)> {
    let rest = expect.split_once(" probes in a row all answered by a pod of ");
    let (n, tail) = rest?;
    let backend = tail.split_whitespace().next()?;
    Some((n.trim().parse().ok()?, backend))
}

/// A `udp_cases[]` entry against `addr`, eventually passing within `budget`.
pub fn run_udp_case(case: &UdpCase, addr: SocketAddr, budget: Duration) -> Result<(), String> {
    if case.send.starts_with("DNS query") {
        return poll(budget, |_| dns_probe(addr));
    }
    let payload = case.send.as_bytes();
    if let Some((n, backend)) = case.expect.as_deref().and_then(parse_run_of_probes) {
        // Go: a probe without reply restarts the round; a reply from another backend
        // fails the test at once.
        return poll(budget, |_| {
            for _ in 0..n {
                let pod = probe_pod(addr, payload, REPLY_TIMEOUT)?;
                if deployment_of(&pod) != backend {
                    return Err(Attempt::Fatal(format!(
                        "answered by pod {pod:?}, want only pods of {backend}"
                    )));
                }
            }
            Ok(())
        });
    }
    poll(budget, |_| {
        let reply = exchange(addr, payload, REPLY_TIMEOUT)?;
        // Go polls until the expected backend answers.
        check_echo(&reply, &case.expect_service, &case.namespace).map_err(Attempt::Retry)
    })
}

/// The name `udproute-simple` asks for.
const DNS_NAME: &str = "foo.bar.com.";

/// One `A` query for [`DNS_NAME`]; passes on any well-formed response with its id.
fn dns_probe(addr: SocketAddr) -> Result<(), Attempt> {
    let id = (uuid::Uuid::new_v4().as_u128() & 0xffff) as u16;
    let reply = exchange(addr, &dns_query(id, DNS_NAME), REPLY_TIMEOUT)?;
    check_dns_response(&reply, id).map_err(Attempt::Retry)
}

/// A recursive `IN A` query (RFC 1035 §4.1), as miekg/dns' `SetQuestion` writes it.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// A response with our id whose sections all parse (`dns.Exchange` unpacks the whole
/// message; the rcode and the records are not looked at).
fn check_dns_response(msg: &[u8], id: u16) -> Result<(), String> {
    let header = msg.get(..12).ok_or("DNS reply shorter than its header")?;
    let field = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    if field(0) != id {
        return Err(format!("DNS reply id {:#06x}, want {id:#06x}", field(0)));
    }
    if field(2) & 0x8000 == 0 {
        return Err("DNS reply without the QR bit".into());
    }
    let bad = || "malformed DNS reply".to_owned();
    let mut at = 12;
    for _ in 0..field(4) {
        at = skip_name(msg, at).ok_or_else(bad)? + 4;
    }
    let records = usize::from(field(6)) + usize::from(field(8)) + usize::from(field(10));
    for _ in 0..records {
        at = skip_name(msg, at).ok_or_else(bad)?;
        let fixed = msg.get(at..at + 10).ok_or_else(bad)?;
        at += 10 + usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    }
    if at > msg.len() {
        return Err(bad());
    }
    Ok(())
}

/// The offset after the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => {
                msg.get(at + 1)?;
                return Some(at + 2);
            }
            l if l & 0xc0 == 0 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_replies_match_on_service_and_namespace_when_given() {
        let reply = br#"{"request":"x","namespace":"gateway-conformance-infra","ingress":"","service":"udp-echo-by-port","pod":"udp-echo-by-port-0-0"}"#;
        assert_eq!(check_echo(reply, "", ""), Ok(()));
        assert_eq!(check_echo(b"not json", "", ""), Ok(()), "any reply");
        assert_eq!(
            check_echo(reply, "udp-echo-by-port", "gateway-conformance-infra"),
            Ok(())
        );
        assert!(check_echo(reply, "udp-echo-by-section", "").is_err());
        assert!(check_echo(reply, "", "gateway-conformance-web-backend").is_err());
        assert!(check_echo(b"not json", "udp-echo-by-port", "").is_err());
    }

    #[test]
    fn runs_of_probes_are_read_from_the_expectation() {
        assert_eq!(
            parse_run_of_probes("20 probes in a row all answered by a pod of udp-attach-backend-1 (pod name minus its last two '-' parts)"),
            Some((20, "udp-attach-backend-1"))
        );
        assert_eq!(parse_run_of_probes("any reply datagram"), None);
    }

    #[test]
    fn dns_responses_must_carry_our_id_and_parse() {
        let q = dns_query(0xbeef, DNS_NAME);
        assert_eq!(&q[12..17], b"\x03foo\x03");
        assert!(
            check_dns_response(&q, 0xbeef).is_err(),
            "a query is no response"
        );
        // The query turned into a response with one compressed A record.
        let mut r = q;
        r[2] |= 0x80;
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 127, 0, 0, 1]);
        assert_eq!(check_dns_response(&r, 0xbeef), Ok(()));
        assert!(check_dns_response(&r, 0xbeee).is_err());
        assert!(check_dns_response(&r[..r.len() - 2], 0xbeef).is_err());
    }
}
