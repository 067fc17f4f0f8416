//! The one wasmtime `Engine`, its epoch clock, the runtime that drives plugin calls, and the
//! loader: component files read within bounds, compiled once, cached by content.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Cache, CacheConfig, Config, Engine};

use super::PluginError;
use crate::spec::{MAX_COMPONENT_SIZE, PluginRef};

/// The wasmtime version compiled components belong to.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// How often the epoch advances. The per-call deadline is counted in these ticks, so a
/// timeout is precise to about 10 ms (Spin uses the same tick).
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Builds the engine every plugin shares.
///
/// - `epoch_interruption`: the wall-clock limit while wasm runs (a ticker thread advances
///   the epoch; a call past its deadline traps with `Trap::Interrupt`). Cheap: one load and
///   compare at loop headers and function entries. Time spent *waiting in a host call*
///   (a WASI sleep, a read) is bounded separately: every call is async (wasmtime's fibers)
///   and runs under a tokio timeout, see `runtime.rs`.
/// - `consume_fuel`: the optional deterministic limit (`limits.fuel`); a call without one
///   gets `u64::MAX`. Costs a few percent, bought for reproducible limits in CI.
/// - `cache`: wasmtime's own on-disk cache of compiled code, keyed by the component's
///   bytes and the engine's settings and version, so an upgraded mtcd never loads stale
///   code and mtcd itself never turns bytes from disk into machine code.
/// - The default on-demand allocator: instances are reused across a chain's objects, so
///   instantiation is rare; the pooling allocator would reserve gigabytes of address space
///   per slot (which constrained hosts refuse) for no measurable gain.
/// - The default 512 KiB wasm stack; deep recursion traps with a stack-overflow trap.
pub(crate) fn new_engine(cache_dir: Option<&Path>) -> Result<(Engine, Option<Cache>), PluginError> {
    let (config, cache) = base_config(cache_dir)?;
    let engine =
        Engine::new(&config).map_err(|e| PluginError::Runtime(format!("cannot create the wasm engine: {e:#}")))?;
    Ok((engine, cache))
}

fn base_config(cache_dir: Option<&Path>) -> Result<(Config, Option<Cache>), PluginError> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(true);
    config.wasm_component_model(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    let cache = match cache_dir {
        None => None,
        Some(dir) => {
            let dir = std::path::absolute(dir).map_err(|source| PluginError::Cache { path: dir.into(), source })?;
            let mut cc = CacheConfig::new();
            cc.with_directory(&dir);
            let cache = Cache::new(cc).map_err(|e| PluginError::Cache {
                path: dir.clone(),
                source: std::io::Error::other(format!("{e:#}")),
            })?;
            Some(cache)
        }
    };
    config.cache(cache.clone());
    Ok((config, cache))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the last holder drops it. Chains
/// and hooks hold it too, so their deadlines keep working after the `PluginHost` is gone.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mtcd-wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn the wasm epoch thread");
        EpochTicker { stop, thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Deadline in epoch ticks for a wall-clock limit (at least one tick).
pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1)
}

/// What every chain and hook shares: the engine, its clock, and the tokio runtime plugin
/// calls are driven on.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    _ticker: EpochTicker,
    /// One worker thread: it runs the timers (call deadlines, WASI sleeps) and the blocking
    /// pool of WASI file reads while the calling thread runs the wasm. `None` once dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Shared {
    /// The last chain or hook may be dropped inside mtcd's async code, where a runtime must
    /// not block to shut down: let it stop in the background.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Shared {
    pub(crate) fn new(engine: Engine) -> Result<Self, PluginError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .thread_name("mtcd-plugins")
            .enable_all()
            .build()
            .map_err(|e| PluginError::Runtime(format!("cannot start the plugin runtime: {e}")))?;
        Ok(Shared { _ticker: EpochTicker::start(engine.clone()), engine, runtime: Some(runtime) })
    }

    /// Runs `future` to completion on the calling thread. From a multi-threaded tokio
    /// runtime (mtcd's) the worker is handed over with `block_in_place` first; from a
    /// current-thread runtime (some tests) the call moves to a scoped thread, since that
    /// runtime's only thread cannot block.
    pub(crate) fn block_on<F: Future + Send>(&self, future: F) -> F::Output
    where
        F::Output: Send,
    {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let runtime = self.runtime.as_ref().expect("plugin runtime lives until drop");
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| runtime.block_on(future)),
            Ok(_) => std::thread::scope(|s| {
                s.spawn(|| runtime.block_on(future)).join().unwrap_or_else(|p| std::panic::resume_unwind(p))
            }),
            Err(_) => runtime.block_on(future),
        }
    }
}

/// Where a component came from on this load; reported so `plan` can show compile cost and
/// the tests can prove the cache is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Compiled from the `.wasm` now (and written to the disk cache when there is one).
    Compiled,
    /// Machine code read from the disk cache.
    DiskHit,
    /// Already loaded by this `PluginHost`.
    MemoryHit,
}

/// What loading one plugin cost.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// The plugin's path or oci:// reference.
    pub plugin: String,
    pub outcome: CacheOutcome,
    /// sha256 of the component's bytes (for an oci:// plugin, its layer digest).
    pub digest: String,
    /// Whether an oci:// plugin was served from the blob cache (`Some(true)`), pulled
    /// (`Some(false)`); `None` for files.
    pub oci_cached: Option<bool>,
    pub elapsed: Duration,
}

