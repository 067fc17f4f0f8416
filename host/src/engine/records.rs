//! Run records: every apply (a CronJob's, a `--watch` cycle, a person's, a cutover's final
//! sync) leaves its result in the destination, where `mtcd status` and dashboards read it:
//!
//! - a ConfigMap `mtcd-run-<migration>` in the migration's first destination namespace,
//!   labelled `mtcd.io/component=run-record` (the plan never copies it, it has no
//!   `mtcd.io/source-hash` so it is never pruned, and no source object can share its name);
//!   the keys are listed in [`RECORD_KEYS`] and docs/output.md;
//! - a Kubernetes Event per run about that ConfigMap (`SyncSucceeded`, `SyncFailed`), so
//!   `kubectl get events` and event exporters see each run.
//!
//! A record that cannot be written is a warning: the sync itself already happened.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::{ConfigMap, Event as KubeEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde::Serialize;

use super::{ApplyReport, Engine, EngineError, MigrationReport};
use crate::labels;

/// The field manager of run records.
pub const RECORD_FIELD_MANAGER: &str = "mtcd-record";

/// The keys of a run record's `data`.
pub const RECORD_KEYS: &[&str] = &[
    "migration",
    "command",
    "run-by",
    "started",
    "finished",
    "duration-seconds",
    "outcome",
    "error",
    "created",
    "updated",
    "pruned",
    "unchanged",
    "failed",
    "drift",
    "bytes-sent",
    "transfers.json",
    "last-success",
    "next-sync",
];

/// The record's name for a migration.
pub fn record_name(migration: &str) -> String {
    format!("mtcd-run-{migration}")
}

/// When the next sync is due, as the run knows it.
#[derive(Debug, Clone, Default)]
pub enum NextSync {
    /// A one-off apply: no next sync.
    #[default]
    None,
    /// `apply --watch`: one `sync.interval` after this run started.
    Interval(std::time::Duration),
    /// A CronJob's run (`apply --schedule`): the schedule's next time.
    Cron(crate::deploy::cron::Schedule),
}

impl NextSync {
    fn after(&self, started: DateTime<Utc>, finished: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            NextSync::None => None,
            NextSync::Interval(d) => {
                let next = started + chrono::Duration::from_std(*d).ok()?;
                Some(next.max(finished))
            }
            NextSync::Cron(s) => s.next_after(finished),
        }
    }
}

/// What one transfer moved, for `transfers.json`.
#[derive(Debug, Serialize)]
struct Transfer<'a> {
    kind: &'static str,
    name: &'a str,
    bytes: u64,
    ok: bool,
}

