//! Vacuum: delete what no current state references.
//!
//! Removed cells stay in the meadow after an overwrite (a query planned on the old version
//! may still read them), failed writes leave orphan cells, dropped frames leave their whole
//! directory, crashed coordinators leave query directories, and dropped or replaced
//! functions leave modules no function names. Vacuum deletes each of
//! these once it is older than a grace period, so nothing a running write or query may still
//! need is touched. It is the one operation that lists the whole lake.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;

use super::meadow::Meadow;
use super::registry::RegistryState;
use crate::Result;
use apiary_engine::lake::FrameState;

/// What a vacuum deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VacuumReport {
    /// Cells of live frames no longer referenced (removed by overwrites, or orphans).
    pub unreferenced_cells: usize,
    /// Objects of dropped frames.
    pub dropped_frame_objects: usize,
    /// Objects of stale query directories.
    pub query_objects: usize,
    /// Function modules no registered function uses.
    pub function_modules: usize,
    /// Bytes freed.
    pub bytes: u64,
}

pub(crate) async fn vacuum(
    meadow: &Meadow,
    registry: &RegistryState,
    live: &[(String, FrameState)],
    grace: Duration,
) -> Result<VacuumReport> {
    let cutoff = Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let live_dirs: Vec<(&str, HashSet<&str>)> = live
        .iter()
        .map(|(dir, state)| {
            (
                dir.as_str(),
                state.cells.keys().map(String::as_str).collect(),
            )
        })
        .collect();
    let registered: HashSet<&str> = registry
        .hives
        .values()
        .flat_map(|boxes| boxes.values())
        .flat_map(|frames| frames.values())
        .map(|entry| entry.dir.as_str())
        .collect();
    let modules: HashSet<String> = registry
        .functions
        .values()
        .map(|f| crate::udf::module_key(&f.module))
        .collect();
    let mut report = VacuumReport::default();
    for object in meadow.list("").await? {
        if object.last_modified > cutoff {
            continue;
        }
        let key = object.location.as_ref();
        if key.starts_with("_registry/") || key.starts_with("_heartbeats/") {
            continue;
        }
        if key.starts_with("_queries/") {
            report.query_objects += 1;
        } else if key.starts_with(crate::udf::FUNCTIONS_PREFIX) {
            if modules.contains(key) {
                continue;
            }
            report.function_modules += 1;
        } else if let Some((dir, cells)) = live_dirs.iter().find(|(dir, _)| {
            key.strip_prefix(*dir)
                .is_some_and(|rest| rest.starts_with('/'))
        }) {
            let relative = &key[dir.len() + 1..];
            if relative.starts_with('_')
                || !relative.ends_with(".parquet")
                || cells.contains(relative)
            {
                continue;
            }
            report.unreferenced_cells += 1;
        } else if registered
            .iter()
            .any(|dir| key.starts_with(&format!("{dir}/")))
        {
            // A registered frame whose state could not be read: leave it alone.
            continue;
        } else {
            report.dropped_frame_objects += 1;
        }
        meadow.delete(key).await?;
        report.bytes += object.size;
    }
    Ok(report)
}
