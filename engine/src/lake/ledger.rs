//! The per-frame transaction ledger: its entries, the frame state they build, checkpoints,
//! and the keys they are stored under.
//!
//! A frame's ledger is a sequence of JSON entries `_ledger/<version>.json`, version 0
//! creating the frame and each later one changing its set of cells. The host commits an
//! entry with a conditional put of the next version; on conflict it re-reads the ledger,
//! [`replay`]s it to the newest [`FrameState`], re-checks (or rebuilds) its action with
//! [`validate`] and tries the next version. Every [`CHECKPOINT_INTERVAL`] versions a
//! [`Checkpoint`] of the whole state is written, so readers replay at most that many entries.
//!
//! An entry in JSON (the action's fields sit beside the entry's own):
//!
//! ```json
//! {"version":3,"committed_at_ms":1714571130123,"writer":"node-7",
//!  "action":"add_cells","cells":[{"path":"day=2024-05-01/cell_1f3e.parquet","rows":1000,
//!  "bytes":52311,"partition":{"day":"2024-05-01"},
//!  "stats":{"id":{"min":1,"max":1000,"null_count":0}}}]}
//! ```

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::LakeError;
use super::names::path_segment_problem;
use super::partition::{MAX_PARTITION_VALUE_BYTES, PartitionValues, is_partition_type};
use super::schema::FrameSchema;
use super::stats::ColumnStats;

/// A checkpoint is written every this many versions.
pub const CHECKPOINT_INTERVAL: u64 = 100;

/// The ledger's directory inside a frame's directory.
pub const LEDGER_DIR: &str = "_ledger";

/// The checkpoints' directory inside a frame's directory.
pub const CHECKPOINT_DIR: &str = "_ledger/_checkpoint";

/// One cell (Parquet file) of a frame, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellMeta {
    /// Key relative to the frame's directory: `<partition path>/<file>`, e.g.
    /// `day=2024-05-01/cell_<uuid>.parquet`, or just `<file>` when unpartitioned.
    pub path: String,
    /// Number of rows.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// The cell's partition values, in the frame's partition column order.
    #[serde(default)]
    pub partition: PartitionValues,
    /// Statistics per column name.
    #[serde(default)]
    pub stats: BTreeMap<String, ColumnStats>,
}

/// What one ledger entry does to a frame.
///
/// Deliberately not `#[non_exhaustive]`: a new action must be handled by every reader in
/// the workspace, and exhaustive matches make the compiler say where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Version 0: the frame's schema and partition columns.
    CreateFrame {
        /// The frame's columns.
        schema: FrameSchema,
        /// Partition columns, outermost directory first.
        partition_by: Vec<String>,
    },
    /// An append: new cells.
    AddCells {
        /// The cells added.
        cells: Vec<CellMeta>,
    },
    /// An overwrite or compaction: cells removed and cells added, atomically.
    RewriteCells {
        /// Paths of the cells removed.
        remove: Vec<String>,
        /// The cells added.
        add: Vec<CellMeta>,
    },
}

impl Action {
    /// A `CreateFrame` action, after checking that the schema's column names are valid and
    /// distinct and that every partition column is a distinct column of a partitionable type.
    ///
    /// # Errors
    /// [`LakeError::InvalidName`], [`LakeError::DuplicateColumn`],
    /// [`LakeError::UnknownPartitionColumn`] or [`LakeError::UnsupportedPartitionType`].
    pub fn create_frame(schema: FrameSchema, partition_by: Vec<String>) -> Result<Self, LakeError> {
        check_create(&schema, &partition_by)?;
        Ok(Action::CreateFrame {
            schema,
            partition_by,
        })
    }

