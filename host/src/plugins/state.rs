//! What a plugin's store holds for one call: the WASI context built from its grants, the
//! memory limiter, the budgets of `log` and `lookup`, and the per-call context the host
//! functions answer from.
//!
//! The per-call context is an `Arc` set into the store before each call (as Kubewarden's
//! policy-evaluator holds its evaluation context); budgets are reset with it. The memory
//! flag and stderr are shared with the runner, which reads them even when a timeout
//! dropped the store.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::PluginError;
use super::bindings::transformer::mtcd::plugin::{host, types};
use crate::spec::PluginRef;

/// Lookups a plugin may make per call; bounds the work one object can cause on the host.
pub const LOOKUPS_PER_CALL: u32 = 50;
/// A `log` message longer than this is cut.
pub const MAX_LOG_MESSAGE: usize = 4096;
/// `log` calls forwarded per plugin call; later ones are dropped (with one warning).
pub const MAX_LOG_LINES: u32 = 100;
/// Bytes of `log` messages forwarded per plugin call.
pub const MAX_LOG_BYTES: usize = 64 * 1024;
/// The end of the plugin's stderr kept per call: a panic message is the last thing a
/// failing plugin writes, so the tail is what error messages quote. Earlier output is
/// discarded, never refused, so a chatty plugin does not fail on a full pipe.
pub const STDERR_TAIL: usize = 16 * 1024;

/// A `lookup` the host function hands to the caller, who holds the (borrowed) source
/// snapshot and answers on `reply`.
pub(crate) struct LookupRequest {
    pub(crate) kind: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) reply: oneshot::Sender<Option<String>>,
}

/// The per-call context, shared by the store and the caller.
pub(crate) struct CallContext {
    /// The plugin, as logs and errors name it.
    pub(crate) plugin: String,
    /// `Kind/namespace/name` or `hook PHASE of migration M`.
    pub(crate) subject: String,
    /// Source namespaces `lookup` may read (the migrated ones).
    pub(crate) namespaces: Arc<[String]>,
    /// Where `lookup` requests go; the caller answers them from its snapshot.
    pub(crate) lookups: mpsc::UnboundedSender<LookupRequest>,
}

pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) call: Arc<CallContext>,
    lookups_left: u32,
    log_lines: u32,
    log_bytes: usize,
    log_capped: bool,
}

impl HostState {
    /// A store's state for an instance of `plugin`. `memory_exceeded` and `stderr` are the
    /// runner's, so it can read them after the store is gone.
    pub(crate) fn new(
        plugin: &PluginRef,
        memory_exceeded: Arc<AtomicBool>,
        stderr: TailPipe,
        call: Arc<CallContext>,
    ) -> Result<Self, PluginError> {
        let wasi = wasi_ctx(plugin, stderr)?;
        let memory = usize::try_from(plugin.limits.memory).unwrap_or(usize::MAX);
        Ok(HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(memory, memory_exceeded),
            call,
            lookups_left: LOOKUPS_PER_CALL,
            log_lines: 0,
            log_bytes: 0,
            log_capped: false,
        })
    }

    /// Arms the state for the next call: its context, and fresh `lookup` and `log` budgets.
    pub(crate) fn begin_call(&mut self, call: Arc<CallContext>) {
        self.call = call;
        self.lookups_left = LOOKUPS_PER_CALL;
        self.log_lines = 0;
        self.log_bytes = 0;
        self.log_capped = false;
    }
}

/// The WASI context: everything denied unless desired.toml grants it.
///
/// wasmtime-wasi's builder already starts closed (no args, env, preopens, sockets or DNS;
/// stdin empty; stdout discarded). On top of that the clocks are frozen unless `clock` is
/// granted, so a plugin cannot make its output depend on time by accident.
fn wasi_ctx(plugin: &PluginRef, stderr: TailPipe) -> Result<WasiCtx, PluginError> {
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
            plugin: plugin.source.to_string(),
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
    exceeded: Arc<AtomicBool>,
}

