//! `shardgate-echo`: a stand-in for the Gateway API conformance backend `echo-basic` (its
//! HTTP, gRPC, TCP and UDP modes), plus a few `/_shardgate/` endpoints used by Shardgate's own
//! end-to-end tests, and a tiny DNS responder standing in for the suite's CoreDNS.
//!
//! One process serves many "pods": every `--serve` spec is its own listener with its own
//! identity and counters, so a test can start a whole fleet of backends at once.
//!
//! ```text
//! shardgate-echo --serve 'ADDR,pod=NAME,namespace=NS[,service=SVC][,MODE][,OPTION=VALUE…]'
//!                [--serve ...] [--http-port-field 3000] [--ingress NAME] [--verbose]
//! ```
//!
//! | MODE | listener | echo-basic equivalent |
//! |---|---|---|
//! | (none) | HTTP/1.1 echo | HTTP mode, `HTTP_PORT` |
//! | `h2c` | HTTP/1.1 and prior-knowledge HTTP/2 echo | HTTP mode, `H2C_PORT` |
//! | `https` | the HTTP echo behind TLS, ALPN `h2`/`http/1.1` (`https.rs`); needs `cert=PEM,key=PEM`, takes `clientcas=PEM` | HTTP mode, `HTTPS_PORT` |
//! | `tcp` | TCP line protocol (`tcp.rs`) | `TCP_ECHO_SERVER`, `TCP_PORT` |
//! | `tls` | the same behind TLS; needs `cert=PEM,key=PEM` | `TCP_ECHO_SERVER`, `TLS_PORT` |
//! | `udp` | UDP echo (`udp.rs`) | `UDP_ECHO_SERVER`, `UDP_PORT` |
//! | `dns` | DNS answers over UDP (`udp.rs`) | the base manifests' CoreDNS |
//! | `grpc` | the gRPC echo service over h2c (`grpc.rs`) | `GRPC_ECHO_SERVER`, `HTTP_PORT` |
//!
//! `tcp` and `tls` also take `tcpport=`/`tlsport=`, the ports their `TEST` answers report.
//! Options left out come from the variables echo-basic reads: `$POD_NAME`, `$NAMESPACE`,
//! `$SERVICE_NAME`, `$TLS_SERVER_CERT`, `$TLS_SERVER_PRIV_KEY`, `$TCP_PORT` (else 3000),
//! `$TLS_PORT` (else 8443); for `https`, `$TLS_SERVER_CERT`, `$TLS_SERVER_PRIVKEY` (HTTP mode's
//! spelling) and `$TLS_CLIENT_CACERTS`. Every HTTP listener serves the WebSocket echo on
//! `/ws` (`ws.rs`).
//!
//! Once every listener is bound it prints `listening ADDR pod=NAME` per listener (with the
//! real port when the spec asked for port 0) and then `ready`.
//!
//! Shardgate endpoints (never used by the conformance suite): `/_shardgate/stats` (counters),
//! `/_shardgate/seen?uri=TARGET` (how many requests had exactly that request target),
//! `/_shardgate/bytes`, `/_shardgate/digest`, `/_shardgate/echo-body`, `/_shardgate/sleep`.

#![forbid(unsafe_code)]

