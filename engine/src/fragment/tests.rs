use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;

use super::*;
use crate::{IpcChunker, decode_ipc_chunks};

/// Cells held in memory, counting the bytes read.
#[derive(Debug, Default)]
struct MemCells {
    cells: Mutex<HashMap<CellId, Bytes>>,
    bytes_read: AtomicU64,
}

impl MemCells {
    fn add(&self, id: CellId, batch: &RecordBatch) -> CellRef {
        let mut buf = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), None).expect("writer");
        writer.write(batch).expect("write");
        writer.close().expect("close");
        let size = buf.len() as u64;
        self.cells
            .lock()
            .expect("lock")
            .insert(id, Bytes::from(buf));
        CellRef::whole(id, size)
    }
}

impl MemCells {
    fn add_bytes(&self, id: CellId, bytes: Vec<u8>) -> CellRef {
        let size = bytes.len() as u64;
        self.cells
            .lock()
            .expect("lock")
            .insert(id, Bytes::from(bytes));
        CellRef::whole(id, size)
    }
}

impl ByteSource for MemCells {
    fn size(&self, cell: CellId) -> Result<u64, String> {
        let cells = self.cells.lock().expect("lock");
        cells
            .get(&cell)
            .map(|b| b.len() as u64)
            .ok_or_else(|| format!("no cell {cell}"))
    }

    fn read(&self, cell: CellId, range: Range<u64>) -> Result<Bytes, String> {
        let cells = self.cells.lock().expect("lock");
        let bytes = cells.get(&cell).ok_or_else(|| format!("no cell {cell}"))?;
        self.bytes_read
            .fetch_add(range.end - range.start, Ordering::Relaxed);
        Ok(bytes.slice(range.start as usize..range.end as usize))
    }
}

/// Collects batches in memory.
#[derive(Default)]
struct Collect {
    schema: Option<SchemaRef>,
    batches: Vec<RecordBatch>,
}

impl FragmentSink for Collect {
    fn schema(&mut self, schema: &SchemaRef) -> Result<(), EngineError> {
        self.schema = Some(schema.clone());
        Ok(())
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<(), EngineError> {
        self.batches.push(batch.clone());
        Ok(())
    }
}

/// A partial task's sink that, asked for its partial result, answers with `inputs`, as
/// the host does for the task that finishes last, and collects the merged answer apart.
struct MergeHereSink {
    partial: Collect,
    inputs: Option<Vec<CellRef>>,
    merged: Option<Collect>,
}

impl FragmentSink for MergeHereSink {
    fn schema(&mut self, schema: &SchemaRef) -> Result<(), EngineError> {
        self.merged
            .as_mut()
            .unwrap_or(&mut self.partial)
            .schema(schema)
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<(), EngineError> {
        self.merged
            .as_mut()
            .unwrap_or(&mut self.partial)
            .batch(batch)
    }

    fn partial_done(&mut self) -> Result<Option<Vec<CellRef>>, EngineError> {
        self.merged = Some(Collect::default());
        Ok(self.inputs.take())
    }
}

/// Run `partial` again as the task that finishes last, merging `inputs` (every task's
/// partial result) in its own session: its partial rows must be the ones it gave before,
/// and its merged answer is returned, formatted.
async fn merge_here(
    partial: &FragmentTask,
    cells: &Arc<MemCells>,
    inputs: &[CellRef],
    rows_before: &[RecordBatch],
) -> Result<String, EngineError> {
    let scratch = tempfile::tempdir().expect("scratch");
    let mut partial = partial.clone();
    if partial.scratch_dir.is_some() {
        partial.scratch_dir = Some(scratch.path().to_path_buf());
    }
    let mut sink = MergeHereSink {
        partial: Collect::default(),
        inputs: Some(inputs.to_vec()),
        merged: None,
    };
    execute_fragment(
        &partial,
        cells.clone(),
        Arc::new(crate::NoFunctions),
        &mut sink,
    )
    .await?;
    let rows = |batches: &[RecordBatch]| {
        sorted_lines(&pretty_format_batches(batches).expect("format").to_string())
    };
    assert_eq!(rows(&sink.partial.batches), rows(rows_before));
    let merged = sink.merged.expect("asked for its partial result");
    assert!(merged.schema.is_some(), "the merged answer has a schema");
    Ok(pretty_format_batches(&merged.batches)
        .expect("format")
        .to_string())
}

fn sales(start: i64, rows: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, true),
    ]));
    let ids: Vec<i64> = (start..start + rows).collect();
    let regions: Vec<&str> = ids
        .iter()
        .map(|i| ["north", "south", "east"][(*i % 3) as usize])
        .collect();
    let amounts: Vec<Option<f64>> = ids
        .iter()
        .map(|i| {
            if i % 10 == 0 {
                None
            } else {
                Some(*i as f64 * 0.5)
            }
        })
        .collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(regions)),
            Arc::new(Float64Array::from(amounts)),
        ],
    )
    .expect("batch")
}

fn task(sql: &str, tables: Vec<TableCells>) -> FragmentTask {
    FragmentTask {
        sql: sql.to_owned(),
        tables,
        memory_pool_bytes: 64 << 20,
        batch_size: 8192,
        scratch_dir: None,
        default_namespace: default_namespace(),
        stage: Stage::Whole,
        functions: Vec::new(),
    }
}

async fn run(task: &FragmentTask, cells: Arc<MemCells>) -> Result<String, EngineError> {
    Ok(run_summarised(task, cells).await?.1)
}

/// The fragment's summary and its answer, formatted.
async fn run_summarised(
    task: &FragmentTask,
    cells: Arc<MemCells>,
) -> Result<(FragmentSummary, String), EngineError> {
    let mut sink = Collect::default();
    let summary = execute_fragment(task, cells, Arc::new(crate::NoFunctions), &mut sink).await?;
    let answer = pretty_format_batches(&sink.batches)
        .expect("format")
        .to_string();
    Ok((summary, answer))
}

fn two_cells() -> (Arc<MemCells>, TableCells) {
    let cells = Arc::new(MemCells::default());
    let a = cells.add(1, &sales(0, 100));
    let b = cells.add(2, &sales(100, 50));
    (
        cells,
        TableCells {
            name: "__scan__".into(),
            cells: vec![a, b],
            schema: None,
        },
    )
}

#[tokio::test]
async fn aggregates_over_several_cells_as_one_table() {
    let (cells, table) = two_cells();
    let out = run(
        &task(
            "SELECT region, count(*) AS n, sum(amount) AS total, min(id) AS lo, max(id) AS hi \
             FROM __scan__ GROUP BY region ORDER BY region",
            vec![table],
        ),
        cells,
    )
    .await
    .expect("query");
    let expected = "\
+--------+----+--------+----+-----+
| region | n  | total  | lo | hi  |
+--------+----+--------+----+-----+
| east   | 50 | 1687.5 | 2  | 149 |
| north  | 50 | 1687.5 | 0  | 147 |
| south  | 50 | 1687.5 | 1  | 148 |
+--------+----+--------+----+-----+";
    assert_eq!(out, expected);
}

#[tokio::test]
async fn joins_two_tables_in_one_fragment() {
    let cells = Arc::new(MemCells::default());
    let a = cells.add(1, &sales(0, 30));
    let b = cells.add(2, &sales(20, 30));
    let out = run(
        &task(
            "SELECT count(*) AS n, sum(l.id) AS s FROM left_side l JOIN right_side r ON l.id = r.id",
            vec![
                TableCells { name: "left_side".into(), cells: vec![a], schema: None },
                TableCells { name: "right_side".into(), cells: vec![b], schema: None },
            ],
        ),
        cells,
    )
    .await
    .expect("query");
    // ids 20..30 overlap: 10 rows, sum 245.
    assert!(out.contains("| 10 | 245 |"), "{out}");
}

