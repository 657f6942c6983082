//! Bindings for the `chamber` world, generated from `wit/`.

wit_bindgen::generate!({
    path: "../wit",
    world: "chamber",
});
