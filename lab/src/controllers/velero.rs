//! A Velero stand-in: NOT Velero, but a small controller that honours the parts of the
//! velero.io/v1 Backup/Restore contract a migration tool relies on, so mtcd's Velero path can
//! be tested end to end without object storage or Velero's images.
//!
//! - BackupStorageLocation `default` in namespace `velero`, status Available; the "bucket" is
//!   a directory both clusters share (`<lab dir>/velero-storage`).
//! - Backup: New → InProgress → Completed, or FailedValidation when its storage location is
//!   missing or unavailable. Honours includedNamespaces, excludedResources and labelSelector;
//!   writes every object as the API returned it to `backups/<name>/resources.json`.
//! - Backup sync: every backup in the storage appears as a Completed Backup on each cluster.
//! - Restore: backupName, includedNamespaces, namespaceMapping, existingResourcePolicy;
//!   objects cleaned like Velero (reference §6.3), created in Velero's priority order; each
//!   object that fails is a per-object warning or error in
//!   `restores/<name>/restore-<name>-results.gz`.
//! - DownloadRequest for RestoreResults: Processed, with a `file://` downloadURL (where real
//!   Velero hands out a presigned URL).
//!
//! Deviations: no volume snapshots, hooks, resource modifiers or plugins; pods owned by a
//! controller are not restored (their controller recreates them).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{is_status, watch_each};

pub const NAMESPACE: &str = "velero";
pub const LOCATION: &str = "default";

fn vr(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "velero.io".into(),
        version: "v1".into(),
        api_version: "velero.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn strings(v: &Value, p: &str) -> Vec<String> {
    v.pointer(p).and_then(Value::as_array).into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect()
}

/// Runs the stand-in for one cluster until `shutdown`.
pub(super) async fn run(client: kube::Client, storage: PathBuf, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(storage.join("backups"))?;
    std::fs::create_dir_all(storage.join("restores"))?;
    install(&client, &storage).await?;
    let mut tasks = tokio::task::JoinSet::new();
    let (c, st) = (client.clone(), storage.clone());
    tasks.spawn(watch_each(
        Api::<DynamicObject>::namespaced_with(client.clone(), NAMESPACE, &vr("Backup", "backups")),
        shutdown.clone(),
        move |b, deleted| {
            let (c, st) = (c.clone(), st.clone());
            async move {
                if !deleted {
                    let name = b.metadata.name.clone().unwrap_or_default();
                    if let Err(e) = backup(&c, &st, &name).await {
                        tracing::warn!(backup = %name, error = %format!("{e:#}"), "velero stand-in");
                    }
                }
            }
        },
    ));
    let (c, st) = (client.clone(), storage.clone());
    tasks.spawn(watch_each(
        Api::<DynamicObject>::namespaced_with(client.clone(), NAMESPACE, &vr("Restore", "restores")),
        shutdown.clone(),
        move |r, deleted| {
            let (c, st) = (c.clone(), st.clone());
            async move {
                if !deleted {
                    let name = r.metadata.name.clone().unwrap_or_default();
                    if let Err(e) = restore(&c, &st, &name).await {
                        tracing::warn!(restore = %name, error = %format!("{e:#}"), "velero stand-in");
                    }
                }
            }
        },
    ));
    let (c, st) = (client.clone(), storage.clone());
    tasks.spawn(watch_each(
        Api::<DynamicObject>::namespaced_with(client.clone(), NAMESPACE, &vr("DownloadRequest", "downloadrequests")),
        shutdown.clone(),
        move |d, deleted| {
            let (c, st) = (c.clone(), st.clone());
            async move {
                if !deleted && let Err(e) = download(&c, &st, &d).await {
                    tracing::warn!(error = %format!("{e:#}"), "velero stand-in download request");
                }
            }
        },
    ));
    let (c, st, token) = (client.clone(), storage.clone(), shutdown.clone());
    tasks.spawn(async move {
        loop {
            if let Err(e) = sync_backups(&c, &st).await {
                tracing::debug!(error = %format!("{e:#}"), "velero stand-in backup sync");
            }
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    });
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Namespace `velero` and the default storage location, as `velero install` leaves them.
async fn install(client: &kube::Client, storage: &Path) -> anyhow::Result<()> {
    let nss: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()));
    let ns: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE},
    }))?;
    match nss.create(&PostParams::default(), &ns).await {
        Err(e) if !is_status(&e, 409) => return Err(e.into()),
        _ => {}
    }
    let bsls: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &vr("BackupStorageLocation", "backupstoragelocations"));
    let bsl: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
        "metadata": {"name": LOCATION, "namespace": NAMESPACE},
        "spec": {"provider": "lab.mtcd.io/directory", "default": true,
                 "objectStorage": {"bucket": "velero-storage"},
                 "config": {"path": storage.display().to_string()}},
    }))?;
    match bsls.create(&PostParams::default(), &bsl).await {
        Err(e) if !is_status(&e, 409) => return Err(e.into()),
        _ => {}
    }
    bsls.patch_status(
        LOCATION,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Available", "lastValidationTime": now()}})),
    )
    .await?;
    Ok(())
}

