//! One plugin's calls: an instance armed with the plugin's limits before every call,
//! driven to completion or to its deadline, reused while healthy and its failures named.
//!
//! Isolation between objects: an instance is reused for the next call of the same loaded
//! plugin (the next object of the same chain, the next run of the same hook) as long as
//! every call succeeds, because a fresh instance per object costs far more than the
//! transform itself (docs/benchmarks.md). It is never shared between plugins, chains,
//! migrations or mtcd runs, and it is discarded after any failure (trap, limit, timeout),
//! so the next call starts from a fresh one. Plugins must not rely on state surviving.
//!
//! Time: wasm that runs past the deadline traps at its next epoch check; a call that waits
//! in a host function (a WASI sleep or poll, a file read) is dropped by the tokio timeout
//! around the whole call, and the instance with it. Either way the error is
//! `PluginError::Timeout` naming the plugin, the subject and the limit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use wasmtime::{Store, Trap};

use super::bindings::hook::{Hook as HookWorld, HookPre};
use super::bindings::transformer::{Transformer, TransformerPre};
use super::engine::{EPOCH_TICK, Shared, deadline_ticks};
use super::state::{CallContext, HostState, LookupRequest, TailPipe};
use super::{PluginError, SourceLookup};
use crate::spec::PluginRef;

/// A boxed future borrowing the store, as the per-world call closures return.
pub(crate) type CallFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

/// A world's bindings and how to instantiate them from the pre-linked component.
pub(crate) trait World: Sized + Send + Sync + 'static {
    type Pre: Send + Sync;
    fn instantiate<'a>(pre: &'a Self::Pre, store: &'a mut Store<HostState>) -> CallFuture<'a, Self>;
}

impl World for Transformer {
    type Pre = TransformerPre<HostState>;
    fn instantiate<'a>(pre: &'a Self::Pre, store: &'a mut Store<HostState>) -> CallFuture<'a, Self> {
        Box::pin(pre.instantiate_async(store))
    }
}

impl World for HookWorld {
    type Pre = HookPre<HostState>;
    fn instantiate<'a>(pre: &'a Self::Pre, store: &'a mut Store<HostState>) -> CallFuture<'a, Self> {
        Box::pin(pre.instantiate_async(store))
    }
}

/// A store and, once instantiated, the world's bindings in it.
struct Live<W> {
    store: Store<HostState>,
    bindings: Option<W>,
}

/// A loaded plugin: its settings, its pre-linked component, and its live instance.
pub(crate) struct Runner<W: World> {
    pub(crate) plugin: PluginRef,
    /// The plugin as calls name it (its path or oci:// reference).
    pub(crate) name: String,
    shared: Arc<Shared>,
    pre: W::Pre,
    live: Option<Live<W>>,
    /// Set by the store's limiter when the plugin tried to grow memory past its limit.
    memory_exceeded: Arc<AtomicBool>,
    /// The instance's stderr (its tail), cleared before each call.
    stderr: TailPipe,
}

impl<W: World> Runner<W> {
    pub(crate) fn new(plugin: PluginRef, shared: Arc<Shared>, pre: W::Pre) -> Self {
        Runner {
            name: plugin.source.to_string(),
            plugin,
            shared,
            pre,
            live: None,
            memory_exceeded: Default::default(),
            stderr: TailPipe::default(),
        }
    }

