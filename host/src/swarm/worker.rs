//! The worker: runs the tasks other nodes' manifests assign to this node.
//!
//! Every poll interval the worker lists `_queries/` once. A manifest it has not read (or
//! that changed) is read; each task assigned to this node whose attempt has no report yet
//! and is not already running goes to the bee pool. When the chamber is done the worker
//! writes the partial result, then the report; a failure is reported with whether another
//! node may succeed. Every [`CLEANUP_EVERY`] polls it also removes query directories past
//! their expiry, and directories without a manifest untouched for [`ORPHAN_AFTER`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use apiary_engine::arrow::datatypes::Schema;
use apiary_engine::lake::FrameSchema;
use apiary_engine::{CellId, CellRef, Stage, TableCells};
use bytes::Bytes;
use object_store::ObjectMeta;

use crate::cells::MeadowCells;
use crate::swarm::heartbeat::{CLOCK_SKEW, now_ms};
use crate::swarm::manifest::{
    Manifest, Outcome, QUERIES, TaskCell, TaskReport, TaskSpec, manifest_key, parse_report_key,
    partial_key, report_key,
};
use crate::swarm::{CellCache, encode_partial};
use crate::{BeePool, Error, Fragment, FragmentOutput, Lake, Result};

/// Polls between two sweeps for expired and orphaned query directories.
pub const CLEANUP_EVERY: u64 = 40;

/// A query directory without a manifest is removed once untouched for this long.
pub const ORPHAN_AFTER: Duration = Duration::from_secs(600);

type TaskId = (String, usize, u32);

/// Runs tasks assigned to one node.
#[derive(Debug)]
pub struct Worker {
    node: String,
    lake: Arc<Lake>,
    pool: Arc<BeePool>,
    cache: Option<Arc<CellCache>>,
    running: Arc<Mutex<HashSet<TaskId>>>,
    manifests: HashMap<String, (ObjectMeta, Arc<Manifest>)>,
    polls: u64,
}

impl Worker {
    /// A worker for node `node`, running tasks on `pool`, reading cells through `cache`.
    pub fn new(
        node: String,
        lake: Arc<Lake>,
        pool: Arc<BeePool>,
        cache: Option<Arc<CellCache>>,
    ) -> Self {
        Self {
            node,
            lake,
            pool,
            cache,
            running: Arc::default(),
            manifests: HashMap::new(),
            polls: 0,
        }
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.running.lock().map_or(0, |r| r.len())
    }

    /// Look once for new tasks and start them; returns how many were started.
    ///
    /// # Errors
    /// [`Error::Storage`] when `_queries/` cannot be listed.
    pub async fn poll(&mut self) -> Result<usize> {
        self.polls += 1;
        let objects = self.lake.meadow().list(QUERIES).await?;
        let mut manifests = HashMap::new();
        let mut reports = HashSet::new();
        let mut newest: HashMap<String, SystemTime> = HashMap::new();
        for object in objects {
            let key = object.location.to_string();
            let Some(id) = key
                .strip_prefix(QUERIES)
                .and_then(|k| k.strip_prefix('/'))
                .and_then(|k| k.split('/').next())
                .map(str::to_owned)
            else {
                continue;
            };
            let modified = SystemTime::from(object.last_modified);
            let latest = newest.entry(id.clone()).or_insert(modified);
            *latest = (*latest).max(modified);
            if key == manifest_key(&id) {
                manifests.insert(id, object);
            } else if let Some((q, task, attempt)) = parse_report_key(&key) {
                reports.insert((q.to_owned(), task, attempt));
            }
        }
        self.manifests.retain(|id, _| manifests.contains_key(id));
        let mut started = 0;
        for (id, meta) in &manifests {
            let Some(manifest) = self.manifest(id, meta).await else {
                continue;
            };
            if manifest.expires_ms + (CLOCK_SKEW.as_millis() as u64) < now_ms() {
                continue;
            }
            for task in manifest.tasks.iter().filter(|t| t.node == self.node) {
                let key = (id.clone(), task.task, task.attempt);
                if reports.contains(&key) {
                    continue;
                }
                let fresh = self.running.lock().is_ok_and(|mut r| r.insert(key.clone()));
                if fresh {
                    self.start(manifest.clone(), task.clone(), key);
                    started += 1;
                }
            }
        }
        if self.polls % CLEANUP_EVERY == 1 {
            self.sweep(&manifests, &newest).await;
        }
        Ok(started)
    }

