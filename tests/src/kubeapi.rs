//! An in-process stand-in for the Kubernetes API server's list/watch protocol,
//! for end-to-end tests that run the real `shardgate-controlplane` (kube-rs
//! `kube::Client` + `kube_runtime::watcher`) against it with `--kubeconfig`.
//!
//! It serves JSON over HTTP/1.1 on `127.0.0.1:<ephemeral>` from a thread of its
//! own (its own single-threaded tokio runtime); every test control on
//! [`KubeApi`] is synchronous and callable from a plain `#[test]`.
//!
//! # What it models
//!
//! - A registry of resource types (core `v1` Namespaces, Services, Secrets;
//!   `discovery.k8s.io/v1` EndpointSlices; the Gateway API kinds in `v1` and
//!   `v1alpha2`; `coordination.k8s.io/v1` Leases) at their real paths:
//!   `/api/v1/[namespaces/{ns}/]{plural}[/{name}[/status]]` and
//!   `/apis/{group}/{version}/[namespaces/{ns}/]{plural}[/{name}[/status]]`.
//!   Unknown or "not installed" ([`KubeApi::set_installed`], like a missing
//!   CRD) resources answer 404 with a `Status`; `/version`, `/api`, `/apis`,
//!   `/apis/{group}`, `/api/v1` and `/apis/{group}/{version}` answer discovery
//!   documents built from the registry.
//! - One global resourceVersion counter, like etcd's revision (starts at 1000).
//!   Each write that changes an object bumps it; a write that changes nothing
//!   (a no-op update or patch) does not bump it and emits no event, as the real
//!   server does. `metadata.uid`, `creationTimestamp` and `generation` (1 on
//!   create, +1 whenever anything outside `metadata` and `status` changes) are
//!   server-managed and cannot be changed by clients.
//! - The complete event history. Watches resume from any resourceVersion not
//!   below the compaction point; older ones get the real `ERROR` event with a
//!   410 `Expired` Status and the stream ends. Paginated lists are served from
//!   a consistent snapshot at the first page's resourceVersion (rebuilt from
//!   the history), and `resourceVersionMatch=Exact` lists likewise.
//! - Verbs: get, list (`limit`/`continue`, `labelSelector`, `fieldSelector`),
//!   watch, create, update (PUT, main resource and `/status`), patch (JSON
//!   merge, strategic merge, JSON patch, server-side apply; main resource and
//!   `/status`), delete (with `preconditions`) and deletecollection.
//!   `dryRun=All` computes the answer without storing it.
//! - Subresource semantics: for kinds with a status subresource, writes to the
//!   main resource ignore `status` (and create drops it), writes to `/status`
//!   change only `status`, and status writes never bump `generation`. Kinds
//!   without one (Secret, EndpointSlice, Lease, ReferenceGrant) have no
//!   `/status` path and take `status` like any other field.
//! - Optimistic concurrency: a `metadata.resourceVersion` in an update body, a
//!   patch result, or delete `preconditions` that differs from the stored one is
//!   a 409 `Conflict` with the real message.
//! - Watch filtering like the apiserver's watch cache: with a selector, an
//!   object that stops matching is sent as `DELETED` and one that starts
//!   matching as `ADDED`.
//!
//! # What kube-rs 4.2 sends, and what this answers (checked against its source)
//!
//! - The watcher's default initial list (`ListWatch`, `ListSemantic::MostRecent`)
//!   is `GET …?&limit=500` and then `…?&limit=500&continue=<token>` while the
//!   list's `metadata.continue` is non-empty; with `ListSemantic::Any` it still
//!   sends only `limit` (kube drops `resourceVersion=0` when a limit is set). It
//!   then watches with
//!   `?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=<list rv>`
//!   and resumes with the last event's or bookmark's resourceVersion; an
//!   `ERROR` event with code 410 makes it relist. The streaming-list strategy
//!   adds `sendInitialEvents=true&resourceVersionMatch=NotOlderThan` to a watch
//!   from `resourceVersion=0` and waits for a bookmark annotated
//!   `k8s.io/initial-events-end: "true"`, which this sends.
//! - kube-rs's query strings start with `&` (`?&watch=true…`); empty pairs are
//!   ignored here.
//! - Watch frames are read with a line codec: one JSON event per line. Each
//!   event is written as its own chunk as soon as it happens.
//! - List items: `ObjectList<K>` deserialises items with `K`'s own
//!   `Deserialize`; k8s-openapi types only check `apiVersion`/`kind` when present
//!   and kube-derive's CRD structs ignore them, so kube needs neither. As the
//!   real server does, this omits them from list items of built-in kinds and
//!   keeps them for the Gateway API kinds (CRDs, stored unstructured). Single
//!   objects and watch events always carry them.
//! - Patches arrive with `Content-Type` `application/merge-patch+json`,
//!   `application/strategic-merge-patch+json`, `application/json-patch+json`
//!   or `application/apply-patch+yaml` (with a JSON body and the
//!   `fieldManager`, optionally `force=true`, parameters).
//! - This was run against a real kube 4.2 `Client` and `watcher` (out of tree):
//!   paginated initial lists, relist after a 410, resuming after dropped
//!   streams, streaming lists, Lease create/replace with a 409 on a stale
//!   resourceVersion, `DynamicObject` merge patches of `/status` carrying a
//!   resourceVersion, server-side apply, 404 for a missing CRD, and both
//!   kinds of outage.
//!
//! # What it does not model
//!
//! No authentication or RBAC (any bearer token is accepted), no admission or
//! schema validation, no defaulting, no finalizers or `deletionTimestamp`
//! (deletes are immediate; deleting a Namespace does not delete its
//! contents, and creating in a missing namespace is allowed), no
//! `managedFields` or field ownership: server-side apply and strategic merge
//! are both applied as an RFC 7386 merge patch (lists are replaced wholesale,
//! fields a manager stops applying are not removed); strategic merge is
//! refused with 415 for CRDs as the real server does. Field selectors accept
//! any dotted path (the real server allows only a few per kind). Every kind
//! gets `metadata.generation` (the real server leaves it unset on, e.g.,
//! Services, Secrets and Leases). No protobuf, no HTTP/2, no TLS.
//!
//! # Outages
//!
//! Two kinds: [`KubeApi::set_available`]`(false)` keeps answering, with 503
//! `ServiceUnavailable` for every request (an apiserver that is up but cannot
//! serve, or a load balancer in front of a down one), and ends open watch
//! streams; kube-rs's client retries 503s by itself, silently.
//! [`KubeApi::set_reachable`]`(false)` is the process going away: the listener
//! closes (connections are refused) and open connections are dropped; kube-rs
//! reports that as an error at once. A "network split" that hangs is not
//! modelled.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use serde_json::{json, Map, Value};
// tokio's `sync` feature is always on here: hyper depends on tokio with it.
use tokio::sync::{mpsc, oneshot, watch};

/// The first resourceVersion handed out is one above this.
const INITIAL_RV: u64 = 1000;

/// One resource type the stand-in serves.
#[derive(Debug, Clone, Copy)]
struct ResourceType {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    /// Has a `/status` subresource.
    status: bool,
    /// Is a CustomResourceDefinition (list items keep apiVersion/kind;
    /// strategic merge patch is refused).
    crd: bool,
}

impl ResourceType {
    const fn new(
        group: &'static str,
        version: &'static str,
        plural: &'static str,
        kind: &'static str,
        namespaced: bool,
        status: bool,
        crd: bool,
    ) -> Self {
        Self {
            group,
            version,
            plural,
            kind,
            namespaced,
            status,
            crd,
        }
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or `plural` for core), as error messages name it.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const GW: &str = "gateway.networking.k8s.io";

/// The resource types served.
const REGISTRY: &[ResourceType] = &[
    ResourceType::new("", "v1", "namespaces", "Namespace", false, true, false),
    ResourceType::new("", "v1", "services", "Service", true, true, false),
    ResourceType::new("", "v1", "secrets", "Secret", true, false, false),
    ResourceType::new(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
        false,
        false,
    ),
    ResourceType::new(
        GW,
        "v1",
        "gatewayclasses",
        "GatewayClass",
        false,
        true,
        true,
    ),
    ResourceType::new(GW, "v1", "gateways", "Gateway", true, true, true),
    ResourceType::new(GW, "v1", "httproutes", "HTTPRoute", true, true, true),
    ResourceType::new(GW, "v1", "grpcroutes", "GRPCRoute", true, true, true),
    ResourceType::new(GW, "v1", "tlsroutes", "TLSRoute", true, true, true),
    ResourceType::new(
        GW,
        "v1",
        "referencegrants",
        "ReferenceGrant",
        true,
        false,
        true,
    ),
    ResourceType::new(
        GW,
        "v1",
        "backendtlspolicies",
        "BackendTLSPolicy",
        true,
        true,
        true,
    ),
    ResourceType::new(GW, "v1", "listenersets", "ListenerSet", true, true, true),
    ResourceType::new(GW, "v1alpha2", "tcproutes", "TCPRoute", true, true, true),
    ResourceType::new(GW, "v1alpha2", "udproutes", "UDPRoute", true, true, true),
    ResourceType::new(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        false,
        false,
    ),
];

/// The registry index of `kind`; panics (a test bug) if it is not served.
fn type_of_kind(kind: &str) -> usize {
    REGISTRY
        .iter()
        .position(|r| r.kind == kind)
        .unwrap_or_else(|| panic!("kubeapi: kind {kind:?} is not in the stand-in's registry"))
}

/// One request the stand-in answered (see [`KubeApi::requests`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` or
    /// `deletecollection` (or the HTTP method, lower-cased, for anything else).
    pub verb: String,
    /// API group (`""` for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// The resource's plural name.
    pub resource: String,
    /// `Some("status")` for the status subresource.
    pub subresource: Option<String>,
    /// The namespace in the path.
    pub namespace: Option<String>,
    /// The object name in the path.
    pub name: Option<String>,
    /// The request's `Content-Type`, parameters stripped.
    pub content_type: Option<String>,
    /// The `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// The raw query string (kube-rs's start with `&`).
    pub query: String,
    /// The HTTP status code answered (200 for a watch that started).
    pub code: u16,
}

/// Options for [`KubeApi::start_with`].
#[derive(Debug, Clone)]
pub struct KubeApiOptions {
    /// How often watches that asked for bookmarks get one; `None` sends them
    /// only on [`KubeApi::bookmark_now`]. Default: every second.
    pub bookmark_interval: Option<Duration>,
}

impl Default for KubeApiOptions {
    fn default() -> Self {
        Self {
            bookmark_interval: Some(Duration::from_secs(1)),
        }
    }
}

/// A running stand-in API server; stopped (every connection closed) on drop.
pub struct KubeApi {
    inner: Arc<Inner>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi").field("addr", &self.addr).finish()
    }
}

impl KubeApi {
    /// Starts a stand-in with default options on `127.0.0.1:<ephemeral>`.
    pub fn start() -> Self {
        Self::start_with(KubeApiOptions::default())
    }

