//! Every metric name the dataplane exports, with its help text, in one place.

/// (name, help) pairs.
pub type Name = (&'static str, &'static str);

pub const REQUESTS: Name = (
    "shardgate_requests_total",
    "Requests answered, by gateway, listener, route, backend and status class.",
);
pub const WORKER_REQUESTS: Name = (
    "shardgate_worker_requests_total",
    "Requests answered, by worker.",
);
pub const REQUEST_DURATION: Name = (
    "shardgate_request_duration_seconds",
    "Time from the first byte of a request head to the end of its response.",
);
pub const UPSTREAM_DURATION: Name = (
    "shardgate_upstream_response_seconds",
    "Time from sending a request upstream to receiving its response head.",
);
pub const CONNECTIONS_TOTAL: Name = (
    "shardgate_downstream_connections_total",
    "Downstream connections accepted.",
);
pub const CONNECTIONS_ACTIVE: Name = (
    "shardgate_downstream_connections_active",
    "Downstream connections open, by worker.",
);
pub const BYTES_RECEIVED: Name = (
    "shardgate_downstream_received_bytes_total",
    "Bytes read from downstream clients.",
);
pub const BYTES_SENT: Name = (
    "shardgate_downstream_sent_bytes_total",
    "Bytes written to downstream clients.",
);
pub const UPSTREAM_CONNECTS: Name = (
    "shardgate_upstream_connects_total",
    "Upstream connections opened.",
);
pub const UPSTREAM_CONNECT_ERRORS: Name = (
    "shardgate_upstream_connect_errors_total",
    "Upstream connection attempts that failed or timed out.",
);
pub const POOL_HITS: Name = (
    "shardgate_upstream_pool_hits_total",
    "Upstream requests sent on a pooled keep-alive connection.",
);
pub const POOL_MISSES: Name = (
    "shardgate_upstream_pool_misses_total",
    "Upstream requests that needed a new connection.",
);
pub const REJECTED: Name = (
    "shardgate_rejected_requests_total",
    "Requests answered without a backend, by reason.",
);
pub const TLS_HANDSHAKES: Name = (
    "shardgate_tls_handshakes_total",
    "TLS handshakes completed.",
);
pub const TLS_FAILURES: Name = (
    "shardgate_tls_handshake_failures_total",
    "TLS handshakes that failed.",
);
pub const H2_ABUSE: Name = (
    "shardgate_h2_connections_closed_for_abuse_total",
    "HTTP/2 connections closed with GOAWAY for protocol violations or reset floods.",
);
pub const SNAPSHOT_GENERATION: Name = (
    "shardgate_snapshot_generation",
    "Snapshot generation in force, by worker.",
);
pub const SNAPSHOTS_APPLIED: Name = (
    "shardgate_snapshots_applied_total",
    "Snapshots applied, by worker.",
);
pub const SNAPSHOTS_REJECTED: Name = (
    "shardgate_snapshots_rejected_total",
    "Snapshots rejected (copy, decode or compile failed), by worker.",
);
pub const APPLY_DELAY: Name = (
    "shardgate_snapshot_apply_delay_seconds",
    "Delay from a snapshot's publication to its application, by worker.",
);
pub const ACCESS_LOG_DROPPED: Name = (
    "shardgate_access_log_dropped_total",
    "Access-log lines dropped because the log writer fell behind.",
);
