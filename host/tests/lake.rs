//! The lake against a real local directory: the registry, conditional ledger commits from
//! several processes (this test binary re-runs itself as the writer), checkpoints, kill -9
//! at random points, the write path's rules and vacuum.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use apiary_engine::lake::{FrameState, LakeError, parse_ledger_key};
use apiary_host::{Error, Lake, WriteMode, WriteOptions};
use arrow::array::{Array, ArrayRef, Int32Array, Int64Array, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const ROLE: &str = "APIARY_TEST_WRITER";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn uri(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("day", DataType::Utf8, false),
        Field::new("note", DataType::Utf8, true),
    ]))
}

fn events(ids: std::ops::Range<i64>, day: &str) -> RecordBatch {
    let n = ids.end - ids.start;
    RecordBatch::try_new(
        events_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from(vec![day; n as usize])),
            Arc::new(StringArray::from_iter(
                ids.map(|i| (i % 2 == 0).then(|| format!("n{i}"))),
            )),
        ],
    )
    .expect("batch")
}

/// Every row of a frame's current state, sorted by id.
async fn read_frame(lake: &Lake, name: &str) -> RecordBatch {
    let (entry, state) = lake.frame(name).await.expect("frame");
    let mut batches = Vec::new();
    for cell in state.cells() {
        let bytes = lake
            .meadow()
            .get(&format!("{}/{}", entry.dir, cell.path))
            .await
            .expect("get")
            .expect("cell exists");
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            batches.push(batch.expect("batch"));
        }
    }
    let all = concat_batches(&events_schema(), &batches).expect("concat");
    let ids = all.column(0).clone();
    let order = arrow::compute::sort_to_indices(&ids, None, None).expect("sort");
    arrow::compute::take_record_batch(&all, &order).expect("take")
}

fn ids_of(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("ids")
        .values()
        .to_vec()
}

/// The child side of the multi-process tests: commit `APIARY_TEST_COMMITS` appends of one
/// row each (ids from `APIARY_TEST_BASE`) to `default.default.events`.
#[test]
#[ignore = "run by the multi-process tests as a child process"]
fn writer_child() {
    let Ok(lake_uri) = std::env::var(ROLE) else {
        return;
    };
    let commits: i64 = std::env::var("APIARY_TEST_COMMITS")
        .expect("commits")
        .parse()
        .expect("number");
    let base: i64 = std::env::var("APIARY_TEST_BASE")
        .expect("base")
        .parse()
        .expect("number");
    runtime().block_on(async {
        let lake = Lake::open(&lake_uri).await.expect("open");
        for i in 0..commits {
            lake.write(
                "events",
                &[events(base + i..base + i + 1, "2026-11-25")],
                WriteMode::Append,
            )
            .await
            .expect("append");
        }
    });
}

fn spawn_writer(lake: &Path, base: i64, commits: i64) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, uri(lake))
        .env("APIARY_TEST_BASE", base.to_string())
        .env("APIARY_TEST_COMMITS", commits.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn writer")
}

async fn new_events_lake(dir: &Path) -> Lake {
    let lake = Lake::open(&uri(dir)).await.expect("open");
    lake.create_frame("events", &events_schema(), &[], false)
        .await
        .expect("create");
    lake
}

/// Every ledger version from 0 to the state's version exists, and no other.
async fn assert_contiguous_ledger(lake: &Lake, dir: &str, state: &FrameState) {
    let mut versions: Vec<u64> = lake
        .meadow()
        .list_dir(&format!("{dir}/_ledger"))
        .await
        .expect("list")
        .0
        .iter()
        .filter_map(|o| parse_ledger_key(o.location.as_ref()))
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (0..=state.version).collect::<Vec<_>>());
}

#[test]
fn eight_writer_processes_commit_exactly_four_hundred_versions() {
    let dir = tempfile::tempdir().expect("dir");
    let rt = runtime();
    let lake = rt.block_on(new_events_lake(dir.path()));
    let writers: Vec<Child> = (0..8)
        .map(|w| spawn_writer(dir.path(), w * 1000, 50))
        .collect();
    for mut writer in writers {
        assert!(writer.wait().expect("wait").success(), "a writer failed");
    }
    rt.block_on(async {
        let (entry, state) = lake.frame("events").await.expect("frame");
        assert_eq!(state.version, 400, "one create + 400 appends");
        assert_eq!(state.rows(), 400);
        assert_eq!(state.cells().count(), 400);
        assert_contiguous_ledger(&lake, &entry.dir, &state).await;
        let mut ids = ids_of(&read_frame(&lake, "events").await);
        ids.dedup();
        let expected: Vec<i64> = (0..8).flat_map(|w| (w * 1000)..(w * 1000 + 50)).collect();
        assert_eq!(ids, expected, "every row exactly once");
    });
}

