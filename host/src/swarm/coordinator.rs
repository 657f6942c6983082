//! The coordinator: runs a split statement's fragments on the swarm.
//!
//! It reads the world view, keeps the nodes that are alive and not critical, and shares the
//! statement's cells between them in proportion to their capacity (idle bees, lowered by
//! their temperature). Cells a node's cache already holds go to that node first. Each
//! node's share is then cut by the leafcutter to that node's own bees and budget, so a Pi
//! and a large machine get fragments of different sizes. The tasks go into a manifest; the
//! coordinator runs its own share (if any) on its bees and polls the query directory for
//! the others' reports. A task whose node turns Suspect or Dead, leaves, or passes the
//! deadline is reassigned to another node; one that fails in a way another node may avoid
//! (out of memory, a trap) is retried elsewhere; after three attempts the statement is
//! abandoned with every attempt listed. Errors that any node would meet (SQL, corrupt
//! data) end the statement at once. The query directory is removed at the end, whatever
//! happened.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use apiary_engine::MergeKind;
use apiary_engine::arrow::datatypes::SchemaRef;
use apiary_engine::arrow::record_batch::RecordBatch;
use apiary_engine::lake::FrameSchema;
use bytes::Bytes;

use crate::chamber::BoundFunction;
use crate::error::Attempt;
use crate::lake::FunctionEntry;
use crate::leafcutter;
use crate::swarm::cache::cell_tag;
use crate::swarm::heartbeat::{Liveness, NodeView, WorldView, now_ms};
use crate::swarm::manifest::{
    Manifest, Outcome, TaskCell, TaskReport, TaskSpec, WholeFrame, manifest_key, partial_key,
    query_dir, report_key,
};
use crate::swarm::temperature::{Band, Temperature};
use crate::swarm::worker::{remove_query, retryable, task_fragment};
use crate::swarm::{CellCache, Distribute, SwarmConfig};
use crate::{BeePool, ChamberStats, Error, FragmentOutput, Lake, Result};

/// Attempts of one fragment before the statement is abandoned.
pub const MAX_ATTEMPTS: usize = 3;

/// Extra time a node gets past the chamber deadline before its task is reassigned.
const DEADLINE_GRACE: Duration = Duration::from_secs(10);

/// A split statement, ready to be shared out.
#[derive(Debug, Clone)]
pub(crate) struct Statement {
    pub sql: String,
    /// The registered functions it calls, for the manifest.
    pub functions: BTreeMap<String, FunctionEntry>,
    pub namespace: (String, String),
    pub table: String,
    pub schema: FrameSchema,
    pub kind: MergeKind,
    /// The table's surviving cells: key and size.
    pub cells: Vec<(String, u64)>,
    /// The other frames it joins, which every fragment reads whole.
    pub whole: Vec<WholeFrame>,
}

/// One fragment as the swarm ran it.
#[derive(Debug, Clone)]
pub(crate) struct SwarmRun {
    pub label: String,
    pub node: String,
    pub attempts: u32,
    pub cells: usize,
    pub schema: Option<SchemaRef>,
    pub batches: Vec<RecordBatch>,
    pub stats: ChamberStats,
}

/// What coordinating a statement took, besides the fragments.
#[derive(Debug, Clone, Default)]
pub struct Coordination {
    /// The statement's id.
    pub query: String,
    /// Nodes given fragments.
    pub nodes: Vec<String>,
    /// Manifest writes (the first and one per reassignment round).
    pub manifest_writes: u32,
    /// Times the query directory was listed.
    pub polls: u32,
    /// Reassignments.
    pub reassigned: u32,
    /// Wall time from before the manifest was written to the last partial result read.
    pub elapsed: Duration,
}

/// A node that may be given fragments.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub node: String,
    pub bees: usize,
    pub budget: u64,
    pub weight: f64,
    pub cached: HashSet<String>,
}

impl Candidate {
    fn of(view: &NodeView) -> Self {
        let hb = &view.heartbeat;
        Self {
            node: hb.node.clone(),
            bees: hb.bees.max(1),
            budget: hb.budget,
            weight: weight(hb.load.idle, hb.bees, hb.load.temperature),
            cached: hb.cache.cells.iter().cloned().collect(),
        }
    }
}

