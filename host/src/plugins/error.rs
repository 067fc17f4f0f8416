use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong loading or running a plugin. Call failures name the plugin
/// (its path) and what it was working on (`Kind/namespace/name`, or the hook phase), so the
/// user can tell which object to look at without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The `.wasm` file (or a granted directory) could not be read.
    #[error("plugin {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component wasmtime can compile.
    #[error("plugin {path}: not a valid WebAssembly component: {reason}")]
    Compile { path: PathBuf, reason: String },
    /// The component does not fit the `mtcd:plugin@0.1.0` world it was loaded as, or
    /// imports something the host does not provide (network, a newer WIT version, ...).
    #[error("plugin {path}: cannot be used as a {world} plugin: {reason}")]
    Incompatible { path: PathBuf, world: &'static str, reason: String },
    /// A grant in desired.toml cannot be honoured (a preopened directory is missing, ...).
    #[error("plugin {path}: grant {grant}: {reason}")]
    Grant { path: PathBuf, grant: String, reason: String },
    /// The compiled-component cache could not be written. Loading still works without it;
    /// this is only returned when the cache directory itself is unusable.
    #[error("plugin cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The plugin trapped (a panic, `unreachable`, out-of-bounds access, ...).
    #[error("plugin {plugin} failed on {subject}: trapped: {reason}")]
    Trap { plugin: PathBuf, subject: String, reason: String },
    /// The call ran longer than its wall-clock limit (`limits.timeout`).
    #[error("plugin {plugin} failed on {subject}: stopped after its time limit of {limit:?}")]
    Timeout { plugin: PathBuf, subject: String, limit: Duration },
    /// The call used more fuel (wasm instructions) than `limits.fuel` allows.
    #[error("plugin {plugin} failed on {subject}: ran out of fuel (limit {limit} units)")]
    OutOfFuel { plugin: PathBuf, subject: String, limit: u64 },
    /// The plugin tried to grow its memory beyond `limits.memory`.
    #[error("plugin {plugin} failed on {subject}: exceeded its memory limit of {limit} bytes")]
    MemoryLimit { plugin: PathBuf, subject: String, limit: u64 },
    /// The plugin returned text that is not a JSON object where one was required.
    #[error("plugin {plugin} failed on {subject}: returned invalid JSON: {reason}")]
    InvalidJson { plugin: PathBuf, subject: String, reason: String },
    /// The plugin returned a patch that is not RFC 6902 or does not apply to the object.
    #[error("plugin {plugin} failed on {subject}: returned an invalid patch: {reason}")]
    InvalidPatch { plugin: PathBuf, subject: String, reason: String },
    /// The plugin itself reported an error for this object (the WIT `error` outcome).
    #[error("plugin {plugin} failed on {subject}: {message}")]
    Reported { plugin: PathBuf, subject: String, message: String },
    /// A hook returned an error: the migration must stop at this phase.
    #[error("hook {plugin} stopped the migration at {phase}: {message}")]
    HookFailed { plugin: PathBuf, phase: &'static str, message: String },
    /// `mtcd plugin test`: the objects file could not be read or parsed.
    #[error("objects file {path}: {reason}")]
    Objects { path: PathBuf, reason: String },
    /// `mtcd plugin test`: at least one object failed; `report` has every object's result.
    #[error("{report}\n{failed} of {total} objects failed")]
    TestFailed { report: String, failed: usize, total: usize },
    /// `mtcd plugin test --config`: a pair that is not `KEY=VALUE`.
    #[error("--config {pair}: {reason}")]
    Config { pair: String, reason: String },
    /// `mtcd plugin new`: the crate could not be created.
    #[error("cannot create plugin crate {path}: {reason}")]
    Scaffold { path: PathBuf, reason: String },
    /// Anything else wasmtime reported outside a call (engine setup, instantiation).
    #[error("plugin runtime: {0}")]
    Runtime(String),
}

impl PluginError {
    /// The plugin path the error is about, if it is about one.
    pub fn plugin(&self) -> Option<&std::path::Path> {
        match self {
            PluginError::Read { path, .. }
            | PluginError::Compile { path, .. }
            | PluginError::Incompatible { path, .. }
            | PluginError::Grant { path, .. } => Some(path),
            PluginError::Trap { plugin, .. }
            | PluginError::Timeout { plugin, .. }
            | PluginError::OutOfFuel { plugin, .. }
            | PluginError::MemoryLimit { plugin, .. }
            | PluginError::InvalidJson { plugin, .. }
            | PluginError::InvalidPatch { plugin, .. }
            | PluginError::Reported { plugin, .. }
            | PluginError::HookFailed { plugin, .. } => Some(plugin),
            _ => None,
        }
    }
}
