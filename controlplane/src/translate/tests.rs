//! Translation as a pure function on object fixtures.

use super::*;
use crate::provider::file::parse_documents;
use shardgate_core::{BackendTarget, HostMatch, ListenerProtocol};
use std::path::Path;

fn store(yaml: &str) -> Store {
    let mut s = Store::default();
    for o in parse_documents(Path::new("fixture.yaml"), yaml).expect("fixture parses") {
        s.insert(o);
    }
    s
}

fn opts() -> Options {
    Options {
        default_address: "127.0.0.1".parse().unwrap(),
    }
}

const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sg}
spec: {controllerName: shardgate.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {team: a}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sg
  listeners:
  - name: same
    port: 8080
    protocol: HTTP
  - name: selected
    port: 8081
    protocol: HTTP
    hostname: "*.example.com"
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {team: a}}
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: infra}
spec:
  ports: [{name: http, port: 80, targetPort: 3000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-1, namespace: infra, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
ports: [{name: http, port: 3000}]
endpoints:
- addresses: ["127.0.0.10"]
- addresses: ["127.0.0.11"]
  conditions: {ready: false}
"#;

fn route_status<'a>(t: &'a Translation, name: &str) -> &'a RouteStatus {
    t.status
        .routes
        .iter()
        .find(|r| r.name == name)
        .expect("route status")
}

fn reason(c: &[Condition], kind: &str) -> (bool, &'static str) {
    let c = c.iter().find(|c| c.kind == kind).expect("condition");
    (c.status, c.reason)
}

#[test]
fn same_namespace_route_attaches_and_resolves_ready_endpoints() {
    let s = store(&format!(
        "{BASE}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: infra}}\nspec:\n  parentRefs: [{{name: gw, sectionName: same}}]\n  rules:\n  - backendRefs: [{{name: svc, port: 80, weight: 9}}, {{name: missing, port: 80, weight: 1}}]\n"
    ));
    let t = translate(&s, &opts());
    let r = route_status(&t, "r");
    assert_eq!(
        reason(&r.parents[0].conditions, "Accepted"),
        (true, "Accepted")
    );
    assert_eq!(
        reason(&r.parents[0].conditions, "ResolvedRefs"),
        (false, "BackendNotFound")
    );
    let l = t
        .snapshot
        .listeners
        .iter()
        .find(|l| l.name == "same")
        .unwrap();
    let rule = &l.virtual_hosts[0].rules[0];
    assert_eq!(rule.backends[0].target, BackendTarget::Backend(0));
    assert_eq!(
        rule.backends[1].target,
        BackendTarget::Invalid { status: 500 }
    );
    assert_eq!(
        t.snapshot.backends[0].endpoints,
        vec!["127.0.0.10:3000".parse().unwrap()]
    );
    let gw = &t.status.gateways[0];
    assert_eq!(gw.listeners[0].attached_routes, 1);
    assert_eq!(gw.listeners[1].attached_routes, 0);
    assert_eq!(
        t.status.classes.len(),
        1,
        "only our GatewayClass gets status"
    );
}

