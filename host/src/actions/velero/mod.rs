//! `resources = "velero"`: MTC's two-step path. A Velero Backup on the source (PVC data
//! excluded: DVM moves it), the same backup seen on the destination through the shared
//! storage location, a Restore there with the namespace mapping, then the restore's own
//! per-object results, read from object storage through a DownloadRequest. The counts in
//! `status` alone hide which object failed (velero#4223), so the report carries messages.
//!
//! Only the Velero API is used: this works against a real Velero as against the lab's
//! stand-in.

use std::io::Read;
use std::time::Duration;

use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::plan::VeleroPlan;

/// Why the Velero path stopped. Per-object restore problems are not errors: they are in the
/// report's warnings and errors.
#[derive(Debug, thiserror::Error)]
pub enum VeleroError {
    /// The cluster does not serve velero.io/v1.
    #[error("Velero is not installed on {context} (the velero.io/v1 API group is not served)")]
    NotInstalled { context: String },
    /// The shared storage location is missing on one side.
    #[error(
        "{context}: backupstoragelocation {namespace}/{name} does not exist; create it or set [migration.velero] storage_location"
    )]
    NoStorageLocation { context: String, namespace: String, name: String },
    /// The shared storage location is not usable.
    #[error("{context}: backupstoragelocation {namespace}/{name} is {phase}: {message}")]
    StorageUnavailable { context: String, namespace: String, name: String, phase: String, message: String },
    /// A Backup, Restore or DownloadRequest did not finish in time.
    #[error(
        "{context}: {object} did not reach a terminal phase within {waited} (last phase {phase:?}); raise [migration.velero] timeout or check Velero's logs"
    )]
    Timeout {
        context: String,
        object: String,
        /// The timeout, human-readable (`30m`, `500ms`).
        waited: String,
        phase: String,
    },
    /// A Backup or Restore ended in a failed phase.
    #[error("{context}: {object} ended {phase}: {reason}")]
    Failed { context: String, object: String, phase: String, reason: String },
    /// Watching an object failed (its watch was refused or broke off).
    #[error("{context}: watching {object}: {reason}")]
    Watch { context: String, object: String, reason: String },
    /// A request to the API server failed.
    #[error("{context}: {what}: {source}")]
    Api {
        context: String,
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The restore's per-object results could not be read.
    #[error("restore {restore}: reading its results: {reason}")]
    Results { restore: String, reason: String },
    /// Holding or starting the restored workloads failed.
    #[error(transparent)]
    Hold(#[from] crate::actions::quiesce::QuiesceError),
}

/// One message of a restore's results, with where Velero filed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// `velero`, `cluster`, or the (destination) namespace the object is in.
    pub scope: String,
    pub message: String,
}

/// What one Velero migration did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VeleroReport {
    pub backup: String,
    pub backup_phase: String,
    pub items_backed_up: u64,
    pub restore: String,
    pub restore_phase: String,
    pub items_restored: u64,
    pub warnings: Vec<Message>,
    pub errors: Vec<Message>,
    /// Workloads scaled to 0 / CronJobs suspended after the restore (stage semantics).
    pub held: Vec<String>,
    /// Workloads started again (cutover or `start_workloads`).
    pub started: Vec<String>,
}

/// The three places a Velero result list files its messages in.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ResultSet {
    pub velero: Vec<String>,
    pub cluster: Vec<String>,
    pub namespaces: indexmap::IndexMap<String, Vec<String>>,
}

/// `restore-<name>-results.gz`, decompressed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct RestoreResults {
    pub warnings: ResultSet,
    pub errors: ResultSet,
}

impl ResultSet {
    pub fn messages(&self) -> Vec<Message> {
        let mut out: Vec<Message> =
            self.velero.iter().map(|m| Message { scope: "velero".into(), message: m.clone() }).collect();
        out.extend(self.cluster.iter().map(|m| Message { scope: "cluster".into(), message: m.clone() }));
        for (ns, list) in &self.namespaces {
            out.extend(list.iter().map(|m| Message { scope: ns.clone(), message: m.clone() }));
        }
        out
    }
}

