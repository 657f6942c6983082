//! Rows that a hash join's dynamic filter rules out, dropped right after the scan.
//!
//! DataFusion's hash join pushes a *dynamic filter* into the scans on its probe side: once
//! its build side is in memory, the filter holds the range of its keys and a lookup in its
//! hash table. With Parquet filter pushdown off, as it is here (row-level filtering inside
//! the Parquet reader decodes scattered rows slowly), a scan uses that filter only to skip
//! whole row groups, which the keys of a TPC-H or star-schema join almost never allow: every
//! row the build side cannot match still flows through the operators between the scan and
//! the join. Where one of them is costly, an aggregation grouping by the join keys (TPC-H
//! Q17 and Q20 sum lineitem per part before joining the few parts they want) or other
//! joins, those rows cost the chamber most of its time.
//!
//! [`ApplyDynamicFilters`] puts a [`DynamicFilterExec`] over the scans that hold dynamic
//! filters. It evaluates them on each batch the scan decodes, one after the other, each over
//! the rows the ones before it kept, and passes on the rows all of them accept. A filter
//! that keeps most rows is not worth its lookups: the operator measures the share each one
//! keeps, drops a filter once it has kept more than [`KEEP_AT_MOST`] of at least
//! [`SAMPLE_ROWS`] rows, and runs those that keep the fewest first.
//!
//! Right under its own join, the whole filter pays where the scan holds others too (a
//! selective filter run first spares the others most of their lookups: TPC-H Q8) or where
//! the join compares more than its keys, which it does for every match its keys find (Q19,
//! Q21). Otherwise, over a scan that feeds its join's probe side through projections and
//! filters only, the operator tests the filter's key bounds alone. Its lookups would repeat
//! the join's own hashing and lookups on every row, and copy the rows they keep, for
//! nothing the join does not do itself (TPC-H Q22 looks up all of orders' customers in its
//! anti join's table; Q11 and Q16 probe with partsupp). The bounds drop the rows outside a
//! narrow key range for two comparisons each, before any static filter in between looks at
//! them (star-schema Q1.2 and Q1.3 join a month or a week of dates, and took a quarter
//! longer with no test at all).
//!
//! A dynamic filter only removes rows that cannot change the answer (rows its join would
//! not match; rows a top-k, which fills dynamic filters too, would not keep), so applying
//! it early never changes the answer: the operator that filled it still sees every row it
//! gets.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use arrow::compute::{BatchCoalescer, filter_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::cast::as_boolean_array;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, DynamicFilterPhysicalExpr, Literal};
use datafusion::physical_expr::utils::reassign_expr_columns;
use datafusion::physical_expr::{PhysicalExpr, conjunction_opt, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, RecordBatchStream,
    SendableRecordBatchStream,
};
use futures::{Stream, StreamExt};

/// Rows a filter is measured over before it may be turned off.
pub(crate) const SAMPLE_ROWS: usize = 65_536;

/// The largest share of rows a filter may keep and stay on.
pub(crate) const KEEP_AT_MOST: f64 = 0.75;

/// Puts a [`DynamicFilterExec`] over every Parquet scan whose predicate holds dynamic
/// filters, testing only the key bounds of a filter that is the scan's only one and comes
/// from the join it feeds directly (see the module docs). Runs after DataFusion's own
/// rules, once the joins have pushed their filters.
#[derive(Debug, Default)]
pub(crate) struct ApplyDynamicFilters;

