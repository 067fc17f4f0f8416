//! Before any data moves: the transfer objects an earlier run left behind are removed
//! (mig-controller #700/#703), and each PVC is checked on its own — the destination PVC must
//! not be going away or in use by a running pod (crane #810, #905), and the source's data must
//! fit it (measured by a short-lived probe pod, `df` or `du`; `grow` raises the request). A PVC
//! that fails a check fails at once with the reason and the numbers; the others go on.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, LogParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::{DvmError, DvmEvent, Phase, objects, resource_of, wait};
use crate::cluster::Cluster;
use crate::plan::volumes::{self, CapacityCheck, Usage, UsageMethod, VolumePlan, VolumeTransfer};
use crate::spec::VolumeSource;

/// Deletes every transfer object of `migration` in `namespace` and names what was there: at
/// the start of a run, these are what a crashed or killed earlier run left behind.
pub async fn remove_leftovers(c: &Cluster, namespace: &str, migration: &str) -> Result<Vec<String>, DvmError> {
    let selector = objects::selector(migration);
    // Snapshot clones and snapshots too (the clone first would be nicer, but nothing waits:
    // a snapshot in use as a clone's source is kept by its finalizer until the clone is gone).
    let per_kind =
        ["Pod", "Route", "Ingress", "Service", "Secret", "ConfigMap", "PersistentVolumeClaim", "VolumeSnapshot"].map(
            |kind| {
                let selector = selector.clone();
                async move {
                    let r = resource_of(kind);
                    let api: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), namespace, &r);
                    let list = match api.list(&ListParams::default().labels(&selector)).await {
                        Ok(l) => l,
                        // Type not served (no Routes on Kubernetes), or the namespace does not exist.
                        Err(kube::Error::Api(e)) if matches!(e.code, 404 | 405) => return Ok(Vec::new()),
                        Err(source) => {
                            return Err(DvmError::Api {
                                context: c.context.clone(),
                                what: format!("listing {kind}s to clean up in {namespace}"),
                                source,
                            });
                        }
                    };
                    let deletes =
                        list.items.into_iter().filter_map(|o| o.metadata.name).map(|name| {
                            let api = api.clone();
                            async move {
                                api.delete(&name, &wait::at_once()).await.is_ok().then(|| format!("{kind}/{name}"))
                            }
                        });
                    Ok(futures::future::join_all(deletes).await.into_iter().flatten().collect::<Vec<_>>())
                }
            },
        );
    let names = futures::future::try_join_all(per_kind).await?;
    Ok(names.into_iter().flatten().collect())
}

/// A PVC that may be copied: the destination PVC exists with room for the data, or the client
/// pod checks that before it copies (`measure`).
pub struct Ready {
    /// The claim the probe and client pods read: the source PVC, or its snapshot's clone.
    pub read_claim: String,
    /// The source data as measured by a probe pod (`None`: the client pod measures).
    pub usage: Option<Usage>,
    /// What the client pod checks first when no probe pod measured.
    pub measure: Option<objects::Measure>,
    /// The destination PVC as it was read before the copy.
    pub destination: Option<Value>,
    /// What the user should know (a raised request).
    pub warnings: Vec<String>,
}

/// The destination PVC as it is (`None`: not there yet), or why nothing may be copied into it:
/// going away, or mounted by a running pod. API reads only, so it is known before any pod
/// starts.
pub async fn destination(dst: &Cluster, t: &VolumeTransfer) -> Result<Option<Value>, String> {
    let live = crate::observe::get(
        &dst.client,
        &resource_of("PersistentVolumeClaim"),
        Some(&t.destination_namespace),
        &t.destination_claim,
    )
    .await
    .map_err(|e| format!("{}: reading destination PVC {}: {e}", dst.context, destination_name(t)))?;
    if let Some(pvc) = &live {
        destination_free(dst, t, pvc).await?;
    }
    Ok(live)
}

