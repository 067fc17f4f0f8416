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
pub mod outcome;
pub mod preflight;
pub mod progress;
pub mod snapshot;
#[cfg(test)]
mod tunnel_tests;
mod wait;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, LogParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde::Serialize;
use serde_json::{Value, json};

use crate::cluster::Cluster;
pub use crate::plan::volumes::{VolumePlan, VolumeTransfer};
use crate::spec::EndpointKind;
use crate::stop::Stop;
use crate::transform::object;

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

/// Where one PVC stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Before anything of this run is made: transfer objects an earlier run left behind were
    /// removed (the event's `pvc` is the namespace, `message` says what was removed).
    Cleanup,
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
    /// `namespace/claim` (the namespace alone for [`Phase::Cleanup`]).
    pub pvc: String,
    pub phase: Phase,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How one PVC's transfer ended.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeResult {
    pub pvc: String,
    /// Done: rsync exited 0 (or 24 during a stage sync) and its statistics were read.
    pub ok: bool,
    pub attempts: u32,
    pub stats: Stats,
    pub seconds: f64,
    /// One line per distinct failure; a message repeated by consecutive attempts is kept
    /// once with its count.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// What the user should know about a transfer that is done (files that vanished during a
    /// stage sync, a volume copied in one stream to keep its hard links, a destination
    /// request raised by `grow`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The source data as measured before the copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::plan::volumes::Usage>,
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
        "VolumeSnapshot" => snapshot::snapshots(),
        other => panic!("dvm does not create {other}"),
    }
}

async fn apply(c: &Cluster, obj: &Value) -> Result<Value, DvmError> {
    let r = resource_of(object::kind(obj));
    let api: Api<DynamicObject> = match object::namespace(obj) {
        Some(ns) => Api::namespaced_with(c.client.clone(), ns, &r),
        None => Api::all_with(c.client.clone(), &r),
    };
    let out = api.patch(object::name(obj), &PatchParams::apply("mtcd").force(), &Patch::Apply(obj)).await.map_err(
        |source| DvmError::Api {
            context: c.context.clone(),
            what: format!("applying {}", object::display(obj)),
            source,
        },
    )?;
    Ok(crate::observe::to_value(out, &r))
}

/// Runs DVM for a migration: every PVC, `dvm.parallel` at a time, with retries. Per
/// namespace: first the transfer objects an earlier run left behind are removed (and
/// reported), then each PVC is checked (preflight: destination state, capacity), then the
/// PVCs that passed are copied.
pub async fn run(
    src: &Cluster,
    dst: &Cluster,
    m: &VolumePlan,
    events: &(dyn Fn(DvmEvent) + Sync),
    interrupt: &Stop,
) -> Result<Vec<VolumeResult>, DvmError> {
    let transfers = m.transfers.clone();
    let mut results = Vec::new();
    let mut by_ns: BTreeMap<String, Vec<VolumeTransfer>> = BTreeMap::new();
    for t in transfers {
        if t.block {
            results.push(fail_now(&t, BLOCK_MESSAGE.into(), events));
            continue;
        }
        by_ns.entry(t.namespace.clone()).or_default().push(t);
    }
    for (ns, transfers) in by_ns {
        let dns = transfers[0].destination_namespace.clone();
        let span = tracing::info_span!("dvm", migration = %m.migration, namespace = %ns);
        let (left_src, left_dst) = futures::join!(
            preflight::remove_leftovers(src, &ns, &m.migration),
            preflight::remove_leftovers(dst, &dns, &m.migration)
        );
        for (c, namespace, left) in [(src, &ns, left_src?), (dst, &dns, left_dst?)] {
            if !left.is_empty() {
                events(DvmEvent {
                    pvc: namespace.clone(),
                    phase: Phase::Cleanup,
                    attempt: 0,
                    progress: None,
                    message: Some(format!(
                        "removed {} transfer object(s) an earlier run left behind in {}/{namespace}: {}",
                        left.len(),
                        c.context,
                        left.join(", ")
                    )),
                });
            }
        }
        ensure_namespace(dst, &dns, &m.migration).await?;
        let r =
            tracing::Instrument::instrument(run_namespace(src, dst, m, &ns, &transfers, events, interrupt), span).await;
        // Whatever happened, leave nothing behind.
        let _ = futures::join!(cleanup_namespace(src, &ns, &m.migration), cleanup_namespace(dst, &dns, &m.migration));
        results.extend(r?);
    }
    Ok(results)
}

