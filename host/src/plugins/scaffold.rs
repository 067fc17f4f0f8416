//! `mtcd plugin new NAME`: a ready-to-build plugin crate.
//!
//! The crate is self-contained: it vendors the SDK (`mtcd-plugin/`) and the WIT contract
//! from this mtcd build, so it builds offline-after-first-fetch and always matches the host
//! that created it.

use std::path::{Path, PathBuf};

use super::PluginError;

const SDK_LIB: &str = include_str!("../../../plugins/sdk/src/lib.rs");
const WIT: &str = include_str!("../../../wit/mtcd.wit");

/// Creates `dir/NAME/` with a transform plugin that adds a label, and returns its path.
/// `NAME` must be lowercase letters, digits and `-`, starting with a letter.
pub fn scaffold(name: &str, dir: &Path, _hook: bool) -> Result<PathBuf, PluginError> {
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
    let files: [(&str, String); 7] = [
        ("Cargo.toml", CRATE_MANIFEST.replace("{name}", name)),
        ("src/lib.rs", PLUGIN_LIB.to_string()),
        (".cargo/config.toml", "[build]\ntarget = \"wasm32-wasip2\"\n".to_string()),
        (".gitignore", "/target\n".to_string()),
        ("README.md", README.replace("{name}", name).replace("{artifact}", &artifact)),
        ("mtcd-plugin/Cargo.toml", SDK_MANIFEST.to_string()),
        ("mtcd-plugin/src/lib.rs", SDK_LIB.to_string()),
    ];
    for (rel, content) in files.iter().map(|(r, c)| (*r, c.as_str())).chain([("mtcd-plugin/wit/mtcd.wit", WIT)]) {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&path, content).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    }
    Ok(root)
}

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
    fn transform(mut object: Value, ctx: &Context) -> Result<Outcome, String> {
        // desired.toml: config = { label = "team", value = "payments" }
        let label = ctx.config_str("label").unwrap_or("migrated-by");
        let value = ctx.config_str("value").unwrap_or("mtcd");
        let metadata = object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or("object has no metadata")?;
        let labels = metadata.entry("labels").or_insert_with(|| Value::Object(Default::default()));
        let labels = labels.as_object_mut().ok_or("metadata.labels is not a map")?;
        if labels.get(label).and_then(Value::as_str) == Some(value) {
            return Ok(Outcome::Unchanged);
        }
        labels.insert(label.to_string(), value.into());
        Ok(Outcome::Replace(object))
    }
}

mtcd_plugin::export_transformer!(Plugin);
"#;

const README: &str = r#"# {name}

An mtcd transform plugin (see mtcd's docs/plugins.md).

    rustup target add wasm32-wasip2
    cargo build --release
    mtcd plugin test target/wasm32-wasip2/release/{artifact}.wasm objects.yaml --config label=team --config value=payments

In desired.toml:

    [[migration.transform]]
    path = "{name}/target/wasm32-wasip2/release/{artifact}.wasm"
    config = { label = "team", value = "payments" }

`mtcd-plugin/` is the SDK and `mtcd-plugin/wit/mtcd.wit` the contract, copied from the mtcd
that created this crate.
"#;