/// What every PVC's checks work with.
#[derive(Clone, Copy)]
pub struct Checks<'a> {
    pub src: &'a Cluster,
    pub dst: &'a Cluster,
    pub m: &'a VolumePlan,
    pub events: &'a (dyn Fn(DvmEvent) + Sync),
    /// The run was interrupted: the waits (snapshot, probe pod, expansion) end at once.
    pub interrupt: &'a crate::stop::Stop,
}

/// The rest of one PVC's checks, after [`destination`] gave `live`: the source measured, the
/// data against the destination's capacity (raised with `grow`, the PVC created when it is
/// not there); `Err` fails the PVC before anything is copied.
pub async fn check(cx: &Checks<'_>, t: &VolumeTransfer, live: Option<Value>, in_pod: bool) -> Result<Ready, String> {
    let Checks { src, dst, m, events, interrupt } = *cx;
    let label = format!("{}/{}", t.namespace, t.claim);
    let say = |message: String| {
        events(DvmEvent {
            pvc: label.clone(),
            phase: Phase::Pending,
            attempt: 0,
            progress: None,
            message: Some(message),
        })
    };
    let pvcs = resource_of("PersistentVolumeClaim");
    // A point-in-time source: the snapshot and its clone first, so the measurement is of the
    // data that will be copied.
    let read_claim = match t.read_from {
        VolumeSource::Live => t.claim.clone(),
        VolumeSource::Snapshot => {
            let class = super::snapshot::preflight(src, m, t).await?;
            let clone = super::snapshot::take(src, m, t, &class, interrupt).await?;
            let (snap, _) = super::snapshot::names(&t.claim);
            say(format!(
                "reading a point-in-time copy: VolumeSnapshot {}/{snap} (class {class}), restored as PVC {}/{clone}",
                t.namespace, t.namespace
            ));
            clone
        }
    };
    // The client pod measures on its way to the copy (beside the tunnel coming up) instead of
    // a probe pod before it, when the caller found that the verdict needs nothing but a yes or
    // no (run_namespace: the destination PVC is there, `grow` is off, the source is live).
    if let (true, Some(pvc)) = (in_pod, &live) {
        let capacity = volumes::pvc_capacity(pvc).unwrap_or(0);
        return Ok(Ready {
            read_claim,
            usage: None,
            measure: Some(objects::Measure { own_fs_limit: own_fs_limit(t), capacity }),
            destination: live,
            warnings: Vec::new(),
        });
    }
    let usage = match t.usage {
        Some(u) if t.read_from == VolumeSource::Live => u,
        _ => measure(src, m, t, &read_claim, interrupt).await?,
    };
    let mut warnings = Vec::new();
    say(usage_message(&usage));
    let (check, capacity) = verdict(t, &usage, live.as_ref(), m.options.grow)?;
    match check {
        CapacityCheck::Fits => {
            if live.is_none() {
                super::apply(dst, &t.destination).await.map_err(|e| e.to_string())?;
            }
        }
        CapacityCheck::TooSmall { needed, capacity } => {
            return Err(volumes::too_small_message(t, &usage, needed, capacity));
        }
        CapacityCheck::Grow { request } => {
            let note = format!(
                "destination PVC {} request raised from {} to {request} (dvm.grow: the data needs {} with headroom)",
                destination_name(t),
                super::human_bytes(capacity),
                super::human_bytes(volumes::required_bytes(&usage))
            );
            match &live {
                None => {
                    let mut pvc = t.destination.clone();
                    pvc["spec"]["resources"]["requests"]["storage"] = json!(request);
                    super::apply(dst, &pvc).await.map_err(|e| e.to_string())?;
                }
                Some(_) => {
                    // An expansion: the storage class must allow it.
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(dst.client.clone(), &t.destination_namespace, &pvcs);
                    let patch = json!({"spec": {"resources": {"requests": {"storage": request}}}});
                    api.patch(&t.destination_claim, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| {
                        format!(
                            "{}: dvm.grow could not raise destination PVC {} to {request}: {e}. Its storage class may not allow expansion: delete the destination PVC (mtcd then creates it at {request}) or make it larger by hand, and run again",
                            dst.context,
                            destination_name(t)
                        )
                    })?;
                    say(format!("waiting for destination PVC {} to grow to {request}", destination_name(t)));
                    wait_expanded(dst, t, &request, interrupt).await?;
                }
            }
            say(note.clone());
            warnings.push(note);
        }
    }
    Ok(Ready { read_claim, usage: Some(usage), measure: None, destination: live, warnings })
}