/// A PVC that fails before any attempt (Block volume, preflight).
fn fail_now(t: &VolumeTransfer, message: String, events: &(dyn Fn(DvmEvent) + Sync)) -> VolumeResult {
    let pvc = format!("{}/{}", t.namespace, t.claim);
    events(DvmEvent {
        pvc: pvc.clone(),
        phase: Phase::Failed,
        attempt: 0,
        progress: None,
        message: Some(message.clone()),
    });
    VolumeResult {
        pvc,
        ok: false,
        attempts: 0,
        stats: Stats::default(),
        seconds: 0.0,
        errors: vec![message],
        warnings: Vec::new(),
        usage: None,
    }
}

/// The destination namespace: everything else on the destination lives in it (the resource
/// plan may already have made it).
async fn ensure_namespace(dst: &Cluster, dns: &str, migration: &str) -> Result<(), DvmError> {
    if crate::observe::get(&dst.client, &resource_of("Namespace"), None, dns).await.ok().flatten().is_none() {
        let mut ns_obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": dns}});
        crate::plan::hash::stamp(&mut ns_obj, migration);
        apply(dst, &ns_obj).await?;
    }
    Ok(())
}

/// `1.5 MiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

const BLOCK_MESSAGE: &str = "volumeMode Block is not supported by DVM (a filesystem copy of a block device would corrupt it); move it with a storage-level tool";

