//! The TLS material the Go suite creates at run time (ECHO.md §8): the same Secrets and CA
//! ConfigMaps, the same issuer relationships and SAN sets. Keys are ECDSA P-256 instead of
//! RSA-2048 (ring cannot generate RSA keys); nothing in the corpus depends on the key type.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{json, Value};

const INFRA: &str = "gateway-conformance-infra";
const WEB: &str = "gateway-conformance-web-backend";
const APP: &str = "gateway-conformance-app-backend";

/// A CA that signs leaves.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca() -> Ca {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "gatewayapi");
    dn.push(DnType::OrganizationName, "Kubernetes Gateway API");
    dn.push(DnType::CountryName, "US");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().expect("generate a CA key");
    let pem = params.self_signed(&key).expect("self-sign the CA").pem();
    Ca { params, key, pem }
}

/// A leaf (CN default, O Acme Co); `hosts` become SANs the way the Go helper decides.
fn leaf(hosts: &[&str], client: bool, issuer: Option<&Ca>) -> (String, String) {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "default");
    dn.push(DnType::OrganizationName, "Acme Co");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    params.subject_alt_names = hosts.iter().map(|h| san(h)).collect();
    let key = KeyPair::generate().expect("generate a leaf key");
    let cert = match issuer {
        Some(ca) => params
            .signed_by(&key, &Issuer::from_params(&ca.params, &ca.key))
            .expect("sign a leaf"),
        None => params.self_signed(&key).expect("self-sign a leaf"),
    };
    (cert.pem(), key.serialize_pem())
}

/// IP literal → IP SAN; DNS name (at most one leading `*.`) → DNS SAN; anything else → URI.
fn san(host: &str) -> SanType {
    if let Ok(ip) = host.parse() {
        return SanType::IpAddress(ip);
    }
    let bare = host.strip_prefix("*.").unwrap_or(host);
    let dns_like = !bare.is_empty()
        && bare.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    let text = host.to_owned().try_into().expect("SANs are ASCII");
    if dns_like {
        SanType::DnsName(text)
    } else {
        SanType::URI(text)
    }
}

fn secret(ns: &str, name: &str, (crt, key): (String, String)) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": { "namespace": ns, "name": name },
        // As the API server holds it (`stringData` is only a write-side convenience).
        "data": { "tls.crt": STANDARD.encode(crt), "tls.key": STANDARD.encode(key) },
    })
}

fn config_map(ns: &str, name: &str, ca_pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "namespace": ns, "name": name },
        "data": { "ca.crt": ca_pem },
    })
}

/// The run-time objects, made once per process like the Go suite's (the HTTPS client reads
/// its trust anchors and client certificates from the same objects the Gateway is given).
pub fn runtime() -> &'static [Value] {
    static OBJECTS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    OBJECTS.get_or_init(runtime_objects)
}

/// Every object of ECHO.md §8, in the suite's order.
fn runtime_objects() -> Vec<Value> {
    let (a, b, c, d) = (ca(), ca(), ca(), ca());
    let throwaway = ca();
    vec![
        secret(WEB, "certificate", leaf(&["*"], false, None)),
        secret(
            INFRA,
            "tls-validity-checks-certificate",
            leaf(&["*.org", "*.wildcard.org", "*"], false, None),
        ),
        config_map(WEB, "web-backend-cm", &throwaway.pem),
        config_map(INFRA, "tls-validity-checks-ca-certificate", &a.pem),
        secret(
            INFRA,
            "tls-validity-checks-client-certificate",
            leaf(&[], true, Some(&a)),
        ),
        config_map(INFRA, "tls-validity-checks-per-port-ca-certificate", &b.pem),
        secret(
            INFRA,
            "tls-validity-checks-per-port-client-certificate",
            leaf(&[], true, Some(&b)),
        ),
        config_map(INFRA, "tls-checks-ca-certificate", &c.pem),
        secret(
            INFRA,
            "tls-checks-certificate",
            leaf(
                &[
                    "abc.example.com",
                    "other.example.com",
                    "spiffe://abc.example.com/test-identity",
                ],
                false,
                Some(&c),
            ),
        ),
        secret(
            INFRA,
            "tls-checks-client-certificate",
            leaf(&[], true, Some(&c)),
        ),
        secret(
            INFRA,
            "tls-passthrough-checks-certificate",
            leaf(&["abc.example.com"], false, Some(&c)),
        ),
        secret(
            APP,
            "tls-passthrough-checks-certificate",
            leaf(&["abc.example.com"], false, Some(&c)),
        ),
        secret(
            INFRA,
            "tls-terminate-checks-certificate",
            leaf(&["tls.example.com"], false, Some(&c)),
        ),
        config_map(INFRA, "mismatch-ca-certificate", &d.pem),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_become_the_san_kinds_the_go_helper_picks() {
        assert!(matches!(san("*.org"), SanType::DnsName(_)));
        assert!(matches!(san("abc.example.com"), SanType::DnsName(_)));
        assert!(matches!(san("*"), SanType::URI(_)));
        assert!(matches!(
            san("spiffe://abc.example.com/test-identity"),
            SanType::URI(_)
        ));
        assert!(matches!(san("127.0.0.1"), SanType::IpAddress(_)));
    }
}
