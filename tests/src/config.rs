//! Builders for the YAML the tests put in the config directory.

use crate::Pod;
use std::net::Ipv4Addr;

/// Our GatewayClass, named `shardgate`.
pub fn gateway_class() -> String {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: shardgate\nspec:\n  controllerName: shardgate.dev/gateway-controller\n".to_owned()
}

/// A Gateway on `ip` with HTTP listeners `(name, port, hostname)`.
pub fn gateway(
    ns: &str,
    name: &str,
    ip: Ipv4Addr,
    listeners: &[(&str, u16, Option<&str>)],
) -> String {
    let mut y = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  gatewayClassName: shardgate\n  addresses:\n  - type: IPAddress\n    value: {ip}\n  listeners:\n"
    );
    for (l, port, host) in listeners {
        y.push_str(&format!(
            "  - name: {l}\n    protocol: HTTP\n    port: {port}\n"
        ));
        if let Some(h) = host {
            y.push_str(&format!("    hostname: \"{h}\"\n"));
        }
        y.push_str("    allowedRoutes:\n      namespaces:\n        from: All\n");
    }
    y
}

/// A Service `name` (port 80, named `http`) with one EndpointSlice per pod.
pub fn service(ns: &str, name: &str, pods: &[&Pod]) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: 3000\n"
    );
    for (i, p) in pods.iter().enumerate() {
        y.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n- name: http\n  port: {}\nendpoints:\n- addresses: [\"{}\"]\n  conditions:\n    ready: true\n",
            p.addr.port(),
            p.addr.ip()
        ));
    }
    y
}

/// An HTTPRoute attached to Gateway `gw` in `ns`, with `hostnames` and
/// `rules` given as YAML (indented as list items under `rules:`).
pub fn http_route(ns: &str, name: &str, gw: &str, hostnames: &[&str], rules: &str) -> String {
    let mut y = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  parentRefs:\n  - name: {gw}\n"
    );
    if !hostnames.is_empty() {
        y.push_str("  hostnames:\n");
        for h in hostnames {
            y.push_str(&format!("  - \"{h}\"\n"));
        }
    }
    y.push_str("  rules:\n");
    y.push_str(rules);
    y
}

/// Joins documents into one YAML stream.
pub fn stream(docs: &[String]) -> String {
    docs.join("---\n")
}