impl Limiter {
    fn new(memory: usize, exceeded: Arc<AtomicBool>) -> Self {
        // A Rust wasip2 component is a handful of core instances (the program plus the WASI
        // adapter shims); the counts leave room for that and nothing like a fork bomb.
        let inner = StoreLimitsBuilder::new()
            .memory_size(memory)
            .instances(32)
            .memories(8)
            .tables(16)
            .trap_on_grow_failure(true)
            .build();
        Limiter { inner, memory, exceeded }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.exceeded.store(true, Ordering::Relaxed);
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

/// Cuts `text` to at most `max` bytes on a character boundary, saying how much was cut.
pub(crate) fn truncate_message(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!("… ({} more bytes cut)", total - cut));
    text
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        if self.log_lines >= MAX_LOG_LINES || self.log_bytes >= MAX_LOG_BYTES {
            if !self.log_capped {
                self.log_capped = true;
                tracing::warn!(
                    plugin = %self.call.plugin,
                    object = %self.call.subject,
                    "log limit reached ({MAX_LOG_LINES} messages or {} KiB per call); further messages of this call are dropped",
                    MAX_LOG_BYTES / 1024
                );
            }
            return;
        }
        self.log_lines += 1;
        let message = truncate_message(message, MAX_LOG_MESSAGE);
        self.log_bytes += message.len();
        let plugin = &self.call.plugin;
        let object = &self.call.subject;
        match level {
            types::LogLevel::Trace => tracing::trace!(%plugin, %object, "{message}"),
            types::LogLevel::Debug => tracing::debug!(%plugin, %object, "{message}"),
            types::LogLevel::Info => tracing::info!(%plugin, %object, "{message}"),
            types::LogLevel::Warn => tracing::warn!(%plugin, %object, "{message}"),
            types::LogLevel::Error => tracing::error!(%plugin, %object, "{message}"),
        }
    }

    async fn lookup(&mut self, kind: String, namespace: String, name: String) -> Option<String> {
        if !self.call.namespaces.contains(&namespace) {
            tracing::debug!(plugin = %self.call.plugin, %kind, %namespace, %name, "lookup outside the migrated namespaces denied");
            return None;
        }
        if self.lookups_left == 0 {
            tracing::warn!(plugin = %self.call.plugin, "lookup budget of {LOOKUPS_PER_CALL} per call spent");
            return None;
        }
        self.lookups_left -= 1;
        let (reply, answer) = oneshot::channel();
        self.call.lookups.send(LookupRequest { kind, namespace, name, reply }).ok()?;
        answer.await.ok().flatten()
    }
}

/// The plugin's stderr: keeps the last [`STDERR_TAIL`] bytes and accepts everything, so a
/// plugin writing megabytes neither fills host memory nor fails on a full pipe.
#[derive(Clone, Default)]
pub(crate) struct TailPipe(Arc<Mutex<VecDeque<u8>>>);

impl TailPipe {
    /// What is left of stderr, lossily decoded.
    pub(crate) fn contents(&self) -> String {
        let buf = self.0.lock().expect("stderr lock");
        let (a, b) = buf.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }

    /// Forgets what earlier calls wrote, so an error quotes only its own call's output.
    pub(crate) fn clear(&self) {
        self.0.lock().expect("stderr lock").clear();
    }

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().expect("stderr lock");
        let keep = &bytes[bytes.len().saturating_sub(STDERR_TAIL)..];
        let overflow = (buf.len() + keep.len()).saturating_sub(STDERR_TAIL);
        buf.drain(..overflow);
        buf.extend(keep);
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(TailWriter(self.clone()))
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for TailPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl Pollable for TailPipe {
    // Always ready: writes never wait.
    fn ready<'a, 'b>(&'a mut self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(std::future::ready(()))
    }
}

struct TailWriter(TailPipe);

impl tokio::io::AsyncWrite for TailWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_on_char_boundaries_and_say_how_much() {
        assert_eq!(truncate_message("short".into(), 10), "short");
        let cut = truncate_message("ééééé".into(), 5);
        assert!(cut.starts_with("éé…") && cut.ends_with("(6 more bytes cut)"), "{cut}");
    }

    #[test]
    fn stderr_keeps_only_its_tail() {
        let mut pipe = TailPipe::default();
        for _ in 0..100 {
            OutputStream::write(&mut pipe, Bytes::from(vec![b'x'; 1000])).unwrap();
        }
        OutputStream::write(&mut pipe, Bytes::from_static(b"panicked at the end")).unwrap();
        let text = pipe.contents();
        assert_eq!(text.len(), STDERR_TAIL);
        assert!(text.ends_with("panicked at the end"));
    }
}
