//! HTTP/2 end to end: prior knowledge on HTTP listeners and ALPN h2 on
//! HTTPS ones (curl), multiplexing (h2load), bodies streamed both ways with
//! flow control and trailers (the h2 crate as client), h2c backends, 421 by
//! `:authority`, and a rapid-reset flood that ends only the attacker's
//! connection.

use bytes::Bytes;
use shardgate_tests::config::{gateway_class, http_route, service, stream};
use shardgate_tests::pki::Ca;
use shardgate_tests::{eventually, free_port, on_both_drivers, unique_ip, Driver, Echo, Gateway};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "h2";

struct Setup {
    gw: Gateway,
    ip: Ipv4Addr,
    http: u16,
    https: u16,
    ca_file: tempfile::NamedTempFile,
    _echo: Echo,
}

/// An HTTP and an HTTPS listener (two hostnames, two certificates) in front
/// of an HTTP/1.1 echo (`/`) and an h2c-only echo (`/h2c`).
fn start(driver: Driver) -> Setup {
    let ip = unique_ip();
    let (http, https) = (free_port(ip), free_port(ip));
    let tmp = tempfile::tempdir().unwrap();
    let echo = Echo::start_specs(
        tmp.path(),
        &[
            format!("{ip}:0,pod=web-0-0,namespace={NS}"),
            format!("{ip}:0,h2c,pod=grpcish-0-0,namespace={NS}"),
        ],
    );
    let ca = Ca::new("h2 CA");
    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(ca.pem.as_bytes()).unwrap();
    let (a, b) = (ca.leaf(&["a.example.com"]), ca.leaf(&["b.example.com"]));
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {NS}}}\nspec:\n  gatewayClassName: shardgate\n  addresses: [{{type: IPAddress, value: {ip}}}]\n  listeners:\n  - {{name: http, protocol: HTTP, port: {http}}}\n  - {{name: a, protocol: HTTPS, port: {https}, hostname: a.example.com, tls: {{certificateRefs: [{{name: a}}]}}}}\n  - {{name: b, protocol: HTTPS, port: {https}, hostname: b.example.com, tls: {{certificateRefs: [{{name: b}}]}}}}\n"
    );
    let h2c_service = service(NS, "h2c", &[&echo.pods[1]]).replacen(
        "targetPort: 3000\n",
        "targetPort: 3000\n    appProtocol: kubernetes.io/h2c\n",
        1,
    );
    let config = stream(&[
        gateway_class(),
        gateway,
        a.secret(NS, "a"),
        b.secret(NS, "b"),
        service(NS, "web", &[&echo.pods[0]]),
        h2c_service,
        http_route(
            NS,
            "r",
            "gw",
            &[],
            "  - matches: [{path: {type: PathPrefix, value: /h2c}}]\n    backendRefs: [{name: h2c, port: 80}]\n  - backendRefs: [{name: web, port: 80}]\n",
        ),
    ]);
    let gw = Gateway::start(driver, &[("config.yaml", config)]);
    Setup {
        gw,
        ip,
        http,
        https,
        ca_file,
        _echo: echo,
    }
}

/// curl's `(http_version, status)` for a request.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (v, c) = text.split_once(' ').unwrap_or(("", ""));
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (v.to_owned(), c.to_owned())
}

fn h2_with_curl(driver: Driver) {
    let s = start(driver);
    let base = format!("http://{}:{}", s.ip, s.http);
    let two = |code: &str| ("2".to_owned(), code.to_owned());
    assert_eq!(
        curl(&["--http2-prior-knowledge", &format!("{base}/")]),
        two("200")
    );
    assert_eq!(
        curl(&["--http2-prior-knowledge", &format!("{base}/h2c/x")]),
        two("200"),
        "h2 to h2 through an h2c backend"
    );
    assert_eq!(
        curl(&[&format!("{base}/h2c/x")]),
        ("1.1".to_owned(), "200".to_owned()),
        "HTTP/1.1 in, h2c to the backend"
    );
    let ca = s.ca_file.path().to_str().unwrap();
    let resolve = |name: &str| format!("{name}:{}:{}", s.https, s.ip);
    let url = format!("https://a.example.com:{}/", s.https);
    assert_eq!(
        curl(&[
            "--http2",
            "--cacert",
            ca,
            "--resolve",
            &resolve("a.example.com"),
            &url
        ]),
        two("200"),
        "ALPN h2"
    );
    assert_eq!(
        curl(&[
            "--http2",
            "--cacert",
            ca,
            "--resolve",
            &resolve("a.example.com"),
            "-H",
            "Host: b.example.com",
            &url
        ]),
        two("421"),
        ":authority of another listener than the SNI's"
    );
    assert_eq!(
        curl(&[
            "--http1.1",
            "--cacert",
            ca,
            "--resolve",
            &resolve("a.example.com"),
            &url
        ]),
        ("1.1".to_owned(), "200".to_owned()),
        "ALPN http/1.1 still works"
    );
}

