//! The lake model's one error type.
//!
//! Every variant carries what the caller needs to act (the column, the name, the version)
//! and its message is one sentence saying what went wrong, then what to do about it.

use std::fmt;

use arrow::datatypes::DataType;

use super::names::NameKind;

/// Why a lake operation (naming, schema matching, partitioning, ledger replay) failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LakeError {
    /// A hive, box, frame or column name breaks a naming rule.
    #[error("{kind} name `{name}` {rule}; choose another name")]
    InvalidName {
        /// What was being named.
        kind: NameKind,
        /// The rejected name, as given.
        name: String,
        /// The rule it breaks, phrased to follow the name (e.g. "may not contain `/`").
        rule: String,
    },
    /// A dotted frame reference has the wrong number of parts.
    #[error(
        "`{input}` has {parts} dot-separated parts; write `frame`, `box.frame` or `hive.box.frame`"
    )]
    InvalidFrameRef {
        /// The reference as given.
        input: String,
        /// How many parts it had.
        parts: usize,
    },
    /// A column appears more than once in a schema.
    #[error("column `{column}` appears more than once; give every column a distinct name")]
    DuplicateColumn {
        /// The repeated column name.
        column: String,
    },
    /// An incoming column's type cannot be stored in the frame's column without loss.
    #[error(
        "column `{column}` has type {found} but the frame stores {expected}, and {found} does not \
         widen safely to {expected}; cast it to {expected} in the query"
    )]
    SchemaMismatch {
        /// The column name.
        column: String,
        /// The frame's type for the column.
        expected: DataType,
        /// The incoming type.
        found: DataType,
    },
    /// The incoming data has columns the frame does not declare.
    #[error(
        "the data has {} the frame does not declare: {}; drop {} or add {} to the frame",
        plural(.columns.len(), "a column", "columns"),
        quoted_list(.columns),
        plural(.columns.len(), "it", "them"),
        plural(.columns.len(), "it", "them")
    )]
    ExtraColumns {
        /// The undeclared columns, in the order the data has them.
        columns: Vec<String>,
    },
    /// A NOT NULL frame column is missing from the incoming data.
    #[error(
        "the data has no column `{column}`, which the frame declares NOT NULL; add the column to \
         the data"
    )]
    MissingColumn {
        /// The missing column.
        column: String,
    },
    /// Incoming data has nulls in a column the frame declares NOT NULL.
    #[error(
        "column `{column}` has {null_count} null {} but the frame declares it NOT NULL; filter \
         out or fill the nulls",
        plural(*.null_count, "value", "values")
    )]
    NullsInNonNullable {
        /// The column.
        column: String,
        /// How many nulls the batch has in it.
        null_count: usize,
    },
    /// A value could not be converted to the frame's type (e.g. a timestamp out of range).
    #[error(
        "column `{column}` has a value that does not fit {expected} ({message}); fix or filter \
         the value"
    )]
    ValueOutOfRange {
        /// The column.
        column: String,
        /// The frame's type for the column.
        expected: DataType,
        /// Arrow's description of the failure.
        message: String,
    },
    /// A partition column holds a null.
    #[error(
        "partition column `{column}` has a null at row {row}; partition columns may not be null, \
         fill the value or filter the row"
    )]
    NullPartitionValue {
        /// The partition column.
        column: String,
        /// The first row found with a null.
        row: usize,
    },
    /// A partition value cannot be used as a directory name.
    #[error(
        "partition column `{column}` has the value `{value}` at row {row}, which {rule}; partition \
         values become directory names, so change the value or partition by another column"
    )]
    BadPartitionValue {
        /// The partition column.
        column: String,
        /// The first row found with the value.
        row: usize,
        /// The value (escaped for display).
        value: String,
        /// The rule it breaks (e.g. "may not contain `/`").
        rule: String,
    },
    /// A partition column has a type that cannot be partitioned by.
    #[error(
        "column `{column}` has type {data_type}, which cannot be a partition column; partition by \
         a string, integer, boolean, date or timestamp column"
    )]
    UnsupportedPartitionType {
        /// The column.
        column: String,
        /// Its type.
        data_type: DataType,
    },
    /// A partition column named by the frame is not in the data or schema.
    #[error(
        "partition column `{column}` is not a column of the frame; partition by one of its columns"
    )]
    UnknownPartitionColumn {
        /// The column that was looked for.
        column: String,
    },
    /// One write would create more partitions than allowed.
    #[error(
        "the write has at least {found_at_least} distinct partition values, over the limit of \
         {limit}; partition by a coarser column or split the write"
    )]
    TooManyPartitions {
        /// The limit in force.
        limit: usize,
        /// How many distinct partitions had been seen when the limit was passed.
        found_at_least: usize,
    },
    /// A ledger entry skips versions: an entry is missing.
    #[error(
        "ledger entry {found} came where version {expected} was due, so entries are missing; list \
         the ledger again (a listing may be incomplete) or restore the missing entries"
    )]
    LedgerGap {
        /// The version that should have come next.
        expected: u64,
        /// The version that came.
        found: u64,
    },
    /// A ledger entry repeats a version already applied.
    #[error(
        "ledger entry {found} was already applied (the next version is {expected}); apply each \
         entry once, in version order"
    )]
    LedgerDuplicate {
        /// The version that should have come next.
        expected: u64,
        /// The version that came.
        found: u64,
    },
    /// A change no longer fits the frame's newest state.
    #[error(
        "the change does not fit the frame at version {version}: {reason}; re-read the frame and \
         plan the change again"
    )]
    LedgerConflict {
        /// The version of the state the change was checked against.
        version: u64,
        /// What does not fit.
        reason: String,
    },
    /// A cell's metadata is malformed (bad path, partition values not matching the frame).
    #[error("cell `{path}` is invalid: {reason}; this is a bug in the writer")]
    InvalidCell {
        /// The cell's path relative to the frame directory.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The frame's ledger has no entries and there is no checkpoint.
    #[error("the frame's ledger is empty, so the frame does not exist; create it first")]
    EmptyLedger,
    /// Stored lake state cannot be read back.
    #[error(
        "{what} is corrupt: {message}; it was changed outside Apiary or written by a newer version"
    )]
    Corrupt {
        /// What was being read (e.g. "ledger entry 42").
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// An invariant of the lake model was broken.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

impl LakeError {
    /// An [`LakeError::Internal`] from anything printable.
    pub(crate) fn internal(message: impl fmt::Display) -> Self {
        LakeError::Internal(message.to_string())
    }
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

/// `a`, `b`, `c`: names in backticks, comma-separated.
pub(crate) fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
