//! The Rust API: one [`Apiary`] per program, holding the lake, the bees and a SQL session.
//!
//! ```
//! use std::sync::Arc;
//!
//! use apiary_host::{Apiary, Settings};
//! use arrow::array::{Int64Array, StringArray};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use arrow::record_batch::RecordBatch;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! # rt.block_on(async {
//! // A lake in memory, one bee of 256 MiB.
//! let settings = Settings::for_machine().with_bees(1).with_budget_mib(256);
//! let apiary = Apiary::open("memory://", settings).await?;
//!
//! let schema = Schema::new(vec![
//!     Field::new("hive", DataType::Utf8, false),
//!     Field::new("honey_g", DataType::Int64, false),
//! ]);
//! let harvest = apiary.create_frame("harvest", &schema, &[], false).await?;
//! let batch = RecordBatch::try_new(
//!     Arc::new(schema),
//!     vec![
//!         Arc::new(StringArray::from(vec!["north", "south", "north"])),
//!         Arc::new(Int64Array::from(vec![300, 250, 200])),
//!     ],
//! )?;
//! harvest.write(&[batch]).await?;
//!
//! let rows = apiary
//!     .sql("SELECT sum(honey_g) AS total FROM harvest WHERE hive = 'north'")
//!     .await?;
//! let total = rows[0].column(0).as_any().downcast_ref::<Int64Array>().map(|a| a.value(0));
//! assert_eq!(total, Some(500));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apiary_engine::arrow::datatypes::Schema;
use apiary_engine::arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use serde::{Deserialize, Serialize};

use crate::config::{Hardware, Settings};
use crate::{
    BeePool, ChamberEngine, Error, Lake, PoolConfig, QueryOutput, QuerySession, Result, WriteMode,
    WriteResult,
};

/// Where heartbeats live in the lake.
pub const HEARTBEATS: &str = "_heartbeats";

impl Settings {
    /// Defaults for this machine only ([`Settings::for_hardware`]): no configuration file,
    /// no environment. The lake is the one given to [`Apiary::open`].
    pub fn for_machine() -> Self {
        Self::for_hardware(Hardware::detect())
    }

    /// These settings with `bees` bees.
    #[must_use]
    pub fn with_bees(mut self, bees: usize) -> Self {
        self.bees = bees.max(1);
        self
    }

    /// These settings with a budget of `mib` MiB per bee.
    #[must_use]
    pub fn with_budget_mib(mut self, mib: u64) -> Self {
        self.budget = mib << 20;
        self
    }

    /// These settings with the compiled guest cached in `dir`.
    #[must_use]
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = dir.into();
        self
    }
}

/// A lake, the bees that query it, and a SQL session.
#[derive(Debug)]
pub struct Apiary {
    lake: Arc<Lake>,
    pool: Arc<BeePool>,
    settings: Settings,
    guest: PathBuf,
    namespace: Mutex<(String, String)>,
}

impl Apiary {
    /// Open the lake at `uri` (a directory, `file:///path` or `memory://`) with `settings`
    /// (the lake in `settings` is replaced by `uri`), and start the bees.
    ///
    /// # Errors
    /// [`Error::Config`] for unusable settings, [`Error::Guest`] when the chamber guest is
    /// missing or cannot be compiled, [`Error::Storage`] when the lake cannot be opened.
    pub async fn open(uri: &str, mut settings: Settings) -> Result<Self> {
        settings.lake = uri.to_owned();
        if settings.bees == 0 {
            return Err(Error::Config("a node needs at least one bee".into()));
        }
        let lake = Arc::new(Lake::open(uri).await?);
        let guest = crate::find_guest()?;
        let engine = {
            let (guest, cache, budget, bees) = (
                guest.clone(),
                settings.cache_dir.clone(),
                settings.budget,
                settings.bees,
            );
            tokio::task::spawn_blocking(move || {
                ChamberEngine::new(&guest, &cache, budget, bees as u32)
            })
            .await
            .map_err(|e| Error::Internal(format!("starting the chamber engine: {e}")))??
        };
        let scratch = std::env::temp_dir().join(format!(
            "apiary-scratch-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let pool = Arc::new(BeePool::new(
            Arc::new(engine),
            PoolConfig {
                bees: settings.bees,
                budget: settings.budget,
                deadline: settings.deadline,
                scratch_root: scratch,
            },
        )?);
        Ok(Self {
            lake,
            pool,
            settings,
            guest,
            namespace: Mutex::new(apiary_engine::default_namespace()),
        })
    }

    /// The lake.
    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    /// The settings the node runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A new SQL session starting in `default.default`.
    pub fn session(&self) -> QuerySession {
        QuerySession::new(self.lake.clone(), self.pool.clone())
    }

