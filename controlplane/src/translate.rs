//! Translation: a pure function from the object [`Store`] to the dataplane's
//! [`Snapshot`] and the objects' [`Status`].
//!
//! Invalid pieces never abort translation: each becomes a status condition
//! with the spec's reason, and the rest of the configuration still ships.
//!
//! Steps: our GatewayClasses → their Gateways and listeners (addresses,
//! protocols, hostname/protocol conflicts per address and port) → routes
//! attached through parentRefs (sectionName, port, allowedRoutes kinds and
//! namespaces, hostname intersection) → backendRefs resolved to endpoints
//! (ReferenceGrants, Service ports, EndpointSlices) → rules ordered by the
//! spec's precedence in each listener's virtual hosts.

/// The [`ParentSpec`]s of a route's parentRefs: every route kind has its own
/// generated parentRef type, all with the same fields.
macro_rules! parent_specs {
    ($refs:expr) => {
        $refs
            .iter()
            .flatten()
            .map(|p| ParentSpec {
                group: p.group.clone(),
                kind: p.kind.clone(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                section_name: p.section_name.clone(),
                port: p.port,
            })
            .collect()
    };
}

mod backends;
mod filters;
mod grpc;
mod l4;
mod listeners;
#[cfg(test)]
mod tests;

use crate::status::{
    Condition, GatewayClassStatus, GatewayStatus, ParentRef, RouteParentStatus, RouteStatus,
    Status, CONTROLLER_NAME,
};
use crate::store::{Key, Store};
use backends::BackendResolver;
use gateway_api::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType,
    HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParamsType,
};
use gateway_api::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use listeners::{
    listener_snapshot, listener_state, listener_status, mark_conflicts, resolve_certificates,
    ListenerState,
};
use shardgate_core::route::{intersect_hostnames, Precedence};
use shardgate_core::{
    Filters, HeaderMatch, Hostname, MatchKind, ObjectRef, PathMatch, QueryMatch, Retry, RouteMatch,
    RouteRef, Rule, Snapshot, Timeouts,
};
use std::borrow::Cow;
use std::net::IpAddr;
use std::str::FromStr;

/// The Gateway API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Features this implementation claims, in upstream names.
///
/// Written into GatewayClass `status.supportedFeatures`; the same list as
/// the repository's `conformance.yaml` (a test keeps them equal).
pub const SUPPORTED_FEATURES: &[&str] = &[
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "GRPCRouteRequestHeaderModifier",
    "Gateway",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayPort8080",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendRequestRedirect",
    "HTTPRouteBackendTimeout",
    "HTTPRouteBackendURLRewrite",
    "HTTPRouteCORS",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteRetry",
    "HTTPRouteRetryBackendTimeout",
    "HTTPRouteRetryConnectionError",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
    "TCPRoute",
    "TLSRoute",
    "TLSRouteModeTerminate",
    "UDPRoute",
];

/// Settings that are not in the objects.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where Gateways without `spec.addresses` listen.
    pub default_address: IpAddr,
}

/// The result of one translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// What the dataplane serves.
    pub snapshot: Snapshot,
    /// What the objects' status says.
    pub status: Status,
}

