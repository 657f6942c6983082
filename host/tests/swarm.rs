//! The swarm with real processes: `apiary node`s sharing one lake (a directory, or a
//! bucket on the S3 test server), killed with SIGKILL, frozen with SIGSTOP, stopped with
//! SIGTERM, and `apiary sql` coordinating distributed statements through the lake.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiary_host::{Lake, Meadow, S3Options, TPCH_QUERIES, WriteMode, generate_tpch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

mod support;

use support::s3::S3Server;
use support::{runtime, serial, tmp_root};

/// Heartbeat interval of the test nodes, in seconds.
const HEARTBEAT: u64 = 1;

const TABLES: [&str; 8] = [
    "lineitem", "orders", "customer", "part", "partsupp", "supplier", "nation", "region",
];

/// Where a test's lake lives: a local directory, or a prefix on its own S3 test server.
struct TestLake {
    uri: String,
    server: Option<S3Server>,
    meadow: Meadow,
}

impl TestLake {
    fn local(dir: &Path) -> Self {
        let uri = dir.join("lake").to_str().expect("utf-8").to_owned();
        let meadow = Meadow::open(&uri).expect("meadow");
        Self {
            uri,
            server: None,
            meadow,
        }
    }

    fn s3(prefix: &str) -> Self {
        let server = S3Server::start();
        Self {
            uri: server.lake(prefix),
            meadow: server.meadow(prefix),
            server: Some(server),
        }
    }

    fn options(&self) -> S3Options {
        self.server
            .as_ref()
            .map_or_else(S3Options::default, S3Server::options)
    }

    /// Objects and directories directly under `prefix`.
    fn count(&self, prefix: &str) -> usize {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (objects, dirs) = rt
            .block_on(self.meadow.list_dir(prefix))
            .expect("list the lake");
        objects.len() + dirs.len()
    }
}

/// The binary on `lake` with a private home and the shared compiled guest.
fn command(lake: &TestLake, home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_apiary"));
    if let Some(server) = &lake.server {
        server.credentials(&mut command);
    }
    command
        .env("APIARY_CACHE_DIR", tmp_root().join("cwasm"))
        .env("APIARY_CELL_CACHE_DIR", home.join("cells"))
        .env("APIARY_HEARTBEAT_SECS", HEARTBEAT.to_string())
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("APIARY_CONFIG")
        .env_remove("APIARY_LAKE")
        .env_remove("APIARY_BEES")
        .env_remove("APIARY_BUDGET_MIB")
        .env_remove("APIARY_DISTRIBUTE")
        .env_remove("RUST_LOG")
        .args(["--lake", &lake.uri]);
    command
}

/// A running `apiary node` and the lines it wrote to stderr, with when they arrived.
struct Node {
    id: String,
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Node {
    fn start(root: &Path, lake: &TestLake, name: &str) -> Self {
        let home = root.join(name);
        std::fs::create_dir_all(&home).expect("home");
        let mut child = command(lake, &home)
            .args(["--bees", "1", "--budget-mib", "64", "node", "--node-dir"])
            .arg(&home)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut lines) = sink.lock() {
                    lines.push((Instant::now(), line));
                }
            }
        });
        let mut node = Self {
            id: String::new(),
            child,
            lines,
        };
        let joined = node.wait_for(" joined ", Duration::from_secs(180));
        node.id = joined
            .1
            .split_whitespace()
            .nth(1)
            .expect("node id")
            .to_owned();
        node
    }

    /// The first line containing `text`, waiting up to `timeout` for it.
    fn wait_for(&self, text: &str, timeout: Duration) -> (Instant, String) {
        let started = Instant::now();
        loop {
            if let Some(found) = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find(|(_, l)| l.contains(text))
            {
                return found.clone();
            }
            assert!(
                started.elapsed() < timeout,
                "no line with `{text}` within {timeout:?}; got:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn heartbeat_files(lake: &TestLake) -> usize {
    lake.count("_heartbeats")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `apiary sql` as a client of the swarm (not a node itself).
fn sql(root: &Path, lake: &TestLake, distribute: &str, statements: &[&str]) -> Command {
    let home = root.join("client");
    std::fs::create_dir_all(&home).expect("home");
    let mut command = command(lake, &home);
    command
        .args([
            "-v",
            "--bees",
            "2",
            "--budget-mib",
            "256",
            "--distribute",
            distribute,
            "sql",
            "--format",
            "csv",
        ])
        .args(statements);
    command
}

/// `lake`, filled with TPC-H SF 0.01 in `tpch.part`, lineitem partitioned by ship mode (7
/// cells) and orders by priority (5 cells).
fn tpch_lake(lake: TestLake) -> TestLake {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let lake = Lake::open_with(&lake.uri, &lake.options())
            .await
            .expect("open");
        lake.create_hive("tpch", false).await.expect("hive");
        lake.create_box("tpch", "part", false).await.expect("box");
        for table in TABLES {
            let file = generate_tpch(&tmp_root().join("tpch-sf0.01"), table, 0.01).expect("tpch");
            let batches: Vec<_> =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).expect("open"))
                    .expect("parquet")
                    .build()
                    .expect("reader")
                    .collect::<Result<_, _>>()
                    .expect("batches");
            let partition: &[&str] = match table {
                "lineitem" => &["l_shipmode"],
                "orders" => &["o_orderpriority"],
                _ => &[],
            };
            let name = format!("tpch.part.{table}");
            lake.create_frame(&name, &batches[0].schema(), partition, false)
                .await
                .expect("frame");
            lake.write(&name, &batches, WriteMode::Append)
                .await
                .expect("write");
        }
    });
    lake
}

