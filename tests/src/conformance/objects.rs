//! The runner's stand-in for the Kubernetes API server and the controllers a cluster runs
//! beside the Gateway: it holds the objects of one test, rewrites them the way the Go
//! applier does, keeps `metadata.generation` the way the API server does, plans the echo
//! "pods" of every Deployment and writes the EndpointSlices Kubernetes' EndpointSlice
//! controller would write for them. [`Store::render`] is the config directory's content.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

/// Our controller name; every GatewayClass in the corpus gets it (`{GATEWAY_CONTROLLER_NAME}`).
pub const CONTROLLER_NAME: &str = "shardgate.dev/gateway-controller";
/// The class under test (`{GATEWAY_CLASS_NAME}`).
pub const CLASS_NAME: &str = "shardgate-conformance";
/// Container ports of echo-basic in HTTP mode: HTTP, h2c and, when the pod mounts its key
/// pair, HTTPS (`HTTPS_PORT`).
pub const HTTP_PORT: u16 = 3000;
pub const H2C_PORT: u16 = 3001;
pub const HTTPS_PORT: u16 = 8443;
/// echo-basic's defaults in TCP mode (`TCP_PORT`, `TLS_PORT`) and UDP mode (`UDP_PORT`).
pub const TCP_PORT: u16 = 3000;
pub const TLS_PORT: u16 = 8443;
pub const UDP_PORT: u16 = 8080;
/// Where the base manifests' CoreDNS listens (its Corefile says `.:53`).
pub const DNS_PORT: u16 = 53;

/// Parses a YAML stream into documents, skipping empty ones (comment-only files).
pub fn parse_stream(text: &str, what: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| format!("{what} does not parse: {e}"))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// `kind/namespace/name` of a document (`kind//name` when cluster-scoped).
pub fn object_key(doc: &Value) -> String {
    format!(
        "{}/{}/{}",
        str_at(doc, &["kind"]),
        str_at(doc, &["metadata", "namespace"]),
        str_at(doc, &["metadata", "name"])
    )
}

/// The string at `path`, or "" when absent.
pub fn str_at<'a>(doc: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(doc, |v, k| v.get(k))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The object under `key` of `doc`, created (or replacing a non-object) when missing.
/// A ready endpoint of an EndpointSlice, as Kubernetes writes it for `pod`.
pub fn endpoint(pod: &PodPlan) -> Value {
    json!({
        "addresses": [pod.ip.to_string()],
        "conditions": { "ready": true, "serving": true, "terminating": false },
        "targetRef": { "kind": "Pod", "name": pod.name, "namespace": pod.namespace },
    })
}

fn object_mut<'a>(doc: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let map = doc.as_object_mut().expect("just made an object");
    let entry = map
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("just made an object")
}

/// One test's objects, in apply order.
#[derive(Default)]
pub struct Store {
    objects: Vec<Value>,
    /// The loopback address given to each Gateway (`namespace/name`), kept across updates.
    gateway_ips: BTreeMap<String, Ipv4Addr>,
    /// The echo pods of the Deployments ([`Store::plan_pods`]); the EndpointSlices follow
    /// from them and the Services on every render.
    pods: Vec<PodPlan>,
    /// Seconds since [`CLOCK_BASE`] on the API server's clock ([`Store::tick`]).
    clock: u32,
}

/// The day the runner's API server lives in; only the order of timestamps matters.
const CLOCK_BASE: &str = "2026-01-01";

impl Store {
    /// Creates or updates `doc`, as `kubectl apply` would after the Go applier's rewrites.
    /// Returns the object's generation before the change (None when it is new).
    pub fn apply(&mut self, mut doc: Value) -> Result<Option<i64>, String> {
        if !doc.is_object() {
            return Err(format!("manifest document is not an object: {doc}"));
        }
        self.rewrite(&mut doc);
        let key = object_key(&doc);
        let existing = self.objects.iter().position(|o| object_key(o) == key);
        let (generation, before) = match existing {
            None => (1, None),
            Some(i) => {
                let old = &self.objects[i];
                let old_gen = old["metadata"]["generation"].as_i64().unwrap_or(1);
                // The API server bumps generation only when the spec changes.
                let bumped = if old.get("spec") == doc.get("spec") {
                    old_gen
                } else {
                    old_gen + 1
                };
                (bumped, Some(old_gen))
            }
        };
        // The API server stamps an object when it creates it and keeps the stamp after;
        // controllers break route conflicts by it (oldest first, then by name).
        let created = match existing {
            Some(i) => self.objects[i]["metadata"]["creationTimestamp"].clone(),
            None => json!(self.now()),
        };
        let metadata = object_mut(&mut doc, "metadata");
        metadata.insert("generation".into(), json!(generation));
        metadata.insert("creationTimestamp".into(), created);
        match existing {
            Some(i) => self.objects[i] = doc,
            None => self.objects.push(doc),
        }
        Ok(before)
    }

