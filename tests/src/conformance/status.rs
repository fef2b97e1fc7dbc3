//! Status assertions: the Go helpers of `CASES-CONVENTIONS.md` ("the `assertion` key")
//! evaluated against the status file the controlplane writes.
//!
//! Generations are compared with what the runner (standing in for the API server) last
//! wrote, so a check also proves the status reflects the newest configuration.

use super::cases::{Cond, Helper, StatusEntry};
use super::objects::{str_at, Store, CONTROLLER_NAME};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
const SKIP_READINESS: &str = "gateway-api/skip-this-for-readiness";

/// The status file, indexed by `kind/namespace/name`.
pub struct StatusView {
    docs: BTreeMap<String, Value>,
}

impl StatusView {
    /// Reads the YAML stream; an unreadable or half-written file is "not yet".
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("status file {} not readable: {e}", path.display()))?;
        let docs = super::objects::parse_stream(&text, "status file")?
            .into_iter()
            .map(|d| (super::objects::object_key(&d), d))
            .collect();
        Ok(Self { docs })
    }

    fn status(&self, kind: &str, key: &str) -> Result<&Value, String> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        self.docs
            .get(&format!("{kind}/{ns}/{name}"))
            .map(|d| &d["status"])
            .ok_or_else(|| format!("no status for {kind} {key}"))
    }
}

