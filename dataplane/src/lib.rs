//! Shardgate's data plane.
//!
//! One worker thread per core, each a monoio event loop (io_uring, or epoll
//! where io_uring is unavailable) pinned to its core. Each worker owns its
//! SO_REUSEPORT listening sockets, its compiled route table, its upstream
//! connection pool and its buffers; nothing is shared on the request path.
//! Workers follow the shared-memory segment the controlplane publishes into,
//! and swap in each new snapshot between requests.
//!
//! ```text
//!  shm segment ─▶ worker::apply (decode, compile, bind) ─▶ Rc<RouteTable>
//!  accept ─▶ http1::serve (parse, route) ─▶ proxy (pool ─▶ upstream) ─▶ response
//! ```
//!
//! It holds no Kubernetes credentials and never talks to the API. What it
//! does not do yet: TLS, HTTP/2, L4 routes, filters (later issues).
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
mod http1;
mod listener;
pub mod metrics;
mod pool;
mod proxy;
mod respond;
pub mod runtime;
pub mod shared;
mod stop;
mod transfer;
mod worker;

pub use runtime::{IoDriver, WorkerConfig};
pub use shared::Shared;
