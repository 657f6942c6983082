//! The Apiary kernel: target-independent logic that runs the same natively and inside a
//! mason chamber (wasm32-wasip2).
//!
//! This crate owns fragment execution: one SQL fragment over a set of cells, run by
//! DataFusion with one partition, a bounded memory pool and an optional spill directory.
//! Cells are Parquet files reached only through the [`ByteSource`] trait, so the same code
//! reads local files in tests and host imports inside a chamber. Results leave as Arrow
//! record batches, or as Arrow IPC stream chunks through [`IpcChunker`].
//!
//! User-defined functions ([`FunctionSignature`]) are wasm components the engine never
//! sees: it registers them with DataFusion and calls them through a [`FunctionCaller`],
//! one Arrow IPC batch at a time.
//!
//! It also owns the pure lake model in [`lake`]: names, frame schemas and write matching,
//! partitioning, cell statistics and sizing, and the ledger with its replay.
//!
//! No tokio I/O, no `object_store` backends and no wasmtime live here.

pub mod bytes;
mod cells;
pub mod decimal;
mod error;
mod fragment;
pub mod int128;
mod ipc;
pub mod lake;
mod pool;
mod spill;
mod udf;

pub use cells::{ByteSource, CellId};
pub use error::EngineError;
pub use fragment::{
    BelowJoins, CellRef, FragmentSink, FragmentSummary, FragmentTask, JoinColumn, KeyColumn,
    KeyRange, KeyScan, MergeKind, PlanningScan, RowSlice, SplitScan, Splitting, Stage, TableCells,
    default_namespace, equi_join_columns, execute_fragment, merge_kind, merge_kind_and_groups,
    plan_sorting_last, split_optimizer_rules,
};
pub use ipc::{IpcChunker, decode_ipc_chunks, decode_schema, encode_schema};
pub use pool::PeakMemoryPool;
pub use udf::{FunctionCaller, FunctionSignature, NoFunctions, register_functions};

/// Re-exported so hosts and guests use exactly the arrow version the engine was built with.
pub use arrow;
