//! Fragments split by key ranges: every scan of a keyed table reads only the rows whose key
//! falls in the fragment's range.
//!
//! A statement that reads its largest frame twice (a subquery over the same fact table), or
//! joins it on the side a join needs whole, cannot be split by cells: each fragment would
//! see a different part of each read. Split by a key the joins compare instead (`orderkey`
//! for lineitem and orders), the rows that meet in any of those joins meet in the same
//! fragment, and so do the rows of an aggregation grouped by the key.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::prelude::lit;

/// A table split by ranges of one of its columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    /// The table, as in [`TableCells::name`](crate::TableCells::name).
    pub table: String,
    /// Its key column, an integer column.
    pub column: String,
}

/// The rows one fragment of a statement split by key ranges takes: in every keyed table,
/// those whose key is in `low..high`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// The keyed tables. Every scan of them is split; the task's other tables are read
    /// whole.
    pub columns: Vec<KeyColumn>,
    /// The lowest key, inclusive. `None`: no lower bound, and the fragment also takes the
    /// rows whose key is null.
    pub low: Option<i64>,
    /// The highest key, exclusive; `None`: no upper bound.
    pub high: Option<i64>,
}

impl KeyRange {
    /// The key column of `table`, when it is keyed.
    pub fn column_of(&self, table: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|k| k.table == table)
            .map(|k| k.column.as_str())
    }

    /// The filter a keyed table's rows pass in this fragment.
    fn predicate(&self, column: &str, schema: &SchemaRef) -> Result<Expr> {
        let data_type = schema.field_with_name(column)?.data_type().clone();
        let key = Expr::Column(Column::from_name(column));
        let bound = |value: i64| ScalarValue::Int64(Some(value)).cast_to(&data_type).map(lit);
        let mut predicate = match self.high {
            Some(high) => key.clone().lt(bound(high)?),
            None => lit(true),
        };
        match self.low {
            Some(low) => predicate = key.gt_eq(bound(low)?).and(predicate),
            None => predicate = predicate.or(key.is_null()),
        }
        Ok(predicate)
    }
}

/// A table whose scans keep only the rows of one key range.
#[derive(Debug)]
pub(crate) struct KeyRangeTable {
    inner: Arc<dyn TableProvider>,
    key: usize,
    predicate: Expr,
}

impl KeyRangeTable {
    /// `inner`, keeping the rows whose `column` is in `range`.
    pub fn new(inner: Arc<dyn TableProvider>, column: &str, range: &KeyRange) -> Result<Self> {
        let schema = inner.schema();
        Ok(Self {
            key: schema.index_of(column)?,
            predicate: range.predicate(column, &schema)?,
            inner,
        })
    }
}

#[async_trait]
impl TableProvider for KeyRangeTable {
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
        let mut columns = projection
            .cloned()
            .unwrap_or_else(|| (0..self.inner.schema().fields().len()).collect());
        let wanted = columns.len();
        if !columns.contains(&self.key) {
            columns.push(self.key);
        }
        // The range goes to the scan too, whose statistics may skip whole row groups. The
        // limit does not: it would count rows before the range filters them.
        let mut filters = filters.to_vec();
        filters.push(self.predicate.clone());
        let scan = self
            .inner
            .scan(state, Some(&columns), &filters, None)
            .await?;
        let schema = DFSchema::try_from(scan.schema())?;
        let predicate = state.create_physical_expr(self.predicate.clone(), &schema)?;
        let projection = (columns.len() > wanted).then(|| (0..wanted).collect());
        let filter = FilterExecBuilder::new(predicate, scan)
            .apply_projection(projection)?
            .build()?;
        Ok(Arc::new(filter))
    }
}