#[tokio::test]
async fn sql_errors_keep_datafusion_text() {
    let (cells, table) = two_cells();
    let err = run(&task("SELECT nope FROM __scan__", vec![table]), cells)
        .await
        .expect_err("unknown column");
    match err {
        EngineError::Sql(message) => assert!(message.contains("nope"), "{message}"),
        other => panic!("expected a SQL error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_sort_that_cannot_spill_exhausts_a_tiny_pool() {
    let cells = Arc::new(MemCells::default());
    let cell = cells.add(1, &sales(0, 200_000));
    let mut t = task(
        "SELECT * FROM t ORDER BY region, amount DESC",
        vec![TableCells {
            name: "t".into(),
            cells: vec![cell],
            schema: None,
        }],
    );
    t.memory_pool_bytes = 256 << 10;
    let err = run(&t, cells).await.expect_err("pool too small");
    assert!(matches!(err, EngineError::ResourcesExhausted(_)), "{err:?}");
}

#[tokio::test]
async fn a_sort_larger_than_its_pool_spills_to_scratch_and_cleans_up() {
    let cells = Arc::new(MemCells::default());
    let cell = cells.add(1, &sales(0, 200_000));
    let scratch = tempfile::tempdir().expect("scratch");
    let table = || TableCells {
        name: "t".into(),
        cells: vec![cell],
        schema: None,
    };
    let sql = "SELECT id, region FROM t ORDER BY region, amount DESC, id LIMIT 3 OFFSET 100000";
    let expected = run(&task(sql, vec![table()]), cells.clone())
        .await
        .expect("with a big pool");
    let mut t = task(
        sql.replace(" LIMIT 3 OFFSET 100000", "").as_str(),
        vec![table()],
    );
    t.memory_pool_bytes = 4 << 20;
    t.scratch_dir = Some(scratch.path().to_path_buf());
    let mut sink = Collect::default();
    let summary = execute_fragment(&t, cells.clone(), Arc::new(crate::NoFunctions), &mut sink)
        .await
        .expect("a sort that spills");
    assert_eq!(summary.rows, 200_000);
    assert!(summary.pool_peak_bytes <= 4 << 20);
    // The same rows as the unspilled sort, in the same order.
    let all = arrow::compute::concat_batches(&sink.schema.expect("schema"), &sink.batches)
        .expect("concat");
    let window = pretty_format_batches(&[all.slice(100_000, 3)])
        .expect("format")
        .to_string();
    assert_eq!(window, expected);
    let left = std::fs::read_dir(scratch.path()).expect("scratch").count();
    assert_eq!(left, 0, "spill files are removed when the fragment ends");
}

#[tokio::test]
async fn spilling_stops_at_its_quota() {
    let cells = Arc::new(MemCells::default());
    let cell = cells.add(1, &sales(0, 400_000));
    let scratch = tempfile::tempdir().expect("scratch");
    let mut t = task(
        "SELECT * FROM t ORDER BY region, amount DESC, id",
        vec![TableCells {
            name: "t".into(),
            cells: vec![cell],
            schema: None,
        }],
    );
    // The quota is 8 pools: 1 MiB of pool cannot spill 400k sorted rows (about 12 MiB).
    t.memory_pool_bytes = 1 << 20;
    t.scratch_dir = Some(scratch.path().to_path_buf());
    let err = run(&t, cells).await.expect_err("over the quota");
    assert!(err.to_string().contains("quota"), "{err}");
}

/// A fragment over two tables of `rows` sales each, `a` and `b`.
fn two_tables(cells: &MemCells, rows: i64) -> Vec<TableCells> {
    let a = cells.add(1, &sales(0, rows));
    let b = cells.add(2, &sales(rows / 2, rows));
    ["a", "b"]
        .into_iter()
        .zip([a, b])
        .map(|(name, cell)| TableCells {
            name: name.into(),
            cells: vec![cell],
            schema: None,
        })
        .collect()
}

#[tokio::test]
async fn joins_too_big_for_their_pool_run_again_as_sort_merge_joins_that_spill() {
    let cells = Arc::new(MemCells::default());
    let tables = two_tables(&cells, 200_000);
    let scratch = tempfile::tempdir().expect("scratch");
    // An inner join, a left join, and EXISTS / NOT EXISTS with a filter beside the key
    // (as TPC-H Q21 has), each with a build side of about 6 MB.
    for sql in [
        "SELECT a.region, count(*), sum(b.amount) FROM a JOIN b ON a.id = b.id \
         GROUP BY a.region ORDER BY a.region",
        "SELECT count(*), count(b.region), sum(b.amount), max(a.region), sum(a.amount) \
         FROM a LEFT JOIN b ON a.id = b.id",
        "SELECT a.region, count(*) FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.id = a.id \
         AND b.region <> a.region) GROUP BY a.region ORDER BY a.region",
        "SELECT a.region, count(*) FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.id = a.id \
         AND b.amount > a.amount) GROUP BY a.region ORDER BY a.region",
    ] {
        let (summary, expected) = run_summarised(&task(sql, tables.clone()), cells.clone())
            .await
            .expect("hash joins in a roomy pool");
        assert!(!summary.sort_merge_joins, "{sql}: hash joins fit 64 MiB");

        let mut small = task(sql, tables.clone());
        small.memory_pool_bytes = 4 << 20;
        let err = run(&small, cells.clone())
            .await
            .expect_err("no scratch to spill to");
        assert!(
            matches!(err, EngineError::ResourcesExhausted(_)),
            "{sql}: {err:?}"
        );

        small.scratch_dir = Some(scratch.path().to_path_buf());
        let (summary, answer) = run_summarised(&small, cells.clone())
            .await
            .unwrap_or_else(|e| panic!("{sql}: sort-merge joins that spill: {e}"));
        assert!(
            summary.sort_merge_joins,
            "{sql}: the hash joins did not fit 4 MiB"
        );
        assert!(summary.pool_peak_bytes <= 4 << 20, "{sql}");
        assert_eq!(answer, expected, "{sql}");
        let left = std::fs::read_dir(scratch.path()).expect("scratch").count();
        assert_eq!(left, 0, "{sql}: spill files are removed");
    }
}

/// A cell of one `id` column holding `ids`, and `amount` = `id` / 10.
fn ids_cell(cells: &MemCells, cell: CellId, name: &str, ids: Vec<i64>) -> TableCells {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let amounts: Vec<f64> = ids.iter().map(|i| *i as f64 / 10.0).collect();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Float64Array::from(amounts)),
        ],
    )
    .expect("batch");
    TableCells {
        name: name.into(),
        cells: vec![cells.add(cell, &batch)],
        schema: None,
    }
}

