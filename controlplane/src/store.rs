//! The indexed object store: every Gateway API and Kubernetes object the
//! controlplane knows, by kind, namespace and name.
//!
//! Providers (the YAML directory now, the Kubernetes API later) fill it; the
//! pure [`crate::translate`] reads it. Keys are ordered, so translation visits
//! objects in a stable order and equal stores give equal snapshots.

use gateway_api::experimental::httproutes::HttpRoute;
use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::experimental::udproutes::UdpRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::referencegrants::ReferenceGrant;
use gateway_api::tlsroutes::TlsRoute;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeMap;

/// `(namespace, name)` of a namespaced object.
pub type Key = (String, String);

/// One typed object, as a provider hands it over.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // objects are moved a few at a time, never per request
pub enum Object {
    /// gateway.networking.k8s.io GatewayClass.
    GatewayClass(GatewayClass),
    /// gateway.networking.k8s.io Gateway.
    Gateway(Gateway),
    /// gateway.networking.k8s.io HTTPRoute.
    HttpRoute(HttpRoute),
    /// gateway.networking.k8s.io GRPCRoute.
    GrpcRoute(GrpcRoute),
    /// gateway.networking.k8s.io TLSRoute.
    TlsRoute(TlsRoute),
    /// gateway.networking.k8s.io TCPRoute.
    TcpRoute(TcpRoute),
    /// gateway.networking.k8s.io UDPRoute.
    UdpRoute(UdpRoute),
    /// gateway.networking.k8s.io ReferenceGrant.
    ReferenceGrant(ReferenceGrant),
    /// v1 Namespace.
    Namespace(Namespace),
    /// v1 Service.
    Service(Service),
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// v1 Secret.
    Secret(Secret),
}

/// The kinds the store holds, by their Kubernetes `kind`.
pub const KINDS: [&str; 12] = [
    "GatewayClass",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "TLSRoute",
    "TCPRoute",
    "UDPRoute",
    "ReferenceGrant",
    "Namespace",
    "Service",
    "EndpointSlice",
    "Secret",
];

/// Every object known, indexed.
#[derive(Debug, Clone, Default)]
pub struct Store {
    /// GatewayClasses by name (cluster-scoped).
    pub gateway_classes: BTreeMap<String, GatewayClass>,
    /// Gateways.
    pub gateways: BTreeMap<Key, Gateway>,
    /// HTTPRoutes.
    pub http_routes: BTreeMap<Key, HttpRoute>,
    /// GRPCRoutes.
    pub grpc_routes: BTreeMap<Key, GrpcRoute>,
    /// TLSRoutes.
    pub tls_routes: BTreeMap<Key, TlsRoute>,
    /// TCPRoutes.
    pub tcp_routes: BTreeMap<Key, TcpRoute>,
    /// UDPRoutes.
    pub udp_routes: BTreeMap<Key, UdpRoute>,
    /// ReferenceGrants.
    pub reference_grants: BTreeMap<Key, ReferenceGrant>,
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Services.
    pub services: BTreeMap<Key, Service>,
    /// EndpointSlices.
    pub endpoint_slices: BTreeMap<Key, EndpointSlice>,
    /// Secrets.
    pub secrets: BTreeMap<Key, Secret>,
}

/// Runs `$body` with `$map` bound to the store's map for `$kind` (a
/// `KINDS` entry). Cluster-scoped kinds are keyed by name, the others by
/// `(namespace, name)`.
macro_rules! with_map {
    ($store:expr, $kind:expr, |$map:ident, $key:ident| $body:expr) => {
        match $kind {
            "GatewayClass" => {
                let $map = &mut $store.gateway_classes;
                let $key = |k: Key| k.1;
                $body
            }
            "Namespace" => {
                let $map = &mut $store.namespaces;
                let $key = |k: Key| k.1;
                $body
            }
            "Gateway" => with_map!(@ns $store.gateways, $map, $key, $body),
            "HTTPRoute" => with_map!(@ns $store.http_routes, $map, $key, $body),
            "GRPCRoute" => with_map!(@ns $store.grpc_routes, $map, $key, $body),
            "TLSRoute" => with_map!(@ns $store.tls_routes, $map, $key, $body),
            "TCPRoute" => with_map!(@ns $store.tcp_routes, $map, $key, $body),
            "UDPRoute" => with_map!(@ns $store.udp_routes, $map, $key, $body),
            "ReferenceGrant" => with_map!(@ns $store.reference_grants, $map, $key, $body),
            "Service" => with_map!(@ns $store.services, $map, $key, $body),
            "EndpointSlice" => with_map!(@ns $store.endpoint_slices, $map, $key, $body),
            "Secret" => with_map!(@ns $store.secrets, $map, $key, $body),
            _ => {}
        }
    };
    (@ns $field:expr, $map:ident, $key:ident, $body:expr) => {{
        let $map = &mut $field;
        let $key = |k: Key| k;
        $body
    }};
}