    /// Starts a stand-in with `options`.
    pub fn start_with(options: KubeApiOptions) -> Self {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).expect("kubeapi: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("kubeapi: non-blocking listener");
        let addr = listener.local_addr().expect("kubeapi: local address");
        let inner = Arc::new(Inner::new(addr, options.bookmark_interval));
        let (stop, stop_rx) = oneshot::channel();
        let server = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("kubeapi".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("kubeapi: tokio runtime");
                runtime.block_on(serve(server, listener, stop_rx));
                // Dropping the runtime cancels every connection and watch task.
            })
            .expect("kubeapi: spawn server thread");
        Self {
            inner,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address listened on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes a kubeconfig whose current context (`kubeapi-standin`, namespace
    /// `default`) points at this server with the bearer token `test-token`.
    pub fn write_kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: kubeapi-standin
  cluster:
    server: {url}
contexts:
- name: kubeapi-standin
  context:
    cluster: kubeapi-standin
    user: test
    namespace: default
current-context: kubeapi-standin
users:
- name: test
  user:
    token: test-token
preferences: {{}}
",
            url = self.url()
        );
        std::fs::write(path, text)
            .unwrap_or_else(|e| panic!("kubeapi: write {}: {e}", path.display()));
    }

    /// Creates `obj`, or replaces the stored object of that kind, namespace
    /// (default `default` for namespaced kinds) and name, like `kubectl apply`:
    /// everything but the stored `status` and server-managed metadata comes
    /// from `obj`. For kinds with a status subresource, `status` in `obj` is
    /// ignored (use [`KubeApi::set_status`]). Returns the stored object.
    /// Panics on a kind the registry lacks or an invalid object.
    pub fn apply(&self, obj: Value) -> Value {
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("kubeapi: apply needs a kind: {obj}"));
        let t = type_of_kind(kind);
        self.apply_typed(t, obj)
    }

    fn apply_typed(&self, t: usize, mut obj: Value) -> Value {
        let rt = REGISTRY[t];
        let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            panic!("kubeapi: apply needs metadata: {obj}");
        };
        meta.remove("resourceVersion");
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("kubeapi: apply needs metadata.name"))
            .to_owned();
        let ns = if rt.namespaced {
            let ns = meta
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_owned();
            meta.insert("namespace".into(), Value::String(ns.clone()));
            ns
        } else {
            String::new()
        };
        let result = self.inner.write(|s| {
            let key = (t, ns.clone(), name.clone());
            match s.objects.get(&key).cloned() {
                Some(old) => s.commit(&key, old, obj, Sub::Main, false),
                None => s.create(t, &ns, obj, false),
            }
        });
        result.unwrap_or_else(|e| panic!("kubeapi: apply {} {ns}/{name}: {}", rt.kind, e.message))
    }

    /// Applies every document of a multi-document YAML stream with
    /// [`KubeApi::apply`], skipping empty documents and kinds the registry
    /// lacks (a `v1beta1` object of a served kind is stored as the served
    /// version). Returns the stored objects.
    pub fn apply_yaml(&self, yaml: &str) -> Vec<Value> {
        use serde::Deserialize as _;
        let mut out = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let value = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("kubeapi: apply_yaml: invalid YAML: {e}"));
            let Some(kind) = value.get("kind").and_then(Value::as_str) else {
                continue;
            };
            let group = value
                .get("apiVersion")
                .and_then(Value::as_str)
                .map(|av| av.rsplit_once('/').map_or("", |(g, _)| g))
                .unwrap_or("");
            let Some(t) = REGISTRY
                .iter()
                .position(|r| r.kind == kind && r.group == group)
            else {
                continue;
            };
            out.push(self.apply_typed(t, value));
        }
        out
    }

    /// Replaces the `status` of a stored object, as a PUT to `/status` would
    /// (generation unchanged). Returns the stored object; panics if absent.
    pub fn set_status(&self, kind: &str, ns: Option<&str>, name: &str, status: Value) -> Value {
        let t = type_of_kind(kind);
        let key = (t, ns.unwrap_or("").to_owned(), name.to_owned());
        self.inner
            .write(|s| {
                let old = s
                    .objects
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(&REGISTRY[t], name))?;
                let mut candidate = old.clone();
                candidate["status"] = status;
                s.commit(&key, old, candidate, Sub::Status, false)
            })
            .unwrap_or_else(|e| panic!("kubeapi: set_status: {}", e.message))
    }

    /// Deletes an object (as an API DELETE would: a `DELETED` event with a new
    /// resourceVersion); returns it, or `None` if there was none.
    pub fn delete(&self, kind: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let t = type_of_kind(kind);
        let ns = ns.unwrap_or("").to_owned();
        self.inner
            .write(|s| s.delete(t, &ns, name, &Value::Null, false))
            .ok()
    }

    /// The stored object, if any.
    pub fn get(&self, kind: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let t = type_of_kind(kind);
        self.inner
            .lock()
            .objects
            .get(&(t, ns.unwrap_or("").to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every stored object of `kind`, ordered by namespace and name.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let t = type_of_kind(kind);
        self.inner
            .lock()
            .objects_of(t)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().rv
    }

    /// Installs or uninstalls `kind`: when uninstalled, its paths answer 404
    /// (as for a missing CRD), discovery omits it and its open watch streams
    /// end. Stored objects are kept and come back on reinstall.
    pub fn set_installed(&self, kind: &str, installed: bool) {
        let t = type_of_kind(kind);
        self.inner.lock().installed[t] = installed;
        // Wake every watch so the ones of this kind notice and end.
        self.inner.rv_tx.send_modify(|_| {});
    }

    /// Simulates an API outage (`false`) or its end (`true`) in which the
    /// apiserver still answers: every request, on new or kept-alive
    /// connections, gets 503 `ServiceUnavailable`, and open watch streams are
    /// ended at once.
    ///
    /// Note that kube-rs 4.2's `Client` retries 429/503/504 answers itself
    /// (`Config::default_retry`: up to 15 retries, exponential backoff from
    /// 5 ms), so a kube client sees a slow request rather than an error, and
    /// after the outage it may still be sleeping out its current backoff
    /// (about as long as the outage lasted). For an outage that kube reports
    /// at once, use [`KubeApi::set_reachable`].
    pub fn set_available(&self, available: bool) {
        let mut store = self.inner.lock();
        store.available = available;
        if !available {
            self.inner.kill_watches();
        }
    }

    /// Simulates the apiserver going away (`false`: the listener is closed, so
    /// connections are refused, and every open connection, watch streams
    /// included, is dropped) or coming back (`true`: it listens again on the
    /// same port). Returns once the listener is closed or open again. kube
    /// reports a refused connection as an error at once (no client retry);
    /// the watcher then backs off.
    #[track_caller]
    pub fn set_reachable(&self, reachable: bool) {
        // Open streams are cut with their connections, not ended cleanly.
        self.inner.reachable_tx.send_replace(reachable);
        self.wait_for(Duration::from_secs(5), |api| {
            api.inner.listening.load(Ordering::SeqCst) == reachable
        });
    }

    /// Compacts the history: bumps the global resourceVersion by one (as an
    /// unrelated write would) and makes it the oldest one a watch may resume
    /// from, so resuming from any resourceVersion handed out before gets the
    /// 410 `Expired` error event (and continuing a paginated list gets 410);
    /// then ends every open watch stream.
    pub fn expire_watches(&self) {
        let rv = {
            let mut s = self.inner.lock();
            s.rv += 1;
            s.compacted = s.rv;
            // Under the store lock: a watch either started before (and is
            // ended) or sees the compaction.
            self.inner.kill_watches();
            s.rv
        };
        self.inner.rv_tx.send_replace(rv);
    }

    /// Ends every open watch stream without compaction (resuming works).
    pub fn drop_watches(&self) {
        self.inner.kill_watches();
    }

    /// Sends a `BOOKMARK` now on every open watch that allowed bookmarks.
    pub fn bookmark_now(&self) {
        self.inner.bookmark_tx.send_modify(|n| *n += 1);
    }

    /// The number of open watch streams.
    pub fn watch_count(&self) -> usize {
        self.inner.watches.load(Ordering::SeqCst)
    }

    /// Every resource request answered so far (including refused ones), in
    /// order. Discovery and `/version` are not recorded.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.inner.lock().requests.clear();
    }

    /// Polls `cond` every 10 ms until it holds; panics if it does not within
    /// `timeout`.
    #[track_caller]
    pub fn wait_for(&self, timeout: Duration, mut cond: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("kubeapi: condition not met within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Storage

/// (registry index, namespace or "", name).
type Key = (usize, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One write, as etcd would keep it.
#[derive(Debug)]
struct HistoryEvent {
    rv: u64,
    ty: EventType,
    key: Key,
    /// The object after the write (the final object for a delete).
    obj: Value,
    /// The object before the write.
    prev: Option<Value>,
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    Main,
    Status,
}

#[derive(Debug)]
struct Store {
    rv: u64,
    /// Watches may resume from resourceVersions >= this.
    compacted: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<HistoryEvent>,
    installed: Vec<bool>,
    available: bool,
    requests: Vec<Recorded>,
}

impl Store {
    fn objects_of(&self, t: usize) -> impl Iterator<Item = (&Key, &Value)> {
        self.objects
            .range((t, String::new(), String::new())..)
            .take_while(move |(k, _)| k.0 == t)
    }

    /// The objects of type `t` as they were at `rv` (from the history), in key order.
    fn objects_at(&self, t: usize, rv: u64) -> Vec<(Key, Value)> {
        if rv >= self.rv {
            return self
                .objects_of(t)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        let mut state: BTreeMap<Key, &Value> = BTreeMap::new();
        for ev in self.history.iter().take_while(|e| e.rv <= rv) {
            if ev.key.0 != t {
                continue;
            }
            match ev.ty {
                EventType::Added | EventType::Modified => {
                    state.insert(ev.key.clone(), &ev.obj);
                }
                EventType::Deleted => {
                    state.remove(&ev.key);
                }
            }
        }
        state.into_iter().map(|(k, v)| (k, v.clone())).collect()
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, ty: EventType, key: Key, obj: Value, prev: Option<Value>) {
        self.history.push(HistoryEvent {
            rv: self.rv,
            ty,
            key,
            obj,
            prev,
        });
    }

    /// Creates an object in namespace `ns` ("" for cluster-scoped kinds).
    fn create(
        &mut self,
        t: usize,
        ns: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let rt = REGISTRY[t];
        let Some(map) = obj.as_object_mut() else {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        };
        map.insert("apiVersion".into(), Value::String(rt.api_version()));
        map.insert("kind".into(), Value::String(rt.kind.to_owned()));
        if rt.status {
            map.remove("status");
        }
        let meta = object_field(map, "metadata");
        if rt.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    meta.insert("namespace".into(), Value::String(ns.to_owned()));
                }
            }
        } else {
            meta.remove("namespace");
        }
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_owned();
                    format!("{prefix}{suffix}")
                }
                _ => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                            rt.kind
                        ),
                    ))
                }
            },
        };
        meta.insert("name".into(), Value::String(name.clone()));
        meta.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().hyphenated().to_string()),
        );
        meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "selfLink",
            "managedFields",
        ] {
            meta.remove(field);
        }
        let key = (t, ns.to_owned(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.qualified()),
            )
            .with_details(&rt, &name));
        }
        if dry_run {
            return Ok(obj);
        }
        let rv = self.bump();
        set_rv(&mut obj, rv);
        self.objects.insert(key.clone(), obj.clone());
        self.record(EventType::Added, key, obj.clone(), None);
        Ok(obj)
    }

    /// Stores `candidate` over `old` (at `key`): `Sub::Status` takes only the
    /// status; `Sub::Main` keeps the stored status of kinds with a status
    /// subresource. Server-managed metadata is kept; generation follows the
    /// spec. A write that changes nothing returns `old` untouched.
    fn commit(
        &mut self,
        key: &Key,
        old: Value,
        candidate: Value,
        sub: Sub,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let rt = REGISTRY[key.0];
        let mut new = match sub {
            Sub::Status => {
                let mut n = old.clone();
                set_or_remove(&mut n, "status", candidate.get("status").cloned());
                n
            }
            Sub::Main => {
                if !candidate.is_object() {
                    return Err(ApiError::bad_request("the body must be a JSON object"));
                }
                let mut n = candidate;
                if rt.status {
                    set_or_remove(&mut n, "status", old.get("status").cloned());
                }
                n
            }
        };
        let Some(map) = new.as_object_mut() else {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        };
        map.insert("apiVersion".into(), Value::String(rt.api_version()));
        map.insert("kind".into(), Value::String(rt.kind.to_owned()));
        let meta = object_field(map, "metadata");
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "generation",
            "deletionTimestamp",
        ] {
            match old["metadata"].get(field) {
                Some(v) => meta.insert(field.to_owned(), v.clone()),
                None => meta.remove(field),
            };
        }
        if spec_part(&new) != spec_part(&old) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(generation);
        }
        if new == old || dry_run {
            return Ok(new);
        }
        let rv = self.bump();
        set_rv(&mut new, rv);
        self.objects.insert(key.clone(), new.clone());
        self.record(EventType::Modified, key.clone(), new.clone(), Some(old));
        Ok(new)
    }

    /// Deletes `(t, ns, name)`; `options` is a DeleteOptions body (or null).
    fn delete(
        &mut self,
        t: usize,
        ns: &str,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let rt = REGISTRY[t];
        let key = (t, ns.to_owned(), name.to_owned());
        let Some(old) = self.objects.get(&key) else {
            return Err(ApiError::not_found(&rt, name));
        };
        let pre = &options["preconditions"];
        if let Some(uid) = pre["uid"].as_str() {
            let actual = old["metadata"]["uid"].as_str().unwrap_or("");
            if uid != actual {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}",
                        rt.qualified()
                    ),
                )
                .with_details(&rt, name));
            }
        }
        if let Some(rv) = pre["resourceVersion"].as_str() {
            let actual = old["metadata"]["resourceVersion"].as_str().unwrap_or("");
            if rv != actual {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}",
                        rt.qualified()
                    ),
                )
                .with_details(&rt, name));
            }
        }
        let old = old.clone();
        if dry_run {
            return Ok(old);
        }
        self.objects.remove(&key);
        let rv = self.bump();
        let mut last = old.clone();
        set_rv(&mut last, rv);
        self.record(EventType::Deleted, key, last, Some(old.clone()));
        Ok(old)
    }
}

