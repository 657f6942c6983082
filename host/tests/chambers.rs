//! The host against real chambers: the DataFusion guest and a hostile guest, both built by
//! `just build-guest`, run under wasmtime with their limits.
//!
//! Tests share one compiled engine per guest and one set of TPC-H files (SF 0.1), and run one
//! at a time (`serial()`), so the timing-sensitive parallelism check sees an idle machine.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::{serial, tmp_root};

use apiary_host::{
    BeePool, CellFiles, ChamberEngine, Error, Fragment, FragmentOutput, GuestErrorKind, PoolConfig,
    TableCells, find_component, find_guest, generate_tpch,
};
use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

const MIB: u64 = 1 << 20;
const SCALE: f64 = 0.1;

/// TPC-H SF 0.1 tables as Parquet, generated once into the target dir.
fn tpch(table: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    generate_tpch(&tmp_root().join("tpch-sf0.1"), table, SCALE).expect("TPC-H data")
}

fn engine() -> Arc<ChamberEngine> {
    static ENGINE: OnceLock<Arc<ChamberEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let guest = find_guest().expect("run `just build-guest` first");
            Arc::new(
                ChamberEngine::new(&guest, &tmp_root().join("cwasm"), 1 << 30, 8)
                    .expect("chamber engine"),
            )
        })
        .clone()
}

fn evil_engine() -> Arc<ChamberEngine> {
    static ENGINE: OnceLock<Arc<ChamberEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let guest = find_component("apiary_evil_guest.wasm").expect("run `just build-guest`");
            Arc::new(
                ChamberEngine::new(&guest, &tmp_root().join("cwasm"), 256 * MIB, 4)
                    .expect("evil engine"),
            )
        })
        .clone()
}

fn pool(
    engine: Arc<ChamberEngine>,
    bees: usize,
    budget: u64,
    deadline: Duration,
) -> (BeePool, tempfile::TempDir) {
    let scratch = tempfile::tempdir().expect("scratch root");
    let pool = BeePool::new(
        engine,
        PoolConfig {
            bees,
            budget,
            deadline,
            scratch_root: scratch.path().to_path_buf(),
        },
    )
    .expect("pool");
    (pool, scratch)
}

/// A fragment over the named TPC-H tables, each one cell.
fn fragment(sql: &str, tables: &[&str]) -> Fragment {
    let paths: Vec<PathBuf> = tables.iter().map(|t| tpch(t)).collect();
    let files = CellFiles::open(&paths).expect("cells");
    let cells = files.cells();
    let tables = tables
        .iter()
        .zip(cells)
        .map(|(name, cell)| TableCells {
            name: (*name).to_owned(),
            cells: vec![cell],
            schema: None,
        })
        .collect();
    Fragment::new(sql, tables, Arc::new(files))
}

fn evil(command: &str) -> Fragment {
    Fragment::new(
        command,
        Vec::new(),
        Arc::new(CellFiles::open(Vec::<PathBuf>::new()).expect("no cells")),
    )
}

fn pretty(output: &FragmentOutput) -> String {
    pretty_format_batches(&output.batches)
        .expect("format")
        .to_string()
}

/// Plain DataFusion, natively, one partition, over the same files.
fn native(sql: &str, tables: &[&str]) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        for table in tables {
            let path = tpch(table);
            ctx.register_parquet(
                *table,
                path.to_str().expect("utf-8 path"),
                ParquetReadOptions::default(),
            )
            .await
            .expect("register");
        }
        let batches = ctx
            .sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        pretty_format_batches(&batches).expect("format").to_string()
    })
}

