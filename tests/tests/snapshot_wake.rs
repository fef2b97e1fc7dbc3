//! The snapshot wake end to end. With `--poll-ms` at ten minutes, workers
//! poll the segment once at start and then only when the wake thread nudges
//! them, so everything here reaches the workers through the futex wake: edits,
//! an injected bad snapshot, and the segment a fresh controlplane creates
//! after the old one was deleted. Every test runs on io_uring and epoll.

use shardgate_tests::fixture::{routes, Fixture};
use shardgate_tests::{eventually, Driver, GatewayOptions};
use std::time::Duration;

fn without_polling(driver: Driver) -> Fixture {
    let mut opts = GatewayOptions::new(driver);
    opts.dataplane_args
        .extend(["--poll-ms".into(), "600000".into()]);
    Fixture::start_with(opts)
}

fn switch_answers_from(f: &Fixture, pod: &str) {
    eventually(
        &format!("/switch answers from {pod}"),
        Duration::from_secs(10),
        || match f.get("a", "/switch").pod().as_str() {
            p if p == pod => Ok(()),
            other => Err(format!("answered by {other}")),
        },
    );
}

fn edits_apply_on_every_worker_by_wake_alone(driver: Driver) {
    let f = without_polling(driver);
    for (service, pod) in [
        ("svc-v2", "v2-0-0"),
        ("svc-v3", "v3-0-0"),
        ("svc-v1", "v1-0-0"),
    ] {
        let generation = f.gw.generation();
        f.gw.write_config("routes.yaml", &routes(service));
        f.gw.wait_generation_above(generation);
        switch_answers_from(&f, pod);
    }
}

fn an_injected_snapshot_is_rejected_by_wake_alone(driver: Driver) {
    let f = without_polling(driver);
    shardgate_core::shm::inject_for_testing(&f.gw.shm, b"not a snapshot").expect("inject");
    eventually(
        "every worker rejects the injected snapshot",
        Duration::from_secs(10),
        || {
            let workers = f.gw.snapshot()["workers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !workers.is_empty() && workers.iter().all(|w| w["rejected"].as_u64() == Some(1)) {
                Ok(())
            } else {
                Err(format!("{workers:?}"))
            }
        },
    );
}

/// The controlplane's generation in force, from its admin `/status`.
fn published_generation(f: &Fixture) -> u64 {
    let (_, body) = f.gw.cp_admin_get("/status").expect("controlplane /status");
    let status: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    status["generation"]
        .as_u64()
        .expect("generation in /status")
}

/// With neither wake nor poll tick, a publication still takes effect for
/// the very next request a worker routes: the request path looks at the
/// segment's generation (what keeps a worker too busy to collect its wake
/// up to date).
fn the_next_request_applies_a_publication_by_itself(driver: Driver) {
    let mut opts = GatewayOptions::new(driver);
    opts.dataplane_args
        .extend(["--no-snapshot-wake", "--poll-ms", "600000"].map(String::from));
    let f = Fixture::start_with(opts);
    for (service, pod) in [
        ("svc-v2", "v2-0-0"),
        ("svc-v3", "v3-0-0"),
        ("svc-v1", "v1-0-0"),
    ] {
        let before = published_generation(&f);
        f.gw.write_config("routes.yaml", &routes(service));
        eventually(
            "the controlplane publishes the edit",
            Duration::from_secs(10),
            || match published_generation(&f) {
                g if g > before => Ok(()),
                g => Err(format!("generation {g}")),
            },
        );
        // No retry: whichever worker takes it, this request sees the edit.
        for _ in 0..4 {
            assert_eq!(
                f.get("a", "/switch").pod(),
                pod,
                "after publishing {service}"
            );
        }
    }
}

fn a_replaced_segment_is_followed_by_wake_alone(driver: Driver) {
    let mut f = without_polling(driver);
    f.gw.kill_controlplane();
    std::fs::remove_file(&f.gw.shm).expect("remove the segment");
    f.gw.write_config("routes.yaml", &routes("svc-v3"));
    // A new segment file (new inode) at the same path, starting over at
    // generation 1: workers must notice the replacement, not just a change.
    f.gw.start_controlplane();
    switch_answers_from(&f, "v3-0-0");
}

shardgate_tests::on_both_drivers!(
    edits_apply_on_every_worker_by_wake_alone,
    an_injected_snapshot_is_rejected_by_wake_alone,
    a_replaced_segment_is_followed_by_wake_alone,
    the_next_request_applies_a_publication_by_itself,
);
