//! Host bindings for the `chamber` world and (in [`udf`]) the `udf` world, generated from
//! `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "chamber",
});

/// Bindings for the `udf` world that user-defined function modules export.
pub(crate) mod udf {
    wasmtime::component::bindgen!({
        path: "../wit/udf",
        world: "udf",
    });
}
