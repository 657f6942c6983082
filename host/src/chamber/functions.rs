//! User-defined functions inside a chamber.
//!
//! A fragment that may call a user-defined function carries its module's `InstancePre`
//! ([`FunctionModule`]); the chamber's `functions.call` import ([`call_function`])
//! instantiates the module in the chamber's own store on the first call, so the function's
//! memory counts against the same budget and the same epoch deadline stops it. Function
//! modules are linked against WASI alone (never the chamber's imports), and while one runs
//! WASI shows it an empty world ([`FunctionWorld`]): no files, no environment, no sockets, a
//! clock stopped at the Unix epoch, and at most [`FUNCTION_OUTPUT_CAPACITY`] of stdout and
//! stderr.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apiary_engine::FunctionSignature;
use wasmtime::StoreContextMut;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

use super::{ChamberState, STDERR_TAIL};
use crate::bindings::udf::{Udf, UdfPre};
use crate::{Error, Result};

/// Bytes a chamber's user-defined functions may write to stdout and stderr together; a
/// write past it fails (and Rust's `print!` then panics, which traps).
pub const FUNCTION_OUTPUT_CAPACITY: usize = 64 << 10;

/// Function modules one fragment may use: each is one more component instance and one
/// more linear memory in the chamber's store.
pub const MAX_FUNCTION_MODULES: usize = 2;

/// The name under which the chamber imports user-defined functions.
pub(super) const FUNCTIONS_IMPORT: &str = "apiary:chamber/functions@0.12.0";

/// A user-defined function module, compiled and linked, ready to instantiate in a chamber.
pub struct FunctionModule {
    pub(super) hash: String,
    pub(super) pre: UdfPre<ChamberState>,
}

impl FunctionModule {
    /// The SHA-256 of the module's bytes, in hex: its name in the lake.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

impl std::fmt::Debug for FunctionModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionModule")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// A user-defined function a fragment may call: its signature and the module running it.
#[derive(Debug, Clone)]
pub struct BoundFunction {
    /// Name, argument and return types, volatility.
    pub signature: FunctionSignature,
    /// The module that provides it.
    pub module: Arc<FunctionModule>,
}

/// The user-defined functions of one chamber: their modules, instantiated on first call,
/// and (only when there are any) the empty WASI world they see.
pub(super) struct FunctionSlots {
    by_name: HashMap<String, usize>,
    modules: Vec<(Arc<FunctionModule>, Option<Arc<Udf>>)>,
    pub(super) world: Option<FunctionWorld>,
}

/// What WASI answers while a user-defined function runs: no files, no environment, stopped
/// clocks, and stdout and stderr captured together up to [`FUNCTION_OUTPUT_CAPACITY`].
pub(super) struct FunctionWorld {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) output: MemoryOutputPipe,
    /// The function running now (or when the chamber trapped).
    pub(super) running: Option<String>,
}

impl FunctionWorld {
    fn new() -> Self {
        let output = MemoryOutputPipe::new(FUNCTION_OUTPUT_CAPACITY);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(output.clone())
            .stderr(output.clone())
            .wall_clock(StoppedClock)
            .monotonic_clock(StoppedClock);
        Self {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            output,
            running: None,
        }
    }
}

impl FunctionSlots {
    pub(super) fn new(functions: &[BoundFunction]) -> Result<Self> {
        let mut by_name = HashMap::new();
        let mut modules: Vec<(Arc<FunctionModule>, Option<Arc<Udf>>)> = Vec::new();
        for function in functions {
            let slot = match modules
                .iter()
                .position(|(m, _)| m.hash == function.module.hash)
            {
                Some(slot) => slot,
                None => {
                    modules.push((function.module.clone(), None));
                    modules.len() - 1
                }
            };
            by_name.insert(function.signature.name.clone(), slot);
        }
        if modules.len() > MAX_FUNCTION_MODULES {
            return Err(Error::Config(format!(
                "a statement may call functions from at most {MAX_FUNCTION_MODULES} modules; \
                 this one calls {} ({})",
                modules.len(),
                functions
                    .iter()
                    .map(|f| f.signature.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(Self {
            by_name,
            world: (!modules.is_empty()).then(FunctionWorld::new),
            modules,
        })
    }

    /// The slots of a store in which a module's `describe` runs, as if it were a function.
    pub(super) fn describing() -> Self {
        let mut world = FunctionWorld::new();
        world.running = Some("describe".into());
        Self {
            by_name: HashMap::new(),
            modules: Vec::new(),
            world: Some(world),
        }
    }

    /// The function running now, or when the chamber trapped.
    pub(super) fn running(&self) -> Option<&str> {
        self.world.as_ref().and_then(|w| w.running.as_deref())
    }
}

/// The clock user-defined functions see: stopped at the Unix epoch, so a function cannot
/// tell the time, measure its own speed, or answer differently from one run to the next.
struct StoppedClock;

impl HostWallClock for StoppedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// The chamber's `functions.call` import: run a user-defined function in its own instance,
/// in the chamber's store. A trap inside the function traps the chamber (the store cannot
/// be trusted after it); `running` then still names the function for the report.
pub(super) fn call_function(
    mut store: StoreContextMut<'_, ChamberState>,
    name: &str,
    args: &[u8],
) -> wasmtime::Result<std::result::Result<Vec<u8>, String>> {
    let functions = &mut store.data_mut().functions;
    let (Some(&slot), Some(world)) = (functions.by_name.get(name), functions.world.as_mut()) else {
        return Ok(Err(format!(
            "function `{name}` was not given to this fragment"
        )));
    };
    world.running = Some(name.to_owned());
    let udf = match store.data().functions.modules[slot].1.clone() {
        Some(udf) => udf,
        None => {
            let module = store.data().functions.modules[slot].0.clone();
            let udf = Arc::new(module.pre.instantiate(&mut store)?);
            store.data_mut().functions.modules[slot].1 = Some(udf.clone());
            udf
        }
    };
    let answer = udf.call_call(&mut store, name, args)?;
    if let Some(world) = store.data_mut().functions.world.as_mut() {
        world.running = None;
    }
    Ok(answer)
}

/// The end of a function's output, for a trap report; empty if it wrote nothing.
pub(super) fn output_tail(output: &MemoryOutputPipe) -> String {
    let output = output.contents();
    if output.is_empty() {
        return String::new();
    }
    let tail = &output[output.len().saturating_sub(STDERR_TAIL)..];
    format!(
        "; its output ends with: {}",
        String::from_utf8_lossy(tail).trim()
    )
}
