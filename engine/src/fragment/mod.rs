//! One SQL fragment over a set of cells, executed by DataFusion.
//!
//! A fragment is the unit of work a bee runs in its chamber. Each table the SQL may use is a
//! list of cells registered under one name (`__scan__`, or the frame's name). DataFusion runs
//! with a single partition (one bee is one core), a [`PeakMemoryPool`] sized a little under
//! the bee's hard budget, and a spill directory when the caller gives one. Result batches
//! are handed to the caller's sink one at a time, as they are produced.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, TableProvider,
};
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use url::Url;

use crate::cells::{CellStore, cell_path, parse_cell_path};
use crate::decimal::DecimalArithmetic;
use crate::spill::ScratchSpill;
use crate::udf::{FunctionCaller, FunctionSignature, register_functions};
use crate::{ByteSource, CellId, EngineError, PeakMemoryPool, decode_ipc_chunks};

mod dynamic;
mod joins;
mod keys;
mod planning;
mod slices;
mod split;

use keys::KeyRangeTable;
pub use keys::{KeyColumn, KeyRange};
pub use planning::PlanningScan;
pub use slices::RowSlice;
use slices::SlicedTable;
pub use split::{
    BelowJoins, JoinColumn, KeyScan, MergeKind, SplitScan, Splitting, equi_join_columns,
    merge_kind, merge_kind_and_groups, plan_sorting_last, split_optimizer_rules,
};
use split::{Split, split};

/// A fragment may spill this many times its memory pool to its scratch directory.
const SPILL_QUOTA_PER_POOL: u64 = 8;

/// A hash join stays one, when sort-merge joins are tried first where they may be needed,
/// if statistics put its build side under this fraction of the pool.
const SMALL_BUILD_SHARE: usize = 8;

/// A hash join whose build side has one integer key indexes its rows by the key directly, in
/// an array of one `u32` per value of the key's range, when the range takes at most this
/// fraction of the pool ([`PERFECT_HASH_MAX_SLOTS`] at most). DataFusion's default allows
/// only ranges under 1024 values or keys dense enough. In a chamber, looking a probe row up
/// in a hash table costs about twice what it does natively and hashing it about four times
/// (a profile of TPC-H Q11, Q16 and Q22); a lookup by index needs neither.
const PERFECT_HASH_SHARE: usize = 128;

/// The largest array of a direct-index join table, in slots: 4 MiB. The array is zeroed
/// whole however few rows the build side has.
const PERFECT_HASH_MAX_SLOTS: usize = 1 << 20;

/// The quota of a fragment that runs again with sort-merge joins: every join sorts both its
/// inputs, and a plan of several joins sorts the fact table's rows several times.
const SORT_MERGE_SPILL_QUOTA_PER_POOL: u64 = 32;

/// Bytes of a partial result read per call: partial results can be large, and one read
/// must never need more than a slice of the chamber's budget.
const PARTIAL_READ_BYTES: u64 = 4 << 20;

/// The scheme and authority under which a fragment's cells are registered.
const CELL_STORE_URL: &str = "apiary-cells://fragment/";

/// One cell of a table: its handle and size in bytes, and the rows the task reads of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellRef {
    /// Handle the byte source understands.
    pub id: CellId,
    /// Size of the cell in bytes.
    pub size: u64,
    /// The rows the task reads; `None`: all of them. A table names a cell once.
    pub slice: Option<RowSlice>,
}

impl CellRef {
    /// All of cell `id`, of `size` bytes.
    pub fn whole(id: CellId, size: u64) -> Self {
        Self {
            id,
            size,
            slice: None,
        }
    }
}

/// The cells registered under one table name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCells {
    /// Name the SQL uses: bare, `schema.table` or `catalog.schema.table`.
    pub name: String,
    /// The table's cells.
    pub cells: Vec<CellRef>,
    /// The table's schema; `None` infers it from the cells (then at least one is needed).
    pub schema: Option<SchemaRef>,
}

/// One unit of work: SQL over tables of cells, with its resource settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentTask {
    /// The SQL to run (one statement).
    pub sql: String,
    /// The tables the SQL may reference.
    pub tables: Vec<TableCells>,
    /// Size of DataFusion's memory pool in bytes.
    pub memory_pool_bytes: u64,
    /// Rows per batch.
    pub batch_size: usize,
    /// Where operators may spill; `None` disables spilling.
    pub scratch_dir: Option<PathBuf>,
    /// Catalog and schema that unqualified names resolve in (`default`, `default`).
    pub default_namespace: (String, String),
    /// Which part of the statement to run.
    pub stage: Stage,
    /// User-defined functions the SQL may call.
    pub functions: Vec<FunctionSignature>,
}

