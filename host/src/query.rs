//! SQL over the lake: resolve frames with DataFusion's own planner, prune cells, run the
//! query in a chamber.
//!
//! A [`QuerySession`] plans each statement on the host against a catalog built from the
//! registry (hives are catalogs, boxes are schemas, frames are tables), so table references
//! are resolved by DataFusion itself: 1-, 2- and 3-part names, quoted identifiers, CTEs,
//! subqueries, self joins. The frames' table providers do not read anything: planning only
//! records, per scan, the filters the optimizer pushed to it. Those filters are evaluated
//! against each cell's statistics from the ledger (DataFusion's `PruningPredicate`). A cell
//! is dropped only when its statistics prove no row can match, so pruning never changes an
//! answer.
//!
//! A statement that reads one frame and whose plan can be cut (an aggregation, ORDER BY with
//! LIMIT, or a plain scan; see `apiary_engine::MergeKind`) runs as several fragments, one per
//! group of cells cut by the [leafcutter](crate::leafcutter), on as many bees at once, and a
//! merge over their partial results in the chamber of the fragment that finishes last (see
//! [`MergeHere`]; plain scans are concatenated on the host, and a statement shared with the
//! swarm merges in a chamber of its own). A statement that cannot be cut over its largest
//! frame's cells (it reads that frame twice, or a join needs all its rows at once) may still
//! be cut over ranges of a key its joins compare, such as `l_orderkey = o_orderkey`: every
//! fragment reads one range's rows of each keyed frame, from the cells whose statistics
//! allow that range, and the other frames whole. Ranges replace a cut by cells only where
//! they keep the fragments' cells apart, as in frames written in key order; where the cells
//! cannot be cut at all, they are taken even when every fragment reads every cell of a
//! keyed frame (TPC-H Q17 by part key). Everything else runs whole, in one chamber, with
//! the statement unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiary_engine::arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use apiary_engine::arrow::datatypes::{DataType, SchemaRef};
use apiary_engine::arrow::record_batch::RecordBatch;
use apiary_engine::lake::{CellMeta, ColumnStats, FrameSchema};
use apiary_engine::{
    ByteSource, CellId, CellRef, FunctionCaller, JoinColumn, KeyColumn, KeyRange, MergeKind,
    NoFunctions, PlanningScan, RowSlice, Splitting, Stage, TableCells, equi_join_columns,
    merge_kind, merge_kind_and_groups, plan_sorting_last, register_functions,
    split_optimizer_rules,
};
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, Session, TableProvider,
};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::{PruningPredicateBuilder, PruningStatistics};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::cells::MeadowCells;
use crate::chamber::{BoundFunction, MergeHere, PartialResults};
use crate::lake::FunctionEntry;
use crate::subquery::{self, Hoisting};
use crate::swarm::coordinator::{Coordination, Coordinator, Statement};
use crate::swarm::manifest::{TaskCell, WholeFrame};
use crate::swarm::{Band, CellCache, Distribute, SwarmConfig, Temperature, encode_partial};
use crate::{BeePool, ChamberStats, Error, Fragment, Lake, Result};
use crate::{commands, leafcutter};

/// The answer to one statement and what it took.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// Result schema.
    pub schema: Option<SchemaRef>,
    /// Result batches.
    pub batches: Vec<RecordBatch>,
    /// Cells of the frames the statement reads, before pruning.
    pub cells_total: usize,
    /// Cells left after statistics pruning (the ones the chambers may read).
    pub cells_scanned: usize,
    /// Each fragment's run, in order: one for a statement run whole, none for statements
    /// answered on the host.
    pub fragments: Vec<FragmentRun>,
    /// How a split statement's partial results were merged.
    pub merge: Option<MergeRun>,
    /// How the swarm ran the fragments, when other nodes took part.
    pub coordination: Option<Coordination>,
    /// This node's colony temperature when the statement started.
    pub temperature: Option<Temperature>,
    /// Bytes of cells this node fetched from storage for the statement (ranged reads the
    /// cell cache could not serve), and how many requests that took.
    pub storage_reads: (u64, u64),
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
            fragments: Vec::new(),
            merge: None,
            coordination: None,
            temperature: None,
            storage_reads: (0, 0),
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
            fragments: Vec::new(),
            merge: None,
            coordination: None,
            temperature: None,
            storage_reads: (0, 0),
            notes: vec![note],
        }
    }
}

/// One fragment of a statement and what its chamber measured.
#[derive(Debug, Clone)]
pub struct FragmentRun {
    /// How errors and plans name it: `the fragment`, `fragment 2 of 5`.
    pub label: String,
    /// Cells it was given.
    pub cells: usize,
    /// The node that ran it; `None` for this node.
    pub node: Option<String>,
    /// Attempts it took (more than 1 when it was reassigned).
    pub attempts: u32,
    /// The chamber's measurements.
    pub stats: ChamberStats,
}

/// How a split statement's partial results became its answer.
#[derive(Debug, Clone)]
pub struct MergeRun {
    /// What the merge did.
    pub kind: MergeKind,
    /// Bytes of partial results (Arrow IPC) the merge read.
    pub input_bytes: u64,
    /// The merge chamber's measurements; `None` when the host concatenated the rows.
    pub stats: Option<ChamberStats>,
    /// Wall time of the merge.
    pub elapsed: Duration,
    /// The fragment in whose chamber the merge ran (the last to finish), by its label;
    /// `None` for a merge in a chamber of its own, or on the host.
    pub in_chamber_of: Option<String>,
}