    /// An overwrite of the whole frame: a `RewriteCells` that removes every cell of `state`
    /// and adds `add`.
    ///
    /// The removals are the cells of the state the action is built from. When the commit
    /// conflicts, the committer must re-read the newest state and build the action again
    /// with this function (not retry the old one): the rebuilt action then also removes the
    /// cells appended concurrently before the overwrite committed, so an overwrite always
    /// leaves exactly `add`. Retrying the stale action would fail [`validate`] if a removed
    /// cell is gone, or silently keep concurrently appended cells if none is.
    pub fn overwrite(state: &FrameState, add: Vec<CellMeta>) -> Self {
        Action::RewriteCells {
            remove: state.cells.keys().cloned().collect(),
            add,
        }
    }

    /// The action's name as it appears in JSON (`create_frame`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Action::CreateFrame { .. } => "create_frame",
            Action::AddCells { .. } => "add_cells",
            Action::RewriteCells { .. } => "rewrite_cells",
        }
    }
}

fn check_create(schema: &FrameSchema, partition_by: &[String]) -> Result<(), LakeError> {
    schema.validate()?;
    let mut seen = HashSet::new();
    for column in partition_by {
        let field = schema
            .field(column)
            .ok_or_else(|| LakeError::UnknownPartitionColumn {
                column: column.clone(),
            })?;
        if !is_partition_type(&field.data_type) {
            return Err(LakeError::UnsupportedPartitionType {
                column: column.clone(),
                data_type: field.data_type.clone(),
            });
        }
        if !seen.insert(column.as_str()) {
            return Err(LakeError::DuplicateColumn {
                column: column.clone(),
            });
        }
    }
    Ok(())
}

/// One committed ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The entry's version: 0 for the frame's creation, then each previous + 1.
    pub version: u64,
    /// When the writer committed it, in milliseconds since the Unix epoch.
    pub committed_at_ms: i64,
    /// Who committed it (a node id).
    pub writer: String,
    /// What it does; its fields are stored beside the entry's in JSON.
    #[serde(flatten)]
    pub action: Action,
}

impl LedgerEntry {
    /// The entry as compact JSON, as stored under [`ledger_key`].
    ///
    /// # Errors
    /// [`LakeError::Internal`] if serialization fails (it cannot for these types).
    pub fn to_json(&self) -> Result<Vec<u8>, LakeError> {
        serde_json::to_vec(self).map_err(LakeError::internal)
    }

    /// Reads an entry back from JSON.
    ///
    /// # Errors
    /// [`LakeError::Corrupt`] when the bytes are not a ledger entry.
    pub fn from_json(bytes: &[u8]) -> Result<Self, LakeError> {
        serde_json::from_slice(bytes).map_err(|e| LakeError::Corrupt {
            what: "a ledger entry".to_owned(),
            message: e.to_string(),
        })
    }
}

/// A frame as of one version of its ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameState {
    /// The version of the last entry applied.
    pub version: u64,
    /// The frame's columns.
    pub schema: FrameSchema,
    /// Partition columns, outermost directory first.
    pub partition_by: Vec<String>,
    /// The live cells by path. Stored in JSON as a list of cells.
    #[serde(
        serialize_with = "serialize_cells",
        deserialize_with = "deserialize_cells"
    )]
    pub cells: BTreeMap<String, CellMeta>,
}

fn serialize_cells<S: Serializer>(
    cells: &BTreeMap<String, CellMeta>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(cells.values())
}

fn deserialize_cells<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, CellMeta>, D::Error> {
    let list = Vec::<CellMeta>::deserialize(deserializer)?;
    let mut cells = BTreeMap::new();
    for cell in list {
        let path = cell.path.clone();
        if cells.insert(path.clone(), cell).is_some() {
            return Err(serde::de::Error::custom(format!(
                "cell `{path}` is listed twice"
            )));
        }
    }
    Ok(cells)
}

