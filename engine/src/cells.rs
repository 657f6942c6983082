//! Cells as bytes: the one I/O seam of the engine.
//!
//! A cell is a Parquet file. The engine never opens files itself: it asks a [`ByteSource`]
//! for a cell's size and for byte ranges. Natively that can be a local file; inside a chamber
//! it is the host's `cells.read` import. [`CellStore`] adapts a byte source to the
//! `object_store` interface DataFusion's Parquet reader speaks, so projection and row-group
//! pruning decide which ranges are read, and only those bytes are ever requested.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// A cell handle, valid for the duration of one fragment.
pub type CellId = u32;

/// Random access to the bytes of the cells a fragment may read.
pub trait ByteSource: Send + Sync + fmt::Debug + 'static {
    /// Size of `cell` in bytes.
    ///
    /// # Errors
    /// A message saying why the cell cannot be reached.
    fn size(&self, cell: CellId) -> Result<u64, String>;

    /// The bytes of `cell` in `range` (the range lies within the cell).
    ///
    /// # Errors
    /// A message saying why the bytes cannot be read.
    fn read(&self, cell: CellId, range: Range<u64>) -> Result<Bytes, String>;
}

/// The directory under which cells appear to DataFusion: `cell/<id>.parquet`.
const CELL_DIR: &str = "cell";

/// The object path DataFusion uses for `cell`.
pub(crate) fn cell_path(cell: CellId) -> String {
    format!("{CELL_DIR}/{cell}.parquet")
}

pub(crate) fn parse_cell_path(path: &Path) -> Option<CellId> {
    path.as_ref()
        .strip_prefix(CELL_DIR)?
        .strip_prefix('/')?
        .strip_suffix(".parquet")?
        .parse()
        .ok()
}

/// A read-only `object_store` over a [`ByteSource`].
#[derive(Debug)]
pub(crate) struct CellStore {
    source: Arc<dyn ByteSource>,
    cells: Vec<(CellId, u64)>,
}

impl CellStore {
    pub(crate) fn new(source: Arc<dyn ByteSource>, cells: Vec<(CellId, u64)>) -> Self {
        Self { source, cells }
    }

    fn meta(&self, location: &Path) -> object_store::Result<(CellId, ObjectMeta)> {
        let not_found = || object_store::Error::NotFound {
            path: location.to_string(),
            source: "no such cell in this fragment".into(),
        };
        let id = parse_cell_path(location).ok_or_else(not_found)?;
        let size = match self.cells.iter().find(|(c, _)| *c == id) {
            Some((_, size)) => *size,
            None => self.source.size(id).map_err(|_| not_found())?,
        };
        Ok((id, object_meta(location.clone(), size)))
    }

    fn read(&self, id: CellId, range: Range<u64>) -> object_store::Result<Bytes> {
        self.source
            .read(id, range)
            .map_err(|message| object_store::Error::Generic {
                store: "apiary-cells",
                source: message.into(),
            })
    }
}

fn object_meta(location: Path, size: u64) -> ObjectMeta {
    ObjectMeta {
        location,
        last_modified: chrono::DateTime::UNIX_EPOCH,
        size,
        e_tag: None,
        version: None,
    }
}

fn read_only() -> object_store::Error {
    object_store::Error::NotSupported {
        source: "cells are read-only inside a fragment".into(),
    }
}

impl fmt::Display for CellStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CellStore({} cells)", self.cells.len())
    }
}

#[async_trait]
impl ObjectStore for CellStore {
    async fn put_opts(
        &self,
        _location: &Path,
        _payload: PutPayload,
        _opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(read_only())
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(read_only())
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let (id, meta) = self.meta(location)?;
        let range = match &options.range {
            Some(range) => range
                .as_range(meta.size)
                .map_err(|e| object_store::Error::Generic {
                    store: "apiary-cells",
                    source: Box::new(e),
                })?,
            None => 0..meta.size,
        };
        let payload = if options.head {
            stream::empty().boxed()
        } else {
            let bytes = self.read(id, range.clone())?;
            stream::once(async move { Ok(bytes) }).boxed()
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range,
            attributes: Attributes::default(),
        })
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let (id, _) = self.meta(location)?;
        ranges.iter().map(|r| self.read(id, r.clone())).collect()
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(read_only())).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let prefix = prefix.map(|p| p.as_ref().to_owned()).unwrap_or_default();
        let metas: Vec<_> = self
            .cells
            .iter()
            .map(|(id, size)| object_meta(Path::from(cell_path(*id)), *size))
            .filter(|m| m.location.as_ref().starts_with(&prefix))
            .map(Ok)
            .collect();
        stream::iter(metas).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let objects = self.list(prefix).collect::<Vec<_>>().await;
        Ok(ListResult {
            common_prefixes: Vec::new(),
            objects: objects.into_iter().collect::<object_store::Result<_>>()?,
        })
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(read_only())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_paths_round_trip() {
        assert_eq!(parse_cell_path(&Path::from(cell_path(42))), Some(42));
        assert_eq!(parse_cell_path(&Path::from("cell/x.parquet")), None);
        assert_eq!(parse_cell_path(&Path::from("other/1.parquet")), None);
    }
}
