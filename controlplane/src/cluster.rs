//! Kubernetes mode: the watchers feed the store, the main loop translates
//! and publishes, the Lease holder writes status.
//!
//! ```text
//!  watchers (tokio) ──Update──▶ main loop (this thread): Store ─▶ Cycle ─▶ segment
//!  Elector (Lease)  ──Resync──▶                           └─▶ status items ─▶ Writer (leader only)
//!  API probe ─▶ Health / metrics
//! ```
//!
//! Translation runs on the main thread, off the async runtime, so a large
//! translation never delays Lease renewals or watch reads.
//!
//! Nothing is published until every kind has been listed once (and the
//! Secrets of referenced namespaces, up to a grace period), so a restart
//! never publishes a half-read configuration; until then the dataplane keeps
//! serving what the segment holds. Watch failures never remove objects: only
//! a completed re-list replaces a kind's objects.

use crate::admin::Metrics;
use crate::cycle::Cycle;
use crate::leader::{Elector, Leadership, LeaseConfig};
use crate::provider::kube::{self as provider, watched_cluster_wide, SecretWatches, Update};
use crate::status::{now_rfc3339, StatusBook, CONTROLLER_NAME};
use crate::status_sync::{self, Writer};
use crate::store::{Object, Store, KINDS};
use anyhow::Context;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kubernetes mode settings.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// Kubeconfig file; in-cluster configuration when `None`.
    pub kubeconfig: Option<PathBuf>,
    /// Leader election.
    pub lease: LeaseConfig,
    /// Status writes per second.
    pub status_qps: f64,
    /// Status write burst.
    pub status_burst: u32,
    /// Quiet time after a change before translating.
    pub coalesce: Duration,
    /// How long a translation waits for a newly referenced namespace's
    /// Secrets to be listed.
    pub secret_sync_grace: Duration,
    /// Interval of the API reachability probe.
    pub probe_interval: Duration,
}

