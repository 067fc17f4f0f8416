//! The engine owns the migration lifecycle: `plan`, `apply` (and `--watch`), `cutover`,
//! `rollback`, `status` and `cleanup`, each returning a typed report while it emits
//! [`Event`](crate::progress::Event)s. The data flows one way: observe both clusters once into
//! a [`Snapshot`](crate::snapshot::Snapshot), compute the whole [`Plan`] purely (plugins
//! included) before the first write, then execute the plan — the actions never read the
//! desired file again and never re-discover.
//!
//! The CLI opens an [`Engine`] and renders; tests and automation can drive it the same way.

mod apply;
mod cleanup;
mod cutover;
mod error;
mod gate;
mod hooks;
mod identity;
pub mod lease;
mod planning;
mod preflight;
pub mod records;
mod relink;
mod report;
mod status;
mod watch;

use crate::actions::dim;
use crate::cluster::Cluster;
use crate::observe::Registries;
use crate::progress::Events;
use crate::spec::{ImageMode, Spec};

pub use cutover::CutoverFlags;
pub use error::EngineError;
pub use records::{NextSync, RunRecord};
pub use report::*;

pub use crate::plan::Plan;

/// What the command line may say beyond the desired file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Take over destination objects mtcd did not create (as `adopt = true` does).
    pub adopt: bool,
    /// Replace objects of any kind whose change touches an immutable field.
    pub allow_replace: bool,
    /// How long `apply` waits for a migration's lock someone else holds (default
    /// [`lease::DEFAULT_WAIT`]).
    pub lock_wait: Option<std::time::Duration>,
}

/// One desired-state file against its two clusters.
pub struct Engine {
    pub spec: Spec,
    pub source: Cluster,
    pub destination: Cluster,
    pub events: Events,
    pub options: Options,
    /// When the next sync is due, for the run records (`apply --watch`, `apply --schedule`).
    pub next_sync: NextSync,
    /// Where `apply --watch` publishes its metrics (`--metrics-addr`).
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// Registry clients, when a migration copies images. Built once: their connection pools
    /// and token caches are what make the copies cheap.
    registries: Option<Registries>,
    /// Said once the run is interrupted (Ctrl-C, SIGTERM during a cutover): long work (volume
    /// copies, waits) stops at its next wait instead of being dropped mid-write (crate::stop).
    interrupt: tokio::sync::watch::Sender<Option<String>>,
}

impl Engine {
    pub fn new(spec: Spec, source: Cluster, destination: Cluster, events: Events) -> Result<Engine, EngineError> {
        let registries = registry_clients(&spec, &source, &destination)?;
        Ok(Engine {
            spec,
            source,
            destination,
            events,
            options: Options::default(),
            next_sync: NextSync::None,
            metrics: None,
            registries,
            interrupt: crate::stop::channel().0,
        })
    }

    /// Tells the work under way to stop at its next wait (crate::stop).
    pub fn interrupt(&self, why: &str) {
        self.interrupt.send_replace(Some(why.to_string()));
    }

    fn interrupted(&self) -> bool {
        self.interrupt.borrow().is_some()
    }

    /// Runs `work` to its end. When `stop` (Ctrl-C, SIGTERM) comes first, the work is told to
    /// stop at its next wait ([`Engine::interrupt`]) and still awaited, never dropped: a write
    /// it has on its way would land after the caller moved on (crate::stop).
    ///
    /// The work is boxed here, at the call: a whole apply is a large future, and the command's
    /// future lives on the main thread's stack (one more copy of it there overflowed it).
    pub fn stop_on<'a, T: 'a>(
        &'a self,
        stop: impl std::future::Future<Output = ()> + 'a,
        work: impl std::future::Future<Output = T> + 'a,
    ) -> impl std::future::Future<Output = T> + 'a {
        let mut work = Box::pin(work);
        async move {
            tokio::select! {
                r = &mut work => r,
                () = stop => {
                    self.interrupt("interrupted");
                    work.await
                }
            }
        }
    }

    fn registries(&self) -> Option<&Registries> {
        self.registries.as_ref()
    }
}

/// Registry clients for both clusters, when a migration copies images.
fn registry_clients(spec: &Spec, src: &Cluster, dst: &Cluster) -> Result<Option<Registries>, EngineError> {
    if !spec.migrations.iter().any(|m| m.images == ImageMode::Direct) {
        return Ok(None);
    }
    let (Some(s), Some(d)) = (&spec.source.registry, &spec.destination.registry) else {
        return Ok(None); // the spec parser already refused this
    };
    let token = |c: &Cluster| {
        use secrecy::ExposeSecret;
        c.config.auth_info.token.as_ref().map(|t| t.expose_secret().to_string())
    };
    let sc = dim::RegistryClient::new(s, token(src)).map_err(|e| EngineError::Dim(Box::new(e)))?;
    let dc = dim::RegistryClient::new(d, token(dst)).map_err(|e| EngineError::Dim(Box::new(e)))?;
    Ok(Some((sc, dc)))
}

/// The plugin host, with compiled components cached under the user's cache folder.
pub fn plugin_host() -> Result<crate::plugins::PluginHost, crate::plugins::PluginError> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .map(|c| c.join("mtcd").join("components"));
    crate::plugins::PluginHost::new(cache)
}