impl PhysicalOptimizerRule for ApplyDynamicFilters {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let probes = probed_scans(&plan)?;
        plan.transform_up(|node| {
            let own = probes
                .iter()
                .find(|(scan, _)| std::ptr::addr_eq(*scan, Arc::as_ptr(&node)))
                .map(|(_, id)| *id);
            let filters = dynamic_filters(node.as_ref());
            if filters.is_empty() {
                return Ok(Transformed::no(node));
            }
            let bounds_only = matches!(filters.as_slice(),
                [filter] if own.is_some() && filter.expression_id() == own);
            let schema = node.schema();
            let filters = filters
                .into_iter()
                .map(|filter| reassign_expr_columns(filter, &schema))
                .collect::<Result<Vec<_>>>()?;
            Ok(Transformed::yes(
                Arc::new(DynamicFilterExec::new(node, filters, bounds_only)) as _,
            ))
        })
        .data()
    }

    fn name(&self) -> &str {
        "apply_dynamic_filters"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The scans that feed a hash join's probe side through nothing but projections and
/// filters, each with the id of that join's dynamic filter. Alone, that filter's lookups
/// would only repeat the join's: the join hashes and looks up every row it probes, and drops
/// the ones without a match, as the filter would. Joins that compare more than their keys
/// are left out: they run that comparison on every match their keys find.
fn probed_scans(plan: &Arc<dyn ExecutionPlan>) -> Result<Vec<(*const dyn ExecutionPlan, u64)>> {
    let mut probes = Vec::new();
    plan.apply(|node| {
        if let Some(join) = node.downcast_ref::<HashJoinExec>()
            && join.filter().is_none()
            && let [filter] = join.dynamic_expressions_produced().as_slice()
            && let Some(id) = filter.expression_id()
        {
            let mut below = join.right().clone();
            loop {
                let passes = below.is::<ProjectionExec>() || below.is::<FilterExec>();
                match below.children().as_slice() {
                    [child] if passes => below = Arc::clone(child),
                    _ => break,
                }
            }
            if below.children().is_empty() {
                probes.push((Arc::as_ptr(&below), id));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(probes)
}

/// The dynamic filters among the conjuncts of a file scan's predicate.
fn dynamic_filters(node: &dyn ExecutionPlan) -> Vec<Arc<dyn PhysicalExpr>> {
    let Some(predicate) = node
        .downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
        .and_then(|config| config.file_source().filter())
    else {
        return Vec::new();
    };
    split_conjunction(&predicate)
        .into_iter()
        .filter(|expr| expr.downcast_ref::<DynamicFilterPhysicalExpr>().is_some())
        .cloned()
        .collect()
}

/// The conjuncts of a join's filter that compare a key with a constant (its bounds) or are
/// constants (an empty build side's `false`), without the lookups in its hash table or
/// list of keys; `None` when there are none.
fn key_bounds(filter: &Arc<dyn PhysicalExpr>) -> Option<Arc<dyn PhysicalExpr>> {
    let bounds = split_conjunction(filter).into_iter().filter(|expr| {
        expr.is::<Literal>()
            || expr.downcast_ref::<BinaryExpr>().is_some_and(|binary| {
                matches!(
                    binary.op(),
                    Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
                ) && (binary.left().is::<Literal>() || binary.right().is::<Literal>())
            })
    });
    conjunction_opt(bounds.cloned())
}

/// Keeps the rows of its input that every one of its dynamic filters accepts, until the
/// filters prove to keep most rows; see the module docs.
#[derive(Debug)]
pub struct DynamicFilterExec {
    input: Arc<dyn ExecutionPlan>,
    filters: Vec<Arc<dyn PhysicalExpr>>,
    /// Whether only the bounds of the filters' keys are tested, not their lookups: the
    /// join right above does those itself (see the module docs).
    bounds_only: bool,
    metrics: ExecutionPlanMetricsSet,
}

impl DynamicFilterExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        bounds_only: bool,
    ) -> Self {
        Self {
            input,
            filters,
            bounds_only,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for DynamicFilterExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let only = if self.bounds_only { "bounds of " } else { "" };
        write!(f, "DynamicFilterExec: {only}")?;
        for (i, filter) in self.filters.iter().enumerate() {
            if i > 0 {
                write!(f, " AND ")?;
            }
            write!(f, "{filter}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for DynamicFilterExec {
    fn name(&self) -> &'static str {
        "DynamicFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for filter in &self.filters {
            if f(filter)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children.pop().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("a dynamic filter needs its input".into())
        })?;
        Ok(Arc::new(Self::new(
            input,
            self.filters.clone(),
            self.bounds_only,
        )))
    }

    /// A plan run again (a merge in the chamber that ran the partial plan) no longer has
    /// joins filling these filters: they could hold the keys of the earlier run, so the
    /// reset operator filters nothing.
    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(self.input.clone(), Vec::new(), false)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batch_size = context.session_config().batch_size();
        let input = self.input.execute(partition, context)?;
        let state = FilterState::new(
            &self.filters,
            self.bounds_only,
            MetricBuilder::new(&self.metrics).counter("rows_dropped", partition),
            BaselineMetrics::new(&self.metrics, partition),
        );
        // Batches the filters thinned out are gathered into full ones, so the operators
        // above do not pay their per-batch costs on a few rows at a time; batches of at
        // least half the size go on as they are.
        let coalescer = BatchCoalescer::new(input.schema(), batch_size)
            .with_biggest_coalesce_batch_size(Some(batch_size / 2));
        Ok(Box::pin(DynamicFilterStream {
            input,
            state,
            coalescer,
            finished: false,
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The rows of one input stream that its filters keep, in batches of about the session's
/// batch size.
struct DynamicFilterStream {
    input: SendableRecordBatchStream,
    state: FilterState,
    coalescer: BatchCoalescer,
    finished: bool,
}

impl Stream for DynamicFilterStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(batch) = this.coalescer.next_completed_batch() {
                return Poll::Ready(Some(Ok(batch)));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            let pushed = match ready!(this.input.poll_next_unpin(cx)) {
                Some(Ok(batch)) => this
                    .state
                    .apply(batch)
                    .and_then(|batch| Ok(this.coalescer.push_batch(batch)?)),
                Some(Err(e)) => Err(e),
                None => {
                    this.finished = true;
                    this.coalescer.finish_buffered_batch().map_err(Into::into)
                }
            };
            if let Err(e) = pushed {
                this.finished = true;
                return Poll::Ready(Some(Err(e)));
            }
        }
    }
}

impl RecordBatchStream for DynamicFilterStream {
    fn schema(&self) -> SchemaRef {
        self.coalescer.schema()
    }
}

/// One stream's filters and what each has kept so far.
struct FilterState {
    /// Ordered by the share of rows they keep, fewest first, so the later (costlier per
    /// kept row) filters see only the rows the earlier ones let through.
    filters: Vec<Measured>,
    dropped: Count,
    baseline: BaselineMetrics,
}

/// One dynamic filter and the rows it has seen and kept.
struct Measured {
    filter: Arc<dyn PhysicalExpr>,
    /// For a filter tested by its bounds only: the generation of the filter they were taken
    /// from, and the bounds (`None`: it has none).
    bounds: Option<(u64, Option<Arc<dyn PhysicalExpr>>)>,
    seen: usize,
    kept: usize,
}

impl Measured {
    fn new(filter: Arc<dyn PhysicalExpr>, bounds_only: bool) -> Self {
        Self {
            filter,
            bounds: bounds_only.then_some((0, None)),
            seen: 0,
            kept: 0,
        }
    }

    /// What to evaluate: the filter, or the bounds of its keys as of its current
    /// generation (`None` when it has none).
    fn test(&mut self) -> Result<Option<Arc<dyn PhysicalExpr>>> {
        let Some((generation, bounds)) = &mut self.bounds else {
            return Ok(Some(self.filter.clone()));
        };
        let current = self.filter.snapshot_generation();
        if *generation != current {
            *generation = current;
            *bounds = match self.filter.downcast_ref::<DynamicFilterPhysicalExpr>() {
                Some(dynamic) => key_bounds(&dynamic.current()?),
                None => Some(self.filter.clone()),
            };
        }
        Ok(bounds.clone())
    }

    /// The share of the rows it has seen that it kept (1 before it has seen any).
    fn keeps(&self) -> f64 {
        if self.seen == 0 {
            1.0
        } else {
            self.kept as f64 / self.seen as f64
        }
    }

    /// Whether it has been measured and keeps too many rows to be worth its lookups.
    fn worthless(&self) -> bool {
        self.seen >= SAMPLE_ROWS && self.keeps() > KEEP_AT_MOST
    }
}

impl FilterState {
    fn new(
        filters: &[Arc<dyn PhysicalExpr>],
        bounds_only: bool,
        dropped: Count,
        baseline: BaselineMetrics,
    ) -> Self {
        Self {
            filters: filters
                .iter()
                .map(|filter| Measured::new(filter.clone(), bounds_only))
                .collect(),
            dropped,
            baseline,
        }
    }

    fn apply(&mut self, mut batch: RecordBatch) -> Result<RecordBatch> {
        if self.filters.is_empty() || batch.num_rows() == 0 {
            return Ok(batch);
        }
        let timer = self.baseline.elapsed_compute().timer();
        let rows = batch.num_rows();
        for measured in &mut self.filters {
            // A filter still at its first generation has not heard from its join yet (or
            // never will, in a plan run again): it would keep every row, and measuring it
            // would turn it off before the join's keys arrive.
            if batch.num_rows() == 0 || measured.filter.snapshot_generation() <= 1 {
                continue;
            }
            let Some(test) = measured.test()? else {
                continue;
            };
            let values = test.evaluate(&batch)?.into_array(batch.num_rows())?;
            let mask = as_boolean_array(&values)?;
            // Nulls count as rows the filter does not accept, here and in the kernel.
            let kept = mask.true_count();
            measured.seen += batch.num_rows();
            measured.kept += kept;
            if kept < batch.num_rows() {
                batch = filter_record_batch(&batch, mask)?;
            }
        }
        self.dropped.add(rows - batch.num_rows());
        self.filters.retain(|measured| !measured.worthless());
        self.filters.sort_by(|a, b| a.keeps().total_cmp(&b.keeps()));
        timer.done();
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, col, lit};
    use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    use parquet::arrow::ArrowWriter;

    use super::*;

    const ROWS: i64 = 100_000;

    fn write(path: &Path, ids: Vec<i64>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Float64, false),
        ]));
        let amounts: Vec<f64> = ids.iter().map(|i| *i as f64 / 2.0).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Float64Array::from(amounts)),
            ],
        )
        .expect("batch");
        let file = std::fs::File::create(path).expect("create");
        let mut writer = ArrowWriter::try_new(file, schema, None).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
    }

    /// `sales` holds ids 0..ROWS, `keys` the given ids. The statement sums sales per id
    /// before joining the keys, so the join's dynamic filter reaches the sales scan through
    /// the aggregation. Returns the answer, with and without the rule, and the rows the
    /// filter dropped.
    async fn sums_per_key(keys: Vec<i64>) -> (String, String, usize) {
        let sql = "SELECT count(*) AS n, sum(s.total) AS total FROM keys k \
                   JOIN (SELECT id, sum(amount) AS total FROM sales GROUP BY id) s ON k.id = s.id";
        let (with, without, filters) = with_and_without(sql, keys).await;
        (with, without, dropped(only(&filters)))
    }

    /// The answer to `sql` over `sales` (ids 0..ROWS) and `keys` (the given ids), with and
    /// without the rule, and the filter operators the rule put in the plan.
    async fn with_and_without(
        sql: &str,
        keys: Vec<i64>,
    ) -> (String, String, Vec<Arc<dyn ExecutionPlan>>) {
        let dir = tempfile::tempdir().expect("tempdir");
        write(&dir.path().join("sales.parquet"), (0..ROWS).collect());
        write(&dir.path().join("keys.parquet"), keys);
        let mut answers = Vec::new();
        let mut placed = Vec::new();
        for with_rule in [true, false] {
            let mut rules = PhysicalOptimizer::new().rules;
            if with_rule {
                rules.push(Arc::new(ApplyDynamicFilters));
            }
            let config = SessionConfig::new()
                .with_target_partitions(1)
                .with_batch_size(8192);
            let state = SessionStateBuilder::new()
                .with_config(config)
                .with_default_features()
                .with_physical_optimizer_rules(rules)
                .build();
            let ctx = SessionContext::new_with_state(state);
            for table in ["sales", "keys"] {
                let path = dir.path().join(format!("{table}.parquet"));
                ctx.register_parquet(
                    table,
                    path.to_str().expect("utf-8"),
                    ParquetReadOptions::default(),
                )
                .await
                .expect("register");
            }
            let plan = ctx
                .sql(sql)
                .await
                .expect("sql")
                .create_physical_plan()
                .await
                .expect("plan");
            let batches = collect(plan.clone(), ctx.task_ctx()).await.expect("run");
            answers.push(pretty_format_batches(&batches).expect("format").to_string());
            let mut filters = Vec::new();
            plan.apply(|node| {
                if node.downcast_ref::<DynamicFilterExec>().is_some() {
                    filters.push(node.clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .expect("walk");
            if with_rule {
                placed = filters;
            } else {
                assert!(filters.is_empty());
            }
        }
        let without = answers.pop().expect("answer");
        let with = answers.pop().expect("answer");
        (with, without, placed)
    }

    #[tokio::test]
    async fn a_scan_probed_by_its_own_join_is_tested_by_the_keys_bounds_only() {
        // Keys 50,000 to 50,009: the bounds keep those ten rows of sales and drop the rest.
        let keys: Vec<i64> = (50_000..50_010).collect();
        // The sales scan feeds the join's probe side, directly or through a static filter:
        // the join looks its keys up itself, so only their bounds are tested first.
        for sql in [
            "SELECT count(*) AS n, sum(s.amount) AS total FROM keys k JOIN sales s ON k.id = s.id",
            "SELECT count(*) AS n, sum(s.amount) AS total FROM keys k \
             JOIN sales s ON k.id = s.id WHERE s.amount >= 0",
        ] {
            let (with, without, filters) = with_and_without(sql, keys.clone()).await;
            assert_eq!(with, without);
            assert!(with.contains("| 10 | 250022.5 |"), "{with}");
            let filter = only(&filters);
            let shown = one_line(filter);
            assert!(
                shown.starts_with("DynamicFilterExec: bounds of "),
                "{shown}"
            );
            // Every row the scan decoded but the ten (it skips pages outside the bounds).
            let scanned = filter.children()[0]
                .metrics()
                .and_then(|m| m.output_rows())
                .expect("scan rows");
            assert!(scanned > 10, "{scanned}");
            assert_eq!(dropped(filter), scanned - 10);
        }
        // Keys spread over the whole range: the bounds drop the seven ids below the
        // smallest key, then, having kept nearly all of their sample, are turned off. The
        // lookups are left to the join.
        let keys: Vec<i64> = (0..10).map(|i| i * 10_000 + 7).collect();
        let sql = "SELECT count(*) AS n, sum(s.amount) AS total FROM keys k \
                   JOIN sales s ON k.id = s.id";
        let (with, without, filters) = with_and_without(sql, keys.clone()).await;
        assert_eq!(with, without);
        assert!(with.contains("| 10 | 225035.0 |"), "{with}");
        assert_eq!(dropped(only(&filters)), 7);
        // A top-k above pushes its filter into the same scan: both run there whole, the
        // one that keeps fewest rows first.
        let sql = "SELECT s.id FROM keys k JOIN sales s ON k.id = s.id ORDER BY s.id LIMIT 2";
        let (with, without, filters) = with_and_without(sql, keys.clone()).await;
        assert_eq!(with, without);
        assert!(with.contains("| 7     |\n| 10007 |"), "{with}");
        let shown = one_line(only(&filters));
        assert!(shown.starts_with(WHOLE), "{shown}");
        assert_eq!(shown.matches("DynamicFilter [").count(), 2, "{shown}");
        // A join that also compares other columns runs that comparison on every match it
        // finds: its whole filter goes first.
        let sql = "SELECT count(*) AS n FROM keys k \
                   JOIN sales s ON k.id = s.id AND s.amount <> k.amount + 1";
        let (with, without, filters) = with_and_without(sql, keys).await;
        assert_eq!(with, without);
        assert!(with.contains("| 10 |"), "{with}");
        let shown = one_line(only(&filters));
        assert!(shown.starts_with(WHOLE), "{shown}");
    }

    /// How a filter operator testing its whole filters shows.
    const WHOLE: &str = "DynamicFilterExec: DynamicFilter [";

    /// The one filter operator of a plan's.
    fn only(filters: &[Arc<dyn ExecutionPlan>]) -> &Arc<dyn ExecutionPlan> {
        match filters {
            [filter] => filter,
            _ => panic!("{} filter operators", filters.len()),
        }
    }

    fn one_line(plan: &Arc<dyn ExecutionPlan>) -> String {
        displayable(plan.as_ref()).one_line().to_string()
    }

    /// The rows a filter operator dropped.
    fn dropped(filter: &Arc<dyn ExecutionPlan>) -> usize {
        let metrics = filter.metrics().expect("metrics");
        metrics
            .sum_by_name("rows_dropped")
            .expect("counted")
            .as_usize()
    }

    #[tokio::test]
    async fn a_joins_keys_drop_the_rows_it_cannot_match_before_they_are_aggregated() {
        // Ten ids spread over the whole range, so no page of the cell can be skipped by
        // its statistics: every row the filter drops was decoded.
        let keys = (0..10).map(|i| i * 10_000 + 7).collect();
        let (with, without, dropped) = sums_per_key(keys).await;
        assert_eq!(with, without);
        // Their amounts are halves of the ids.
        assert!(with.contains("| 10 | 225035.0 |"), "{with}");
        assert_eq!(dropped, (ROWS - 10) as usize);
    }

    #[tokio::test]
    async fn a_filter_that_keeps_most_rows_is_dropped_after_its_sample() {
        let keys: Vec<i64> = (0..ROWS).filter(|i| i % 10 != 0).collect();
        let (with, without, dropped) = sums_per_key(keys).await;
        assert_eq!(with, without);
        assert!(with.contains("| 90000 |"), "{with}");
        // The filter keeps nine rows in ten: it runs over its first 65,536 rows (eight
        // batches), dropping the 6,554 ids that are multiples of ten, and no further.
        assert_eq!(SAMPLE_ROWS, 8 * 8192);
        assert_eq!(dropped, 6554);
    }

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .expect("batch")
    }

    fn below(schema: &Schema, bound: i64) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(
            col("a", schema).expect("column"),
            Operator::Lt,
            lit(bound),
        ))
    }

    #[test]
    fn filters_wait_for_their_join_and_run_fewest_kept_first() {
        let rows = batch(1000);
        let schema = rows.schema();
        let filter = |bound: i64| {
            let dynamic = Arc::new(DynamicFilterPhysicalExpr::new(
                vec![col("a", &schema).expect("column")],
                lit(true),
            ));
            (dynamic.clone(), bound)
        };
        let (wide, wide_bound) = filter(900);
        let (narrow, narrow_bound) = filter(100);
        let metrics = ExecutionPlanMetricsSet::new();
        let mut state = FilterState::new(
            &[wide.clone() as _, narrow.clone() as _],
            false,
            MetricBuilder::new(&metrics).counter("rows_dropped", 0),
            BaselineMetrics::new(&metrics, 0),
        );
        // Before their joins fill them, the filters pass every row and measure nothing.
        assert_eq!(state.apply(rows.clone()).expect("apply").num_rows(), 1000);
        assert!(state.filters.iter().all(|m| m.seen == 0));

        wide.update(below(&schema, wide_bound)).expect("update");
        narrow.update(below(&schema, narrow_bound)).expect("update");
        assert_eq!(state.apply(rows.clone()).expect("apply").num_rows(), 100);
        // The wide filter ran first and kept 900 of 1000; the narrow one saw those 900.
        // Now the narrow one (100 of 900) runs first.
        assert_eq!(state.filters[0].seen, 900);
        assert_eq!(state.filters[1].seen, 1000);
        assert_eq!(state.apply(rows).expect("apply").num_rows(), 100);
        assert_eq!(state.filters[0].seen, 1900);
        assert_eq!(state.filters[1].seen, 1100);
        assert_eq!(state.dropped.value(), 1800);
    }

    #[tokio::test]
    async fn thinned_batches_are_gathered_into_full_ones() {
        let rows = batch(1000);
        let schema = rows.schema();
        let dynamic = Arc::new(DynamicFilterPhysicalExpr::new(
            vec![col("a", &schema).expect("column")],
            lit(true),
        ));
        dynamic.update(below(&schema, 100)).expect("update");
        let input =
            MemorySourceConfig::try_new_exec(&[vec![rows; 20]], schema, None).expect("input");
        let exec = Arc::new(DynamicFilterExec::new(input, vec![dynamic as _], false));
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_batch_size(8192));
        let batches = collect(exec, ctx.task_ctx()).await.expect("run");
        // Twenty batches of 1000 rows, each thinned to 100: one batch of 2000.
        let sizes: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, vec![2000]);
    }
}
