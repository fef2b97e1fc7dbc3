//! The snapshot: the effective configuration of one node, as the control plane
//! computed it and every dataplane worker serves it.
//!
//! It is deliberately flat and already resolved: listeners carry their virtual
//! hosts, virtual hosts carry their rules in precedence order, and rules point
//! at [`Backend`]s by index, each with its endpoints' socket addresses. The
//! dataplane never has to know about Gateway API objects.
//!
//! Bounded values are newtypes that cannot hold invalid values
//! ([`Hostname`]); they are checked again when a snapshot is decoded, because
//! the bytes in shared memory are not trusted.

pub mod codec;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The whole effective configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    /// Every programmed listener of every Gateway this node serves.
    pub listeners: Vec<Listener>,
    /// Backends (a Service port with its endpoints) referenced by index from rules.
    pub backends: Vec<Backend>,
    /// Certificates with their private keys, referenced by index from
    /// terminating listeners. The segment that carries them is mode 0600.
    pub certificates: Vec<Certificate>,
}

/// A certificate chain and its private key, from a kubernetes.io/tls Secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// `namespace/name` of the Secret, for logs.
    pub name: String,
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The private key.
    pub key: PrivateKey,
}

impl fmt::Debug for Certificate {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("name", &self.name)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// A DER private key and its encoding.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateKey {
    /// How `der` is encoded.
    pub format: KeyFormat,
    /// The key.
    pub der: Vec<u8>,
}

/// Encodings of a private key (`tls.key` may hold any of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyFormat {
    /// PKCS#8 (`BEGIN PRIVATE KEY`).
    Pkcs8,
    /// PKCS#1 RSA (`BEGIN RSA PRIVATE KEY`).
    Pkcs1,
    /// SEC1 EC (`BEGIN EC PRIVATE KEY`).
    Sec1,
}

/// Namespace and name of a Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a listener speaks on its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ListenerProtocol {
    /// Plain HTTP/1.1.
    Http,
    /// HTTP over TLS terminated here; SNI picks the listener.
    Https,
    /// TLS passed through untouched; the ClientHello's SNI picks the route.
    TlsPassthrough,
    /// TLS terminated here, the plaintext forwarded as a byte stream.
    TlsTerminate,
    /// A TCP byte stream.
    Tcp,
    /// UDP datagrams.
    Udp,
}

/// The transport a listener's socket uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Transport {
    /// A TCP listening socket.
    Tcp,
    /// A UDP socket.
    Udp,
}

impl ListenerProtocol {
    /// The socket type this protocol listens on.
    pub fn transport(self) -> Transport {
        match self {
            Self::Udp => Transport::Udp,
            _ => Transport::Tcp,
        }
    }

    /// Whether TLS is terminated here (and the listener carries certificates).
    pub fn terminates_tls(self) -> bool {
        matches!(self, Self::Https | Self::TlsTerminate)
    }

    /// Whether requests are HTTP (as opposed to L4 streams or datagrams).
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::Https)
    }
}

/// One Gateway listener, bound to one address and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// The Gateway this listener belongs to.
    pub gateway: ObjectRef,
    /// The listener's section name.
    pub name: String,
    /// Address to bind.
    pub address: IpAddr,
    /// Port to bind (never 0).
    pub port: u16,
    /// Protocol spoken.
    pub protocol: ListenerProtocol,
    /// The listener's hostname, if it restricts one.
    pub hostname: Option<Hostname>,
    /// Indices into [`Snapshot::certificates`] for terminating listeners
    /// (several when they hold different key types), empty otherwise.
    pub certificates: Vec<u32>,
    /// Virtual hosts in the order the translator chose; the route table orders
    /// lookups itself (exact, then longest wildcard, then catch-all).
    pub virtual_hosts: Vec<VirtualHost>,
}

/// A set of rules that apply to one effective hostname of a listener. For
/// L4 listeners the host is the TLS SNI (TLS) or [`HostMatch::Any`] (TCP,
/// UDP), and the first rule's backends take every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualHost {
    /// Which request hosts this applies to.
    pub host: HostMatch,
    /// Rules in precedence order: the first that matches wins.
    pub rules: Vec<Rule>,
}