/// Which part of a statement a fragment runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Stage {
    /// All of it.
    #[default]
    Whole,
    /// The part below the cut (see [`MergeKind`]), over this task's cells of the frame
    /// whose cells are split; the task holds all the cells of the other frames.
    Partial {
        /// The table (as in [`TableCells::name`]) whose cells are split.
        split: String,
    },
    /// The part below the cut, over the rows of this key range in every scan of the keyed
    /// tables; the task holds the cells of the keyed tables that may have such rows, and all
    /// the cells of its other tables.
    Keyed(KeyRange),
    /// The part above the cut, over the partial results: one Arrow IPC stream per
    /// fragment, read whole through the byte source under these handles. The statement's
    /// tables need schemas only: a cut under a join, whose merge reads other tables, is
    /// merged by the last partial task (see [`FragmentSink::partial_done`]).
    Merge {
        /// The partial results, in fragment order.
        inputs: Vec<CellRef>,
    },
}

/// The namespace unqualified names resolve in: Apiary's `default.default`.
pub fn default_namespace() -> (String, String) {
    ("default".to_owned(), "default".to_owned())
}

/// What a completed fragment reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragmentSummary {
    /// Rows handed to the sink.
    pub rows: u64,
    /// Batches handed to the sink.
    pub batches: u32,
    /// Peak bytes reserved in the memory pool.
    pub pool_peak_bytes: u64,
    /// For a partial fragment, how its results are to be merged.
    pub merge: Option<MergeKind>,
    /// The hash joins did not fit the memory pool, and the fragment ran again with
    /// sort-merge joins, which spill.
    pub sort_merge_joins: bool,
    /// Time the attempt that answered took before it ran the plan: its session, and the
    /// statement planned, optimised and cut.
    pub planning: Duration,
}

/// Receives a fragment's output: the schema once, then each batch in order.
pub trait FragmentSink {
    /// Called once, before any batch.
    ///
    /// # Errors
    /// An error stops the fragment.
    fn schema(&mut self, schema: &SchemaRef) -> Result<(), EngineError>;

    /// Called for each non-empty batch.
    ///
    /// # Errors
    /// An error stops the fragment.
    fn batch(&mut self, batch: &RecordBatch) -> Result<(), EngineError>;

    /// Called once a partial or keyed task has handed over all its rows. `Some`: every
    /// task's partial result, each one Arrow IPC stream read whole through the byte
    /// source, for this task to merge with the plan it holds; the answer then comes as a
    /// second stream (`schema`, then its batches). `None` (the default): the task ends.
    ///
    /// # Errors
    /// An error stops the fragment.
    fn partial_done(&mut self) -> Result<Option<Vec<CellRef>>, EngineError> {
        Ok(None)
    }
}

/// Run `task`, reading cells from `source`, calling user-defined functions through
/// `functions`, and handing results to `sink`.
///
/// # Errors
/// [`EngineError::Sql`] when the SQL cannot be planned or executed,
/// [`EngineError::ResourcesExhausted`] when the memory pool is too small and the plan cannot
/// spill, [`EngineError::Io`] when a cell cannot be read or the sink refuses a batch.
pub async fn execute_fragment(
    task: &FragmentTask,
    source: Arc<dyn ByteSource>,
    functions: Arc<dyn FunctionCaller>,
    sink: &mut dyn FragmentSink,
) -> Result<FragmentSummary, EngineError> {
    let mut joins = Joins::Hash;
    let mut pool_peak_bytes = 0;
    loop {
        match attempt(task, &source, &functions, sink, joins).await {
            Ok(mut summary) => {
                summary.sort_merge_joins = joins != Joins::Hash;
                summary.pool_peak_bytes = summary.pool_peak_bytes.max(pool_peak_bytes);
                return Ok(summary);
            }
            Err(Failed {
                error: EngineError::ResourcesExhausted(_),
                sort_merge_may_fit: true,
                pool_peak_bytes: peak,
            }) if joins != Joins::SortMergeAll => {
                pool_peak_bytes = pool_peak_bytes.max(peak);
                joins = match joins {
                    Joins::Hash => Joins::SortMergeLarge,
                    _ => Joins::SortMergeAll,
                };
            }
            Err(failed) => return Err(failed.error),
        }
    }
}

/// How a fragment's equi-joins run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joins {
    /// DataFusion's hash joins: fast, but the build side must fit the pool.
    Hash,
    /// Sort-merge joins where the build side may be large, hash joins where statistics
    /// say it is small (a nation, a supplier table).
    SortMergeLarge,
    /// Sort-merge joins over sorts that spill, everywhere.
    SortMergeAll,
}

