//! Cutting a statement's physical plan into a partial part, run once per cell group, and a
//! merge, run once over the partial results.
//!
//! One frame's cells are split: the *split scan*. Every fragment reads all the cells of the
//! other frames the statement reads. Walking up from the split scan, operators that work row
//! by row (scans, filters, projections) distribute over any split of the cells, and so do
//! joins in which each output row comes from at most one row of the split side and depends
//! on no other of its rows: either side of an inner or cross join, the preserved side of an
//! outer join, the probing side of a semi, anti or mark join. Below a sort-merge join, the
//! sorts it needs distribute too. Above the joins, the plan must be a single chain up to
//! the root, and the first operator on it that does not work row by row decides the cut:
//!
//! - an aggregation becomes a partial aggregation in every fragment (DataFusion's own
//!   `Partial` mode, whose output is the accumulators' state: AVG as sum and count, COUNT
//!   DISTINCT as the distinct values) and a `Final` aggregation in the merge, under the rest
//!   of the plan;
//! - a sort with a fetch (ORDER BY ... LIMIT) runs in every fragment and again in the merge
//!   over the fragments' top rows;
//! - no such operator: the fragments' rows are the answer, concatenated in order.
//!
//! The split side may also be the null side of an outer join right under the aggregation
//! that decides the cut, when the aggregation groups by the preserved side and only counts
//! or sums the split side's columns, ignoring nulls (TPC-H Q13's orders per customer): the
//! rows a fragment adds for the preserved rows its part does not match change no answer.
//!
//! Where the chain finds no cut because the split scan's rows are aggregated under a join
//! (TPC-H Q15 sums lineitem by supplier, then joins the sums to supplier), the cut may be
//! that aggregation: the first one down from the root, on the only path that reaches the
//! split scan, whose input distributes. Every fragment runs its partial aggregation; the
//! merge finishes it and runs everything above it, joins included, reading the frames they
//! join itself. The host decides whether the groups are few enough for that to pay.
//! Where the first join above that aggregation drops the groups it cannot match (an inner
//! or semi join on grouping columns) and what it matches them against is filtered, every
//! fragment keeps only the rows whose groups it can match first: a semi join of the
//! aggregation's input with the join's other side, on those keys (TPC-H Q20 sums lineitem
//! only for the parts and suppliers its filtered partsupp holds). The partial results
//! then hold those groups alone.
//!
//! Anything else (a join that needs all of the split frame's rows at once, such as a full
//! outer join or the inner side of a semi join, the split frame read twice, unions, window
//! functions, a full sort, a bare LIMIT) is not split: the statement runs whole in one
//! chamber.
//!
//! A statement can also be split by ranges of a key ([`Splitting::Keys`]): every scan of
//! the keyed frames keeps one range's rows. Then two keyed inputs may meet in any equi-join
//! on their keys (rows that match have equal keys, so they are in the same fragment), and
//! an aggregation grouping by the key distributes too, since each group is in one
//! fragment. A keyed input still meets a frame read whole only as it would when split by
//! cells. The cut above is found as before.
//!
//! Both the host (to plan and explain) and the chamber (to run) cut the same plan with the
//! same rules, so the partial results a chamber emits are exactly what the merge expects.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinSide, JoinType, NullEquality};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, create_physical_sort_exprs};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{
    ChildrenPropertiesMode, ReplaceChildrenOptions, reset_plan_states,
};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::build_join_schema;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PartitionMode, SortMergeJoinExec,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, displayable};

/// Tells whether a leaf of a plan is the scan of the frame whose cells are split.
pub type SplitScan<'a> = &'a dyn Fn(&dyn ExecutionPlan) -> bool;

/// For a leaf of a plan that scans a frame split by key ranges, the positions of the key
/// column among the leaf's columns (none when the scan does not read it); `None` for any
/// other leaf.
pub type KeyScan<'a> = &'a dyn Fn(&dyn ExecutionPlan) -> Option<Vec<usize>>;

/// How a statement's rows are divided between its fragments.
#[derive(Clone, Copy)]
pub enum Splitting<'a> {
    /// Each fragment reads some of the cells of one scan's frame and the other frames
    /// whole.
    Cells(SplitScan<'a>),
    /// Each fragment reads the rows of the keyed frames (every scan of them) whose key falls
    /// in its range, and the other frames whole. The keys are equal across the joins that
    /// link the keyed scans, so rows that meet in a join meet in the same fragment.
    Keys(KeyScan<'a>),
}

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
    /// A full sort (no limit) over fragments split by key ranges: each fragment sends its
    /// rows unsorted, and the merge sorts them all and runs the rest.
    Sort,
}

impl MergeKind {
    /// A short description for plans shown to users.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Concatenate => "concatenation of the fragments' rows",
            Self::FinalAggregate => "final aggregation of the fragments' partial states",
            Self::TopK => "top-k of the fragments' top rows",
            Self::Sort => "sort of the fragments' rows",
        }
    }
}

/// A plan cut in two.
pub(crate) struct Split {
    /// How the partial results are combined.
    pub kind: MergeKind,
    /// What every fragment runs over its cells.
    pub partial: Arc<dyn ExecutionPlan>,
    /// The operators above the cut, root first, each with the input the path down to the
    /// cut takes, and what replaces the cut in the merge.
    ancestors: Vec<(Arc<dyn ExecutionPlan>, usize)>,
    merge_node: MergeNode,
    /// For a cut at an aggregation under a join (the merge joins the final aggregation with
    /// frames it reads itself), the aggregation's grouping columns, each traced to the scan
    /// column it is (`None`: computed).
    below_joins: Option<Vec<Option<JoinColumn>>>,
    /// For such a cut, the semi join that keeps only the rows of the groups the join above
    /// can match, when there is one.
    reduction: Option<Reduction>,
}

