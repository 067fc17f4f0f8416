//! `mtcd plugin new NAME [--hook]`: a ready-to-build plugin crate.
//!
//! The crate is self-contained: it vendors the SDK (`mtcd-plugin/`) and the WIT contract
//! from this mtcd build, so it builds offline-after-first-fetch and always matches the host
//! that created it. It has a unit test that runs natively with `cargo test`, a sample
//! `objects.yaml` for `mtcd plugin test`, and a README whose desired.toml snippet parses.

use std::path::{Path, PathBuf};

use super::PluginError;

const SDK_LIB: &str = include_str!("../../../plugins/sdk/src/lib.rs");
const WIT: &str = include_str!("../../../wit/mtcd.wit");

/// Creates `dir/NAME/` with a transform plugin that adds a label (or, with `hook`, a hook
/// that checks every migrated namespace carries an annotation), and returns its path.
/// `NAME` must be lowercase letters, digits and `-`, starting with a letter.
pub fn scaffold(name: &str, dir: &Path, hook: bool) -> Result<PathBuf, PluginError> {
    let root = dir.join(name);
    let fail = |reason: String| PluginError::Scaffold { path: root.clone(), reason };
    let valid = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        return Err(fail(format!(
            "`{name}` is not a valid plugin name: use lowercase letters, digits and `-`, starting with a letter"
        )));
    }
    if root.exists() {
        return Err(fail("already exists; choose another name or remove it".into()));
    }
    let artifact = name.replace('-', "_");
    let (lib, readme) = if hook { (HOOK_LIB, HOOK_README) } else { (PLUGIN_LIB, README) };
    let files: [(&str, String); 9] = [
        ("Cargo.toml", CRATE_MANIFEST.replace("{name}", name)),
        ("src/lib.rs", lib.to_string()),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
        (".gitignore", "/target\n".to_string()),
        ("README.md", readme.replace("{name}", name).replace("{artifact}", &artifact)),
        ("objects.yaml", OBJECTS.to_string()),
        ("mtcd-plugin/Cargo.toml", SDK_MANIFEST.to_string()),
        ("mtcd-plugin/src/lib.rs", SDK_LIB.to_string()),
        ("mtcd-plugin/wit/mtcd.wit", WIT.to_string()),
    ];
    for (rel, content) in &files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&path, content).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    }
    Ok(root)
}

/// No default build target: plain `cargo test` runs the unit tests natively; the
/// component is built with `cargo build --release --target wasm32-wasip2` (or `cargo wasm`).
const CARGO_CONFIG: &str = r#"[alias]
# cargo wasm: build the plugin component (target/wasm32-wasip2/release/*.wasm).
wasm = "build --release --target wasm32-wasip2"
"#;

const OBJECTS: &str = r#"# Sample objects for `mtcd plugin test`. Replace them with your own, e.g.
#   kubectl get deploy,svc,cm -n shop -o yaml > objects.yaml
# They also answer the plugin's `lookup`, and their namespaces count as migrated.
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations:
    mtcd.io/cutover-approved: "true"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  color: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: registry.example/shop/web:1.0
"#;

const CRATE_MANIFEST: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# A cdylib built for wasm32-wasip2 is already a WebAssembly component.
crate-type = ["cdylib"]

[dependencies]
mtcd-plugin = { path = "mtcd-plugin" }

# Standalone: not part of any enclosing workspace.
[workspace]

[profile.release]
# Keep function names so a trap names the function that failed.
strip = "debuginfo"
"#;

const SDK_MANIFEST: &str = r#"[package]
name = "mtcd-plugin"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
wit-bindgen = { version = "0.63", default-features = false, features = ["macros", "realloc", "std"] }
serde_json = { version = "1", features = ["preserve_order"] }
"#;

const PLUGIN_LIB: &str = r#"//! An mtcd transform plugin. mtcd calls `transform` once per object, in the order the
//! plugins are listed in desired.toml; the object is the previous plugin's output.

use mtcd_plugin::{Context, Outcome, Transform, Value};

struct Plugin;

impl Transform for Plugin {
    fn transform(object: Value, ctx: &Context) -> Result<Outcome, String> {
        // desired.toml: config = { label = "team", value = "payments" }
        let label = ctx.config_str("label").unwrap_or("migrated-by");
        let value = ctx.config_str("value").unwrap_or("mtcd");
        add_label(object, label, value)
    }
}

/// The plugin's logic as a plain function, so `cargo test` can run it natively (the host
/// functions `lookup` and `log` exist only inside mtcd).
fn add_label(mut object: Value, label: &str, value: &str) -> Result<Outcome, String> {
    let metadata = object.get_mut("metadata").and_then(Value::as_object_mut).ok_or("object has no metadata")?;
    let labels = metadata.entry("labels").or_insert_with(|| Value::Object(Default::default()));
    let labels = labels.as_object_mut().ok_or("metadata.labels is not a map")?;
    if labels.get(label).and_then(Value::as_str) == Some(value) {
        return Ok(Outcome::Unchanged);
    }
    labels.insert(label.to_string(), value.into());
    Ok(Outcome::Replace(object))
}