    /// Advances the API server's clock by one second: the Go tests that create objects
    /// mid-test wait for the earlier ones first (at least a second in the route-conflict
    /// tests), while everything applied at once shares its second, as on a cluster.
    pub fn tick(&mut self) {
        self.clock += 1;
    }

    /// The current time as Kubernetes writes it (RFC 3339, whole seconds).
    fn now(&self) -> String {
        let (h, m, s) = (self.clock / 3600, self.clock / 60 % 60, self.clock % 60);
        format!("{CLOCK_BASE}T{h:02}:{m:02}:{s:02}Z")
    }

    /// Deletes the object `doc` names; false if there was none.
    pub fn delete(&mut self, doc: &Value) -> bool {
        let key = object_key(doc);
        let before = self.objects.len();
        self.objects.retain(|o| object_key(o) != key);
        self.objects.len() != before
    }

    /// The Go applier's rewrites plus what Kubernetes adds by itself.
    fn rewrite(&mut self, doc: &mut Value) {
        let kind = str_at(doc, &["kind"]).to_owned();
        let ns = str_at(doc, &["metadata", "namespace"]).to_owned();
        let name = str_at(doc, &["metadata", "name"]).to_owned();
        match kind.as_str() {
            "Gateway" => {
                let ip = *self
                    .gateway_ips
                    .entry(format!("{ns}/{name}"))
                    .or_insert_with(crate::unique_ip);
                let spec = object_mut(doc, "spec");
                spec.insert("gatewayClassName".into(), json!(CLASS_NAME));
                // Each Gateway gets its own address: tests reuse ports 80 and 443.
                spec.insert(
                    "addresses".into(),
                    json!([{ "type": "IPAddress", "value": ip.to_string() }]),
                );
            }
            "GatewayClass" => {
                object_mut(doc, "spec").insert("controllerName".into(), json!(CONTROLLER_NAME));
            }
            "Namespace" => {
                // Kubernetes labels every namespace with its name; tests select on it.
                let labels = object_mut(&mut doc["metadata"], "labels");
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            _ => {}
        }
    }

    /// The object `kind` `namespace/name` (`name` alone for cluster-scoped kinds).
    pub fn get(&self, kind: &str, key: &str) -> Option<&Value> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        self.objects.iter().find(|o| {
            str_at(o, &["kind"]) == kind
                && str_at(o, &["metadata", "namespace"]) == ns
                && str_at(o, &["metadata", "name"]) == name
        })
    }

    /// The generation the API server would report for an object (0 if it does not exist).
    pub fn generation(&self, kind: &str, key: &str) -> i64 {
        self.get(kind, key)
            .and_then(|o| o["metadata"]["generation"].as_i64())
            .unwrap_or(0)
    }

    /// [`Store::generation`] by [`object_key`].
    pub fn generation_by_key(&self, object: &str) -> i64 {
        self.objects
            .iter()
            .find(|o| object_key(o) == object)
            .and_then(|o| o["metadata"]["generation"].as_i64())
            .unwrap_or(0)
    }

