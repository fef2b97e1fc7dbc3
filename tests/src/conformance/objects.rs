//! The runner's stand-in for the Kubernetes API server and the controllers a cluster runs
//! beside the Gateway: it holds the objects of one test, rewrites them the way the Go
//! applier does, keeps `metadata.generation` the way the API server does, plans the echo
//! "pods" of every Deployment and writes the EndpointSlices Kubernetes' EndpointSlice
//! controller would write for them. [`Store::render`] is the config directory's content.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Our controller name; every GatewayClass in the corpus gets it (`{GATEWAY_CONTROLLER_NAME}`).
pub const CONTROLLER_NAME: &str = "shardgate.dev/gateway-controller";
/// The class under test (`{GATEWAY_CLASS_NAME}`).
pub const CLASS_NAME: &str = "shardgate-conformance";
/// Container ports of echo-basic in HTTP mode that `shardgate-echo` can serve: HTTP and h2c.
/// HTTPS (8443) is not served, so Services that target it get no endpoints.
pub const HTTP_PORT: u16 = 3000;
pub const H2C_PORT: u16 = 3001;

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
}

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
        object_mut(&mut doc, "metadata").insert("generation".into(), json!(generation));
        match existing {
            Some(i) => self.objects[i] = doc,
            None => self.objects.push(doc),
        }
        Ok(before)
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
            let Some(template) = serve_mode(d) else {
                continue;
            };
            let name = str_at(d, &["metadata", "name"]);
            let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
            for i in 0..replicas {
                pods.push(PodPlan {
                    // `<deployment>-<replicaset>-<pod>`: the suite strips two parts.
                    name: format!("{name}-0-{i}"),
                    deployment: name.to_owned(),
                    namespace: str_at(d, &["metadata", "namespace"]).to_owned(),
                    labels: template.clone(),
                    ip: crate::unique_ip(),
                });
            }
        }
        self.pods = pods;
        &self.pods
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
                    if target != u64::from(HTTP_PORT) && target != u64::from(H2C_PORT) {
                        return None;
                    }
                    let mut port = json!({
                        "name": str_at(p, &["name"]),
                        "port": target,
                        "protocol": p["protocol"].as_str().unwrap_or("TCP"),
                    });
                    if let Some(app) = p["appProtocol"].as_str() {
                        port["appProtocol"] = json!(app);
                    }
                    Some(port)
                })
                .collect();
            // Pods we cannot serve (TLS, gRPC, TCP, UDP) or ports we do not listen on: no
            // slice, so the Gateway sees a Service without endpoints rather than a wrong one.
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
}

impl PodPlan {
    fn matches(&self, selector: &Map<String, Value>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// `shardgate-echo --serve` specs: HTTP on 3000 and h2c on 3001 of the pod's address.
    pub fn serve_specs(&self) -> [String; 2] {
        let id = format!("pod={},namespace={}", self.name, self.namespace);
        [
            format!("{}:{HTTP_PORT},{id}", self.ip),
            format!("{}:{H2C_PORT},{id},h2c", self.ip),
        ]
    }
}

/// The pod template labels of a Deployment we can serve: echo-basic in HTTP mode (ECHO.md
/// §1: `GRPC_ECHO_SERVER`, `TCP_ECHO_SERVER` or `UDP_ECHO_SERVER` pick another mode), not
/// CoreDNS or anything else.
fn serve_mode(deployment: &Value) -> Option<Map<String, Value>> {
    let template = &deployment["spec"]["template"];
    let containers = template["spec"]["containers"].as_array()?;
    let echo = containers
        .iter()
        .find(|c| str_at(c, &["image"]).contains("/echo-basic"))?;
    let other_mode = echo["env"].as_array().into_iter().flatten().any(|e| {
        let set = !str_at(e, &["value"]).is_empty() || e.get("valueFrom").is_some();
        set && matches!(
            str_at(e, &["name"]),
            "GRPC_ECHO_SERVER" | "TCP_ECHO_SERVER" | "UDP_ECHO_SERVER"
        )
    });
    if other_mode {
        return None;
    }
    Some(
        template["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )
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
        store.apply(doc(v2)).expect("apply");
        assert_eq!(store.generation("GatewayClass", "c"), 2);
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
}