/// One namespace's transfer. Everything that does not depend on another step runs at once:
/// after the destination PVCs' states (API reads), the per-PVC preflight (snapshot,
/// measurement) runs while the endpoint is admitted and the secrets are written; the
/// certificates do not name the endpoint's host (certs::SERVER_NAME), so the server pod does
/// not wait for the Route / LoadBalancer, and when the measurement cannot change it (every
/// destination PVC exists, `grow` is off) not for the preflight either; the client pods start
/// as soon as the endpoint has an address and their PVC passed, while the server pod may
/// still be starting (they wait for the tunnel themselves, bounded by `tunnel_timeout`). A
/// server pod that cannot start ends the transfer with its reason. PVCs that fail their
/// preflight are results at once.
async fn run_namespace(
    src: &Cluster,
    dst: &Cluster,
    m: &VolumePlan,
    ns: &str,
    transfers: &[VolumeTransfer],
    events: &(dyn Fn(DvmEvent) + Sync),
    interrupt: &Stop,
) -> Result<Vec<VolumeResult>, DvmError> {
    let dns = transfers[0].destination_namespace.clone();
    let o = &m.options;
    let certs =
        certs::generate(&m.migration).map_err(|e| DvmError::Setup(format!("generating transfer certificates: {e}")))?;
    let password = random_password();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let l = objects::labels(&m.migration);
    let pods: Api<Pod> = Api::namespaced(dst.client.clone(), &dns);

    let endpoint = async {
        let svc = match o.endpoint {
            EndpointKind::LoadBalancer => objects::load_balancer(&dns, &m.migration),
            _ => objects::service(&dns, &m.migration),
        };
        apply(dst, &svc).await?;
        let want_host = objects::generated_host(&dns, o.subdomain.as_deref());
        match o.endpoint {
            EndpointKind::Route => {
                apply(dst, &objects::route(&dns, &m.migration, want_host.as_deref())).await?;
            }
            EndpointKind::Ingress => {
                let host = want_host.clone().ok_or_else(|| {
                    DvmError::Setup(
                        "dvm.endpoint = \"ingress\" needs dvm.subdomain (the ingress controller's apps domain)".into(),
                    )
                })?;
                apply(dst, &objects::ingress(&dns, &m.migration, &host)).await?;
            }
            EndpointKind::LoadBalancer => {}
        }
        let (host, port) = crate::stop::unless(interrupt, wait_endpoint(dst, &dns, o.endpoint, want_host))
            .await
            .map_err(|why| DvmError::Setup(format!("stopped while waiting for the transfer endpoint: {why}")))??;
        apply(src, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{}-client", objects::SERVER), "namespace": ns, "labels": l},
            "data": {"stunnel-client.conf": objects::stunnel_client_conf(&host, port)}})).await?;
        Ok::<_, DvmError>(())
    };
    let server_secrets = async {
        let tls = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{}-tls", objects::SERVER), "namespace": dns, "labels": l},
            "type": "Opaque", "data": {"ca.crt": b64(&certs.ca), "tls.crt": b64(&certs.server_cert), "tls.key": b64(&certs.server_key)}});
        let secrets = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{}-rsync", objects::SERVER), "namespace": dns, "labels": l},
            "type": "Opaque", "data": {"rsyncd.secrets": b64(&format!("{}:{password}\n", objects::RSYNC_USER))}});
        futures::try_join!(
            // A server pod from an earlier run has other claims or certificates mounted: replace it.
            async {
                wait::delete_pod(&pods, objects::SERVER).await;
                Ok(())
            },
            apply(dst, &tls),
            apply(dst, &secrets),
        )?;
        Ok::<_, DvmError>(())
    };
    let client_secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{}-client-tls", objects::SERVER), "namespace": ns, "labels": l},
        "type": "Opaque", "data": {"ca.crt": b64(&certs.ca), "tls.crt": b64(&certs.client_cert), "tls.key": b64(&certs.client_key), "rsync-password": b64(&password)}});

    // The destination PVCs' states first (API reads only): a PVC going away or in use fails
    // at once, before any pod is made for it.
    let mut results = Vec::new();
    let mut candidates: Vec<(&VolumeTransfer, Option<Value>)> = Vec::new();
    let states = futures::future::join_all(transfers.iter().map(|t| preflight::destination(dst, t))).await;
    for (t, state) in transfers.iter().zip(states) {
        match state {
            Ok(live) => candidates.push((t, live)),
            Err(message) => results.push(fail_now(t, message, events)),
        }
    }
    if candidates.is_empty() {
        return Ok(results);
    }
    // When every destination PVC is there, none may grow and every source is read live,
    // nothing the preflight can find changes the server pod: it starts at once, and each
    // client pod measures its volume on its way to the copy (beside the tunnel coming up)
    // instead of a probe pod before it — on a real cluster, two pod starts less on the way
    // to the copy. A PVC found too small then fails in its client pod, before any data.
    let early = !o.grow
        && candidates
            .iter()
            .all(|(t, live)| live.is_some() && t.read_from == crate::spec::VolumeSource::Live && t.usage.is_none());
    let all: Vec<String> = candidates.iter().map(|(t, _)| t.destination_claim.clone()).collect();
    let server = async {
        server_secrets.await?;
        if early {
            start_server(dst, &dns, m, &all).await?;
        }
        Ok::<_, DvmError>(())
    };
    let checks = preflight::Checks { src, dst, m, events, interrupt };
    let preflight =
        futures::future::join_all(candidates.iter().map(|(t, live)| preflight::check(&checks, t, live.clone(), early)));
    let (endpoint, client_secret, server, checks) =
        futures::join!(endpoint, apply(src, &client_secret), server, preflight);
    let mut ready: Vec<(VolumeTransfer, preflight::Ready)> = Vec::new();
    for ((t, _), check) in candidates.iter().zip(checks) {
        match check {
            Ok(r) => ready.push(((*t).clone(), r)),
            Err(message) => results.push(fail_now(t, message, events)),
        }
    }
    if ready.is_empty() {
        return Ok(results);
    }
    if crate::stop::is_stopped(interrupt) {
        results.extend(ready.iter().map(|(t, _)| fail_now(t, "interrupted before the copy started".into(), events)));
        return Ok(results);
    }
    server?;
    if !early {
        let claims: Vec<String> = ready.iter().map(|(t, _)| t.destination_claim.clone()).collect();
        start_server(dst, &dns, m, &claims).await?;
    }
    // The client pods need the endpoint's address.
    endpoint?;
    client_secret?;

    // A server pod that cannot start stops the copies, each at its next wait and never inside
    // a create: a copy dropped with its pod's create in flight leaves a pod that lands after
    // the cleanup has listed (a CI run did).
    let (stop, stopped) = crate::stop::channel();
    let mut copies = std::pin::pin!(
        futures::stream::iter(ready.iter().map(|(t, pre)| transfer_with_retries(
            src,
            m,
            t,
            pre,
            events,
            [&stopped, interrupt]
        )),)
        .buffer_unordered(o.parallel.max(1))
        .collect::<Vec<_>>()
    );
    let (copied, server_failed) = tokio::select! {
        results = &mut copies => (results, None),
        up = wait_running(dst, &dns, objects::SERVER, Duration::from_secs(120)) => match up {
            Ok(()) => (copies.await, None),
            Err(e) => {
                let _ = stop.send(Some(e.to_string()));
                (copies.await, Some(e))
            }
        },
    };
    if let Some(e) = server_failed {
        return Err(e);
    }
    for mut v in copied {
        if let Some((_, pre)) = ready.iter().find(|(t, _)| format!("{}/{}", t.namespace, t.claim) == v.pvc) {
            v.usage = v.usage.or(pre.usage);
            v.warnings.splice(0..0, pre.warnings.iter().cloned());
        }
        results.push(v);
    }
    Ok(results)
}

