//! TLS: server configurations per listener, built from the snapshot's
//! certificates, and reading a ClientHello's SNI before anything else.
//!
//! ```text
//!  accept ─▶ peek ClientHello (bytes stay in the socket) ─▶ SNI
//!     ├─ Passthrough: SNI picks the route; the untouched bytes are spliced
//!     └─ Terminate:   SNI picks the listener ─▶ its ServerConfig ─▶ handshake
//! ```
//!
//! Peeking (`MSG_PEEK`) leaves the ClientHello in the kernel's buffer, so
//! rustls or the passthrough backend reads it as if nobody had looked.
//! Session tickets and the session-ID cache are shared by every worker and
//! every listener's configuration, so a client resumes whichever core its
//! reconnection lands on, and across snapshot changes (certificate rotation
//! included: a ticket only resumes the SNI it was issued for).

use monoio::net::TcpStream;
use rustls::crypto::ring::{default_provider, Ticketer};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions,
};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use shardgate_core::tls::{parse_client_hello, ClientHello as Hello};
use shardgate_core::{Certificate, KeyFormat, ListenerProtocol, RouteTable};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Session state shared by all workers: ticket keys (rotated by rustls)
/// and the TLS 1.2 session-ID cache.
#[derive(Debug, Clone)]
pub(crate) struct TlsShared {
    provider: Arc<CryptoProvider>,
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
}

/// Sessions remembered for TLS 1.2 session-ID resumption, process-wide.
const SESSION_CACHE: usize = 64 * 1024;

impl TlsShared {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            provider: Arc::new(default_provider()),
            ticketer: Ticketer::new()?,
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE),
        })
    }
}

/// A listener's certificates; the first whose key can sign with a scheme
/// the client offers wins (e.g. ECDSA and RSA side by side).
#[derive(Debug)]
struct ListenerCerts(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for ListenerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0
            .iter()
            .find(|c| c.key.choose_scheme(schemes).is_some())
            .or_else(|| self.0.first())
            .cloned()
    }
}

/// Signing keys already built, by certificate, so an unchanged Secret is
/// not parsed again on every snapshot.
#[derive(Default)]
pub(crate) struct KeyCache(Vec<(Certificate, Arc<CertifiedKey>)>);

impl KeyCache {
    fn get(
        &mut self,
        cert: &Certificate,
        provider: &CryptoProvider,
    ) -> Result<Arc<CertifiedKey>, rustls::Error> {
        if let Some((_, k)) = self.0.iter().find(|(c, _)| c == cert) {
            return Ok(Arc::clone(k));
        }
        let chain = cert
            .chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let der = cert.key.der.clone();
        let key: PrivateKeyDer<'static> = match cert.key.format {
            KeyFormat::Pkcs8 => PrivatePkcs8KeyDer::from(der).into(),
            KeyFormat::Pkcs1 => PrivatePkcs1KeyDer::from(der).into(),
            KeyFormat::Sec1 => PrivateSec1KeyDer::from(der).into(),
        };
        let k = Arc::new(CertifiedKey::from_der(chain, key, provider)?);
        self.0.push((cert.clone(), Arc::clone(&k)));
        Ok(k)
    }

    /// Drops keys the table no longer uses.
    fn retain_used(&mut self, table: &RouteTable, used: &[u32]) {
        self.0
            .retain(|(c, _)| used.iter().any(|&i| table.certificate(i) == c));
    }
}

/// Server configurations of a table's terminating listeners, by listener
/// id; `None` where the listener does not terminate TLS or its certificate
/// could not be loaded (its handshakes fail; every other listener serves).
pub(crate) fn server_configs(
    table: &RouteTable,
    shared: &TlsShared,
    cache: &mut KeyCache,
) -> Vec<Option<Arc<ServerConfig>>> {
    let mut used = Vec::new();
    let mut configs = Vec::new();
    for bind in table.binds() {
        if !bind.protocol.terminates_tls() {
            continue;
        }
        for l in bind.listener_infos() {
            used.extend_from_slice(&l.certificates);
            let keys: Result<Vec<_>, _> = l
                .certificates
                .iter()
                .map(|&i| cache.get(table.certificate(i), &shared.provider))
                .collect();
            let config = match keys {
                Ok(keys) => Some(build(keys, bind.protocol, shared)),
                Err(e) => {
                    tracing::error!(gateway = %l.gateway, listener = %l.name, error = %e, "certificate unusable; the listener's handshakes fail");
                    None
                }
            };
            let id = l.id as usize;
            if configs.len() <= id {
                configs.resize(id + 1, None);
            }
            configs[id] = config;
        }
    }
    cache.retain_used(table, &used);
    configs
}

fn build(
    keys: Vec<Arc<CertifiedKey>>,
    protocol: ListenerProtocol,
    shared: &TlsShared,
) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(Arc::clone(&shared.provider))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ListenerCerts(keys)));
    if protocol == ListenerProtocol::Https {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    // rustls lists its suites strongest first; prefer that order to the
    // client's.
    config.ignore_client_order = true;
    config.ticketer = Arc::clone(&shared.ticketer);
    config.session_storage = Arc::clone(&shared.sessions);
    Arc::new(config)
}

/// Why no SNI could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeekError {
    /// The first bytes are not a TLS ClientHello.
    NotTls,
    /// The client closed or the socket failed first.
    Closed,
    /// The ClientHello did not complete in time.
    Timeout,
}

/// Largest ClientHello we wait for: a full record and its header.
const MAX_HELLO: usize = (1 << 14) + 5 + 1024;

/// Waits until the ClientHello is in the socket's receive buffer and returns
/// its SNI, without consuming a byte.
pub(crate) async fn peek_sni(
    stream: &TcpStream,
    timeout: Duration,
) -> Result<Option<String>, PeekError> {
    use nix::sys::socket::{recv, MsgFlags};
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 2048];
    let mut seen = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, stream.readable(false)).await {
            Err(_) => return Err(PeekError::Timeout),
            Ok(Err(_)) => return Err(PeekError::Closed),
            Ok(Ok(())) => {}
        }
        let n = match recv(
            stream.as_raw_fd(),
            &mut buf,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => return Err(PeekError::Closed),
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(_) => return Err(PeekError::Closed),
        };
        match parse_client_hello(&buf[..n]) {
            Hello::Complete { sni } => return Ok(sni),
            Hello::Invalid => return Err(PeekError::NotTls),
            Hello::Incomplete if n == buf.len() && n < MAX_HELLO => {
                buf.resize((n * 2).min(MAX_HELLO), 0);
            }
            Hello::Incomplete if n == buf.len() => return Err(PeekError::NotTls),
            Hello::Incomplete => {
                // The rest is still in flight; the socket stays readable
                // with what it holds, so wait a moment before looking again.
                if n == seen {
                    monoio::time::sleep(Duration::from_millis(1)).await;
                }
                seen = n;
            }
        }
    }
}
