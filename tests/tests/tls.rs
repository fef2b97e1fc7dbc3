//! TLS termination (SNI, 421, rotation, resumption, isolation of a bad
//! certificate), TLS passthrough, TLS terminate to a TCP backend, TCP and UDP
//! routes, with real clients (curl, openssl, rustls) against real backends.

use shardgate_tests::config::{gateway_class, http_route, service, stream};
use shardgate_tests::pki::{server_name, Ca, Leaf};
use shardgate_tests::{eventually, free_port, on_both_drivers, unique_ip, Driver, Echo, Gateway};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "tls";

/// A Gateway on `ip` with the given listener YAML items.
fn gateway(name: &str, ip: Ipv4Addr, listeners: &[String]) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  gatewayClassName: shardgate\n  addresses:\n  - type: IPAddress\n    value: {ip}\n  listeners:\n{}",
        listeners.concat()
    )
}

/// One listener item; `tls` is the YAML of its `tls:` block, if any.
fn listener(name: &str, protocol: &str, port: u16, hostname: Option<&str>, tls: &str) -> String {
    let mut y = format!("  - name: {name}\n    protocol: {protocol}\n    port: {port}\n");
    if let Some(h) = hostname {
        y.push_str(&format!("    hostname: \"{h}\"\n"));
    }
    if !tls.is_empty() {
        y.push_str(&format!("    tls: {tls}\n"));
    }
    y
}

fn cert_ref(secret: &str) -> String {
    format!("{{certificateRefs: [{{name: {secret}}}]}}")
}