/// A cut at an aggregation under a join, as the host weighs it.
#[derive(Debug, Clone)]
pub struct BelowJoins {
    /// The aggregation's grouping columns, each traced to the scan column it is (`None`: a
    /// computed one).
    pub groups: Vec<Option<JoinColumn>>,
    /// Every fragment keeps only the rows of the groups the first join above the
    /// aggregation can match, whose other side is filtered: the partial results hold the
    /// groups that join keeps, however many groups the aggregation's input has.
    pub reduced: bool,
}

/// The semi join under a partial aggregation that keeps the rows of the groups the join
/// above the cut can match: the join's other side builds, the aggregation's input probes.
#[derive(Debug, Clone)]
struct Reduction {
    /// The join's other side, which the fragment runs too.
    other: Arc<dyn ExecutionPlan>,
    /// Pairs of keys: over the other side's rows, and over the aggregation's input (a
    /// grouping expression).
    on: Vec<(Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>)>,
    null_equality: NullEquality,
}

/// What sits at the cut in the merge plan, over the partial results.
enum MergeNode {
    /// Nothing: the partial results are the answer.
    Nothing,
    /// A final aggregation built from the original single-phase one.
    Final(Arc<dyn ExecutionPlan>),
    /// The original operator again, over the partial results.
    Again(Arc<dyn ExecutionPlan>),
    /// A final aggregation at each of `sites`, single-phase aggregations that do the same
    /// work, in the whole `plan` (a cut shared by several reads of the split frame).
    FinalAtEach {
        plan: Arc<dyn ExecutionPlan>,
        sites: Vec<Arc<dyn ExecutionPlan>>,
    },
}

impl Split {
    /// What every fragment runs over its cells when its hash joins fit: the partial plan,
    /// under a reduction when the cut has one. (A fragment that falls back to sort-merge
    /// joins runs [`Split::partial`], which builds no extra hash table.)
    pub fn reduced_partial(&self) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(reduction) = &self.reduction else {
            return Ok(self.partial.clone());
        };
        let agg = self
            .partial
            .as_ref()
            .downcast_ref::<AggregateExec>()
            .ok_or_else(|| internal("a reduced cut is not an aggregation"))?;
        // The other side runs afresh here: the merge runs it again, above the cut.
        let other = reset_plan_states(reduction.other.clone())?;
        let semi = HashJoinExec::try_new(
            other,
            agg.input().clone(),
            reduction.on.clone(),
            None,
            &JoinType::RightSemi,
            None,
            PartitionMode::CollectLeft,
            reduction.null_equality,
            false,
        )?;
        Ok(Arc::new(AggregateExec::try_new(
            AggregateMode::Partial,
            agg.group_expr().clone(),
            agg.aggr_expr().to_vec(),
            agg.filter_expr().to_vec(),
            Arc::new(semi),
            agg.input_schema(),
        )?))
    }

    /// The merge plan over `input`, an operator producing the partial results (in the
    /// schema of [`Split::partial`]).
    pub fn merge(&self, input: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        let mut node = match &self.merge_node {
            MergeNode::Nothing => input,
            MergeNode::Again(op) => with_child(op, input)?,
            MergeNode::Final(node) => final_of(node, input)?,
            // Every site reads the same partial results.
            MergeNode::FinalAtEach { plan, sites } => plan
                .clone()
                .transform_down(|node| {
                    if !sites.iter().any(|site| Arc::ptr_eq(site, &node)) {
                        return Ok(Transformed::no(node));
                    }
                    let final_agg = final_of(&node, input.clone())?;
                    Ok(Transformed::new(final_agg, true, TreeNodeRecursion::Jump))
                })
                .data()?,
        };
        for (parent, input) in self.ancestors.iter().rev() {
            node = with_child_at(parent, *input, node)?;
        }
        Ok(node)
    }
}

/// How `plan` would be merged if its rows were divided as `splitting` says, or `None` when
/// it runs whole.
pub fn merge_kind(plan: &Arc<dyn ExecutionPlan>, splitting: Splitting<'_>) -> Option<MergeKind> {
    merge_kind_and_groups(plan, splitting).map(|(kind, _)| kind)
}

/// [`merge_kind`], and when the cut is an aggregation under a join (so that the merge reads
/// the frames joined above the cut), how that cut is made.
pub fn merge_kind_and_groups(
    plan: &Arc<dyn ExecutionPlan>,
    splitting: Splitting<'_>,
) -> Option<(MergeKind, Option<BelowJoins>)> {
    split(plan, Some(splitting)).ok().flatten().map(|s| {
        let below_joins = s.below_joins.map(|groups| BelowJoins {
            groups,
            reduced: s.reduction.is_some(),
        });
        (s.kind, below_joins)
    })
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

/// The physical plan of the statement `plan`, for the host's cut and every chamber's run.
/// A full sort at its root (an ORDER BY of columns without a limit) is planned last, over
/// the physical plan of its input. DataFusion would otherwise push it below a hash join
/// whose probe side keeps its order, and only where statistics make that side the probe, so
/// the host (which plans without cell statistics) and a chamber could cut the statement
/// differently.
///
/// # Errors
/// When DataFusion cannot plan the statement.
pub async fn plan_sorting_last(
    state: &SessionState,
    plan: &LogicalPlan,
) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = state.optimize(plan)?;
    let planner = state.query_planner();
    if let LogicalPlan::Sort(sort) = &plan
        && sort.fetch.is_none()
        && sort.expr.iter().all(|e| matches!(e.expr, Expr::Column(_)))
    {
        let exprs = create_physical_sort_exprs(
            &sort.expr,
            sort.input.schema(),
            state.execution_props(),
            &PhysicalPlanningContext::default(),
        )?;
        if let Some(ordering) = LexOrdering::new(exprs) {
            let mut input = planner.create_physical_plan(&sort.input, state).await?;
            if input.output_partitioning().partition_count() > 1 {
                input = Arc::new(CoalescePartitionsExec::new(input));
            }
            return Ok(Arc::new(SortExec::new(ordering, input)));
        }
    }
    planner.create_physical_plan(&plan, state).await
}