#[path = "echo/goish.rs"]
mod goish;
#[path = "echo/grpc.rs"]
mod grpc;
#[path = "echo/handlers.rs"]
mod handlers;
#[path = "echo/https.rs"]
mod https;
#[path = "echo/tcp.rs"]
mod tcp;
#[path = "echo/tls.rs"]
mod tls;
#[path = "echo/udp.rs"]
mod udp;
#[path = "echo/ws.rs"]
mod ws;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command line. Identity defaults come from the same environment variables `echo-basic`
/// reads, so the binary can also be dropped into a pod-like environment unchanged.
#[derive(Debug, Parser)]
#[command(
    name = "shardgate-echo",
    about = "Gateway API conformance echo backend (echo-basic: HTTP, gRPC, TCP and UDP modes) for Shardgate tests"
)]
struct Cli {
    /// Listener spec: `ADDR,pod=NAME,namespace=NS[,service=SVC][,MODE][,OPTION=VALUE…]`.
    /// ADDR is ip:port (port 0 picks a free port). MODE: none (HTTP), `h2c` (also HTTP/2 with
    /// prior knowledge, like echo-basic's h2c port), `tcp` (TCP echo), `tls` (TCP echo over
    /// TLS, with `cert=PEM,key=PEM`), `udp` (UDP echo), `dns` (DNS responder) or `grpc` (the
    /// gRPC echo service over h2c). `tcp`/`tls`
    /// take `tcpport=`/`tlsport=`, the ports reported by `TEST`. `https` (HTTP echo over TLS,
    /// ALPN h2 and http/1.1) takes `cert=PEM,key=PEM[,clientcas=PEM]`. Options default to
    /// $POD_NAME, $NAMESPACE, $SERVICE_NAME, $TLS_SERVER_CERT, $TLS_SERVER_PRIV_KEY,
    /// $TCP_PORT (3000) and $TLS_PORT (8443); for `https`, $TLS_SERVER_CERT,
    /// $TLS_SERVER_PRIVKEY and $TLS_CLIENT_CACERTS.
    #[arg(long = "serve", value_name = "SPEC", required = true, value_parser = parse_serve_spec)]
    serve: Vec<ServeSpec>,

    /// Value reported as `httpPort` in echo answers (echo-basic reports $HTTP_PORT on every
    /// listener, so it does not identify the socket).
    #[arg(long, env = "HTTP_PORT", default_value = "3000")]
    http_port_field: String,

    /// Value reported as `ingress` in echo answers.
    #[arg(long, env = "INGRESS_NAME", default_value = "")]
    ingress: String,

    /// Log requests and connection errors to stderr.
    #[arg(short, long)]
    verbose: bool,
}

/// One `--serve` listener.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServeSpec {
    addr: SocketAddr,
    pod: String,
    namespace: String,
    service: String,
    protocol: Protocol,
}

/// What a listener speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Protocol {
    /// echo-basic's HTTP port; with `h2c`, its h2c port.
    Http { h2c: bool },
    /// echo-basic's HTTPS port in HTTP mode, verifying client certificates against
    /// `client_cas` when a client sends one.
    Https {
        tls: KeyPairFiles,
        client_cas: Option<PathBuf>,
    },
    /// echo-basic's TCP mode: the plain port, or with a key pair the TLS port.
    Tcp {
        ports: TcpPortFields,
        tls: Option<KeyPairFiles>,
    },
    /// echo-basic's UDP mode.
    Udp,
    /// echo-basic's gRPC mode (plaintext port only).
    Grpc,
    /// The CoreDNS stand-in.
    Dns,
}

/// `tcpport` and `tlsport` as TCP-mode `TEST` answers report them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TcpPortFields {
    tcp: String,
    tls: String,
}

/// PEM files of a TLS listener's certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPairFiles {
    cert: PathBuf,
    key: PathBuf,
}

fn parse_serve_spec(spec: &str) -> Result<ServeSpec, String> {
    parse_serve_spec_with_env(spec, |name| std::env::var(name).ok())
}

