//! Host-side bindings of wit/mtcd.wit, one module per world. The hook world reuses the
//! transformer's `types` and `host` interfaces, so the host implements `log`/`lookup` once.

/// The `transformer` world: `transform(object, ctx) -> outcome`.
pub mod transformer {
    wasmtime::component::bindgen!({
        world: "transformer",
        path: "../wit/mtcd.wit",
    });
}

/// The `hook` world: `run(phase, ctx) -> result<_, string>`.
pub mod hook {
    wasmtime::component::bindgen!({
        world: "hook",
        path: "../wit/mtcd.wit",
        with: {
            "mtcd:plugin/types": super::transformer::mtcd::plugin::types,
            "mtcd:plugin/host": super::transformer::mtcd::plugin::host,
        },
    });
}
