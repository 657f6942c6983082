//! SQL over the lake: resolve frames with DataFusion's own planner, prune cells, run the
//! query in a chamber.
//!
//! A [`QuerySession`] plans each statement on the host against a catalog built from the
//! registry (hives are catalogs, boxes are schemas, frames are tables), so table references
//! are resolved by DataFusion itself: 1-, 2- and 3-part names, quoted identifiers, CTEs,
//! subqueries, self joins. The frames' table providers do not read anything: planning only
//! records, per scan, the filters the optimizer pushed to it. Those filters are evaluated
//! against each cell's statistics from the ledger (DataFusion's `PruningPredicate`), and the
//! surviving cells, under each frame's fully qualified name, go to one chamber with the
//! statement unchanged. A cell is dropped only when its statistics prove no row can match,
//! so pruning never changes an answer.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use apiary_engine::arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use apiary_engine::arrow::datatypes::{DataType, SchemaRef};
use apiary_engine::arrow::record_batch::RecordBatch;
use apiary_engine::lake::{CellMeta, ColumnStats};
use apiary_engine::{ByteSource, CellId, CellRef, TableCells};
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, Session, TableProvider,
};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::{PruningPredicateBuilder, PruningStatistics};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::commands;
use crate::{BeePool, ChamberStats, Error, Fragment, Lake, Meadow, Result};

/// The answer to one statement and what it took.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// Result schema.
    pub schema: Option<SchemaRef>,
    /// Result batches.
    pub batches: Vec<RecordBatch>,
    /// Cells of the frames the statement reads, before pruning.
    pub cells_total: usize,
    /// Cells left after statistics pruning (the ones the chamber may read).
    pub cells_scanned: usize,
    /// The chamber's measurements (absent for statements answered on the host).
    pub chamber: Option<ChamberStats>,
    /// Lines for the user besides the rows: what a command did, a frame's totals.
    pub notes: Vec<String>,
}

impl QueryOutput {
    /// An answer computed on the host from `batch`.
    pub(crate) fn host(batch: RecordBatch, notes: Vec<String>) -> Self {
        Self {
            schema: Some(batch.schema()),
            batches: vec![batch],
            cells_total: 0,
            cells_scanned: 0,
            chamber: None,
            notes,
        }
    }

    /// A statement with no rows to show, only a message.
    pub(crate) fn message(note: String) -> Self {
        Self {
            schema: None,
            batches: Vec::new(),
            cells_total: 0,
            cells_scanned: 0,
            chamber: None,
            notes: vec![note],
        }
    }
}

/// A SQL session on a lake: the current hive and box, and the bees that run fragments.
pub struct QuerySession {
    pub(crate) lake: Arc<Lake>,
    pool: Arc<BeePool>,
    pub(crate) hive: String,
    pub(crate) box_name: String,
}

impl fmt::Debug for QuerySession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuerySession")
            .field("hive", &self.hive)
            .field("box", &self.box_name)
            .finish_non_exhaustive()
    }
}

/// How pruning went for one frame of a query.
#[derive(Debug, Clone)]
struct FramePruning {
    name: String,
    cells_total: usize,
    cells_kept: usize,
}

/// A planned statement, ready for a chamber.
struct Prepared {
    fragment: Fragment,
    frames: Vec<FramePruning>,
}

/// What planning saw of one frame scan.
#[derive(Debug, Clone)]
struct ScanRecord {
    frame: String,
    filters: Vec<Expr>,
}

/// A frame as the host planner sees it: a schema, and a recorder of pushed-down filters.
#[derive(Debug)]
struct FrameTable {
    name: String,
    schema: SchemaRef,
    scans: Arc<Mutex<Vec<ScanRecord>>>,
}

#[async_trait]
impl TableProvider for FrameTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if let Ok(mut scans) = self.scans.lock() {
            scans.push(ScanRecord {
                frame: self.name.clone(),
                filters: filters.to_vec(),
            });
        }
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        Ok(Arc::new(EmptyExec::new(schema)))
    }
}