/// How long a destination PVC's expansion may take.
const EXPANSION_TIMEOUT: Duration = Duration::from_secs(300);

/// Where an expansion of a bound PVC stands, from its status.
#[derive(Debug, PartialEq)]
enum Expansion {
    /// `status.capacity` holds the request.
    Done,
    /// The controller's part is done; the node grows the file system when a pod mounts the
    /// volume (`FileSystemResizePending`) — the server pod's mount, before any data arrives.
    AtMount,
    /// The driver refused it (`ControllerResizeInfeasible`, `NodeResizeInfeasible`).
    Refused(String),
    Waiting,
}

fn expansion(pvc: &Value, want: u64) -> Expansion {
    let status = pvc.get("status").unwrap_or(&Value::Null);
    if status.pointer("/capacity/storage").and_then(Value::as_str).and_then(crate::spec::parse_size) >= Some(want) {
        return Expansion::Done;
    }
    if let Some(s) = status.pointer("/allocatedResourceStatuses/storage").and_then(Value::as_str)
        && s.ends_with("Infeasible")
    {
        return Expansion::Refused(s.to_string());
    }
    // `ControllerResizeError` / `NodeResizeError` are retried by the resizer: still waiting
    // (the timeout's message quotes them).
    let pending = conditions(pvc).into_iter().any(|(ty, _)| ty == "FileSystemResizePending");
    if pending { Expansion::AtMount } else { Expansion::Waiting }
}

/// `(type, message)` of the PVC's true conditions.
fn conditions(pvc: &Value) -> Vec<(String, String)> {
    pvc.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("status").and_then(Value::as_str) == Some("True"))
        .map(|c| {
            let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            (field("type"), field("message"))
        })
        .collect()
}

/// Waits until the expansion `grow` asked for has happened, so the copy starts into a volume
/// that can hold the data: copying at the old size fills it and fails half-way with "no space
/// left", and a re-run then meets a PVC that asks for more than it holds.
async fn wait_expanded(
    dst: &Cluster,
    t: &VolumeTransfer,
    request: &str,
    interrupt: &crate::stop::Stop,
) -> Result<(), String> {
    let Some(want) = crate::spec::parse_size(request) else { return Ok(()) };
    let api: Api<DynamicObject> =
        Api::namespaced_with(dst.client.clone(), &t.destination_namespace, &resource_of("PersistentVolumeClaim"));
    let ended = crate::stop::unless(
        interrupt,
        wait::until(api.clone(), &t.destination_claim, EXPANSION_TIMEOUT, move |o: Option<&DynamicObject>| {
            o.is_none_or(|o| expansion(&o.data, want) != Expansion::Waiting)
        }),
    )
    .await
    .map_err(|why| format!("stopped while destination PVC {} was growing: {why}", destination_name(t)))?;
    let name = destination_name(t);
    let late = async || {
        let said: Vec<String> = match api.get_opt(&t.destination_claim).await {
            Ok(Some(o)) => conditions(&o.data).into_iter().map(|(ty, m)| format!("{ty}: {m}")).collect(),
            _ => Vec::new(),
        };
        let said = if said.is_empty() {
            " (no condition: its storage driver's resizer may not be running)".to_string()
        } else {
            format!(" ({})", said.join("; "))
        };
        format!(
            "{}: destination PVC {name} did not grow to {request} within {}s{said}; nothing was copied. Run again once `kubectl get pvc` shows the new capacity",
            dst.context,
            EXPANSION_TIMEOUT.as_secs()
        )
    };
    match ended {
        Ok(Some(o)) => match expansion(&o.data, want) {
            Expansion::Done | Expansion::AtMount => Ok(()),
            Expansion::Refused(why) => Err(format!(
                "{}: destination PVC {name} could not grow to {request}: {why}. Delete it (mtcd then creates it at {request}) or make room by hand, and run again",
                dst.context
            )),
            Expansion::Waiting => Err(late().await),
        },
        Ok(None) => Err(format!("{}: destination PVC {name} was deleted while it was growing", dst.context)),
        Err(wait::WaitError::Timeout) => Err(late().await),
        Err(wait::WaitError::Watch(e)) => Err(format!("{}: watching destination PVC {name}: {e}", dst.context)),
    }
}

