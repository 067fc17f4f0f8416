//! `mtcd-plugin`: write an mtcd transform or hook as one Rust function over
//! [`serde_json::Value`], build it for `wasm32-wasip2`, and reference the `.wasm` from
//! desired.toml.
//!
//! ```ignore
//! use mtcd_plugin::{Context, Outcome, Transform, Value};
//!
//! struct AddTeam;
//!
//! impl Transform for AddTeam {
//!     fn transform(mut obj: Value, ctx: &Context) -> Result<Outcome, String> {
//!         let team = ctx.config_str("team").ok_or("config `team` is required")?;
//!         obj["metadata"]["labels"]["team"] = team.into();
//!         Ok(Outcome::Replace(obj))
//!     }
//! }
//!
//! mtcd_plugin::export_transformer!(AddTeam);
//! ```
//!
//! The contract is `wit/mtcd.wit`. The SDK hides the JSON text that crosses the boundary:
//! objects arrive parsed, outcomes are serialized for you, and an `Err(String)` becomes the
//! WIT `error` outcome that mtcd reports with the plugin path and the object's name.
//!
//! Keep the logic in plain functions: off wasm the host imports ([`log`], [`lookup`]) do not
//! exist, so native unit tests should test functions that do not call them.

pub use serde_json::{self, Value, json};

// The generated code and the export macros refer to the runtime through this crate so a
// plugin depends on `mtcd-plugin` alone.
extern crate self as mtcd_plugin;
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Raw bindings of the `rust-sdk` world, for plugins that need the WIT types directly (for
/// example to return JSON text the SDK would refuse to produce).
pub mod bindings {
    wit_bindgen::generate!({
        world: "rust-sdk",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_rust_sdk",
        default_bindings_module: "::mtcd_plugin::bindings",
        runtime_path: "::mtcd_plugin::__wit_bindgen::rt",
    });
}

use bindings::exports::mtcd::plugin::hooks;
use bindings::exports::mtcd::plugin::transform as wit_transform;
use bindings::mtcd::plugin::host;
use bindings::mtcd::plugin::types;

/// What a plugin knows about the migration: clusters, namespace mapping and its config.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// The `[[migration]]` name; empty for transforms (the host does not send it to them).
    pub migration: String,
    pub source_cluster: String,
    pub destination_cluster: String,
    /// Source namespace → destination namespace for every migrated namespace.
    pub namespace_map: Vec<(String, String)>,
    /// The plugin's `config` table from desired.toml (`{}` when absent).
    pub config: Value,
}

impl Context {
    /// A string entry of the config object.
    pub fn config_str(&self, key: &str) -> Option<&str> {
        self.config.get(key).and_then(Value::as_str)
    }

    /// The destination namespace for a source namespace, if it is migrated.
    pub fn destination_namespace(&self, source: &str) -> Option<&str> {
        self.namespace_map.iter().find(|(s, _)| s == source).map(|(_, d)| d.as_str())
    }

    fn parse_config(config: &str) -> Result<Value, String> {
        if config.trim().is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_str(config).map_err(|e| format!("plugin config is not valid JSON: {e}"))
    }
}

/// What a transform decided for one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Keep the object as it came in (cheapest: nothing is serialized back).
    Unchanged,
    /// The new object.
    Replace(Value),
    /// An RFC 6902 JSON Patch (a JSON array of operations) to apply to the object.
    Patch(Value),
    /// Do not migrate this object.
    Skip,
    /// The new object plus extra objects to create next to it.
    WithExtra { object: Value, extra: Vec<Value> },
}

/// A transform plugin: called once per object, in chain order.
pub trait Transform {
    /// `Err(message)` reports the object as failed; the plugin's `on-error` setting decides
    /// whether that stops the migration.
    fn transform(object: Value, ctx: &Context) -> Result<Outcome, String>;
}

/// The phase a hook runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    PreBackup,
    PostBackup,
    PreRestore,
    PostRestore,
    PreCutover,
    PostCutover,
    PreStage,
    PostStage,
}

impl Phase {
    /// The name used in desired.toml (`pre-cutover`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PreBackup => "pre-backup",
            Phase::PostBackup => "post-backup",
            Phase::PreRestore => "pre-restore",
            Phase::PostRestore => "post-restore",
            Phase::PreCutover => "pre-cutover",
            Phase::PostCutover => "post-cutover",
            Phase::PreStage => "pre-stage",
            Phase::PostStage => "post-stage",
        }
    }
}

/// A hook plugin: `Err(message)` stops the migration at that phase.
pub trait Hook {
    fn run(phase: Phase, ctx: &Context) -> Result<(), String>;
}

/// Log levels of [`log`].
pub use types::LogLevel as Level;

/// Writes a message to mtcd's log (tagged with this plugin's path).
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// Reads a source object, read-only. `None` when it does not exist or lives outside the
/// migrated namespaces. For a `Namespace`, pass its name as both `namespace` and `name`.
pub fn lookup(kind: &str, namespace: &str, name: &str) -> Option<Value> {
    host::lookup(kind, namespace, name).and_then(|text| serde_json::from_str(&text).ok())
}

