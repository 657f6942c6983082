//! Loading files into a frame: CSV, Parquet and newline-delimited JSON.
//!
//! Every file is checked before anything is written (it exists, its format is known, its
//! columns fit the frame), then read in batches that are written as cells as they come, and
//! committed as one ledger entry at the end: a load is all or nothing, and a malformed line
//! halfway through commits nothing. Memory stays bounded by the batch size, not the files.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apiary_engine::arrow::datatypes::{Schema, SchemaRef};
use apiary_engine::arrow::error::ArrowError;
use apiary_engine::arrow::record_batch::RecordBatch;
use arrow::csv::ReaderBuilder as CsvReaderBuilder;
use arrow::csv::reader::Format as CsvFormat;
use arrow::json::ReaderBuilder as JsonReaderBuilder;
use arrow::json::reader::infer_json_schema_from_seekable;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{Error, Lake, Result, WriteMode, WriteResult};

/// Rows per batch read from a file.
const BATCH_ROWS: usize = 64 * 1024;
/// Rows gathered before they are written as cells.
const CHUNK_ROWS: usize = 1 << 20;

/// A file format `apiary load` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// Newline-delimited JSON objects.
    Json,
}

impl FileFormat {
    /// The format a file name implies.
    ///
    /// # Errors
    /// [`Error::Input`] for an extension that is not `.csv`, `.parquet`/`.pq` or
    /// `.json`/`.jsonl`/`.ndjson`.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        match ext.as_str() {
            "csv" => Ok(Self::Csv),
            "parquet" | "pq" => Ok(Self::Parquet),
            "json" | "jsonl" | "ndjson" => Ok(Self::Json),
            _ => Err(Error::Input(format!(
                "{}: cannot tell the format from the name; use .csv, .parquet or .json (newline-delimited), or pass --format",
                path.display()
            ))),
        }
    }
}

/// How to load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Create the frame from the first file's columns when it does not exist (and its hive
    /// and box).
    pub create: bool,
    /// Partition columns for a frame created by the load.
    pub partition_by: Vec<String>,
    /// Replace the frame's rows instead of appending.
    pub overwrite: bool,
    /// The format of every file; `None` infers it from each name.
    pub format: Option<FileFormat>,
}

/// How far a load has come.
#[derive(Debug, Clone, Copy)]
pub struct LoadProgress {
    /// Rows read so far.
    pub rows: u64,
    /// Bytes of input consumed so far (approximate for Parquet).
    pub bytes: u64,
    /// Bytes of all input files.
    pub total_bytes: u64,
}

/// What a finished load did.
#[derive(Debug, Clone)]
pub struct LoadSummary {
    /// The frame's fully qualified name.
    pub frame: String,
    /// Whether the load created the frame.
    pub created: bool,
    /// The commit.
    pub write: WriteResult,
    /// Files read.
    pub files: usize,
    /// Wall time.
    pub elapsed: Duration,
}