impl FrameState {
    /// The state a frame's first entry creates.
    ///
    /// # Errors
    /// - [`LakeError::LedgerGap`] when `entry` is not version 0;
    /// - [`LakeError::LedgerConflict`] when it is not a `CreateFrame`;
    /// - the errors of [`Action::create_frame`] when its schema or partitioning is invalid.
    pub fn create(entry: LedgerEntry) -> Result<Self, LakeError> {
        if entry.version != 0 {
            return Err(LakeError::LedgerGap {
                expected: 0,
                found: entry.version,
            });
        }
        match entry.action {
            Action::CreateFrame {
                schema,
                partition_by,
            } => {
                check_create(&schema, &partition_by)?;
                Ok(Self {
                    version: 0,
                    schema,
                    partition_by,
                    cells: BTreeMap::new(),
                })
            }
            other => Err(LakeError::LedgerConflict {
                version: 0,
                reason: format!(
                    "the first entry must be create_frame, not {}; the frame does not exist yet",
                    other.name()
                ),
            }),
        }
    }

    /// Applies the next entry. On error the state is unchanged.
    ///
    /// # Errors
    /// - [`LakeError::LedgerDuplicate`] when `entry.version` ≤ the state's version;
    /// - [`LakeError::LedgerGap`] when it is beyond the state's version + 1;
    /// - the errors of [`validate`] when the action does not fit the state.
    pub fn apply(&mut self, entry: LedgerEntry) -> Result<(), LakeError> {
        let expected = self.version + 1;
        if entry.version < expected {
            return Err(LakeError::LedgerDuplicate {
                expected,
                found: entry.version,
            });
        }
        if entry.version > expected {
            return Err(LakeError::LedgerGap {
                expected,
                found: entry.version,
            });
        }
        validate(self, &entry.action)?;
        match entry.action {
            // `validate` rejects a second creation.
            Action::CreateFrame { .. } => {
                return Err(LakeError::internal("create_frame passed validation"));
            }
            Action::AddCells { cells } => self.insert_cells(cells),
            Action::RewriteCells { remove, add } => {
                for path in &remove {
                    self.cells.remove(path);
                }
                self.insert_cells(add);
            }
        }
        self.version = entry.version;
        Ok(())
    }

    fn insert_cells(&mut self, cells: Vec<CellMeta>) {
        for cell in cells {
            self.cells.insert(cell.path.clone(), cell);
        }
    }

    /// Total rows over all live cells.
    pub fn rows(&self) -> u64 {
        self.cells.values().map(|c| c.rows).sum()
    }

    /// Total bytes over all live cells.
    pub fn bytes(&self) -> u64 {
        self.cells.values().map(|c| c.bytes).sum()
    }

    /// The live cells, in path order.
    pub fn cells(&self) -> impl Iterator<Item = &CellMeta> {
        self.cells.values()
    }
}

/// Checks that `action` can be applied to `state`: what a committer re-checks against the
/// newest state before retrying a conflicted commit, and what [`FrameState::apply`] checks.
///
/// - `CreateFrame` never fits an existing frame.
/// - Every added cell must be well formed (see below), have a path not in the frame and
///   not repeated in the action. Cells are immutable: a rewrite may not re-add a path it
///   removes.
/// - Every removed path must be a live cell, listed once.
///
/// A well-formed cell has partition columns equal to the frame's `partition_by` (same
/// order), path-safe partition values, statistics only for frame columns, and a relative
/// path of clean segments (no empty, `.` or `..` segment, no `\` or control characters,
/// no leading `_`) whose directory is exactly its partition's directory.
///
/// Whether a cell's Parquet schema matches the frame cannot be checked here (it needs the
/// file); the writer guarantees it by writing batches made by [`crate::lake::WritePlan`].
///
/// # Errors
/// [`LakeError::LedgerConflict`] when the action does not fit the state (creation of an
/// existing frame, a path already live, a removed path not live);
/// [`LakeError::InvalidCell`] when a cell is malformed or repeated within the action.
pub fn validate(state: &FrameState, action: &Action) -> Result<(), LakeError> {
    let conflict = |reason: String| LakeError::LedgerConflict {
        version: state.version,
        reason,
    };
    match action {
        Action::CreateFrame { .. } => Err(conflict("the frame already exists".to_owned())),
        Action::AddCells { cells } => check_new_cells(state, cells),
        Action::RewriteCells { remove, add } => {
            let mut removed = HashSet::new();
            for path in remove {
                if !state.cells.contains_key(path) {
                    return Err(conflict(format!(
                        "cell `{path}` is to be removed but is not in the frame (another commit \
                         removed it)"
                    )));
                }
                if !removed.insert(path.as_str()) {
                    return Err(LakeError::InvalidCell {
                        path: path.clone(),
                        reason: "it is removed twice in one commit".to_owned(),
                    });
                }
            }
            check_new_cells(state, add)
        }
    }
}