/// A SQL session on a lake: the current hive and box, and the bees that run fragments.
pub struct QuerySession {
    pub(crate) lake: Arc<Lake>,
    pub(crate) pool: Arc<BeePool>,
    pub(crate) hive: String,
    pub(crate) box_name: String,
    fragment_cap: Option<u64>,
    cache: Option<Arc<CellCache>>,
    pub(crate) swarm: Option<SwarmConfig>,
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

/// A planned statement, ready for the bees.
struct Prepared {
    sql: String,
    /// Whether some frame it reads could be cut into several fragments.
    divisible: bool,
    functions: Vec<BoundFunction>,
    function_entries: BTreeMap<String, FunctionEntry>,
    tables: Vec<TableCells>,
    schemas: Vec<FrameSchema>,
    source: Arc<MeadowCells>,
    frames: Vec<FramePruning>,
    plan: Plan,
}

/// Whether a statement runs whole or in parts.
enum Plan {
    /// In one chamber, for this reason.
    Whole(&'static str),
    /// One fragment per cell group of one table (every fragment reads all the cells of the
    /// others), then a merge.
    Split {
        kind: MergeKind,
        /// Index of the split table in [`Prepared::tables`].
        table: usize,
        groups: Vec<Vec<CellRef>>,
        /// The most bytes of cells a group may take (`u64::MAX`: no limit).
        max_group_bytes: u64,
        /// How many groups the bees' budget alone would make: whether the work outgrows
        /// this node, for a join too (whose groups are one per bee).
        budget_groups: usize,
        /// The cut is an aggregation under a join: the merge reads the other frames, and
        /// the statement runs on this node's bees.
        below_joins: bool,
        /// Under such a cut, every fragment keeps only the rows of the groups the join
        /// above can match.
        reduced: bool,
        /// How many times the statement reads the split table: more than once only through
        /// one aggregation under a join, cut once for every read.
        reads: usize,
    },
    /// One fragment per range of a key the statement's joins compare: each reads the rows
    /// of that range from every scan of the keyed frames, and the other frames whole. Then
    /// a merge. Runs on this node's bees.
    Keyed {
        kind: MergeKind,
        /// The keyed frames: indexes in [`Prepared::tables`] and their key columns.
        keys: Vec<(usize, String)>,
        /// Each fragment's range, and its cells of each keyed frame (in the order of
        /// `keys`): the cells whose statistics allow keys in the range.
        fragments: Vec<(KeyRange, Vec<Vec<CellRef>>)>,
    },
}

/// Why a statement of one frame runs whole when it reads the frame more than once.
const READS_ITS_FRAME_TWICE: &str = "it reads its frame more than once";
/// Why a statement runs whole when it reads its largest frame more than once.
const READS_ITS_LARGEST_FRAME_TWICE: &str = "it reads its largest frame more than once";

/// What the scalar subqueries that ran first, as statements of their own, did.
#[derive(Default)]
struct Hoisted {
    /// Their fragments, labelled with the subquery.
    fragments: Vec<FragmentRun>,
    /// One line per subquery: how it ran and the value that stands for it.
    notes: Vec<String>,
    /// Bytes and ranged reads of cells their fragments fetched from storage.
    storage_reads: (u64, u64),
}

/// A split by key ranges ([`Plan::Keyed`]), and what it costs in reading.
struct KeyedSplit {
    plan: Plan,
    /// Whether each fragment reads about every cell of the keyed frames (their cells do not
    /// follow the key), rather than its range's share.
    mixed: bool,
    /// How many keyed frames besides the largest have cells for the ranges to share out.
    divides: usize,
    /// How many fragments (ranges) it makes.
    fragments: usize,
}

/// What planning saw of one frame scan.
#[derive(Debug, Clone)]
struct ScanRecord {
    frame: String,
    filters: Vec<Expr>,
    /// The plan's leaf for this scan.
    exec: Arc<dyn ExecutionPlan>,
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
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let exec: Arc<dyn ExecutionPlan> = Arc::new(PlanningScan::new(schema));
        if let Ok(mut scans) = self.scans.lock() {
            scans.push(ScanRecord {
                frame: self.name.clone(),
                filters: filters.to_vec(),
                exec: exec.clone(),
            });
        }
        Ok(exec)
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
            fragment_cap: None,
            cache: None,
            swarm: None,
        }
    }

    /// Read cells through `cache`, and share split statements with the swarm as `swarm`
    /// says.
    #[must_use]
    pub fn with_swarm(mut self, swarm: Option<SwarmConfig>, cache: Option<Arc<CellCache>>) -> Self {
        self.swarm = swarm;
        self.cache = cache;
        self
    }

    /// Cap the cells one fragment may take, in bytes, below the default: a quarter of a bee's
    /// budget, and no cap for a statement with joins, which is cut into one fragment per
    /// bee, at most one per core (see [`leafcutter::fragment_limit`]).
    /// Smaller caps cut statements into more fragments.
    #[must_use]
    pub fn with_max_fragment_bytes(mut self, bytes: u64) -> Self {
        self.fragment_cap = Some(bytes);
        self
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
        let temperature = self.admit()?;
        let (prepared, hoisted) = self.prepare_hoisting(sql).await?;
        let fetched = prepared.source.fetched();
        let mut output = self.run(prepared).await?;
        output.storage_reads = (fetched.bytes(), fetched.calls());
        if let Some(hoisted) = hoisted {
            // The answer's text stays the same however the statement ran: what the
            // subqueries did goes to the log and to EXPLAIN, not to the notes.
            for note in &hoisted.notes {
                tracing::info!("{note}");
            }
            output.fragments.splice(0..0, hoisted.fragments);
            output.storage_reads.0 += hoisted.storage_reads.0;
            output.storage_reads.1 += hoisted.storage_reads.1;
        }
        output.temperature = Some(temperature);
        Ok(output)
    }

    /// Prepare `sql`. Where it would run whole because it reads its largest frame twice, and
    /// some of its scalar subqueries plan on their own, those run first (see
    /// [`crate::subquery`]) and the statement is prepared again with their values.
    async fn prepare_hoisting(&self, sql: &str) -> Result<(Prepared, Option<Hoisted>)> {
        let prepared = self.prepare(sql).await?;
        let reads_twice = matches!(
            prepared.plan,
            Plan::Whole(READS_ITS_FRAME_TWICE | READS_ITS_LARGEST_FRAME_TWICE)
        );
        // A frame of one small cell makes one fragment anyway.
        let hoisting = match (reads_twice && prepared.divisible).then(|| Hoisting::of(sql)) {
            Some(Some(hoisting)) => hoisting,
            _ => return Ok((prepared, None)),
        };
        let mut hoisted = Hoisted::default();
        let mut values = Vec::new();
        for i in 0..hoisting.len() {
            // A subquery that refers to the outer query does not plan on its own.
            let Ok(statement) = self.prepare(&hoisting.standalone(i)).await else {
                values.push(None);
                continue;
            };
            let fetched = statement.source.fetched();
            let output = self.run(statement).await?;
            hoisted.storage_reads.0 += fetched.bytes();
            hoisted.storage_reads.1 += fetched.calls();
            let value = match output.schema.as_deref().map(|s| s.fields()) {
                Some(fields) if fields.len() == 1 => subquery::literal(
                    fields[0].data_type(),
                    &output
                        .batches
                        .iter()
                        .map(|b| b.column(0).clone())
                        .collect::<Vec<_>>(),
                )?,
                _ => None,
            };
            let Some(value) = value else {
                values.push(None);
                continue;
            };
            let n = i + 1;
            hoisted.notes.push(format!(
                "scalar subquery {n} ran first, as a statement of its own in {} fragment{}{}: \
                 {value} stands for it",
                output.fragments.len(),
                if output.fragments.len() == 1 { "" } else { "s" },
                output.merge.as_ref().map_or(String::new(), |m| format!(
                    " and a merge ({:.1} ms)",
                    m.elapsed.as_secs_f64() * 1e3
                )),
            ));
            hoisted
                .fragments
                .extend(output.fragments.into_iter().map(|run| FragmentRun {
                    label: format!("subquery {n}, {}", run.label),
                    ..run
                }));
            values.push(Some(value));
        }
        if values.iter().all(Option::is_none) {
            return Ok((prepared, None));
        }
        let prepared = self.prepare(&hoisting.substitute(&values)).await?;
        Ok((prepared, Some(hoisted)))
    }

    /// This node's temperature, or [`Error::Overheated`] when it is critical.
    fn admit(&self) -> Result<Temperature> {
        let temperature = Temperature::of(self.pool.load());
        if temperature.band == Band::Critical {
            return Err(Error::Overheated {
                node: self
                    .swarm
                    .as_ref()
                    .map_or_else(|| "this node".to_owned(), |s| s.node.clone()),
                temperature: temperature.to_string(),
                what: "new queries".into(),
            });
        }
        Ok(temperature)
    }

