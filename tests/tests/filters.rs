//! HTTPRoute filters end to end: header modifiers, redirects, rewrites and
//! mirrors, on both io drivers.

use shardgate_tests::config::{gateway, gateway_class, http_route, service, stream};
use shardgate_tests::{eventually, free_port, unique_ip, Driver, Echo, Gateway};
use std::net::SocketAddr;
use std::time::Duration;

const NS: &str = "flt";

struct Setup {
    echo: Echo,
    _gw: Gateway,
    addr: SocketAddr,
}

fn start(driver: Driver) -> Setup {
    let ip = unique_ip();
    let port = free_port(ip);
    let tmp = tempfile::tempdir().unwrap();
    let echo = Echo::start(tmp.path(), ip, &[("main-0-0", NS), ("mirror-0-0", NS)]);
    let rules = r#"  - matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Set, value: set-value}]
        add: [{name: X-Add, value: added}]
        remove: [X-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Resp-Set, value: resp}]
        remove: [X-Content-Type-Options]
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /redirect}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: example.org, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /moved}}
  - matches: [{path: {type: PathPrefix, value: /port}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 8443}
  - matches: [{path: {type: PathPrefix, value: /rewrite}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: rewritten.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /replaced}}
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: mirror, port: 80}}
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /cors}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1]
        exposeHeaders: [x-header-3]
        allowCredentials: true
        maxAge: 3600
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry}}]
    retry: {codes: [500], attempts: 3, backoff: 1ms}
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry}, headers: [{name: X-No-Retry, value: "1"}]}]
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /backend-filter}}]
    backendRefs:
    - name: main
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: X-Backend, value: main}]}
"#;
    let gw = Gateway::start(
        driver,
        &[
            ("class.yaml", gateway_class()),
            (
                "gateway.yaml",
                gateway(NS, "gw", ip, &[("http", port, None)]),
            ),
            (
                "services.yaml",
                stream(&[
                    service(NS, "main", &[echo.pod("main-0-0")]),
                    service(NS, "mirror", &[echo.pod("mirror-0-0")]),
                ]),
            ),
            ("routes.yaml", http_route(NS, "filters", "gw", &[], rules)),
        ],
    );
    std::mem::forget(tmp);
    Setup {
        echo,
        _gw: gw,
        addr: SocketAddr::from((ip, port)),
    }
}

fn header_modifiers_edit_requests_and_responses(driver: Driver) {
    let s = start(driver);
    let mut c = shardgate_tests::client::Client::connect(s.addr).unwrap();
    let r = c
        .request(
            "GET",
            "a",
            "/headers",
            &[
                ("X-Set", "old"),
                ("X-Add", "first"),
                ("X-Remove", "gone"),
                ("X-Keep", "k"),
            ],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert_eq!(h["X-Set"], serde_json::json!(["set-value"]));
    assert_eq!(h["X-Add"], serde_json::json!(["first,added"]));
    assert!(h.get("X-Remove").is_none(), "{h}");
    assert_eq!(h["X-Keep"], serde_json::json!(["k"]));
    assert_eq!(r.header("x-resp-set"), Some("resp"));
    assert_eq!(r.header("x-content-type-options"), None);
    let r = c.get("a", "/backend-filter").unwrap();
    assert_eq!(
        r.json()["headers"]["X-Backend"],
        serde_json::json!(["main"])
    );
}

fn redirects_build_the_location(driver: Driver) {
    let s = start(driver);
    let mut c = shardgate_tests::client::Client::connect(s.addr).unwrap();
    let r = c.get("a.example", "/redirect/x?q=1").unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://example.org/moved/x?q=1")
    );
    let r = c.get("a.example", "/port").unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://a.example:8443/port"));
}

fn rewrites_host_and_path(driver: Driver) {
    let s = start(driver);
    let mut c = shardgate_tests::client::Client::connect(s.addr).unwrap();
    let r = c.get("a.example", "/rewrite/deep?x=y").unwrap();
    assert_eq!(r.json()["path"], "/new/deep?x=y");
    assert_eq!(r.json()["host"], "rewritten.example");
    let r = c.get("a.example", "/full/anything").unwrap();
    assert_eq!(r.json()["path"], "/replaced");
}