/// Everything but metadata and status: what `generation` tracks.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        for f in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(f);
        }
    }
    v
}

fn set_or_remove(obj: &mut Value, field: &str, value: Option<Value>) {
    if let Some(m) = obj.as_object_mut() {
        match value {
            Some(v) => m.insert(field.to_owned(), v),
            None => m.remove(field),
        };
    }
}

/// `map[field]` as an object, made one if it is not.
fn object_field<'a>(map: &'a mut Map<String, Value>, field: &str) -> &'a mut Map<String, Value> {
    let v = map
        .entry(field.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(m) = obj.as_object_mut() {
        object_field(m, "metadata").insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

fn rv_of(obj: &Value) -> Option<&str> {
    obj.get("metadata")?.get("resourceVersion")?.as_str()
}

/// Now, as RFC 3339 UTC with second precision (Kubernetes' `Time`).
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------
// Errors

/// A failure answered as a `Status` with the same HTTP code.
#[derive(Debug, Clone)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        self
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified()),
        )
        .with_details(rt, name)
    }

    fn no_resource() -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        e.details = Some(json!({}));
        e
    }

    fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                rt.qualified()
            ),
        )
        .with_details(rt, name)
    }

    fn unavailable() -> Self {
        Self::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )
    }

    fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

// ---------------------------------------------------------------------------
// Selectors

#[derive(Debug, Clone)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, ApiError> {
    let bad = || ApiError::bad_request(format!("unable to parse requirement: {s:?}"));
    let mut reqs = Vec::new();
    for term in split_top_level(s) {
        let req = if let Some(key) = term.strip_prefix('!') {
            LabelReq::NotExists(key.trim().to_owned())
        } else if let Some(open) = term.find('(') {
            let inner = term[open + 1..]
                .trim_end()
                .strip_suffix(')')
                .ok_or_else(bad)?;
            let (key, op) = term[..open]
                .trim()
                .rsplit_once(char::is_whitespace)
                .ok_or_else(bad)?;
            let values = inner
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect();
            match op.trim() {
                "in" => LabelReq::In(key.trim().to_owned(), values),
                "notin" => LabelReq::NotIn(key.trim().to_owned(), values),
                _ => return Err(bad()),
            }
        } else if let Some((k, v)) = term.split_once("!=") {
            LabelReq::Ne(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = term.split_once("==") {
            LabelReq::Eq(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = term.split_once('=') {
            LabelReq::Eq(k.trim().to_owned(), v.trim().to_owned())
        } else {
            LabelReq::Exists(term.to_owned())
        };
        reqs.push(req);
    }
    Ok(reqs)
}

#[derive(Debug, Clone)]
struct FieldReq {
    path: String,
    value: String,
    equal: bool,
}

fn parse_field_selector(s: &str) -> Result<Vec<FieldReq>, ApiError> {
    let mut reqs = Vec::new();
    for term in split_top_level(s) {
        let (path, value, equal) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, v, true)
        } else if let Some((k, v)) = term.split_once('=') {
            (k, v, true)
        } else {
            return Err(ApiError::bad_request(format!(
                "invalid selector: '{term}'; can't understand '{term}'"
            )));
        };
        reqs.push(FieldReq {
            path: path.trim().to_owned(),
            value: value.trim().to_owned(),
            equal,
        });
    }
    Ok(reqs)
}

/// Which objects a list or watch returns.
#[derive(Debug, Clone, Default)]
struct Filter {
    namespace: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Filter {
    fn from_query(namespace: Option<&str>, q: &Query) -> Result<Self, ApiError> {
        Ok(Self {
            namespace: namespace.map(str::to_owned),
            labels: parse_label_selector(q.get("labelSelector").unwrap_or(""))?,
            fields: parse_field_selector(q.get("fieldSelector").unwrap_or(""))?,
        })
    }

    fn has_selectors(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }

    fn key_matches(&self, key: &Key) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == key.1)
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = obj["metadata"]["labels"].as_object();
        let label = |k: &str| labels.and_then(|m| m.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|f| {
                let mut cur = obj;
                for part in f.path.split('.') {
                    cur = &cur[part];
                }
                let actual = match cur {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (actual == f.value) == f.equal
            })
    }
}

// ---------------------------------------------------------------------------
// Patches

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Splits an RFC 6901 pointer into its parent pointer and unescaped last token.
fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn pointer_add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| format!("invalid array index in {path:?}"))?
            };
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(format!("doc is missing path: {path:?}")),
    }
}

fn pointer_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("doc is missing key: {path:?}");
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(missing),
        Some(Value::Array(a)) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