/// `tpch.part.big`: one cell of 600 000 rows (`k` 0..600 000), enough to cut into slices.
fn add_one_large_cell(lake: &TestLake) {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(0..600_000))],
    )
    .expect("batch");
    runtime().block_on(async {
        let lake = Lake::open_with(&lake.uri, &lake.options())
            .await
            .expect("open");
        lake.create_frame("tpch.part.big", &schema, &[], false)
            .await
            .expect("frame");
        let written = lake
            .write("tpch.part.big", &[batch], WriteMode::Append)
            .await
            .expect("write");
        assert_eq!(written.cells, 1);
    });
}

/// `EXPLAIN ANALYZE query` in `tpch.part`, distributed always: its output.
fn explain_analyze(root: &Path, lake: &TestLake, query: &str) -> String {
    let explain = format!("EXPLAIN ANALYZE {query}");
    let out = sql(root, lake, "always", &["USE tpch.part", &explain])
        .output()
        .expect("explain");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// Start `names` as nodes and wait until each has seen every other one alive.
fn swarm(root: &Path, lake: &TestLake, names: &[&str]) -> Vec<Node> {
    let nodes: Vec<Node> = names.iter().map(|n| Node::start(root, lake, n)).collect();
    for node in &nodes {
        for other in nodes.iter().filter(|o| o.id != node.id) {
            node.wait_for(
                &format!("world: {} alive", other.id),
                Duration::from_secs(30),
            );
        }
    }
    nodes
}

fn queries_in_flight(lake: &TestLake) -> usize {
    lake.count("_queries")
}

/// Query directories left once `apiary sql` has returned, waiting up to 5 s for removals on
/// a loaded machine to settle.
fn queries_left(lake: &TestLake) -> usize {
    let started = Instant::now();
    loop {
        let left = queries_in_flight(lake);
        if left == 0 || started.elapsed() > Duration::from_secs(5) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn nodes_discover_each_other_and_see_a_kill_and_a_departure() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("dir");
    discovery(dir.path(), &TestLake::local(dir.path()));
}

#[test]
fn on_s3_nodes_discover_each_other_and_see_a_kill_and_a_departure() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("dir");
    discovery(dir.path(), &TestLake::s3("discovery"));
}

fn discovery(root: &Path, lake: &TestLake) {
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::start(root, lake, n))
        .collect();
    // Discovery: within two heartbeat intervals of the last node's first heartbeat, every
    // node has logged the other two alive.
    let started = Instant::now();
    while heartbeat_files(lake) < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "3 heartbeats");
        std::thread::sleep(Duration::from_millis(10));
    }
    let all_beating = Instant::now();
    let interval = Duration::from_secs(HEARTBEAT);
    for node in &nodes {
        for other in nodes.iter().filter(|o| o.id != node.id) {
            let (seen, _) = node.wait_for(
                &format!("world: {} alive", other.id),
                interval * 2 + Duration::from_millis(500),
            );
            let after = seen.saturating_duration_since(all_beating);
            eprintln!(
                "{} saw {} alive {after:?} after the last node's first heartbeat",
                node.id, other.id
            );
            assert!(after <= interval * 2, "{after:?}");
        }
    }

    // kill -9: Suspect after 3 silent intervals, Dead after 10, on both survivors.
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    c.signal("-KILL");
    let killed = Instant::now();
    for node in [a, b] {
        let (suspect, _) =
            node.wait_for(&format!("world: {} suspect", c.id), Duration::from_secs(10));
        let (dead, _) = node.wait_for(&format!("world: {} dead", c.id), Duration::from_secs(20));
        let (suspect, dead) = (suspect - killed, dead - killed);
        eprintln!(
            "{} judged {} suspect after {suspect:?}, dead after {dead:?}",
            node.id, c.id
        );
        // The last heartbeat was written up to one interval before the kill and is seen up
        // to one interval after it was written.
        assert!(
            suspect >= interval * 2 && suspect <= interval * 5,
            "{suspect:?}"
        );
        assert!(dead >= interval * 9 && dead <= interval * 12, "{dead:?}");
    }

    // A graceful stop deletes the heartbeat: the other node sees it leave.
    b.signal("-TERM");
    let stopped = Instant::now();
    let (left, _) = a.wait_for(&format!("world: {} left", b.id), Duration::from_secs(10));
    assert!(
        left - stopped <= interval * 2 + Duration::from_millis(500),
        "{:?}",
        left - stopped
    );
    // And a fresh reader (`apiary status`) shows the survivor alive and the killed node not
    // alive: it judges by the writer's timestamp less the skew allowance, so up to 2 s later
    // than the nodes watching all along.
    let status = command(lake, &root.join("client"))
        .arg("status")
        .output()
        .expect("status");
    let text = stdout(&status);
    assert!(text.contains(&format!("{} alive", a.id)), "{text}");
    assert!(
        text.contains(&format!("{} dead", c.id)) || text.contains(&format!("{} suspect", c.id)),
        "{text}"
    );
    assert!(!text.contains(&b.id), "{text}");
    // A node over a local lake reads its cells in place; over S3 it keeps a cell cache.
    let alive = text
        .lines()
        .find(|l| l.contains(&format!("{} alive", a.id)))
        .expect("the survivor's line");
    match lake.server {
        Some(_) => assert!(alive.contains("; cache 0 of "), "{alive}"),
        None => assert!(alive.contains("; no cell cache"), "{alive}"),
    }
}

