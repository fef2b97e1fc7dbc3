//! The Go suite's TLS clients: HTTP/1.1 over TLS with SNI from the case and a root pool of
//! exactly the case's `trust_anchor` (CASES-CONVENTIONS.md "http_cases"), and the TLS setup
//! of its HTTP/2 client (protocol `H2`, driven by `traffic`); the same handshake
//! for the TCP echo protocol over TLS; and the probe that expects a Gateway to drop a
//! connection without answering its ClientHello ("tls_cases").
//!
//! Go accepts a certificate that is itself in the root pool, and matches `*.org` against
//! `example.org`; webpki does neither (a self-signed leaf with CA=false is no anchor to it,
//! and it wants two labels after a wildcard). `GoRootPool` therefore accepts a pinned leaf
//! by its bytes and checks the name the way Go's `VerifyHostname` does, and leaves CA-issued
//! chains to webpki.

use super::certs::runtime;
use super::objects::str_at;
use super::probe::Attempt;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConnection, DigitallySignedStruct, Error, RootCertStore,
    SignatureScheme, StreamOwned,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// The PEM text of a run-time object's key: `namespace/name:key` (Secret `tls.crt`, or a
/// ConfigMap's `ca.crt`).
pub(super) fn runtime_pem(reference: &str) -> Result<String, String> {
    let (object, key) = reference.split_once(':').unwrap_or((reference, "tls.crt"));
    let (ns, name) = object.split_once('/').unwrap_or(("", object));
    let doc = runtime()
        .iter()
        .find(|d| {
            str_at(d, &["metadata", "namespace"]) == ns && str_at(d, &["metadata", "name"]) == name
        })
        .ok_or_else(|| format!("no run-time object {object}"))?;
    let text = match str_at(doc, &["kind"]) {
        "ConfigMap" => str_at(doc, &["data", key]).to_owned(),
        _ => {
            let b64 = str_at(doc, &["data", key]);
            String::from_utf8(
                STANDARD
                    .decode(b64)
                    .map_err(|e| format!("{reference}: {e}"))?,
            )
            .map_err(|e| format!("{reference}: {e}"))?
        }
    };
    if text.is_empty() {
        return Err(format!("{reference} is empty"));
    }
    Ok(text)
}

/// Whether the PEM certificate `pem` (a PEM string, or a run-time `namespace/name:key`
/// reference) is among `presented`, the PEM certificates the echo backend reported.
pub fn certificate_among(pem: &str, presented: &[String]) -> Result<bool, String> {
    let text = if pem.trim_start().starts_with("-----BEGIN") {
        pem.to_owned()
    } else {
        runtime_pem(pem)?
    };
    let want = certs(&text)?;
    let Some(want) = want.first() else {
        return Err(format!("no certificate in {pem}"));
    };
    Ok(presented
        .iter()
        .filter_map(|p| certs(p).ok())
        .any(|got| got.first() == Some(want)))
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))
}

/// Go's root pool of one certificate.
#[derive(Debug)]
struct GoRootPool {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

/// One DER TLV: `(tag, content, rest)`.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n > 4 || b.len() < n {
            return None;
        }
        let (bytes, rest) = b.split_at(n);
        b = rest;
        bytes.iter().fold(0, |acc, &x| acc << 8 | usize::from(x))
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// The dNSName entries of the subjectAltName extension, read straight from the DER:
/// webpki's own list leaves out names it would not match (such as `*.org`).
fn dns_sans(der: &[u8]) -> Vec<String> {
    // OID 2.5.29.17, then an optional `critical` BOOLEAN, then the OCTET STRING.
    const SAN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x11];
    let Some(at) = der.windows(SAN_OID.len()).position(|w| w == SAN_OID) else {
        return Vec::new();
    };
    let mut rest = &der[at + SAN_OID.len()..];
    if rest.first() == Some(&0x01) {
        rest = tlv(rest).map_or(&[][..], |(_, _, r)| r);
    }
    let Some((0x04, octets, _)) = tlv(rest) else {
        return Vec::new();
    };
    let Some((0x30, mut names, _)) = tlv(octets) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some((tag, content, next)) = tlv(names) {
        // [2] IMPLICIT IA5String: dNSName.
        if tag == 0x82 {
            out.push(String::from_utf8_lossy(content).into_owned());
        }
        names = next;
    }
    out
}

/// Go's `matchHostnames`: a leading `*` stands for exactly one label.
fn go_name_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => pattern == host,
    }
}

