//! The Apiary host: everything with I/O.
//!
//! This crate owns the sealed chambers that run SQL fragments: one wasmtime [`ChamberEngine`]
//! per process (the guest compiled once, cached on disk, instantiated from an `InstancePre`
//! through the pooling allocator), and a [`BeePool`] of bees, each running one fragment at a
//! time in a fresh chamber with a hard memory budget, a CPU deadline and a private scratch
//! directory. Failures come back as typed [`Error`]s; a failed chamber never takes its bee
//! or the pool down with it.
//!
//! It also owns the lake ([`Lake`]): the meadow (object storage), the namespace registry,
//! frame ledgers with conditional commits, the write path and vacuum; and the [swarm]:
//! heartbeats, the world view, distributed statements through query manifests, the cell
//! cache and the colony temperature.
//!
//! User-defined functions are wasm components ([`register_module`]): stored in the lake,
//! recorded in the registry, and run inside the chambers of the statements that call them.

mod api;
mod bee_pool;
#[allow(clippy::too_many_arguments)] // generated code
mod bindings;
mod cells;
mod chamber;
pub mod cli;
mod commands;
pub mod config;
mod error;
mod guest;
mod lake;
pub mod leafcutter;
mod limits;
pub mod load;
mod query;
mod subquery;
pub mod swarm;
mod tpch;
mod udf;

pub use api::{Apiary, Frame, Status};
pub use apiary_engine::{CellRef, MergeKind, Stage, TableCells};
pub use bee_pool::{BeePool, PoolConfig, PoolLoad};
pub use cells::{CellFiles, ReadCounter};
pub use chamber::{
    BoundFunction, ChamberEngine, ChamberStats, FUNCTION_OUTPUT_CAPACITY, Fragment, FragmentOutput,
    FunctionModule, MAX_FUNCTION_MODULES,
};
pub use config::{Hardware, Overrides, Settings, Source, machine_cores};
pub use error::{Attempt, Error, GuestErrorKind, Result};
pub use guest::{GuestArtifact, default_cache_dir, find_component, find_guest};
pub use lake::{
    FrameEntry, FrameWrite, FunctionEntry, Lake, Meadow, RegistryState, S3Options, VacuumReport,
    WriteMode, WriteOptions, WriteResult,
};
pub use query::{FragmentRun, MergeRun, QueryOutput, QuerySession};
pub use swarm::coordinator::Coordination;
pub use swarm::{
    CellCache, Distribute, Heartbeat, Liveness, NodeView, SwarmConfig, Temperature, WorldView,
    heartbeat_for, node_id, remove_heartbeat, world_view, write_heartbeat,
};
pub use tpch::{TPCH_QUERIES, TPCH_TABLES, cell_writer_properties, generate_tpch};
pub use udf::{MAX_MODULE_BYTES, Registered, register_module};
