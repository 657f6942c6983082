//! The swarm: nodes that share one lake and never talk to each other.
//!
//! - [`heartbeat`]: each node's `_heartbeats/<node>.json`, and the [`WorldView`] that judges
//!   nodes Alive, Suspect or Dead by the reader's own clock.
//! - [`manifest`]: how a coordinator hands a statement's fragments to other nodes through
//!   `_queries/<id>/`.
//! - [`worker`]: runs the tasks assigned to this node.
//! - [`coordinator`]: assigns fragments to nodes (cache- and capacity-aware, cut to each
//!   node's budget), follows them, reassigns the ones whose node fell silent, and gives up
//!   after three attempts with a diagnostic.
//! - [`node`]: a node's loop: heartbeats, the world view, the worker.
//! - [`cache`]: the local cell cache.
//! - [`temperature`]: the colony temperature of a node's bee pool.

pub mod cache;
pub mod coordinator;
pub mod heartbeat;
pub mod manifest;
pub mod node;
pub mod temperature;
pub mod worker;

use std::time::Duration;

use apiary_engine::IpcChunker;
use apiary_engine::arrow::datatypes::SchemaRef;
use apiary_engine::arrow::record_batch::RecordBatch;
use bytes::Bytes;

pub use cache::CellCache;
pub use heartbeat::{
    CacheSummary, Heartbeat, Liveness, NodeLoad, NodeView, WorldView, heartbeat_for, node_id,
    remove_heartbeat, world_view, write_heartbeat,
};
pub use temperature::{Band, HotWrites, Temperature};
pub use worker::Worker;

use crate::{Error, Result};

/// When a split statement's fragments go to other nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Distribute {
    /// When other nodes are alive and the statement has more fragments than this node has
    /// bees: the fragments are shared between this node and the others.
    #[default]
    Auto,
    /// Whenever other nodes are alive: every fragment goes to another node.
    Always,
    /// Never: this node runs every fragment.
    Never,
}

impl Distribute {
    /// Parse `auto`, `always` or `never`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "auto" => Some(Self::Auto),
            "always" => Some(Self::Always),
            "never" => Some(Self::Never),
            _ => None,
        }
    }

    /// `auto`, `always` or `never`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Always => "always",
            Self::Never => "never",
        }
    }
}

/// How this process takes part in the swarm when it runs a statement.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// This node's id (or the client's, when it is not a node).
    pub node: String,
    /// When to hand fragments to other nodes.
    pub distribute: Distribute,
    /// How often the coordinator looks for results (and workers for tasks).
    pub poll: Duration,
    /// The heartbeat interval assumed for nodes whose heartbeat does not say.
    pub heartbeat: Duration,
    /// Deadline of each fragment.
    pub deadline: Duration,
    /// What writes do while this node is hot.
    pub hot_writes: HotWrites,
}

/// A partial result as one Arrow IPC stream.
///
/// # Errors
/// [`Error::Internal`] when there is no schema or the batches cannot be encoded.
pub(crate) fn encode_partial(schema: Option<&SchemaRef>, batches: &[RecordBatch]) -> Result<Bytes> {
    let schema = schema
        .cloned()
        .or_else(|| batches.first().map(|b| b.schema()))
        .ok_or_else(|| Error::Internal("a fragment returned no schema".into()))?;
    let encode = || -> std::result::Result<Vec<u8>, apiary_engine::EngineError> {
        let mut chunker = IpcChunker::new(&schema)?;
        let mut bytes = Vec::new();
        for batch in batches {
            bytes.extend(chunker.chunk(batch)?);
        }
        bytes.extend(chunker.finish()?);
        Ok(bytes)
    };
    encode()
        .map(Bytes::from)
        .map_err(|e| Error::Internal(format!("encoding a partial result: {e}")))
}