impl ServerCertVerifier for GoRootPool {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if !self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        }
        let host = server_name.to_str();
        if dns_sans(end_entity)
            .iter()
            .any(|n| go_name_matches(n, &host))
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration trusting `trust_anchor` only, presenting `client_cert` if given;
/// no ALPN.
fn config(trust_anchor: &str, client_cert: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let anchors = certs(&runtime_pem(trust_anchor)?)?;
    let mut roots = RootCertStore::empty();
    for c in &anchors {
        roots
            .add(c.clone())
            .map_err(|e| format!("{trust_anchor}: {e}"))?;
    }
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| format!("{trust_anchor}: {e}"))?;
    let verifier = GoRootPool {
        pinned: anchors,
        webpki,
        provider: Arc::clone(&provider),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some(secret) => {
            let chain = certs(&runtime_pem(&format!("{secret}:tls.crt"))?)?;
            let key = PrivateKeyDer::from_pem_slice(
                runtime_pem(&format!("{secret}:tls.key"))?.as_bytes(),
            )
            .map_err(|e| format!("{secret} key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{secret}: {e}"))?
        }
    };
    Ok(config)
}

/// Go's `http2.Transport` TLS setup: the case's root pool and client certificate, ALPN `h2`
/// alone (the transport fails when the server picks anything else).
pub fn h2_client_config(
    trust_anchor: &str,
    client_cert: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut config = config(trust_anchor, client_cert)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// One HTTP/1.1 request over TLS; the connection closes after it. Returns the raw bytes the
/// server sent until it closed.
pub fn exchange(
    addr: SocketAddr,
    sni: &str,
    trust_anchor: &str,
    client_cert: Option<&str>,
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut config = config(trust_anchor, client_cert)?;
    // Go's HTTP/1.1 transport with its own TLS config does not offer h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| format!("SNI {sni:?}: {e}"))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(request)
        .map_err(|e| format!("TLS to {addr} (SNI {sni}): {e}"))?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        // Servers often close without close_notify after `Connection: close`.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => Ok(out),
        Err(e) => Err(format!("TLS to {addr} (SNI {sni}): {e}")),
    }
}

/// A TLS connection to `addr` with SNI `sni`, trusting `trust_anchor` only, handshake done
/// (Go's `tls.Dial` in the TCP helpers: no ALPN, no client certificate). Reads and writes
/// time out after `timeout`.
pub fn connect(
    addr: SocketAddr,
    sni: &str,
    trust_anchor: &str,
    timeout: Duration,
) -> Result<StreamOwned<ClientConnection, TcpStream>, Attempt> {
    let config = config(trust_anchor, None).map_err(Attempt::Fatal)?;
    let name = ServerName::try_from(sni.to_owned())
        .map_err(|e| Attempt::Fatal(format!("SNI {sni:?}: {e}")))?;
    let conn =
        ClientConnection::new(Arc::new(config), name).map_err(|e| Attempt::Fatal(e.to_string()))?;
    let mut tls = StreamOwned::new(conn, dial(addr, timeout)?);
    handshake(&mut tls).map_err(|e| Attempt::Retry(format!("TLS handshake (SNI {sni}): {e}")))?;
    Ok(tls)
}

/// A TCP connection with read and write timeouts.
fn dial(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Attempt> {
    let sock = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| Attempt::Retry(format!("connect {addr}: {e}")))?;
    sock.set_read_timeout(Some(timeout))
        .and_then(|()| sock.set_write_timeout(Some(timeout)))
        .map_err(Attempt::retry)?;
    Ok(sock)
}

/// Drives the client handshake to its end.
fn handshake(tls: &mut StreamOwned<ClientConnection, TcpStream>) -> std::io::Result<()> {
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock)? == (0, 0) && tls.conn.is_handshaking() {
            // No bytes moved either way: the peer closed.
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// `tls.MakeTLSConnectionAndExpectEventuallyConnectionRejection`, one attempt: a TLS 1.2+
/// client with SNI `sni` and the system roots (which hold none of the suite's CAs) dials
/// `addr`. It passes only when the dial or handshake ends in EOF or a reset; a refused
/// connection, a completed handshake, a certificate error, a timeout or a TLS alert from
/// the Gateway (Go's `remote error: tls: …`) all mean "not rejected yet".
pub fn expect_rejection(addr: SocketAddr, sni: &str, timeout: Duration) -> Result<(), Attempt> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Attempt::Fatal(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SystemRoots { provider }))
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_owned())
        .map_err(|e| Attempt::Fatal(format!("SNI {sni:?}: {e}")))?;
    let conn =
        ClientConnection::new(Arc::new(config), name).map_err(|e| Attempt::Fatal(e.to_string()))?;
    let mut tls = StreamOwned::new(conn, dial(addr, timeout)?);
    match handshake(&mut tls) {
        Ok(()) => Err(Attempt::Retry(format!(
            "SNI {sni}: the TLS handshake completed"
        ))),
        Err(e) if is_rejection(&e) => Ok(()),
        Err(e) => Err(Attempt::Retry(format!("SNI {sni}: {e}"))),
    }
}

