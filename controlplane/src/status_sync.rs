//! Status write-back in Kubernetes mode.
//!
//! Translation computes what status our objects should have; this module
//! compares it with what the API holds (the watch cache in the store) and
//! merge-patches the `/status` subresource where they differ:
//!
//! - GatewayClasses and Gateways of ours: we own `status`, and write the
//!   fields we compute (conditions, supportedFeatures, addresses, listeners).
//! - Routes: `status.parents` is shared with every controller whose Gateway
//!   the route names. We write the list back with other controllers' entries
//!   untouched and ours replaced, and the patch carries the
//!   `metadata.resourceVersion` we read: if anyone wrote in between, the API
//!   answers 409, we re-read and try again, so we never clobber another
//!   controller's entry. Our entries for Gateways the route no longer names
//!   are removed.
//! - A condition whose status and reason did not change keeps the
//!   `lastTransitionTime` the API holds, so a restart or a new leader does
//!   not rewrite every condition's time.
//! - Nothing is written when nothing differs. Writes are rate-limited (token
//!   bucket) and retried with exponential backoff; only the Lease holder
//!   writes.

use crate::admin::Metrics;
use crate::leader::Leadership;
use crate::status::CONTROLLER_NAME;
use crate::store::Store;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The field manager our patches are recorded under.
pub const FIELD_MANAGER: &str = "shardgate-controlplane";

/// One object whose status may need writing.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// `GatewayClass`, `Gateway`, `HTTPRoute`, ….
    pub kind: String,
    /// `group/version`.
    pub api_version: String,
    /// Namespace (none for GatewayClass).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The resourceVersion the current status was read at.
    pub resource_version: Option<String>,
    /// The status the API holds (null when none).
    pub current: Value,
    /// What translation wants: the whole status for classes and Gateways,
    /// `{"parents": [our entries]}` for routes.
    pub desired: Value,
}

/// Serialises `v` through the typed status, so that values compare equal
/// exactly when the API would store the same thing.
fn round_trip<S: Serialize + DeserializeOwned>(_typed: &Option<S>, v: Value) -> Value {
    match serde_json::from_value::<S>(v.clone()) {
        Ok(s) => serde_json::to_value(&s).unwrap_or(v),
        Err(_) => v,
    }
}

/// Runs `$body` with `$o` bound to the stored object `$kind`/`$ns`/`$name`.
macro_rules! with_object {
    ($store:expr, $kind:expr, $ns:expr, $name:expr, |$o:ident| $body:expr) => {{
        let key = ($ns.to_owned(), $name.to_owned());
        match $kind {
            "GatewayClass" => $store.gateway_classes.get($name).map(|$o| $body),
            "Gateway" => $store.gateways.get(&key).map(|$o| $body),
            "HTTPRoute" => $store.http_routes.get(&key).map(|$o| $body),
            "GRPCRoute" => $store.grpc_routes.get(&key).map(|$o| $body),
            "TLSRoute" => $store.tls_routes.get(&key).map(|$o| $body),
            "TCPRoute" => $store.tcp_routes.get(&key).map(|$o| $body),
            "UDPRoute" => $store.udp_routes.get(&key).map(|$o| $body),
            _ => None,
        }
    }};
}

/// Routes whose status holds entries of ours, as `(kind, version, key)`.
macro_rules! routes_with_our_entries {
    ($store:expr, $out:ident, $($field:ident => $kind:literal, $version:literal),*) => {
        $(
            for ((ns, name), r) in &$store.$field {
                let ours = r
                    .status
                    .as_ref()
                    .is_some_and(|s| s.parents.iter().any(|p| p.controller_name == CONTROLLER_NAME));
                if ours {
                    $out.push(($kind, $version, ns.clone(), name.clone()));
                }
            }
        )*
    };
}

