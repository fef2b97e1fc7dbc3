//! The compiled, per-worker route table.
//!
//! Built once per snapshot by each worker ([`RouteTable::compile`]), beside
//! the table in use, then swapped in between requests. Lookups allocate
//! nothing: a request's host picks the listener (exact hash, then the longest
//! matching wildcard suffix, then the catch-all), the host picks the virtual
//! host inside it the same way, and the first rule whose conditions all hold
//! wins (rules arrive in precedence order).

use crate::snapshot::{
    Backend, Certificate, Filters, HostMatch, ListenerProtocol, MatchKind, ObjectRef, PathMatch,
    Retry, RouteRef, Snapshot, Timeouts, Transport, WeightedBackend,
};
use foldhash::HashMap;
use regex::Regex;
use std::net::IpAddr;

/// A snapshot that decoded but cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A regular expression does not compile.
    #[error("invalid regular expression {pattern:?}")]
    Regex {
        /// The pattern.
        pattern: String,
        /// Why.
        #[source]
        source: regex::Error,
    },
    /// Two listeners on one address and port speak different protocols.
    #[error("listeners on {address}:{port} disagree on protocol")]
    MixedProtocols {
        /// Address.
        address: IpAddr,
        /// Port.
        port: u16,
    },
}

/// A request as routing sees it.
pub struct Request<'a> {
    /// Method token.
    pub method: &'a str,
    /// Host without port, lower-case, without trailing dot.
    pub host: &'a str,
    /// Path, without query.
    pub path: &'a str,
    /// Query string without `?`.
    pub query: Option<&'a str>,
    /// Header fields.
    pub headers: &'a [httparse::Header<'a>],
}

/// Identity of a listener, for logs, metrics and responses.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// Dense index of the listener within its table (for per-table arrays).
    pub id: u32,
    /// The Gateway.
    pub gateway: ObjectRef,
    /// The listener's name.
    pub name: String,
    /// Indices of the table's certificates, for [`RouteTable::certificate`]
    /// (terminating listeners).
    pub certificates: Vec<u32>,
}

/// The outcome of a lookup.
pub enum RouteDecision<'t> {
    /// No listener on this socket accepts the host (404).
    NoListener,
    /// The listener has no matching rule (404).
    NoRoute(&'t ListenerInfo),
    /// The host belongs to another listener than the one the connection's
    /// TLS SNI selected (421).
    Misdirected(&'t ListenerInfo),
    /// This rule matched.
    Rule(&'t ListenerInfo, &'t CompiledRule),
}

/// Finds the entry for a host: exact, then longest wildcard suffix, then any.
#[derive(Debug, Default)]
struct HostIndex {
    exact: HashMap<String, usize>,
    /// `(suffix with leading dot, entry)`, longest suffix first.
    wildcards: Vec<(String, usize)>,
    any: Option<usize>,
}

impl HostIndex {
    fn insert(&mut self, host: &HostMatch, entry: usize) {
        match host {
            HostMatch::Exact(h) => {
                self.exact.entry(h.as_str().to_owned()).or_insert(entry);
            }
            HostMatch::Wildcard(h) => {
                let suffix = h.wildcard_suffix().unwrap_or(h.as_str()).to_owned();
                if !self.wildcards.iter().any(|(s, _)| *s == suffix) {
                    self.wildcards.push((suffix, entry));
                    self.wildcards
                        .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
                }
            }
            HostMatch::Any => {
                self.any.get_or_insert(entry);
            }
        }
    }

    fn find(&self, host: &str) -> Option<usize> {
        if let Some(&e) = self.exact.get(host) {
            return Some(e);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|&(_, e)| e)
            .or(self.any)
    }
}

#[derive(Debug)]
enum Value {
    Exact(String),
    Regex(Regex),
}

impl Value {
    fn compile(kind: MatchKind, value: &str) -> Result<Self, CompileError> {
        Ok(match kind {
            MatchKind::Exact => Self::Exact(value.to_owned()),
            MatchKind::RegularExpression => Self::Regex(full_match(value)?),
        })
    }

    fn matches(&self, v: &[u8]) -> bool {
        match self {
            Self::Exact(e) => e.as_bytes() == v,
            Self::Regex(r) => std::str::from_utf8(v).is_ok_and(|s| r.is_match(s)),
        }
    }
}

fn full_match(pattern: &str) -> Result<Regex, CompileError> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|source| CompileError::Regex {
        pattern: pattern.to_owned(),
        source,
    })
}

