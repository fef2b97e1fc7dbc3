//! Shardgate's data plane.
//!
//! One worker thread per core, each a monoio event loop (io_uring, or epoll
//! where io_uring is unavailable) pinned to its core. Each worker owns its
//! SO_REUSEPORT listening sockets, its compiled route table, its upstream
//! connection pool and its buffers; nothing is shared on the request path.
//! Workers follow the shared-memory segment the controlplane publishes into,
//! and swap in each new snapshot between requests; a wake thread blocked in
//! the segment's futex nudges them as soon as a snapshot is published.
//!
//! ```text
//!  publication ─futex─▶ wake thread ─one byte each─▶ workers (else their poll tick)
//!  shm segment ─▶ worker::apply (decode, compile, bind) ─▶ Rc<RouteTable>
//!  accept ─▶ [tls: peek SNI, handshake] ─▶ http1::serve (parse, route) ─▶ proxy ─▶ response
//!  accept ─▶ l4::serve (TCP, TLS passthrough / terminate) ─▶ splice
//!  datagram ─▶ udp::serve (per-client session) ─▶ backend ─▶ replies
//! ```
//!
//! It holds no Kubernetes credentials and never talks to the API. HTTP/2
//! arrives with its own issue.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
mod h2;
mod h2c;
mod http1;
mod l4;
mod listener;
pub mod metrics;
mod pool;
mod proxy;
mod respond;
pub mod runtime;
pub mod shared;
mod stop;
mod tls;
mod transfer;
mod udp;
mod wake;
mod worker;

pub use h2::H2Limits;
pub use runtime::{IoDriver, WorkerConfig};
pub use shared::Shared;