/// Cut `plan`, or `None` when it must run whole. With `splitting`, the part below the cut
/// must distribute over that division of the rows; without it (in a merge, whose tables are
/// empty) the cut is trusted to have been checked by the partial fragments.
pub(crate) fn split(
    plan: &Arc<dyn ExecutionPlan>,
    splitting: Option<Splitting<'_>>,
) -> Result<Option<Split>> {
    if let Some(split) = split_chain(plan, splitting)? {
        return Ok(Some(split));
    }
    match splitting {
        Some(Splitting::Cells(split_scan)) => split_below_joins(plan, split_scan),
        _ => Ok(None),
    }
}

/// The cut on the chain of single-input operators from the root (see the module's docs).
fn split_chain(
    plan: &Arc<dyn ExecutionPlan>,
    splitting: Option<Splitting<'_>>,
) -> Result<Option<Split>> {
    let path = chain(plan);
    // The chain's last node is its leaf, or the first node with several inputs (a join),
    // whose rows the split scan's path below it must carry.
    let single = match path.last() {
        Some(last) if last.children().is_empty() => path.len(),
        _ => path.len() - 1,
    };
    let cut = path[..single]
        .iter()
        .rposition(|node| !is_row_local(node.as_ref()));
    let below = match cut {
        Some(cut) => path.get(cut + 1),
        None => path.first(),
    };
    let divides = |below| match splitting {
        Some(Splitting::Cells(split_scan)) => {
            distributes(below, split_scan, false)
                || cut.is_some_and(|cut| {
                    path[cut]
                        .as_ref()
                        .downcast_ref::<AggregateExec>()
                        .is_some_and(|agg| ignores_unmatched_rows(agg, split_scan))
                })
        }
        Some(Splitting::Keys(key_scan)) => {
            matches!(co_partitioned(below, key_scan, false), Some(Part::Split(_)))
        }
        None => true,
    };
    if below.is_some_and(|below| !divides(below)) {
        return Ok(None);
    }
    let Some(cut) = cut else {
        return Ok(Some(Split {
            kind: MergeKind::Concatenate,
            partial: plan.clone(),
            ancestors: Vec::new(),
            merge_node: MergeNode::Nothing,
            below_joins: None,
            reduction: None,
        }));
    };
    let node = &path[cut];
    let ancestors: Vec<_> = path[..cut].iter().map(|n| (n.clone(), 0)).collect();
    if let Some(agg) = node.as_ref().downcast_ref::<AggregateExec>() {
        return Ok(match agg.mode() {
            AggregateMode::Partial => Some(Split {
                kind: MergeKind::FinalAggregate,
                partial: node.clone(),
                ancestors,
                merge_node: MergeNode::Nothing,
                below_joins: None,
                reduction: None,
            }),
            AggregateMode::Single | AggregateMode::SinglePartitioned => {
                let partial = partial_of(agg)?;
                // A limit on the groups (from GROUP BY ... LIMIT) is dropped: the partial
                // aggregations cannot know which groups survive, and the operators above
                // the final aggregation apply the limit anyway.
                Some(Split {
                    kind: MergeKind::FinalAggregate,
                    partial: Arc::new(partial),
                    ancestors,
                    merge_node: MergeNode::Final(node.clone()),
                    below_joins: None,
                    reduction: None,
                })
            }
            _ => None,
        });
    }
    if let Some(sort) = node.as_ref().downcast_ref::<SortExec>() {
        if sort.fetch().is_some() {
            return Ok(Some(Split {
                kind: MergeKind::TopK,
                partial: node.clone(),
                ancestors,
                merge_node: MergeNode::Again(node.clone()),
                below_joins: None,
                reduction: None,
            }));
        }
        // A full sort splits only by key ranges, which come from joins whose work then
        // divides (TPC-H Q20 sorts the suppliers it finds). The merge holds every row to
        // sort it, where a whole run could spill, and the usual full sort over cells, a
        // plain scan sorted, gains nothing from a split. Only a sort at the root, where
        // `plan_sorting_last` keeps it, is cut.
        if ancestors.is_empty() && !matches!(splitting, Some(Splitting::Cells(_))) {
            return Ok(Some(Split {
                kind: MergeKind::Sort,
                partial: sort.input().clone(),
                ancestors,
                merge_node: MergeNode::Again(node.clone()),
                below_joins: None,
                reduction: None,
            }));
        }
    }
    Ok(None)
}