/// Why an attempt at a fragment failed, and whether sort-merge joins may succeed.
struct Failed {
    error: EngineError,
    /// The plan had hash joins and nothing reached the sink yet.
    sort_merge_may_fit: bool,
    pool_peak_bytes: u64,
}

impl<E: Into<EngineError>> From<E> for Failed {
    fn from(error: E) -> Self {
        Self {
            error: error.into(),
            sort_merge_may_fit: false,
            pool_peak_bytes: 0,
        }
    }
}

/// Run `task` once with `joins`.
async fn attempt(
    task: &FragmentTask,
    source: &Arc<dyn ByteSource>,
    functions: &Arc<dyn FunctionCaller>,
    sink: &mut dyn FragmentSink,
    joins: Joins,
) -> Result<FragmentSummary, Failed> {
    let started = Instant::now();
    let pool = Arc::new(PeakMemoryPool::new(
        usize::try_from(task.memory_pool_bytes).unwrap_or(usize::MAX),
    ));
    let disk_mode = match &task.scratch_dir {
        Some(dir) => DiskManagerMode::Custom(Arc::new(ScratchSpill::new(
            dir.clone(),
            task.memory_pool_bytes.saturating_mul(match joins {
                Joins::Hash => SPILL_QUOTA_PER_POOL,
                Joins::SortMergeLarge | Joins::SortMergeAll => SORT_MERGE_SPILL_QUOTA_PER_POOL,
            }),
        ))),
        None => DiskManagerMode::Disabled,
    };
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(pool.clone())
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(disk_mode))
        .build_arc()?;
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(task.batch_size.max(1))
        .with_information_schema(false)
        .with_default_catalog_and_schema(&task.default_namespace.0, &task.default_namespace.1)
        .with_create_default_catalog_and_schema(true);
    // A sort keeps room for merging its spilled runs; DataFusion's 10 MiB default is too much
    // for a small bee.
    let mut config = config;
    config.options_mut().execution.sort_spill_reservation_bytes =
        usize::try_from(task.memory_pool_bytes / 8)
            .unwrap_or(usize::MAX)
            .min(10 << 20);
    config
        .options_mut()
        .execution
        .perfect_hash_join_small_build_threshold = perfect_hash_slots(task.memory_pool_bytes);
    let mut rules = if task.stage == Stage::Whole {
        joins::default_rules()
    } else {
        split_optimizer_rules()
    };
    let pool_bytes = usize::try_from(task.memory_pool_bytes).unwrap_or(usize::MAX);
    match joins {
        Joins::Hash => {}
        Joins::SortMergeLarge => {
            rules = joins::with_sort_merge_joins(rules, pool_bytes / SMALL_BUILD_SHARE);
        }
        Joins::SortMergeAll => rules = joins::with_sort_merge_joins(rules, 0),
    }
    rules.push(Arc::new(dynamic::ApplyDynamicFilters));
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_optimizer_rule(Arc::new(DecimalArithmetic))
        .with_physical_optimizer_rules(rules);
    let ctx = SessionContext::new_with_state(state.build());
    register_functions(&ctx, &task.functions, functions);

    let store_url = Url::parse(CELL_STORE_URL)
        .map_err(|e| EngineError::Internal(format!("cell store URL: {e}")))?;
    let all_cells = task
        .tables
        .iter()
        .flat_map(|t| t.cells.iter().map(|c| (c.id, c.size)))
        .collect();
    ctx.register_object_store(
        &store_url,
        Arc::new(CellStore::new(source.clone(), all_cells)),
    );

    let range = match &task.stage {
        Stage::Keyed(range) => Some(range),
        _ => None,
    };
    for table in &task.tables {
        let key = range.and_then(|range| Some((range.column_of(&table.name)?, range)));
        register_table(&ctx, table, key).await?;
    }

    let (state, logical) = ctx.sql(&task.sql).await?.into_parts();
    let planned = plan_sorting_last(&state, &logical).await?;
    let mut summary = FragmentSummary::default();
    // A partial task keeps its cut: it may be asked to merge every task's results too.
    let (plan, cut_kept) = match &task.stage {
        Stage::Whole => (planned, None),
        Stage::Partial { split } => {
            let cells = split_cells(task, split)?;
            let is_split_scan = |node: &dyn ExecutionPlan| scans_cells_of(node, &cells);
            let split = cut(&planned, Some(Splitting::Cells(&is_split_scan)))?;
            summary.merge = Some(split.kind);
            let partial = match joins {
                Joins::Hash => split.reduced_partial()?,
                Joins::SortMergeLarge | Joins::SortMergeAll => split.partial.clone(),
            };
            (partial, Some(split))
        }
        Stage::Keyed(range) => {
            let keyed = keyed_cells(task, range);
            let key_scan = |node: &dyn ExecutionPlan| {
                let column = scanned_cells(node).find_map(|id| keyed.get(&id))?;
                Some(node.schema().index_of(column).into_iter().collect())
            };
            let split = cut(&planned, Some(Splitting::Keys(&key_scan)))?;
            summary.merge = Some(split.kind);
            (split.partial.clone(), Some(split))
        }
        Stage::Merge { inputs } => {
            let split = cut(&planned, None)?;
            (merge_plan(&split, source.as_ref(), inputs)?, None)
        }
    };
    let retry = joins::has_hash_joins(&plan);
    if joins != Joins::Hash {
        // Every sort under the joins runs at once: each gets an equal share, spills beyond
        // it, and keeps a quarter of it for merging its spilled runs.
        let share = pool_bytes / (joins::spilling_operators(&plan) + 1);
        pool.cap_reservations(share);
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .execution
            .sort_spill_reservation_bytes = share / 4;
    }
    let mut stream = execute_stream(plan, ctx.task_ctx())?;
    summary.planning = started.elapsed();
    let schema = stream.schema();
    // The sink hears of the schema with the first batch, so that a fragment that fails
    // before it can run again from the start.
    let mut schema_sent = false;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|error| Failed {
            error: error.into(),
            sort_merge_may_fit: retry && !schema_sent,
            pool_peak_bytes: pool.peak() as u64,
        })?;
        if batch.num_rows() == 0 {
            continue;
        }
        if !schema_sent {
            sink.schema(&schema)?;
            schema_sent = true;
        }
        summary.rows += batch.num_rows() as u64;
        summary.batches += 1;
        sink.batch(&batch)?;
    }
    if !schema_sent {
        sink.schema(&schema)?;
    }
    if let Some(split) = cut_kept
        && let Some(inputs) = sink.partial_done()?
    {
        // The last task to finish merges them all, with the session and plan it holds. The
        // operators above the cut belong to the plan that ran: their state (a top-k's
        // dynamic filter, a join's) starts afresh.
        let merge = reset_plan_states(merge_plan(&split, source.as_ref(), &inputs)?)?;
        let mut stream = execute_stream(merge, ctx.task_ctx())?;
        sink.schema(&stream.schema())?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if batch.num_rows() > 0 {
                sink.batch(&batch)?;
            }
        }
    }
    summary.pool_peak_bytes = pool.peak() as u64;
    Ok(summary)
}

