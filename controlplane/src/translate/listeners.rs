//! Listeners: their validation (protocol, port, hostname, allowedRoutes
//! kinds, certificateRefs), conflicts per address and port, their status,
//! and the snapshot listener built from the routes attached to them.

use super::GATEWAY_GROUP;
use crate::status::{Condition, ListenerStatus};
use crate::store::Store;
use gateway_api::gateways::{GatewayListeners, GatewayListenersTlsMode};
use shardgate_core::route::{scope_order, HostnameScope, Precedence};
use shardgate_core::{
    Certificate, HostMatch, Hostname, KeyFormat, Listener, ListenerProtocol, ObjectRef, PrivateKey,
    Rule, VirtualHost,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A listener as translation tracks it.
pub(super) struct ListenerState {
    pub(super) gateway: usize,
    pub(super) name: String,
    pub(super) addresses: Vec<IpAddr>,
    pub(super) port: u16,
    pub(super) protocol: Option<ListenerProtocol>,
    pub(super) hostname: Option<Hostname>,
    pub(super) kinds: Vec<&'static str>,
    pub(super) spec: GatewayListeners,
    pub(super) conditions_extra: Vec<Condition>,
    /// Certificates of a terminating listener, once its refs resolved.
    pub(super) certificates: Vec<Certificate>,
    /// A certificateRef did not resolve: accepted, not programmed.
    pub(super) refs_failed: bool,
    pub(super) invalid: Option<(&'static str, String)>,
    pub(super) conflicted: Option<&'static str>,
    pub(super) attached: u32,
    /// (scope, precedence, rule) of every attached route match.
    pub(super) rules: Vec<(HostnameScope, Precedence, Rule)>,
}

impl ListenerState {
    pub(super) fn usable(&self) -> bool {
        self.invalid.is_none()
            && self.conflicted.is_none()
            && !self.refs_failed
            && self.protocol.is_some()
    }
}

pub(super) fn listener_state(
    gateway: usize,
    l: &GatewayListeners,
    addresses: Vec<IpAddr>,
) -> ListenerState {
    let mut state = ListenerState {
        gateway,
        name: l.name.clone(),
        addresses,
        port: 0,
        protocol: None,
        hostname: None,
        kinds: Vec::new(),
        spec: l.clone(),
        conditions_extra: Vec::new(),
        certificates: Vec::new(),
        refs_failed: false,
        invalid: None,
        conflicted: None,
        attached: 0,
        rules: Vec::new(),
    };
    match u16::try_from(l.port) {
        Ok(p) if p > 0 => state.port = p,
        _ => {
            state.invalid = Some((
                "PortUnavailable",
                format!("port {} is out of range", l.port),
            ))
        }
    }
    match l.protocol.as_str() {
        "HTTP" | "HTTPS" => {
            state.protocol = Some(if l.protocol == "HTTP" {
                ListenerProtocol::Http
            } else {
                ListenerProtocol::Https
            });
            state.kinds = vec!["HTTPRoute", "GRPCRoute"];
        }
        "TLS" => {
            let passthrough = l
                .tls
                .as_ref()
                .and_then(|t| t.mode.as_ref())
                .is_some_and(|m| matches!(m, GatewayListenersTlsMode::Passthrough));
            state.protocol = Some(if passthrough {
                ListenerProtocol::TlsPassthrough
            } else {
                ListenerProtocol::TlsTerminate
            });
            state.kinds = vec!["TLSRoute"];
        }
        "TCP" => {
            state.protocol = Some(ListenerProtocol::Tcp);
            state.kinds = vec!["TCPRoute"];
        }
        "UDP" => {
            state.protocol = Some(ListenerProtocol::Udp);
            state.kinds = vec!["UDPRoute"];
        }
        other => {
            state.invalid = Some((
                "UnsupportedProtocol",
                format!("protocol {other} is not supported yet"),
            ));
        }
    }
    if let Some(h) = &l.hostname {
        match Hostname::try_from(h.as_str()) {
            Ok(h) => state.hostname = Some(h),
            Err(e) => state.invalid = Some(("UnsupportedValue", e.to_string())),
        }
    }
    // allowedRoutes.kinds narrows the supported kinds; unknown ones are an error.
    if let Some(kinds) = l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
        let mut allowed = Vec::new();
        let mut bad = Vec::new();
        for k in kinds {
            let group = k.group.as_deref().unwrap_or(GATEWAY_GROUP);
            match state
                .kinds
                .iter()
                .find(|s| **s == k.kind && group == GATEWAY_GROUP)
            {
                Some(s) => allowed.push(*s),
                None => bad.push(k.kind.clone()),
            }
        }
        if !bad.is_empty() {
            state.conditions_extra.push(Condition::new(
                "ResolvedRefs",
                false,
                "InvalidRouteKinds",
                format!("unsupported route kinds: {}", bad.join(", ")),
            ));
        }
        state.kinds = allowed;
    }
    state
}

/// Resolves a terminating listener's certificateRefs (HTTPS, or TLS in
/// Terminate mode): core-group Secrets, in the Gateway's namespace or one
/// whose ReferenceGrant allows it, holding a PEM certificate chain and key.
/// Records the certificates, or the failing ResolvedRefs condition.
pub(super) fn resolve_certificates(state: &mut ListenerState, gw_ns: &str, store: &Store) {
    if !state.protocol.is_some_and(ListenerProtocol::terminates_tls) {
        return;
    }
    match certificate_refs(&state.spec, gw_ns, store) {
        Ok(certs) => state.certificates = certs,
        Err(condition) => {
            state.refs_failed = true;
            state.conditions_extra.push(condition);
        }
    }
}

fn certificate_refs(
    l: &GatewayListeners,
    gw_ns: &str,
    store: &Store,
) -> Result<Vec<Certificate>, Condition> {
    let invalid = |msg: String| {
        Err(Condition::new(
            "ResolvedRefs",
            false,
            "InvalidCertificateRef",
            msg,
        ))
    };
    let refs = l
        .tls
        .as_ref()
        .and_then(|t| t.certificate_refs.as_deref())
        .unwrap_or(&[]);
    if refs.is_empty() {
        return invalid("a terminating listener needs certificateRefs".to_owned());
    }
    let mut certs = Vec::with_capacity(refs.len());
    for r in refs {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        if !group.is_empty() || kind != "Secret" {
            return invalid(format!("certificateRef {group}/{kind} is not a Secret"));
        }
        let ns = r.namespace.as_deref().unwrap_or(gw_ns);
        if ns != gw_ns && !store.granted("Gateway", gw_ns, "Secret", ns, &r.name) {
            return Err(Condition::new(
                "ResolvedRefs",
                false,
                "RefNotPermitted",
                format!(
                    "no ReferenceGrant in {ns} allows Gateways from {gw_ns} to use Secret {}",
                    r.name
                ),
            ));
        }
        let Some(secret) = store.secrets.get(&(ns.to_owned(), r.name.clone())) else {
            return invalid(format!("Secret {ns}/{} not found", r.name));
        };
        match tls_certificate(secret, format!("{ns}/{}", r.name)) {
            Ok(c) => certs.push(c),
            Err(e) => return invalid(format!("Secret {ns}/{}: {e}", r.name)),
        }
    }
    Ok(certs)
}

/// A kubernetes.io/tls Secret with a PEM chain in `tls.crt` and a PEM key
/// (PKCS#8, PKCS#1 or SEC1) in `tls.key`, as DER. Whether the key matches
/// the certificate is checked by the dataplane, which builds the signer.
fn tls_certificate(
    secret: &k8s_openapi::api::core::v1::Secret,
    name: String,
) -> Result<Certificate, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let field = |key: &str| -> Option<Vec<u8>> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.as_bytes().to_vec())
            })
    };
    let crt = field("tls.crt").ok_or("no tls.crt")?;
    let key = field("tls.key").ok_or("no tls.key")?;
    let chain: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&crt)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
    // Load it the way the dataplane will: the key must be usable and match
    // the leaf, or the listener would fail every handshake.
    let provider = rustls::crypto::ring::default_provider();
    let leaf_chain = chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    rustls::sign::CertifiedKey::from_der(leaf_chain, key.clone_key(), &provider)
        .map_err(|e| format!("tls.key does not fit tls.crt: {e}"))?;
    let (format, der) = match &key {
        PrivateKeyDer::Pkcs8(k) => (KeyFormat::Pkcs8, k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => (KeyFormat::Pkcs1, k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(k) => (KeyFormat::Sec1, k.secret_sec1_der()),
        _ => return Err("tls.key has an unsupported key format".into()),
    };
    Ok(Certificate {
        name,
        chain,
        key: PrivateKey {
            format,
            der: der.to_vec(),
        },
    })
}

/// Listeners that share an address and port must agree on protocol and have
/// distinct hostnames (Gateway API: Conflicted, ProtocolConflict /
/// HostnameConflict). Conflicted listeners are not programmed.
pub(super) fn mark_conflicts(listeners: &mut [ListenerState]) {
    let n = listeners.len();
    for i in 0..n {
        for j in 0..n {
            if i == j || listeners[i].invalid.is_some() || listeners[j].invalid.is_some() {
                continue;
            }
            let (a, b) = (&listeners[i], &listeners[j]);
            // TCP and UDP sockets on one port do not meet.
            let same_transport = a.protocol.map(ListenerProtocol::transport)
                == b.protocol.map(ListenerProtocol::transport);
            let shared = same_transport
                && a.port == b.port
                && a.addresses.iter().any(|x| b.addresses.contains(x));
            if !shared {
                continue;
            }
            if a.protocol != b.protocol {
                listeners[i].conflicted = Some("ProtocolConflict");
            } else if a.hostname == b.hostname && listeners[i].conflicted.is_none() {
                listeners[i].conflicted = Some("HostnameConflict");
            }
        }
    }
}

pub(super) fn listener_status(l: &ListenerState) -> ListenerStatus {
    let mut conditions = Vec::new();
    match &l.invalid {
        Some((reason, msg)) => {
            conditions.push(Condition::new("Accepted", false, reason, msg.clone()));
            conditions.push(Condition::new("Programmed", false, "Invalid", msg.clone()));
        }
        None => {
            // A listener whose protocol clashes with its port's cannot be
            // served at all (conformance: Accepted=False, ProtocolConflict).
            conditions.push(match l.conflicted {
                Some(reason @ "ProtocolConflict") => Condition::new(
                    "Accepted",
                    false,
                    reason,
                    "another listener on this port speaks another protocol",
                ),
                _ => Condition::new("Accepted", true, "Accepted", "accepted"),
            });
            if l.conflicted.is_some() {
                conditions.push(Condition::new(
                    "Programmed",
                    false,
                    "Invalid",
                    "listener conflicts",
                ));
            } else if l.refs_failed {
                conditions.push(Condition::new(
                    "Programmed",
                    false,
                    "Invalid",
                    "certificateRefs do not resolve",
                ));
            } else {
                conditions.push(Condition::new(
                    "Programmed",
                    true,
                    "Programmed",
                    "programmed",
                ));
            }
        }
    }
    let resolved = l
        .conditions_extra
        .iter()
        .find(|c| c.kind == "ResolvedRefs")
        .cloned();
    conditions.push(
        resolved
            .unwrap_or_else(|| Condition::new("ResolvedRefs", true, "ResolvedRefs", "resolved")),
    );
    conditions.push(match l.conflicted {
        Some(reason) => Condition::new(
            "Conflicted",
            true,
            reason,
            "another listener uses this port",
        ),
        None => Condition::new("Conflicted", false, "NoConflicts", "no conflicts"),
    });
    ListenerStatus {
        name: l.name.clone(),
        // A listener that cannot serve its protocol supports no kind
        // (conformance: TLSRouteListenerMixedTerminationNotSupported).
        supported_kinds: if l.conflicted == Some("ProtocolConflict") {
            Vec::new()
        } else {
            l.kinds.clone()
        },
        attached_routes: l.attached,
        conditions,
    }
}

/// Builds the snapshot listener: rules grouped by hostname scope, each scope
/// falling through to the broader scopes that also match its hosts, so the
/// first matching rule in the spec's precedence order wins.
pub(super) fn listener_snapshot(
    ns: &str,
    gw: &str,
    l: &ListenerState,
    address: IpAddr,
    certificates: &mut Vec<Certificate>,
) -> Listener {
    // Borrowed until each virtual host takes its copies: a rule is cloned
    // once per host it serves, not also into this index.
    let mut scopes: BTreeMap<&HostnameScope, Vec<(&Precedence, &Rule)>> = BTreeMap::new();
    for (scope, prec, rule) in &l.rules {
        scopes.entry(scope).or_default().push((prec, rule));
    }
    for rules in scopes.values_mut() {
        rules.sort_by(|a, b| a.0.cmp(b.0));
    }
    let mut ordered: Vec<&HostnameScope> = scopes.keys().copied().collect();
    ordered.sort_by(|a, b| scope_order(a, b));
    // Only wildcard and catch-all scopes can cover another scope, so each
    // scope looks at itself and those (keeping the precedence order), not at
    // every other scope: linear in the number of hostnames.
    let broad: Vec<(usize, &HostnameScope)> = ordered
        .iter()
        .enumerate()
        .filter(|(_, s)| match s {
            HostnameScope::Any => true,
            HostnameScope::Name(h) => h.is_wildcard(),
        })
        .map(|(i, s)| (i, *s))
        .collect();
    let virtual_hosts = ordered
        .iter()
        .enumerate()
        .map(|(pos, scope)| {
            let mut covering: Vec<(usize, &HostnameScope)> = broad
                .iter()
                .filter(|(i, b)| *i != pos && covers(b, scope))
                .copied()
                .collect();
            covering.push((pos, scope));
            covering.sort_by_key(|(i, _)| *i);
            let rules = covering
                .iter()
                .flat_map(|(_, broader)| scopes[broader].iter().map(|(_, r)| (*r).clone()))
                .collect();
            VirtualHost {
                host: match scope {
                    HostnameScope::Name(h) if h.is_wildcard() => HostMatch::Wildcard(h.clone()),
                    HostnameScope::Name(h) => HostMatch::Exact(h.clone()),
                    HostnameScope::Any => HostMatch::Any,
                },
                rules,
            }
        })
        .collect();
    Listener {
        gateway: ObjectRef {
            namespace: ns.to_owned(),
            name: gw.to_owned(),
        },
        name: l.name.clone(),
        address,
        port: l.port,
        protocol: l.protocol.unwrap_or(ListenerProtocol::Http),
        hostname: l.hostname.clone(),
        certificates: l
            .certificates
            .iter()
            .map(|c| intern(certificates, c))
            .collect(),
        virtual_hosts,
    }
}

/// The index of `cert` in `all`, adding it once: a Secret used by many
/// listeners travels once.
fn intern(all: &mut Vec<Certificate>, cert: &Certificate) -> u32 {
    let i = all.iter().position(|c| c == cert).unwrap_or_else(|| {
        all.push(cert.clone());
        all.len() - 1
    });
    i as u32
}

/// Whether every host matched by `inner` is also matched by `outer`.
fn covers(outer: &HostnameScope, inner: &HostnameScope) -> bool {
    match (outer, inner) {
        (HostnameScope::Any, _) => true,
        (_, HostnameScope::Any) => false,
        (HostnameScope::Name(o), HostnameScope::Name(i)) => {
            o == i
                || (o.is_wildcard()
                    && match i.wildcard_suffix() {
                        Some(s) => o
                            .wildcard_suffix()
                            .is_some_and(|os| s.len() > os.len() && s.ends_with(os)),
                        None => o.matches(i.as_str()),
                    })
        }
    }
}