#[test]
fn distributed_answers_equal_one_node_and_survive_a_killed_worker() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("dir");
    distributed(dir.path(), &tpch_lake(TestLake::local(dir.path())));
}

#[test]
fn on_s3_distributed_answers_equal_one_node_and_survive_a_killed_worker() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("dir");
    distributed(dir.path(), &tpch_lake(TestLake::s3("distributed")));
}

fn distributed(root: &Path, lake: &TestLake) {
    let mut statements = vec!["USE tpch.part"];
    statements.extend(TPCH_QUERIES.iter().map(|(_, sql)| *sql));

    let alone = sql(root, lake, "never", &statements).output().expect("sql");
    assert!(alone.status.success(), "{}", stderr(&alone));
    let expected = stdout(&alone);
    assert!(expected.lines().count() > 100, "{expected}");

    let nodes = swarm(root, lake, &["a", "b", "c"]);
    let shared = sql(root, lake, "always", &statements)
        .output()
        .expect("sql");
    assert!(shared.status.success(), "{}", stderr(&shared));
    assert_eq!(stdout(&shared), expected, "distributed answers differ");
    let log = stderr(&shared);
    assert!(log.contains("statement distributed"), "{log}");

    // Q1 ran as fragments on all three nodes, merged here.
    let q1 = TPCH_QUERIES[0].1;
    let text = explain_analyze(root, lake, q1);
    assert!(text.contains("on 3 nodes"), "{text}");
    for node in &nodes {
        assert!(text.contains(&format!("node {}, bee 0", node.id)), "{text}");
    }
    // Each node reports the part of its chamber's time that went to planning.
    let remote: Vec<&str> = text.lines().filter(|l| l.contains(", bee 0: ")).collect();
    assert_eq!(remote.len(), nodes.len(), "{text}");
    for line in remote {
        assert!(
            line.contains(" ms (planning ") && !line.contains("(planning 0.0 ms)"),
            "{line}"
        );
    }
    // Q3 joins lineitem to orders and customer: its fragments split lineitem's cells over
    // the three nodes, each reading orders and customer whole.
    let q3 = TPCH_QUERIES
        .iter()
        .find(|(name, _)| *name == "q3")
        .expect("q3")
        .1;
    let text = explain_analyze(root, lake, q3);
    assert!(text.contains("on 3 nodes"), "{text}");
    assert!(text.contains("of tpch.part.lineitem"), "{text}");
    assert_eq!(queries_left(lake), 0, "query directories are removed");

    // A frame of one large cell is cut into slices of its rows, which stay on this node's
    // bees even when distributing always: the swarm shares whole cells.
    add_one_large_cell(lake);
    let big = "SELECT count(*) AS n, sum(k) AS s FROM big";
    let text = explain_analyze(root, lake, big);
    assert!(
        text.contains("2 fragments over 1 cells cut into slices of rows"),
        "{text}"
    );
    assert!(!text.contains("on 3 nodes"), "{text}");
    for node in &nodes {
        assert!(!text.contains(&format!("node {}, bee", node.id)), "{text}");
    }
    let out = sql(root, lake, "always", &["USE tpch.part", big])
        .output()
        .expect("big");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "using tpch.part\nn,s\n600000,179999700000\n");
    assert!(
        !stderr(&out).contains("statement distributed"),
        "{}",
        stderr(&out)
    );

    // kill -9 of a worker mid-query: freeze it first so that it holds its tasks unfinished,
    // start the query, and kill it once the manifest is out.
    let q1_alone = sql(root, lake, "never", &["USE tpch.part", q1])
        .output()
        .expect("q1");
    let victim = &nodes[2];
    victim.signal("-STOP");
    let coordinator = sql(root, lake, "always", &["USE tpch.part", q1])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coordinator");
    let started = Instant::now();
    while queries_in_flight(lake) == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "no manifest");
        std::thread::sleep(Duration::from_millis(10));
    }
    victim.signal("-KILL");
    let out = coordinator.wait_with_output().expect("coordinator");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), stdout(&q1_alone), "answer after reassignment");
    let log = stderr(&out);
    assert!(log.contains("reassigning a task"), "{log}");
    assert!(log.contains(&format!("from={}", victim.id)), "{log}");
}