/// A cut at an aggregation under a join, where the chain from the root has none (TPC-H
/// Q15 and Q20 aggregate lineitem by supplier, then join the sums to other frames): down
/// from the root along the one input that holds the split scan, the first aggregation whose
/// input distributes over the split becomes a partial aggregation in every fragment. The
/// merge finishes it and runs everything above it, joins included, reading the other frames
/// whole itself.
fn split_below_joins(
    plan: &Arc<dyn ExecutionPlan>,
    split_scan: SplitScan<'_>,
) -> Result<Option<Split>> {
    let mut ancestors: Vec<(Arc<dyn ExecutionPlan>, usize)> = Vec::new();
    let mut node = plan.clone();
    loop {
        let children = node.children();
        let holding: Vec<usize> = (0..children.len())
            .filter(|&i| reaches(children[i], split_scan))
            .collect();
        let [input] = holding.as_slice() else {
            return shared_cut(plan, &node, &holding, split_scan);
        };
        if let Some(agg) = node.as_ref().downcast_ref::<AggregateExec>()
            && ancestors.iter().any(|(n, _)| n.children().len() > 1)
            && cuts_below_joins(agg, split_scan)
        {
            let partial = partial_of(agg)?;
            let groups = grouping_origins(agg);
            let reduction = reduction(&ancestors, agg);
            return Ok(Some(Split {
                kind: MergeKind::FinalAggregate,
                partial: Arc::new(partial),
                ancestors,
                merge_node: MergeNode::Final(node.clone()),
                below_joins: Some(groups),
                reduction,
            }));
        }
        let next = children[*input].clone();
        ancestors.push((node.clone(), *input));
        node = next;
    }
}

/// The grouping columns of the aggregation `agg`, each traced to the scan column it is
/// (`None`: computed).
fn grouping_origins(agg: &AggregateExec) -> Vec<Option<JoinColumn>> {
    agg.group_expr()
        .expr()
        .iter()
        .map(|(expr, _)| origin(agg.input(), column_index(expr)?))
        .collect()
}

/// Whether the aggregation `agg`, under a join, may be cut: single-phase, without grouping
/// sets or a limit on its groups, over an input that distributes over the split.
fn cuts_below_joins(agg: &AggregateExec, split_scan: SplitScan<'_>) -> bool {
    matches!(
        agg.mode(),
        AggregateMode::Single | AggregateMode::SinglePartitioned
    ) && agg.group_expr().is_single()
        && agg.limit_options().is_none()
        && distributes(agg.input(), split_scan, false)
}

/// A cut shared by several reads of the split frame, where the inputs `holding` of `node`
/// (a join, or a union) all reach the split scan: TPC-H Q15 reads its common table
/// expression, lineitem's sums by supplier, once to join them to supplier and once for
/// their maximum. On every path down to the split scan, the first aggregation that could
/// be cut under a join is a site; when all sites do the same work, every fragment runs
/// that partial aggregation once, and the merge finishes it at each site over the same
/// partial results and runs the rest of the plan, reading the other frames itself.
/// `None` when a path reaches the split scan through no such aggregation, or the sites
/// differ.
fn shared_cut(
    plan: &Arc<dyn ExecutionPlan>,
    node: &Arc<dyn ExecutionPlan>,
    holding: &[usize],
    split_scan: SplitScan<'_>,
) -> Result<Option<Split>> {
    let children = node.children();
    let mut sites = Vec::new();
    if holding.len() < 2
        || !holding
            .iter()
            .all(|&i| cut_sites(children[i], split_scan, &mut sites))
    {
        return Ok(None);
    }
    let first = sites[0].clone();
    if !sites[1..].iter().all(|site| same_work(&first, site)) {
        return Ok(None);
    }
    let agg = first
        .as_ref()
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| internal("a shared cut is not an aggregation"))?;
    Ok(Some(Split {
        kind: MergeKind::FinalAggregate,
        partial: Arc::new(partial_of(agg)?),
        ancestors: Vec::new(),
        below_joins: Some(grouping_origins(agg)),
        reduction: None,
        merge_node: MergeNode::FinalAtEach {
            plan: plan.clone(),
            sites,
        },
    }))
}

/// Collects in `sites` the first aggregation that [`cuts_below_joins`] on every path from
/// `node` down to the split scan; `false` when some path has none.
fn cut_sites(
    node: &Arc<dyn ExecutionPlan>,
    split_scan: SplitScan<'_>,
    sites: &mut Vec<Arc<dyn ExecutionPlan>>,
) -> bool {
    if let Some(agg) = node.as_ref().downcast_ref::<AggregateExec>()
        && cuts_below_joins(agg, split_scan)
    {
        sites.push(node.clone());
        return true;
    }
    let holding: Vec<_> = node
        .children()
        .into_iter()
        .filter(|child| reaches(child, split_scan))
        .collect();
    !holding.is_empty()
        && holding
            .into_iter()
            .all(|child| cut_sites(child, split_scan, sites))
}

/// Whether the plans `a` and `b` compute the same rows: the same operators with the same
/// expressions over the same inputs, as they display. The filters a join pushes into the
/// scans below it at run time are left out: a fragment runs no join above its cut, so they
/// never filter there, and a plan holds them under one read and not another.
fn same_work(a: &Arc<dyn ExecutionPlan>, b: &Arc<dyn ExecutionPlan>) -> bool {
    let (a, b) = (without_dynamic_filters(a), without_dynamic_filters(b));
    if a.name() != b.name() || a.schema() != b.schema() || shown(a) != shown(b) {
        return false;
    }
    let (left, right) = (a.children(), b.children());
    left.len() == right.len() && left.iter().zip(right).all(|(l, r)| same_work(l, r))
}

/// `node`, or the first node under it that is no `DynamicFilterExec`.
fn without_dynamic_filters(node: &Arc<dyn ExecutionPlan>) -> &Arc<dyn ExecutionPlan> {
    let mut node = node;
    while node.name() == "DynamicFilterExec"
        && let [child] = node.children().as_slice()
    {
        node = child;
    }
    node
}

