//! The namespace registry: which hives, boxes and frames exist.
//!
//! The registry is a sequence of immutable JSON states, `_registry/state_<version>.json`,
//! each the whole catalogue. A change reads the newest state, applies itself, and commits
//! the next version with a conditional create; on a lost race it re-reads and re-applies,
//! so two nodes creating different hives at the same moment both succeed, and two nodes
//! creating the same frame agree on one (or the loser gets a clear error if the schemas
//! differ). Versions are probed forward from the last known one: no listing of the prefix.

use std::collections::BTreeMap;
use std::sync::Mutex;

use apiary_engine::lake::{
    DEFAULT_BOX, DEFAULT_HIVE, FrameRef, FrameSchema, NameKind, validate_name,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::meadow::Meadow;
use crate::{Error, Result};

const REGISTRY_DIR: &str = "_registry";

fn state_key(version: u64) -> String {
    format!("{REGISTRY_DIR}/state_{version:020}.json")
}

/// A frame as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameEntry {
    /// The frame's directory, relative to the lake root. It carries the registry version
    /// that created it, so a frame dropped and created again never sees the old ledger.
    pub dir: String,
    /// The frame's schema at creation.
    pub schema: FrameSchema,
    /// Partition columns, outermost first.
    pub partition_by: Vec<String>,
}

/// One version of the catalogue: hive -> box -> frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryState {
    /// The version of this state.
    pub version: u64,
    /// The catalogue.
    pub hives: BTreeMap<String, BTreeMap<String, BTreeMap<String, FrameEntry>>>,
    /// User-defined functions, by the name SQL calls them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub functions: BTreeMap<String, FunctionEntry>,
}

/// A user-defined function as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionEntry {
    /// SHA-256 of the module's bytes, in hex; the module is `_functions/<module>.wasm`.
    pub module: String,
    /// Argument types, as Arrow spells them.
    pub args: Vec<String>,
    /// Return type, as Arrow spells it.
    pub returns: String,
    /// `immutable`, `stable` or `volatile`.
    pub volatility: String,
    /// The file the module was registered from, for `udf list`.
    pub file: String,
}

impl RegistryState {
    /// Frames in every hive and box.
    pub fn frame_count(&self) -> usize {
        self.hives
            .values()
            .flat_map(|boxes| boxes.values())
            .map(|frames| frames.len())
            .sum()
    }

    fn initial() -> Self {
        let mut hives = BTreeMap::new();
        hives.insert(
            DEFAULT_HIVE.to_owned(),
            BTreeMap::from([(DEFAULT_BOX.to_owned(), BTreeMap::new())]),
        );
        Self {
            version: 0,
            hives,
            functions: BTreeMap::new(),
        }
    }

    /// The frame `frame`, if it exists.
    pub fn frame(&self, frame: &FrameRef) -> Option<&FrameEntry> {
        self.hives
            .get(&frame.hive)?
            .get(&frame.box_name)?
            .get(&frame.frame)
    }
}

/// A change to the catalogue.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    CreateHive {
        hive: String,
        if_not_exists: bool,
    },
    CreateBox {
        hive: String,
        box_name: String,
        if_not_exists: bool,
    },
    CreateFrame {
        frame: FrameRef,
        schema: FrameSchema,
        partition_by: Vec<String>,
        if_not_exists: bool,
    },
    DropHive {
        hive: String,
        if_exists: bool,
    },
    DropBox {
        hive: String,
        box_name: String,
        if_exists: bool,
    },
    DropFrame {
        frame: FrameRef,
        if_exists: bool,
    },
    /// Create or replace functions, all in one version.
    PutFunctions {
        functions: Vec<(String, FunctionEntry)>,
    },
    DropFunction {
        name: String,
        if_exists: bool,
    },
}

fn not_found(what: &str, name: &str) -> Error {
    Error::NotFound(format!("{what} `{name}` does not exist"))
}

