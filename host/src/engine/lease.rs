//! One run at a time per migration: a `coordination.k8s.io/v1` Lease `mtcd-<migration>` in
//! the migration's first destination namespace, so a CronJob run, an `apply --watch` loop
//! and a person running `mtcd apply` never apply the same migration at once.
//!
//! - The holder is `<hostname>/<pid>` (in a pod the hostname is the pod's name).
//! - `leaseDurationSeconds` is [`LEASE_SECONDS`]; the holder renews `renewTime` every
//!   [`RENEW_EVERY`] while its run lasts and deletes the Lease when it ends.
//! - A Lease whose holder did not renew it for longer than its duration is stale (the holder
//!   died, or its node did): it is taken over (`leaseTransitions` + 1).
//! - A Lease held by someone alive: the run waits, with an event every 2 s naming the holder,
//!   up to `wait` (default [`DEFAULT_WAIT`]); then it refuses with the holder and how long
//!   it has held the lock. Nothing was read or written by then.
//! - The namespace does not exist yet (the first sync creates it): nobody can hold a Lease
//!   there, so the run goes on without one and says so.
//!
//! Every write is a create or a replace carrying the read `resourceVersion`: two runs that
//! race for a free or stale Lease cannot both win (the loser gets 409 and reads again).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};

use super::{Engine, EngineError};
use crate::labels;
use crate::progress::Event;

/// How long a Lease stays valid after its last renewal.
pub const LEASE_SECONDS: i32 = 30;
/// How often the holder renews.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How long a run waits for a Lease someone else holds before it refuses.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(40);

/// The Lease's name for a migration.
pub fn lease_name(migration: &str) -> String {
    format!("mtcd-{migration}")
}

/// Who this process is, as a Lease holder: `<hostname>/<pid>`.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}/{}", std::process::id())
}

/// The Leases one run holds; [`Locks::release`] gives them back. Dropped without release
/// (a panic, a killed process), they go stale after [`LEASE_SECONDS`].
pub struct Locks {
    held: Vec<(Api<Lease>, String)>,
    identity: String,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Locks {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}

impl Locks {
    /// Stops renewing and deletes each Lease this run still holds.
    pub async fn release(mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        for (api, name) in std::mem::take(&mut self.held) {
            let Ok(Some(l)) = api.get_opt(&name).await else { continue };
            if holder(&l) != Some(self.identity.as_str()) {
                continue; // taken over meanwhile: not ours to delete
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions { uid: None, resource_version: l.metadata.resource_version.clone() }),
                ..Default::default()
            };
            let _ = api.delete(&name, &dp).await;
        }
    }
}

fn holder(l: &Lease) -> Option<&str> {
    l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).filter(|h| !h.is_empty())
}

/// Seconds since `t` (0 when in the future).
fn seconds_since(t: &MicroTime, now: Timestamp) -> i64 {
    (now.as_second() - t.0.as_second()).max(0)
}

/// Whether a held Lease was not renewed within its duration.
fn stale(l: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &l.spec else { return true };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
        Some(t) => seconds_since(t, now) > duration,
        None => true,
    }
}

fn spec_for(identity: &str, now: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// What one attempt to take a Lease found.
enum Attempt {
    Taken,
    /// The namespace does not exist: no lock possible (and none needed: nobody else can
    /// have synced into it either).
    NoNamespace,
    Held {
        holder: String,
        held_for: i64,
        renewed_ago: i64,
    },
    /// Someone else wrote the Lease between our read and write: read again.
    Raced,
}

async fn attempt(api: &Api<Lease>, name: &str, migration: &str, identity: &str) -> Result<Attempt, kube::Error> {
    let now = Timestamp::now();
    match api.get_opt(name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    labels: Some(
                        [
                            (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
                            (labels::MIGRATION.to_string(), migration.to_string()),
                        ]
                        .into(),
                    ),
                    ..Default::default()
                },
                spec: Some(spec_for(identity, now, 0)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Taken),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Raced),
                // The namespace itself is missing (a first sync creates it).
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(Attempt::NoNamespace),
                Err(e) => Err(e),
            }
        }
        Some(mut l) => {
            let current = holder(&l).map(String::from);
            if current.as_deref().is_some_and(|h| h != identity) && !stale(&l, now) {
                let spec = l.spec.as_ref().expect("a held lease has a spec");
                return Ok(Attempt::Held {
                    holder: current.unwrap_or_default(),
                    held_for: spec.acquire_time.as_ref().map_or(0, |t| seconds_since(t, now)),
                    renewed_ago: spec.renew_time.as_ref().map_or(0, |t| seconds_since(t, now)),
                });
            }
            // Free, stale, or ours already (a crashed run of this very process id: only
            // possible across pid namespaces, and then the same holder is harmless).
            let transitions = l.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0)
                + i32::from(current.as_deref().is_some_and(|h| h != identity));
            l.spec = Some(spec_for(identity, now, transitions));
            match api.replace(name, &PostParams::default(), &l).await {
                Ok(_) => Ok(Attempt::Taken),
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(Attempt::Raced),
                Err(e) => Err(e),
            }
        }
    }
}

