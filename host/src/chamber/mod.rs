//! Sealed chambers: one fragment, one fresh wasmtime instance, hard limits.
//!
//! [`ChamberEngine`] is built once per process: one `wasmtime::Engine` with the pooling
//! allocator and epoch interruption, the guest component loaded from the on-disk cache, and
//! an `InstancePre` with every import resolved. [`ChamberEngine::run`] then gives each task a
//! new `Store` and instance (cheap: pooled slots and copy-on-write memory images), so no state
//! leaks from one task to the next. Three walls surround the guest:
//!
//! - memory: the store's limiter refuses linear-memory growth past the bee's budget;
//! - time: a ticker thread advances the engine's epoch every [`TICK`]; the store traps once
//!   the task's deadline in ticks has passed, even inside a tight loop;
//! - filesystem: WASI sees exactly one preopened directory, the bee's scratch dir, mounted
//!   at `/scratch`. No environment, no arguments, no sockets; stdout is discarded and stderr
//!   is kept (up to [`STDERR_CAPACITY`]) for trap reports.
//!
//! User-defined functions run inside the same walls, in the chamber's own store (see
//! [`functions`]).
//!
//! The fragments of a split statement share a [`MergeHere`]: each leaves its partial result
//! there when it has emitted it, and the one that finishes last merges them all in its own
//! chamber, with the plan it holds already, instead of a fresh chamber planning the
//! statement once more. The merge counts against that chamber's budget and deadline.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use apiary_engine::arrow::datatypes::SchemaRef;
use apiary_engine::arrow::record_batch::RecordBatch;
use apiary_engine::{
    ByteSource, CellId, FunctionSignature, MergeKind, Stage, TableCells, decode_ipc_chunks,
    encode_schema,
};
use bytes::Bytes;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreContextMut,
    Trap,
};
use wasmtime_wasi::p2::pipe::{MemoryOutputPipe, SinkOutputStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::ChamberPre;
use crate::bindings::apiary::chamber::{cells, sink, types};
use crate::bindings::udf::UdfPre;
use crate::guest::GuestArtifact;
use crate::limits::BudgetLimiter;
use crate::{Error, GuestErrorKind, Result};

mod functions;

pub use functions::{
    BoundFunction, FUNCTION_OUTPUT_CAPACITY, FunctionModule, MAX_FUNCTION_MODULES,
};
use functions::{FUNCTIONS_IMPORT, FunctionSlots, call_function, output_tail};

/// How often the epoch advances: the resolution of chamber deadlines.
pub const TICK: Duration = Duration::from_millis(10);

/// Bytes of guest stderr kept for diagnostics; writing more traps the chamber.
pub const STDERR_CAPACITY: usize = 64 << 10;

/// Bytes of guest stderr quoted in a trap report.
const STDERR_TAIL: usize = 2048;

/// The budget and deadline of the chamber that asks a module to describe itself.
const DESCRIBE_BUDGET: u64 = 64 << 20;
const DESCRIBE_DEADLINE: Duration = Duration::from_secs(5);

/// Where the bee's scratch directory appears inside the chamber.
const SCRATCH_MOUNT: &str = "/scratch";

/// Share of the bee's budget given to DataFusion's memory pool. The rest holds the guest's
/// code data, stacks, allocator slack and the batches in flight, so operators spill or fail
/// cleanly before the hard wall.
const POOL_SHARE: (u64, u64) = (5, 8);

/// One SQL fragment for a chamber: SQL over tables of cells served by `source`.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// The SQL to run.
    pub sql: String,
    /// The tables the SQL may use, as cell handles of `source`.
    pub tables: Vec<TableCells>,
    /// Where the cells' bytes come from.
    pub source: Arc<dyn ByteSource>,
    /// Hive and box that unqualified names resolve in.
    pub default_namespace: (String, String),
    /// Which part of the statement to run.
    pub stage: Stage,
    /// How errors name this fragment: `the fragment`, `fragment 3 of 8`, `the merge`.
    pub label: String,
    /// The user-defined functions the SQL may call.
    pub functions: Vec<BoundFunction>,
    /// For a partial or keyed fragment: where it leaves its partial result, and its
    /// place among the statement's fragments. The last to finish merges them all.
    pub merge_here: Option<(Arc<MergeHere>, usize)>,
}

