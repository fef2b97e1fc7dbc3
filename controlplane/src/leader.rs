//! Leader election with a `coordination.k8s.io/v1` Lease, the way client-go
//! does it: every controlplane publishes snapshots for its own node, but only
//! the holder of the Lease writes status.
//!
//! - The holder renews `renewTime` every `retry_period`.
//! - A candidate takes the Lease over when it is released (no holder) or when
//!   its record (holder, renewTime, resourceVersion) has not changed for
//!   `leaseDurationSeconds` as measured on the candidate's own clock: no
//!   comparison of timestamps written by other machines, so clock skew
//!   between nodes does not matter.
//! - Every write carries the resourceVersion it read; a 409 Conflict means
//!   another candidate won the race.
//! - A leader that has not renewed for `renew_deadline` (shorter than the
//!   lease duration) stops counting itself as leader, so it stops writing
//!   status before anyone else may take over.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the Lease lives and how it is held.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the controlplane's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity (node or pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

/// Whether this process leads, shared with the status writer.
pub struct Leadership {
    renewed_at: Mutex<Option<Instant>>,
    renew_deadline: Duration,
}

impl Leadership {
    /// Not leading.
    pub fn new(renew_deadline: Duration) -> Self {
        Self {
            renewed_at: Mutex::new(None),
            renew_deadline,
        }
    }

    /// Whether the Lease was renewed within the renew deadline.
    pub fn is_leader(&self) -> bool {
        self.renewed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < self.renew_deadline)
    }

    fn renewed(&self, at: Instant) {
        *self.renewed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    fn lost(&self) {
        *self.renewed_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// What the candidate last saw of the Lease, and when it changed.
struct Observed {
    record: (Option<String>, Option<MicroTime>, Option<String>),
    at: Instant,
}

/// The election loop's state.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    /// An elector for `config`'s Lease.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    fn lease_seconds(&self) -> i32 {
        self.config.lease_duration.as_secs().max(1) as i32
    }

    /// One attempt to acquire or renew. `Ok(true)`: we hold the Lease now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (
            spec.holder_identity.clone(),
            spec.renew_time.clone(),
            lease.metadata.resource_version.clone(),
        );
        if self.observed.as_ref().is_none_or(|o| o.record != record) {
            self.observed = Some(Observed {
                record,
                at: Instant::now(),
            });
        }
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let ours = holder == self.config.identity;
        let duration = Duration::from_secs(
            spec.lease_duration_seconds
                .map_or(self.config.lease_duration.as_secs(), |s| s.max(1) as u64),
        );
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|o| o.at.elapsed() >= duration);
        if !ours && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let mut next = spec;
        if !ours {
            next.holder_identity = Some(self.config.identity.clone());
            next.acquire_time = Some(now());
            next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
        }
        next.lease_duration_seconds = Some(self.lease_seconds());
        next.renew_time = Some(now());
        lease.spec = Some(next);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if we hold it, so a successor need not wait for it
    /// to expire (a rolling update, a drain).
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        lease.spec = Some(spec);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// Runs the election forever, keeping `leadership` current and calling
    /// `changed(leading)` on every transition.
    pub async fn run(mut self, leadership: &Leadership, changed: impl Fn(bool)) {
        let mut leading = false;
        loop {
            let started = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => leadership.renewed(started),
                Ok(false) => leadership.lost(),
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.config.name, "cannot acquire or renew the Lease")
                }
            }
            let now_leading = leadership.is_leader();
            if now_leading != leading {
                leading = now_leading;
                if leading {
                    tracing::info!(identity = %self.config.identity, "acquired the Lease: writing status");
                } else {
                    tracing::warn!(identity = %self.config.identity, "not leading: status writes stop");
                }
                changed(leading);
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }
}
