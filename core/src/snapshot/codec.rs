//! Binary encoding of a [`Snapshot`], with complete validation on decode.
//!
//! Layout: the 4-byte magic `SGSN`, a little-endian `u16` format version, then
//! the snapshot in postcard (a compact, deterministic serde format). Both
//! processes ship together, so a version mismatch is simply rejected.
//!
//! Decoding trusts nothing: postcard bounds every length by the bytes present,
//! newtypes re-check their invariants, and [`decode`] then checks everything
//! that crosses fields (backend indices, status codes, ports, paths, names).
//! Regular expressions are compiled, and so checked, when a worker builds its
//! [`crate::RouteTable`].

use super::{
    BackendTarget, Filters, HeaderMatch, HeaderModifier, Listener, PathMatch, PathModifier,
    QueryMatch, RouteMatch, Rule, Snapshot,
};

const MAGIC: &[u8; 4] = b"SGSN";
/// Bumped whenever the model changes shape.
pub const FORMAT_VERSION: u16 = 5;
const PREFIX_LEN: usize = 6;

/// Why bytes were not accepted as a snapshot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSnapshot {
    /// The bytes do not start with the snapshot magic.
    #[error("missing snapshot magic")]
    Magic,
    /// Another format version wrote this.
    #[error("snapshot format version {found}, expected {FORMAT_VERSION}")]
    Version {
        /// The version found.
        found: u16,
    },
    /// The body does not decode.
    #[error("malformed snapshot body")]
    Body(#[source] postcard::Error),
    /// Bytes follow the snapshot.
    #[error("{0} trailing bytes after snapshot")]
    Trailing(usize),
    /// A rule names a backend index that does not exist.
    #[error("listener {listener}: backend index {index} out of range ({count} backends)")]
    BackendIndex {
        /// Listener position.
        listener: usize,
        /// The bad index.
        index: u32,
        /// Number of backends.
        count: usize,
    },
    /// A value is out of its domain.
    #[error("listener {listener}: invalid {what}")]
    Value {
        /// Listener position, or `usize::MAX` for backends.
        listener: usize,
        /// What was invalid.
        what: &'static str,
    },
}

/// Encodes a snapshot. Deterministic: equal snapshots give equal bytes, which
/// is how the publisher skips unchanged translations.
pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    postcard::to_io(snapshot, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// Decodes and validates a snapshot.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, InvalidSnapshot> {
    if bytes.len() < PREFIX_LEN || &bytes[..4] != MAGIC {
        return Err(InvalidSnapshot::Magic);
    }
    let found = u16::from_le_bytes([bytes[4], bytes[5]]);
    if found != FORMAT_VERSION {
        return Err(InvalidSnapshot::Version { found });
    }
    let (snapshot, rest): (Snapshot, _) =
        postcard::take_from_bytes(&bytes[PREFIX_LEN..]).map_err(InvalidSnapshot::Body)?;
    if !rest.is_empty() {
        return Err(InvalidSnapshot::Trailing(rest.len()));
    }
    validate(&snapshot)?;
    Ok(snapshot)
}

fn validate(snapshot: &Snapshot) -> Result<(), InvalidSnapshot> {
    let count = snapshot.backends.len();
    for (i, listener) in snapshot.listeners.iter().enumerate() {
        validate_listener(i, listener, count)?;
        let bad = |what| InvalidSnapshot::Value { listener: i, what };
        if listener
            .certificates
            .iter()
            .any(|&c| c as usize >= snapshot.certificates.len())
        {
            return Err(bad("certificate index"));
        }
        if listener.protocol.terminates_tls() == listener.certificates.is_empty() {
            return Err(bad("certificates for its protocol"));
        }
    }
    if snapshot
        .certificates
        .iter()
        .any(|c| c.chain.is_empty() || c.chain.iter().any(Vec::is_empty) || c.key.der.is_empty())
    {
        return Err(InvalidSnapshot::Value {
            listener: usize::MAX,
            what: "certificate",
        });
    }
    for backend in &snapshot.backends {
        if backend.endpoints.iter().any(|e| e.port() == 0) {
            return Err(InvalidSnapshot::Value {
                listener: usize::MAX,
                what: "endpoint port",
            });
        }
    }
    Ok(())
}

