//! Hooks at every documented phase, of three kinds: a WebAssembly `plugin` (sandboxed, may
//! look at the source snapshot), a `job` (an image and command run as a Job, as MTC's MigHook
//! does), and an `exec` (a command in the running containers a selector matches, as Velero's
//! exec hooks — flush a database, `fsfreeze`, before the final sync).
//!
//! Phases (docs/runbook.md): `pre-stage`/`post-stage` around every sync; `pre-backup`/
//! `post-backup` around reading the source (the Velero Backup; in the direct path, the copy
//! of the volume data); `pre-restore`/`post-restore` around writing the destination (the
//! Velero Restore; in the direct path, the objects); `pre-cutover` before the source is
//! quiesced; `post-cutover` once the destination runs.

use std::time::Duration;

use futures::AsyncBufReadExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, DeleteParams, ListParams, LogParams, PostParams};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::planning::SliceLookup;
use super::{Engine, EngineError};
use crate::cluster::Cluster;
use crate::plan::MigrationPlan;
use crate::plugins::{HookContext, phase_name};
use crate::progress::Event;
use crate::spec::{ExecHook, HookKind, HookOnError, HookPhase, HookRef, JobHook, Side};

/// What a job or exec hook printed, at most this much (its last bytes).
const OUTPUT_CAP: usize = 2048;

impl Engine {
    /// Runs every hook of `phase` of migration `m`, in file order; `lookup` is what plugin
    /// hooks may read of the source. A failing hook with `on_error = fail` stops here.
    pub(super) async fn hooks(
        &self,
        m: &MigrationPlan,
        lookup: &[Value],
        phase: HookPhase,
    ) -> Result<Vec<String>, EngineError> {
        let mut ran = Vec::new();
        for h in m.hooks(phase) {
            let label = h.label();
            let result = match &h.kind {
                HookKind::Plugin(p) => {
                    let ctx = HookContext {
                        migration: m.name.clone(),
                        source_cluster: self.source.context.clone(),
                        destination_cluster: self.destination.context.clone(),
                        namespace_map: m.namespace_map.clone(),
                        lookup: &SliceLookup(lookup),
                    };
                    super::plugin_host()
                        .and_then(|host| host.load_hook(p))
                        .and_then(|mut hook| hook.run(phase, &ctx))
                        .map(|()| String::new())
                        .map_err(|e| HookFailure { message: e.to_string(), fatal: true, plugin: Some(e) })
                }
                HookKind::Job(j) => self.job_hook(m, h, j).await,
                HookKind::Exec(e) => self.exec_hook(e).await,
            };
            let (ok, output, error) = match &result {
                Ok(out) => (true, out.clone(), None),
                Err(f) => (false, String::new(), Some(f.message.clone())),
            };
            self.events.emit(Event::Hook {
                migration: m.name.clone(),
                phase: phase_name(phase).to_string(),
                hook: label.clone(),
                ok,
                error,
                output: (!output.is_empty()).then_some(output),
            });
            match result {
                Ok(_) => ran.push(format!("{} {label}", phase_name(phase))),
                Err(f) if !f.fatal => ran.push(format!("{} {label} (failed, ignored)", phase_name(phase))),
                Err(f) => {
                    return Err(EngineError::Hook {
                        phase: phase_name(phase),
                        hook: label,
                        migration: m.name.clone(),
                        reason: f.message,
                        source: f.plugin.map(Box::new),
                    });
                }
            }
        }
        Ok(ran)
    }

    fn side(&self, side: Side) -> &Cluster {
        match side {
            Side::Source => &self.source,
            Side::Destination => &self.destination,
        }
    }

