//! Running the re-sync unattended (issue 17): one run at a time per migration (a Lease in
//! the destination), run records and Events read back by `mtcd status`, the metrics
//! endpoint of `apply --watch`, and `mtcd deploy --apply/--delete` against the lab.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use mtcd_tests::{Lab, bin, has_kubectl, repo_root};
use serde_json::{Value, json};

const SEED: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: shop-config, namespace: shop}\ndata: {SHOP_CURRENCY: EUR}\n";

fn desired(lab: &Lab, extra: &str) -> String {
    lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\n{extra}"
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

async fn set_currency(lab: &Lab, value: &str) {
    let src: Api<ConfigMap> = Api::namespaced(lab.client("lab-src").await, "shop");
    src.patch("shop-config", &PatchParams::default(), &Patch::Merge(json!({"data": {"SHOP_CURRENCY": value}})))
        .await
        .unwrap();
}

async fn dst_currency(lab: &Lab) -> String {
    let dst: Api<ConfigMap> = Api::namespaced(lab.client("lab-dst").await, "shop-prod");
    dst.get("shop-config").await.unwrap().data.unwrap()["SHOP_CURRENCY"].clone()
}

/// A Lease as another run holds it: `renewed_ago` seconds since its last renewal.
fn foreign_lease(holder: &str, renewed_ago: i64) -> Lease {
    let t = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(renewed_ago);
    serde_json::from_value(json!({
        "metadata": {"name": "mtcd-shop", "namespace": "shop-prod"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30,
                 "acquireTime": t.to_string(), "renewTime": t.to_string(), "leaseTransitions": 0},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_lock_makes_apply_wait_and_refuse_naming_the_holder_a_stale_one_is_taken_over() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    let f = desired(&lab, "");
    let first = lab.mtcd(&["apply", &f]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert!(first.stderr.contains("namespace shop-prod does not exist yet"), "{}", first.stderr);

    let leases: Api<Lease> = Api::namespaced(lab.client("lab-dst").await, "shop-prod");
    assert!(leases.get_opt("mtcd-shop").await.unwrap().is_none(), "a finished run releases its lock");
    leases.create(&PostParams::default(), &foreign_lease("cronjob-pod-7f9/42", 0)).await.unwrap();
    set_currency(&lab, "CHF").await;
    let started = Instant::now();
    let held = lab.mtcd(&["apply", &f, "--lock-wait", "3s"]);
    assert_eq!(held.code, 1, "{}\n{}", held.stdout, held.stderr);
    assert!(started.elapsed() >= Duration::from_secs(3), "it waited for the lock first");
    assert!(
        held.stderr.contains("migration shop: waiting for the lock shop-prod/mtcd-shop, held by cronjob-pod-7f9/42"),
        "{}",
        held.stderr
    );
    assert!(
        held.stderr.contains("migration \"shop\" is being synced by cronjob-pod-7f9/42 (lease shop-prod/mtcd-shop"),
        "{}",
        held.stderr
    );
    assert_eq!(dst_currency(&lab).await, "EUR", "nothing was written while the lock was held");

    // The holder died: its lease was last renewed a minute ago, twice its duration.
    let mut stale = leases.get("mtcd-shop").await.unwrap();
    stale.spec = foreign_lease("cronjob-pod-7f9/42", 60).spec;
    leases.replace("mtcd-shop", &PostParams::default(), &stale).await.unwrap();
    let took_over = lab.mtcd(&["apply", &f, "--lock-wait", "0s"]);
    assert_eq!(took_over.code, 0, "{}\n{}", took_over.stdout, took_over.stderr);
    assert_eq!(dst_currency(&lab).await, "CHF");
    assert!(leases.get_opt("mtcd-shop").await.unwrap().is_none(), "released after the run");

    // The run left its record and an Event; status reads them back.
    let status = lab.mtcd(&["status", &f, "--migration", "shop"]);
    assert_eq!(status.code, 0, "{}\n{}", status.stdout, status.stderr);
    assert!(status.stdout.contains("last sync: "), "{}", status.stdout);
    assert!(status.stdout.contains("(succeeded, apply by "), "{}", status.stdout);
    assert!(status.stdout.contains("result: 0 created, 1 updated, 0 pruned, 0 failed, 1 drift"), "{}", status.stdout);
    assert!(status.stdout.contains("next sync: not scheduled"), "{}", status.stdout);
    let json: Value = serde_json::from_str(&lab.mtcd(&["-o", "json", "status", &f]).stdout).unwrap();
    assert_eq!(json["migrations"][0]["last_run"]["outcome"], "succeeded", "{json}");
    let events: Api<Event> = Api::namespaced(lab.client("lab-dst").await, "shop-prod");
    let events = events.list(&ListParams::default()).await.unwrap();
    let syncs: Vec<_> = events.items.iter().filter(|e| e.reason.as_deref() == Some("SyncSucceeded")).collect();
    // The first run and the one that took over; the refused run never started.
    assert_eq!(syncs.len(), 2, "one Event per run: {:?}", events.items);
    assert!(syncs.iter().all(|e| e.involved_object.name.as_deref() == Some("mtcd-run-shop")));
    // The record, the Lease and the Events are mtcd's own: nothing to copy, prune or adopt.
    let plan = lab.mtcd(&["plan", &f]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let unknown = lab.mtcd(&["status", &f, "--migration", "shoq"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("no migration named \"shoq\" (migrations in the file: shop)"),
        "{}",
        unknown.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_applies_take_turns_and_the_waiting_one_names_the_holder() {
    let lab = Lab::up();
    // A volume to copy makes each run last seconds, long enough to overlap.
    for f in ["examples/lab/seed.yaml", "examples/lab/volume-data.yaml"] {
        lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join(f)).unwrap()).await.unwrap();
    }
    let f = desired(&lab, "volumes = \"direct\"\n");
    let first = lab.mtcd(&["apply", &f]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let spawn = || {
        std::process::Command::new(bin("mtcd"))
            .args(["--kubeconfig", lab.kubeconfig.to_str().unwrap(), "apply", &f, "--lock-wait", "5m"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (pid_a, pid_b) = (a.id(), b.id());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let err_a = String::from_utf8_lossy(&a.stderr).into_owned();
    let err_b = String::from_utf8_lossy(&b.stderr).into_owned();
    assert!(a.status.success(), "{err_a}");
    assert!(b.status.success(), "{err_b}");
    let waited = |err: &str, other: u32| {
        err.lines().any(|l| {
            l.contains("waiting for the lock shop-prod/mtcd-shop, held by ") && l.contains(&format!("/{other} for"))
        })
    };
    assert!(
        waited(&err_a, pid_b) ^ waited(&err_b, pid_a),
        "exactly one run waited for the other:\n--- a ({pid_a}) ---\n{err_a}\n--- b ({pid_b}) ---\n{err_b}"
    );
}

/// `GET path` on 127.0.0.1:port: (status line, body).
fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_endpoint_answers_with_the_documented_series_during_watch() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    let f = desired(&lab, "[sync]\ninterval = \"1s\"\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(bin("mtcd"))
        .args(["--kubeconfig", lab.kubeconfig.to_str().unwrap(), "apply", "--watch", &f])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        // Two cycles: the second has the lock (the first created the namespace).
        if let Some((_, body)) = http_get(port, "/metrics")
            && body.contains("mtcd_syncs_total{migration=\"shop\",outcome=\"succeeded\"} 2")
        {
            break body;
        }
        assert!(Instant::now() < deadline, "no second sync in the metrics: {:?}", http_get(port, "/metrics"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for series in [
        "# TYPE mtcd_last_sync_timestamp_seconds gauge",
        "mtcd_last_sync_timestamp_seconds{migration=\"shop\"} ",
        "mtcd_last_success_timestamp_seconds{migration=\"shop\"} ",
        "mtcd_last_sync_success{migration=\"shop\"} 1",
        "mtcd_objects_out_of_sync{migration=\"shop\"} 0",
        "# TYPE mtcd_sync_duration_seconds histogram",
        "mtcd_sync_duration_seconds_count{migration=\"shop\"} ",
        "mtcd_syncs_total{migration=\"shop\",outcome=\"error\"} 0",
        "mtcd_sync_failures_total{migration=\"shop\"} 0",
        "# TYPE mtcd_missed_intervals_total counter",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    let (status, body) = http_get(port, "/healthz").unwrap();
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    // The run record of a watch cycle knows when the next one is due.
    let status = lab.mtcd(&["-o", "json", "status", &f]);
    let json: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(json["migrations"][0]["last_run"]["command"], "apply --watch", "{json}");
    assert!(json["migrations"][0]["last_run"]["next_sync"].as_str().is_some_and(|s| !s.is_empty()), "{json}");
    child.kill().unwrap();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_prints_yaml_the_server_accepts_applies_it_and_deletes_it() {
    let lab = Lab::up();
    let f = desired(&lab, "");
    let args = ["deploy", f.as_str(), "--schedule", "*/15 * * * *", "--image", "registry.example.com/mtcd:test"];
    let printed = lab.mtcd(&args);
    assert_eq!(printed.code, 0, "{}", printed.stderr);
    let applied = lab.mtcd(&[&args[..], &["--apply"]].concat());
    assert_eq!(applied.code, 0, "{}\n{}", applied.stdout, applied.stderr);
    if has_kubectl() {
        // The printed YAML through kubectl: the server checks every field strictly
        // (kubectl's default --validate=strict), and finds it all as --apply wrote it.
        let dry = lab.kubectl(
            "lab-dst",
            &["apply", "--server-side", "--field-manager=mtcd-deploy", "--dry-run=server", "-f", "-"],
            Some(&printed.stdout),
        );
        assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
        assert!(dry.stdout.contains("cronjob.batch/mtcd-sync-shop "), "{}", dry.stdout);
        assert!(!dry.stderr.contains("unknown field"), "{}", dry.stderr);
    }
    let client = lab.client("lab-dst").await;
    let cj: Api<k8s_openapi::api::batch::v1::CronJob> = Api::namespaced(client.clone(), "mtcd");
    let cj = serde_json::to_value(cj.get("mtcd-sync-shop").await.unwrap()).unwrap();
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid");
    let c = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["args"][3], "shop");
    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), "mtcd");
    let desired = cm.get("mtcd-desired").await.unwrap().data.unwrap()["desired.toml"].clone();
    assert!(desired.contains("context = \"in-cluster\""), "{desired}");
    // Applying again changes nothing; deleting removes it all.
    assert_eq!(lab.mtcd(&[&args[..], &["--apply"]].concat()).code, 0);
    let deleted = lab.mtcd(&["deploy", &f, "--delete"]);
    assert_eq!(deleted.code, 0, "{}\n{}", deleted.stdout, deleted.stderr);
    assert!(deleted.stdout.contains("CronJob/mtcd-sync-shop deleted"), "{}", deleted.stdout);
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client);
    assert!(roles.get_opt("mtcd-mtcd-destination").await.unwrap().is_none());
}

/// `context = "in-cluster"` for real: mtcd runs as `mtcd deploy`'s ServiceAccount with the
/// generated RBAC, its token, the CA and the namespace at the path every pod has them
/// (`/var/run/secrets/kubernetes.io/serviceaccount/`, in a private mount namespace so the
/// host's `/run` is never touched), `KUBERNETES_SERVICE_HOST`/`PORT` set, the pod's copy of
/// the file from the deployed ConfigMap, and the source from a kubeconfig — what the
/// CronJob's pod runs, minus the pod.
#[tokio::test(flavor = "multi_thread")]
async fn in_cluster_context_runs_as_the_deployed_service_account() {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    let f = desired(&lab, "");
    let deployed = lab.mtcd(&["deploy", &f, "--schedule", "*/15 * * * *", "--image", "x/mtcd:test", "--apply"]);
    assert_eq!(deployed.code, 0, "{}\n{}", deployed.stdout, deployed.stderr);
    let client = lab.client("lab-dst").await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "mtcd");
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {"expirationSeconds": 600}})).unwrap();
    let token = sas.create_token_request("mtcd", &PostParams::default(), &tr).await.unwrap().status.unwrap().token;
    let sa_dir = lab.dir.join("serviceaccount");
    std::fs::create_dir_all(&sa_dir).unwrap();
    std::fs::write(sa_dir.join("token"), token.unwrap()).unwrap();
    std::fs::copy(lab.dir.join("ca.crt"), sa_dir.join("ca.crt")).unwrap();
    std::fs::write(sa_dir.join("namespace"), "mtcd").unwrap();
    let cm: Api<ConfigMap> = Api::namespaced(client, "mtcd");
    let pod_file = lab.dir.join("pod-desired.toml");
    std::fs::write(&pod_file, &cm.get("mtcd-desired").await.unwrap().data.unwrap()["desired.toml"]).unwrap();
    // https://127.0.0.1:PORT: the address the lab's certificate names, as a Service's would.
    let api = lab.info["clusters"]["dst"]["api"].as_str().unwrap().trim_start_matches("https://").to_string();
    let (host, port) = api.rsplit_once(':').unwrap();
    set_currency(&lab, "JPY").await;
    let script = format!(
        "mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/kubernetes.io && cp -r {sa} /run/secrets/kubernetes.io/serviceaccount && exec {mtcd} apply {file} --migration shop --schedule '*/15 * * * *'",
        sa = sa_dir.display(),
        mtcd = bin("mtcd").display(),
        file = pod_file.display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("KUBERNETES_SERVICE_HOST", host)
        .env("KUBERNETES_SERVICE_PORT", port)
        .env("MTCD_KUBECONFIG", &lab.kubeconfig)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(dst_currency(&lab).await, "JPY");
    // Written as the ServiceAccount, recorded as a scheduled run with its next time.
    let status = lab.mtcd(&["status", &f]);
    assert!(status.stdout.contains("(succeeded, scheduled apply by "), "{}", status.stdout);
    let next = status.stdout.lines().find_map(|l| l.trim().strip_prefix("next sync: ")).unwrap().to_string();
    assert!(
        next.ends_with(":00:00Z")
            || next.ends_with(":15:00Z")
            || next.ends_with(":30:00Z")
            || next.ends_with(":45:00Z"),
        "{next}"
    );
}

/// The whole path in the lab: `mtcd deploy --apply`, the kubeconfig Secret for the source, a
/// Job created from the CronJob (as `kubectl create job --from=cronjob/...` does), its pod
/// running mtcd with the projected service-account token and `KUBERNETES_SERVICE_HOST/PORT`,
/// a changed source ConfigMap arriving in the destination, and `mtcd status` showing that run.
#[tokio::test(flavor = "multi_thread")]
async fn a_cronjob_created_job_syncs_a_changed_configmap_from_inside_a_pod() {
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    use k8s_openapi::api::core::v1::Secret;
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    let f = desired(&lab, "");
    let deployed =
        lab.mtcd(&["deploy", &f, "--schedule", "*/15 * * * *", "--image", "lab.mtcd.io/mtcd:dev", "--apply"]);
    assert_eq!(deployed.code, 0, "{}\n{}", deployed.stdout, deployed.stderr);
    // The source's kubeconfig as a pod reaches it: the API server's address in the lab network.
    let src_api = lab.info["clusters"]["src"]["api"].as_str().unwrap();
    let port = src_api.rsplit(':').next().unwrap();
    let kubeconfig = std::fs::read_to_string(&lab.kubeconfig)
        .unwrap()
        .replace(&format!("https://127.0.0.1:{port}"), &format!("https://10.210.0.254:{port}"));
    let client = lab.client("lab-dst").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "mtcd");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "mtcd-kubeconfig"},
        "stringData": {"kubeconfig": kubeconfig},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    set_currency(&lab, "GBP").await;

    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), "mtcd");
    let cj = cronjobs.get("mtcd-sync-shop").await.unwrap();
    let template = cj.spec.job_template.clone();
    let job: Job = serde_json::from_value(json!({
        "metadata": {
            "name": "mtcd-sync-shop-now",
            "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
            "labels": template.metadata.as_ref().and_then(|m| m.labels.clone()),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "mtcd-sync-shop",
                                 "uid": cj.metadata.uid.clone().unwrap(), "controller": true}],
        },
        "spec": template.spec,
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "mtcd");
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let outcome = loop {
        let j = jobs.get("mtcd-sync-shop-now").await.unwrap();
        let done =
            j.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find_map(|c| {
                (c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed")).then_some(c.type_)
            });
        if let Some(d) = done {
            break d;
        }
        assert!(Instant::now() < deadline, "the Job did not finish");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let logs = std::fs::read_dir(lab.dir.join("dst/pod-logs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("mtcd_mtcd-sync-shop-now"))
        .map(|e| std::fs::read_to_string(e.path().join("mtcd.log")).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(outcome, "Complete", "the pod's log:\n{logs}");
    // The first sync: the namespace and the ConfigMap, as changed.
    assert!(logs.contains("migration shop: 2 created, 0 updated"), "{logs}");
    assert_eq!(dst_currency(&lab).await, "GBP");
    let status = lab.mtcd(&["status", &f]);
    assert!(status.stdout.contains("(succeeded, scheduled apply by mtcd-sync-shop-now-"), "{}", status.stdout);
    assert!(status.stdout.contains("result: 2 created, 0 updated, 0 pruned, 0 failed, 2 drift"), "{}", status.stdout);
}