#[test]
fn a_fresh_open_after_150_commits_replays_each_entry_once() {
    let dir = tempfile::tempdir().expect("dir");
    runtime().block_on(async {
        let lake = new_events_lake(dir.path()).await;
        for i in 0..155 {
            lake.write(
                "events",
                &[events(i * 2..i * 2 + 2, "d")],
                WriteMode::Append,
            )
            .await
            .expect("append");
        }
        let fresh = Lake::open(&uri(dir.path())).await.expect("reopen");
        let (entry, state) = fresh.frame("events").await.expect("frame");
        assert_eq!(state.version, 155);
        assert_eq!(state.rows(), 310);
        let checkpoints = fresh
            .meadow()
            .list_dir(&format!("{}/_ledger/_checkpoint", entry.dir))
            .await
            .expect("list")
            .0;
        assert_eq!(checkpoints.len(), 1, "a checkpoint at version 100");
        assert!(
            checkpoints[0]
                .location
                .as_ref()
                .ends_with("00000000000000000100.json")
        );
    });
}

#[test]
fn kill_minus_nine_never_leaves_a_half_written_entry_and_vacuum_removes_orphans() {
    let dir = tempfile::tempdir().expect("dir");
    let rt = runtime();
    let lake = rt.block_on(new_events_lake(dir.path()));
    for round in 0..6u64 {
        let mut child = spawn_writer(dir.path(), round as i64 * 10_000, 1_000);
        // Kill at a different point each round (the writer needs ~100 ms to start).
        std::thread::sleep(Duration::from_millis(150 + (round * 97) % 400));
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        let (entry, state) = rt
            .block_on(lake.frame("events"))
            .expect("the ledger stays readable");
        assert_eq!(state.rows(), state.version, "one row per committed append");
        rt.block_on(assert_contiguous_ledger(&lake, &entry.dir, &state));
    }
    rt.block_on(async {
        let (entry, state) = lake.frame("events").await.expect("frame");
        assert!(state.version > 0, "some appends committed before the kills");
        let report = lake.vacuum(Duration::ZERO).await.expect("vacuum");
        let cells: Vec<String> = lake
            .meadow()
            .list(&entry.dir)
            .await
            .expect("list")
            .iter()
            .map(|o| o.location.to_string())
            .filter(|k| k.ends_with(".parquet"))
            .collect();
        assert_eq!(
            cells.len(),
            state.cells().count(),
            "only referenced cells remain ({report:?})"
        );
        let after = lake.frame("events").await.expect("frame").1;
        assert_eq!(after, state, "vacuum changes no state");
        assert_eq!(
            ids_of(&read_frame(&lake, "events").await).len() as u64,
            state.rows()
        );
    });
}

#[test]
fn columns_are_matched_by_name_not_position() {
    let dir = tempfile::tempdir().expect("dir");
    runtime().block_on(async {
        let lake = new_events_lake(dir.path()).await;
        let batch = events(0..3, "d");
        let reversed = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("note", DataType::Utf8, true),
                Field::new("day", DataType::Utf8, false),
                Field::new("id", DataType::Int64, false),
            ])),
            vec![
                batch.column(2).clone(),
                batch.column(1).clone(),
                batch.column(0).clone(),
            ],
        )
        .expect("batch");
        lake.write("events", &[reversed], WriteMode::Append)
            .await
            .expect("append");
        assert_eq!(read_frame(&lake, "events").await, batch);
    });
}

#[test]
fn safe_widening_and_missing_nullable_columns_are_filled() {
    let dir = tempfile::tempdir().expect("dir");
    runtime().block_on(async {
        let lake = new_events_lake(dir.path()).await;
        let narrow = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int32, false),
                Field::new("day", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Int32Array::from(vec![7, 8])) as ArrayRef,
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .expect("batch");
        let result = lake
            .write("events", &[narrow], WriteMode::Append)
            .await
            .expect("append");
        assert_eq!((result.version, result.rows, result.cells), (1, 2, 1));
        let back = read_frame(&lake, "events").await;
        assert_eq!(ids_of(&back), vec![7, 8]);
        assert_eq!(back.column(2).null_count(), 2);
    });
}