#[doc(hidden)]
pub fn __run_transform<T: Transform>(object: String, ctx: types::Context) -> wit_transform::Outcome {
    let config = match Context::parse_config(&ctx.config) {
        Ok(c) => c,
        Err(e) => return wit_transform::Outcome::Error(e),
    };
    let ctx = Context {
        migration: String::new(),
        source_cluster: ctx.source_cluster,
        destination_cluster: ctx.destination_cluster,
        namespace_map: ctx.namespace_map,
        config,
    };
    let object: Value = match serde_json::from_str(&object) {
        Ok(v) => v,
        Err(e) => return wit_transform::Outcome::Error(format!("object is not valid JSON: {e}")),
    };
    match T::transform(object, &ctx) {
        Ok(Outcome::Unchanged) => wit_transform::Outcome::Unchanged,
        Ok(Outcome::Skip) => wit_transform::Outcome::Skip,
        Ok(Outcome::Replace(v)) => wit_transform::Outcome::Replace(v.to_string()),
        Ok(Outcome::Patch(v)) => wit_transform::Outcome::Patch(v.to_string()),
        Ok(Outcome::WithExtra { object, extra }) => wit_transform::Outcome::WithExtra(wit_transform::ObjectWithExtra {
            object: object.to_string(),
            extra: extra.iter().map(Value::to_string).collect(),
        }),
        Err(message) => wit_transform::Outcome::Error(message),
    }
}

#[doc(hidden)]
pub fn __run_hook<H: Hook>(phase: hooks::Phase, ctx: types::HookContext) -> Result<(), String> {
    let config = Context::parse_config(&ctx.config)?;
    let ctx = Context {
        migration: ctx.migration,
        source_cluster: ctx.source_cluster,
        destination_cluster: ctx.destination_cluster,
        namespace_map: ctx.namespace_map,
        config,
    };
    let phase = match phase {
        hooks::Phase::PreBackup => Phase::PreBackup,
        hooks::Phase::PostBackup => Phase::PostBackup,
        hooks::Phase::PreRestore => Phase::PreRestore,
        hooks::Phase::PostRestore => Phase::PostRestore,
        hooks::Phase::PreCutover => Phase::PreCutover,
        hooks::Phase::PostCutover => Phase::PostCutover,
        hooks::Phase::PreStage => Phase::PreStage,
        hooks::Phase::PostStage => Phase::PostStage,
    };
    H::run(phase, &ctx)
}

#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::exports::mtcd::plugin::hooks::{Guest as HooksGuest, Phase};
    pub use crate::bindings::exports::mtcd::plugin::transform::{Guest as TransformGuest, Outcome};
    pub use crate::bindings::mtcd::plugin::types::{Context, HookContext};
}

/// Exports a [`Transform`] implementation as the plugin's entry point.
///
/// The component also answers the hook entry point with an error, so a transform listed
/// as a hook in desired.toml fails with a clear message instead of doing nothing.
#[macro_export]
macro_rules! export_transformer {
    ($ty:ty) => {
        const _: () = {
            struct __MtcdExport;
            impl $crate::__private::TransformGuest for __MtcdExport {
                fn transform(
                    object: ::std::string::String,
                    ctx: $crate::__private::Context,
                ) -> $crate::__private::Outcome {
                    $crate::__run_transform::<$ty>(object, ctx)
                }
            }
            impl $crate::__private::HooksGuest for __MtcdExport {
                fn run(
                    _phase: $crate::__private::Phase,
                    _ctx: $crate::__private::HookContext,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    ::std::result::Result::Err(
                        "this plugin is a transform plugin, not a hook (list it under transforms)".into(),
                    )
                }
            }
    $crate::bindings::__export_rust_sdk!(__MtcdExport with_types_in $crate::bindings);
        };
    };
}

/// Exports a [`Hook`] implementation as the plugin's entry point.
///
/// The component also answers the transform entry point with an error, so a hook listed as
/// a transform fails with a clear message.
#[macro_export]
macro_rules! export_hook {
    ($ty:ty) => {
        const _: () = {
            struct __MtcdExport;
            impl $crate::__private::HooksGuest for __MtcdExport {
                fn run(
                    phase: $crate::__private::Phase,
                    ctx: $crate::__private::HookContext,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__run_hook::<$ty>(phase, ctx)
                }
            }
            impl $crate::__private::TransformGuest for __MtcdExport {
                fn transform(
                    _object: ::std::string::String,
                    _ctx: $crate::__private::Context,
                ) -> $crate::__private::Outcome {
                    $crate::__private::Outcome::Error(
                        "this plugin is a hook, not a transform plugin (list it under hooks)".into(),
                    )
                }
            }
    $crate::bindings::__export_rust_sdk!(__MtcdExport with_types_in $crate::bindings);
        };
    };
}