    async fn run(&self, prepared: Prepared) -> Result<QueryOutput> {
        let Prepared {
            sql,
            functions,
            function_entries,
            tables,
            schemas,
            source,
            frames,
            plan,
            ..
        } = prepared;
        let (cells_total, cells_scanned) = frames
            .iter()
            .fold((0, 0), |(t, s), f| (t + f.cells_total, s + f.cells_kept));
        let fragment = |tables: Vec<TableCells>, source: Arc<dyn ByteSource>| {
            self.fragment(&sql, tables, source)
                .with_functions(functions.clone())
        };
        let pool = self.pool.clone();
        let (schema, batches, fragments, merge, coordination) = match plan {
            Plan::Whole(reason) => {
                tracing::info!(reason, "statement runs whole in one chamber");
                let cells = tables.iter().map(|t| t.cells.len()).sum();
                let whole = fragment(tables, source);
                let output = blocking(move || pool.run(whole)).await?;
                let run = FragmentRun {
                    label: "the fragment".into(),
                    cells,
                    node: None,
                    attempts: 1,
                    stats: output.stats,
                };
                (output.schema, output.batches, vec![run], None, None)
            }
            Plan::Split {
                kind,
                table: split,
                groups,
                budget_groups,
                below_joins,
                ..
            } => {
                tracing::info!(
                    fragments = groups.len(),
                    merge = ?kind,
                    "statement split across bees"
                );
                let table = tables
                    .get(split)
                    .cloned()
                    .ok_or_else(|| Error::Internal("a split statement without a table".into()))?;
                // Slices of rows stay on this node's bees; the swarm shares whole cells. So
                // does a statement whose merge reads frames itself.
                if let (Some(config), Some(schema), false, false) = (
                    &self.swarm,
                    schemas.get(split).cloned(),
                    sliced(&groups),
                    below_joins,
                ) {
                    let coordinator = Coordinator {
                        lake: &self.lake,
                        pool: &self.pool,
                        cache: self.cache.clone(),
                        config,
                        fragment_cap: self.fragment_cap,
                        functions: functions.clone(),
                    };
                    let statement = Statement {
                        sql: sql.clone(),
                        functions: function_entries.clone(),
                        namespace: (self.hive.clone(), self.box_name.clone()),
                        table: table.name.clone(),
                        schema,
                        kind,
                        cells: table
                            .cells
                            .iter()
                            .filter_map(|c| source.cell(c.id))
                            .collect(),
                        whole: tables
                            .iter()
                            .zip(&schemas)
                            .enumerate()
                            .filter(|(i, _)| *i != split)
                            .map(|(_, (t, schema))| WholeFrame {
                                table: t.name.clone(),
                                schema: schema.clone(),
                                cells: t
                                    .cells
                                    .iter()
                                    .filter_map(|c| source.cell(c.id))
                                    .map(|(key, size)| TaskCell { key, size })
                                    .collect(),
                            })
                            .collect(),
                    };
                    if let Some((runs, coordination)) =
                        coordinator.run(&statement, budget_groups).await?
                    {
                        let merged = self
                            .merge(
                                kind,
                                &sql,
                                &tables,
                                &functions,
                                runs.iter().map(|r| (r.schema.clone(), &r.batches)),
                            )
                            .await?;
                        let runs = runs
                            .into_iter()
                            .map(|r| FragmentRun {
                                node: (r.node != config.node).then_some(r.node),
                                label: r.label,
                                cells: r.cells,
                                attempts: r.attempts,
                                stats: r.stats,
                            })
                            .collect();
                        return Ok(QueryOutput {
                            schema: merged.0,
                            batches: merged.1,
                            cells_total,
                            cells_scanned,
                            fragments: runs,
                            merge: Some(merged.2),
                            coordination: Some(coordination),
                            temperature: None,
                            storage_reads: (0, 0),
                            notes: Vec::new(),
                        });
                    }
                }
                let count = groups.len();
                let partials = groups
                    .into_iter()
                    .enumerate()
                    .map(|(i, cells)| {
                        let label = format!("fragment {} of {count}", i + 1);
                        let given = cells.len();
                        let mut part = tables.clone();
                        part[split].cells = cells;
                        let fragment = Fragment {
                            stage: Stage::Partial {
                                split: table.name.clone(),
                            },
                            label: label.clone(),
                            ..fragment(part, source.clone())
                        };
                        (fragment, label, given)
                    })
                    .collect();
                let (runs, merged) = self
                    .run_partials(kind, &sql, &tables, &functions, partials)
                    .await?;
                (merged.0, merged.1, runs, Some(merged.2), None)
            }
            Plan::Keyed {
                kind,
                keys,
                fragments,
            } => {
                tracing::info!(
                    fragments = fragments.len(),
                    merge = ?kind,
                    "statement split by key ranges across bees"
                );
                let count = fragments.len();
                let partials = fragments
                    .into_iter()
                    .enumerate()
                    .map(|(i, (range, cells))| {
                        let label = format!("fragment {} of {count}", i + 1);
                        let mut part = tables.clone();
                        for ((table, _), cells) in keys.iter().zip(cells) {
                            part[*table].cells = cells;
                        }
                        let given = part.iter().map(|t| t.cells.len()).sum();
                        let fragment = Fragment {
                            stage: Stage::Keyed(range),
                            label: label.clone(),
                            ..fragment(part, source.clone())
                        };
                        (fragment, label, given)
                    })
                    .collect();
                let (runs, merged) = self
                    .run_partials(kind, &sql, &tables, &functions, partials)
                    .await?;
                (merged.0, merged.1, runs, Some(merged.2), None)
            }
        };
        Ok(QueryOutput {
            schema,
            batches,
            cells_total,
            cells_scanned,
            fragments,
            merge,
            coordination,
            temperature: None,
            storage_reads: (0, 0),
            notes: Vec::new(),
        })
    }

