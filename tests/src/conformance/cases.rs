//! The shape of `tests/<name>/cases.json` (see `CASES-CONVENTIONS.md` in the corpus).
//!
//! Two dialects share these types: the `gateway-*`/`gatewayclass-*` folders name the Go helper
//! of each status entry in `assertion`, while the `httproute-*` folders leave it out and imply
//! the helper from the entry's shape ([`StatusEntry::helper`]).

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One folder's `cases.json`.
#[derive(Debug, Deserialize)]
pub struct Cases {
    pub short_name: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default = "yes")]
    pub uses_base: bool,
    #[serde(default)]
    pub status: Vec<StatusEntry>,
    #[serde(default)]
    pub http_cases: Vec<HttpCase>,
    #[serde(default)]
    pub tls_cases: Vec<TlsCase>,
    #[serde(default)]
    pub tcp_cases: Vec<TcpCase>,
    #[serde(default)]
    pub udp_cases: Vec<UdpCase>,
    #[serde(default)]
    pub grpc_cases: Vec<GrpcCase>,
    #[serde(default)]
    pub weighted_distribution: Option<Weighted>,
    #[serde(default)]
    pub other_checks: Vec<String>,
    #[serde(default)]
    pub needs: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A condition to find: `status`/`reason` left out accept any value.
#[derive(Debug, Clone, Deserialize)]
pub struct Cond {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// One `status[]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct StatusEntry {
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default)]
    pub assertion: Option<String>,
    #[serde(default)]
    pub listener: Option<String>,
    /// `namespace/name` of the Gateway a route entry is about.
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Cond>,
    #[serde(default)]
    pub attached_routes: Option<i64>,
    /// Route kinds: plain names (`"HTTPRoute"`) or `{group, kind}` objects.
    #[serde(default)]
    pub supported_kinds: Option<Vec<Value>>,
    #[serde(default)]
    pub phase: Option<String>,
}

/// The Go helper a status entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    NamespacesReady,
    GatewayConditions,
    LatestGeneration,
    AddressAssigned,
    ListenerConditions,
    ListenersExact,
    ZeroRoutes,
    RouteParents,
    RouteParentsNoGeneration,
    RouteCondition,
    NoAcceptedParents,
    PolicyAncestor,
    GatewayClassAcceptedAny,
    /// `httproute-*` dialect: Gateway entry without a listener, i.e. the Gateway half of
    /// `NamespacesMustBeReady` (conditions at the current generation).
    GatewayReady,
}

impl StatusEntry {
    /// An entry the runner adds itself: `assertion` on `kind` `namespace/name` (or `name`).
    pub fn synthetic(kind: &str, key: &str, assertion: &str, conditions: Vec<Cond>) -> Self {
        let (namespace, name) = match key.split_once('/') {
            Some((ns, name)) => (Some(ns.to_owned()), name.to_owned()),
            None => (None, key.to_owned()),
        };
        Self {
            kind: kind.to_owned(),
            namespace,
            name,
            assertion: Some(assertion.to_owned()),
            listener: None,
            parent: None,
            conditions,
            attached_routes: None,
            supported_kinds: None,
            phase: None,
        }
    }

    /// The helper named by `assertion`, or implied by the `httproute-*` shape.
    pub fn helper(&self) -> Result<Helper, String> {
        Ok(match self.assertion.as_deref() {
            Some("namespaces_ready") => Helper::NamespacesReady,
            Some("gateway_conditions") => Helper::GatewayConditions,
            Some("latest_observed_generation") => Helper::LatestGeneration,
            Some("address_assigned") => Helper::AddressAssigned,
            Some("listener_conditions") => Helper::ListenerConditions,
            Some("listeners_exact") => Helper::ListenersExact,
            Some("zero_routes") => Helper::ZeroRoutes,
            Some("route_parents") => Helper::RouteParents,
            Some("route_parents_no_generation_check") => Helper::RouteParentsNoGeneration,
            Some("route_condition") => Helper::RouteCondition,
            Some("no_accepted_parents") => Helper::NoAcceptedParents,
            Some("policy_ancestor_condition") => Helper::PolicyAncestor,
            Some("gatewayclass_accepted_any") => Helper::GatewayClassAcceptedAny,
            Some(other) => return Err(format!("unknown status assertion {other:?}")),
            None => match (self.kind.as_str(), self.listener.is_some()) {
                ("Gateway", false) => Helper::GatewayReady,
                // Only GatewayStatusMustHaveListeners compares attachedRoutes.
                ("Gateway", true) if self.attached_routes.is_some() => Helper::ListenersExact,
                ("Gateway", true) => Helper::ListenerConditions,
                (_, _) if self.parent.is_some() => Helper::RouteParents,
                (kind, _) => return Err(format!("cannot tell what the {kind} entry asserts")),
            },
        })
    }

    /// `namespace/name` (or `name` for cluster-scoped kinds).
    pub fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// A request as the Go client would make it.
#[derive(Debug, Clone, Deserialize)]
pub struct Request {
    #[serde(default)]
    pub host: String,
    #[serde(default = "get")]
    pub method: String,
    #[serde(default = "slash")]
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "http")]
    pub protocol: String,
    #[serde(default = "http_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub client_cert: Option<String>,
    /// `namespace/name:key` of the certificate the HTTPS client trusts.
    #[serde(default)]
    pub trust_anchor: Option<String>,
    #[serde(default)]
    pub unfollow_redirect: bool,
}

fn get() -> String {
    "GET".to_owned()
}

fn slash() -> String {
    "/".to_owned()
}

fn http() -> String {
    "HTTP".to_owned()
}