/// Parses a results file, gzip or not (some object stores decompress on download).
pub fn parse_results(data: &[u8]) -> Result<RestoreResults, String> {
    parse_results_within(data, RESULTS_LIMIT)
}

/// The most a restore's results may take, downloaded and unpacked. Velero writes a few KiB;
/// a store that serves more (a wrong object, a hostile URL, a gzip bomb) gets an error, not
/// all of mtcd's memory.
const RESULTS_LIMIT: u64 = 64 * 1024 * 1024;

fn too_large(limit: u64) -> String {
    format!(
        "the results are larger than {}, more than Velero ever writes; not read",
        crate::actions::dvm::human_bytes(limit)
    )
}

fn parse_results_within(data: &[u8], limit: u64) -> Result<RestoreResults, String> {
    let text = if data.starts_with(&[0x1f, 0x8b]) {
        let mut s = Vec::new();
        flate2::read::GzDecoder::new(data).take(limit + 1).read_to_end(&mut s).map_err(|e| format!("gunzip: {e}"))?;
        if s.len() as u64 > limit {
            return Err(too_large(limit));
        }
        s
    } else {
        data.to_vec()
    };
    serde_json::from_slice(&text).map_err(|e| format!("not Velero results JSON: {e}"))
}

/// Whether a Backup or Restore phase is final. `Finalizing*` and
/// `WaitingForPluginOperations*` are not: the object still changes
/// (stolostron/cluster-backup-operator#698 mistook one for a finished restore).
pub fn is_terminal(phase: &str) -> bool {
    matches!(phase, "Completed" | "PartiallyFailed" | "Failed" | "FailedValidation")
}

/// Phases after which the restore's objects can be used.
fn succeeded(phase: &str) -> bool {
    matches!(phase, "Completed" | "PartiallyFailed")
}

fn ar(kind: &str, plural: &str) -> ApiResource {
    crate::observe::api_resource("velero.io", "v1", kind, plural)
}

fn api(c: &Cluster, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    Api::namespaced_with(c.client.clone(), ns, &ar(kind, plural))
}

fn api_err(c: &Cluster, what: impl Into<String>) -> impl FnOnce(kube::Error) -> VeleroError {
    let (context, what) = (c.context.clone(), what.into());
    move |source| VeleroError::Api { context, what, source }
}

