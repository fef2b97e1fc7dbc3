//! The standard end-to-end fixture: three echo pods, five Services (one
//! without endpoints, one pointing at a closed port), one Gateway and the
//! routes the appliance and observability suites exercise.

use crate::client::{one_shot, Client, Response};
use crate::config::{gateway, gateway_class, http_route, service, stream};
use crate::{free_port, unique_ip, Echo, Gateway, GatewayOptions, Pod};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// Namespace of every fixture object.
pub const NS: &str = "e2e";

/// Routes used by most tests. `/switch` is what the live-edit test changes.
pub fn routes(switch_to: &str) -> String {
    let main = format!(
        r#"  - matches: [{{path: {{type: Exact, value: /exact}}}}]
    backendRefs: [{{name: svc-v2, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /prefix}}}}]
    backendRefs: [{{name: svc-v3, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /v1}}}}, {{path: {{type: PathPrefix, value: /_shardgate}}}}]
    backendRefs: [{{name: svc-v1, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /hdr}}, headers: [{{name: X-Pick, value: three}}]}}]
    backendRefs: [{{name: svc-v3, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /hdr}}}}]
    backendRefs: [{{name: svc-v1, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /method}}, method: POST}}]
    backendRefs: [{{name: svc-v2, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /method}}}}]
    backendRefs: [{{name: svc-v1, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /split}}}}]
    backendRefs: [{{name: svc-v1, port: 80, weight: 90}}, {{name: svc-v2, port: 80, weight: 10}}]
  - matches: [{{path: {{type: PathPrefix, value: /invalid}}}}]
    backendRefs: [{{name: missing, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /noendpoints}}}}]
    backendRefs: [{{name: svc-empty, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /down}}}}]
    backendRefs: [{{name: svc-down, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /slow}}}}]
    timeouts: {{request: 300ms}}
    backendRefs: [{{name: svc-v1, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /switch}}}}]
    backendRefs: [{{name: {switch_to}, port: 80}}]
"#
    );
    stream(&[
        http_route(NS, "main", "gw", &[], &main),
        http_route(
            NS,
            "by-host",
            "gw",
            &["host-a.example"],
            "  - backendRefs: [{name: svc-v2, port: 80}]\n",
        ),
    ])
}

/// An address on which nothing listens: bound, then closed.
fn dead_addr(ip: Ipv4Addr) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// Echo pods, the gateway processes and the listener address.
pub struct Fixture {
    /// The echo backend.
    pub echo: Echo,
    /// Controlplane and dataplane.
    pub gw: Gateway,
    /// The Gateway listener.
    pub addr: SocketAddr,
}

impl Fixture {
    pub fn start(driver: crate::Driver) -> Self {
        Self::start_with(GatewayOptions::new(driver))
    }

    pub fn start_with(mut opts: GatewayOptions) -> Self {
        let ip = unique_ip();
        let port = free_port(ip);
        let tmp = tempfile::tempdir().expect("tmp");
        let echo = Echo::start(
            tmp.path(),
            ip,
            &[("v1-0-0", NS), ("v2-0-0", NS), ("v3-0-0", NS)],
        );
        let down = Pod {
            addr: dead_addr(ip),
            pod: "down".into(),
        };
        let services = stream(&[
            service(NS, "svc-v1", &[echo.pod("v1-0-0")]),
            service(NS, "svc-v2", &[echo.pod("v2-0-0")]),
            service(NS, "svc-v3", &[echo.pod("v3-0-0")]),
            service(NS, "svc-empty", &[]),
            service(NS, "svc-down", &[&down]),
        ]);
        opts.dataplane_args
            .extend(["--header-timeout-secs".into(), "2".into()]);
        let gw = Gateway::start_with(
            opts,
            &[
                ("class.yaml", gateway_class()),
                (
                    "gateway.yaml",
                    gateway(NS, "gw", ip, &[("http", port, None)]),
                ),
                ("services.yaml", services),
                ("routes.yaml", routes("svc-v1")),
            ],
        );
        std::mem::forget(tmp); // the echo log lives there; removed with /tmp
        Self {
            echo,
            gw,
            addr: SocketAddr::from((ip, port)),
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr).expect("connect to the gateway")
    }

    pub fn get(&self, host: &str, path: &str) -> Response {
        one_shot(self.addr, host, path).expect("request through the gateway")
    }

    pub fn echo_stats(&self, pod: &str) -> (u64, u64) {
        let r = one_shot(self.echo.pod(pod).addr, "echo", "/_shardgate/stats").expect("echo stats");
        let j = r.json();
        (
            j["connections"].as_u64().unwrap_or(0),
            j["requests"].as_u64().unwrap_or(0),
        )
    }
}