/// How a virtual host or a listener hostname matches a request's host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HostMatch {
    /// Exactly this (lower-case) name.
    Exact(Hostname),
    /// `*.suffix`: any name with at least one more label before `.suffix`.
    /// Holds the full wildcard hostname, `*.` included.
    Wildcard(Hostname),
    /// Any host.
    Any,
}

/// A validated, lower-case DNS hostname, optionally a wildcard (`*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hostname(String);

/// A hostname that is not a valid (possibly wildcard) DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hostname {0:?}")]
pub struct InvalidHostname(pub String);

impl Hostname {
    /// The hostname as text, lower-case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a wildcard (`*.example.com`).
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// The suffix a wildcard matches, with its leading dot (`.example.com`).
    pub fn wildcard_suffix(&self) -> Option<&str> {
        self.0.strip_prefix('*')
    }

    /// Whether `host` (lower-case, without port) is matched by this name.
    pub fn matches(&self, host: &str) -> bool {
        match self.wildcard_suffix() {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            None => self.0 == host,
        }
    }
}

impl TryFrom<String> for Hostname {
    type Error = InvalidHostname;

    /// Gateway API hostnames: RFC 1123 labels, optionally prefixed by a single
    /// `*.` wildcard label; no IP addresses, no trailing dot, no port.
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        let lower = raw.to_ascii_lowercase();
        let body = lower.strip_prefix("*.").unwrap_or(&lower);
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let ok = !body.is_empty()
            && lower.len() <= 253
            && body.split('.').all(valid_label)
            && body.parse::<std::net::Ipv4Addr>().is_err();
        if ok {
            Ok(Self(lower))
        } else {
            Err(InvalidHostname(raw))
        }
    }
}

impl TryFrom<&str> for Hostname {
    type Error = InvalidHostname;
    fn try_from(raw: &str) -> Result<Self, Self::Error> {
        Self::try_from(raw.to_owned())
    }
}

impl From<Hostname> for String {
    fn from(h: Hostname) -> Self {
        h.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which route rule a dataplane rule came from (for logs and metrics).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteRef {
    /// Route kind, e.g. `HTTPRoute`.
    pub kind: String,
    /// The route object.
    pub route: ObjectRef,
    /// Index of the rule within the route.
    pub rule: u32,
}

/// One match of one route rule, with what to do when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Where it came from.
    pub source: RouteRef,
    /// The conditions, all of which must hold.
    pub matches: RouteMatch,
    /// Weighted backends; empty means the rule has no backends (500).
    pub backends: Vec<WeightedBackend>,
    /// Timeouts from the rule.
    pub timeouts: Timeouts,
    /// Filters applied to every request of the rule.
    pub filters: Filters,
    /// Retry policy, if any.
    pub retry: Option<Retry>,
}

/// HTTPRoute rule retry (GEP-1731): a replayable request is sent again, to
/// the next endpoint, after a connection error, a backendRequest timeout, or
/// a response whose status is listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Retries after the first try.
    pub attempts: u32,
    /// Response statuses that are retried.
    pub codes: Vec<u16>,
    /// Pause before each retry.
    pub backoff: Duration,
}

/// HTTPRoute filters, resolved. Rule-level filters apply to every request of
/// the rule; backendRef-level ones only to requests sent to that backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Filters {
    /// RequestHeaderModifier.
    pub request_headers: Option<HeaderModifier>,
    /// ResponseHeaderModifier.
    pub response_headers: Option<HeaderModifier>,
    /// RequestRedirect: answer with a redirect instead of forwarding.
    pub redirect: Option<Redirect>,
    /// URLRewrite.
    pub rewrite: Option<Rewrite>,
    /// RequestMirror (several allowed).
    pub mirrors: Vec<Mirror>,
    /// CORS.
    pub cors: Option<Cors>,
}

