//! The standalone appliance end to end: real controlplane, dataplane and echo
//! backends on loopback, real clients. Every test runs on io_uring and epoll.

use sha2::{Digest, Sha256};
use shardgate_tests::client::Client;
use shardgate_tests::fixture::{routes, Fixture};
use shardgate_tests::{eventually, Driver};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn routes_by_host_path_header_and_method(driver: Driver) {
    let f = Fixture::start(driver);
    let cases = [
        ("GET", "anything.example", "/exact", &[][..], "v2-0-0"),
        ("GET", "anything.example", "/prefix/deeper", &[], "v3-0-0"),
        ("GET", "anything.example", "/v1/x?y=z", &[], "v1-0-0"),
        (
            "GET",
            "anything.example",
            "/hdr",
            &[("X-Pick", "three")],
            "v3-0-0",
        ),
        (
            "GET",
            "anything.example",
            "/hdr",
            &[("X-Pick", "one")],
            "v1-0-0",
        ),
        ("POST", "anything.example", "/method", &[], "v2-0-0"),
        ("GET", "anything.example", "/method", &[], "v1-0-0"),
        ("GET", "host-a.example", "/v1", &[], "v2-0-0"),
        ("GET", "HOST-A.example:80", "/exact", &[], "v2-0-0"),
    ];
    let mut c = f.client();
    for (method, host, path, headers, pod) in cases {
        let body = (method == "POST").then_some(&b"x"[..]);
        let r = c
            .request(method, host, path, headers, body)
            .expect("response");
        assert_eq!(r.status, 200, "{method} {host}{path}");
        assert_eq!(r.pod(), pod, "{method} {host}{path}");
        let echoed = r.json();
        assert_eq!(
            echoed["path"], path,
            "the backend sees the path and query unchanged"
        );
        assert_eq!(echoed["host"], host, "the backend sees Host unchanged");
        // Clients connect from 127.0.0.1 whatever loopback address they dial.
        assert_eq!(echoed["headers"]["X-Forwarded-For"][0], "127.0.0.1");
    }
    // Segment-wise prefixes and exact paths.
    assert_eq!(f.get("a", "/prefixed").status, 404);
    assert_eq!(f.get("a", "/exact/more").status, 404);
    assert_eq!(f.get("a", "/nothing").status, 404);
}

fn answers_the_designed_error_statuses(driver: Driver) {
    let f = Fixture::start(driver);
    assert_eq!(f.get("a", "/nothing").status, 404, "no route");
    assert_eq!(f.get("a", "/invalid").status, 500, "invalid backendRef");
    assert_eq!(f.get("a", "/noendpoints").status, 503, "no endpoints");
    assert_eq!(f.get("a", "/down").status, 503, "connection refused");
    let started = Instant::now();
    assert_eq!(f.get("a", "/slow?delay=3s").status, 504, "request timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout cut the wait short"
    );
    // The connection survives local answers to bodyless requests.
    let mut c = f.client();
    assert_eq!(c.get("a", "/nothing").unwrap().status, 404);
    assert_eq!(c.get("a", "/v1").unwrap().status, 200);
}

fn splits_traffic_by_weight(driver: Driver) {
    let f = Fixture::start(driver);
    let mut clients: Vec<Client> = (0..4).map(|_| f.client()).collect();
    let mut counts: HashMap<String, u32> = HashMap::new();
    let n = 2000;
    for i in 0..n {
        let r = clients[i % 4].get("a", "/split").expect("response");
        assert_eq!(r.status, 200);
        *counts.entry(r.pod()).or_default() += 1;
    }
    let v2 = f64::from(counts.get("v2-0-0").copied().unwrap_or(0));
    let expected = n as f64 * 0.1;
    let sd = (n as f64 * 0.1 * 0.9).sqrt();
    // Five standard deviations: a correct 90/10 split fails this about once
    // in 1.7 million runs.
    assert!(
        (v2 - expected).abs() < 5.0 * sd,
        "v2 got {v2} of {n} (expected {expected} ± {})",
        5.0 * sd
    );
    assert_eq!(counts.len(), 2, "{counts:?}");
}