/// Builds the items for rendered status documents (see
/// [`crate::status::StatusBook::render`]), reading current status from the
/// store. Routes that carry entries of ours but no longer attach to any of
/// our Gateways get an item that removes those entries.
pub fn items(docs: &[Value], store: &Store) -> Vec<Item> {
    let mut out = Vec::with_capacity(docs.len());
    let mut seen = std::collections::HashSet::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default().to_owned();
        let ns = d["metadata"]["namespace"].as_str().map(str::to_owned);
        let name = d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut desired = d["status"].clone();
        if kind != "GatewayClass" && kind != "Gateway" {
            desired = json!({ "parents": desired["parents"].clone() });
        }
        seen.insert((kind.clone(), ns.clone().unwrap_or_default(), name.clone()));
        out.push(item(
            store,
            &kind,
            d["apiVersion"].as_str().unwrap_or_default(),
            ns,
            &name,
            desired,
        ));
    }
    let mut stale = Vec::new();
    routes_with_our_entries!(store, stale,
        http_routes => "HTTPRoute", "v1",
        grpc_routes => "GRPCRoute", "v1",
        tls_routes => "TLSRoute", "v1",
        tcp_routes => "TCPRoute", "v1alpha2",
        udp_routes => "UDPRoute", "v1alpha2");
    for (kind, version, ns, name) in stale {
        if seen.contains(&(kind.to_owned(), ns.clone(), name.clone())) {
            continue;
        }
        out.push(item(
            store,
            kind,
            &format!("gateway.networking.k8s.io/{version}"),
            Some(ns),
            &name,
            json!({ "parents": [] }),
        ));
    }
    out
}

fn item(
    store: &Store,
    kind: &str,
    api_version: &str,
    namespace: Option<String>,
    name: &str,
    desired: Value,
) -> Item {
    let ns = namespace.clone().unwrap_or_default();
    let found = with_object!(store, kind, ns.as_str(), name, |o| (
        o.metadata.resource_version.clone(),
        serde_json::to_value(&o.status).unwrap_or(Value::Null),
        round_trip(&o.status, desired.clone()),
    ));
    let (resource_version, current, desired) = found.unwrap_or((None, Value::Null, desired));
    Item {
        kind: kind.to_owned(),
        api_version: api_version.to_owned(),
        namespace,
        name: name.to_owned(),
        resource_version,
        current,
        desired,
    }
}

/// Copies `lastTransitionTime` from `current` into each condition of
/// `desired` whose type, status and reason are unchanged.
fn keep_times(desired: &mut Value, current: &Value) {
    let (Some(list), Some(cur)) = (desired.as_array_mut(), current.as_array()) else {
        return;
    };
    for c in list {
        let same = cur.iter().find(|o| {
            o["type"] == c["type"] && o["status"] == c["status"] && o["reason"] == c["reason"]
        });
        if let Some(o) = same {
            if !o["lastTransitionTime"].is_null() {
                c["lastTransitionTime"] = o["lastTransitionTime"].clone();
            }
        }
    }
}

/// The status to merge-patch, or `None` when the API already holds it.
pub fn plan(item: &Item) -> Option<Value> {
    let current = &item.current;
    let mut desired = item.desired.clone();
    match item.kind.as_str() {
        "GatewayClass" => keep_times(&mut desired["conditions"], &current["conditions"]),
        "Gateway" => {
            keep_times(&mut desired["conditions"], &current["conditions"]);
            let cur_listeners = current["listeners"].as_array().cloned().unwrap_or_default();
            if let Some(ls) = desired["listeners"].as_array_mut() {
                for l in ls {
                    if let Some(c) = cur_listeners.iter().find(|c| c["name"] == l["name"]) {
                        keep_times(&mut l["conditions"], &c["conditions"]);
                    }
                }
            }
        }
        _ => {
            let cur_parents = current["parents"].as_array().cloned().unwrap_or_default();
            let mut ours = desired["parents"].as_array().cloned().unwrap_or_default();
            for p in &mut ours {
                let prev = cur_parents.iter().find(|c| {
                    c["controllerName"] == CONTROLLER_NAME && c["parentRef"] == p["parentRef"]
                });
                if let Some(c) = prev {
                    keep_times(&mut p["conditions"], &c["conditions"]);
                }
            }
            let mut merged: Vec<Value> = cur_parents
                .into_iter()
                .filter(|c| c["controllerName"] != CONTROLLER_NAME)
                .collect();
            merged.extend(ours);
            desired = json!({ "parents": merged });
        }
    }
    let mut after = if current.is_object() {
        current.clone()
    } else {
        json!({})
    };
    if let Some(fields) = desired.as_object() {
        for (k, v) in fields {
            after[k] = v.clone();
        }
    }
    (after != *current).then_some(desired)
}

fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

/// A token bucket: `rate` writes per second, bursts of `burst`.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate: rate.max(0.1),
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            at: Instant::now(),
        }
    }

    async fn take(&mut self) {
        loop {
            let now = Instant::now();
            self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate)
                .min(self.burst);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return;
            }
            let wait = (1.0 - self.tokens) / self.rate;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }
}

