//! Cutting a statement's physical plan into a partial part, run once per cell group, and a
//! merge, run once over the partial results.
//!
//! The plan must be a single chain from the root down to one scan. Walking up from the
//! scan, operators that work row by row (scans, filters, projections) distribute over any
//! split of the cells. The first operator that does not decides the cut:
//!
//! - an aggregation becomes a partial aggregation in every fragment (DataFusion's own
//!   `Partial` mode, whose output is the accumulators' state: AVG as sum and count, COUNT
//!   DISTINCT as the distinct values) and a `Final` aggregation in the merge, under the rest
//!   of the plan;
//! - a sort with a fetch (ORDER BY ... LIMIT) runs in every fragment and again in the merge
//!   over the fragments' top rows;
//! - no such operator: the fragments' rows are the answer, concatenated in order.
//!
//! Anything else (joins, unions, window functions, a full sort, a bare LIMIT) is not split:
//! the statement runs whole in one chamber.
//!
//! Both the host (to plan and explain) and the chamber (to run) cut the same plan with the
//! same rules, so the partial results a chamber emits are exactly what the merge expects.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::sorts::sort::SortExec;

/// How the partial results of a split statement become its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MergeKind {
    /// The fragments' rows are the answer: concatenate them in fragment order.
    Concatenate,
    /// Each fragment emits aggregate states per group; the merge finishes the aggregation
    /// and runs the rest of the statement.
    FinalAggregate,
    /// Each fragment keeps its top rows; the merge sorts them again and runs the rest.
    TopK,
}

impl MergeKind {
    /// A short description for plans shown to users.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Concatenate => "concatenation of the fragments' rows",
            Self::FinalAggregate => "final aggregation of the fragments' partial states",
            Self::TopK => "top-k of the fragments' top rows",
        }
    }
}

/// A plan cut in two.
pub(crate) struct Split {
    /// How the partial results are combined.
    pub kind: MergeKind,
    /// What every fragment runs over its cells.
    pub partial: Arc<dyn ExecutionPlan>,
    /// The operators above the cut, root first, and what replaces the cut in the merge.
    ancestors: Vec<Arc<dyn ExecutionPlan>>,
    merge_node: MergeNode,
}

/// What sits at the cut in the merge plan, over the partial results.
enum MergeNode {
    /// Nothing: the partial results are the answer.
    Nothing,
    /// A final aggregation built from the original single-phase one.
    Final(Arc<dyn ExecutionPlan>),
    /// The original operator again, over the partial results.
    Again(Arc<dyn ExecutionPlan>),
}

impl Split {
    /// The merge plan over `input`, an operator producing the partial results (in the
    /// schema of [`Split::partial`]).
    pub fn merge(&self, input: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        let mut node = match &self.merge_node {
            MergeNode::Nothing => input,
            MergeNode::Again(op) => with_child(op, input)?,
            MergeNode::Final(node) => {
                let single = node
                    .as_ref()
                    .downcast_ref::<AggregateExec>()
                    .ok_or_else(|| internal("the cut is not an aggregation"))?;
                let final_agg = AggregateExec::try_new(
                    AggregateMode::Final,
                    single.group_expr().as_final(),
                    single.aggr_expr().to_vec(),
                    single.filter_expr().to_vec(),
                    input,
                    single.input_schema(),
                )?;
                Arc::new(final_agg)
            }
        };
        for parent in self.ancestors.iter().rev() {
            node = with_child(parent, node)?;
        }
        Ok(node)
    }
}

/// How `plan` would be merged if split, or `None` when it runs whole.
pub fn merge_kind(plan: &Arc<dyn ExecutionPlan>) -> Option<MergeKind> {
    split(plan).ok().flatten().map(|s| s.kind)
}

/// The physical optimizer rules for plans that may be split: DataFusion's defaults without
/// the rule that answers aggregates from statistics, since a fragment's statistics cover
/// only its own cells (and the merge's none at all).
pub fn split_optimizer_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    PhysicalOptimizer::new()
        .rules
        .into_iter()
        .filter(|rule| rule.name() != "aggregate_statistics")
        .collect()
}

/// Cut `plan`, or `None` when it must run whole.
pub(crate) fn split(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Split>> {
    let Some(path) = chain(plan) else {
        return Ok(None);
    };
    let Some(cut) = path.iter().rposition(|node| !is_row_local(node.as_ref())) else {
        return Ok(Some(Split {
            kind: MergeKind::Concatenate,
            partial: plan.clone(),
            ancestors: Vec::new(),
            merge_node: MergeNode::Nothing,
        }));
    };
    let node = &path[cut];
    let ancestors = path[..cut].to_vec();
    if let Some(agg) = node.as_ref().downcast_ref::<AggregateExec>() {
        return Ok(match agg.mode() {
            AggregateMode::Partial => Some(Split {
                kind: MergeKind::FinalAggregate,
                partial: node.clone(),
                ancestors,
                merge_node: MergeNode::Nothing,
            }),
            AggregateMode::Single | AggregateMode::SinglePartitioned => {
                let partial = AggregateExec::try_new(
                    AggregateMode::Partial,
                    agg.group_expr().clone(),
                    agg.aggr_expr().to_vec(),
                    agg.filter_expr().to_vec(),
                    agg.input().clone(),
                    agg.input_schema(),
                )?;
                // A limit on the groups (from GROUP BY ... LIMIT) is dropped: the partial
                // aggregations cannot know which groups survive, and the operators above
                // the final aggregation apply the limit anyway.
                Some(Split {
                    kind: MergeKind::FinalAggregate,
                    partial: Arc::new(partial),
                    ancestors,
                    merge_node: MergeNode::Final(node.clone()),
                })
            }
            _ => None,
        });
    }
    if let Some(sort) = node.as_ref().downcast_ref::<SortExec>()
        && sort.fetch().is_some()
    {
        return Ok(Some(Split {
            kind: MergeKind::TopK,
            partial: node.clone(),
            ancestors,
            merge_node: MergeNode::Again(node.clone()),
        }));
    }
    Ok(None)
}

/// `parent` over a new single input.
fn with_child(
    parent: &Arc<dyn ExecutionPlan>,
    child: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    parent.clone().replace_children(
        vec![child],
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

fn internal(message: &str) -> DataFusionError {
    DataFusionError::Internal(message.to_owned())
}

/// The operators from the root down to the only leaf, or `None` when some operator has
/// more than one input (a join, a union).
fn chain(plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<Arc<dyn ExecutionPlan>>> {
    let mut path = vec![plan.clone()];
    loop {
        let children = path.last()?.children();
        match children.as_slice() {
            [] => return Some(path),
            [child] => {
                let child = (*child).clone();
                path.push(child);
            }
            _ => return None,
        }
    }
}

/// Operators whose output over a union of cells is the union of their outputs per cell
/// (not when they carry a limit, as a scan does after a bare LIMIT is pushed into it).
fn is_row_local(node: &dyn ExecutionPlan) -> bool {
    node.fetch().is_none()
        && matches!(
            node.name(),
            "DataSourceExec"
                | "EmptyExec"
                | "FilterExec"
                | "ProjectionExec"
                | "CoalesceBatchesExec"
                | "CooperativeExec"
        )
}
