//! The Kubernetes provider: one kube-runtime watcher per kind the store
//! holds, turned into [`Update`]s for the controlplane's main loop.
//!
//! Watchers list, then watch from the list's resourceVersion; on `410 Gone`,
//! a dropped stream or an API outage they re-list with the default backoff
//! (0.8 s doubling to 30 s, jittered). A re-list arrives as one
//! [`Update::Synced`] holding every object of the kind, so the store is
//! swapped atomically and never emptied while the API is away.
//!
//! Secrets are the exception to "watch everything": only namespaces that
//! hold a Secret some listener of ours refers to are watched (one namespaced
//! watch each, started and stopped as Gateways change). A cluster-wide Secret
//! watch would copy every Secret's data of the cluster into this process on
//! every ingress node; watching by name would need one watch per Secret. The
//! namespaced watch caches the Secrets of those namespaces only, and the RBAC
//! needed is the same list/watch on secrets.
//!
//! A kind whose API is missing (the experimental TCPRoute and UDPRoute CRDs
//! are often not installed) answers 404; it counts as synced and empty, and
//! its watcher keeps retrying with backoff, so installing the CRD later
//! works without a restart.

use crate::store::Object;
use crossbeam_channel::Sender;
use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::Path;
use tokio::task::JoinHandle;

/// What a watcher tells the main loop.
#[derive(Debug)]
pub enum Update {
    /// A (re-)list finished: these are all the objects of `kind` (in
    /// `namespace`, for a namespaced watch).
    Synced {
        /// The kind.
        kind: &'static str,
        /// The namespace of a namespaced watch.
        namespace: Option<String>,
        /// Every object listed.
        objects: Vec<Object>,
    },
    /// An object was added or changed.
    Applied(Object),
    /// An object was deleted.
    Deleted(Object),
    /// A watch or list failed; the watcher retries with backoff.
    WatchError {
        /// The kind.
        kind: &'static str,
        /// The namespace of a namespaced watch.
        namespace: Option<String>,
        /// What failed.
        error: String,
        /// The API answered 404: the kind is not installed.
        not_installed: bool,
        /// The API did not answer at all (connection, timeout), as opposed
        /// to answering with an error status.
        transport: bool,
    },
    /// Something outside the watches asks for a new translation (leadership
    /// was acquired, so status must be written afresh).
    Resync,
}

/// Builds a client from a kubeconfig file, or from the in-cluster service
/// account when `kubeconfig` is `None`.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    use anyhow::Context;
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("bad kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster().context(
            "no in-cluster configuration (is this running in a pod? else pass --kubeconfig)",
        )?,
    };
    Client::try_from(config).context("cannot build the Kubernetes client")
}

fn client_error(e: &watcher::Error) -> Option<&kube::Error> {
    match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => Some(e),
        _ => None,
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    matches!(client_error(e), Some(kube::Error::Api(s)) if s.code == 404)
}

/// The API did not answer (as opposed to answering with an error status,
/// which includes 410 Gone and 503 from an overloaded server).
fn is_transport(e: &watcher::Error) -> bool {
    matches!(
        client_error(e),
        Some(kube::Error::HyperError(_) | kube::Error::Service(_))
    )
}

/// Watches one kind (in one namespace, or all) and forwards updates until
/// the receiver is gone or the task is aborted.
fn spawn_watch<K>(
    api: Api<K>,
    kind: &'static str,
    namespace: Option<String>,
    wrap: fn(K) -> Object,
    tx: Sender<Update>,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    tokio::spawn(async move {
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut listed = Vec::new();
        while let Some(event) = stream.next().await {
            let update = match event {
                Ok(Event::Init) => {
                    listed.clear();
                    continue;
                }
                Ok(Event::InitApply(o)) => {
                    listed.push(wrap(o));
                    continue;
                }
                Ok(Event::InitDone) => Update::Synced {
                    kind,
                    namespace: namespace.clone(),
                    objects: std::mem::take(&mut listed),
                },
                Ok(Event::Apply(o)) => Update::Applied(wrap(o)),
                Ok(Event::Delete(o)) => Update::Deleted(wrap(o)),
                Err(e) => Update::WatchError {
                    kind,
                    namespace: namespace.clone(),
                    not_installed: is_not_found(&e),
                    transport: is_transport(&e),
                    error: e.to_string(),
                },
            };
            if tx.send(update).is_err() {
                return;
            }
        }
    })
}