/// `source data: 1.5 GiB in 1200 inodes (measured with du)`.
pub fn usage_message(usage: &Usage) -> String {
    format!(
        "source data: {} in {} inodes (measured with {})",
        super::human_bytes(usage.bytes),
        usage.inodes,
        method_name(usage.method)
    )
}

/// The measured data against the destination PVC (`live`, or the one the plan would create)
/// and its capacity; `Err` when a larger request cannot help: the PVC already asks for enough
/// but holds less — an expansion that has not happened (or cannot).
pub fn verdict(
    t: &VolumeTransfer,
    usage: &Usage,
    live: Option<&Value>,
    grow: bool,
) -> Result<(CapacityCheck, u64), String> {
    let capacity = volumes::pvc_capacity(live.unwrap_or(&t.destination)).unwrap_or(0);
    let check = volumes::check_capacity(usage, capacity, grow);
    let requested = live.and_then(|p| p.pointer("/spec/resources/requests/storage")).and_then(Value::as_str);
    if let (CapacityCheck::Grow { .. } | CapacityCheck::TooSmall { .. }, Some(r)) = (&check, requested)
        && crate::spec::parse_size(r).is_some_and(|r| r >= volumes::required_bytes(usage))
    {
        return Err(format!(
            "destination PVC {} requests {r} but its volume holds {}, and the data of {}/{} needs {} with headroom: an expansion has not completed (does storage class {} allow volume expansion?). Wait for it, or delete the destination PVC so mtcd creates it at the size the data needs, and run again",
            destination_name(t),
            super::human_bytes(capacity),
            t.namespace,
            t.claim,
            super::human_bytes(volumes::required_bytes(usage)),
            live.and_then(|p| p.pointer("/spec/storageClassName")).and_then(Value::as_str).unwrap_or("(none)")
        ));
    }
    Ok((check, capacity))
}

/// A mount larger than twice the PV is not the volume's own file system (`df` would count
/// other volumes' data): then `du` measures.
fn own_fs_limit(t: &VolumeTransfer) -> u64 {
    volumes::pvc_capacity(&t.source).unwrap_or(0).saturating_mul(2)
}

fn destination_name(t: &VolumeTransfer) -> String {
    format!("{}/{}", t.destination_namespace, t.destination_claim)
}

fn method_name(m: UsageMethod) -> &'static str {
    match m {
        UsageMethod::Df => "df",
        UsageMethod::Du => "du",
    }
}