fn reuses_connections_on_both_sides(driver: Driver) {
    let f = Fixture::start(driver);
    let (conns_before, reqs_before) = f.echo_stats("v1-0-0");
    let mut c = f.client();
    for i in 0..200 {
        let r = c
            .get("a", &format!("/v1/{i}"))
            .expect("every request on one client connection");
        assert_eq!(r.status, 200);
        assert!(!r.close);
    }
    let (conns_after, reqs_after) = f.echo_stats("v1-0-0");
    assert_eq!(reqs_after - reqs_before, 200);
    // One client connection lands on one worker, whose pool keeps one
    // upstream connection busy; allow one per worker.
    assert!(
        conns_after - conns_before <= 2,
        "{} upstream connections for 200 requests",
        conns_after - conns_before
    );
}

fn streams_chunked_and_large_bodies(driver: Driver) {
    let f = Fixture::start(driver);
    let body: Vec<u8> = (0..1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let digest = sha256_hex(&body);
    let mut c = f.client();
    // Content-Length upload.
    let r = c
        .request("POST", "a", "/_shardgate/digest", &[], Some(&body))
        .unwrap();
    assert_eq!(r.json()["sha256"], digest);
    assert_eq!(r.json()["chunked"], false);
    // Chunked upload in uneven chunks, on the same connection.
    let mut raw =
        b"POST /_shardgate/digest HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for chunk in body.chunks(70_001) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    c.send_raw(&raw).unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.json()["sha256"], digest);
    assert_eq!(r.json()["chunked"], true);
    // Downloads, Content-Length and chunked.
    for path in [
        "/_shardgate/bytes?n=1048576",
        "/_shardgate/bytes?n=1048576&chunked=1",
    ] {
        let r = c.get("a", path).unwrap();
        assert_eq!(r.body.len(), 1024 * 1024, "{path}");
        assert_eq!(
            Some(sha256_hex(&r.body).as_str()),
            r.header("x-body-sha256"),
            "{path}"
        );
    }
    // A body streamed back while it is being sent.
    let r = c
        .request("POST", "a", "/_shardgate/echo-body", &[], Some(&body))
        .unwrap();
    assert_eq!(sha256_hex(&r.body), digest);
}

fn pipelined_requests_are_answered_in_order(driver: Driver) {
    let f = Fixture::start(driver);
    let mut c = f.client();
    c.send_raw(b"GET /v1/one HTTP/1.1\r\nHost: a\r\n\r\nGET /exact HTTP/1.1\r\nHost: a\r\n\r\nPOST /_shardgate/digest HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /prefix/three HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let pods: Vec<String> = (0..4)
        .map(|_| c.read_response(false).unwrap().pod())
        .collect();
    assert_eq!(pods, ["v1-0-0", "v2-0-0", "v1-0-0", "v3-0-0"]);
}

fn answers_expect_continue(driver: Driver) {
    let f = Fixture::start(driver);
    let mut c = f.client();
    c.send_raw(b"POST /_shardgate/digest HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let interim = c.read_response(false).unwrap();
    assert_eq!(interim.status, 100);
    c.send_raw(b"hello").unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["length"], 5);
}

fn malformed_requests_close_only_their_connection(driver: Driver) {
    let f = Fixture::start(driver);
    let mut good = f.client();
    assert_eq!(good.get("a", "/v1").unwrap().status, 200);
    let bad_heads: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ];
    for raw in bad_heads {
        let mut bad = f.client();
        bad.send_raw(raw).unwrap();
        let r = bad.read_response(false).unwrap();
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(raw));
        assert!(
            bad.closed_by_peer(Duration::from_secs(5)),
            "the bad connection is closed"
        );
        assert_eq!(
            good.get("a", "/v1").unwrap().status,
            200,
            "the good connection still works"
        );
    }
    // Too large a head: 431.
    let mut big = f.client();
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    raw.extend(
        std::iter::repeat_n(
            b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            1500,
        )
        .flatten(),
    );
    let _ = big.send_raw(&raw);
    assert_eq!(big.read_response(false).unwrap().status, 431);
    // A head that never completes: 408 after the header timeout (2 s here).
    let mut slow = f.client();
    slow.send_raw(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    assert_eq!(slow.read_response(false).unwrap().status, 408);
    assert_eq!(good.get("a", "/v1").unwrap().status, 200);
}

/// Starts a client loop on its own thread; returns (stop, handle) where the
/// handle yields (requests, errors).
fn client_loop(
    addr: SocketAddr,
    path: &'static str,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<(u64, Vec<String>)>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s = std::sync::Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        let (mut n, mut errors) = (0u64, Vec::new());
        let mut c = Client::connect(addr).expect("connect");
        while !s.load(Ordering::Relaxed) {
            // Mix kept-alive requests and fresh connections.
            if n % 10 == 0 {
                c = match Client::connect(addr) {
                    Ok(c) => c,
                    Err(e) => {
                        errors.push(format!("connect: {e}"));
                        continue;
                    }
                };
            }
            match c.get("a", path) {
                Ok(r) if r.status == 200 => {}
                Ok(r) => errors.push(format!("status {}", r.status)),
                Err(e) => errors.push(format!("io: {e}")),
            }
            n += 1;
        }
        (n, errors)
    });
    (stop, handle)
}