/// Checks one entry. `exact_listeners` is how many `listeners_exact` entries the phase has
/// for the entry's Gateway (GatewayStatusMustHaveListeners compares the whole list).
pub fn check(
    entry: &StatusEntry,
    view: &StatusView,
    store: &Store,
    exact_listeners: usize,
) -> Result<(), String> {
    let key = entry.key();
    let kind = entry.kind.as_str();
    match entry.helper()? {
        Helper::NamespacesReady => namespace_ready(&entry.name, view, store),
        Helper::GatewayConditions => {
            let st = view.status(kind, &key)?;
            contains(&st["conditions"], &entry.conditions).map_err(|e| format!("{kind} {key}: {e}"))
        }
        Helper::GatewayReady => {
            let st = view.status("Gateway", &key)?;
            at_generation(&st["conditions"], store.generation("Gateway", &key))
                .and_then(|()| contains(&st["conditions"], &entry.conditions))
                .map_err(|e| format!("Gateway {key}: {e}"))
        }
        Helper::LatestGeneration => {
            let st = view.status(kind, &key)?;
            let generation = store.generation(kind, &key);
            // Routes keep their conditions per parent.
            let lists: Vec<&Value> = if kind.ends_with("Route") {
                st["parents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| &p["conditions"])
                    .collect()
            } else {
                vec![&st["conditions"]]
            };
            lists
                .into_iter()
                .try_for_each(|c| at_generation(c, generation))
                .map_err(|e| format!("{kind} {key}: {e}"))
        }
        Helper::AddressAssigned => {
            let st = gateway_current(view, store, &key)?;
            let typed = st["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| !str_at(a, &["type"]).is_empty());
            if typed {
                Ok(())
            } else {
                Err(format!(
                    "Gateway {key}: no status.addresses entry with a type (got {})",
                    st["addresses"]
                ))
            }
        }
        Helper::ListenerConditions => {
            let st = view.status("Gateway", &key)?;
            let names = match entry.listener.as_deref() {
                Some("*") => store.listener_names(&key),
                Some(name) => vec![name.to_owned()],
                None => return Err("listener_conditions entry without a listener".into()),
            };
            for name in names {
                let l = listener(st, &name).map_err(|e| format!("Gateway {key}: {e}"))?;
                contains(&l["conditions"], &entry.conditions)
                    .map_err(|e| format!("Gateway {key} listener {name}: {e}"))?;
            }
            Ok(())
        }
        Helper::ListenersExact => listeners_exact(entry, view, store, exact_listeners),
        Helper::ZeroRoutes => {
            let st = gateway_current(view, store, &key)?;
            let ls = st["listeners"].as_array().cloned().unwrap_or_default();
            match ls.as_slice() {
                [] => Ok(()),
                [l] if l["attachedRoutes"].as_i64() == Some(0) => Ok(()),
                _ => Err(format!(
                    "Gateway {key}: want no listeners or one with attachedRoutes 0, got {}",
                    listener_summary(&ls)
                )),
            }
        }
        Helper::RouteParents => route_parents(entry, view, store, true),
        Helper::RouteParentsNoGeneration => route_parents(entry, view, store, false),
        Helper::RouteCondition => route_condition(entry, view, store),
        Helper::NoAcceptedParents => no_accepted_parents(entry, view, store),
        Helper::PolicyAncestor => Err(format!(
            "runner cannot check: {kind} ancestor status (policies are not supported)"
        )),
        Helper::GatewayClassAcceptedAny => {
            let st = view.status("GatewayClass", &key)?;
            at_generation(&st["conditions"], store.generation("GatewayClass", &key))
                .map_err(|e| format!("GatewayClass {key}: {e}"))?;
            let any = Cond {
                kind: "Accepted".into(),
                status: None,
                reason: None,
            };
            contains(&st["conditions"], &[any]).map_err(|e| format!("GatewayClass {key}: {e}"))
        }
    }
}

/// `NamespacesMustBeReady`: every Gateway there not marked skip-readiness has all its
/// conditions at its generation with Accepted and Programmed True; a pod exists (ours are
/// ready once the echo process announced them).
fn namespace_ready(ns: &str, view: &StatusView, store: &Store) -> Result<(), String> {
    let want = [cond("Accepted", "True"), cond("Programmed", "True")];
    for gw in store.all("Gateway") {
        if str_at(gw, &["metadata", "namespace"]) != ns
            || str_at(gw, &["metadata", "annotations", SKIP_READINESS]) == "true"
        {
            continue;
        }
        let key = format!("{ns}/{}", str_at(gw, &["metadata", "name"]));
        let st = view.status("Gateway", &key)?;
        at_generation(&st["conditions"], store.generation("Gateway", &key))
            .and_then(|()| contains(&st["conditions"], &want))
            .map_err(|e| format!("namespace {ns} not ready: Gateway {key}: {e}"))?;
    }
    if store.pods().iter().any(|p| p.namespace == ns) {
        Ok(())
    } else {
        Err(format!("namespace {ns} not ready: no pod runs there"))
    }
}

fn cond(kind: &str, status: &str) -> Cond {
    Cond {
        kind: kind.into(),
        status: Some(status.into()),
        reason: None,
    }
}

/// The Gateway's status once its own conditions are at its current generation.
fn gateway_current<'a>(
    view: &'a StatusView,
    store: &Store,
    key: &str,
) -> Result<&'a Value, String> {
    let st = view.status("Gateway", key)?;
    at_generation(&st["conditions"], store.generation("Gateway", key))
        .map_err(|e| format!("Gateway {key}: {e}"))?;
    Ok(st)
}

fn listener<'a>(gw_status: &'a Value, name: &str) -> Result<&'a Value, String> {
    gw_status["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| str_at(l, &["name"]) == name)
        .ok_or_else(|| format!("listener {name} missing from status.listeners"))
}