/// The partial results of one split statement, gathered as its fragments finish: the
/// fragment that finishes last takes them all and merges them in its own chamber.
#[derive(Debug)]
pub struct MergeHere {
    streams: Mutex<Vec<Option<Bytes>>>,
}

impl MergeHere {
    /// A gathering for `fragments` fragments.
    pub fn new(fragments: usize) -> Arc<Self> {
        Arc::new(Self {
            streams: Mutex::new(vec![None; fragments]),
        })
    }

    /// Leave fragment `index`'s partial result (an Arrow IPC stream). The fragment that
    /// leaves the last one gets them all, in fragment order; the others get `None`.
    fn arrive(&self, index: usize, stream: Bytes) -> Option<Vec<Bytes>> {
        let mut streams = self.streams.lock().ok()?;
        *streams.get_mut(index)? = Some(stream);
        streams.iter().cloned().collect()
    }
}

impl Fragment {
    /// A fragment over `tables` resolving unqualified names in `default.default`.
    pub fn new(
        sql: impl Into<String>,
        tables: Vec<TableCells>,
        source: Arc<dyn ByteSource>,
    ) -> Self {
        Self {
            sql: sql.into(),
            tables,
            source,
            default_namespace: apiary_engine::default_namespace(),
            stage: Stage::Whole,
            label: "the fragment".to_owned(),
            functions: Vec::new(),
            merge_here: None,
        }
    }

    /// The same fragment, able to call `functions`.
    #[must_use]
    pub fn with_functions(mut self, functions: Vec<BoundFunction>) -> Self {
        self.functions = functions;
        self
    }
}

/// What one chamber run measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChamberStats {
    /// The bee that ran the fragment.
    pub bee: usize,
    /// Rows returned.
    pub rows: u64,
    /// Bytes of cells that crossed into the chamber.
    pub bytes_read: u64,
    /// Read calls the chamber made.
    pub read_calls: u64,
    /// Time the host spent serving those reads (cache or storage), part of `elapsed`.
    pub read_time: Duration,
    /// Peak linear memory of the chamber.
    pub peak_memory: u64,
    /// The bee's budget.
    pub budget: u64,
    /// Peak reservation in DataFusion's memory pool.
    pub pool_peak: u64,
    /// Wall time from instantiation to the last result chunk.
    pub elapsed: Duration,
    /// For a partial fragment, how the chamber cut the statement.
    pub merge: Option<MergeKind>,
    /// The hash joins did not fit the pool, and the fragment ran again with sort-merge
    /// joins, which spill.
    pub sort_merge_joins: bool,
    /// The part of `elapsed` the chamber spent planning the statement before running it
    /// (zero for a merge, which runs a plan it holds).
    pub planning: Duration,
}

/// A fragment's answer and what it cost.
#[derive(Debug, Clone)]
pub struct FragmentOutput {
    /// The result schema (absent only if the guest produced no output at all, or the
    /// fragment left its partial result in a [`MergeHere`] and another one merged).
    pub schema: Option<SchemaRef>,
    /// The result batches, in order: the merged answer when this fragment merged.
    pub batches: Vec<RecordBatch>,
    /// Measurements of the run, up to its merge if it merged.
    pub stats: ChamberStats,
    /// When this fragment merged every fragment's partial result in its chamber: what the
    /// merge measured, and the bytes of partial results it read.
    pub merged: Option<(ChamberStats, u64)>,
}

/// The per-task state a chamber's store holds.
struct ChamberState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: BudgetLimiter,
    source: Arc<dyn ByteSource>,
    max_read: u64,
    bytes_read: u64,
    read_calls: u64,
    read_time: Duration,
    chunks: Vec<Vec<u8>>,
    functions: FunctionSlots,
    /// Where a partial fragment leaves its result, its index, and the first handle after
    /// its cells (where partial results go when it merges).
    merge_here: Option<(Arc<MergeHere>, usize, CellId)>,
    /// Set when the fragment starts merging.
    merge_started: Option<MergeStart>,
}