/// Spec parsing with the environment injected, so tests do not depend on the real one.
fn parse_serve_spec_with_env(
    spec: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ServeSpec, String> {
    let mut parts = spec.split(',');
    let addr_text = parts.next().unwrap_or_default().trim();
    let addr: SocketAddr = addr_text
        .parse()
        .map_err(|e| format!("bad listen address {addr_text:?} (want ip:port): {e}"))?;

    let (mut pod, mut namespace, mut service, mut mode) = (None, None, None, None);
    let (mut cert, mut key, mut tcp_port, mut tls_port) = (None, None, None, None);
    let mut client_cas = None;
    for part in parts.map(str::trim).filter(|p| !p.is_empty()) {
        let slot = match part.split_once('=') {
            Some(("pod", v)) => (&mut pod, v),
            Some(("namespace", v)) => (&mut namespace, v),
            Some(("service", v)) => (&mut service, v),
            Some(("cert", v)) => (&mut cert, v),
            Some(("key", v)) => (&mut key, v),
            Some(("tcpport", v)) => (&mut tcp_port, v),
            Some(("tlsport", v)) => (&mut tls_port, v),
            Some(("clientcas", v)) => (&mut client_cas, v),
            None if matches!(part, "h2c" | "https" | "tcp" | "tls" | "udp" | "dns" | "grpc") => {
                (&mut mode, part)
            }
            _ => {
                return Err(format!(
                    "unknown spec item {part:?} (want pod=, namespace=, service=, cert=, key=, tcpport=, tlsport=, clientcas=, or one of h2c, https, tcp, tls, udp, dns, grpc)"
                ))
            }
        };
        if slot.0.replace(slot.1.to_owned()).is_some() {
            return Err(format!("spec item {part:?} given twice (or two modes)"));
        }
    }
    let or_env = |v: Option<String>, var: &str| v.or_else(|| env(var)).unwrap_or_default();
    let tcp_mode = matches!(mode.as_deref(), Some("tcp" | "tls"));
    let https_mode = mode.as_deref() == Some("https");
    if let Some(item) = [
        (&cert, "cert=", tcp_mode || https_mode),
        (&key, "key=", tcp_mode || https_mode),
        (&tcp_port, "tcpport=", tcp_mode),
        (&tls_port, "tlsport=", tcp_mode),
        (&client_cas, "clientcas=", https_mode),
    ]
    .iter()
    .find_map(|(v, name, applies)| (v.is_some() && !applies).then_some(*name))
    {
        let mode = mode.as_deref().unwrap_or("http");
        return Err(format!("{item} does not apply to the {mode} mode"));
    }
    let port_field = |v: Option<String>, var: &str, default: &str| {
        v.or_else(|| env(var))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let ports = TcpPortFields {
        tcp: port_field(tcp_port, "TCP_PORT", "3000"),
        tls: port_field(tls_port, "TLS_PORT", "8443"),
    };
    let protocol = match mode.as_deref() {
        None => Protocol::Http { h2c: false },
        Some("h2c") => Protocol::Http { h2c: true },
        Some("udp") => Protocol::Udp,
        Some("grpc") => Protocol::Grpc,
        Some("dns") => Protocol::Dns,
        Some("tcp") if cert.is_some() || key.is_some() => {
            return Err("cert=/key= belong to the tls mode; tcp is plaintext".to_owned());
        }
        Some("tcp") => Protocol::Tcp { ports, tls: None },
        Some("https") => {
            // HTTP mode spells the key variable without the second underscore.
            let cert = or_env(cert, "TLS_SERVER_CERT");
            let key = or_env(key, "TLS_SERVER_PRIVKEY");
            if cert.is_empty() || key.is_empty() {
                return Err(
                    "https needs cert= and key= (or $TLS_SERVER_CERT and $TLS_SERVER_PRIVKEY)"
                        .to_owned(),
                );
            }
            Protocol::Https {
                tls: KeyPairFiles {
                    cert: cert.into(),
                    key: key.into(),
                },
                client_cas: Some(or_env(client_cas, "TLS_CLIENT_CACERTS"))
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from),
            }
        }
        _ => {
            let cert = or_env(cert, "TLS_SERVER_CERT");
            let key = or_env(key, "TLS_SERVER_PRIV_KEY");
            if cert.is_empty() || key.is_empty() {
                return Err(
                    "tls needs cert= and key= (or $TLS_SERVER_CERT and $TLS_SERVER_PRIV_KEY)"
                        .to_owned(),
                );
            }
            Protocol::Tcp {
                ports,
                tls: Some(KeyPairFiles {
                    cert: cert.into(),
                    key: key.into(),
                }),
            }
        }
    };
    let spec = ServeSpec {
        addr,
        pod: or_env(pod, "POD_NAME"),
        namespace: or_env(namespace, "NAMESPACE"),
        service: or_env(service, "SERVICE_NAME"),
        protocol,
    };
    // The pod name goes into every response as `X-Echo-Pod`; reject it now rather than
    // failing requests later.
    HeaderValue::from_str(&spec.pod)
        .map_err(|_| format!("pod name {:?} is not a valid header value", spec.pod))?;
    Ok(spec)
}

/// State shared by every listener of the process.
pub struct App {
    pub http_port_field: String,
    pub ingress: String,
    pub verbose: bool,
    /// Retry-simulator attempt counts keyed by (namespace, pod, uuid): echo-basic keeps
    /// them per process, i.e. per pod.
    pub retry_attempts: Mutex<HashMap<(String, String, String), i64>>,
    /// `X-Body-Sha256` values already computed for `/_shardgate/bytes?n=N`.
    pub bytes_sha_cache: Mutex<HashMap<u64, String>>,
    /// The `/_shardgate/bytes` pattern, long enough that any frame is one sub-slice.
    pub pattern: Bytes,
}

/// One listener: a pod's identity and its counters.
pub struct Listener {
    pub app: Arc<App>,
    pub pod: String,
    pub pod_header: HeaderValue,
    pub namespace: String,
    pub service: String,
    /// Behave like echo-basic's h2c port (accepts prior-knowledge HTTP/2).
    pub h2c: bool,
    /// Behave like echo-basic's HTTPS port: TLS first (`https.rs`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TCP connections accepted since start.
    pub connections: AtomicU64,
    /// Requests served since start, not counting `/_shardgate/stats`.
    pub requests: AtomicU64,
    /// How many requests arrived per raw request target (`/_shardgate/` ones excluded), for
    /// `/_shardgate/seen`: the conformance runner checks mirrored requests with it, where
    /// upstream greps echo-basic's access log.
    pub seen: Mutex<HashMap<String, u64>>,
}

/// Lets a handler ask for its connection to be torn down with a TCP RST.
#[derive(Default)]
pub struct AbortSignal {
    requested: AtomicBool,
    notify: Notify,
}

impl AbortSignal {
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        // notify_one stores a permit, so the request is not lost if the connection task
        // is not waiting at this instant.
        self.notify.notify_one();
    }

    fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// Per-connection context handed to every request handler.
pub struct ConnCtx {
    pub listener: Arc<Listener>,
    pub abort: Arc<AbortSignal>,
    /// Never changes; `changed()` fails once the connection task has finished, which is how
    /// an aborting handler learns that the socket is gone.
    pub closed: watch::Receiver<()>,
    /// What the TLS handshake settled, on an HTTPS listener (the answer's `tls` object).
    pub tls: Option<https::TlsAssertions>,
}

/// The accepted socket as given to hyper. Owning the stream here (rather than handing hyper
/// a bare `TcpStream`) is what lets an abort set `SO_LINGER=0` right before the close, so
/// the kernel sends RST instead of FIN, as echo-basic's retry simulator does.
struct AbortableStream {
    inner: TcpStream,
    abort: Arc<AbortSignal>,
}

impl Drop for AbortableStream {
    fn drop(&mut self) {
        if self.abort.is_requested() {
            // If this fails the peer sees a FIN instead of an RST: still a failed request.
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for AbortableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AbortableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
        .and_then(|runtime| {
            let result = runtime.block_on(run(cli));
            // Do not wait on connections or hashing still in flight once we decided to exit.
            runtime.shutdown_timeout(Duration::from_millis(200));
            result
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the cause chain; test logs do not need anyhow's backtrace.
            eprintln!("shardgate-echo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let app = Arc::new(App {
        http_port_field: cli.http_port_field,
        ingress: cli.ingress,
        verbose: cli.verbose,
        retry_attempts: Mutex::new(HashMap::new()),
        bytes_sha_cache: Mutex::new(HashMap::new()),
        pattern: handlers::bytes_pattern(),
    });

    // Bind everything before announcing anything: tests treat `ready` as "all ports open".
    let mut bound = Vec::with_capacity(cli.serve.len());
    for spec in cli.serve {
        let (socket, local) = bind(spec, &app).await?;
        bound.push((socket, local));
    }

    // Install the handlers before `ready`, so a test may signal us right after reading it.
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    {
        let mut out = std::io::stdout().lock();
        for (socket, local) in &bound {
            writeln!(out, "listening {local} pod={}", socket.pod())?;
        }
        writeln!(out, "ready")?;
        out.flush()?;
    }

    for (socket, _) in bound {
        match socket {
            Bound::Http(socket, listener) => tokio::spawn(accept_loop(socket, listener)),
            Bound::Tcp(socket, echo) => tokio::spawn(tcp::accept_loop(socket, echo)),
            Bound::Grpc(socket, echo) => tokio::spawn(grpc::accept_loop(socket, echo)),
            Bound::Udp(socket, answering, pod) => {
                tokio::spawn(udp::serve(socket, answering, pod, app.verbose))
            }
        };
    }

    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    Ok(())
}

/// A bound socket and what serves it.
enum Bound {
    Http(TcpListener, Arc<Listener>),
    Tcp(TcpListener, Arc<tcp::TcpEcho>),
    Udp(UdpSocket, Arc<udp::Answering>, String),
    Grpc(TcpListener, Arc<grpc::GrpcEcho>),
}

impl Bound {
    fn pod(&self) -> &str {
        match self {
            Self::Http(_, listener) => &listener.pod,
            Self::Tcp(_, echo) => &echo.pod,
            Self::Udp(_, _, pod) => pod,
            Self::Grpc(_, echo) => &echo.pod,
        }
    }
}

/// Binds one spec's socket (and loads its key pair), ready to serve.
async fn bind(spec: ServeSpec, app: &Arc<App>) -> anyhow::Result<(Bound, SocketAddr)> {
    let addr = spec.addr;
    // An HTTPS port is the HTTP port's handler behind TLS.
    let https_config = match &spec.protocol {
        Protocol::Https { tls, client_cas } => Some(https::server_config(
            &tls.cert,
            &tls.key,
            client_cas.as_deref(),
        )?),
        _ => None,
    };
    let bound = match spec.protocol {
        Protocol::Http { .. } | Protocol::Https { .. } => {
            let h2c = matches!(spec.protocol, Protocol::Http { h2c: true });
            let socket = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let pod_header = HeaderValue::from_str(&spec.pod)
                .with_context(|| format!("pod name {:?} is not a valid header value", spec.pod))?;
            let listener = Arc::new(Listener {
                app: Arc::clone(app),
                pod: spec.pod,
                pod_header,
                namespace: spec.namespace,
                service: spec.service,
                h2c,
                tls: https_config,
                connections: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                seen: Mutex::new(HashMap::new()),
            });
            Bound::Http(socket, listener)
        }
        Protocol::Tcp { ports, tls } => {
            let tls = match tls {
                Some(files) => Some(tls::server_config(&files.cert, &files.key)?),
                None => None,
            };
            let socket = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let echo = tcp::TcpEcho {
                namespace: spec.namespace,
                ingress: app.ingress.clone(),
                service: spec.service,
                pod: spec.pod,
                tcp_port_field: ports.tcp,
                tls_port_field: ports.tls,
                tls,
                verbose: app.verbose,
            };
            Bound::Tcp(socket, Arc::new(echo))
        }
        Protocol::Grpc => {
            let socket = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let echo = grpc::GrpcEcho {
                namespace: spec.namespace,
                ingress: app.ingress.clone(),
                service: spec.service,
                pod: spec.pod,
                verbose: app.verbose,
            };
            Bound::Grpc(socket, Arc::new(echo))
        }
        Protocol::Udp | Protocol::Dns => {
            let socket = UdpSocket::bind(addr)
                .await
                .with_context(|| format!("binding udp {addr}"))?;
            let answering = match spec.protocol {
                Protocol::Dns => udp::Answering::Dns,
                _ => udp::Answering::Echo(udp::EchoIdentity {
                    namespace: spec.namespace,
                    ingress: app.ingress.clone(),
                    service: spec.service,
                    pod: spec.pod.clone(),
                }),
            };
            Bound::Udp(socket, Arc::new(answering), spec.pod)
        }
    };
    let local = match &bound {
        Bound::Http(socket, _) | Bound::Tcp(socket, _) | Bound::Grpc(socket, _) => {
            socket.local_addr()
        }
        Bound::Udp(socket, _, _) => socket.local_addr(),
    }
    .context("reading the bound address")?;
    Ok((bound, local))
}

async fn accept_loop(socket: TcpListener, listener: Arc<Listener>) {
    loop {
        match socket.accept().await {
            Ok((stream, _peer)) => {
                listener.connections.fetch_add(1, Ordering::Relaxed);
                // Small JSON answers should not wait for Nagle.
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(stream, Arc::clone(&listener)));
            }
            Err(e) => {
                // Typically EMFILE; back off instead of spinning, and keep serving.
                eprintln!("shardgate-echo: accept on pod {}: {e}", listener.pod);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, listener: Arc<Listener>) {
    if let Some(config) = listener.tls.clone() {
        return https::serve_connection(stream, listener, config).await;
    }
    let abort = Arc::new(AbortSignal::default());
    // Dropped when this function returns, which wakes handlers waiting for the close.
    let (_closed_tx, closed_rx) = watch::channel(());
    let verbose = listener.app.verbose;
    let h2c = listener.h2c;
    let ctx = Arc::new(ConnCtx {
        listener,
        abort: Arc::clone(&abort),
        closed: closed_rx,
        tls: None,
    });
    let io = TokioIo::new(AbortableStream {
        inner: stream,
        abort: Arc::clone(&abort),
    });
    let service = service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, std::convert::Infallible>(handlers::handle(ctx, req).await) }
    });

    // Go's net/http has no header-read or idle timeout by default; keep-alive connections
    // must stay open as long as the client (the proxy's pool) wants them.
    let result = if h2c {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .keep_alive(true)
            .half_close(true)
            .title_case_headers(true)
            .header_read_timeout(None);
        // The h2 preface is detected automatically; anything else is served as HTTP/1.x.
        let conn = builder.serve_connection(io, service);
        tokio::select! {
            res = conn => res.map_err(|e| e.to_string()),
            () = abort.notify.notified() => Ok(()),
        }
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .keep_alive(true)
            // A client that half-closes after sending its request still gets the answer.
            .half_close(true)
            // Go writes canonical header names; title case is the closest hyper offers.
            .title_case_headers(true)
            .header_read_timeout(None);
        // Upgrades: the WebSocket echo on `/ws` (`ws.rs`).
        let conn = builder.serve_connection(io, service).with_upgrades();
        tokio::select! {
            res = conn => res.map_err(|e| e.to_string()),
            () = abort.notify.notified() => Ok(()),
        }
    };
    // Leaving the select dropped the connection and with it the socket; on abort the
    // AbortableStream drop turned that close into an RST.
    if let Err(e) = result {
        if verbose {
            eprintln!("shardgate-echo: connection error: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "POD_NAME" => Some("env-pod".to_owned()),
            "NAMESPACE" => Some("env-ns".to_owned()),
            "TLS_SERVER_CERT" => Some("/env/crt".to_owned()),
            "TLS_SERVER_PRIV_KEY" => Some("/env/key".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn serve_specs_parse() {
        let spec = parse_serve_spec_with_env(
            "127.0.0.1:0,pod=infra-backend-v1-0-0,namespace=gateway-conformance-infra,service=infra-backend-v1,h2c",
            env,
        )
        .unwrap();
        assert_eq!(
            spec,
            ServeSpec {
                addr: "127.0.0.1:0".parse().unwrap(),
                pod: "infra-backend-v1-0-0".to_owned(),
                namespace: "gateway-conformance-infra".to_owned(),
                service: "infra-backend-v1".to_owned(),
                protocol: Protocol::Http { h2c: true },
            }
        );

        let spec = parse_serve_spec_with_env("127.0.0.1:3000", env).unwrap();
        assert_eq!(spec.pod, "env-pod");
        assert_eq!(spec.namespace, "env-ns");
        assert_eq!(spec.service, "");
        assert_eq!(spec.protocol, Protocol::Http { h2c: false });

        assert!(parse_serve_spec_with_env("localhost:80,pod=a", env).is_err());
        assert!(parse_serve_spec_with_env("127.0.0.1:80,colour=red", env).is_err());
        assert!(parse_serve_spec_with_env("127.0.0.1:80,pod=a\tb\u{7f}", env).is_err());
    }

    #[test]
    fn https_specs_take_http_mode_key_variables_and_client_cas() {
        let spec = parse_serve_spec_with_env(
            "127.0.0.1:8443,pod=p,https,cert=/a.crt,key=/a.key,clientcas=/ca.pem",
            |_| None,
        )
        .expect("parses");
        assert_eq!(
            spec.protocol,
            Protocol::Https {
                tls: KeyPairFiles {
                    cert: "/a.crt".into(),
                    key: "/a.key".into()
                },
                client_cas: Some("/ca.pem".into()),
            }
        );

        // HTTP mode reads TLS_SERVER_PRIVKEY, not TCP mode's TLS_SERVER_PRIV_KEY.
        let http_env = |name: &str| match name {
            "TLS_SERVER_CERT" => Some("/env/crt".to_owned()),
            "TLS_SERVER_PRIVKEY" => Some("/env/key".to_owned()),
            _ => None,
        };
        let spec = parse_serve_spec_with_env("127.0.0.1:0,https", http_env).expect("parses");
        assert_eq!(
            spec.protocol,
            Protocol::Https {
                tls: KeyPairFiles {
                    cert: "/env/crt".into(),
                    key: "/env/key".into()
                },
                client_cas: None,
            }
        );
        assert!(parse_serve_spec_with_env("127.0.0.1:0,https", env).is_err());
        assert!(parse_serve_spec_with_env("127.0.0.1:0,https,tlsport=1", http_env).is_err());
        assert!(parse_serve_spec_with_env("127.0.0.1:0,tls,clientcas=/ca", env).is_err());
    }

    #[test]
    fn tcp_and_tls_specs_carry_ports_and_key_pairs() {
        let spec = parse_serve_spec_with_env("127.0.0.1:3000,pod=p,namespace=n,tcp", |_| None)
            .expect("parses");
        let ports = TcpPortFields {
            tcp: "3000".to_owned(),
            tls: "8443".to_owned(),
        };
        assert_eq!(
            spec.protocol,
            Protocol::Tcp {
                ports: ports.clone(),
                tls: None
            }
        );

        let spec = parse_serve_spec_with_env(
            "127.0.0.1:0,pod=p,tls,cert=/a.crt,key=/a.key,tcpport=4000,tlsport=4443",
            env,
        )
        .expect("parses");
        assert_eq!(
            spec.protocol,
            Protocol::Tcp {
                ports: TcpPortFields {
                    tcp: "4000".to_owned(),
                    tls: "4443".to_owned()
                },
                tls: Some(KeyPairFiles {
                    cert: "/a.crt".into(),
                    key: "/a.key".into()
                }),
            }
        );

        // The key pair falls back to echo-basic's variables, and is required.
        let spec = parse_serve_spec_with_env("127.0.0.1:0,tls", env).expect("parses");
        assert_eq!(
            spec.protocol,
            Protocol::Tcp {
                ports,
                tls: Some(KeyPairFiles {
                    cert: "/env/crt".into(),
                    key: "/env/key".into()
                }),
            }
        );
        assert!(parse_serve_spec_with_env("127.0.0.1:0,tls", |_| None).is_err());
    }

    #[test]
    fn datagram_modes_parse_and_options_stay_with_their_mode() {
        let udp = parse_serve_spec_with_env("127.0.0.1:8080,pod=p,udp", env).expect("parses");
        assert_eq!(udp.protocol, Protocol::Udp);
        let dns = parse_serve_spec_with_env("127.0.0.1:53,pod=p,dns", env).expect("parses");
        assert_eq!(dns.protocol, Protocol::Dns);
        let grpc = parse_serve_spec_with_env("127.0.0.1:3000,pod=p,grpc", env).expect("parses");
        assert_eq!(grpc.protocol, Protocol::Grpc);
        assert!(parse_serve_spec_with_env("127.0.0.1:0,grpc,cert=/a", env).is_err());

        assert!(parse_serve_spec_with_env("127.0.0.1:0,udp,tcpport=1", env).is_err());
        assert!(parse_serve_spec_with_env("127.0.0.1:0,cert=/a", env).is_err());
        assert!(parse_serve_spec_with_env("127.0.0.1:0,tcp,cert=/a,key=/b", env).is_err());
        assert!(parse_serve_spec_with_env("127.0.0.1:0,tcp,udp", env).is_err());
        assert!(parse_serve_spec_with_env("127.0.0.1:0,pod=a,pod=b", env).is_err());
    }
}