async fn set_status(api: &Api<DynamicObject>, name: &str, status: Value) -> anyhow::Result<()> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    Ok(())
}

/// Fetches `name` fresh: queued watch events carry stale phases.
async fn fresh(api: &Api<DynamicObject>, name: &str) -> anyhow::Result<Option<Value>> {
    Ok(api.get_opt(name).await?.map(|o| serde_json::to_value(o).unwrap_or_default()))
}

/// Why the storage location a backup names cannot be used, if it cannot.
async fn location_problem(client: &kube::Client, name: &str) -> anyhow::Result<Option<String>> {
    let bsls: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &vr("BackupStorageLocation", "backupstoragelocations"));
    Ok(match fresh(&bsls, name).await? {
        None => Some(format!(
            "a BackupStorageLocation CRD with the name specified in the backup spec needs to be created before this backup can be executed. Error: backupstoragelocations.velero.io \"{name}\" not found"
        )),
        Some(b) if s(&b, "/status/phase") == "Unavailable" => {
            Some(format!("backup can't be created because BackupStorageLocation {name} is in Unavailable status"))
        }
        Some(_) => None,
    })
}

/// `resource` is `plural` or `plural.group`, as Velero names resources.
fn resource_name(ar: &ApiResource) -> String {
    if ar.group.is_empty() { ar.plural.clone() } else { format!("{}.{}", ar.plural, ar.group) }
}

/// Whether `ar` is named in a Velero resource list (`plural`, `plural.group`, `kind`,
/// `kind.group`, any case).
fn excluded(ar: &ApiResource, list: &[String]) -> bool {
    let full = resource_name(ar);
    let kind = ar.kind.to_lowercase();
    let kind_group = if ar.group.is_empty() { kind.clone() } else { format!("{kind}.{}", ar.group) };
    list.iter().any(|e| {
        let e = e.to_lowercase();
        e == full || e == ar.plural || e == kind || e == kind_group
    })
}

/// Never backed up or restored (reference §6.2), nor Velero's own objects.
fn never(ar: &ApiResource) -> bool {
    ar.group == "velero.io" || matches!(ar.plural.as_str(), "events" | "nodes" | "csinodes" | "volumeattachments")
}

/// A LabelSelector object as a selector string for list calls.
pub fn selector_string(sel: &Value) -> Option<String> {
    let mut terms = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            terms.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let k = s(e, "/key");
        let vals = strings(e, "/values").join(",");
        terms.push(match s(e, "/operator") {
            "In" => format!("{k} in ({vals})"),
            "NotIn" if vals.contains(',') => format!("{k} notin ({vals})"),
            "NotIn" => format!("{k}!={vals}"),
            "Exists" => k.to_string(),
            _ => format!("!{k}"),
        });
    }
    (!terms.is_empty()).then(|| terms.join(","))
}

