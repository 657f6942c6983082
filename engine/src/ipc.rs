//! Arrow IPC framing for results crossing the chamber boundary.
//!
//! The guest turns each batch into the next chunk of one IPC stream (the first chunk also
//! carries the schema) and hands it to the host straight away, so a result never has to be
//! held whole inside the chamber. The host feeds the chunks to a stream decoder in order.

use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
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
        self.writer.write(batch)?;
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