const DIFFERENTIAL: &[(&str, &[&str])] = &[
    // Filter + GROUP BY with SUM/COUNT/AVG (TPC-H Q1).
    (
        "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, \
         sum(l_extendedprice) AS sum_base_price, \
         sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price, \
         sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge, \
         avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price, \
         avg(l_discount) AS avg_disc, count(*) AS count_order \
         FROM lineitem WHERE l_shipdate <= DATE '1998-12-01' - INTERVAL '90' DAY \
         GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus",
        &["lineitem"],
    ),
    // Filters and a global SUM (TPC-H Q6).
    (
        "SELECT sum(l_extendedprice * l_discount) AS revenue FROM lineitem \
         WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01' \
         AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24",
        &["lineitem"],
    ),
    // Projection + filter, every matching row.
    (
        "SELECT l_orderkey, l_linenumber, l_shipmode, l_comment FROM lineitem \
         WHERE l_quantity >= 50 AND l_shipmode IN ('AIR', 'RAIL') \
         ORDER BY l_orderkey, l_linenumber",
        &["lineitem"],
    ),
    // MIN/MAX over dates, decimals and strings.
    (
        "SELECT l_shipmode, min(l_shipdate), max(l_receiptdate), min(l_extendedprice), \
         max(l_extendedprice), min(l_comment), count(DISTINCT l_suppkey) \
         FROM lineitem GROUP BY l_shipmode ORDER BY l_shipmode",
        &["lineitem"],
    ),
    // ORDER BY + LIMIT (top-k).
    (
        "SELECT l_orderkey, l_linenumber, l_extendedprice FROM lineitem \
         ORDER BY l_extendedprice DESC, l_orderkey, l_linenumber LIMIT 15",
        &["lineitem"],
    ),
    // A join of two tables inside one fragment (TPC-H Q4-like).
    (
        "SELECT o_orderpriority, count(*) AS order_count, sum(l_extendedprice) AS value \
         FROM orders JOIN lineitem ON l_orderkey = o_orderkey \
         WHERE o_orderdate >= DATE '1993-07-01' AND o_orderdate < DATE '1993-10-01' \
         AND l_commitdate < l_receiptdate \
         GROUP BY o_orderpriority ORDER BY o_orderpriority",
        &["orders", "lineitem"],
    ),
];

#[test]
fn chamber_answers_equal_native_datafusion() {
    let _serial = serial();
    let (pool, _scratch) = pool(engine(), 2, 512 * MIB, Duration::from_secs(120));
    for (sql, tables) in DIFFERENTIAL {
        let output = pool
            .run(fragment(sql, tables))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(output.stats.rows > 0, "{sql} returned no rows");
        assert_eq!(pretty(&output), native(sql, tables), "{sql}");
        // Planning is part of the chamber's time, and never all of it.
        let stats = &output.stats;
        assert!(
            stats.planning > Duration::ZERO && stats.planning < stats.elapsed,
            "{sql}: {stats:?}"
        );
    }
}

#[test]
fn sql_errors_come_back_with_datafusion_text() {
    let _serial = serial();
    let (pool, _scratch) = pool(engine(), 1, 256 * MIB, Duration::from_secs(60));
    let err = pool
        .run(fragment(
            "SELECT no_such_column FROM lineitem",
            &["lineitem"],
        ))
        .expect_err("unknown column");
    match err {
        Error::GuestError {
            kind: GuestErrorKind::Sql,
            message,
            ..
        } => {
            assert!(message.contains("no_such_column"), "{message}")
        }
        other => panic!("expected a SQL error, got {other:?}"),
    }
}

#[test]
fn a_fragment_past_its_budget_is_memory_exceeded_and_the_pool_keeps_answering() {
    let _serial = serial();
    let budget = 64 * MIB;
    let (pool, _scratch) = pool(engine(), 2, budget, Duration::from_secs(120));
    let hog = pool
        .submit(fragment(
            "SELECT array_agg(concat(l_comment, l_comment, l_comment, l_comment)) FROM lineitem",
            &["lineitem"],
        ))
        .expect("submit");
    let q6 = DIFFERENTIAL[1];
    let meanwhile = pool.submit(fragment(q6.0, q6.1)).expect("submit");

    match hog.recv().expect("answer") {
        Err(Error::MemoryExceeded {
            budget: b, peak, ..
        }) => {
            assert_eq!(b, budget);
            assert!(peak <= budget, "peak {peak} above the budget {budget}");
        }
        other => panic!("expected MemoryExceeded, got {other:?}"),
    }
    let answer = meanwhile
        .recv()
        .expect("answer")
        .expect("the other chamber answers");
    assert_eq!(pretty(&answer), native(q6.0, q6.1));
    // Both bees are still there afterwards.
    for _ in 0..2 {
        let again = pool.run(fragment(q6.0, q6.1)).expect("bee reused");
        assert_eq!(again.stats.rows, 1);
    }
    assert!(
        rss_bytes() < 3 << 30,
        "host RSS {} after the hog",
        rss_bytes()
    );
}

