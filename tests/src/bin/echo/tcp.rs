//! echo-basic's TCP mode (ECHO.md §4): a line protocol on a plain TCP port and, when a key
//! pair is configured, the same protocol behind TLS on a second port.
//!
//! Per connection (after the TLS handshake on the TLS port): send the welcome line, then
//! answer `PING` with `PONG`, `IS_TLS` with `true`/`false` (did *this* listener terminate
//! TLS) and `TEST` with one JSON line; every other line is ignored. The connection stays
//! open until the client closes it.

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::goish::go_json_escape;
use crate::tls::{go_cipher_suite_name, go_curve_name, go_version_name, TlsStream};

/// The first line on every connection.
pub const WELCOME: &str = "Gateway API Test TCP Server\n";

/// One TCP-mode listener: the pod it stands for and, on the TLS port, its key pair.
pub struct TcpEcho {
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub pod: String,
    /// `tcpport` and `tlsport` in `TEST` answers: the pod's configured ports
    /// (`$TCP_PORT`/`$TLS_PORT`), the same on both listeners.
    pub tcp_port_field: String,
    pub tls_port_field: String,
    /// Set on the TLS port.
    pub tls: Option<Arc<ServerConfig>>,
    pub verbose: bool,
}

/// echo-basic's `TCPAssertions`, field order included.
#[derive(Serialize)]
struct TestAnswer<'a> {
    namespace: &'a str,
    ingress: &'a str,
    service: &'a str,
    pod: &'a str,
    tcpport: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    tlsport: &'a str,
    #[serde(rename = "isTLS")]
    is_tls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsAnswer>,
}

fn is_empty(s: &&str) -> bool {
    s.is_empty()
}

/// echo-basic's `TLSAssertions` of the TCP mode: Go's spellings, empty fields left out.
#[derive(Debug, Serialize)]
struct TlsAnswer {
    version: String,
    #[serde(rename = "serverName")]
    server_name: String,
    #[serde(
        rename = "negotiatedProtocol",
        skip_serializing_if = "String::is_empty"
    )]
    negotiated_protocol: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    curves: String,
    #[serde(rename = "cipherSuite")]
    cipher_suite: String,
}

impl TlsAnswer {
    fn of(conn: &rustls::ServerConnection) -> Self {
        Self {
            version: conn
                .protocol_version()
                .map(go_version_name)
                .unwrap_or_default(),
            server_name: conn.server_name().unwrap_or_default().to_owned(),
            negotiated_protocol: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
            curves: conn
                .negotiated_key_exchange_group()
                .map(|g| go_curve_name(u16::from(g.name())))
                .unwrap_or_default(),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map(|s| go_cipher_suite_name(u16::from(s.suite())))
                .unwrap_or_default(),
        }
    }
}

impl TcpEcho {
    /// The `TEST` answer line (with its newline) for a connection of this listener.
    fn test_line(&self, tls: Option<TlsAnswer>) -> String {
        let answer = TestAnswer {
            namespace: &self.namespace,
            ingress: &self.ingress,
            service: &self.service,
            pod: &self.pod,
            tcpport: &self.tcp_port_field,
            tlsport: &self.tls_port_field,
            is_tls: tls.is_some(),
            tls,
        };
        let json = serde_json::to_string(&answer).expect("strings and bools always serialize");
        let mut line = go_json_escape(json);
        line.push('\n');
        line
    }
}

/// The answer to one line (without its line ending), or `None` for lines echo-basic ignores.
fn reply<'a>(line: &[u8], is_tls: bool, test_line: &'a str) -> Option<&'a str> {
    match line {
        b"PING" => Some("PONG\n"),
        b"IS_TLS" if is_tls => Some("true\n"),
        b"IS_TLS" => Some("false\n"),
        b"TEST" => Some(test_line),
        _ => None,
    }
}