fn check_new_cells(state: &FrameState, cells: &[CellMeta]) -> Result<(), LakeError> {
    let mut seen = HashSet::new();
    for cell in cells {
        check_cell(state, cell)?;
        if state.cells.contains_key(&cell.path) {
            return Err(LakeError::LedgerConflict {
                version: state.version,
                reason: format!("cell `{}` is already in the frame", cell.path),
            });
        }
        if !seen.insert(cell.path.as_str()) {
            return Err(LakeError::InvalidCell {
                path: cell.path.clone(),
                reason: "it is added twice in one commit".to_owned(),
            });
        }
    }
    Ok(())
}

fn check_cell(state: &FrameState, cell: &CellMeta) -> Result<(), LakeError> {
    let invalid = |reason: String| LakeError::InvalidCell {
        path: cell.path.clone(),
        reason,
    };
    if !cell
        .partition
        .columns()
        .eq(state.partition_by.iter().map(String::as_str))
    {
        return Err(invalid(format!(
            "its partition columns [{}] are not the frame's [{}]",
            cell.partition.columns().collect::<Vec<_>>().join(", "),
            state.partition_by.join(", ")
        )));
    }
    for (column, value) in cell.partition.iter() {
        if let Some(rule) = path_segment_problem(value, MAX_PARTITION_VALUE_BYTES) {
            return Err(invalid(format!(
                "the value `{}` of partition column `{column}` {rule}",
                value.escape_debug()
            )));
        }
    }
    if let Some(column) = cell.stats.keys().find(|c| state.schema.field(c).is_none()) {
        return Err(invalid(format!(
            "it has statistics for `{column}`, which is not a column of the frame"
        )));
    }
    if let Some(problem) = cell_path_problem(&cell.path) {
        return Err(invalid(problem));
    }
    let dir = cell.partition.path();
    let parent = cell.path.rsplit_once('/').map_or("", |(parent, _)| parent);
    if parent != dir {
        return Err(invalid(format!(
            "its path is not directly in its partition's directory `{dir}/`"
        )));
    }
    Ok(())
}

fn cell_path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("its path is empty".to_owned());
    }
    if path.contains('\\') || path.chars().any(char::is_control) {
        return Some("its path contains `\\` or control characters".to_owned());
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Some("its path has an empty, `.` or `..` segment".to_owned());
    }
    if path.starts_with('_') {
        return Some("its path begins with `_`, reserved for Apiary's own files".to_owned());
    }
    None
}

/// A frame's whole state as of `version`, so readers need not replay older entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The version the state is at (equal to `state.version`).
    pub version: u64,
    /// The state.
    pub state: FrameState,
}

impl Checkpoint {
    /// A checkpoint of `state` at its version.
    pub fn new(state: FrameState) -> Self {
        Self {
            version: state.version,
            state,
        }
    }

    /// The checkpoint as compact JSON, as stored under [`checkpoint_key`].
    ///
    /// # Errors
    /// [`LakeError::Internal`] if serialization fails (it cannot for these types).
    pub fn to_json(&self) -> Result<Vec<u8>, LakeError> {
        serde_json::to_vec(self).map_err(LakeError::internal)
    }

    /// Reads a checkpoint back from JSON.
    ///
    /// # Errors
    /// [`LakeError::Corrupt`] when the bytes are not a checkpoint.
    pub fn from_json(bytes: &[u8]) -> Result<Self, LakeError> {
        serde_json::from_slice(bytes).map_err(|e| LakeError::Corrupt {
            what: "a checkpoint".to_owned(),
            message: e.to_string(),
        })
    }
}

