//! What a plugin's store holds: the WASI context built from its grants, the memory limiter,
//! and the host side of `log` and `lookup`.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::transformer::mtcd::plugin::{host, types};
use super::{PluginError, SourceLookup};
use crate::spec::PluginRef;

/// Lookups a plugin may make per call; bounds the work one object can cause on the host.
pub(crate) const LOOKUPS_PER_CALL: u32 = 50;
/// A `log` message longer than this is cut.
const MAX_LOG_MESSAGE: usize = 4096;
/// stderr kept per instance: enough for a panic message and backtrace hint. The instance
/// is replaced before it fills up, so a chatty plugin never fails on a full pipe.
pub(crate) const STDERR_CAPACITY: usize = 64 * 1024;

pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// The plugin's stderr: a panic message ends up here and is quoted in trap errors.
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) plugin: PathBuf,
    /// Source namespaces `lookup` may read (the migrated ones).
    pub(crate) namespaces: Vec<String>,
    pub(crate) lookups_left: u32,
}

impl HostState {
    pub(crate) fn new(plugin: &PluginRef) -> Result<Self, PluginError> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = wasi_ctx(plugin, stderr.clone())?;
        let memory = usize::try_from(plugin.limits.memory).unwrap_or(usize::MAX);
        Ok(HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(memory),
            stderr,
            plugin: plugin.path.clone(),
            namespaces: Vec::new(),
            lookups_left: LOOKUPS_PER_CALL,
        })
    }
}

/// The WASI context: everything denied unless desired.toml grants it.
///
/// wasmtime-wasi's builder already starts closed (no args, env, preopens, sockets or DNS;
/// stdin empty; stdout discarded). On top of that the clocks are frozen unless `clock` is
/// granted, so a plugin cannot make its output depend on time by accident.
fn wasi_ctx(plugin: &PluginRef, stderr: MemoryOutputPipe) -> Result<WasiCtx, PluginError> {
    let mut b = WasiCtxBuilder::new();
    b.stderr(stderr);
    for name in &plugin.grants.env {
        // A granted variable that is unset is simply absent, as in a shell.
        if let Ok(value) = std::env::var(name) {
            b.env(name, value);
        }
    }
    for dir in &plugin.grants.dirs {
        let perms = if dir.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
        b.preopened_dir(&dir.host, &dir.guest, perms).map_err(|e| PluginError::Grant {
            path: plugin.path.clone(),
            grant: format!("dir {} → {}", dir.host.display(), dir.guest),
            reason: format!("{e:#}"),
        })?;
    }
    if !plugin.grants.clock {
        b.wall_clock(FrozenClock);
        b.monotonic_clock(FrozenClock);
    }
    Ok(b.build())
}

/// A clock stuck at the Unix epoch: what a plugin without the `clock` grant sees.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// wasmtime's `StoreLimits` plus a flag that says the memory cap (not something else)
/// stopped the plugin, so the error can say "memory limit" instead of a generic trap.
pub(crate) struct Limiter {
    inner: StoreLimits,
    memory: usize,
    pub(crate) memory_exceeded: bool,
}

impl Limiter {
    fn new(memory: usize) -> Self {
        // A Rust wasip2 component is a handful of core instances (the program plus the WASI
        // adapter shims); the counts leave room for that and nothing like a fork bomb.
        let inner = StoreLimitsBuilder::new()
            .memory_size(memory)
            .instances(32)
            .memories(8)
            .tables(16)
            .trap_on_grow_failure(true)
            .build();
        Limiter { inner, memory, memory_exceeded: false }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.memory_exceeded = true;
        }
        self.inner.memory_growing(current, desired, maximum)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }
    fn tables(&self) -> usize {
        self.inner.tables()
    }
    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: types::LogLevel, mut message: String) {
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = self.plugin.display();
        match level {
            types::LogLevel::Trace => tracing::trace!(%plugin, "{message}"),
            types::LogLevel::Debug => tracing::debug!(%plugin, "{message}"),
            types::LogLevel::Info => tracing::info!(%plugin, "{message}"),
            types::LogLevel::Warn => tracing::warn!(%plugin, "{message}"),
            types::LogLevel::Error => tracing::error!(%plugin, "{message}"),
        }
    }

    fn lookup(&mut self, kind: String, namespace: String, name: String) -> Option<String> {
        if !self.namespaces.contains(&namespace) {
            tracing::debug!(plugin = %self.plugin.display(), %kind, %namespace, %name, "lookup outside the migrated namespaces denied");
            return None;
        }
        if self.lookups_left == 0 {
            tracing::warn!(plugin = %self.plugin.display(), "lookup budget of {LOOKUPS_PER_CALL} per call spent");
            return None;
        }
        self.lookups_left -= 1;
        CURRENT_LOOKUP.with(|c| c.get()).and_then(|l| l.get(&kind, &namespace, &name)).map(|v| v.to_string())
    }
}

thread_local! {
    /// The caller's `SourceLookup` while a plugin call runs on this thread. A wasmtime store
    /// only holds `'static` data, but the lookup is borrowed for one `run`; host functions
    /// run synchronously on the calling thread, so a scoped thread-local bridges the two.
    static CURRENT_LOOKUP: Cell<Option<&'static dyn SourceLookup>> = const { Cell::new(None) };
}

/// Restores the previous lookup when a call ends, on return and on unwind alike.
struct LookupScope(Option<&'static dyn SourceLookup>);

impl Drop for LookupScope {
    fn drop(&mut self) {
        CURRENT_LOOKUP.with(|c| c.set(self.0));
    }
}

/// Runs `f` with `lookup` answering the plugin's `lookup` calls.
pub(crate) fn with_lookup<R>(lookup: &dyn SourceLookup, f: impl FnOnce() -> R) -> R {
    // SAFETY: only the lifetime is erased. The `'static` reference lives solely in
    // CURRENT_LOOKUP, which `LookupScope` resets to its previous value before this function
    // returns or unwinds, i.e. while `lookup` is still borrowed. `host::Host::lookup` uses it
    // only for the duration of one call and copies the result out, so no use outlives it.
    #[allow(unsafe_code)]
    let erased: &'static dyn SourceLookup =
        unsafe { std::mem::transmute::<&dyn SourceLookup, &'static dyn SourceLookup>(lookup) };
    let _scope = LookupScope(CURRENT_LOOKUP.with(|c| c.replace(Some(erased))));
    f()
}

/// The plugin's display name in logs: the file name, with the full path in errors.
pub(crate) fn short_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}
