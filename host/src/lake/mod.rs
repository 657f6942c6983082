//! The lake: namespaces, frames, their ledgers, the write path and vacuum, over a meadow.
//!
//! [`Lake`] is the handle a node opens on a lake URI. All committed state lives in the
//! meadow; a `Lake` holds nothing another node could disagree with, so any number of
//! processes can open the same lake and write to it concurrently.

mod ledger;
mod meadow;
mod registry;
mod vacuum;
mod write;

use std::time::Duration;

use apiary_engine::arrow::datatypes::Schema;
use apiary_engine::arrow::record_batch::RecordBatch;
use apiary_engine::lake::{
    Action, DEFAULT_BOX, DEFAULT_HIVE, FrameRef, FrameSchema, FrameState, LakeError, LedgerEntry,
    ledger_key,
};
use bytes::Bytes;

pub use meadow::{Meadow, S3Options};
pub use registry::{FrameEntry, FunctionEntry, RegistryState};
pub use vacuum::VacuumReport;
pub use write::{WriteMode, WriteOptions, WriteResult};

use registry::{Change, Registry};

use crate::{Error, Result};

/// A handle on one lake.
#[derive(Debug)]
pub struct Lake {
    meadow: Meadow,
    registry: Registry,
    writer: String,
    options: WriteOptions,
}

impl Lake {
    /// Open (or start) the lake at `uri`; see [`Meadow::open`] for the URIs understood.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad URI, [`Error::Storage`] if the meadow cannot be reached.
    pub async fn open(uri: &str) -> Result<Self> {
        Self::open_with(uri, &S3Options::default()).await
    }

    /// [`Lake::open`] with options for an S3 lake (see [`S3Options`]).
    ///
    /// # Errors
    /// As [`Lake::open`].
    pub async fn open_with(uri: &str, s3: &S3Options) -> Result<Self> {
        let meadow = Meadow::open_with(uri, s3)?;
        let registry = Registry::new(meadow.clone());
        registry.newest(None).await.map_err(|e| meadow.explain(e))?;
        Ok(Self {
            meadow,
            registry,
            writer: format!("pid-{}", std::process::id()),
            options: WriteOptions::default(),
        })
    }

    /// Use `options` for writes through this handle.
    pub fn with_write_options(mut self, options: WriteOptions) -> Self {
        self.options = options;
        self
    }

    /// Name this handle's commits after `writer` (a node id).
    pub fn with_writer(mut self, writer: impl Into<String>) -> Self {
        self.writer = writer.into();
        self
    }

    /// The meadow this lake lives in.
    pub fn meadow(&self) -> &Meadow {
        &self.meadow
    }

    /// The newest registry state.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when the registry cannot be read.
    pub async fn registry(&self) -> Result<RegistryState> {
        self.registry.newest(None).await
    }

    /// Create hive `hive`.
    ///
    /// # Errors
    /// [`Error::Lake`] for an invalid name, [`Error::AlreadyExists`] unless `if_not_exists`.
    pub async fn create_hive(&self, hive: &str, if_not_exists: bool) -> Result<()> {
        self.registry
            .change(Change::CreateHive {
                hive: hive.to_owned(),
                if_not_exists,
            })
            .await
            .map(drop)
    }

    /// Create box `box_name` in `hive`.
    ///
    /// # Errors
    /// [`Error::Lake`] for an invalid name, [`Error::NotFound`] for a missing hive,
    /// [`Error::AlreadyExists`] unless `if_not_exists`.
    pub async fn create_box(&self, hive: &str, box_name: &str, if_not_exists: bool) -> Result<()> {
        self.registry
            .change(Change::CreateBox {
                hive: hive.to_owned(),
                box_name: box_name.to_owned(),
                if_not_exists,
            })
            .await
            .map(drop)
    }

    /// Create frame `name` (1-, 2- or 3-part, defaults `default.default`) with `schema`,
    /// partitioned by `partition_by`.
    ///
    /// # Errors
    /// [`Error::Lake`] for an invalid name, schema or partitioning; [`Error::NotFound`] for
    /// a missing hive or box; [`Error::AlreadyExists`] if the frame exists (with a different
    /// schema even when `if_not_exists`).
    pub async fn create_frame(
        &self,
        name: &str,
        schema: &Schema,
        partition_by: &[&str],
        if_not_exists: bool,
    ) -> Result<FrameRef> {
        let frame = FrameRef::parse(name, DEFAULT_HIVE, DEFAULT_BOX)?;
        let schema = FrameSchema::from_arrow(schema);
        let partition_by: Vec<String> = partition_by.iter().map(|s| (*s).to_owned()).collect();
        // Check the schema and partitioning before touching the registry.
        Action::create_frame(schema.clone(), partition_by.clone())?;
        let state = self
            .registry
            .change(Change::CreateFrame {
                frame: frame.clone(),
                schema,
                partition_by,
                if_not_exists,
            })
            .await?;
        let entry = state
            .frame(&frame)
            .ok_or_else(|| Error::NotFound(format!("frame `{frame}`")))?;
        self.ensure_created(entry).await?;
        Ok(frame)
    }

