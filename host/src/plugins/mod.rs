//! WebAssembly plugins: user transforms and hooks, sandboxed.
//!
//! A plugin is a WebAssembly component targeting `wit/mtcd.wit` (`mtcd:plugin@0.1.0`).
//! [`PluginHost`] owns the one wasmtime `Engine` and a cache of compiled components;
//! [`PluginHost::load_transforms`] gives a [`TransformChain`] the plan runs every object
//! through, [`PluginHost::load_hook`] a [`Hook`] the phases call.
//!
//! Isolation, per plugin, from its `PluginRef`:
//! - CPU and time: a wall-clock deadline per call (epoch interruption, 10 ms ticks, default
//!   1 s), which also holds while the plugin waits in a host call (every call is async and
//!   runs under a timeout); when `limits.fuel` is set, a deterministic fuel budget;
//! - output: error messages cut at 4 KiB, at most 100 `log` lines / 64 KiB per call, the
//!   last 16 KiB of stderr kept;
//! - input: a component file is checked (regular file, at most 20 MiB, component header)
//!   before it is read;
//! - memory: linear memory capped at `limits.memory` (default 64 MiB);
//! - capabilities: none by default. Directories, environment variables and the clock only
//!   when `grants` lists them (directories read-only unless marked writable); never
//!   sockets. The only host calls are `log` and a read-only `lookup` of source objects in
//!   the migrated namespaces.
//!
//! A failure (trap, limit, malformed JSON, patch that does not apply) is an error naming the
//! plugin and the object. The plan runs plugins before anything is written, so a failing
//! plugin stops the migration before it touches a cluster. A plugin's instance serves the
//! objects of one chain while its calls succeed and is replaced after any failure; it is
//! never shared between chains, migrations or runs (see `runtime.rs`).
//!
//! ```no_run
//! # fn demo(refs: &[mtcd::spec::PluginRef]) -> Result<(), mtcd::plugins::PluginError> {
//! use mtcd::plugins::{NoLookup, PluginHost, TransformContext, TransformOutput};
//! let host = PluginHost::new(None)?;
//! let mut chain = host.load_transforms(refs)?;
//! let ctx = TransformContext {
//!     source_cluster: "old".into(),
//!     destination_cluster: "new".into(),
//!     namespace_map: [("shop".to_string(), "shop".to_string())].into_iter().collect(),
//! };
//! let object = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "shop"}});
//! match chain.run(object, &ctx, &NoLookup)? {
//!     TransformOutput::Keep { object, extra } => { /* apply object and extra */ }
//!     TransformOutput::Skip => { /* leave it out */ }
//! }
//! # Ok(()) }
//! ```

mod bindings;
mod engine;
mod error;
mod hook;
mod oci;
mod runtime;
mod scaffold;
mod state;
mod tester;
mod transform;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use wasmtime::component::{Component, HasSelf, Linker};

pub use engine::{CacheOutcome, LoadReport, WASMTIME_VERSION};
pub use error::PluginError;
pub use hook::{Hook, HookContext, phase_name};
pub use oci::{OciError, pull, push, resolve};
pub use scaffold::scaffold;
pub use state::{LOOKUPS_PER_CALL, MAX_LOG_BYTES, MAX_LOG_LINES, MAX_LOG_MESSAGE, STDERR_TAIL};
pub use tester::{TestOptions, config_from_pairs, test_plugin, test_plugin_with};
pub use transform::{TransformChain, object_ref};

use crate::spec::{HookPhase, HookRef, PluginLimits, PluginRef, PluginSource};
use bindings::hook::{Hook as HookWorld, HookPre};
use bindings::transformer::{Transformer, TransformerPre};
use engine::{ComponentCache, Shared};
use runtime::Runner;
use state::HostState;

/// An error message (`error` outcome, a hook's verdict, an invalid patch) is cut at this
/// many bytes, with a note of how much was cut.
pub const MAX_ERROR_MESSAGE: usize = 4096;

/// What a transform is told about the migration (besides its own config).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TransformContext {
    pub source_cluster: String,
    pub destination_cluster: String,
    /// Source namespace → destination namespace; also the namespaces `lookup` may read.
    pub namespace_map: IndexMap<String, String>,
}

/// Read-only access to source objects for the plugins' `lookup`. Implemented by the
/// plan's source snapshot; the host already restricts calls to migrated namespaces.
pub trait SourceLookup: Send + Sync {
    /// The object `kind` `namespace/name` (for a `Namespace`: `namespace == name`).
    fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<serde_json::Value>;
}

