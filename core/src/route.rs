//! Pure routing: hostname intersection and precedence (used by the
//! controlplane's translation), and the per-worker compiled [`RouteTable`]
//! with its lookups (used by the dataplane on every request).

mod table;

pub use table::{
    BindTable, CompileError, CompiledRule, ListenerInfo, Request, RouteDecision, RouteTable,
};

use crate::snapshot::{Hostname, PathMatch, PathModifier, RouteMatch};
use std::cmp::{Ordering, Reverse};

/// The hostnames a route serves on a listener: the intersection of the
/// listener's hostname and the route's hostnames (Gateway API, HTTPRoute
/// `spec.hostnames`). `None` for the listener means any host; an empty route
/// list means "whatever the listener allows". An empty result means the route
/// does not attach to this listener.
pub fn intersect_hostnames(listener: Option<&Hostname>, route: &[Hostname]) -> Vec<HostnameScope> {
    if route.is_empty() {
        return vec![match listener {
            Some(l) => HostnameScope::Name(l.clone()),
            None => HostnameScope::Any,
        }];
    }
    let Some(l) = listener else {
        return route.iter().cloned().map(HostnameScope::Name).collect();
    };
    let mut out = Vec::new();
    for r in route {
        if let Some(h) = intersect_pair(l, r) {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    out.into_iter().map(HostnameScope::Name).collect()
}

/// The more specific of two hostnames if one covers the other.
fn intersect_pair(a: &Hostname, b: &Hostname) -> Option<Hostname> {
    match (a.is_wildcard(), b.is_wildcard()) {
        (false, false) => (a == b).then(|| a.clone()),
        (true, false) => a.matches(b.as_str()).then(|| b.clone()),
        (false, true) => b.matches(a.as_str()).then(|| a.clone()),
        (true, true) => {
            // `*.a.example.com` ∩ `*.example.com` = `*.a.example.com`.
            let (sa, sb) = (a.wildcard_suffix()?, b.wildcard_suffix()?);
            if sa.ends_with(sb) {
                Some(a.clone())
            } else if sb.ends_with(sa) {
                Some(b.clone())
            } else {
                None
            }
        }
    }
}

/// An effective hostname scope of a route on a listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostnameScope {
    /// A name, possibly a wildcard.
    Name(Hostname),
    /// Any host (neither listener nor route restrict it).
    Any,
}

/// The ordering key of one route match among all matches that share a
/// listener and hostname. Lower sorts first and wins.
///
/// Gateway API (HTTPRouteRule): "precedence MUST be given to the rule with the
/// largest number of: characters in a matching non-wildcard hostname;
/// characters in a matching hostname; characters in a matching path; header
/// matches; query param matches" — with Exact paths before prefixes — and
/// "if ties still exist across multiple Routes, matching precedence MUST be
/// determined in order of: the oldest Route based on creation timestamp; the
/// Route appearing first in alphabetical order by {namespace}/{name}", and
/// within a route, the first matching rule. Regular-expression paths are
/// implementation-specific; we place them after Exact and before prefixes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    path_kind: u8,
    path_len: Reverse<usize>,
    method: Reverse<bool>,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    created: i64,
    namespace: String,
    name: String,
    rule: u32,
    match_index: u32,
}

impl Precedence {
    /// The key for match `match_index` of rule `rule` of a route created at
    /// `created` (seconds since the epoch).
    pub fn new(
        m: &RouteMatch,
        created: i64,
        namespace: &str,
        name: &str,
        rule: u32,
        match_index: u32,
    ) -> Self {
        let (path_kind, path_len) = match &m.path {
            PathMatch::Exact(p) => (0, p.len()),
            PathMatch::RegularExpression(p) => (1, p.len()),
            PathMatch::Prefix(p) => (2, p.len()),
        };
        Self {
            path_kind,
            path_len: Reverse(path_len),
            method: Reverse(m.method.is_some()),
            headers: Reverse(m.headers.len()),
            query: Reverse(m.query.len()),
            created,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            rule,
            match_index,
        }
    }
}

/// Picks an index by weight: `roll` is any uniformly random number. Returns
/// `None` when every weight is zero.
pub fn pick_weighted(weights: impl Iterator<Item = u32> + Clone, roll: u64) -> Option<usize> {
    let total: u64 = weights.clone().map(u64::from).sum();
    if total == 0 {
        return None;
    }
    let mut point = roll % total;
    for (i, w) in weights.enumerate() {
        let w = u64::from(w);
        if point < w {
            return Some(i);
        }
        point -= w;
    }
    None
}

/// Applies a URLRewrite or RequestRedirect path modifier to `path` (without
/// query), writing the new path into `out`. `prefix` is the PathPrefix the
/// rule matched (held without trailing slash, or `/`).
///
/// ReplacePrefixMatch replaces whole segments: with prefix `/foo`,
/// replacement `/xyz` turns `/foo/bar` into `/xyz/bar` and `/foo` into
/// `/xyz`; replacement `/` turns `/foo/bar` into `/bar` and `/foo` into `/`.
pub fn modify_path(path: &str, prefix: Option<&str>, modifier: &PathModifier, out: &mut String) {
    out.clear();
    match modifier {
        PathModifier::ReplaceFullPath(p) => out.push_str(p),
        PathModifier::ReplacePrefixMatch(replacement) => {
            let remainder = match prefix {
                Some("/") | None => path,
                Some(p) => path.strip_prefix(p).unwrap_or(path),
            };
            let remainder = if prefix.is_none_or(|p| p == "/") && remainder == "/" {
                ""
            } else {
                remainder
            };
            if remainder.is_empty() {
                out.push_str(replacement);
            } else {
                out.push_str(replacement.trim_end_matches('/'));
                out.push_str(remainder);
            }
            if out.is_empty() {
                out.push('/');
            }
        }
    }
}