impl QuerySession {
    /// A session on `lake` running fragments on `pool`, starting in `default.default`.
    pub fn new(lake: Arc<Lake>, pool: Arc<BeePool>) -> Self {
        let (hive, box_name) = apiary_engine::default_namespace();
        Self {
            lake,
            pool,
            hive,
            box_name,
        }
    }

    /// The current hive and box.
    pub fn namespace(&self) -> (&str, &str) {
        (&self.hive, &self.box_name)
    }

    /// Run one statement: `USE ...`, or a query.
    ///
    /// # Errors
    /// [`Error::GuestError`] with DataFusion's text for SQL errors, [`Error::NotFound`] for
    /// unknown hives or boxes, the chamber's errors for failures while running.
    pub async fn sql(&mut self, sql: &str) -> Result<QueryOutput> {
        if let Some(output) = self.command(sql).await? {
            return Ok(output);
        }
        self.query(sql).await
    }

    /// Plan `sql` on the host, prune, and run it in a chamber.
    pub(crate) async fn query(&self, sql: &str) -> Result<QueryOutput> {
        let prepared = self.prepare(sql).await?;
        self.run(prepared).await
    }

    async fn run(&self, prepared: Prepared) -> Result<QueryOutput> {
        let Prepared { fragment, frames } = prepared;
        let (cells_total, cells_scanned) = frames
            .iter()
            .fold((0, 0), |(t, s), f| (t + f.cells_total, s + f.cells_kept));
        let pool = self.pool.clone();
        let output = tokio::task::spawn_blocking(move || pool.run(fragment))
            .await
            .map_err(|e| Error::Internal(format!("the query task failed: {e}")))??;
        Ok(QueryOutput {
            schema: output.schema,
            batches: output.batches,
            cells_total,
            cells_scanned,
            chamber: Some(output.stats),
            notes: Vec::new(),
        })
    }