/// A lookup that finds nothing: for plugins that do not use `lookup`, and offline tests.
pub struct NoLookup;

impl SourceLookup for NoLookup {
    fn get(&self, _: &str, _: &str, _: &str) -> Option<serde_json::Value> {
        None
    }
}

/// A fixed set of objects as a lookup (offline `mtcd plugin test`, unit tests).
impl SourceLookup for Vec<serde_json::Value> {
    fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<serde_json::Value> {
        self.iter()
            .find(|o| {
                let s = |p: &str| o.pointer(p).and_then(serde_json::Value::as_str).unwrap_or_default();
                let ns = if kind == "Namespace" { s("/metadata/name") } else { s("/metadata/namespace") };
                s("/kind") == kind && s("/metadata/name") == name && ns == namespace
            })
            .cloned()
    }
}

/// What the chain decided for one object.
#[derive(Debug, Clone, PartialEq)]
pub enum TransformOutput {
    /// Migrate `object`, and create `extra` next to it.
    Keep { object: serde_json::Value, extra: Vec<serde_json::Value> },
    /// Do not migrate the object.
    Skip,
}

/// The config as the plugin receives it: a JSON object, `{}` when desired.toml has none.
fn config_text(config: &serde_json::Value) -> String {
    if config.is_null() { "{}".to_string() } else { config.to_string() }
}

/// Limits a transform gets when desired.toml sets none (and `mtcd plugin test` uses).
pub fn default_transform_limits() -> PluginLimits {
    PluginLimits { timeout: Duration::from_secs(1), memory: 64 * 1024 * 1024, fuel: None }
}

/// Limits a hook gets when desired.toml sets none.
pub fn default_hook_limits() -> PluginLimits {
    PluginLimits { timeout: Duration::from_secs(300), memory: 64 * 1024 * 1024, fuel: None }
}

/// The plugin runtime: one wasmtime engine, its epoch clock, the compiled-component cache
/// and the OCI blob cache. Create one per process and load chains and hooks from it;
/// loading the same component twice compiles it once.
pub struct PluginHost {
    shared: Arc<Shared>,
    cache: ComponentCache,
    oci_dir: Option<PathBuf>,
    transform_linker: Linker<HostState>,
    hook_linker: Linker<HostState>,
}