/// A Service `name` port 80 whose one endpoint is `target`.
fn service_at(name: &str, target: SocketAddr, protocol: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  ports: [{{name: p, port: 80, protocol: {protocol}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-0\n  namespace: {NS}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: p, port: {}, protocol: {protocol}}}]\nendpoints: [{{addresses: [\"{}\"], conditions: {{ready: true}}}}]\n",
        target.port(),
        target.ip()
    )
}

/// An L4 route of `kind` to Service `backend` port 80.
fn l4_route(kind: &str, name: &str, gw: &str, hostnames: &[&str], backend: &str) -> String {
    let version = if kind == "TLSRoute" { "v1" } else { "v1alpha2" };
    let hosts = if hostnames.is_empty() {
        String::new()
    } else {
        format!("  hostnames: [{}]\n", hostnames.join(", "))
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/{version}\nkind: {kind}\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  parentRefs: [{{name: {gw}}}]\n{hosts}  rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]\n"
    )
}

/// curl over HTTPS to `name` (resolved to `ip:port`, so SNI is `name`),
/// trusting only `ca`; `(exit code, http status)`.
fn curl(ca: &Path, name: &str, ip: Ipv4Addr, port: u16, host: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ])
    .arg("--cacert")
    .arg(ca)
    .arg("--resolve")
    .arg(format!("{name}:{port}:{ip}"));
    if let Some(h) = host {
        cmd.arg("-H").arg(format!("Host: {h}"));
    }
    let out = cmd
        .arg(format!("https://{name}:{port}/"))
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// openssl s_client's output for a connection to `ip:port` (`sni` or none),
/// sending one HTTP/1.0 request so the session ticket is read.
fn s_client(ip: Ipv4Addr, port: u16, sni: Option<&str>, extra: &[&str]) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-ign_eof", "-connect", &format!("{ip}:{port}")]);
    match sni {
        Some(s) => cmd.args(["-servername", s]),
        None => cmd.arg("-noservername"),
    };
    let mut child = cmd
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let host = sni.unwrap_or("none");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("openssl finishes");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A rustls client: handshake with `sni` at `addr`, one request, the
/// presented leaf and the response's status line.
fn https_get(ca: &Ca, addr: SocketAddr, sni: &str) -> Result<(Vec<u8>, String), String> {
    let mut config = (*ca.client_config()).clone();
    config.resumption = rustls::client::Resumption::disabled();
    let conn = rustls::ClientConnection::new(Arc::new(config), server_name(sni))
        .map_err(|e| e.to_string())?;
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut body = Vec::new();
    // Some servers close without close_notify after Connection: close.
    let _ = tls.read_to_end(&mut body);
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate presented")?;
    let text = String::from_utf8_lossy(&body);
    let status = text.lines().next().unwrap_or_default().to_owned();
    Ok((leaf, status))
}

struct Https {
    gw: Gateway,
    ca: Ca,
    ca_file: tempfile::NamedTempFile,
    ip: Ipv4Addr,
    port: u16,
    _echo: Echo,
}

fn start_https(driver: Driver) -> Https {
    let ip = unique_ip();
    let port = free_port(ip);
    let tmp = tempfile::tempdir().unwrap();
    let echo = Echo::start(tmp.path(), ip, &[("web-0-0", NS)]);
    let ca = Ca::new("shardgate test CA");
    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(ca.pem.as_bytes()).unwrap();
    let a = ca.leaf(&["a.example.com"]);
    let wild = ca.leaf(&["*.wild.example"]);
    let fallback = ca.leaf(&["fallback.example"]);
    let listeners = [
        listener("a", "HTTPS", port, Some("a.example.com"), &cert_ref("a")),
        listener(
            "wild",
            "HTTPS",
            port,
            Some("*.wild.example"),
            &cert_ref("wild"),
        ),
        listener("any", "HTTPS", port, None, &cert_ref("fallback")),
        listener(
            "broken",
            "HTTPS",
            port,
            Some("broken.example"),
            &cert_ref("missing"),
        ),
    ];
    let config = stream(&[
        gateway_class(),
        gateway("gw", ip, &listeners),
        a.secret(NS, "a"),
        wild.secret(NS, "wild"),
        fallback.secret(NS, "fallback"),
        service(NS, "web", &[&echo.pods[0]]),
        http_route(
            NS,
            "all",
            "gw",
            &[],
            "  - backendRefs: [{name: web, port: 80}]\n",
        ),
    ]);
    let gw = Gateway::start(driver, &[("config.yaml", config)]);
    Https {
        gw,
        ca,
        ca_file,
        ip,
        port,
        _echo: echo,
    }
}

/// SNI picks the listener and its certificate (exact, wildcard, fallback,
/// no SNI at all); a Host of another listener gets 421; a listener whose
/// certificate is missing says so in status while the others serve.
fn https_listeners_pick_certificates_by_sni(driver: Driver) {
    let h = start_https(driver);
    let ca = h.ca_file.path();
    for name in ["a.example.com", "x.wild.example", "fallback.example"] {
        assert_eq!(
            curl(ca, name, h.ip, h.port, None),
            (0, "200".to_owned()),
            "{name}: verified chain and 200"
        );
    }
    assert_eq!(
        curl(ca, "a.example.com", h.ip, h.port, Some("x.wild.example")),
        (0, "421".to_owned()),
        "a Host outside the SNI's listener is misdirected"
    );
    let no_sni = s_client(h.ip, h.port, None, &[]);
    assert!(
        no_sni.contains("CN=fallback.example") || no_sni.contains("CN = fallback.example"),
        "a client without SNI gets the fallback listener's certificate:\n{no_sni}"
    );
    let status = std::fs::read_to_string(&h.gw.status_file).unwrap();
    let condition = |listener: &str, kind: &str| -> (String, String) {
        use serde::Deserialize as _;
        let docs = serde_yaml_ng::Deserializer::from_str(&status)
            .map(|d| serde_yaml_ng::Value::deserialize(d).expect("status YAML"));
        for doc in docs {
            if doc["kind"].as_str() != Some("Gateway") {
                continue;
            }
            let ls = doc["status"]["listeners"]
                .as_sequence()
                .cloned()
                .unwrap_or_default();
            for l in ls.iter().filter(|l| l["name"].as_str() == Some(listener)) {
                for c in l["conditions"].as_sequence().into_iter().flatten() {
                    if c["type"].as_str() == Some(kind) {
                        let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                        return (s("status"), s("reason"));
                    }
                }
            }
        }
        panic!("no {kind} condition for listener {listener} in:\n{status}");
    };
    assert_eq!(
        condition("broken", "ResolvedRefs"),
        ("False".to_owned(), "InvalidCertificateRef".to_owned())
    );
    assert_eq!(condition("broken", "Programmed").0, "False");
    for l in ["a", "wild", "any"] {
        assert_eq!(condition(l, "Programmed").0, "True", "{l} is programmed");
    }
}

/// Sessions resume (TLS 1.3 tickets) whichever worker each reconnection
/// lands on: ticket keys are shared by the workers.
#[test]
fn sessions_resume_across_workers() {
    let h = start_https(Driver::Uring);
    let dir = tempfile::tempdir().unwrap();
    let sess = dir.path().join("session.pem");
    let sess = sess.to_str().unwrap();
    let first = s_client(h.ip, h.port, Some("a.example.com"), &["-sess_out", sess]);
    assert!(first.contains("New, TLSv1.3"), "first handshake:\n{first}");
    for i in 0..8 {
        let again = s_client(h.ip, h.port, Some("a.example.com"), &["-sess_in", sess]);
        assert!(
            again.contains("Reused, TLSv1.3"),
            "reconnection {i} resumed:\n{again}"
        );
    }
}

/// A rotated Secret takes effect for new handshakes, while a client loop
/// making new connections sees no error.
#[test]
fn certificate_rotation_drops_nothing() {
    let h = start_https(Driver::Uring);
    let addr = SocketAddr::from((h.ip, h.port));
    let old = h.ca.leaf(&["a.example.com"]);
    let (first, _) = https_get(&h.ca, addr, "a.example.com").unwrap();
    assert_ne!(first, old.der(), "a fresh leaf differs from the served one");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let ca = Arc::new(h.ca);
    let looper = {
        let (stop, ok, errors, ca) = (stop.clone(), ok.clone(), errors.clone(), ca.clone());
        std::thread::spawn(move || {
            let mut last_error = String::new();
            while !stop.load(Ordering::Relaxed) {
                match https_get(&ca, addr, "a.example.com") {
                    Ok((_, status)) if status.contains(" 200 ") => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok((_, status)) => {
                        last_error = status;
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        last_error = e;
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            last_error
        })
    };
    let rotated: Leaf = ca.leaf(&["a.example.com"]);
    h.gw.write_config("rotated.yaml", &rotated.secret(NS, "a"));
    eventually(
        "the rotated certificate is served",
        Duration::from_secs(10),
        || {
            let (leaf, _) = https_get(&ca, addr, "a.example.com")?;
            (leaf == rotated.der())
                .then_some(())
                .ok_or("old leaf".to_owned())
        },
    );
    // Keep the loop going a little past the switch.
    let seen = ok.load(Ordering::Relaxed);
    eventually(
        "more requests after the switch",
        Duration::from_secs(10),
        || {
            (ok.load(Ordering::Relaxed) >= seen + 20)
                .then_some(())
                .ok_or("waiting".to_owned())
        },
    );
    stop.store(true, Ordering::Relaxed);
    let last_error = looper.join().unwrap();
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "{} requests ok; last error: {last_error}",
        ok.load(Ordering::Relaxed)
    );
}

/// A TCP backend that answers each connection, once the client has
/// half-closed, with `got N bytes` and closes.
fn tcp_counter(ip: Ipv4Addr) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut got = Vec::new();
                if s.read_to_end(&mut got).is_ok() {
                    let _ = s.write_all(format!("got {} bytes", got.len()).as_bytes());
                }
            });
        }
    });
    addr
}