async fn backup(client: &kube::Client, storage: &Path, name: &str) -> anyhow::Result<()> {
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), NAMESPACE, &vr("Backup", "backups"));
    let Some(b) = fresh(&api, name).await? else {
        return Ok(());
    };
    let dir = storage.join("backups").join(name);
    // Synced from storage (already made), or already handled.
    if !matches!(s(&b, "/status/phase"), "" | "New") || dir.exists() {
        return Ok(());
    }
    let start = now();
    let location = match s(&b, "/spec/storageLocation") {
        "" => LOCATION,
        l => l,
    };
    if let Some(problem) = location_problem(client, location).await? {
        return set_status(&api, name, json!({"phase": "FailedValidation", "validationErrors": [problem], "startTimestamp": start, "completionTimestamp": now()})).await;
    }
    set_status(&api, name, json!({"phase": "InProgress", "startTimestamp": start})).await?;
    let included = strings(&b, "/spec/includedNamespaces");
    let all = included.is_empty() || included.iter().any(|n| n == "*");
    let excl = strings(&b, "/spec/excludedResources");
    let incl = strings(&b, "/spec/includedResources");
    let selector = b.pointer("/spec/labelSelector").and_then(selector_string);
    let mut items = Vec::new();
    let mut errors = Vec::new();
    let discovery = kube::Discovery::new(client.clone()).run().await?;
    let nss: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()));
    let namespaces: Vec<String> = if all {
        nss.list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .filter(|n| n != NAMESPACE)
            .collect()
    } else {
        included.clone()
    };
    if !excluded(&ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()), &excl) {
        for ns in &namespaces {
            if let Some(o) = nss.get_opt(ns).await? {
                items.push(json!({"resource": "namespaces", "object": o}));
            }
        }
    }
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != kube::discovery::Scope::Namespaced
                || !caps.supports_operation(kube::discovery::verbs::LIST)
                || never(&ar)
                || excluded(&ar, &excl)
                || !(incl.is_empty() || incl.iter().any(|i| i == "*") || excluded(&ar, &incl))
            {
                continue;
            }
            for ns in &namespaces {
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
                let mut lp = ListParams::default();
                if let Some(sel) = &selector {
                    lp = lp.labels(sel);
                }
                match api.list(&lp).await {
                    Ok(l) => items.extend(l.items.into_iter().map(|o| {
                        let mut v = serde_json::to_value(o).unwrap_or_default();
                        // Lists omit apiVersion/kind on items; the backup keeps them.
                        v["apiVersion"] = json!(ar.api_version);
                        v["kind"] = json!(ar.kind);
                        json!({"resource": resource_name(&ar), "object": v})
                    })),
                    Err(e) => errors.push(format!("listing {} in {ns}: {e}", resource_name(&ar))),
                }
            }
        }
    }
    std::fs::create_dir_all(&dir)?;
    write_atomic(&dir.join("resources.json"), &serde_json::to_vec(&items)?)?;
    let status = json!({
        "phase": if errors.is_empty() { "Completed" } else { "PartiallyFailed" },
        "startTimestamp": start, "completionTimestamp": now(),
        "progress": {"totalItems": items.len(), "itemsBackedUp": items.len()},
        "errors": errors.len(), "warnings": 0, "version": 1, "formatVersion": "1.1.0",
    });
    set_status(&api, name, status.clone()).await?;
    // The metadata last: backup sync on the other cluster only sees finished backups.
    let meta = json!({"metadata": {"name": name, "labels": b.pointer("/metadata/labels")},
                      "spec": b["spec"], "status": status, "errors": errors});
    write_atomic(&dir.join("velero-backup.json"), &serde_json::to_vec_pretty(&meta)?)?;
    tracing::info!(backup = %name, items = items.len(), "velero stand-in: backup completed");
    Ok(())
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(tmp, path)
}

/// Velero's backup sync controller: backups in the storage location appear on every
/// cluster using it.
async fn sync_backups(client: &kube::Client, storage: &Path) -> anyhow::Result<()> {
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), NAMESPACE, &vr("Backup", "backups"));
    for entry in std::fs::read_dir(storage.join("backups"))? {
        let Ok(text) = std::fs::read(entry?.path().join("velero-backup.json")) else {
            continue;
        };
        let meta: Value = serde_json::from_slice(&text)?;
        let name = s(&meta, "/metadata/name").to_string();
        if api.get_opt(&name).await?.is_some() {
            continue;
        }
        let mut labels =
            meta.pointer("/metadata/labels").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
        labels["velero.io/storage-location"] = json!(LOCATION);
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
            "spec": meta["spec"],
        }))?;
        match api.create(&PostParams::default(), &obj).await {
            Err(e) if !is_status(&e, 409) => return Err(e.into()),
            _ => {}
        }
        set_status(&api, &name, meta["status"].clone()).await?;
        tracing::info!(backup = %name, "velero stand-in: backup synced from storage");
    }
    Ok(())
}