#[test]
fn selectors_hostnames_and_grants_give_the_spec_reasons() {
    let s = store(&format!(
        r#"{BASE}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: other-ns, namespace: elsewhere}}
spec:
  parentRefs: [{{name: gw, namespace: infra, sectionName: same}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: wrong-host, namespace: apps}}
spec:
  parentRefs: [{{name: gw, namespace: infra, sectionName: selected}}]
  hostnames: [foo.other.org]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: no-grant, namespace: apps}}
spec:
  parentRefs: [{{name: gw, namespace: infra, sectionName: selected}}]
  hostnames: [foo.example.com]
  rules: [{{backendRefs: [{{name: svc, namespace: infra, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: no-section, namespace: infra}}
spec:
  parentRefs: [{{name: gw, sectionName: nope}}]
"#
    ));
    let t = translate(&s, &opts());
    let accepted = |n| reason(&route_status(&t, n).parents[0].conditions, "Accepted");
    assert_eq!(accepted("other-ns"), (false, "NotAllowedByListeners"));
    assert_eq!(
        accepted("wrong-host"),
        (false, "NoMatchingListenerHostname")
    );
    assert_eq!(accepted("no-grant"), (true, "Accepted"));
    assert_eq!(accepted("no-section"), (false, "NoMatchingParent"));
    assert_eq!(
        reason(
            &route_status(&t, "no-grant").parents[0].conditions,
            "ResolvedRefs"
        ),
        (false, "RefNotPermitted")
    );
}

#[test]
fn rules_follow_precedence_and_fall_through_to_broader_hostnames() {
    let s = store(&format!(
        r#"{BASE}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: a, namespace: infra}}
spec:
  parentRefs: [{{name: gw, sectionName: same}}]
  hostnames: [foo.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api/}}}}]
    backendRefs: [{{name: svc, port: 80}}]
  - matches: [{{path: {{type: Exact, value: /api/exact}}}}]
    backendRefs: [{{name: svc, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: b, namespace: infra}}
spec:
  parentRefs: [{{name: gw, sectionName: same}}]
  rules:
  - backendRefs: [{{name: svc, port: 80}}]
"#
    ));
    let t = translate(&s, &opts());
    let l = t
        .snapshot
        .listeners
        .iter()
        .find(|l| l.name == "same")
        .unwrap();
    let foo = l
        .virtual_hosts
        .iter()
        .find(|v| matches!(&v.host, HostMatch::Exact(h) if h.as_str() == "foo.example.com"))
        .unwrap();
    let order: Vec<_> = foo
        .rules
        .iter()
        .map(|r| (r.source.route.name.as_str(), r.matches.path.clone()))
        .collect();
    assert_eq!(
        order,
        vec![
            ("a", PathMatch::Exact("/api/exact".into())),
            ("a", PathMatch::Prefix("/api".into())),
            ("b", PathMatch::Prefix("/".into())),
        ]
    );
}

#[test]
fn unsupported_protocol_and_conflicts_are_reported_per_listener() {
    let s = store(
        r#"
kind: GatewayClass
metadata: {name: sg}
spec: {controllerName: shardgate.dev/gateway-controller}
---
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  gatewayClassName: sg
  listeners:
  - {name: a, port: 80, protocol: HTTP}
  - {name: b, port: 80, protocol: HTTP}
  - {name: c, port: 81, protocol: SCTP}
  - {name: d, port: 82, protocol: HTTP}
"#,
    );
    let t = translate(&s, &opts());
    let gw = &t.status.gateways[0];
    assert_eq!(
        reason(&gw.listeners[0].conditions, "Conflicted"),
        (true, "HostnameConflict")
    );
    assert_eq!(
        reason(&gw.listeners[2].conditions, "Accepted"),
        (false, "UnsupportedProtocol")
    );
    assert_eq!(
        reason(&gw.listeners[3].conditions, "Programmed"),
        (true, "Programmed")
    );
    assert_eq!(
        t.snapshot.listeners.len(),
        1,
        "only the valid, unconflicted listener ships"
    );
}