    /// Runs the Job to its end (or its deadline) and returns the tail of its log.
    async fn job_hook(&self, m: &MigrationPlan, h: &HookRef, j: &JobHook) -> Result<String, HookFailure> {
        let c = self.side(j.cluster);
        let fail = |message: String| HookFailure { message, fatal: j.on_error == HookOnError::Fail, plugin: None };
        let jobs: Api<Job> = Api::namespaced(c.client.clone(), &j.namespace);
        let deadline = j.deadline.as_secs().max(1);
        let job: Job = serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"generateName": format!("mtcd-hook-{}-", phase_name(h.phase)), "namespace": j.namespace,
                "labels": {crate::labels::MANAGED_BY: crate::labels::MANAGED_BY_VALUE, crate::labels::MIGRATION: m.name,
                    crate::labels::COMPONENT: "hook"}},
            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": deadline, "ttlSecondsAfterFinished": 3600,
                "template": {"metadata": {"labels": {crate::labels::COMPONENT: "hook"}},
                    "spec": {"restartPolicy": "Never", "serviceAccountName": j.service_account,
                        "containers": [{"name": "hook", "image": j.image, "command": j.command}]}}},
        }))
        .map_err(|e| fail(format!("building the Job: {e}")))?;
        let created = jobs.create(&PostParams::default(), &job).await.map_err(|e| {
            fail(format!("{}: creating the Job in {}: {}", c.context, j.namespace, crate::cluster::short_error(&e)))
        })?;
        let name = created.metadata.name.clone().unwrap_or_default();
        let ended = |job: Option<&Job>| {
            job.and_then(|j| j.status.as_ref()).and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
                c.iter().any(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
            })
        };
        let wait = kube::runtime::wait::await_condition(jobs.clone(), &name, ended);
        let outcome = tokio::time::timeout(j.deadline + Duration::from_secs(30), wait).await;
        let output = job_log(c, &j.namespace, &name).await;
        let _ = jobs.delete(&name, &DeleteParams::background()).await;
        let job = match outcome {
            Ok(Ok(Some(job))) => job,
            Ok(Ok(None)) => return Err(fail(format!("Job {}/{name} was deleted while it ran", j.namespace))),
            Ok(Err(e)) => return Err(fail(format!("watching Job {}/{name}: {e}", j.namespace))),
            Err(_) => {
                return Err(fail(format!(
                    "Job {}/{name} did not finish within its deadline of {}s{}",
                    j.namespace,
                    deadline,
                    tail_note(&output)
                )));
            }
        };
        let failed = job
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "Failed" && c.status == "True");
        match failed {
            Some(c) => Err(fail(format!(
                "Job {}/{name} failed ({}: {}){}",
                j.namespace,
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default(),
                tail_note(&output)
            ))),
            None => Ok(output),
        }
    }

    /// Runs the command in every running pod the selector matches, each under the timeout.
    async fn exec_hook(&self, e: &ExecHook) -> Result<String, HookFailure> {
        let c = self.side(e.cluster);
        let fail = |message: String| HookFailure { message, fatal: e.on_error == HookOnError::Fail, plugin: None };
        let pods: Api<Pod> = Api::namespaced(c.client.clone(), &e.namespace);
        let list = pods.list(&ListParams::default().labels(&e.selector)).await.map_err(|err| {
            fail(format!(
                "{}: listing pods {} in {}: {}",
                c.context,
                e.selector,
                e.namespace,
                crate::cluster::short_error(&err)
            ))
        })?;
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if running.is_empty() {
            return Err(fail(format!("no running pod in {} matches {:?}", e.namespace, e.selector)));
        }
        let mut out = Vec::new();
        for p in running {
            let name = p.metadata.name.clone().unwrap_or_default();
            let container = e
                .container
                .clone()
                .or_else(|| p.spec.as_ref().and_then(|s| s.containers.first()).map(|c| c.name.clone()));
            let run = exec(&pods, &name, container.as_deref(), &e.command);
            match tokio::time::timeout(e.timeout, run).await {
                Ok(Ok(text)) => out.push(format!("{name}: {}", text.trim_end())),
                Ok(Err(why)) => return Err(fail(format!("pod {}/{name}: {why}", e.namespace))),
                Err(_) => {
                    return Err(fail(format!(
                        "pod {}/{name}: the command did not finish within {}s",
                        e.namespace,
                        e.timeout.as_secs()
                    )));
                }
            }
        }
        Ok(out.join("\n"))
    }
}

/// Why a hook failed; `fatal` unless its `on_error` says ignore.
struct HookFailure {
    message: String,
    fatal: bool,
    plugin: Option<crate::plugins::PluginError>,
}

/// One command in one container; its output, or why it failed (exit code and output).
async fn exec(pods: &Api<Pod>, pod: &str, container: Option<&str>, command: &[String]) -> Result<String, String> {
    let mut ap = AttachParams::default().stdout(true).stderr(true).stdin(false);
    if let Some(c) = container {
        ap = ap.container(c);
    }
    let mut process = pods.exec(pod, command.to_vec(), &ap).await.map_err(|e| crate::cluster::short_error(&e))?;
    let (mut stdout, mut stderr) = (process.stdout(), process.stderr());
    let status = process.take_status();
    let read = |r: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>| async move {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf).await;
        }
        buf
    };
    let (out, err) = futures::join!(read(stdout.take()), read(stderr.take()));
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    let _ = process.join().await;
    let text = tail(&[out, err].concat());
    match status {
        Some(s) if s.status.as_deref() == Some("Success") => Ok(text),
        Some(s) => {
            let code = s
                .details
                .and_then(|d| d.causes)
                .into_iter()
                .flatten()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .map(|c| format!("exit code {}", c.message.unwrap_or_default()))
                .or(s.message)
                .unwrap_or_else(|| "failed".into());
            Err(format!("{code}{}", tail_note(&text)))
        }
        None => Err(format!("no exit status from the container{}", tail_note(&text))),
    }
}

/// The last lines of the Job's pod log.
async fn job_log(c: &Cluster, ns: &str, job: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let Ok(list) = pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await else {
        return String::new();
    };
    let Some(name) = list.items.into_iter().filter_map(|p| p.metadata.name).next() else { return String::new() };
    let mut text = String::new();
    if let Ok(lines) = pods.log_stream(&name, &LogParams::default()).await {
        let mut lines = std::pin::pin!(lines.lines());
        while let Some(Ok(l)) = futures::StreamExt::next(&mut lines).await {
            text.push_str(&l);
            text.push('\n');
            if text.len() > 4 * OUTPUT_CAP {
                text = tail(text.as_bytes());
            }
        }
    }
    tail(text.as_bytes())
}

/// At most [`OUTPUT_CAP`] bytes: the end, where the error usually is.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= OUTPUT_CAP {
        return text.into_owned();
    }
    let cut = text.ceil_char_boundary(text.len() - OUTPUT_CAP);
    format!("…{}", &text[cut..])
}

fn tail_note(output: &str) -> String {
    if output.trim().is_empty() { String::new() } else { format!("; its output ends with: {}", output.trim_end()) }
}
