//! Metrics, admin endpoints and the access log, checked against a known mix
//! of traffic with a real Prometheus parser. Runs on both io drivers.

use shardgate_tests::client::Client;
use shardgate_tests::fixture::{routes, Fixture};
use shardgate_tests::prom::{self, sum, Sample};
use shardgate_tests::{eventually, Driver, GatewayOptions};
use std::collections::HashMap;
use std::time::Duration;

fn scrape(f: &Fixture) -> Vec<Sample> {
    let (status, body) = f.gw.admin_get("/metrics").expect("scrape /metrics");
    assert_eq!(status, 200);
    prom::parse(&body)
}

/// Sends a fixed mix: 20 × 200, 7 × 404, 5 × 500, 3 × 503, 2 × 400, each on
/// its own connection. Returns the statuses expected in the access log.
fn send_known_traffic(f: &Fixture) -> HashMap<u16, usize> {
    for (path, status, n) in [
        ("/v1/ok", 200, 20),
        ("/nothing", 404, 7),
        ("/invalid", 500, 5),
        ("/down", 503, 3),
    ] {
        for _ in 0..n {
            assert_eq!(f.get("a", path).status, status, "{path}");
        }
    }
    for _ in 0..2 {
        let mut c = f.client();
        c.send_raw(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
        assert_eq!(c.read_response(false).unwrap().status, 400);
    }
    HashMap::from([(200, 20), (404, 7), (500, 5), (503, 3), (400, 2)])
}

fn counts_every_request_exactly(driver: Driver) {
    let f = Fixture::start(driver);
    send_known_traffic(&f);
    let s = scrape(&f);
    let req = "shardgate_requests_total";
    let main = [
        ("gateway", "e2e/gw"),
        ("listener", "http"),
        ("route", "e2e/main"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        main.iter().chain(extra).copied().collect()
    };
    assert_eq!(
        sum(
            &s,
            req,
            &with(&[("backend", "e2e/svc-v1:80"), ("code", "2xx")])
        ),
        20.0
    );
    assert_eq!(
        sum(&s, req, &with(&[("backend", "invalid"), ("code", "5xx")])),
        5.0
    );
    assert_eq!(
        sum(
            &s,
            req,
            &with(&[("backend", "e2e/svc-down:80"), ("code", "5xx")])
        ),
        3.0
    );
    assert_eq!(
        sum(
            &s,
            req,
            &[
                ("gateway", "e2e/gw"),
                ("listener", "http"),
                ("route", ""),
                ("code", "4xx")
            ]
        ),
        7.0,
        "no-route requests count against their listener"
    );
    assert_eq!(
        sum(&s, req, &[("gateway", ""), ("code", "4xx")]),
        2.0,
        "malformed requests"
    );
    assert_eq!(sum(&s, req, &[]), 37.0);
    assert_eq!(sum(&s, "shardgate_worker_requests_total", &[]), 37.0);
    assert_eq!(
        sum(&s, "shardgate_request_duration_seconds_count", &[]),
        37.0
    );
    assert_eq!(
        sum(
            &s,
            "shardgate_request_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        37.0,
        "every request lands in the +Inf bucket"
    );
    assert_eq!(
        sum(&s, "shardgate_upstream_response_seconds_count", &[]),
        20.0
    );
    assert_eq!(
        sum(
            &s,
            "shardgate_rejected_requests_total",
            &[("reason", "no_route")]
        ),
        7.0
    );
    assert_eq!(
        sum(
            &s,
            "shardgate_rejected_requests_total",
            &[("reason", "bad_request")]
        ),
        2.0
    );
    assert_eq!(sum(&s, "shardgate_downstream_connections_total", &[]), 37.0);
    assert_eq!(sum(&s, "shardgate_upstream_connect_errors_total", &[]), 3.0);
    assert_eq!(
        sum(&s, "shardgate_upstream_pool_hits_total", &[])
            + sum(&s, "shardgate_upstream_pool_misses_total", &[]),
        23.0,
        "one pool lookup per forwarded request"
    );
    assert!(sum(&s, "shardgate_downstream_received_bytes_total", &[]) > 0.0);
    assert!(sum(&s, "shardgate_downstream_sent_bytes_total", &[]) > 0.0);
    // The controlplane's own endpoint.
    let (status, body) =
        f.gw.cp_admin_get("/metrics")
            .expect("controlplane /metrics");
    assert_eq!(status, 200);
    let cp = prom::parse(&body);
    assert_eq!(
        sum(
            &cp,
            "shardgate_controlplane_objects",
            &[("kind", "HTTPRoute")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &cp,
            "shardgate_controlplane_objects",
            &[("kind", "Service")]
        ),
        5.0
    );
    assert!(sum(&cp, "shardgate_controlplane_snapshots_published_total", &[]) >= 1.0);
    assert!(sum(&cp, "shardgate_controlplane_translation_seconds_count", &[]) >= 1.0);
    assert!(sum(&cp, "shardgate_controlplane_status_writes_total", &[]) >= 1.0);
    assert!(sum(&cp, "shardgate_controlplane_config_scans_total", &[]) >= 1.0);
}

fn records_every_snapshot_application(driver: Driver) {
    let f = Fixture::start(driver);
    let applied =
        |s: &[Sample], w: &str| sum(s, "shardgate_snapshots_applied_total", &[("worker", w)]);
    let delays = |s: &[Sample], w: &str| {
        sum(
            s,
            "shardgate_snapshot_apply_delay_seconds_count",
            &[("worker", w)],
        )
    };
    let before = scrape(&f);
    for w in ["0", "1"] {
        assert!(applied(&before, w) >= 1.0);
        assert_eq!(applied(&before, w), delays(&before, w), "worker {w}");
    }
    let generation = f.gw.generation();
    for (i, target) in ["svc-v2", "svc-v3", "svc-v1"].iter().enumerate() {
        f.gw.write_config("routes.yaml", &routes(target));
        f.gw.wait_generation_above(generation + i as u64);
    }
    let after = scrape(&f);
    for w in ["0", "1"] {
        assert_eq!(applied(&after, w) - applied(&before, w), 3.0, "worker {w}");
        assert_eq!(
            applied(&after, w),
            delays(&after, w),
            "every application has a delay sample"
        );
        assert_eq!(
            sum(&after, "shardgate_snapshot_generation", &[("worker", w)]),
            f.gw.generation() as f64
        );
    }
}

fn writes_one_access_log_line_per_request(driver: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let mut opts = GatewayOptions::new(driver);
    opts.dataplane_args = vec!["--access-log".into(), path.display().to_string()];
    let f = Fixture::start_with(opts);
    let expected = send_known_traffic(&f);
    let lines: Vec<serde_json::Value> = eventually(
        "37 access-log lines are written",
        Duration::from_secs(5),
        || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            if lines.len() == 37 {
                lines
                    .iter()
                    .map(|l| serde_json::from_str(l).map_err(|e| format!("bad line {l:?}: {e}")))
                    .collect()
            } else {
                Err(format!("{} lines", lines.len()))
            }
        },
    );
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for l in &lines {
        *statuses
            .entry(l["status"].as_u64().unwrap() as u16)
            .or_default() += 1;
        for key in [
            "time",
            "gateway",
            "listener",
            "route",
            "method",
            "authority",
            "path",
            "bytes_sent",
            "duration_ms",
            "upstream",
        ] {
            assert!(l.get(key).is_some(), "{key} missing from {l}");
        }
    }
    assert_eq!(statuses, expected);
    let ok = lines.iter().find(|l| l["status"] == 200).unwrap();
    assert_eq!(ok["route"], "e2e/main");
    assert_eq!(ok["path"], "/v1/ok");
    assert_eq!(ok["method"], "GET");
    assert!(ok["upstream"].as_str().is_some_and(|u| u.contains(':')));
    let s = scrape(&f);
    assert_eq!(sum(&s, "shardgate_access_log_dropped_total", &[]), 0.0);
    // A keep-alive connection's requests each get their own line too.
    let mut c = Client::connect(f.addr).unwrap();
    for _ in 0..3 {
        assert_eq!(c.get("a", "/exact").unwrap().status, 200);
    }
    eventually("three more lines", Duration::from_secs(5), || {
        let n = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .count();
        if n == 40 {
            Ok(())
        } else {
            Err(format!("{n} lines"))
        }
    });
}

fn admin_endpoints_answer(driver: Driver) {
    let f = Fixture::start(driver);
    assert_eq!(f.gw.admin_get("/healthz").unwrap().0, 200);
    assert_eq!(f.gw.admin_get("/ready").unwrap().0, 200);
    assert_eq!(f.gw.admin_get("/nope").unwrap().0, 404);
    let snap = f.gw.snapshot();
    assert_eq!(snap["ready"], true);
    let workers = snap["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for w in workers {
        // 14 match entries for any host, plus host-a.example's own rule and
        // its fallthrough copies of those 14.
        assert_eq!(w["rules"].as_u64(), Some(29), "{w}");
        assert_eq!(w["listeners"].as_u64(), Some(1));
        assert!(w["applied_unix_nanos"].as_u64() >= w["published_unix_nanos"].as_u64());
        match driver {
            Driver::Uring => {
                assert_eq!(w["io_driver"], "io_uring", "{w}");
                // The default, on any kernel that runs these tests (6.1+).
                assert_eq!(w["uring_taskrun"], "defer", "{w}");
            }
            Driver::Epoll => {
                assert_eq!(w["io_driver"], "epoll", "{w}");
                assert_eq!(w["uring_taskrun"], serde_json::Value::Null, "{w}");
            }
        }
    }
}

shardgate_tests::on_both_drivers!(
    counts_every_request_exactly,
    records_every_snapshot_application,
    writes_one_access_log_line_per_request,
    admin_endpoints_answer,
);