/// The merge of `split` over `inputs`, the partial results read whole from `source`.
fn merge_plan(
    split: &Split,
    source: &dyn ByteSource,
    inputs: &[CellRef],
) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
    let schema = split.partial.schema();
    let mut partitions = Vec::with_capacity(inputs.len());
    for input in inputs {
        partitions.extend(read_partial(source, *input, &schema)?);
    }
    let input = MemorySourceConfig::try_new_exec(&[partitions], schema, None)?;
    Ok(split.merge(input)?)
}

/// The cells of the table `name`, whose cells a partial task splits.
fn split_cells(task: &FragmentTask, name: &str) -> Result<HashSet<CellId>, EngineError> {
    task.tables
        .iter()
        .find(|t| t.name == name)
        .map(|t| t.cells.iter().map(|c| c.id).collect())
        .ok_or_else(|| {
            EngineError::Internal(format!(
                "the split table `{name}` is not among the task's tables (a bug in the host)"
            ))
        })
}

/// The key column of each cell of a keyed table.
fn keyed_cells<'a>(task: &'a FragmentTask, range: &'a KeyRange) -> HashMap<CellId, &'a str> {
    task.tables
        .iter()
        .filter_map(|t| Some((t, range.column_of(&t.name)?)))
        .flat_map(|(t, column)| t.cells.iter().map(move |c| (c.id, column)))
        .collect()
}

/// Whether `node` scans some of `cells`.
fn scans_cells_of(node: &dyn ExecutionPlan, cells: &HashSet<CellId>) -> bool {
    scanned_cells(node).any(|id| cells.contains(&id))
}

/// The cells `node` scans, when it is a scan of cells.
fn scanned_cells(node: &dyn ExecutionPlan) -> impl Iterator<Item = CellId> + '_ {
    node.downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
        .into_iter()
        .flat_map(|config| config.file_groups.iter())
        .flat_map(|group| group.iter())
        .filter_map(|file| parse_cell_path(&file.object_meta.location))
}