/// Velero's default restore priorities (reference §6.2); the rest follow alphabetically.
const PRIORITIES: &[&str] = &[
    "customresourcedefinitions",
    "namespaces",
    "storageclasses",
    "volumesnapshotclass.snapshot.storage.k8s.io",
    "volumesnapshotcontents.snapshot.storage.k8s.io",
    "volumesnapshots.snapshot.storage.k8s.io",
    "datauploads.velero.io",
    "persistentvolumes",
    "persistentvolumeclaims",
    "clusterroles",
    "roles",
    "serviceaccounts",
    "clusterrolebindings",
    "rolebindings",
    "secrets",
    "configmaps",
    "limitranges",
    "priorityclasses",
    "pods",
    "replicasets.apps",
    "clusterclasses.cluster.x-k8s.io",
    "endpoints",
    "services",
];

/// Sort key of a resource in restore order.
pub fn restore_rank(resource: &str) -> (usize, String) {
    let short = resource.split('.').next().unwrap_or(resource);
    // Entries without a group name the resource in whichever group serves it
    // (roles → roles.rbac.authorization.k8s.io), as Velero resolves them.
    let pos = PRIORITIES.iter().position(|p| if p.contains('.') { *p == resource } else { *p == short });
    match pos {
        Some(i) => (i, String::new()),
        None => (PRIORITIES.len(), resource.to_string()),
    }
}

/// An object as Velero restores it (reference §6.3): server-owned fields gone, the
/// namespace mapped, the restore's labels added.
pub fn clean(obj: &Value, mapping: &BTreeMap<String, String>, backup: &str, restore: &str) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "generateName",
            "selfLink",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "ownerReferences",
            "managedFields",
        ] {
            m.remove(k);
        }
        if let Some(ns) = m.get("namespace").and_then(Value::as_str) {
            let mapped = mapping.get(ns).cloned().unwrap_or_else(|| ns.to_string());
            m.insert("namespace".into(), json!(mapped));
        }
        let labels = m.entry("labels").or_insert_with(|| json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        labels["velero.io/backup-name"] = json!(label_value(backup));
        labels["velero.io/restore-name"] = json!(label_value(restore));
    }
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
    }
    match s(obj, "/kind") {
        "Namespace" => {
            let n = s(obj, "/metadata/name");
            if let Some(d) = mapping.get(n) {
                o["metadata"]["name"] = json!(d);
            }
            if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("finalizers");
            }
        }
        "Service" => {
            if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
                    spec.remove("clusterIP");
                    spec.remove("clusterIPs");
                }
                spec.remove("healthCheckNodePort");
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.remove("nodePort");
                    }
                }
            }
        }
        "Pod" => {
            if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("nodeName");
                spec.remove("priority");
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            if let Some(subjects) = o.get_mut("subjects").and_then(Value::as_array_mut) {
                for sub in subjects.iter_mut() {
                    let ns = s(sub, "/namespace").to_string();
                    if let Some(d) = mapping.get(&ns) {
                        sub["namespace"] = json!(d);
                    }
                }
            }
        }
        _ => {}
    }
    o
}

/// Velero's `label.GetValidName`: names longer than a label value may be are cut to 57
/// characters plus 6 hex digits of their SHA-256, so long backup names still restore.
pub fn label_value(name: &str) -> String {
    use sha2::Digest;
    if name.len() <= 63 {
        return name.to_string();
    }
    let hash = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    format!("{}{}", &name[..57], &hash[..6])
}

/// The object without what the server or the restore adds, for "is it identical?".
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

