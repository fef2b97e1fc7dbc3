//! Shardgate's control plane.
//!
//! It is the only process that reads configuration (a directory of YAML in
//! standalone mode, the Kubernetes API in cluster mode). It keeps every object
//! in a [`store::Store`], turns the store into a snapshot and status with the
//! pure [`translate::translate`], and publishes snapshots into the shared
//! memory segment with [`publisher::Publisher`]. It never sits on the request
//! path and holds no per-request state.
//!
//! ```text
//!  provider::file ─┐                          ┌─▶ status file (standalone)
//!  provider::kube ─┴▶ Store ─▶ translate ─▶ (Snapshot, Status)
//!                                             │          └─▶ status_sync ─▶ /status patches (Lease holder)
//!                                             └─▶ Publisher ─▶ shm segment ─▶ dataplane
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod cluster;
pub mod cycle;
pub mod leader;
pub mod provider;
pub mod publisher;
pub mod status;
pub mod status_sync;
pub mod store;
pub mod translate;
