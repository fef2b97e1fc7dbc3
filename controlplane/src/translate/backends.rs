//! Resolving backendRefs: kind checks, ReferenceGrants, Service ports and
//! their ready endpoints from EndpointSlices.

use crate::status::Condition;
use crate::store::Store;
use gateway_api::experimental::httproutes::HttpRouteRulesBackendRefs;
use shardgate_core::{AppProtocol, Backend, BackendTarget, Filters, WeightedBackend};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Status answered for the share of traffic of an invalid backendRef.
const INVALID_BACKEND_STATUS: u16 = 500;

/// A backendRef, whatever the route kind.
pub(super) struct BackendSpec {
    pub(super) group: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) namespace: Option<String>,
    pub(super) name: String,
    pub(super) port: Option<i32>,
    pub(super) weight: Option<i32>,
}

/// The index found, or `None` with the reason put into `resolved` unless
/// an earlier failure is there already.
fn note_failure(
    found: Result<u32, (&'static str, String)>,
    resolved: &mut Condition,
) -> Option<u32> {
    match found {
        Ok(i) => Some(i),
        Err((reason, message)) => {
            if resolved.status {
                *resolved = Condition::new("ResolvedRefs", false, reason, message);
            }
            None
        }
    }
}

/// Collects the snapshot's backends, one per (namespace, Service, port).
pub(super) struct BackendResolver<'s> {
    store: &'s Store,
    index: BTreeMap<(String, String, u16, bool), u32>,
    backends: Vec<Backend>,
}

impl<'s> BackendResolver<'s> {
    pub(super) fn new(store: &'s Store) -> Self {
        Self {
            store,
            index: BTreeMap::new(),
            backends: Vec::new(),
        }
    }

    pub(super) fn into_backends(self) -> Vec<Backend> {
        self.backends
    }

    /// Resolves an HTTPRoute rule's backendRefs. The first failure becomes the
    /// route's ResolvedRefs=False condition; invalid refs keep their weight
    /// and answer 500, so valid siblings keep serving their share.
    /// `route_kind` (HTTPRoute or GRPCRoute) is the `from` of ReferenceGrants,
    /// and a GRPCRoute's backends are spoken to over HTTP/2.
    pub(super) fn resolve_http(
        &mut self,
        route_kind: &str,
        route_ns: &str,
        refs: &[HttpRouteRulesBackendRefs],
        prefix_match: bool,
        resolved: &mut Condition,
    ) -> Result<Vec<WeightedBackend>, String> {
        refs.iter()
            .map(|r| {
                let filters = match &r.filters {
                    Some(f) => super::filters::compile(
                        f,
                        route_kind,
                        route_ns,
                        prefix_match,
                        self,
                        resolved,
                    )?,
                    None => Filters::default(),
                };
                let spec = BackendSpec {
                    group: r.group.clone(),
                    kind: r.kind.clone(),
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    port: r.port,
                    weight: r.weight,
                };
                Ok(self.weighted(route_ns, route_kind, &spec, filters, resolved))
            })
            .collect()
    }

    /// Resolves an L4 route rule's backendRefs (TLSRoute, TCPRoute,
    /// UDPRoute) the same way: invalid refs keep their weight, and the
    /// connections that land on them are closed.
    pub(super) fn resolve_l4(
        &mut self,
        route_ns: &str,
        route_kind: &str,
        refs: &[BackendSpec],
        resolved: &mut Condition,
    ) -> Vec<WeightedBackend> {
        refs.iter()
            .map(|r| self.weighted(route_ns, route_kind, r, Filters::default(), resolved))
            .collect()
    }