fn to_value(o: DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or_default()
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// Why a Backup/Restore failed, from what its status says.
fn failure_reason(v: &Value) -> String {
    let mut parts: Vec<String> = v
        .pointer("/status/validationErrors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(String::from))
        .collect();
    if let Some(r) = v.pointer("/status/failureReason").and_then(Value::as_str) {
        parts.push(r.to_string());
    }
    if parts.is_empty() { "no reason given; see `velero describe` and its logs".into() } else { parts.join("; ") }
}

pub async fn check_installed(c: &Cluster) -> Result<(), VeleroError> {
    match c.client.list_api_group_resources("velero.io/v1").await {
        Ok(l) if l.resources.iter().any(|r| r.name == "backups") => Ok(()),
        Ok(_) | Err(kube::Error::Api(_)) => Err(VeleroError::NotInstalled { context: c.context.clone() }),
        Err(e) => Err(api_err(c, "discovering velero.io/v1")(e)),
    }
}

pub async fn check_location(c: &Cluster, ns: &str, name: &str) -> Result<(), VeleroError> {
    let bsl = api(c, ns, "BackupStorageLocation", "backupstoragelocations")
        .get_opt(name)
        .await
        .map_err(api_err(c, format!("reading backupstoragelocation {ns}/{name}")))?;
    let Some(bsl) = bsl.map(to_value) else {
        return Err(VeleroError::NoStorageLocation {
            context: c.context.clone(),
            namespace: ns.into(),
            name: name.into(),
        });
    };
    let phase = str_at(&bsl, "/status/phase");
    if phase == "Unavailable" {
        return Err(VeleroError::StorageUnavailable {
            context: c.context.clone(),
            namespace: ns.into(),
            name: name.into(),
            phase: phase.into(),
            message: str_at(&bsl, "/status/message").to_string(),
        });
    }
    Ok(())
}

/// Waits (by watch) until `done` holds for `name`, or the migration's Velero timeout; the
/// timeout names the object, the time waited and the last phase seen.
async fn wait_for(
    c: &Cluster,
    api: &Api<DynamicObject>,
    object: &str,
    name: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool + Send + 'static,
) -> Result<Value, VeleroError> {
    let cond = move |o: Option<&DynamicObject>| o.is_some_and(|o| done(&to_value(o.clone())));
    match tokio::time::timeout(timeout, kube::runtime::wait::await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(o))) => Ok(to_value(o)),
        Ok(Ok(None)) => unreachable!("the condition holds only for an object"),
        Ok(Err(e)) => {
            Err(VeleroError::Watch { context: c.context.clone(), object: object.into(), reason: e.to_string() })
        }
        Err(_) => {
            let phase = match api.get_opt(name).await {
                Ok(Some(o)) => str_at(&to_value(o), "/status/phase").to_string(),
                _ => String::new(),
            };
            Err(VeleroError::Timeout {
                context: c.context.clone(),
                object: object.into(),
                waited: humantime::format_duration(timeout).to_string(),
                phase,
            })
        }
    }
}

/// The first step: a Backup of the migration's namespaces on the source, under a fresh name
/// no Restore uses yet, waited for until it is terminal. [`restore`] is the second step.
pub async fn backup(src: &Cluster, dst: &Cluster, v: &VeleroPlan) -> Result<VeleroReport, VeleroError> {
    check_installed(src).await?;
    check_installed(dst).await?;
    check_location(src, &v.namespace, &v.storage_location).await?;
    check_location(dst, &v.namespace, &v.storage_location).await?;
    let vns = &v.namespace;
    let timeout = v.timeout;
    let backups = api(src, vns, "Backup", "backups");
    let restores = api(dst, vns, "Restore", "restores");
    // Names are to the second: a run right after another waits for a fresh name rather
    // than colliding with the previous Backup or Restore.
    let name = loop {
        let name = format!("mtcd-{}-{}", v.migration, chrono::Utc::now().format("%Y%m%d%H%M%S"));
        let taken = backups
            .get_opt(&name)
            .await
            .map_err(api_err(src, format!("reading backup {vns}/{name}")))?
            .is_some()
            || restores.get_opt(&name).await.map_err(api_err(dst, format!("reading restore {vns}/{name}")))?.is_some();
        if !taken {
            break name;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut report = VeleroReport { backup: name.clone(), restore: name.clone(), ..Default::default() };
    let labels = json!({crate::plan::hash::MIGRATION: v.migration, "app.kubernetes.io/managed-by": "mtcd"});

    let backup: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "velero.io/v1", "kind": "Backup",
        "metadata": {"name": name, "namespace": vns, "labels": labels},
        "spec": v.backup,
    }))
    .expect("static shape");
    let object = format!("backup {vns}/{name}");
    backups.create(&PostParams::default(), &backup).await.map_err(api_err(src, format!("creating {object}")))?;
    let b = wait_for(src, &backups, &object, &name, timeout, |v| is_terminal(str_at(v, "/status/phase"))).await?;
    report.backup_phase = str_at(&b, "/status/phase").into();
    report.items_backed_up = b.pointer("/status/progress/itemsBackedUp").and_then(Value::as_u64).unwrap_or(0);
    if !succeeded(&report.backup_phase) {
        return Err(VeleroError::Failed {
            context: src.context.clone(),
            object,
            phase: report.backup_phase,
            reason: failure_reason(&b),
        });
    }

    Ok(report)
}