fn validate_listener(i: usize, l: &Listener, backends: usize) -> Result<(), InvalidSnapshot> {
    let bad = |what| InvalidSnapshot::Value { listener: i, what };
    if l.port == 0 {
        return Err(bad("port"));
    }
    for vhost in &l.virtual_hosts {
        for rule in &vhost.rules {
            validate_rule(i, rule, backends)?;
        }
    }
    Ok(())
}

fn validate_rule(i: usize, rule: &Rule, backends: usize) -> Result<(), InvalidSnapshot> {
    let bad = |what| InvalidSnapshot::Value { listener: i, what };
    let RouteMatch {
        path,
        method,
        headers,
        query,
    } = &rule.matches;
    match path {
        PathMatch::Exact(p) | PathMatch::Prefix(p) if !p.starts_with('/') => {
            return Err(bad("path"))
        }
        _ => {}
    }
    if let Some(m) = method {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(bad("method"));
        }
    }
    if headers
        .iter()
        .any(|HeaderMatch { name, .. }| !is_lower_token(name))
    {
        return Err(bad("header name"));
    }
    if query.iter().any(|QueryMatch { name, .. }| name.is_empty()) {
        return Err(bad("query parameter name"));
    }
    validate_filters(i, &rule.filters, backends)?;
    for b in &rule.backends {
        validate_filters(i, &b.filters, backends)?;
        match b.target {
            BackendTarget::Backend(index) if index as usize >= backends => {
                return Err(InvalidSnapshot::BackendIndex {
                    listener: i,
                    index,
                    count: backends,
                })
            }
            BackendTarget::Invalid { status } if !(100..=599).contains(&status) => {
                return Err(bad("status code"))
            }
            _ => {}
        }
    }
    Ok(())
}

fn validate_filters(i: usize, f: &Filters, backends: usize) -> Result<(), InvalidSnapshot> {
    let bad = |what| InvalidSnapshot::Value { listener: i, what };
    let header_ok = |m: &HeaderModifier| {
        m.set
            .iter()
            .chain(&m.add)
            .all(|(n, v)| is_lower_token(n) && is_field_value(v))
            && m.remove.iter().all(|n| is_lower_token(n))
    };
    if !f
        .request_headers
        .iter()
        .chain(&f.response_headers)
        .all(header_ok)
    {
        return Err(bad("header modifier"));
    }
    let path_ok = |p: &PathModifier| match p {
        PathModifier::ReplaceFullPath(s) | PathModifier::ReplacePrefixMatch(s) => {
            s.starts_with('/') && is_field_value(s) && !s.contains(' ')
        }
    };
    let host_ok =
        |h: &String| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if let Some(r) = &f.redirect {
        if ![301, 302, 303, 307, 308].contains(&r.status)
            || r.scheme
                .as_deref()
                .is_some_and(|s| s != "http" && s != "https")
            || r.port == Some(0)
            || !r.hostname.iter().all(host_ok)
            || !r.path.iter().all(path_ok)
        {
            return Err(bad("redirect"));
        }
    }
    if let Some(r) = &f.rewrite {
        if !r.hostname.iter().all(host_ok) || !r.path.iter().all(path_ok) {
            return Err(bad("rewrite"));
        }
    }
    if let Some(c) = &f.cors {
        let ok = c
            .allow_methods
            .iter()
            .chain(&c.allow_headers)
            .chain(&c.expose_headers)
            .chain(&c.allow_origins)
            .all(|v| !v.is_empty() && is_field_value(v) && !v.contains(','));
        if !ok {
            return Err(bad("cors"));
        }
    }
    for m in &f.mirrors {
        if m.backend as usize >= backends || m.denominator == 0 || m.numerator > m.denominator {
            return Err(bad("mirror"));
        }
    }
    Ok(())
}