    /// Run the partial fragments of a split statement on this node's bees, each with its
    /// label and how many cells it was given, and merge their results: in the chamber of the
    /// fragment that finishes last, which for a cut under a join reads the other frames
    /// through its own cells, or on the host for rows to concatenate.
    async fn run_partials(
        &self,
        kind: MergeKind,
        sql: &str,
        tables: &[TableCells],
        functions: &[BoundFunction],
        partials: Vec<(Fragment, String, usize)>,
    ) -> Result<(
        Vec<FragmentRun>,
        (Option<SchemaRef>, Vec<RecordBatch>, MergeRun),
    )> {
        let pool = self.pool.clone();
        // The fragment that finishes last merges them all in its chamber (rows to
        // concatenate need no chamber).
        let here = (kind != MergeKind::Concatenate).then(|| MergeHere::new(partials.len()));
        let (partials, labels): (Vec<Fragment>, Vec<(String, usize)>) = partials
            .into_iter()
            .enumerate()
            .map(|(i, (fragment, label, cells))| {
                let fragment = Fragment {
                    merge_here: here.clone().map(|here| (here, i)),
                    ..fragment
                };
                (fragment, (label, cells))
            })
            .unzip();
        let mut outputs = blocking(move || {
            let answers = partials
                .into_iter()
                .map(|f| pool.submit(f))
                .collect::<Result<Vec<_>>>()?;
            answers
                .into_iter()
                .map(|a| a.recv().map_err(|_| Error::PoolClosed)?)
                .collect::<Result<Vec<_>>>()
        })
        .await?;
        if let Some(other) = outputs.iter().find(|o| o.stats.merge != Some(kind)) {
            return Err(Error::Internal(format!(
                "a chamber cut the statement for {:?} where the host planned {kind:?}",
                other.stats.merge
            )));
        }
        let merged = match here {
            Some(_) => {
                let Some((index, merger, (stats, input_bytes))) =
                    outputs.iter_mut().enumerate().find_map(|(i, o)| {
                        let merged = o.merged.take()?;
                        Some((i, o, merged))
                    })
                else {
                    return Err(Error::Internal(
                        "no fragment merged the partial results".into(),
                    ));
                };
                let run = MergeRun {
                    kind,
                    input_bytes,
                    elapsed: stats.elapsed,
                    stats: Some(stats),
                    in_chamber_of: labels.get(index).map(|(label, _)| label.clone()),
                };
                (
                    merger.schema.take(),
                    std::mem::take(&mut merger.batches),
                    run,
                )
            }
            None => {
                self.merge(
                    kind,
                    sql,
                    tables,
                    functions,
                    outputs.iter().map(|o| (o.schema.clone(), &o.batches)),
                )
                .await?
            }
        };
        let runs = labels
            .into_iter()
            .zip(outputs)
            .map(|((label, cells), o)| FragmentRun {
                label,
                cells,
                node: None,
                attempts: 1,
                stats: o.stats,
            })
            .collect();
        Ok((runs, merged))
    }

    /// A fragment running `sql` over `tables` in this session's hive and box.
    fn fragment(
        &self,
        sql: &str,
        tables: Vec<TableCells>,
        source: Arc<dyn ByteSource>,
    ) -> Fragment {
        Fragment {
            default_namespace: (self.hive.clone(), self.box_name.clone()),
            ..Fragment::new(sql, tables, source)
        }
    }

    /// Combine the partial results of a split statement: concatenated on the host, or
    /// merged in a chamber of their own (a statement shared with the swarm, whose cut is
    /// never under a join, so the merge reads no frame).
    async fn merge<'a>(
        &self,
        kind: MergeKind,
        sql: &str,
        tables: &[TableCells],
        functions: &[BoundFunction],
        partials: impl Iterator<Item = (Option<SchemaRef>, &'a Vec<RecordBatch>)>,
    ) -> Result<(Option<SchemaRef>, Vec<RecordBatch>, MergeRun)> {
        let started = Instant::now();
        let partials: Vec<_> = partials.collect();
        if kind == MergeKind::Concatenate {
            let schema = partials.iter().find_map(|(s, _)| s.clone());
            let batches: Vec<RecordBatch> = partials
                .iter()
                .flat_map(|(_, b)| b.iter().cloned())
                .collect();
            let run = MergeRun {
                kind,
                input_bytes: batches
                    .iter()
                    .map(|b| b.get_array_memory_size() as u64)
                    .sum(),
                stats: None,
                elapsed: started.elapsed(),
                in_chamber_of: None,
            };
            return Ok((schema, batches, run));
        }
        let streams = partials
            .iter()
            .map(|(schema, batches)| encode_partial(schema.as_ref(), batches))
            .collect::<Result<Vec<Bytes>>>()?;
        // The merge reads no cell: the partial results take handles from 0.
        let inputs: Vec<CellRef> = streams
            .iter()
            .enumerate()
            .map(|(i, b)| CellRef::whole(i as CellId, b.len() as u64))
            .collect();
        let input_bytes = inputs.iter().map(|c| c.size).sum();
        let tables: Vec<TableCells> = tables
            .iter()
            .map(|t| TableCells {
                cells: Vec::new(),
                ..t.clone()
            })
            .collect();
        let partials = PartialResults {
            first: 0,
            streams,
            cells: None,
        };
        let merge = Fragment {
            stage: Stage::Merge { inputs },
            label: "the merge".into(),
            ..self
                .fragment(sql, tables, Arc::new(partials))
                .with_functions(functions.to_vec())
        };
        let pool = self.pool.clone();
        let output = blocking(move || pool.run(merge)).await?;
        let run = MergeRun {
            kind,
            input_bytes,
            stats: Some(output.stats),
            elapsed: started.elapsed(),
            in_chamber_of: None,
        };
        Ok((output.schema, output.batches, run))
    }

