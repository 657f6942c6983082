//! The write path: from record batches to committed cells.
//!
//! Incoming batches are matched to the frame's schema by column name (safe widening casts,
//! nulls for missing nullable columns; everything else is refused before anything is
//! written), split by partition values, cut into cells of the leafcutter size, written as
//! Parquet (LZ4, statistics) and committed as one ledger entry: `AddCells` for an append,
//! `RewriteCells` for an overwrite. Cells are written before the commit; if the commit
//! fails, they are orphans that vacuum removes.

use std::time::{Duration, Instant};

use apiary_engine::arrow::array::{Array, AsArray};
use apiary_engine::arrow::compute::concat_batches;
use apiary_engine::arrow::record_batch::RecordBatch;
use apiary_engine::lake::{
    Action, CellMeta, CellSizing, FrameState, MAX_PARTITIONS_PER_WRITE, column_stats, plan_write,
    split_by_partition_limited,
};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;

use super::ledger::{self, Committed};
use super::meadow::Meadow;
use crate::{Error, Result, cell_writer_properties};

/// Append or replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Add the rows to the frame.
    Append,
    /// Replace every row of the frame with these, in one commit. Cells appended by others
    /// before the overwrite commits are removed too: after it, the frame holds exactly the
    /// rows written.
    Overwrite,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteResult {
    /// The ledger version the write committed.
    pub version: u64,
    /// Cells written.
    pub cells: usize,
    /// Rows written.
    pub rows: u64,
    /// Bytes of Parquet written.
    pub bytes: u64,
    /// Wall time of the whole write.
    pub duration: Duration,
    /// Commit attempts (1 unless other writers raced).
    pub attempts: u32,
    /// The writing node's colony temperature before the write, when the write went
    /// through a node (`Apiary`), not the bare lake.
    pub temperature: Option<crate::swarm::Temperature>,
}

/// Settings of the write path.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Cell sizes.
    pub sizing: CellSizing,
    /// Largest number of partitions one write may touch.
    pub max_partitions: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            sizing: CellSizing::for_budget(1 << 30),
            max_partitions: MAX_PARTITIONS_PER_WRITE,
        }
    }
}

pub(crate) async fn write(
    meadow: &Meadow,
    dir: &str,
    writer: &str,
    state: FrameState,
    batches: &[RecordBatch],
    mode: WriteMode,
    options: WriteOptions,
) -> Result<WriteResult> {
    let started = Instant::now();
    let cells = stage(meadow, dir, &state, batches, options).await?;
    commit(meadow, dir, writer, state, cells, mode, started).await
}

/// Validate `batches` against the frame, then write them as cells (not yet committed).
/// Nothing is written for bad input.
pub(crate) async fn stage(
    meadow: &Meadow,
    dir: &str,
    state: &FrameState,
    batches: &[RecordBatch],
    options: WriteOptions,
) -> Result<Vec<CellMeta>> {
    let frame_schema = std::sync::Arc::new(state.schema.to_arrow());
    let mut conformed = Vec::with_capacity(batches.len());
    for batch in batches {
        let plan = plan_write(&frame_schema, &batch.schema())?;
        conformed.push(plan.apply(batch)?);
    }
    let all = concat_batches(&frame_schema, &conformed)
        .map_err(|e| Error::Internal(format!("concatenating conformed batches: {e}")))?;
    let parts = split_by_partition_limited(&all, &state.partition_by, options.max_partitions)?;

    let mut cells = Vec::new();
    for (partition, batch) in parts {
        let estimate = estimated_bytes(&batch);
        for range in options.sizing.cut(batch.num_rows(), estimate) {
            let slice = batch.slice(range.start, range.end - range.start);
            let name = format!("cell_{}.parquet", uuid::Uuid::new_v4().simple());
            let path = if partition.is_empty() {
                name
            } else {
                format!("{}/{name}", partition.path())
            };
            let bytes = encode(&slice)?;
            let size = bytes.len() as u64;
            meadow.put(&format!("{dir}/{path}"), bytes).await?;
            cells.push(CellMeta {
                path,
                rows: slice.num_rows() as u64,
                bytes: size,
                partition: partition.clone(),
                stats: column_stats(&slice),
            });
        }
    }
    Ok(cells)
}

/// Commit staged `cells` as one ledger entry.
pub(crate) async fn commit(
    meadow: &Meadow,
    dir: &str,
    writer: &str,
    state: FrameState,
    cells: Vec<CellMeta>,
    mode: WriteMode,
    started: Instant,
) -> Result<WriteResult> {
    let rows = cells.iter().map(|c| c.rows).sum();
    let bytes = cells.iter().map(|c| c.bytes).sum();
    let count = cells.len();
    let Committed { state, attempts } =
        ledger::commit(meadow, dir, writer, Some(state), |newest| {
            Ok(match mode {
                WriteMode::Append => Action::AddCells {
                    cells: cells.clone(),
                },
                WriteMode::Overwrite => Action::overwrite(newest, cells.clone()),
            })
        })
        .await?;
    Ok(WriteResult {
        version: state.version,
        cells: count,
        rows,
        bytes,
        duration: started.elapsed(),
        attempts,
        temperature: None,
    })
}

/// The bytes `batch`'s rows hold, for cutting it into cells. Not the memory its arrays
/// point at: a slice, a sort or a partition split of string views shares the whole of the
/// original buffers, which would count them once per piece and cut thousands of tiny cells.
fn estimated_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|column| {
            let in_place = column.to_data().get_slice_memory_size();
            let outside = if let Some(views) = column.as_string_view_opt() {
                views.total_buffer_bytes_used()
            } else if let Some(views) = column.as_binary_view_opt() {
                views.total_buffer_bytes_used()
            } else {
                0
            };
            in_place.map_or(column.get_array_memory_size(), |bytes| bytes + outside) as u64
        })
        .sum()
}

fn encode(batch: &RecordBatch) -> Result<Bytes> {
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(cell_writer_properties()))
        .map_err(|e| Error::Internal(format!("parquet writer: {e}")))?;
    writer
        .write(batch)
        .and_then(|_| writer.close().map(|_| ()))
        .map_err(|e| Error::Internal(format!("writing a cell: {e}")))?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use apiary_engine::arrow::array::{StringViewArray, UInt32Array};
    use apiary_engine::arrow::compute::take_record_batch;
    use apiary_engine::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_reordered_piece_of_string_views_counts_its_own_rows_only() {
        let strings: Vec<String> = (0..10_000)
            .map(|i| format!("a string long enough to live outside its view {i:06}"))
            .collect();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringViewArray::from_iter_values(&strings))],
        )
        .expect("batch");
        let whole = estimated_bytes(&batch);
        // 10,000 views of 16 bytes and about 53 bytes of string each.
        assert!((600_000..800_000).contains(&whole), "{whole}");
        // A tenth of the rows, reordered: they still point into the whole data buffer.
        let indices = UInt32Array::from_iter_values((0..1_000).rev().map(|i| i * 10));
        let piece = take_record_batch(&batch, &indices).expect("take");
        assert!(piece.get_array_memory_size() as u64 > whole / 2);
        let estimate = estimated_bytes(&piece);
        assert!(
            (whole / 12..whole / 8).contains(&estimate),
            "{estimate} of {whole}"
        );
    }
}