/// RFC 6902 JSON patch: add, remove, replace, move, copy, test.
fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    for op in ops {
        let kind = op["op"].as_str().ok_or("an operation needs \"op\"")?;
        let path = op["path"].as_str().ok_or("an operation needs \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or(format!("{kind} needs \"value\""))
        };
        let from = || op["from"].as_str().ok_or(format!("{kind} needs \"from\""));
        match kind {
            "add" => pointer_add(doc, path, value()?)?,
            "remove" => {
                pointer_remove(doc, path)?;
            }
            "replace" => {
                let v = value()?;
                if path.is_empty() {
                    *doc = v;
                } else {
                    pointer_remove(doc, path)?;
                    pointer_add(doc, path, v)?;
                }
            }
            "move" => {
                let v = pointer_remove(doc, from()?)?;
                pointer_add(doc, path, v)?;
            }
            "copy" => {
                let v = doc
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| format!("doc is missing from path: {path:?}"))?;
                pointer_add(doc, path, v)?;
            }
            "test" => {
                let expected = value()?;
                if doc.pointer(path) != Some(&expected) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchType {
    Merge,
    Strategic,
    Json,
    Apply,
}

// ---------------------------------------------------------------------------
// Requests

/// Decoded query parameters, in order.
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Self {
        Self(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A resource path, split up.
#[derive(Debug, Clone)]
struct ResourcePath {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_resource_path(path: &str) -> Option<ResourcePath> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let (group, version, rest) = match segs.first().map(String::as_str) {
        Some("api") if segs.len() >= 3 => (String::new(), segs[1].clone(), &segs[2..]),
        Some("apis") if segs.len() >= 4 => (segs[1].clone(), segs[2].clone(), &segs[3..]),
        _ => return None,
    };
    let namespaced_form = rest[0] == "namespaces"
        && rest.len() >= 3
        && !(group.is_empty()
            && rest.len() == 3
            && matches!(rest[2].as_str(), "status" | "finalize"));
    let (namespace, rest) = if namespaced_form {
        (Some(rest[1].clone()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.len() > 3 {
        return None;
    }
    Some(ResourcePath {
        group,
        version,
        plural: rest[0].clone(),
        namespace,
        name: rest.get(1).cloned(),
        sub: rest.get(2).cloned(),
    })
}

/// The body of a response: a whole document or a watch stream.
type RespBody = Either<Full<Bytes>, WatchBody>;

/// A watch response body: one chunk per line sent into the channel; it ends
/// when the sending watch task ends.
struct WatchBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

fn json_response(code: u16, body: &Value) -> Response<RespBody> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body.to_string()))));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_response(e: &ApiError) -> Response<RespBody> {
    json_response(e.code, &e.status())
}

fn event_line(ty: &str, obj: &Value) -> Bytes {
    let mut line = json!({"type": ty, "object": obj}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark_line(rt: &ResourceType, rv: u64, initial_events_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_events_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}),
    )
}

/// Counts an open watch stream for as long as it lives.
struct WatchGuard(Arc<Inner>);

impl WatchGuard {
    fn new(inner: &Arc<Inner>) -> Self {
        inner.watches.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(inner))
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a watch request asked for.
#[derive(Debug)]
struct WatchSpec {
    t: usize,
    filter: Filter,
    /// `None`: synthetic ADDED events for the current state first.
    from: Option<u64>,
    bookmarks: bool,
    /// `sendInitialEvents=true`: mark the end of the initial events.
    initial_events: bool,
    timeout: Option<Duration>,
}

struct Inner {
    addr: SocketAddr,
    store: Mutex<Store>,
    /// The current resourceVersion; every write notifies watches through it.
    rv_tx: watch::Sender<u64>,
    /// Bumped to end every open watch.
    kill_tx: watch::Sender<u64>,
    /// Bumped to send a bookmark on every open watch.
    bookmark_tx: watch::Sender<u64>,
    bookmark_interval: Option<Duration>,
    watches: AtomicUsize,
    /// `false` while the server refuses connections.
    reachable_tx: watch::Sender<bool>,
    /// Whether the listener is open now (the server thread's view).
    listening: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn new(addr: SocketAddr, bookmark_interval: Option<Duration>) -> Self {
        Self {
            addr,
            store: Mutex::new(Store {
                rv: INITIAL_RV,
                compacted: 0,
                objects: BTreeMap::new(),
                history: Vec::new(),
                installed: vec![true; REGISTRY.len()],
                available: true,
                requests: Vec::new(),
            }),
            rv_tx: watch::Sender::new(INITIAL_RV),
            kill_tx: watch::Sender::new(0),
            bookmark_tx: watch::Sender::new(0),
            bookmark_interval,
            watches: AtomicUsize::new(0),
            reachable_tx: watch::Sender::new(true),
            listening: std::sync::atomic::AtomicBool::new(true),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a write on the store, then wakes the watches if it changed anything.
    fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let (result, rv) = {
            let mut store = self.lock();
            let result = f(&mut store);
            (result, store.rv)
        };
        self.rv_tx.send_if_modified(|cur| {
            let changed = *cur != rv;
            *cur = rv;
            changed
        });
        result
    }

    fn kill_watches(&self) {
        self.kill_tx.send_modify(|n| *n += 1);
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<RespBody> {
        let (parts, body) = req.into_parts();
        // A client that goes away mid-body just gets an answer to nobody.
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        self.route(&parts.method, &parts.uri, &parts.headers, &body)
    }

    fn route(
        self: &Arc<Self>,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response<RespBody> {
        let path = uri.path();
        let raw_query = uri.query().unwrap_or("");
        let query = Query::parse(raw_query);
        let Some(rp) = parse_resource_path(path) else {
            if !self.lock().available {
                return error_response(&ApiError::unavailable());
            }
            return match (method, self.discovery(path)) {
                (&Method::GET, Some(doc)) => json_response(200, &doc),
                _ => error_response(&ApiError::no_resource()),
            };
        };
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
        let watch = query.flag("watch");
        let verb = match (method, rp.name.is_some()) {
            (&Method::GET, true) => "get",
            (&Method::GET, false) if watch => "watch",
            (&Method::GET, false) => "list",
            (&Method::POST, false) => "create",
            (&Method::PUT, true) => "update",
            (&Method::PATCH, true) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            _ => "",
        };
        let verb = if verb.is_empty() {
            method.as_str().to_ascii_lowercase()
        } else {
            verb.to_owned()
        };
        let resp = if self.lock().available {
            match self.resource(&verb, &rp, &query, content_type.as_deref(), body) {
                Ok(resp) => resp,
                Err(e) => error_response(&e),
            }
        } else {
            error_response(&ApiError::unavailable())
        };
        self.lock().requests.push(Recorded {
            verb,
            group: rp.group,
            version: rp.version,
            resource: rp.plural,
            subresource: rp.sub,
            namespace: rp.namespace,
            name: rp.name,
            content_type,
            field_manager: query.get("fieldManager").map(str::to_owned),
            query: raw_query.to_owned(),
            code: resp.status().as_u16(),
        });
        resp
    }

    fn resource(
        self: &Arc<Self>,
        verb: &str,
        rp: &ResourcePath,
        q: &Query,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Response<RespBody>, ApiError> {
        let t = REGISTRY
            .iter()
            .position(|r| r.group == rp.group && r.version == rp.version && r.plural == rp.plural)
            .ok_or_else(ApiError::no_resource)?;
        let rt = REGISTRY[t];
        if !self.lock().installed[t] {
            return Err(ApiError::no_resource());
        }
        if rp.namespace.is_some() && !rt.namespaced {
            return Err(ApiError::no_resource());
        }
        let sub = match rp.sub.as_deref() {
            None => Sub::Main,
            Some("status") if rt.status => Sub::Status,
            Some(_) => return Err(ApiError::no_resource()),
        };
        let ns = rp.namespace.as_deref().unwrap_or("");
        let name = rp.name.as_deref().unwrap_or("");
        if rt.namespaced && !name.is_empty() && rp.namespace.is_none() {
            return Err(ApiError::no_resource());
        }
        let dry_run = q.get("dryRun") == Some("All");
        let parse_body = || -> Result<Value, ApiError> {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
        };
        let not_allowed = || {
            ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        };
        match verb {
            "list" => Ok(json_response(
                200,
                &self.list(t, rp.namespace.as_deref(), q)?,
            )),
            "watch" => self.start_watch(t, rp.namespace.as_deref(), q),
            "get" => {
                let key = (t, ns.to_owned(), name.to_owned());
                let obj = self.lock().objects.get(&key).cloned();
                obj.map(|o| json_response(200, &o))
                    .ok_or_else(|| ApiError::not_found(&rt, name))
            }
            "create" => {
                if rt.namespaced && rp.namespace.is_none() {
                    return Err(not_allowed());
                }
                let obj = parse_body()?;
                let created = self.write(|s| s.create(t, ns, obj, dry_run))?;
                Ok(json_response(201, &created))
            }
            "update" => {
                let obj = parse_body()?;
                let updated = self.write(|s| {
                    let key = (t, ns.to_owned(), name.to_owned());
                    let old = s
                        .objects
                        .get(&key)
                        .cloned()
                        .ok_or_else(|| ApiError::not_found(&rt, name))?;
                    match obj["metadata"]["name"].as_str() {
                        Some(n) if n != name => {
                            return Err(ApiError::bad_request(format!(
                                "the name of the object ({n}) does not match the name on the URL ({name})"
                            )))
                        }
                        _ => {}
                    }
                    match rv_of(&obj) {
                        Some(rv) if !rv.is_empty() && Some(rv) != rv_of(&old) => {
                            return Err(ApiError::conflict(&rt, name))
                        }
                        _ => {}
                    }
                    s.commit(&key, old, obj, sub, dry_run)
                })?;
                Ok(json_response(200, &updated))
            }
            "patch" => {
                let ptype = match content_type {
                    Some("application/merge-patch+json") => PatchType::Merge,
                    Some("application/strategic-merge-patch+json") if !rt.crd => {
                        PatchType::Strategic
                    }
                    Some("application/json-patch+json") => PatchType::Json,
                    Some("application/apply-patch+yaml") => PatchType::Apply,
                    _ => {
                        return Err(ApiError::new(
                            415,
                            "UnsupportedMediaType",
                            format!(
                                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
                                if rt.crd { "" } else { ", application/strategic-merge-patch+json" }
                            ),
                        ))
                    }
                };
                if ptype == PatchType::Apply && q.get("fieldManager").is_none_or(str::is_empty) {
                    return Err(ApiError::bad_request(
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    ));
                }
                let patch: Value = match ptype {
                    PatchType::Apply => serde_json::from_slice(body).or_else(|_| {
                        serde_yaml_ng::from_slice(body)
                            .map_err(|e| ApiError::bad_request(format!("invalid apply body: {e}")))
                    })?,
                    _ => parse_body()?,
                };
                let (code, obj) = self.write(|s| {
                    let key = (t, ns.to_owned(), name.to_owned());
                    let Some(old) = s.objects.get(&key).cloned() else {
                        if ptype == PatchType::Apply && sub == Sub::Main {
                            let mut obj = patch.clone();
                            if let Some(m) = obj.as_object_mut() {
                                object_field(m, "metadata")
                                    .insert("name".into(), Value::String(name.to_owned()));
                            }
                            if rt.namespaced && rp.namespace.is_none() {
                                return Err(not_allowed());
                            }
                            return s.create(t, ns, obj, dry_run).map(|o| (201, o));
                        }
                        return Err(ApiError::not_found(&rt, name));
                    };
                    let mut candidate = old.clone();
                    match ptype {
                        PatchType::Json => json_patch(&mut candidate, &patch).map_err(|e| {
                            ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}"))
                        })?,
                        PatchType::Merge | PatchType::Strategic | PatchType::Apply => {
                            if !patch.is_object() {
                                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                            }
                            merge_patch(&mut candidate, &patch);
                        }
                    }
                    match rv_of(&candidate) {
                        Some(rv) if !rv.is_empty() && Some(rv) != rv_of(&old) => {
                            return Err(ApiError::conflict(&rt, name))
                        }
                        _ => {}
                    }
                    s.commit(&key, old, candidate, sub, dry_run).map(|o| (200, o))
                })?;
                Ok(json_response(code, &obj))
            }
            "delete" if sub == Sub::Main => {
                let options = if body.is_empty() {
                    Value::Null
                } else {
                    parse_body()?
                };
                let deleted = self.write(|s| s.delete(t, ns, name, &options, dry_run))?;
                Ok(json_response(200, &deleted))
            }
            "deletecollection" if sub == Sub::Main => {
                let filter = Filter::from_query(rp.namespace.as_deref(), q)?;
                let deleted = self.write(|s| {
                    let keys: Vec<Key> = s
                        .objects_of(t)
                        .filter(|(k, v)| filter.key_matches(k) && filter.matches(v))
                        .map(|(k, _)| k.clone())
                        .collect();
                    keys.into_iter()
                        .filter_map(|k| s.delete(t, &k.1, &k.2, &Value::Null, dry_run).ok())
                        .collect::<Vec<_>>()
                });
                let rv = self.lock().rv;
                Ok(json_response(
                    200,
                    &list_document(&rt, rv, deleted, None, None),
                ))
            }
            _ => Err(not_allowed()),
        }
    }

    fn list(&self, t: usize, namespace: Option<&str>, q: &Query) -> Result<Value, ApiError> {
        let rt = REGISTRY[t];
        let filter = Filter::from_query(namespace, q)?;
        let limit = match q.get("limit") {
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
            None => 0,
        };
        let store = self.lock();
        let expired = || {
            ApiError::new(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            )
        };
        let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let (rv, ns, name) = decode_continue(token).ok_or_else(|| {
                    ApiError::bad_request(format!("continue key is not valid: {token:?}"))
                })?;
                if rv < store.compacted {
                    return Err(expired());
                }
                (rv, Some((t, ns, name)))
            }
            None => match (q.get("resourceVersion"), q.get("resourceVersionMatch")) {
                (Some(rv), Some("Exact")) => {
                    let rv = rv.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resource version {rv:?}"))
                    })?;
                    if rv < store.compacted {
                        return Err(ApiError::new(
                            410,
                            "Expired",
                            format!("too old resource version: {rv} ({})", store.compacted),
                        ));
                    }
                    (rv.min(store.rv), None)
                }
                // Unset, "0" or NotOlderThan: the current state satisfies all of them.
                _ => (store.rv, None),
            },
        };
        let matching: Vec<(Key, Value)> = store
            .objects_at(t, list_rv)
            .into_iter()
            .filter(|(k, v)| {
                after.as_ref().is_none_or(|a| k > a) && filter.key_matches(k) && filter.matches(v)
            })
            .collect();
        drop(store);
        let total = matching.len();
        let take = if limit == 0 { total } else { limit.min(total) };
        let mut items = Vec::with_capacity(take);
        let mut last_key = None;
        for (k, mut v) in matching.into_iter().take(take) {
            if !rt.crd {
                if let Some(m) = v.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
            }
            items.push(v);
            last_key = Some(k);
        }
        let (cont, remaining) = match last_key {
            Some(k) if take < total => (
                Some(encode_continue(list_rv, &k.1, &k.2)),
                (!filter.has_selectors()).then_some(total - take),
            ),
            _ => (None, None),
        };
        Ok(list_document(&rt, list_rv, items, cont, remaining))
    }

    fn start_watch(
        self: &Arc<Self>,
        t: usize,
        namespace: Option<&str>,
        q: &Query,
    ) -> Result<Response<RespBody>, ApiError> {
        let filter = Filter::from_query(namespace, q)?;
        let from =
            match q.get("resourceVersion") {
                None | Some("" | "0") => None,
                Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version {rv:?}"))
                })?),
            };
        let initial_events = q.flag("sendInitialEvents");
        let spec = WatchSpec {
            t,
            filter,
            from: if initial_events { None } else { from },
            bookmarks: q.flag("allowWatchBookmarks"),
            initial_events,
            timeout: q
                .get("timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
        };
        let (tx, rx) = mpsc::channel(64);
        // Subscribe now, so a kill that comes before the task runs still counts.
        let kill = self.kill_tx.subscribe();
        let guard = WatchGuard::new(self);
        tokio::spawn(run_watch(Arc::clone(self), spec, tx, kill, guard));
        let mut resp = Response::new(Either::Right(WatchBody { rx }));
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            hyper::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        Ok(resp)
    }

    /// Discovery documents and `/version`.
    fn discovery(&self, path: &str) -> Option<Value> {
        let path = path.trim_end_matches('/');
        let installed = self.lock().installed.clone();
        let served = |g: &str, v: Option<&str>| -> Vec<ResourceType> {
            REGISTRY
                .iter()
                .enumerate()
                .filter(|(i, r)| installed[*i] && r.group == g && v.is_none_or(|v| v == r.version))
                .map(|(_, r)| *r)
                .collect()
        };
        let versions_of = |g: &str| -> Vec<&'static str> {
            let mut vs: Vec<&'static str> = Vec::new();
            for r in served(g, None) {
                if !vs.contains(&r.version) {
                    vs.push(r.version);
                }
            }
            vs
        };
        let group_doc = |g: &str| -> Option<Value> {
            let vs = versions_of(g);
            let gv = |v: &str| json!({"groupVersion": format!("{g}/{v}"), "version": v});
            Some(json!({
                "name": g,
                "versions": vs.iter().map(|v| gv(v)).collect::<Vec<_>>(),
                "preferredVersion": gv(vs.first()?),
            }))
        };
        let resource_list = |g: &str, v: &str| -> Option<Value> {
            let rs = served(g, Some(v));
            if rs.is_empty() {
                return None;
            }
            let mut resources = Vec::new();
            for r in rs {
                resources.push(json!({
                    "name": r.plural,
                    "singularName": r.kind.to_ascii_lowercase(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                }));
                if r.status {
                    resources.push(json!({
                        "name": format!("{}/status", r.plural),
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": ["get", "patch", "update"],
                    }));
                }
            }
            let gv = if g.is_empty() {
                v.to_owned()
            } else {
                format!("{g}/{v}")
            };
            Some(json!({
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": gv,
                "resources": resources,
            }))
        };
        match path {
            "/version" => Some(json!({
                "major": "1",
                "minor": "33",
                "emulationMajor": "1",
                "emulationMinor": "33",
                "minCompatibilityMajor": "1",
                "minCompatibilityMinor": "32",
                "gitVersion": "v1.33.0",
                "gitCommit": "60a317eadfcb839692a5551a4e2fe2ab6a01d8c3",
                "gitTreeState": "clean",
                "buildDate": "2025-04-23T13:07:40Z",
                "goVersion": "go1.24.2",
                "compiler": "gc",
                "platform": "linux/amd64",
            })),
            "/api" => Some(json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.addr.to_string()}
                ],
            })),
            "/apis" => {
                let mut groups: Vec<&str> = Vec::new();
                for r in REGISTRY.iter().filter(|r| !r.group.is_empty()) {
                    if !groups.contains(&r.group) {
                        groups.push(r.group);
                    }
                }
                Some(json!({
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": groups.into_iter().filter_map(group_doc).collect::<Vec<_>>(),
                }))
            }
            "/api/v1" => resource_list("", "v1"),
            _ => {
                let rest = path.strip_prefix("/apis/")?;
                match rest.split_once('/') {
                    None => {
                        let mut doc = group_doc(rest)?;
                        doc["kind"] = json!("APIGroup");
                        doc["apiVersion"] = json!("v1");
                        Some(doc)
                    }
                    Some((g, v)) if !v.contains('/') => resource_list(g, v),
                    Some(_) => None,
                }
            }
        }
    }
}

