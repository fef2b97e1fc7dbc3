//! TLSRoute, TCPRoute and UDPRoute: their parentRefs and backendRefs in one
//! shape, so attachment, ReferenceGrants and status work as for HTTPRoute.
//!
//! Each route rule becomes one snapshot rule without match conditions; the
//! dataplane sends a connection (or a UDP client's flow) to the first rule of
//! the virtual host its SNI selects (TLS) or of the listener (TCP, UDP).
//! Rules of several routes on one listener are ordered oldest route first,
//! so the oldest route takes the traffic, as the spec asks.

use super::backends::{BackendResolver, BackendSpec};
use super::{hostnames, ParentSpec, RouteSpec};
use crate::status::Condition;
use crate::store::Store;
use shardgate_core::{Filters, ObjectRef, RouteMatch, RouteRef, Rule, Timeouts};

/// An L4 route of any kind, with its rules' backendRefs.
pub(super) struct L4Route<'s> {
    pub(super) spec: RouteSpec<'s>,
    pub(super) rules: Vec<Vec<BackendSpec>>,
}

/// The generated types of the three kinds share field names, not types.
macro_rules! l4_routes {
    ($map:expr, $kind:literal, $hostnames:expr) => {
        $map.iter().map(|((ns, name), r)| L4Route {
            spec: RouteSpec {
                kind: $kind,
                ns,
                name,
                meta: &r.metadata,
                hostnames: hostnames(Some($hostnames(r))),
                parent_refs: parent_specs!(r.spec.parent_refs),
            },
            rules: r
                .spec
                .rules
                .iter()
                .map(|rule| {
                    rule.backend_refs
                        .iter()
                        .map(|b| BackendSpec {
                            group: b.group.clone(),
                            kind: b.kind.clone(),
                            namespace: b.namespace.clone(),
                            name: b.name.clone(),
                            port: b.port,
                            weight: b.weight,
                        })
                        .collect()
                })
                .collect(),
        })
    };
}

fn tls_hostnames(r: &gateway_api::tlsroutes::TlsRoute) -> &[String] {
    &r.spec.hostnames
}

fn no_hostnames<T>(_: &T) -> &'static [String] {
    &[]
}

/// Every TLSRoute, TCPRoute and UDPRoute in the store.
pub(super) fn routes(store: &Store) -> Vec<L4Route<'_>> {
    let mut all: Vec<L4Route<'_>> =
        l4_routes!(store.tls_routes, "TLSRoute", tls_hostnames).collect();
    all.extend(l4_routes!(store.tcp_routes, "TCPRoute", no_hostnames));
    all.extend(l4_routes!(store.udp_routes, "UDPRoute", no_hostnames));
    all
}

/// The route's rules, backends resolved; the first failure goes into
/// `resolved`.
pub(super) fn compile(
    route: &L4Route<'_>,
    resolver: &mut BackendResolver<'_>,
    resolved: &mut Condition,
) -> Vec<(u32, u32, Rule)> {
    let spec = &route.spec;
    route
        .rules
        .iter()
        .enumerate()
        .map(|(i, refs)| {
            let rule = Rule {
                source: RouteRef {
                    kind: spec.kind.to_owned(),
                    route: ObjectRef {
                        namespace: spec.ns.to_owned(),
                        name: spec.name.to_owned(),
                    },
                    rule: i as u32,
                },
                matches: RouteMatch::default(),
                backends: resolver.resolve_l4(spec.ns, spec.kind, refs, resolved),
                timeouts: Timeouts::default(),
                filters: Filters::default(),
                retry: None,
            };
            (i as u32, 0, rule)
        })
        .collect()
}