/// A TLS backend (its own certificate) that echoes one line per connection.
fn tls_echo(ip: Ipv4Addr, leaf: &Leaf) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let config = leaf.server_config();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s);
                let mut line = [0u8; 64];
                if let Ok(n) = tls.read(&mut line) {
                    let _ = tls.write_all(&line[..n]);
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            });
        }
    });
    addr
}

/// A UDP backend that answers `echo:` + each datagram.
fn udp_echo(ip: Ipv4Addr) -> SocketAddr {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    let addr = s.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from);
        }
    });
    addr
}

/// TCP with half-close, TLS passthrough to a TLS backend, TLS terminated
/// here to a plaintext backend, and UDP per-client sessions.
fn l4_routes_forward_streams_and_datagrams(driver: Driver) {
    let ip = unique_ip();
    let (tcp_port, tls_port, term_port, udp_port) =
        (free_port(ip), free_port(ip), free_port(ip), free_port(ip));
    let ca = Ca::new("l4 CA");
    let backend_leaf = ca.leaf(&["pass.example.com"]);
    let gateway_leaf = ca.leaf(&["term.example.com"]);
    let counter = tcp_counter(ip);
    let tls_backend = tls_echo(ip, &backend_leaf);
    let udp_backend = udp_echo(ip);
    let listeners = [
        listener("tcp", "TCP", tcp_port, None, ""),
        listener(
            "pass",
            "TLS",
            tls_port,
            Some("*.example.com"),
            "{mode: Passthrough}",
        ),
        listener(
            "term",
            "TLS",
            term_port,
            Some("term.example.com"),
            &cert_ref("term"),
        ),
        listener("udp", "UDP", udp_port, None, ""),
    ];
    let config = stream(&[
        gateway_class(),
        gateway("l4", ip, &listeners),
        gateway_leaf.secret(NS, "term"),
        service_at("counter", counter, "TCP"),
        service_at("tls-backend", tls_backend, "TCP"),
        service_at("udp-backend", udp_backend, "UDP"),
        l4_route("TCPRoute", "tcp", "l4", &[], "counter"),
        l4_route(
            "TLSRoute",
            "pass",
            "l4",
            &["pass.example.com"],
            "tls-backend",
        ),
        l4_route("TLSRoute", "term", "l4", &["term.example.com"], "counter"),
        l4_route("UDPRoute", "udp", "l4", &[], "udp-backend"),
    ]);
    let gw = Gateway::start(driver, &[("config.yaml", config)]);

    // TCP: the client's half-close reaches the backend, whose answer still
    // comes back.
    let answer = eventually("TCP through the gateway", Duration::from_secs(10), || {
        let mut s = TcpStream::connect((ip, tcp_port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"hello").map_err(|e| e.to_string())?;
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    });
    assert_eq!(answer, "got 5 bytes");

    // Passthrough: the client's TLS session ends at the backend, which
    // presents its own certificate.
    let tls_client = |port: u16, sni: &str, payload: &[u8], close: bool| {
        let conn = rustls::ClientConnection::new(ca.client_config(), server_name(sni)).unwrap();
        let tcp = TcpStream::connect((ip, port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(payload).map_err(|e| e.to_string())?;
        if close {
            tls.conn.send_close_notify();
            tls.flush().map_err(|e| e.to_string())?;
        }
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out);
        let leaf = tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        Ok::<_, String>((leaf, String::from_utf8_lossy(&out).into_owned()))
    };
    let (leaf, echoed) = tls_client(tls_port, "pass.example.com", b"ping\n", false).unwrap();
    assert_eq!(leaf, Some(backend_leaf.der()), "the backend's certificate");
    assert_eq!(echoed, "ping\n");
    assert!(
        tls_client(tls_port, "other.example.com", b"x", false).is_err()
            || tls_client(tls_port, "other.example.com", b"x", false)
                .unwrap()
                .0
                .is_none(),
        "an SNI without route is refused"
    );

    // Terminate: the gateway's certificate, plaintext to the backend, and
    // close_notify passed on as a half-close.
    let (leaf, answer) = tls_client(term_port, "term.example.com", b"abcd", true).unwrap();
    assert_eq!(leaf, Some(gateway_leaf.der()), "the listener's certificate");
    assert_eq!(answer, "got 4 bytes");

    // UDP: each client gets its own replies.
    let clients: Vec<UdpSocket> = (0..2).map(|_| UdpSocket::bind((ip, 0)).unwrap()).collect();
    for (i, c) in clients.iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let msg = format!("client-{i}");
        let reply = eventually("a UDP reply", Duration::from_secs(10), || {
            c.send_to(msg.as_bytes(), (ip, udp_port))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 256];
            let (n, from) = c.recv_from(&mut buf).map_err(|e| e.to_string())?;
            if from != SocketAddr::from((ip, udp_port)) {
                return Err(format!("reply from {from}"));
            }
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        });
        assert_eq!(reply, format!("echo:client-{i}"));
    }

    // Connections and UDP sessions count into their routes' series.
    let (_, body) = gw.admin_get("/metrics").unwrap();
    let samples = shardgate_tests::prom::parse(&body);
    let count = |route: &str, code: &str| {
        shardgate_tests::prom::sum(
            &samples,
            "shardgate_requests_total",
            &[("route", route), ("code", code)],
        )
    };
    assert!(count("tls/tcp", "2xx") >= 1.0, "TCP connections counted");
    assert_eq!(count("tls/pass", "2xx"), 1.0, "one passthrough connection");
    assert!(count("tls/udp", "2xx") >= 2.0, "one session per UDP client");
}

on_both_drivers!(
    https_listeners_pick_certificates_by_sni,
    l4_routes_forward_streams_and_datagrams
);