#[test]
fn a_user_defined_function_runs_in_a_statement_distributed_over_two_nodes() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path();
    let lake = tpch_lake(TestLake::local(root));
    let module = apiary_host::find_component("apiary_example_udf.wasm")
        .expect("run `just build-guest` first");
    let home = root.join("admin");
    std::fs::create_dir_all(&home).expect("home");
    let added = command(&lake, &home)
        .args(["udf", "add"])
        .arg(&module)
        .output()
        .expect("udf add");
    assert!(added.status.success(), "{}", stderr(&added));
    assert_eq!(
        stdout(&added),
        "function add_one(Int64) -> Int64 created\n\
         function discounted(Float64, Float64) -> Float64 created\n"
    );

    let query = |add_one: &str, discounted: &str| {
        format!(
            "SELECT l_returnflag, sum({add_one}) AS s, round(sum({discounted}), 4) AS d, \
             count(*) AS n FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag"
        )
    };
    let built_in = query("l_orderkey + 1", "l_extendedprice * (1 - l_discount)");
    let with_functions = query(
        "add_one(l_orderkey)",
        "discounted(l_extendedprice, l_discount)",
    );
    let alone = sql(root, &lake, "never", &["USE tpch.part", &built_in])
        .output()
        .expect("sql");
    assert!(alone.status.success(), "{}", stderr(&alone));
    assert_eq!(stdout(&alone).lines().count(), 5, "{}", stdout(&alone));

    let nodes = swarm(root, &lake, &["a", "b"]);
    let shared = sql(root, &lake, "always", &["USE tpch.part", &with_functions])
        .output()
        .expect("sql");
    assert!(shared.status.success(), "{}", stderr(&shared));
    assert_eq!(
        stdout(&shared),
        stdout(&alone),
        "the function's answers differ"
    );
    assert!(
        stderr(&shared).contains("statement distributed"),
        "{}",
        stderr(&shared)
    );

    let explain = format!("EXPLAIN ANALYZE {with_functions}");
    let out = sql(root, &lake, "always", &["USE tpch.part", &explain])
        .output()
        .expect("explain");
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("on 2 nodes"), "{text}");
    for node in &nodes {
        assert!(text.contains(&format!("node {}, bee 0", node.id)), "{text}");
    }
    assert_eq!(queries_left(&lake), 0, "query directories are removed");
}

