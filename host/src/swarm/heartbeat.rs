//! Heartbeats and the world view.
//!
//! A node says it is alive by rewriting `_heartbeats/<node>.json` every interval: who it is,
//! what it can do (cores, memory, bees, budget per bee, target cell size), how loaded it is
//! (busy and idle bees, queue, chamber memory, colony temperature) and which cells its cache
//! holds. A [`WorldView`] reads them all and judges each node by the reader's own clock: a
//! heartbeat whose counter moved since the last look is fresh, one whose counter stands
//! still ages by the time the reader has watched it stand still. The writer's timestamp is
//! used once, for a heartbeat seen for the first time, less an allowance for clock skew, so
//! a writer whose clock runs a few seconds off is neither dead on arrival nor immortal.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::swarm::temperature::Temperature;
use crate::{Error, Lake, PoolLoad, Result};

/// Where heartbeats live in the lake.
pub const HEARTBEATS: &str = "_heartbeats";

/// Clock skew between nodes a reader tolerates when it first sees a heartbeat.
pub const CLOCK_SKEW: Duration = Duration::from_secs(2);

/// A node silent for this many heartbeat intervals is Suspect.
pub const SUSPECT_AFTER: u32 = 3;

/// A node silent for this many heartbeat intervals is Dead.
pub const DEAD_AFTER: u32 = 10;

/// Heartbeats dead for this long are removed by any node.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// A heartbeat: what a node says about itself, rewritten every interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Stable node id.
    pub node: String,
    /// Counter incremented with every heartbeat.
    pub sequence: u64,
    /// Writer's clock, milliseconds since the Unix epoch.
    pub written_ms: u64,
    /// Interval between heartbeats, in milliseconds.
    pub interval_ms: u64,
    /// Cores of the node.
    pub cores: usize,
    /// Memory of the node, in bytes.
    pub memory: u64,
    /// Bees of the node.
    pub bees: usize,
    /// Budget of each bee, in bytes.
    pub budget: u64,
    /// Size the node cuts cells to when it writes, in bytes.
    #[serde(default)]
    pub target_cell_bytes: u64,
    /// What the node's bees are doing.
    #[serde(default)]
    pub load: NodeLoad,
    /// What the node's cell cache holds.
    #[serde(default)]
    pub cache: CacheSummary,
}

/// A node's load as its heartbeat reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Bees running a fragment.
    pub busy: usize,
    /// Bees waiting for work.
    pub idle: usize,
    /// Fragments waiting for a bee.
    pub queued: usize,
    /// Linear memory held by running chambers over what they may hold, 0..=1.
    pub memory_pressure: f64,
    /// The colony temperature.
    pub temperature: Temperature,
}

/// What a node's cell cache holds, as its heartbeat reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSummary {
    /// Bytes cached.
    pub bytes: u64,
    /// The cache's size limit.
    pub limit: u64,
    /// Keys of the cells with cached bytes, most recently used first (at most
    /// [`CacheSummary::MAX_CELLS`]).
    pub cells: Vec<String>,
}

impl CacheSummary {
    /// Cells listed in a heartbeat at most.
    pub const MAX_CELLS: usize = 1000;
}

/// How a node looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Heard from within [`SUSPECT_AFTER`] intervals.
    Alive,
    /// Silent for [`SUSPECT_AFTER`] to [`DEAD_AFTER`] intervals.
    Suspect,
    /// Silent for longer.
    Dead,
}

impl Liveness {
    /// `alive`, `suspect` or `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
        }
    }
}

/// A node as seen through its heartbeat.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// The heartbeat.
    pub heartbeat: Heartbeat,
    /// How long the node has been silent, as this reader judges it.
    pub age: Duration,
    /// What that age means.
    pub liveness: Liveness,
}

/// When this reader first saw a heartbeat's current counter.
#[derive(Debug, Clone, Copy)]
struct Sighting {
    sequence: u64,
    at: Instant,
    age_then: Duration,
}

/// The swarm as one reader sees it over time. Keep one per node and refresh it every
/// interval; a fresh one judges by the writers' timestamps alone.
#[derive(Debug, Default)]
pub struct WorldView {
    sightings: HashMap<String, Sighting>,
}

impl WorldView {
    /// A view that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read every heartbeat in the lake and judge each node.
    ///
    /// # Errors
    /// [`Error::Storage`] when the heartbeats cannot be listed.
    pub async fn refresh(
        &mut self,
        lake: &Lake,
        default_interval: Duration,
    ) -> Result<Vec<NodeView>> {
        let mut nodes = Vec::new();
        for object in lake.meadow().list(HEARTBEATS).await? {
            let key = object.location.to_string();
            let Some(bytes) = lake.meadow().get(&key).await? else {
                continue;
            };
            let Ok(heartbeat) = serde_json::from_slice::<Heartbeat>(&bytes) else {
                tracing::warn!(key, "ignoring an unreadable heartbeat");
                continue;
            };
            let age = self.age(&heartbeat);
            let interval = if heartbeat.interval_ms > 0 {
                Duration::from_millis(heartbeat.interval_ms)
            } else {
                default_interval
            };
            nodes.push(NodeView {
                liveness: liveness(age, interval),
                heartbeat,
                age,
            });
        }
        let present: std::collections::HashSet<&str> =
            nodes.iter().map(|n| n.heartbeat.node.as_str()).collect();
        self.sightings
            .retain(|node, _| present.contains(node.as_str()));
        nodes.sort_by(|a, b| a.heartbeat.node.cmp(&b.heartbeat.node));
        Ok(nodes)
    }