fn mirrors_copy_requests_without_waiting(driver: Driver) {
    let s = start(driver);
    let stats = |pod: &str| {
        let r = shardgate_tests::client::one_shot(s.echo.pod(pod).addr, "e", "/_shardgate/stats")
            .unwrap();
        r.json()["requests"].as_u64().unwrap()
    };
    let mut c = shardgate_tests::client::Client::connect(s.addr).unwrap();
    for _ in 0..5 {
        let r = c.get("a", "/mirror").unwrap();
        assert_eq!(r.pod(), "main-0-0");
    }
    eventually(
        "the mirror received every request",
        Duration::from_secs(5),
        || {
            let n = stats("mirror-0-0");
            if n == 5 {
                Ok(())
            } else {
                Err(format!("{n} mirrored"))
            }
        },
    );
}

fn cors_answers_preflights_and_decorates_responses(driver: Driver) {
    let s = start(driver);
    let mut c = shardgate_tests::client::Client::connect(s.addr).unwrap();
    let pre = [
        ("Origin", "https://a.bar.com"),
        ("Access-Control-Request-Method", "GET"),
    ];
    let r = c.request("OPTIONS", "a", "/cors", &pre, None).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.pod(), "-", "preflights are answered by the gateway");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.bar.com")
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, OPTIONS")
    );
    assert_eq!(r.header("access-control-allow-headers"), Some("x-header-1"));
    assert_eq!(r.header("access-control-max-age"), Some("3600"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let denied = [
        ("Origin", "https://foobar.com"),
        ("Access-Control-Request-Method", "GET"),
    ];
    let r = c.request("OPTIONS", "a", "/cors", &denied, None).unwrap();
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = c
        .request(
            "GET",
            "a",
            "/cors",
            &[("Origin", "https://www.foo.com")],
            None,
        )
        .unwrap();
    assert_eq!(r.pod(), "main-0-0");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://www.foo.com")
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-header-3")
    );
    let r = c
        .request(
            "GET",
            "a",
            "/cors",
            &[("Origin", "https://foobar.com")],
            None,
        )
        .unwrap();
    assert_eq!(r.header("access-control-allow-origin"), None);
}

fn retries_replayable_requests(driver: Driver) {
    let s = start(driver);
    let mut c = shardgate_tests::client::Client::connect(s.addr).unwrap();
    let id = |tag: &str| format!("{tag}-{:?}-{}", driver, std::process::id());
    // Two 500s, then success: three tries fit in three retries.
    let r = c
        .get(
            "a",
            &format!(
                "/retry/status?uuid={}&succeedAfter=2&responseCode=500",
                id("status")
            ),
        )
        .unwrap();
    assert_eq!(r.status, 200, "retried past two 500s");
    // Connection resets are retried too.
    let r = c
        .get(
            "a",
            &format!("/retry/reset?uuid={}&succeedAfter=2", id("reset")),
        )
        .unwrap();
    assert_eq!(r.status, 200, "retried past two resets");
    // More failures than attempts: the last failure is answered.
    let r = c
        .get(
            "a",
            &format!(
                "/retry/many?uuid={}&succeedAfter=9&responseCode=500",
                id("many")
            ),
        )
        .unwrap();
    assert_eq!(r.status, 500);
    // Without a retry policy the first failure is the answer.
    let path = format!(
        "/retry/none?uuid={}&succeedAfter=2&responseCode=500",
        id("none")
    );
    let r = c
        .request("GET", "a", &path, &[("X-No-Retry", "1")], None)
        .unwrap();
    assert_eq!(r.status, 500);
}

shardgate_tests::on_both_drivers!(
    header_modifiers_edit_requests_and_responses,
    redirects_build_the_location,
    rewrites_host_and_path,
    mirrors_copy_requests_without_waiting,
    cors_answers_preflights_and_decorates_responses,
    retries_replayable_requests,
);
