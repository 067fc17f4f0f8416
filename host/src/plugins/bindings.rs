//! Host-side bindings of wit/mtcd.wit, one module per world. The hook world reuses the
//! transformer's `types` and `host` interfaces, so the host implements `log`/`lookup` once.
//!
//! Exports are called asynchronously (wasmtime's fibers), so a call can be abandoned at its
//! deadline even while the plugin waits in a host function. `lookup` is async because the
//! caller answers it (see `runtime.rs`); `log` is synchronous and never waits.

/// The `transformer` world: `transform(object, ctx) -> outcome`.
pub mod transformer {
    wasmtime::component::bindgen!({
        world: "transformer",
        path: "../wit/mtcd.wit",
        imports: { "mtcd:plugin/host.lookup": async },
        exports: { default: async },
    });
}

/// The `hook` world: `run(phase, ctx) -> result<_, string>`.
pub mod hook {
    wasmtime::component::bindgen!({
        world: "hook",
        path: "../wit/mtcd.wit",
        exports: { default: async },
        with: {
            "mtcd:plugin/types": super::transformer::mtcd::plugin::types,
            "mtcd:plugin/host": super::transformer::mtcd::plugin::host,
        },
    });
}