/// The server pod and its configuration: one rsync module per destination claim.
async fn start_server(dst: &Cluster, dns: &str, m: &VolumePlan, claims: &[String]) -> Result<(), DvmError> {
    let o = &m.options;
    let modules: Vec<(String, String)> = claims.iter().map(|c| (c.clone(), format!("/mnt/{c}"))).collect();
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": objects::SERVER, "namespace": dns, "labels": objects::labels(&m.migration)},
        "data": {"rsyncd.conf": objects::rsyncd_conf(&modules, o.security.root()), "stunnel.conf": objects::stunnel_server_conf(),
                 "restore-links.sh": objects::RESTORE_LINKS}});
    apply(dst, &config).await?;
    let claims: Vec<(String, String)> = claims.iter().map(|c| (c.clone(), c.clone())).collect();
    apply(dst, &objects::server_pod(dns, &m.migration, &claims, o)).await?;
    Ok(())
}

fn random_password() -> String {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect()
}

/// The address the source can reach: the Route's admitted host, the Ingress host once the
/// controller has taken it, or the LoadBalancer's ingress IP/hostname.
fn endpoint_address(kind: EndpointKind, obj: &Value, host: Option<&str>) -> Option<String> {
    match kind {
        EndpointKind::Route => {
            let admitted = obj.pointer("/status/ingress/0/host").and_then(Value::as_str).map(String::from);
            admitted.or_else(|| {
                obj.pointer("/spec/host")
                    .and_then(Value::as_str)
                    .filter(|_| obj.pointer("/status/ingress").is_some())
                    .map(String::from)
            })
        }
        EndpointKind::Ingress => obj.pointer("/status/loadBalancer/ingress/0").and(host.map(String::from)),
        EndpointKind::LoadBalancer => {
            let ing = obj.pointer("/status/loadBalancer/ingress/0")?;
            ing.get("hostname").or_else(|| ing.get("ip")).and_then(Value::as_str).map(String::from)
        }
    }
}

