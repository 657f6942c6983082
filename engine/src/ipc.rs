//! Arrow IPC framing for results crossing the chamber boundary.
//!
//! The guest turns each batch into the next chunk of one IPC stream (the first chunk also
//! carries the schema) and hands it to the host straight away, so a result never has to be
//! held whole inside the chamber. The host feeds the chunks to a stream decoder in order.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, GenericByteViewArray};
use arrow::buffer::Buffer;
use arrow::datatypes::{ByteViewType, DataType, SchemaRef};
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::EngineError;

/// Encodes batches as successive chunks of one Arrow IPC stream.
pub struct IpcChunker {
    writer: StreamWriter<Vec<u8>>,
}

impl IpcChunker {
    /// Start a stream for `schema`. The schema message is part of the first chunk.
    ///
    /// # Errors
    /// If the schema cannot be encoded.
    pub fn new(schema: &SchemaRef) -> Result<Self, EngineError> {
        Ok(Self {
            writer: StreamWriter::try_new(Vec::new(), schema)?,
        })
    }

    /// Encode one batch and return every byte produced since the previous chunk.
    ///
    /// # Errors
    /// If the batch cannot be encoded.
    pub fn chunk(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, EngineError> {
        self.writer.write(&compact_views(batch)?)?;
        Ok(std::mem::take(self.writer.get_mut()))
    }

    /// Close the stream and return its last bytes (the end-of-stream marker and anything
    /// not yet taken, such as the schema of an empty result).
    ///
    /// # Errors
    /// If the stream cannot be finished.
    pub fn finish(mut self) -> Result<Vec<u8>, EngineError> {
        self.writer.finish()?;
        Ok(std::mem::take(self.writer.get_mut()))
    }
}

/// Data buffers of a string or binary view column this many bytes beyond what its views
/// use are copied down before the column is encoded.
const VIEW_SLACK_BYTES: usize = 64 << 10;

/// `batch` with each string and binary view column that holds buffers far larger than its
/// strings copied into buffers of just those strings.
///
/// IPC writes a view column's data buffers whole. A batch sliced from a larger result (an
/// aggregation emits its groups in slices of one array) would otherwise carry the strings
/// of every other slice too, once per batch.
fn compact_views(batch: &RecordBatch) -> Result<RecordBatch, EngineError> {
    let mut columns: Option<Vec<ArrayRef>> = None;
    for (i, column) in batch.columns().iter().enumerate() {
        let compacted = match column.data_type() {
            DataType::Utf8View => compacted(column.as_string_view()),
            DataType::BinaryView => compacted(column.as_binary_view()),
            _ => None,
        };
        if let Some(compacted) = compacted {
            columns.get_or_insert_with(|| batch.columns().to_vec())[i] = compacted;
        }
    }
    match columns {
        Some(columns) => Ok(RecordBatch::try_new(batch.schema(), columns)?),
        None => Ok(batch.clone()),
    }
}

/// `array` copied down to its own strings, when its buffers hold far more.
fn compacted<T: ByteViewType + ?Sized>(array: &GenericByteViewArray<T>) -> Option<ArrayRef> {
    let held: usize = array.data_buffers().iter().map(Buffer::len).sum();
    let used = array.total_buffer_bytes_used();
    (held > used.saturating_mul(2) + VIEW_SLACK_BYTES).then(|| Arc::new(array.gc()) as ArrayRef)
}

/// Decode the chunks of one IPC stream, in order, into its schema and batches.
///
/// # Errors
/// If the chunks do not form a valid, complete Arrow IPC stream.
pub fn decode_ipc_chunks<I>(chunks: I) -> Result<(Option<SchemaRef>, Vec<RecordBatch>), EngineError>
where
    I: IntoIterator<Item = Vec<u8>>,
{
    let mut decoder = StreamDecoder::new();
    let mut batches = Vec::new();
    for chunk in chunks {
        let mut buffer = Buffer::from(chunk);
        while !buffer.is_empty() {
            if let Some(batch) = decoder.decode(&mut buffer)? {
                batches.push(batch);
            }
        }
    }
    decoder.finish()?;
    let schema = decoder
        .schema()
        .or_else(|| batches.first().map(|b| b.schema()));
    Ok((schema, batches))
}

/// A schema alone as an Arrow IPC stream with no batches.
///
/// # Errors
/// If the schema cannot be encoded.
pub fn encode_schema(schema: &SchemaRef) -> Result<Vec<u8>, EngineError> {
    IpcChunker::new(schema)?.finish()
}

/// The schema of an IPC stream made by [`encode_schema`].
///
/// # Errors
/// If the bytes are not an IPC stream with a schema.
pub fn decode_schema(bytes: &[u8]) -> Result<SchemaRef, EngineError> {
    decode_ipc_chunks([bytes.to_vec()])?
        .0
        .ok_or_else(|| EngineError::Io("an IPC stream without a schema".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BinaryViewArray, Int32Array, StringViewArray};
    use arrow::datatypes::{Field, Schema};

    /// Ten rows sliced from 10,000 rows of 100-byte strings, plus an integer column.
    fn sliced_batch() -> RecordBatch {
        let strings: Vec<String> = (0..10_000).map(|i| format!("{i:0>100}")).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("text", DataType::Utf8View, false),
            Field::new("bytes", DataType::BinaryView, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from_iter_values(0..10_000)),
                Arc::new(StringViewArray::from_iter_values(&strings)),
                Arc::new(BinaryViewArray::from_iter_values(
                    strings.iter().map(String::as_bytes),
                )),
            ],
        )
        .expect("batch");
        batch.slice(5_000, 10)
    }

    #[test]
    fn a_slice_of_view_columns_is_encoded_without_the_other_rows_strings() {
        let batch = sliced_batch();
        let mut chunker = IpcChunker::new(&batch.schema()).expect("chunker");
        let mut chunks = vec![chunker.chunk(&batch).expect("chunk")];
        chunks.push(chunker.finish().expect("finish"));
        let bytes: usize = chunks.iter().map(Vec::len).sum();
        // Ten 100-byte strings twice, their views, the ids and the framing; the buffers the
        // slice shares with the other 9,990 rows hold 2 MB.
        assert!(bytes < 8 << 10, "{bytes} bytes for ten rows");

        let (schema, batches) = decode_ipc_chunks(chunks).expect("decode");
        assert_eq!(schema, Some(batch.schema()));
        assert_eq!(batches, vec![batch.clone()]);
        let text = batches[0].column(1).as_string_view();
        assert_eq!(text.value(0), format!("{:0>100}", 5_000));
    }

    #[test]
    fn view_columns_that_use_most_of_their_buffers_are_encoded_as_they_are() {
        let batch = sliced_batch();
        let whole = RecordBatch::try_new(
            batch.schema(),
            vec![
                Arc::new(Int32Array::from_iter_values(0..3)),
                Arc::new(StringViewArray::from_iter_values(["a", "b", "c"])),
                Arc::new(BinaryViewArray::from_iter_values([b"d", b"e", b"f"])),
            ],
        )
        .expect("batch");
        let compacted = compact_views(&whole).expect("compact");
        for (before, after) in whole.columns().iter().zip(compacted.columns()) {
            assert_eq!(
                before.to_data().buffers()[0].as_ptr(),
                after.to_data().buffers()[0].as_ptr()
            );
        }
        let sliced = compact_views(&batch).expect("compact");
        assert_eq!(sliced, batch);
        let text = sliced.column(1).as_string_view();
        assert_eq!(
            text.data_buffers().iter().map(Buffer::len).sum::<usize>(),
            1_000
        );
    }
}