fn listener_summary(ls: &[Value]) -> String {
    let parts: Vec<String> = ls
        .iter()
        .map(|l| format!("{}({})", str_at(l, &["name"]), l["attachedRoutes"]))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// `GatewayStatusMustHaveListeners`, one listener of it.
fn listeners_exact(
    entry: &StatusEntry,
    view: &StatusView,
    store: &Store,
    exact: usize,
) -> Result<(), String> {
    let key = entry.key();
    let st = gateway_current(view, store, &key)?;
    let ls = st["listeners"].as_array().cloned().unwrap_or_default();
    if ls.len() != exact {
        return Err(format!(
            "Gateway {key}: want exactly {exact} listeners in status, got {}",
            listener_summary(&ls)
        ));
    }
    let name = entry.listener.as_deref().unwrap_or_default();
    let l = listener(st, name).map_err(|e| format!("Gateway {key}: {e}"))?;
    let at = format!("Gateway {key} listener {name}");
    if let Some(want) = entry.attached_routes {
        let got = l["attachedRoutes"].as_i64();
        if got != Some(want) {
            return Err(format!(
                "{at}: want attachedRoutes {want}, got {}",
                l["attachedRoutes"]
            ));
        }
    }
    contains(&l["conditions"], &entry.conditions).map_err(|e| format!("{at}: {e}"))?;
    let got_kinds: Vec<(String, String)> = l["supportedKinds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| {
            let group = k["group"].as_str().unwrap_or(GATEWAY_GROUP);
            (group.to_owned(), str_at(k, &["kind"]).to_owned())
        })
        .collect();
    let want_kinds: Vec<(String, String)> = entry
        .supported_kinds
        .iter()
        .flatten()
        .map(|k| match k {
            Value::String(kind) => (GATEWAY_GROUP.to_owned(), kind.clone()),
            other => (
                other["group"].as_str().unwrap_or(GATEWAY_GROUP).to_owned(),
                str_at(other, &["kind"]).to_owned(),
            ),
        })
        .collect();
    let kinds_text = |ks: &[(String, String)]| {
        let v: Vec<&str> = ks.iter().map(|(_, k)| k.as_str()).collect();
        format!("[{}]", v.join(", "))
    };
    match &entry.supported_kinds {
        // An empty expectation means the list must be empty.
        Some(list) if list.is_empty() && !got_kinds.is_empty() => Err(format!(
            "{at}: want empty supportedKinds, got {}",
            kinds_text(&got_kinds)
        )),
        _ => match want_kinds.iter().find(|k| !got_kinds.contains(k)) {
            Some((_, missing)) => Err(format!(
                "{at}: supportedKinds {} lacks {missing}",
                kinds_text(&got_kinds)
            )),
            None => Ok(()),
        },
    }
}

/// The route's status and current generation.
fn route<'a>(
    entry: &StatusEntry,
    view: &'a StatusView,
    store: &Store,
) -> Result<(&'a Value, i64), String> {
    let key = entry.key();
    let st = view.status(&entry.kind, &key)?;
    Ok((st, store.generation(&entry.kind, &key)))
}

fn parents(st: &Value) -> Vec<Value> {
    st["parents"].as_array().cloned().unwrap_or_default()
}

fn parent_gateway(entry: &StatusEntry) -> Result<(&str, &str), String> {
    entry
        .parent
        .as_deref()
        .and_then(|p| p.split_once('/'))
        .ok_or_else(|| format!("route entry {} names no parent Gateway", entry.key()))
}

/// `RouteMustHaveParents`: a parent entry for the Gateway, written by us, with group and
/// kind spelled out, and the conditions.
fn route_parents(
    entry: &StatusEntry,
    view: &StatusView,
    store: &Store,
    generation_check: bool,
) -> Result<(), String> {
    let at = format!("{} {}", entry.kind, entry.key());
    let (st, generation) = route(entry, view, store)?;
    let (gw_ns, gw_name) = parent_gateway(entry)?;
    let route_ns = entry.namespace.as_deref().unwrap_or_default();
    let all = parents(st);
    if generation_check {
        for p in &all {
            at_generation(&p["conditions"], generation).map_err(|e| format!("{at}: {e}"))?;
        }
    }
    let mut last = format!("no status.parents entry for Gateway {gw_ns}/{gw_name}");
    for p in &all {
        let r = &p["parentRef"];
        if str_at(r, &["name"]) != gw_name {
            continue;
        }
        let ns = str_at(r, &["namespace"]);
        let problem = if str_at(p, &["controllerName"]) != CONTROLLER_NAME {
            Some(format!("controllerName {:?}", p["controllerName"]))
        } else if str_at(r, &["group"]) != GATEWAY_GROUP || str_at(r, &["kind"]) != "Gateway" {
            Some(format!(
                "parentRef group/kind not explicitly {GATEWAY_GROUP}/Gateway (got {:?}/{:?})",
                r["group"], r["kind"]
            ))
        } else if !(ns == gw_ns || (ns.is_empty() && route_ns == gw_ns)) {
            Some(format!("parentRef namespace {ns:?}, want {gw_ns:?}"))
        } else {
            contains(&p["conditions"], &entry.conditions).err()
        };
        match problem {
            None => return Ok(()),
            Some(p) => last = format!("parent {gw_ns}/{gw_name}: {p}"),
        }
    }
    Err(format!("{at}: {last}"))
}