    /// Drop hive `hive` (it must hold no frames).
    ///
    /// # Errors
    /// [`Error::NotFound`] unless `if_exists`; [`Error::Config`] if it holds frames.
    pub async fn drop_hive(&self, hive: &str, if_exists: bool) -> Result<()> {
        self.registry
            .change(Change::DropHive {
                hive: hive.to_owned(),
                if_exists,
            })
            .await
            .map(drop)
    }

    /// Drop box `hive.box_name` (it must hold no frames).
    ///
    /// # Errors
    /// [`Error::NotFound`] unless `if_exists`; [`Error::Config`] if it holds frames.
    pub async fn drop_box(&self, hive: &str, box_name: &str, if_exists: bool) -> Result<()> {
        self.registry
            .change(Change::DropBox {
                hive: hive.to_owned(),
                box_name: box_name.to_owned(),
                if_exists,
            })
            .await
            .map(drop)
    }

    /// Drop frame `name`: its registry entry goes; its cells stay for vacuum.
    ///
    /// # Errors
    /// [`Error::NotFound`] unless `if_exists`.
    pub async fn drop_frame(&self, name: &str, if_exists: bool) -> Result<()> {
        let frame = FrameRef::parse(name, DEFAULT_HIVE, DEFAULT_BOX)?;
        self.registry
            .change(Change::DropFrame { frame, if_exists })
            .await
            .map(drop)
    }

    /// Store a function module's bytes under their SHA-256 (`_functions/<hash>.wasm`) and
    /// return the hash. Storing the same bytes again writes nothing.
    ///
    /// # Errors
    /// [`Error::Storage`] when the meadow refuses the write.
    pub async fn put_function_module(&self, bytes: Bytes) -> Result<String> {
        let hash = crate::udf::module_hash(&bytes);
        self.meadow
            .put_if_absent(&crate::udf::module_key(&hash), bytes)
            .await?;
        Ok(hash)
    }

