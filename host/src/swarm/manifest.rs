//! Query manifests: how a coordinator hands fragments to other nodes through the lake.
//!
//! A distributed statement lives under `_queries/<id>/`. The coordinator writes
//! `manifest.json`: the statement, the frame whose cells it splits and its schema, the other
//! frames it joins (read whole by every task), how partial results merge, and the tasks, each a group of cells assigned to one node for one attempt. A
//! worker that finds a task assigned to it runs it and writes `partial_<task>_<attempt>.arrow`
//! (Arrow IPC), then `report_<task>_<attempt>.json`, which says it is done (with what the
//! chamber measured) or why it failed. The coordinator reassigns a task by rewriting the
//! manifest with the next attempt on another node; results of older attempts stay valid,
//! since every attempt of a task reads the same cells. The coordinator removes the
//! directory when the statement ends; any node removes directories past their expiry.

use std::collections::BTreeMap;
use std::time::Duration;

use apiary_engine::MergeKind;
use apiary_engine::lake::FrameSchema;
use serde::{Deserialize, Serialize};

use crate::ChamberStats;
use crate::lake::FunctionEntry;

/// Where distributed statements live in the lake.
pub const QUERIES: &str = "_queries";

/// A distributed statement, as its coordinator wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The statement's id (the directory name).
    pub query: String,
    /// The node (or client) coordinating it.
    pub coordinator: String,
    /// Coordinator's clock when the statement started, ms since the Unix epoch.
    pub created_ms: u64,
    /// After this (coordinator's clock), any node may remove the directory.
    pub expires_ms: u64,
    /// The statement.
    pub sql: String,
    /// The registered functions the statement calls (their modules are in the lake).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub functions: BTreeMap<String, FunctionEntry>,
    /// Hive and box unqualified names resolve in.
    pub namespace: (String, String),
    /// The frame the statement reads, fully qualified.
    pub table: String,
    /// The frame's schema.
    pub schema: FrameSchema,
    /// The other frames the statement joins, which every task reads whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub whole: Vec<WholeFrame>,
    /// How the partial results merge; workers check their cut against it.
    pub merge: MergeKind,
    /// Deadline of each task's chamber, in milliseconds.
    pub deadline_ms: u64,
    /// The tasks.
    pub tasks: Vec<TaskSpec>,
}

/// A frame every task of a statement reads whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WholeFrame {
    /// The frame, fully qualified.
    pub table: String,
    /// Its schema.
    pub schema: FrameSchema,
    /// Its surviving cells.
    pub cells: Vec<TaskCell>,
}

/// One fragment of a distributed statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Position among the statement's fragments, from 0.
    pub task: usize,
    /// How errors name it: `fragment 2 of 6`.
    pub label: String,
    /// Attempt number, from 1; a reassignment increments it.
    pub attempt: u32,
    /// The node that should run this attempt.
    pub node: String,
    /// The cells to read: keys relative to the lake root, and sizes.
    pub cells: Vec<TaskCell>,
}

/// A cell of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCell {
    /// Key relative to the lake root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// What a worker says about one attempt of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// The node that ran it.
    pub node: String,
    /// Wall time on the worker, ms.
    pub elapsed_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Outcome {
    /// The partial result is at [`partial_key`].
    Done {
        /// The bee that ran it.
        bee: usize,
        /// Rows of the partial result.
        rows: u64,
        /// Bytes that crossed into the chamber.
        bytes_read: u64,
        /// Read calls of the chamber.
        read_calls: u64,
        /// Time spent serving the reads, ms.
        #[serde(default)]
        read_ms: u64,
        /// Peak linear memory.
        peak_memory: u64,
        /// The bee's budget.
        budget: u64,
        /// Peak of DataFusion's memory pool.
        pool_peak: u64,
        /// Chamber wall time, ms.
        chamber_ms: u64,
        /// How the chamber cut the statement.
        merge: Option<MergeKind>,
        /// Whether the fragment fell back to sort-merge joins.
        #[serde(default)]
        sort_merge_joins: bool,
        /// The part of the chamber time spent planning, µs.
        #[serde(default)]
        planning_us: u64,
    },
    /// The attempt failed.
    Failed {
        /// The error, as the worker printed it.
        error: String,
        /// Whether another node (or a larger budget) may succeed where this one failed.
        retry: bool,
    },
}

impl Outcome {
    /// The report of a finished chamber run.
    pub fn done(stats: &ChamberStats) -> Self {
        Self::Done {
            bee: stats.bee,
            rows: stats.rows,
            bytes_read: stats.bytes_read,
            read_calls: stats.read_calls,
            read_ms: stats.read_time.as_millis() as u64,
            peak_memory: stats.peak_memory,
            budget: stats.budget,
            pool_peak: stats.pool_peak,
            chamber_ms: stats.elapsed.as_millis() as u64,
            merge: stats.merge,
            sort_merge_joins: stats.sort_merge_joins,
            planning_us: u64::try_from(stats.planning.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// The chamber measurements of a done report.
    pub fn stats(&self) -> Option<ChamberStats> {
        match *self {
            Self::Done {
                bee,
                rows,
                bytes_read,
                read_calls,
                read_ms,
                peak_memory,
                budget,
                pool_peak,
                chamber_ms,
                merge,
                sort_merge_joins,
                planning_us,
            } => Some(ChamberStats {
                bee,
                rows,
                bytes_read,
                read_calls,
                read_time: Duration::from_millis(read_ms),
                peak_memory,
                budget,
                pool_peak,
                elapsed: Duration::from_millis(chamber_ms),
                merge,
                sort_merge_joins,
                planning: Duration::from_micros(planning_us),
            }),
            Self::Failed { .. } => None,
        }
    }
}

/// The directory of query `id`.
pub fn query_dir(id: &str) -> String {
    format!("{QUERIES}/{id}")
}

/// The manifest of query `id`.
pub fn manifest_key(id: &str) -> String {
    format!("{QUERIES}/{id}/manifest.json")
}

/// The partial result of one attempt of a task.
pub fn partial_key(id: &str, task: usize, attempt: u32) -> String {
    format!("{QUERIES}/{id}/partial_{task}_{attempt}.arrow")
}

/// The report of one attempt of a task.
pub fn report_key(id: &str, task: usize, attempt: u32) -> String {
    format!("{QUERIES}/{id}/report_{task}_{attempt}.json")
}

/// The query id, task and attempt of a report key.
pub fn parse_report_key(key: &str) -> Option<(&str, usize, u32)> {
    let rest = key.strip_prefix(QUERIES)?.strip_prefix('/')?;
    let (id, file) = rest.split_once('/')?;
    let numbers = file.strip_prefix("report_")?.strip_suffix(".json")?;
    let (task, attempt) = numbers.split_once('_')?;
    Some((id, task.parse().ok()?, attempt.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_keys_round_trip() {
        let key = report_key("q1", 12, 3);
        assert_eq!(key, "_queries/q1/report_12_3.json");
        assert_eq!(parse_report_key(&key), Some(("q1", 12, 3)));
        assert_eq!(parse_report_key("_queries/q1/manifest.json"), None);
        assert_eq!(parse_report_key("_queries/q1/partial_1_1.arrow"), None);
    }
}