/// `(kind, namespace, name)`.
type ObjectKey = (String, Option<String>, String);

/// Writes status for the leader.
pub struct Writer {
    client: Client,
    leadership: Arc<Leadership>,
    metrics: Arc<Metrics>,
    bucket: Bucket,
    /// What we last wrote per object, and the resourceVersion it was
    /// computed against: until the watch shows a newer version, writing the
    /// same again would be a no-op request.
    written: HashMap<ObjectKey, (Option<String>, Value)>,
}

enum Outcome {
    Done,
    /// Transient failure: retry the whole pass after a backoff.
    Retry,
    /// Leadership lost or newer items arrived: start over.
    Interrupted,
}

fn api_for(client: &Client, item: &Item) -> Api<DynamicObject> {
    let (group, version) = item
        .api_version
        .split_once('/')
        .unwrap_or(("", item.api_version.as_str()));
    let gvk = GroupVersionKind::gvk(group, version, &item.kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural(&item.kind));
    match &item.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl Writer {
    /// A writer that patches at most `qps` objects per second (bursts of
    /// `burst`).
    pub fn new(
        client: Client,
        leadership: Arc<Leadership>,
        metrics: Arc<Metrics>,
        qps: f64,
        burst: u32,
    ) -> Self {
        Self {
            client,
            leadership,
            metrics,
            bucket: Bucket::new(qps, f64::from(burst)),
            written: HashMap::new(),
        }
    }

    /// Writes every item that needs it, forever: each new list of items
    /// replaces the one in progress.
    pub async fn run(mut self, mut rx: watch::Receiver<Arc<Vec<Item>>>) {
        let mut backoff = Duration::from_millis(200);
        let mut retry = false;
        loop {
            if !retry && rx.changed().await.is_err() {
                return;
            }
            let items = rx.borrow_and_update().clone();
            if !self.leadership.is_leader() {
                retry = false;
                continue;
            }
            match self.pass(&items, &rx).await {
                Outcome::Done => {
                    retry = false;
                    backoff = Duration::from_millis(200);
                }
                Outcome::Interrupted => retry = rx.has_changed().unwrap_or(false),
                Outcome::Retry => {
                    retry = true;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        r = rx.changed() => if r.is_err() { return },
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn pass(&mut self, items: &[Item], rx: &watch::Receiver<Arc<Vec<Item>>>) -> Outcome {
        let mut outcome = Outcome::Done;
        for item in items {
            if rx.has_changed().unwrap_or(true) || !self.leadership.is_leader() {
                return Outcome::Interrupted;
            }
            if item.resource_version.is_none() {
                continue; // not (or no longer) in the watch cache
            }
            let key = (item.kind.clone(), item.namespace.clone(), item.name.clone());
            let mut item = item.clone();
            for attempt in 0..4 {
                let Some(status) = plan(&item) else {
                    break;
                };
                let stamp = (item.resource_version.clone(), status.clone());
                if self.written.get(&key) == Some(&stamp) {
                    break;
                }
                self.bucket.take().await;
                if !self.leadership.is_leader() {
                    return Outcome::Interrupted;
                }
                match self.patch(&item, &status).await {
                    Ok(()) => {
                        self.metrics.status_writes.inc();
                        self.written.insert(key.clone(), stamp);
                        break;
                    }
                    Err(e) if code(&e) == Some(409) && attempt < 3 => {
                        self.metrics
                            .errors
                            .with_label_values(&["status_conflict"])
                            .inc();
                        match self.refresh(&mut item).await {
                            Ok(true) => continue,
                            Ok(false) => break, // deleted meanwhile
                            Err(e) => {
                                tracing::warn!(error = %e, kind = %item.kind, name = %item.name, "cannot re-read for status");
                                outcome = Outcome::Retry;
                                break;
                            }
                        }
                    }
                    Err(e) if code(&e) == Some(404) => break,
                    Err(e) => {
                        self.metrics.errors.with_label_values(&["status"]).inc();
                        tracing::warn!(error = %e, kind = %item.kind, namespace = ?item.namespace, name = %item.name, "status write failed; will retry");
                        outcome = Outcome::Retry;
                        break;
                    }
                }
            }
        }
        outcome
    }

    async fn patch(&self, item: &Item, status: &Value) -> Result<(), kube::Error> {
        let body = json!({
            "metadata": { "resourceVersion": item.resource_version },
            "status": status,
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        api_for(&self.client, item)
            .patch_status(&item.name, &params, &Patch::Merge(&body))
            .await
            .map(|_| ())
    }

    /// Re-reads the object after a conflict. `Ok(false)`: it is gone.
    async fn refresh(&self, item: &mut Item) -> Result<bool, kube::Error> {
        match api_for(&self.client, item).get(&item.name).await {
            Ok(o) => {
                item.resource_version = o.metadata.resource_version.clone();
                item.current = o.data.get("status").cloned().unwrap_or(Value::Null);
                Ok(true)
            }
            Err(e) if code(&e) == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_item(current: Value, ours: Value) -> Item {
        Item {
            kind: "HTTPRoute".into(),
            api_version: "gateway.networking.k8s.io/v1".into(),
            namespace: Some("ns".into()),
            name: "r".into(),
            resource_version: Some("7".into()),
            current,
            desired: json!({ "parents": ours }),
        }
    }

    fn cond(t: &str, status: &str, reason: &str, time: &str) -> Value {
        json!({"type": t, "status": status, "reason": reason, "message": "", "observedGeneration": 1, "lastTransitionTime": time})
    }

    #[test]
    fn other_controllers_entries_survive_and_ours_are_replaced() {
        let theirs = json!({"parentRef": {"name": "other"}, "controllerName": "example.com/x", "conditions": []});
        let old_ours = json!({"parentRef": {"name": "gw"}, "controllerName": CONTROLLER_NAME,
            "conditions": [cond("Accepted", "False", "NotAllowedByListeners", "T0")]});
        let new_ours = json!({"parentRef": {"name": "gw"}, "controllerName": CONTROLLER_NAME,
            "conditions": [cond("Accepted", "True", "Accepted", "T1")]});
        let item = route_item(json!({"parents": [theirs, old_ours]}), json!([new_ours]));
        let patch = plan(&item).expect("a change");
        assert_eq!(patch, json!({"parents": [theirs, new_ours]}));
    }

    #[test]
    fn unchanged_conditions_keep_their_time_and_need_no_write() {
        let ours = |time: &str| {
            json!({"parentRef": {"name": "gw"}, "controllerName": CONTROLLER_NAME,
                "conditions": [cond("Accepted", "True", "Accepted", time)]})
        };
        let item = route_item(json!({"parents": [ours("T0")]}), json!([ours("T9")]));
        assert_eq!(
            plan(&item),
            None,
            "same status and reason: nothing to write"
        );
    }

    #[test]
    fn entries_for_gateways_no_longer_named_are_removed() {
        let theirs = json!({"parentRef": {"name": "other"}, "controllerName": "example.com/x", "conditions": []});
        let ours = json!({"parentRef": {"name": "gw"}, "controllerName": CONTROLLER_NAME, "conditions": []});
        let item = route_item(json!({"parents": [ours, theirs]}), json!([]));
        assert_eq!(plan(&item), Some(json!({"parents": [theirs]})));
    }

    #[test]
    fn gateway_listener_times_are_kept_per_listener() {
        let current = json!({
            "conditions": [cond("Programmed", "True", "Programmed", "T0")],
            "listeners": [{"name": "http", "attachedRoutes": 1, "conditions": [cond("Accepted", "True", "Accepted", "T0")]}],
        });
        let desired = json!({
            "conditions": [cond("Programmed", "True", "Programmed", "T5")],
            "listeners": [{"name": "http", "attachedRoutes": 2, "conditions": [cond("Accepted", "True", "Accepted", "T5")]}],
        });
        let item = Item {
            kind: "Gateway".into(),
            api_version: "gateway.networking.k8s.io/v1".into(),
            namespace: Some("ns".into()),
            name: "gw".into(),
            resource_version: Some("3".into()),
            current,
            desired,
        };
        let patch = plan(&item).expect("attachedRoutes changed");
        assert_eq!(patch["conditions"][0]["lastTransitionTime"], "T0");
        assert_eq!(
            patch["listeners"][0]["conditions"][0]["lastTransitionTime"],
            "T0"
        );
        assert_eq!(patch["listeners"][0]["attachedRoutes"], 2);
    }

    #[test]
    fn plurals_match_the_api() {
        assert_eq!(plural("GatewayClass"), "gatewayclasses");
        assert_eq!(plural("HTTPRoute"), "httproutes");
        assert_eq!(plural("Gateway"), "gateways");
    }
}
