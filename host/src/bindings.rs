//! Host bindings for the `chamber` world, generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "chamber",
});
