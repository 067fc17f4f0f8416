//! The lab through the installed kubectl, as a newcomer uses it (issue 18, points 8 and 9):
//! protobuf bodies (`kubectl create`, `run`, `scale`, `delete`), OpenAPI (`kubectl apply`
//! without `--validate=false`, server-side field validation, `kubectl explain`) and the Table
//! columns of `kubectl get`.

use mtcd_tests::{Lab, Run, has_kubectl};
use serde_json::Value;

fn ok(r: &Run, what: &str) -> String {
    assert_eq!(r.code, 0, "{what}: {}{}", r.stdout, r.stderr);
    r.stdout.clone()
}

fn json_of(r: &Run, what: &str) -> Value {
    serde_json::from_str(&ok(r, what)).unwrap_or_else(|e| panic!("{what}: {e}: {}", r.stdout))
}

/// The header line of `kubectl get` output and the row whose first cell is `name`, split on
/// runs of two or more spaces (column values such as `ACCESS MODES` hold single spaces).
fn columns(out: &str, name: &str) -> (Vec<String>, Vec<String>) {
    let split = |l: &str| -> Vec<String> {
        l.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect()
    };
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let header = split(lines.next().expect("header line"));
    let row = lines.map(split).find(|r| r.first().map(String::as_str) == Some(name)).unwrap_or_default();
    (header, row)
}

#[test]
fn kubectl_create_run_scale_and_delete_speak_protobuf() {
    if !has_kubectl() {
        eprintln!("NOTE: no kubectl 1.26 or newer installed; skipping");
        return;
    }
    let lab = Lab::up();
    let k = |args: &[&str]| lab.kubectl("lab-src", args, None);
    // The typed clients behind these commands send and accept protobuf; the server answers in kind.
    let r = k(&["create", "ns", "shop", "-v=8"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("namespace/shop created"), "{}", r.stdout);
    assert!(
        r.stderr.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "the create went out and came back as protobuf: {}",
        r.stderr
    );
    ok(
        &k(&["-n", "shop", "create", "configmap", "settings", "--from-literal=mode=fast", "--from-literal=size=3"]),
        "create cm",
    );
    let cm = json_of(&k(&["-n", "shop", "get", "configmap", "settings", "-o", "json"]), "get cm");
    assert_eq!(cm["data"], serde_json::json!({"mode": "fast", "size": "3"}));
    assert!(cm["metadata"]["uid"].is_string() && cm["metadata"].get("generateName").is_none(), "{cm}");
    ok(&k(&["-n", "shop", "create", "secret", "generic", "creds", "--from-literal=password=hunter2"]), "create secret");
    let secret = json_of(&k(&["-n", "shop", "get", "secret", "creds", "-o", "json"]), "get secret");
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==", "bytes travel as bytes: {secret}");
    // kubectl run: a Pod with an image the lab runs as simulated.
    ok(
        &k(&[
            "-n",
            "shop",
            "run",
            "web",
            "--image=quay.io/simulated/web:1",
            "--labels=app=web",
            "--env=MODE=fast",
            "--port=8080",
        ]),
        "run",
    );
    let pod = json_of(&k(&["-n", "shop", "get", "pod", "web", "-o", "json"]), "get pod");
    let c = &pod["spec"]["containers"][0];
    assert_eq!((c["image"].as_str(), c["env"][0]["value"].as_str()), (Some("quay.io/simulated/web:1"), Some("fast")));
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(pod["spec"]["restartPolicy"], "Always", "server defaults apply to protobuf bodies too");
    // A Deployment, then the scale subresource.
    ok(
        &k(&["-n", "shop", "create", "deployment", "api", "--image=quay.io/simulated/api:1", "--replicas=3"]),
        "create deploy",
    );
    let r = ok(&k(&["-n", "shop", "scale", "deployment/api", "--replicas=2"]), "scale");
    assert!(r.contains("deployment.apps/api scaled"), "{r}");
    let replicas = ok(&k(&["-n", "shop", "get", "deploy", "api", "-o", "jsonpath={.spec.replicas}"]), "get replicas");
    assert_eq!(replicas, "2");
    // Scale to zero: a zero that must survive the protobuf round trip.
    ok(&k(&["-n", "shop", "scale", "deployment/api", "--replicas=0"]), "scale to 0");
    let replicas = ok(&k(&["-n", "shop", "get", "deploy", "api", "-o", "jsonpath={.spec.replicas}"]), "get replicas");
    assert_eq!(replicas, "0");
    ok(&k(&["-n", "shop", "expose", "deployment", "api", "--port=80", "--target-port=8080"]), "expose");
    let svc = json_of(&k(&["-n", "shop", "get", "svc", "api", "-o", "json"]), "get svc");
    assert_eq!(
        (svc["spec"]["ports"][0]["port"].as_i64(), svc["spec"]["ports"][0]["targetPort"].as_i64()),
        (Some(80), Some(8080))
    );
    for args in [
        &["-n", "shop", "create", "job", "once", "--image=quay.io/simulated/job:1"][..],
        &["-n", "shop", "create", "cronjob", "nightly", "--image=quay.io/simulated/job:1", "--schedule=0 3 * * *"],
        &["-n", "shop", "create", "serviceaccount", "robot"],
        &["-n", "shop", "create", "role", "reader", "--verb=get,list", "--resource=pods"],
        &["-n", "shop", "create", "rolebinding", "reader", "--role=reader", "--serviceaccount=shop:robot"],
        &["-n", "shop", "create", "poddisruptionbudget", "api", "--selector=app=api", "--min-available=1"],
        &["-n", "shop", "create", "ingress", "api", "--rule=api.example.com/*=api:80"],
        &["create", "priorityclass", "important", "--value=1000"],
    ] {
        ok(&k(args), &args.join(" "));
    }
    let token = ok(&k(&["-n", "shop", "create", "token", "robot"]), "create token");
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
    // Delete, in protobuf too.
    ok(&k(&["-n", "shop", "delete", "configmap", "settings"]), "delete cm");
    ok(&k(&["-n", "shop", "delete", "pod", "web", "--wait=false"]), "delete pod");
    let r = k(&["-n", "shop", "get", "configmap", "settings"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("configmaps \"settings\" not found"), "{}", r.stderr);
    ok(&k(&["delete", "ns", "shop", "--wait=false"]), "delete ns");
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: quay.io/simulated/web:1}]
";

const WIDGET_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: The widget's desired state.
            properties:
              size:
                type: integer
                description: How many sprockets the widget has.
              color: {type: string}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Color, type: string, jsonPath: .spec.color, priority: 1}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