/// Runs Kubernetes mode until the process is stopped.
pub fn run(settings: KubeSettings, mut cycle: Cycle, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    metrics.health.update(|h| h.mode = "kube");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("shardgate-kube")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let _enter = rt.enter();
    let client = rt.block_on(provider::client(settings.kubeconfig.as_deref()))?;
    let (tx, rx) = crossbeam_channel::unbounded::<Update>();
    let _watchers = provider::spawn_watchers(&client, &tx);
    let mut secrets = SecretWatches::new(client.clone(), tx.clone());

    let leadership = Arc::new(Leadership::new(settings.lease.renew_deadline));
    {
        let elector = Elector::new(client.clone(), settings.lease.clone());
        let (leadership, metrics, tx) = (Arc::clone(&leadership), Arc::clone(&metrics), tx);
        rt.spawn(async move {
            elector
                .run(&leadership, |leading| {
                    metrics.leader.set(i64::from(leading));
                    metrics.health.update(|h| h.leader = leading);
                    if leading {
                        let _ = tx.send(Update::Resync);
                    }
                })
                .await;
        });
    }
    rt.spawn(probe(
        client.clone(),
        Arc::clone(&metrics),
        settings.probe_interval,
    ));
    rt.spawn(release_on_signal(client.clone(), settings.lease.clone()));
    let (status_tx, status_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    rt.spawn(
        Writer::new(
            client,
            Arc::clone(&leadership),
            Arc::clone(&metrics),
            settings.status_qps,
            settings.status_burst,
        )
        .run(status_rx),
    );

    let mut store = Store::default();
    let mut synced: BTreeSet<String> = BTreeSet::new();
    let mut wanted_secrets: BTreeSet<String> = BTreeSet::new();
    let mut secrets_pending_since: Option<Instant> = None;
    let mut book = StatusBook::default();
    let mut dirty = false;
    loop {
        for update in next_batch(&rx, settings.coalesce) {
            dirty |= apply(&mut store, &mut synced, update, &metrics);
        }
        let want = store.referenced_secret_namespaces(CONTROLLER_NAME);
        if want != wanted_secrets {
            secrets.set(&want);
            wanted_secrets = want;
        }
        let mut unsynced: Vec<String> = KINDS
            .iter()
            .filter(|k| watched_cluster_wide(k) && !synced.contains(**k))
            .map(|k| (*k).to_owned())
            .collect();
        let cluster_synced = unsynced.is_empty();
        let pending_secrets: Vec<String> = wanted_secrets
            .iter()
            .map(|ns| format!("Secret/{ns}"))
            .filter(|tag| !synced.contains(tag))
            .collect();
        let secrets_ready = if pending_secrets.is_empty() {
            secrets_pending_since = None;
            true
        } else {
            secrets_pending_since
                .get_or_insert_with(Instant::now)
                .elapsed()
                >= settings.secret_sync_grace
        };
        unsynced.extend(pending_secrets);
        metrics.health.update(|h| h.unsynced = unsynced.clone());
        if dirty && cluster_synced && secrets_ready {
            dirty = false;
            let t = cycle.run(&store)?;
            if leadership.is_leader() {
                let docs = book.render(&t.status, &now_rfc3339());
                status_tx.send_replace(Arc::new(status_sync::items(&docs, &store)));
            }
        }
    }
}

/// Waits up to a second for an update, then gathers those that follow
/// within `coalesce` of each other (bounded), so a burst becomes one
/// translation.
fn next_batch(rx: &crossbeam_channel::Receiver<Update>, coalesce: Duration) -> Vec<Update> {
    let Ok(first) = rx.recv_timeout(Duration::from_secs(1)) else {
        return Vec::new();
    };
    let mut batch = vec![first];
    let deadline = Instant::now() + coalesce * 10;
    while Instant::now() < deadline {
        match rx.recv_timeout(coalesce) {
            Ok(u) => batch.push(u),
            Err(_) => break,
        }
    }
    batch
}

/// The object as translation sees it: without status, resourceVersion and
/// managedFields, which change on every status write.
fn spec_view(object: &Object) -> serde_json::Value {
    let mut v = match object {
        Object::GatewayClass(o) => serde_json::to_value(o),
        Object::Gateway(o) => serde_json::to_value(o),
        Object::HttpRoute(o) => serde_json::to_value(o),
        Object::GrpcRoute(o) => serde_json::to_value(o),
        Object::TlsRoute(o) => serde_json::to_value(o),
        Object::TcpRoute(o) => serde_json::to_value(o),
        Object::UdpRoute(o) => serde_json::to_value(o),
        // Status of these kinds is never read by translation and never
        // written by us: any change counts.
        _ => return serde_json::Value::Null,
    }
    .unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    v
}

/// Applies one update to the store. Returns whether translation's input
/// changed.
fn apply(
    store: &mut Store,
    synced: &mut BTreeSet<String>,
    update: Update,
    metrics: &Metrics,
) -> bool {
    let tag = |kind: &str, ns: &Option<String>| match ns {
        Some(ns) => format!("{kind}/{ns}"),
        None => kind.to_owned(),
    };
    match update {
        Update::Synced {
            kind,
            namespace,
            objects,
        } => {
            tracing::info!(kind, namespace = ?namespace, objects = objects.len(), "listed");
            store.replace_kind(kind, namespace.as_deref(), objects);
            synced.insert(tag(kind, &namespace));
            reachable(metrics);
            true
        }
        Update::Applied(object) => {
            reachable(metrics);
            let before = store.get(&object).map(|o| spec_view(&o));
            let after = spec_view(&object);
            store.insert(object);
            before.is_none_or(|b| b.is_null() || b != after)
        }
        Update::Deleted(object) => {
            reachable(metrics);
            store.remove(&object);
            true
        }
        Update::WatchError {
            kind,
            namespace,
            error,
            not_installed,
            transport,
        } => {
            metrics.watch_errors.with_label_values(&[kind]).inc();
            if not_installed {
                let t = tag(kind, &namespace);
                if synced.insert(t) {
                    tracing::warn!(kind, "the API does not serve this kind (CRD not installed?); treating it as empty and retrying with backoff");
                }
                store.replace_kind(kind, namespace.as_deref(), Vec::new());
                return true;
            }
            tracing::warn!(kind, namespace = ?namespace, error = %error, "watch failed; retrying with backoff, serving the last snapshot");
            if transport {
                metrics.api_reachable.set(0);
                metrics.health.api(false, Some(error));
            }
            false
        }
        Update::Resync => true,
    }
}

fn reachable(metrics: &Metrics) {
    if metrics.api_reachable.get() == 0 {
        metrics.api_reachable.set(1);
        metrics.health.api(true, None);
    }
}

/// Asks the API for its version every `interval`: the reachability that
/// `/status` and `shardgate_controlplane_api_reachable` report.
async fn probe(client: kube::Client, metrics: Arc<Metrics>, interval: Duration) {
    loop {
        match tokio::time::timeout(interval, client.apiserver_version()).await {
            Ok(Ok(_)) => reachable(&metrics),
            Ok(Err(e)) => {
                if metrics.api_reachable.get() != 0 || metrics.health.get().last_api_error.is_none()
                {
                    tracing::warn!(error = %e, "the Kubernetes API does not answer; serving the last snapshot");
                }
                metrics.api_reachable.set(0);
                metrics.health.api(false, Some(e.to_string()));
            }
            Err(_) => {
                metrics.api_reachable.set(0);
                metrics
                    .health
                    .api(false, Some("version probe timed out".to_owned()));
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// On SIGTERM or SIGINT, gives up the Lease if held (so a successor takes
/// over at once, not after the lease duration) and exits.
async fn release_on_signal(client: kube::Client, lease: LeaseConfig) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let mut elector = Elector::new(client, lease);
    match tokio::time::timeout(Duration::from_secs(2), elector.release()).await {
        Ok(Ok(())) => tracing::info!("stopping; Lease released if held"),
        Ok(Err(e)) => tracing::warn!(error = %e, "stopping; cannot release the Lease"),
        Err(_) => tracing::warn!("stopping; releasing the Lease timed out"),
    }
    std::process::exit(0);
}
