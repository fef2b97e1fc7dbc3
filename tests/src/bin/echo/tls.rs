//! Server-side TLS for the echo's TCP mode (and, through `https.rs`, its HTTPS port): the
//! key pair from PEM files, an async stream over a rustls `ServerConnection`, and the
//! connection facts spelled the way Go's `crypto/tls` prints them (echo-basic reports them
//! in its answers).
//!
//! The stream is the usual adapter between rustls' sans-IO connection and tokio: rustls reads
//! and writes TLS records through a `std::io` view of the socket that maps `Pending` to
//! `WouldBlock`, so every wait registers the socket's waker. (tokio-rustls does the same; only
//! the conformance runner's client uses it, and the echo needs only the server side.)
//!
//! Lifecycle: [`TlsStream::accept`] drives the handshake to completion (flush what rustls
//! wants to send, read what it wants to read) and flushes the records the handshake leaves
//! behind; afterwards reads decrypt whatever arrived, writes encrypt and send at once, and
//! shutdown sends `close_notify` before closing the socket's write side.

use std::io::{self, Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ProtocolVersion, ServerConfig, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A server configuration for the PEM certificate chain and key in these files, TLS 1.2 and
/// 1.3 (echo-basic's TCP mode sets `MinVersion: tls.VersionTLS12`), no ALPN, no client auth.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let (chain, key_der) = load_key_pair(cert, key)?;
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .with_context(|| format!("key pair {} / {}", cert.display(), key.display()))?;
    Ok(Arc::new(config))
}

/// The PEM certificate chain and private key in these files.
pub fn load_key_pair(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert_pem =
        std::fs::read(cert).with_context(|| format!("reading certificate {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("reading key {}", key.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("certificate PEM {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("private key PEM {}", key.display()))?;
    Ok((chain, key_der))
}

/// A TLS server connection over an async socket.
pub struct TlsStream<IO> {
    io: IO,
    conn: ServerConnection,
    /// The socket reached end of file.
    read_eof: bool,
    close_notify_sent: bool,
}

/// A blocking-style view of the socket for rustls: `Pending` becomes `WouldBlock`.
struct SyncIo<'a, 'b, IO> {
    io: &'a mut IO,
    cx: &'a mut Context<'b>,
}

impl<IO: AsyncRead + Unpin> Read for SyncIo<'_, '_, IO> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<IO: AsyncWrite + Unpin> Write for SyncIo<'_, '_, IO> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match Pin::new(&mut *self.io).poll_flush(self.cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Runs the server handshake on `io`.
    pub async fn accept(io: IO, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut stream = Self {
            io,
            conn,
            read_eof: false,
            close_notify_sent: false,
        };
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    /// The rustls connection, for what the handshake negotiated.
    pub fn connection(&self) -> &ServerConnection {
        &self.conn
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.is_handshaking() {
            ready!(self.poll_write_tls(cx))?;
            if !self.conn.wants_read() {
                // Nothing to send and nothing to wait for: rustls cannot progress.
                break;
            }
            if ready!(self.poll_read_tls(cx))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                )));
            }
        }
        // TLS 1.2's server Finished and TLS 1.3 session tickets are still queued.
        self.poll_write_tls(cx)
    }

    /// Sends every TLS record rustls has queued.
    fn poll_write_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            let mut io = SyncIo {
                io: &mut self.io,
                cx,
            };
            match self.conn.write_tls(&mut io) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads what the socket has into rustls and processes it; `Ok(0)` at end of file.
    fn poll_read_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut io = SyncIo {
            io: &mut self.io,
            cx,
        };
        let n = match self.conn.read_tls(&mut io) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if n == 0 {
            self.read_eof = true;
        }
        if let Err(e) = self.conn.process_new_packets() {
            // A last-gasp write of the alert describing the error, as rustls' own
            // `complete_io` does; the error itself is what matters.
            let mut io = SyncIo {
                io: &mut self.io,
                cx,
            };
            let _ = self.conn.write_tls(&mut io);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
        }
        Poll::Ready(Ok(n))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.conn.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: end of stream for a line reader,
                // as it is for Go's `bufio.Scanner` over a `tls.Conn`.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Poll::Ready(Ok(()));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            // Records produced by earlier reads (alerts, key updates) go out first.
            ready!(this.poll_write_tls(cx))?;
            ready!(this.poll_read_tls(cx))?;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Empty rustls' buffer first, so plaintext never piles up beyond one write.
        ready!(this.poll_write_tls(cx))?;
        let n = this.conn.writer().write(buf)?;
        // Send now if the socket takes it; otherwise the next write or flush does.
        if let Poll::Ready(Err(e)) = this.poll_write_tls(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.writer().flush()?;
        ready!(this.poll_write_tls(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_notify_sent {
            this.conn.send_close_notify();
            this.close_notify_sent = true;
        }
        ready!(this.poll_write_tls(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Go's `tls.VersionName`: `TLS 1.3`, `TLS 1.2`, or `0x%04X` for anything else.
pub fn go_version_name(version: ProtocolVersion) -> String {
    match version {
        ProtocolVersion::TLSv1_3 => "TLS 1.3".to_owned(),
        ProtocolVersion::TLSv1_2 => "TLS 1.2".to_owned(),
        ProtocolVersion::TLSv1_1 => "TLS 1.1".to_owned(),
        ProtocolVersion::TLSv1_0 => "TLS 1.0".to_owned(),
        other => format!("0x{:04X}", u16::from(other)),
    }
}

/// Go's `tls.CipherSuiteName` for the suites rustls' ring provider offers, `0x%04X` otherwise.
pub fn go_cipher_suite_name(id: u16) -> String {
    let name = match id {
        0x1301 => "TLS_AES_128_GCM_SHA256",
        0x1302 => "TLS_AES_256_GCM_SHA384",
        0x1303 => "TLS_CHACHA20_POLY1305_SHA256",
        0xc02b => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xc02c => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xc02f => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xc030 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xcca8 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        0xcca9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        other => return format!("0x{other:04X}"),
    };
    name.to_owned()
}

/// Go's `tls.CurveID.String()`.
pub fn go_curve_name(id: u16) -> String {
    let name = match id {
        23 => "CurveP256",
        24 => "CurveP384",
        25 => "CurveP521",
        29 => "X25519",
        0x11ec => "X25519MLKEM768",
        other => return format!("CurveID({other})"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_facts_use_go_spellings() {
        assert_eq!(go_version_name(ProtocolVersion::TLSv1_3), "TLS 1.3");
        assert_eq!(go_version_name(ProtocolVersion::TLSv1_2), "TLS 1.2");
        assert_eq!(go_cipher_suite_name(0x1301), "TLS_AES_128_GCM_SHA256");
        assert_eq!(
            go_cipher_suite_name(0xcca9),
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        );
        assert_eq!(go_cipher_suite_name(0x00ff), "0x00FF");
        assert_eq!(go_curve_name(29), "X25519");
        assert_eq!(go_curve_name(23), "CurveP256");
        assert_eq!(go_curve_name(7), "CurveID(7)");
    }
}
