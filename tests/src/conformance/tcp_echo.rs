//! The TCP echo protocol as the Go helpers speak it (`tcp.MakeTCPRequest…`; ECHO.md §4,
//! CASES-CONVENTIONS.md "tcp_cases" and "tls_cases"), over a plain connection or one
//! through TLS: read the welcome line, `PING` → `PONG`, `IS_TLS` → `true`/`false`, `TEST` → the
//! JSON line naming the pod. Connection and read errors are worth another attempt; a line
//! that was read and is wrong fails the case.

use super::cases::{TcpCase, TlsCase};
use super::probe::{poll, Attempt};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The first line of every connection.
pub const WELCOME: &str = "Gateway API Test TCP Server\n";

/// How much of the protocol a case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// Welcome, `PING`, `IS_TLS`, `TEST`.
    Full,
    /// Welcome, then `TEST`.
    TestOnly,
    /// The connection is accepted; nothing is read.
    ConnectOnly,
}

impl Exchange {
    /// The exchange a `tcp_cases[].send` sentence describes.
    pub fn from_send(send: &str) -> Option<Self> {
        if send.starts_with("PING, IS_TLS, TEST") {
            Some(Self::Full)
        } else if send.starts_with("TEST") {
            Some(Self::TestOnly)
        } else if send.contains("connect only") {
            Some(Self::ConnectOnly)
        } else {
            None
        }
    }
}

/// What the answers of one connection must show.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub exchange: Exchange,
    /// The `IS_TLS` answer.
    pub is_tls: bool,
    /// The JSON `namespace`; empty: not checked.
    pub namespace: &'a str,
    /// The pod must start with `<backend>-`; empty: any non-empty pod.
    pub backend: &'a str,
    /// The pod must not start with `<forbidden>-`.
    pub forbidden: Option<&'a str>,
    /// The JSON `tls.serverName` (the backend terminated TLS itself).
    pub observed_sni: Option<&'a str>,
}

/// Runs the exchange on an open connection; returns the pod of the `TEST` answer (`None`
/// for [`Exchange::ConnectOnly`]).
pub fn converse<S: Read + Write>(
    stream: S,
    expect: &Expect<'_>,
) -> Result<Option<String>, Attempt> {
    if expect.exchange == Exchange::ConnectOnly {
        return Ok(None);
    }
    let mut stream = BufReader::new(stream);
    let welcome = read_line(&mut stream)?;
    if welcome != WELCOME {
        return Err(Attempt::Fatal(format!(
            "welcome line {welcome:?}, want {WELCOME:?}"
        )));
    }
    if expect.exchange == Exchange::Full {
        let is_tls = if expect.is_tls { "true\n" } else { "false\n" };
        for (command, want) in [("PING\n", "PONG\n"), ("IS_TLS\n", is_tls)] {
            let got = ask(&mut stream, command)?;
            if got != want {
                return Err(Attempt::Fatal(format!(
                    "{} answered {got:?}, want {want:?}",
                    command.trim_end()
                )));
            }
        }
    }
    let answer = ask(&mut stream, "TEST\n")?;
    check_test_answer(&answer, expect)
        .map(Some)
        .map_err(Attempt::Fatal)
}

/// Sends one command line and reads the answer line.
fn ask<S: Read + Write>(stream: &mut BufReader<S>, command: &str) -> Result<String, Attempt> {
    stream
        .get_mut()
        .write_all(command.as_bytes())
        .and_then(|()| stream.get_mut().flush())
        .map_err(|e| Attempt::Retry(format!("sending {}: {e}", command.trim_end())))?;
    read_line(stream)
}

/// One line with its `\n`; end of stream before it is a read error.
fn read_line<S: Read>(stream: &mut BufReader<S>) -> Result<String, Attempt> {
    let mut line = Vec::new();
    match stream.read_until(b'\n', &mut line) {
        Ok(_) if line.ends_with(b"\n") => {}
        Ok(_) => {
            return Err(Attempt::Retry(format!(
                "connection closed after {:?}",
                String::from_utf8_lossy(&line)
            )))
        }
        Err(e) => return Err(Attempt::Retry(format!("read: {e}"))),
    }
    String::from_utf8(line).map_err(|e| Attempt::Fatal(format!("answer is not UTF-8: {e}")))
}

