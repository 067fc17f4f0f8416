//! Direct Volume Migration: PVC data moves straight from source pods to destination pods
//! over an rsync daemon behind stunnel (mutual TLS with certificates generated for this
//! transfer), exposed on 443 by a Route, a passthrough Ingress or a LoadBalancer.
//!
//! Improvements over MTC/Crane (docs/dvm.md): rsync's exit code decides success (crane#622,
//! crane#743), its error lines are shown, retries are counted, everything is labelled and
//! removed at the end and by `mtcd cleanup` even after mtcd was killed (crane#730), Block
//! volumes are refused instead of copied as filesystems.

pub mod certs;
pub mod objects;
pub mod progress;
#[cfg(test)]
mod tunnel_tests;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::spec::{EndpointKind, Migration, VolumeMode};
use crate::transform::{mapping, object, rules};

pub use progress::{Progress, Stats};

#[derive(Debug, thiserror::Error)]
pub enum DvmError {
    #[error("{context}: {what}: {source}")]
    Api {
        context: String,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// One source PVC to copy.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeTransfer {
    pub namespace: String,
    pub claim: String,
    pub destination_namespace: String,
    pub destination_claim: String,
    /// Requested capacity as written on the source (`10Gi`).
    pub capacity: String,
    pub storage_class: Option<String>,
    pub block: bool,
    #[serde(skip)]
    pub source: Value,
}

/// Where one PVC stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Pending,
    TunnelUp,
    Transferring,
    Verifying,
    Done,
    Failed,
}