/// Where a fragment that merges stood when its merge started: what it had read by then
/// is its own, the rest the merge's.
struct MergeStart {
    at: Instant,
    bytes_read: u64,
    read_calls: u64,
    read_time: Duration,
    /// Bytes of the partial results it merges.
    input_bytes: u64,
}

impl ChamberState {
    /// A store's state before the chamber runs: `wasi` is its world, `limiter` its memory
    /// wall, `source` its cells (reads of at most `max_read` bytes each).
    fn new(
        wasi: WasiCtx,
        limiter: BudgetLimiter,
        source: Arc<dyn ByteSource>,
        max_read: u64,
        functions: FunctionSlots,
    ) -> Self {
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter,
            source,
            max_read,
            bytes_read: 0,
            read_calls: 0,
            read_time: Duration::ZERO,
            chunks: Vec::new(),
            functions,
            merge_here: None,
            merge_started: None,
        }
    }
}

impl WasiView for ChamberState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // A user-defined function runs while the chamber waits in `functions.call`: only
        // then does WASI answer from the function's empty world.
        match &mut self.functions.world {
            Some(world) if world.running.is_some() => WasiCtxView {
                ctx: &mut world.wasi,
                table: &mut world.table,
            },
            _ => WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            },
        }
    }
}

impl types::Host for ChamberState {}

impl cells::Host for ChamberState {
    fn size(&mut self, cell: u32) -> std::result::Result<u64, String> {
        self.source.size(cell)
    }

    fn read(&mut self, cell: u32, offset: u64, len: u64) -> std::result::Result<Vec<u8>, String> {
        // A guest decides `len`; never let it make the host allocate past its own budget.
        if len > self.max_read {
            return Err(format!(
                "a read of {len} bytes is larger than the bee's budget of {} bytes",
                self.max_read
            ));
        }
        let end = offset
            .checked_add(len)
            .ok_or_else(|| format!("range {offset}+{len} overflows"))?;
        let started = std::time::Instant::now();
        let bytes = self.source.read(cell, offset..end)?;
        self.read_time += started.elapsed();
        self.bytes_read += bytes.len() as u64;
        self.read_calls += 1;
        Ok(Vec::from(bytes))
    }
}

impl sink::Host for ChamberState {
    fn emit(&mut self, chunk: Vec<u8>) -> std::result::Result<(), String> {
        self.chunks.push(chunk);
        Ok(())
    }

    fn partial_done(&mut self) -> Option<Vec<types::Cell>> {
        let (here, index, first) = self.merge_here.take()?;
        let stream = Bytes::from(std::mem::take(&mut self.chunks).concat());
        let streams = here.arrive(index, stream)?;
        let inputs = streams
            .iter()
            .enumerate()
            .map(|(i, s)| types::Cell {
                id: first + i as CellId,
                size: s.len() as u64,
                slice: None,
            })
            .collect();
        let input_bytes = streams.iter().map(|s| s.len() as u64).sum();
        self.merge_started = Some(MergeStart {
            at: Instant::now(),
            bytes_read: self.bytes_read,
            read_calls: self.read_calls,
            read_time: self.read_time,
            input_bytes,
        });
        self.source = Arc::new(PartialResults {
            first,
            streams,
            cells: Some(self.source.clone()),
        });
        Some(inputs)
    }
}

/// Partial results held by the host, served to a merge as whole streams under the handles
/// from `first` on; handles below are the cells of `cells`, for a merge that reads frames.
#[derive(Debug)]
pub(crate) struct PartialResults {
    pub(crate) first: CellId,
    pub(crate) streams: Vec<Bytes>,
    pub(crate) cells: Option<Arc<dyn ByteSource>>,
}

impl PartialResults {
    fn stream(&self, cell: CellId) -> std::result::Result<&Bytes, String> {
        cell.checked_sub(self.first)
            .and_then(|i| self.streams.get(i as usize))
            .ok_or_else(|| format!("no partial result {cell}"))
    }
}

