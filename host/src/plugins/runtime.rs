//! One plugin's live instance: a store armed with limits before every call, reused across
//! calls while healthy and rebuilt from the shared `InstancePre` after any failure.

use std::sync::Arc;

use wasmtime::{Engine, Store, Trap};

use super::PluginError;
use super::engine::{EpochTicker, deadline_ticks};
use super::state::{HostState, LOOKUPS_PER_CALL, STDERR_CAPACITY};
use crate::spec::PluginRef;

/// A store plus the world's bindings, instantiated once and reused: instantiating a
/// component costs tens of microseconds, a call into a live one a few.
pub(crate) struct Live<B> {
    pub(crate) store: Store<HostState>,
    pub(crate) bindings: B,
}

/// What every world's runner shares: the plugin's settings and the engine clock.
pub(crate) struct Slot<B> {
    pub(crate) plugin: PluginRef,
    pub(crate) engine: Engine,
    pub(crate) _ticker: Arc<EpochTicker>,
    pub(crate) live: Option<Live<B>>,
    /// Source namespaces the current instance lets `lookup` read.
    namespaces_key: Vec<String>,
}

impl<B> Slot<B> {
    pub(crate) fn new(plugin: PluginRef, engine: Engine, ticker: Arc<EpochTicker>) -> Self {
        Slot { plugin, engine, _ticker: ticker, live: None, namespaces_key: Vec::new() }
    }

    /// The live instance (instantiated if needed), armed for one call: fresh fuel and
    /// deadline, a reset lookup budget.
    pub(crate) fn arm(
        &mut self,
        subject: &str,
        instantiate: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<B>,
    ) -> Result<&mut Live<B>, PluginError> {
        if self.live.is_none() {
            let mut store = Store::new(&self.engine, HostState::new(&self.plugin)?);
            store.limiter(|s| &mut s.limiter);
            // Instantiation runs the component's start code, bounded like a call.
            store.set_fuel(self.plugin.limits.fuel.unwrap_or(u64::MAX)).map_err(runtime)?;
            store.set_epoch_deadline(deadline_ticks(self.plugin.limits.timeout));
            let bindings = match instantiate(&mut store) {
                Ok(b) => b,
                // A start function can trap or outgrow the memory cap (a cap below the
                // plugin's initial memory fails here): report that like a failed call.
                Err(e) if store.data().limiter.memory_exceeded || e.downcast_ref::<Trap>().is_some() => {
                    return Err(self.classify(e, Some(store.data()), subject));
                }
                Err(e) => {
                    return Err(PluginError::Incompatible {
                        path: self.plugin.path.clone(),
                        world: "mtcd:plugin@0.1.0",
                        reason: format!("{e:#}"),
                    });
                }
            };
            store.data_mut().namespaces = self.namespaces_key.clone();
            self.live = Some(Live { store, bindings });
        }
        let live = self.live.as_mut().expect("instantiated above");
        let data = live.store.data_mut();
        data.lookups_left = LOOKUPS_PER_CALL;
        data.limiter.memory_exceeded = false;
        live.store.set_fuel(self.plugin.limits.fuel.unwrap_or(u64::MAX)).map_err(runtime)?;
        live.store.set_epoch_deadline(deadline_ticks(self.plugin.limits.timeout));
        Ok(live)
    }

    /// Sets the namespaces `lookup` may read for the next calls.
    pub(crate) fn set_namespaces<'a>(&mut self, namespaces: impl Iterator<Item = &'a String> + Clone) {
        // Compared rather than copied: the allow-list only changes between migrations.
        if !namespaces.clone().eq(self.namespaces_key.iter()) {
            self.namespaces_key = namespaces.cloned().collect();
        }
        if let Some(live) = &mut self.live
            && live.store.data().namespaces != self.namespaces_key
        {
            live.store.data_mut().namespaces = self.namespaces_key.clone();
        }
    }

    /// After a successful call: keep the instance unless its stderr is close to full (a
    /// full pipe would make the plugin's next write fail).
    pub(crate) fn after_success(&mut self) {
        if let Some(live) = &self.live
            && live.store.data().stderr.contents().len() > STDERR_CAPACITY / 2
        {
            self.live = None;
        }
    }

    /// Turns a failed call into an error naming the plugin and subject, and drops the
    /// instance: after a trap its state is undefined, so the next call gets a fresh one.
    pub(crate) fn failure(&mut self, err: wasmtime::Error, subject: &str) -> PluginError {
        let live = self.live.take();
        self.classify(err, live.as_ref().map(|l| l.store.data()), subject)
    }

    /// Names what stopped the plugin: the memory cap, the deadline, fuel, or a trap (with
    /// the panic message from its stderr when there is one).
    fn classify(&self, err: wasmtime::Error, data: Option<&HostState>, subject: &str) -> PluginError {
        let plugin = self.plugin.path.clone();
        let subject = subject.to_string();
        let (memory_exceeded, stderr) =
            data.map(|d| (d.limiter.memory_exceeded, d.stderr.contents())).unwrap_or_default();
        if memory_exceeded {
            return PluginError::MemoryLimit { plugin, subject, limit: self.plugin.limits.memory };
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginError::Timeout { plugin, subject, limit: self.plugin.limits.timeout },
            Some(Trap::OutOfFuel) => {
                PluginError::OutOfFuel { plugin, subject, limit: self.plugin.limits.fuel.unwrap_or(u64::MAX) }
            }
            Some(trap) => {
                let mut reason = trap.to_string();
                if let Some(panic) = panic_message(&String::from_utf8_lossy(&stderr)) {
                    reason = format!("{reason} ({panic})");
                }
                PluginError::Trap { plugin, subject, reason }
            }
            None => PluginError::Trap { plugin, subject, reason: format!("{err:#}") },
        }
    }
}

/// The last Rust panic message in a plugin's stderr, on one line.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at")?;
    let text: Vec<&str> = stderr[start..].lines().take(2).map(str::trim).filter(|l| !l.is_empty()).collect();
    Some(text.join(" "))
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
