//! Spill files in the fragment's scratch directory, with plain blocking I/O.
//!
//! DataFusion's default spill files read back through `tokio::fs`, which needs a blocking
//! thread pool: a chamber has one thread and no pool. These files are read and written
//! synchronously instead, which is what a single-threaded chamber wants anyway. Together
//! they may hold at most a fixed number of bytes, so a runaway sort fills its quota, not
//! the host's disk.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SpillFile, SpillWriter, TempFileFactory};
use futures::Stream;

/// Bytes read from a spill file per chunk.
const READ_CHUNK: usize = 1 << 20;

/// Creates spill files in one directory, within a quota shared by all of them.
#[derive(Debug)]
pub(crate) struct ScratchSpill {
    dir: PathBuf,
    next: AtomicU64,
    used: Arc<AtomicU64>,
    quota: u64,
}

impl ScratchSpill {
    /// Spill files in `dir`, at most `quota` bytes in all.
    pub(crate) fn new(dir: PathBuf, quota: u64) -> Self {
        Self {
            dir,
            next: AtomicU64::new(0),
            used: Arc::new(AtomicU64::new(0)),
            quota,
        }
    }
}

impl TempFileFactory for ScratchSpill {
    fn create_temp_file(&self, _description: &str) -> Result<Arc<dyn SpillFile>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("spill-{n}.arrow"));
        File::create(&path).map_err(|e| io_error(&path, e))?;
        Ok(Arc::new(ScratchFile {
            path,
            size: Arc::new(AtomicU64::new(0)),
            used: self.used.clone(),
            quota: self.quota,
        }))
    }
}

fn io_error(path: &Path, err: std::io::Error) -> DataFusionError {
    DataFusionError::Execution(format!("spill file {}: {err}", path.display()))
}

/// One spill file; deleted when dropped.
struct ScratchFile {
    path: PathBuf,
    size: Arc<AtomicU64>,
    used: Arc<AtomicU64>,
    quota: u64,
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.used
            .fetch_sub(self.size.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

impl SpillFile for ScratchFile {
    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn size(&self) -> Option<u64> {
        Some(self.size.load(Ordering::Relaxed))
    }

    fn read_stream(&self) -> Result<Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>> {
        let mut file = File::open(&self.path).map_err(|e| io_error(&self.path, e))?;
        let path = self.path.clone();
        let chunks = std::iter::from_fn(move || {
            let mut buf = vec![0; READ_CHUNK];
            match file.read(&mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some(Ok(Bytes::from(buf)))
                }
                Err(e) => Some(Err(io_error(&path, e))),
            }
        });
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    fn open_writer(&self) -> Result<Box<dyn SpillWriter>> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| io_error(&self.path, e))?;
        Ok(Box::new(ScratchWriter {
            file: BufWriter::new(file),
            size: self.size.clone(),
            used: self.used.clone(),
            quota: self.quota,
        }))
    }
}

struct ScratchWriter {
    file: BufWriter<File>,
    size: Arc<AtomicU64>,
    used: Arc<AtomicU64>,
    quota: u64,
}

impl Write for ScratchWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let len = buf.len() as u64;
        let used = self.used.fetch_add(len, Ordering::Relaxed) + len;
        if used > self.quota {
            self.used.fetch_sub(len, Ordering::Relaxed);
            return Err(std::io::Error::other(format!(
                "the fragment's spill files would pass their quota of {} MiB",
                self.quota >> 20
            )));
        }
        let n = self.file.write(buf)?;
        // Give back what was not written.
        self.used.fetch_sub(len - n as u64, Ordering::Relaxed);
        self.size.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl SpillWriter for ScratchWriter {
    fn finish(&mut self) -> Result<()> {
        self.file
            .flush()
            .map_err(|e| DataFusionError::Execution(format!("flushing a spill file: {e}")))
    }
}