    /// The bytes of the function module with SHA-256 `hash`, checked against it.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the module is missing, [`Error::Corrupt`] when its bytes
    /// do not match the hash.
    pub async fn function_module(&self, hash: &str) -> Result<Bytes> {
        let key = crate::udf::module_key(hash);
        let bytes = self.meadow.get(&key).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "function module `{key}` is missing from the lake; register the function again"
            ))
        })?;
        if crate::udf::module_hash(&bytes) != hash {
            return Err(Error::Corrupt(format!(
                "function module `{key}` does not match its hash; register the function again"
            )));
        }
        Ok(bytes)
    }

    /// Record `functions` in the registry, replacing any of the same name, in one version.
    ///
    /// # Errors
    /// [`Error::Storage`] when the registry cannot be written.
    pub async fn put_functions(&self, functions: Vec<(String, FunctionEntry)>) -> Result<()> {
        self.registry
            .change(Change::PutFunctions { functions })
            .await
            .map(drop)
    }

    /// Remove the function `name` from the registry (its module stays in the lake, for
    /// statements still running it).
    ///
    /// # Errors
    /// [`Error::NotFound`] unless `if_exists`.
    pub async fn drop_function(&self, name: &str, if_exists: bool) -> Result<()> {
        self.registry
            .change(Change::DropFunction {
                name: name.to_owned(),
                if_exists,
            })
            .await
            .map(drop)
    }

    /// The frame `name`'s registry entry and newest state.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown frame, [`Error::Lake`] for a damaged ledger.
    pub async fn frame(&self, name: &str) -> Result<(FrameEntry, FrameState)> {
        let frame = FrameRef::parse(name, DEFAULT_HIVE, DEFAULT_BOX)?;
        let registry = self.registry.newest(None).await?;
        let entry = registry
            .frame(&frame)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("frame `{frame}` does not exist")))?;
        let state = match ledger::load_state(&self.meadow, &entry.dir, None).await {
            Err(Error::Lake(LakeError::EmptyLedger)) => {
                self.ensure_created(&entry).await?;
                ledger::load_state(&self.meadow, &entry.dir, None).await?
            }
            other => other?,
        };
        Ok((entry, state))
    }

    /// Write `batches` to frame `name`.
    ///
    /// # Errors
    /// [`Error::Lake`] for input that does not fit the frame (nothing is written then),
    /// [`Error::NotFound`] for an unknown frame, [`Error::Storage`] on I/O failures.
    pub async fn write(
        &self,
        name: &str,
        batches: &[RecordBatch],
        mode: WriteMode,
    ) -> Result<WriteResult> {
        let (entry, state) = self.frame(name).await?;
        write::write(
            &self.meadow,
            &entry.dir,
            &self.writer,
            state,
            batches,
            mode,
            self.options,
        )
        .await
    }

    /// Start a write to frame `name` that takes batches a few at a time and commits them
    /// all as one ledger entry: for loads larger than memory. Cells are written as batches
    /// arrive; if the write is dropped before [`FrameWrite::commit`], nothing is committed
    /// and vacuum removes them.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown frame, [`Error::Lake`] for a damaged ledger.
    pub async fn begin_write(&self, name: &str) -> Result<FrameWrite<'_>> {
        let (entry, state) = self.frame(name).await?;
        Ok(FrameWrite {
            lake: self,
            dir: entry.dir,
            state,
            cells: Vec::new(),
            rows: 0,
            started: std::time::Instant::now(),
        })
    }

    /// Delete cells no state references, dropped frames and stale query directories older
    /// than `grace`.
    ///
    /// # Errors
    /// [`Error::Storage`] on I/O failures.
    pub async fn vacuum(&self, grace: Duration) -> Result<VacuumReport> {
        let registry = self.registry.newest(None).await?;
        let mut live = Vec::new();
        for (hive, boxes) in &registry.hives {
            for (box_name, frames) in boxes {
                for frame in frames.keys() {
                    if let Ok((entry, state)) =
                        self.frame(&format!("{hive}.{box_name}.{frame}")).await
                    {
                        live.push((entry.dir, state));
                    }
                }
            }
        }
        vacuum::vacuum(&self.meadow, &registry, &live, grace).await
    }

    /// [`Lake::create_hive`] in conventional terms: a hive is a database.
    ///
    /// # Errors
    /// As [`Lake::create_hive`].
    pub async fn create_database(&self, name: &str, if_not_exists: bool) -> Result<()> {
        self.create_hive(name, if_not_exists).await
    }

    /// [`Lake::create_box`] in conventional terms: a box is a schema.
    ///
    /// # Errors
    /// As [`Lake::create_box`].
    pub async fn create_schema(
        &self,
        database: &str,
        name: &str,
        if_not_exists: bool,
    ) -> Result<()> {
        self.create_box(database, name, if_not_exists).await
    }

    /// [`Lake::create_frame`] in conventional terms: a frame is a table.
    ///
    /// # Errors
    /// As [`Lake::create_frame`].
    pub async fn create_table(
        &self,
        name: &str,
        schema: &Schema,
        partition_by: &[&str],
        if_not_exists: bool,
    ) -> Result<FrameRef> {
        self.create_frame(name, schema, partition_by, if_not_exists)
            .await
    }

    /// [`Lake::drop_frame`] in conventional terms.
    ///
    /// # Errors
    /// As [`Lake::drop_frame`].
    pub async fn drop_table(&self, name: &str, if_exists: bool) -> Result<()> {
        self.drop_frame(name, if_exists).await
    }

    /// Write ledger version 0 for a registered frame, if nobody has yet.
    async fn ensure_created(&self, entry: &FrameEntry) -> Result<()> {
        let create = LedgerEntry {
            version: 0,
            committed_at_ms: 0,
            writer: self.writer.clone(),
            action: Action::create_frame(entry.schema.clone(), entry.partition_by.clone())?,
        };
        self.meadow
            .put_if_absent(
                &format!("{}/{}", entry.dir, ledger_key(0)),
                Bytes::from(create.to_json()?),
            )
            .await?;
        Ok(())
    }
}

/// A write in progress: see [`Lake::begin_write`].
#[derive(Debug)]
pub struct FrameWrite<'a> {
    lake: &'a Lake,
    dir: String,
    state: FrameState,
    cells: Vec<apiary_engine::lake::CellMeta>,
    rows: u64,
    started: std::time::Instant,
}

impl FrameWrite<'_> {
    /// Validate and write `batches` as cells (not yet visible to readers).
    ///
    /// # Errors
    /// [`Error::Lake`] for input that does not fit the frame (nothing more is written),
    /// [`Error::Storage`] on I/O failures.
    pub async fn add(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let cells = write::stage(
            &self.lake.meadow,
            &self.dir,
            &self.state,
            batches,
            self.lake.options,
        )
        .await?;
        self.rows += cells.iter().map(|c| c.rows).sum::<u64>();
        self.cells.extend(cells);
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Commit every cell written so far as one ledger entry.
    ///
    /// # Errors
    /// [`Error::CommitContention`] when the commit keeps losing races, [`Error::Storage`]
    /// on I/O failures.
    pub async fn commit(self, mode: WriteMode) -> Result<WriteResult> {
        write::commit(
            &self.lake.meadow,
            &self.dir,
            &self.lake.writer,
            self.state,
            self.cells,
            mode,
            self.started,
        )
        .await
    }
}