/// What the progress system hears about a PVC.
#[derive(Debug, Clone, Serialize)]
pub struct DvmEvent {
    pub pvc: String,
    pub phase: Phase,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VolumeResult {
    pub pvc: String,
    pub ok: bool,
    pub attempts: u32,
    pub stats: Stats,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

use crate::observe::api_resource as ar;

fn resource_of(kind: &str) -> ApiResource {
    match kind {
        "Pod" => ar("", "v1", "Pod", "pods"),
        "Service" => ar("", "v1", "Service", "services"),
        "Secret" => ar("", "v1", "Secret", "secrets"),
        "ConfigMap" => ar("", "v1", "ConfigMap", "configmaps"),
        "PersistentVolumeClaim" => ar("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        "Route" => ar("route.openshift.io", "v1", "Route", "routes"),
        "Ingress" => ar("networking.k8s.io", "v1", "Ingress", "ingresses"),
        "Namespace" => ar("", "v1", "Namespace", "namespaces"),
        other => panic!("dvm does not create {other}"),
    }
}

async fn apply(c: &Cluster, obj: &Value) -> Result<Value, DvmError> {
    let r = resource_of(object::kind(obj));
    let api: Api<DynamicObject> = match object::namespace(obj) {
        Some(ns) => Api::namespaced_with(c.client.clone(), ns, &r),
        None => Api::all_with(c.client.clone(), &r),
    };
    let out = api
        .patch(object::name(obj), &PatchParams::apply("mtcd").force(), &Patch::Apply(obj))
        .await
        .map_err(|source| DvmError::Api { context: c.context.clone(), what: format!("applying {}", object::display(obj)), source })?;
    Ok(crate::observe::to_value(out, &r))
}

/// The PVCs a migration moves, with their destination names.
pub async fn discover(src: &Cluster, m: &Migration) -> Result<Vec<VolumeTransfer>, DvmError> {
    if m.volumes == VolumeMode::Skip {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for ns in &m.namespaces {
        let items = crate::observe::list(&src.client, &resource_of("PersistentVolumeClaim"), Some(ns), None)
            .await
            .map_err(|source| DvmError::Api { context: src.context.clone(), what: format!("listing PVCs in {ns}"), source })?;
        for pvc in items {
            let claim = object::name(&pvc).to_string();
            out.push(VolumeTransfer {
                namespace: ns.clone(),
                destination_namespace: m.namespace_map.get(ns).cloned().unwrap_or_else(|| ns.clone()),
                destination_claim: m.pvc_name_map.get(&claim).cloned().unwrap_or_else(|| claim.clone()),
                capacity: pvc.pointer("/spec/resources/requests/storage").and_then(Value::as_str).unwrap_or("").to_string(),
                storage_class: pvc.pointer("/spec/storageClassName").and_then(Value::as_str).map(String::from),
                block: pvc.pointer("/spec/volumeMode").and_then(Value::as_str) == Some("Block"),
                claim,
                source: pvc,
            });
        }
    }
    Ok(out)
}

/// The destination PVC for a source PVC: cleaned, mapped, and never smaller than the source.
pub fn destination_pvc(t: &VolumeTransfer, m: &Migration) -> Value {
    let mut pvc = t.source.clone();
    let settings = rules::RuleSettings {
        storage_class_map: m.storage_class_map.clone(),
        access_mode_map: m.access_mode_map.clone(),
        pvc_name_map: m.pvc_name_map.clone(),
    };
    rules::clean(&mut pvc, &settings);
    mapping::map_namespace(&mut pvc, &m.namespace_map);
    // The bound PV may be larger than the request (rounded up by the provisioner); ask for
    // what the data may need.
    if let Some(cap) = t.source.pointer("/status/capacity/storage").and_then(Value::as_str) {
        if crate::spec::parse_size(cap).unwrap_or(0) > crate::spec::parse_size(&t.capacity).unwrap_or(0) {
            pvc["spec"]["resources"]["requests"]["storage"] = json!(cap);
        }
    }
    crate::plan::hash::stamp(&mut pvc, &m.name);
    pvc
}

/// Runs DVM for a migration: every PVC, `dvm.parallel` at a time, with retries.
pub async fn run(src: &Cluster, dst: &Cluster, m: &Migration, events: &(dyn Fn(DvmEvent) + Sync)) -> Result<Vec<VolumeResult>, DvmError> {
    let transfers = discover(src, m).await?;
    let mut results = Vec::new();
    let mut by_ns: BTreeMap<String, Vec<VolumeTransfer>> = BTreeMap::new();
    for t in transfers {
        if t.block {
            events(DvmEvent { pvc: format!("{}/{}", t.namespace, t.claim), phase: Phase::Failed, attempt: 0, progress: None, message: Some(BLOCK_MESSAGE.into()) });
            results.push(VolumeResult { pvc: format!("{}/{}", t.namespace, t.claim), ok: false, attempts: 0, stats: Stats::default(), seconds: 0.0, errors: vec![BLOCK_MESSAGE.into()] });
            continue;
        }
        by_ns.entry(t.namespace.clone()).or_default().push(t);
    }
    for (ns, transfers) in by_ns {
        let span = tracing::info_span!("dvm", migration = %m.name, namespace = %ns);
        let r = tracing::Instrument::instrument(run_namespace(src, dst, m, &ns, &transfers, events), span).await;
        // Whatever happened, leave nothing behind.
        let _ = cleanup_namespace(src, &ns, &m.name).await;
        let _ = cleanup_namespace(dst, &transfers[0].destination_namespace, &m.name).await;
        results.extend(r?);
    }
    Ok(results)
}

const BLOCK_MESSAGE: &str = "volumeMode Block is not supported by DVM (a filesystem copy of a block device would corrupt it); move it with a storage-level tool";

async fn run_namespace(
    src: &Cluster,
    dst: &Cluster,
    m: &Migration,
    ns: &str,
    transfers: &[VolumeTransfer],
    events: &(dyn Fn(DvmEvent) + Sync),
) -> Result<Vec<VolumeResult>, DvmError> {
    let dns = transfers[0].destination_namespace.clone();
    let o = &m.dvm;
    // Destination namespace and PVCs first (the resource plan may already have made them).
    let mut ns_obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": dns}});
    crate::plan::hash::stamp(&mut ns_obj, &m.name);
    let live_ns = crate::observe::get(&dst.client, &resource_of("Namespace"), None, &dns).await.ok().flatten();
    if live_ns.is_none() {
        apply(dst, &ns_obj).await?;
    }
    for t in transfers {
        let live = crate::observe::get(&dst.client, &resource_of("PersistentVolumeClaim"), Some(&dns), &t.destination_claim).await.ok().flatten();
        if live.is_none() {
            apply(dst, &destination_pvc(t, m)).await?;
        }
    }
    // Endpoint, then certificates for the host it got.
    let svc = match o.endpoint {
        EndpointKind::LoadBalancer => objects::load_balancer(&dns, &m.name),
        _ => objects::service(&dns, &m.name),
    };
    apply(dst, &svc).await?;
    let want_host = objects::generated_host(&dns, o.subdomain.as_deref());
    match o.endpoint {
        EndpointKind::Route => {
            apply(dst, &objects::route(&dns, &m.name, want_host.as_deref())).await?;
        }
        EndpointKind::Ingress => {
            let host = want_host.clone().ok_or_else(|| DvmError::Setup("dvm.endpoint = \"ingress\" needs dvm.subdomain (the ingress controller's apps domain)".into()))?;
            apply(dst, &objects::ingress(&dns, &m.name, &host)).await?;
        }
        EndpointKind::LoadBalancer => {}
    }
    let (host, port) = wait_endpoint(dst, &dns, o.endpoint, want_host.as_deref()).await?;
    let certs = certs::generate(&host, &m.name).map_err(|e| DvmError::Setup(format!("generating transfer certificates: {e}")))?;
    let password = random_password();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let l = objects::labels(&m.name);
    let modules: Vec<(String, String)> = transfers.iter().map(|t| (t.destination_claim.clone(), format!("/mnt/{}", t.destination_claim))).collect();
    apply(dst, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{}-tls", objects::SERVER), "namespace": dns, "labels": l},
        "type": "Opaque", "data": {"ca.crt": b64(&certs.ca), "tls.crt": b64(&certs.server_cert), "tls.key": b64(&certs.server_key)}})).await?;
    apply(dst, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{}-rsync", objects::SERVER), "namespace": dns, "labels": l},
        "type": "Opaque", "data": {"rsyncd.secrets": b64(&format!("{}:{password}\n", objects::RSYNC_USER))}})).await?;
    apply(dst, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": objects::SERVER, "namespace": dns, "labels": l},
        "data": {"rsyncd.conf": objects::rsyncd_conf(&modules, o.preserve_ownership), "stunnel.conf": objects::stunnel_server_conf()}})).await?;
    apply(src, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{}-client-tls", objects::SERVER), "namespace": ns, "labels": l},
        "type": "Opaque", "data": {"ca.crt": b64(&certs.ca), "tls.crt": b64(&certs.client_cert), "tls.key": b64(&certs.client_key), "rsync-password": b64(&password)}})).await?;
    apply(src, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{}-client", objects::SERVER), "namespace": ns, "labels": l},
        "data": {"stunnel-client.conf": objects::stunnel_client_conf(&host, port)}})).await?;
    // A server pod from an earlier run has other claims or certificates mounted: replace it.
    delete_pod(dst, &dns, objects::SERVER).await;
    let claims: Vec<(String, String)> = transfers.iter().map(|t| (t.destination_claim.clone(), t.destination_claim.clone())).collect();
    apply(dst, &objects::server_pod(&dns, &m.name, &o.transfer_image, &claims, o.preserve_ownership)).await?;
    wait_running(dst, &dns, objects::SERVER, Duration::from_secs(120)).await?;

    let results = futures::stream::iter(transfers.iter().map(|t| transfer_with_retries(src, m, t, events)))
        .buffer_unordered(o.parallel.max(1))
        .collect::<Vec<_>>()
        .await;
    Ok(results)
}