impl ByteSource for PartialResults {
    fn size(&self, cell: CellId) -> std::result::Result<u64, String> {
        match &self.cells {
            Some(cells) if cell < self.first => cells.size(cell),
            _ => self.stream(cell).map(|b| b.len() as u64),
        }
    }

    fn read(
        &self,
        cell: CellId,
        range: std::ops::Range<u64>,
    ) -> std::result::Result<Bytes, String> {
        if let Some(cells) = &self.cells
            && cell < self.first
        {
            return cells.read(cell, range);
        }
        let bytes = self.stream(cell)?;
        let end = usize::try_from(range.end)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let start = usize::try_from(range.start).unwrap_or(usize::MAX).min(end);
        Ok(bytes.slice(start..end))
    }
}

/// Advances an engine's epoch every [`TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("apiary-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The process-wide chamber factory: engine, compiled guest and pre-linked instance.
pub struct ChamberEngine {
    engine: Engine,
    pre: ChamberPre<ChamberState>,
    function_linker: Linker<ChamberState>,
    modules: Mutex<HashMap<String, Arc<FunctionModule>>>,
    cache_dir: std::path::PathBuf,
    max_budget: u64,
    compiled_now: bool,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for ChamberEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChamberEngine")
            .field("max_budget", &self.max_budget)
            .finish_non_exhaustive()
    }
}