#[test]
fn a_fragment_that_runs_forever_stops_at_its_deadline_and_the_bee_is_reused() {
    let _serial = serial();
    let deadline = Duration::from_secs(2);
    let (pool, _scratch) = pool(engine(), 1, 256 * MIB, deadline);
    let forever = fragment(
        "SELECT max(a.l_orderkey * b.l_partkey + a.l_suppkey) FROM lineitem a CROSS JOIN lineitem b",
        &["lineitem"],
    );
    let started = Instant::now();
    let err = pool
        .run(forever)
        .expect_err("a cross join of 600k x 600k rows cannot finish");
    let took = started.elapsed();
    assert!(
        matches!(err, Error::Timeout { bee: 0, limit, .. } if limit == deadline),
        "{err:?}"
    );
    assert!(
        took < deadline + Duration::from_secs(1),
        "stopped after {took:?}"
    );
    let q6 = DIFFERENTIAL[1];
    let again = pool
        .run(fragment(q6.0, q6.1))
        .expect("the same bee answers next");
    assert_eq!(again.stats.bee, 0);
    assert_eq!(pretty(&again), native(q6.0, q6.1));
}

#[test]
fn a_closed_pool_leaves_no_scratch_directory() {
    let _serial = serial();
    let root = tempfile::tempdir().expect("root");
    let scratch = root.path().join("scratch");
    let pool = BeePool::new(
        engine(),
        PoolConfig {
            bees: 2,
            budget: 256 * MIB,
            deadline: Duration::from_secs(60),
            scratch_root: scratch.clone(),
        },
    )
    .expect("pool");
    assert!(scratch.join("bee-1").is_dir());
    let output = pool
        .run(fragment("SELECT count(*) AS n FROM nation", &["nation"]))
        .expect("runs");
    assert_eq!(output.stats.rows, 1);
    drop(pool);
    assert!(!scratch.exists(), "{} is left", scratch.display());
    // A root holding something else stays, without the bees' directories.
    std::fs::create_dir_all(&scratch).expect("root");
    std::fs::write(scratch.join("keep"), b"x").expect("file");
    let pool = BeePool::new(
        engine(),
        PoolConfig {
            bees: 1,
            budget: 256 * MIB,
            deadline: Duration::from_secs(60),
            scratch_root: scratch.clone(),
        },
    )
    .expect("pool");
    drop(pool);
    assert!(scratch.join("keep").is_file());
    assert!(!scratch.join("bee-0").exists());
}

#[test]
fn two_chambers_run_in_parallel() {
    let _serial = serial();
    let (pool, _scratch) = pool(engine(), 2, 512 * MIB, Duration::from_secs(120));
    // Heavy enough (string hashing over 600k rows) that start-up noise does not matter.
    let sql = "SELECT count(DISTINCT l_comment), count(DISTINCT concat(l_partkey, '-', l_suppkey)), \
               sum(l_extendedprice * (1 - l_discount)) FROM lineitem";
    pool.run(fragment(sql, &["lineitem"])).expect("warm-up");
    // Run one after the other, two fragments would take at least the sum of their own
    // times; side by side, about the longer of them. Comparing with the fragments' own
    // times, measured in the same run, keeps a slow or busy machine from deciding.
    let mut best = f64::MAX;
    for _ in 0..2 {
        let started = Instant::now();
        let a = pool.submit(fragment(sql, &["lineitem"])).expect("submit");
        let b = pool.submit(fragment(sql, &["lineitem"])).expect("submit");
        let (a, b) = (
            a.recv().expect("a").expect("a"),
            b.recv().expect("b").expect("b"),
        );
        let two = started.elapsed();
        assert_ne!(a.stats.bee, b.stats.bee, "both fragments ran on one bee");
        assert_eq!(pretty(&a), pretty(&b));
        let serial = a.stats.elapsed + b.stats.elapsed;
        best = best.min(two.as_secs_f64() / serial.as_secs_f64());
    }
    assert!(
        best < 0.8,
        "two concurrent fragments took {best:.2} of the sum of their own times"
    );
}

#[test]
fn reading_one_column_moves_a_small_fraction_of_the_cell() {
    let _serial = serial();
    let (pool, _scratch) = pool(engine(), 1, 256 * MIB, Duration::from_secs(60));
    let frag = fragment("SELECT sum(l_quantity) FROM lineitem", &["lineitem"]);
    let size = frag.tables[0].cells[0].size;
    let output = pool.run(frag).expect("query");
    assert_eq!(
        pretty(&output),
        native("SELECT sum(l_quantity) FROM lineitem", &["lineitem"])
    );
    let read = output.stats.bytes_read;
    assert!(read > 0);
    assert!(
        (read as f64) < 0.10 * size as f64,
        "read {read} of the cell's {size} bytes for one of 16 columns"
    );
}

