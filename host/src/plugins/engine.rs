//! The one wasmtime `Engine`, its epoch clock, and the on-disk cache of compiled components.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use super::PluginError;

/// The wasmtime version compiled components belong to; part of every cache file name so an
/// upgrade never tries to load another version's machine code.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// How often the epoch advances. The per-call deadline is counted in these ticks, so a
/// timeout is precise to about 10 ms (Spin uses the same tick).
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Builds the engine every plugin shares.
///
/// - `epoch_interruption`: the wall-clock limit per call (a ticker thread advances the
///   epoch; a call past its deadline traps with `Trap::Interrupt`). Cheap: one load and
///   compare at loop headers and function entries.
/// - `consume_fuel`: the optional deterministic limit (`limits.fuel`); a call without one
///   gets `u64::MAX`. Costs a few percent, bought for reproducible limits in CI.
/// - No pooling allocator: instances are reused across objects, so instantiation is rare,
///   and pooling reserves large address-space slabs that constrained hosts refuse.
/// - The default 512 KiB wasm stack; deep recursion traps with a stack-overflow trap.
pub(crate) fn new_engine() -> Result<Engine, PluginError> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(true);
    config.wasm_component_model(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    Engine::new(&config).map_err(|e| PluginError::Runtime(format!("cannot create the wasm engine: {e:#}")))
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
    pub plugin: PathBuf,
    pub outcome: CacheOutcome,
    /// The cache file used or written (`None` without a cache directory).
    pub cache_file: Option<PathBuf>,
    pub elapsed: Duration,
}

/// Compiled components by content, in memory and on disk.
pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    /// Part of every file name: wasmtime version + a hash of the engine settings that
    /// affect machine code, so changing either never loads incompatible code.
    engine_key: String,
    memory: Mutex<HashMap<String, Component>>,
}

impl ComponentCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Result<Self, PluginError> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|source| PluginError::Cache { path: dir.clone(), source })?;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("wasmtime{WASMTIME_VERSION}-{:016x}", hasher.finish());
        Ok(ComponentCache { dir, engine_key, memory: Mutex::new(HashMap::new()) })
    }

    pub(crate) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The cache file for a `.wasm` with this content, whether or not it exists yet.
    pub(crate) fn file_for(&self, wasm: &[u8]) -> Option<PathBuf> {
        let digest = hex::encode(Sha256::digest(wasm));
        self.dir.as_ref().map(|d| d.join(format!("{digest}-{}.cwasm", self.engine_key)))
    }

    pub(crate) fn load(&self, engine: &Engine, path: &Path) -> Result<(Component, LoadReport), PluginError> {
        let started = Instant::now();
        let wasm = std::fs::read(path).map_err(|source| PluginError::Read { path: path.to_path_buf(), source })?;
        let digest = hex::encode(Sha256::digest(&wasm));
        let cache_file = self.file_for(&wasm);
        let report = |outcome| LoadReport {
            plugin: path.to_path_buf(),
            outcome,
            cache_file: cache_file.clone(),
            elapsed: started.elapsed(),
        };
        if let Some(c) = self.memory.lock().expect("component cache lock").get(&digest) {
            return Ok((c.clone(), report(CacheOutcome::MemoryHit)));
        }
        if let Some(file) = cache_file.as_ref().filter(|f| f.is_file()) {
            // SAFETY: wasmtime requires that deserialized bytes were produced by
            // `Component::serialize` of a compatible engine. This file is our own cache: its
            // name carries the sha256 of the source `.wasm`, the wasmtime version and the
            // engine's compatibility hash, it is only ever written by `store` below (atomic
            // rename, so never half-written), and wasmtime re-checks its header against the
            // engine on load. A tampered cache directory is outside the threat model, like
            // a tampered mtcd binary.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(engine, file) };
            match loaded {
                Ok(c) => {
                    self.memory.lock().expect("component cache lock").insert(digest, c.clone());
                    return Ok((c, report(CacheOutcome::DiskHit)));
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "ignoring unusable plugin cache entry")
                }
            }
        }
        let component = Component::new(engine, &wasm)
            .map_err(|e| PluginError::Compile { path: path.to_path_buf(), reason: format!("{e:#}") })?;
        if let Some(file) = &cache_file
            && let Err(e) = store(&component, file)
        {
            tracing::warn!(file = %file.display(), error = %e, "cannot write plugin cache entry");
        }
        self.memory.lock().expect("component cache lock").insert(digest, component.clone());
        Ok((component, report(CacheOutcome::Compiled)))
    }
}

/// Writes a compiled component next to its final name and renames it into place, so a
/// concurrent mtcd never reads a partial file.
fn store(component: &Component, file: &Path) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}

/// `$XDG_CACHE_HOME/mtcd/plugins`, else `$HOME/.cache/mtcd/plugins`.
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("mtcd").join("plugins"))
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
    fn cache_file_names_carry_content_hash_and_engine() {
        let engine = new_engine().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::new(&engine, Some(dir.path().to_path_buf())).unwrap();
        let a = cache.file_for(b"one").unwrap();
        assert_ne!(a, cache.file_for(b"two").unwrap());
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&hex::encode(Sha256::digest(b"one"))), "{name}");
        assert!(name.contains(&format!("wasmtime{WASMTIME_VERSION}-")) && name.ends_with(".cwasm"), "{name}");
    }
}