    async fn manifest(&mut self, id: &str, meta: &ObjectMeta) -> Option<Arc<Manifest>> {
        if let Some((seen, manifest)) = self.manifests.get(id)
            && seen.last_modified == meta.last_modified
            && seen.size == meta.size
            && seen.e_tag == meta.e_tag
        {
            return Some(manifest.clone());
        }
        let bytes = self.lake.meadow().get(&manifest_key(id)).await.ok()??;
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(manifest) => {
                let manifest = Arc::new(manifest);
                self.manifests
                    .insert(id.to_owned(), (meta.clone(), manifest.clone()));
                Some(manifest)
            }
            Err(err) => {
                tracing::warn!(query = id, %err, "ignoring an unreadable manifest");
                None
            }
        }
    }

    fn start(&self, manifest: Arc<Manifest>, task: TaskSpec, key: TaskId) {
        let (lake, pool, cache, running, node) = (
            self.lake.clone(),
            self.pool.clone(),
            self.cache.clone(),
            self.running.clone(),
            self.node.clone(),
        );
        tracing::info!(query = %manifest.query, task = %task.label, attempt = task.attempt, "running a task");
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = match run_task(&lake, &pool, cache, &manifest, &task).await {
                Ok(output) => finish(&lake, &manifest, &task, &output).await,
                Err(err) => Outcome::Failed {
                    retry: retryable(&err),
                    error: err.to_string(),
                },
            };
            let report = TaskReport {
                node,
                elapsed_ms: started.elapsed().as_millis() as u64,
                outcome,
            };
            let written = match serde_json::to_vec_pretty(&report) {
                Ok(bytes) => {
                    lake.meadow()
                        .put(
                            &report_key(&manifest.query, task.task, task.attempt),
                            Bytes::from(bytes),
                        )
                        .await
                }
                Err(err) => Err(Error::Internal(format!("encoding a task report: {err}"))),
            };
            if let Err(err) = written {
                tracing::warn!(%err, "could not write a task report");
            }
            // A task taken from this node and finished elsewhere lets the coordinator end
            // the query before this attempt reports: with the manifest gone, take back what
            // this attempt wrote rather than leave it for the orphan sweep.
            if let Ok(None) = lake.meadow().get(&manifest_key(&manifest.query)).await
                && let Err(err) = remove_query(&lake, &manifest.query).await
            {
                tracing::warn!(%err, "could not remove a finished query's directory");
            }
            if let Ok(mut running) = running.lock() {
                running.remove(&key);
            }
        });
    }

    /// Remove query directories past their expiry, and orphans without a manifest.
    async fn sweep(
        &self,
        manifests: &HashMap<String, ObjectMeta>,
        newest: &HashMap<String, SystemTime>,
    ) {
        let now = SystemTime::now();
        for (id, latest) in newest {
            let expired = match self.manifests.get(id) {
                Some((_, manifest)) => {
                    manifest.expires_ms + (CLOCK_SKEW.as_millis() as u64) < now_ms()
                }
                None => {
                    !manifests.contains_key(id)
                        && now.duration_since(*latest).unwrap_or_default() > ORPHAN_AFTER
                }
            };
            if expired {
                tracing::info!(query = %id, "removing an expired query directory");
                if let Err(err) = remove_query(&self.lake, id).await {
                    tracing::warn!(query = %id, %err, "could not remove a query directory");
                }
            }
        }
    }
}

