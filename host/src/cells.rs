//! Cells on the local disk, served to chambers by byte range.
//!
//! [`CellFiles`] is the host's [`ByteSource`] over a list of local Parquet files: cell `i` is
//! the `i`-th file. Every read is counted, so tests and `EXPLAIN ANALYZE` can tell how many
//! bytes really crossed into a chamber. [`MeadowCells`] serves cells of the lake the same
//! way, through the node's [cell cache](crate::swarm::CellCache) when it has one, and counts
//! the bytes it had to fetch from storage.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use apiary_engine::{ByteSource, CellId, CellRef};
use bytes::Bytes;

use crate::swarm::CellCache;
use crate::{Error, Meadow, Result};

/// Counts the reads served to chambers.
#[derive(Debug, Default)]
pub struct ReadCounter {
    bytes: AtomicU64,
    calls: AtomicU64,
}

impl ReadCounter {
    /// Bytes served so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Read calls served so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn add(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// A set of local Parquet files served as cells `0..n`.
#[derive(Debug)]
pub struct CellFiles {
    files: Vec<(PathBuf, File, u64)>,
    counter: Arc<ReadCounter>,
}

impl CellFiles {
    /// Open `paths` as cells, in order.
    ///
    /// # Errors
    /// [`Error::Io`] naming the first file that cannot be opened.
    pub fn open<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Result<Self> {
        let mut files = Vec::new();
        for path in paths {
            let path = path.as_ref().to_path_buf();
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            files.push((path, file, size));
        }
        Ok(Self {
            files,
            counter: Arc::default(),
        })
    }

    /// The cell handles, in the order the files were given.
    pub fn cells(&self) -> Vec<CellRef> {
        (0..self.files.len())
            .map(|i| CellRef::whole(i as CellId, self.files[i].2))
            .collect()
    }

    /// The counter of reads served from these files.
    pub fn counter(&self) -> Arc<ReadCounter> {
        self.counter.clone()
    }

    fn file(&self, cell: CellId) -> std::result::Result<&(PathBuf, File, u64), String> {
        self.files
            .get(cell as usize)
            .ok_or_else(|| format!("cell {cell} is not part of this fragment"))
    }
}

impl ByteSource for CellFiles {
    fn size(&self, cell: CellId) -> std::result::Result<u64, String> {
        Ok(self.file(cell)?.2)
    }

    fn read(&self, cell: CellId, range: Range<u64>) -> std::result::Result<Bytes, String> {
        let (path, file, size) = self.file(cell)?;
        if range.start > range.end || range.end > *size {
            return Err(format!(
                "cell {cell}: range {range:?} is outside its {size} bytes"
            ));
        }
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        file.read_exact_at(&mut buf, range.start)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.counter.add(buf.len() as u64);
        Ok(Bytes::from(buf))
    }
}

/// Cells in the meadow, served to a chamber by byte range.
#[derive(Debug)]
pub(crate) struct MeadowCells {
    meadow: Meadow,
    runtime: tokio::runtime::Handle,
    cells: Vec<(String, u64)>,
    cache: Option<Arc<CellCache>>,
    fetched: Arc<ReadCounter>,
}

impl MeadowCells {
    /// Cells `cells` (key, size) of `meadow`, cell `i` being the `i`-th.
    pub(crate) fn new(
        meadow: Meadow,
        cells: Vec<(String, u64)>,
        cache: Option<Arc<CellCache>>,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Internal(format!("queries need a tokio runtime: {e}")))?;
        Ok(Self {
            meadow,
            runtime,
            cells,
            cache,
            fetched: Arc::default(),
        })
    }

    /// Reads that went to storage (the cache could not serve them).
    pub(crate) fn fetched(&self) -> Arc<ReadCounter> {
        self.fetched.clone()
    }

    /// Key and size of cell `id`.
    pub(crate) fn cell(&self, id: CellId) -> Option<(String, u64)> {
        self.cells.get(id as usize).cloned()
    }
}

impl ByteSource for MeadowCells {
    fn size(&self, cell: CellId) -> std::result::Result<u64, String> {
        self.cells
            .get(cell as usize)
            .map(|c| c.1)
            .ok_or_else(|| format!("cell {cell} is not part of this query"))
    }

    fn read(&self, cell: CellId, range: Range<u64>) -> std::result::Result<Bytes, String> {
        let (key, _) = self
            .cells
            .get(cell as usize)
            .ok_or_else(|| format!("cell {cell} is not part of this query"))?;
        let lake = self.meadow.uri();
        if let Some(bytes) = self.cache.as_ref().and_then(|c| c.get(lake, key, &range)) {
            return Ok(bytes);
        }
        let bytes = match self.meadow.read_local(key, &range) {
            Some(read) => read,
            None => self
                .runtime
                .block_on(self.meadow.get_range(key, range.clone())),
        }
        .map_err(|e| e.to_string())?;
        self.fetched.add(bytes.len() as u64);
        if let Some(cache) = &self.cache {
            cache.put(lake, key, &range, &bytes);
        }
        Ok(bytes)
    }
}