#[tokio::test]
async fn a_join_indexes_its_build_side_by_key_where_the_key_range_fits_its_share() {
    let cells = Arc::new(MemCells::default());
    // 100 keys spread over 0..=495,000 (a density of 0.0002), probed by 20,000 rows of
    // which every 200th matches one.
    let keys = ids_cell(&cells, 1, "dim", (0..100).map(|i| i * 5_000).collect());
    let probes = ids_cell(&cells, 2, "fact", (0..20_000).map(|i| i * 25).collect());
    let sql = "SELECT count(*) AS n, sum(f.amount) AS total, min(d.id) AS lo, max(d.id) AS hi \
               FROM fact f JOIN dim d ON f.id = d.id";
    let slots_bytes = 4 * 495_001;

    // A 1 GiB pool allows a 4 MiB array (its 128th, at most 2^20 slots): the range fits.
    let mut roomy = task(sql, vec![keys.clone(), probes.clone()]);
    roomy.memory_pool_bytes = 1 << 30;
    let (summary, indexed) = run_summarised(&roomy, cells.clone())
        .await
        .expect("an indexed join");
    assert!(
        summary.pool_peak_bytes >= slots_bytes,
        "the array of the key range is reserved: {} bytes",
        summary.pool_peak_bytes
    );

    // A 64 MiB pool allows 131,072 slots: the join hashes its 100 keys instead.
    let mut small = task(sql, vec![keys, probes]);
    small.memory_pool_bytes = 64 << 20;
    let (summary, hashed) = run_summarised(&small, cells).await.expect("a hashed join");
    assert!(
        summary.pool_peak_bytes < slots_bytes,
        "no array of the key range: {} bytes",
        summary.pool_peak_bytes
    );

    // 0, 5,000, ..., 495,000: 100 matches, each amount a tenth of its key.
    for answer in [&indexed, &hashed] {
        assert!(
            answer.contains("| 100 | 2475000.0 | 0  | 495000 |"),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn reading_one_column_fetches_a_fraction_of_the_cell() {
    let cells = Arc::new(MemCells::default());
    let cell = cells.add(1, &sales(0, 200_000));
    let t = task(
        "SELECT max(id) FROM t",
        vec![TableCells {
            name: "t".into(),
            cells: vec![cell],
            schema: None,
        }],
    );
    let out = run(&t, cells.clone()).await.expect("query");
    assert!(out.contains("199999"), "{out}");
    let read = cells.bytes_read.load(Ordering::Relaxed);
    assert!(read < cell.size / 2, "read {read} of {} bytes", cell.size);
}

#[test]
fn ipc_chunks_round_trip() {
    let batch = sales(0, 10);
    let mut chunker = IpcChunker::new(&batch.schema()).expect("chunker");
    let chunks = vec![
        chunker.chunk(&batch).expect("chunk"),
        chunker.chunk(&batch.slice(2, 3)).expect("chunk"),
        chunker.finish().expect("finish"),
    ];
    let (schema, batches) = decode_ipc_chunks(chunks).expect("decode");
    assert_eq!(schema.expect("schema"), batch.schema());
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0], batch);
    assert_eq!(batches[1], batch.slice(2, 3));
}

#[test]
fn an_empty_result_still_has_a_schema() {
    let batch = sales(0, 1);
    let chunker = IpcChunker::new(&batch.schema()).expect("chunker");
    let (schema, batches) = decode_ipc_chunks([chunker.finish().expect("finish")]).expect("decode");
    assert_eq!(schema.expect("schema"), batch.schema());
    assert!(batches.is_empty());
}

#[tokio::test]
async fn qualified_names_and_empty_tables_with_a_schema() {
    let (cells, table) = two_cells();
    let empty = TableCells {
        name: "other.empty".into(),
        cells: Vec::new(),
        schema: Some(sales(0, 1).schema()),
    };
    let scan = TableCells {
        name: "north.sales.orders".into(),
        ..table
    };
    let mut t = task(
        "SELECT (SELECT count(*) FROM north.sales.orders) AS a, \
         (SELECT count(*) FROM sales.orders) AS b, (SELECT count(*) FROM orders) AS c, \
         (SELECT count(*) FROM default.other.empty) AS d",
        vec![scan, empty],
    );
    t.default_namespace = ("north".into(), "sales".into());
    let err = run(&t, cells.clone())
        .await
        .expect_err("no default.other in north");
    assert!(err.to_string().contains("empty"), "{err}");
    t.sql = "SELECT (SELECT count(*) FROM north.sales.orders) AS a, \
             (SELECT count(*) FROM sales.orders) AS b, (SELECT count(*) FROM orders) AS c, \
             (SELECT count(*) FROM north.other.empty) AS d"
        .into();
    t.tables[1].name = "north.other.empty".into();
    let out = run(&t, cells).await.expect("query");
    assert!(out.contains("| 150 | 150 | 150 | 0 |"), "{out}");
}

#[test]
fn schemas_round_trip_through_ipc() {
    let schema = sales(0, 1).schema();
    let bytes = crate::encode_schema(&schema).expect("encode");
    assert_eq!(crate::decode_schema(&bytes).expect("decode"), schema);
    assert!(crate::decode_schema(b"junk").is_err());
}

/// Six cells of `sales`, 40 rows each, in one table.
fn six_cells() -> (Arc<MemCells>, Vec<CellRef>) {
    let cells = Arc::new(MemCells::default());
    let refs = (0..6)
        .map(|i| cells.add(i, &sales(i64::from(i) * 40, 40)))
        .collect();
    (cells, refs)
}

fn table_of(cells: Vec<CellRef>) -> TableCells {
    TableCells {
        name: "sales".into(),
        cells,
        schema: Some(sales(0, 1).schema()),
    }
}

/// Run `sql` split over `groups` of the cells of `sales`, every fragment reading the cells
/// of `others` whole: one partial task per group, then the merge. Returns the answer and how
/// the partials said to merge.
async fn run_split(
    sql: &str,
    cells: &Arc<MemCells>,
    groups: &[Vec<CellRef>],
    others: &[TableCells],
    pool_bytes: u64,
) -> Result<(String, MergeKind, bool), EngineError> {
    let mut inputs = Vec::new();
    let mut sort_merge_joins = false;
    let mut kinds = Vec::new();
    let mut last = None;
    for (i, group) in groups.iter().enumerate() {
        let mut tables = vec![table_of(group.clone())];
        tables.extend(others.iter().cloned());
        let mut partial = task(sql, tables);
        partial.stage = Stage::Partial {
            split: "sales".into(),
        };
        partial.memory_pool_bytes = pool_bytes;
        let scratch = tempfile::tempdir().expect("scratch");
        partial.scratch_dir = Some(scratch.path().to_path_buf());
        let mut sink = Collect::default();
        let summary = execute_fragment(
            &partial,
            cells.clone(),
            Arc::new(crate::NoFunctions),
            &mut sink,
        )
        .await?;
        assert!(summary.pool_peak_bytes <= pool_bytes, "{summary:?}");
        let left = std::fs::read_dir(scratch.path()).expect("scratch").count();
        assert_eq!(left, 0, "spill files are removed");
        sort_merge_joins |= summary.sort_merge_joins;
        kinds.push(summary.merge.expect("a partial reports its merge"));
        inputs.push(cells.add_bytes(1000 + i as CellId, ipc_stream(&sink)?));
        last = Some((partial, sink.batches));
    }
    assert!(kinds.windows(2).all(|w| w[0] == w[1]), "{kinds:?}");
    // A merge over a cut under a join reads the other tables itself.
    let below_joins = cut_of(sql, others).await.is_some_and(|(_, below)| below);
    let kind = kinds[0];
    if kind == MergeKind::Concatenate {
        // The host concatenates these itself; the merge stage must agree with it.
        assert_eq!(
            merge_kind_of(sql, others).await,
            Some(MergeKind::Concatenate)
        );
    }
    let (partial, rows) = last.expect("at least one group");
    if below_joins {
        // A merge that reads other tables is the last partial task's, as the host runs it.
        assert_ne!(kind, MergeKind::Concatenate, "{sql}");
        let answer = merge_here(&partial, cells, &inputs, &rows).await?;
        return Ok((answer, kind, sort_merge_joins));
    }
    // A standalone merge reads the partial results alone: its tables have schemas only.
    let mut tables = vec![table_of(Vec::new())];
    tables.extend(others.iter().map(|t| TableCells {
        cells: Vec::new(),
        ..t.clone()
    }));
    let mut merge = task(sql, tables);
    merge.stage = Stage::Merge {
        inputs: inputs.clone(),
    };
    let answer = run(&merge, cells.clone()).await?;
    // The last partial task merging every task's results itself gives the same answer.
    if kind != MergeKind::Concatenate {
        let merged = merge_here(&partial, cells, &inputs, &rows).await?;
        assert_eq!(sorted_lines(&merged), sorted_lines(&answer), "{sql}");
    }
    Ok((answer, kind, sort_merge_joins))
}

/// A table as the host plans it: a schema, and scans that remember their leaves.
#[derive(Debug)]
struct Planned {
    schema: SchemaRef,
    leaves: Mutex<Vec<Arc<dyn ExecutionPlan>>>,
}

#[async_trait::async_trait]
impl TableProvider for Planned {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        datafusion::datasource::TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        _filters: &[datafusion::prelude::Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let leaf: Arc<dyn ExecutionPlan> = Arc::new(crate::PlanningScan::new(schema));
        self.leaves.lock().expect("lock").push(leaf.clone());
        Ok(leaf)
    }
}

/// A context that plans as the host does: one partition, the rules for plans that may be
/// split.
fn planning_context() -> SessionContext {
    let config = SessionConfig::new().with_target_partitions(1);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_physical_optimizer_rules(split_optimizer_rules())
        .build();
    SessionContext::new_with_state(state)
}

/// A partial fragment's output as the Arrow IPC stream a merge reads.
fn ipc_stream(sink: &Collect) -> Result<Vec<u8>, EngineError> {
    let schema = sink.schema.clone().expect("schema");
    let mut chunker = IpcChunker::new(&schema)?;
    let mut bytes = Vec::new();
    for batch in &sink.batches {
        bytes.extend(chunker.chunk(batch)?);
    }
    bytes.extend(chunker.finish()?);
    Ok(bytes)
}

/// How a statement split over the cells of `sales`, with `others` read whole, would be
/// merged, as the host sees it (every read of `sales` split).
async fn merge_kind_of(sql: &str, others: &[TableCells]) -> Option<MergeKind> {
    cut_of(sql, others).await.map(|(kind, _)| kind)
}

/// [`merge_kind_of`], and whether the cut is an aggregation under a join.
async fn cut_of(sql: &str, others: &[TableCells]) -> Option<(MergeKind, bool)> {
    below_joins_of(sql, others)
        .await
        .map(|(kind, below)| (kind, below.is_some()))
}

/// [`merge_kind_of`], and how a cut at an aggregation under a join is made.
async fn below_joins_of(
    sql: &str,
    others: &[TableCells],
) -> Option<(MergeKind, Option<crate::BelowJoins>)> {
    let ctx = planning_context();
    let sales_table = Arc::new(Planned {
        schema: sales(0, 1).schema(),
        leaves: Mutex::new(Vec::new()),
    });
    ctx.register_table("sales", sales_table.clone())
        .expect("register");
    for other in others {
        let schema = other.schema.clone().expect("a schema");
        let table = MemTable::try_new(schema, vec![vec![]]).expect("table");
        ctx.register_table(other.name.as_str(), Arc::new(table))
            .expect("register");
    }
    let (state, logical) = ctx.sql(sql).await.expect("plan").into_parts();
    let plan = plan_sorting_last(&state, &logical)
        .await
        .expect("physical plan");
    let leaves = sales_table.leaves.lock().expect("lock").clone();
    let is_split_scan = |node: &dyn ExecutionPlan| {
        leaves
            .iter()
            .any(|leaf| std::ptr::addr_eq(node as *const dyn ExecutionPlan, Arc::as_ptr(leaf)))
    };
    merge_kind_and_groups(&plan, Splitting::Cells(&is_split_scan))
}

/// The split answer equals the whole answer for each grouping of the six cells of `sales`,
/// with `others` read whole by every fragment. Returns whether some fragment ran again with
/// sort-merge joins.
async fn assert_split_matches_with(
    sql: &str,
    expected_kind: MergeKind,
    cells: &Arc<MemCells>,
    refs: &[CellRef],
    others: &[TableCells],
    pool_bytes: u64,
) -> bool {
    let mut tables = vec![table_of(refs.to_vec())];
    tables.extend(others.iter().cloned());
    let (_, mut whole) = run_summarised(&task(sql, tables), cells.clone())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(
        merge_kind_of(sql, others).await,
        Some(expected_kind),
        "{sql}"
    );
    let groupings = [
        vec![refs[..1].to_vec(), refs[1..].to_vec()],
        vec![refs[..2].to_vec(), refs[2..4].to_vec(), refs[4..].to_vec()],
        refs.iter().map(|c| vec![*c]).collect(),
    ];
    let mut sort_merge_joins = false;
    for groups in &groupings {
        let (mut split, kind, fell_back) = run_split(sql, cells, groups, others, pool_bytes)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        sort_merge_joins |= fell_back;
        assert_eq!(kind, expected_kind, "{sql}");
        if kind == MergeKind::Concatenate {
            // Each fragment's rows come in its own join order.
            split = sorted_lines(&split);
            whole = sorted_lines(&whole);
        }
        assert_eq!(split, whole, "{sql} over {} groups", groups.len());
    }
    sort_merge_joins
}

fn sorted_lines(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.join("\n")
}

/// The split answer equals the whole answer for each grouping of the six cells.
async fn assert_split_matches(sql: &str, expected_kind: MergeKind) {
    let (cells, refs) = six_cells();
    let fell_back =
        assert_split_matches_with(sql, expected_kind, &cells, &refs, &[], 64 << 20).await;
    assert!(!fell_back, "{sql}");
}

#[tokio::test]
async fn grouped_aggregates_merge_from_partial_states() {
    assert_split_matches(
        "SELECT region, count(*) AS n, count(amount) AS c, sum(amount) AS s, avg(amount) AS a, \
         min(id) AS lo, max(id) AS hi, count(DISTINCT id % 7) AS d \
         FROM sales WHERE id % 5 <> 1 GROUP BY region ORDER BY region",
        MergeKind::FinalAggregate,
    )
    .await;
}

#[tokio::test]
async fn ungrouped_aggregates_and_having_merge_correctly() {
    assert_split_matches(
        "SELECT count(*) AS n, avg(id) AS a, sum(amount) / count(*) AS mean FROM sales",
        MergeKind::FinalAggregate,
    )
    .await;
    assert_split_matches(
        "SELECT id % 11 AS k, sum(amount) AS s FROM sales GROUP BY id % 11 \
         HAVING count(*) > 21 ORDER BY s DESC, k LIMIT 4",
        MergeKind::FinalAggregate,
    )
    .await;
    assert_split_matches(
        "SELECT count(DISTINCT region) AS regions FROM sales WHERE amount > 10",
        MergeKind::FinalAggregate,
    )
    .await;
}

#[tokio::test]
async fn count_star_is_not_answered_from_one_fragments_statistics() {
    assert_split_matches("SELECT count(*) AS n FROM sales", MergeKind::FinalAggregate).await;
}

#[tokio::test]
async fn order_by_limit_merges_the_fragments_top_rows() {
    assert_split_matches(
        "SELECT id, amount FROM sales WHERE amount IS NOT NULL ORDER BY amount DESC, id LIMIT 7",
        MergeKind::TopK,
    )
    .await;
    assert_split_matches(
        "SELECT id FROM sales ORDER BY id LIMIT 5 OFFSET 38",
        MergeKind::TopK,
    )
    .await;
}

#[tokio::test]
async fn plain_scans_are_concatenated() {
    assert_split_matches(
        "SELECT id, upper(region) AS r FROM sales WHERE id % 9 = 0",
        MergeKind::Concatenate,
    )
    .await;
}

/// A dimension for `sales`: each region's manager and target; `west` has no sales.
fn regions(cells: &MemCells) -> TableCells {
    let schema = Arc::new(Schema::new(vec![
        Field::new("r_region", DataType::Utf8, false),
        Field::new("r_manager", DataType::Utf8, false),
        Field::new("r_target", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["north", "south", "east", "west"])),
            Arc::new(StringArray::from(vec!["ann", "bo", "ann", "cy"])),
            Arc::new(Float64Array::from(vec![50.0, 70.0, 90.0, 10.0])),
        ],
    )
    .expect("batch");
    TableCells {
        name: "regions".into(),
        cells: vec![cells.add(500, &batch)],
        schema: Some(schema),
    }
}

#[tokio::test]
async fn joins_split_over_the_cells_of_the_side_whose_rows_they_keep() {
    let (cells, refs) = six_cells();
    let others = [regions(&cells)];
    for (sql, kind) in [
        (
            "SELECT r_manager, count(*) AS n, sum(amount) AS s FROM sales \
             JOIN regions ON region = r_region WHERE amount > r_target \
             GROUP BY r_manager ORDER BY r_manager",
            MergeKind::FinalAggregate,
        ),
        (
            "SELECT r_manager, count(*) AS n, count(id) AS ids FROM sales \
             LEFT JOIN regions ON region = r_region AND r_manager <> 'bo' \
             GROUP BY r_manager ORDER BY r_manager NULLS FIRST",
            MergeKind::FinalAggregate,
        ),
        (
            "SELECT count(*) AS n, sum(amount) AS s FROM sales WHERE region IN \
             (SELECT r_region FROM regions WHERE r_manager = 'ann')",
            MergeKind::FinalAggregate,
        ),
        (
            "SELECT region, count(*) AS n FROM sales WHERE NOT EXISTS \
             (SELECT 1 FROM regions WHERE r_region = region AND r_target < amount) \
             GROUP BY region ORDER BY region",
            MergeKind::FinalAggregate,
        ),
        (
            "SELECT count(*) AS n FROM sales WHERE id NOT IN \
             (SELECT CAST(r_target AS BIGINT) FROM regions)",
            MergeKind::FinalAggregate,
        ),
        (
            "SELECT id, amount, r_manager FROM sales JOIN regions ON region = r_region \
             ORDER BY amount DESC NULLS LAST, id LIMIT 6",
            MergeKind::TopK,
        ),
        (
            "SELECT id, r_manager FROM sales, regions WHERE r_target > 60 AND id % 7 = 0",
            MergeKind::Concatenate,
        ),
    ] {
        let fell_back =
            assert_split_matches_with(sql, kind, &cells, &refs, &others, 64 << 20).await;
        assert!(!fell_back, "{sql}: hash joins fit 64 MiB");
    }
}

#[tokio::test]
async fn split_joins_that_outgrow_their_pool_fall_back_to_sort_merge_joins() {
    // A fragment of five cells joins 250,000 rows to 200,000: a hash table of several MB,
    // which a 4 MiB pool cannot hold.
    let cells = Arc::new(MemCells::default());
    let refs: Vec<CellRef> = (0..6)
        .map(|i| cells.add(i, &sales(i64::from(i) * 50_000, 50_000)))
        .collect();
    let twins = TableCells {
        name: "twins".into(),
        cells: vec![cells.add(100, &sales(100_000, 200_000))],
        schema: Some(sales(0, 1).schema()),
    };
    let sql = "SELECT s.region, count(*) AS n, sum(t.amount) AS s FROM sales s \
               JOIN twins t ON s.id = t.id AND s.region = t.region \
               GROUP BY s.region ORDER BY s.region";
    let fell_back = assert_split_matches_with(
        sql,
        MergeKind::FinalAggregate,
        &cells,
        &refs,
        &[twins],
        4 << 20,
    )
    .await;
    assert!(fell_back, "no fragment's hash join passed 4 MiB");
}

#[tokio::test]
async fn joins_that_need_all_the_split_rows_at_once_are_not_split() {
    let cells = Arc::new(MemCells::default());
    let others = [regions(&cells)];
    for sql in [
        // The split side is the one whose missing rows the join adds, and the rows the
        // fragments add would count; or the join is fully outer.
        "SELECT r_region, count(*) AS n FROM regions LEFT JOIN sales ON region = r_region \
         GROUP BY r_region",
        "SELECT count(*) AS n FROM sales FULL JOIN regions ON region = r_region",
        // The split side is the one a semi or anti join looks up.
        "SELECT count(*) AS n FROM regions WHERE r_region IN (SELECT region FROM sales)",
        "SELECT r_region FROM regions WHERE NOT EXISTS \
         (SELECT 1 FROM sales WHERE region = r_region)",
        // Read twice.
        "SELECT count(*) AS n FROM sales a JOIN sales b ON a.id = b.id",
    ] {
        assert_eq!(merge_kind_of(sql, &others).await, None, "{sql}");
    }
}

/// `sql` is cut at an aggregation under a join, and its split answers equal its whole one.
async fn assert_cut_below_joins(
    sql: &str,
    cells: &Arc<MemCells>,
    refs: &[CellRef],
    others: &[TableCells],
) {
    assert_eq!(
        cut_of(sql, others).await,
        Some((MergeKind::FinalAggregate, true)),
        "{sql}"
    );
    assert_split_matches_with(
        sql,
        MergeKind::FinalAggregate,
        cells,
        refs,
        others,
        64 << 20,
    )
    .await;
}

#[tokio::test]
async fn an_aggregation_under_a_join_is_cut_and_the_merge_reads_the_other_frames() {
    let (cells, refs) = six_cells();
    let others = [regions(&cells)];
    for sql in [
        "SELECT r_manager, max(n) AS m FROM regions JOIN \
         (SELECT region, count(*) AS n FROM sales GROUP BY region) c ON c.region = r_region \
         GROUP BY r_manager ORDER BY r_manager",
        // TPC-H Q15's shape: sums per group, filtered and joined, in order.
        "SELECT r_region, r_manager, s, a FROM regions JOIN \
         (SELECT region, sum(amount) AS s, avg(amount) AS a FROM sales WHERE id % 3 <> 0 \
          GROUP BY region) t ON t.region = r_region WHERE s > 100 ORDER BY r_region",
        // The aggregation under the kept side of an outer join, a limit above it.
        "SELECT r_region, n FROM regions LEFT JOIN \
         (SELECT region, count(DISTINCT id % 7) AS n FROM sales GROUP BY region) c \
         ON c.region = r_region ORDER BY r_region LIMIT 3",
    ] {
        assert_cut_below_joins(sql, &cells, &refs, &others).await;
    }
    // Grouping sets keep the statement whole.
    let rollup = "SELECT r_manager, n FROM regions JOIN \
                  (SELECT region, count(*) AS n FROM sales GROUP BY ROLLUP (region)) c \
                  ON c.region = r_region";
    assert_eq!(cut_of(rollup, &others).await, None, "{rollup}");
}

#[tokio::test]
async fn a_frame_read_twice_through_the_same_aggregation_is_cut_once_for_both() {
    let (cells, refs) = six_cells();
    let others = [regions(&cells)];
    for sql in [
        // TPC-H Q15's shape: the sums per group joined to another frame and compared with
        // their maximum, both reads through one common table expression.
        "WITH t AS (SELECT region, sum(amount) AS s FROM sales WHERE id % 3 <> 0 \
         GROUP BY region) \
         SELECT r_region, r_manager, s FROM regions JOIN t ON t.region = r_region \
         WHERE s = (SELECT max(s) FROM t) ORDER BY r_region",
        // The same aggregation on both sides of a union, and of a join of its own groups.
        "WITH c AS (SELECT region, count(DISTINCT id % 7) AS d, avg(amount) AS a FROM sales \
         GROUP BY region) \
         SELECT region, d FROM c WHERE a > 100 \
         UNION ALL SELECT region, d + 1 FROM c WHERE a <= 100 ORDER BY region, d",
        "WITH c AS (SELECT region, max(id) AS m FROM sales WHERE id < 200 GROUP BY region) \
         SELECT x.region, x.m + y.m AS mm FROM c x JOIN c y ON x.region = y.region \
         JOIN regions ON r_region = x.region ORDER BY x.region",
    ] {
        assert_cut_below_joins(sql, &cells, &refs, &others).await;
    }
    for sql in [
        // The subquery reads one aggregate of two: the optimiser leaves the other out of
        // its aggregation, so the two reads differ.
        "WITH t AS (SELECT region, sum(amount) AS s, count(*) AS n FROM sales \
         GROUP BY region) \
         SELECT r_region, s, n FROM regions JOIN t ON t.region = r_region \
         WHERE s = (SELECT max(s) FROM t)",
        // The two reads aggregate different rows.
        "WITH t AS (SELECT region, sum(amount) AS s FROM sales WHERE id % 3 <> 0 \
         GROUP BY region) \
         SELECT r_region, s FROM regions JOIN t ON t.region = r_region WHERE s = \
         (SELECT max(s) FROM (SELECT region, sum(amount) AS s FROM sales \
          WHERE id % 3 <> 1 GROUP BY region) u)",
        // One read reaches the frame through no aggregation.
        "WITH t AS (SELECT region, sum(amount) AS s FROM sales GROUP BY region) \
         SELECT r_region, s FROM regions JOIN t ON t.region = r_region \
         WHERE s > (SELECT max(amount) FROM sales)",
    ] {
        assert_eq!(cut_of(sql, &others).await, None, "{sql}");
    }
}

/// `sales`' first 60 rows again, as a frame of one cell read whole.
fn twins(cells: &MemCells) -> TableCells {
    TableCells {
        name: "twins".into(),
        cells: vec![cells.add(600, &sales(0, 60))],
        schema: Some(sales(0, 1).schema()),
    }
}

/// The rows a partial task over all of `sales` emits for `sql`, with `others` whole.
async fn partial_rows(
    sql: &str,
    cells: &Arc<MemCells>,
    refs: &[CellRef],
    others: &[TableCells],
) -> u64 {
    let mut tables = vec![table_of(refs.to_vec())];
    tables.extend(others.iter().cloned());
    let mut partial = task(sql, tables);
    partial.stage = Stage::Partial {
        split: "sales".into(),
    };
    let (summary, _) = run_summarised(&partial, cells.clone())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    summary.rows
}

#[tokio::test]
async fn an_aggregation_under_a_filtered_join_keeps_only_the_groups_it_can_match() {
    let (cells, refs) = six_cells();
    let others = [twins(&cells)];
    // TPC-H Q20's shape: sums per key, joined to a filtered frame on the key and compared.
    // The 240 sales have 240 ids; the 60 twins 20 in the north.
    let reduced = "SELECT t.id, t.amount, s.total FROM twins t JOIN \
                   (SELECT id, sum(amount) AS total FROM sales GROUP BY id) s \
                   ON s.id = t.id AND t.amount > 0.5 * s.total \
                   WHERE t.region = 'north' ORDER BY t.id";
    // The same key looked up by a semi join: the sums only filter twins.
    let semi = "SELECT t.id FROM twins t WHERE t.region = 'north' AND t.id IN \
                (SELECT id FROM (SELECT id, count(*) AS n FROM sales GROUP BY id) c \
                 WHERE n > 0) ORDER BY t.id";
    for (sql, rows) in [(reduced, 20), (semi, 20)] {
        let Some((kind, Some(below))) = below_joins_of(sql, &others).await else {
            panic!("{sql}: not cut at an aggregation under a join");
        };
        assert_eq!(kind, MergeKind::FinalAggregate, "{sql}");
        assert!(below.reduced, "{sql}");
        assert_eq!(
            partial_rows(sql, &cells, &refs, &others).await,
            rows,
            "{sql}"
        );
        assert_split_matches_with(sql, kind, &cells, &refs, &others, 64 << 20).await;
    }
    // Unfiltered, or the aggregation on the side a left join keeps: every group stays.
    let unfiltered = "SELECT t.id, s.total FROM twins t JOIN \
                      (SELECT id, sum(amount) AS total FROM sales GROUP BY id) s \
                      ON s.id = t.id ORDER BY t.id";
    let kept = "SELECT s.id, s.total, t.amount FROM \
                (SELECT id, sum(amount) AS total FROM sales GROUP BY id) s LEFT JOIN \
                (SELECT id, amount FROM twins WHERE region = 'north') t ON s.id = t.id \
                ORDER BY s.id";
    for sql in [unfiltered, kept] {
        let Some((kind, Some(below))) = below_joins_of(sql, &others).await else {
            panic!("{sql}: not cut at an aggregation under a join");
        };
        assert!(!below.reduced, "{sql}");
        assert_eq!(
            partial_rows(sql, &cells, &refs, &others).await,
            240,
            "{sql}"
        );
        assert_split_matches_with(sql, kind, &cells, &refs, &others, 64 << 20).await;
    }
}

#[tokio::test]
async fn an_outer_joins_null_side_splits_under_aggregates_that_ignore_its_nulls() {
    let (cells, refs) = six_cells();
    let others = [regions(&cells)];
    // `west` matches no sale, and only the first cells' sales match under `id < 100`: the
    // fragments over the other cells add a row of nulls for every region.
    for sql in [
        "SELECT r_region, count(id) AS n, sum(amount) AS s, min(id) AS lo, \
         max(amount) AS hi, avg(amount) AS a \
         FROM regions LEFT JOIN sales ON region = r_region AND id < 100 \
         GROUP BY r_region ORDER BY r_region",
        // TPC-H Q13: how many customers have each number of orders.
        "SELECT n, count(*) AS managers FROM \
         (SELECT r_region, count(id) AS n FROM regions \
          LEFT JOIN sales ON region = r_region AND id % 4 <> 0 GROUP BY r_region) c \
         GROUP BY n ORDER BY managers DESC, n DESC",
        "SELECT r_manager, count(amount) AS n FROM sales \
         RIGHT JOIN regions ON region = r_region AND id > 150 \
         GROUP BY r_manager ORDER BY r_manager",
    ] {
        let fell_back = assert_split_matches_with(
            sql,
            MergeKind::FinalAggregate,
            &cells,
            &refs,
            &others,
            64 << 20,
        )
        .await;
        assert!(!fell_back, "{sql}");
    }
    for sql in [
        // Groups by the split side: the added rows make a group of nulls.
        "SELECT region, count(id) AS n FROM regions LEFT JOIN sales ON region = r_region \
         AND id < 100 GROUP BY region",
        // Aggregates the preserved side, whose rows the fragments repeat.
        "SELECT r_region, sum(r_target) AS t FROM regions LEFT JOIN sales \
         ON region = r_region GROUP BY r_region",
        // A computed argument is not null on the added rows.
        "SELECT r_region, count(coalesce(id, 0)) AS n FROM regions LEFT JOIN sales \
         ON region = r_region GROUP BY r_region",
        // A filter between the join and the aggregation keeps the added rows.
        "SELECT r_region, count(r_manager) AS n FROM regions LEFT JOIN sales \
         ON region = r_region WHERE id IS NULL GROUP BY r_region",
    ] {
        assert_eq!(merge_kind_of(sql, &others).await, None, "{sql}");
    }
}

#[tokio::test]
async fn windows_full_sorts_bare_limits_and_unions_are_not_split() {
    for sql in [
        "SELECT id, sum(amount) OVER (ORDER BY id) AS running FROM sales",
        "SELECT id FROM sales ORDER BY amount",
        "SELECT id FROM sales LIMIT 3",
        "SELECT id FROM sales UNION ALL SELECT id FROM sales",
    ] {
        assert_eq!(merge_kind_of(sql, &[]).await, None, "{sql}");
    }
}

/// Returns of `sales`: 300 rows over two cells, keyed by `sale_id`, which is null in every
/// 17th row and past the last sale in some.
fn returns(cells: &MemCells) -> TableCells {
    let schema = Arc::new(Schema::new(vec![
        Field::new("sale_id", DataType::Int64, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("qty", DataType::Int64, false),
    ]));
    let batch = |rows: Range<i64>| {
        let ids: Vec<Option<i64>> = rows
            .clone()
            .map(|i| (i % 17 != 0).then_some(i * 7 % 260))
            .collect();
        let reasons: Vec<&str> = rows
            .clone()
            .map(|i| ["late", "broken"][(i % 2) as usize])
            .collect();
        let qty: Vec<i64> = rows.map(|i| i % 5).collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(reasons)),
                Arc::new(Int64Array::from(qty)),
            ],
        )
        .expect("batch")
    };
    TableCells {
        name: "returns".into(),
        cells: vec![
            cells.add(600, &batch(0..150)),
            cells.add(601, &batch(150..300)),
        ],
        schema: Some(schema.clone()),
    }
}