/// `RouteMustHaveCondition`: fresh parents, one for the Gateway holding the condition.
fn route_condition(entry: &StatusEntry, view: &StatusView, store: &Store) -> Result<(), String> {
    let at = format!("{} {}", entry.kind, entry.key());
    let (st, generation) = route(entry, view, store)?;
    let (gw_ns, gw_name) = parent_gateway(entry)?;
    let all = parents(st);
    for p in &all {
        at_generation(&p["conditions"], generation).map_err(|e| format!("{at}: {e}"))?;
    }
    let mut last = format!("no status.parents entry for Gateway {gw_ns}/{gw_name}");
    for p in &all {
        let r = &p["parentRef"];
        let ns = str_at(r, &["namespace"]);
        if str_at(r, &["name"]) == gw_name && (ns.is_empty() || ns == gw_ns) {
            match contains(&p["conditions"], &entry.conditions) {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("parent {gw_ns}/{gw_name}: {e}"),
            }
        }
    }
    Err(format!("{at}: {last}"))
}

/// `RouteMustHaveNoAcceptedParents`: no parents, or exactly one, fresh, not Accepted.
fn no_accepted_parents(
    entry: &StatusEntry,
    view: &StatusView,
    store: &Store,
) -> Result<(), String> {
    let at = format!("{} {}", entry.kind, entry.key());
    let (st, generation) = route(entry, view, store)?;
    match parents(st).as_slice() {
        [] => Ok(()),
        [p] => at_generation(&p["conditions"], generation)
            .and_then(|()| contains(&p["conditions"], &[cond("Accepted", "False")]))
            .map_err(|e| format!("{at}: {e}")),
        many => Err(format!(
            "{at}: want no parents or one not Accepted, got {} parents",
            many.len()
        )),
    }
}

/// Every wanted condition is present (status and reason compared when given).
pub fn contains(conditions: &Value, want: &[Cond]) -> Result<(), String> {
    let got = conditions.as_array().cloned().unwrap_or_default();
    for w in want {
        let Some(c) = got.iter().find(|c| str_at(c, &["type"]) == w.kind) else {
            let types: Vec<&str> = got.iter().map(|c| str_at(c, &["type"])).collect();
            return Err(format!(
                "no {} condition (has [{}])",
                w.kind,
                types.join(", ")
            ));
        };
        let status = str_at(c, &["status"]);
        let reason = str_at(c, &["reason"]);
        let status_ok = w.status.as_deref().is_none_or(|s| s == status);
        let reason_ok = w.reason.as_deref().is_none_or(|r| r == reason);
        if !(status_ok && reason_ok) {
            let want_text = match (&w.status, &w.reason) {
                (Some(s), Some(r)) => format!("{}={s} ({r})", w.kind),
                (Some(s), None) => format!("{}={s}", w.kind),
                (None, Some(r)) => format!("{} ({r})", w.kind),
                (None, None) => w.kind.clone(),
            };
            return Err(format!(
                "want {want_text}, got {}={status} ({reason})",
                w.kind
            ));
        }
    }
    Ok(())
}

/// Every condition carries `observedGeneration == generation` (an empty list passes).
pub fn at_generation(conditions: &Value, generation: i64) -> Result<(), String> {
    for c in conditions.as_array().into_iter().flatten() {
        let observed = c["observedGeneration"].as_i64();
        if observed != Some(generation) {
            return Err(format!(
                "condition {} has observedGeneration {}, want {generation}",
                str_at(c, &["type"]),
                c["observedGeneration"]
            ));
        }
    }
    Ok(())
}
