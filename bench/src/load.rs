//! The load generator: thread-per-core monoio workers, each driving its
//! share of the connections, latencies in hdrhistogram.
//!
//! - **Closed loop** (default): every connection sends its next request as
//!   soon as the previous response is complete; measures throughput.
//! - **Open loop** (`rate`): requests are scheduled at a constant total rate
//!   (connection k takes requests k, k+N, k+2N, …) and each latency counts
//!   from the request's *scheduled* time, so a stall delays the schedule and
//!   shows in the percentiles (no coordinated omission).
//! - **New connection per request** (`new_connection`): connect, one
//!   request with `Connection: close`, read to the end, close.
//! - **TLS** (`tls`): rustls (ring) over monoio, TLS 1.3 only, one cipher
//!   suite (TLS_AES_128_GCM_SHA256) and one key exchange (X25519), so every
//!   proxy negotiates the same thing. The server's certificate is pinned by
//!   its bytes (no chain building) and its handshake signature verified.
//!   With `resume`, a client session cache (TLS 1.3 tickets) per
//!   connection; without, every handshake is a full one. Each completed handshake's kind
//!   (full or resumed) is counted.

use hdrhistogram::Histogram;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio_rustls::{ClientTlsStream, TlsConnector};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, SignatureScheme};
use serde::Serialize;
use shardgate_dataplane::runtime::{uring_runtime, UringTaskrun};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to load and how.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Host header.
    pub host: String,
    /// Request path.
    pub path: String,
    /// Open connections (closed loop and open loop).
    pub connections: usize,
    /// Worker threads.
    pub threads: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured warm-up before it.
    pub warmup: Duration,
    /// Total requests per second, open loop; `None`: closed loop.
    pub rate: Option<f64>,
    /// A new connection per request.
    pub new_connection: bool,
    /// HTTPS instead of cleartext.
    pub tls: Option<TlsSpec>,
    /// Per-interval counts of the measured window (`timeline` in the
    /// result), in milliseconds; 0: none.
    pub timeline_ms: u64,
    /// io_uring task-run mode of the load threads (epoll where io_uring is
    /// unavailable).
    pub taskrun: UringTaskrun,
}

/// The client side of TLS.
#[derive(Debug, Clone)]
pub struct TlsSpec {
    /// SNI.
    pub server_name: String,
    /// The certificate every server must present (DER).
    pub pinned: Vec<u8>,
    /// Keep a session cache and resume (TLS 1.3 tickets).
    pub resume: bool,
}

/// What one load run saw.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct LoadResult {
    /// Responses with a 2xx status in the measured window.
    pub requests: u64,
    /// Failed requests (connect, TLS, I/O, non-2xx) in the measured window.
    pub errors: u64,
    /// Of the errors: a reused keep-alive connection closed or reset before
    /// any byte of the response, the case an HTTP client may retry
    /// (RFC 9112 §9.3.1); counted as errors all the same.
    #[serde(default)]
    pub retryable_errors: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Requests per second.
    pub rps: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Response body bytes received in the measured window.
    pub body_bytes: u64,
    /// TLS: connections closed in the measured window whose handshake
    /// completed.
    #[serde(default)]
    pub handshakes: u64,
    /// TLS: of those, resumed ones.
    #[serde(default)]
    pub resumed: u64,
    /// Width of a timeline interval, ms (0: no timeline).
    #[serde(default)]
    pub timeline_ms: u64,
    /// Per interval of the measured window: `[successes, errors]`.
    #[serde(default)]
    pub timeline: Vec<[u64; 2]>,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    retryable: u64,
    body_bytes: u64,
    handshakes: u64,
    resumed: u64,
    timeline: Vec<[u64; 2]>,
}

impl Tally {
    fn add(&mut self, t: Tally) {
        self.ok += t.ok;
        self.errors += t.errors;
        self.retryable += t.retryable;
        self.body_bytes += t.body_bytes;
        self.handshakes += t.handshakes;
        self.resumed += t.resumed;
        if self.timeline.len() < t.timeline.len() {
            self.timeline.resize(t.timeline.len(), [0, 0]);
        }
        for (a, b) in self.timeline.iter_mut().zip(t.timeline) {
            a[0] += b[0];
            a[1] += b[1];
        }
    }
}