/// Waits until the endpoint has an address the source can reach.
async fn wait_endpoint(
    dst: &Cluster,
    ns: &str,
    kind: EndpointKind,
    host: Option<String>,
) -> Result<(String, u16), DvmError> {
    let r = match kind {
        EndpointKind::Route => resource_of("Route"),
        EndpointKind::Ingress => resource_of("Ingress"),
        EndpointKind::LoadBalancer => resource_of("Service"),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(dst.client.clone(), ns, &r);
    let h = host.clone();
    let found = wait::until(api, objects::SERVER, Duration::from_secs(120), move |o: Option<&DynamicObject>| {
        o.is_some_and(|o| endpoint_address(kind, &o.data, h.as_deref()).is_some())
    })
    .await;
    let timeout = || {
        DvmError::Setup(format!(
            "{}: the transfer endpoint ({}) in {ns} got no address within 120s; is a router / load balancer running?",
            dst.context,
            objects::endpoint_kind_name(kind)
        ))
    };
    match found {
        Ok(Some(o)) => endpoint_address(kind, &o.data, host.as_deref()).map(|h| (h, 443)).ok_or_else(timeout),
        Ok(None) | Err(wait::WaitError::Timeout) => Err(timeout()),
        Err(wait::WaitError::Watch(e)) => {
            Err(DvmError::Setup(format!("{}: watching the transfer endpoint in {ns}: {e}", dst.context)))
        }
    }
}

async fn wait_running(c: &Cluster, ns: &str, name: &str, timeout: Duration) -> Result<(), DvmError> {
    const STUCK: &[&str] = &["ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff"];
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let found = wait::until(pods, name, timeout, |p: Option<&Pod>| {
        p.is_some_and(|p| {
            matches!(wait::phase(p), "Running" | "Failed" | "Succeeded") || wait::stuck(p, STUCK).is_some()
        })
    })
    .await;
    let p = match found {
        Ok(Some(p)) => p,
        Ok(None) => return Err(DvmError::Setup(format!("{}: transfer pod {ns}/{name} was deleted", c.context))),
        Err(wait::WaitError::Timeout) => {
            return Err(DvmError::Setup(format!(
                "{}: transfer pod {ns}/{name} not running after {}s",
                c.context,
                timeout.as_secs()
            )));
        }
        Err(wait::WaitError::Watch(e)) => {
            return Err(DvmError::Setup(format!("{}: watching transfer pod {ns}/{name}: {e}", c.context)));
        }
    };
    if let Some(why) = wait::stuck(&p, STUCK) {
        return Err(DvmError::Setup(format!("{}: transfer pod {ns}/{name}: {why}", c.context)));
    }
    match wait::phase(&p) {
        "Running" => Ok(()),
        _ => Err(DvmError::Setup(format!("{}: transfer pod {ns}/{name} stopped", c.context))),
    }
}

async fn transfer_with_retries(
    src: &Cluster,
    m: &VolumePlan,
    t: &VolumeTransfer,
    pre: &preflight::Ready,
    events: &(dyn Fn(DvmEvent) + Sync),
    stops: [&Stop; 2],
) -> VolumeResult {
    let label = format!("{}/{}", t.namespace, t.claim);
    let started = Instant::now();
    let mut attempts_log = outcome::Attempts::default();
    let mut heard = Heard::default();
    let mut delay = Duration::from_secs(1);
    let attempts = m.options.retries + 1;
    let mut attempt = 0;
    while attempt < attempts {
        attempt += 1;
        events(DvmEvent { pvc: label.clone(), phase: Phase::Pending, attempt, progress: None, message: None });
        let job = Job { src, m, t, pre, events, stops };
        match transfer_once(job, attempt, &mut heard).await {
            Ok(done) => {
                if let Some(w) = done.warning {
                    events(DvmEvent {
                        pvc: label.clone(),
                        phase: Phase::Transferring,
                        attempt,
                        progress: None,
                        message: Some(format!("warning: {w}")),
                    });
                    heard.notes.push(w);
                }
                events(DvmEvent { pvc: label.clone(), phase: Phase::Done, attempt, progress: None, message: None });
                return VolumeResult {
                    pvc: label,
                    ok: true,
                    attempts: attempt,
                    stats: done.stats,
                    seconds: started.elapsed().as_secs_f64(),
                    errors: attempts_log.lines(attempts),
                    warnings: heard.notes,
                    usage: heard.usage,
                };
            }
            Err(f) => {
                let last = f.fatal || attempt == attempts;
                let repeated = attempts_log.record(attempt, f.message.clone());
                let message = match (repeated, f.fatal) {
                    (true, _) => format!("attempt {attempt}/{attempts} failed the same way"),
                    (false, true) => format!("{} (not retried: a retry cannot fix this)", f.message),
                    (false, false) => format!("attempt {attempt}/{attempts}: {}", f.message),
                };
                events(DvmEvent {
                    pvc: label.clone(),
                    phase: Phase::Failed,
                    attempt,
                    progress: None,
                    message: Some(message),
                });
                if last {
                    break;
                }
                // The next attempt sees a stop at once.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = crate::stop::either(stops[0], stops[1]) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    VolumeResult {
        pvc: label,
        ok: false,
        attempts: attempt,
        stats: Stats::default(),
        seconds: started.elapsed().as_secs_f64(),
        errors: attempts_log.lines(attempts),
        warnings: heard.notes,
        usage: heard.usage,
    }
}

/// What every attempt of one PVC's copy works with.
#[derive(Clone, Copy)]
struct Job<'a> {
    src: &'a Cluster,
    m: &'a VolumePlan,
    t: &'a VolumeTransfer,
    pre: &'a preflight::Ready,
    events: &'a (dyn Fn(DvmEvent) + Sync),
    /// The server pod cannot start, or the run was interrupted (crate::stop).
    stops: [&'a Stop; 2],
}

/// What client pods' logs said besides progress, kept across attempts: notes for the user
/// (and warnings of the result), and the usage a client pod measured.
#[derive(Default)]
struct Heard {
    notes: Vec<String>,
    usage: Option<crate::plan::volumes::Usage>,
}

/// Where a client pod must run: `(node, pod)` when a running pod mounts a ReadWriteOnce
/// volume (it can be mounted only on that pod's node, so the client pod is pinned there, as
/// Crane pins its client), `None` when the volume is free or shared. A ReadWriteOncePod
/// volume in use cannot be mounted a second time at all: that is an error naming the pod,
/// instead of a client pod that never starts.
async fn placement(pods: &Api<Pod>, t: &VolumeTransfer) -> Result<Option<(String, String)>, String> {
    let modes: Vec<&str> = t
        .source
        .pointer("/spec/accessModes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let once_pod = modes.contains(&"ReadWriteOncePod");
    if !once_pod
        && (!modes.contains(&"ReadWriteOnce") || modes.iter().any(|m| matches!(*m, "ReadWriteMany" | "ReadOnlyMany")))
    {
        return Ok(None);
    }
    let list = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing pods in {} to find who mounts {}: {e}", t.namespace, t.claim))?;
    let user = list.items.into_iter().find(|p| preflight::mounts(p, &t.claim));
    let Some(user) = user else { return Ok(None) };
    let pod = format!("{}/{}", t.namespace, user.metadata.name.clone().unwrap_or_default());
    if once_pod {
        return Err(format!(
            "PVC {}/{} is ReadWriteOncePod and pod {pod} mounts it, so no other pod can read it; stop the workload first (`mtcd cutover` does) and run again",
            t.namespace, t.claim
        ));
    }
    Ok(user.spec.and_then(|s| s.node_name).map(|node| (node, pod)))
}

/// How often a PVC's progress is shown at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// One client pod run: create it, then follow it to its end. A stop (crate::stop) ends the
/// run at a wait, never inside the create.
async fn transfer_once(job: Job<'_>, attempt: u32, heard: &mut Heard) -> Result<outcome::Success, outcome::Failure> {
    let Job { src, m, t, pre, events, stops } = job;
    let read_claim = pre.read_claim.as_str();
    let name = objects::client_name(&t.claim);
    let label = format!("{}/{}", t.namespace, t.claim);
    let pods: Api<Pod> = Api::namespaced(src.client.clone(), &t.namespace);
    let halt = |why: String| outcome::Failure { fatal: true, message: format!("stopped: {why}") };
    let prepare = async {
        wait::delete_pod(&pods, &name).await;
        // A snapshot's clone is mounted by nobody else: no node to follow.
        if read_claim == t.claim {
            placement(&pods, t).await.map_err(|message| outcome::Failure { fatal: true, message })
        } else {
            Ok(None)
        }
    };
    let node = tokio::select! {
        node = prepare => node?,
        why = crate::stop::either(stops[0], stops[1]) => return Err(halt(why)),
    };
    if let Some((node, user)) = &node {
        let message = format!("client pod on node {node}, beside pod {user} which mounts the volume (ReadWriteOnce)");
        events(DvmEvent { pvc: label.clone(), phase: Phase::Pending, attempt, progress: None, message: Some(message) });
    }
    let pod = objects::client_pod(
        &t.namespace,
        &m.migration,
        &name,
        read_claim,
        &t.destination_claim,
        &m.options,
        objects::ClientSetup { node: node.as_ref().map(|(n, _)| n.as_str()), measure: pre.measure.as_ref() },
    );
    // Never cut short (see run_namespace): once created, the pod is the cleanup's to find.
    apply(src, &pod).await.map_err(|e| outcome::Failure { fatal: false, message: e.to_string() })?;
    tokio::select! {
        done = follow(job, attempt, heard, &pods, &name) => done,
        why = crate::stop::either(stops[0], stops[1]) => Err(halt(why)),
    }
}

/// The created client pod, to its end: started (or why not), its log followed for progress
/// and what it says, then judged by its exit code and the evidence in that log
/// (outcome::judge).
async fn follow(
    job: Job<'_>,
    attempt: u32,
    heard: &mut Heard,
    pods: &Api<Pod>,
    name: &str,
) -> Result<outcome::Success, outcome::Failure> {
    let Job { m, t, pre, events, .. } = job;
    let transient = |message: String| outcome::Failure { fatal: false, message };
    let label = format!("{}/{}", t.namespace, t.claim);
    let pod_name = format!("{}/{name}", t.namespace);
    // Wait for the container to start (or fail to).
    let started = wait::until(pods.clone(), name, Duration::from_secs(120), |p: Option<&Pod>| {
        p.is_none_or(|p| {
            matches!(wait::phase(p), "Running" | "Succeeded" | "Failed") || wait::stuck(p, &["ErrImagePull"]).is_some()
        })
    })
    .await;
    match started {
        Ok(Some(p)) => {
            if let Some(why) = wait::stuck(&p, &["ErrImagePull"]) {
                return Err(transient(format!("pod {pod_name}: {why}")));
            }
        }
        Ok(None) => return Err(transient(format!("client pod {pod_name} disappeared before it started"))),
        Err(wait::WaitError::Timeout) => {
            let why = pods
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|p| wait::unschedulable(&p))
                .map(|w| format!(": {w}"))
                .unwrap_or_default();
            return Err(transient(format!("pod {pod_name} did not start within 120s{why}")));
        }
        Err(wait::WaitError::Watch(e)) => return Err(transient(format!("watching pod {pod_name}: {e}"))),
    }
    let mut log = String::new();
    let copying = Instant::now();
    if let Ok(stream) = pods.log_stream(name, &LogParams { follow: true, ..Default::default() }).await {
        let mut stream = Box::pin(stream);
        let mut phase = Phase::Pending;
        // rsync redraws its progress line with '\r' after every file (≈ 75 bytes a file), so
        // the log is read in whatever chunks arrive, split on both line ends, and only the
        // newest redraw of a chunk is shown, at most every PROGRESS_EVERY: the work per
        // chunk, not per file.
        let mut pending: Vec<u8> = Vec::new();
        let mut shown: Option<Instant> = None;
        let mut ended = false;
        while !ended {
            match stream.as_mut().fill_buf().await {
                Ok([]) | Err(_) => ended = true,
                Ok(chunk) => {
                    let n = chunk.len();
                    pending.extend_from_slice(chunk);
                    futures::AsyncBufRead::consume(stream.as_mut(), n);
                }
            }
            // Complete lines only, unless the log ended.
            let end = if ended {
                pending.len()
            } else {
                match pending.iter().rposition(|b| matches!(b, b'\n' | b'\r')) {
                    Some(i) => i + 1,
                    None => continue,
                }
            };
            let text = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..end);
            let mut newest = None;
            for line in text.split(['\n', '\r']).filter(|l| !l.is_empty()) {
                if line.contains("mtcd-transfer: tunnel up") && phase == Phase::Pending {
                    phase = Phase::TunnelUp;
                    events(DvmEvent { pvc: label.clone(), phase, attempt, progress: None, message: None });
                } else if let Some(note) = line.trim().strip_prefix("mtcd-transfer: note: ") {
                    if !heard.notes.iter().any(|n| n == note) {
                        heard.notes.push(note.to_string());
                    }
                    events(DvmEvent {
                        pvc: label.clone(),
                        phase,
                        attempt,
                        progress: None,
                        message: Some(note.to_string()),
                    });
                } else if let Some(u) = preflight::parse_usage(line) {
                    heard.usage = Some(u);
                    events(DvmEvent {
                        pvc: label.clone(),
                        phase,
                        attempt,
                        progress: None,
                        message: Some(preflight::usage_message(&u)),
                    });
                } else if line.contains("mtcd-transfer: verifying") {
                    events(DvmEvent {
                        pvc: label.clone(),
                        phase: Phase::Verifying,
                        attempt,
                        progress: None,
                        message: None,
                    });
                } else if progress::is_progress(line) {
                    // Shown, not kept: judging needs only the other lines, and what is kept
                    // grows with rsync's messages, not with the number of files.
                    newest = Some(line);
                    continue;
                }
                log.push_str(line);
                log.push('\n');
            }
            if let Some(mut p) = newest.and_then(progress::parse_progress)
                && shown.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY)
            {
                shown = Some(Instant::now());
                p.elapsed_seconds = copying.elapsed().as_secs();
                phase = Phase::Transferring;
                events(DvmEvent { pvc: label.clone(), phase, attempt, progress: Some(p), message: None });
            }
        }
    }
    // The log ends when the container does; the pod's status then has the exit code, which
    // decides (a log alone never does: pv-migrate #274).
    let ended = wait::until(pods.clone(), name, Duration::from_secs(60), |p: Option<&Pod>| {
        p.is_none_or(|p| wait::exit_code(p).is_some())
    })
    .await;
    let code = match ended {
        Ok(Some(p)) => wait::exit_code(&p).unwrap_or(-1),
        Ok(None) => return Err(transient(format!("client pod {pod_name} was deleted mid-transfer"))),
        Err(wait::WaitError::Timeout) => {
            return Err(transient(format!("pod {pod_name} still running 60s after its log ended")));
        }
        Err(wait::WaitError::Watch(e)) => return Err(transient(format!("watching pod {pod_name}: {e}"))),
    };
    if !log.contains("mtcd-transfer: done") {
        // The followed log may have been cut short; the pod's whole log is the evidence.
        if let Ok(full) = pods.logs(name, &LogParams::default()).await {
            log = full;
        }
    }
    let _ = wait::delete_pod_now(pods, name).await;
    match (code, heard.usage) {
        // The client pod measured (no probe pod did) and found no room: the same verdict and
        // message as a probe's, and nothing was copied.
        (objects::exit::NO_ROOM, Some(u)) => {
            let message = match preflight::verdict(t, &u, pre.destination.as_ref(), false) {
                Ok((crate::plan::volumes::CapacityCheck::TooSmall { needed, capacity }, _)) => {
                    crate::plan::volumes::too_small_message(t, &u, needed, capacity)
                }
                Ok(_) => format!(
                    "pod {pod_name}: the data of {label} does not fit destination PVC {}/{}",
                    t.destination_namespace, t.destination_claim
                ),
                Err(message) => message,
            };
            Err(outcome::Failure { fatal: true, message })
        }
        _ => outcome::judge(code, &log, m.final_sync, &pod_name),
    }
}

/// Removes every transfer object of `migration` in `namespace` (pods, services, routes,
/// ingresses, secrets, config maps) by label, so it works after a crash too; how many.
pub async fn cleanup_namespace(c: &Cluster, namespace: &str, migration: &str) -> Result<usize, DvmError> {
    Ok(preflight::remove_leftovers(c, namespace, migration).await?.len())
}