/// The ranges `bounds` cut the keys into.
fn key_ranges(columns: &[KeyColumn], bounds: &[i64]) -> Vec<KeyRange> {
    let mut edges: Vec<Option<i64>> = vec![None];
    edges.extend(bounds.iter().copied().map(Some));
    edges.push(None);
    edges
        .windows(2)
        .map(|w| KeyRange {
            columns: columns.to_vec(),
            low: w[0],
            high: w[1],
        })
        .collect()
}

/// Run `sql` over `tables` split by `ranges`: one keyed task per range, then the merge.
async fn run_keyed(
    sql: &str,
    cells: &Arc<MemCells>,
    tables: &[TableCells],
    ranges: &[KeyRange],
) -> Result<(String, MergeKind), EngineError> {
    let mut inputs = Vec::new();
    let mut kinds = Vec::new();
    let mut last = None;
    for (i, range) in ranges.iter().enumerate() {
        let mut partial = task(sql, tables.to_vec());
        partial.stage = Stage::Keyed(range.clone());
        let mut sink = Collect::default();
        let summary = execute_fragment(
            &partial,
            cells.clone(),
            Arc::new(crate::NoFunctions),
            &mut sink,
        )
        .await?;
        kinds.push(summary.merge.expect("a partial reports its merge"));
        inputs.push(cells.add_bytes(2000 + i as CellId, ipc_stream(&sink)?));
        last = Some((partial, sink.batches));
    }
    assert!(kinds.windows(2).all(|w| w[0] == w[1]), "{kinds:?}");
    let empty: Vec<TableCells> = tables
        .iter()
        .map(|t| TableCells {
            cells: Vec::new(),
            ..t.clone()
        })
        .collect();
    let mut merge = task(sql, empty);
    merge.stage = Stage::Merge {
        inputs: inputs.clone(),
    };
    let answer = run(&merge, cells.clone()).await?;
    // The last keyed task merging every task's results itself gives the same answer.
    if kinds[0] != MergeKind::Concatenate
        && let Some((partial, rows)) = &last
    {
        let merged = merge_here(partial, cells, &inputs, rows).await?;
        assert_eq!(sorted_lines(&merged), sorted_lines(&answer), "{sql}");
    }
    Ok((answer, kinds[0]))
}