/// Translates the store.
pub fn translate(store: &Store, opts: &Options) -> Translation {
    let mut status = Status::default();
    let classes: Vec<&str> = store
        .gateway_classes
        .iter()
        .filter(|(_, c)| c.spec.controller_name == CONTROLLER_NAME)
        .map(|(name, c)| {
            status.classes.push(GatewayClassStatus {
                name: name.clone(),
                generation: c.metadata.generation.unwrap_or(1),
                conditions: vec![Condition::new(
                    "Accepted",
                    true,
                    "Accepted",
                    "accepted by shardgate",
                )],
                supported_features: SUPPORTED_FEATURES.iter().map(|s| (*s).to_owned()).collect(),
            });
            name.as_str()
        })
        .collect();

    // Gateways of our classes, with their listeners.
    let gateways: Vec<(&Key, &Gateway)> = store
        .gateways
        .iter()
        .filter(|(_, g)| classes.contains(&g.spec.gateway_class_name.as_str()))
        .collect();
    let mut listeners: Vec<ListenerState> = Vec::new();
    let mut gateway_addresses: Vec<Result<Vec<IpAddr>, String>> = Vec::new();
    for (gi, (gw_key, gw)) in gateways.iter().enumerate() {
        let addresses = gateway_addresses_of(gw, opts);
        let bind = addresses.clone().unwrap_or_default();
        for l in &gw.spec.listeners {
            let mut state = listener_state(gi, l, bind.clone());
            resolve_certificates(&mut state, &gw_key.0, store);
            listeners.push(state);
        }
        gateway_addresses.push(addresses);
    }
    mark_conflicts(&mut listeners);

    // Routes.
    let mut resolver = BackendResolver::new(store);
    for ((ns, name), route) in &store.http_routes {
        if let Some(s) = attach_http_route(
            ns,
            name,
            route,
            &gateways,
            &mut listeners,
            store,
            &mut resolver,
        ) {
            status.routes.push(s);
        }
    }
    for ((ns, name), route) in &store.grpc_routes {
        if let Some(s) = grpc::attach(
            ns,
            name,
            route,
            &gateways,
            &mut listeners,
            store,
            &mut resolver,
        ) {
            status.routes.push(s);
        }
    }
    for route in l4::routes(store) {
        let mut resolved = resolved_condition();
        let rules = l4::compile(&route, &mut resolver, &mut resolved);
        let attached = attach_route(
            &route.spec,
            Ok(rules),
            resolved,
            &gateways,
            &mut listeners,
            store,
        );
        status.routes.extend(attached);
    }
    // A TCP or UDP listener forwards to one route, the oldest (its rules
    // come first in precedence order); every route still counts as attached
    // (conformance: TCPRouteMultipleRoutesAttachment).

    // Gateway status and the snapshot.
    let mut snapshot = Snapshot::default();
    let mut certificates = Vec::new();
    for (gi, ((ns, name), gw)) in gateways.iter().enumerate() {
        let mut gs = GatewayStatus {
            namespace: ns.clone(),
            name: name.clone(),
            generation: gw.metadata.generation.unwrap_or(1),
            addresses: Vec::new(),
            conditions: Vec::new(),
            listeners: Vec::new(),
        };
        let addresses_ok = match &gateway_addresses[gi] {
            Ok(addrs) => {
                gs.addresses = addrs.iter().map(ToString::to_string).collect();
                true
            }
            Err(msg) => {
                gs.conditions.push(Condition::new(
                    "Accepted",
                    false,
                    "UnsupportedAddress",
                    msg.clone(),
                ));
                gs.conditions.push(Condition::new(
                    "Programmed",
                    false,
                    "AddressNotUsable",
                    msg.clone(),
                ));
                false
            }
        };
        let mine: Vec<&mut ListenerState> =
            listeners.iter_mut().filter(|l| l.gateway == gi).collect();
        let all_valid = mine.iter().all(|l| l.invalid.is_none());
        let none_valid = !mine.is_empty() && mine.iter().all(|l| l.invalid.is_some());
        // Parameters of any kind are not supported, so a reference can
        // never be resolved (spec: Accepted=False, InvalidParameters).
        let parameters = gw
            .spec
            .infrastructure
            .as_ref()
            .and_then(|i| i.parameters_ref.as_ref());
        if addresses_ok {
            let (accepted, reason, message) = if let Some(p) = parameters {
                (
                    false,
                    "InvalidParameters",
                    format!(
                        "parametersRef {}/{} {} is not supported",
                        p.group, p.kind, p.name
                    ),
                )
            } else if none_valid {
                (
                    false,
                    "ListenersNotValid",
                    "no listener is valid".to_owned(),
                )
            } else if all_valid {
                (true, "Accepted", "accepted".to_owned())
            } else {
                (
                    true,
                    "ListenersNotValid",
                    "some listeners are invalid".to_owned(),
                )
            };
            gs.conditions
                .push(Condition::new("Accepted", accepted, reason, message));
            if accepted {
                gs.conditions.push(Condition::new(
                    "Programmed",
                    true,
                    "Programmed",
                    "programmed",
                ));
            } else {
                gs.conditions.push(Condition::new(
                    "Programmed",
                    false,
                    "Invalid",
                    "not accepted",
                ));
            }
        }
        let serving = addresses_ok && parameters.is_none();
        for l in mine {
            gs.listeners.push(listener_status(l));
            if serving && l.usable() {
                for address in l.addresses.clone() {
                    snapshot.listeners.push(listener_snapshot(
                        ns,
                        name,
                        l,
                        address,
                        &mut certificates,
                    ));
                }
            }
        }
        status.gateways.push(gs);
    }
    snapshot.backends = resolver.into_backends();
    snapshot.certificates = certificates;
    Translation { snapshot, status }
}