pub async fn accept_loop(socket: TcpListener, echo: Arc<TcpEcho>) {
    loop {
        match socket.accept().await {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(stream, Arc::clone(&echo)));
            }
            Err(e) => {
                // Typically EMFILE; back off instead of spinning, and keep serving.
                eprintln!("shardgate-echo: accept on pod {} (tcp): {e}", echo.pod);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, echo: Arc<TcpEcho>) {
    let result = match &echo.tls {
        None => converse(stream, &echo, None).await,
        Some(config) => match TlsStream::accept(stream, Arc::clone(config)).await {
            Ok(tls) => {
                let facts = TlsAnswer::of(tls.connection());
                converse(tls, &echo, Some(facts)).await
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        if echo.verbose {
            eprintln!("shardgate-echo: tcp connection on pod {}: {e}", echo.pod);
        }
    }
}

async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    echo: &TcpEcho,
    tls: Option<TlsAnswer>,
) -> std::io::Result<()> {
    let is_tls = tls.is_some();
    // echo-basic marshals the answer once per connection.
    let test_line = echo.test_line(tls);
    let mut stream = BufReader::new(stream);
    stream.write_all(WELCOME.as_bytes()).await?;
    stream.flush().await?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if stream.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        // Go's bufio.ScanLines drops the `\n` and one `\r` before it.
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if let Some(answer) = reply(text, is_tls, &test_line) {
            stream.write_all(answer.as_bytes()).await?;
            stream.flush().await?;
        }
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo() -> TcpEcho {
        TcpEcho {
            namespace: "gateway-conformance-infra".into(),
            ingress: String::new(),
            service: "tcp-backend".into(),
            pod: "tcp-backend-0-0".into(),
            tcp_port_field: "3000".into(),
            tls_port_field: "8443".into(),
            tls: None,
            verbose: false,
        }
    }

    #[test]
    fn commands_get_echo_basic_answers_and_other_lines_none() {
        assert_eq!(reply(b"PING", false, "T\n"), Some("PONG\n"));
        assert_eq!(reply(b"IS_TLS", true, "T\n"), Some("true\n"));
        assert_eq!(reply(b"IS_TLS", false, "T\n"), Some("false\n"));
        assert_eq!(reply(b"TEST", false, "T\n"), Some("T\n"));
        assert_eq!(reply(b"ping", false, "T\n"), None);
        assert_eq!(reply(b"PING ", false, "T\n"), None);
    }

    #[test]
    fn plain_test_answer_has_identity_ports_and_no_tls_object() {
        assert_eq!(
            echo().test_line(None),
            "{\"namespace\":\"gateway-conformance-infra\",\"ingress\":\"\",\"service\":\"tcp-backend\",\"pod\":\"tcp-backend-0-0\",\"tcpport\":\"3000\",\"tlsport\":\"8443\",\"isTLS\":false}\n"
        );
    }

    /// A CA and a leaf for `abc.example.com` it signed, as PEM files in `dir`; the CA's DER.
    fn key_pair_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = rcgen::CertificateParams::new(vec!["abc.example.com".to_owned()])
            .expect("params")
            .signed_by(&leaf_key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
            .expect("leaf");
        let (cert, key) = (dir.join("crt"), dir.join("key"));
        std::fs::write(&cert, leaf.pem()).expect("write crt");
        std::fs::write(&key, leaf_key.serialize_pem()).expect("write key");
        (cert, key, ca.der().to_vec())
    }

    /// Reads one line from a blocking stream.
    fn line(stream: &mut impl std::io::Read) -> String {
        let mut out = Vec::new();
        let mut byte = [0u8; 1];
        while out.last() != Some(&b'\n') {
            if stream.read(&mut byte).expect("read") == 0 {
                break;
            }
            out.push(byte[0]);
        }
        String::from_utf8(out).expect("utf-8")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_port_speaks_the_line_protocol_after_the_handshake() {
        use std::io::Write as _;

        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key, ca) = key_pair_files(dir.path());
        let mut echo = echo();
        echo.tls = Some(crate::tls::server_config(&cert, &key).expect("server config"));
        let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        tokio::spawn(accept_loop(socket, Arc::new(echo)));

        let client = tokio::task::spawn_blocking(move || {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.into()).expect("CA");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = "abc.example.com".try_into().expect("name");
            let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("conn");
            let sock = std::net::TcpStream::connect(addr).expect("connect");
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut got = vec![line(&mut tls)];
            for command in ["PING\n", "IS_TLS\r\n", "NOISE\n", "TEST\n"] {
                tls.write_all(command.as_bytes()).expect("write");
                if command != "NOISE\n" {
                    got.push(line(&mut tls));
                }
            }
            got
        });
        let got = client.await.expect("client thread");
        assert_eq!(got[..3], [WELCOME, "PONG\n", "true\n"]);
        let json: serde_json::Value = serde_json::from_str(&got[3]).expect("TEST JSON");
        assert_eq!(json["isTLS"], true);
        assert_eq!(json["pod"], "tcp-backend-0-0");
        assert_eq!(json["tls"]["serverName"], "abc.example.com");
        assert_eq!(json["tls"]["version"], "TLS 1.3");
        assert!(json["tls"]["cipherSuite"]
            .as_str()
            .is_some_and(|s| s.starts_with("TLS_")));
    }

    #[test]
    fn tls_answer_carries_go_spelled_connection_facts() {
        let tls = TlsAnswer {
            version: "TLS 1.3".into(),
            server_name: "abc.example.com".into(),
            negotiated_protocol: String::new(),
            curves: "X25519".into(),
            cipher_suite: "TLS_AES_128_GCM_SHA256".into(),
        };
        let line = echo().test_line(Some(tls));
        let json: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
        assert_eq!(json["isTLS"], true);
        assert_eq!(
            json["tls"],
            serde_json::json!({
                "version": "TLS 1.3",
                "serverName": "abc.example.com",
                "curves": "X25519",
                "cipherSuite": "TLS_AES_128_GCM_SHA256",
            })
        );
    }
}