/// How a statement split by the key `columns` would be merged, as the host sees it.
async fn keyed_merge_kind_of(
    sql: &str,
    tables: &[TableCells],
    columns: &[KeyColumn],
) -> Option<MergeKind> {
    let ctx = planning_context();
    let mut keyed = Vec::new();
    for table in tables {
        let planned = Arc::new(Planned {
            schema: table.schema.clone().expect("a schema"),
            leaves: Mutex::new(Vec::new()),
        });
        ctx.register_table(table.name.as_str(), planned.clone())
            .expect("register");
        if let Some(k) = columns.iter().find(|k| k.table == table.name) {
            keyed.push((planned, k.column.clone()));
        }
    }
    let (state, logical) = ctx.sql(sql).await.expect("plan").into_parts();
    let plan = plan_sorting_last(&state, &logical)
        .await
        .expect("physical plan");
    let leaves: Vec<(Arc<dyn ExecutionPlan>, String)> = keyed
        .iter()
        .flat_map(|(t, column)| {
            let leaves = t.leaves.lock().expect("lock").clone();
            leaves.into_iter().map(move |l| (l, column.clone()))
        })
        .collect();
    let key_scan = |node: &dyn ExecutionPlan| {
        let (leaf, column) = leaves.iter().find(|(leaf, _)| {
            std::ptr::addr_eq(node as *const dyn ExecutionPlan, Arc::as_ptr(leaf))
        })?;
        Some(leaf.schema().index_of(column).into_iter().collect())
    };
    merge_kind(&plan, Splitting::Keys(&key_scan))
}