    /// `EXPLAIN [ANALYZE] query`: the frames and their pruning, the fragments and bees, and
    /// with ANALYZE what each fragment measured.
    async fn explain(&self, query: &str, analyze: bool) -> Result<QueryOutput> {
        let (prepared, hoisted) = self.prepare_hoisting(query).await?;
        let hoisted = hoisted.unwrap_or_default();
        let mut rows: Vec<(String, String)> = hoisted
            .notes
            .iter()
            .map(|note| ("subquery".to_owned(), note.clone()))
            .collect();
        rows.extend(prepared.frames.iter().map(|f| {
            (
                format!("scan {}", f.name),
                format!(
                    "{} cells, {} after partition and statistics pruning",
                    f.cells_total, f.cells_kept
                ),
            )
        }));
        let bees = self.pool.config().bees;
        match &prepared.plan {
            Plan::Whole(reason) => {
                rows.push((
                    "fragments".into(),
                    format!("1 fragment: the whole statement in one chamber ({reason})"),
                ));
                rows.push(("merge".into(), "none".into()));
            }
            Plan::Split {
                kind,
                table,
                groups,
                max_group_bytes,
                below_joins,
                reduced,
                reads,
                ..
            } => {
                let cells = groups
                    .iter()
                    .flatten()
                    .map(|c| c.id)
                    .collect::<BTreeSet<_>>()
                    .len();
                let slices = if sliced(groups) {
                    " cut into slices of rows"
                } else {
                    ""
                };
                // With several frames, say which one is split.
                let split = match prepared.tables.as_slice() {
                    [_] => String::new(),
                    tables if *below_joins => format!(
                        " of {} (each aggregates its part{}{}; the merge joins the aggregates \
                         to the other frames, which it reads itself)",
                        tables[*table].name,
                        if *reads > 1 {
                            format!(" once for the statement's {reads} reads of it")
                        } else {
                            String::new()
                        },
                        if *reduced {
                            ", only the groups the join above can match"
                        } else {
                            ""
                        }
                    ),
                    tables => format!(
                        " of {} (every fragment reads the other frames whole)",
                        tables[*table].name
                    ),
                };
                let limit = match *max_group_bytes {
                    u64::MAX => String::new(),
                    bytes => format!(" (at most {:.1} MiB of cells each)", bytes as f64 / MIB),
                };
                rows.push((
                    "fragments".into(),
                    format!(
                        "{} fragments over {cells} cells{slices}{split}{limit}, {} at a time on \
                         {bees} bees",
                        groups.len(),
                        groups.len().min(bees),
                    ),
                ));
                rows.push(("merge".into(), merge_line(*kind)));
            }
            Plan::Keyed {
                kind,
                keys,
                fragments,
            } => {
                let keyed: Vec<String> = keys
                    .iter()
                    .map(|(t, column)| format!("{column} of {}", prepared.tables[*t].name))
                    .collect();
                let cells: usize = fragments
                    .iter()
                    .flat_map(|(_, cells)| cells.iter().map(Vec::len))
                    .sum();
                let others = if keys.len() < prepared.tables.len() {
                    " (every fragment reads the other frames whole)"
                } else {
                    ""
                };
                rows.push((
                    "fragments".into(),
                    format!(
                        "{} fragments over ranges of the key {}, {cells} cells of them in all{others}, \
                         {} at a time on {bees} bees",
                        fragments.len(),
                        keyed.join(", "),
                        fragments.len().min(bees),
                    ),
                ));
                rows.push(("merge".into(), merge_line(*kind)));
            }
        }
        if analyze {
            let fetched = prepared.source.fetched();
            let output = self.run(prepared).await?;
            let fetched = format!(
                "{} bytes of cells fetched in {} ranged reads on this node",
                fetched.bytes() + hoisted.storage_reads.0,
                fetched.calls() + hoisted.storage_reads.1
            );
            rows.push((
                "storage".into(),
                match self.cache {
                    Some(_) => format!("{fetched} (the rest came from its cell cache)"),
                    None => fetched,
                },
            ));
            if let Some(t) = &output.temperature {
                rows.push((
                    "temperature".into(),
                    format!("{t} when the statement started"),
                ));
            }
            if let Some(c) = &output.coordination {
                rows.push((
                    "swarm".into(),
                    format!(
                        "query {} on {} nodes ({}): {} manifest writes, {} polls, {} reassigned, {:.1} ms from manifest to last partial result",
                        c.query,
                        c.nodes.len(),
                        c.nodes.join(", "),
                        c.manifest_writes,
                        c.polls,
                        c.reassigned,
                        c.elapsed.as_secs_f64() * 1e3
                    ),
                ));
            }
            for run in hoisted.fragments.iter().chain(&output.fragments) {
                let stats = &run.stats;
                let node = run
                    .node
                    .as_ref()
                    .map(|n| format!("node {n}, "))
                    .unwrap_or_default();
                let attempts = if run.attempts > 1 {
                    format!(" (attempt {})", run.attempts)
                } else {
                    String::new()
                };
                let joins = if stats.sort_merge_joins {
                    "; its hash joins did not fit the pool, so it ran again with sort-merge joins that spill"
                } else {
                    ""
                };
                rows.push((
                    format!("{}{attempts}", run.label),
                    format!(
                        "{node}bee {}: {} cells, {} bytes read in {} reads ({:.1} ms), {} rows, {:.1} ms (planning {:.1} ms), peak chamber memory {:.1} MiB of a {:.0} MiB budget{joins}",
                        stats.bee,
                        run.cells,
                        stats.bytes_read,
                        stats.read_calls,
                        stats.read_time.as_secs_f64() * 1e3,
                        stats.rows,
                        stats.elapsed.as_secs_f64() * 1e3,
                        stats.planning.as_secs_f64() * 1e3,
                        stats.peak_memory as f64 / MIB,
                        stats.budget as f64 / MIB
                    ),
                ));
            }
            if let Some(merge) = &output.merge {
                let place = merge
                    .in_chamber_of
                    .as_ref()
                    .map_or_else(String::new, |label| format!(", in the chamber of {label}"));
                let detail = match &merge.stats {
                    Some(stats) => format!(
                        "bee {}{place}: {} bytes of partial results, {} rows, {:.1} ms, peak chamber memory {:.1} MiB of a {:.0} MiB budget",
                        stats.bee,
                        merge.input_bytes,
                        stats.rows,
                        merge.elapsed.as_secs_f64() * 1e3,
                        stats.peak_memory as f64 / MIB,
                        stats.budget as f64 / MIB
                    ),
                    None => format!(
                        "host: {} rows concatenated in {:.1} ms",
                        output
                            .batches
                            .iter()
                            .map(RecordBatch::num_rows)
                            .sum::<usize>(),
                        merge.elapsed.as_secs_f64() * 1e3
                    ),
                };
                rows.push(("merge".into(), detail));
            }
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
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rules(split_optimizer_rules())
            .build();
        let ctx = SessionContext::new_with_state(state);
        // The host only plans: user-defined functions run in the chambers.
        let caller: Arc<dyn FunctionCaller> = Arc::new(NoFunctions);
        register_functions(&ctx, &crate::udf::signatures(&registry)?, &caller);
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
        let physical = plan_sorting_last(&state, &plan).await.map_err(sql_error)?;
        let called = called_functions(&plan, &registry.functions);
        let functions =
            crate::udf::bind(&self.lake, self.pool.engine(), &registry.functions, &called).await?;
        let function_entries = registry
            .functions
            .iter()
            .filter(|(name, _)| called.contains(*name))
            .map(|(name, entry)| (name.clone(), entry.clone()))
            .collect();
        let scans = scans.lock().map(|s| s.clone()).unwrap_or_default();

        // Prune each frame's cells with the filters of every scan of it. A frame the
        // statement names but its plan never scans (`WHERE false`, a comparison with null)
        // goes to the chamber with no cells: the chamber still resolves its name.
        let mut frames: BTreeMap<String, Option<Vec<Vec<Expr>>>> = BTreeMap::new();
        for scan in &scans {
            frames
                .entry(scan.frame.clone())
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_default()
                .push(scan.filters.clone());
        }
        for name in named_frames(&plan, &self.hive, &self.box_name) {
            frames.entry(name).or_insert(None);
        }
        let mut tables = Vec::new();
        let mut schemas = Vec::new();
        let mut keys = Vec::new();
        let mut pruned = Vec::new();
        let mut metas = Vec::new();
        // The frames' ledgers are read all at once: each read waits on storage (a third of
        // a millisecond a frame on a local disk), and TPC-H Q8 reads seven frames.
        let states =
            futures::future::try_join_all(frames.keys().map(|name| self.lake.frame(name))).await?;
        for ((name, filters), (entry, frame_state)) in frames.into_iter().zip(states) {
            let schema = Arc::new(frame_state.schema.to_arrow());
            let cells: Vec<&CellMeta> = frame_state.cells().collect();
            let keep = match &filters {
                Some(filters) => prune(&ctx, &schema, &cells, filters)?,
                None => vec![false; cells.len()],
            };
            let mut refs = Vec::new();
            let mut kept = Vec::new();
            for (cell, keep) in cells.iter().zip(keep) {
                if keep {
                    kept.push((*cell).clone());
                    refs.push(CellRef::whole(keys.len() as CellId, cell.bytes));
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
            schemas.push(frame_state.schema.clone());
            metas.push(kept);
        }
        let source = Arc::new(MeadowCells::new(
            self.lake.meadow().clone(),
            keys,
            self.cache.clone(),
        )?);
        let plan = self.plan(&physical, &scans, &tables, &metas);
        // Several cells, or one frame with rows enough to cut into slices (see `plan`: joins
        // keep their cells whole).
        let divisible = match metas.as_slice() {
            [cells] => {
                cells.len() > 1
                    || cells.iter().map(|c| c.rows).sum::<u64>() >= 2 * leafcutter::MIN_SLICE_ROWS
            }
            frames => frames.iter().any(|cells| cells.len() > 1),
        };
        Ok(Prepared {
            divisible,
            sql: sql.to_owned(),
            functions,
            function_entries,
            tables,
            schemas,
            source,
            frames: pruned,
            plan,
        })
    }

    /// Whether to run a statement whole or split, and how: over groups of the largest
    /// frame's cells (every fragment reads the others whole), or, when that cannot cut it,
    /// over ranges of a key its joins compare. `metas` are the kept cells' ledger entries,
    /// table by table.
    fn plan(
        &self,
        physical: &Arc<dyn ExecutionPlan>,
        scans: &[ScanRecord],
        tables: &[TableCells],
        metas: &[Vec<CellMeta>],
    ) -> Plan {
        let bytes = |t: &TableCells| t.cells.iter().map(|c| c.size).sum::<u64>();
        let Some((index, table)) = tables
            .iter()
            .enumerate()
            .rev()
            .max_by_key(|(_, t)| bytes(t))
        else {
            return Plan::Whole("it reads no frame");
        };
        let reads: Vec<&ScanRecord> = scans.iter().filter(|s| s.frame == table.name).collect();
        if reads.is_empty() {
            return Plan::Whole("its plan reads no cells");
        }
        let mut below_joins = false;
        let mut reduced = false;
        // A frame read more than once splits only where every read goes through the same
        // aggregation, cut once for all of them (TPC-H Q15's common table expression).
        let is_split_scan = |node: &dyn ExecutionPlan| {
            reads.iter().any(|read| {
                std::ptr::addr_eq(node as *const dyn ExecutionPlan, Arc::as_ptr(&read.exec))
            })
        };
        let reads_twice = if tables.len() == 1 {
            READS_ITS_FRAME_TWICE
        } else {
            READS_ITS_LARGEST_FRAME_TWICE
        };
        let kind = match merge_kind_and_groups(physical, Splitting::Cells(&is_split_scan)) {
            Some((kind, Some(cut))) => {
                if cut.reduced || few_groups(&cut.groups, &reads, &metas[index]) {
                    below_joins = true;
                    reduced = cut.reduced;
                    Ok(kind)
                } else if reads.len() > 1 {
                    // Its scalar subqueries may run first (see `prepare_hoisting`).
                    Err(reads_twice)
                } else {
                    Err(
                        "its plan can be cut only at an aggregation under a join, the cells' \
                         statistics do not bound its groups well below its rows, and no \
                         filtered join above keeps only some of them",
                    )
                }
            }
            Some((kind, None)) if reads.len() == 1 => Ok(kind),
            None if reads.len() == 1 => Err(if tables.len() == 1 {
                "its plan cannot be cut: a window, full sort or bare LIMIT"
            } else {
                "its plan cannot be cut: a window, full sort or bare LIMIT, or a join that \
                 needs all the rows of its largest frame at once"
            }),
            _ => Err(reads_twice),
        };
        let kind = match kind {
            Ok(kind) => kind,
            Err(reason) => {
                return self
                    .plan_keyed(physical, scans, tables, metas, index)
                    .map_or(Plan::Whole(reason), |split| split.plan);
            }
        };
        let sizes: Vec<u64> = table.cells.iter().map(|c| c.size).collect();
        // A join gets a group per bee however large (unless the session set a cap; see
        // `leafcutter::fragment_limit`), and here no more groups than the machine has cores
        // to build the join's hash tables at once.
        let joins = tables.len() > 1;
        let max_group_bytes =
            leafcutter::fragment_limit(self.pool.config().budget, self.fragment_cap, joins);
        let mut bees = self.pool.config().bees;
        if joins && self.fragment_cap.is_none() {
            let cores = crate::config::machine_cores();
            bees = bees.min(cores);
        }
        let groups = leafcutter::cut_cell_groups(&sizes, bees, max_group_bytes);
        let budget_limit =
            leafcutter::fragment_limit(self.pool.config().budget, self.fragment_cap, false);
        let budget_groups = if max_group_bytes == budget_limit {
            groups.len()
        } else {
            leafcutter::cut_cell_groups(&sizes, self.pool.config().bees, budget_limit).len()
        };
        // `distribute = always` shares any frame of several cells with the swarm, even one
        // this node would read in one group; `auto` shares work that outgrows this node's
        // bees, a join's too.
        // A merge that reads frames itself stays on this node, with its fragments.
        let shared = !below_joins
            && match self.swarm.as_ref().map(|s| s.distribute) {
                Some(Distribute::Always) => table.cells.len() > 1,
                Some(Distribute::Auto) => budget_groups > self.pool.config().bees,
                _ => false,
            };
        // Fewer groups than bees (a frame of one large cell): cut the cells' rows instead,
        // so that every bee reads a share. Slices stay on this node's bees, and joins keep
        // their cells whole: every fragment of a join builds the hash tables of the frames
        // it reads whole, and the one TPC-H statement this would cut (Q16) ran slower.
        let slices = if shared || joins || groups.len() >= bees {
            None
        } else {
            row_slices(&table.cells, &metas[index], bees)
        };
        let groups: Vec<Vec<CellRef>> = match slices {
            Some(slices) if slices.len() > groups.len() => slices,
            _ => groups
                .into_iter()
                .map(|range| table.cells[range].to_vec())
                .collect(),
        };
        if groups.len() < 2 && !shared {
            return Plan::Whole("its cells make one group");
        }
        // Ranges of a key that keep apart the cells of the largest frame and of another
        // frame of several cells share out that frame's reading and hash tables too, where
        // a split by cells gives every fragment all of it (TPC-H's orders, joined to
        // lineitem by order key). Only for as many fragments: each reads the frames outside
        // the key whole, and a small budget asks for more ranges than cell groups. Key
        // ranges run on this node's bees only: work shared with the swarm keeps its cells.
        if !shared
            && let Some(split) = self.plan_keyed(physical, scans, tables, metas, index)
            && !split.mixed
            && split.divides > 0
            && split.fragments <= groups.len()
        {
            return split.plan;
        }
        Plan::Split {
            kind,
            budget_groups,
            max_group_bytes,
            table: index,
            groups,
            below_joins,
            reduced,
            reads: reads.len(),
        }
    }

    /// A split by ranges of a key the joins of `physical` compare, one that holds a column
    /// of the largest frame (`largest` in `tables`); `None` when no such key cuts the plan,
    /// the key's cells have no statistics, or the bees make one fragment.
    fn plan_keyed(
        &self,
        physical: &Arc<dyn ExecutionPlan>,
        scans: &[ScanRecord],
        tables: &[TableCells],
        metas: &[Vec<CellMeta>],
        largest: usize,
    ) -> Option<KeyedSplit> {
        let candidates: Vec<_> = join_keys(physical, scans, tables)
            .into_iter()
            .filter_map(|key| {
                if !is_integer_key(&key, tables) {
                    return None;
                }
                let (_, column) = key.iter().find(|(t, _)| *t == largest)?;
                let column = column.clone();
                let key_scan = |node: &dyn ExecutionPlan| {
                    let scan = scans.iter().find(|s| {
                        std::ptr::addr_eq(node as *const dyn ExecutionPlan, Arc::as_ptr(&s.exec))
                    })?;
                    let (_, column) = key.iter().find(|(t, _)| tables[*t].name == scan.frame)?;
                    Some(node.schema().index_of(column).into_iter().collect())
                };
                let kind = merge_kind(physical, Splitting::Keys(&key_scan))?;
                Some((key.clone(), column, kind))
            })
            .collect();
        // The first key whose ranges keep the fragments' cells apart, else the first that
        // cuts the plan at all.
        let mut first = None;
        for (key, column, kind) in candidates {
            let Some(split) = self.keyed_split(tables, metas, largest, key, &column, kind) else {
                continue;
            };
            if !split.mixed {
                return Some(split);
            }
            first.get_or_insert(split);
        }
        first
    }

    /// The split of `plan_keyed` by ranges of `key` (`column` in the largest frame).
    fn keyed_split(
        &self,
        tables: &[TableCells],
        metas: &[Vec<CellMeta>],
        largest: usize,
        key: BTreeSet<(usize, String)>,
        column: &str,
        kind: MergeKind,
    ) -> Option<KeyedSplit> {
        // A fragment per bee and core (as for a join split by cells), or per bee with a cap;
        // more when the largest frame's cells outgrow the budget's limit, since a key range
        // holds only its part of every hash table, unlike a split by cells.
        let config = self.pool.config();
        let bees = match self.fragment_cap {
            None => {
                let cores = crate::config::machine_cores();
                config.bees.min(cores)
            }
            Some(_) => config.bees,
        };
        let limit = leafcutter::fragment_limit(config.budget, self.fragment_cap, false);
        let bytes: u64 = tables[largest].cells.iter().map(|c| c.size).sum();
        let parts = bees.max(usize::try_from(bytes.div_ceil(limit)).unwrap_or(usize::MAX));
        let spread: Vec<(i64, i64, u64)> = metas[largest]
            .iter()
            .map(|m| key_stats(m, column).map(|(lo, hi, _)| (lo, hi, m.rows)))
            .collect::<Option<_>>()?;
        let keys: Vec<(usize, String)> = key.into_iter().collect();
        // A chamber knows a keyed frame's scans by their cells: a frame pruned to none
        // runs whole.
        if keys.iter().any(|(t, _)| tables[*t].cells.is_empty()) {
            return None;
        }
        let columns: Vec<KeyColumn> = keys
            .iter()
            .map(|(t, c)| KeyColumn {
                table: tables[*t].name.clone(),
                column: c.clone(),
            })
            .collect();
        let ranges = |parts: usize| {
            // More ranges than the largest frame has cells would cut cells that every
            // fragment over them reads anyway, but a fragment per bee still divides the
            // joins and aggregations (and a cell in key order skips the pages of the other
            // ranges).
            let bounds =
                leafcutter::key_bounds(&spread, parts.min(tables[largest].cells.len().max(bees)));
            if bounds.is_empty() {
                return None;
            }
            let mut edges: Vec<Option<i64>> = vec![None];
            edges.extend(bounds.into_iter().map(Some));
            edges.push(None);
            let fragments = edges
                .windows(2)
                .map(|w| {
                    let range = KeyRange {
                        columns: columns.clone(),
                        low: w[0],
                        high: w[1],
                    };
                    let cells = keys
                        .iter()
                        .map(|(t, c)| range_cells(&range, &tables[*t].cells, &metas[*t], c))
                        .collect();
                    (range, cells)
                })
                .collect::<Vec<(KeyRange, Vec<Vec<CellRef>>)>>();
            Some(fragments)
        };
        let mut fragments = ranges(parts)?;
        // Each fragment decodes every cell it is given, and filters the rows of other
        // ranges out. Where the ranges keep the fragments' cells apart (frames written in
        // key order), the split saves at least half of the reading that giving every
        // fragment every cell would add. Where they do not, every fragment reads about all
        // the cells: that still beats running whole on one bee, since the joins and
        // aggregations divide, but only with a fragment per bee and core.
        let size = |cells: &[CellRef]| cells.iter().map(|c| c.size).sum::<u64>();
        let whole: u64 = keys.iter().map(|(t, _)| size(&tables[*t].cells)).sum();
        let read: u64 = fragments
            .iter()
            .flat_map(|(_, cells)| cells.iter().map(|c| size(c)))
            .sum();
        let extra = whole.saturating_mul(fragments.len() as u64 - 1);
        let mixed = read.saturating_sub(whole) > extra / 2;
        // A full sort whose fragments each read about every cell runs whole: TPC-H Q20
        // (lineitem filtered by date, then aggregated by part and supplier) took as long
        // split by supplier as whole, for twice the chamber time.
        if mixed && kind == MergeKind::Sort {
            return None;
        }
        if mixed && fragments.len() > bees {
            fragments = ranges(bees)?;
        }
        // Keyed frames besides the largest with cells to share out (where the ranges keep
        // cells apart, a range that straddles two cells reads only its pages of each).
        let divides = keys
            .iter()
            .filter(|(t, _)| *t != largest && tables[*t].cells.len() > 1)
            .count();
        Some(KeyedSplit {
            fragments: fragments.len(),
            plan: Plan::Keyed {
                kind,
                keys,
                fragments,
            },
            mixed,
            divides,
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
            Some("CREATE") | Some("DROP")
                if upper.get(1) == Some(&"FUNCTION")
                    || upper.get(1..4) == Some(&["OR", "REPLACE", "FUNCTION"]) =>
            {
                commands::function_ddl(self, statement, &words, &upper)
                    .await
                    .map(Some)
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

/// The registered functions `plan` calls, in subqueries too.
fn called_functions(
    plan: &LogicalPlan,
    registered: &BTreeMap<String, FunctionEntry>,
) -> BTreeSet<String> {
    let mut called = BTreeSet::new();
    if registered.is_empty() {
        return called;
    }
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && registered.contains_key(f.name())
                {
                    called.insert(f.name().to_owned());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    called
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

/// The frames `plan` names (in subqueries too), as `hive.box.frame`.
fn named_frames(plan: &LogicalPlan, hive: &str, box_name: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.clone().resolve(hive, box_name);
            names.insert(format!("{}.{}.{}", name.catalog, name.schema, name.table));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    names
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

/// The keys `physical`'s equi-joins link: sets of (index in `tables`, column) whose values
/// the joins compare for equality, directly or through other columns of the set.
fn join_keys(
    physical: &Arc<dyn ExecutionPlan>,
    scans: &[ScanRecord],
    tables: &[TableCells],
) -> Vec<BTreeSet<(usize, String)>> {
    let table_of = |leaf: &Arc<dyn ExecutionPlan>| {
        let scan = scans.iter().find(|s| Arc::ptr_eq(&s.exec, leaf))?;
        tables.iter().position(|t| t.name == scan.frame)
    };
    let column = |c: &JoinColumn| {
        let name = c.leaf.schema().field(c.column).name().clone();
        Some((table_of(&c.leaf)?, name))
    };
    let mut keys: Vec<BTreeSet<(usize, String)>> = Vec::new();
    for (left, right) in equi_join_columns(physical) {
        let (Some(left), Some(right)) = (column(&left), column(&right)) else {
            continue;
        };
        let linked: Vec<usize> = (0..keys.len())
            .filter(|&i| keys[i].contains(&left) || keys[i].contains(&right))
            .collect();
        let mut key: BTreeSet<_> = [left, right].into();
        for i in linked.into_iter().rev() {
            key.extend(keys.swap_remove(i));
        }
        keys.push(key);
    }
    keys
}

/// Whether `key` has one column per frame, all of one signed integer type (the type key
/// ranges are cut in).
fn is_integer_key(key: &BTreeSet<(usize, String)>, tables: &[TableCells]) -> bool {
    let frames: BTreeSet<usize> = key.iter().map(|(t, _)| *t).collect();
    let types: Option<BTreeSet<DataType>> = key
        .iter()
        .map(|(t, c)| {
            let schema = tables.get(*t)?.schema.as_ref()?;
            Some(schema.field_with_name(c).ok()?.data_type().clone())
        })
        .collect();
    let Some(types) = types else {
        return false;
    };
    frames.len() == key.len()
        && types.len() == 1
        && matches!(
            types.first(),
            Some(DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64)
        )
}

/// A cut at an aggregation under a join sends the merge each fragment's groups, which it
/// aggregates again before its joins, on one bee. Only where the cells' statistics bound
/// the groups to at most one per this many rows of the split frame does the split gain:
/// TPC-H Q15 sums lineitem by supplier (at most 10,000 groups in 6 million rows at SF 1)
/// and gains; Q20 sums it by part and supplier, and its merge of 900,000 partial groups
/// took longer than the whole statement (it splits now because the join above matches the
/// sums to a filtered frame, so every fragment keeps only those groups: see
/// `apiary_engine::BelowJoins::reduced`).
const ROWS_PER_GROUP: u64 = 64;

/// Whether the grouping columns `groups` of an aggregation under a join, all plain integer
/// columns of the split frame's scans `reads`, have few enough combinations in its cells
/// (`metas`): see [`ROWS_PER_GROUP`].
fn few_groups(groups: &[Option<JoinColumn>], reads: &[&ScanRecord], metas: &[CellMeta]) -> bool {
    let rows: u64 = metas.iter().map(|m| m.rows).sum();
    let mut combinations: u64 = 1;
    for group in groups {
        let Some(column) = group else {
            return false;
        };
        if !reads
            .iter()
            .any(|read| Arc::ptr_eq(&column.leaf, &read.exec))
        {
            return false;
        }
        let name = column.leaf.schema().field(column.column).name().clone();
        let bounds: Option<Vec<(i64, i64, u64)>> =
            metas.iter().map(|m| key_stats(m, &name)).collect();
        let Some(bounds) = bounds else {
            return false;
        };
        let low = bounds.iter().map(|b| b.0).min().unwrap_or(0);
        let high = bounds.iter().map(|b| b.1).max().unwrap_or(0);
        let nulls = u64::from(bounds.iter().any(|b| b.2 > 0));
        let values = u64::try_from(i128::from(high) - i128::from(low) + 1)
            .unwrap_or(u64::MAX)
            .saturating_add(nulls);
        combinations = combinations.saturating_mul(values);
    }
    combinations <= rows / ROWS_PER_GROUP
}

/// A cell's smallest and largest value of the integer `column`, and its nulls, from the
/// ledger's statistics.
fn key_stats(meta: &CellMeta, column: &str) -> Option<(i64, i64, u64)> {
    let stats = meta.stats.get(column)?;
    let bound = |v: &Option<serde_json::Value>| match v.as_ref()? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    };
    Some((bound(&stats.min)?, bound(&stats.max)?, stats.null_count))
}

/// The cells of a keyed frame (`metas` their ledger entries) whose statistics of the key
/// `column` allow rows in `range`; cells without statistics are kept.
fn range_cells(
    range: &KeyRange,
    cells: &[CellRef],
    metas: &[CellMeta],
    column: &str,
) -> Vec<CellRef> {
    let may_hold = |meta: &CellMeta| match key_stats(meta, column) {
        Some((min, max, nulls)) => {
            (range.low.is_none_or(|low| max >= low) && range.high.is_none_or(|high| min < high))
                || (range.low.is_none() && nulls > 0)
        }
        None => true,
    };
    let mut kept: Vec<CellRef> = cells
        .iter()
        .zip(metas)
        .filter(|(_, meta)| may_hold(meta))
        .map(|(cell, _)| *cell)
        .collect();
    // A chamber knows a keyed frame's scans by their cells: keep one, whose rows the range
    // filters out.
    if kept.is_empty() {
        kept.extend(cells.first());
    }
    kept
}

/// `cells` (whose ledger entries are `metas`) cut into `parts` runs of rows, one group of
/// cell slices each (see [`leafcutter::cut_row_slices`]); `None` when the rows are too few to
/// cut or the cells do not match their entries.
fn row_slices(cells: &[CellRef], metas: &[CellMeta], parts: usize) -> Option<Vec<Vec<CellRef>>> {
    if cells.len() != metas.len() {
        return None;
    }
    let rows: Vec<u64> = metas.iter().map(|m| m.rows).collect();
    let runs = leafcutter::cut_row_slices(&rows, parts, leafcutter::MIN_SLICE_ROWS);
    if runs.is_empty() {
        return None;
    }
    Some(
        runs.into_iter()
            .map(|run| {
                run.into_iter()
                    .map(|(i, range)| CellRef {
                        slice: (range.end - range.start < rows[i]).then_some(RowSlice {
                            start: range.start,
                            end: range.end,
                            rows: rows[i],
                        }),
                        ..cells[i]
                    })
                    .collect()
            })
            .collect(),
    )
}

/// Whether some of `groups` read only a slice of a cell's rows.
fn sliced(groups: &[Vec<CellRef>]) -> bool {
    groups.iter().flatten().any(|c| c.slice.is_some())
}

/// EXPLAIN's line for how a split statement's partial results are merged.
fn merge_line(kind: MergeKind) -> String {
    let place = if kind == MergeKind::Concatenate {
        "on the host"
    } else {
        "in a chamber"
    };
    format!("{} {place}", kind.describe())
}

/// Run blocking work (waiting on bees) off the async runtime's workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("the query task failed: {e}")))?
}

const MIB: f64 = (1 << 20) as f64;