    /// Runs one call: `call` gets the armed store and the bindings (instantiated first if
    /// there is no live instance). `lookup` answers the plugin's lookups (restricted to
    /// `namespaces`) from the calling thread.
    pub(crate) fn call<R, F>(
        &mut self,
        subject: &str,
        namespaces: Arc<[String]>,
        lookup: &dyn SourceLookup,
        call: F,
    ) -> Result<R, PluginError>
    where
        R: Send,
        F: for<'a> FnOnce(&'a mut Store<HostState>, &'a W) -> CallFuture<'a, R> + Send,
    {
        let (lookups, mut requests) = mpsc::unbounded_channel::<LookupRequest>();
        let ctx =
            Arc::new(CallContext { plugin: self.name.clone(), subject: subject.to_string(), namespaces, lookups });
        let mut live = match self.live.take() {
            Some(live) => live,
            None => {
                let state =
                    HostState::new(&self.plugin, self.memory_exceeded.clone(), self.stderr.clone(), ctx.clone())?;
                let mut store = Store::new(&self.shared.engine, state);
                store.limiter(|s| &mut s.limiter);
                Live { store, bindings: None }
            }
        };
        live.store.data_mut().begin_call(ctx);
        self.memory_exceeded.store(false, Ordering::Relaxed);
        self.stderr.clear();
        live.store.set_fuel(self.plugin.limits.fuel.unwrap_or(u64::MAX)).map_err(runtime)?;
        live.store.set_epoch_deadline(deadline_ticks(self.plugin.limits.timeout));
        let pre = &self.pre;
        // The instance travels with the call and comes back with its result; a timeout
        // drops it with the future.
        let run = async move {
            if live.bindings.is_none() {
                match W::instantiate(pre, &mut live.store).await {
                    Ok(b) => live.bindings = Some(b),
                    Err(e) => return (live, Err(e)),
                }
            }
            let Live { store, bindings } = &mut live;
            let result = call(store, bindings.as_ref().expect("instantiated above")).await;
            (live, result)
        };
        // The epoch trap is the precise stop for running wasm; the timeout, two ticks later,
        // catches a call that is waiting in a host function and never reaches an epoch check.
        let limit = self.plugin.limits.timeout + 2 * EPOCH_TICK;
        let driven = async move {
            let run = tokio::time::timeout(limit, run);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    biased;
                    done = &mut run => break done,
                    Some(req) = requests.recv() => {
                        let found = lookup.get(&req.kind, &req.namespace, &req.name).map(|v| v.to_string());
                        let _ = req.reply.send(found);
                    }
                }
            }
        };
        match self.shared.block_on(driven) {
            Ok((live, Ok(value))) => {
                self.live = Some(live);
                Ok(value)
            }
            // After a failure the instance's state is undefined: the next call gets a fresh one.
            Ok((_, Err(e))) => Err(self.classify(e, subject)),
            Err(_elapsed) => Err(PluginError::Timeout {
                plugin: self.name.clone(),
                subject: subject.to_string(),
                limit: self.plugin.limits.timeout,
            }),
        }
    }

    /// Names what stopped the plugin: the memory cap, the deadline, fuel, a trap (with the
    /// panic message from its stderr when there is one), or a failed instantiation.
    fn classify(&self, err: wasmtime::Error, subject: &str) -> PluginError {
        let plugin = self.name.clone();
        let subject = subject.to_string();
        if self.memory_exceeded.load(Ordering::Relaxed) {
            return PluginError::MemoryLimit { plugin, subject, limit: self.plugin.limits.memory };
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginError::Timeout { plugin, subject, limit: self.plugin.limits.timeout },
            Some(Trap::OutOfFuel) => {
                PluginError::OutOfFuel { plugin, subject, limit: self.plugin.limits.fuel.unwrap_or(u64::MAX) }
            }
            Some(trap) => {
                let mut reason = trap.to_string();
                if let Some(panic) = panic_message(&self.stderr.contents()) {
                    reason = format!("{reason} ({panic})");
                }
                PluginError::Trap { plugin, subject, reason }
            }
            None if is_link_error(&err) => {
                PluginError::Incompatible { plugin, world: "mtcd:plugin@0.1.0", reason: format!("{err:#}") }
            }
            None => PluginError::Trap { plugin, subject, reason: format!("{err:#}") },
        }
    }
}

/// Instantiation errors that are about the component's shape, not a call going wrong.
fn is_link_error(err: &wasmtime::Error) -> bool {
    let text = err.to_string();
    text.contains("import") && (text.contains("not found") || text.contains("type mismatch"))
}

/// The last Rust panic message in a plugin's stderr, on one line, at most 1 KiB.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at")?;
    let text: Vec<&str> = stderr[start..].lines().take(2).map(str::trim).filter(|l| !l.is_empty()).collect();
    Some(super::state::truncate_message(text.join(" "), 1024))
}

fn runtime(e: wasmtime::Error) -> PluginError {
    PluginError::Runtime(format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_takes_location_and_text() {
        let stderr =
            "noise\nthread '<unnamed>' panicked at src/lib.rs:10:13:\ndeliberate trap\nnote: run with RUST_BACKTRACE\n";
        assert_eq!(panic_message(stderr).unwrap(), "panicked at src/lib.rs:10:13: deliberate trap");
        assert_eq!(panic_message("nothing"), None);
    }
}
