//! One SQL fragment over a set of cells, executed by DataFusion.
//!
//! A fragment is the unit of work a bee runs in its chamber. Each table the SQL may use is a
//! list of cells registered under one name (`__scan__`, or the frame's name). DataFusion runs
//! with a single partition (one bee is one core), a [`PeakMemoryPool`] sized a little under
//! the bee's hard budget, and a spill directory when the caller gives one. Result batches
//! are handed to the caller's sink one at a time, as they are produced.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use url::Url;

use crate::cells::{CellStore, cell_path};
use crate::{ByteSource, CellId, EngineError, PeakMemoryPool};

/// The scheme and authority under which a fragment's cells are registered.
const CELL_STORE_URL: &str = "apiary-cells://fragment/";

/// One cell of a table: its handle and size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellRef {
    /// Handle the byte source understands.
    pub id: CellId,
    /// Size of the cell in bytes.
    pub size: u64,
}

/// The cells registered under one table name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCells {
    /// Name the SQL uses.
    pub name: String,
    /// The table's cells. At least one: the schema is read from the cells' footers.
    pub cells: Vec<CellRef>,
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
}

/// Run `task`, reading cells from `source` and handing results to `sink`.
///
/// # Errors
/// [`EngineError::Sql`] when the SQL cannot be planned or executed,
/// [`EngineError::ResourcesExhausted`] when the memory pool is too small and the plan cannot
/// spill, [`EngineError::Io`] when a cell cannot be read or the sink refuses a batch.
pub async fn execute_fragment(
    task: &FragmentTask,
    source: Arc<dyn ByteSource>,
    sink: &mut dyn FragmentSink,
) -> Result<FragmentSummary, EngineError> {
    let pool = Arc::new(PeakMemoryPool::new(
        usize::try_from(task.memory_pool_bytes).unwrap_or(usize::MAX),
    ));
    let disk_mode = match &task.scratch_dir {
        Some(dir) => DiskManagerMode::Directories(vec![dir.clone()]),
        None => DiskManagerMode::Disabled,
    };
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(pool.clone())
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(disk_mode))
        .build_arc()?;
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(task.batch_size.max(1))
        .with_information_schema(false);
    let ctx = SessionContext::new_with_config_rt(config, runtime);

    let store_url = Url::parse(CELL_STORE_URL)
        .map_err(|e| EngineError::Internal(format!("cell store URL: {e}")))?;
    let all_cells = task
        .tables
        .iter()
        .flat_map(|t| t.cells.iter().map(|c| (c.id, c.size)))
        .collect();
    ctx.register_object_store(&store_url, Arc::new(CellStore::new(source, all_cells)));

    for table in &task.tables {
        register_table(&ctx, table).await?;
    }

    let frame = ctx.sql(&task.sql).await?;
    let mut stream = frame.execute_stream().await?;
    sink.schema(&stream.schema())?;
    let mut summary = FragmentSummary::default();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        summary.rows += batch.num_rows() as u64;
        summary.batches += 1;
        sink.batch(&batch)?;
    }
    summary.pool_peak_bytes = pool.peak() as u64;
    Ok(summary)
}

async fn register_table(ctx: &SessionContext, table: &TableCells) -> Result<(), EngineError> {
    if table.cells.is_empty() {
        return Err(EngineError::Internal(format!(
            "table `{}` was given no cells",
            table.name
        )));
    }
    let urls = table
        .cells
        .iter()
        .map(|c| ListingTableUrl::parse(format!("{CELL_STORE_URL}{}", cell_path(c.id))))
        .collect::<Result<Vec<_>, _>>()?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .infer_schema(&ctx.state())
        .await?;
    let provider = ListingTable::try_new(config)?;
    ctx.register_table(table.name.as_str(), Arc::new(provider))?;
    Ok(())
}

#[cfg(test)]
mod tests;