#[test]
fn a_guest_cannot_reach_outside_its_scratch_dir() {
    let _serial = serial();
    let (pool, scratch) = pool(evil_engine(), 1, 64 * MIB, Duration::from_secs(10));
    // A secret next to the bee's scratch dir, and one at an absolute path.
    std::fs::write(scratch.path().join("secret"), "do not read").expect("secret");
    let absolute = scratch.path().join("secret");
    for path in [
        "../secret".to_owned(),
        "/scratch/../secret".to_owned(),
        "/scratch/../../etc/passwd".to_owned(),
        "/etc/passwd".to_owned(),
        absolute.display().to_string(),
    ] {
        match pool.run(evil(&format!("read {path}"))) {
            Err(Error::GuestError {
                kind: GuestErrorKind::Io,
                ..
            }) => {}
            other => panic!("reading {path} should fail, got {other:?}"),
        }
    }
    assert!(matches!(
        pool.run(evil("list /")),
        Err(Error::GuestError {
            kind: GuestErrorKind::Io,
            ..
        })
    ));
    assert!(matches!(
        pool.run(evil("write ../escaped")),
        Err(Error::GuestError {
            kind: GuestErrorKind::Io,
            ..
        })
    ));
    assert!(!scratch.path().join("escaped").exists());
    // Its own scratch dir works, and is emptied after the task.
    let ok = pool
        .run(evil("write /scratch/own"))
        .expect("scratch is writable");
    assert_eq!(ok.stats.rows, 6);
    let bee_dir = scratch.path().join("bee-0");
    assert_eq!(std::fs::read_dir(&bee_dir).expect("bee dir").count(), 0);
    // No environment leaks in.
    assert_eq!(pool.run(evil("env")).expect("env").stats.rows, 0);
}

#[test]
fn hostile_guests_are_contained_and_the_bee_survives() {
    let _serial = serial();
    let budget = 64 * MIB;
    let (pool, _scratch) = pool(evil_engine(), 1, budget, Duration::from_secs(1));
    match pool.run(evil("alloc 500000000")) {
        Err(Error::MemoryExceeded {
            budget: b,
            requested,
            ..
        }) => {
            assert_eq!(b, budget);
            assert!(requested > budget);
        }
        other => panic!("expected MemoryExceeded, got {other:?}"),
    }
    let started = Instant::now();
    assert!(matches!(pool.run(evil("spin")), Err(Error::Timeout { .. })));
    assert!(started.elapsed() < Duration::from_secs(2));
    match pool.run(evil("print 10000000")) {
        // Writing past the stderr cap traps; the report quotes only a bounded tail.
        Err(Error::Trap { message, .. }) => {
            assert!(message.contains("guest stderr ends with"), "{message}");
            assert!(
                message.len() < 16 << 10,
                "a trap report of {} bytes",
                message.len()
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // A modest allocation still works in the same bee afterwards.
    assert_eq!(
        pool.run(evil("alloc 8000000")).expect("alloc").stats.rows,
        8_000_000
    );
}

#[test]
fn a_chamber_finds_its_memory_zeroed_after_another_filled_it() {
    let _serial = serial();
    let budget = 256 * MIB;
    // One bee, so the second chamber takes the memory slot the first one left: however the
    // pool resets a slot, none of the first chamber's bytes may show through.
    let (pool, _scratch) = pool(evil_engine(), 1, budget, Duration::from_secs(10));
    for _ in 0..3 {
        assert_eq!(
            pool.run(evil("alloc 100000000")).expect("alloc").stats.rows,
            100_000_000
        );
        assert_eq!(
            pool.run(evil("residue 120000000"))
                .expect("residue")
                .stats
                .rows,
            0,
            "bytes of an earlier chamber were visible"
        );
    }
}

#[test]
fn a_missing_guest_is_a_clear_error() {
    let err = ChamberEngine::new(Path::new("/nonexistent/guest.wasm"), &tmp_root(), MIB, 1)
        .expect_err("no guest");
    assert!(err.to_string().contains("/nonexistent/guest.wasm"), "{err}");
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