/// Starts the cluster-wide watchers: every kind but Secret.
pub fn spawn_watchers(client: &Client, tx: &Sender<Update>) -> Vec<JoinHandle<()>> {
    use gateway_api::experimental::httproutes::HttpRoute;
    use gateway_api::experimental::tcproutes::TcpRoute;
    use gateway_api::experimental::udproutes::UdpRoute;
    use gateway_api::gatewayclasses::GatewayClass;
    use gateway_api::gateways::Gateway;
    use gateway_api::grpcroutes::GrpcRoute;
    use gateway_api::referencegrants::ReferenceGrant;
    use gateway_api::tlsroutes::TlsRoute;
    use k8s_openapi::api::core::v1::{Namespace, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let c = || client.clone();
    let t = || tx.clone();
    vec![
        spawn_watch(
            Api::<GatewayClass>::all(c()),
            "GatewayClass",
            None,
            Object::GatewayClass,
            t(),
        ),
        spawn_watch(
            Api::<Gateway>::all(c()),
            "Gateway",
            None,
            Object::Gateway,
            t(),
        ),
        spawn_watch(
            Api::<HttpRoute>::all(c()),
            "HTTPRoute",
            None,
            Object::HttpRoute,
            t(),
        ),
        spawn_watch(
            Api::<GrpcRoute>::all(c()),
            "GRPCRoute",
            None,
            Object::GrpcRoute,
            t(),
        ),
        spawn_watch(
            Api::<TlsRoute>::all(c()),
            "TLSRoute",
            None,
            Object::TlsRoute,
            t(),
        ),
        spawn_watch(
            Api::<TcpRoute>::all(c()),
            "TCPRoute",
            None,
            Object::TcpRoute,
            t(),
        ),
        spawn_watch(
            Api::<UdpRoute>::all(c()),
            "UDPRoute",
            None,
            Object::UdpRoute,
            t(),
        ),
        spawn_watch(
            Api::<ReferenceGrant>::all(c()),
            "ReferenceGrant",
            None,
            Object::ReferenceGrant,
            t(),
        ),
        spawn_watch(
            Api::<Namespace>::all(c()),
            "Namespace",
            None,
            Object::Namespace,
            t(),
        ),
        spawn_watch(
            Api::<Service>::all(c()),
            "Service",
            None,
            Object::Service,
            t(),
        ),
        spawn_watch(
            Api::<EndpointSlice>::all(c()),
            "EndpointSlice",
            None,
            Object::EndpointSlice,
            t(),
        ),
    ]
}

/// Whether [`spawn_watchers`] watches `kind` cluster-wide: every kind the
/// store holds but Secrets (see [`SecretWatches`]).
pub fn watched_cluster_wide(kind: &str) -> bool {
    kind != "Secret"
}

/// One Secret watch per namespace that holds referenced Secrets.
pub struct SecretWatches {
    client: Client,
    tx: Sender<Update>,
    watches: BTreeMap<String, JoinHandle<()>>,
}

impl SecretWatches {
    /// No watches yet.
    pub fn new(client: Client, tx: Sender<Update>) -> Self {
        Self {
            client,
            tx,
            watches: BTreeMap::new(),
        }
    }

    /// Watches exactly `namespaces`. A namespace no longer wanted has its
    /// watch stopped and its Secrets dropped (an empty `Synced`).
    pub fn set(&mut self, namespaces: &BTreeSet<String>) {
        use k8s_openapi::api::core::v1::Secret;
        let gone: Vec<String> = self
            .watches
            .keys()
            .filter(|ns| !namespaces.contains(*ns))
            .cloned()
            .collect();
        for ns in gone {
            if let Some(task) = self.watches.remove(&ns) {
                task.abort();
            }
            tracing::info!(namespace = %ns, "no longer watching Secrets");
            let _ = self.tx.send(Update::Synced {
                kind: "Secret",
                namespace: Some(ns),
                objects: Vec::new(),
            });
        }
        for ns in namespaces {
            if !self.watches.contains_key(ns) {
                tracing::info!(namespace = %ns, "watching Secrets");
                let api = Api::<Secret>::namespaced(self.client.clone(), ns);
                let task = spawn_watch(
                    api,
                    "Secret",
                    Some(ns.clone()),
                    Object::Secret,
                    self.tx.clone(),
                );
                self.watches.insert(ns.clone(), task);
            }
        }
    }

    /// Namespaces watched now.
    pub fn namespaces(&self) -> impl Iterator<Item = &String> {
        self.watches.keys()
    }
}

impl Drop for SecretWatches {
    fn drop(&mut self) {
        for task in self.watches.values() {
            task.abort();
        }
    }
}