fn gateway_addresses_of(gw: &Gateway, opts: &Options) -> Result<Vec<IpAddr>, String> {
    let Some(addrs) = gw.spec.addresses.as_ref().filter(|a| !a.is_empty()) else {
        return Ok(vec![opts.default_address]);
    };
    addrs
        .iter()
        .map(|a| {
            let kind = a.r#type.as_deref().unwrap_or("IPAddress");
            let value = a.value.as_deref().unwrap_or("");
            if kind != "IPAddress" {
                return Err(format!("address type {kind} is not supported"));
            }
            IpAddr::from_str(value).map_err(|_| format!("address {value:?} is not an IP address"))
        })
        .collect()
}

/// Why a parentRef did not attach, in the spec's reasons.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NotAttached {
    NoMatchingParent,
    NotAllowedByListeners,
    NoMatchingListenerHostname,
}

/// A parentRef, whatever the route kind.
struct ParentSpec {
    group: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: String,
    section_name: Option<String>,
    port: Option<i32>,
}

/// What attachment needs to know of a route of any kind.
struct RouteSpec<'s> {
    kind: &'static str,
    ns: &'s str,
    name: &'s str,
    meta: &'s ObjectMeta,
    hostnames: Vec<Hostname>,
    parent_refs: Vec<ParentSpec>,
}

fn resolved_condition() -> Condition {
    Condition::new(
        "ResolvedRefs",
        true,
        "ResolvedRefs",
        "all references resolved",
    )
}

