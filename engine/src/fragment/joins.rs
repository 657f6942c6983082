//! Sort-merge joins for a fragment whose hash joins do not fit its memory pool.
//!
//! DataFusion's hash join keeps its whole build side in memory and cannot spill. A bee with a
//! small budget that meets a large build side stops with `ResourcesExhausted`. The same plan
//! with every equi-join as a sort-merge join needs little memory beyond its sorts, and sorts
//! spill to the fragment's scratch directory. It is slower, so a fragment tries hash joins
//! first and plans again with [`SortMergeJoins`] only when they did not fit: first keeping
//! the hash joins whose build side statistics call small, then, if that fails too, with
//! none.
//!
//! DataFusion chooses sort-merge joins itself only for plans with several partitions; a
//! fragment has one, so this rule rewrites the joins after `join_selection` has settled their
//! sides. The ordering-enforcement rule that follows then adds the sorts the joins require.

use std::sync::Arc;

use arrow::compute::SortOptions;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::joins::{HashJoinExec, SortMergeJoinExec};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ExecutionPlan, StatisticsArgs, StatisticsContext};

/// The name of DataFusion's rule after which [`SortMergeJoins`] runs.
const AFTER_RULE: &str = "join_selection";

/// Rewrites hash joins that have equi-join keys into sort-merge joins, except those whose
/// build side statistics put under `keep_below` bytes.
///
/// Null-aware anti joins (`NOT IN` over a nullable subquery) stay hash joins: a sort-merge
/// join cannot give their answer.
#[derive(Debug, Default)]
pub(crate) struct SortMergeJoins {
    keep_below: usize,
}

impl PhysicalOptimizerRule for SortMergeJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.as_ref().downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if !can_sort_merge(join) || build_bytes(join).is_some_and(|b| b < self.keep_below) {
                return Ok(Transformed::no(node));
            }
            let merge_join: Arc<dyn ExecutionPlan> = Arc::new(SortMergeJoinExec::try_new(
                join.left().clone(),
                join.right().clone(),
                join.on().to_vec(),
                join.filter().cloned(),
                *join.join_type(),
                vec![SortOptions::default(); join.on().len()],
                join.null_equality(),
            )?);
            let Some(projection) = &join.projection else {
                return Ok(Transformed::yes(merge_join));
            };
            let schema = merge_join.schema();
            let columns = projection
                .iter()
                .map(|&i| {
                    ProjectionExpr::new(
                        Arc::new(Column::new(schema.field(i).name(), i)),
                        schema.field(i).name(),
                    )
                })
                .collect::<Vec<_>>();
            Ok(Transformed::yes(Arc::new(ProjectionExec::try_new(
                columns, merge_join,
            )?)))
        })
        .data()
    }

    fn name(&self) -> &str {
        "sort_merge_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The bytes statistics estimate for `join`'s build side, if they know.
fn build_bytes(join: &HashJoinExec) -> Option<usize> {
    let statistics = StatisticsContext::new()
        .compute(join.left().as_ref(), &StatisticsArgs::new())
        .ok()?;
    statistics.total_byte_size.get_value().copied()
}

/// Whether [`SortMergeJoins`] may rewrite `join`.
fn can_sort_merge(join: &HashJoinExec) -> bool {
    !join.null_aware && !join.on().is_empty()
}

/// Whether [`SortMergeJoins`] would change `plan`.
pub(crate) fn has_hash_joins(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.exists(|node| {
        Ok(node
            .as_ref()
            .downcast_ref::<HashJoinExec>()
            .is_some_and(can_sort_merge))
    })
    .unwrap_or(false)
}

/// How many operators in `plan` hold spillable memory (sorts and aggregations).
pub(crate) fn spilling_operators(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let mut count = 0;
    plan.apply(|node| {
        if node.as_ref().downcast_ref::<SortExec>().is_some()
            || node.as_ref().downcast_ref::<AggregateExec>().is_some()
        {
            count += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_or(count, |_| count)
}

/// `rules` with [`SortMergeJoins`] after DataFusion's join selection, keeping hash joins
/// whose build side is estimated under `keep_below` bytes.
pub(crate) fn with_sort_merge_joins(
    mut rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>,
    keep_below: usize,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let at = rules
        .iter()
        .position(|rule| rule.name() == AFTER_RULE)
        .map_or(0, |i| i + 1);
    rules.insert(at, Arc::new(SortMergeJoins { keep_below }));
    rules
}

/// DataFusion's default physical optimizer rules.
pub(crate) fn default_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    PhysicalOptimizer::new().rules
}
