//! Datagram listeners: echo-basic's UDP mode (ECHO.md §5) and a stand-in for the base
//! manifests' CoreDNS (`udproute-simple` accepts any DNS server that answers).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::net::UdpSocket;

use crate::goish::go_json_escape;

/// echo-basic reads datagrams into a buffer of this size; longer ones are cut.
const DATAGRAM_LIMIT: usize = 1024;

/// What a datagram listener answers.
pub enum Answering {
    /// echo-basic's UDP echo: one JSON datagram naming the pod.
    Echo(EchoIdentity),
    /// A DNS server answering every query for itself: `A` questions get the asker's
    /// IPv4 address (as CoreDNS' `whoami` plugin does), other types no records.
    Dns,
}

/// The identity echo-basic reports.
pub struct EchoIdentity {
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub pod: String,
}

/// echo-basic's UDP answer, field order included.
#[derive(Serialize)]
struct EchoAnswer<'a> {
    request: Cow<'a, str>,
    namespace: &'a str,
    ingress: &'a str,
    service: &'a str,
    pod: &'a str,
}

impl EchoIdentity {
    /// The reply to `payload`: compact JSON, no trailing newline (Go's `json.Marshal`, which
    /// also turns invalid UTF-8 into U+FFFD).
    fn reply(&self, payload: &[u8]) -> Vec<u8> {
        let answer = EchoAnswer {
            request: String::from_utf8_lossy(payload),
            namespace: &self.namespace,
            ingress: &self.ingress,
            service: &self.service,
            pod: &self.pod,
        };
        let json = serde_json::to_string(&answer).expect("strings always serialize");
        go_json_escape(json).into_bytes()
    }
}

impl Answering {
    fn reply(&self, payload: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        match self {
            Self::Echo(identity) => Some(identity.reply(payload)),
            Self::Dns => dns_reply(payload, peer.ip()),
        }
    }
}

/// Answers every datagram from the same socket, one at a time.
pub async fn serve(socket: UdpSocket, answering: Arc<Answering>, pod: String, verbose: bool) {
    let mut buf = vec![0u8; DATAGRAM_LIMIT];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                if verbose {
                    eprintln!("shardgate-echo: udp receive on pod {pod}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(reply) = answering.reply(&buf[..n], peer) else {
            continue;
        };
        if let Err(e) = socket.send_to(&reply, peer).await {
            if verbose {
                eprintln!("shardgate-echo: udp reply to {peer} on pod {pod}: {e}");
            }
        }
    }
}

/// A DNS response to `query` (RFC 1035 §4.1), or `None` when it is not a query we can read.
/// The response repeats the first question; `A`/`ANY` questions asked over IPv4 get one `A`
/// record with the asker's address and TTL 0.
fn dns_reply(query: &[u8], peer: IpAddr) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    let qdcount = u16::from_be_bytes([header[4], header[5]]);
    // Responses (QR set) and questionless messages get no answer.
    if flags & 0x8000 != 0 || qdcount == 0 {
        return None;
    }
    // The first question: labels up to the root, then QTYPE and QCLASS.
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        // Compression pointers do not occur in a query's first name.
        if len & 0xc0 != 0 {
            return None;
        }
        at += 1 + len;
    }
    let question = query.get(12..at + 4)?;
    let qtype = u16::from_be_bytes([question[question.len() - 4], question[question.len() - 3]]);
    let answer = match peer {
        IpAddr::V4(ip) if qtype == 1 || qtype == 255 => Some(ip.octets()),
        _ => None,
    };

    let mut out = Vec::with_capacity(12 + question.len() + 16);
    out.extend_from_slice(&header[..2]);
    // QR, the query's opcode and RD, AA; RCODE 0.
    let reply_flags = 0x8000 | (flags & 0x7800) | 0x0400 | (flags & 0x0100);
    out.extend_from_slice(&reply_flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&u16::from(answer.is_some()).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    if let Some(ip) = answer {
        // Name: a pointer to the question's name at offset 12; type A, class IN, TTL 0.
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        out.extend_from_slice(&ip);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_reply_is_echo_basics_json_without_newline() {
        let identity = EchoIdentity {
            namespace: "gateway-conformance-infra".into(),
            ingress: String::new(),
            service: "udp-backend-v1".into(),
            pod: "udp-backend-v1-0-0".into(),
        };
        let reply = identity.reply(b"gateway-api-conformance-udp-weight\n");
        assert_eq!(
            String::from_utf8(reply).expect("utf-8"),
            r#"{"request":"gateway-api-conformance-udp-weight\n","namespace":"gateway-conformance-infra","ingress":"","service":"udp-backend-v1","pod":"udp-backend-v1-0-0"}"#
        );
        // Go's HTML-safe escaping, and U+FFFD for bytes that are not UTF-8.
        let odd = String::from_utf8(identity.reply(b"<\xff>")).expect("utf-8");
        assert!(
            odd.starts_with("{\"request\":\"\\u003c\u{fffd}\\u003e\""),
            "{odd}"
        );
    }

    /// `foo.bar.com. IN A`, id 0x1234, RD set.
    fn query(qtype: u8) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["foo", "bar", "com"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, qtype, 0, 1]);
        q
    }

    #[test]
    fn dns_a_queries_get_the_askers_address() {
        let q = query(1);
        let r = dns_reply(&q, "127.1.2.3".parse().expect("ip")).expect("a reply");
        assert_eq!(&r[..2], &[0x12, 0x34], "same id");
        assert_eq!(&r[2..4], &[0x85, 0x00], "QR, AA, RD; NOERROR");
        assert_eq!(&r[4..12], &[0, 1, 0, 1, 0, 0, 0, 0]);
        assert_eq!(&r[12..q.len()], &q[12..], "question repeated");
        assert_eq!(&r[r.len() - 4..], &[127, 1, 2, 3]);
    }

    #[test]
    fn dns_other_types_get_no_records_and_garbage_no_reply() {
        let q = query(28);
        let r = dns_reply(&q, "127.1.2.3".parse().expect("ip")).expect("a reply");
        assert_eq!(&r[6..8], &[0, 0], "no answers");
        assert_eq!(r.len(), q.len());
        assert_eq!(dns_reply(&q[..15], "127.0.0.1".parse().expect("ip")), None);
        assert_eq!(dns_reply(b"short", "127.0.0.1".parse().expect("ip")), None);
    }
}