/// Capacity: idle bees (at least half a bee, so a busy node still gets some work), less
/// up to half for its temperature.
fn weight(idle: usize, bees: usize, temperature: Temperature) -> f64 {
    let idle = if bees == 0 {
        0.5
    } else {
        (idle as f64).max(0.5)
    };
    idle * (1.0 - temperature.value.clamp(0.0, 1.0) / 2.0)
}

/// Share `cells` (sizes, with their cache tags) between `candidates` in proportion to
/// their weights, cached cells first to the nodes holding them. Returns each candidate's
/// cells, as indexes into `cells`, in order.
pub(crate) fn share(cells: &[(String, u64)], candidates: &[Candidate]) -> Vec<Vec<usize>> {
    let total: u64 = cells.iter().map(|c| c.1.max(1)).sum();
    let weights: f64 = candidates
        .iter()
        .map(|c| c.weight)
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let targets: Vec<f64> = candidates
        .iter()
        .map(|c| total as f64 * c.weight / weights)
        .collect();
    let mut loads = vec![0u64; candidates.len()];
    let mut shares = vec![Vec::new(); candidates.len()];
    let mut left = Vec::new();
    for (i, (key, size)) in cells.iter().enumerate() {
        let size = (*size).max(1);
        let tag = cell_tag(key);
        let holder = candidates.iter().enumerate().find(|(n, c)| {
            c.cached.contains(&tag) && (loads[*n] + size) as f64 <= targets[*n] * 1.1 + 1.0
        });
        match holder {
            Some((n, _)) => {
                loads[n] += size;
                shares[n].push(i);
            }
            None => left.push(i),
        }
    }
    for i in left {
        let size = cells[i].1.max(1);
        let n = (0..candidates.len())
            .max_by(|&a, &b| {
                let room = |n: usize| targets[n] - loads[n] as f64;
                room(a).total_cmp(&room(b)).then(b.cmp(&a))
            })
            .unwrap_or(0);
        loads[n] += size;
        shares[n].push(i);
    }
    for share in &mut shares {
        share.sort_unstable();
    }
    shares
}

/// The tasks of a statement over `cells`: each candidate's share (see [`share`]) cut by the
/// leafcutter to that candidate's bees and [`leafcutter::fragment_limit`], so a join
/// (`joins`) gets one task per bee unless `fragment_cap` is set.
pub(crate) fn plan_tasks(
    cells: &[(String, u64)],
    candidates: &[Candidate],
    fragment_cap: Option<u64>,
    joins: bool,
) -> Vec<TaskSpec> {
    let shares = share(cells, candidates);
    let mut tasks = Vec::new();
    for (candidate, share) in candidates.iter().zip(&shares) {
        if share.is_empty() {
            continue;
        }
        let sizes: Vec<u64> = share.iter().map(|&i| cells[i].1).collect();
        let cap = leafcutter::fragment_limit(candidate.budget, fragment_cap, joins);
        for group in leafcutter::cut_cell_groups(&sizes, candidate.bees, cap) {
            tasks.push(TaskSpec {
                task: tasks.len(),
                label: String::new(),
                attempt: 1,
                node: candidate.node.clone(),
                cells: share[group]
                    .iter()
                    .map(|&i| TaskCell {
                        key: cells[i].0.clone(),
                        size: cells[i].1,
                    })
                    .collect(),
            });
        }
    }
    let count = tasks.len();
    for task in &mut tasks {
        task.label = format!("fragment {} of {count}", task.task + 1);
    }
    tasks
}

/// Runs split statements on the swarm for one session.
#[derive(Debug)]
pub(crate) struct Coordinator<'a> {
    pub lake: &'a Arc<Lake>,
    pub pool: &'a Arc<BeePool>,
    pub cache: Option<Arc<CellCache>>,
    pub config: &'a SwarmConfig,
    /// The session's cap on a fragment's bytes, when one was set.
    pub fragment_cap: Option<u64>,
    /// The user-defined functions the statement calls, for fragments run here.
    pub functions: Vec<BoundFunction>,
}