/// The second step: once the destination's Velero has synced the backup from the shared
/// storage location, a Restore with the namespace mapping; its per-object results read back;
/// then the restored workloads held (stage) or started (`release`).
pub async fn restore(dst: &Cluster, v: &VeleroPlan, mut report: VeleroReport) -> Result<VeleroReport, VeleroError> {
    let vns = &v.namespace;
    let timeout = v.timeout;
    let name = report.backup.clone();
    let restores = api(dst, vns, "Restore", "restores");
    let labels = json!({crate::plan::hash::MIGRATION: v.migration, "app.kubernetes.io/managed-by": "mtcd"});
    // The destination's Velero finds the backup by syncing the shared storage location.
    let dst_backups = api(dst, vns, "Backup", "backups");
    wait_for(
        dst,
        &dst_backups,
        &format!("backup {vns}/{name} (synced from the storage location)"),
        &name,
        timeout,
        |v| succeeded(str_at(v, "/status/phase")),
    )
    .await?;

    let mut restore_spec = v.restore.clone();
    restore_spec["backupName"] = json!(name);
    let restore: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "velero.io/v1", "kind": "Restore",
        "metadata": {"name": name, "namespace": vns, "labels": labels},
        "spec": restore_spec,
    }))
    .expect("static shape");
    let object = format!("restore {vns}/{name}");
    restores.create(&PostParams::default(), &restore).await.map_err(api_err(dst, format!("creating {object}")))?;
    let r = wait_for(dst, &restores, &object, &name, timeout, |v| is_terminal(str_at(v, "/status/phase"))).await?;
    report.restore_phase = str_at(&r, "/status/phase").into();
    report.items_restored = r.pointer("/status/progress/itemsRestored").and_then(Value::as_u64).unwrap_or(0);
    if !succeeded(&report.restore_phase) {
        return Err(VeleroError::Failed {
            context: dst.context.clone(),
            object,
            phase: report.restore_phase,
            reason: failure_reason(&r),
        });
    }
    let results = fetch_results(dst, vns, &name, timeout).await?;
    report.warnings = results.warnings.messages();
    report.errors = results.errors.messages();
    let counted = r.pointer("/status/errors").and_then(Value::as_u64).unwrap_or(0);
    if counted as usize > report.errors.len() {
        report.errors.push(Message {
            scope: "velero".into(),
            message: format!("the restore counts {counted} error(s) but its results list {}", report.errors.len()),
        });
    }

    let dest = &v.destination_namespaces;
    if v.release {
        report.started = crate::actions::quiesce::start(dst, dest).await?.scaled;
    } else {
        let h = crate::actions::quiesce::hold_destination(dst, dest).await?;
        report.held = h.scaled.into_iter().chain(h.suspended).collect();
    }
    Ok(report)
}

/// Creates a DownloadRequest for the restore's results and reads what it points at.
async fn fetch_results(
    dst: &Cluster,
    vns: &str,
    restore: &str,
    timeout: Duration,
) -> Result<RestoreResults, VeleroError> {
    let dr_name = format!("{restore}-results-{:08x}", rand::random::<u32>());
    let drs = api(dst, vns, "DownloadRequest", "downloadrequests");
    let dr: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "velero.io/v1", "kind": "DownloadRequest",
        "metadata": {"name": dr_name, "namespace": vns},
        "spec": {"target": {"kind": "RestoreResults", "name": restore}},
    }))
    .expect("static shape");
    let object = format!("downloadrequest {vns}/{dr_name}");
    drs.create(&PostParams::default(), &dr).await.map_err(api_err(dst, format!("creating {object}")))?;
    let v = wait_for(dst, &drs, &object, &dr_name, timeout.min(Duration::from_secs(120)), |v| {
        str_at(v, "/status/phase") == "Processed"
    })
    .await?;
    let _ = drs.delete(&dr_name, &Default::default()).await;
    let url = str_at(&v, "/status/downloadURL");
    let err = |reason: String| VeleroError::Results { restore: restore.into(), reason };
    if url.is_empty() {
        return Err(err("the DownloadRequest was processed without a downloadURL".into()));
    }
    let data = read_url(url, RESULTS_LIMIT).await.map_err(err)?;
    parse_results(&data).map_err(err)
}

