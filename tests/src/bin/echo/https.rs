//! echo-basic's HTTPS port in HTTP mode (`HTTPS_PORT`, 8443): the plain port's handler behind
//! TLS, as Go's `ListenAndServeTLS` sets it up: ALPN `h2` and `http/1.1`, and, when
//! `TLS_CLIENT_CACERTS` names a CA bundle, client certificates checked against it only if
//! the client sends one (Go's `VerifyClientCertIfGiven`). Every echo answer on this port
//! carries a `tls` object with the connection's facts ([`TlsAssertions`]).
//!
//! Lifecycle of a connection: TLS handshake (the socket is dropped on failure), then HTTP/2
//! if ALPN chose `h2`, else HTTP/1.1 with upgrades (`/ws`), until either side closes or a
//! handler aborts the connection.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{ProtocolVersion, RootCertStore, ServerConfig, ServerConnection};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::tls::{go_cipher_suite_name, load_key_pair, TlsStream};
use crate::{handlers, AbortSignal, AbortableStream, ConnCtx, Listener};

/// The server configuration of an HTTPS port: the key pair from PEM files, TLS 1.2 and 1.3,
/// ALPN `h2` then `http/1.1`, and optional client certificates verified against the PEM
/// bundle `client_cas`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_cas: Option<&Path>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let (chain, key_der) = load_key_pair(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let builder = match client_cas {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading client CAs {}", path.display()))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.with_context(|| format!("client CA PEM {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("client CA in {}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                // Go's VerifyClientCertIfGiven: clients without a certificate are served.
                .allow_unauthenticated()
                .build()
                .with_context(|| format!("client CAs {}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key_der)
        .with_context(|| format!("key pair {} / {}", cert.display(), key.display()))?;
    // What Go's http.Server offers when it serves TLS with HTTP/2 enabled.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// echo-basic's `TLSAssertions`: the `tls` object of an echo answer, with Go's field names
/// and spellings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsAssertions {
    version: String,
    #[serde(rename = "peerCertificates", skip_serializing_if = "Vec::is_empty")]
    peer_certificates: Vec<String>,
    #[serde(rename = "serverName")]
    server_name: String,
    #[serde(
        rename = "negotiatedProtocol",
        skip_serializing_if = "String::is_empty"
    )]
    negotiated_protocol: String,
    #[serde(rename = "cipherSuite")]
    cipher_suite: String,
}

impl TlsAssertions {
    /// The facts of a finished handshake.
    pub fn of(conn: &ServerConnection) -> Self {
        Self {
            version: conn
                .protocol_version()
                .map_or_else(String::new, version_name),
            peer_certificates: conn
                .peer_certificates()
                .unwrap_or_default()
                .iter()
                .map(|c| certificate_pem(c))
                .collect(),
            server_name: conn.server_name().unwrap_or_default().to_owned(),
            negotiated_protocol: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map(|s| go_cipher_suite_name(u16::from(s.suite())))
                .unwrap_or_default(),
        }
    }
}

/// echo-basic's spelling in HTTP mode (`TLSv1.3`; the TCP mode prints Go's `TLS 1.3`
/// instead); empty for versions it does not name.
fn version_name(version: ProtocolVersion) -> String {
    match version {
        ProtocolVersion::TLSv1_3 => "TLSv1.3",
        ProtocolVersion::TLSv1_2 => "TLSv1.2",
        ProtocolVersion::TLSv1_1 => "TLSv1.1",
        ProtocolVersion::TLSv1_0 => "TLSv1.0",
        _ => "",
    }
    .to_owned()
}

/// A certificate as Go's `pem.Encode` writes it: base64 in lines of 64 characters.
fn certificate_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Serves one accepted connection of an HTTPS port.
pub async fn serve_connection(
    stream: TcpStream,
    listener: Arc<Listener>,
    config: Arc<ServerConfig>,
) {
    let verbose = listener.app.verbose;
    let abort = Arc::new(AbortSignal::default());
    // Dropped when this function returns, which wakes handlers waiting for the close.
    let (_closed_tx, closed_rx) = watch::channel(());
    let stream = AbortableStream {
        inner: stream,
        abort: Arc::clone(&abort),
    };
    let tls = match TlsStream::accept(stream, config).await {
        Ok(tls) => tls,
        Err(e) => {
            if verbose {
                eprintln!("shardgate-echo: TLS handshake on pod {}: {e}", listener.pod);
            }
            return;
        }
    };
    let h2 = tls.connection().alpn_protocol() == Some(b"h2");
    let ctx = Arc::new(ConnCtx {
        listener,
        abort: Arc::clone(&abort),
        closed: closed_rx,
        tls: Some(TlsAssertions::of(tls.connection())),
    });
    let service = service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(handlers::handle(ctx, req).await) }
    });
    // Go picks the protocol by ALPN alone: without `h2` the connection is HTTP/1.1.
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let mut builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    builder
        .http1()
        .keep_alive(true)
        .half_close(true)
        .title_case_headers(true)
        .header_read_timeout(None);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    let result = tokio::select! {
        res = conn => res.map_err(|e| e.to_string()),
        () = abort.notify.notified() => Ok(()),
    };
    if let Err(e) = result {
        if verbose {
            eprintln!("shardgate-echo: connection error: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_pem_encoded_like_go() {
        let der: Vec<u8> = (0..100u8).collect();
        let pem = certificate_pem(&der);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        // 100 bytes are 136 base64 characters: 64 + 64 + 8.
        let sizes: Vec<usize> = lines[1..4].iter().map(|l| l.len()).collect();
        assert_eq!(sizes, [64, 64, 8]);
        assert_eq!(lines[4], "-----END CERTIFICATE-----");
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        let body: String = lines[1..4].concat();
        assert_eq!(STANDARD.decode(body).expect("base64"), der);
    }

    #[test]
    fn versions_use_echo_basic_http_mode_spelling() {
        assert_eq!(version_name(ProtocolVersion::TLSv1_3), "TLSv1.3");
        assert_eq!(version_name(ProtocolVersion::TLSv1_2), "TLSv1.2");
        assert_eq!(version_name(ProtocolVersion::SSLv3), "");
    }

    #[test]
    fn assertions_serialize_with_go_names_and_omit_empty_lists() {
        let a = TlsAssertions {
            version: "TLSv1.3".into(),
            peer_certificates: Vec::new(),
            server_name: "abc.example.com".into(),
            negotiated_protocol: String::new(),
            cipher_suite: "TLS_AES_128_GCM_SHA256".into(),
        };
        assert_eq!(
            serde_json::to_value(&a).expect("serializes"),
            serde_json::json!({
                "version": "TLSv1.3",
                "serverName": "abc.example.com",
                "cipherSuite": "TLS_AES_128_GCM_SHA256",
            })
        );
    }
}