    /// `EXPLAIN [ANALYZE] query`: the frames and their pruning, the fragments and bees, and
    /// with ANALYZE what each fragment measured.
    async fn explain(&self, query: &str, analyze: bool) -> Result<QueryOutput> {
        let prepared = self.prepare(query).await?;
        let mut rows: Vec<(String, String)> = prepared
            .frames
            .iter()
            .map(|f| {
                (
                    format!("scan {}", f.name),
                    format!(
                        "{} cells, {} after partition and statistics pruning",
                        f.cells_total, f.cells_kept
                    ),
                )
            })
            .collect();
        rows.push((
            "fragments".into(),
            "1 fragment: the whole statement in one chamber (fragment splitting is not built yet)"
                .into(),
        ));
        rows.push(("merge".into(), "none".into()));
        if analyze {
            let cells: usize = prepared.frames.iter().map(|f| f.cells_kept).sum();
            let output = self.run(prepared).await?;
            let stats = output.chamber.unwrap_or_default();
            rows.push((
                "fragment 0".into(),
                format!(
                    "bee {}: {cells} cells, {} bytes read in {} reads, {} rows, {:.1} ms, peak chamber memory {:.1} MiB of a {:.0} MiB budget",
                    stats.bee,
                    stats.bytes_read,
                    stats.read_calls,
                    stats.rows,
                    stats.elapsed.as_secs_f64() * 1e3,
                    stats.peak_memory as f64 / (1 << 20) as f64,
                    stats.budget as f64 / (1 << 20) as f64
                ),
            ));
        }
        let (steps, details): (Vec<String>, Vec<String>) = rows.into_iter().unzip();
        let batch = RecordBatch::try_new(
            Arc::new(apiary_engine::arrow::datatypes::Schema::new(vec![
                apiary_engine::arrow::datatypes::Field::new("step", DataType::Utf8, false),
                apiary_engine::arrow::datatypes::Field::new("detail", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(apiary_engine::arrow::array::StringArray::from(steps)),
                Arc::new(apiary_engine::arrow::array::StringArray::from(details)),
            ],
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(QueryOutput::host(batch, Vec::new()))
    }

    /// Plan `sql`, prune each frame's cells, and build the fragment.
    async fn prepare(&self, sql: &str) -> Result<Prepared> {
        let registry = self.lake.registry().await?;
        let scans = Arc::new(Mutex::new(Vec::new()));
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(false)
            .with_default_catalog_and_schema(&self.hive, &self.box_name)
            .with_create_default_catalog_and_schema(false);
        let ctx = SessionContext::new_with_config(config);
        for (hive, boxes) in &registry.hives {
            let catalog = Arc::new(MemoryCatalogProvider::new());
            for (box_name, frames) in boxes {
                let schema = Arc::new(MemorySchemaProvider::new());
                for (frame, entry) in frames {
                    let table = FrameTable {
                        name: format!("{hive}.{box_name}.{frame}"),
                        schema: Arc::new(entry.schema.to_arrow()),
                        scans: scans.clone(),
                    };
                    datafusion::catalog::SchemaProvider::register_table(
                        schema.as_ref(),
                        frame.clone(),
                        Arc::new(table),
                    )
                    .map_err(sql_error)?;
                }
                catalog
                    .register_schema(box_name, schema)
                    .map_err(sql_error)?;
            }
            ctx.register_catalog(hive.as_str(), catalog);
        }
        let state = ctx.state();
        let plan = state.create_logical_plan(sql).await.map_err(sql_error)?;
        if matches!(
            plan,
            LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_)
        ) {
            return Err(unsupported(sql));
        }
        state.create_physical_plan(&plan).await.map_err(sql_error)?;
        let scans = scans.lock().map(|s| s.clone()).unwrap_or_default();

        // Prune each frame's cells with the filters of every scan of it.
        let mut frames: BTreeMap<String, Vec<Vec<Expr>>> = BTreeMap::new();
        for scan in scans {
            frames.entry(scan.frame).or_default().push(scan.filters);
        }
        let mut tables = Vec::new();
        let mut keys = Vec::new();
        let mut pruned = Vec::new();
        for (name, filters) in frames {
            let (entry, frame_state) = self.lake.frame(&name).await?;
            let schema = Arc::new(frame_state.schema.to_arrow());
            let cells: Vec<&CellMeta> = frame_state.cells().collect();
            let keep = prune(&ctx, &schema, &cells, &filters)?;
            let mut refs = Vec::new();
            for (cell, keep) in cells.iter().zip(keep) {
                if keep {
                    refs.push(CellRef {
                        id: keys.len() as CellId,
                        size: cell.bytes,
                    });
                    keys.push((format!("{}/{}", entry.dir, cell.path), cell.bytes));
                }
            }
            pruned.push(FramePruning {
                name: name.clone(),
                cells_total: cells.len(),
                cells_kept: refs.len(),
            });
            tables.push(TableCells {
                name,
                cells: refs,
                schema: Some(schema),
            });
        }
        let source = Arc::new(MeadowCells::new(self.lake.meadow().clone(), keys)?);
        let fragment = Fragment {
            default_namespace: (self.hive.clone(), self.box_name.clone()),
            ..Fragment::new(sql, tables, source)
        };
        Ok(Prepared {
            fragment,
            frames: pruned,
        })
    }

    /// Statements the host answers itself; `None` for everything else.
    async fn command(&mut self, sql: &str) -> Result<Option<QueryOutput>> {
        let statement = sql.trim().trim_end_matches(';').trim();
        let words: Vec<&str> = statement.split_whitespace().collect();
        let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
        let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
        match upper.first().copied() {
            Some("USE") => self
                .use_namespace(statement, &words, &upper)
                .await
                .map(Some),
            Some("SHOW") => self.show(statement, &words, &upper).await.map(Some),
            Some("DESCRIBE") | Some("DESC") if words.len() == 2 => {
                self.describe(words[1]).await.map(Some)
            }
            Some("CREATE") | Some("DROP") => commands::ddl(self, statement, &words, &upper)
                .await
                .map(Some),
            Some("INSERT") => self.insert(statement).await.map(Some),
            Some("EXPLAIN") => {
                let analyze = upper.get(1) == Some(&"ANALYZE");
                let skip = if analyze { 2 } else { 1 };
                let query = statement
                    .splitn(skip + 1, char::is_whitespace)
                    .nth(skip)
                    .unwrap_or_default();
                self.explain(query, analyze).await.map(Some)
            }
            Some(verb @ ("DELETE" | "UPDATE")) => Err(Error::Config(format!(
                "`{verb}` is not supported yet: write the rows to keep with an overwrite \
                 (`Lake::write` with `WriteMode::Overwrite`)"
            ))),
            _ => Ok(None),
        }
    }

    async fn use_namespace(
        &mut self,
        sql: &str,
        words: &[&str],
        upper: &[&str],
    ) -> Result<QueryOutput> {
        let registry = self.lake.registry().await?;
        let (hive, box_name) = match (&upper[1..], &words[1..]) {
            ([kind, _], [_, name]) if ["HIVE", "DATABASE"].contains(kind) => (
                name.to_string(),
                apiary_engine::lake::DEFAULT_BOX.to_owned(),
            ),
            ([kind, _], [_, name]) if ["BOX", "SCHEMA"].contains(kind) => {
                (self.hive.clone(), name.to_string())
            }
            ([_], [name]) => match name.split_once('.') {
                Some((hive, box_name)) => (hive.to_owned(), box_name.to_owned()),
                None => (
                    name.to_string(),
                    apiary_engine::lake::DEFAULT_BOX.to_owned(),
                ),
            },
            _ => {
                return Err(Error::Config(format!(
                    "cannot read `{sql}`: use USE HIVE name, USE BOX name or USE hive.box"
                )));
            }
        };
        let (hive, box_name) = (unquote(&hive), unquote(&box_name));
        let boxes = registry
            .hives
            .get(&hive)
            .ok_or_else(|| Error::NotFound(format!("hive `{hive}` does not exist")))?;
        // `USE HIVE x` needs only the hive: one-part names then resolve in `x.default`,
        // which may not exist. A box named explicitly must exist.
        let box_named = !matches!(upper.get(1), Some(&"HIVE") | Some(&"DATABASE"))
            && (words.len() == 3 || words[1].contains('.'));
        if box_named && !boxes.contains_key(&box_name) {
            return Err(Error::NotFound(format!(
                "box `{hive}.{box_name}` does not exist"
            )));
        }
        self.hive = hive;
        self.box_name = box_name;
        Ok(QueryOutput::message(format!(
            "using {}.{}",
            self.hive, self.box_name
        )))
    }
}

pub(crate) fn unquote(name: &str) -> String {
    name.strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .map_or_else(|| name.to_ascii_lowercase(), str::to_owned)
}

pub(crate) fn sql_error(err: datafusion::error::DataFusionError) -> Error {
    Error::GuestError {
        bee: usize::MAX,
        kind: crate::GuestErrorKind::Sql,
        message: err.to_string(),
    }
}

fn unsupported(sql: &str) -> Error {
    Error::Config(format!(
        "`{}` is not supported in queries yet: create frames and write to them through the API",
        sql.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    ))
}

/// Which cells any scan may need: a cell is kept if some scan's filters cannot rule it out.
fn prune(
    ctx: &SessionContext,
    schema: &SchemaRef,
    cells: &[&CellMeta],
    scans: &[Vec<Expr>],
) -> Result<Vec<bool>> {
    let mut keep = vec![false; cells.len()];
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(sql_error)?;
    let stats = CellStatistics { schema, cells };
    for filters in scans {
        let stripped: Option<Vec<Expr>> = filters.iter().cloned().map(strip_qualifiers).collect();
        let kept = stripped
            .and_then(conjunction)
            .and_then(|expr| ctx.state().create_physical_expr(expr, &df_schema).ok())
            .and_then(|expr| {
                PruningPredicateBuilder::new()
                    .with_file_schema(schema.clone())
                    .build(expr)
            })
            .and_then(|predicate| predicate.prune(&stats).ok());
        match kept {
            Some(kept) => keep.iter_mut().zip(kept).for_each(|(k, p)| *k |= p),
            // No filters, or filters pruning cannot use: every cell may be needed.
            None => return Ok(vec![true; cells.len()]),
        }
    }
    Ok(keep)
}

/// Filters arrive qualified with the table name; pruning works on bare column names.
fn strip_qualifiers(expr: Expr) -> Option<Expr> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    expr.transform(|e| match e {
        Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
            c.name,
        )))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
    .ok()
}

/// The ledger's statistics of a frame's cells, as DataFusion's pruning wants them.
struct CellStatistics<'a> {
    schema: &'a SchemaRef,
    cells: &'a [&'a CellMeta],
}