#[derive(Default)]
struct Results {
    warnings: BTreeMap<String, Vec<String>>,
    errors: BTreeMap<String, Vec<String>>,
    cluster_warnings: Vec<String>,
    cluster_errors: Vec<String>,
    velero_errors: Vec<String>,
}

impl Results {
    fn add(&mut self, error: bool, ns: Option<&str>, msg: String) {
        match (error, ns) {
            (false, Some(ns)) => self.warnings.entry(ns.into()).or_default().push(msg),
            (true, Some(ns)) => self.errors.entry(ns.into()).or_default().push(msg),
            (false, None) => self.cluster_warnings.push(msg),
            (true, None) => self.cluster_errors.push(msg),
        }
    }
    fn count(m: &BTreeMap<String, Vec<String>>) -> usize {
        m.values().map(Vec::len).sum()
    }
    fn to_json(&self) -> Value {
        json!({
            "warnings": {"velero": [], "cluster": self.cluster_warnings, "namespaces": self.warnings},
            "errors": {"velero": self.velero_errors, "cluster": self.cluster_errors, "namespaces": self.errors},
        })
    }
}

async fn restore(client: &kube::Client, storage: &Path, name: &str) -> anyhow::Result<()> {
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), NAMESPACE, &vr("Restore", "restores"));
    let Some(r) = fresh(&api, name).await? else {
        return Ok(());
    };
    if !matches!(s(&r, "/status/phase"), "" | "New") {
        return Ok(());
    }
    let start = now();
    let backup_name = s(&r, "/spec/backupName").to_string();
    let file = storage.join("backups").join(&backup_name).join("resources.json");
    let Ok(text) = std::fs::read(&file) else {
        return set_status(&api, name, json!({"phase": "FailedValidation", "validationErrors": [format!("backup {backup_name:?} not found in storage location {LOCATION}")], "startTimestamp": start, "completionTimestamp": now()})).await;
    };
    set_status(&api, name, json!({"phase": "InProgress", "startTimestamp": start})).await?;
    let items: Vec<Value> = serde_json::from_slice(&text)?;
    let included = strings(&r, "/spec/includedNamespaces");
    let all = included.is_empty() || included.iter().any(|n| n == "*");
    let mapping: BTreeMap<String, String> = r
        .pointer("/spec/namespaceMapping")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or(k).to_string())).collect())
        .unwrap_or_default();
    let update = s(&r, "/spec/existingResourcePolicy") == "update";
    let mut selected: Vec<(String, Value)> = items
        .into_iter()
        .filter_map(|i| Some((i["resource"].as_str()?.to_string(), i["object"].clone())))
        .filter(|(res, o)| {
            let ns = if res == "namespaces" { s(o, "/metadata/name") } else { s(o, "/metadata/namespace") };
            all || included.iter().any(|n| n == ns)
        })
        .filter(|(res, o)| {
            // Finished pods and pods a controller owns are not restored.
            res != "pods"
                || !(matches!(s(o, "/status/phase"), "Succeeded" | "Failed")
                    || o.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|r| !r.is_empty()))
        })
        .collect();
    selected.sort_by_key(|(res, _)| restore_rank(res));
    let discovery = kube::Discovery::new(client.clone()).run().await?;
    let mut types: BTreeMap<String, (ApiResource, bool)> = BTreeMap::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            types.insert(resource_name(&ar), (ar, caps.scope == kube::discovery::Scope::Namespaced));
        }
    }
    let mut results = Results::default();
    let mut restored = 0usize;
    let total = selected.len();
    for (res, obj) in &selected {
        let o = clean(obj, &mapping, &backup_name, name);
        let (kind, oname) = (s(&o, "/kind").to_string(), s(&o, "/metadata/name").to_string());
        let ns = o.pointer("/metadata/namespace").and_then(Value::as_str).map(String::from);
        let Some((ar, namespaced)) = types.get(res) else {
            results.add(
                true,
                ns.as_deref(),
                format!("error restoring {res}/{oname}: the cluster does not serve {res}"),
            );
            continue;
        };
        let api: Api<DynamicObject> = match (&ns, namespaced) {
            (Some(n), true) => Api::namespaced_with(client.clone(), n, ar),
            _ => Api::all_with(client.clone(), ar),
        };
        let id = match &ns {
            Some(n) => format!("{res}/{n}/{oname}"),
            None => format!("{res}/{oname}"),
        };
        let dynobj: DynamicObject = serde_json::from_value(o.clone())?;
        match api.create(&PostParams::default(), &dynobj).await {
            Ok(_) => restored += 1,
            Err(e) if is_status(&e, 409) => {
                // Namespaces are reused, ServiceAccounts merged, identical objects skipped.
                if kind == "Namespace" || kind == "ServiceAccount" {
                    restored += 1;
                    continue;
                }
                let live = fresh(&api, &oname).await.ok().flatten();
                if live.as_ref().is_some_and(|l| comparable(l) == comparable(&o)) {
                    restored += 1;
                } else if update {
                    // Velero patches the in-cluster object to the backed-up one: every
                    // field but metadata and status replaced, the restore's labels added.
                    let patch = update_patch(live.as_ref().unwrap_or(&Value::Null), &o);
                    if let Err(e) = api.patch(&oname, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
                        results.add(
                            false,
                            ns.as_deref(),
                            format!(
                                "could not restore, {kind} \"{oname}\" already exists and could not be updated: {}",
                                message(&e)
                            ),
                        );
                    } else {
                        restored += 1;
                    }
                } else {
                    results.add(false, ns.as_deref(), format!("could not restore, {kind} \"{oname}\" already exists. Warning: the in-cluster version is different than the backed-up version"));
                }
            }
            Err(e) => results.add(true, ns.as_deref(), format!("error restoring {id}: {}", message(&e))),
        }
    }
    let warnings = Results::count(&results.warnings) + results.cluster_warnings.len();
    let errors = Results::count(&results.errors) + results.cluster_errors.len();
    let dir = storage.join("restores").join(name);
    std::fs::create_dir_all(&dir)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(results.to_json().to_string().as_bytes())?;
    write_atomic(&dir.join(format!("restore-{name}-results.gz")), &gz.finish()?)?;
    set_status(
        &api,
        name,
        json!({
            "phase": if errors == 0 { "Completed" } else { "PartiallyFailed" },
            "startTimestamp": start, "completionTimestamp": now(),
            "warnings": warnings, "errors": errors,
            "progress": {"totalItems": total, "itemsRestored": restored},
        }),
    )
    .await?;
    tracing::info!(restore = %name, restored, warnings, errors, "velero stand-in: restore finished");
    Ok(())
}