/// Checks the `TEST` JSON line; returns its pod.
fn check_test_answer(line: &str, expect: &Expect<'_>) -> Result<String, String> {
    let json: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("TEST answer {line:?}: {e}"))?;
    let text = |path: &[&str]| super::objects::str_at(&json, path).to_owned();
    let (pod, namespace) = (text(&["pod"]), text(&["namespace"]));
    if !expect.namespace.is_empty() && namespace != expect.namespace {
        return Err(format!(
            "answered from namespace {namespace:?} (pod {pod:?}), want {:?}",
            expect.namespace
        ));
    }
    if pod.is_empty() {
        return Err(format!("TEST answer without a pod: {}", line.trim_end()));
    }
    if !expect.backend.is_empty() && !pod.starts_with(&format!("{}-", expect.backend)) {
        return Err(format!(
            "answered by pod {pod:?}, want a pod of {}",
            expect.backend
        ));
    }
    if let Some(bad) = expect.forbidden {
        if pod.starts_with(&format!("{bad}-")) {
            return Err(format!(
                "answered by pod {pod:?} of {bad}, which must not be reached"
            ));
        }
    }
    if let Some(sni) = expect.observed_sni {
        let seen = text(&["tls", "serverName"]);
        if seen != sni {
            return Err(format!(
                "backend saw SNI {seen:?}, want {sni:?} (pod {pod:?})"
            ));
        }
    }
    Ok(pod)
}

/// A plain connection with read and write timeouts.
fn dial(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Attempt> {
    let sock = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| Attempt::Retry(format!("connect {addr}: {e}")))?;
    sock.set_read_timeout(Some(timeout))
        .and_then(|()| sock.set_write_timeout(Some(timeout)))
        .map_err(Attempt::retry)?;
    Ok(sock)
}

/// One plain connection running `expect`; returns the pod, if asked.
pub fn probe(
    addr: SocketAddr,
    expect: &Expect<'_>,
    timeout: Duration,
) -> Result<Option<String>, Attempt> {
    converse(dial(addr, timeout)?, expect)
}

/// A `tcp_cases[]` entry against `addr`: eventually passes within `budget`, or with
/// `repeat` N, N fresh connections that must each pass at the first try.
pub fn run_tcp_case(case: &TcpCase, addr: SocketAddr, budget: Duration) -> Result<(), String> {
    let exchange = Exchange::from_send(&case.send)
        .ok_or_else(|| format!("runner cannot check: tcp case sending {:?}", case.send))?;
    let expect = Expect {
        exchange,
        is_tls: case.backend_is_tls,
        namespace: &case.namespace,
        backend: &case.expect_backend,
        forbidden: case.must_not_reach_backend.as_deref(),
        observed_sni: None,
    };
    match case.repeat {
        Some(n) if n > 1 => {
            let timeout = case
                .per_request_timeout_s
                .map_or(super::probe::IO_TIMEOUT, Duration::from_secs);
            for i in 0..n {
                probe(addr, &expect, timeout)
                    .map_err(|e| format!("connection {} of {n}: {}", i + 1, e.into_reason()))?;
            }
            Ok(())
        }
        _ => poll(budget, |timeout| probe(addr, &expect, timeout)).map(drop),
    }
}

