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

use hdrhistogram::Histogram;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use serde::Serialize;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
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
}

/// What one load run saw.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct LoadResult {
    /// Responses with a 2xx status in the measured window.
    pub requests: u64,
    /// Failed requests (connect, I/O, non-2xx) in the measured window.
    pub errors: u64,
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
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    body_bytes: u64,
}

/// Runs the load and reports.
pub fn run(spec: &LoadSpec) -> anyhow::Result<LoadResult> {
    let threads = spec.threads.max(1);
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let spec = spec.clone();
            std::thread::spawn(move || -> anyhow::Result<(Histogram<u64>, Tally)> {
                let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .enable_timer()
                    .build()?;
                rt.block_on(worker(spec, t, threads, start, measure_from, end))
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
        tally.ok += t.ok;
        tally.errors += t.errors;
        tally.body_bytes += t.body_bytes;
    }
    let seconds = spec.duration.as_secs_f64();
    Ok(LoadResult {
        requests: tally.ok,
        errors: tally.errors,
        seconds,
        rps: tally.ok as f64 / seconds,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        body_bytes: tally.body_bytes,
    })
}

async fn worker(
    spec: LoadSpec,
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
        let conn = Conn {
            spec: spec.clone(),
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

struct Conn {
    spec: LoadSpec,
    index: usize,
    request: Rc<Vec<u8>>,
    hist: Rc<RefCell<Histogram<u64>>>,
    tally: Rc<RefCell<Tally>>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Conn {
    async fn run(self) {
        let now = Instant::now();
        if self.start > now {
            monoio::time::sleep(self.start - now).await;
        }
        let mut stream: Option<TcpStream> = None;
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
                match TcpStream::connect_addr(self.spec.addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        stream = Some(s);
                    }
                    Err(_) => {
                        self.count(scheduled, None, 0);
                        monoio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
            }
            let s = stream.as_mut().expect("connected above");
            let outcome = exchange(s, &mut request, &mut buf).await;
            match outcome {
                Ok((status, body, keep)) => {
                    self.count(scheduled, Some(status), body);
                    if !keep || self.spec.new_connection {
                        stream = None;
                    }
                }
                Err(_) => {
                    self.count(scheduled, None, 0);
                    stream = None;
                }
            }
        }
    }

    fn count(&self, scheduled: Instant, status: Option<u16>, body: u64) {
        if scheduled < self.measure_from {
            return;
        }
        let mut t = self.tally.borrow_mut();
        match status {
            Some(s) if (200..300).contains(&s) => {
                t.ok += 1;
                t.body_bytes += body;
                let us = scheduled.elapsed().as_micros().max(1) as u64;
                let _ = self.hist.borrow_mut().record(us.min(60_000_000));
            }
            _ => t.errors += 1,
        }
    }
}

/// Sends one request and reads its response: `(status, body bytes,
/// connection reusable)`.
async fn exchange(
    s: &mut TcpStream,
    request: &mut Vec<u8>,
    buf: &mut Vec<u8>,
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

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
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