fn sales_and_returns_keys() -> Vec<KeyColumn> {
    vec![
        KeyColumn {
            table: "sales".into(),
            column: "id".into(),
        },
        KeyColumn {
            table: "returns".into(),
            column: "sale_id".into(),
        },
    ]
}

#[tokio::test]
async fn statements_that_read_a_frame_twice_split_by_the_key_their_joins_compare() {
    let (cells, refs) = six_cells();
    let tables = [table_of(refs), returns(&cells), regions(&cells)];
    let keys = sales_and_returns_keys();
    for (sql, expected) in [
        // Read twice, joined on the key.
        (
            "SELECT a.region, count(*) AS n, sum(b.amount) AS s FROM sales a \
             JOIN sales b ON a.id = b.id AND a.region = b.region GROUP BY a.region \
             ORDER BY a.region",
            MergeKind::FinalAggregate,
        ),
        // Each keyed frame on the side of a semi or anti join that is looked up.
        (
            "SELECT reason, count(*) AS n FROM returns r WHERE EXISTS \
             (SELECT 1 FROM sales s WHERE s.id = r.sale_id AND s.amount > 20) \
             AND NOT EXISTS (SELECT 1 FROM sales s2 WHERE s2.id = r.sale_id AND s2.region = 'east') \
             GROUP BY reason ORDER BY reason",
            MergeKind::FinalAggregate,
        ),
        (
            "SELECT region, count(*) AS n FROM sales WHERE id IN \
             (SELECT sale_id FROM returns WHERE qty > 2) GROUP BY region ORDER BY region",
            MergeKind::FinalAggregate,
        ),
        // Aggregated by the key below a join, as TPC-H Q18 and Q17 do.
        (
            "SELECT r_manager, count(*) AS n, sum(q) AS q FROM sales s \
             JOIN (SELECT sale_id, sum(qty) AS q FROM returns GROUP BY sale_id HAVING sum(qty) > 2) r \
             ON r.sale_id = s.id JOIN regions ON r_region = s.region \
             GROUP BY r_manager ORDER BY r_manager",
            MergeKind::FinalAggregate,
        ),
        // The keyed frame a left join adds nulls for, then counted twice, as TPC-H Q13.
        (
            "SELECT c, count(*) AS sales FROM (SELECT s.id, count(r.sale_id) AS c FROM sales s \
             LEFT JOIN returns r ON r.sale_id = s.id AND r.reason = 'late' GROUP BY s.id) t \
             GROUP BY c ORDER BY c",
            MergeKind::FinalAggregate,
        ),
        // Null keys go to one fragment only.
        (
            "SELECT count(*) AS n, count(s.id) AS matched, sum(qty) AS q FROM returns r \
             LEFT JOIN sales s ON s.id = r.sale_id",
            MergeKind::FinalAggregate,
        ),
        (
            "SELECT r.sale_id, r.qty, s.amount FROM returns r FULL JOIN sales s \
             ON s.id = r.sale_id WHERE r.qty = 4 OR s.id % 50 = 0",
            MergeKind::Concatenate,
        ),
        (
            "SELECT s.id, sum(r.qty) AS q FROM sales s JOIN returns r ON r.sale_id = s.id \
             GROUP BY s.id ORDER BY q DESC, s.id LIMIT 5",
            MergeKind::FinalAggregate,
        ),
        // Full sorts, as TPC-H Q20: the merge sorts every fragment's rows.
        (
            "SELECT s.id, s.region, r.qty FROM sales s JOIN returns r ON r.sale_id = s.id \
             WHERE r.qty > 1 ORDER BY r.qty DESC, s.id, s.region",
            MergeKind::Sort,
        ),
        (
            "SELECT id, region FROM sales WHERE id IN \
             (SELECT sale_id FROM returns WHERE qty > 2) ORDER BY region, id",
            MergeKind::Sort,
        ),
    ] {
        assert_eq!(
            keyed_merge_kind_of(sql, &tables, &keys).await,
            Some(expected),
            "{sql}"
        );
        let (_, mut whole) = run_summarised(&task(sql, tables.to_vec()), cells.clone())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        for bounds in [&[120][..], &[1, 100, 230], &[-5, 7, 8, 9, 500]] {
            let ranges = key_ranges(&keys, bounds);
            let (mut split, kind) = run_keyed(sql, &cells, &tables, &ranges)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_eq!(kind, expected, "{sql}");
            if kind == MergeKind::Concatenate {
                split = sorted_lines(&split);
                whole = sorted_lines(&whole);
            }
            assert_eq!(split, whole, "{sql} split at {bounds:?}");
        }
    }
}

