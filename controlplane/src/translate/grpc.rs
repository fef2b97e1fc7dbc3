//! GRPCRoute: its rules become HTTPRoute rules (a gRPC call is an HTTP/2
//! POST to `/service/method`), so matching, precedence, filters, mirrors,
//! weights, ReferenceGrants and status are HTTPRoute's. Backends are spoken
//! to over HTTP/2 (h2c) whatever their Service's appProtocol says.
//!
//! Method matches map to paths: service and method `Exact` → exact path
//! `/service/method`; service only → path prefix `/service`; method only →
//! `^/[^/]+/method$`; `RegularExpression` → `/(service)/(method)`, each
//! defaulting to any name.

use super::backends::BackendResolver;
use super::{attach_rules, hostnames, ListenerState, ParentSpec, RouteSpec};
use crate::status::RouteStatus;
use crate::store::{Key, Store};
use gateway_api::experimental::httproutes::HttpRouteRules;
use gateway_api::gateways::Gateway;
use gateway_api::grpcroutes::{GrpcRoute, GrpcRouteRules, GrpcRouteRulesMatches};
use serde_json::{json, Value};
use std::borrow::Cow;

pub(super) fn attach(
    ns: &str,
    name: &str,
    route: &GrpcRoute,
    gateways: &[(&Key, &Gateway)],
    listeners: &mut [ListenerState],
    store: &Store,
    resolver: &mut BackendResolver<'_>,
) -> Option<RouteStatus> {
    let spec = RouteSpec {
        kind: "GRPCRoute",
        ns,
        name,
        meta: &route.metadata,
        hostnames: hostnames(route.spec.hostnames.as_deref()),
        parent_refs: parent_specs!(route.spec.parent_refs),
    };
    let rules = route
        .spec
        .rules
        .iter()
        .flatten()
        .map(|r| as_http_rule(r).map(Cow::Owned));
    attach_rules(&spec, rules, gateways, listeners, store, resolver)
}

/// The HTTPRoute rule a GRPCRoute rule means.
fn as_http_rule(rule: &GrpcRouteRules) -> Result<HttpRouteRules, String> {
    let matches = match &rule.matches {
        Some(ms) if !ms.is_empty() => ms
            .iter()
            .map(as_http_match)
            .collect::<Result<Vec<_>, _>>()?,
        _ => vec![json!({ "path": { "type": "PathPrefix", "value": "/" } })],
    };
    let value = json!({
        "name": rule.name,
        "matches": matches,
        "filters": rule.filters,
        "backendRefs": rule.backend_refs,
    });
    serde_json::from_value(value).map_err(|e| format!("unsupported GRPCRoute rule: {e}"))
}

fn as_http_match(m: &GrpcRouteRulesMatches) -> Result<Value, String> {
    let path = match &m.method {
        None => json!({ "type": "PathPrefix", "value": "/" }),
        Some(method) => {
            let regex = method
                .r#type
                .as_ref()
                .and_then(|t| serde_json::to_value(t).ok())
                .is_some_and(|t| t == "RegularExpression");
            let (service, name) = (method.service.as_deref(), method.method.as_deref());
            if regex {
                let part = |p: Option<&str>| p.unwrap_or("[^/]+").to_owned();
                json!({
                    "type": "RegularExpression",
                    "value": format!("/(?:{})/(?:{})", part(service), part(name)),
                })
            } else {
                for part in [service, name].into_iter().flatten() {
                    if part.is_empty() || part.contains('/') {
                        return Err(format!("invalid gRPC service or method name {part:?}"));
                    }
                }
                match (service, name) {
                    (Some(s), Some(n)) => json!({ "type": "Exact", "value": format!("/{s}/{n}") }),
                    (Some(s), None) => json!({ "type": "PathPrefix", "value": format!("/{s}") }),
                    (None, Some(n)) => json!({
                        "type": "RegularExpression",
                        "value": format!("/[^/]+/{}", regex::escape(n)),
                    }),
                    (None, None) => {
                        return Err("an Exact gRPC method match needs a service or a method".into())
                    }
                }
            }
        }
    };
    Ok(json!({ "path": path, "headers": m.headers }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(yaml: &str) -> GrpcRouteRulesMatches {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn method_matches_become_paths() {
        let path = |yaml: &str| as_http_match(&m(yaml)).unwrap()["path"].clone();
        assert_eq!(
            path("method: {service: pkg.Svc, method: Get}"),
            json!({"type": "Exact", "value": "/pkg.Svc/Get"})
        );
        assert_eq!(
            path("method: {service: pkg.Svc}"),
            json!({"type": "PathPrefix", "value": "/pkg.Svc"})
        );
        assert_eq!(
            path("method: {method: Get}"),
            json!({"type": "RegularExpression", "value": "/[^/]+/Get"})
        );
        assert_eq!(
            path("method: {type: RegularExpression, service: 'pkg\\..*'}"),
            json!({"type": "RegularExpression", "value": "/(?:pkg\\..*)/(?:[^/]+)"})
        );
        assert!(as_http_match(&m("method: {type: Exact}")).is_err());
    }
}
