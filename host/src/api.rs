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

use apiary_engine::arrow::datatypes::Schema;
use apiary_engine::arrow::record_batch::RecordBatch;
use futures::stream::{self, BoxStream};

use crate::config::{Hardware, Settings};
use crate::swarm::temperature::wait_to_write;
use crate::swarm::{
    CellCache, Heartbeat, NodeLoad, NodeView, SwarmConfig, Temperature, Worker, heartbeat_for,
    world_view,
};
use crate::{
    BeePool, ChamberEngine, Error, Lake, PoolConfig, QueryOutput, QuerySession, Result, WriteMode,
    WriteResult,
};

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
    cache: Option<Arc<CellCache>>,
    node: String,
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
        let lake = Arc::new(Lake::open_with(uri, &settings.s3).await?);
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
            "{}{}-{}",
            crate::bee_pool::SCRATCH_PREFIX,
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
        // Scratch roots that killed processes of this user left behind go now (this pool's
        // own is locked).
        if let Ok(own) = std::fs::metadata(&pool.config().scratch_root) {
            let removed = crate::bee_pool::sweep_stale_scratch(
                &std::env::temp_dir(),
                std::os::unix::fs::MetadataExt::uid(&own),
            );
            if removed > 0 {
                tracing::info!(
                    "removed {removed} scratch directories of processes no longer running"
                );
            }
        }
        let cache = match settings.cell_cache {
            _ if uri.starts_with("memory:") => None,
            Some(0) => None,
            // A local lake's cells are on this machine's disk already: by default they are
            // read in place, since a copy in the cache would only add the writes (on an SD
            // card, the slowest part of a first read) and the space.
            None if lake.meadow().is_local() => None,
            limit => {
                let dir = settings.cell_cache_dir.clone();
                let limit = limit.unwrap_or_else(|| CellCache::default_limit(&dir));
                Some(Arc::new(CellCache::open(&dir, limit)?))
            }
        };
        Ok(Self {
            lake,
            pool,
            settings,
            guest,
            namespace: Mutex::new(apiary_engine::default_namespace()),
            cache,
            node: format!(
                "client-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
        })
    }

    /// This Apiary acting as node `node` of the swarm (the id its heartbeats carry).
    #[must_use]
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// The id this process uses in the swarm: the node id, or `client-…` when it is not a
    /// node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The bees.
    pub fn pool(&self) -> &Arc<BeePool> {
        &self.pool
    }

    /// The cell cache, when it is on.
    pub fn cache(&self) -> Option<&Arc<CellCache>> {
        self.cache.as_ref()
    }

    /// How this process takes part in distributed statements.
    pub fn swarm_config(&self) -> SwarmConfig {
        SwarmConfig {
            node: self.node.clone(),
            distribute: self.settings.distribute,
            poll: self.settings.poll,
            heartbeat: self.settings.heartbeat,
            deadline: self.settings.deadline,
            hot_writes: self.settings.hot_writes,
        }
    }

    /// A worker running the tasks other nodes assign to this node.
    pub fn worker(&self) -> Worker {
        Worker::new(
            self.node.clone(),
            self.lake.clone(),
            self.pool.clone(),
            self.cache.clone(),
        )
    }

    /// This node's colony temperature now.
    pub fn temperature(&self) -> Temperature {
        Temperature::of(self.pool.load())
    }

    /// The heartbeat this node writes next: its capacity, load and cache.
    pub fn heartbeat(&self, sequence: u64) -> Heartbeat {
        Heartbeat {
            load: NodeLoad::of(self.pool.load()),
            cache: self.cache.as_ref().map(|c| c.summary()).unwrap_or_default(),
            ..heartbeat_for(&self.node, sequence, &self.settings)
        }
    }

    /// Wait while this node is hot, as `hot_writes` says: return at once when it is not
    /// hot or writes ignore the temperature, wait (up to the deadline) when they block,
    /// fail when they error.
    ///
    /// # Errors
    /// [`Error::Overheated`] when the node is hot and writes error, or stays hot past the
    /// deadline.
    pub async fn cool_for_writes(&self) -> Result<Temperature> {
        wait_to_write(
            &self.pool,
            self.settings.hot_writes,
            self.settings.deadline,
            &self.node,
        )
        .await
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
            .with_swarm(Some(self.swarm_config()), self.cache.clone())
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
        let temperature = self.apiary.cool_for_writes().await?;
        let mut result = self
            .apiary
            .lake
            .write(&self.name, batches, WriteMode::Append)
            .await?;
        result.temperature = Some(temperature);
        Ok(result)
    }

    /// Replace the frame's rows with `batches` as one commit.
    ///
    /// # Errors
    /// As [`Lake::write`].
    pub async fn overwrite(&self, batches: &[RecordBatch]) -> Result<WriteResult> {
        let temperature = self.apiary.cool_for_writes().await?;
        let mut result = self
            .apiary
            .lake
            .write(&self.name, batches, WriteMode::Overwrite)
            .await?;
        result.temperature = Some(temperature);
        Ok(result)
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