fn list_document(
    rt: &ResourceType,
    rv: u64,
    items: Vec<Value>,
    cont: Option<String>,
    remaining: Option<usize>,
) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = json!(r);
    }
    json!({
        "apiVersion": rt.api_version(),
        "kind": format!("{}List", rt.kind),
        "metadata": meta,
        "items": items,
    })
}

/// An opaque continue token: base64 of `{"v","rv","ns","name"}` (the last key served).
fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    let doc = json!({"v": "meta.k8s.io/v1", "rv": rv, "ns": ns, "name": name});
    base64::engine::general_purpose::STANDARD.encode(doc.to_string())
}

fn decode_continue(token: &str) -> Option<(u64, String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let doc: Value = serde_json::from_slice(&raw).ok()?;
    Some((
        doc["rv"].as_u64()?,
        doc["ns"].as_str()?.to_owned(),
        doc["name"].as_str()?.to_owned(),
    ))
}

/// The watch events of type `t` after `after` (up to the store's rv), as
/// lines, filtered like the apiserver's watch cache.
fn events_after(store: &Store, t: usize, filter: &Filter, after: u64) -> Vec<Bytes> {
    let start = store.history.partition_point(|e| e.rv <= after);
    let mut lines = Vec::new();
    for ev in &store.history[start..] {
        if ev.key.0 != t || !filter.key_matches(&ev.key) {
            continue;
        }
        let now = filter.matches(&ev.obj);
        let before = ev.prev.as_ref().is_some_and(|p| filter.matches(p));
        match ev.ty {
            EventType::Added if now => lines.push(event_line("ADDED", &ev.obj)),
            EventType::Modified if now && before => lines.push(event_line("MODIFIED", &ev.obj)),
            EventType::Modified if now => lines.push(event_line("ADDED", &ev.obj)),
            EventType::Modified if before => {
                // Left the selection: DELETED with the previous state at this rv.
                let mut prev = ev.prev.clone().unwrap_or(Value::Null);
                set_rv(&mut prev, ev.rv);
                lines.push(event_line("DELETED", &prev));
            }
            EventType::Deleted if before || now => lines.push(event_line(ev.ty.as_str(), &ev.obj)),
            _ => {}
        }
    }
    lines
}