#[test]
fn a_fragment_every_worker_fails_is_abandoned_with_a_diagnostic() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("dir");
    let lake = tpch_lake(TestLake::local(dir.path()));
    let root = dir.path();
    let nodes = swarm(root, &lake, &["a", "b", "c"]);
    // Every worker freezes: each attempt falls silent, and after three the statement gives
    // up, naming every attempt's node and the fragment's cells.
    for node in &nodes {
        node.signal("-STOP");
    }
    let out = sql(
        root,
        &lake,
        "always",
        &[
            "USE tpch.part",
            "SELECT l_shipmode, count(*) FROM lineitem GROUP BY l_shipmode",
        ],
    )
    .output()
    .expect("sql");
    for node in &nodes {
        node.signal("-KILL");
    }
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("was abandoned after 3 attempts"), "{text}");
    for node in &nodes {
        assert!(text.contains(&format!("on node {}", node.id)), "{text}");
    }
    assert!(text.contains("fell silent"), "{text}");
    assert!(
        text.contains("/lineitem/") && text.contains("l_shipmode="),
        "{text}"
    );
    assert!(text.contains("cell_"), "{text}");
    assert!(text.contains("--distribute never"), "{text}");
    assert_eq!(queries_left(&lake), 0, "query directories are removed");
}

async fn small_node(dir: &Path) -> apiary_host::Apiary {
    let mut settings = apiary_host::Settings::for_machine()
        .with_bees(1)
        .with_budget_mib(128)
        .with_cache_dir(tmp_root().join("cwasm"));
    settings.cell_cache_dir = dir.join("cells");
    settings.cell_cache = Some(64 << 20);
    apiary_host::Apiary::open(dir.join("lake").to_str().expect("utf-8"), settings)
        .await
        .expect("open")
}

#[test]
fn a_second_read_of_a_cell_makes_no_storage_request() {
    let dir = tempfile::tempdir().expect("dir");
    runtime().block_on(async {
        let apiary = small_node(dir.path()).await;
        apiary
            .sql("CREATE FRAME t (k BIGINT, v DOUBLE, s VARCHAR)")
            .await
            .expect("create");
        for i in 0..3 {
            apiary
                .sql(&format!(
                    "INSERT INTO t VALUES ({i}, {i}.5, 'x{i}'), ({}, 1.0, 'y')",
                    i + 10
                ))
                .await
                .expect("insert");
        }
        let cache = apiary.cache().expect("the cache is on").clone();
        let (hits, misses) = (cache.hits(), cache.misses());
        let first = apiary
            .sql("SELECT sum(v) AS v FROM t")
            .await
            .expect("first");
        let fetched = cache.misses() - misses;
        assert!(
            fetched >= 3,
            "each of the 3 cells is fetched once: {fetched}"
        );
        assert_eq!(cache.hits(), hits);

        let second = apiary
            .sql("SELECT sum(v) AS v FROM t")
            .await
            .expect("second");
        assert_eq!(first, second);
        assert_eq!(cache.misses() - misses, fetched, "no storage request");
        assert!(cache.hits() - hits >= fetched, "served from the cache");
        assert_eq!(cache.summary().cells.len(), 3);

        // A cache that lost a range (evicted, or deleted behind the node's back) fetches it
        // again and answers the same.
        for entry in std::fs::read_dir(dir.path().join("cells")).expect("cache dir") {
            std::fs::remove_file(entry.expect("entry").path()).expect("remove");
        }
        let third = apiary
            .sql("SELECT sum(v) AS v FROM t")
            .await
            .expect("third");
        assert_eq!(first, third);
        assert_eq!(cache.misses() - misses, 2 * fetched);
    });
}