#[allow(clippy::too_many_arguments)]
fn attach_http_route(
    ns: &str,
    name: &str,
    route: &HttpRoute,
    gateways: &[(&Key, &Gateway)],
    listeners: &mut [ListenerState],
    store: &Store,
    resolver: &mut BackendResolver<'_>,
) -> Option<RouteStatus> {
    let spec = RouteSpec {
        kind: "HTTPRoute",
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
        .map(|r| Ok(Cow::Borrowed(r)));
    attach_rules(&spec, rules, gateways, listeners, store, resolver)
}

/// The valid hostnames of a route (invalid ones the API server would have
/// refused; they are skipped).
fn hostnames(list: Option<&[String]>) -> Vec<Hostname> {
    list.into_iter()
        .flatten()
        .filter_map(|h| Hostname::try_from(h.as_str()).ok())
        .collect()
}

/// Compiles HTTP-shaped rules once (they do not depend on the parent) and
/// attaches them.
fn attach_rules<'r>(
    spec: &RouteSpec<'_>,
    rules: impl Iterator<Item = Result<Cow<'r, HttpRouteRules>, String>>,
    gateways: &[(&Key, &Gateway)],
    listeners: &mut [ListenerState],
    store: &Store,
    resolver: &mut BackendResolver<'_>,
) -> Option<RouteStatus> {
    let mut resolved_refs = resolved_condition();
    let compiled: Result<Vec<(u32, u32, Rule)>, String> = rules
        .enumerate()
        .map(|(ri, rule)| {
            compile_rule(
                spec.kind,
                spec.ns,
                spec.name,
                ri as u32,
                &*rule?,
                resolver,
                &mut resolved_refs,
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.into_iter().flatten().collect());
    attach_route(spec, compiled, resolved_refs, gateways, listeners, store)
}

/// Attaches a route's compiled rules to the listeners its parentRefs select
/// and allow, and says so per parent.
fn attach_route(
    route: &RouteSpec<'_>,
    compiled: Result<Vec<(u32, u32, Rule)>, String>,
    resolved_refs: Condition,
    gateways: &[(&Key, &Gateway)],
    listeners: &mut [ListenerState],
    store: &Store,
) -> Option<RouteStatus> {
    let (ns, name) = (route.ns, route.name);
    let created = route
        .meta
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    let mut parents = Vec::new();
    for pr in &route.parent_refs {
        let group = pr.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = pr.kind.as_deref().unwrap_or("Gateway");
        if group != GATEWAY_GROUP || kind != "Gateway" {
            continue;
        }
        let gw_ns = pr.namespace.as_deref().unwrap_or(ns);
        let Some(gi) = gateways
            .iter()
            .position(|((gns, gname), _)| gns == gw_ns && *gname == pr.name)
        else {
            continue; // not one of ours: another controller reports on it
        };
        let parent_ref = ParentRef {
            group: group.to_owned(),
            kind: kind.to_owned(),
            namespace: gw_ns.to_owned(),
            name: pr.name.clone(),
            section_name: pr.section_name.clone(),
            port: pr.port,
        };
        let rules = match &compiled {
            Ok(rules) => rules,
            Err(msg) => {
                parents.push(RouteParentStatus {
                    parent_ref,
                    conditions: vec![
                        Condition::new("Accepted", false, "UnsupportedValue", msg.clone()),
                        resolved_refs.clone(),
                    ],
                });
                continue;
            }
        };
        let mut attached = false;
        let mut why = NotAttached::NoMatchingParent;
        for l in listeners.iter_mut().filter(|l| l.gateway == gi) {
            if pr.section_name.as_ref().is_some_and(|s| *s != l.name)
                || pr.port.is_some_and(|p| p != i32::from(l.port))
            {
                continue;
            }
            if !l.kinds.contains(&route.kind) || !namespace_allowed(&l.spec, gw_ns, ns, store) {
                why = why.max(NotAttached::NotAllowedByListeners);
                continue;
            }
            let scopes = intersect_hostnames(l.hostname.as_ref(), &route.hostnames);
            if scopes.is_empty() {
                why = why.max(NotAttached::NoMatchingListenerHostname);
                continue;
            }
            // Attachment depends only on allowedRoutes and the parentRef;
            // a listener that is not programmed still counts its routes.
            if l.invalid.is_some() {
                continue;
            }
            attached = true;
            l.attached += 1;
            if !l.usable() {
                continue;
            }
            for scope in scopes {
                for (ri, mi, rule) in rules {
                    let prec = Precedence::new(&rule.matches, created, ns, name, *ri, *mi);
                    l.rules.push((scope.clone(), prec, rule.clone()));
                }
            }
        }
        let accepted = if attached {
            Condition::new("Accepted", true, "Accepted", "accepted")
        } else {
            let (reason, msg) = match why {
                NotAttached::NoMatchingParent => {
                    ("NoMatchingParent", "no listener matches the parentRef")
                }
                NotAttached::NotAllowedByListeners => {
                    ("NotAllowedByListeners", "no listener allows this route")
                }
                NotAttached::NoMatchingListenerHostname => (
                    "NoMatchingListenerHostname",
                    "no listener hostname intersects the route's hostnames",
                ),
            };
            Condition::new("Accepted", false, reason, msg)
        };
        parents.push(RouteParentStatus {
            parent_ref,
            conditions: vec![accepted, resolved_refs.clone()],
        });
    }
    (!parents.is_empty()).then(|| RouteStatus {
        kind: route.kind,
        namespace: ns.to_owned(),
        name: name.to_owned(),
        generation: route.meta.generation.unwrap_or(1),
        parents,
    })
}

/// allowedRoutes.namespaces: Same (default), All, or Selector on the route
/// namespace's labels.
fn namespace_allowed(l: &GatewayListeners, gw_ns: &str, route_ns: &str, store: &Store) -> bool {
    let ns = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match ns.and_then(|n| n.from.as_ref()) {
        None | Some(GatewayListenersAllowedRoutesNamespacesFrom::Same) => gw_ns == route_ns,
        Some(GatewayListenersAllowedRoutesNamespacesFrom::All) => true,
        Some(GatewayListenersAllowedRoutesNamespacesFrom::Selector) => {
            let Some(sel) = ns.and_then(|n| n.selector.as_ref()) else {
                return false;
            };
            let labels = store.namespace_labels(route_ns);
            let labels_ok = sel
                .match_labels
                .iter()
                .flatten()
                .all(|(k, v)| labels.get(k) == Some(v));
            let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
                let values = e.values.as_deref().unwrap_or(&[]);
                let value = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            });
            labels_ok && exprs_ok
        }
    }
}