    /// Every object of `kind`.
    pub fn all<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |o| str_at(o, &["kind"]) == kind)
    }

    /// The address a Gateway listens on.
    pub fn gateway_ip(&self, key: &str) -> Option<Ipv4Addr> {
        self.gateway_ips.get(key).copied()
    }

    /// Listener names of a Gateway, in spec order.
    pub fn listener_names(&self, key: &str) -> Vec<String> {
        self.get("Gateway", key)
            .and_then(|g| g["spec"]["listeners"].as_array())
            .map(|ls| ls.iter().map(|l| str_at(l, &["name"]).to_owned()).collect())
            .unwrap_or_default()
    }

    /// Decides which pods the Deployments ask for and gives each its own address.
    pub fn plan_pods(&mut self) -> &[PodPlan] {
        let mut pods = Vec::new();
        for d in self.all("Deployment") {
            let Some(workload) = self.workload(d) else {
                continue;
            };
            let name = str_at(d, &["metadata", "name"]);
            let namespace = str_at(d, &["metadata", "namespace"]);
            let labels = d["spec"]["template"]["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
            for i in 0..replicas {
                pods.push(PodPlan {
                    // `<deployment>-<replicaset>-<pod>`: the suite strips two parts.
                    name: format!("{name}-0-{i}"),
                    deployment: name.to_owned(),
                    namespace: namespace.to_owned(),
                    labels: labels.clone(),
                    ip: crate::unique_ip(),
                    workload: workload.clone(),
                });
            }
        }
        self.pods = pods;
        &self.pods
    }

    /// What a Deployment's pods run, as far as `shardgate-echo` can stand in for it:
    /// echo-basic in gRPC, TCP or UDP mode (ECHO.md §1, the first mode variable set wins; in
    /// gRPC mode only the plaintext port), HTTP mode, or CoreDNS. `None` for anything else.
    fn workload(&self, deployment: &Value) -> Option<Workload> {
        let pod_spec = &deployment["spec"]["template"]["spec"];
        let containers = pod_spec["containers"].as_array()?;
        if containers
            .iter()
            .any(|c| str_at(c, &["image"]).contains("/coredns"))
        {
            return Some(Workload::Dns);
        }
        let echo = containers
            .iter()
            .find(|c| str_at(c, &["image"]).contains("/echo-basic"))?;
        let env = ContainerEnv(echo);
        let port = |var: &str, default: u16| env.literal(var).parse().unwrap_or(default);
        let service = env.literal("SERVICE_NAME").to_owned();
        if env.is_set("GRPC_ECHO_SERVER") {
            return Some(Workload::GrpcEcho {
                service,
                port: port("HTTP_PORT", HTTP_PORT),
            });
        }
        if env.is_set("TCP_ECHO_SERVER") {
            let ns = str_at(deployment, &["metadata", "namespace"]);
            // Like echo-basic: TLS only when both files are named (and here: readable).
            let tls = match (
                env.literal("TLS_SERVER_CERT"),
                env.literal("TLS_SERVER_PRIV_KEY"),
            ) {
                ("", _) | (_, "") => None,
                (cert, key) => self
                    .mounted_file(ns, pod_spec, echo, cert)
                    .zip(self.mounted_file(ns, pod_spec, echo, key))
                    .map(|(cert_pem, key_pem)| ServingKeyPair { cert_pem, key_pem }),
            };
            return Some(Workload::TcpEcho {
                service,
                tcp_port: port("TCP_PORT", TCP_PORT),
                tls_port: port("TLS_PORT", TLS_PORT),
                tls,
            });
        }
        if env.is_set("UDP_ECHO_SERVER") {
            return Some(Workload::UdpEcho {
                service,
                port: port("UDP_PORT", UDP_PORT),
            });
        }
        let ns = str_at(deployment, &["metadata", "namespace"]);
        // Like echo-basic: HTTPS only when both files are named (HTTP mode spells the key
        // variable TLS_SERVER_PRIVKEY), and here: readable from a mounted Secret.
        let https = match (
            env.literal("TLS_SERVER_CERT"),
            env.literal("TLS_SERVER_PRIVKEY"),
        ) {
            ("", _) | (_, "") => None,
            (cert, key) => self
                .mounted_file(ns, pod_spec, echo, cert)
                .zip(self.mounted_file(ns, pod_spec, echo, key))
                .map(|(cert_pem, key_pem)| HttpsServing {
                    port: port("HTTPS_PORT", HTTPS_PORT),
                    pair: ServingKeyPair { cert_pem, key_pem },
                    client_cas_pem: match env.literal("TLS_CLIENT_CACERTS") {
                        "" => None,
                        path => self.mounted_file(ns, pod_spec, echo, path),
                    },
                }),
        };
        Some(Workload::HttpEcho { https })
    }

    /// The content of the file at `path` in `container`, when a Secret or ConfigMap volume
    /// provides it (`items` mapping keys to paths, or every key under its own name).
    fn mounted_file(
        &self,
        namespace: &str,
        pod_spec: &Value,
        container: &Value,
        path: &str,
    ) -> Option<String> {
        let (volume, rel) = container["volumeMounts"].as_array()?.iter().find_map(|m| {
            let mount = str_at(m, &["mountPath"]).trim_end_matches('/');
            let rel = path.strip_prefix(mount)?.strip_prefix('/')?;
            Some((str_at(m, &["name"]), rel))
        })?;
        let volume = pod_spec["volumes"]
            .as_array()?
            .iter()
            .find(|v| str_at(v, &["name"]) == volume)?;
        let Some(secret) = volume.get("secret") else {
            let config_map = volume.get("configMap")?;
            let key = match config_map["items"].as_array() {
                Some(items) => str_at(
                    items.iter().find(|i| str_at(i, &["path"]) == rel)?,
                    &["key"],
                ),
                None => rel,
            };
            let name = str_at(config_map, &["name"]);
            let doc = self.get("ConfigMap", &format!("{namespace}/{name}"))?;
            return Some(str_at(doc, &["data", key]).to_owned()).filter(|t| !t.is_empty());
        };
        let key = match secret["items"].as_array() {
            Some(items) => str_at(
                items.iter().find(|i| str_at(i, &["path"]) == rel)?,
                &["key"],
            ),
            None => rel,
        };
        let name = str_at(secret, &["secretName"]);
        let doc = self.get("Secret", &format!("{namespace}/{name}"))?;
        match doc["data"].get(key).and_then(Value::as_str) {
            Some(b64) => String::from_utf8(STANDARD.decode(b64).ok()?).ok(),
            None => Some(str_at(doc, &["stringData", key]).to_owned()).filter(|t| !t.is_empty()),
        }
    }

    /// The pods planned by [`Store::plan_pods`].
    pub fn pods(&self) -> &[PodPlan] {
        &self.pods
    }

    /// The EndpointSlices Kubernetes would keep for the Services that select our pods:
    /// one per Service, ports named like the Service's ports, every pod ready.
    fn endpoint_slices(&self) -> Vec<Value> {
        let mut slices = Vec::new();
        for svc in self.all("Service") {
            let ns = str_at(svc, &["metadata", "namespace"]);
            let name = str_at(svc, &["metadata", "name"]);
            let Some(selector) = svc["spec"]["selector"]
                .as_object()
                .filter(|s| !s.is_empty())
            else {
                continue; // selector-less Services get their slices from the test itself
            };
            let pods: Vec<&PodPlan> = self
                .pods
                .iter()
                .filter(|p| p.namespace == ns && p.matches(selector))
                .collect();
            let ports: Vec<Value> = svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let target = p["targetPort"].as_u64().or_else(|| p["port"].as_u64())?;
                    let target = u16::try_from(target).ok()?;
                    let protocol = p["protocol"].as_str().unwrap_or("TCP");
                    if !pods.iter().any(|pod| pod.serves(target, protocol)) {
                        return None;
                    }
                    let mut port = json!({
                        "name": str_at(p, &["name"]),
                        "port": target,
                        "protocol": protocol,
                    });
                    if let Some(app) = p["appProtocol"].as_str() {
                        port["appProtocol"] = json!(app);
                    }
                    Some(port)
                })
                .collect();
            // Pods we cannot serve or ports they do not listen on (TLS without its Secret):
            // no slice, so the Gateway sees a Service without endpoints rather than a wrong one.
            if pods.is_empty() || ports.is_empty() {
                continue;
            }
            let endpoints: Vec<Value> = pods.iter().map(|p| endpoint(p)).collect();
            slices.push(json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{name}-conformance"),
                    "namespace": ns,
                    "labels": { "kubernetes.io/service-name": name },
                },
                "addressType": "IPv4",
                "ports": ports,
                "endpoints": endpoints,
            }));
        }
        slices
    }

    /// The config directory's single file: every object, then the derived EndpointSlices.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for doc in self.objects.iter().chain(self.endpoint_slices().iter()) {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(doc).expect("JSON values render as YAML"));
        }
        out
    }
}

