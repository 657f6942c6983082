//! Statements split across fragments: data far larger than one bee's budget is answered by
//! several chambers and a merge, with the host's memory bounded; a join too big for a bee's
//! pool runs again as a sort-merge join that spills; and a statement that cannot fit fails
//! with `MemoryExceeded` naming its fragment.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use support::tmp_root;

use apiary_host::{
    BeePool, ChamberEngine, Error, Lake, MergeKind, PoolConfig, QuerySession, WriteMode,
    find_guest, generate_tpch,
};
use arrow::array::RecordBatchReader;
use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const MIB: u64 = 1 << 20;
const BUDGET: u64 = 64 * MIB;
const BEES: usize = 2;
const SCALE: f64 = 0.5;
const CHUNK_ROWS: usize = 200_000;

const Q1: &str = "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, \
    sum(l_extendedprice) AS sum_base_price, sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price, \
    sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge, avg(l_quantity) AS avg_qty, \
    avg(l_extendedprice) AS avg_price, avg(l_discount) AS avg_disc, count(*) AS count_order, \
    count(DISTINCT l_suppkey) AS suppliers \
    FROM lineitem WHERE l_shipdate <= DATE '1998-12-01' - INTERVAL '90' DAY \
    GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus";

/// A self-join whose build side (about 84 MB of keys and quantities) cannot fit a bee's pool.
const SELF_JOIN: &str = "SELECT count(*) AS pairs, sum(a.l_quantity) AS quantity, \
    max(b.l_shipdate) AS last_ship FROM lineitem a JOIN lineitem b \
    ON a.l_orderkey = b.l_orderkey AND a.l_linenumber = b.l_linenumber";

/// Each line with the lines of the next order shipped the same day: joined on a computed
/// order key and a date, so no integer key's ranges split it.
const NEXT_ORDER_JOIN: &str = "SELECT count(*) AS pairs, sum(a.l_quantity) AS quantity, \
    max(b.l_shipdate) AS last_ship FROM lineitem a JOIN lineitem b \
    ON a.l_orderkey = b.l_orderkey + 1 AND a.l_shipdate = b.l_shipdate";

const TOP: &str = "SELECT l_orderkey, l_linenumber, l_extendedprice FROM lineitem \
    ORDER BY l_extendedprice DESC, l_orderkey, l_linenumber LIMIT 10";

/// Resident memory of this process in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// Samples resident memory until dropped; reports the peak.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(rss()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Self {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("watcher");
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Every file the bees left under the scratch root `dir` (the root's `.lock`, which the
/// pool holds while it lives, is not theirs).
fn spill_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(spill_files(&path));
        } else if path.file_name().is_none_or(|name| name != ".lock") {
            files.push(path);
        }
    }
    files
}

fn pretty(batches: &[arrow::record_batch::RecordBatch]) -> String {
    pretty_format_batches(batches).expect("format").to_string()
}