impl ChamberEngine {
    /// Build the engine for up to `max_chambers` concurrent chambers of at most `max_budget`
    /// bytes each, loading the guest at `guest` (compiled once into `cache_dir`).
    ///
    /// # Errors
    /// [`Error::Guest`] if the guest is missing, invalid or does not match the host's WIT;
    /// [`Error::Config`] if the limits cannot be met.
    pub fn new(guest: &Path, cache_dir: &Path, max_budget: u64, max_chambers: u32) -> Result<Self> {
        let engine = build_engine(max_budget, max_chambers)?;
        let artifact = GuestArtifact::load(&engine, guest, cache_dir)?;
        let mut linker: Linker<ChamberState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| Error::Guest(format!("linking WASI: {e:#}")))?;
        let link = |e: wasmtime::Error| Error::Guest(format!("linking the chamber imports: {e:#}"));
        cells::add_to_linker::<ChamberState, HasSelf<ChamberState>>(&mut linker, |s| s)
            .map_err(link)?;
        sink::add_to_linker::<ChamberState, HasSelf<ChamberState>>(&mut linker, |s| s)
            .map_err(link)?;
        linker
            .instance(FUNCTIONS_IMPORT)
            .and_then(|mut functions| {
                functions.func_wrap(
                    "call",
                    |store: StoreContextMut<'_, ChamberState>, (name, args): (String, Vec<u8>)| {
                        call_function(store, &name, &args).map(|answer| (answer,))
                    },
                )
            })
            .map_err(link)?;
        // Function modules get WASI and nothing else: not the chamber's cells, sink or
        // functions.
        let mut function_linker: Linker<ChamberState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut function_linker)
            .map_err(|e| Error::Guest(format!("linking WASI for functions: {e:#}")))?;
        let pre = linker
            .instantiate_pre(&artifact.component)
            .and_then(ChamberPre::new)
            .map_err(|e| {
                Error::Guest(format!(
                    "{} does not fit this host's chamber contract: {e:#}",
                    guest.display()
                ))
            })?;
        Ok(Self {
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            pre,
            function_linker,
            modules: Mutex::new(HashMap::new()),
            cache_dir: cache_dir.to_owned(),
            max_budget,
            compiled_now: artifact.compiled,
        })
    }

    /// Whether building this engine had to run Cranelift (the cache was cold).
    pub fn compiled_guest(&self) -> bool {
        self.compiled_now
    }

    /// The largest budget a chamber of this engine can have.
    pub fn max_budget(&self) -> u64 {
        self.max_budget
    }

    /// The function module `bytes`, compiled (once per process, and cached on disk like the
    /// guest) and linked.
    ///
    /// # Errors
    /// [`Error::Function`] when the bytes are not a component, or not one of the `udf`
    /// world (another world's exports, or imports beyond WASI).
    pub fn function_module(&self, bytes: &[u8]) -> Result<Arc<FunctionModule>> {
        let hash = crate::udf::module_hash(bytes);
        if let Some(module) = self.cached_function_module(&hash) {
            return Ok(module);
        }
        crate::udf::check_component(bytes)?;
        let not_udf = |e: wasmtime::Error| {
            Error::Function(format!(
                "the module is not a function module of this Apiary (world \
                 `apiary:udf/udf@0.1.0`, see wit/udf/udf.wit): {e:#}"
            ))
        };
        let artifact =
            GuestArtifact::from_bytes(&self.engine, bytes, "function module", &self.cache_dir)
                .map_err(|e| match e {
                    Error::Guest(message) => Error::Function(message),
                    other => other,
                })?;
        let pre = self
            .function_linker
            .instantiate_pre(&artifact.component)
            .map_err(not_udf)?;
        let pre = UdfPre::new(pre).map_err(not_udf)?;
        let module = Arc::new(FunctionModule {
            hash: hash.clone(),
            pre,
        });
        if let Ok(mut modules) = self.modules.lock() {
            modules.insert(hash, module.clone());
        }
        Ok(module)
    }

    /// The function module whose bytes hash to `hash`, if this process has loaded it.
    pub fn cached_function_module(&self, hash: &str) -> Option<Arc<FunctionModule>> {
        self.modules.lock().ok()?.get(hash).cloned()
    }

    /// Ask `module` which functions it provides, in a chamber of its own (a 64 MiB budget,
    /// a 5 s deadline, the functions' empty WASI world).
    ///
    /// # Errors
    /// [`Error::Function`] when `describe` traps, runs out of memory or time, or lists a
    /// signature that cannot be read.
    pub fn describe_functions(
        &self,
        module: &Arc<FunctionModule>,
    ) -> Result<Vec<FunctionSignature>> {
        let budget = DESCRIBE_BUDGET.min(self.max_budget);
        let state = ChamberState::new(
            WasiCtxBuilder::new().build(),
            BudgetLimiter::new(budget),
            Arc::new(NoCells),
            0,
            FunctionSlots::describing(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(deadline_ticks(DESCRIBE_DEADLINE));
        store.epoch_deadline_trap();
        let described = module
            .pre
            .instantiate(&mut store)
            .and_then(|udf| udf.call_describe(&mut store));
        let described = match described {
            Ok(described) => described,
            Err(trap) => {
                let state = store.into_data();
                let cause = if state.limiter.refused().is_some() {
                    format!("it needed more than {budget} bytes of memory")
                } else if trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    format!("it ran past {DESCRIBE_DEADLINE:?}")
                } else {
                    format!(
                        "it trapped: {}{}",
                        trap.root_cause(),
                        state
                            .functions
                            .world
                            .as_ref()
                            .map_or_else(String::new, |w| output_tail(&w.output))
                    )
                };
                return Err(Error::Function(format!(
                    "describing its functions failed: {cause}"
                )));
            }
        };
        described
            .into_iter()
            .map(|f| {
                let volatility = match f.volatility {
                    crate::bindings::udf::apiary::udf::types::Volatility::Immutable => "immutable",
                    crate::bindings::udf::apiary::udf::types::Volatility::Stable => "stable",
                    crate::bindings::udf::apiary::udf::types::Volatility::Volatile => "volatile",
                };
                FunctionSignature::parse(&f.name, &f.args, &f.returns, volatility)
                    .map_err(|e| Error::Function(e.to_string()))
            })
            .collect()
    }

    /// Run `fragment` in a fresh chamber for `bee`, with a hard `budget` of linear memory,
    /// a `deadline`, and `scratch` (an existing, empty directory) as its only filesystem.
    /// `memory_gauge`, when given, follows the chamber's linear memory as it grows.
    ///
    /// # Errors
    /// [`Error::MemoryExceeded`], [`Error::Timeout`], [`Error::GuestError`] or
    /// [`Error::Trap`] for what happened inside; [`Error::Guest`] if instantiation failed.
    pub fn run(
        &self,
        bee: usize,
        budget: u64,
        deadline: Duration,
        scratch: &Path,
        fragment: &Fragment,
        memory_gauge: Option<Arc<AtomicU64>>,
    ) -> Result<FragmentOutput> {
        if budget > self.max_budget {
            return Err(Error::Config(format!(
                "a budget of {budget} bytes is above this engine's maximum of {}",
                self.max_budget
            )));
        }
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(SinkOutputStream).stderr(stderr.clone());
        wasi.preopened_dir(scratch, SCRATCH_MOUNT, FsPerms::ReadWrite)
            .map_err(|e| Error::Guest(format!("scratch dir {}: {e:#}", scratch.display())))?;
        let mut state = ChamberState::new(
            wasi.build(),
            BudgetLimiter::new(budget).with_gauge(memory_gauge),
            fragment.source.clone(),
            budget,
            FunctionSlots::new(&fragment.functions)?,
        );
        state.merge_here = fragment.merge_here.as_ref().map(|(here, index)| {
            let first = fragment
                .tables
                .iter()
                .flat_map(|t| t.cells.iter().map(|c| c.id + 1))
                .max()
                .unwrap_or(0);
            (here.clone(), *index, first)
        });
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(deadline_ticks(deadline));
        store.epoch_deadline_trap();

        let task = types::Task {
            sql: fragment.sql.clone(),
            tables: fragment
                .tables
                .iter()
                .map(|t| {
                    Ok(types::Table {
                        name: t.name.clone(),
                        schema: match &t.schema {
                            Some(schema) => encode_schema(schema).map_err(|e| {
                                Error::Internal(format!("encoding the schema of `{}`: {e}", t.name))
                            })?,
                            None => Vec::new(),
                        },
                        cells: t
                            .cells
                            .iter()
                            .map(|c| types::Cell {
                                id: c.id,
                                size: c.size,
                                slice: c.slice.map(|s| types::RowSlice {
                                    start: s.start,
                                    end: s.end,
                                    rows: s.rows,
                                }),
                            })
                            .collect(),
                    })
                })
                .collect::<Result<_>>()?,
            memory_pool_bytes: budget / POOL_SHARE.1 * POOL_SHARE.0,
            batch_size: 8192,
            scratch_dir: SCRATCH_MOUNT.to_owned(),
            default_hive: fragment.default_namespace.0.clone(),
            default_box: fragment.default_namespace.1.clone(),
            stage: match &fragment.stage {
                Stage::Whole => types::Stage::Whole,
                Stage::Partial { split } => types::Stage::Partial(split.clone()),
                Stage::Keyed(range) => types::Stage::Keyed(types::KeyRange {
                    columns: range
                        .columns
                        .iter()
                        .map(|k| types::KeyColumn {
                            table: k.table.clone(),
                            column: k.column.clone(),
                        })
                        .collect(),
                    low: range.low,
                    high: range.high,
                }),
                Stage::Merge { inputs } => types::Stage::Merge(
                    inputs
                        .iter()
                        .map(|c| types::Cell {
                            id: c.id,
                            size: c.size,
                            slice: None,
                        })
                        .collect(),
                ),
            },
            functions: fragment
                .functions
                .iter()
                .map(|f| types::Function {
                    name: f.signature.name.clone(),
                    args: f.signature.arg_names(),
                    returns: f.signature.returns.to_string(),
                    volatility: f.signature.volatility_name().to_owned(),
                })
                .collect(),
        };

        let started = Instant::now();
        let outcome = self
            .pre
            .instantiate(&mut store)
            .and_then(|chamber| chamber.call_execute(&mut store, &task));
        let elapsed = started.elapsed();
        let state = store.into_data();
        let peak = state.limiter.peak();
        let label = match state.merge_started {
            Some(_) => format!("the merge, in the chamber of {}", fragment.label),
            None => fragment.label.clone(),
        };
        let memory_exceeded = |requested: u64, reason: String| Error::MemoryExceeded {
            bee,
            fragment: label.clone(),
            budget,
            requested,
            peak,
            reason,
        };

        let summary = match outcome {
            Ok(Ok(summary)) => summary,
            Ok(Err(types::ChamberError::ResourcesExhausted(message))) => {
                return Err(memory_exceeded(task.memory_pool_bytes, message));
            }
            Ok(Err(err)) => {
                let (kind, message) = match err {
                    types::ChamberError::Sql(m) => (GuestErrorKind::Sql, m),
                    types::ChamberError::Io(m) => (GuestErrorKind::Io, m),
                    types::ChamberError::Internal(m)
                    | types::ChamberError::ResourcesExhausted(m) => (GuestErrorKind::Internal, m),
                };
                return Err(Error::GuestError { bee, kind, message });
            }
            Err(trap) => {
                // A trap inside a user-defined function names it.
                let function = state.functions.running();
                let in_function =
                    function.map_or_else(String::new, |f| format!(" in function `{f}`"));
                if let Some(requested) = state.limiter.refused() {
                    return Err(memory_exceeded(
                        requested,
                        format!("linear memory growth refused at the bee's budget{in_function}"),
                    ));
                }
                if trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    return Err(Error::Timeout {
                        bee,
                        fragment: format!("{label}{in_function}"),
                        limit: deadline,
                    });
                }
                if let (Some(function), Some(world)) = (function, &state.functions.world) {
                    // The trap itself, without the chamber's wasm backtrace.
                    let cause = trap.root_cause();
                    let output = &world.output;
                    let message = if output.contents().len() >= FUNCTION_OUTPUT_CAPACITY {
                        format!(
                            "it wrote more than {} KiB to stdout and stderr ({cause})",
                            FUNCTION_OUTPUT_CAPACITY >> 10
                        )
                    } else {
                        format!("{cause}{}", output_tail(output))
                    };
                    return Err(Error::FunctionTrap {
                        bee,
                        function: function.to_owned(),
                        message,
                    });
                }
                let mut message = format!("{trap:#}");
                let stderr = stderr.contents();
                if !stderr.is_empty() {
                    // The end of stderr holds the panic message, if there is one.
                    let tail = &stderr[stderr.len().saturating_sub(STDERR_TAIL)..];
                    message.push_str("; guest stderr ends with: ");
                    message.push_str(String::from_utf8_lossy(tail).trim());
                }
                return Err(Error::Trap { bee, message });
            }
        };

        let (schema, batches) = if state.chunks.is_empty() && fragment.merge_here.is_some() {
            // The partial result went to the merge.
            (None, Vec::new())
        } else {
            decode_ipc_chunks(state.chunks).map_err(|e| Error::GuestError {
                bee,
                kind: GuestErrorKind::Io,
                message: format!("the chamber's result stream is malformed: {e}"),
            })?
        };
        // A fragment that merged: what came before the merge is the fragment's, the rest
        // the merge's.
        let (fragment_reads, merged) = match state.merge_started {
            Some(MergeStart {
                at,
                bytes_read,
                read_calls,
                read_time,
                input_bytes,
            }) => (
                (
                    bytes_read,
                    read_calls,
                    read_time,
                    at.duration_since(started),
                ),
                Some((
                    ChamberStats {
                        bee,
                        rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
                        bytes_read: state.bytes_read - bytes_read,
                        read_calls: state.read_calls - read_calls,
                        read_time: state.read_time.saturating_sub(read_time),
                        peak_memory: peak,
                        budget,
                        pool_peak: summary.pool_peak_bytes,
                        elapsed: elapsed.saturating_sub(at.duration_since(started)),
                        merge: None,
                        sort_merge_joins: false,
                        planning: Duration::ZERO,
                    },
                    input_bytes,
                )),
            ),
            None => (
                (state.bytes_read, state.read_calls, state.read_time, elapsed),
                None,
            ),
        };
        let (bytes_read, read_calls, read_time, elapsed) = fragment_reads;
        Ok(FragmentOutput {
            schema,
            batches,
            merged,
            stats: ChamberStats {
                bee,
                rows: summary.rows,
                bytes_read,
                read_calls,
                read_time,
                peak_memory: peak,
                budget,
                pool_peak: summary.pool_peak_bytes,
                elapsed,
                merge: summary.merge.map(|kind| match kind {
                    types::MergeKind::Concatenate => MergeKind::Concatenate,
                    types::MergeKind::FinalAggregate => MergeKind::FinalAggregate,
                    types::MergeKind::TopK => MergeKind::TopK,
                    types::MergeKind::Sort => MergeKind::Sort,
                }),
                sort_merge_joins: summary.sort_merge_joins,
                planning: Duration::from_micros(summary.planning_micros),
            },
        })
    }
}

