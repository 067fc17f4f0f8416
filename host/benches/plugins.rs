//! Plugin overhead: 10,000 small objects through a chain of three plugins, against the same
//! edits done natively; cold component compile against a cached load.
//!
//! `cargo bench -p mtcd --bench plugins` (release). Results go to docs/benchmarks.md.

#[path = "../../tests/support/plugins.rs"]
mod support;

use std::time::{Duration, Instant};

use mtcd::plugins::{CacheOutcome, NoLookup, PluginHost, TransformContext, TransformOutput};
use mtcd::spec::{OciPlugin, OciReference, PluginRef, PluginSource, Registry, RegistryAuth, RegistryTls};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const OBJECTS: usize = 10_000;

fn plugin(name: &str, config: Value) -> PluginRef {
    let mut r = PluginRef::file(support::plugin_wasm(name));
    r.config = config;
    r
}

fn file_name(r: &PluginRef) -> String {
    r.source.to_string().rsplit('/').next().unwrap_or_default().to_string()
}

fn deployment(i: usize) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("web-{i}"), "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "web", "image": format!("registry.old:5000/shop/web:{i}"), "ports": [{"containerPort": 8080}]}]}}}
    })
}

/// The same three edits in plain Rust: what a built-in rule costs.
fn native(mut o: Value) -> Option<Value> {
    o["metadata"]["labels"]["mtcd.io/migrated"] = "yes".into();
    for c in o.pointer_mut("/spec/template/spec/containers").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(image) = c["image"].as_str().and_then(|i| i.strip_prefix("registry.old:5000/")) {
            c["image"] = format!("registry.new/{image}").into();
        }
    }
    if o.pointer("/metadata/labels/mtcd.io~1skip").is_some() {
        return None;
    }
    Some(o)
}