/// Orders hostname scopes for lookup: exact names first, then wildcards with
/// the longest suffix first, then any.
pub fn scope_order(a: &HostnameScope, b: &HostnameScope) -> Ordering {
    let rank = |s: &HostnameScope| match s {
        HostnameScope::Name(h) if !h.is_wildcard() => (0, Reverse(h.as_str().len())),
        HostnameScope::Name(h) => (1, Reverse(h.as_str().len())),
        HostnameScope::Any => (2, Reverse(0)),
    };
    rank(a).cmp(&rank(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{HeaderMatch, MatchKind};
    use proptest::prelude::*;

    fn h(s: &str) -> Hostname {
        Hostname::try_from(s).unwrap()
    }

    #[test]
    fn intersection_follows_the_spec_examples() {
        let l = h("*.example.com");
        assert_eq!(
            intersect_hostnames(Some(&l), &[h("foo.example.com"), h("bar.other.com")]),
            vec![HostnameScope::Name(h("foo.example.com"))]
        );
        assert_eq!(
            intersect_hostnames(Some(&h("foo.example.com")), &[h("*.example.com")]),
            vec![HostnameScope::Name(h("foo.example.com"))]
        );
        assert!(intersect_hostnames(Some(&h("a.com")), &[h("b.com")]).is_empty());
        assert_eq!(intersect_hostnames(None, &[]), vec![HostnameScope::Any]);
        assert_eq!(
            intersect_hostnames(Some(&h("*.example.com")), &[h("*.a.example.com")]),
            vec![HostnameScope::Name(h("*.a.example.com"))]
        );
    }

    fn m(path: PathMatch, method: bool, headers: usize) -> RouteMatch {
        RouteMatch {
            path,
            method: method.then(|| "GET".to_owned()),
            headers: (0..headers)
                .map(|i| HeaderMatch {
                    name: format!("x-{i}"),
                    kind: MatchKind::Exact,
                    value: "v".into(),
                })
                .collect(),
            query: vec![],
        }
    }

    #[test]
    fn precedence_orders_as_the_spec_says() {
        let key = |m: &RouteMatch, created| Precedence::new(m, created, "ns", "r", 0, 0);
        let exact = key(&m(PathMatch::Exact("/a".into()), false, 0), 5);
        let long_prefix = key(&m(PathMatch::Prefix("/a/b".into()), false, 0), 5);
        let short_prefix_method = key(&m(PathMatch::Prefix("/a".into()), true, 0), 5);
        let short_prefix_headers = key(&m(PathMatch::Prefix("/a".into()), false, 2), 5);
        let short_prefix_old = key(&m(PathMatch::Prefix("/a".into()), false, 0), 1);
        let short_prefix_new = key(&m(PathMatch::Prefix("/a".into()), false, 0), 9);
        let mut keys = vec![
            short_prefix_new.clone(),
            short_prefix_headers.clone(),
            exact.clone(),
            short_prefix_old.clone(),
            long_prefix.clone(),
            short_prefix_method.clone(),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                exact,
                long_prefix,
                short_prefix_method,
                short_prefix_headers,
                short_prefix_old,
                short_prefix_new
            ]
        );
    }

    #[test]
    fn prefix_replacement_works_on_whole_segments() {
        let mut out = String::new();
        let cases = [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/bar", "/foo", "/", "/bar"),
            ("/foo", "/foo", "/", "/"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/bar", "/", "/xyz", "/xyz/bar"),
            ("/", "/", "/xyz", "/xyz"),
        ];
        for (path, prefix, replacement, want) in cases {
            let m = PathModifier::ReplacePrefixMatch(replacement.into());
            modify_path(path, Some(prefix), &m, &mut out);
            assert_eq!(out, want, "{path} with {prefix} → {replacement}");
        }
        modify_path(
            "/a/b",
            Some("/a"),
            &PathModifier::ReplaceFullPath("/full".into()),
            &mut out,
        );
        assert_eq!(out, "/full");
    }

    proptest! {
        #[test]
        fn weighted_choice_stays_in_bounds_and_skips_zero(
            weights in prop::collection::vec(0u32..1000, 1..10), roll in any::<u64>()
        ) {
            match pick_weighted(weights.iter().copied(), roll) {
                Some(i) => { prop_assert!(i < weights.len()); prop_assert!(weights[i] > 0); }
                None => prop_assert!(weights.iter().all(|&w| w == 0)),
            }
        }

        #[test]
        fn hostname_intersection_is_symmetric(
            a in "(\\*\\.)?[a-c]{1,2}\\.(x|y)\\.com", b in "(\\*\\.)?[a-c]{1,2}\\.(x|y)\\.com"
        ) {
            prop_assert_eq!(intersect_pair(&h(&a), &h(&b)), intersect_pair(&h(&b), &h(&a)));
        }

        #[test]
        fn precedence_is_a_total_order(
            a in (0u8..3, 1usize..5, any::<bool>(), 0usize..3, 0i64..3),
            b in (0u8..3, 1usize..5, any::<bool>(), 0usize..3, 0i64..3),
        ) {
            let mk = |(k, len, meth, hdr, created): (u8, usize, bool, usize, i64)| {
                let p = "/".repeat(len);
                let path = match k { 0 => PathMatch::Exact(p), 1 => PathMatch::RegularExpression(p), _ => PathMatch::Prefix(p) };
                Precedence::new(&m(path, meth, hdr), created, "ns", "r", 0, 0)
            };
            let (x, y) = (mk(a), mk(b));
            prop_assert_eq!(x.cmp(&y), y.cmp(&x).reverse());
            prop_assert_eq!(x.cmp(&y) == Ordering::Equal, x == y);
        }
    }
}