/// A run's outcome: `succeeded` (nothing failed), `failed` (some objects, images or volumes
/// failed; the rest was applied), `error` (the run stopped: nothing or part was written).
pub fn outcome(m: Option<&MigrationReport>, error: Option<&str>) -> &'static str {
    match (m, error) {
        (_, Some(_)) => "error",
        (Some(m), None) if m.failed() > 0 => "failed",
        _ => "succeeded",
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The data of one migration's record.
fn data(
    m: Option<&MigrationReport>,
    migration: &str,
    command: &str,
    (started, finished): (DateTime<Utc>, DateTime<Utc>),
    error: Option<&str>,
    previous_success: Option<String>,
    next: Option<DateTime<Utc>>,
) -> BTreeMap<String, String> {
    let mut d = BTreeMap::new();
    let outcome = outcome(m, error);
    d.insert("migration".into(), migration.to_string());
    d.insert("command".into(), command.to_string());
    d.insert("run-by".into(), super::lease::identity());
    d.insert("started".into(), rfc3339(started));
    d.insert("finished".into(), rfc3339(finished));
    d.insert("duration-seconds".into(), format!("{:.1}", (finished - started).num_milliseconds() as f64 / 1000.0));
    d.insert("outcome".into(), outcome.into());
    d.insert("error".into(), error.unwrap_or_default().to_string());
    let r = m.and_then(|m| m.resources.as_ref());
    for (k, v) in [
        ("created", r.map_or(0, |r| r.created)),
        ("updated", r.map_or(0, |r| r.updated)),
        ("pruned", r.map_or(0, |r| r.pruned)),
        ("unchanged", r.map_or(0, |r| r.unchanged)),
        ("failed", m.map_or(0, MigrationReport::failed)),
        ("drift", m.map_or(0, |m| m.drift)),
    ] {
        d.insert(k.into(), v.to_string());
    }
    let transfers: Vec<Transfer> = m
        .map(|m| {
            m.images
                .iter()
                .map(|i| Transfer { kind: "image", name: &i.destination, bytes: i.bytes_sent, ok: i.ok })
                .chain(m.volumes.iter().map(|v| Transfer {
                    kind: "volume",
                    name: &v.pvc,
                    bytes: v.stats.bytes_sent,
                    ok: v.ok,
                }))
                .collect()
        })
        .unwrap_or_default();
    d.insert("bytes-sent".into(), transfers.iter().map(|t| t.bytes).sum::<u64>().to_string());
    d.insert("transfers.json".into(), serde_json::to_string(&transfers).unwrap_or_else(|_| "[]".into()));
    let last_success = if outcome == "succeeded" { Some(rfc3339(finished)) } else { previous_success };
    d.insert("last-success".into(), last_success.unwrap_or_default());
    d.insert("next-sync".into(), next.map(rfc3339).unwrap_or_default());
    d
}

/// A run record as `mtcd status` reads it back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunRecord {
    /// When the last run finished (RFC 3339).
    pub finished: String,
    pub outcome: String,
    /// What it did, in one line: `2 created, 1 updated, 0 pruned, 0 failed, 3 drift, 0 B`.
    pub summary: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// `apply`, `watch` or `cutover`, and who ran it.
    pub command: String,
    pub run_by: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_success: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_sync: String,
}

impl RunRecord {
    fn from_data(d: &BTreeMap<String, String>) -> RunRecord {
        let get = |k: &str| d.get(k).cloned().unwrap_or_default();
        let bytes: u64 = get("bytes-sent").parse().unwrap_or(0);
        RunRecord {
            finished: get("finished"),
            outcome: get("outcome"),
            summary: format!(
                "{} created, {} updated, {} pruned, {} failed, {} drift, {bytes} B sent",
                get("created"),
                get("updated"),
                get("pruned"),
                get("failed"),
                get("drift"),
            ),
            error: get("error"),
            command: get("command"),
            run_by: get("run-by"),
            last_success: get("last-success"),
            next_sync: get("next-sync"),
        }
    }
}

impl Engine {
    /// Writes the record and an Event of every migration of the (selected) file after a
    /// run. `result` is the run's; an error that stopped it is recorded as `error`.
    pub(super) async fn record(
        &self,
        command: &str,
        (started, finished): (DateTime<Utc>, DateTime<Utc>),
        result: Result<&ApplyReport, &EngineError>,
    ) {
        // A run that never started (the lock was held) leaves the last real record alone.
        if matches!(result, Err(EngineError::Locked(_))) {
            return;
        }
        let error = result.as_ref().err().map(|e| crate::error_chain(*e));
        for m in &self.spec.migrations {
            let Some(namespace) = m.namespace_map.values().next() else { continue };
            let report = result.ok().and_then(|r| r.migrations.iter().find(|r| r.migration == m.name));
            if let Err(e) =
                self.write_record(namespace, &m.name, command, (started, finished), report, error.as_deref()).await
            {
                self.events.warn(
                    Some(&m.name),
                    format!(
                        "the run record {namespace}/{} could not be written: {}",
                        record_name(&m.name),
                        crate::cluster::short_error(&e)
                    ),
                );
            }
        }
    }