    /// One weighted backendRef; a failure is recorded in `resolved` (the
    /// first one wins) and answered with 500 for its share.
    fn weighted(
        &mut self,
        route_ns: &str,
        route_kind: &str,
        r: &BackendSpec,
        filters: Filters,
        resolved: &mut Condition,
    ) -> WeightedBackend {
        let found = self.resolve_ref(
            route_ns,
            route_kind,
            r.group.as_deref().unwrap_or(""),
            r.kind.as_deref().unwrap_or("Service"),
            r.namespace.as_deref(),
            &r.name,
            r.port,
        );
        let target = match note_failure(found, resolved) {
            Some(index) => BackendTarget::Backend(index),
            None => BackendTarget::Invalid {
                status: INVALID_BACKEND_STATUS,
            },
        };
        WeightedBackend {
            weight: u32::try_from(r.weight.unwrap_or(1)).unwrap_or(0),
            target,
            filters,
        }
    }

    /// Resolves a RequestMirror's backendRef; an invalid one is reported in
    /// `resolved` and mirrors nothing.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn resolve_mirror(
        &mut self,
        route_kind: &str,
        route_ns: &str,
        group: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        port: Option<i32>,
        resolved: &mut Condition,
    ) -> Option<u32> {
        let found = self.resolve_ref(route_ns, route_kind, group, kind, namespace, name, port);
        note_failure(found, resolved)
    }

    #[allow(clippy::too_many_arguments)]
    fn resolve_ref(
        &mut self,
        route_ns: &str,
        route_kind: &str,
        group: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        port: Option<i32>,
    ) -> Result<u32, (&'static str, String)> {
        if !group.is_empty() || kind != "Service" {
            return Err((
                "InvalidKind",
                format!("backend kind {group}/{kind} is not supported"),
            ));
        }
        let ns = namespace.unwrap_or(route_ns);
        if ns != route_ns
            && !self
                .store
                .granted(route_kind, route_ns, "Service", ns, name)
        {
            return Err((
                "RefNotPermitted",
                format!("no ReferenceGrant in {ns} allows {route_kind}s from {route_ns} to Service {name}"),
            ));
        }
        let Some(service) = self.store.services.get(&(ns.to_owned(), name.to_owned())) else {
            return Err(("BackendNotFound", format!("Service {ns}/{name} not found")));
        };
        let Some(port) = port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else {
            return Err((
                "BackendNotFound",
                format!("backendRef to Service {ns}/{name} needs a port"),
            ));
        };
        let Some(sp) = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| p.port == i32::from(port)))
        else {
            return Err((
                "BackendNotFound",
                format!("Service {ns}/{name} has no port {port}"),
            ));
        };
        let grpc = route_kind == "GRPCRoute";
        let key = (ns.to_owned(), name.to_owned(), port, grpc);
        if let Some(&i) = self.index.get(&key) {
            return Ok(i);
        }
        let protocol = match sp.app_protocol.as_deref() {
            _ if grpc => AppProtocol::H2c, // gRPC is HTTP/2 only
            Some("kubernetes.io/h2c") => AppProtocol::H2c,
            Some("kubernetes.io/ws") => AppProtocol::WebSocket,
            _ => AppProtocol::Http1,
        };
        let endpoints = self.endpoints(ns, name, sp.name.as_deref().unwrap_or(""));
        let i = self.backends.len() as u32;
        self.backends.push(Backend {
            name: format!("{ns}/{name}:{port}"),
            protocol,
            endpoints,
        });
        self.index.insert(key, i);
        Ok(i)
    }

    /// Ready endpoints of a Service port, from the EndpointSlices labelled
    /// with the Service's name, matched by port name.
    fn endpoints(&self, ns: &str, service: &str, port_name: &str) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        let slices = self
            .store
            .endpoint_slices
            .range((ns.to_owned(), String::new())..)
            .take_while(|((sns, _), _)| sns == ns)
            .map(|(_, s)| s)
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .is_some_and(|n| n == service)
            });
        for slice in slices {
            let Some(port) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == port_name)
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for ep in slice.endpoints.iter().flatten() {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        let sa = SocketAddr::new(ip, port);
                        if !out.contains(&sa) {
                            out.push(sa);
                        }
                    }
                }
            }
        }
        out
    }
}