    fn age(&mut self, heartbeat: &Heartbeat) -> Duration {
        let now = Instant::now();
        match self.sightings.get(&heartbeat.node) {
            Some(seen) if seen.sequence == heartbeat.sequence => {
                seen.age_then + now.duration_since(seen.at)
            }
            previous => {
                // A counter that moved since the last look was written since then; a
                // heartbeat never seen before is judged by its writer's clock, less the skew
                // allowance.
                let age_then = if previous.is_some() {
                    Duration::ZERO
                } else {
                    Duration::from_millis(now_ms().saturating_sub(heartbeat.written_ms))
                        .saturating_sub(CLOCK_SKEW)
                };
                self.sightings.insert(
                    heartbeat.node.clone(),
                    Sighting {
                        sequence: heartbeat.sequence,
                        at: now,
                        age_then,
                    },
                );
                age_then
            }
        }
    }
}

/// What silence of `age` means for a node beating every `interval`.
pub fn liveness(age: Duration, interval: Duration) -> Liveness {
    if age < interval * SUSPECT_AFTER {
        Liveness::Alive
    } else if age < interval * DEAD_AFTER {
        Liveness::Suspect
    } else {
        Liveness::Dead
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Read every heartbeat in the lake once and judge each node by its writer's timestamp.
///
/// # Errors
/// [`Error::Storage`] when the heartbeats cannot be listed.
pub async fn world_view(lake: &Lake, default_interval: Duration) -> Result<Vec<NodeView>> {
    WorldView::new().refresh(lake, default_interval).await
}

/// Write this node's heartbeat.
///
/// # Errors
/// [`Error::Storage`] when the lake refuses the write.
pub async fn write_heartbeat(lake: &Lake, heartbeat: &Heartbeat) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(heartbeat)
        .map_err(|e| Error::Internal(format!("encoding a heartbeat: {e}")))?;
    lake.meadow()
        .put(&heartbeat_key(&heartbeat.node), Bytes::from(bytes))
        .await
}

/// Remove this node's heartbeat: a graceful departure.
///
/// # Errors
/// [`Error::Storage`] when the lake refuses the delete.
pub async fn remove_heartbeat(lake: &Lake, node: &str) -> Result<()> {
    lake.meadow().delete(&heartbeat_key(node)).await
}

fn heartbeat_key(node: &str) -> String {
    format!("{HEARTBEATS}/{node}.json")
}

/// This machine's node id, created on first use and kept in `dir/node-id`.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read or written.
pub fn node_id(dir: &std::path::Path) -> Result<String> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&path, e)),
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    std::fs::write(&path, &id).map_err(|e| Error::io(&path, e))?;
    Ok(id)
}

/// The heartbeat a node with `settings` and no load would write next.
pub fn heartbeat_for(node: &str, sequence: u64, settings: &Settings) -> Heartbeat {
    Heartbeat {
        node: node.to_owned(),
        sequence,
        written_ms: now_ms(),
        interval_ms: settings.heartbeat.as_millis() as u64,
        cores: settings.hardware.cores,
        memory: settings.hardware.memory,
        bees: settings.bees,
        budget: settings.budget,
        target_cell_bytes: apiary_engine::lake::CellSizing::for_budget(settings.budget)
            .target_bytes,
        load: NodeLoad {
            idle: settings.bees,
            ..NodeLoad::default()
        },
        cache: CacheSummary::default(),
    }
}

impl NodeLoad {
    /// The load of a pool, with its temperature.
    pub fn of(load: PoolLoad) -> Self {
        let temperature = Temperature::of(load);
        Self {
            busy: load.busy,
            idle: load.idle,
            queued: load.queued,
            memory_pressure: temperature.memory_pressure,
            temperature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(node: &str, sequence: u64, written_ms: u64) -> Heartbeat {
        let mut hb = heartbeat_for(node, sequence, &Settings::for_machine());
        hb.written_ms = written_ms;
        hb
    }

    #[test]
    fn liveness_thresholds_follow_the_interval() {
        let i = Duration::from_secs(5);
        assert_eq!(liveness(Duration::from_secs(14), i), Liveness::Alive);
        assert_eq!(liveness(Duration::from_secs(15), i), Liveness::Suspect);
        assert_eq!(liveness(Duration::from_secs(49), i), Liveness::Suspect);
        assert_eq!(liveness(Duration::from_secs(50), i), Liveness::Dead);
    }

    #[test]
    fn a_writer_clock_ahead_or_behind_by_the_allowance_looks_fresh() {
        let mut view = WorldView::new();
        let ahead = beat("ahead", 1, now_ms() + 1_500);
        let behind = beat("behind", 1, now_ms() - 1_500);
        assert_eq!(view.age(&ahead), Duration::ZERO);
        assert_eq!(view.age(&behind), Duration::ZERO);
    }

    #[test]
    fn a_moving_counter_is_fresh_whatever_the_writer_clock_says() {
        let mut view = WorldView::new();
        // The writer's clock is an hour slow: its first heartbeat looks dead.
        let slow = now_ms() - 3_600_000;
        assert!(view.age(&beat("slow", 1, slow)) > Duration::from_secs(3000));
        // Its next heartbeat moved the counter: fresh, by the reader's own observation.
        assert_eq!(view.age(&beat("slow", 2, slow + 5_000)), Duration::ZERO);
        // A counter that stands still ages by the reader's clock.
        std::thread::sleep(Duration::from_millis(30));
        let age = view.age(&beat("slow", 2, slow + 5_000));
        assert!(
            age >= Duration::from_millis(30) && age < Duration::from_secs(1),
            "{age:?}"
        );
    }
}
