//! The per-worker upstream connection pool: idle HTTP/1.1 keep-alive
//! connections by endpoint, most recently used first.

use crate::h2c::{H2Clients, H2Exchange};
use crate::transfer::Io;
use monoio::net::TcpStream;
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Idle connections older than this are closed rather than reused: many
/// servers time idle clients out after 60 s, and a reused connection that
/// the server is closing costs a retry.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// Initial size of an upstream read buffer.
const BUF_SIZE: usize = 16 * 1024;

/// How bytes reach an upstream: its own TCP connection (HTTP/1.1), or a
/// stream of the worker's HTTP/2 connection to it (h2c).
pub(crate) enum UpstreamIo {
    /// HTTP/1.1 over TCP.
    Tcp(TcpStream),
    /// One h2c stream, spoken to as HTTP/1.1.
    H2(Box<H2Exchange>),
}

impl Io for UpstreamIo {
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read_more(buf).await,
            Self::H2(s) => s.read_more(buf).await,
        }
    }

    async fn write_prefix(&mut self, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_prefix(buf, n).await,
            Self::H2(s) => s.write_prefix(buf, n).await,
        }
    }
}

/// A connection to one upstream endpoint, with its read buffer.
pub(crate) struct Upstream {
    pub(crate) stream: UpstreamIo,
    pub(crate) buf: Vec<u8>,
    pub(crate) addr: SocketAddr,
    /// Taken from the pool (may have been closed by the server meanwhile).
    pub(crate) reused: bool,
    idle_since: Instant,
}

impl Upstream {
    /// Connects to `addr` within `timeout`.
    pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, ConnectError> {
        match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
            Err(_) => Err(ConnectError::Timeout),
            Ok(Err(_)) => Err(ConnectError::Failed),
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(Self {
                    stream: UpstreamIo::Tcp(stream),
                    buf: Vec::with_capacity(BUF_SIZE),
                    addr,
                    reused: false,
                    idle_since: Instant::now(),
                })
            }
        }
    }
}

impl Upstream {
    /// A new stream on the worker's h2c connection to `addr`.
    pub(crate) async fn h2c(
        clients: &H2Clients,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        match clients.ready(addr, timeout).await {
            Ok(handle) => Ok(Self {
                stream: UpstreamIo::H2(Box::new(H2Exchange::new(handle))),
                buf: Vec::with_capacity(BUF_SIZE),
                addr,
                reused: false,
                idle_since: Instant::now(),
            }),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(ConnectError::Timeout),
            Err(_) => Err(ConnectError::Failed),
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectError {
    /// Refused, unreachable or reset.
    Failed,
    /// No answer in time.
    Timeout,
}

/// Idle upstream connections of one worker.
pub(crate) struct Pool {
    idle: RefCell<foldhash::HashMap<SocketAddr, Vec<Upstream>>>,
    max_idle: usize,
}

impl Pool {
    pub(crate) fn new(max_idle: usize) -> Self {
        Self {
            idle: RefCell::default(),
            max_idle,
        }
    }

    /// The most recently returned connection to `addr`, if any is fresh.
    pub(crate) fn take(&self, addr: SocketAddr) -> Option<Upstream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(mut up) = list.pop() {
            if up.idle_since.elapsed() < MAX_IDLE_AGE {
                up.reused = true;
                return Some(up);
            }
        }
        None
    }

    /// Returns a connection whose last exchange completed cleanly (an h2c
    /// stream is done for good and is not kept).
    pub(crate) fn put(&self, mut up: Upstream) {
        if matches!(up.stream, UpstreamIo::H2(_)) {
            return;
        }
        up.buf.clear();
        up.idle_since = Instant::now();
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(up.addr).or_default();
        if list.len() < self.max_idle {
            list.push(up);
        }
    }

    /// Closes connections idle for too long (called about once a second).
    pub(crate) fn expire(&self) {
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain(|u| u.idle_since.elapsed() < MAX_IDLE_AGE);
        }
        idle.retain(|_, list| !list.is_empty());
    }
}