/// Compiles one HTTPRoute rule into one snapshot rule per match. Invalid
/// values (bad regex, bad path, bad duration) reject the whole route with
/// `UnsupportedValue`.
fn compile_rule(
    kind: &str,
    ns: &str,
    name: &str,
    index: u32,
    rule: &HttpRouteRules,
    resolver: &mut BackendResolver<'_>,
    resolved_refs: &mut Condition,
) -> Result<Vec<(u32, u32, Rule)>, String> {
    let source = RouteRef {
        kind: kind.to_owned(),
        route: ObjectRef {
            namespace: ns.to_owned(),
            name: name.to_owned(),
        },
        rule: index,
    };
    let timeouts = match &rule.timeouts {
        None => Timeouts::default(),
        Some(t) => Timeouts {
            request: parse_duration(t.request.as_deref())?,
            backend_request: parse_duration(t.backend_request.as_deref())?,
        },
    };
    let default_match = [HttpRouteRulesMatches::default()];
    let matches = rule
        .matches
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or(&default_match);
    // ReplacePrefixMatch is only meaningful when every match is a prefix.
    let prefix_match = matches.iter().all(|m| {
        m.path.as_ref().is_none_or(|p| {
            p.r#type
                .as_ref()
                .is_none_or(|t| *t == HttpRouteRulesMatchesPathType::PathPrefix)
        })
    });
    let backends = resolver.resolve_http(
        kind,
        ns,
        rule.backend_refs.as_deref().unwrap_or(&[]),
        prefix_match,
        resolved_refs,
    )?;
    let retry = match &rule.retry {
        None => None,
        Some(r) => Some(Retry {
            // Unset attempts: one retry (implementation-specific per GEP-1731).
            attempts: u32::try_from(r.attempts.unwrap_or(1))
                .map_err(|_| "negative retry attempts".to_owned())?,
            codes: r
                .codes
                .iter()
                .flatten()
                .map(|c| {
                    u16::try_from(*c)
                        .ok()
                        .filter(|c| (400..600).contains(c))
                        .ok_or(format!("invalid retry code {c}"))
                })
                .collect::<Result<_, _>>()?,
            backoff: parse_duration(r.backoff.as_deref())?
                .unwrap_or(std::time::Duration::from_millis(10)),
        }),
    };
    let rule_filters = match &rule.filters {
        Some(f) => filters::compile(f, kind, ns, prefix_match, resolver, resolved_refs)?,
        None => Filters::default(),
    };
    matches
        .iter()
        .enumerate()
        .map(|(mi, m)| {
            Ok((
                index,
                mi as u32,
                Rule {
                    source: source.clone(),
                    matches: compile_match(m)?,
                    backends: backends.clone(),
                    timeouts,
                    filters: rule_filters.clone(),
                    retry: retry.clone(),
                },
            ))
        })
        .collect()
}

