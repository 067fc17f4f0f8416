use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong loading or running a plugin. Call failures name the plugin
/// (its path or oci:// reference), what it was working on (`Kind/namespace/name`, or the
/// hook phase) and the limit that stopped it, so the user can tell which object to look at
/// without a debugger. Nothing here quotes the bytes of a file.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The component file could not be opened or read.
    #[error("plugin {plugin}: cannot read: {source}")]
    Read {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    /// The component path names something that is not a regular file.
    #[error("plugin {plugin} is {kind}, not a .wasm file")]
    NotAFile { plugin: String, kind: &'static str },
    /// The component is larger than mtcd reads (checked before reading it).
    #[error("plugin {plugin} is {size} bytes, more than the {limit} bytes a component may have")]
    TooLarge { plugin: String, size: u64, limit: u64 },
    /// The file does not start with the WebAssembly component header.
    #[error("plugin {plugin} {problem}")]
    NotAComponent { plugin: String, problem: &'static str },
    /// The file is not a WebAssembly component wasmtime can compile.
    #[error("plugin {plugin}: not a valid WebAssembly component: {reason}")]
    Compile { plugin: String, reason: String },
    /// The component does not fit the `mtcd:plugin@0.1.0` world it was loaded as, or
    /// imports something the host does not provide (network, a newer WIT version, ...).
    #[error("plugin {plugin}: cannot be used as a {world} plugin: {reason}")]
    Incompatible { plugin: String, world: &'static str, reason: String },
    /// A grant in desired.toml cannot be honoured (a preopened directory is missing, ...).
    #[error("plugin {plugin}: grant {grant}: {reason}")]
    Grant { plugin: String, grant: String, reason: String },
    /// A cache directory (compiled components or OCI blobs) is unusable.
    #[error("plugin cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Pulling, resolving or pushing an oci:// plugin failed; see [`super::OciError`].
    #[error(transparent)]
    Oci(#[from] super::OciError),
    /// The plugin trapped (a panic, `unreachable`, out-of-bounds access, ...).
    #[error("plugin {plugin} failed on {subject}: trapped: {reason}")]
    Trap { plugin: String, subject: String, reason: String },
    /// The call ran longer than its wall-clock limit (`limits.timeout`), in wasm or waiting
    /// in a host call (a sleep, a read).
    #[error("plugin {plugin} failed on {subject}: stopped after its time limit of {}", humantime::format_duration(*limit))]
    Timeout { plugin: String, subject: String, limit: Duration },
    /// The call used more fuel (wasm instructions) than `limits.fuel` allows.
    #[error("plugin {plugin} failed on {subject}: ran out of fuel (limit {limit} units)")]
    OutOfFuel { plugin: String, subject: String, limit: u64 },
    /// The plugin tried to grow its memory beyond `limits.memory`.
    #[error("plugin {plugin} failed on {subject}: exceeded its memory limit of {limit} bytes")]
    MemoryLimit { plugin: String, subject: String, limit: u64 },
    /// The plugin returned text that is not a JSON object where one was required.
    #[error("plugin {plugin} failed on {subject}: returned invalid JSON: {reason}")]
    InvalidJson { plugin: String, subject: String, reason: String },
    /// The plugin returned a patch that is not RFC 6902 or does not apply to the object.
    #[error("plugin {plugin} failed on {subject}: returned an invalid patch: {reason}")]
    InvalidPatch { plugin: String, subject: String, reason: String },
    /// The plugin itself reported an error for this object (the WIT `error` outcome); the
    /// message is cut at 4 KiB.
    #[error("plugin {plugin} failed on {subject}: {message}")]
    Reported { plugin: String, subject: String, message: String },
    /// A hook returned an error: the migration must stop at this phase. The message is cut
    /// at 4 KiB.
    #[error("hook {plugin} stopped the migration at {phase}: {message}")]
    HookFailed { plugin: String, phase: &'static str, message: String },
    /// `mtcd plugin test`: the objects file could not be read or parsed.
    #[error("objects file {path}: {reason}")]
    Objects { path: PathBuf, reason: String },
    /// `mtcd plugin test`: the objects file is missing, not a regular file, or over its size
    /// limit.
    #[error("{0}")]
    ObjectsFile(crate::spec::FileError),
    /// `mtcd plugin test`: at least one object failed; `report` has every object's result.
    #[error("{failed} of {total} objects failed")]
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
    /// The plugin the error is about (path or oci:// reference), if it is about one.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            PluginError::Read { plugin, .. }
            | PluginError::NotAFile { plugin, .. }
            | PluginError::TooLarge { plugin, .. }
            | PluginError::NotAComponent { plugin, .. }
            | PluginError::Compile { plugin, .. }
            | PluginError::Incompatible { plugin, .. }
            | PluginError::Grant { plugin, .. }
            | PluginError::Trap { plugin, .. }
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