#[test]
fn https_listeners_count_routes_but_are_not_programmed_yet() {
    let s = store(
        r#"
kind: GatewayClass
metadata: {name: sg}
spec: {controllerName: shardgate.dev/gateway-controller}
---
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  gatewayClassName: sg
  listeners:
  - {name: https, port: 443, protocol: HTTPS}
---
kind: Gateway
metadata: {name: bad, namespace: ns}
spec:
  gatewayClassName: sg
  listeners:
  - {name: x, port: 80, protocol: SCTP}
---
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{name: gw}]
"#,
    );
    let t = translate(&s, &opts());
    let gw = t.status.gateways.iter().find(|g| g.name == "gw").unwrap();
    assert_eq!(reason(&gw.conditions, "Accepted"), (true, "Accepted"));
    assert_eq!(gw.listeners[0].attached_routes, 1);
    assert_eq!(
        reason(&gw.listeners[0].conditions, "Programmed"),
        (false, "Invalid")
    );
    assert_eq!(
        reason(&route_status(&t, "r").parents[0].conditions, "Accepted"),
        (true, "Accepted")
    );
    assert!(
        t.snapshot.listeners.is_empty(),
        "nothing is served on a listener without certificate"
    );
    let bad = t.status.gateways.iter().find(|g| g.name == "bad").unwrap();
    assert_eq!(
        reason(&bad.conditions, "Accepted"),
        (false, "ListenersNotValid")
    );
}

/// A self-signed certificate for `name` as a Secret document.
fn tls_secret(ns: &str, secret: &str, name: &str) -> String {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    secret_doc(
        ns,
        secret,
        &cert.cert.pem(),
        &cert.signing_key.serialize_pem(),
    )
}

fn secret_doc(ns: &str, secret: &str, crt: &str, key: &str) -> String {
    let indent = |pem: &str| pem.replace('\n', "\n    ");
    format!(
        "kind: Secret\nmetadata: {{name: {secret}, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    {}\n  tls.key: |\n    {}\n",
        indent(crt),
        indent(key)
    )
}

#[test]
fn a_key_that_does_not_fit_its_certificate_is_an_invalid_ref() {
    let a = rcgen::generate_simple_self_signed(vec!["a.example.com".to_owned()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["b.example.com".to_owned()]).unwrap();
    let yaml = format!(
        "kind: GatewayClass\nmetadata: {{name: sg}}\nspec: {{controllerName: shardgate.dev/gateway-controller}}\n---\n{}---\nkind: Gateway\nmetadata: {{name: gw, namespace: ns}}\nspec:\n  gatewayClassName: sg\n  listeners:\n  - {{name: a, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: mixed}}]}}}}\n",
        secret_doc("ns", "mixed", &a.cert.pem(), &b.signing_key.serialize_pem())
    );
    let t = translate(&store(&yaml), &opts());
    let c = &t.status.gateways[0].listeners[0].conditions;
    assert_eq!(reason(c, "ResolvedRefs"), (false, "InvalidCertificateRef"));
    assert!(t.snapshot.listeners.is_empty());
}

#[test]
fn valid_certificates_travel_once_with_their_listeners() {
    let yaml = format!(
        r#"
kind: GatewayClass
metadata: {{name: sg}}
spec: {{controllerName: shardgate.dev/gateway-controller}}
---
{}
---
kind: Gateway
metadata: {{name: gw, namespace: ns}}
spec:
  gatewayClassName: sg
  listeners:
  - {{name: a, port: 443, protocol: HTTPS, hostname: a.example.com, tls: {{certificateRefs: [{{name: cert}}]}}}}
  - {{name: b, port: 443, protocol: HTTPS, hostname: b.example.com, tls: {{certificateRefs: [{{name: cert}}]}}}}
  - {{name: broken, port: 443, protocol: HTTPS, hostname: c.example.com, tls: {{certificateRefs: [{{name: missing}}]}}}}
"#,
        tls_secret("ns", "cert", "*.example.com")
    );
    let t = translate(&store(&yaml), &opts());
    let served: Vec<(&str, &[u32])> = t
        .snapshot
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.certificates.as_slice()))
        .collect();
    assert_eq!(served, vec![("a", &[0][..]), ("b", &[0][..])]);
    assert_eq!(t.snapshot.certificates.len(), 1);
    assert_eq!(t.snapshot.certificates[0].name, "ns/cert");
    let gw = &t.status.gateways[0];
    assert_eq!(
        reason(&gw.listeners[0].conditions, "Programmed"),
        (true, "Programmed")
    );
    assert_eq!(
        reason(&gw.listeners[2].conditions, "ResolvedRefs"),
        (false, "InvalidCertificateRef")
    );
    // The snapshot with its key material round-trips the codec.
    let decoded = shardgate_core::decode(&shardgate_core::encode(&t.snapshot)).unwrap();
    assert_eq!(decoded, t.snapshot);
}

