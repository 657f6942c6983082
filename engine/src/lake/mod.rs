//! The pure lake model: everything about frames, cells and ledgers that needs no I/O.
//!
//! The host does the storage work (listing, reading and conditionally putting keys with
//! `object_store`) and calls these functions to decide what to write and what it means:
//! names and frame references ([`validate_name`], [`FrameRef`]), frame schemas and the
//! by-name column matching of writes ([`FrameSchema`], [`plan_write`]), partition values
//! and per-partition splits ([`split_by_partition`], [`partition_path`]), cell statistics
//! ([`column_stats`]), cell sizing ([`CellSizing`]), and the ledger: its entries, the frame
//! state they replay to, checkpoints and key names ([`LedgerEntry`], [`FrameState`],
//! [`replay`], [`ledger_key`]). Every failure is a [`LakeError`].

mod civil;
mod error;
mod ledger;
mod names;
mod partition;
mod schema;
mod sizing;
mod stats;

pub use error::LakeError;
pub use ledger::{
    Action, CHECKPOINT_DIR, CHECKPOINT_INTERVAL, CellMeta, Checkpoint, FrameState, LEDGER_DIR,
    LedgerEntry, checkpoint_key, ledger_key, parse_checkpoint_key, parse_ledger_key, replay,
    should_checkpoint, validate,
};
pub use names::{DEFAULT_BOX, DEFAULT_HIVE, FrameRef, MAX_NAME_BYTES, NameKind, validate_name};
pub use partition::{
    MAX_PARTITION_VALUE_BYTES, MAX_PARTITIONS_PER_WRITE, PartitionValues, is_partition_type,
    partition_path, partition_value, split_by_partition, split_by_partition_limited,
};
pub use schema::{FrameField, FrameSchema, WritePlan, plan_write, widens_safely};
pub use sizing::{CellSizing, MIN_CELL_BYTES};
pub use stats::{
    ColumnStats, MAX_STRING_STAT_BYTES, array_stats, column_stats, compare_stat_values, merge_stats,
};