impl Filters {
    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// The CORS filter (Gateway API HTTPCORSFilter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cors {
    /// Allowed origins: `*`, or `scheme://host[:port]` where host may start
    /// with `*.`; lower-case.
    pub allow_origins: Vec<String>,
    /// Allowed methods, or `*`.
    pub allow_methods: Vec<String>,
    /// Allowed request headers, or `*`.
    pub allow_headers: Vec<String>,
    /// Response headers exposed to scripts.
    pub expose_headers: Vec<String>,
    /// Seconds a preflight may be cached.
    pub max_age: u32,
    /// Whether credentials are allowed.
    pub allow_credentials: bool,
}

impl Cors {
    /// Whether `origin` (as the browser sent it) is allowed.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let Some(o) = Origin::parse(origin) else {
            return false;
        };
        self.allow_origins.iter().any(|p| {
            if p == "*" {
                return true;
            }
            let Some(p) = Origin::parse(p) else {
                return false;
            };
            let host_ok = match p.host.strip_prefix("*.") {
                Some(suffix) => {
                    o.host.len() > suffix.len() + 1
                        && o.host.ends_with(suffix)
                        && o.host.as_bytes()[o.host.len() - suffix.len() - 1] == b'.'
                }
                None => o.host.eq_ignore_ascii_case(p.host),
            };
            host_ok && o.scheme.eq_ignore_ascii_case(p.scheme) && o.port == p.port
        })
    }
}

/// `scheme://host[:port]`, port defaulted from the scheme.
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: u16,
}

impl<'a> Origin<'a> {
    fn parse(s: &'a str) -> Option<Self> {
        let (scheme, rest) = s.split_once("://")?;
        let default = match scheme.to_ascii_lowercase().as_str() {
            "https" => 443,
            "http" => 80,
            _ => 0,
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                (h, p.parse().ok()?)
            }
            _ => (rest, default),
        };
        (!host.is_empty() && !host.contains('/')).then_some(Self { scheme, host, port })
    }
}

/// Header edits: remove, then set (replace), then add (append).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HeaderModifier {
    /// Replaced or created, `(name, value)`; names lower-case.
    pub set: Vec<(String, String)>,
    /// Appended, `(name, value)`; names lower-case.
    pub add: Vec<(String, String)>,
    /// Removed; names lower-case.
    pub remove: Vec<String>,
}

/// How a filter changes the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathModifier {
    /// Replace the whole path.
    ReplaceFullPath(String),
    /// Replace the prefix the rule matched.
    ReplacePrefixMatch(String),
}

/// RequestRedirect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// `http` or `https`; `None` keeps the request's.
    pub scheme: Option<String>,
    /// New host; `None` keeps the request's.
    pub hostname: Option<String>,
    /// New port; `None` derives it (spec rules).
    pub port: Option<u16>,
    /// New path; `None` keeps the request's.
    pub path: Option<PathModifier>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// URLRewrite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    /// New Host header.
    pub hostname: Option<String>,
    /// New path.
    pub path: Option<PathModifier>,
}

/// RequestMirror: a copy of each (sampled) request goes to another backend,
/// whose answer is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    /// Index into [`Snapshot::backends`].
    pub backend: u32,
    /// Share of requests mirrored, `numerator / denominator`.
    pub numerator: u32,
    /// Never 0.
    pub denominator: u32,
}

/// Conditions of one HTTPRouteMatch (AND).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteMatch {
    /// Path condition.
    pub path: PathMatch,
    /// Method condition, upper-case, if any.
    pub method: Option<String>,
    /// Header conditions (names lower-case).
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions (names exact, case-sensitive).
    pub query: Vec<QueryMatch>,
}

impl Default for RouteMatch {
    fn default() -> Self {
        Self {
            path: PathMatch::Prefix("/".into()),
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
        }
    }
}

/// A path condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatch {
    /// The path equals this.
    Exact(String),
    /// The path starts with these segments (`/foo` matches `/foo/bar`, not
    /// `/foobar`); held without trailing slash except for `/`.
    Prefix(String),
    /// The whole path matches this regular expression.
    RegularExpression(String),
}

/// Exact or regular-expression comparison of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchKind {
    /// Byte-for-byte equality.
    Exact,
    /// The whole value matches the regular expression.
    RegularExpression,
}

/// A header condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Lower-case header name.
    pub name: String,
    /// How to compare.
    pub kind: MatchKind,
    /// Value or pattern.
    pub value: String,
}