/// Runs the load and reports.
pub fn run(spec: &LoadSpec) -> anyhow::Result<LoadResult> {
    let threads = spec.threads.max(1);
    let tls = match &spec.tls {
        Some(t) => Some((
            TlsConnector::from(client_config(t)?),
            ServerName::try_from(t.server_name.clone())?,
        )),
        None => None,
    };
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let spec = spec.clone();
            let tls = tls.clone();
            std::thread::spawn(move || -> anyhow::Result<(Histogram<u64>, Tally)> {
                let taskrun = spec.taskrun;
                let work = worker(spec, tls, t, threads, start, measure_from, end);
                match uring_runtime(taskrun) {
                    Ok((mut rt, _)) => rt.block_on(work),
                    Err(_) => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()?
                        .block_on(work),
                }
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut tally = Tally::default();
    for h in handles {
        let (h, t) = h
            .join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
        hist.add(h)?;
        tally.add(t);
    }
    let seconds = spec.duration.as_secs_f64();
    Ok(LoadResult {
        requests: tally.ok,
        errors: tally.errors,
        retryable_errors: tally.retryable,
        seconds,
        rps: tally.ok as f64 / seconds,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        body_bytes: tally.body_bytes,
        handshakes: tally.handshakes,
        resumed: tally.resumed,
        timeline_ms: spec.timeline_ms,
        timeline: tally.timeline,
    })
}

/// TLS 1.3, TLS_AES_128_GCM_SHA256, X25519; the pinned certificate; a
/// session cache only when resuming.
pub fn client_config(t: &TlsSpec) -> anyhow::Result<Arc<ClientConfig>> {
    use rustls::crypto::ring;
    let provider = Arc::new(CryptoProvider {
        cipher_suites: vec![ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
        kx_groups: vec![ring::kx_group::X25519],
        ..ring::default_provider()
    });
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            der: t.pinned.clone(),
            provider,
        }))
        .with_no_client_auth();
    config.resumption = if t.resume {
        Resumption::in_memory_sessions(4096)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// Accepts exactly one certificate, by its bytes, and checks the server's
/// handshake signature with it.
#[derive(Debug)]
struct Pinned {
    der: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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

type Tls = Option<(TlsConnector, ServerName<'static>)>;

async fn worker(
    spec: LoadSpec,
    tls: Tls,
    thread: usize,
    threads: usize,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> anyhow::Result<(Histogram<u64>, Tally)> {
    let hist = Rc::new(RefCell::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let tally = Rc::new(RefCell::new(Tally::default()));
    if spec.timeline_ms > 0 {
        let n = spec
            .duration
            .as_millis()
            .div_ceil(u128::from(spec.timeline_ms));
        tally.borrow_mut().timeline = vec![[0, 0]; n as usize];
    }
    let request = Rc::new(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n{}\r\n",
            spec.path,
            spec.host,
            if spec.new_connection {
                "Connection: close\r\n"
            } else {
                ""
            }
        )
        .into_bytes(),
    );
    let mut tasks = Vec::new();
    for k in (thread..spec.connections).step_by(threads) {
        // Resuming: a session cache per connection, so each reconnection
        // finds the ticket its previous connection received (one cache
        // shared by all would run dry whenever more connections handshake
        // at once than it keeps tickets per server).
        let tls = match (&tls, &spec.tls) {
            (Some((_, name)), Some(t)) if t.resume => {
                Some((TlsConnector::from(client_config(t)?), name.clone()))
            }
            _ => tls.clone(),
        };
        let conn = Conn {
            spec: spec.clone(),
            tls,
            index: k,
            request: Rc::clone(&request),
            hist: Rc::clone(&hist),
            tally: Rc::clone(&tally),
            start,
            measure_from,
            end,
        };
        tasks.push(monoio::spawn(conn.run()));
    }
    for t in tasks {
        t.await;
    }
    let hist = Rc::try_unwrap(hist)
        .map_err(|_| anyhow::anyhow!("histogram still shared"))?
        .into_inner();
    let tally = Rc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("tally still shared"))?
        .into_inner();
    Ok((hist, tally))
}

/// A connection, cleartext or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

impl Stream {
    /// Whether its handshake was a resumption (`None`: cleartext).
    fn resumed(self) -> Option<bool> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(t) => {
                let (_, conn) = t.into_parts();
                Some(conn.handshake_kind() == Some(HandshakeKind::Resumed))
            }
        }
    }
}

struct Conn {
    spec: LoadSpec,
    tls: Tls,
    index: usize,
    request: Rc<Vec<u8>>,
    hist: Rc<RefCell<Histogram<u64>>>,
    tally: Rc<RefCell<Tally>>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

/// How one request ended.
enum Outcome {
    /// A response with this status and body length.
    Response(u16, u64),
    /// No response; `retryable`: a reused connection that closed before
    /// any byte of the response.
    Failed { retryable: bool },
}

impl Conn {
    async fn connect(&self) -> std::io::Result<Stream> {
        let s = TcpStream::connect_addr(self.spec.addr).await?;
        let _ = s.set_nodelay(true);
        match &self.tls {
            None => Ok(Stream::Plain(s)),
            Some((connector, name)) => connector
                .connect(name.clone(), s)
                .await
                .map(|t| Stream::Tls(Box::new(t)))
                .map_err(std::io::Error::other),
        }
    }

    async fn run(self) {
        let now = Instant::now();
        if self.start > now {
            monoio::time::sleep(self.start - now).await;
        }
        let mut stream: Option<Stream> = None;
        // Requests already answered on `stream`.
        let mut served = 0u64;
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut request = self.request.as_ref().clone();
        // Open loop: this connection's share of the schedule.
        let interval = self
            .spec
            .rate
            .map(|r| Duration::from_secs_f64(self.spec.connections as f64 / r));
        let mut next = self.start
            + interval.map_or(Duration::ZERO, |i| {
                i.mul_f64(self.index as f64 / self.spec.connections as f64)
            });
        loop {
            let scheduled = match interval {
                Some(i) => {
                    let now = Instant::now();
                    if next > now {
                        monoio::time::sleep(next - now).await;
                    }
                    let s = next;
                    next += i;
                    s
                }
                None => Instant::now(),
            };
            if scheduled >= self.end {
                return;
            }
            if stream.is_none() {
                match self.connect().await {
                    Ok(s) => {
                        stream = Some(s);
                        served = 0;
                    }
                    Err(_) => {
                        self.count(scheduled, Outcome::Failed { retryable: false }, None);
                        monoio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
            }
            let mut got_bytes = false;
            let outcome = match stream.as_mut().expect("connected above") {
                Stream::Plain(s) => exchange(s, &mut request, &mut buf, &mut got_bytes).await,
                Stream::Tls(s) => {
                    exchange(s.as_mut(), &mut request, &mut buf, &mut got_bytes).await
                }
            };
            match outcome {
                Ok((status, body, keep)) => {
                    served += 1;
                    let closed = if !keep || self.spec.new_connection {
                        stream.take().and_then(Stream::resumed)
                    } else {
                        None
                    };
                    self.count(scheduled, Outcome::Response(status, body), closed);
                }
                Err(_) => {
                    let retryable = served > 0 && !got_bytes;
                    self.count(scheduled, Outcome::Failed { retryable }, None);
                    stream = None;
                }
            }
        }
    }

    /// Counts one request scheduled at `scheduled`; `closed`: its
    /// connection was closed after it, a TLS one resumed or not.
    fn count(&self, scheduled: Instant, outcome: Outcome, closed: Option<bool>) {
        if scheduled < self.measure_from {
            return;
        }
        let mut t = self.tally.borrow_mut();
        let ok = match outcome {
            Outcome::Response(s, body) if (200..300).contains(&s) => {
                t.ok += 1;
                t.body_bytes += body;
                let us = scheduled.elapsed().as_micros().max(1) as u64;
                let _ = self.hist.borrow_mut().record(us.min(60_000_000));
                true
            }
            Outcome::Response(..) => {
                t.errors += 1;
                false
            }
            Outcome::Failed { retryable } => {
                t.errors += 1;
                t.retryable += u64::from(retryable);
                false
            }
        };
        if let Some(resumed) = closed {
            t.handshakes += 1;
            t.resumed += u64::from(resumed);
        }
        if self.spec.timeline_ms > 0 {
            let i = (Instant::now()
                .saturating_duration_since(self.measure_from)
                .as_millis()
                / u128::from(self.spec.timeline_ms)) as usize;
            if let Some(slot) = t.timeline.get_mut(i) {
                slot[usize::from(!ok)] += 1;
            }
        }
    }
}

/// Sends one request and reads its response: `(status, body bytes,
/// connection reusable)`. `got_bytes` tells whether any byte of the
/// response arrived (for the retryable-error count).
async fn exchange<S: AsyncReadRent + AsyncWriteRent>(
    s: &mut S,
    request: &mut Vec<u8>,
    buf: &mut Vec<u8>,
    got_bytes: &mut bool,
) -> std::io::Result<(u16, u64, bool)> {
    let (r, req) = s.write_all(std::mem::take(request)).await;
    *request = req;
    r?;
    buf.clear();
    let (status, head_len, length, keep) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let mut length = None;
                let mut keep = resp.version == Some(1);
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok());
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        keep = !h.value.eq_ignore_ascii_case(b"close");
                    }
                }
                break (resp.code.unwrap_or(0), n, length, keep);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        if read_more(s, buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        *got_bytes = true;
    };
    let mut have = (buf.len() - head_len) as u64;
    match length {
        Some(n) => {
            while have < n {
                buf.clear();
                let got = read_more(s, buf).await?;
                if got == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                have += got as u64;
            }
            Ok((status, n, keep))
        }
        // Without a length the body runs to the end of the connection.
        None => loop {
            buf.clear();
            let got = read_more(s, buf).await?;
            if got == 0 {
                return Ok((status, have, false));
            }
            have += got as u64;
        },
    }
}

async fn read_more<S: AsyncReadRent>(s: &mut S, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use monoio::buf::{IoBufMut, SliceMut};
    if buf.capacity() - buf.len() < 16 * 1024 {
        buf.reserve(64 * 1024);
    }
    let b = std::mem::take(buf);
    let len = b.len();
    let (r, slice): (_, SliceMut<Vec<u8>>) = s.read(b.slice_mut(len..)).await;
    *buf = slice.into_inner();
    r
}