/// Go's test: `io.EOF`, `io.ErrUnexpectedEOF` or `ECONNRESET`.
fn is_rejection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
    )
}

/// Go's system root pool from the suite's point of view: none of the run-time CAs is in it,
/// so every certificate a Gateway presents fails verification.
#[derive(Debug)]
struct SystemRoots {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot TLS server with a run-time Secret's certificate answering `HTTP/1.1 200`.
    fn serve_once(secret: &str) -> SocketAddr {
        let chain = certs(&runtime_pem(&format!("{secret}:tls.crt")).expect("crt")).expect("pem");
        let key = PrivateKeyDer::from_pem_slice(
            runtime_pem(&format!("{secret}:tls.key"))
                .expect("key")
                .as_bytes(),
        )
        .expect("key pem");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let Ok((sock, _)) = listener.accept() else {
                return;
            };
            let conn = rustls::ServerConnection::new(Arc::new(config)).expect("conn");
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut buf = [0u8; 1024];
            if tls.read(&mut buf).is_ok() {
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        addr
    }

    #[test]
    fn a_pinned_self_signed_leaf_is_trusted_for_its_go_style_names() {
        let anchor = "gateway-conformance-infra/tls-validity-checks-certificate:tls.crt";
        let req = b"GET / HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n";
        let addr = serve_once("gateway-conformance-infra/tls-validity-checks-certificate");
        let got = exchange(
            addr,
            "example.org",
            anchor,
            None,
            req,
            Duration::from_secs(5),
        )
        .expect("handshake");
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );

        let addr = serve_once("gateway-conformance-infra/tls-validity-checks-certificate");
        let err = exchange(addr, "a.b.org", anchor, None, req, Duration::from_secs(5))
            .expect_err("name mismatch");
        assert!(err.contains("NotValidForName"), "{err}");
    }

    #[test]
    fn ca_issued_leaves_verify_against_their_ca() {
        let addr = serve_once("gateway-conformance-infra/tls-checks-certificate");
        let req = b"GET / HTTP/1.1\r\nHost: abc.example.com\r\nConnection: close\r\n\r\n";
        let anchor = "gateway-conformance-infra/tls-checks-ca-certificate:ca.crt";
        let got = exchange(
            addr,
            "abc.example.com",
            anchor,
            None,
            req,
            Duration::from_secs(5),
        )
        .expect("handshake");
        assert!(got.starts_with(b"HTTP/1.1 200"));
    }

    /// A listener that reads what the client sends, then closes (`reset`: with unread
    /// data and linger 0, so the client sees an RST) or answers with a TLS alert.
    fn reject_once(how: &'static str) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let Ok((mut sock, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 8];
            let _ = sock.read(&mut buf);
            match how {
                // handshake_failure, fatal, TLS 1.2 record.
                "alert" => {
                    let _ = sock.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
                    std::thread::sleep(Duration::from_millis(200));
                }
                "close" => {
                    let mut rest = [0u8; 4096];
                    let _ = sock.read(&mut rest);
                }
                _ => {}
            }
        });
        addr
    }

    #[test]
    fn dropping_the_client_hello_counts_as_rejection_but_an_alert_does_not() {
        let t = Duration::from_secs(5);
        assert_eq!(
            expect_rejection(reject_once("close"), "a.example.com", t),
            Ok(())
        );
        assert_eq!(
            expect_rejection(reject_once("reset"), "a.example.com", t),
            Ok(())
        );
        let alert = expect_rejection(reject_once("alert"), "a.example.com", t);
        assert!(
            matches!(&alert, Err(Attempt::Retry(e)) if e.contains("HandshakeFailure")),
            "{alert:?}"
        );
        // A completed handshake is no rejection either.
        let served = serve_once("gateway-conformance-infra/tls-checks-certificate");
        let done = expect_rejection(served, "abc.example.com", t);
        assert!(matches!(done, Err(Attempt::Retry(_))), "{done:?}");
    }

    #[test]
    fn wildcards_stand_for_one_label_as_in_go() {
        assert!(go_name_matches("*.org", "example.org"));
        assert!(go_name_matches(
            "*.wildcard.org",
            "third-example.wildcard.org"
        ));
        assert!(!go_name_matches("*.org", "a.b.org"));
        assert!(!go_name_matches("*.org", "org"));
        assert!(go_name_matches("Example.ORG", "example.org"));
    }
}