#[test]
fn a_local_lake_is_read_in_place_unless_a_cell_cache_size_is_set() {
    let dir = tempfile::tempdir().expect("dir");
    runtime().block_on(async {
        let mut settings = apiary_host::Settings::for_machine()
            .with_bees(1)
            .with_budget_mib(128)
            .with_cache_dir(tmp_root().join("cwasm"));
        let cells = dir.path().join("cells");
        settings.cell_cache_dir = cells.clone();
        let lake = dir.path().join("lake");
        let apiary = apiary_host::Apiary::open(lake.to_str().expect("utf-8"), settings)
            .await
            .expect("open");
        assert!(apiary.cache().is_none(), "a local lake has no cell cache");
        apiary
            .sql("CREATE FRAME t (k BIGINT, v DOUBLE)")
            .await
            .expect("create");
        for i in 0..3 {
            apiary
                .sql(&format!(
                    "INSERT INTO t VALUES ({i}, {i}.5), ({}, 1.0)",
                    i + 10
                ))
                .await
                .expect("insert");
        }
        // Every read of every run goes to the lake's files, and nothing is copied aside.
        let sum = "SELECT sum(v) AS v FROM t";
        let first = apiary.query(sum).await.expect("first");
        let second = apiary.query(sum).await.expect("second");
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&first.batches)
                .expect("pretty")
                .to_string(),
            "+-----+\n| v   |\n+-----+\n| 7.5 |\n+-----+"
        );
        let read: u64 = first.fragments.iter().map(|f| f.stats.bytes_read).sum();
        assert!(read > 0);
        assert_eq!(first.storage_reads.0, read);
        assert_eq!(second.storage_reads, first.storage_reads);
        assert!(!cells.exists(), "no cache directory is made");
        let explain = apiary
            .sql(&format!("EXPLAIN ANALYZE {sum}"))
            .await
            .expect("explain");
        let explain = arrow::util::pretty::pretty_format_batches(&explain)
            .expect("pretty")
            .to_string();
        assert!(
            explain.contains(&format!("{read} bytes of cells fetched in ")),
            "{explain}"
        );
        assert!(!explain.contains("cell cache"), "{explain}");
        drop(apiary);

        // Given a size, the same lake is cached like any other.
        let node = small_node(dir.path()).await;
        assert!(node.cache().is_some(), "a size turns the cache on");
        node.sql(sum).await.expect("cached");
        assert!(node.cache().expect("cache").misses() > 0);
        assert!(std::fs::read_dir(&cells).expect("cache dir").count() > 0);
    });
}

#[test]
fn any_node_removes_expired_and_orphaned_query_directories() {
    let dir = tempfile::tempdir().expect("dir");
    runtime().block_on(async {
        let apiary = small_node(dir.path()).await.with_node("sweeper");
        let meadow = apiary.lake().meadow().clone();
        let manifest = apiary_host::swarm::manifest::Manifest {
            query: "expired".into(),
            coordinator: "gone".into(),
            created_ms: 0,
            expires_ms: 1,
            sql: "SELECT 1".into(),
            functions: Default::default(),
            namespace: ("default".into(), "default".into()),
            table: "default.default.t".into(),
            schema: apiary_engine::lake::FrameSchema::from(&arrow::datatypes::Schema::empty()),
            whole: Vec::new(),
            merge: apiary_host::MergeKind::Concatenate,
            deadline_ms: 1000,
            tasks: vec![apiary_host::swarm::manifest::TaskSpec {
                task: 0,
                label: "fragment 1 of 1".into(),
                attempt: 1,
                node: "sweeper".into(),
                cells: Vec::new(),
            }],
        };
        let bytes = serde_json::to_vec(&manifest).expect("json");
        meadow
            .put("_queries/expired/manifest.json", bytes.into())
            .await
            .expect("put");
        meadow
            .put("_queries/expired/partial_0_1.arrow", vec![1u8].into())
            .await
            .expect("put");
        // A fresh directory without a manifest (a coordinator about to write it) stays.
        meadow
            .put("_queries/fresh/report_0_1.json", vec![1u8].into())
            .await
            .expect("put");
        let mut worker = apiary.worker();
        let started = worker.poll().await.expect("poll");
        assert_eq!(started, 0, "an expired manifest's tasks are not run");
        let left: Vec<String> = meadow
            .list("_queries")
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.location.to_string())
            .collect();
        assert_eq!(left, vec!["_queries/fresh/report_0_1.json".to_owned()]);
    });
}