/// A Gateway API duration (GEP-2257); `0s` means no timeout.
fn parse_duration(v: Option<&str>) -> Result<Option<std::time::Duration>, String> {
    let Some(v) = v else { return Ok(None) };
    let d =
        gateway_api::Duration::from_str(v).map_err(|e| format!("invalid duration {v:?}: {e}"))?;
    let d = std::time::Duration::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Ok((!d.is_zero()).then_some(d))
}

fn compile_match(m: &HttpRouteRulesMatches) -> Result<RouteMatch, String> {
    let path = match &m.path {
        None => PathMatch::Prefix("/".to_owned()),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".to_owned());
            match p
                .r#type
                .as_ref()
                .unwrap_or(&HttpRouteRulesMatchesPathType::PathPrefix)
            {
                HttpRouteRulesMatchesPathType::Exact => {
                    check_path(&value)?;
                    PathMatch::Exact(value)
                }
                HttpRouteRulesMatchesPathType::PathPrefix => {
                    check_path(&value)?;
                    // "/foo/" and "/foo" are the same prefix: matching is by segment.
                    let trimmed = value.trim_end_matches('/');
                    PathMatch::Prefix(if trimmed.is_empty() {
                        "/".to_owned()
                    } else {
                        trimmed.to_owned()
                    })
                }
                HttpRouteRulesMatchesPathType::RegularExpression => {
                    regex::Regex::new(&value).map_err(|e| format!("invalid path regex: {e}"))?;
                    PathMatch::RegularExpression(value)
                }
            }
        }
    };
    let mut headers: Vec<HeaderMatch> = Vec::new();
    for h in m.headers.iter().flatten() {
        let name = h.name.to_ascii_lowercase();
        // "If multiple entries specify equivalent header names, only the first
        // entry with an equivalent name MUST be considered."
        if headers.iter().any(|e| e.name == name) {
            continue;
        }
        let kind = match h.r#type {
            Some(HttpRouteRulesMatchesHeadersType::RegularExpression) => {
                regex::Regex::new(&h.value).map_err(|e| format!("invalid header regex: {e}"))?;
                MatchKind::RegularExpression
            }
            _ => MatchKind::Exact,
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(format!("invalid header name {:?}", h.name));
        }
        headers.push(HeaderMatch {
            name,
            kind,
            value: h.value.clone(),
        });
    }
    let mut query: Vec<QueryMatch> = Vec::new();
    for q in m.query_params.iter().flatten() {
        if query.iter().any(|e| e.name == q.name) {
            continue;
        }
        let kind = match q.r#type {
            Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression) => {
                regex::Regex::new(&q.value).map_err(|e| format!("invalid query regex: {e}"))?;
                MatchKind::RegularExpression
            }
            _ => MatchKind::Exact,
        };
        if q.name.is_empty() {
            return Err("empty query parameter name".to_owned());
        }
        query.push(QueryMatch {
            name: q.name.clone(),
            kind,
            value: q.value.clone(),
        });
    }
    let method = m.method.as_ref().map(|m| {
        serde_json::to_value(m)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    });
    Ok(RouteMatch {
        path,
        method,
        headers,
        query,
    })
}

fn check_path(p: &str) -> Result<(), String> {
    if p.starts_with('/')
        && !p.contains("//")
        && !p.bytes().any(|b| b.is_ascii_control() || b == b' ')
    {
        Ok(())
    } else {
        Err(format!("invalid path {p:?}"))
    }
}
