//! The mason chamber guest: a wasm32-wasip2 component that runs one fragment per instance.
//!
//! It implements the `chamber` world on top of `apiary-engine`: cells are read through the
//! host's `cells` import (only the byte ranges DataFusion asks for), and each result batch
//! leaves through the `sink` import as the next chunk of an Arrow IPC stream. The host gives
//! every task a fresh instance, so nothing here outlives a task (a partial task the host
//! asks to merge every task's results does so within the same `execute`).

#![allow(missing_docs)] // the generated bindings carry no docs; the WIT does

#[allow(clippy::too_many_arguments)] // generated code
mod bindings;
#[cfg(target_arch = "wasm32")]
mod intrinsics;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use apiary_engine::arrow::datatypes::SchemaRef;
use apiary_engine::arrow::record_batch::RecordBatch;
use apiary_engine::{
    ByteSource, CellId, CellRef, EngineError, FragmentSink, FragmentTask, FunctionCaller,
    FunctionSignature, IpcChunker, KeyColumn, KeyRange, MergeKind, RowSlice, Stage, TableCells,
    decode_schema, default_namespace,
};
use bindings::apiary::chamber::types::{self, ChamberError, Summary, Task};
use bindings::apiary::chamber::{cells, functions, sink};

/// Cell bytes from the host.
#[derive(Debug)]
struct HostCells;

impl ByteSource for HostCells {
    fn size(&self, cell: CellId) -> Result<u64, String> {
        cells::size(cell)
    }

    fn read(&self, cell: CellId, range: Range<u64>) -> Result<bytes::Bytes, String> {
        cells::read(cell, range.start, range.end - range.start).map(bytes::Bytes::from)
    }
}

/// User-defined functions, run by the host in their own instances.
#[derive(Debug)]
struct HostFunctions;

impl FunctionCaller for HostFunctions {
    fn call(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        functions::call(name, args)
    }
}

/// Streams results to the host as IPC chunks.
#[derive(Default)]
struct HostSink {
    chunker: Option<IpcChunker>,
}

impl HostSink {
    fn emit(bytes: &[u8]) -> Result<(), EngineError> {
        if bytes.is_empty() {
            return Ok(());
        }
        sink::emit(bytes).map_err(EngineError::Io)
    }

    fn finish(self) -> Result<(), EngineError> {
        match self.chunker {
            Some(chunker) => Self::emit(&chunker.finish()?),
            None => Ok(()),
        }
    }
}

impl FragmentSink for HostSink {
    fn schema(&mut self, schema: &SchemaRef) -> Result<(), EngineError> {
        self.chunker = Some(IpcChunker::new(schema)?);
        Ok(())
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<(), EngineError> {
        let chunker = self
            .chunker
            .as_mut()
            .ok_or_else(|| EngineError::Internal("batch before schema".into()))?;
        Self::emit(&chunker.chunk(batch)?)
    }

    fn partial_done(&mut self) -> Result<Option<Vec<CellRef>>, EngineError> {
        // The partial stream ends here; a merge's answer would be a stream of its own.
        if let Some(chunker) = self.chunker.take() {
            Self::emit(&chunker.finish()?)?;
        }
        Ok(sink::partial_done().map(|inputs| inputs.into_iter().map(cell).collect()))
    }
}

/// The one place engine errors become WIT errors.
fn to_wit(err: EngineError) -> ChamberError {
    match err {
        EngineError::Sql(m) => ChamberError::Sql(m),
        EngineError::ResourcesExhausted(m) => ChamberError::ResourcesExhausted(m),
        EngineError::Io(m) => ChamberError::Io(m),
        other => ChamberError::Internal(other.to_string()),
    }
}

fn cell(c: types::Cell) -> CellRef {
    CellRef {
        id: c.id,
        size: c.size,
        slice: c.slice.map(|s| RowSlice {
            start: s.start,
            end: s.end,
            rows: s.rows,
        }),
    }
}

fn from_wit(task: Task) -> Result<FragmentTask, EngineError> {
    let tables = task
        .tables
        .into_iter()
        .map(|t| {
            Ok(TableCells {
                name: t.name,
                cells: t.cells.into_iter().map(cell).collect(),
                schema: if t.schema.is_empty() {
                    None
                } else {
                    Some(decode_schema(&t.schema)?)
                },
            })
        })
        .collect::<Result<_, EngineError>>()?;
    let functions = task
        .functions
        .iter()
        .map(|f| FunctionSignature::parse(&f.name, &f.args, &f.returns, &f.volatility))
        .collect::<Result<_, EngineError>>()?;
    let defaults = default_namespace();
    Ok(FragmentTask {
        functions,
        sql: task.sql,
        tables,
        memory_pool_bytes: task.memory_pool_bytes,
        batch_size: task.batch_size as usize,
        scratch_dir: (!task.scratch_dir.is_empty()).then(|| PathBuf::from(task.scratch_dir)),
        default_namespace: (
            non_empty(task.default_hive, defaults.0),
            non_empty(task.default_box, defaults.1),
        ),
        stage: match task.stage {
            types::Stage::Whole => Stage::Whole,
            types::Stage::Partial(split) => Stage::Partial { split },
            types::Stage::Keyed(range) => Stage::Keyed(KeyRange {
                columns: range
                    .columns
                    .into_iter()
                    .map(|k| KeyColumn {
                        table: k.table,
                        column: k.column,
                    })
                    .collect(),
                low: range.low,
                high: range.high,
            }),
            types::Stage::Merge(inputs) => Stage::Merge {
                inputs: inputs.into_iter().map(cell).collect(),
            },
        },
    })
}

fn non_empty(value: String, default: String) -> String {
    if value.is_empty() { default } else { value }
}

struct Chamber;

impl bindings::Guest for Chamber {
    fn execute(task: Task) -> Result<Summary, ChamberError> {
        let task = from_wit(task).map_err(to_wit)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| ChamberError::Internal(format!("runtime: {e}")))?;
        let mut sink = HostSink::default();
        let summary = runtime
            .block_on(apiary_engine::execute_fragment(
                &task,
                Arc::new(HostCells),
                Arc::new(HostFunctions),
                &mut sink,
            ))
            .map_err(to_wit)?;
        sink.finish().map_err(to_wit)?;
        Ok(Summary {
            rows: summary.rows,
            batches: summary.batches,
            pool_peak_bytes: summary.pool_peak_bytes,
            merge: summary.merge.map(|kind| match kind {
                MergeKind::Concatenate => types::MergeKind::Concatenate,
                MergeKind::FinalAggregate => types::MergeKind::FinalAggregate,
                MergeKind::TopK => types::MergeKind::TopK,
                MergeKind::Sort => types::MergeKind::Sort,
            }),
            sort_merge_joins: summary.sort_merge_joins,
            planning_micros: u64::try_from(summary.planning.as_micros()).unwrap_or(u64::MAX),
        })
    }
}

bindings::export!(Chamber with_types_in bindings);
