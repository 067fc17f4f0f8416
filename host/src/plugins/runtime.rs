//! One plugin call: a fresh store from the pre-instantiated component, armed with the
//! plugin's limits, driven to completion or to its deadline, and its failure named.
//!
//! Isolation between objects: every call instantiates the component anew in a new store
//! (Kubewarden's policy-evaluator does the same), so a plugin cannot carry state from one
//! object to the next and a failed call leaves nothing behind. Instantiating from a
//! `*Pre` handle with copy-on-write memory images costs microseconds (docs/benchmarks.md).
//!
//! Time: wasm that runs past the deadline traps at its next epoch check; a call that waits
//! in a host function (a WASI sleep or poll, a file read) is dropped by the tokio timeout
//! around the whole call. Either way the error is `PluginError::Timeout` naming the plugin,
//! the subject and the limit, and the store is discarded.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use wasmtime::{Store, Trap};

use super::engine::{EPOCH_TICK, Shared, deadline_ticks};
use super::state::{CallContext, HostState, LookupRequest, TailPipe};
use super::{PluginError, SourceLookup};
use crate::spec::PluginRef;

/// A loaded plugin's settings and the runtime it is called on.
pub(crate) struct Runner {
    pub(crate) plugin: PluginRef,
    /// The plugin as calls name it (its path or oci:// reference).
    pub(crate) name: String,
    pub(crate) shared: Arc<Shared>,
}

impl Runner {
    /// Runs one call: `call` gets a fresh, armed store and instantiates and calls the plugin
    /// in it. `lookup` answers the plugin's lookups (restricted to `namespaces`) from the
    /// calling thread.
    pub(crate) fn call<R, F, Fut>(
        &self,
        subject: &str,
        namespaces: Arc<[String]>,
        lookup: &dyn SourceLookup,
        call: F,
    ) -> Result<R, PluginError>
    where
        R: Send,
        F: FnOnce(Store<HostState>) -> Fut,
        Fut: Future<Output = wasmtime::Result<R>> + Send,
    {
        let (lookups, mut requests) = mpsc::unbounded_channel::<LookupRequest>();
        let ctx = Arc::new(CallContext {
            plugin: self.name.clone(),
            subject: subject.to_string(),
            namespaces,
            lookups,
            memory_exceeded: Default::default(),
            stderr: TailPipe::default(),
        });
        let mut store = Store::new(&self.shared.engine, HostState::new(&self.plugin, ctx.clone())?);
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(self.plugin.limits.fuel.unwrap_or(u64::MAX)).map_err(runtime)?;
        store.set_epoch_deadline(deadline_ticks(self.plugin.limits.timeout));
        // The epoch trap is the precise stop for running wasm; the timeout, two ticks later,
        // catches a call that is waiting in a host function and never reaches an epoch check.
        let limit = self.plugin.limits.timeout + 2 * EPOCH_TICK;
        let call = call(store);
        let driven = async move {
            let call = tokio::time::timeout(limit, call);
            tokio::pin!(call);
            loop {
                tokio::select! {
                    biased;
                    done = &mut call => break done,
                    Some(req) = requests.recv() => {
                        let found = lookup.get(&req.kind, &req.namespace, &req.name).map(|v| v.to_string());
                        let _ = req.reply.send(found);
                    }
                }
            }
        };
        match self.shared.block_on(driven) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.classify(e, &ctx)),
            Err(_elapsed) => Err(PluginError::Timeout {
                plugin: self.name.clone(),
                subject: subject.to_string(),
                limit: self.plugin.limits.timeout,
            }),
        }
    }

    /// Names what stopped the plugin: the memory cap, the deadline, fuel, a trap (with the
    /// panic message from its stderr when there is one), or a failed instantiation.
    fn classify(&self, err: wasmtime::Error, ctx: &CallContext) -> PluginError {
        let plugin = self.name.clone();
        let subject = ctx.subject.clone();
        if ctx.memory_exceeded.load(Ordering::Relaxed) {
            return PluginError::MemoryLimit { plugin, subject, limit: self.plugin.limits.memory };
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginError::Timeout { plugin, subject, limit: self.plugin.limits.timeout },
            Some(Trap::OutOfFuel) => {
                PluginError::OutOfFuel { plugin, subject, limit: self.plugin.limits.fuel.unwrap_or(u64::MAX) }
            }
            Some(trap) => {
                let mut reason = trap.to_string();
                if let Some(panic) = panic_message(&ctx.stderr.contents()) {
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
