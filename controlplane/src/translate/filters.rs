//! HTTPRoute filters, at rule and backendRef level.
//!
//! The gateway-api crate generates one Rust type per position of a filter in
//! the schema (rule-level and backendRef-level filters are different types
//! with the same shape), so both are read through one serde view of the
//! shared schema instead of two copies of the same conversion.

use super::backends::BackendResolver;
use crate::status::Condition;
use serde::{Deserialize, Serialize};
use shardgate_core::{Cors, Filters, HeaderModifier, Mirror, PathModifier, Redirect, Rewrite};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFilter {
    #[serde(rename = "type")]
    kind: String,
    request_header_modifier: Option<RawHeaderModifier>,
    response_header_modifier: Option<RawHeaderModifier>,
    request_redirect: Option<RawRedirect>,
    url_rewrite: Option<RawRewrite>,
    request_mirror: Option<RawMirror>,
    cors: Option<RawCors>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCors {
    allow_origins: Option<Vec<String>>,
    allow_methods: Option<Vec<String>>,
    allow_headers: Option<Vec<String>>,
    expose_headers: Option<Vec<String>>,
    max_age: Option<i32>,
    allow_credentials: Option<bool>,
}

#[derive(Deserialize)]
struct RawHeaderModifier {
    set: Option<Vec<RawHeader>>,
    add: Option<Vec<RawHeader>>,
    remove: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawHeader {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPath {
    #[serde(rename = "type")]
    kind: String,
    replace_full_path: Option<String>,
    replace_prefix_match: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRedirect {
    scheme: Option<String>,
    hostname: Option<String>,
    path: Option<RawPath>,
    port: Option<i32>,
    status_code: Option<i64>,
}

#[derive(Deserialize)]
struct RawRewrite {
    hostname: Option<String>,
    path: Option<RawPath>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMirror {
    backend_ref: RawBackendRef,
    percent: Option<i32>,
    fraction: Option<RawFraction>,
}

#[derive(Deserialize)]
struct RawBackendRef {
    group: Option<String>,
    kind: Option<String>,
    name: String,
    namespace: Option<String>,
    port: Option<i32>,
}

#[derive(Deserialize)]
struct RawFraction {
    numerator: i32,
    denominator: Option<i32>,
}

/// Compiles a list of filters. `prefix_match` says whether every match of
/// the rule is a PathPrefix (ReplacePrefixMatch needs one). Invalid or
/// unsupported filters are an `UnsupportedValue` message.
pub(super) fn compile<T: Serialize>(
    filters: &[T],
    route_kind: &str,
    route_ns: &str,
    prefix_match: bool,
    resolver: &mut BackendResolver<'_>,
    resolved_refs: &mut Condition,
) -> Result<Filters, String> {
    let mut out = Filters::default();
    for f in filters {
        let raw: RawFilter = serde_json::to_value(f)
            .and_then(serde_json::from_value)
            .map_err(|e| format!("unreadable filter: {e}"))?;
        match raw.kind.as_str() {
            "RequestHeaderModifier" => {
                out.request_headers = Some(header_modifier(raw.request_header_modifier)?);
            }
            "ResponseHeaderModifier" => {
                out.response_headers = Some(header_modifier(raw.response_header_modifier)?);
            }
            "RequestRedirect" => {
                let r = raw
                    .request_redirect
                    .ok_or("RequestRedirect without requestRedirect")?;
                let status = u16::try_from(r.status_code.unwrap_or(302)).unwrap_or(0);
                if ![301, 302, 303, 307, 308].contains(&status) {
                    return Err(format!("redirect status {status} is not supported"));
                }
                let scheme = r.scheme.map(|s| s.to_ascii_lowercase());
                if scheme
                    .as_deref()
                    .is_some_and(|s| s != "http" && s != "https")
                {
                    return Err("redirect scheme must be http or https".into());
                }
                out.redirect = Some(Redirect {
                    scheme,
                    hostname: r.hostname,
                    port: r
                        .port
                        .map(|p| u16::try_from(p).map_err(|_| format!("invalid redirect port {p}")))
                        .transpose()?,
                    path: r.path.map(|p| path(p, prefix_match)).transpose()?,
                    status,
                });
            }
            "URLRewrite" => {
                let r = raw.url_rewrite.ok_or("URLRewrite without urlRewrite")?;
                out.rewrite = Some(Rewrite {
                    hostname: r.hostname,
                    path: r.path.map(|p| path(p, prefix_match)).transpose()?,
                });
            }
            "RequestMirror" => {
                let m = raw
                    .request_mirror
                    .ok_or("RequestMirror without requestMirror")?;
                let (numerator, denominator) = match (m.percent, m.fraction) {
                    (Some(p), _) => (p, 100),
                    (None, Some(f)) => (f.numerator, f.denominator.unwrap_or(100)),
                    (None, None) => (1, 1),
                };
                let (Ok(numerator), Ok(denominator)) =
                    (u32::try_from(numerator), u32::try_from(denominator))
                else {
                    return Err("mirror fraction must not be negative".into());
                };
                if denominator == 0 || numerator > denominator {
                    return Err("mirror fraction must be between 0 and 1".into());
                }
                let b = m.backend_ref;
                if let Some(backend) = resolver.resolve_mirror(
                    route_kind,
                    route_ns,
                    b.group.as_deref().unwrap_or(""),
                    b.kind.as_deref().unwrap_or("Service"),
                    b.namespace.as_deref(),
                    &b.name,
                    b.port,
                    resolved_refs,
                ) {
                    out.mirrors.push(Mirror {
                        backend,
                        numerator,
                        denominator,
                    });
                }
            }
            "CORS" => {
                let c = raw.cors.ok_or("CORS without cors")?;
                out.cors = Some(Cors {
                    allow_origins: c
                        .allow_origins
                        .unwrap_or_default()
                        .into_iter()
                        .map(|o| o.to_ascii_lowercase())
                        .collect(),
                    allow_methods: c.allow_methods.unwrap_or_default(),
                    allow_headers: c.allow_headers.unwrap_or_default(),
                    expose_headers: c.expose_headers.unwrap_or_default(),
                    max_age: u32::try_from(c.max_age.unwrap_or(5)).unwrap_or(5),
                    allow_credentials: c.allow_credentials.unwrap_or(false),
                });
            }
            other => return Err(format!("filter type {other} is not supported")),
        }
    }
    Ok(out)
}

fn header_modifier(raw: Option<RawHeaderModifier>) -> Result<HeaderModifier, String> {
    let raw = raw.ok_or("header modifier filter without its configuration")?;
    let name = |n: &str| -> Result<String, String> {
        let lower = n.to_ascii_lowercase();
        let token = !lower.is_empty()
            && lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if token {
            Ok(lower)
        } else {
            Err(format!("invalid header name {n:?}"))
        }
    };
    let pairs = |list: Option<Vec<RawHeader>>| -> Result<Vec<(String, String)>, String> {
        list.unwrap_or_default()
            .into_iter()
            .map(|h| Ok((name(&h.name)?, h.value)))
            .collect()
    };
    Ok(HeaderModifier {
        set: pairs(raw.set)?,
        add: pairs(raw.add)?,
        remove: raw
            .remove
            .unwrap_or_default()
            .iter()
            .map(|n| name(n))
            .collect::<Result<_, _>>()?,
    })
}

fn path(raw: RawPath, prefix_match: bool) -> Result<PathModifier, String> {
    match raw.kind.as_str() {
        "ReplaceFullPath" => Ok(PathModifier::ReplaceFullPath(
            raw.replace_full_path
                .ok_or("ReplaceFullPath without replaceFullPath")?,
        )),
        "ReplacePrefixMatch" if prefix_match => Ok(PathModifier::ReplacePrefixMatch(
            raw.replace_prefix_match
                .ok_or("ReplacePrefixMatch without replacePrefixMatch")?,
        )),
        "ReplacePrefixMatch" => Err("ReplacePrefixMatch needs a PathPrefix match".into()),
        other => Err(format!("path modifier {other} is not supported")),
    }
}