/// The destination PVC must not be going away, nor be mounted by a running pod when only one
/// node (ReadWriteOnce) or one pod (ReadWriteOncePod) may mount it: the transfer server would
/// wait for the volume until its timeout, and would write under a running application.
async fn destination_free(dst: &Cluster, t: &VolumeTransfer, pvc: &Value) -> Result<(), String> {
    if let Some(since) = pvc.pointer("/metadata/deletionTimestamp").and_then(Value::as_str) {
        let finalizers: Vec<&str> = pvc
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        return Err(format!(
            "destination PVC {} is Terminating (deleted at {since}{}): mtcd does not copy into a volume that is going away. Wait until it is gone (mtcd then creates it anew) or remove what holds it, and run again",
            destination_name(t),
            if finalizers.is_empty() {
                String::new()
            } else {
                format!(", held by finalizers {}", finalizers.join(", "))
            }
        ));
    }
    let modes: Vec<&str> = pvc
        .pointer("/spec/accessModes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let exclusive = modes.iter().any(|m| matches!(*m, "ReadWriteOnce" | "ReadWriteOncePod"))
        && !modes.iter().any(|m| matches!(*m, "ReadWriteMany" | "ReadOnlyMany"));
    if !exclusive {
        return Ok(());
    }
    let pods: Api<Pod> = Api::namespaced(dst.client.clone(), &t.destination_namespace);
    let list = pods.list(&ListParams::default()).await.map_err(|e| {
        format!("{}: listing pods in {} to find who mounts it: {e}", dst.context, t.destination_namespace)
    })?;
    if let Some(user) = list.items.iter().find(|p| mounts(p, &t.destination_claim)) {
        return Err(format!(
            "destination PVC {} ({}) is mounted by running pod {}/{}: the transfer server cannot mount it beside that pod, and copying under a running application would change its files as it uses them. Stop that pod (mtcd holds destination workloads at 0 replicas until cutover; something else started this one) and run again",
            destination_name(t),
            modes.join(", "),
            t.destination_namespace,
            user.metadata.name.as_deref().unwrap_or_default()
        ));
    }
    Ok(())
}

/// A live pod, not one of mtcd's transfer pods, with the claim among its volumes.
pub(crate) fn mounts(p: &Pod, claim: &str) -> bool {
    let ours = p
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.get(objects::COMPONENT).map(String::as_str) == Some(objects::COMPONENT_VALUE));
    let live = p.metadata.deletion_timestamp.is_none() && !matches!(wait::phase(p), "Succeeded" | "Failed");
    let uses = p
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .any(|v| v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == claim));
    !ours && live && uses
}

/// How long measuring one volume may take (`du` walks every file of a volume that shares its
/// file system).
const MEASURE_TIMEOUT: Duration = Duration::from_secs(600);

/// Measures the source volume with a short-lived probe pod that mounts it read-only where the
/// client pod would run: `df` when the mount is the volume's own file system (its size is
/// within twice the PV's capacity), `du` otherwise.
pub async fn measure(
    src: &Cluster,
    m: &VolumePlan,
    t: &VolumeTransfer,
    read_claim: &str,
    interrupt: &crate::stop::Stop,
) -> Result<Usage, String> {
    let pods: Api<Pod> = Api::namespaced(src.client.clone(), &t.namespace);
    let name = objects::probe_name(&t.claim);
    let pod_name = format!("{}/{name}", t.namespace);
    // A snapshot's clone is mounted by nobody else: no node to follow.
    let node = if read_claim == t.claim { super::placement(&pods, t).await? } else { None };
    let pod = objects::probe_pod(
        &t.namespace,
        &m.migration,
        &name,
        read_claim,
        &m.options,
        own_fs_limit(t),
        node.as_ref().map(|(n, _)| n.as_str()),
    );
    wait::delete_pod(&pods, &name).await;
    super::apply(src, &pod).await.map_err(|e| e.to_string())?;
    let ended = crate::stop::unless(
        interrupt,
        wait::until(pods.clone(), &name, MEASURE_TIMEOUT, |p: Option<&Pod>| {
            p.is_none_or(|p| wait::exit_code(p).is_some() || wait::stuck(p, &["ErrImagePull"]).is_some())
        }),
    )
    .await;
    // Stopped: the run's cleanup removes the probe pod with the rest.
    let ended = ended
        .map_err(|why| format!("stopped while probe pod {pod_name} measured {}/{}: {why}", t.namespace, t.claim))?;
    let result = match ended {
        Ok(Some(p)) => match (wait::exit_code(&p), wait::stuck(&p, &["ErrImagePull"])) {
            (_, Some(why)) => Err(format!("probe pod {pod_name}: {why}")),
            (Some(code), None) => {
                let log = pods.logs(&name, &LogParams::default()).await.unwrap_or_default();
                parse_usage(&log).ok_or_else(|| {
                    format!(
                        "measuring {}/{} (probe pod {pod_name}, exit {code}) failed: {}",
                        t.namespace,
                        t.claim,
                        log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                    )
                })
            }
            (None, None) => Err(format!("probe pod {pod_name} ended without an exit code")),
        },
        Ok(None) => Err(format!("probe pod {pod_name} was deleted while it measured the volume")),
        Err(wait::WaitError::Timeout) => {
            let why = pods.get_opt(&name).await.ok().flatten().and_then(|p| wait::unschedulable(&p));
            Err(format!(
                "measuring {}/{} (probe pod {pod_name}) did not finish within {} min{}",
                t.namespace,
                t.claim,
                MEASURE_TIMEOUT.as_secs() / 60,
                why.map(|w| format!(": {w}")).unwrap_or_default()
            ))
        }
        Err(wait::WaitError::Watch(e)) => Err(format!("watching probe pod {pod_name}: {e}")),
    };
    let _ = wait::delete_pod_now(&pods, &name).await;
    result
}