/// `file://` (a storage location on a shared filesystem) or a presigned http(s) URL. The
/// URL is a credential: it is never printed.
async fn read_url(url: &str, limit: u64) -> Result<Vec<u8>, String> {
    let u = url::Url::parse(url).map_err(|e| format!("downloadURL is not a URL: {e}"))?;
    match u.scheme() {
        "file" => {
            let path = u.to_file_path().map_err(|()| "downloadURL is not a local path".to_string())?;
            // Within bounds, as every file mtcd reads (the results are gzip JSON of a few KiB).
            tokio::task::spawn_blocking(move || {
                crate::spec::read_bounded(&path, limit, "Velero results file").map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| format!("reading the results: {e}"))?
        }
        "http" | "https" => {
            crate::tls::init();
            let failed = |e: reqwest::Error| format!("downloading the results: {}", e.without_url());
            // A store that stops answering ends the wait, as every other wait does.
            let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().map_err(failed)?;
            let mut resp = client.get(u).send().await.map_err(failed)?;
            if !resp.status().is_success() {
                return Err(format!("downloading the results: HTTP {}", resp.status()));
            }
            if resp.content_length().is_some_and(|n| n > limit) {
                return Err(too_large(limit));
            }
            // Read as it arrives, so a body longer than it said is stopped at the limit too.
            let mut data = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(failed)? {
                if (data.len() + chunk.len()) as u64 > limit {
                    return Err(too_large(limit));
                }
                data.extend_from_slice(&chunk);
            }
            Ok(data)
        }
        other => Err(format!("unsupported downloadURL scheme {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn finalizing_and_plugin_phases_are_not_terminal() {
        for p in ["Completed", "PartiallyFailed", "Failed", "FailedValidation"] {
            assert!(is_terminal(p), "{p}");
        }
        for p in [
            "",
            "New",
            "Queued",
            "ReadyToStart",
            "InProgress",
            "WaitingForPluginOperations",
            "WaitingForPluginOperationsPartiallyFailed",
            "Finalizing",
            "FinalizingPartiallyFailed",
            "Deleting",
        ] {
            assert!(!is_terminal(p), "{p}");
        }
        assert!(succeeded("PartiallyFailed") && !succeeded("FailedValidation"));
    }

    #[test]
    fn results_parse_from_gzip_with_messages_by_namespace() {
        let body = json!({
            "warnings": {"velero": [], "cluster": ["could not restore, CustomResourceDefinition \"x\" already exists"], "namespaces": {"shop-prod": ["could not restore, ConfigMap \"shop-config\" already exists. Warning: the in-cluster version is different than the backed-up version"]}},
            "errors": {"namespaces": {"shop-prod": ["error restoring services/shop-prod/web: Service \"web\" is invalid"]}},
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(body.to_string().as_bytes()).unwrap();
        let r = parse_results(&gz.finish().unwrap()).unwrap();
        let w = r.warnings.messages();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].scope, "cluster");
        assert_eq!(w[1].scope, "shop-prod");
        assert!(w[1].message.contains("shop-config"));
        let e = r.errors.messages();
        assert_eq!(
            e,
            vec![Message {
                scope: "shop-prod".into(),
                message: "error restoring services/shop-prod/web: Service \"web\" is invalid".into()
            }]
        );
        // Plain JSON (an object store that decompressed it) and an empty result.
        assert_eq!(parse_results(b"{}").unwrap(), RestoreResults::default());
        assert!(parse_results(b"\x1f\x8bgarbage").unwrap_err().contains("gunzip"));
        assert!(parse_results(b"<html>").unwrap_err().contains("not Velero results"));
    }

    #[tokio::test]
    async fn a_cluster_without_velero_is_named() {
        let c = crate::testing::fake_cluster(vec![]).await;
        let e = check_installed(&c).await.unwrap_err();
        assert_eq!(e.to_string(), "Velero is not installed on fake (the velero.io/v1 API group is not served)");
    }

    #[tokio::test]
    async fn missing_or_unavailable_storage_locations_are_errors() {
        let bsl = |phase: &str| json!({"apiVersion": "velero.io/v1", "kind": "BackupStorageLocation", "metadata": {"name": "default", "namespace": "velero"}, "status": {"phase": phase, "message": "bucket gone"}});
        let c = crate::testing::fake_cluster(vec![
            ("/apis/velero.io/v1/namespaces/velero/backupstoragelocations/default", 200, bsl("Unavailable")),
            ("/apis/velero.io/v1/namespaces/velero/backupstoragelocations/ok", 200, bsl("Available")),
        ])
        .await;
        let e = check_location(&c, "velero", "default").await.unwrap_err();
        assert_eq!(e.to_string(), "fake: backupstoragelocation velero/default is Unavailable: bucket gone");
        let e = check_location(&c, "velero", "nope").await.unwrap_err();
        assert!(matches!(e, VeleroError::NoStorageLocation { .. }), "{e}");
        check_location(&c, "velero", "ok").await.unwrap();
    }

    #[tokio::test]
    async fn results_are_read_from_http_and_file_urls() {
        let body = json!({"errors": {"namespaces": {"shop-prod": ["error restoring services/shop-prod/web: x"]}}});
        let c = crate::testing::fake_cluster(vec![("/results", 200, body.clone())]).await;
        let url = format!("{}results", c.config.cluster_url);
        let r = parse_results(&read_url(&url, RESULTS_LIMIT).await.unwrap()).unwrap();
        assert_eq!(r.errors.messages()[0].scope, "shop-prod");
        let missing = format!("{}other?X-Amz-Signature=secret", c.config.cluster_url);
        let e = read_url(&missing, RESULTS_LIMIT).await.unwrap_err();
        assert!(e.contains("HTTP 404") && !e.contains("secret"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("restore-x-results.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(body.to_string().as_bytes()).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let url = url::Url::from_file_path(&path).unwrap().to_string();
        assert_eq!(parse_results(&read_url(&url, RESULTS_LIMIT).await.unwrap()).unwrap(), r);
        assert!(read_url("ftp://x/y", RESULTS_LIMIT).await.unwrap_err().contains("unsupported"));
        // Larger than the limit, by http or from a file: an error, nothing kept.
        let small = body.to_string().len() as u64 / 2;
        let url = format!("{}results", c.config.cluster_url);
        assert!(read_url(&url, small).await.unwrap_err().contains("larger than"));
        let url = url::Url::from_file_path(&path).unwrap().to_string();
        assert!(read_url(&url, 8).await.is_err());
    }

    #[test]
    fn a_gzip_bomb_is_refused_at_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![b' '; 1 << 20]).unwrap();
        gz.write_all(b"{}").unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 8 * 1024, "{}", bomb.len());
        let e = parse_results_within(&bomb, 64 * 1024).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        assert_eq!(parse_results_within(&bomb, 2 << 20).unwrap(), RestoreResults::default());
    }

    #[test]
    fn failure_reason_prefers_validation_errors() {
        let v =
            json!({"status": {"validationErrors": ["backup storage location 'nope' not found"], "failureReason": "x"}});
        assert_eq!(failure_reason(&v), "backup storage location 'nope' not found; x");
        assert!(failure_reason(&json!({})).contains("no reason"));
    }
}
