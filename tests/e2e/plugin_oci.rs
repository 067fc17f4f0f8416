//! oci:// plugins through the lab's real registry (issue 16, point 10): push an example
//! plugin, plan and apply with the pinned reference, re-plan with the registry stopped
//! (served from the cache), and refuse a wrong digest and a manifest with two layers.

use std::path::{Path, PathBuf};
use std::process::Command;

use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use mtcd_tests::plugins::plugin_wasm;
use mtcd_tests::{Lab, Run, bin};
use sha2::{Digest, Sha256};

/// mtcd against the lab with its own cache directory (`XDG_CACHE_HOME`).
fn mtcd(lab: &Lab, cache: &Path, args: &[&str]) -> Run {
    let out = Command::new(bin("mtcd"))
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .args(args)
        .current_dir(&lab.dir)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("run mtcd");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn desired(lab: &Lab, registry: &str, plugin: &str) -> PathBuf {
    lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\nregistry = {{ address = \"{registry}\", tls = \"insecure\" }}\n\
             [clusters.destination]\ncontext = \"lab-dst\"\n\
             [[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nvolumes = \"skip\"\nimages = \"skip\"\n\
             [[migration.transform]]\nplugin = \"{plugin}\"\nconfig = {{ labels = {{ migrated-by = \"oci\" }} }}\n"
        ),
    )
}

/// Pushes a blob with a monolithic upload; returns its digest.
async fn push_blob(http: &reqwest::Client, registry: &str, repo: &str, bytes: Vec<u8>) -> String {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let r = http.post(format!("http://{registry}/v2/{repo}/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let url = if location.starts_with("http") { location } else { format!("http://{registry}{location}") };
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = http.put(format!("{url}{sep}digest={digest}")).body(bytes).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    digest
}

/// The pid of the lab registry listening on `address` (the lab's child, which this test
/// started): a docker-registry whose config file names that address.
fn registry_pid(lab_dir: &Path, address: &str) -> Option<i32> {
    let needle = lab_dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if args.first().map(String::as_str) != Some("/usr/bin/docker-registry") {
            continue;
        }
        let Some(config) = args.last().filter(|c| c.contains(&needle)) else { continue };
        if std::fs::read_to_string(config).is_ok_and(|c| c.contains(&format!("addr: {address}\n"))) {
            return Some(pid);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oci_plugin_is_pushed_pinned_pulled_cached_and_verified() {
    let lab = Lab::up();
    lab.seed_yaml(
        "lab-src",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\ndata: {color: blue}\n",
    )
    .await
    .unwrap();
    let registry = lab.info["clusters"]["src"]["registry"].as_str().expect("lab registry").to_string();
    let cache = tempfile::tempdir().unwrap();
    let tag = format!("oci://{registry}/plugins/add-label:v1");

    // Push prints the pinned reference; resolve prints the same for the tag.
    let wasm = plugin_wasm("add-label");
    let push = mtcd(&lab, cache.path(), &["plugin", "push", wasm.to_str().unwrap(), &tag, "--insecure"]);
    assert_eq!(push.code, 0, "{}\n{}", push.stdout, push.stderr);
    let pinned = push.stdout.trim().to_string();
    assert!(pinned.starts_with(&format!("{tag}@sha256:")) && pinned.len() == tag.len() + 72, "{pinned}");
    let resolve = mtcd(&lab, cache.path(), &["plugin", "resolve", &tag, "--insecure"]);
    assert_eq!((resolve.code, resolve.stdout.trim()), (0, pinned.as_str()), "{}", resolve.stderr);
    // The CNCF wasm artifact layout.
    let http = reqwest::Client::new();
    let manifest: serde_json::Value = http
        .get(format!("http://{registry}/v2/plugins/add-label/manifests/v1"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.wasm.config.v0+json");
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");

    // A tag alone is refused at its line, with the command that prints the pinned form.
    let file = desired(&lab, &registry, &tag);
    let run = mtcd(&lab, cache.path(), &["plan", file.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("desired.toml:13:10") && run.stderr.contains("mtcd plugin resolve"), "{}", run.stderr);

    // Plan and apply with the pinned reference.
    let file = desired(&lab, &registry, &pinned);
    let f = file.to_str().unwrap();
    let plan = mtcd(&lab, cache.path(), &["plan", f]);
    assert_eq!(plan.code, 2, "{}\n{}", plan.stdout, plan.stderr);
    let apply = mtcd(&lab, cache.path(), &["apply", f]);
    assert_eq!(apply.code, 0, "{}\n{}", apply.stdout, apply.stderr);
    let ar = ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
    };
    let cms: Api<DynamicObject> = Api::namespaced_with(lab.client("lab-dst").await, "shop", &ar);
    let cm = serde_json::to_value(cms.get("settings").await.unwrap()).unwrap();
    assert_eq!(cm["metadata"]["labels"]["migrated-by"], "oci", "the oci:// plugin ran");
    let blobs = cache.path().join("mtcd/oci/blobs/sha256");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 2, "manifest and layer cached");

    // A digest the registry does not have is refused; nothing is planned.
    let wrong = format!("{tag}@sha256:{}", hex::encode(Sha256::digest(b"not the plugin")));
    let run = mtcd(&lab, cache.path(), &["plan", desired(&lab, &registry, &wrong).to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(&wrong), "{}", run.stderr);

    // A manifest with two wasm layers is not a plugin.
    let bytes = std::fs::read(&wasm).unwrap();
    let layer = push_blob(&http, &registry, "plugins/two", bytes.clone()).await;
    let config = push_blob(&http, &registry, "plugins/two", b"{}".to_vec()).await;
    let two = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config, "size": 2},
        "layers": [
            {"mediaType": "application/wasm", "digest": layer, "size": bytes.len()},
            {"mediaType": "application/wasm", "digest": layer, "size": bytes.len()},
        ],
    }))
    .unwrap();
    let two_digest = format!("sha256:{}", hex::encode(Sha256::digest(&two)));
    let r = http
        .put(format!("http://{registry}/v2/plugins/two/manifests/v1"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(two)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let two_ref = format!("oci://{registry}/plugins/two:v1@{two_digest}");
    let run = mtcd(&lab, cache.path(), &["plan", desired(&lab, &registry, &two_ref).to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("has 2 layers"), "{}", run.stderr);

    // Registry stopped: the re-plan is served from the cache (no changes left), and so is pull.
    let pid = registry_pid(&lab.dir, &registry).expect("the lab's registry process");
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while mtcd_lab::registry::answers_v2(&registry) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!mtcd_lab::registry::answers_v2(&registry), "the registry still answers");
    let file = desired(&lab, &registry, &pinned);
    let replan = mtcd(&lab, cache.path(), &["plan", file.to_str().unwrap()]);
    assert_eq!(replan.code, 0, "a cached plugin needs no registry:\n{}\n{}", replan.stdout, replan.stderr);
    let pull = mtcd(&lab, cache.path(), &["plugin", "pull", &pinned, "--insecure"]);
    assert_eq!(pull.code, 0, "{}", pull.stderr);
    assert!(pull.stdout.starts_with("cached "), "{}", pull.stdout);
}