fn http_scheme() -> String {
    "http".to_owned()
}

/// What the backend must have received.
#[derive(Debug, Clone, Deserialize)]
pub struct ExpectedRequest {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub absent_headers: Vec<String>,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub client_cert: Option<String>,
}

/// What the client must receive.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Response {
    #[serde(default)]
    pub status_codes: Vec<u16>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub absent_headers: Vec<String>,
    #[serde(default)]
    pub valid_header_values: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub ignore_whitespace: bool,
}

/// Expected `Location` parts; empty strings mean "same as the request" (scheme, path),
/// "not checked" (host) or "absent or the scheme's default" (port).
#[derive(Debug, Clone, Deserialize)]
pub struct Redirect {
    #[serde(default)]
    pub scheme: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: String,
    #[serde(default)]
    pub path: String,
}

/// A backend that must also receive the request.
#[derive(Debug, Clone, Deserialize)]
pub struct Mirror {
    pub backend: String,
    pub namespace: String,
    /// Set for percentage mirrors, which are checked by counting a batch instead.
    #[serde(default)]
    pub percent: Option<f64>,
}

/// One `http_cases[]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpCase {
    pub gateway: String,
    #[serde(default)]
    pub listener_port: Option<u16>,
    #[serde(default)]
    pub test_case_name: String,
    pub request: Request,
    #[serde(default)]
    pub expected_request: Option<ExpectedRequest>,
    #[serde(default)]
    pub response: Response,
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub expect: Option<String>,
    #[serde(default)]
    pub redirect_request: Option<Redirect>,
    #[serde(default)]
    pub mirrored_to: Vec<Mirror>,
    #[serde(default)]
    pub backend_set_response_headers: BTreeMap<String, String>,
}

/// `weighted_distribution`.
#[derive(Debug, Clone, Deserialize)]
pub struct Weighted {
    pub gateway: String,
    #[serde(default)]
    pub listener_port: Option<u16>,
    /// `grpc`, `tcp`, `udp`; absent for HTTP.
    #[serde(default)]
    pub protocol: Option<String>,
    /// A [`Request`] for HTTP; a sentence describing the probe for the other protocols.
    pub request: Value,
    pub expected_weights: BTreeMap<String, f64>,
}

/// What a `tls_cases[]` entry expects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsExpect {
    /// The Gateway closes or resets the connection without answering the ClientHello.
    ConnectionRejected,
    /// The TCP echo protocol works over a TLS connection to the Gateway.
    TcpEchoOverTls,
    /// An expectation this runner does not know.
    #[serde(other)]
    Unknown,
}

/// One `tls_cases[]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct TlsCase {
    pub gateway: String,
    #[serde(default)]
    pub listener_port: Option<u16>,
    pub sni: String,
    pub expect: TlsExpect,
    /// Deployment whose pods must answer (`<backend>-` prefix).
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub backend_is_tls: bool,
    /// `namespace/name:key` of the certificate the client trusts.
    #[serde(default)]
    pub trust_anchor: Option<String>,
    /// The SNI the backend must report having seen (its own TLS termination).
    #[serde(default)]
    pub backend_observed_sni: Option<String>,
    #[serde(default)]
    pub phase: Option<String>,
}

/// One `tcp_cases[]` entry. `send` and `expect` are prose from the Go test; the runner reads
/// the exchange off `send` ([`super::tcp_echo::Exchange`]).
#[derive(Debug, Clone, Deserialize)]
pub struct TcpCase {
    pub gateway: String,
    #[serde(default)]
    pub listener_port: Option<u16>,
    pub send: String,
    /// Deployment whose pods must answer (`<backend>-` prefix); empty: any pod.
    #[serde(default)]
    pub expect_backend: String,
    /// Empty: not checked.
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub backend_is_tls: bool,
    /// N fresh connections in a row, each of which must succeed.
    #[serde(default)]
    pub repeat: Option<u32>,
    #[serde(default)]
    pub per_request_timeout_s: Option<u64>,
    /// A pod-name prefix (`<backend>-`) that must never answer.
    #[serde(default)]
    pub must_not_reach_backend: Option<String>,
    #[serde(default)]
    pub expect: Option<String>,
    #[serde(default)]
    pub phase: Option<String>,
}

/// One `udp_cases[]` entry: `send` is the datagram, except for the DNS probe whose `send`
/// describes the query; `expect` is prose from the Go test.
#[derive(Debug, Clone, Deserialize)]
pub struct UdpCase {
    pub gateway: String,
    #[serde(default)]
    pub listener_port: Option<u16>,
    pub send: String,
    /// Empty: not checked.
    #[serde(default)]
    pub expect_service: String,
    /// Empty: not checked.
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub expect: Option<String>,
    #[serde(default)]
    pub phase: Option<String>,
}

/// One `grpc_cases[]` entry: a unary call to the echo service over h2c.
#[derive(Debug, Clone, Deserialize)]
pub struct GrpcCase {
    pub gateway: String,
    #[serde(default)]
    pub listener_port: Option<u16>,
    #[serde(default)]
    pub test_case_name: String,
    /// The `:authority`; empty: the dialed address.
    #[serde(default)]
    pub host: String,
    pub service: String,
    pub method: String,
    /// Request metadata (names lower-cased on the wire).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Pod-name prefix (no `-` added); empty: any pod.
    #[serde(default)]
    pub expect_backend: String,
    /// Empty: not checked.
    #[serde(default)]
    pub namespace: String,
    /// A gRPC code as Go names it (`OK`, `Unimplemented`).
    pub expected_status: String,
}