/// Epoch ticks until `deadline` (one more, so a deadline is never cut short).
fn deadline_ticks(deadline: Duration) -> u64 {
    deadline.as_millis().div_ceil(TICK.as_millis()).max(1) as u64 + 1
}

/// The cells of a chamber that reads none.
#[derive(Debug)]
struct NoCells;

impl ByteSource for NoCells {
    fn size(&self, cell: apiary_engine::CellId) -> std::result::Result<u64, String> {
        Err(format!("no cell {cell} here"))
    }

    fn read(
        &self,
        cell: apiary_engine::CellId,
        _range: std::ops::Range<u64>,
    ) -> std::result::Result<bytes::Bytes, String> {
        Err(format!("no cell {cell} here"))
    }
}

/// The most bytes of a chamber slot's memory, and of its tables, kept mapped (and zeroed)
/// after a chamber ends. Each slot keeps at most this much resident while idle.
const KEEP_RESIDENT: usize = 16 << 20;

/// Never keep more than this fraction of a bee's budget resident per slot: a pool holds two
/// slots per chamber, and on a small board (4 bees x 128 MiB) all of them together keep
/// 32 MiB, where an eighth of the budget made it 128 MiB of the board's peak.
const KEEP_RESIDENT_SHARE_OF_BUDGET: usize = 32;