mtcd_plugin::export_transformer!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use mtcd_plugin::json;

    #[test]
    fn adds_the_label_once() {
        let object = json!({"kind": "ConfigMap", "metadata": {"name": "a", "namespace": "shop"}});
        let Ok(Outcome::Replace(labelled)) = add_label(object, "team", "payments") else { panic!("not replaced") };
        assert_eq!(labelled["metadata"]["labels"]["team"], "payments");
        assert_eq!(add_label(labelled, "team", "payments"), Ok(Outcome::Unchanged));
        assert!(add_label(json!({"kind": "ConfigMap"}), "team", "payments").is_err());
    }
}
"#;

const README: &str = r#"# {name}

An mtcd transform plugin (see mtcd's docs/plugins.md).

    rustup target add wasm32-wasip2
    cargo test                                           # unit tests, natively
    cargo build --release --target wasm32-wasip2         # or: cargo wasm
    mtcd plugin test target/wasm32-wasip2/release/{artifact}.wasm objects.yaml --config label=team --config value=payments

In desired.toml (the path is relative to the desired-state file):

```toml
[[migration.transform]]
plugin = "{name}/target/wasm32-wasip2/release/{artifact}.wasm"
config = { label = "team", value = "payments" }
```

To share it, push it to a registry and paste the pinned reference it prints:

    mtcd plugin push target/wasm32-wasip2/release/{artifact}.wasm oci://REGISTRY/{name}:0.1.0

`mtcd-plugin/` is the SDK and `mtcd-plugin/wit/mtcd.wit` the contract, copied from the mtcd
that created this crate.
"#;

const HOOK_LIB: &str = r#"//! An mtcd hook plugin. mtcd calls `run` at the phase desired.toml lists it under; an
//! `Err` stops the migration there (a failing `pre-cutover` hook keeps the source running).

use mtcd_plugin::{Context, Hook, Phase, Value, lookup};

struct Plugin;

impl Hook for Plugin {
    fn run(phase: Phase, ctx: &Context) -> Result<(), String> {
        // desired.toml: config = { annotation = "mtcd.io/cutover-approved" }
        let annotation = ctx.config_str("annotation").unwrap_or("mtcd.io/cutover-approved");
        for (namespace, _) in &ctx.namespace_map {
            let found = lookup("Namespace", namespace, namespace);
            check(found.as_ref(), namespace, annotation).map_err(|e| format!("{}: {e}", phase.as_str()))?;
        }
        Ok(())
    }
}

/// The hook's logic as a plain function, so `cargo test` can run it natively (the host
/// functions `lookup` and `log` exist only inside mtcd).
fn check(namespace: Option<&Value>, name: &str, annotation: &str) -> Result<(), String> {
    let namespace = namespace.ok_or(format!("namespace {name} is not on the source cluster"))?;
    match namespace.pointer(&format!("/metadata/annotations/{}", annotation.replace('~', "~0").replace('/', "~1"))) {
        Some(_) => Ok(()),
        None => Err(format!("namespace {name} lacks the annotation {annotation}")),
    }
}

mtcd_plugin::export_hook!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use mtcd_plugin::json;

    #[test]
    fn needs_the_annotation() {
        let ready = json!({"metadata": {"name": "shop", "annotations": {"mtcd.io/cutover-approved": "true"}}});
        assert_eq!(check(Some(&ready), "shop", "mtcd.io/cutover-approved"), Ok(()));
        let bare = json!({"metadata": {"name": "shop"}});
        assert!(check(Some(&bare), "shop", "mtcd.io/cutover-approved").is_err());
        assert!(check(None, "shop", "mtcd.io/cutover-approved").is_err());
    }
}
"#;

const HOOK_README: &str = r#"# {name}

An mtcd hook plugin (see mtcd's docs/plugins.md): it stops the migration at its phase
unless every migrated namespace carries an annotation.

    rustup target add wasm32-wasip2
    cargo test                                           # unit tests, natively
    cargo build --release --target wasm32-wasip2         # or: cargo wasm
    mtcd plugin test target/wasm32-wasip2/release/{artifact}.wasm objects.yaml --phase pre-cutover

In desired.toml (the path is relative to the desired-state file):

```toml
[[migration.hook]]
phase = "pre-cutover"
plugin = "{name}/target/wasm32-wasip2/release/{artifact}.wasm"
config = { annotation = "mtcd.io/cutover-approved" }
timeout = "30s"
```

`mtcd-plugin/` is the SDK and `mtcd-plugin/wit/mtcd.wit` the contract, copied from the mtcd
that created this crate.
"#;