impl PluginHost {
    /// `cache_dir`: where compiled components are kept between runs (wasmtime's cache,
    /// keyed by the component's bytes, the wasmtime version and the engine settings).
    /// `None` uses `$XDG_CACHE_HOME/mtcd/components` (or `~/.cache/mtcd/components`, where
    /// `mtcd plan` keeps them too); when that
    /// cannot be created, components are compiled on every run (with a warning).
    /// oci:// plugins are kept in `$XDG_CACHE_HOME/mtcd/oci` (see [`PluginHost::with_oci_cache`]).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        let (engine, disk) = match cache_dir {
            // An explicit directory that cannot be created is the caller's error.
            Some(dir) => engine::new_engine(Some(&dir))?,
            // The default one is a convenience: without it, compile on every run.
            None => match engine::new_engine(engine::default_cache_dir("components").as_deref()) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "plugin cache disabled");
                    engine::new_engine(None)?
                }
            },
        };
        let link_err = |e: wasmtime::Error| PluginError::Runtime(format!("cannot set up the plugin linker: {e:#}"));
        let mut transform_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut transform_linker).map_err(link_err)?;
        Transformer::add_to_linker::<HostState, HasSelf<HostState>>(&mut transform_linker, |s| s).map_err(link_err)?;
        let mut hook_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut hook_linker).map_err(link_err)?;
        HookWorld::add_to_linker::<HostState, HasSelf<HostState>>(&mut hook_linker, |s| s).map_err(link_err)?;
        Ok(PluginHost {
            shared: Arc::new(Shared::new(engine)?),
            cache: ComponentCache::new(None, disk),
            oci_dir: engine::default_cache_dir("oci"),
            transform_linker,
            hook_linker,
        })
    }

    /// Keeps pulled oci:// plugins in `dir` (`blobs/sha256/<hex>`) instead of
    /// `$XDG_CACHE_HOME/mtcd/oci`.
    pub fn with_oci_cache(mut self, dir: PathBuf) -> Self {
        self.oci_dir = Some(dir);
        self
    }

    /// The directory compiled components are cached in, if any.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache.dir()
    }

    /// The directory oci:// plugins are cached in, if any.
    pub fn oci_cache_dir(&self) -> Option<&std::path::Path> {
        self.oci_dir.as_deref()
    }

    /// Reads (or pulls) and compiles one plugin's component.
    fn component(&self, r: &PluginRef) -> Result<(Component, LoadReport), PluginError> {
        let started = Instant::now();
        let (wasm, digest, oci_cached) = match &r.source {
            PluginSource::File(path) => {
                let wasm = engine::read_component(r, path)?;
                let digest = engine::sha256_hex(&wasm);
                (wasm, digest, None)
            }
            PluginSource::Oci(o) => {
                let fetched = oci::fetch(&self.shared, self.oci_dir.as_deref(), o, &engine::plugin_label(r))?;
                (fetched.wasm, fetched.layer_hex, Some(fetched.cached))
            }
        };
        let (component, outcome) =
            self.cache.component(&self.shared.engine, &engine::plugin_label(r), &digest, &wasm)?;
        let report =
            LoadReport { plugin: r.source.to_string(), outcome, digest, oci_cached, elapsed: engine::since(started) };
        tracing::debug!(plugin = %report.plugin, outcome = ?report.outcome, elapsed = ?report.elapsed, "plugin loaded");
        Ok((component, report))
    }

    /// Loads transform plugins in chain order. Fails on the first plugin that cannot be
    /// read, pulled, compiled or linked, before any object is touched.
    pub fn load_transforms(&self, refs: &[PluginRef]) -> Result<TransformChain, PluginError> {
        let mut steps = Vec::with_capacity(refs.len());
        let mut reports = Vec::with_capacity(refs.len());
        for r in refs {
            let (component, report) = self.component(r)?;
            let incompatible = |e: wasmtime::Error| PluginError::Incompatible {
                plugin: engine::plugin_label(r),
                world: "transformer",
                reason: format!("{e:#}"),
            };
            let instance_pre = self.transform_linker.instantiate_pre(&component).map_err(incompatible)?;
            let pre = TransformerPre::new(instance_pre).map_err(incompatible)?;
            steps.push(transform::Step {
                runner: Runner::new(r.clone(), self.shared.clone(), pre),
                config: config_text(&r.config),
            });
            reports.push(report);
        }
        Ok(TransformChain::new(steps, reports))
    }

    /// Runs, in file order, every hook of `hooks` registered for `phase`; the first error
    /// stops (a `HookFailed` from a hook's verdict, or a load/run failure). For callers
    /// that run a phase once; keep [`Hook`]s from [`PluginHost::load_hook`] to call one
    /// repeatedly.
    pub fn run_hooks(&self, hooks: &[HookRef], phase: HookPhase, ctx: &HookContext<'_>) -> Result<(), PluginError> {
        for h in hooks.iter().filter(|h| h.phase == phase) {
            if let Some(p) = h.plugin() {
                self.load_hook(p)?.run(phase, ctx)?;
            }
        }
        Ok(())
    }

    /// Loads one hook plugin.
    pub fn load_hook(&self, r: &PluginRef) -> Result<Hook, PluginError> {
        let (component, report) = self.component(r)?;
        let incompatible = |e: wasmtime::Error| PluginError::Incompatible {
            plugin: engine::plugin_label(r),
            world: "hook",
            reason: format!("{e:#}"),
        };
        let instance_pre = self.hook_linker.instantiate_pre(&component).map_err(incompatible)?;
        let pre = HookPre::new(instance_pre).map_err(incompatible)?;
        Ok(Hook { runner: Runner::new(r.clone(), self.shared.clone(), pre), config: config_text(&r.config), report })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_list_lookup_matches_kind_namespace_and_name() {
        let objects = vec![
            json!({"kind": "ConfigMap", "metadata": {"name": "a", "namespace": "shop"}}),
            json!({"kind": "Namespace", "metadata": {"name": "shop"}}),
        ];
        assert!(SourceLookup::get(&objects, "ConfigMap", "shop", "a").is_some());
        assert!(SourceLookup::get(&objects, "ConfigMap", "other", "a").is_none());
        assert!(SourceLookup::get(&objects, "Secret", "shop", "a").is_none());
        assert!(SourceLookup::get(&objects, "Namespace", "shop", "shop").is_some());
    }

    /// The plan may run chains on worker threads and share the host between them.
    #[test]
    fn runtime_types_cross_threads() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<TransformChain>();
        send::<Hook>();
        send_sync::<PluginHost>();
        send_sync::<PluginError>();
    }

    #[test]
    fn missing_config_reaches_plugins_as_an_empty_object() {
        assert_eq!(config_text(&serde_json::Value::Null), "{}");
        assert_eq!(config_text(&json!({"a": 1})), r#"{"a":1}"#);
    }
}