    /// Run one statement and return its rows. `USE` carries over to later calls.
    ///
    /// # Errors
    /// As [`QuerySession::sql`].
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        Ok(self.query(sql).await?.batches)
    }

    /// Run one statement and return its rows with what running it took.
    ///
    /// # Errors
    /// As [`QuerySession::sql`].
    pub async fn query(&self, sql: &str) -> Result<QueryOutput> {
        let (hive, box_name) = self.current_namespace();
        let mut session = self.session();
        if (hive.as_str(), box_name.as_str()) != ("default", "default") {
            session
                .sql(&format!("USE \"{hive}\".\"{box_name}\""))
                .await?;
        }
        let output = session.sql(sql).await?;
        let (hive, box_name) = session.namespace();
        if let Ok(mut namespace) = self.namespace.lock() {
            *namespace = (hive.to_owned(), box_name.to_owned());
        }
        Ok(output)
    }

    /// Run one statement and return its rows as a stream of batches. The statement runs to
    /// completion first (its fragments are merged before the first batch is handed out);
    /// the stream then yields the merged batches in order.
    ///
    /// # Errors
    /// As [`QuerySession::sql`].
    pub async fn sql_stream(&self, sql: &str) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let batches = self.sql(sql).await?;
        Ok(Box::pin(stream::iter(batches.into_iter().map(Ok))))
    }

    fn current_namespace(&self) -> (String, String) {
        self.namespace
            .lock()
            .map(|n| n.clone())
            .unwrap_or_else(|_| apiary_engine::default_namespace())
    }

    /// A handle on frame `name` (1-, 2- or 3-part).
    pub fn frame(&self, name: &str) -> Frame<'_> {
        Frame {
            apiary: self,
            name: name.to_owned(),
        }
    }

    /// Create a hive (a database).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] unless `if_not_exists`.
    pub async fn create_hive(&self, hive: &str, if_not_exists: bool) -> Result<()> {
        self.lake.create_hive(hive, if_not_exists).await
    }

    /// Create a box (a schema) in `hive`.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown hive, [`Error::AlreadyExists`] unless
    /// `if_not_exists`.
    pub async fn create_box(&self, hive: &str, box_name: &str, if_not_exists: bool) -> Result<()> {
        self.lake.create_box(hive, box_name, if_not_exists).await
    }

    /// Create a frame (a table) with `schema`, partitioned by `partition_by`.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] unless `if_not_exists`; [`Error::Lake`] for bad names or
    /// partition columns.
    pub async fn create_frame(
        &self,
        name: &str,
        schema: &Schema,
        partition_by: &[&str],
        if_not_exists: bool,
    ) -> Result<Frame<'_>> {
        self.lake
            .create_frame(name, schema, partition_by, if_not_exists)
            .await?;
        Ok(self.frame(name))
    }

    /// This node's settings and the nodes whose heartbeats are in the lake.
    ///
    /// # Errors
    /// [`Error::Storage`] when the lake cannot be listed.
    pub async fn status(&self) -> Result<Status> {
        let registry = self.lake.registry().await?;
        let frames = registry.frame_count();
        Ok(Status {
            settings: self.settings.clone(),
            guest: self.guest.clone(),
            frames,
            nodes: world_view(&self.lake, self.settings.heartbeat).await?,
        })
    }
}

/// A frame of an [`Apiary`].
#[derive(Debug)]
pub struct Frame<'a> {
    apiary: &'a Apiary,
    name: String,
}

impl Frame<'_> {
    /// Append `batches` as one commit.
    ///
    /// # Errors
    /// As [`Lake::write`].
    pub async fn write(&self, batches: &[RecordBatch]) -> Result<WriteResult> {
        self.apiary
            .lake
            .write(&self.name, batches, WriteMode::Append)
            .await
    }

    /// Replace the frame's rows with `batches` as one commit.
    ///
    /// # Errors
    /// As [`Lake::write`].
    pub async fn overwrite(&self, batches: &[RecordBatch]) -> Result<WriteResult> {
        self.apiary
            .lake
            .write(&self.name, batches, WriteMode::Overwrite)
            .await
    }

    /// All the frame's rows.
    ///
    /// # Errors
    /// As [`Apiary::sql`].
    pub async fn read(&self) -> Result<Vec<RecordBatch>> {
        self.apiary
            .sql(&format!("SELECT * FROM {}", self.name))
            .await
    }
}

/// What `apiary status` shows.
#[derive(Debug, Clone)]
pub struct Status {
    /// This node's settings and where each came from.
    pub settings: Settings,
    /// The chamber guest component.
    pub guest: PathBuf,
    /// Frames in the lake.
    pub frames: usize,
    /// Nodes with a heartbeat in the lake.
    pub nodes: Vec<NodeView>,
}

/// A heartbeat: what a node says about itself, rewritten every interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// How a node looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Heard from within three intervals.
    Alive,
    /// Silent for three to ten intervals.
    Suspect,
    /// Silent for longer.
    Dead,
}

/// A node as seen through its heartbeat.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// The heartbeat.
    pub heartbeat: Heartbeat,
    /// How long ago it was written, by this node's clock.
    pub age: Duration,
    /// What that age means.
    pub liveness: Liveness,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Read every heartbeat in the lake and judge each node's liveness by its age.
///
/// # Errors
/// [`Error::Storage`] when the heartbeats cannot be listed.
pub async fn world_view(lake: &Lake, default_interval: Duration) -> Result<Vec<NodeView>> {
    let mut nodes = Vec::new();
    for object in lake.meadow().list(HEARTBEATS).await? {
        let key = object.location.to_string();
        let Some(bytes) = lake.meadow().get(&key).await? else {
            continue;
        };
        let Ok(heartbeat) = serde_json::from_slice::<Heartbeat>(&bytes) else {
            continue;
        };
        let age = Duration::from_millis(now_ms().saturating_sub(heartbeat.written_ms));
        let interval = if heartbeat.interval_ms > 0 {
            Duration::from_millis(heartbeat.interval_ms)
        } else {
            default_interval
        };
        let liveness = if age < interval * 3 {
            Liveness::Alive
        } else if age < interval * 10 {
            Liveness::Suspect
        } else {
            Liveness::Dead
        };
        nodes.push(NodeView {
            heartbeat,
            age,
            liveness,
        });
    }
    nodes.sort_by(|a, b| a.heartbeat.node.cmp(&b.heartbeat.node));
    Ok(nodes)
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

/// The heartbeat this node would write next.
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
    }
}