/// How `node` alone displays, without the dynamic filters pushed into it: a scan under a
/// join shows `predicate=<its filter> AND DynamicFilter [ .. ]` and the other read of its
/// frame `predicate=<its filter>`.
fn shown(node: &Arc<dyn ExecutionPlan>) -> String {
    let mut text = displayable(node.as_ref()).one_line().to_string();
    while let Some(start) = text.find("DynamicFilter [") {
        let mut depth = 0;
        let end = text[start..]
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '[' => depth += 1,
                    ']' if depth == 1 => return Some(start + i + 1),
                    ']' => depth -= 1,
                    _ => {}
                }
                None
            })
            .unwrap_or(text.len());
        text.replace_range(start..end, "");
    }
    text.trim_end()
        .split(", ")
        .filter(|part| !part.starts_with("dynamic_rg_pruning="))
        .filter_map(|part| match part.strip_prefix("predicate=") {
            Some(predicate) => {
                let kept: Vec<&str> = predicate
                    .split(" AND ")
                    .filter(|conjunct| !conjunct.trim().is_empty())
                    .collect();
                (!kept.is_empty()).then(|| format!("predicate={}", kept.join(" AND ")))
            }
            None => Some(part.to_owned()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The semi join that keeps, under the aggregation `agg` cut below joins (`ancestors`
/// from the root down to it, each with the input the path takes), only the rows of the
/// groups the first join above it can match. Up to that join the path must pass grouping
/// columns on unchanged (projections, filters); the join must drop the rows of its side
/// that match nothing (an inner join, either side of a semi join, the side an outer or
/// anti join does not keep), compare some grouping columns for equality, and match them
/// against a filtered input, so that the reduction keeps few groups. `None` otherwise.
fn reduction(
    ancestors: &[(Arc<dyn ExecutionPlan>, usize)],
    agg: &AggregateExec,
) -> Option<Reduction> {
    let group_exprs = agg.group_expr().expr();
    // Which grouping expression each output column of the node below is.
    let mut groups: Vec<Option<usize>> = (0..agg.schema().fields().len())
        .map(|i| (i < group_exprs.len()).then_some(i))
        .collect();
    for (node, side) in ancestors.iter().rev() {
        let children = node.children();
        if children.len() == 1 {
            if !is_row_local(node.as_ref()) {
                return None;
            }
            groups = (0..node.schema().fields().len())
                .map(|i| {
                    let (_, column) = input_column(node.as_ref(), i)?;
                    *groups.get(column)?
                })
                .collect();
            continue;
        }
        let join = node.as_ref().downcast_ref::<HashJoinExec>()?;
        if join.fetch().is_some() || !drops_unmatched(*join.join_type(), *side) {
            return None;
        }
        let other = children.get(1 - side)?;
        if !has_filter(other) {
            return None;
        }
        let on: Vec<_> = join
            .on()
            .iter()
            .filter_map(|(left, right)| {
                let (mine, theirs) = if *side == 0 {
                    (left, right)
                } else {
                    (right, left)
                };
                let group = (*groups.get(column_index(mine)?)?)?;
                Some((theirs.clone(), group_exprs[group].0.clone()))
            })
            .collect();
        return (!on.is_empty()).then(|| Reduction {
            other: (*other).clone(),
            on,
            null_equality: join.null_equality(),
        });
    }
    None
}

/// Whether a join of `join_type` drops the rows of its input `side` (0 left, 1 right)
/// that match no row of the other.
fn drops_unmatched(join_type: JoinType, side: usize) -> bool {
    match join_type {
        JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi => true,
        JoinType::Left | JoinType::LeftAnti | JoinType::LeftMark => side == 1,
        JoinType::Right | JoinType::RightAnti | JoinType::RightMark => side == 0,
        JoinType::Full => false,
    }
}

/// Whether some operator under `node` filters rows.
fn has_filter(node: &Arc<dyn ExecutionPlan>) -> bool {
    node.as_ref().is::<FilterExec>() || node.children().into_iter().any(has_filter)
}

/// Whether the rows of `node` over a part of the split scan's rows, for each part of a
/// split, together make its rows over all of them. The split scan must be the only one of
/// its kind under `node`. `under_merge_join`: a sort-merge join is above, on the path.
fn distributes(
    node: &Arc<dyn ExecutionPlan>,
    split_scan: SplitScan<'_>,
    under_merge_join: bool,
) -> bool {
    let children = node.children();
    if children.is_empty() {
        return split_scan(node.as_ref()) && is_row_local(node.as_ref());
    }
    let holding: Vec<usize> = (0..children.len())
        .filter(|&i| reaches(children[i], split_scan))
        .collect();
    let [side] = holding.as_slice() else {
        return false;
    };
    let passes = if children.len() == 1 {
        is_row_local(node.as_ref()) || (under_merge_join && is_full_sort(node.as_ref()))
    } else {
        keeps_rows_of(node.as_ref(), *side)
    };
    passes
        && distributes(
            children[*side],
            split_scan,
            under_merge_join || node.as_ref().is::<SortMergeJoinExec>(),
        )
}

/// Whether the aggregation `agg` over an outer join whose null side holds the split scan
/// (through projections) gives its answer from partial aggregations over parts of that
/// side's rows. A fragment's join adds a row with nulls on the split side for each
/// preserved row its part does not match: rows the join over all the parts may not have,
/// or have only once. They change nothing when the groups come from the preserved side
/// alone (so they fall in groups that exist anyway) and every aggregate ignores nulls and
/// reads only bare columns of the split side, as `count(o_orderkey)` grouped by
/// `c_custkey` does in TPC-H Q13.
fn ignores_unmatched_rows(agg: &AggregateExec, split_scan: SplitScan<'_>) -> bool {
    let mode = matches!(
        agg.mode(),
        AggregateMode::Single | AggregateMode::SinglePartitioned | AggregateMode::Partial
    );
    if !mode || !agg.group_expr().is_single() || agg.filter_expr().iter().any(Option::is_some) {
        return false;
    }
    // Down to the join through operators that only pass columns on (no filter: one on the
    // split side's columns would keep or drop the added rows).
    let mut path = vec![agg.input().clone()];
    let (join, join_type) = loop {
        let node = path.last().expect("a node").clone();
        if let Some(join_type) = join_type(node.as_ref()) {
            break (node, join_type);
        }
        let passes = node.fetch().is_none()
            && matches!(
                node.name(),
                "ProjectionExec" | "CoalesceBatchesExec" | "CooperativeExec"
            );
        match node.children().as_slice() {
            [child] if passes => path.push((*child).clone()),
            _ => return false,
        }
    };
    let null_side = match join_type {
        JoinType::Left => 1,
        JoinType::Right => 0,
        _ => return false,
    };
    if join.fetch().is_some() {
        return false;
    }
    let children = join.children();
    let under_merge_join = join.as_ref().is::<SortMergeJoinExec>();
    if reaches(children[1 - null_side], split_scan)
        || !distributes(children[null_side], split_scan, under_merge_join)
    {
        return false;
    }
    // The join input an input column of the aggregation comes from, unchanged.
    let side_of = |expr: &Arc<dyn PhysicalExpr>| {
        let mut index = column_index(expr)?;
        for node in &path[..path.len() - 1] {
            index = input_column(node.as_ref(), index)?.1;
        }
        Some(input_column(join.as_ref(), index)?.0)
    };
    let groups_preserved = agg
        .group_expr()
        .expr()
        .iter()
        .all(|(expr, _)| side_of(expr) == Some(1 - null_side));
    let aggregates_ignore_nulls = agg.aggr_expr().iter().all(|aggregate| {
        matches!(
            aggregate.fun().name(),
            "count" | "sum" | "min" | "max" | "avg"
        ) && !aggregate.is_distinct()
            && aggregate.order_bys().is_empty()
            && aggregate
                .expressions()
                .iter()
                .all(|arg| side_of(arg) == Some(null_side))
    });
    groups_preserved && aggregates_ignore_nulls
}

/// The type of the join `node`, or `None` when it is no join (or a cross join).
fn join_type(node: &dyn ExecutionPlan) -> Option<JoinType> {
    if let Some(join) = node.downcast_ref::<HashJoinExec>() {
        Some(*join.join_type())
    } else if let Some(join) = node.downcast_ref::<SortMergeJoinExec>() {
        Some(join.join_type())
    } else {
        node.downcast_ref::<NestedLoopJoinExec>()
            .map(|join| *join.join_type())
    }
}

/// Whether some leaf under `node` is the split scan.
fn reaches(node: &Arc<dyn ExecutionPlan>, split_scan: SplitScan<'_>) -> bool {
    let children = node.children();
    if children.is_empty() {
        return split_scan(node.as_ref());
    }
    children.into_iter().any(|child| reaches(child, split_scan))
}

/// How the rows of a subtree divide between fragments split by key ranges.
enum Part {
    /// It reads no keyed frame: every fragment computes all of it.
    Whole,
    /// Every row is computed by exactly one fragment, the one whose range holds the row's
    /// key; these output columns hold that key (none when no column does).
    Split(Vec<usize>),
}

/// How `node`'s rows divide when the keyed scans `key_scan` recognises are split by key
/// ranges, or `None` when the fragments' rows together would not be its rows.
/// `under_merge_join`: a sort-merge join is above, on the path.
fn co_partitioned(
    node: &Arc<dyn ExecutionPlan>,
    key_scan: KeyScan<'_>,
    under_merge_join: bool,
) -> Option<Part> {
    let children = node.children();
    if children.is_empty() {
        return match key_scan(node.as_ref()) {
            Some(keys) => is_row_local(node.as_ref()).then_some(Part::Split(keys)),
            None => Some(Part::Whole),
        };
    }
    let below_merge_join = under_merge_join || node.as_ref().is::<SortMergeJoinExec>();
    let parts = children
        .iter()
        .map(|child| co_partitioned(child, key_scan, below_merge_join))
        .collect::<Option<Vec<_>>>()?;
    if parts.iter().all(|part| matches!(part, Part::Whole)) {
        return Some(Part::Whole);
    }
    let node = node.as_ref();
    let keys = match parts.as_slice() {
        [Part::Split(keys)] => {
            let passes = is_row_local(node)
                || (under_merge_join && is_full_sort(node))
                || groups_by_key(node, keys);
            if !passes {
                return None;
            }
            keys_through(node, &[keys, &[]])
        }
        [left, right] => {
            if node.fetch().is_some() {
                return None;
            }
            match (left, right) {
                (Part::Split(keys), Part::Whole) => {
                    keeps_rows_of(node, 0).then(|| keys_through(node, &[keys, &[]]))?
                }
                (Part::Whole, Part::Split(keys)) => {
                    keeps_rows_of(node, 1).then(|| keys_through(node, &[&[], keys]))?
                }
                (Part::Split(left), Part::Split(right)) => {
                    let join_type = joined_on_keys(node, left, right)?;
                    // An outer join's missing side is null where nothing matched, so only
                    // the preserved side's columns still hold every row's key.
                    let (left, right): (&[usize], &[usize]) = match join_type {
                        JoinType::Inner => (left, right),
                        JoinType::Left
                        | JoinType::LeftSemi
                        | JoinType::LeftAnti
                        | JoinType::LeftMark => (left, &[]),
                        JoinType::Right
                        | JoinType::RightSemi
                        | JoinType::RightAnti
                        | JoinType::RightMark => (&[], right),
                        JoinType::Full => (&[], &[]),
                    };
                    keys_through(node, &[left, right])
                }
                (Part::Whole, Part::Whole) => return Some(Part::Whole),
            }
        }
        _ => return None,
    };
    Some(Part::Split(keys))
}

/// Whether `node` is an aggregation grouping by one of the input columns `keys`: then each
/// group's rows are all in one fragment, and its groups are its own.
fn groups_by_key(node: &dyn ExecutionPlan, keys: &[usize]) -> bool {
    let Some(agg) = node.downcast_ref::<AggregateExec>() else {
        return false;
    };
    agg.limit_options().is_none()
        && agg.group_expr().is_single()
        && agg
            .group_expr()
            .expr()
            .iter()
            .any(|(expr, _)| column_index(expr).is_some_and(|c| keys.contains(&c)))
}

/// The input column `expr` is, when it is a bare column.
fn column_index(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    expr.as_ref().downcast_ref::<Column>().map(Column::index)
}

/// The join type of `node` when it is an equi-join of two keyed inputs on their keys
/// (`left` and `right` are the key columns of each input): rows that can match then have
/// equal keys, so they are in the same fragment. Nulls never match (a null key's rows are
/// all in the first fragment, but they must not meet other inputs' null keys).
fn joined_on_keys(node: &dyn ExecutionPlan, left: &[usize], right: &[usize]) -> Option<JoinType> {
    let (on, join_type, null_equality) = if let Some(join) = node.downcast_ref::<HashJoinExec>() {
        (join.on(), *join.join_type(), join.null_equality())
    } else if let Some(join) = node.downcast_ref::<SortMergeJoinExec>() {
        (join.on(), join.join_type(), join.null_equality())
    } else {
        return None;
    };
    let on_keys = on.iter().any(|(l, r)| {
        column_index(l).is_some_and(|l| left.contains(&l))
            && column_index(r).is_some_and(|r| right.contains(&r))
    });
    (on_keys && null_equality == NullEquality::NullEqualsNothing).then_some(join_type)
}

/// The output columns of `node` that are one of the columns `keys[i]` of its input `i`.
fn keys_through(node: &dyn ExecutionPlan, keys: &[&[usize]; 2]) -> Vec<usize> {
    (0..node.schema().fields().len())
        .filter(|&i| {
            input_column(node, i)
                .is_some_and(|(input, column)| keys.get(input).is_some_and(|k| k.contains(&column)))
        })
        .collect()
}

/// Which input column the output column `index` of `node` is, unchanged: `(input, column)`.
/// `None` for a computed column, and for operators this does not know.
fn input_column(node: &dyn ExecutionPlan, index: usize) -> Option<(usize, usize)> {
    let joined = |left: &SchemaRef, right: &SchemaRef, join_type: &JoinType, index: usize| {
        let (_, indices) = build_join_schema(left, right, join_type);
        indices.get(index).and_then(|c| match c.side {
            JoinSide::Left => Some((0, c.index)),
            JoinSide::Right => Some((1, c.index)),
            JoinSide::None => None,
        })
    };
    let projected = |projection: Option<&[usize]>, index: usize| match projection {
        Some(projection) => projection.get(index).copied(),
        None => Some(index),
    };
    if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
        return projection
            .expr()
            .get(index)
            .and_then(|e| column_index(&e.expr))
            .map(|c| (0, c));
    }
    if let Some(filter) = node.downcast_ref::<FilterExec>() {
        return projected(filter.projection().as_deref(), index).map(|c| (0, c));
    }
    if let Some(agg) = node.downcast_ref::<AggregateExec>() {
        let groups = agg.group_expr();
        return groups
            .is_single()
            .then(|| groups.expr().get(index))
            .flatten()
            .and_then(|(e, _)| column_index(e))
            .map(|c| (0, c));
    }
    if let Some(join) = node.downcast_ref::<HashJoinExec>() {
        let index = projected(join.projection.as_deref(), index)?;
        return joined(
            &join.left().schema(),
            &join.right().schema(),
            join.join_type(),
            index,
        );
    }
    if let Some(join) = node.downcast_ref::<SortMergeJoinExec>() {
        return joined(
            &join.left().schema(),
            &join.right().schema(),
            &join.join_type(),
            index,
        );
    }
    if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>() {
        let index = projected(join.projection().as_deref(), index)?;
        return joined(
            &join.left().schema(),
            &join.right().schema(),
            join.join_type(),
            index,
        );
    }
    if let Some(join) = node.downcast_ref::<CrossJoinExec>() {
        let left = join.left().schema().fields().len();
        return Some(if index < left {
            (0, index)
        } else {
            (1, index - left)
        });
    }
    let passes_rows_through = matches!(
        node.name(),
        "CoalesceBatchesExec"
            | "CooperativeExec"
            | "DynamicFilterExec"
            | "SortExec"
            | "RepartitionExec"
            | "CoalescePartitionsExec"
            | "SortPreservingMergeExec"
    );
    (passes_rows_through && node.children().len() == 1).then_some((0, index))
}

/// A column a plan's equi-joins compare, traced down to the leaf it is read from.
#[derive(Debug, Clone)]
pub struct JoinColumn {
    /// The leaf (a scan) the column comes from, unchanged.
    pub leaf: Arc<dyn ExecutionPlan>,
    /// The column's position among the leaf's columns.
    pub column: usize,
}

/// The pairs of scan columns `plan`'s equi-joins compare for equality (where both sides are
/// a scan's column, passed up unchanged): the candidates for keys to split frames by.
pub fn equi_join_columns(plan: &Arc<dyn ExecutionPlan>) -> Vec<(JoinColumn, JoinColumn)> {
    let mut pairs = Vec::new();
    let mut stack = vec![plan.clone()];
    while let Some(node) = stack.pop() {
        let on = if let Some(join) = node.as_ref().downcast_ref::<HashJoinExec>() {
            join.on()
        } else if let Some(join) = node.as_ref().downcast_ref::<SortMergeJoinExec>() {
            join.on()
        } else {
            &[]
        };
        let children = node.children();
        for (l, r) in on {
            let origin = |expr: &Arc<dyn PhysicalExpr>, side: usize| {
                origin(children.get(side)?, column_index(expr)?)
            };
            if let (Some(l), Some(r)) = (origin(l, 0), origin(r, 1)) {
                pairs.push((l, r));
            }
        }
        stack.extend(children.into_iter().cloned());
    }
    pairs
}

/// The leaf column the output column `index` of `node` is read from, unchanged.
fn origin(node: &Arc<dyn ExecutionPlan>, index: usize) -> Option<JoinColumn> {
    let mut node = node.clone();
    let mut index = index;
    loop {
        if node.children().is_empty() {
            return Some(JoinColumn {
                leaf: node,
                column: index,
            });
        }
        let (input, column) = input_column(node.as_ref(), index)?;
        let child = node.children().get(input).map(|c| (*c).clone())?;
        node = child;
        index = column;
    }
}

/// A sort of all its input: below a sort-merge join, each fragment sorts its own rows, and
/// the join needs no more than that.
fn is_full_sort(node: &dyn ExecutionPlan) -> bool {
    node.downcast_ref::<SortExec>()
        .is_some_and(|sort| sort.fetch().is_none())
}

/// Whether each output row of the join `node` comes from at most one row of its input
/// `side` (0 left, 1 right) and depends on no other row of that side: then the join over a
/// part of that side's rows gives the part of its output those rows make.
fn keeps_rows_of(node: &dyn ExecutionPlan, side: usize) -> bool {
    if node.fetch().is_some() {
        return false;
    }
    if node.is::<CrossJoinExec>() {
        return true;
    }
    let Some(join_type) = join_type(node) else {
        return false;
    };
    match side {
        0 => matches!(
            join_type,
            JoinType::Inner
                | JoinType::Left
                | JoinType::LeftSemi
                | JoinType::LeftAnti
                | JoinType::LeftMark
        ),
        1 => matches!(
            join_type,
            JoinType::Inner
                | JoinType::Right
                | JoinType::RightSemi
                | JoinType::RightAnti
                | JoinType::RightMark
        ),
        _ => false,
    }
}

/// The final aggregation of the single-phase aggregation `node`, over `input`, the partial
/// results.
fn final_of(
    node: &Arc<dyn ExecutionPlan>,
    input: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let single = node
        .as_ref()
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| internal("the cut is not an aggregation"))?;
    Ok(Arc::new(AggregateExec::try_new(
        AggregateMode::Final,
        single.group_expr().as_final(),
        single.aggr_expr().to_vec(),
        single.filter_expr().to_vec(),
        input,
        single.input_schema(),
    )?))
}

/// The partial aggregation of the single-phase aggregation `agg`, over the same input.
fn partial_of(agg: &AggregateExec) -> Result<AggregateExec> {
    AggregateExec::try_new(
        AggregateMode::Partial,
        agg.group_expr().clone(),
        agg.aggr_expr().to_vec(),
        agg.filter_expr().to_vec(),
        agg.input().clone(),
        agg.input_schema(),
    )
}

/// `parent` over a new single input.
fn with_child(
    parent: &Arc<dyn ExecutionPlan>,
    child: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    with_child_at(parent, 0, child)
}

/// `parent` with `child` in place of its input `index`.
fn with_child_at(
    parent: &Arc<dyn ExecutionPlan>,
    index: usize,
    child: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut children: Vec<Arc<dyn ExecutionPlan>> =
        parent.children().into_iter().cloned().collect();
    let slot = children
        .get_mut(index)
        .ok_or_else(|| internal("the path to the cut names a missing input"))?;
    *slot = child;
    parent.clone().replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

fn internal(message: &str) -> DataFusionError {
    DataFusionError::Internal(message.to_owned())
}

/// The operators from the root down to the first that has no input or several.
fn chain(plan: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn ExecutionPlan>> {
    let mut path = vec![plan.clone()];
    while let Some(child) = path
        .last()
        .and_then(|node| match node.children().as_slice() {
            [child] => Some((*child).clone()),
            _ => None,
        })
    {
        path.push(child);
    }
    path
}

/// Operators whose output over a union of cells is the union of their outputs per cell
/// (not when they carry a limit, as a scan does after a bare LIMIT is pushed into it).
fn is_row_local(node: &dyn ExecutionPlan) -> bool {
    node.fetch().is_none()
        && matches!(
            node.name(),
            "DataSourceExec"
                | "PlanningScan"
                | "EmptyExec"
                | "FilterExec"
                | "DynamicFilterExec"
                | "ProjectionExec"
                | "CoalesceBatchesExec"
                | "CooperativeExec"
        )
}