/// An echo pod the runner starts for a Deployment.
#[derive(Debug, Clone)]
pub struct PodPlan {
    pub name: String,
    pub deployment: String,
    pub namespace: String,
    pub labels: Map<String, Value>,
    pub ip: Ipv4Addr,
    pub workload: Workload,
}

/// What a pod runs (see `Store::workload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// echo-basic's HTTP mode: HTTP on [`HTTP_PORT`], h2c on [`H2C_PORT`] and, with a key
    /// pair, HTTPS.
    HttpEcho { https: Option<HttpsServing> },
    /// echo-basic's TCP mode: the line protocol on `tcp_port` and, with a key pair, behind
    /// TLS on `tls_port`.
    TcpEcho {
        service: String,
        tcp_port: u16,
        tls_port: u16,
        tls: Option<ServingKeyPair>,
    },
    /// echo-basic's UDP mode.
    UdpEcho { service: String, port: u16 },
    /// echo-basic's gRPC mode: the echo service over h2c on `port` (its gRPC-over-TLS port
    /// is not served; no base Service exposes it).
    GrpcEcho { service: String, port: u16 },
    /// CoreDNS, answered by `shardgate-echo`'s DNS responder on [`DNS_PORT`].
    Dns,
}

/// echo-basic's HTTPS port in HTTP mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsServing {
    pub port: u16,
    pub pair: ServingKeyPair,
    /// `TLS_CLIENT_CACERTS`: client certificates, when sent, must chain to one of these.
    pub client_cas_pem: Option<String>,
}