#[test]
fn data_far_larger_than_a_bee_is_split_with_host_memory_bounded() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let parquet = generate_tpch(&tmp_root().join("tpch-sf0.5"), "lineitem", SCALE).expect("TPC-H");
    let dir = tempfile::tempdir().expect("dir");
    let scratch = tempfile::tempdir().expect("scratch");
    let guest = find_guest().expect("run `just build-guest` first");
    let engine = Arc::new(
        // The same engine settings as the other suites, so the compiled guest is reused.
        ChamberEngine::new(&guest, &tmp_root().join("cwasm"), 1 << 30, 4).expect("engine"),
    );
    let pool = Arc::new(
        BeePool::new(
            engine,
            PoolConfig {
                bees: BEES,
                budget: BUDGET,
                deadline: Duration::from_secs(300),
                scratch_root: scratch.path().to_path_buf(),
            },
        )
        .expect("pool"),
    );

    rt.block_on(async {
        // Load the frame in chunks so the test itself never holds the data.
        let lake = Lake::open(&format!("file://{}", dir.path().display()))
            .await
            .expect("open");
        let reader = ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&parquet).expect("open parquet"),
        )
        .expect("parquet")
        .with_batch_size(CHUNK_ROWS)
        .build()
        .expect("reader");
        lake.create_frame("lineitem", reader.schema().as_ref(), &[], false)
            .await
            .expect("frame");
        let mut decoded = 0u64;
        let mut rows = 0usize;
        for batch in reader {
            let batch = batch.expect("batch");
            decoded += batch.get_array_memory_size() as u64;
            rows += batch.num_rows();
            lake.write("lineitem", &[batch], WriteMode::Append)
                .await
                .expect("write");
        }
        assert!(rows > 2_900_000, "{rows} rows");
        assert!(
            decoded > 4 * BUDGET,
            "the data ({decoded} bytes decoded) must dwarf a bee's budget"
        );

        let native =
            SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        native
            .register_parquet(
                "lineitem",
                parquet.to_str().expect("utf-8"),
                ParquetReadOptions::default(),
            )
            .await
            .expect("register");
        let mut expected = Vec::new();
        for sql in [Q1, TOP] {
            let batches = native.sql(sql).await.expect("plan").collect().await;
            expected.push(pretty(&batches.expect("native")));
        }
        let self_join = native.sql(SELF_JOIN).await.expect("plan").collect().await;
        let self_join = pretty(&self_join.expect("native self-join"));
        let next_order = native.sql(NEXT_ORDER_JOIN).await.expect("plan").collect().await;
        let next_order = pretty(&next_order.expect("native join"));
        drop(native);

        let mut session = QuerySession::new(Arc::new(lake), pool.clone());
        // The first chambers page in the compiled guest's code (shared, file-backed, a
        // one-time cost); warm up so the measurement sees what a query itself holds.
        session
            .sql("SELECT max(l_comment) FROM lineitem")
            .await
            .expect("warm-up");
        for (sql, expected) in [Q1, TOP].into_iter().zip(expected) {
            let before = rss();
            let watch = RssWatch::start();
            let output = session
                .sql(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let grew = watch.peak().saturating_sub(before);
            assert_eq!(pretty(&output.batches), expected, "{sql}");
            assert!(
                output.fragments.len() >= 4,
                "{} fragments for {} cells",
                output.fragments.len(),
                output.cells_scanned
            );
            for run in &output.fragments {
                assert!(
                    run.stats.peak_memory <= BUDGET,
                    "{}: {:?}",
                    run.label,
                    run.stats
                );
                assert!(run.stats.bytes_read > 0, "{}", run.label);
                // Planning is part of the chamber's time, and never all of it.
                assert!(
                    run.stats.planning > Duration::ZERO && run.stats.planning < run.stats.elapsed,
                    "{}: {:?}",
                    run.label,
                    run.stats
                );
            }
            let merge = output.merge.expect("a merge");
            assert!(matches!(
                merge.kind,
                MergeKind::FinalAggregate | MergeKind::TopK
            ));
            assert!(merge.stats.is_some(), "the merge ran in a chamber");
            // The host holds at most the chambers' memory and the small partial results,
            // never the data.
            let bound = BEES as u64 * BUDGET + 64 * MIB;
            assert!(
                grew < bound,
                "host RSS grew by {} MiB (bound {} MiB) for {decoded} bytes of data",
                grew / MIB,
                bound / MIB
            );
            eprintln!(
                "{} fragments (peak chamber {} MiB, merge {} MiB), host RSS grew {} MiB over {} MiB of decoded data",
                output.fragments.len(),
                output.fragments.iter().map(|r| r.stats.peak_memory).max().unwrap_or(0) / MIB,
                merge.stats.as_ref().map_or(0, |s| s.peak_memory) / MIB,
                grew / MIB,
                decoded / MIB
            );
        }

        // EXPLAIN ANALYZE names every fragment and the merge.
        let explain = session
            .sql(&format!("EXPLAIN ANALYZE {Q1}"))
            .await
            .expect("explain");
        let text = pretty(&explain.batches);
        assert!(text.contains("fragment 1 of "), "{text}");
        assert!(text.contains("final aggregation"), "{text}");
        assert!(text.contains("bytes of partial results"), "{text}");
        // Each fragment's line gives the part of its chamber time that went to planning.
        let fragments: Vec<&str> = text.lines().filter(|l| l.contains("| fragment ")).collect();
        assert!(fragments.len() >= 2, "{text}");
        for line in fragments {
            assert!(line.contains(" ms (planning "), "{line}");
        }


        // The self-join on the order key is split by its ranges (the cells were written in
        // key order): each fragment builds the hash table of its range only, which fits.
        let output = session
            .sql(SELF_JOIN)
            .await
            .unwrap_or_else(|e| panic!("{SELF_JOIN}: {e}"));
        assert_eq!(pretty(&output.batches), self_join);
        assert!(output.fragments.len() >= 4, "{:?}", output.fragments);
        for run in &output.fragments {
            assert!(!run.stats.sort_merge_joins, "{}: {:?}", run.label, run.stats);
            assert!(run.stats.peak_memory <= BUDGET, "{:?}", run.stats);
        }

        // Joined on a computed key and a date, the self-join runs whole, and its hash table
        // does not fit a bee's pool: the fragment runs again with sort-merge joins, which
        // spill to the bee's scratch directory, and answers as DataFusion does.
        let output = session
            .sql(NEXT_ORDER_JOIN)
            .await
            .unwrap_or_else(|e| panic!("{NEXT_ORDER_JOIN}: {e}"));
        assert_eq!(pretty(&output.batches), next_order);
        let [run] = output.fragments.as_slice() else {
            panic!("a join runs whole: {:?}", output.fragments);
        };
        assert!(run.stats.sort_merge_joins, "{:?}", run.stats);
        assert!(run.stats.peak_memory <= BUDGET, "{:?}", run.stats);
        let left = spill_files(scratch.path());
        assert!(left.is_empty(), "spill files left behind: {left:?}");

        // Every distinct comment of three million rows cannot fit one bee: the statement
        // fails with MemoryExceeded naming the fragment that hit the wall.
        match session
            .sql("SELECT count(DISTINCT l_comment) FROM lineitem")
            .await
        {
            Err(err @ Error::MemoryExceeded { .. }) => {
                let Error::MemoryExceeded { fragment, .. } = &err else {
                    unreachable!()
                };
                assert!(
                    fragment.starts_with("the merge") || fragment.starts_with("fragment "),
                    "{fragment}"
                );
                assert!(err.to_string().contains(fragment.as_str()), "{err}");
            }
            other => panic!("expected MemoryExceeded, got {other:?}"),
        }
        // The bees keep answering.
        let again = session.sql(TOP).await.expect("after the failure");
        assert_eq!(
            again.batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            10
        );
    });
}