/// The chamber fragment for `task` of `manifest`, reading cells through `cache`: the task's
/// cells of the split frame, and all the cells of the frames read whole.
pub(crate) fn task_fragment(
    lake: &Lake,
    cache: Option<Arc<CellCache>>,
    manifest: &Manifest,
    task: &TaskSpec,
) -> Result<Fragment> {
    let mut keys = Vec::new();
    let mut table = |name: &str, schema: &FrameSchema, cells: &[TaskCell]| {
        let refs = cells
            .iter()
            .map(|c| {
                keys.push((c.key.clone(), c.size));
                CellRef::whole((keys.len() - 1) as CellId, c.size)
            })
            .collect();
        TableCells {
            name: name.to_owned(),
            cells: refs,
            schema: Some(Arc::new(Schema::from(schema))),
        }
    };
    let mut tables = vec![table(&manifest.table, &manifest.schema, &task.cells)];
    for frame in &manifest.whole {
        tables.push(table(&frame.table, &frame.schema, &frame.cells));
    }
    let source = MeadowCells::new(lake.meadow().clone(), keys, cache)?;
    Ok(Fragment {
        default_namespace: manifest.namespace.clone(),
        stage: Stage::Partial {
            split: manifest.table.clone(),
        },
        label: task.label.clone(),
        ..Fragment::new(manifest.sql.clone(), tables, Arc::new(source))
    })
}

async fn run_task(
    lake: &Lake,
    pool: &Arc<BeePool>,
    cache: Option<Arc<CellCache>>,
    manifest: &Manifest,
    task: &TaskSpec,
) -> Result<FragmentOutput> {
    let names = manifest.functions.keys().cloned().collect();
    let functions = crate::udf::bind(lake, pool.engine(), &manifest.functions, &names).await?;
    let fragment = task_fragment(lake, cache, manifest, task)?.with_functions(functions);
    let answer =
        pool.submit_with_deadline(fragment, Duration::from_millis(manifest.deadline_ms))?;
    tokio::task::spawn_blocking(move || answer.recv().map_err(|_| Error::PoolClosed)?)
        .await
        .map_err(|e| Error::Internal(format!("waiting for a bee: {e}")))?
}

/// Write a finished task's partial result and say how it went.
async fn finish(
    lake: &Lake,
    manifest: &Manifest,
    task: &TaskSpec,
    output: &FragmentOutput,
) -> Outcome {
    if output.stats.merge != Some(manifest.merge) {
        return Outcome::Failed {
            error: format!(
                "this node cut the statement for {:?} where the coordinator planned {:?}; \
                 run the same Apiary version on every node",
                output.stats.merge, manifest.merge
            ),
            retry: true,
        };
    }
    let key = partial_key(&manifest.query, task.task, task.attempt);
    let written = match encode_partial(output.schema.as_ref(), &output.batches) {
        Ok(bytes) => lake.meadow().put(&key, bytes).await,
        Err(err) => Err(err),
    };
    match written {
        Ok(()) => Outcome::done(&output.stats),
        Err(err) => Outcome::Failed {
            error: format!("writing the partial result: {err}"),
            retry: true,
        },
    }
}

/// Whether another attempt, on another node, may succeed where `err` failed. SQL errors and
/// errors reading a cell's data are the same everywhere and are not retried.
pub(crate) fn retryable(err: &Error) -> bool {
    !matches!(
        err,
        Error::GuestError { .. }
            | Error::Lake(_)
            | Error::Corrupt(_)
            | Error::NotFound(_)
            | Error::Config(_)
            | Error::Input(_)
    )
}

/// Remove every object of query `id`.
///
/// # Errors
/// [`Error::Storage`] when listing or deleting fails.
pub async fn remove_query(lake: &Lake, id: &str) -> Result<()> {
    let dir = crate::swarm::manifest::query_dir(id);
    for object in lake.meadow().list(&dir).await? {
        lake.meadow().delete(object.location.as_ref()).await?;
    }
    Ok(())
}