/// A query parameter condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMatch {
    /// Parameter name.
    pub name: String,
    /// How to compare.
    pub kind: MatchKind,
    /// Value or pattern.
    pub value: String,
}

/// A backendRef with its weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedBackend {
    /// Relative weight; 0 means never chosen.
    pub weight: u32,
    /// Where requests go.
    pub target: BackendTarget,
    /// Filters for requests sent to this backend.
    pub filters: Filters,
}

/// Where a weighted backendRef sends requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendTarget {
    /// Index into [`Snapshot::backends`].
    Backend(u32),
    /// The reference is invalid (missing, not permitted, wrong kind): its share
    /// of the traffic is answered with this status (500).
    Invalid {
        /// Status to answer.
        status: u16,
    },
}

/// The protocol used to talk to a backend, from the Service port's appProtocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppProtocol {
    /// HTTP/1.1.
    Http1,
    /// Cleartext HTTP/2 with prior knowledge (`kubernetes.io/h2c`).
    H2c,
    /// HTTP/1.1 with WebSocket upgrades (`kubernetes.io/ws`).
    WebSocket,
}

/// A Service port and its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// `namespace/service:port`, for logs and metrics.
    pub name: String,
    /// Protocol to speak.
    pub protocol: AppProtocol,
    /// Ready endpoints; empty means 503.
    pub endpoints: Vec<SocketAddr>,
}

/// Rule timeouts (`HTTPRoute.spec.rules[].timeouts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Timeouts {
    /// Whole request, from its start to the end of the response headers.
    pub request: Option<Duration>,
    /// One request to a backend, from sending it to its response headers.
    pub backend_request: Option<Duration>,
}

impl Snapshot {
    /// Counts for summaries: listeners, rules, backends, endpoints.
    pub fn summary(&self) -> SnapshotSummary {
        SnapshotSummary {
            listeners: self.listeners.len(),
            rules: self
                .listeners
                .iter()
                .flat_map(|l| &l.virtual_hosts)
                .map(|v| v.rules.len())
                .sum(),
            backends: self.backends.len(),
            endpoints: self.backends.iter().map(|b| b.endpoints.len()).sum(),
        }
    }
}

/// Sizes of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// Listener count.
    pub listeners: usize,
    /// Rule count across all virtual hosts.
    pub rules: usize,
    /// Backend count.
    pub backends: usize,
    /// Endpoint count across all backends.
    pub endpoints: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_lowercased_and_validated() {
        assert_eq!(
            Hostname::try_from("Foo.Example.COM").unwrap().as_str(),
            "foo.example.com"
        );
        assert!(Hostname::try_from("*.example.com").unwrap().is_wildcard());
        for bad in [
            "", "*", "foo..com", "-a.com", "a_b.com", "1.2.3.4", "*.*.com", "a.com:80",
        ] {
            assert!(Hostname::try_from(bad).is_err(), "{bad} should be invalid");
        }
    }

    #[test]
    fn cors_origins_match_scheme_host_wildcards_and_port() {
        let cors = Cors {
            allow_origins: vec!["https://www.foo.com".into(), "https://*.bar.com".into()],
            allow_methods: vec![],
            allow_headers: vec![],
            expose_headers: vec![],
            max_age: 5,
            allow_credentials: false,
        };
        assert!(cors.allows_origin("https://www.foo.com"));
        assert!(cors.allows_origin("https://www.foo.com:443"));
        assert!(cors.allows_origin("https://xpto.www.bar.com"));
        assert!(!cors.allows_origin("https://bar.com"));
        assert!(!cors.allows_origin("https://foobar.com"));
        assert!(!cors.allows_origin("http://www.foo.com"));
        assert!(!cors.allows_origin("https://www.foo.com:8443"));
        let any = Cors {
            allow_origins: vec!["*".into()],
            ..cors
        };
        assert!(any.allows_origin("https://foobar.com:12345"));
    }

    #[test]
    fn wildcard_needs_at_least_one_more_label() {
        let w = Hostname::try_from("*.example.com").unwrap();
        assert!(w.matches("foo.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("fooexample.com"));
    }
}