impl CellStatistics<'_> {
    fn bound(
        &self,
        column: &Column,
        pick: fn(&ColumnStats) -> Option<&serde_json::Value>,
    ) -> Option<ArrayRef> {
        let field = self.schema.field_with_name(&column.name).ok()?;
        let data_type = field.data_type();
        let null = ScalarValue::try_from(data_type).ok()?;
        let values: Vec<ScalarValue> = self
            .cells
            .iter()
            .map(|cell| {
                cell.stats
                    .get(&column.name)
                    .and_then(pick)
                    .and_then(|v| stat_scalar(v, data_type))
                    .unwrap_or_else(|| null.clone())
            })
            .collect();
        ScalarValue::iter_to_array(values).ok()
    }
}

/// A statistic from the ledger's JSON as a scalar of the column's type; `None` (no pruning
/// on it) for anything unexpected.
fn stat_scalar(value: &serde_json::Value, data_type: &DataType) -> Option<ScalarValue> {
    let text = match value {
        serde_json::Value::Bool(b) => {
            return Some(ScalarValue::Boolean(Some(*b)))
                .filter(|_| data_type == &DataType::Boolean);
        }
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => return None,
    };
    match data_type {
        DataType::Timestamp(..) => {
            let raw: i64 = text.parse().ok()?;
            ScalarValue::Int64(Some(raw)).cast_to(data_type).ok()
        }
        DataType::Float32 | DataType::Float64 if !matches!(value, serde_json::Value::Number(_)) => {
            None
        }
        _ => ScalarValue::try_from_string(text, data_type).ok(),
    }
}