    async fn write_record(
        &self,
        namespace: &str,
        migration: &str,
        command: &str,
        times: (DateTime<Utc>, DateTime<Utc>),
        report: Option<&MigrationReport>,
        error: Option<&str>,
    ) -> Result<(), kube::Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.destination.client.clone(), namespace);
        let name = record_name(migration);
        let previous = api.get_opt(&name).await?;
        let previous_success = previous
            .as_ref()
            .and_then(|c| c.data.as_ref())
            .and_then(|d| d.get("last-success").cloned())
            .filter(|s| !s.is_empty());
        let next = self.next_sync.after(times.0, times.1);
        let data = data(report, migration, command, times, error, previous_success, next);
        let outcome = data["outcome"].clone();
        let record = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_string()),
                labels: Some(
                    [
                        (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
                        (labels::MIGRATION.to_string(), migration.to_string()),
                        (labels::COMPONENT.to_string(), labels::COMPONENT_RUN_RECORD.to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some(data.clone()),
            ..Default::default()
        };
        let mut value = serde_json::to_value(&record).expect("a ConfigMap serializes");
        value["apiVersion"] = "v1".into();
        value["kind"] = "ConfigMap".into();
        let written =
            api.patch(&name, &PatchParams::apply(RECORD_FIELD_MANAGER).force(), &Patch::Apply(&value)).await?;
        let summary = RunRecord::from_data(&data);
        let message = match error {
            Some(e) => format!("mtcd {command} of migration {migration} stopped: {e}"),
            None => format!("mtcd {command} of migration {migration} {outcome}: {}", summary.summary),
        };
        let now = Utc::now();
        let event = KubeEvent {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.timestamp_nanos_opt().unwrap_or_default())),
                namespace: Some(namespace.to_string()),
                labels: record.metadata.labels.clone(),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("ConfigMap".into()),
                name: Some(name.clone()),
                namespace: Some(namespace.to_string()),
                uid: written.metadata.uid.clone(),
                resource_version: written.metadata.resource_version.clone(),
                ..Default::default()
            },
            reason: Some(if outcome == "succeeded" { "SyncSucceeded" } else { "SyncFailed" }.into()),
            message: Some(message.chars().take(1024).collect()),
            type_: Some(if outcome == "succeeded" { "Normal" } else { "Warning" }.into()),
            count: Some(1),
            first_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            last_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            action: Some("Sync".into()),
            reporting_component: Some("mtcd".into()),
            reporting_instance: Some(super::lease::identity()),
            source: Some(EventSource { component: Some("mtcd".into()), host: None }),
            ..Default::default()
        };
        Api::<KubeEvent>::namespaced(self.destination.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await?;
        Ok(())
    }

    /// The last run record of `migration`, if one was written (and can be read).
    pub(super) async fn read_record(&self, namespace: &str, migration: &str) -> Result<Option<RunRecord>, kube::Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.destination.client.clone(), namespace);
        let found = api.get_opt(&record_name(migration)).await?;
        Ok(found.and_then(|c| c.data).map(|d| RunRecord::from_data(&d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_carries_every_documented_key() {
        let t0 = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z").unwrap().with_timezone(&Utc);
        let t1 = t0 + chrono::Duration::seconds(3);
        let m = MigrationReport { migration: "shop".into(), drift: 2, ..Default::default() };
        let d = data(Some(&m), "shop", "apply", (t0, t1), None, Some("old".into()), None);
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        let mut documented = RECORD_KEYS.to_vec();
        documented.sort();
        assert_eq!(keys, documented);
        assert_eq!(d["outcome"], "succeeded");
        assert_eq!(d["last-success"], "2024-05-01T10:00:03Z");
        assert_eq!(d["drift"], "2");
        let failed = data(None, "shop", "apply", (t0, t1), Some("boom"), Some("old".into()), None);
        assert_eq!(failed["outcome"], "error");
        assert_eq!(failed["last-success"], "old", "a failed run keeps the last success");
    }

    #[test]
    fn the_next_sync_follows_the_interval_or_the_schedule() {
        let t0 = DateTime::parse_from_rfc3339("2024-05-01T10:07:00Z").unwrap().with_timezone(&Utc);
        let t1 = t0 + chrono::Duration::seconds(5);
        let i = NextSync::Interval(std::time::Duration::from_secs(60));
        assert_eq!(i.after(t0, t1).map(rfc3339).as_deref(), Some("2024-05-01T10:08:00Z"));
        let c = NextSync::Cron(crate::deploy::cron::Schedule::parse("*/15 * * * *").unwrap());
        assert_eq!(c.after(t0, t1).map(rfc3339).as_deref(), Some("2024-05-01T10:15:00Z"));
        assert!(NextSync::None.after(t0, t1).is_none());
    }
}