/// The cut of a statement a partial or merge task was given.
fn cut(
    plan: &Arc<dyn ExecutionPlan>,
    splitting: Option<Splitting<'_>>,
) -> Result<Split, EngineError> {
    split(plan, splitting)?.ok_or_else(|| {
        EngineError::Internal(
            "the statement was sent in parts but its plan cannot be cut (a bug in the host)".into(),
        )
    })
}

/// The batches of one partial result, checked against the schema the merge expects.
fn read_partial(
    source: &dyn ByteSource,
    input: CellRef,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, EngineError> {
    let mut chunks = Vec::new();
    let mut offset = 0;
    while offset < input.size {
        let end = input.size.min(offset + PARTIAL_READ_BYTES);
        let chunk = source
            .read(input.id, offset..end)
            .map_err(EngineError::Io)?;
        chunks.push(chunk.to_vec());
        offset = end;
    }
    let (_, batches) = decode_ipc_chunks(chunks)?;
    batches
        .into_iter()
        .map(|batch| {
            RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).map_err(|e| {
                EngineError::Internal(format!(
                    "a partial result does not match the merge's input: {e}"
                ))
            })
        })
        .collect()
}

/// The key ranges under which a chamber's hash joins index their build side directly.
fn perfect_hash_slots(pool_bytes: u64) -> usize {
    let share = usize::try_from(pool_bytes).unwrap_or(usize::MAX) / PERFECT_HASH_SHARE;
    (share / size_of::<u32>()).clamp(1024, PERFECT_HASH_MAX_SLOTS)
}

/// Register `table` in `ctx`; with `key`, its scans keep only the rows of that key range.
async fn register_table(
    ctx: &SessionContext,
    table: &TableCells,
    key: Option<(&str, &KeyRange)>,
) -> Result<(), EngineError> {
    let provider: Arc<dyn TableProvider> = match (&table.schema, table.cells.is_empty()) {
        (Some(schema), true) => Arc::new(MemTable::try_new(schema.clone(), vec![vec![]])?),
        (None, true) => {
            return Err(EngineError::Internal(format!(
                "table `{}` was given neither cells nor a schema",
                table.name
            )));
        }
        (schema, false) => {
            let urls = table
                .cells
                .iter()
                .map(|c| ListingTableUrl::parse(format!("{CELL_STORE_URL}{}", cell_path(c.id))))
                .collect::<Result<Vec<_>, _>>()?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            let config =
                ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options);
            let config = match schema {
                Some(schema) => config.with_schema(schema.clone()),
                None => config.infer_schema(&ctx.state()).await?,
            };
            Arc::new(ListingTable::try_new(config)?)
        }
    };
    let slices: HashMap<CellId, RowSlice> = table
        .cells
        .iter()
        .filter_map(|c| Some((c.id, c.slice?)))
        .collect();
    let provider: Arc<dyn TableProvider> = if slices.is_empty() {
        provider
    } else {
        Arc::new(SlicedTable::new(provider, slices))
    };
    let provider = match key {
        Some((column, range)) => Arc::new(KeyRangeTable::new(provider, column, range)?),
        None => provider,
    };
    ctx.register_table(table_reference(ctx, &table.name)?, provider)?;
    Ok(())
}

/// The reference for `name`, creating its catalog and schema in `ctx` when missing.
fn table_reference(ctx: &SessionContext, name: &str) -> Result<TableReference, EngineError> {
    let parts: Vec<&str> = name.split('.').collect();
    let defaults = ctx.state().config().options().catalog.clone();
    let (catalog, schema, table) = match parts.as_slice() {
        [table] => return Ok(TableReference::bare(*table)),
        [schema, table] => (defaults.default_catalog.clone(), *schema, *table),
        [catalog, schema, table] => ((*catalog).to_owned(), *schema, *table),
        _ => {
            return Err(EngineError::Sql(format!(
                "table name `{name}` has more than three parts"
            )));
        }
    };
    let catalog_provider = match ctx.catalog(&catalog) {
        Some(provider) => provider,
        None => {
            let provider: Arc<dyn CatalogProvider> = Arc::new(MemoryCatalogProvider::new());
            ctx.register_catalog(catalog.as_str(), provider.clone());
            provider
        }
    };
    if catalog_provider.schema(schema).is_none() {
        catalog_provider.register_schema(schema, Arc::new(MemorySchemaProvider::new()))?;
    }
    Ok(TableReference::full(catalog, schema, table))
}

#[cfg(test)]
mod tests;
