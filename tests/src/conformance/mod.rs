//! Replays the Gateway API conformance scenarios of `../shared/conformance` (the upstream Go
//! suite's tests, stored as data) against the real binaries on loopback. The test binary
//! `tests/conformance.rs` drives it; `conformance.yaml` at the repository root says which
//! features Shardgate claims and which claimed tests do not pass yet.
//!
//! ```text
//! cases.json + manifests ──► objects::Store (API server + EndpointSlice controller)
//!                                 │ render
//!                                 ▼
//!                     config dir ─► controlplane ─► status file ─► status::check
//!                                        │ shm
//!                                        ▼
//!        traffic / extra ──HTTP──► dataplane ──► shardgate-echo pods (one process)
//!  tcp_echo / udp_echo ─TLS/TCP/UDP─►
//!              grpc ─h2c (gRPC)─►
//!          websocket ─WebSocket─►
//! ```

pub mod cases;
pub mod certs;
pub mod extra;
pub mod grpc;
pub mod objects;
pub mod probe;
pub mod runner;
pub mod status;
pub mod tcp_echo;
pub mod tls;
pub mod traffic;
pub mod udp_echo;
pub mod websocket;