fn config_edits_apply_live_without_errors(driver: Driver) {
    let f = Fixture::start(driver);
    let (stop, loop_handle) = client_loop(f.addr, "/v1/loop");
    let mut delays = Vec::new();
    let mut probe = f.client();
    for i in 0..20 {
        let target = if i % 2 == 0 {
            ("svc-v2", "v2-0-0")
        } else {
            ("svc-v1", "v1-0-0")
        };
        let edited = Instant::now();
        f.gw.write_config("routes.yaml", &routes(target.0));
        let pod = target.1;
        eventually(
            &format!("/switch answers from {pod}"),
            Duration::from_secs(5),
            || {
                let r = probe.get("a", "/switch").map_err(|e| e.to_string())?;
                if r.pod() == pod {
                    Ok(())
                } else {
                    Err(format!("answered by {}", r.pod()))
                }
            },
        );
        delays.push(edited.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (requests, errors) = loop_handle.join().expect("client loop");
    delays.sort();
    eprintln!(
        "config edit → new route answering: median {:?}, max {:?} over {} edits; {requests} requests in the loop",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays.len()
    );
    assert!(
        errors.is_empty(),
        "{} errors during edits: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(requests > 0);
    assert!(
        delays[delays.len() - 1] < Duration::from_secs(1),
        "an edit took {:?}",
        delays[delays.len() - 1]
    );
}

fn a_bad_config_file_keeps_the_last_good_one(driver: Driver) {
    let f = Fixture::start(driver);
    let generation = f.gw.generation();
    f.gw.write_config("routes.yaml", "kind: HTTPRoute\nmetadata: {name: broken\n");
    eventually(
        "the controlplane reports the bad file with its line",
        Duration::from_secs(5),
        || {
            let log = std::fs::read_dir(f.gw.dir.path())
                .map_err(|e| e.to_string())?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("controlplane"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect::<String>();
            if log.contains("routes.yaml:") && log.contains("rejected") {
                Ok(())
            } else {
                Err("not yet logged".into())
            }
        },
    );
    assert_eq!(
        f.get("a", "/exact").pod(),
        "v2-0-0",
        "the last good routes still serve"
    );
    assert_eq!(f.gw.generation(), generation, "nothing was republished");
}

fn rejects_an_invalid_snapshot_and_keeps_serving(driver: Driver) {
    let f = Fixture::start(driver);
    let generation = f.gw.generation();
    let injected = shardgate_core::shm::inject_for_testing(&f.gw.shm, b"certainly not a snapshot")
        .expect("inject");
    assert_eq!(injected, generation + 1);
    eventually(
        "every worker rejects the injected snapshot",
        Duration::from_secs(5),
        || {
            let s = f.gw.snapshot();
            let workers = s["workers"].as_array().cloned().unwrap_or_default();
            if workers.iter().all(|w| w["rejected"].as_u64() == Some(1)) {
                Ok(())
            } else {
                Err(format!("{workers:?}"))
            }
        },
    );
    assert_eq!(
        f.gw.generation(),
        generation,
        "the last good snapshot stays in force"
    );
    assert_eq!(f.get("a", "/exact").pod(), "v2-0-0");
    assert_eq!(f.gw.admin_get("/ready").unwrap().0, 200);
    // The next good publication is applied.
    f.gw.write_config("routes.yaml", &routes("svc-v3"));
    f.gw.wait_generation_above(injected);
    assert_eq!(f.get("a", "/switch").pod(), "v3-0-0");
}

fn survives_a_controlplane_sigkill_and_resumes_after_restart(driver: Driver) {
    let mut f = Fixture::start(driver);
    f.gw.kill_controlplane();
    for i in 0..50 {
        assert_eq!(
            f.get("a", &format!("/v1/{i}")).status,
            200,
            "serving without a controlplane"
        );
    }
    assert_eq!(f.gw.admin_get("/ready").unwrap().0, 200);
    let generation = f.gw.generation();
    f.gw.write_config("routes.yaml", &routes("svc-v3"));
    f.gw.start_controlplane();
    f.gw.wait_generation_above(generation);
    eventually(
        "the edit made while the controlplane was down applies",
        Duration::from_secs(5),
        || match f.get("a", "/switch").pod().as_str() {
            "v3-0-0" => Ok(()),
            other => Err(other.to_owned()),
        },
    );
}

fn drains_in_flight_requests_on_sigterm(driver: Driver) {
    let mut f = Fixture::start(driver);
    let mut slow = f.client();
    slow.send_raw(b"GET /v1/slow?delay=1s HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    // Make sure the request reached the backend before signalling.
    eventually(
        "the slow request is in flight",
        Duration::from_secs(5),
        || {
            let s = f.gw.snapshot();
            let conns: u64 = s["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| w["connections"].as_u64())
                .sum();
            if conns >= 1 {
                Ok(())
            } else {
                Err("no connection yet".into())
            }
        },
    );
    std::thread::sleep(Duration::from_millis(100));
    f.gw.dataplane.signal("TERM");
    let r = slow
        .read_response(false)
        .expect("the in-flight request completes");
    assert_eq!(r.status, 200);
    assert!(
        r.close,
        "a draining connection is closed after its response"
    );
    let status = f.gw.dataplane.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "dataplane exit status {status:?}");
    let mut dead = std::net::TcpStream::connect_timeout(&f.addr, Duration::from_secs(1));
    if let Ok(s) = dead.as_mut() {
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut b = [0u8; 1];
        assert!(
            matches!(s.read(&mut b), Ok(0) | Err(_)),
            "nothing serves after the drain"
        );
    }
}

shardgate_tests::on_both_drivers!(
    routes_by_host_path_header_and_method,
    answers_the_designed_error_statuses,
    splits_traffic_by_weight,
    reuses_connections_on_both_sides,
    streams_chunked_and_large_bodies,
    pipelined_requests_are_answered_in_order,
    answers_expect_continue,
    malformed_requests_close_only_their_connection,
    config_edits_apply_live_without_errors,
    a_bad_config_file_keeps_the_last_good_one,
    rejects_an_invalid_snapshot_and_keeps_serving,
    survives_a_controlplane_sigkill_and_resumes_after_restart,
    drains_in_flight_requests_on_sigterm,
);