/// Renews every held Lease until aborted.
async fn renew(leases: Vec<(Api<Lease>, String)>, identity: String) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        for (api, name) in &leases {
            let Ok(Some(mut l)) = api.get_opt(name).await else { continue };
            if holder(&l) != Some(identity.as_str()) {
                tracing::warn!(lease = %name, "lost the lease to another run");
                continue;
            }
            if let Some(spec) = l.spec.as_mut() {
                spec.renew_time = Some(MicroTime(Timestamp::now()));
            }
            if let Err(e) = api.replace(name, &PostParams::default(), &l).await {
                tracing::warn!(lease = %name, error = %e, "renewing the lease");
            }
        }
    }
}

impl Engine {
    /// Takes the Lease of every migration of the (selected) file, in name order so two runs
    /// of overlapping sets cannot deadlock. Waits up to `self.options.lock_wait` for a Lease
    /// someone else holds.
    pub(super) async fn lock(&self) -> Result<Locks, EngineError> {
        let identity = identity();
        let wait = self.options.lock_wait.unwrap_or(DEFAULT_WAIT);
        let mut migrations: Vec<_> = self.spec.migrations.iter().collect();
        migrations.sort_by(|a, b| a.name.cmp(&b.name));
        let mut locks = Locks { held: Vec::new(), identity: identity.clone(), renewer: None };
        for m in migrations {
            let Some(namespace) = m.namespace_map.values().next() else { continue };
            let api: Api<Lease> = Api::namespaced(self.destination.client.clone(), namespace);
            let name = lease_name(&m.name);
            let started = Instant::now();
            let mut last_event: Option<Instant> = None;
            loop {
                let found = attempt(&api, &name, &m.name, &identity).await.map_err(|source| EngineError::Lock {
                    migration: m.name.clone(),
                    lease: format!("{namespace}/{name}"),
                    source: Box::new(source),
                })?;
                match found {
                    Attempt::Taken => {
                        locks.held.push((api, name));
                        break;
                    }
                    Attempt::NoNamespace => {
                        self.events.warn(
                            Some(&m.name),
                            format!(
                                "namespace {namespace} does not exist yet: this first sync runs without the lock {namespace}/{name}"
                            ),
                        );
                        break;
                    }
                    Attempt::Raced => continue,
                    Attempt::Held { holder, held_for, renewed_ago } => {
                        let waited = started.elapsed();
                        if waited >= wait {
                            return Err(EngineError::Locked(Box::new(super::error::LockHeld {
                                migration: m.name.clone(),
                                lease: format!("{namespace}/{name}"),
                                holder,
                                held_for: humantime::format_duration(Duration::from_secs(held_for as u64)).to_string(),
                                renewed_ago: humantime::format_duration(Duration::from_secs(renewed_ago as u64))
                                    .to_string(),
                                waited: humantime::format_duration(Duration::from_secs(waited.as_secs())).to_string(),
                            })));
                        }
                        if last_event.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
                            last_event = Some(Instant::now());
                            self.events.emit(Event::LockWaiting {
                                migration: m.name.clone(),
                                lease: format!("{namespace}/{name}"),
                                holder,
                                held_seconds: held_for as u64,
                                seconds: waited.as_secs(),
                            });
                        }
                        tokio::time::sleep(Duration::from_millis(500).min(wait.saturating_sub(waited))).await;
                    }
                }
            }
        }
        if !locks.held.is_empty() {
            let leases = locks.held.iter().map(|(a, n)| (a.clone(), n.clone())).collect();
            locks.renewer = Some(tokio::spawn(renew(leases, identity)));
        }
        Ok(locks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_ago: i64, duration: i32) -> Lease {
        let now = Timestamp::now();
        let t = Timestamp::from_second(now.as_second() - renewed_ago).unwrap();
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(MicroTime(t)),
                renew_time: Some(MicroTime(t)),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_lease_not_renewed_within_its_duration_is_stale() {
        let now = Timestamp::now();
        assert!(!stale(&lease("a/1", 5, 30), now));
        assert!(stale(&lease("a/1", 31, 30), now));
        assert!(stale(&Lease::default(), now));
    }

    #[test]
    fn the_identity_is_host_and_pid() {
        let id = identity();
        assert!(id.ends_with(&format!("/{}", std::process::id())), "{id}");
    }
}