/// Load `files` into frame `name` of `lake`, reporting progress to `progress` as batches
/// are read.
///
/// # Errors
/// [`Error::Input`] for missing or unreadable files, unknown formats, malformed rows (with
/// the file, line and column), columns that do not fit the frame, or a missing frame without
/// `create`. Nothing is committed then.
pub async fn load(
    lake: &Lake,
    files: &[PathBuf],
    name: &str,
    options: &LoadOptions,
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<LoadSummary> {
    let started = Instant::now();
    if files.is_empty() {
        return Err(Error::Input("load needs at least one file".into()));
    }
    let mut inputs = Vec::with_capacity(files.len());
    let mut total_bytes = 0;
    for path in files {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::Input(format!("{}: {e}; nothing was loaded", path.display())))?;
        if !meta.is_file() {
            return Err(Error::Input(format!(
                "{}: not a file; nothing was loaded",
                path.display()
            )));
        }
        let format = match options.format {
            Some(format) => format,
            None => FileFormat::from_path(path)?,
        };
        total_bytes += meta.len();
        inputs.push((path.clone(), format, meta.len()));
    }

    let (frame_schema, created) = match lake.frame(name).await {
        Ok((_, state)) => (Arc::new(state.schema.to_arrow()), false),
        Err(Error::NotFound(message)) if !options.create => {
            return Err(Error::NotFound(format!(
                "{message}; add --create to create it from the file's columns"
            )));
        }
        Err(Error::NotFound(_)) => {
            let (path, format, _) = &inputs[0];
            let schema = file_schema(path, *format)?;
            let partition_by: Vec<&str> = options.partition_by.iter().map(String::as_str).collect();
            let (hive, box_name) = apiary_engine::default_namespace();
            let frame = apiary_engine::lake::FrameRef::parse(name, &hive, &box_name)?;
            lake.create_hive(&frame.hive, true).await?;
            lake.create_box(&frame.hive, &frame.box_name, true).await?;
            lake.create_frame(name, &schema, &partition_by, false)
                .await?;
            (Arc::new(schema), true)
        }
        Err(other) => return Err(other),
    };
    if !created && !options.partition_by.is_empty() {
        return Err(Error::Input(format!(
            "--partition-by applies only when the load creates the frame; `{name}` already exists"
        )));
    }

    let mut write = lake.begin_write(name).await?;
    let mut done_bytes = 0;
    let mut chunk: Vec<RecordBatch> = Vec::new();
    let mut chunk_rows = 0;
    let mut rows = 0u64;
    for (path, format, size) in &inputs {
        let counter = Arc::new(AtomicU64::new(0));
        let (batches, parse_schema) = open(path, *format, &frame_schema, counter.clone())?;
        for batch in batches {
            let batch = batch.map_err(|e| read_error(path, *format, &parse_schema, e))?;
            rows += batch.num_rows() as u64;
            chunk_rows += batch.num_rows();
            chunk.push(batch);
            if chunk_rows >= CHUNK_ROWS {
                write
                    .add(&std::mem::take(&mut chunk))
                    .await
                    .map_err(|e| in_file(path, e))?;
                chunk_rows = 0;
            }
            let read = match format {
                FileFormat::Parquet => 0,
                _ => counter.load(Ordering::Relaxed).min(*size),
            };
            progress(LoadProgress {
                rows,
                bytes: done_bytes + read,
                total_bytes,
            });
        }
        done_bytes += size;
        progress(LoadProgress {
            rows,
            bytes: done_bytes,
            total_bytes,
        });
    }
    if !chunk.is_empty() {
        write.add(&chunk).await?;
    }
    let mode = if options.overwrite {
        WriteMode::Overwrite
    } else {
        WriteMode::Append
    };
    tracing::info!(rows, files = inputs.len(), "committing the load");
    let write = write.commit(mode).await?;
    let (hive, box_name) = apiary_engine::default_namespace();
    let frame = apiary_engine::lake::FrameRef::parse(name, &hive, &box_name)?;
    Ok(LoadSummary {
        frame: frame.to_string(),
        created,
        write,
        files: inputs.len(),
        elapsed: started.elapsed(),
    })
}

fn in_file(path: &Path, err: Error) -> Error {
    match err {
        Error::Lake(e) => Error::Input(format!("{}: {e}; nothing was loaded", path.display())),
        other => other,
    }
}

/// The columns of a file, as a new frame would get them.
fn file_schema(path: &Path, format: FileFormat) -> Result<Schema> {
    let file = open_file(path)?;
    let schema = match format {
        FileFormat::Csv => CsvFormat::default()
            .with_header(true)
            .infer_schema(file, None)
            .map(|(schema, _)| schema),
        FileFormat::Json => {
            infer_json_schema_from_seekable(BufReader::new(file), None).map(|(schema, _)| schema)
        }
        FileFormat::Parquet => ParquetRecordBatchReaderBuilder::try_new(file)
            .map(|b| b.schema().as_ref().clone())
            .map_err(|e| ArrowError::ParquetError(e.to_string())),
    };
    schema.map_err(|e| Error::Input(format!("{}: {e}", path.display())))
}

fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

type Batches = Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>>>;

/// A reader of `path` producing batches in the frame's column types, and the columns it
/// parses in the file's order.
fn open(
    path: &Path,
    format: FileFormat,
    frame: &SchemaRef,
    count: Arc<AtomicU64>,
) -> Result<(Batches, SchemaRef)> {
    let file = open_file(path)?;
    let config = |e: String| Error::Input(format!("{}: {e}; nothing was loaded", path.display()));
    match format {
        FileFormat::Csv => {
            // Parse each column with the frame's type for it, in the file's column order.
            let mut header = open_file(path)?;
            let (file_columns, _) = CsvFormat::default()
                .with_header(true)
                .infer_schema(&mut header, Some(1))
                .map_err(|e| config(e.to_string()))?;
            let fields = file_columns
                .fields()
                .iter()
                .map(|f| {
                    frame.field_with_name(f.name()).cloned().map_err(|_| {
                        config(format!(
                            "column `{}` is not in the frame (its columns: {})",
                            f.name(),
                            column_list(frame)
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let parse = Arc::new(Schema::new(fields));
            let reader = CsvReaderBuilder::new(parse.clone())
                .with_header(true)
                .with_batch_size(BATCH_ROWS)
                .build(Counting { inner: file, count })
                .map_err(|e| config(e.to_string()))?;
            Ok((Box::new(reader), parse))
        }
        FileFormat::Json => {
            let mut file = file;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| config(e.to_string()))?;
            let reader = JsonReaderBuilder::new(frame.clone())
                .with_batch_size(BATCH_ROWS)
                .with_strict_mode(true)
                .build(BufReader::new(Counting { inner: file, count }))
                .map_err(|e| config(e.to_string()))?;
            Ok((Box::new(reader), frame.clone()))
        }
        FileFormat::Parquet => {
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| config(e.to_string()))?
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| config(e.to_string()))?;
            Ok((Box::new(reader), frame.clone()))
        }
    }
}

fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A reading error as the user should see it: the file, the line and the column.
fn read_error(path: &Path, format: FileFormat, frame: &Schema, err: ArrowError) -> Error {
    let text = err.to_string();
    if format == FileFormat::Csv
        && let Some(detail) = csv_detail(&text, frame)
    {
        return Error::Input(format!("{}: {detail}; nothing was loaded", path.display()));
    }
    Error::Input(format!("{}: {text}; nothing was loaded", path.display()))
}

/// Rewrite arrow's CSV parse error ("Error while parsing value 'x' as type 'Int64' for column
/// 1 at line 3") as "line 3, column 2 (`price`): `x` is not a valid Int64".
fn csv_detail(text: &str, frame: &Schema) -> Option<String> {
    let number_after = |marker: &str| -> Option<usize> {
        let rest = &text[text.find(marker)? + marker.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let between = |start: &str, end: &str| -> Option<&str> {
        let rest = &text[text.find(start)? + start.len()..];
        Some(&rest[..rest.find(end)?])
    };
    if let (Some(column), Some(line)) = (number_after("for column "), number_after(" at line ")) {
        let value = between("parsing value '", "'").unwrap_or("?");
        let ty = between("as type '", "'").unwrap_or("?");
        let name = frame
            .fields()
            .get(column)
            .map(|f| format!(" (`{}`)", f.name()))
            .unwrap_or_default();
        // Arrow counts data rows; the header is the file's first line.
        return Some(format!(
            "line {}, column {}{name}: '{value}' is not a valid {ty}",
            line + 1,
            column + 1
        ));
    }
    if let Some(line) = number_after("fields for line ") {
        let counts = text.split(&format!("line {line}, ")).nth(1).unwrap_or("");
        return Some(format!("line {line}: wrong number of columns ({counts})"));
    }
    None
}