/// The JSON patch from `live` to the backed-up object `desired` (existingResourcePolicy
/// update): content fields replaced or removed, labels and annotations merged.
pub fn update_patch(live: &Value, desired: &Value) -> json_patch::Patch {
    let mut to = live.clone();
    if let (Some(t), Some(d)) = (to.as_object_mut(), desired.as_object()) {
        t.retain(|k, _| matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind") || d.contains_key(k));
        for (k, v) in d {
            if !matches!(k.as_str(), "metadata" | "status") {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    for field in ["labels", "annotations"] {
        if let Some(add) = desired.pointer(&format!("/metadata/{field}")).and_then(Value::as_object) {
            let m = &mut to["metadata"][field];
            if !m.is_object() {
                *m = json!({});
            }
            for (k, v) in add {
                m[k] = v.clone();
            }
        }
    }
    json_patch::diff(live, &to)
}

fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

async fn download(client: &kube::Client, storage: &Path, d: &DynamicObject) -> anyhow::Result<()> {
    let name = d.metadata.name.clone().unwrap_or_default();
    let api =
        Api::<DynamicObject>::namespaced_with(client.clone(), NAMESPACE, &vr("DownloadRequest", "downloadrequests"));
    let Some(v) = fresh(&api, &name).await? else {
        return Ok(());
    };
    if s(&v, "/status/phase") == "Processed" {
        return Ok(());
    }
    let target = s(&v, "/spec/target/name");
    let path = match s(&v, "/spec/target/kind") {
        "RestoreResults" => storage.join("restores").join(target).join(format!("restore-{target}-results.gz")),
        "BackupContents" => storage.join("backups").join(target).join("resources.json"),
        other => anyhow::bail!("download request {name}: target kind {other:?} is not served by the stand-in"),
    };
    if !path.exists() {
        anyhow::bail!("download request {name}: {} does not exist", path.display());
    }
    let url = url::Url::from_file_path(&path).map_err(|()| anyhow::anyhow!("not an absolute path"))?;
    let expiry =
        (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    set_status(&api, &name, json!({"phase": "Processed", "downloadURL": url.to_string(), "expiration": expiry})).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_order_follows_velero_priorities_then_alphabet() {
        let mut r = vec![
            "services",
            "deployments.apps",
            "configmaps",
            "namespaces",
            "rolebindings.rbac.authorization.k8s.io",
            "roles.rbac.authorization.k8s.io",
            "cronjobs.batch",
            "customresourcedefinitions.apiextensions.k8s.io",
        ];
        r.sort_by_key(|x| restore_rank(x));
        assert_eq!(
            r,
            vec![
                "customresourcedefinitions.apiextensions.k8s.io",
                "namespaces",
                "roles.rbac.authorization.k8s.io",
                "rolebindings.rbac.authorization.k8s.io",
                "configmaps",
                "services",
                "cronjobs.batch",
                "deployments.apps",
            ]
        );
    }

    #[test]
    fn clean_drops_server_fields_and_maps_the_namespace() {
        let m: BTreeMap<String, String> = [("shop".to_string(), "shop-prod".to_string())].into();
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "9",
            "ownerReferences": [{}]}, "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80, "nodePort": 30001}]}, "status": {}});
        let c = clean(&svc, &m, "b", "r");
        assert_eq!(c["metadata"]["namespace"], "shop-prod");
        assert!(
            c["metadata"].get("uid").is_none()
                && c["metadata"].get("ownerReferences").is_none()
                && c.get("status").is_none()
        );
        assert!(c["spec"].get("clusterIP").is_none() && c["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(c["metadata"]["labels"]["velero.io/restore-name"], "r");
        let headless =
            json!({"kind": "Service", "metadata": {"name": "h", "namespace": "shop"}, "spec": {"clusterIP": "None"}});
        assert_eq!(clean(&headless, &m, "b", "r")["spec"]["clusterIP"], "None");
        let ns = json!({"kind": "Namespace", "metadata": {"name": "shop"}});
        assert_eq!(clean(&ns, &m, "b", "r")["metadata"]["name"], "shop-prod");
        let rb = json!({"kind": "RoleBinding", "metadata": {"name": "x", "namespace": "shop"}, "subjects": [{"kind": "ServiceAccount", "name": "a", "namespace": "shop"}]});
        assert_eq!(clean(&rb, &m, "b", "r")["subjects"][0]["namespace"], "shop-prod");
    }

    #[test]
    fn long_names_become_valid_label_values() {
        assert_eq!(label_value("mtcd-shop-20261125193756"), "mtcd-shop-20261125193756");
        let long = format!("mtcd-{}-20261125193756", "a".repeat(60));
        let v = label_value(&long);
        assert_eq!(v.len(), 63);
        assert!(v.starts_with("mtcd-aaaa"));
        assert_ne!(v, label_value(&format!("mtcd-{}-20261125193757", "a".repeat(60))));
    }

    #[test]
    fn update_replaces_content_and_keeps_server_fields() {
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "uid": "u", "labels": {"a": "1"}}, "data": {"x": "old", "extra": "y"}});
        let desired = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"velero.io/restore-name": "r"}}, "data": {"x": "new"}});
        let mut out = live.clone();
        json_patch::patch(&mut out, &update_patch(&live, &desired)).unwrap();
        assert_eq!(out["data"], json!({"x": "new"}));
        assert_eq!(out["metadata"]["uid"], "u");
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "velero.io/restore-name": "r"}));
    }

    #[test]
    fn selectors_round_trip_to_list_strings() {
        let sel = json!({"matchLabels": {"app": "shop"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["cache"]}]});
        assert_eq!(selector_string(&sel).unwrap(), "app=shop,tier!=cache");
        assert_eq!(selector_string(&json!({"matchLabels": {}, "matchExpressions": []})), None);
    }
}