/// Write `batch`, expect `check` to accept the error, and that nothing committed changed.
async fn refused(lake: &Lake, frame: &str, batch: RecordBatch, check: impl Fn(&Error) -> bool) {
    let before = lake.frame(frame).await.expect("frame").1;
    let err = lake
        .write(frame, &[batch], WriteMode::Append)
        .await
        .expect_err("refused");
    assert!(check(&err), "unexpected error: {err}");
    let after = lake.frame(frame).await.expect("frame").1;
    assert_eq!(before, after, "a refused write changed the frame");
}

#[test]
fn bad_writes_get_clear_errors_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    runtime().block_on(async {
        let lake = new_events_lake(dir.path()).await;
        lake.write("events", &[events(0..5, "d")], WriteMode::Append)
            .await
            .expect("append");
        let partitioned = lake
            .create_frame("h_parts", &events_schema(), &["day"], false)
            .await
            .expect("create");
        assert_eq!(partitioned.frame, "h_parts");

        // An unsafe cast: strings into the int64 id.
        let bad_type = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("day", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
                Arc::new(StringArray::from(vec!["d"])),
            ],
        )
        .expect("batch");
        refused(&lake, "events", bad_type, |e| {
            matches!(e, Error::Lake(LakeError::SchemaMismatch { .. }))
                && e.to_string().contains("column `id`")
        })
        .await;

        // An extra column.
        let extra = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("day", DataType::Utf8, false),
                Field::new("colour", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1])) as ArrayRef,
                Arc::new(StringArray::from(vec!["d"])),
                Arc::new(StringArray::from(vec!["red"])),
            ],
        )
        .expect("batch");
        refused(&lake, "events", extra, |e| {
            e.to_string().contains("`colour`")
        })
        .await;

        // A missing NOT NULL column.
        let missing = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1])) as ArrayRef],
        )
        .expect("batch");
        refused(&lake, "events", missing, |e| {
            matches!(e, Error::Lake(LakeError::MissingColumn { .. }))
                && e.to_string().contains("`day`")
        })
        .await;

        // Path-unsafe and null partition values.
        refused(&lake, "h_parts", events(0..2, "../escape"), |e| {
            e.to_string().contains("`../escape`")
        })
        .await;
        let null_day = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("day", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .expect("batch");
        refused(&lake, "h_parts", null_day, |e| {
            e.to_string().contains("null")
        })
        .await;

        // The rows committed before are all still there.
        assert_eq!(
            ids_of(&read_frame(&lake, "events").await),
            vec![0, 1, 2, 3, 4]
        );
    });
}

#[test]
fn the_partition_limit_is_enforced() {
    let dir = tempfile::tempdir().expect("dir");
    runtime().block_on(async {
        let lake = Lake::open(&uri(dir.path()))
            .await
            .expect("open")
            .with_write_options(WriteOptions {
                max_partitions: 3,
                ..WriteOptions::default()
            });
        lake.create_frame("parts", &events_schema(), &["day"], false)
            .await
            .expect("create");
        let days: Vec<RecordBatch> = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, d)| events(i as i64..i as i64 + 1, d))
            .collect();
        let err = lake
            .write("parts", &days, WriteMode::Append)
            .await
            .expect_err("4 partitions > 3");
        assert!(
            matches!(err, Error::Lake(LakeError::TooManyPartitions { .. })),
            "{err}"
        );
        let ok = lake
            .write("parts", &days[..3], WriteMode::Append)
            .await
            .expect("3 partitions");
        assert_eq!((ok.cells, ok.rows), (3, 3));
        let (_, state) = lake.frame("parts").await.expect("frame");
        let mut dirs: Vec<&str> = state
            .cells()
            .map(|c| c.path.split('/').next().unwrap_or_default())
            .collect();
        dirs.sort_unstable();
        assert_eq!(dirs, vec!["day=a", "day=b", "day=c"]);
    });
}

#[test]
fn overwrite_replaces_everything_and_vacuum_frees_the_old_cells() {
    let dir = tempfile::tempdir().expect("dir");
    runtime().block_on(async {
        let lake = new_events_lake(dir.path()).await;
        lake.write("events", &[events(0..10, "d")], WriteMode::Append)
            .await
            .expect("append");
        lake.write("events", &[events(10..20, "d")], WriteMode::Append)
            .await
            .expect("append");
        let result = lake
            .write("events", &[events(100..103, "d")], WriteMode::Overwrite)
            .await
            .expect("overwrite");
        assert_eq!(result.version, 3);
        assert_eq!(
            ids_of(&read_frame(&lake, "events").await),
            vec![100, 101, 102]
        );
        let report = lake.vacuum(Duration::ZERO).await.expect("vacuum");
        assert_eq!(report.unreferenced_cells, 2);
        assert_eq!(
            ids_of(&read_frame(&lake, "events").await),
            vec![100, 101, 102]
        );
        // A grace period protects young cells.
        lake.write("events", &[events(200..201, "d")], WriteMode::Overwrite)
            .await
            .expect("overwrite");
        assert_eq!(
            lake.vacuum(Duration::from_secs(3600))
                .await
                .expect("vacuum")
                .unreferenced_cells,
            0
        );
    });
}