fn random_password() -> String {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect()
}

/// Waits until the endpoint has an address the source can reach: the Route's admitted host,
/// the Ingress host, or the LoadBalancer's ingress IP/hostname.
async fn wait_endpoint(dst: &Cluster, ns: &str, kind: EndpointKind, host: Option<&str>) -> Result<(String, u16), DvmError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found = match kind {
            EndpointKind::Route => crate::observe::get(&dst.client, &resource_of("Route"), Some(ns), objects::SERVER).await.ok().flatten().and_then(|r| {
                let admitted = r.pointer("/status/ingress/0/host").and_then(Value::as_str).map(String::from);
                admitted.or_else(|| r.pointer("/spec/host").and_then(Value::as_str).filter(|_| r.pointer("/status/ingress").is_some()).map(String::from))
            }),
            EndpointKind::Ingress => crate::observe::get(&dst.client, &resource_of("Ingress"), Some(ns), objects::SERVER)
                .await
                .ok()
                .flatten()
                .filter(|i| i.pointer("/status/loadBalancer/ingress/0").is_some())
                .and(host.map(String::from)),
            EndpointKind::LoadBalancer => crate::observe::get(&dst.client, &resource_of("Service"), Some(ns), objects::SERVER).await.ok().flatten().and_then(|s| {
                let ing = s.pointer("/status/loadBalancer/ingress/0")?;
                ing.get("hostname").or_else(|| ing.get("ip")).and_then(Value::as_str).map(String::from)
            }),
        };
        if let Some(h) = found {
            return Ok((h, 443));
        }
        if Instant::now() > deadline {
            return Err(DvmError::Setup(format!("{}: the transfer endpoint ({}) in {ns} got no address within 120s; is a router / load balancer running?", dst.context, objects::endpoint_kind_name(kind))));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_running(c: &Cluster, ns: &str, name: &str, timeout: Duration) -> Result<(), DvmError> {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let deadline = Instant::now() + timeout;
    loop {
        let pod = pods.get_opt(name).await.map_err(|source| DvmError::Api { context: c.context.clone(), what: format!("reading pod {ns}/{name}"), source })?;
        if let Some(p) = &pod {
            let status = p.status.as_ref();
            if status.and_then(|s| s.phase.as_deref()) == Some("Running") {
                return Ok(());
            }
            if let Some(why) = stuck(p, &["ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff"]) {
                return Err(DvmError::Setup(format!("{}: transfer pod {ns}/{name}: {why}", c.context)));
            }
            if matches!(status.and_then(|s| s.phase.as_deref()), Some("Failed" | "Succeeded")) {
                return Err(DvmError::Setup(format!("{}: transfer pod {ns}/{name} stopped", c.context)));
            }
        }
        if Instant::now() > deadline {
            return Err(DvmError::Setup(format!("{}: transfer pod {ns}/{name} not running after {}s", c.context, timeout.as_secs())));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `reason message` of a container waiting for one of `reasons` (it will not start by itself).
fn stuck(pod: &Pod, reasons: &[&str]) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find(|w| w.reason.as_deref().is_some_and(|r| reasons.contains(&r)))
        .map(|w| format!("{} {}", w.reason.clone().unwrap_or_default(), w.message.clone().unwrap_or_default()))
}

async fn delete_pod(c: &Cluster, ns: &str, name: &str) {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    if pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.is_ok() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && pods.get_opt(name).await.ok().flatten().is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn transfer_with_retries(src: &Cluster, m: &Migration, t: &VolumeTransfer, events: &(dyn Fn(DvmEvent) + Sync)) -> VolumeResult {
    let label = format!("{}/{}", t.namespace, t.claim);
    let started = Instant::now();
    let mut errors = Vec::new();
    let mut delay = Duration::from_secs(1);
    let attempts = m.dvm.retries + 1;
    for attempt in 1..=attempts {
        events(DvmEvent { pvc: label.clone(), phase: Phase::Pending, attempt, progress: None, message: None });
        match transfer_once(src, m, t, attempt, events).await {
            Ok(stats) => {
                events(DvmEvent { pvc: label.clone(), phase: Phase::Done, attempt, progress: None, message: None });
                return VolumeResult { pvc: label, ok: true, attempts: attempt, stats, seconds: started.elapsed().as_secs_f64(), errors };
            }
            Err(e) => {
                let msg = format!("attempt {attempt}/{attempts}: {e}");
                events(DvmEvent { pvc: label.clone(), phase: Phase::Failed, attempt, progress: None, message: Some(msg.clone()) });
                errors.push(msg);
                if attempt < attempts {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
    VolumeResult { pvc: label, ok: false, attempts, stats: Stats::default(), seconds: started.elapsed().as_secs_f64(), errors }
}

/// One client pod run: create it, follow its log for progress, and judge it by its exit code.
async fn transfer_once(src: &Cluster, m: &Migration, t: &VolumeTransfer, attempt: u32, events: &(dyn Fn(DvmEvent) + Sync)) -> Result<Stats, String> {
    let name = objects::client_name(&t.claim);
    let label = format!("{}/{}", t.namespace, t.claim);
    delete_pod(src, &t.namespace, &name).await;
    apply(src, &objects::client_pod(&t.namespace, &m.name, &name, &t.claim, &t.destination_claim, &m.dvm)).await.map_err(|e| e.to_string())?;
    let pods: Api<Pod> = Api::namespaced(src.client.clone(), &t.namespace);
    // Wait for the container to start (or fail to).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = pods.get_opt(&name).await.map_err(|e| e.to_string())?.ok_or("client pod disappeared")?;
        let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        if matches!(phase.as_str(), "Running" | "Succeeded" | "Failed") {
            break;
        }
        if let Some(why) = stuck(&p, &["ErrImagePull"]) {
            return Err(format!("pod {}/{name}: {why}", t.namespace));
        }
        if Instant::now() > deadline {
            return Err(format!("pod {}/{name} did not start within 120s", t.namespace));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut log = String::new();
    if let Ok(stream) = pods.log_stream(&name, &LogParams { follow: true, ..Default::default() }).await {
        let mut stream = Box::pin(stream);
        let mut phase = Phase::Pending;
        let mut buf = Vec::new();
        // rsync redraws progress with '\r'; split on both line ends.
        loop {
            buf.clear();
            match stream.read_until(b'\r', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let chunk = String::from_utf8_lossy(&buf).to_string();
            for line in chunk.split(['\n', '\r']) {
                if line.contains("mtcd-transfer: tunnel up") && phase == Phase::Pending {
                    phase = Phase::TunnelUp;
                    events(DvmEvent { pvc: label.clone(), phase, attempt, progress: None, message: None });
                } else if line.contains("mtcd-transfer: rsync exit 0") && m.dvm.verify {
                    events(DvmEvent { pvc: label.clone(), phase: Phase::Verifying, attempt, progress: None, message: None });
                } else if let Some(p) = progress::parse_progress(line) {
                    phase = Phase::Transferring;
                    events(DvmEvent { pvc: label.clone(), phase, attempt, progress: Some(p), message: None });
                }
                log.push_str(line);
                log.push('\n');
            }
        }
    }
    // The log ends when the container does; the pod's status then has the exit code.
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        let p = pods.get_opt(&name).await.map_err(|e| e.to_string())?.ok_or("client pod was deleted mid-transfer")?;
        let terminated = p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).into_iter().flatten().find_map(|c| c.state.as_ref()?.terminated.clone());
        if let Some(t) = terminated {
            break t.exit_code;
        }
        if Instant::now() > deadline {
            return Err(format!("pod {}/{name} still running after its log ended", t.namespace));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if log.is_empty() {
        log = pods.logs(&name, &LogParams::default()).await.unwrap_or_default();
    }
    delete_pod(src, &t.namespace, &name).await;
    if code != 0 {
        let mut lines = progress::error_lines(&log);
        lines.truncate(10);
        let why = match code {
            111 => "the TLS tunnel to the destination did not come up".to_string(),
            120 => "verification found differences after the copy".to_string(),
            c => format!("rsync exited with code {c}"),
        };
        return Err(format!("pod {}/{name}: {why}{}{}", t.namespace, if lines.is_empty() { "" } else { ": " }, lines.join(" | ")));
    }
    Ok(progress::parse_stats(&log))
}

/// Removes every transfer object of `migration` in `namespace` (pods, services, routes,
/// ingresses, secrets, config maps) by label, so it works after a crash too.
pub async fn cleanup_namespace(c: &Cluster, namespace: &str, migration: &str) -> Result<usize, DvmError> {
    let selector = objects::selector(migration);
    let mut removed = 0;
    for kind in ["Pod", "Route", "Ingress", "Service", "Secret", "ConfigMap"] {
        let r = resource_of(kind);
        let api: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), namespace, &r);
        let list = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(l) => l,
            Err(kube::Error::Api(e)) if matches!(e.code, 404 | 405) => continue, // type not served (no Routes on Kubernetes)
            Err(source) => return Err(DvmError::Api { context: c.context.clone(), what: format!("listing {kind}s to clean up in {namespace}"), source }),
        };
        for o in list.items {
            if let Some(name) = o.metadata.name {
                if api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.is_ok() {
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}