impl Change {
    /// Apply to `state` (already at the next version). `Ok(false)`: nothing to change.
    fn apply(&self, state: &mut RegistryState) -> Result<bool> {
        let next = state.version;
        match self {
            Change::CreateHive {
                hive,
                if_not_exists,
            } => {
                validate_name(NameKind::Hive, hive)?;
                if state.hives.contains_key(hive) {
                    return if *if_not_exists {
                        Ok(false)
                    } else {
                        Err(Error::AlreadyExists(format!(
                            "hive `{hive}` already exists"
                        )))
                    };
                }
                state.hives.insert(hive.clone(), BTreeMap::new());
            }
            Change::CreateBox {
                hive,
                box_name,
                if_not_exists,
            } => {
                validate_name(NameKind::Box, box_name)?;
                let boxes = state
                    .hives
                    .get_mut(hive)
                    .ok_or_else(|| not_found("hive", hive))?;
                if boxes.contains_key(box_name) {
                    return if *if_not_exists {
                        Ok(false)
                    } else {
                        Err(Error::AlreadyExists(format!(
                            "box `{hive}.{box_name}` already exists"
                        )))
                    };
                }
                boxes.insert(box_name.clone(), BTreeMap::new());
            }
            Change::CreateFrame {
                frame,
                schema,
                partition_by,
                if_not_exists,
            } => {
                validate_name(NameKind::Frame, &frame.frame)?;
                let frames = state
                    .hives
                    .get_mut(&frame.hive)
                    .ok_or_else(|| not_found("hive", &frame.hive))?
                    .get_mut(&frame.box_name)
                    .ok_or_else(|| {
                        not_found("box", &format!("{}.{}", frame.hive, frame.box_name))
                    })?;
                if let Some(existing) = frames.get(&frame.frame) {
                    if existing.schema != *schema || existing.partition_by != *partition_by {
                        return Err(Error::AlreadyExists(format!(
                            "frame `{frame}` already exists with a different schema or partitioning; \
                             drop it first or write to it with its own schema"
                        )));
                    }
                    return if *if_not_exists {
                        Ok(false)
                    } else {
                        Err(Error::AlreadyExists(format!(
                            "frame `{frame}` already exists"
                        )))
                    };
                }
                frames.insert(
                    frame.frame.clone(),
                    FrameEntry {
                        dir: format!("{}/{}/{}/v{next}", frame.hive, frame.box_name, frame.frame),
                        schema: schema.clone(),
                        partition_by: partition_by.clone(),
                    },
                );
            }
            Change::DropHive { hive, if_exists } => {
                if hive == DEFAULT_HIVE {
                    return Err(Error::Config("the `default` hive cannot be dropped".into()));
                }
                match state.hives.get(hive) {
                    None if *if_exists => return Ok(false),
                    None => return Err(not_found("hive", hive)),
                    Some(boxes) if boxes.values().any(|frames| !frames.is_empty()) => {
                        return Err(Error::Config(format!(
                            "hive `{hive}` still holds frames; drop them first"
                        )));
                    }
                    Some(_) => {
                        state.hives.remove(hive);
                    }
                }
            }
            Change::DropBox {
                hive,
                box_name,
                if_exists,
            } => {
                let boxes = state
                    .hives
                    .get_mut(hive)
                    .ok_or_else(|| not_found("hive", hive))?;
                match boxes.get(box_name) {
                    None if *if_exists => return Ok(false),
                    None => return Err(not_found("box", &format!("{hive}.{box_name}"))),
                    Some(frames) if !frames.is_empty() => {
                        return Err(Error::Config(format!(
                            "box `{hive}.{box_name}` still holds frames; drop them first"
                        )));
                    }
                    Some(_) => {
                        boxes.remove(box_name);
                    }
                }
            }
            Change::DropFrame { frame, if_exists } => {
                let removed = state
                    .hives
                    .get_mut(&frame.hive)
                    .and_then(|b| b.get_mut(&frame.box_name))
                    .and_then(|f| f.remove(&frame.frame));
                if removed.is_none() {
                    return if *if_exists {
                        Ok(false)
                    } else {
                        Err(not_found("frame", &frame.to_string()))
                    };
                }
            }
            Change::PutFunctions { functions } => {
                for (name, entry) in functions {
                    state.functions.insert(name.clone(), entry.clone());
                }
            }
            Change::DropFunction { name, if_exists } => {
                if state.functions.remove(name).is_none() {
                    return if *if_exists {
                        Ok(false)
                    } else {
                        Err(not_found("function", name))
                    };
                }
            }
        }
        Ok(true)
    }
}

/// Reads and changes the registry of one lake.
///
/// It remembers the newest state it has seen, so each read probes forward from there
/// instead of replaying the registry from version 0.
#[derive(Debug)]
pub(crate) struct Registry {
    meadow: Meadow,
    known: Mutex<Option<RegistryState>>,
}

impl Registry {
    pub(crate) fn new(meadow: Meadow) -> Self {
        Self {
            meadow,
            known: Mutex::new(None),
        }
    }

    /// The newest state, probing forward from `from`, else from the newest state this
    /// handle has seen, else from version 0.
    pub(crate) async fn newest(&self, from: Option<RegistryState>) -> Result<RegistryState> {
        let known = self.known.lock().ok().and_then(|k| k.clone());
        let from = match (from, known) {
            (Some(a), Some(b)) => Some(if a.version >= b.version { a } else { b }),
            (a, b) => a.or(b),
        };
        let mut state = match from {
            Some(state) => state,
            None => match self.read(0).await? {
                Some(state) => state,
                None => {
                    // A new lake: version 0 holds `default.default`. Racing nodes write the
                    // same bytes; whoever loses reads the winner's.
                    let initial = RegistryState::initial();
                    self.meadow
                        .put_if_absent(&state_key(0), to_json(&initial)?)
                        .await?;
                    self.read(0)
                        .await?
                        .ok_or_else(|| Error::Corrupt("registry version 0 vanished".into()))?
                }
            },
        };
        while let Some(next) = self.read(state.version + 1).await? {
            state = next;
        }
        if let Ok(mut known) = self.known.lock() {
            *known = Some(state.clone());
        }
        Ok(state)
    }

    async fn read(&self, version: u64) -> Result<Option<RegistryState>> {
        let Some(bytes) = self.meadow.get(&state_key(version)).await? else {
            return Ok(None);
        };
        let state: RegistryState = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", state_key(version))))?;
        Ok(Some(state))
    }

    /// Apply `change`, retrying on lost races; returns the state after it.
    pub(crate) async fn change(&self, change: Change) -> Result<RegistryState> {
        let mut current = self.newest(None).await?;
        loop {
            let mut next = current.clone();
            next.version += 1;
            if !change.apply(&mut next)? {
                return Ok(current);
            }
            if self
                .meadow
                .put_if_absent(&state_key(next.version), to_json(&next)?)
                .await?
            {
                return Ok(next);
            }
            current = self.newest(Some(current)).await?;
        }
    }
}

fn to_json(state: &RegistryState) -> Result<Bytes> {
    serde_json::to_vec(state).map(Bytes::from).map_err(|e| {
        Error::Corrupt(format!(
            "registry state does not serialise (this is a bug): {e}"
        ))
    })
}