#[tokio::test]
async fn rows_that_meet_outside_the_key_are_not_split_by_it() {
    let (cells, refs) = six_cells();
    let tables = [table_of(refs), returns(&cells), regions(&cells)];
    let keys = sales_and_returns_keys();
    for sql in [
        // Joined on another column.
        "SELECT count(*) AS n FROM sales a JOIN sales b ON a.region = b.region",
        "SELECT count(*) AS n FROM sales s JOIN returns r ON r.qty = s.id % 5",
        // Aggregated by another column below a join.
        "SELECT count(*) AS n FROM sales s JOIN \
         (SELECT reason, max(sale_id) AS m FROM returns GROUP BY reason) r ON r.m = s.id",
        // A whole aggregate compared with each row, as TPC-H Q22 does.
        "SELECT count(*) AS n FROM sales WHERE amount > (SELECT avg(amount) FROM sales)",
        // A keyed frame's rows joined to another keyed frame's by a key that is not theirs.
        "SELECT count(*) AS n FROM sales s JOIN returns r ON r.sale_id = s.id + 1",
    ] {
        assert_eq!(
            keyed_merge_kind_of(sql, &tables, &keys).await,
            None,
            "{sql}"
        );
    }
}

/// A cell of `sales(0, rows)` written in row groups of `group_rows` rows.
fn cell_in_row_groups(cells: &MemCells, id: CellId, rows: i64, group_rows: usize) -> CellRef {
    let batch = sales(0, rows);
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows))
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    cells.add_bytes(id, buf)
}