/// A `tls_cases[]` entry expecting the TCP echo protocol over TLS.
pub fn run_tls_echo_case(case: &TlsCase, addr: SocketAddr, budget: Duration) -> Result<(), String> {
    let anchor = case
        .trust_anchor
        .as_deref()
        .ok_or("tcp_echo_over_tls case without a trust_anchor")?;
    let expect = Expect {
        exchange: Exchange::Full,
        is_tls: case.backend_is_tls,
        namespace: &case.namespace,
        backend: &case.backend,
        forbidden: None,
        observed_sni: case.backend_observed_sni.as_deref(),
    };
    poll(budget, |timeout| {
        let tls = super::tls::connect(addr, &case.sni, anchor, timeout)?;
        converse(tls, &expect)
    })
    .map(drop)
    .map_err(|e| format!("SNI {}: {e}", case.sni))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(exchange: Exchange) -> Expect<'static> {
        Expect {
            exchange,
            is_tls: false,
            namespace: "gateway-conformance-infra",
            backend: "tcp-backend",
            forbidden: Some("tcp-backend-2"),
            observed_sni: None,
        }
    }

    const ANSWER: &str = "{\"namespace\":\"gateway-conformance-infra\",\"pod\":\"tcp-backend-0-1\",\"isTLS\":false}\n";

    /// A scripted server: sends `script` after each line it reads (the first right away).
    fn scripted(script: &'static [&'static str]) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let Ok((sock, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(sock.try_clone().expect("clone"));
            let mut sock = sock;
            for (i, out) in script.iter().enumerate() {
                if i > 0 {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                }
                let _ = sock.write_all(out.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn sends_can_be_read_as_exchanges() {
        assert_eq!(
            Exchange::from_send("PING, IS_TLS, TEST (tcp echo protocol)"),
            Some(Exchange::Full)
        );
        assert_eq!(
            Exchange::from_send("TEST only (welcome line, then TEST -> JSON pod)"),
            Some(Exchange::TestOnly)
        );
        assert_eq!(
            Exchange::from_send("TEST (after welcome line)"),
            Some(Exchange::TestOnly)
        );
        assert_eq!(
            Exchange::from_send("(connect only)"),
            Some(Exchange::ConnectOnly)
        );
        assert_eq!(Exchange::from_send("HELLO"), None);
    }

    #[test]
    fn a_full_exchange_returns_the_answering_pod() {
        let addr = scripted(&[WELCOME, "PONG\n", "false\n", ANSWER]);
        let got = probe(addr, &expect(Exchange::Full), Duration::from_secs(5));
        assert_eq!(got, Ok(Some("tcp-backend-0-1".into())));
    }

    #[test]
    fn a_wrong_line_is_fatal_and_a_closed_connection_retryable() {
        let addr = scripted(&[WELCOME, "PONG\n", "true\n"]);
        let got = probe(addr, &expect(Exchange::Full), Duration::from_secs(5));
        assert!(
            matches!(&got, Err(Attempt::Fatal(e)) if e.contains("IS_TLS")),
            "{got:?}"
        );

        let addr = scripted(&[WELCOME]);
        let got = probe(addr, &expect(Exchange::TestOnly), Duration::from_secs(5));
        assert!(matches!(got, Err(Attempt::Retry(_))), "{got:?}");
    }

    #[test]
    fn test_answers_are_checked_for_namespace_pod_and_sni() {
        let e = expect(Exchange::TestOnly);
        assert_eq!(check_test_answer(ANSWER, &e), Ok("tcp-backend-0-1".into()));
        let other_ns = ANSWER.replace("-infra", "-web-backend");
        assert!(check_test_answer(&other_ns, &e).is_err());
        // `<backend>-` is the prefix: tcp-backend-2's pods are not tcp-backend's.
        let forbidden = ANSWER.replace("tcp-backend-0-1", "tcp-backend-2-0-0");
        let err = check_test_answer(&forbidden, &e).expect_err("forbidden pod");
        assert!(err.contains("must not be reached"), "{err}");
        let any = Expect {
            backend: "",
            namespace: "",
            ..e.clone()
        };
        assert!(check_test_answer("{\"pod\":\"\"}", &any).is_err());
        let sni = Expect {
            observed_sni: Some("abc.example.com"),
            ..e
        };
        let with_tls = "{\"namespace\":\"gateway-conformance-infra\",\"pod\":\"tcp-backend-0-0\",\"tls\":{\"serverName\":\"abc.example.com\"}}";
        assert!(check_test_answer(with_tls, &sni).is_ok());
        assert!(check_test_answer(ANSWER, &sni).is_err());
    }
}