/// Compiled components by content: in memory for this process, on disk through
/// wasmtime's cache.
pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    disk: Option<Cache>,
    memory: Mutex<HashMap<String, Component>>,
    /// Compiles one component at a time so the disk cache's hit counter tells which
    /// load was a hit (and two threads never compile the same component twice).
    compile: Mutex<()>,
}

impl ComponentCache {
    pub(crate) fn new(dir: Option<PathBuf>, disk: Option<Cache>) -> Self {
        let dir = disk.as_ref().map(|c| c.directory().clone()).or(dir);
        ComponentCache { dir, disk, memory: Mutex::new(HashMap::new()), compile: Mutex::new(()) }
    }

    pub(crate) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The compiled component for `wasm` (whose sha256 is `digest`), compiling it at most
    /// once per process and once per machine.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        plugin: &str,
        digest: &str,
        wasm: &[u8],
    ) -> Result<(Component, CacheOutcome), PluginError> {
        if let Some(c) = self.memory.lock().expect("component cache lock").get(digest) {
            return Ok((c.clone(), CacheOutcome::MemoryHit));
        }
        let _one_at_a_time = self.compile.lock().expect("compile lock");
        if let Some(c) = self.memory.lock().expect("component cache lock").get(digest) {
            return Ok((c.clone(), CacheOutcome::MemoryHit));
        }
        let hits = self.disk.as_ref().map(Cache::cache_hits);
        let component = Component::new(engine, wasm)
            .map_err(|e| PluginError::Compile { plugin: plugin.to_string(), reason: format!("{e:#}") })?;
        let outcome = match (hits, &self.disk) {
            (Some(before), Some(c)) if c.cache_hits() > before => CacheOutcome::DiskHit,
            _ => CacheOutcome::Compiled,
        };
        self.memory.lock().expect("component cache lock").insert(digest.to_string(), component.clone());
        Ok((component, outcome))
    }
}

/// Reads a component file within bounds: a regular file (a directory, FIFO or device is
/// named as such), at most [`MAX_COMPONENT_SIZE`] bytes, starting with the component header.
/// The file is opened without blocking (a FIFO swapped in after the check cannot hang the
/// read) and checked again through the open handle. No error quotes its bytes.
pub(crate) fn read_component(plugin: &PluginRef, path: &Path) -> Result<Vec<u8>, PluginError> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = plugin_label(plugin);
    let read_err = |source| PluginError::Read { plugin: name.clone(), source };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    check_meta(&name, &meta)?;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(read_err)?;
    check_meta(&name, &file.metadata().map_err(read_err)?)?;
    let mut wasm = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_COMPONENT_SIZE + 1).read_to_end(&mut wasm).map_err(read_err)?;
    if wasm.len() as u64 > MAX_COMPONENT_SIZE {
        return Err(PluginError::TooLarge { plugin: name, size: wasm.len() as u64, limit: MAX_COMPONENT_SIZE });
    }
    check_header(&name, &wasm)?;
    Ok(wasm)
}

fn check_meta(name: &str, meta: &std::fs::Metadata) -> Result<(), PluginError> {
    if let Some(kind) = crate::spec::oci::file_kind_problem(meta) {
        return Err(PluginError::NotAFile { plugin: name.to_string(), kind });
    }
    if meta.len() > MAX_COMPONENT_SIZE {
        return Err(PluginError::TooLarge { plugin: name.to_string(), size: meta.len(), limit: MAX_COMPONENT_SIZE });
    }
    Ok(())
}

/// Refuses bytes that do not start with the component header (before wasmtime parses them:
/// its parse errors quote the bytes it found).
pub(crate) fn check_header(name: &str, wasm: &[u8]) -> Result<(), PluginError> {
    match crate::spec::oci::component_header_problem(wasm) {
        Some(problem) => Err(PluginError::NotAComponent { plugin: name.to_string(), problem }),
        None => Ok(()),
    }
}

/// sha256 of `bytes`, as hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The plugin as load errors name it: its source, and where desired.toml names it.
pub(crate) fn plugin_label(plugin: &PluginRef) -> String {
    match &plugin.at {
        Some(at) => format!("{} ({at})", plugin.source),
        None => plugin.source.to_string(),
    }
}

/// `$XDG_CACHE_HOME/mtcd/NAME`, else `$HOME/.cache/mtcd/NAME`.
pub(crate) fn default_cache_dir(name: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("mtcd").join(name))
}

/// Time since `started`, for load reports.
pub(crate) fn since(started: Instant) -> Duration {
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_whole_ticks() {
        assert_eq!(deadline_ticks(Duration::from_secs(1)), 100);
        assert_eq!(deadline_ticks(Duration::from_millis(15)), 2);
        assert_eq!(deadline_ticks(Duration::ZERO), 1);
    }

    #[test]
    fn component_files_are_checked_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let r = PluginRef::file(dir.path());
        let err = read_component(&r, dir.path()).unwrap_err();
        assert!(matches!(err, PluginError::NotAFile { kind: "a directory", .. }), "{err:?}");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root:$6$x").unwrap();
        let err = read_component(&r, &secret).unwrap_err().to_string();
        assert!(err.contains("not a WebAssembly component") && !err.contains("root"), "{err}");
        let err = read_component(&r, Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(err, PluginError::NotAFile { kind: "a character device", .. }), "{err:?}");
    }
}