/// `mtcd-usage: <df|du> <bytes> <inodes>`.
pub fn parse_usage(log: &str) -> Option<Usage> {
    let line = log.lines().find_map(|l| l.trim().strip_prefix("mtcd-usage: "))?;
    let mut parts = line.split_whitespace();
    let method = match parts.next()? {
        "df" => UsageMethod::Df,
        "du" => UsageMethod::Du,
        _ => return None,
    };
    Some(Usage { method, bytes: parts.next()?.parse().ok()?, inodes: parts.next()?.parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_lines_parse() {
        assert_eq!(
            parse_usage("mtcd-usage: du 16781312 5\n"),
            Some(Usage { bytes: 16_781_312, inodes: 5, method: UsageMethod::Du })
        );
        assert_eq!(parse_usage("du: cannot read directory\n"), None);
    }

    #[test]
    fn an_expansion_is_done_at_the_capacity_or_the_mount_and_refused_when_the_driver_says_so() {
        let want = 17 << 20;
        let pvc = |status: Value| json!({"status": status});
        assert_eq!(expansion(&pvc(json!({"capacity": {"storage": "17Mi"}})), want), Expansion::Done);
        assert_eq!(expansion(&pvc(json!({"capacity": {"storage": "1Gi"}})), want), Expansion::Done);
        let resizing = json!({"capacity": {"storage": "10Mi"}, "conditions": [{"type": "Resizing", "status": "True"}]});
        assert_eq!(expansion(&pvc(resizing), want), Expansion::Waiting);
        assert_eq!(expansion(&pvc(json!({"capacity": {"storage": "10Mi"}})), want), Expansion::Waiting);
        let at_mount = json!({"capacity": {"storage": "10Mi"}, "conditions": [{"type": "FileSystemResizePending", "status": "True"}]});
        assert_eq!(expansion(&pvc(at_mount), want), Expansion::AtMount);
        let refused = json!({"capacity": {"storage": "10Mi"}, "allocatedResourceStatuses": {"storage": "ControllerResizeInfeasible"}});
        assert_eq!(expansion(&pvc(refused), want), Expansion::Refused("ControllerResizeInfeasible".into()));
        // Retried by the resizer: still waiting, and quoted if it never ends.
        let failed = json!({"capacity": {"storage": "10Mi"}, "conditions": [{"type": "ControllerResizeError", "status": "True", "message": "quota exceeded"}]});
        assert_eq!(expansion(&pvc(failed.clone()), want), Expansion::Waiting);
        assert_eq!(conditions(&pvc(failed)), vec![("ControllerResizeError".to_string(), "quota exceeded".to_string())]);
    }
}