";

#[test]
fn kubectl_apply_validates_against_the_servers_openapi_and_explain_reads_it() {
    if !has_kubectl() {
        eprintln!("NOTE: no kubectl 1.26 or newer installed; skipping");
        return;
    }
    let lab = Lab::up();
    let k = |args: &[&str], stdin: Option<&str>| lab.kubectl("lab-src", args, stdin);
    // No --validate=false: kubectl finds fieldValidation in /openapi/v3 and lets the server check.
    let out = ok(&k(&["apply", "-f", "-"], Some(DEPLOYMENT)), "apply");
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let out = ok(&k(&["apply", "-f", "-"], Some(DEPLOYMENT)), "apply again");
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    // An unknown field: refused (strict is kubectl's default), on create and on patch.
    let bad = DEPLOYMENT.replace("replicas: 2", "replicass: 2");
    let r = k(&["apply", "-f", "-"], Some(&bad.replace("name: web,", "name: web2,")));
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replicass\""
        ),
        "{}",
        r.stderr
    );
    let r = k(&["apply", "-f", "-"], Some(&bad));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("strict decoding error: unknown field \"spec.replicass\""), "{}", r.stderr);
    assert!(k(&["get", "deploy", "web2"], None).code != 0, "nothing was created");
    // Warn: the field is dropped with a warning; Ignore: dropped silently.
    let r = k(&["apply", "--validate=warn", "-f", "-"], Some(&bad.replace("name: web,", "name: web3,")));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("Warning: unknown field \"spec.replicass\""), "{}", r.stderr);
    let web3 = json_of(&k(&["get", "deploy", "web3", "-o", "json"], None), "get web3");
    assert!(web3["spec"].get("replicass").is_none() && web3["spec"]["replicas"] == 1, "{}", web3["spec"]);
    let r = k(&["apply", "--validate=false", "-f", "-"], Some(&bad.replace("name: web,", "name: web4,")));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("Warning"), "{}", r.stderr);
    // kubectl explain reads /openapi/v3, and (plaintext-openapiv2) /openapi/v2 in protobuf.
    let out = ok(&k(&["explain", "deployment.spec.replicas"], None), "explain");
    assert!(out.contains("FIELD: replicas <integer>"), "{out}");
    assert!(out.contains("Number of desired pods."), "{out}");
    let out = ok(&k(&["explain", "--output=plaintext-openapiv2", "pods.spec.containers"], None), "explain v2");
    assert!(out.contains("List of containers belonging to the pod."), "{out}");
    // A CRD's schema: served, validated, explained; its printer columns shown.
    ok(&k(&["apply", "-f", "-"], Some(WIDGET_CRD)), "apply crd");
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\nspec: {size: 3, color: blue}\n";
    ok(&k(&["apply", "-f", "-"], Some(widget)), "apply widget");
    let r = k(&["apply", "-f", "-"], Some(&widget.replace("w1", "w2").replace("size: 3", "sise: 3")));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("strict decoding error: unknown field \"spec.sise\""), "{}", r.stderr);
    let out = ok(&k(&["explain", "widgets.spec.size"], None), "explain widget");
    assert!(out.contains("How many sprockets the widget has."), "{out}");
    let (header, row) = columns(&ok(&k(&["get", "widgets"], None), "get widgets"), "w1");
    assert_eq!(header, ["NAME", "SIZE", "AGE"]);
    assert_eq!(row[..2], ["w1", "3"]);
    let (header, row) = columns(&ok(&k(&["get", "widgets", "-o", "wide"], None), "get widgets wide"), "w1");
    // kubectl keeps the table's column order; priority 1 columns only show with -o wide.
    assert_eq!(header, ["NAME", "SIZE", "COLOR", "AGE"]);
    assert_eq!(row[2], "blue");
}

