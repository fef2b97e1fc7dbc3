//! Shardgate's core: what the control plane and the data plane agree on.
//!
//! The controlplane translates Gateway API objects into a [`Snapshot`],
//! encodes it with [`encode`] and publishes it through a [`shm`] segment. Each
//! dataplane worker reads the segment, [`decode`]s the bytes (trusting nothing)
//! and compiles its own [`RouteTable`], then routes requests through it with
//! the pure functions of [`route`].
//!
//! ```text
//!  controlplane                       dataplane worker (one per core)
//!  Snapshot ─encode─▶ shm::Writer ══▶ shm::Reader ─decode─▶ Snapshot ─compile─▶ RouteTable
//! ```
//!
//! This crate does no I/O beyond mapping the segment and has no async code, no
//! sockets, no clocks and no Kubernetes types, so everything here is tested in
//! isolation. Unsafe code is allowed only in [`shm`], which maps the segment.
//! Two opt-in features hold process plumbing both binaries share and nothing
//! else uses: `logging` (tracing set-up) and `admin` (the admin HTTP server).
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "admin")]
pub mod admin_http;
pub mod http1;
#[cfg(feature = "logging")]
pub mod logging;
pub mod route;
pub mod shm;
pub mod snapshot;
pub mod tls;

pub use route::{RouteDecision, RouteTable};
pub use snapshot::codec::{decode, encode, InvalidSnapshot};
pub use snapshot::{
    AppProtocol, Backend, BackendTarget, Certificate, Cors, Filters, HeaderMatch, HeaderModifier,
    HostMatch, Hostname, InvalidHostname, KeyFormat, Listener, ListenerProtocol, MatchKind, Mirror,
    ObjectRef, PathMatch, PathModifier, PrivateKey, QueryMatch, Redirect, Retry, Rewrite,
    RouteMatch, RouteRef, Rule, Snapshot, Timeouts, Transport, VirtualHost, WeightedBackend,
};