#[test]
fn l4_routes_attach_by_kind_and_the_oldest_tcp_route_wins() {
    let yaml = r#"
kind: GatewayClass
metadata: {name: sg}
spec: {controllerName: shardgate.dev/gateway-controller}
---
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  gatewayClassName: sg
  listeners:
  - {name: tcp, port: 9000, protocol: TCP}
  - {name: udp, port: 9000, protocol: UDP}
  - {name: tls, port: 9443, protocol: TLS, hostname: "*.example.com", tls: {mode: Passthrough}}
---
kind: Service
metadata: {name: svc, namespace: ns}
spec: {ports: [{port: 3000}]}
---
kind: TCPRoute
metadata: {name: newer, namespace: ns, creationTimestamp: "2026-01-02T00:00:00Z"}
spec: {parentRefs: [{name: gw, sectionName: tcp}], rules: [{backendRefs: [{name: svc, port: 3000}]}]}
---
kind: TCPRoute
metadata: {name: older, namespace: ns, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {parentRefs: [{name: gw, sectionName: tcp}], rules: [{backendRefs: [{name: svc, port: 3000}]}]}
---
kind: UDPRoute
metadata: {name: dns, namespace: ns}
spec: {parentRefs: [{name: gw, sectionName: tcp}], rules: [{backendRefs: [{name: svc, port: 3000}]}]}
---
kind: UDPRoute
metadata: {name: dns2, namespace: ns}
spec: {parentRefs: [{name: gw, sectionName: udp}], rules: [{backendRefs: [{name: nope, port: 53}]}]}
---
kind: TLSRoute
metadata: {name: tls, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  hostnames: [abc.example.com, other.org]
  rules: [{backendRefs: [{name: svc, port: 3000}]}]
"#;
    let t = translate(&store(yaml), &opts());
    let gw = &t.status.gateways[0];
    let attached: Vec<u32> = gw.listeners.iter().map(|l| l.attached_routes).collect();
    assert_eq!(attached, vec![2, 1, 1]);
    for l in &gw.listeners {
        assert_eq!(reason(&l.conditions, "Conflicted"), (false, "NoConflicts"));
    }
    for r in ["newer", "older", "tls"] {
        assert_eq!(
            reason(&route_status(&t, r).parents[0].conditions, "Accepted"),
            (true, "Accepted"),
            "{r}"
        );
    }
    assert_eq!(
        reason(&route_status(&t, "dns").parents[0].conditions, "Accepted"),
        (false, "NotAllowedByListeners")
    );
    assert_eq!(
        reason(
            &route_status(&t, "dns2").parents[0].conditions,
            "ResolvedRefs"
        ),
        (false, "BackendNotFound")
    );
    let tcp = t
        .snapshot
        .listeners
        .iter()
        .find(|l| l.name == "tcp")
        .unwrap();
    assert_eq!(tcp.virtual_hosts[0].rules[0].source.route.name, "older");
    let tls = t
        .snapshot
        .listeners
        .iter()
        .find(|l| l.name == "tls")
        .unwrap();
    assert_eq!(tls.protocol, ListenerProtocol::TlsPassthrough);
    assert_eq!(
        tls.virtual_hosts
            .iter()
            .map(|v| v.host.clone())
            .collect::<Vec<_>>(),
        vec![HostMatch::Exact(
            Hostname::try_from("abc.example.com").unwrap()
        )]
    );
}

#[test]
fn certificate_refs_resolve_to_valid_secrets_or_say_why_not() {
    let base = r#"
kind: GatewayClass
metadata: {name: sg}
spec: {controllerName: shardgate.dev/gateway-controller}
---
kind: Secret
metadata: {name: bad-pem, namespace: ns}
type: kubernetes.io/tls
stringData: {tls.crt: "not pem", tls.key: "not pem"}
---
kind: Secret
metadata: {name: other, namespace: elsewhere}
type: kubernetes.io/tls
stringData: {tls.crt: "x", tls.key: "y"}
---
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  gatewayClassName: sg
  listeners:
  - {name: missing, port: 443, protocol: HTTPS, hostname: a.example, tls: {certificateRefs: [{name: nope}]}}
  - {name: malformed, port: 443, protocol: HTTPS, hostname: b.example, tls: {certificateRefs: [{name: bad-pem}]}}
  - {name: cross, port: 443, protocol: HTTPS, hostname: c.example, tls: {certificateRefs: [{name: other, namespace: elsewhere}]}}
  - {name: kind, port: 443, protocol: HTTPS, hostname: d.example, tls: {certificateRefs: [{name: x, kind: ConfigMap}]}}
"#;
    let t = translate(&store(base), &opts());
    let gw = &t.status.gateways[0];
    let resolved = |i: usize| reason(&gw.listeners[i].conditions, "ResolvedRefs");
    assert_eq!(resolved(0), (false, "InvalidCertificateRef"));
    assert_eq!(resolved(1), (false, "InvalidCertificateRef"));
    assert_eq!(resolved(2), (false, "RefNotPermitted"));
    assert_eq!(resolved(3), (false, "InvalidCertificateRef"));
}

#[test]
fn supported_features_are_the_claimed_conformance_features() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance.yaml");
    let text = std::fs::read_to_string(&path).expect("conformance.yaml at the repository root");
    let claims: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let mut claimed: Vec<&str> = claims["claimed"]
        .as_sequence()
        .expect("claimed list")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    claimed.sort_unstable();
    let mut ours = SUPPORTED_FEATURES.to_vec();
    ours.sort_unstable();
    assert_eq!(ours, claimed);
}

#[test]
fn grpc_routes_attach_to_http_listeners_and_speak_h2c_to_backends() {
    let yaml = r#"
kind: GatewayClass
metadata: {name: sg}
spec: {controllerName: shardgate.dev/gateway-controller}
---
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  gatewayClassName: sg
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
kind: Service
metadata: {name: svc, namespace: other}
spec: {ports: [{port: 8080}]}
---
kind: GRPCRoute
metadata: {name: g, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{method: {service: pkg.Svc, method: Get}}]
    backendRefs: [{name: svc, namespace: other, port: 8080}]
---
kind: ReferenceGrant
metadata: {name: grant, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: ns}]
  to: [{group: "", kind: Service}]
"#;
    // The grant is for HTTPRoutes only: the GRPCRoute's ref is not permitted.
    let t = translate(&store(yaml), &opts());
    let status = route_status(&t, "g");
    assert_eq!(
        reason(&status.parents[0].conditions, "ResolvedRefs"),
        (false, "RefNotPermitted")
    );
    let granted = yaml.replace(
        "kind: HTTPRoute, namespace: ns",
        "kind: GRPCRoute, namespace: ns",
    );
    let t = translate(&store(&granted), &opts());
    let status = route_status(&t, "g");
    assert_eq!(
        reason(&status.parents[0].conditions, "Accepted"),
        (true, "Accepted")
    );
    assert_eq!(
        reason(&status.parents[0].conditions, "ResolvedRefs"),
        (true, "ResolvedRefs")
    );
    let rule = &t.snapshot.listeners[0].virtual_hosts[0].rules[0];
    assert_eq!(rule.source.kind, "GRPCRoute");
    assert_eq!(rule.matches.path, PathMatch::Exact("/pkg.Svc/Get".into()));
    assert_eq!(
        t.snapshot.backends[0].protocol,
        shardgate_core::AppProtocol::H2c
    );
}