/// The PEM certificate chain and key a TLS listener serves, read from its Secret volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingKeyPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl PodPlan {
    fn matches(&self, selector: &Map<String, Value>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// Whether the pod listens on container port `port` over `protocol` (`TCP`/`UDP`).
    pub fn serves(&self, port: u16, protocol: &str) -> bool {
        match (&self.workload, protocol) {
            (Workload::HttpEcho { https }, "TCP") => {
                port == HTTP_PORT
                    || port == H2C_PORT
                    || https.as_ref().is_some_and(|h| h.port == port)
            }
            (
                Workload::TcpEcho {
                    tcp_port,
                    tls_port,
                    tls,
                    ..
                },
                "TCP",
            ) => port == *tcp_port || (tls.is_some() && port == *tls_port),
            (Workload::UdpEcho { port: p, .. }, "UDP") => port == *p,
            (Workload::GrpcEcho { port: p, .. }, "TCP") => port == *p,
            (Workload::Dns, "UDP") => port == DNS_PORT,
            _ => false,
        }
    }

    /// `shardgate-echo --serve` specs for every port of the pod on its own address. A TLS
    /// listener's key pair is written to `<dir>/<pod>.crt` and `.key` first.
    pub fn serve_specs(&self, dir: &Path) -> Result<Vec<String>, String> {
        let ip = self.ip;
        let id = |service: &str| {
            format!(
                "pod={},namespace={},service={service}",
                self.name, self.namespace
            )
        };
        Ok(match &self.workload {
            Workload::HttpEcho { https } => {
                let mut specs = vec![
                    format!("{ip}:{HTTP_PORT},{}", id("")),
                    format!("{ip}:{H2C_PORT},{},h2c", id("")),
                ];
                if let Some(h) = https {
                    // Pods of same-named Deployments in other namespaces share the name.
                    let file = |ext: &str, pem: &str| {
                        let path =
                            dir.join(format!("{}.{}-https.{ext}", self.namespace, self.name));
                        std::fs::write(&path, pem)
                            .map(|()| path.display().to_string())
                            .map_err(|e| format!("{}: {e}", path.display()))
                    };
                    let mut spec = format!(
                        "{ip}:{},{},https,cert={},key={}",
                        h.port,
                        id(""),
                        file("crt", &h.pair.cert_pem)?,
                        file("key", &h.pair.key_pem)?
                    );
                    if let Some(cas) = &h.client_cas_pem {
                        spec.push_str(&format!(",clientcas={}", file("ca", cas)?));
                    }
                    specs.push(spec);
                }
                specs
            }
            Workload::TcpEcho {
                service,
                tcp_port,
                tls_port,
                tls,
            } => {
                let ports = format!("tcpport={tcp_port},tlsport={tls_port}");
                let mut specs = vec![format!("{ip}:{tcp_port},{},tcp,{ports}", id(service))];
                if let Some(pair) = tls {
                    let cert = dir.join(format!("{}.crt", self.name));
                    let key = dir.join(format!("{}.key", self.name));
                    for (path, pem) in [(&cert, &pair.cert_pem), (&key, &pair.key_pem)] {
                        std::fs::write(path, pem)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                    }
                    specs.push(format!(
                        "{ip}:{tls_port},{},tls,cert={},key={},{ports}",
                        id(service),
                        cert.display(),
                        key.display()
                    ));
                }
                specs
            }
            Workload::UdpEcho { service, port } => vec![format!("{ip}:{port},{},udp", id(service))],
            Workload::GrpcEcho { service, port } => {
                vec![format!("{ip}:{port},{},grpc", id(service))]
            }
            Workload::Dns => vec![format!("{ip}:{DNS_PORT},{},dns", id(""))],
        })
    }
}

/// A container's `env`, as echo-basic sees it.
struct ContainerEnv<'a>(&'a Value);