#[derive(Debug)]
enum CompiledPath {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl CompiledPath {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            // Segment-wise: `/foo` matches `/foo` and `/foo/bar`, never `/foobar`.
            Self::Prefix(p) => {
                p == "/"
                    || (path.starts_with(p.as_str())
                        && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            }
            Self::Regex(r) => r.is_match(path),
        }
    }
}

/// A rule ready to match requests.
#[derive(Debug)]
pub struct CompiledRule {
    /// Dense index of the rule within its table (for per-table arrays).
    pub id: u32,
    /// Which route rule it came from.
    pub source: RouteRef,
    path: CompiledPath,
    method: Option<String>,
    headers: Vec<(String, Value)>,
    query: Vec<(String, Value)>,
    /// Weighted backends.
    pub backends: Vec<WeightedBackend>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Rule-level filters.
    pub filters: Filters,
    /// Retry policy.
    pub retry: Option<Retry>,
}

impl CompiledRule {
    /// The PathPrefix this rule matches on, for ReplacePrefixMatch.
    pub fn matched_prefix(&self) -> Option<&str> {
        match &self.path {
            CompiledPath::Prefix(p) => Some(p),
            _ => None,
        }
    }

    fn matches(&self, req: &Request<'_>) -> bool {
        if !self.path.matches(req.path) {
            return false;
        }
        if self.method.as_deref().is_some_and(|m| m != req.method) {
            return false;
        }
        let headers_ok = self.headers.iter().all(|(name, value)| {
            req.headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(name) && value.matches(h.value))
        });
        headers_ok
            && self.query.iter().all(|(name, value)| {
                // The first occurrence of a parameter is the one compared.
                query_param(req.query, name).is_some_and(|v| value.matches(v.as_bytes()))
            })
    }
}

fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[derive(Debug)]
struct CompiledListener {
    info: ListenerInfo,
    hosts: HostIndex,
    vhosts: Vec<Vec<CompiledRule>>,
}

/// Everything served on one bound address, port and transport.
#[derive(Debug)]
pub struct BindTable {
    /// Address to bind.
    pub address: IpAddr,
    /// Port to bind.
    pub port: u16,
    /// Protocol spoken there.
    pub protocol: ListenerProtocol,
    selector: HostIndex,
    listeners: Vec<CompiledListener>,
}

/// The compiled snapshot one worker routes with.
#[derive(Debug)]
pub struct RouteTable {
    binds: Vec<BindTable>,
    backends: Vec<Backend>,
    certificates: Vec<Certificate>,
}

impl BindTable {
    /// The socket type.
    pub fn transport(&self) -> Transport {
        self.protocol.transport()
    }

    /// The listeners sharing this socket.
    pub fn listener_infos(&self) -> impl Iterator<Item = &ListenerInfo> {
        self.listeners.iter().map(|l| &l.info)
    }

    /// The listener a TLS client's SNI selects: exact name, then the longest
    /// wildcard, then the listener without hostname. Without SNI only that
    /// last one qualifies, so no client gets another tenant's listener (and
    /// certificate) by accident. L4 listeners without TLS pass `None`.
    pub fn select(&self, sni: Option<&str>) -> Option<&ListenerInfo> {
        self.select_index(sni).map(|i| &self.listeners[i].info)
    }

    fn select_index(&self, sni: Option<&str>) -> Option<usize> {
        match sni {
            Some(name) => self.selector.find(name),
            None => self.selector.any,
        }
    }

    /// The L4 rule for a connection or datagram flow: the listener and virtual
    /// host the SNI selects (TLS), or the only ones (TCP, UDP), and the first
    /// rule there.
    pub fn l4_rule(&self, sni: Option<&str>) -> Option<(&ListenerInfo, &CompiledRule)> {
        let listener = &self.listeners[self.select_index(sni)?];
        let vhost = match sni {
            Some(name) => listener.hosts.find(name),
            None => listener.hosts.any,
        }?;
        listener.vhosts[vhost].first().map(|r| (&listener.info, r))
    }
}

