//! The cell cache: byte ranges of cells kept on local disk, least recently used out first.
//!
//! Cells never change once written (a cell's key holds a fresh uuid), so a range read from
//! the meadow can be kept and served again without asking storage. Chambers read a cell's
//! footer and the column chunks a query needs, and those ranges repeat from one query to
//! the next, so the cache keeps exactly the ranges read: a second read of the same range of
//! a cell makes no storage request, and a query over other columns fetches only what it
//! lacks. Each range is a file named by the SHA-256 of the lake, the cell key and the range,
//! so keys of different lakes or ranges cannot collide. The index lives in memory and is
//! rebuilt from the directory when a node starts (oldest files first). Writes go to a
//! temporary file and are renamed into place.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::swarm::heartbeat::CacheSummary;
use crate::{Error, Result};

/// Default size limit: 2 GiB, or a quarter of the free disk when that is less.
pub const DEFAULT_LIMIT: u64 = 2 << 30;

/// One cached range.
#[derive(Debug, Clone)]
struct Entry {
    bytes: u64,
    cell: String,
}

#[derive(Debug)]
struct Index {
    entries: LruCache<String, Entry>,
    bytes: u64,
}

/// A size-limited LRU cache of cell byte ranges on local disk.
#[derive(Debug)]
pub struct CellCache {
    dir: PathBuf,
    limit: u64,
    index: Mutex<Index>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The short, stable name of a cell in heartbeats: the first 16 hex digits of the SHA-256
/// of its key.
pub fn cell_tag(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))[..16].to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CellCache {
    /// Open (or create) the cache in `dir`, holding at most `limit` bytes, and index what
    /// an earlier run left there.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be created or read.
    pub fn open(dir: &Path, limit: u64) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((cell, _)) = name.split_once('-') else {
                // A temporary file an interrupted write left behind.
                let _ = fs::remove_file(entry.path());
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            let modified = meta.modified().ok();
            found.push((modified, name.clone(), cell.to_owned(), meta.len()));
        }
        found.sort();
        let mut index = Index {
            entries: LruCache::unbounded(),
            bytes: 0,
        };
        for (_, name, cell, bytes) in found {
            index.bytes += bytes;
            index.entries.put(name, Entry { bytes, cell });
        }
        let cache = Self {
            dir: dir.to_path_buf(),
            limit,
            index: Mutex::new(index),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        };
        cache.evict();
        Ok(cache)
    }

    /// The default limit for a cache in `dir`: [`DEFAULT_LIMIT`], or a quarter of the free
    /// space of the disk holding it when that is less.
    pub fn default_limit(dir: &Path) -> u64 {
        let Ok(disks) = sysinfo::Disks::new_with_refreshed_list() else {
            return DEFAULT_LIMIT;
        };
        let dir = dir
            .ancestors()
            .find_map(|d| d.canonicalize().ok())
            .unwrap_or_else(|| dir.to_path_buf());
        disks
            .iter()
            .filter(|d| dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())
            .map_or(DEFAULT_LIMIT, |d| {
                DEFAULT_LIMIT.min(d.available_space() / 4)
            })
    }

    fn file_name(lake: &str, key: &str, range: &Range<u64>) -> String {
        let mut digest = Sha256::new();
        for part in [lake, key] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part.as_bytes());
        }
        digest.update(range.start.to_le_bytes());
        digest.update(range.end.to_le_bytes());
        format!("{}-{}", cell_tag(key), hex(&digest.finalize()))
    }

    /// The cached bytes of `range` of cell `key` in `lake`, if held.
    pub fn get(&self, lake: &str, key: &str, range: &Range<u64>) -> Option<Bytes> {
        let name = Self::file_name(lake, key, range);
        let held = self
            .index
            .lock()
            .ok()
            .and_then(|mut index| index.entries.get(&name).map(|e| e.bytes));
        let bytes = held.and_then(|len| {
            fs::read(self.dir.join(&name))
                .ok()
                .filter(|b| b.len() as u64 == len)
        });
        match bytes {
            Some(bytes) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(Bytes::from(bytes))
            }
            None => {
                if held.is_some() {
                    self.forget(&name);
                }
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keep `bytes`, the contents of `range` of cell `key` in `lake`. A range larger than
    /// the whole cache is not kept; failures to write are logged, never raised: the cache
    /// only ever saves work.
    pub fn put(&self, lake: &str, key: &str, range: &Range<u64>, bytes: &Bytes) {
        let len = bytes.len() as u64;
        if len > self.limit {
            return;
        }
        let name = Self::file_name(lake, key, range);
        let path = self.dir.join(&name);
        let temp = self
            .dir
            .join(format!(".{}.{}", uuid::Uuid::new_v4().simple(), "part"));
        let written = fs::write(&temp, bytes).and_then(|()| fs::rename(&temp, &path));
        if let Err(err) = written {
            let _ = fs::remove_file(&temp);
            tracing::warn!(path = %path.display(), %err, "could not cache a cell range");
            return;
        }
        if let Ok(mut index) = self.index.lock() {
            let entry = Entry {
                bytes: len,
                cell: cell_tag(key),
            };
            if let Some(old) = index.entries.put(name, entry) {
                index.bytes -= old.bytes;
            }
            index.bytes += len;
        }
        self.evict();
    }

    fn forget(&self, name: &str) {
        if let Ok(mut index) = self.index.lock()
            && let Some(old) = index.entries.pop(name)
        {
            index.bytes -= old.bytes;
        }
    }

    fn evict(&self) {
        let Ok(mut index) = self.index.lock() else {
            return;
        };
        while index.bytes > self.limit {
            let Some((name, entry)) = index.entries.pop_lru() else {
                break;
            };
            index.bytes -= entry.bytes;
            let _ = fs::remove_file(self.dir.join(name));
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.index.lock().map_or(0, |i| i.bytes)
    }

    /// The size limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Reads served from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Reads the cache could not serve so far.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// What a heartbeat says about this cache: its size and the tags of the cells it holds
    /// bytes of, most recently used first.
    pub fn summary(&self) -> CacheSummary {
        let Ok(index) = self.index.lock() else {
            return CacheSummary::default();
        };
        let mut cells = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (_, entry) in index.entries.iter() {
            if cells.len() == CacheSummary::MAX_CELLS {
                break;
            }
            if seen.insert(entry.cell.as_str()) {
                cells.push(entry.cell.clone());
            }
        }
        CacheSummary {
            bytes: index.bytes,
            limit: self.limit,
            cells,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; n])
    }

    #[test]
    fn a_kept_range_is_served_again_and_other_keys_do_not_collide() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = CellCache::open(dir.path(), 1 << 20).expect("open");
        let range = 0..100;
        assert!(cache.get("lake-a", "t/cell_1.parquet", &range).is_none());
        cache.put("lake-a", "t/cell_1.parquet", &range, &bytes(100, 1));
        assert_eq!(
            cache.get("lake-a", "t/cell_1.parquet", &range),
            Some(bytes(100, 1))
        );
        // Same key in another lake, another range of the same cell: not the same entry.
        assert!(cache.get("lake-b", "t/cell_1.parquet", &range).is_none());
        assert!(cache.get("lake-a", "t/cell_1.parquet", &(0..99)).is_none());
        assert_eq!((cache.hits(), cache.misses()), (1, 3));
        assert_eq!(cache.summary().cells, vec![cell_tag("t/cell_1.parquet")]);
    }

    #[test]
    fn least_recently_used_ranges_leave_first_and_the_index_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = CellCache::open(dir.path(), 250).expect("open");
        cache.put("l", "a", &(0..100), &bytes(100, 1));
        cache.put("l", "b", &(0..100), &bytes(100, 2));
        assert!(cache.get("l", "a", &(0..100)).is_some()); // a is now the most recent
        cache.put("l", "c", &(0..100), &bytes(100, 3)); // evicts b
        assert_eq!(cache.bytes(), 200);
        assert!(cache.get("l", "b", &(0..100)).is_none());
        assert!(cache.get("l", "a", &(0..100)).is_some());
        drop(cache);
        let files = fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(files, 2);
        let reopened = CellCache::open(dir.path(), 250).expect("reopen");
        assert_eq!(reopened.bytes(), 200);
        assert_eq!(reopened.get("l", "c", &(0..100)), Some(bytes(100, 3)));
    }

    #[test]
    fn a_range_larger_than_the_cache_is_not_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = CellCache::open(dir.path(), 10).expect("open");
        cache.put("l", "a", &(0..100), &bytes(100, 1));
        assert_eq!(cache.bytes(), 0);
        assert!(cache.get("l", "a", &(0..100)).is_none());
    }
}
