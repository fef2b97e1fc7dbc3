//! gRPC through GRPCRoute with real grpcio clients and servers (Python):
//! method and header matching, unary and streaming calls, trailers and
//! trailers-only errors passed through, an unmatched method answered as
//! UNIMPLEMENTED, and the client's deadline honoured.

use shardgate_tests::config::{gateway_class, stream};
use shardgate_tests::{free_port, on_both_drivers, unique_ip, Driver, Gateway, Proc};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const NS: &str = "grpc";

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("grpc/grpc_peer.py")
}

/// A grpcio server for `test.Echo` answering as `name`.
fn grpc_server(dir: &Path, ip: Ipv4Addr, name: &str) -> (Proc, SocketAddr) {
    let addr = SocketAddr::from((ip, free_port(ip)));
    let mut cmd = Command::new("python3");
    cmd.arg(peer_script())
        .args(["serve", &addr.to_string(), name])
        .stdout(Stdio::piped());
    let mut proc = Proc::spawn(name, cmd, dir.join(format!("{name}.log")));
    let mut line = String::new();
    BufReader::new(proc.stdout())
        .read_line(&mut line)
        .expect("grpc server output");
    assert_eq!(
        line.trim(),
        "listening",
        "grpc server {name} did not start (is grpcio installed? pip install grpcio):\n{}",
        proc.log()
    );
    (proc, addr)
}

fn service_at(name: &str, target: SocketAddr) -> String {
    // No appProtocol: a GRPCRoute backend speaks HTTP/2 regardless.
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  ports: [{{name: grpc, port: 8080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-0\n  namespace: {NS}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: grpc, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n",
        target.port(),
        target.ip()
    )
}

fn grpc_routes_carry_calls_statuses_and_trailers(driver: Driver) {
    let ip = unique_ip();
    let port = free_port(ip);
    let tmp = tempfile::tempdir().unwrap();
    let (_v1, v1) = grpc_server(tmp.path(), ip, "v1");
    let (_v2, v2) = grpc_server(tmp.path(), ip, "v2");
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {NS}}}\nspec:\n  gatewayClassName: shardgate\n  addresses: [{{type: IPAddress, value: {ip}}}]\n  listeners:\n  - {{name: http, protocol: HTTP, port: {port}}}\n"
    );
    let route = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: echo, namespace: {NS}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{method: {{service: test.Echo, method: Unary}}, headers: [{{name: x-route, value: v2}}]}}]\n    backendRefs: [{{name: v2, port: 8080}}]\n  - matches: [{{method: {{service: test.Echo}}}}]\n    filters:\n    - type: ResponseHeaderModifier\n      responseHeaderModifier: {{add: [{{name: x-via, value: shardgate}}]}}\n    backendRefs: [{{name: v1, port: 8080}}]\n"
    );
    let config = stream(&[
        gateway_class(),
        gateway,
        service_at("v1", v1),
        service_at("v2", v2),
        route,
    ]);
    let _gw = Gateway::start(driver, &[("config.yaml", config)]);
    let out = Command::new("python3")
        .arg(peer_script())
        .args(["call", &format!("{ip}:{port}")])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "grpc client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    assert_eq!(v["unary"], "v1:hello", "{v}");
    assert_eq!(v["unary_trailers"]["x-backend"], "v1", "trailing metadata");
    assert_eq!(
        v["unary_trailers"]["x-seen-header"], "yes",
        "request metadata"
    );
    assert_eq!(
        v["unary_v2"], "v2:hi",
        "header match picks the other backend"
    );
    let stream: Vec<String> = (0..200).map(|i| format!("v1:{i}")).collect();
    assert_eq!(v["server_stream"], serde_json::json!(stream));
    assert_eq!(v["client_stream"], "v1:300:300000");
    assert_eq!(
        v["fail"],
        serde_json::json!(["NOT_FOUND", "no such thing"]),
        "trailers-only errors pass untouched"
    );
    assert_eq!(v["unmatched"], "UNIMPLEMENTED");
    assert_eq!(v["timeout"], "DEADLINE_EXCEEDED");
}

on_both_drivers!(grpc_routes_carry_calls_statuses_and_trailers);