/// Whether a checkpoint should be written after committing `version`: every
/// [`CHECKPOINT_INTERVAL`] versions, never at version 0.
pub fn should_checkpoint(version: u64) -> bool {
    version != 0 && version.is_multiple_of(CHECKPOINT_INTERVAL)
}

/// The frame state after `checkpoint` (if any) and `entries`, which must be in version
/// order (the order of a key listing). Entries at or below the checkpoint's version are
/// skipped, so a listing may include them and each entry is still applied exactly once.
///
/// # Errors
/// - [`LakeError::EmptyLedger`] when there is neither a checkpoint nor an entry;
/// - [`LakeError::LedgerGap`] when an entry is missing (including version 0 without a
///   checkpoint), [`LakeError::LedgerDuplicate`] when one above the checkpoint repeats;
/// - [`LakeError::Corrupt`] when the checkpoint disagrees with itself or an entry does not
///   apply to the state before it (a committed entry always did when it was committed).
pub fn replay(
    checkpoint: Option<Checkpoint>,
    entries: impl IntoIterator<Item = LedgerEntry>,
) -> Result<FrameState, LakeError> {
    let mut state = match checkpoint {
        Some(checkpoint) if checkpoint.version != checkpoint.state.version => {
            return Err(LakeError::Corrupt {
                what: format!("the checkpoint at version {}", checkpoint.version),
                message: format!("its state is at version {}", checkpoint.state.version),
            });
        }
        Some(checkpoint) => Some(checkpoint.state),
        None => None,
    };
    let skip_through = state.as_ref().map(|s| s.version);
    for entry in entries {
        if skip_through.is_some_and(|v| entry.version <= v) {
            continue;
        }
        let version = entry.version;
        let corrupt = |err: LakeError| match err {
            LakeError::LedgerConflict { reason, .. } => LakeError::Corrupt {
                what: format!("ledger entry {version}"),
                message: reason,
            },
            LakeError::InvalidCell { path, reason } => LakeError::Corrupt {
                what: format!("ledger entry {version}"),
                message: format!("cell `{path}` is invalid: {reason}"),
            },
            LakeError::LedgerGap { .. } | LakeError::LedgerDuplicate { .. } => err,
            other => LakeError::Corrupt {
                what: format!("ledger entry {version}"),
                message: other.to_string(),
            },
        };
        match state.as_mut() {
            None => state = Some(FrameState::create(entry).map_err(corrupt)?),
            Some(current) => current.apply(entry).map_err(corrupt)?,
        }
    }
    state.ok_or(LakeError::EmptyLedger)
}

/// The key of ledger entry `version`, relative to the frame's directory:
/// `_ledger/00000000000000000042.json`. Twenty digits hold every `u64`, so listing keys in
/// lexicographic order lists versions in order.
pub fn ledger_key(version: u64) -> String {
    format!("{LEDGER_DIR}/{version:020}.json")
}

/// The key of the checkpoint at `version`, relative to the frame's directory:
/// `_ledger/_checkpoint/00000000000000000100.json`.
pub fn checkpoint_key(version: u64) -> String {
    format!("{CHECKPOINT_DIR}/{version:020}.json")
}

/// The version of a ledger entry key made by [`ledger_key`], with or without the frame's
/// directory in front; `None` for any other key (checkpoints included).
pub fn parse_ledger_key(key: &str) -> Option<u64> {
    parse_versioned_key(key, LEDGER_DIR)
}

/// The version of a checkpoint key made by [`checkpoint_key`], with or without the frame's
/// directory in front; `None` for any other key.
pub fn parse_checkpoint_key(key: &str) -> Option<u64> {
    parse_versioned_key(key, CHECKPOINT_DIR)
}

fn parse_versioned_key(key: &str, dir: &str) -> Option<u64> {
    let (parent, file) = key.rsplit_once('/')?;
    if parent != dir && !parent.ends_with(&format!("/{dir}")) {
        return None;
    }
    let digits = file.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests;
