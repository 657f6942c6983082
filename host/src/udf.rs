//! User-defined functions: registering wasm modules and binding them to statements.
//!
//! A function module is a wasm component exporting the `apiary:udf/udf` world
//! (`wit/udf/udf.wit`). Registering one checks it (a component, of that world, whose
//! `describe` lists readable signatures), stores its bytes in the lake under their SHA-256
//! (`_functions/<hash>.wasm`) and records the chosen functions in the registry in one
//! version, so every node of the swarm can run them and a re-registration replaces the old
//! module atomically. A statement that calls a function gets it bound: the module fetched
//! from the lake and compiled once per process, then handed to each fragment's chamber
//! (see [`crate::chamber`] for the walls it runs within).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use apiary_engine::FunctionSignature;
use bytes::Bytes;
use datafusion::prelude::SessionContext;
use sha2::{Digest, Sha256};

use crate::chamber::{BoundFunction, ChamberEngine};
use crate::lake::{FunctionEntry, Lake, RegistryState};
use crate::{Error, Result};

/// Where function modules live in the lake: `_functions/<sha256>.wasm`.
pub(crate) const FUNCTIONS_PREFIX: &str = "_functions/";

/// Largest module accepted, in bytes.
pub const MAX_MODULE_BYTES: usize = 64 << 20;

/// The SHA-256 of a module's bytes, in hex.
pub(crate) fn module_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The lake key of the module with hash `hash`.
pub(crate) fn module_key(hash: &str) -> String {
    format!("{FUNCTIONS_PREFIX}{hash}.wasm")
}

/// Refuse what is plainly not a component, before compiling anything.
pub(crate) fn check_component(bytes: &[u8]) -> Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    const COMPONENT: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
    const MODULE: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(Error::Function(format!(
            "the module is {} bytes, more than the {MAX_MODULE_BYTES} a function module may have",
            bytes.len()
        )));
    }
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(Error::Function(
            "the file is not WebAssembly: build the module for wasm32-wasip2 \
             (`cargo build --release --target wasm32-wasip2`)"
                .into(),
        ));
    }
    match <[u8; 4]>::try_from(&bytes[4..8]) {
        Ok(COMPONENT) => Ok(()),
        Ok(MODULE) => Err(Error::Function(
            "the file is a core WebAssembly module, not a component: build it for \
             wasm32-wasip2, or wrap it with `wasm-tools component new`"
                .into(),
        )),
        _ => Err(Error::Function(
            "the file is WebAssembly of an unknown version or layer".into(),
        )),
    }
}

/// Whether `name` is a usable function name: lower-case letters, digits and `_`, not
/// starting with a digit, and not the name of a built-in function.
fn check_name(name: &str) -> Result<()> {
    let well_formed = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Err(Error::Function(format!(
            "`{name}` is not a function name: use lower-case letters, digits and `_`"
        )));
    }
    let state = SessionContext::new().state();
    if state.scalar_functions().contains_key(name)
        || state.aggregate_functions().contains_key(name)
        || state.window_functions().contains_key(name)
    {
        return Err(Error::Function(format!(
            "`{name}` is a built-in function; give yours another name"
        )));
    }
    Ok(())
}

/// What registering a module did to one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The function's signature.
    pub signature: FunctionSignature,
    /// Whether it replaced a function of the same name.
    pub replaced: bool,
}

/// Register the module at `path`: all the functions it describes, or only `names`.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Function`] when it is not a
/// function module, its signatures cannot be read, or a name in `names` is not among its
/// functions; [`Error::Storage`] when the lake refuses the module or the registry change.
pub async fn register_module(
    lake: &Lake,
    engine: &ChamberEngine,
    path: &Path,
    names: &[String],
) -> Result<Vec<Registered>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let in_file = |e: Error| match e {
        Error::Function(message) => Error::Function(format!("{}: {message}", path.display())),
        other => other,
    };
    let module = engine.function_module(&bytes).map_err(in_file)?;
    let described = engine.describe_functions(&module).map_err(in_file)?;
    if described.is_empty() {
        return Err(in_file(Error::Function(
            "the module describes no functions".into(),
        )));
    }
    let mut seen = BTreeSet::new();
    for function in &described {
        check_name(&function.name).map_err(in_file)?;
        if !seen.insert(function.name.as_str()) {
            return Err(in_file(Error::Function(format!(
                "the module describes `{}` twice",
                function.name
            ))));
        }
    }
    let chosen: Vec<FunctionSignature> = if names.is_empty() {
        described
    } else {
        names
            .iter()
            .map(|name| {
                let name = name.to_ascii_lowercase();
                described
                    .iter()
                    .find(|f| f.name == name)
                    .cloned()
                    .ok_or_else(|| {
                        in_file(Error::Function(format!(
                            "the module has no function `{name}`; it has {}",
                            described
                                .iter()
                                .map(|f| format!("`{}`", f.name))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )))
                    })
            })
            .collect::<Result<_>>()?
    };
    // The module first, then the registry: a registry entry never names missing bytes.
    let hash = lake.put_function_module(Bytes::from(bytes)).await?;
    let existing = lake.registry().await?.functions;
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    lake.put_functions(
        chosen
            .iter()
            .map(|f| {
                (
                    f.name.clone(),
                    FunctionEntry {
                        module: hash.clone(),
                        args: f.arg_names(),
                        returns: f.returns.to_string(),
                        volatility: f.volatility_name().to_owned(),
                        file: file.clone(),
                    },
                )
            })
            .collect(),
    )
    .await?;
    Ok(chosen
        .into_iter()
        .map(|signature| Registered {
            replaced: existing.contains_key(&signature.name),
            signature,
        })
        .collect())
}

/// The signatures of every registered function.
///
/// # Errors
/// [`Error::Corrupt`] when a registry entry cannot be read.
pub(crate) fn signatures(registry: &RegistryState) -> Result<Vec<FunctionSignature>> {
    registry
        .functions
        .iter()
        .map(|(name, f)| signature(name, f))
        .collect()
}

fn signature(name: &str, entry: &FunctionEntry) -> Result<FunctionSignature> {
    FunctionSignature::parse(name, &entry.args, &entry.returns, &entry.volatility)
        .map_err(|e| Error::Corrupt(format!("registry entry of function `{name}`: {e}")))
}

/// Bind the registered functions `names` for a statement: fetch and compile each module
/// this process has not loaded yet.
///
/// # Errors
/// [`Error::NotFound`] for an unregistered name or a missing module; [`Error::Function`]
/// when a stored module no longer loads.
pub async fn bind(
    lake: &Lake,
    engine: &ChamberEngine,
    functions: &BTreeMap<String, FunctionEntry>,
    names: &BTreeSet<String>,
) -> Result<Vec<BoundFunction>> {
    let mut bound = Vec::with_capacity(names.len());
    for name in names {
        let entry = functions
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("function `{name}` does not exist")))?;
        let module = match engine.cached_function_module(&entry.module) {
            Some(module) => module,
            None => {
                let bytes = lake.function_module(&entry.module).await?;
                engine.function_module(&bytes)?
            }
        };
        bound.push(BoundFunction {
            signature: signature(name, entry)?,
            module: Arc::clone(&module),
        });
    }
    Ok(bound)
}