/// A field value we can emit verbatim: visible ASCII, spaces and tabs.
fn is_field_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// An HTTP field name (RFC 9110 token) in lower case.
fn is_lower_token(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    pub(crate) fn sample() -> Snapshot {
        Snapshot {
            listeners: vec![Listener {
                gateway: ObjectRef {
                    namespace: "default".into(),
                    name: "gw".into(),
                },
                name: "http".into(),
                address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 8080,
                protocol: ListenerProtocol::Http,
                hostname: None,
                certificates: Vec::new(),
                virtual_hosts: vec![VirtualHost {
                    host: HostMatch::Any,
                    rules: vec![Rule {
                        source: RouteRef {
                            kind: "HTTPRoute".into(),
                            route: ObjectRef {
                                namespace: "default".into(),
                                name: "r".into(),
                            },
                            rule: 0,
                        },
                        matches: RouteMatch::default(),
                        backends: vec![
                            WeightedBackend {
                                weight: 9,
                                target: BackendTarget::Backend(0),
                                filters: Filters {
                                    request_headers: Some(HeaderModifier {
                                        set: vec![("x-set".into(), "v".into())],
                                        add: vec![],
                                        remove: vec!["x-gone".into()],
                                    }),
                                    ..Filters::default()
                                },
                            },
                            WeightedBackend {
                                weight: 1,
                                target: BackendTarget::Invalid { status: 500 },
                                filters: Filters::default(),
                            },
                        ],
                        timeouts: Timeouts::default(),
                        retry: None,
                        filters: Filters {
                            redirect: Some(Redirect {
                                scheme: Some("https".into()),
                                hostname: None,
                                port: None,
                                path: Some(PathModifier::ReplacePrefixMatch("/new".into())),
                                status: 301,
                            }),
                            mirrors: vec![Mirror {
                                backend: 0,
                                numerator: 1,
                                denominator: 2,
                            }],
                            ..Filters::default()
                        },
                    }],
                }],
            }],
            backends: vec![Backend {
                name: "default/svc:80".into(),
                protocol: AppProtocol::Http1,
                endpoints: vec![SocketAddr::from(([127, 0, 0, 1], 3000))],
            }],
            certificates: vec![],
        }
    }

    #[test]
    fn terminating_listeners_need_valid_certificate_indices() {
        let mut s = sample();
        s.listeners[0].protocol = ListenerProtocol::Https;
        assert!(decode(&encode(&s)).is_err(), "HTTPS without certificate");
        s.listeners[0].certificates = vec![0];
        assert!(decode(&encode(&s)).is_err(), "index out of range");
        s.certificates.push(Certificate {
            name: "ns/cert".into(),
            chain: vec![vec![1, 2, 3]],
            key: PrivateKey {
                format: KeyFormat::Pkcs8,
                der: vec![4, 5],
            },
        });
        assert_eq!(decode(&encode(&s)).unwrap(), s);
        s.listeners[0].protocol = ListenerProtocol::Http;
        assert!(
            decode(&encode(&s)).is_err(),
            "plain HTTP with a certificate"
        );
    }

    #[test]
    fn round_trips_a_sample() {
        let s = sample();
        assert_eq!(decode(&encode(&s)).unwrap(), s);
    }

    #[test]
    fn rejects_out_of_range_backend_index() {
        let mut s = sample();
        s.listeners[0].virtual_hosts[0].rules[0].backends[0].target = BackendTarget::Backend(7);
        assert!(matches!(
            decode(&encode(&s)),
            Err(InvalidSnapshot::BackendIndex { index: 7, .. })
        ));
    }

    #[test]
    fn rejects_a_mirror_to_a_missing_backend_and_a_bad_redirect_status() {
        let mut s = sample();
        s.listeners[0].virtual_hosts[0].rules[0].filters.mirrors[0].backend = 3;
        assert!(decode(&encode(&s)).is_err());
        let mut s = sample();
        if let Some(r) = s.listeners[0].virtual_hosts[0].rules[0]
            .filters
            .redirect
            .as_mut()
        {
            r.status = 200;
        }
        assert!(decode(&encode(&s)).is_err());
    }

    #[test]
    fn rejects_wrong_magic_version_and_trailing_bytes() {
        let bytes = encode(&sample());
        assert_eq!(decode(b"nope"), Err(InvalidSnapshot::Magic));
        let mut v = bytes.clone();
        v[4] = 99;
        assert!(matches!(decode(&v), Err(InvalidSnapshot::Version { .. })));
        let mut t = bytes;
        t.push(0);
        assert_eq!(decode(&t), Err(InvalidSnapshot::Trailing(1)));
    }

    #[test]
    fn rejects_invalid_hostname_inside_the_bytes() {
        let mut s = sample();
        s.listeners[0].hostname = Some(Hostname::try_from("abc.example.com").unwrap());
        let mut bytes = encode(&s);
        // Corrupt the hostname text in place: '.' is not allowed to become '_'.
        let pos = bytes
            .windows(15)
            .position(|w| w == b"abc.example.com")
            .unwrap();
        bytes[pos + 3] = b'_';
        assert!(matches!(decode(&bytes), Err(InvalidSnapshot::Body(_))));
    }

    fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
        let rule = (
            "[a-z]{1,8}",
            0u32..4,
            prop::collection::vec((0u32..100, 0u32..3), 0..4),
            prop::option::of("[A-Z]{3,6}"),
            "/[a-z/]{0,12}",
            0u8..3,
        )
            .prop_map(|(name, rule, backends, method, path, kind)| Rule {
                source: RouteRef {
                    kind: "HTTPRoute".into(),
                    route: ObjectRef {
                        namespace: "ns".into(),
                        name,
                    },
                    rule,
                },
                matches: RouteMatch {
                    path: match kind {
                        0 => PathMatch::Exact(path),
                        1 => PathMatch::Prefix(path),
                        _ => PathMatch::RegularExpression(path),
                    },
                    method,
                    headers: vec![HeaderMatch {
                        name: "x-a".into(),
                        kind: MatchKind::Exact,
                        value: "v".into(),
                    }],
                    query: vec![],
                },
                backends: backends
                    .into_iter()
                    .map(|(weight, b)| WeightedBackend {
                        weight,
                        target: BackendTarget::Backend(b),
                        filters: Filters::default(),
                    })
                    .collect(),
                timeouts: Timeouts {
                    request: Some(std::time::Duration::from_millis(1500)),
                    backend_request: None,
                },
                filters: Filters::default(),
                retry: None,
            });
        let listener = (1u16.., prop::collection::vec(rule, 0..5), "[a-z]{1,10}").prop_map(
            |(port, rules, host)| Listener {
                gateway: ObjectRef {
                    namespace: "ns".into(),
                    name: "gw".into(),
                },
                name: "l".into(),
                address: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
                port,
                protocol: ListenerProtocol::Http,
                hostname: Some(Hostname::try_from(format!("{host}.example.com")).unwrap()),
                certificates: Vec::new(),
                virtual_hosts: vec![VirtualHost {
                    host: HostMatch::Wildcard(Hostname::try_from("*.example.com").unwrap()),
                    rules,
                }],
            },
        );
        prop::collection::vec(listener, 0..4).prop_map(|listeners| Snapshot {
            listeners,
            backends: (0..3)
                .map(|i| Backend {
                    name: format!("b{i}"),
                    protocol: AppProtocol::Http1,
                    endpoints: vec![SocketAddr::from(([127, 0, 0, 1], 1000 + i))],
                })
                .collect(),
            certificates: vec![],
        })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(s in arb_snapshot()) {
            prop_assert_eq!(decode(&encode(&s)).unwrap(), s);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decoding_mutated_snapshots_never_panics(s in arb_snapshot(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = encode(&s);
            let i = pos.index(bytes.len());
            bytes[i] = byte;
            let _ = decode(&bytes);
        }
    }
}