impl ContainerEnv<'_> {
    fn var(&self, name: &str) -> Option<&Value> {
        self.0["env"]
            .as_array()?
            .iter()
            .find(|e| str_at(e, &["name"]) == name)
    }

    /// Set and non-empty; a `valueFrom` (downward API, Secret) counts as set.
    fn is_set(&self, name: &str) -> bool {
        self.var(name)
            .is_some_and(|e| !str_at(e, &["value"]).is_empty() || e.get("valueFrom").is_some())
    }

    /// A literal `value` ("" when absent or taken from elsewhere).
    fn literal(&self, name: &str) -> &str {
        self.var(name).map_or("", |e| str_at(e, &["value"]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Value {
        parse_stream(yaml, "test").expect("parses").remove(0)
    }

    #[test]
    fn generation_moves_only_when_the_spec_changes() {
        let mut store = Store::default();
        let v1 = "kind: GatewayClass\nmetadata: {name: c}\nspec: {description: old}\n";
        assert_eq!(store.apply(doc(v1)).expect("apply"), None);
        assert_eq!(store.apply(doc(v1)).expect("apply"), Some(1));
        assert_eq!(store.generation("GatewayClass", "c"), 1);
        let v2 = "kind: GatewayClass\nmetadata: {name: c}\nspec: {description: new}\n";
        store.tick();
        store.apply(doc(v2)).expect("apply");
        assert_eq!(store.generation("GatewayClass", "c"), 2);
        let created = |store: &Store, name: &str| {
            str_at(
                store.get("GatewayClass", name).expect("kept"),
                &["metadata", "creationTimestamp"],
            )
            .to_owned()
        };
        assert_eq!(
            created(&store, "c"),
            "2026-01-01T00:00:00Z",
            "kept on update"
        );
        store
            .apply(doc("kind: GatewayClass\nmetadata: {name: d}\n"))
            .expect("apply");
        assert_eq!(created(&store, "d"), "2026-01-01T00:00:01Z");
        assert_eq!(
            str_at(
                store.get("GatewayClass", "c").expect("kept"),
                &["spec", "controllerName"]
            ),
            CONTROLLER_NAME
        );
    }

    #[test]
    fn services_get_slices_for_the_echo_pods_they_select() {
        let mut store = Store::default();
        for d in parse_stream(
            "kind: Deployment\nmetadata: {name: web, namespace: ns}\nspec:\n  replicas: 2\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{image: registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0}]}\n---\nkind: Service\nmetadata: {name: web, namespace: ns}\nspec:\n  selector: {app: web}\n  ports: [{port: 8080, targetPort: 3000}, {name: tls, port: 443, targetPort: 8443}]\n---\nkind: Service\nmetadata: {name: grpc, namespace: ns}\nspec:\n  selector: {app: grpc}\n  ports: [{port: 8080, targetPort: 3000}]\n",
            "test",
        )
        .expect("parses")
        {
            store.apply(d).expect("apply");
        }
        let pods: Vec<String> = store.plan_pods().iter().map(|p| p.name.clone()).collect();
        assert_eq!(pods, ["web-0-0", "web-0-1"]);
        let slices = store.endpoint_slices();
        assert_eq!(
            slices.len(),
            1,
            "only the Service selecting our pods: {slices:?}"
        );
        assert_eq!(
            slices[0]["ports"],
            json!([{"name": "", "port": 3000, "protocol": "TCP"}])
        );
        assert_eq!(slices[0]["endpoints"].as_array().map(Vec::len), Some(2));
    }

    /// The base manifests' tcp-backend, reduced: TCP mode with a TLS port whose key pair
    /// comes from a Secret volume through `items`.
    const TCP_BACKEND: &str = "kind: Deployment
metadata: {name: tcp-backend, namespace: ns}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: tcp-backend}}
    spec:
      containers:
      - image: registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: TLS_SERVER_CERT, value: /etc/secret-volume/crt}
        - {name: TLS_SERVER_PRIV_KEY, value: /etc/secret-volume/key}
        - {name: TCP_ECHO_SERVER, value: '1'}
        volumeMounts: [{name: secret-volume, mountPath: /etc/secret-volume}]
      volumes:
      - name: secret-volume
        secret:
          secretName: pair
          items: [{key: tls.crt, path: crt}, {key: tls.key, path: key}]
---
kind: Secret
metadata: {name: pair, namespace: ns}
data: {tls.crt: Q0VSVA==, tls.key: S0VZ}
---
kind: Service
metadata: {name: tcp-backend, namespace: ns}
spec:
  selector: {app: tcp-backend}
  ports: [{name: plain, port: 3000, targetPort: 3000}, {name: tls, port: 8443, targetPort: 8443}]