const SEED: &str = "apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: app}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: quay.io/simulated/web:1}
      - {name: sidecar, image: quay.io/simulated/sidecar:1}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: app}
spec:
  replicas: 1
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: quay.io/simulated/db:1}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: app}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: solo, namespace: app}
spec:
  containers: [{name: main, image: quay.io/simulated/solo:1}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: app}
data: {a: '1', b: '2'}
";

#[test]
fn kubectl_get_prints_the_columns_of_a_real_cluster() {
    if !has_kubectl() {
        eprintln!("NOTE: no kubectl 1.26 or newer installed; skipping");
        return;
    }
    let lab = Lab::up();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(lab.seed_yaml("lab-src", SEED)).expect("seed");
    let k = |args: &[&str]| lab.kubectl("lab-src", args, None);
    // The node agent starts the pod and the provisioner binds the claim: wait for both.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pod = k(&["-n", "app", "get", "pod", "solo", "-o", "jsonpath={.status.phase}"]).stdout;
        let pvc = k(&["-n", "app", "get", "pvc", "data", "-o", "jsonpath={.status.phase}"]).stdout;
        if pod == "Running" && pvc == "Bound" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "pod {pod}, pvc {pvc}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let get = |kind: &str, name: &str, wide: bool| {
        let mut args = vec!["-n", "app", "get", kind];
        if wide {
            args.extend(["-o", "wide"]);
        }
        columns(&ok(&k(&args), kind), name)
    };
    let (h, r) = get("deploy", "web", false);
    assert_eq!(h, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(r[1..4], ["2/2", "2", "2"]);
    let (h, r) = get("deploy", "web", true);
    assert_eq!(h, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]);
    assert_eq!(r[5..], ["web,sidecar", "quay.io/simulated/web:1,quay.io/simulated/sidecar:1", "app=web"]);
    let (h, r) = get("sts", "db", true);
    assert_eq!(h, ["NAME", "READY", "AGE", "CONTAINERS", "IMAGES"]);
    assert_eq!((r[1].as_str(), r[3].as_str()), ("1/1", "db"));
    let (h, r) = get("pods", "solo", false);
    assert_eq!(h, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(r[1..4], ["1/1", "Running", "0"]);
    let (h, r) = get("pods", "solo", true);
    assert_eq!(h, ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"]);
    assert!(r[5].starts_with("10.210."), "the pod IP: {r:?}");
    assert_eq!(r[6..], ["src-node", "<none>", "<none>"]);
    let (h, r) = get("pvc", "data", true);
    assert_eq!(
        h,
        [
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE",
            "VOLUMEMODE"
        ]
    );
    assert!(r[2].starts_with("pvc-"), "{r:?}");
    assert_eq!(
        (r[1].as_str(), r[3].as_str(), r[4].as_str(), r[5].as_str(), r[6].as_str()),
        ("Bound", "1Gi", "RWO", "standard", "<unset>")
    );
    assert_eq!(r[8], "Filesystem");
    // All four at once, as the issue asks.
    let out = ok(&k(&["-n", "app", "get", "deploy,sts,pods,pvc", "-o", "wide"]), "get all four");
    for header in ["UP-TO-DATE", "RESTARTS", "NOMINATED NODE", "CAPACITY", "VOLUMEATTRIBUTESCLASS"] {
        assert!(out.contains(header), "{header} in {out}");
    }
    let (h, r) = get("svc", "web", true);
    assert_eq!(h, ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"]);
    assert_eq!((r[1].as_str(), r[3].as_str(), r[6].as_str()), ("NodePort", "<none>", "app=web"));
    assert!(r[2].starts_with("10.96.") && r[4].starts_with("80:3") && r[4].ends_with("/TCP"), "{r:?}");
    let (h, r) = get("cm", "settings", false);
    assert_eq!((h, r[1].as_str()), (vec!["NAME".to_string(), "DATA".into(), "AGE".into()], "2"));
    let (h, r) = columns(&ok(&k(&["get", "ns"]), "ns"), "app");
    assert_eq!((h, r[1].as_str()), (vec!["NAME".to_string(), "STATUS".into(), "AGE".into()], "Active"));
    let (h, r) = columns(&ok(&k(&["get", "sc"]), "sc"), "standard (default)");
    assert_eq!(h, ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"]);
    assert_eq!(r[1], "lab.mtcd.io/local-path");
    let (h, r) = columns(&ok(&k(&["get", "nodes"]), "nodes"), "src-node");
    assert_eq!(h, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!((r[1].as_str(), r[2].as_str()), ("Ready", "<none>"));
}

/// What client-go's typed clients get beside kubectl's commands: protobuf objects, errors
/// and watch frames, JSON for kinds without a protobuf encoding, 406 for neither.
#[tokio::test]
async fn protobuf_responses_watch_frames_and_negotiation() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let get =
        |uri: &str, accept: &str| http::Request::builder().uri(uri).header("accept", accept).body(Vec::new()).unwrap();
    const PB: &str = "application/vnd.kubernetes.protobuf";
    let both = "application/vnd.kubernetes.protobuf,application/json";
    let resp = client.send(get("/api/v1/namespaces/default", both).map(Into::into)).await.unwrap();
    assert_eq!(resp.headers()["content-type"], PB);
    let body = resp.into_body().collect_bytes().await.unwrap();
    assert!(body.starts_with(b"k8s\0"), "{body:?}");
    assert!(body.windows(9).any(|w| w == b"Namespace"), "the envelope names the kind: {body:?}");
    // Errors are a protobuf Status for a protobuf client.
    let resp = client.send(get("/api/v1/namespaces/nope", both).map(Into::into)).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], PB);
    // Kinds without a protobuf encoding (the Velero kinds are custom resources on a real
    // cluster) answer in JSON; a client that takes only protobuf gets 406.
    let resp = client.send(get("/apis/velero.io/v1/namespaces/default/backups", both).map(Into::into)).await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.headers()["content-type"].to_str().unwrap()), (200, "application/json"));
    let resp = client.send(get("/apis/velero.io/v1/namespaces/default/backups", PB).map(Into::into)).await.unwrap();
    assert_eq!(resp.status(), 406);
    // A watch in protobuf: length-delimited WatchEvent frames holding k8s\0-prefixed objects.
    let resp = client
        .send(get("/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1", both).map(Into::into))
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/vnd.kubernetes.protobuf;stream=watch");
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    let frame = &bytes[4..4 + len];
    assert_eq!(&frame[..7], b"\x0a\x05ADDED", "type ADDED first: {frame:?}");
    assert!(frame.windows(4).any(|w| w == b"k8s\0"), "the object inside is a protobuf body");
    assert!(frame.windows(16).any(|w| w == b"kube-root-ca.crt"), "{frame:?}");
}