fn h2load_multiplexes(driver: Driver) {
    let s = start(driver);
    let out = Command::new("h2load")
        .args(["-n", "2000", "-c", "2", "-m", "32"])
        .arg(format!("http://{}:{}/", s.ip, s.http))
        .output()
        .expect("h2load runs (Debian nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2000 succeeded, 0 failed, 0 errored") && text.contains("2000 2xx"),
        "h2load:\n{text}"
    );
    let _ = &s.gw;
}

/// An h2 client connection on its own runtime.
fn h2_client(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        send
    })
}

fn request(addr: SocketAddr, method: &str, path: &str) -> hyper::Request<()> {
    hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(())
        .unwrap()
}

/// A request body without content-length, in several frames with trailers,
/// and a 5 MB response through a 64 KiB client window.
fn bodies_stream_with_flow_control(driver: Driver) {
    use sha2::Digest as _;
    let s = start(driver);
    let addr = SocketAddr::from((s.ip, s.http));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = h2_client(&rt, addr);
    rt.block_on(async move {
        let mut send = send.ready().await.unwrap();
        let (resp, mut body) = send
            .send_request(request(addr, "POST", "/_shardgate/digest"), false)
            .unwrap();
        let mut all = Vec::new();
        for i in 0..3u8 {
            let chunk = vec![i; 100_000];
            all.extend_from_slice(&chunk);
            body.reserve_capacity(chunk.len());
            body.send_data(Bytes::from(chunk), false).unwrap();
        }
        let mut trailers = hyper::HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        body.send_trailers(trailers).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut recv = resp.into_body();
        let mut text = Vec::new();
        while let Some(d) = recv.data().await {
            let d = d.unwrap();
            let _ = recv.flow_control().release_capacity(d.len());
            text.extend_from_slice(&d);
        }
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(v["length"], 300_000, "{v}");
        assert_eq!(v["chunked"], true, "no content-length: chunked upstream");
        assert_eq!(
            v["sha256"].as_str().unwrap(),
            hex(&sha2::Sha256::digest(&all))
        );

        let (resp, _) = send
            .send_request(request(addr, "GET", "/_shardgate/bytes?n=5000000"), true)
            .unwrap();
        let resp = resp.await.unwrap();
        let expected = resp.headers()["x-body-sha256"].to_str().unwrap().to_owned();
        let mut recv = resp.into_body();
        let mut hasher = sha2::Sha256::new();
        let mut n = 0;
        while let Some(d) = recv.data().await {
            let d = d.unwrap();
            n += d.len();
            hasher.update(&d);
            let _ = recv.flow_control().release_capacity(d.len());
        }
        assert_eq!(n, 5_000_000);
        assert_eq!(hex(&hasher.finalize()), expected);
    });
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A client that opens streams and cancels them at once, over and over,
/// is closed with GOAWAY and counted; a well-behaved client next to it
/// sees no error.
#[test]
fn rapid_reset_flood_closes_only_the_attacker() {
    let s = start(Driver::Uring);
    let addr = SocketAddr::from((s.ip, s.http));
    let stop = Arc::new(AtomicBool::new(false));
    let good = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) || runs == 0 {
                let out = Command::new("h2load")
                    .args(["-n", "200", "-c", "1", "-m", "10"])
                    .arg(format!("http://{addr}/"))
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if !text.contains("200 succeeded, 0 failed, 0 errored") {
                    return Err(text);
                }
                runs += 1;
            }
            Ok(runs)
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = h2_client(&rt, addr);
    let sent = rt.block_on(async move {
        let mut n = 0;
        let mut send = send;
        for _ in 0..100_000 {
            send = match send.ready().await {
                Ok(s) => s,
                Err(_) => break,
            };
            match send.send_request(request(addr, "GET", "/"), true) {
                // Dropping both halves at once resets the stream (CANCEL).
                Ok((resp, body)) => drop((resp, body)),
                Err(_) => break,
            }
            n += 1;
            // Let the connection task put the frames on the wire.
            tokio::task::yield_now().await;
        }
        n
    });
    assert!(
        sent < 100_000,
        "the flood was cut off (after {sent} streams)"
    );
    stop.store(true, Ordering::Relaxed);
    let runs = good.join().unwrap().expect("the good client saw no error");
    assert!(runs >= 1);
    let abuse = eventually("abuse counted", Duration::from_secs(5), || {
        let (_, body) = s.gw.admin_get("/metrics")?;
        let samples = shardgate_tests::prom::parse(&body);
        let n = shardgate_tests::prom::sum(
            &samples,
            "shardgate_h2_connections_closed_for_abuse_total",
            &[],
        );
        (n >= 1.0).then_some(n).ok_or(format!("{n}"))
    });
    assert!(abuse >= 1.0);
}

on_both_drivers!(
    h2_with_curl,
    h2load_multiplexes,
    bodies_stream_with_flow_control
);
