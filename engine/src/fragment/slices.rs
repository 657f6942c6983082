//! Cells read in part: a fragment that holds a slice of a cell's rows reads only those.
//!
//! A frame of one large cell (or fewer cells than bees) would leave bees idle if cells were
//! the smallest unit of work. The host can give each fragment a range of a cell's rows
//! instead; the scan then hands the Parquet reader a row selection, which skips the row
//! groups and pages outside the range and decodes the rest. The rows of every slice of a
//! cell together are the cell's rows, each once.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};

use crate::CellId;
use crate::cells::parse_cell_path;

/// Rows `start..end` of a cell of `rows` rows: the part of the cell one fragment reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSlice {
    /// The first row, counted from 0 over the cell's row groups in order.
    pub start: u64,
    /// One past the last row.
    pub end: u64,
    /// The cell's rows in all.
    pub rows: u64,
}

impl RowSlice {
    /// The selection of the cell's rows this slice keeps.
    fn selection(&self) -> Result<RowSelection> {
        if self.start > self.end || self.end > self.rows {
            return Err(DataFusionError::Plan(format!(
                "a row slice {}..{} of a cell of {} rows (a bug in the host)",
                self.start, self.end, self.rows
            )));
        }
        let count = |n: u64| {
            usize::try_from(n).map_err(|_| DataFusionError::Plan(format!("{n} rows in a cell")))
        };
        Ok(RowSelection::from(vec![
            RowSelector::skip(count(self.start)?),
            RowSelector::select(count(self.end - self.start)?),
            RowSelector::skip(count(self.rows - self.end)?),
        ]))
    }
}

/// A table of cells, some of which are read in part.
#[derive(Debug)]
pub(crate) struct SlicedTable {
    inner: Arc<dyn TableProvider>,
    slices: HashMap<CellId, RowSlice>,
}

impl SlicedTable {
    /// `inner`, whose scans read only `slices` of the cells they name.
    pub fn new(inner: Arc<dyn TableProvider>, slices: HashMap<CellId, RowSlice>) -> Self {
        Self { inner, slices }
    }

    /// `config` with the row selections of its sliced cells, and its statistics, which
    /// describe whole cells, marked inexact: DataFusion answers `count(*)`, `min` and `max`
    /// from exact statistics without reading the rows.
    fn slice(&self, config: &FileScanConfig) -> Result<FileScanConfig> {
        let mut groups = Vec::with_capacity(config.file_groups.len());
        for group in &config.file_groups {
            let mut files = Vec::with_capacity(group.len());
            for file in group.iter() {
                files.push(self.slice_file(file.clone())?);
            }
            let mut sliced = FileGroup::new(files);
            if let Some(stats) = group.file_statistics(None) {
                sliced = sliced.with_statistics(Arc::new(stats.clone().to_inexact()));
            }
            groups.push(sliced);
        }
        Ok(FileScanConfigBuilder::from(config.clone())
            .with_file_groups(groups)
            .with_statistics(config.statistics().to_inexact())
            .build())
    }

    fn slice_file(&self, mut file: PartitionedFile) -> Result<PartitionedFile> {
        let Some(slice) = parse_cell_path(file.path()).and_then(|id| self.slices.get(&id)) else {
            return Ok(file);
        };
        file.statistics = file
            .statistics
            .map(|stats| Arc::new(Statistics::clone(&stats).to_inexact()));
        Ok(file.with_extension(ParquetRowSelection::new(slice.selection()?)))
    }
}

#[async_trait]
impl TableProvider for SlicedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // No limit: the scan would count it over whole cells.
        let scan = self.inner.scan(state, projection, filters, None).await?;
        let sliced = scan.transform_down(|node| {
            let Some(config) = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
            else {
                return Ok(Transformed::no(node));
            };
            let plan: Arc<dyn ExecutionPlan> =
                DataSourceExec::from_data_source(self.slice(config)?);
            Ok(Transformed::yes(plan))
        })?;
        Ok(sliced.data)
    }
}