#[tokio::test]
async fn a_slice_of_a_cell_reads_its_rows_only_and_the_slices_add_up_to_the_cell() {
    let cells = Arc::new(MemCells::default());
    // 100 rows in row groups of 40, 40 and 20: slices that start and end inside them.
    let cell = cell_in_row_groups(&cells, 1, 100, 40);
    let sql = "SELECT count(*) AS n, count(amount) AS a, sum(id) AS s, min(id) AS lo, max(id) AS hi \
               FROM sales";
    let mut answers = Vec::new();
    for (start, end) in [(0, 30), (30, 75), (75, 100)] {
        let slice = CellRef {
            slice: Some(RowSlice {
                start,
                end,
                rows: 100,
            }),
            ..cell
        };
        answers.push(
            run(&task(sql, vec![table_of(vec![slice])]), cells.clone())
                .await
                .expect("query"),
        );
    }
    // count(*), min and max come from the rows, not from the cell's statistics.
    let expect = |n: u64, a: u64, s: u64, lo: u64, hi: u64| format!("|{n}|{a}|{s}|{lo}|{hi}|");
    let answers: Vec<String> = answers.iter().map(|a| a.replace(' ', "")).collect();
    assert!(
        answers[0].contains(&expect(30, 27, 435, 0, 29)),
        "{}",
        answers[0]
    );
    assert!(
        answers[1].contains(&expect(45, 40, 2340, 30, 74)),
        "{}",
        answers[1]
    );
    assert!(
        answers[2].contains(&expect(25, 23, 2175, 75, 99)),
        "{}",
        answers[2]
    );
    // The three slices hold every row once: 435 + 2340 + 2175 = 0 + 1 + ... + 99.
}

#[tokio::test]
async fn a_slice_past_the_cell_is_an_error() {
    let cells = Arc::new(MemCells::default());
    let cell = cell_in_row_groups(&cells, 1, 100, 40);
    let slice = CellRef {
        slice: Some(RowSlice {
            start: 50,
            end: 120,
            rows: 100,
        }),
        ..cell
    };
    let err = run(
        &task("SELECT count(*) FROM sales", vec![table_of(vec![slice])]),
        cells,
    )
    .await
    .expect_err("a slice past the cell's rows");
    assert!(err.to_string().contains("50..120"), "{err}");
}