#[test]
fn the_registry_validates_names_and_merges_concurrent_creates() {
    let dir = tempfile::tempdir().expect("dir");
    runtime().block_on(async {
        let a = Lake::open(&uri(dir.path())).await.expect("open");
        let b = Lake::open(&uri(dir.path())).await.expect("open");
        let err = a.create_hive("bad/name", false).await.expect_err("slash");
        assert!(err.to_string().contains("`bad/name`"), "{err}");
        let (ra, rb) = tokio::join!(a.create_hive("north", false), b.create_hive("south", false));
        ra.expect("north");
        rb.expect("south");
        let hives: Vec<String> = a
            .registry()
            .await
            .expect("registry")
            .hives
            .keys()
            .cloned()
            .collect();
        assert_eq!(hives, vec!["default", "north", "south"]);

        a.create_box("north", "sales", false).await.expect("box");
        // The conventional names reach the same catalogue.
        b.create_database("west", false).await.expect("database");
        b.create_schema("west", "ops", false).await.expect("schema");
        b.create_table("west.ops.log", &events_schema(), &[], false)
            .await
            .expect("table");
        assert!(a.registry().await.expect("registry").hives["west"]["ops"].contains_key("log"));
        b.drop_table("west.ops.log", false)
            .await
            .expect("drop table");
        a.create_frame("north.sales.events", &events_schema(), &[], false)
            .await
            .expect("frame");
        a.create_frame("north.sales.events", &events_schema(), &[], true)
            .await
            .expect("idempotent");
        let other = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)]));
        let err = b
            .create_frame("north.sales.events", &other, &[], true)
            .await
            .expect_err("different schema");
        assert!(
            matches!(err, Error::AlreadyExists(_)) && err.to_string().contains("different schema"),
            "{err}"
        );
        assert!(matches!(
            a.create_frame("nowhere.x.y", &other, &[], false).await,
            Err(Error::NotFound(_))
        ));

        a.write(
            "north.sales.events",
            &[events(0..4, "d")],
            WriteMode::Append,
        )
        .await
        .expect("write");
        a.drop_frame("north.sales.events", false)
            .await
            .expect("drop");
        assert!(matches!(
            a.frame("north.sales.events").await,
            Err(Error::NotFound(_))
        ));
        // Created again, it starts empty: the old ledger is not resurrected.
        a.create_frame("north.sales.events", &events_schema(), &[], false)
            .await
            .expect("recreate");
        assert_eq!(
            a.frame("north.sales.events").await.expect("frame").1.rows(),
            0
        );
        let report = a.vacuum(Duration::ZERO).await.expect("vacuum");
        assert!(report.dropped_frame_objects >= 3, "{report:?}");
    });
}

#[test]
fn an_overwrite_removes_appends_that_committed_before_it_and_keeps_later_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let rt = runtime();
    let lake = rt.block_on(new_events_lake(dir.path()));
    let mut appender = spawn_writer(dir.path(), 0, 100_000);
    // Let the other process append for a while, then overwrite while it keeps appending.
    rt.block_on(async {
        for _ in 0..200 {
            if lake.frame("events").await.expect("frame").1.version >= 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let overwrite = rt
        .block_on(lake.write("events", &[events(-3..0, "d")], WriteMode::Overwrite))
        .expect("overwrite");
    std::thread::sleep(Duration::from_millis(300));
    appender.kill().expect("kill");
    appender.wait().expect("reap");
    rt.block_on(async {
        let (_, state) = lake.frame("events").await.expect("frame");
        assert!(
            overwrite.version > 20,
            "appends committed before the overwrite"
        );
        // Everything appended before the overwrite is gone; everything after is kept.
        let later = state.version - overwrite.version;
        assert_eq!(state.rows(), 3 + later);
        let ids = ids_of(&read_frame(&lake, "events").await);
        assert_eq!(&ids[..3], &[-3, -2, -1]);
        assert!(
            ids[3..]
                .iter()
                .all(|id| *id >= overwrite.version as i64 - 1),
            "{ids:?}"
        );
    });
}