impl RouteTable {
    /// Compiles a decoded snapshot.
    pub fn compile(snapshot: &Snapshot) -> Result<Self, CompileError> {
        let mut binds: Vec<BindTable> = Vec::new();
        let mut next_rule = 0u32;
        for (listener_id, l) in snapshot.listeners.iter().enumerate() {
            let bind = match binds.iter_mut().position(|b| {
                b.address == l.address
                    && b.port == l.port
                    && b.transport() == l.protocol.transport()
            }) {
                Some(i) => &mut binds[i],
                None => {
                    binds.push(BindTable {
                        address: l.address,
                        port: l.port,
                        protocol: l.protocol,
                        selector: HostIndex::default(),
                        listeners: Vec::new(),
                    });
                    binds.last_mut().expect("just pushed")
                }
            };
            if bind.protocol != l.protocol {
                return Err(CompileError::MixedProtocols {
                    address: l.address,
                    port: l.port,
                });
            }
            let mut compiled = CompiledListener {
                info: ListenerInfo {
                    id: listener_id as u32,
                    gateway: l.gateway.clone(),
                    name: l.name.clone(),
                    certificates: l.certificates.clone(),
                },
                hosts: HostIndex::default(),
                vhosts: Vec::with_capacity(l.virtual_hosts.len()),
            };
            for (i, vhost) in l.virtual_hosts.iter().enumerate() {
                compiled.hosts.insert(&vhost.host, i);
                let rules = vhost
                    .rules
                    .iter()
                    .map(|r| {
                        next_rule += 1;
                        Ok(CompiledRule {
                            id: next_rule - 1,
                            source: r.source.clone(),
                            path: match &r.matches.path {
                                PathMatch::Exact(p) => CompiledPath::Exact(p.clone()),
                                PathMatch::Prefix(p) => CompiledPath::Prefix(p.clone()),
                                PathMatch::RegularExpression(p) => {
                                    CompiledPath::Regex(full_match(p)?)
                                }
                            },
                            method: r.matches.method.clone(),
                            headers: r
                                .matches
                                .headers
                                .iter()
                                .map(|h| Ok((h.name.clone(), Value::compile(h.kind, &h.value)?)))
                                .collect::<Result<_, CompileError>>()?,
                            query: r
                                .matches
                                .query
                                .iter()
                                .map(|q| Ok((q.name.clone(), Value::compile(q.kind, &q.value)?)))
                                .collect::<Result<_, CompileError>>()?,
                            backends: r.backends.clone(),
                            timeouts: r.timeouts,
                            filters: r.filters.clone(),
                            retry: r.retry.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, CompileError>>()?;
                compiled.vhosts.push(rules);
            }
            let index = bind.listeners.len();
            let host = match &l.hostname {
                Some(h) if h.is_wildcard() => HostMatch::Wildcard(h.clone()),
                Some(h) => HostMatch::Exact(h.clone()),
                None => HostMatch::Any,
            };
            bind.selector.insert(&host, index);
            bind.listeners.push(compiled);
        }
        Ok(Self {
            binds,
            backends: snapshot.backends.clone(),
            certificates: snapshot.certificates.clone(),
        })
    }

    /// Every listener, in id order.
    pub fn listeners(&self) -> impl Iterator<Item = &ListenerInfo> {
        let mut all: Vec<&ListenerInfo> = self
            .binds
            .iter()
            .flat_map(|b| b.listeners.iter().map(|l| &l.info))
            .collect();
        all.sort_by_key(|l| l.id);
        all.into_iter()
    }

    /// Every rule with its listener, in id order.
    pub fn rules(&self) -> impl Iterator<Item = (&ListenerInfo, &CompiledRule)> {
        let mut all: Vec<(&ListenerInfo, &CompiledRule)> = self
            .binds
            .iter()
            .flat_map(|b| &b.listeners)
            .flat_map(|l| l.vhosts.iter().flatten().map(move |r| (&l.info, r)))
            .collect();
        all.sort_by_key(|(_, r)| r.id);
        all.into_iter()
    }

    /// The distinct sockets to listen on.
    pub fn binds(&self) -> &[BindTable] {
        &self.binds
    }

    /// The backend at `index` (validated when the snapshot was decoded).
    pub fn backend(&self, index: u32) -> &Backend {
        &self.backends[index as usize]
    }

    /// The certificate at `index` (validated when the snapshot was decoded).
    pub fn certificate(&self, index: u32) -> &Certificate {
        &self.certificates[index as usize]
    }

    /// Index of the bind for an address, port and transport, if served.
    pub fn bind_index(&self, transport: Transport, address: IpAddr, port: u16) -> Option<usize> {
        self.binds
            .iter()
            .position(|b| b.address == address && b.port == port && b.transport() == transport)
    }

    /// The bind at `index`.
    pub fn bind(&self, index: usize) -> Option<&BindTable> {
        self.binds.get(index)
    }

    /// Routes a request that arrived on bind `bind`. On TLS, `pinned` is the
    /// listener id the SNI selected: a host that selects another listener
    /// is misdirected.
    pub fn route<'t>(
        &'t self,
        bind: usize,
        pinned: Option<u32>,
        req: &Request<'_>,
    ) -> RouteDecision<'t> {
        let Some(bind) = self.binds.get(bind) else {
            return RouteDecision::NoListener;
        };
        let Some(listener) = bind.selector.find(req.host).map(|i| &bind.listeners[i]) else {
            return RouteDecision::NoListener;
        };
        if let Some(id) = pinned.filter(|id| *id != listener.info.id) {
            let sni_listener = bind.listeners.iter().find(|l| l.info.id == id);
            return RouteDecision::Misdirected(sni_listener.map_or(&listener.info, |l| &l.info));
        }
        let Some(rules) = listener.hosts.find(req.host).map(|i| &listener.vhosts[i]) else {
            return RouteDecision::NoRoute(&listener.info);
        };
        match rules.iter().find(|r| r.matches(req)) {
            Some(rule) => RouteDecision::Rule(&listener.info, rule),
            None => RouteDecision::NoRoute(&listener.info),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::*;
    use std::net::Ipv4Addr;

    fn rule(name: &str, path: PathMatch) -> Rule {
        Rule {
            source: RouteRef {
                kind: "HTTPRoute".into(),
                route: ObjectRef {
                    namespace: "ns".into(),
                    name: name.into(),
                },
                rule: 0,
            },
            matches: RouteMatch {
                path,
                ..RouteMatch::default()
            },
            backends: vec![],
            timeouts: Timeouts::default(),
            filters: Filters::default(),
            retry: None,
        }
    }

    fn listener(hostname: Option<&str>, vhosts: Vec<VirtualHost>) -> Listener {
        Listener {
            gateway: ObjectRef {
                namespace: "ns".into(),
                name: "gw".into(),
            },
            name: hostname.unwrap_or("any").into(),
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 80,
            protocol: ListenerProtocol::Http,
            hostname: hostname.map(|h| Hostname::try_from(h).unwrap()),
            certificates: Vec::new(),
            virtual_hosts: vhosts,
        }
    }

    fn route_name(
        t: &RouteTable,
        host: &str,
        path: &str,
        headers: &[httparse::Header<'_>],
    ) -> String {
        let req = Request {
            method: "GET",
            host,
            path,
            query: Some("a=1&b=2&a=3"),
            headers,
        };
        match t.route(0, None, &req) {
            RouteDecision::Rule(_, r) => r.source.route.name.clone(),
            RouteDecision::NoRoute(l) => format!("404@{}", l.name),
            RouteDecision::NoListener => "no-listener".into(),
            RouteDecision::Misdirected(l) => format!("421@{}", l.name),
        }
    }

    #[test]
    fn hosts_pick_listener_then_vhost_and_rules_go_in_order() {
        let h = |s: &str| Hostname::try_from(s).unwrap();
        let snap = Snapshot {
            listeners: vec![
                listener(
                    Some("*.example.com"),
                    vec![
                        VirtualHost {
                            host: HostMatch::Wildcard(h("*.example.com")),
                            rules: vec![rule("wild", PathMatch::Prefix("/".into()))],
                        },
                        VirtualHost {
                            host: HostMatch::Exact(h("foo.example.com")),
                            rules: vec![
                                rule("foo-exact", PathMatch::Exact("/x".into())),
                                rule("foo-prefix", PathMatch::Prefix("/api".into())),
                            ],
                        },
                    ],
                ),
                listener(
                    None,
                    vec![VirtualHost {
                        host: HostMatch::Any,
                        rules: vec![rule(
                            "any-regex",
                            PathMatch::RegularExpression("/r/[0-9]+".into()),
                        )],
                    }],
                ),
            ],
            backends: vec![],
            certificates: vec![],
        };
        let t = RouteTable::compile(&snap).unwrap();
        assert_eq!(route_name(&t, "foo.example.com", "/x", &[]), "foo-exact");
        assert_eq!(
            route_name(&t, "foo.example.com", "/api/v1", &[]),
            "foo-prefix"
        );
        assert_eq!(
            route_name(&t, "foo.example.com", "/apiv1", &[]),
            "404@*.example.com"
        );
        assert_eq!(route_name(&t, "bar.example.com", "/anything", &[]), "wild");
        assert_eq!(route_name(&t, "other.org", "/r/42", &[]), "any-regex");
        assert_eq!(route_name(&t, "other.org", "/r/42x", &[]), "404@any");
    }

    #[test]
    fn sni_pins_the_listener_and_other_hosts_are_misdirected() {
        let h = |s: &str| Hostname::try_from(s).unwrap();
        let vhost = |host: HostMatch, name: &str| VirtualHost {
            host,
            rules: vec![rule(name, PathMatch::Prefix("/".into()))],
        };
        let snap = Snapshot {
            listeners: vec![
                listener(
                    Some("*.example.com"),
                    vec![vhost(HostMatch::Wildcard(h("*.example.com")), "wild")],
                ),
                listener(
                    Some("a.example.com"),
                    vec![vhost(HostMatch::Exact(h("a.example.com")), "a")],
                ),
                listener(None, vec![vhost(HostMatch::Any, "fallback")]),
            ],
            backends: vec![],
            certificates: vec![],
        };
        let t = RouteTable::compile(&snap).unwrap();
        let bind = t.bind(0).unwrap();
        let sel = |sni| bind.select(sni).map(|l| l.name.clone());
        assert_eq!(sel(Some("a.example.com")).as_deref(), Some("a.example.com"));
        assert_eq!(sel(Some("b.example.com")).as_deref(), Some("*.example.com"));
        assert_eq!(sel(Some("other.org")).as_deref(), Some("any"));
        assert_eq!(sel(None).as_deref(), Some("any"));
        assert_eq!(
            bind.l4_rule(Some("b.example.com"))
                .map(|(_, r)| r.source.route.name.clone())
                .as_deref(),
            Some("wild")
        );
        let req = |host| Request {
            method: "GET",
            host,
            path: "/",
            query: None,
            headers: &[],
        };
        let wild = bind.select(Some("b.example.com")).unwrap().id;
        assert!(matches!(
            t.route(0, Some(wild), &req("c.example.com")),
            RouteDecision::Rule(..)
        ));
        assert!(matches!(
            t.route(0, Some(wild), &req("a.example.com")),
            RouteDecision::Misdirected(l) if l.id == wild
        ));
        assert!(matches!(
            t.route(0, Some(wild), &req("other.org")),
            RouteDecision::Misdirected(_)
        ));
    }

    #[test]
    fn headers_method_and_query_must_all_hold() {
        let mut r = rule("cond", PathMatch::Prefix("/".into()));
        r.matches.method = Some("GET".into());
        r.matches.headers = vec![HeaderMatch {
            name: "x-version".into(),
            kind: MatchKind::RegularExpression,
            value: "v[12]".into(),
        }];
        r.matches.query = vec![QueryMatch {
            name: "a".into(),
            kind: MatchKind::Exact,
            value: "1".into(),
        }];
        let snap = Snapshot {
            listeners: vec![listener(
                None,
                vec![VirtualHost {
                    host: HostMatch::Any,
                    rules: vec![r],
                }],
            )],
            backends: vec![],
            certificates: vec![],
        };
        let t = RouteTable::compile(&snap).unwrap();
        let good = [httparse::Header {
            name: "X-Version",
            value: b"v2",
        }];
        let bad = [httparse::Header {
            name: "x-version",
            value: b"v3",
        }];
        assert_eq!(route_name(&t, "h", "/", &good), "cond");
        assert_eq!(route_name(&t, "h", "/", &bad), "404@any");
    }

    #[test]
    fn bad_regex_fails_compilation() {
        let snap = Snapshot {
            listeners: vec![listener(
                None,
                vec![VirtualHost {
                    host: HostMatch::Any,
                    rules: vec![rule("bad", PathMatch::RegularExpression("(".into()))],
                }],
            )],
            backends: vec![],
            certificates: vec![],
        };
        assert!(matches!(
            RouteTable::compile(&snap),
            Err(CompileError::Regex { .. })
        ));
    }
}