/// One wasmtime engine for all chambers of the process.
fn build_engine(max_budget: u64, max_chambers: u32) -> Result<Engine> {
    const PAGE: u64 = 64 << 10;
    let max_memory = usize::try_from(max_budget.div_ceil(PAGE) * PAGE)
        .map_err(|_| Error::Config(format!("budget {max_budget} does not fit this platform")))?;
    // Every chamber is one component instance holding a handful of core instances (the
    // guest module and its adapter shims), one memory and a few tables. Leave room for
    // twice the chambers so a slot being torn down never blocks the next task.
    // Each user-defined function module a chamber calls is one more component instance with
    // its own memory, tables and core instances.
    let slots = max_chambers.max(1) * 2;
    let modules = slots * MAX_FUNCTION_MODULES as u32;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots + modules)
        .total_core_instances(slots * 16 + modules * 16)
        .total_memories(slots * 2 + modules * 2)
        .total_tables(slots * 8 + modules * 8)
        .total_stacks(slots)
        .max_core_instances_per_component(16)
        .max_memories_per_component(2)
        .max_tables_per_component(8)
        .max_memory_size(max_memory)
        .table_elements(1 << 18)
        .max_component_instance_size(4 << 20)
        .max_core_instance_size(16 << 20);
    // A slot's first pages stay mapped between chambers, zeroed in place rather than
    // handed back to the kernel: the next chamber in the slot starts without page faults
    // on the memory every statement touches (its stack, planning, the first batches).
    let keep_resident = KEEP_RESIDENT.min(max_memory / KEEP_RESIDENT_SHARE_OF_BUDGET);
    pool.linear_memory_keep_resident(keep_resident)
        .table_keep_resident(keep_resident);

    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(8 << 20)
        // wasmtime-wasi turns on wasmtime's async support, which requires the async stack
        // to be larger than the wasm stack even though chambers run synchronously.
        .async_stack_size(16 << 20)
        .wasm_simd(true)
        .wasm_wide_arithmetic(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| Error::Config(format!("wasmtime engine: {e:#}")))
}