async fn sleep_until_opt(when: Option<tokio::time::Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

/// Feeds one watch stream until it is ended (kill, timeout, uninstall, or the
/// client going away).
async fn run_watch(
    inner: Arc<Inner>,
    spec: WatchSpec,
    tx: mpsc::Sender<Bytes>,
    mut kill: watch::Receiver<u64>,
    _guard: WatchGuard,
) {
    let rt = REGISTRY[spec.t];
    let mut rv_rx = inner.rv_tx.subscribe();
    let mut bookmark_rx = inner.bookmark_tx.subscribe();
    rv_rx.borrow_and_update();
    let start: Result<(Vec<Bytes>, u64), Bytes> = {
        let store = inner.lock();
        // Ended (drop_watches, expire_watches, an outage) before it started.
        if kill.has_changed().unwrap_or(true) {
            return;
        }
        match spec.from {
            None => Ok((
                store
                    .objects_of(spec.t)
                    .filter(|(k, v)| spec.filter.key_matches(k) && spec.filter.matches(v))
                    .map(|(_, v)| event_line("ADDED", v))
                    .collect(),
                store.rv,
            )),
            Some(rv) if rv < store.compacted => {
                let status = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {rv} ({})", store.compacted),
                )
                .status();
                Err(event_line("ERROR", &status))
            }
            Some(rv) => Ok((Vec::new(), rv)),
        }
    };
    let mut last = match start {
        Err(line) => {
            let _ = tx.send(line).await;
            return;
        }
        Ok((lines, rv)) => {
            for line in lines {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            rv
        }
    };
    if spec.initial_events
        && spec.bookmarks
        && tx.send(bookmark_line(&rt, last, true)).await.is_err()
    {
        return;
    }
    let now = tokio::time::Instant::now();
    let deadline = spec.timeout.map(|d| now + d);
    let mut next_bookmark = inner.bookmark_interval.map(|d| now + d);
    let mut bookmark_due = false;
    loop {
        rv_rx.borrow_and_update();
        let (lines, rv) = {
            let store = inner.lock();
            // Checked under the store lock, so no write that came after
            // drop_watches or expire_watches is sent on an ended stream.
            if !store.installed[spec.t] || kill.has_changed().unwrap_or(true) {
                return;
            }
            (events_after(&store, spec.t, &spec.filter, last), store.rv)
        };
        for line in lines {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        last = last.max(rv);
        if bookmark_due {
            bookmark_due = false;
            if spec.bookmarks && tx.send(bookmark_line(&rt, last, false)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            biased;
            _ = kill.changed() => return,
            () = tx.closed() => return,
            () = sleep_until_opt(deadline) => return,
            changed = rv_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            changed = bookmark_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                bookmark_due = true;
            }
            () = sleep_until_opt(next_bookmark) => {
                bookmark_due = true;
                next_bookmark = inner.bookmark_interval.map(|d| tokio::time::Instant::now() + d);
            }
        }
    }
}

async fn accept_opt(
    listener: Option<&tokio::net::TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Accepts connections until `stop` fires; each is served HTTP/1.1 with
/// keep-alive. While unreachable ([`KubeApi::set_reachable`]) the listener is
/// closed (connections are refused) and every open connection is dropped.
async fn serve(
    inner: Arc<Inner>,
    listener: std::net::TcpListener,
    mut stop: oneshot::Receiver<()>,
) {
    let mut listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("kubeapi: cannot use the listener: {e}");
            return;
        }
    };
    let mut reachable_rx = inner.reachable_tx.subscribe();
    loop {
        let reachable = *reachable_rx.borrow_and_update();
        if !reachable {
            listener = None;
        } else if listener.is_none() {
            match tokio::net::TcpListener::bind(inner.addr).await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    eprintln!("kubeapi: cannot listen on {} again: {e}", inner.addr);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        inner.listening.store(listener.is_some(), Ordering::SeqCst);
        tokio::select! {
            _ = &mut stop => return,
            _ = reachable_rx.changed() => {}
            accepted = accept_opt(listener.as_ref()) => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let inner = Arc::clone(&inner);
                    let mut cut = inner.reachable_tx.subscribe();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let inner = Arc::clone(&inner);
                            async move { Ok::<_, Infallible>(inner.handle(req).await) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                        // Errors here are clients closing connections: nothing to do.
                        // Becoming unreachable drops the connection (and closes the socket).
                        tokio::select! {
                            _ = conn => {}
                            _ = cut.wait_for(|reachable| !reachable) => {}
                        }
                    });
                }
                Err(e) => {
                    eprintln!("kubeapi: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;

    const T: Duration = Duration::from_secs(5);

    /// One HTTP call with ureq; `(status, JSON body or null)`.
    fn call(
        api: &KubeApi,
        method: &str,
        path: &str,
        ct: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = ureq::request(method, &format!("{}{path}", api.url())).timeout(T);
        if let Some(ct) = ct {
            req = req.set("Content-Type", ct);
        }
        let res = match body {
            Some(b) => req.send_string(&b.to_string()),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let code = resp.status();
        let text = resp.into_string().expect("response body");
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn get(api: &KubeApi, path: &str) -> (u16, Value) {
        call(api, "GET", path, None, None)
    }

    const MERGE: Option<&str> = Some("application/merge-patch+json");
    const JSON_PATCH: Option<&str> = Some("application/json-patch+json");
    const APPLY: Option<&str> = Some("application/apply-patch+yaml");

    /// A watch read off a raw socket: HTTP/1.1 chunked, one JSON event per line.
    struct Stream {
        reader: BufReader<TcpStream>,
        pending: Vec<u8>,
        done: bool,
        status: u16,
        head: String,
    }

    impl Stream {
        fn open(api: &KubeApi, target: &str) -> Self {
            let mut s = TcpStream::connect(api.addr()).expect("connect");
            s.set_read_timeout(Some(T)).expect("read timeout");
            write!(s, "GET {target} HTTP/1.1\r\nHost: kubeapi\r\nAccept: application/json\r\nAuthorization: Bearer test-token\r\n\r\n")
                .expect("send request");
            let mut reader = BufReader::new(s);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader
                    .read_line(&mut line)
                    .expect("response head (was it flushed?)");
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            let status = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .expect("status line");
            let chunked = head.contains("transfer-encoding: chunked");
            let mut stream = Self {
                reader,
                pending: Vec::new(),
                done: !chunked,
                status,
                head,
            };
            if !chunked {
                // A whole (error) document with a content-length.
                let len = stream
                    .head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|l| l.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                stream.reader.read_exact(&mut body).expect("body");
                stream.pending = body;
                stream.pending.push(b'\n');
            }
            stream
        }

        /// The next event, or `None` once the server ended the stream.
        fn next(&mut self) -> Option<Value> {
            loop {
                if let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.pending.drain(..=pos).collect();
                    return Some(
                        serde_json::from_slice(&line).expect("one JSON document per line"),
                    );
                }
                if self.done {
                    return None;
                }
                let mut size = String::new();
                self.reader
                    .read_line(&mut size)
                    .expect("chunk size (timed out?)");
                if size.is_empty() {
                    panic!("connection closed without the last chunk");
                }
                let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
                let mut data = vec![0; size + 2];
                self.reader.read_exact(&mut data).expect("chunk data");
                if size == 0 {
                    self.done = true;
                } else {
                    self.pending.extend_from_slice(&data[..size]);
                }
            }
        }

        fn next_event(&mut self) -> (String, Value) {
            let ev = self.next().expect("an event, not the end of the stream");
            (
                ev["type"].as_str().unwrap_or("").to_owned(),
                ev["object"].clone(),
            )
        }
    }

    fn rv(obj: &Value) -> u64 {
        obj["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no resourceVersion in {obj}"))
    }

    fn service(ns: &str, name: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"ports": [{"port": 80}]},
        })
    }

    fn gateway(name: &str) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"gatewayClassName": "shardgate", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
        })
    }

    const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways";

    #[test]
    fn list_paginates_from_a_consistent_snapshot() {
        let api = KubeApi::start();
        for i in 0..5 {
            let (code, obj) = call(
                &api,
                "POST",
                "/api/v1/namespaces/a/services",
                None,
                Some(&service("", &format!("s{i}"))),
            );
            assert_eq!(code, 201, "{obj}");
            assert_eq!(obj["metadata"]["namespace"], "a");
            assert_eq!(obj["metadata"]["generation"], 1);
            assert!(obj["metadata"]["uid"]
                .as_str()
                .is_some_and(|u| u.len() == 36));
        }
        api.apply(service("b", "other"));

        let (code, page1) = get(&api, "/api/v1/namespaces/a/services?&limit=2");
        assert_eq!(code, 200);
        assert_eq!(page1["kind"], "ServiceList");
        assert_eq!(page1["apiVersion"], "v1");
        let list_rv = page1["metadata"]["resourceVersion"]
            .as_str()
            .expect("list rv")
            .to_owned();
        assert_eq!(list_rv, api.resource_version().to_string());
        assert_eq!(page1["metadata"]["remainingItemCount"], 3);
        let names = |page: &Value| -> Vec<String> {
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_owned())
                .collect()
        };
        assert_eq!(names(&page1), ["s0", "s1"]);
        // Built-in kinds' list items carry no apiVersion/kind, as from the real server.
        assert!(page1["items"][0].get("apiVersion").is_none());
        assert!(page1["items"][0].get("kind").is_none());

        // Writes between pages do not show: the pages come from the first page's snapshot.
        api.apply(service("a", "s9"));
        assert!(api.delete("Service", Some("a"), "s4").is_some());
        let token = page1["metadata"]["continue"]
            .as_str()
            .expect("continue")
            .to_owned();
        let (code, page2) = get(
            &api,
            &format!("/api/v1/namespaces/a/services?&limit=2&continue={token}"),
        );
        assert_eq!(code, 200, "{page2}");
        assert_eq!(page2["metadata"]["resourceVersion"], list_rv.as_str());
        assert_eq!(names(&page2), ["s2", "s3"]);
        let token = page2["metadata"]["continue"]
            .as_str()
            .expect("continue")
            .to_owned();
        let (_, page3) = get(
            &api,
            &format!("/api/v1/namespaces/a/services?&limit=2&continue={token}"),
        );
        assert_eq!(names(&page3), ["s4"]);
        assert!(page3["metadata"].get("continue").is_none());

        // All namespaces, now.
        let (_, all) = get(&api, "/api/v1/services");
        assert_eq!(names(&all), ["s0", "s1", "s2", "s3", "s9", "other"]);
        assert!(all["metadata"].get("continue").is_none());

        // A continue token older than the compaction point is 410.
        api.expire_watches();
        let (code, status) = get(
            &api,
            &format!("/api/v1/namespaces/a/services?&limit=2&continue={token}"),
        );
        assert_eq!((code, status["reason"].as_str()), (410, Some("Expired")));
    }

    #[test]
    fn crd_objects_keep_type_meta_in_lists_and_gets() {
        let api = KubeApi::start();
        api.apply(gateway("gw"));
        let (_, list) = get(&api, GATEWAYS);
        assert_eq!(list["kind"], "GatewayList");
        assert_eq!(list["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(list["items"][0]["kind"], "Gateway");
        let (code, obj) = get(&api, &format!("{GATEWAYS}/gw"));
        assert_eq!(code, 200);
        assert_eq!(obj["apiVersion"], "gateway.networking.k8s.io/v1");
        let (code, status) = get(&api, &format!("{GATEWAYS}/missing"));
        assert_eq!(code, 404);
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(
            status["message"],
            "gateways.gateway.networking.k8s.io \"missing\" not found"
        );
        // Cluster-scoped kinds.
        api.apply(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "shardgate"}, "spec": {"controllerName": "x/y"}}));
        let (code, gc) = get(
            &api,
            "/apis/gateway.networking.k8s.io/v1/gatewayclasses/shardgate",
        );
        assert_eq!(code, 200, "{gc}");
        assert!(gc["metadata"].get("namespace").is_none());
        let (code, _) = get(&api, "/api/v1/namespaces/default");
        assert_eq!(code, 404);
        api.apply(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        );
        let (code, ns) = get(&api, "/api/v1/namespaces/default");
        assert_eq!((code, ns["kind"].as_str()), (200, Some("Namespace")));
    }

    #[test]
    fn watch_streams_events_in_order() {
        let api = KubeApi::start_with(KubeApiOptions {
            bookmark_interval: None,
        });
        let (_, list) = get(&api, &format!("{GATEWAYS}?&limit=500"));
        let list_rv: u64 = list["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("rv");
        let mut w = Stream::open(&api, &format!("{GATEWAYS}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion={list_rv}"));
        assert_eq!(w.status, 200);
        assert!(
            w.head.contains("content-type: application/json"),
            "{}",
            w.head
        );
        api.wait_for(T, |a| a.watch_count() == 1);

        api.apply(gateway("gw"));
        let (code, _) = call(
            &api,
            "PATCH",
            &format!("{GATEWAYS}/gw"),
            MERGE,
            Some(&json!({"spec": {"gatewayClassName": "other"}})),
        );
        assert_eq!(code, 200);
        let (code, _) = call(&api, "DELETE", &format!("{GATEWAYS}/gw"), None, None);
        assert_eq!(code, 200);

        let mut last = list_rv;
        for expected in ["ADDED", "MODIFIED", "DELETED"] {
            let (ty, obj) = w.next_event();
            assert_eq!(ty, expected);
            assert_eq!(obj["kind"], "Gateway");
            assert!(rv(&obj) > last, "resourceVersions increase");
            last = rv(&obj);
        }
        assert_eq!(last, api.resource_version());

        // Another namespace's object is not sent on this namespace's watch.
        let mut other = gateway("elsewhere");
        other["metadata"]["namespace"] = json!("other");
        api.apply(other);
        api.apply(gateway("gw2"));
        let (ty, obj) = w.next_event();
        assert_eq!(
            (ty.as_str(), obj["metadata"]["name"].as_str()),
            ("ADDED", Some("gw2"))
        );
    }

    #[test]
    fn watch_without_resource_version_sends_the_current_objects_first() {
        let api = KubeApi::start_with(KubeApiOptions {
            bookmark_interval: None,
        });
        api.apply(gateway("a"));
        api.apply(gateway("b"));
        for rv_param in ["", "&resourceVersion=0"] {
            let mut w = Stream::open(&api, &format!("{GATEWAYS}?&watch=true{rv_param}"));
            let names: Vec<String> = (0..2)
                .map(|_| {
                    let (ty, obj) = w.next_event();
                    assert_eq!(ty, "ADDED");
                    obj["metadata"]["name"].as_str().unwrap_or("").to_owned()
                })
                .collect();
            assert_eq!(names, ["a", "b"]);
        }
        // The streaming-list form ends its initial events with an annotated bookmark.
        let mut w = Stream::open(&api, &format!("{GATEWAYS}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0"));
        assert_eq!(w.next_event().0, "ADDED");
        assert_eq!(w.next_event().0, "ADDED");
        let (ty, bm) = w.next_event();
        assert_eq!(ty, "BOOKMARK");
        assert_eq!(
            bm["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
        assert_eq!(rv(&bm), api.resource_version());
    }

    #[test]
    fn resuming_after_expiry_gets_the_410_error_event() {
        let api = KubeApi::start_with(KubeApiOptions {
            bookmark_interval: None,
        });
        let seen = rv(&api.apply(gateway("a")));
        let mut w = Stream::open(
            &api,
            &format!("{GATEWAYS}?&watch=true&allowWatchBookmarks=true&resourceVersion={seen}"),
        );
        api.wait_for(T, |a| a.watch_count() == 1);
        api.expire_watches();
        assert!(w.next().is_none(), "expire_watches ends open streams");
        api.wait_for(T, |a| a.watch_count() == 0);

        let mut w = Stream::open(
            &api,
            &format!("{GATEWAYS}?&watch=true&allowWatchBookmarks=true&resourceVersion={seen}"),
        );
        assert_eq!(w.status, 200);
        let (ty, status) = w.next_event();
        assert_eq!(ty, "ERROR");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["code"], 410);
        assert_eq!(status["reason"], "Expired");
        assert_eq!(status["status"], "Failure");
        assert!(status["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("too old resource version: {seen} ("))));
        assert!(w.next().is_none(), "the stream ends after the error");

        // A relist gives a resourceVersion that can be watched from.
        let (_, list) = get(&api, GATEWAYS);
        let list_rv = list["metadata"]["resourceVersion"]
            .as_str()
            .expect("rv")
            .to_owned();
        let mut w = Stream::open(
            &api,
            &format!("{GATEWAYS}?&watch=true&resourceVersion={list_rv}"),
        );
        api.apply(gateway("b"));
        let (ty, obj) = w.next_event();
        assert_eq!(
            (ty.as_str(), obj["metadata"]["name"].as_str()),
            ("ADDED", Some("b"))
        );
    }

    #[test]
    fn dropped_watches_resume_without_loss() {
        let api = KubeApi::start_with(KubeApiOptions {
            bookmark_interval: None,
        });
        let start = api.resource_version();
        let mut w = Stream::open(
            &api,
            &format!("{GATEWAYS}?&watch=true&resourceVersion={start}"),
        );
        api.apply(gateway("a"));
        let (_, a) = w.next_event();
        api.drop_watches();
        assert!(w.next().is_none());
        api.apply(gateway("b"));
        let mut w = Stream::open(
            &api,
            &format!("{GATEWAYS}?&watch=true&resourceVersion={}", rv(&a)),
        );
        let (ty, obj) = w.next_event();
        assert_eq!(
            (ty.as_str(), obj["metadata"]["name"].as_str()),
            ("ADDED", Some("b"))
        );
    }

    #[test]
    fn bookmarks_on_demand_and_periodically() {
        let api = KubeApi::start_with(KubeApiOptions {
            bookmark_interval: None,
        });
        let start = api.resource_version();
        let mut with = Stream::open(
            &api,
            &format!("{GATEWAYS}?&watch=true&allowWatchBookmarks=true&resourceVersion={start}"),
        );
        let mut without = Stream::open(
            &api,
            &format!("{GATEWAYS}?&watch=true&resourceVersion={start}"),
        );
        api.wait_for(T, |a| a.watch_count() == 2);
        // A write to another kind moves the global resourceVersion on.
        api.apply(service("default", "s"));
        api.bookmark_now();
        let (ty, bm) = with.next_event();
        assert_eq!(ty, "BOOKMARK");
        assert_eq!(bm["kind"], "Gateway");
        assert_eq!(bm["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(rv(&bm), api.resource_version());
        // The watch that did not allow bookmarks got none: its next event is the write.
        api.apply(gateway("a"));
        assert_eq!(without.next_event().0, "ADDED");
        assert_eq!(with.next_event().0, "ADDED");

        let api = KubeApi::start_with(KubeApiOptions {
            bookmark_interval: Some(Duration::from_millis(50)),
        });
        let mut w = Stream::open(
            &api,
            &format!(
                "{GATEWAYS}?&watch=true&allowWatchBookmarks=true&resourceVersion={}",
                api.resource_version()
            ),
        );
        let (ty, _) = w.next_event();
        assert_eq!(ty, "BOOKMARK");
    }

    #[test]
    fn timeout_seconds_ends_the_stream() {
        let api = KubeApi::start();
        let mut w = Stream::open(
            &api,
            &format!(
                "{GATEWAYS}?&watch=true&timeoutSeconds=1&resourceVersion={}",
                api.resource_version()
            ),
        );
        let started = Instant::now();
        assert!(w.next().is_none());
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn status_writes_change_only_status_and_keep_generation() {
        let api = KubeApi::start_with(KubeApiOptions {
            bookmark_interval: None,
        });
        let created = api.apply(gateway("gw"));
        assert_eq!(created["metadata"]["generation"], 1);
        let mut w = Stream::open(
            &api,
            &format!("{GATEWAYS}?&watch=true&resourceVersion={}", rv(&created)),
        );

        let patch = json!({"spec": {"gatewayClassName": "sneaky"}, "status": {"conditions": [{"type": "Accepted", "status": "True"}]}});
        let (code, obj) = call(
            &api,
            "PATCH",
            &format!("{GATEWAYS}/gw/status"),
            MERGE,
            Some(&patch),
        );
        assert_eq!(code, 200, "{obj}");
        assert_eq!(obj["spec"]["gatewayClassName"], "shardgate");
        assert_eq!(obj["status"]["conditions"][0]["type"], "Accepted");
        assert_eq!(obj["metadata"]["generation"], 1);
        assert!(rv(&obj) > rv(&created));
        assert_eq!(w.next_event().0, "MODIFIED");

        // The same patch again changes nothing: no new resourceVersion, no event.
        let (_, again) = call(
            &api,
            "PATCH",
            &format!("{GATEWAYS}/gw/status"),
            MERGE,
            Some(&patch),
        );
        assert_eq!(rv(&again), rv(&obj));
        assert_eq!(api.resource_version(), rv(&obj));

        // The main resource ignores status and bumps generation on spec changes.
        let patch = json!({"spec": {"gatewayClassName": "other"}, "status": null});
        let (_, main) = call(
            &api,
            "PATCH",
            &format!("{GATEWAYS}/gw"),
            MERGE,
            Some(&patch),
        );
        assert_eq!(main["spec"]["gatewayClassName"], "other");
        assert_eq!(main["status"], obj["status"]);
        assert_eq!(main["metadata"]["generation"], 2);
        let (ty, ev) = w.next_event();
        assert_eq!((ty.as_str(), rv(&ev)), ("MODIFIED", rv(&main)));

        // A label change is metadata: no generation bump.
        let (_, labelled) = call(
            &api,
            "PATCH",
            &format!("{GATEWAYS}/gw"),
            MERGE,
            Some(&json!({"metadata": {"labels": {"x": "y"}}})),
        );
        assert_eq!(labelled["metadata"]["generation"], 2);
        assert_eq!(labelled["metadata"]["labels"]["x"], "y");

        // PUT /status replaces the status only.
        let mut body = labelled;
        body["status"] = json!({"addresses": [{"value": "10.0.0.1"}]});
        body["spec"]["gatewayClassName"] = json!("ignored");
        let (code, put) = call(
            &api,
            "PUT",
            &format!("{GATEWAYS}/gw/status"),
            None,
            Some(&body),
        );
        assert_eq!(code, 200, "{put}");
        assert_eq!(put["status"], json!({"addresses": [{"value": "10.0.0.1"}]}));
        assert_eq!(put["spec"]["gatewayClassName"], "other");
        assert_eq!(put["metadata"]["generation"], 2);

        // set_status and apply (which keeps status).
        api.set_status("Gateway", Some("default"), "gw", json!({"conditions": []}));
        let reapplied = api.apply(gateway("gw"));
        assert_eq!(reapplied["status"], json!({"conditions": []}));
        assert_eq!(reapplied["metadata"]["generation"], 3);
        assert_eq!(reapplied["metadata"]["uid"], created["metadata"]["uid"]);

        // Kinds without a status subresource have no /status path.
        api.apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}}));
        let (code, _) = get(&api, "/api/v1/namespaces/default/secrets/s/status");
        assert_eq!(code, 404);
    }

    #[test]
    fn conflicts_and_already_exists() {
        let api = KubeApi::start();
        const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}});
        let (code, created) = call(&api, "POST", LEASES, None, Some(&lease));
        assert_eq!(code, 201);
        let (code, status) = call(&api, "POST", LEASES, None, Some(&lease));
        assert_eq!(
            (code, status["reason"].as_str()),
            (409, Some("AlreadyExists"))
        );
        assert_eq!(
            status["message"],
            "leases.coordination.k8s.io \"leader\" already exists"
        );

        let mut update = created.clone();
        update["spec"]["holderIdentity"] = json!("b");
        let (code, updated) = call(
            &api,
            "PUT",
            &format!("{LEASES}/leader"),
            None,
            Some(&update),
        );
        assert_eq!(code, 200);
        assert_eq!(updated["spec"]["holderIdentity"], "b");
        // The same body again carries a stale resourceVersion now.
        let (code, status) = call(
            &api,
            "PUT",
            &format!("{LEASES}/leader"),
            None,
            Some(&update),
        );
        assert_eq!(code, 409);
        assert_eq!(status["reason"], "Conflict");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["code"], 409);
        assert_eq!(
            status["message"],
            "Operation cannot be fulfilled on leases.coordination.k8s.io \"leader\": the object has been modified; please apply your changes to the latest version and try again"
        );
        let stale = created["metadata"]["resourceVersion"].clone();
        let (code, _) = call(
            &api,
            "PATCH",
            &format!("{LEASES}/leader"),
            MERGE,
            Some(&json!({"metadata": {"resourceVersion": stale}, "spec": {"holderIdentity": "c"}})),
        );
        assert_eq!(code, 409);
        let current = updated["metadata"]["resourceVersion"].clone();
        let (code, patched) = call(
            &api,
            "PATCH",
            &format!("{LEASES}/leader"),
            MERGE,
            Some(
                &json!({"metadata": {"resourceVersion": current}, "spec": {"holderIdentity": "c"}}),
            ),
        );
        assert_eq!(code, 200);
        assert_eq!(patched["spec"]["holderIdentity"], "c");
        // Delete preconditions.
        let (code, _) = call(
            &api,
            "DELETE",
            &format!("{LEASES}/leader"),
            None,
            Some(&json!({"preconditions": {"resourceVersion": stale}})),
        );
        assert_eq!(code, 409);
        let (code, _) = call(
            &api,
            "DELETE",
            &format!("{LEASES}/leader"),
            None,
            Some(
                &json!({"preconditions": {"resourceVersion": patched["metadata"]["resourceVersion"]}}),
            ),
        );
        assert_eq!(code, 200);
        let (code, status) = call(
            &api,
            "PUT",
            &format!("{LEASES}/leader"),
            None,
            Some(&update),
        );
        assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));
    }

    #[test]
    fn json_patch_operations() {
        let api = KubeApi::start();
        api.apply(service("default", "svc"));
        let path = "/api/v1/namespaces/default/services/svc";
        let ops = json!([
            {"op": "test", "path": "/spec/ports/0/port", "value": 80},
            {"op": "add", "path": "/metadata/labels/tier", "value": "web"},
            {"op": "replace", "path": "/spec/ports/0/port", "value": 8080},
            {"op": "add", "path": "/spec/ports/-", "value": {"port": 443}},
            {"op": "remove", "path": "/metadata/labels/app"},
            {"op": "copy", "from": "/spec/ports/1", "path": "/spec/extra"},
            {"op": "move", "from": "/spec/extra", "path": "/spec/moved"},
        ]);
        let (code, obj) = call(&api, "PATCH", path, JSON_PATCH, Some(&ops));
        assert_eq!(code, 200, "{obj}");
        assert_eq!(obj["metadata"]["labels"], json!({"tier": "web"}));
        assert_eq!(obj["spec"]["ports"], json!([{"port": 8080}, {"port": 443}]));
        assert_eq!(obj["spec"]["moved"], json!({"port": 443}));
        assert!(obj["spec"].get("extra").is_none());
        assert_eq!(obj["metadata"]["generation"], 2);

        let before = api.resource_version();
        let failing = json!([{"op": "test", "path": "/spec/ports/0/port", "value": 1}, {"op": "remove", "path": "/spec/moved"}]);
        let (code, status) = call(&api, "PATCH", path, JSON_PATCH, Some(&failing));
        assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")));
        assert_eq!(api.resource_version(), before);
        let (code, _) = call(
            &api,
            "PATCH",
            path,
            JSON_PATCH,
            Some(&json!([{"op": "remove", "path": "/nope"}])),
        );
        assert_eq!(code, 422);
        // Strategic merge works on built-in kinds (as a merge patch) and is refused for CRDs.
        let (code, _) = call(
            &api,
            "PATCH",
            path,
            Some("application/strategic-merge-patch+json"),
            Some(&json!({"metadata": {"labels": {"s": "1"}}})),
        );
        assert_eq!(code, 200);
        api.apply(gateway("gw"));
        let (code, status) = call(
            &api,
            "PATCH",
            &format!("{GATEWAYS}/gw"),
            Some("application/strategic-merge-patch+json"),
            Some(&json!({})),
        );
        assert_eq!(
            (code, status["reason"].as_str()),
            (415, Some("UnsupportedMediaType"))
        );
    }

    #[test]
    fn server_side_apply() {
        let api = KubeApi::start();
        let body = gateway("gw");
        let (code, status) = call(&api, "PATCH", &format!("{GATEWAYS}/gw"), APPLY, Some(&body));
        assert_eq!(
            (code, status["reason"].as_str()),
            (400, Some("BadRequest")),
            "fieldManager is required"
        );
        let (code, created) = call(
            &api,
            "PATCH",
            &format!("{GATEWAYS}/gw?&fieldManager=shardgate&force=true"),
            APPLY,
            Some(&body),
        );
        assert_eq!(code, 201, "apply creates: {created}");
        let status_body = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "status": {"conditions": [{"type": "Programmed"}]}});
        let (code, obj) = call(
            &api,
            "PATCH",
            &format!("{GATEWAYS}/gw/status?&fieldManager=shardgate&force=true"),
            APPLY,
            Some(&status_body),
        );
        assert_eq!(code, 200);
        assert_eq!(obj["status"]["conditions"][0]["type"], "Programmed");
        assert_eq!(obj["metadata"]["generation"], 1);
        let (code, _) = call(
            &api,
            "PATCH",
            &format!("{GATEWAYS}/nope/status?&fieldManager=shardgate"),
            APPLY,
            Some(&status_body),
        );
        assert_eq!(code, 404);
        let patches: Vec<Recorded> = api
            .requests()
            .into_iter()
            .filter(|r| r.verb == "patch")
            .collect();
        assert_eq!(patches.len(), 4);
        assert_eq!(patches[1].field_manager.as_deref(), Some("shardgate"));
        assert_eq!(
            patches[1].content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(patches[2].subresource.as_deref(), Some("status"));
        assert_eq!(patches[1].code, 201);
    }

    #[test]
    fn unavailable_answers_503_and_ends_watches() {
        let api = KubeApi::start();
        let mut w = Stream::open(
            &api,
            &format!(
                "{GATEWAYS}?&watch=true&resourceVersion={}",
                api.resource_version()
            ),
        );
        api.wait_for(T, |a| a.watch_count() == 1);
        // A kept-alive connection (ureq pools them) gets 503 too.
        assert_eq!(get(&api, GATEWAYS).0, 200);
        api.set_available(false);
        assert!(w.next().is_none());
        let (code, status) = get(&api, GATEWAYS);
        assert_eq!(code, 503);
        assert_eq!(status["reason"], "ServiceUnavailable");
        assert_eq!(status["kind"], "Status");
        let w = Stream::open(&api, &format!("{GATEWAYS}?&watch=true"));
        assert_eq!(w.status, 503);
        assert_eq!(get(&api, "/version").0, 503);
        api.set_available(true);
        assert_eq!(get(&api, GATEWAYS).0, 200);
        api.wait_for(T, |a| a.watch_count() == 0);
    }

    #[test]
    fn unreachable_refuses_connections_and_drops_open_ones() {
        let api = KubeApi::start();
        assert_eq!(get(&api, GATEWAYS).0, 200);
        let mut w = Stream::open(
            &api,
            &format!(
                "{GATEWAYS}?&watch=true&resourceVersion={}",
                api.resource_version()
            ),
        );
        api.wait_for(T, |a| a.watch_count() == 1);
        api.set_reachable(false);
        // The open connection is closed, without the stream's last chunk.
        let mut rest = Vec::new();
        match w.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(
                !rest.ends_with(b"0\r\n\r\n"),
                "the stream was cut, not ended"
            ),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
        let refused = TcpStream::connect(api.addr()).expect_err("connections are refused");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        api.wait_for(T, |a| a.watch_count() == 0);
        api.set_reachable(true);
        assert_eq!(get(&api, GATEWAYS).0, 200);
    }

    #[test]
    fn uninstalled_kinds_are_404_and_leave_discovery() {
        let api = KubeApi::start();
        let tcp = "/apis/gateway.networking.k8s.io/v1alpha2/namespaces/default/tcproutes";
        let mut w = Stream::open(
            &api,
            &format!(
                "{tcp}?&watch=true&resourceVersion={}",
                api.resource_version()
            ),
        );
        api.wait_for(T, |a| a.watch_count() == 1);
        api.set_installed("TCPRoute", false);
        api.set_installed("UDPRoute", false);
        assert!(w.next().is_none());
        let (code, status) = get(&api, tcp);
        assert_eq!(code, 404);
        assert_eq!(
            status["message"],
            "the server could not find the requested resource"
        );
        assert_eq!(get(&api, "/apis/gateway.networking.k8s.io/v1alpha2").0, 404);
        let (_, groups) = get(&api, "/apis");
        let gw = groups["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["name"] == GW)
            .expect("gateway group")
            .clone();
        assert_eq!(gw["versions"].as_array().map(Vec::len), Some(1));
        api.set_installed("TCPRoute", true);
        assert_eq!(get(&api, tcp).0, 200);
        let (_, rl) = get(&api, "/apis/gateway.networking.k8s.io/v1alpha2");
        assert_eq!(rl["resources"][0]["name"], "tcproutes");
        assert_eq!(get(&api, "/apis/example.com/v1/widgets").0, 404);
    }

    #[test]
    fn discovery_and_version() {
        let api = KubeApi::start();
        let (code, v) = get(&api, "/version");
        assert_eq!(code, 200);
        assert_eq!(
            (
                v["major"].as_str(),
                v["minor"].as_str(),
                v["gitVersion"].as_str()
            ),
            (Some("1"), Some("33"), Some("v1.33.0"))
        );
        let (_, apis) = get(&api, "/api");
        assert_eq!(apis["versions"], json!(["v1"]));
        let (_, core) = get(&api, "/api/v1");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(
            names.contains(&"services")
                && names.contains(&"services/status")
                && names.contains(&"secrets")
        );
        let (_, group) = get(&api, "/apis/coordination.k8s.io");
        assert_eq!(
            group["preferredVersion"]["groupVersion"],
            "coordination.k8s.io/v1"
        );
    }

    #[test]
    fn selectors_filter_lists_and_watches() {
        let api = KubeApi::start_with(KubeApiOptions {
            bookmark_interval: None,
        });
        for name in ["a", "b", "c"] {
            api.apply(service("default", name));
        }
        let mut unlabelled = service("default", "d");
        unlabelled["metadata"]
            .as_object_mut()
            .map(|m| m.remove("labels"));
        api.apply(unlabelled);
        let names = |q: &str| -> Vec<String> {
            let (code, list) = get(&api, &format!("/api/v1/services?{q}"));
            assert_eq!(code, 200, "{list}");
            list["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_owned())
                .collect()
        };
        assert_eq!(names("labelSelector=app%3Da"), ["a"]);
        assert_eq!(names("labelSelector=app%20in%20(a%2Cc)"), ["a", "c"]);
        assert_eq!(names("labelSelector=app%20notin%20(a%2Cc)"), ["b", "d"]);
        assert_eq!(names("labelSelector=app!%3Da"), ["b", "c", "d"]);
        assert_eq!(names("labelSelector=!app"), ["d"]);
        assert_eq!(names("labelSelector=app"), ["a", "b", "c"]);
        assert_eq!(names("fieldSelector=metadata.name%3Db"), ["b"]);
        assert_eq!(
            names(
                "fieldSelector=metadata.namespace%3Ddefault,metadata.name!%3Db&labelSelector=app"
            ),
            ["a", "c"]
        );
        assert_eq!(names("limit=1&labelSelector=app%3Dc"), ["c"]);

        // An object leaving the selection is DELETED, one entering it ADDED.
        let mut w = Stream::open(&api, &format!("/api/v1/namespaces/default/services?&watch=true&labelSelector=tier%3Dweb&resourceVersion={}", api.resource_version()));
        let path = "/api/v1/namespaces/default/services/a";
        call(
            &api,
            "PATCH",
            path,
            MERGE,
            Some(&json!({"metadata": {"labels": {"tier": "web"}}})),
        );
        call(
            &api,
            "PATCH",
            path,
            MERGE,
            Some(&json!({"spec": {"type": "ClusterIP"}})),
        );
        call(
            &api,
            "PATCH",
            path,
            MERGE,
            Some(&json!({"metadata": {"labels": {"tier": "db"}}})),
        );
        call(
            &api,
            "PATCH",
            path,
            MERGE,
            Some(&json!({"metadata": {"labels": {"tier": "web"}}})),
        );
        let seen: Vec<String> = (0..4).map(|_| w.next_event().0).collect();
        assert_eq!(seen, ["ADDED", "MODIFIED", "DELETED", "ADDED"]);
    }

    #[test]
    fn requests_are_recorded() {
        let api = KubeApi::start();
        api.apply(service("default", "s"));
        get(&api, "/api/v1/services?&limit=500");
        get(&api, "/api/v1/namespaces/default/services/s");
        call(
            &api,
            "PATCH",
            "/api/v1/namespaces/default/services/s/status?&fieldManager=fm",
            MERGE,
            Some(&json!({"status": {}})),
        );
        call(
            &api,
            "DELETE",
            "/api/v1/namespaces/default/services/s",
            None,
            None,
        );
        get(&api, "/version");
        let _w = Stream::open(
            &api,
            "/api/v1/services?&watch=true&timeoutSeconds=1&resourceVersion=1",
        );
        let r = api.requests();
        let verbs: Vec<&str> = r.iter().map(|r| r.verb.as_str()).collect();
        assert_eq!(verbs, ["list", "get", "patch", "delete", "watch"]);
        assert_eq!(r[0].query, "&limit=500");
        assert_eq!(r[0].namespace, None);
        assert_eq!(r[1].namespace.as_deref(), Some("default"));
        assert_eq!(r[1].name.as_deref(), Some("s"));
        assert_eq!(r[2].subresource.as_deref(), Some("status"));
        assert_eq!(r[2].field_manager.as_deref(), Some("fm"));
        assert_eq!(
            r[2].content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(
            (
                r[2].group.as_str(),
                r[2].version.as_str(),
                r[2].resource.as_str()
            ),
            ("", "v1", "services")
        );
        api.clear_requests();
        assert!(api.requests().is_empty());
    }

    #[test]
    fn apply_yaml_and_kubeconfig() {
        let api = KubeApi::start();
        let applied = api.apply_yaml(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: skipped\n---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\nmetadata:\n  name: r\n  namespace: team\nspec:\n  hostnames: [a.example]\n",
        );
        assert_eq!(applied.len(), 2);
        assert_eq!(applied[1]["apiVersion"], "gateway.networking.k8s.io/v1");
        let rv_before = api.resource_version();
        api.apply_yaml("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  namespace: team\nspec:\n  hostnames: [a.example]\n");
        assert_eq!(
            api.resource_version(),
            rv_before,
            "re-applying the same object is a no-op"
        );
        assert_eq!(api.list("HTTPRoute").len(), 1);
        assert!(api.get("HTTPRoute", Some("team"), "r").is_some());

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kubeconfig");
        api.write_kubeconfig(&path);
        let config: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&path).expect("read")).expect("YAML");
        assert_eq!(config["clusters"][0]["cluster"]["server"], api.url());
        assert_eq!(config["current-context"], "kubeapi-standin");
        assert_eq!(config["users"][0]["user"]["token"], "test-token");
        assert_eq!(config["contexts"][0]["context"]["namespace"], "default");
    }
}