fn main() {
    let refs = [
        plugin("add-label", json!({"labels": {"mtcd.io/migrated": "yes"}})),
        plugin("image-rewrite", json!({"prefixes": {"registry.old:5000/": "registry.new/"}})),
        plugin("drop-by-label", json!({"label": "mtcd.io/skip"})),
    ];
    let objects: Vec<Value> = (0..OBJECTS).map(deployment).collect();
    let ctx = TransformContext {
        source_cluster: "old".into(),
        destination_cluster: "new".into(),
        namespace_map: [("shop".to_string(), "shop".to_string())].into_iter().collect(),
    };

    // Load: cold compile into an empty cache, then a new host (a new mtcd run) from disk.
    let cache = tempfile::tempdir().expect("temp cache dir");
    let cold = PluginHost::new(Some(cache.path().to_path_buf())).expect("host");
    let chain = cold.load_transforms(&refs).expect("load");
    let warm = PluginHost::new(Some(cache.path().to_path_buf())).expect("host");
    let warm_chain = warm.load_transforms(&refs).expect("load");
    println!("| plugin | size | cold compile | cached load |");
    println!("|---|---|---|---|");
    for (c, w) in chain.load_reports().iter().zip(warm_chain.load_reports()) {
        assert_eq!((c.outcome, w.outcome), (CacheOutcome::Compiled, CacheOutcome::DiskHit));
        let size = std::fs::metadata(&c.plugin).map(|m| m.len()).unwrap_or(0);
        println!(
            "| {} | {} KiB | {:.1} ms | {:.2} ms |",
            c.plugin.rsplit('/').next().unwrap_or_default(),
            size / 1024,
            ms(c.elapsed),
            ms(w.elapsed)
        );
    }
    drop(chain);

    // An oci:// plugin whose manifest and layer are in the blob cache: read, re-hashed and
    // verified, then the compiled code from the component cache; the registry address is
    // unreachable, so any network use would fail the load.
    let oci = tempfile::tempdir().expect("temp oci cache");
    let blobs = oci.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blob dir");
    let wasm = std::fs::read(support::plugin_wasm("add-label")).expect("add-label.wasm");
    let layer = hex::encode(Sha256::digest(&wasm));
    let manifest =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": format!("sha256:{layer}"), "size": 2},
        "layers": [{"mediaType": "application/wasm", "digest": format!("sha256:{layer}"), "size": wasm.len()}]}))
        .expect("manifest");
    let manifest_hex = hex::encode(Sha256::digest(&manifest));
    std::fs::write(blobs.join(&layer), &wasm).expect("write layer");
    std::fs::write(blobs.join(&manifest_hex), &manifest).expect("write manifest");
    let mut r = PluginRef::file("unused");
    r.source = PluginSource::Oci(OciPlugin {
        reference: OciReference::parse(&format!("oci://127.0.0.1:9/bench/add-label:v1@sha256:{manifest_hex}"))
            .expect("reference"),
        registry: Registry {
            address: "127.0.0.1:9".into(),
            internal_address: None,
            auth: RegistryAuth::Anonymous,
            tls: RegistryTls::Insecure,
        },
    });
    let oci_host = PluginHost::new(Some(cache.path().to_path_buf())).expect("host").with_oci_cache(oci.path().into());
    let loaded = oci_host.load_transforms(std::slice::from_ref(&r)).expect("load from the OCI cache");
    let report = &loaded.load_reports()[0];
    assert_eq!((report.oci_cached, report.outcome), (Some(true), CacheOutcome::DiskHit));
    println!(
        "| add_label.wasm as oci:// (blob cache + compiled cache, no network) | {} KiB | | {:.2} ms |",
        wasm.len() / 1024,
        ms(report.elapsed)
    );

    let mut chain = warm_chain;
    // Warm-up: instantiate each plugin once, fault in the code.
    for o in objects.iter().take(200) {
        chain.run(o.clone(), &ctx, &NoLookup).expect("warm-up");
    }
    let started = Instant::now();
    let mut kept = 0;
    for o in &objects {
        if let TransformOutput::Keep { object, .. } = chain.run(o.clone(), &ctx, &NoLookup).expect("run") {
            debug_assert_eq!(object["metadata"]["labels"]["mtcd.io/migrated"], "yes");
            kept += 1;
        }
    }
    let plugins = started.elapsed();
    assert_eq!(kept, OBJECTS);

    let started = Instant::now();
    let mut kept = 0;
    for o in &objects {
        kept += native(std::hint::black_box(o.clone())).is_some() as usize;
    }
    let builtin = started.elapsed();
    assert_eq!(kept, OBJECTS);

    let per_object = plugins.as_secs_f64() * 1e6 / OBJECTS as f64;
    let native_per_object = builtin.as_secs_f64() * 1e6 / OBJECTS as f64;
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| objects | {OBJECTS} (Deployment, {} bytes of JSON each) |", objects[0].to_string().len());
    println!("| chain of 3 plugins, total | {:.1} ms |", ms(plugins));
    println!("| objects/s through the chain | {:.0} |", OBJECTS as f64 / plugins.as_secs_f64());
    println!("| µs per object (3 plugins) | {per_object:.1} |");
    println!("| µs per object per plugin | {:.1} |", per_object / 3.0);
    println!("| same edits natively (built-in rule), µs per object | {native_per_object:.2} |");
    println!("| overhead over built-in, µs per object per plugin | {:.1} |", (per_object - native_per_object) / 3.0);

    // Per plugin, alone.
    println!();
    println!("| plugin alone | µs per object |");
    println!("|---|---|");
    for r in &refs {
        let mut one = warm.load_transforms(std::slice::from_ref(r)).expect("load");
        for o in objects.iter().take(200) {
            one.run(o.clone(), &ctx, &NoLookup).expect("warm-up");
        }
        let started = Instant::now();
        for o in &objects {
            one.run(o.clone(), &ctx, &NoLookup).expect("run");
        }
        println!("| {} | {:.1} |", file_name(r), started.elapsed().as_secs_f64() * 1e6 / OBJECTS as f64);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