/// A task being followed.
struct Pending {
    spec: TaskSpec,
    since: Instant,
    deadline: Instant,
    attempts: Vec<Attempt>,
    local: Option<Receiver<Result<FragmentOutput>>>,
    result: Option<SwarmRun>,
}

impl Coordinator<'_> {
    /// The nodes this statement may use, or `None` to run it on this node alone: no other
    /// node is alive (and cool enough), or `auto` finds the work fits this node's bees.
    async fn candidates(&self, local_groups: usize) -> Result<Option<Vec<Candidate>>> {
        let bees = self.pool.config().bees;
        match self.config.distribute {
            Distribute::Never => return Ok(None),
            Distribute::Auto if local_groups <= bees => return Ok(None),
            _ => {}
        }
        let nodes = crate::swarm::world_view(self.lake, self.config.heartbeat).await?;
        let mut remote: Vec<Candidate> = nodes
            .iter()
            .filter(|n| {
                n.liveness == Liveness::Alive
                    && n.heartbeat.node != self.config.node
                    && n.heartbeat.load.temperature.band < Band::Critical
            })
            .map(Candidate::of)
            .collect();
        if remote.is_empty() {
            return Ok(None);
        }
        if self.config.distribute == Distribute::Auto {
            let load = self.pool.load();
            remote.push(Candidate {
                node: self.config.node.clone(),
                bees,
                budget: self.pool.config().budget,
                weight: weight(load.idle, bees, Temperature::of(load)),
                cached: self
                    .cache
                    .as_ref()
                    .map(|c| c.summary().cells.into_iter().collect())
                    .unwrap_or_default(),
            });
        }
        Ok(Some(remote))
    }

    /// Run `statement` on the swarm; `None` when it should run on this node alone.
    pub(crate) async fn run(
        &self,
        statement: &Statement,
        local_groups: usize,
    ) -> Result<Option<(Vec<SwarmRun>, Coordination)>> {
        let Some(candidates) = self.candidates(local_groups).await? else {
            return Ok(None);
        };
        let started = Instant::now();
        let query = uuid::Uuid::new_v4().simple().to_string();
        let manifest = self.manifest(&query, statement, &candidates);
        tracing::info!(
            query,
            tasks = manifest.tasks.len(),
            nodes = candidates.len(),
            "statement distributed"
        );
        let outcome = self.follow(manifest, &candidates, started).await;
        if let Err(err) = remove_query(self.lake, &query).await {
            tracing::warn!(query, %err, "could not remove the query directory");
        }
        outcome.map(Some)
    }

    fn manifest(&self, query: &str, statement: &Statement, candidates: &[Candidate]) -> Manifest {
        let tasks = plan_tasks(
            &statement.cells,
            candidates,
            self.fragment_cap,
            !statement.whole.is_empty(),
        );
        let deadline = self.config.deadline;
        let created_ms = now_ms();
        Manifest {
            query: query.to_owned(),
            coordinator: self.config.node.clone(),
            created_ms,
            expires_ms: created_ms
                + ((deadline + DEADLINE_GRACE) * MAX_ATTEMPTS as u32).as_millis() as u64,
            sql: statement.sql.clone(),
            functions: statement.functions.clone(),
            namespace: statement.namespace.clone(),
            table: statement.table.clone(),
            schema: statement.schema.clone(),
            whole: statement.whole.clone(),
            merge: statement.kind,
            deadline_ms: deadline.as_millis() as u64,
            tasks,
        }
    }

    async fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let bytes = serde_json::to_vec(manifest)
            .map_err(|e| Error::Internal(format!("encoding a manifest: {e}")))?;
        self.lake
            .meadow()
            .put(&manifest_key(&manifest.query), Bytes::from(bytes))
            .await
    }

    fn start_local(
        &self,
        manifest: &Manifest,
        spec: &TaskSpec,
    ) -> Result<Receiver<Result<FragmentOutput>>> {
        let fragment = task_fragment(self.lake, self.cache.clone(), manifest, spec)?
            .with_functions(self.functions.clone());
        self.pool
            .submit_with_deadline(fragment, self.config.deadline)
    }

    async fn follow(
        &self,
        mut manifest: Manifest,
        candidates: &[Candidate],
        started: Instant,
    ) -> Result<(Vec<SwarmRun>, Coordination)> {
        let mut coordination = Coordination {
            query: manifest.query.clone(),
            nodes: candidates.iter().map(|c| c.node.clone()).collect(),
            ..Coordination::default()
        };
        let task_deadline = self.config.deadline + DEADLINE_GRACE;
        let mut pending: Vec<Pending> = Vec::with_capacity(manifest.tasks.len());
        for spec in &manifest.tasks {
            let local = if spec.node == self.config.node {
                Some(self.start_local(&manifest, spec)?)
            } else {
                None
            };
            pending.push(Pending {
                spec: spec.clone(),
                since: Instant::now(),
                deadline: Instant::now() + task_deadline,
                attempts: Vec::new(),
                local,
                result: None,
            });
        }
        if pending.iter().any(|p| p.local.is_none()) {
            self.write_manifest(&manifest).await?;
            coordination.manifest_writes += 1;
        }
        let mut world = WorldView::new();
        let mut liveness: BTreeMap<String, Liveness> = BTreeMap::new();
        let mut last_look: Option<Instant> = None;
        let look_every = (self.config.heartbeat / 2).max(self.config.poll);
        let dir = query_dir(&manifest.query);
        // Look again soon at first, then less and less often, up to the poll interval: short
        // statements are not kept waiting, long ones do not list the directory needlessly.
        let mut wait = Duration::from_millis(5).min(self.config.poll);
        let mut first = true;
        while pending.iter().any(|p| p.result.is_none()) {
            if !first {
                tokio::time::sleep(wait).await;
                wait = (wait * 3 / 2).min(self.config.poll);
            }
            first = false;
            let remote_waiting = pending
                .iter()
                .any(|p| p.result.is_none() && p.local.is_none());
            let mut reports = HashSet::new();
            if remote_waiting {
                coordination.polls += 1;
                for object in self.lake.meadow().list(&dir).await? {
                    if let Some((_, task, attempt)) =
                        crate::swarm::manifest::parse_report_key(object.location.as_ref())
                    {
                        reports.insert((task, attempt));
                    }
                }
                if last_look.is_none_or(|t| t.elapsed() >= look_every) {
                    liveness = world
                        .refresh(self.lake, self.config.heartbeat)
                        .await?
                        .into_iter()
                        .map(|n| (n.heartbeat.node, n.liveness))
                        .collect();
                    last_look = Some(Instant::now());
                }
            }
            let mut reassign = Vec::new();
            for (index, task) in pending.iter_mut().enumerate() {
                if task.result.is_some() {
                    continue;
                }
                let failure = if let Some(answer) = &task.local {
                    match answer.try_recv() {
                        Ok(Ok(output)) => {
                            task.result = Some(self.run_of(
                                task,
                                output.schema,
                                output.batches,
                                output.stats,
                            ));
                            None
                        }
                        Ok(Err(err)) => Some((err.to_string(), retryable(&err))),
                        Err(TryRecvError::Empty) => None,
                        Err(TryRecvError::Disconnected) => {
                            Some((Error::PoolClosed.to_string(), true))
                        }
                    }
                } else {
                    self.check_remote(&manifest.query, task, &reports, &liveness)
                        .await?
                };
                if let Some((error, retry)) = failure {
                    task.attempts.push(Attempt {
                        node: task.spec.node.clone(),
                        error: error.clone(),
                        elapsed: task.since.elapsed(),
                    });
                    if !retry {
                        return Err(Error::Remote {
                            node: task.spec.node.clone(),
                            fragment: task.spec.label.clone(),
                            message: error,
                        });
                    }
                    if task.attempts.len() >= MAX_ATTEMPTS {
                        return Err(Error::Abandoned {
                            query: manifest.query.clone(),
                            fragment: task.spec.label.clone(),
                            cells: task.spec.cells.iter().map(|c| c.key.clone()).collect(),
                            attempts: task.attempts.clone(),
                        });
                    }
                    reassign.push(index);
                }
            }
            if reassign.is_empty() {
                continue;
            }
            let mut remote_changed = false;
            for index in reassign {
                let task = &mut pending[index];
                let tried: HashSet<&str> = task.attempts.iter().map(|a| a.node.as_str()).collect();
                let alive = |c: &&Candidate| {
                    c.node == self.config.node
                        || liveness.get(&c.node).is_none_or(|l| *l == Liveness::Alive)
                };
                // An alive node that has not tried yet, else any alive other node, else any
                // other node at all (its silence will count as one more attempt).
                let untried = |c: &&Candidate| !tried.contains(c.node.as_str());
                let other = |c: &&Candidate| c.node != task.spec.node;
                let next = candidates
                    .iter()
                    .filter(alive)
                    .find(untried)
                    .or_else(|| candidates.iter().filter(alive).find(other))
                    .or_else(|| candidates.iter().find(untried))
                    .or_else(|| candidates.iter().find(other))
                    .map_or_else(|| task.spec.node.clone(), |c| c.node.clone());
                tracing::info!(
                    task = %task.spec.label,
                    from = %task.spec.node,
                    to = %next,
                    "reassigning a task"
                );
                coordination.reassigned += 1;
                task.spec.attempt += 1;
                task.spec.node = next;
                task.since = Instant::now();
                task.deadline = Instant::now() + task_deadline;
                manifest.tasks[task.spec.task] = task.spec.clone();
                if task.spec.node == self.config.node {
                    task.local = Some(self.start_local(&manifest, &task.spec)?);
                } else {
                    task.local = None;
                    remote_changed = true;
                }
            }
            if remote_changed {
                self.write_manifest(&manifest).await?;
                coordination.manifest_writes += 1;
            }
        }
        coordination.elapsed = started.elapsed();
        let runs = pending.into_iter().filter_map(|p| p.result).collect();
        Ok((runs, coordination))
    }

    fn run_of(
        &self,
        task: &Pending,
        schema: Option<SchemaRef>,
        batches: Vec<RecordBatch>,
        stats: ChamberStats,
    ) -> SwarmRun {
        SwarmRun {
            label: task.spec.label.clone(),
            node: task.spec.node.clone(),
            attempts: task.spec.attempt,
            cells: task.spec.cells.len(),
            schema,
            batches,
            stats,
        }
    }

    /// A remote task's report, if one arrived, or why it should be given up on.
    async fn check_remote(
        &self,
        id: &str,
        task: &mut Pending,
        reports: &HashSet<(usize, u32)>,
        liveness: &BTreeMap<String, Liveness>,
    ) -> Result<Option<(String, bool)>> {
        let meadow = self.lake.meadow();
        // Any attempt's result will do: every attempt reads the same cells.
        for attempt in (1..=task.spec.attempt).rev() {
            if !reports.contains(&(task.spec.task, attempt)) {
                continue;
            }
            let Some(bytes) = meadow.get(&report_key(id, task.spec.task, attempt)).await? else {
                continue;
            };
            let report: TaskReport = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Corrupt(format!("a task report: {e}")))?;
            match &report.outcome {
                Outcome::Done { .. } => {
                    let key = partial_key(id, task.spec.task, attempt);
                    let bytes = meadow.get(&key).await?.ok_or_else(|| {
                        Error::Corrupt(format!("{key} is missing though its report is written"))
                    })?;
                    let (schema, batches) =
                        apiary_engine::decode_ipc_chunks(std::iter::once(bytes.to_vec()))
                            .map_err(|e| Error::Corrupt(format!("{key}: {e}")))?;
                    let stats = report.outcome.stats().unwrap_or_default();
                    let mut run = self.run_of(task, schema, batches, stats);
                    run.node = report.node.clone();
                    run.attempts = attempt;
                    task.result = Some(run);
                    return Ok(None);
                }
                Outcome::Failed { error, retry } if attempt == task.spec.attempt => {
                    return Ok(Some((error.clone(), *retry)));
                }
                Outcome::Failed { .. } => {}
            }
        }
        let node = &task.spec.node;
        let silent = match liveness.get(node) {
            None => Some("the node left the swarm".to_owned()),
            Some(Liveness::Suspect) => Some("the node fell silent (suspect)".to_owned()),
            Some(Liveness::Dead) => Some("the node is dead".to_owned()),
            _ => None,
        };
        if let Some(reason) = silent {
            return Ok(Some((reason, true)));
        }
        if Instant::now() > task.deadline {
            return Ok(Some((
                format!(
                    "no result by the deadline of {:?}",
                    self.config.deadline + DEADLINE_GRACE
                ),
                true,
            )));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn node(name: &str, bees: usize, budget: u64, weight: f64, cached: &[&str]) -> Candidate {
        Candidate {
            node: name.into(),
            bees,
            budget,
            weight,
            cached: cached.iter().map(|k| cell_tag(k)).collect(),
        }
    }

    fn cells(n: usize, size: u64) -> Vec<(String, u64)> {
        (0..n)
            .map(|i| (format!("t/cell_{i}.parquet"), size))
            .collect()
    }

    #[test]
    fn shares_follow_weights() {
        let cells = cells(12, 10);
        let shares = share(
            &cells,
            &[node("a", 1, MIB, 1.0, &[]), node("b", 2, MIB, 2.0, &[])],
        );
        assert_eq!(shares[0].len(), 4);
        assert_eq!(shares[1].len(), 8);
        let mut all: Vec<usize> = shares.concat();
        all.sort_unstable();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn cached_cells_go_to_the_node_holding_them() {
        let cells = cells(4, 10);
        let shares = share(
            &cells,
            &[
                node("a", 1, MIB, 1.0, &[]),
                node("b", 1, MIB, 1.0, &["t/cell_0.parquet", "t/cell_1.parquet"]),
            ],
        );
        assert_eq!(shares[1], vec![0, 1]);
        assert_eq!(shares[0], vec![2, 3]);
    }

    #[test]
    fn each_node_gets_fragments_cut_to_its_own_budget() {
        // 64 cells of 4 MiB: a Pi (1 bee of 64 MiB: fragments of at most 16 MiB) and a large
        // machine (4 bees of 1 GiB) with four times the weight.
        let cells = cells(64, 4 * MIB);
        let tasks = plan_tasks(
            &cells,
            &[
                node("pi", 1, 64 * MIB, 1.0, &[]),
                node("big", 4, 1024 * MIB, 4.0, &[]),
            ],
            None,
            false,
        );
        let bytes = |t: &TaskSpec| t.cells.iter().map(|c| c.size).sum::<u64>();
        let pi: Vec<&TaskSpec> = tasks.iter().filter(|t| t.node == "pi").collect();
        let big: Vec<&TaskSpec> = tasks.iter().filter(|t| t.node == "big").collect();
        assert!(pi.iter().all(|t| bytes(t) <= 16 * MIB), "{pi:?}");
        assert_eq!(pi.iter().map(|t| t.cells.len()).sum::<usize>(), 13);
        assert_eq!(
            big.len(),
            4,
            "one fragment per bee when they fit the budget"
        );
        assert_eq!(tasks.len(), pi.len() + 4);
        assert_eq!(
            tasks.last().map(|t| t.label.clone()),
            Some(format!("fragment {} of {}", tasks.len(), tasks.len()))
        );
    }

    #[test]
    fn a_join_gets_one_fragment_per_bee_whatever_its_size() {
        let cells = cells(64, 4 * MIB);
        let nodes = [
            node("pi", 1, 64 * MIB, 1.0, &[]),
            node("big", 4, 1024 * MIB, 4.0, &[]),
        ];
        let tasks = plan_tasks(&cells, &nodes, None, true);
        let on = |name: &str| tasks.iter().filter(|t| t.node == name).count();
        assert_eq!((on("pi"), on("big")), (1, 4), "{tasks:?}");
        let cells_in: usize = tasks.iter().map(|t| t.cells.len()).sum();
        assert_eq!(cells_in, 64);
        // A session's cap still cuts a join finer.
        let capped = plan_tasks(&cells, &nodes, Some(8 * MIB), true);
        assert!(capped.len() > 5, "{capped:?}");
    }
}