impl Object {
    /// The object's Kubernetes `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::GatewayClass(_) => "GatewayClass",
            Object::Gateway(_) => "Gateway",
            Object::HttpRoute(_) => "HTTPRoute",
            Object::GrpcRoute(_) => "GRPCRoute",
            Object::TlsRoute(_) => "TLSRoute",
            Object::TcpRoute(_) => "TCPRoute",
            Object::UdpRoute(_) => "UDPRoute",
            Object::ReferenceGrant(_) => "ReferenceGrant",
            Object::Namespace(_) => "Namespace",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Secret(_) => "Secret",
        }
    }

    /// The object's metadata.
    pub fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::GatewayClass(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
            Object::TlsRoute(o) => &o.metadata,
            Object::TcpRoute(o) => &o.metadata,
            Object::UdpRoute(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
        }
    }
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Store {
    /// Adds or replaces an object. Namespaced objects without a namespace go
    /// to `default`, as `kubectl apply` would put them.
    pub fn insert(&mut self, object: Object) {
        match object {
            Object::GatewayClass(o) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                self.gateway_classes.insert(name, o);
            }
            Object::Gateway(o) => {
                self.gateways.insert(key(&o.metadata), o);
            }
            Object::HttpRoute(o) => {
                self.http_routes.insert(key(&o.metadata), o);
            }
            Object::GrpcRoute(o) => {
                self.grpc_routes.insert(key(&o.metadata), o);
            }
            Object::TlsRoute(o) => {
                self.tls_routes.insert(key(&o.metadata), o);
            }
            Object::TcpRoute(o) => {
                self.tcp_routes.insert(key(&o.metadata), o);
            }
            Object::UdpRoute(o) => {
                self.udp_routes.insert(key(&o.metadata), o);
            }
            Object::ReferenceGrant(o) => {
                self.reference_grants.insert(key(&o.metadata), o);
            }
            Object::Namespace(o) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                self.namespaces.insert(name, o);
            }
            Object::Service(o) => {
                self.services.insert(key(&o.metadata), o);
            }
            Object::EndpointSlice(o) => {
                self.endpoint_slices.insert(key(&o.metadata), o);
            }
            Object::Secret(o) => {
                self.secrets.insert(key(&o.metadata), o);
            }
        }
    }

    /// The stored object with `like`'s kind, namespace and name.
    pub fn get(&self, like: &Object) -> Option<Object> {
        let k = key(like.meta());
        match like {
            Object::GatewayClass(_) => self
                .gateway_classes
                .get(&k.1)
                .cloned()
                .map(Object::GatewayClass),
            Object::Namespace(_) => self.namespaces.get(&k.1).cloned().map(Object::Namespace),
            Object::Gateway(_) => self.gateways.get(&k).cloned().map(Object::Gateway),
            Object::HttpRoute(_) => self.http_routes.get(&k).cloned().map(Object::HttpRoute),
            Object::GrpcRoute(_) => self.grpc_routes.get(&k).cloned().map(Object::GrpcRoute),
            Object::TlsRoute(_) => self.tls_routes.get(&k).cloned().map(Object::TlsRoute),
            Object::TcpRoute(_) => self.tcp_routes.get(&k).cloned().map(Object::TcpRoute),
            Object::UdpRoute(_) => self.udp_routes.get(&k).cloned().map(Object::UdpRoute),
            Object::ReferenceGrant(_) => self
                .reference_grants
                .get(&k)
                .cloned()
                .map(Object::ReferenceGrant),
            Object::Service(_) => self.services.get(&k).cloned().map(Object::Service),
            Object::EndpointSlice(_) => self
                .endpoint_slices
                .get(&k)
                .cloned()
                .map(Object::EndpointSlice),
            Object::Secret(_) => self.secrets.get(&k).cloned().map(Object::Secret),
        }
    }

    /// Removes an object (by kind, namespace and name), if present.
    pub fn remove(&mut self, object: &Object) {
        let k = key(object.meta());
        with_map!(self, object.kind(), |map, to_key| {
            map.remove(&to_key(k));
        });
    }

    /// Replaces every object of `kind` (only those in `namespace`, when
    /// given) with `objects`: what a completed (re-)list of a watch means.
    pub fn replace_kind(&mut self, kind: &str, namespace: Option<&str>, objects: Vec<Object>) {
        with_map!(self, kind, |map, _to_key| {
            match namespace {
                Some(ns) => map.retain(|_, o| o.metadata.namespace.as_deref() != Some(ns)),
                None => map.clear(),
            }
        });
        for o in objects {
            self.insert(o);
        }
    }

    /// Namespaces holding Secrets that listeners of our Gateways refer to
    /// (whether or not a ReferenceGrant allows it: translation decides).
    pub fn referenced_secret_namespaces(
        &self,
        controller: &str,
    ) -> std::collections::BTreeSet<String> {
        let ours = |class: &str| {
            self.gateway_classes
                .get(class)
                .is_some_and(|c| c.spec.controller_name == controller)
        };
        let mut out = std::collections::BTreeSet::new();
        for ((ns, _), g) in &self.gateways {
            if !ours(&g.spec.gateway_class_name) {
                continue;
            }
            for l in &g.spec.listeners {
                let refs = l.tls.as_ref().and_then(|t| t.certificate_refs.as_deref());
                for r in refs.unwrap_or(&[]) {
                    let core_secret = r.group.as_deref().unwrap_or("").is_empty()
                        && r.kind.as_deref().unwrap_or("Secret") == "Secret";
                    if core_secret {
                        out.insert(r.namespace.clone().unwrap_or_else(|| ns.clone()));
                    }
                }
            }
        }
        out
    }

    /// Labels of a namespace, including the `kubernetes.io/metadata.name`
    /// label the API server adds to every namespace. A namespace that was
    /// never declared (standalone mode allows that) has only that label.
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .get(namespace)
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        labels.insert(
            "kubernetes.io/metadata.name".to_owned(),
            namespace.to_owned(),
        );
        labels
    }

    /// Whether a ReferenceGrant in `to_ns` lets `from_kind`s (Gateway API
    /// group) in `from_ns` refer to the core-group `to_kind` named `to_name`.
    pub fn granted(
        &self,
        from_kind: &str,
        from_ns: &str,
        to_kind: &str,
        to_ns: &str,
        to_name: &str,
    ) -> bool {
        self.reference_grants
            .range((to_ns.to_owned(), String::new())..)
            .take_while(|((ns, _), _)| ns == to_ns)
            .any(|(_, g)| {
                let from_ok = g.spec.from.iter().any(|f| {
                    f.group == "gateway.networking.k8s.io"
                        && f.kind == from_kind
                        && f.namespace == from_ns
                });
                let to_ok = g.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to_name)
                });
                from_ok && to_ok
            })
    }

    /// Number of objects held, by kind, for logs and metrics.
    pub fn counts(&self) -> [(&'static str, usize); 12] {
        [
            (KINDS[0], self.gateway_classes.len()),
            (KINDS[1], self.gateways.len()),
            (KINDS[2], self.http_routes.len()),
            (KINDS[3], self.grpc_routes.len()),
            (KINDS[4], self.tls_routes.len()),
            (KINDS[5], self.tcp_routes.len()),
            (KINDS[6], self.udp_routes.len()),
            (KINDS[7], self.reference_grants.len()),
            (KINDS[8], self.namespaces.len()),
            (KINDS[9], self.services.len()),
            (KINDS[10], self.endpoint_slices.len()),
            (KINDS[11], self.secrets.len()),
        ]
    }
}