";

    fn store(yaml: &str) -> Store {
        let mut store = Store::default();
        for d in parse_stream(yaml, "test").expect("parses") {
            store.apply(d).expect("apply");
        }
        store
    }

    #[test]
    fn tcp_mode_pods_serve_tls_with_the_mounted_secret() {
        let mut store = store(TCP_BACKEND);
        let pods = store.plan_pods().to_vec();
        assert_eq!(pods.len(), 2);
        assert_eq!(
            pods[0].workload,
            Workload::TcpEcho {
                service: String::new(),
                tcp_port: TCP_PORT,
                tls_port: TLS_PORT,
                tls: Some(ServingKeyPair {
                    cert_pem: "CERT".into(),
                    key_pem: "KEY".into()
                }),
            }
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let specs = pods[0].serve_specs(dir.path()).expect("specs");
        let ip = pods[0].ip;
        let crt = dir.path().join("tcp-backend-0-0.crt");
        let key = dir.path().join("tcp-backend-0-0.key");
        assert_eq!(
            specs,
            [
                format!("{ip}:3000,pod=tcp-backend-0-0,namespace=ns,service=,tcp,tcpport=3000,tlsport=8443"),
                format!(
                    "{ip}:8443,pod=tcp-backend-0-0,namespace=ns,service=,tls,cert={},key={},tcpport=3000,tlsport=8443",
                    crt.display(),
                    key.display()
                ),
            ]
        );
        assert_eq!(std::fs::read_to_string(&key).expect("key written"), "KEY");
        let slices = store.endpoint_slices();
        assert_eq!(
            slices[0]["ports"],
            json!([
                {"name": "plain", "port": 3000, "protocol": "TCP"},
                {"name": "tls", "port": 8443, "protocol": "TCP"},
            ])
        );
    }

    #[test]
    fn without_its_secret_a_tcp_pod_serves_plaintext_only() {
        let mut store = store(&TCP_BACKEND.replace("name: pair,", "name: other,"));
        let pods = store.plan_pods().to_vec();
        assert!(matches!(
            pods[0].workload,
            Workload::TcpEcho { tls: None, .. }
        ));
        let slices = store.endpoint_slices();
        assert_eq!(
            slices[0]["ports"],
            json!([{"name": "plain", "port": 3000, "protocol": "TCP"}])
        );
    }

    /// The base manifests' tls-backend plus the client-CA mount of
    /// gateway-tls-backend-client-certificate: HTTP mode with an HTTPS port.
    const HTTPS_BACKEND: &str = "kind: Deployment
metadata: {name: tls-backend, namespace: ns}
spec:
  template:
    metadata: {labels: {app: tls-backend}}
    spec:
      containers:
      - image: registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0
        env:
        - {name: TLS_SERVER_CERT, value: /etc/secret-volume/crt}
        - {name: TLS_SERVER_PRIVKEY, value: /etc/secret-volume/key}
        - {name: TLS_CLIENT_CACERTS, value: /etc/configmap-volume/ca}
        volumeMounts:
        - {name: secret-volume, mountPath: /etc/secret-volume}
        - {name: configmap-volume, mountPath: /etc/configmap-volume}
      volumes:
      - name: secret-volume
        secret:
          secretName: pair
          items: [{key: tls.crt, path: crt}, {key: tls.key, path: key}]
      - name: configmap-volume
        configMap:
          name: cas
          items: [{key: ca.crt, path: ca}]
---
kind: Secret
metadata: {name: pair, namespace: ns}
data: {tls.crt: Q0VSVA==, tls.key: S0VZ}
---
kind: ConfigMap
metadata: {name: cas, namespace: ns}
data: {ca.crt: CAS}
---
kind: Service
metadata: {name: tls-backend, namespace: ns}
spec:
  selector: {app: tls-backend}
  ports: [{protocol: TCP, port: 443, targetPort: 8443}]
";

    #[test]
    fn http_mode_pods_serve_https_with_the_mounted_secret_and_client_cas() {
        let mut store = store(HTTPS_BACKEND);
        let pods = store.plan_pods().to_vec();
        assert_eq!(
            pods[0].workload,
            Workload::HttpEcho {
                https: Some(HttpsServing {
                    port: HTTPS_PORT,
                    pair: ServingKeyPair {
                        cert_pem: "CERT".into(),
                        key_pem: "KEY".into()
                    },
                    client_cas_pem: Some("CAS".into()),
                })
            }
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let specs = pods[0].serve_specs(dir.path()).expect("specs");
        let file = |ext: &str| dir.path().join(format!("ns.tls-backend-0-0-https.{ext}"));
        assert_eq!(
            specs[2],
            format!(
                "{}:8443,pod=tls-backend-0-0,namespace=ns,service=,https,cert={},key={},clientcas={}",
                pods[0].ip,
                file("crt").display(),
                file("key").display(),
                file("ca").display()
            )
        );
        assert_eq!(std::fs::read_to_string(file("ca")).expect("written"), "CAS");
        assert_eq!(
            store.endpoint_slices()[0]["ports"],
            json!([{"name": "", "port": 8443, "protocol": "TCP"}])
        );
    }

    #[test]
    fn without_its_secret_an_http_pod_serves_no_https() {
        let mut store = store(
            &HTTPS_BACKEND
                .replace("name: pair,", "name: other,")
                .replace("name: cas,", "name: other-cas,"),
        );
        let pods = store.plan_pods().to_vec();
        assert_eq!(pods[0].workload, Workload::HttpEcho { https: None });
        assert_eq!(
            pods[0]
                .serve_specs(Path::new("/nonexistent"))
                .expect("specs")
                .len(),
            2
        );
        assert!(store.endpoint_slices().is_empty());
    }

    #[test]
    fn udp_mode_and_coredns_pods_get_udp_endpoints() {
        let mut store = store(
            "kind: Deployment
metadata: {name: udp-backend-v1, namespace: ns}
spec:
  template:
    metadata: {labels: {app: v1}}
    spec:
      containers:
      - image: registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0
        env: [{name: UDP_ECHO_SERVER, value: '1'}, {name: SERVICE_NAME, value: udp-backend-v1}]
---
kind: Service
metadata: {name: udp-backend-v1, namespace: ns}
spec:
  selector: {app: v1}
  ports: [{name: udp, protocol: UDP, port: 8080, targetPort: 8080}, {name: tcp, port: 8080, targetPort: 8080}]
---
kind: Deployment
metadata: {name: coredns, namespace: ns}
spec:
  template:
    metadata: {labels: {app: udp}}
    spec: {containers: [{image: registry.k8s.io/coredns/coredns:v1.14.6}]}
---
kind: Service
metadata: {name: coredns, namespace: ns}
spec:
  selector: {app: udp}
  ports: [{name: udp-dns, port: 53, protocol: UDP, targetPort: 53}]
",
        );
        let pods = store.plan_pods().to_vec();
        let dir = tempfile::tempdir().expect("temp dir");
        let specs: Vec<String> = pods
            .iter()
            .flat_map(|p| p.serve_specs(dir.path()).expect("specs"))
            .collect();
        assert_eq!(
            specs,
            [
                format!(
                    "{}:8080,pod=udp-backend-v1-0-0,namespace=ns,service=udp-backend-v1,udp",
                    pods[0].ip
                ),
                format!(
                    "{}:53,pod=coredns-0-0,namespace=ns,service=,dns",
                    pods[1].ip
                ),
            ]
        );
        let slices = store.endpoint_slices();
        assert_eq!(
            slices[0]["ports"],
            json!([{"name": "udp", "port": 8080, "protocol": "UDP"}]),
            "the TCP port of the same number is not served"
        );
        assert_eq!(
            slices[1]["ports"],
            json!([{"name": "udp-dns", "port": 53, "protocol": "UDP"}])
        );
    }

    #[test]
    fn grpc_mode_wins_over_tcp_mode_and_serves_h2c_on_the_http_port() {
        let mut store = store(
            "kind: Deployment
metadata: {name: grpc, namespace: ns}
spec:
  template:
    metadata: {labels: {app: grpc}}
    spec:
      containers:
      - image: registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0
        env: [{name: GRPC_ECHO_SERVER, value: '1'}, {name: TCP_ECHO_SERVER, value: '1'}]
---
kind: Service
metadata: {name: grpc, namespace: ns}
spec:
  selector: {app: grpc}
  ports: [{port: 8080, targetPort: 3000, appProtocol: kubernetes.io/h2c}, {name: tls, port: 8443, targetPort: 8443}]
",
        );
        let pods = store.plan_pods().to_vec();
        assert_eq!(
            pods[0].workload,
            Workload::GrpcEcho {
                service: String::new(),
                port: HTTP_PORT
            }
        );
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(
            pods[0].serve_specs(dir.path()).expect("specs"),
            [format!(
                "{}:3000,pod=grpc-0-0,namespace=ns,service=,grpc",
                pods[0].ip
            )]
        );
        assert_eq!(
            store.endpoint_slices()[0]["ports"],
            json!([{"name": "", "port": 3000, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}])
        );
    }
}