impl PruningStatistics for CellStatistics<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, |s| s.min.as_ref())
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, |s| s.max.as_ref())
    }

    fn num_containers(&self) -> usize {
        self.cells.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let counts: Vec<Option<u64>> = self
            .cells
            .iter()
            .map(|c| c.stats.get(&column.name).map(|s| s.null_count))
            .collect();
        Some(Arc::new(UInt64Array::from(counts)))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(UInt64Array::from_iter_values(
            self.cells.iter().map(|c| c.rows),
        )))
    }

    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

/// Cells in the meadow, served to a chamber by byte range.
#[derive(Debug)]
struct MeadowCells {
    meadow: Meadow,
    runtime: tokio::runtime::Handle,
    cells: Vec<(String, u64)>,
}

impl MeadowCells {
    fn new(meadow: Meadow, cells: Vec<(String, u64)>) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Internal(format!("queries need a tokio runtime: {e}")))?;
        Ok(Self {
            meadow,
            runtime,
            cells,
        })
    }
}

impl ByteSource for MeadowCells {
    fn size(&self, cell: CellId) -> std::result::Result<u64, String> {
        self.cells
            .get(cell as usize)
            .map(|c| c.1)
            .ok_or_else(|| format!("cell {cell} is not part of this query"))
    }

    fn read(&self, cell: CellId, range: Range<u64>) -> std::result::Result<Bytes, String> {
        let (key, _) = self
            .cells
            .get(cell as usize)
            .ok_or_else(|| format!("cell {cell} is not part of this query"))?;
        self.runtime
            .block_on(self.meadow.get_range(key, range))
            .map_err(|e| e.to_string())
    }
}
