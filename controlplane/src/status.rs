//! Status as Kubernetes would hold it: conditions with the spec's reasons,
//! per listener and per route parent, rendered in the API's shape.
//!
//! [`crate::translate`] produces a [`Status`] without times (it is pure);
//! [`StatusBook`] stamps `lastTransitionTime`, keeping the old time for any
//! condition whose status and reason did not change, as the API convention
//! asks, and renders the result as YAML documents for `--status-file`.

use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One condition, before it is given a transition time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Condition type, e.g. `Accepted`.
    pub kind: &'static str,
    /// True or False.
    pub status: bool,
    /// The spec's reason, e.g. `NotAllowedByListeners`.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl Condition {
    /// A condition.
    pub fn new(
        kind: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Status of a GatewayClass we own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayClassStatus {
    /// Name.
    pub name: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// Conditions.
    pub conditions: Vec<Condition>,
    /// Features we claim, in upstream names.
    pub supported_features: Vec<String>,
}

/// Status of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStatus {
    /// Listener name.
    pub name: String,
    /// Route kinds it accepts.
    pub supported_kinds: Vec<&'static str>,
    /// Routes attached.
    pub attached_routes: u32,
    /// Conditions.
    pub conditions: Vec<Condition>,
}

/// Status of a Gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayStatus {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// Addresses bound.
    pub addresses: Vec<String>,
    /// Gateway-level conditions.
    pub conditions: Vec<Condition>,
    /// Per-listener status.
    pub listeners: Vec<ListenerStatus>,
}

/// A route's reference to a parent, as written back in its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// API group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Section name, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Port, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// Status of a route for one parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteParentStatus {
    /// The parent.
    pub parent_ref: ParentRef,
    /// Conditions.
    pub conditions: Vec<Condition>,
}

/// Status of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteStatus {
    /// `HTTPRoute`, ….
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// Per-parent status (only parents we own).
    pub parents: Vec<RouteParentStatus>,
}

/// Everything translation says about objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Our GatewayClasses.
    pub classes: Vec<GatewayClassStatus>,
    /// Our Gateways.
    pub gateways: Vec<GatewayStatus>,
    /// Routes attached (or trying to attach) to our Gateways.
    pub routes: Vec<RouteStatus>,
}

/// The controller name written into route parent status.
pub const CONTROLLER_NAME: &str = "shardgate.dev/gateway-controller";

/// Remembers when each condition last changed.
#[derive(Default)]
pub struct StatusBook {
    times: BTreeMap<String, (bool, &'static str, String)>,
}

impl StatusBook {
    fn conditions(
        &mut self,
        owner: &str,
        conds: &[Condition],
        generation: i64,
        now: &str,
    ) -> Value {
        let list: Vec<Value> = conds
            .iter()
            .map(|c| {
                let key = format!("{owner}#{}", c.kind);
                let time = match self.times.get(&key) {
                    Some((s, r, t)) if *s == c.status && *r == c.reason => t.clone(),
                    _ => now.to_owned(),
                };
                self.times.insert(key, (c.status, c.reason, time.clone()));
                json!({
                    "type": c.kind,
                    "status": if c.status { "True" } else { "False" },
                    "reason": c.reason,
                    "message": c.message,
                    "observedGeneration": generation,
                    "lastTransitionTime": time,
                })
            })
            .collect();
        Value::Array(list)
    }

    /// Renders the status as Kubernetes objects (one per owned object), with
    /// transition times stamped `now` (RFC 3339) where something changed.
    pub fn render(&mut self, status: &Status, now: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for c in &status.classes {
            let owner = format!("GatewayClass/{}", c.name);
            let features: Vec<Value> = c
                .supported_features
                .iter()
                .map(|f| json!({ "name": f }))
                .collect();
            out.push(json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GatewayClass",
                "metadata": { "name": c.name, "generation": c.generation },
                "status": {
                    "conditions": self.conditions(&owner, &c.conditions, c.generation, now),
                    "supportedFeatures": features,
                },
            }));
        }
        for g in &status.gateways {
            let owner = format!("Gateway/{}/{}", g.namespace, g.name);
            let listeners: Vec<Value> = g
                .listeners
                .iter()
                .map(|l| {
                    let kinds: Vec<Value> = l
                        .supported_kinds
                        .iter()
                        .map(|k| json!({ "group": "gateway.networking.k8s.io", "kind": k }))
                        .collect();
                    json!({
                        "name": l.name,
                        "supportedKinds": kinds,
                        "attachedRoutes": l.attached_routes,
                        "conditions": self.conditions(&format!("{owner}/{}", l.name), &l.conditions, g.generation, now),
                    })
                })
                .collect();
            let addresses: Vec<Value> = g
                .addresses
                .iter()
                .map(|a| json!({ "type": "IPAddress", "value": a }))
                .collect();
            out.push(json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": { "namespace": g.namespace, "name": g.name, "generation": g.generation },
                "status": {
                    "addresses": addresses,
                    "conditions": self.conditions(&owner, &g.conditions, g.generation, now),
                    "listeners": listeners,
                },
            }));
        }
        for r in &status.routes {
            let owner = format!("{}/{}/{}", r.kind, r.namespace, r.name);
            let parents: Vec<Value> = r
                .parents
                .iter()
                .map(|p| {
                    let pr = &p.parent_ref;
                    let sub = format!(
                        "{owner}/{}/{}/{}/{:?}",
                        pr.namespace,
                        pr.name,
                        pr.section_name.as_deref().unwrap_or(""),
                        pr.port
                    );
                    json!({
                        "parentRef": pr,
                        "controllerName": CONTROLLER_NAME,
                        "conditions": self.conditions(&sub, &p.conditions, r.generation, now),
                    })
                })
                .collect();
            let version = match r.kind {
                "TCPRoute" | "UDPRoute" => "v1alpha2",
                _ => "v1",
            };
            out.push(json!({
                "apiVersion": format!("gateway.networking.k8s.io/{version}"),
                "kind": r.kind,
                "metadata": { "namespace": r.namespace, "name": r.name, "generation": r.generation },
                "status": { "parents": parents },
            }));
        }
        out
    }
}

/// Renders documents as one YAML stream.
pub fn to_yaml_stream(docs: &[Value]) -> String {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(d).unwrap_or_default());
    }
    out
}

/// Current time as RFC 3339 UTC with seconds, as Kubernetes writes it.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_survives_unchanged_conditions() {
        let mut book = StatusBook::default();
        let status = |ok| Status {
            classes: vec![GatewayClassStatus {
                name: "c".into(),
                generation: 1,
                conditions: vec![Condition::new("Accepted", ok, "Accepted", "")],
                supported_features: vec![],
            }],
            ..Status::default()
        };
        let t = |docs: Vec<Value>| docs[0]["status"]["conditions"][0]["lastTransitionTime"].clone();
        let first = t(book.render(&status(true), "T1"));
        assert_eq!(first, "T1");
        assert_eq!(t(book.render(&status(true), "T2")), "T1");
        assert_eq!(t(book.render(&status(false), "T3")), "T3");
    }
}
