//! User-defined functions through real chambers: the example module (built by
//! `just build-guest`) registers and answers as the built-in expressions do, hostile
//! modules are contained with a clear error while the node keeps serving, and files that
//! are not function modules are refused before anything is stored.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use support::{runtime, serial, tmp_root};

use apiary_host::{
    BeePool, ChamberEngine, Error, Lake, PoolConfig, QueryOutput, QuerySession, WriteMode,
    find_component, find_guest,
};
use arrow::array::{Float64Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;

const MIB: u64 = 1 << 20;
const ROWS: i64 = 60_000;

fn example_module() -> PathBuf {
    find_component("apiary_example_udf.wasm").expect("run `just build-guest` first")
}

fn evil_module() -> PathBuf {
    find_component("apiary_evil_udf.wasm").expect("run `just build-guest` first")
}

/// A lake with frame `t` (x BIGINT, price DOUBLE, discount DOUBLE) of [`ROWS`] rows in
/// three cells, and a session on it with 2 bees of `budget_mib` and a 5 s deadline.
struct Node {
    session: QuerySession,
    lake: Arc<Lake>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn node(budget_mib: u64) -> Node {
    let lake_dir = tempfile::tempdir().expect("lake dir");
    let scratch = tempfile::tempdir().expect("scratch");
    let guest = find_guest().expect("run `just build-guest` first");
    let engine = Arc::new(
        ChamberEngine::new(&guest, &tmp_root().join("cwasm"), 512 * MIB, 4).expect("engine"),
    );
    let pool = Arc::new(
        BeePool::new(
            engine,
            PoolConfig {
                bees: 2,
                budget: budget_mib * MIB,
                deadline: Duration::from_secs(5),
                scratch_root: scratch.path().to_path_buf(),
            },
        )
        .expect("pool"),
    );
    let lake = Arc::new(
        Lake::open(lake_dir.path().to_str().expect("utf-8 path"))
            .await
            .expect("lake"),
    );
    let schema = Schema::new(vec![
        Field::new("x", DataType::Int64, true),
        Field::new("price", DataType::Float64, false),
        Field::new("discount", DataType::Float64, false),
    ]);
    lake.create_frame("t", &schema, &[], false)
        .await
        .expect("frame");
    let third = ROWS / 3;
    for part in 0..3 {
        let xs: Vec<Option<i64>> = (part * third..(part + 1) * third)
            .map(|i| (i % 1000 != 0).then_some(i))
            .collect();
        let prices: Vec<f64> = (part * third..(part + 1) * third)
            .map(|i| (i % 97) as f64 * 1.5)
            .collect();
        let discounts: Vec<f64> = (part * third..(part + 1) * third)
            .map(|i| (i % 11) as f64 / 100.0)
            .collect();
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![
                Arc::new(Int64Array::from(xs)),
                Arc::new(Float64Array::from(prices)),
                Arc::new(Float64Array::from(discounts)),
            ],
        )
        .expect("batch");
        lake.write("t", &[batch], WriteMode::Append)
            .await
            .expect("write");
    }
    Node {
        // One fragment per cell: functions run in partial fragments and in merges.
        session: QuerySession::new(lake.clone(), pool).with_max_fragment_bytes(1),
        lake,
        _dirs: (lake_dir, scratch),
    }
}

fn text(output: &QueryOutput) -> String {
    pretty_format_batches(&output.batches)
        .expect("format")
        .to_string()
}

async fn create(node: &mut Node, name: &str, module: &Path) -> Result<QueryOutput, Error> {
    node.session
        .sql(&format!(
            "CREATE FUNCTION {name} FROM '{}'",
            module.display()
        ))
        .await
}

#[test]
fn the_example_module_answers_as_the_built_in_expressions_do() {
    let _serial = serial();
    runtime().block_on(async {
        let mut node = node(256).await;
        let created = create(&mut node, "add_one", &example_module())
            .await
            .expect("create");
        assert_eq!(created.notes, ["function add_one(Int64) -> Int64 created"]);
        // The module is in the lake under its hash, and the registry names it.
        let registry = node.lake.registry().await.expect("registry");
        let entry = &registry.functions["add_one"];
        let stored = node
            .lake
            .function_module(&entry.module)
            .await
            .expect("module");
        assert_eq!(
            stored.len() as u64,
            std::fs::metadata(example_module()).expect("file").len()
        );

        let with_function = node
            .session
            .sql("SELECT count(*) AS n, sum(add_one(x)) AS s, count(add_one(x)) AS c FROM t")
            .await
            .expect("query");
        let built_in = node
            .session
            .sql("SELECT count(*) AS n, sum(x + 1) AS s, count(x + 1) AS c FROM t")
            .await
            .expect("query");
        assert_eq!(text(&with_function), text(&built_in));
        assert!(text(&built_in).contains("| 60000 |"), "{}", text(&built_in));
        assert!(
            with_function.fragments.len() >= 2,
            "the statement ran in {} fragments",
            with_function.fragments.len()
        );

        // A function used in a filter, a grouping and above an aggregate.
        let sql = |f: &str| {
            format!(
                "SELECT x % 3 AS k, {f} AS v FROM t WHERE x IS NOT NULL AND x < 3000 \
                 GROUP BY x % 3 ORDER BY k"
            )
        };
        let with_function = node
            .session
            .sql(&sql("add_one(sum(x))"))
            .await
            .expect("above an aggregate");
        let built_in = node
            .session
            .sql(&sql("sum(x) + 1"))
            .await
            .expect("built in");
        assert_eq!(text(&with_function), text(&built_in));

        // Registering the second function of the module, then replacing the first.
        let created = create(&mut node, "discounted", &example_module())
            .await
            .expect("create");
        assert_eq!(
            created.notes,
            ["function discounted(Float64, Float64) -> Float64 created"]
        );
        let with_function = node
            .session
            .sql("SELECT round(sum(discounted(price, discount)), 6) AS r FROM t")
            .await
            .expect("query");
        let built_in = node
            .session
            .sql("SELECT round(sum(price * (1 - discount)), 6) AS r FROM t")
            .await
            .expect("query");
        assert_eq!(text(&with_function), text(&built_in));
        let replaced = create(&mut node, "add_one", &example_module())
            .await
            .expect("replace");
        assert_eq!(
            replaced.notes,
            ["function add_one(Int64) -> Int64 replaced"]
        );

        let shown = node.session.sql("SHOW FUNCTIONS").await.expect("show");
        let shown = text(&shown);
        assert!(
            shown.contains("| add_one    | Int64            | Int64   | immutable"),
            "{shown}"
        );
        assert!(
            shown.contains("| discounted | Float64, Float64 | Float64 | immutable"),
            "{shown}"
        );

        // Vacuum keeps a module some function uses, and removes it once none does.
        let report = node.lake.vacuum(Duration::ZERO).await.expect("vacuum");
        assert_eq!(report.function_modules, 0);
        node.lake
            .function_module(&entry.module)
            .await
            .expect("kept");
        node.session
            .sql("DROP FUNCTION add_one")
            .await
            .expect("drop");
        let report = node.lake.vacuum(Duration::ZERO).await.expect("vacuum");
        assert_eq!(
            report.function_modules, 0,
            "discounted still uses the module"
        );
        let err = node
            .session
            .sql("SELECT add_one(x) FROM t")
            .await
            .expect_err("dropped");
        assert!(err.to_string().contains("add_one"), "{err}");
        let err = node
            .session
            .sql("DROP FUNCTION add_one")
            .await
            .expect_err("gone");
        assert!(matches!(err, Error::NotFound(_)), "{err}");
        node.session
            .sql("DROP FUNCTION IF EXISTS add_one")
            .await
            .expect("if exists");
        node.session
            .sql("DROP FUNCTION discounted")
            .await
            .expect("drop");
        let report = node.lake.vacuum(Duration::ZERO).await.expect("vacuum");
        assert_eq!(report.function_modules, 1);
        let err = node
            .lake
            .function_module(&entry.module)
            .await
            .expect_err("vacuumed");
        assert!(matches!(err, Error::NotFound(_)), "{err}");
    });
}

#[test]
fn hostile_functions_are_contained_and_the_node_keeps_serving() {
    let _serial = serial();
    runtime().block_on(async {
        let mut node = node(128).await;
        node.session
            .sql(&format!(
                "CREATE FUNCTION add_two FROM '{}'",
                evil_module().display()
            ))
            .await
            .expect("create");
        for name in [
            "bomb",
            "spin",
            "open_file",
            "shout",
            "clock",
            "env_count",
            "wrong_type",
            "wrong_length",
        ] {
            create(&mut node, name, &evil_module())
                .await
                .unwrap_or_else(|e| panic!("create {name}: {e}"));
        }
        let works = "SELECT sum(add_two(x)) AS s FROM t WHERE x < 100";
        let expected = node
            .session
            .sql("SELECT sum(x + 2) AS s FROM t WHERE x < 100")
            .await
            .expect("built in");
        let expected = text(&expected);

        let session = &mut node.session;
        let call = |name: &str| format!("SELECT {name}(x) AS v FROM t WHERE x < 10");

        let err = session.sql(&call("bomb")).await.expect_err("bomb");
        assert!(
            matches!(&err, Error::MemoryExceeded { budget, reason, .. }
                if *budget == 128 * MIB && reason.contains("in function `bomb`")),
            "{err}"
        );
        let err = session.sql(&call("spin")).await.expect_err("spin");
        assert!(
            matches!(&err, Error::Timeout { fragment, limit, .. }
                if fragment.contains("in function `spin`") && *limit == Duration::from_secs(5)),
            "{err}"
        );
        let err = session
            .sql(&call("open_file"))
            .await
            .expect_err("open_file");
        assert!(
            err.to_string()
                .contains("function `open_file`: cannot read /etc/passwd"),
            "{err}"
        );
        let err = session.sql(&call("shout")).await.expect_err("shout");
        assert!(
            matches!(&err, Error::FunctionTrap { function, message, .. }
                if function == "shout" && message.contains("wrote more than 64 KiB")),
            "{err}"
        );
        assert!(!err.to_string().contains("apiary_guest.wasm!"), "{err}");
        let err = session
            .sql(&call("wrong_type"))
            .await
            .expect_err("wrong_type");
        assert!(
            err.to_string().contains(
                "function `wrong_type`: it returned Utf8 where its signature declares Int64"
            ),
            "{err}"
        );
        let err = session
            .sql(&call("wrong_length"))
            .await
            .expect_err("wrong_length");
        assert!(
            err.to_string()
                .contains("function `wrong_length`: it returned 8 values for 9 rows"),
            "{err}"
        );
        // No clock, no environment.
        let clock = session
            .sql("SELECT max(clock(x)) AS v FROM t")
            .await
            .expect("clock");
        assert!(text(&clock).contains("| 0 |"), "{}", text(&clock));
        let env = session
            .sql("SELECT max(env_count(x)) AS v FROM t")
            .await
            .expect("env");
        assert!(text(&env).contains("| 0 |"), "{}", text(&env));

        // After all of it, the node answers.
        let answer = session.sql(works).await.expect("still serving");
        assert_eq!(text(&answer), expected);
    });
}

#[test]
fn files_that_are_not_function_modules_are_refused_and_nothing_is_stored() {
    let _serial = serial();
    runtime().block_on(async {
        let mut node = node(128).await;
        let dir = tempfile::tempdir().expect("dir");
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            path
        };
        let text_file = write("notes.wasm", b"these are not the bytes you are looking for");
        let core = write("core.wasm", &wat::parse_str("(module)").expect("wat"));
        let empty = write("empty.wasm", &wat::parse_str("(component)").expect("wat"));
        let wrong_export = write(
            "wrong.wasm",
            &wat::parse_str(
                r#"(component
                    (core module $m (func (export "f") (result i32) i32.const 7))
                    (core instance $i (instantiate $m))
                    (func $describe (result u32) (canon lift (core func $i "f")))
                    (export "describe" (func $describe)))"#,
            )
            .expect("wat"),
        );
        let cases = [
            (&text_file, "is not WebAssembly"),
            (&core, "is a core WebAssembly module, not a component"),
            (&empty, "is not a function module of this Apiary"),
            (&wrong_export, "is not a function module of this Apiary"),
        ];
        for (path, expected) in cases {
            let err = create(&mut node, "f", path).await.expect_err("refused");
            assert!(matches!(err, Error::Function(_)), "{err}");
            let message = err.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
        let err = create(&mut node, "nope", &example_module())
            .await
            .expect_err("no such function");
        assert!(
            err.to_string()
                .contains("the module has no function `nope`; it has `add_one`, `discounted`"),
            "{err}"
        );
        let err = create(&mut node, "f", Path::new("/no/such/module.wasm"))
            .await
            .expect_err("missing file");
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let err = node
            .session
            .sql("CREATE FUNCTION f FROM module.wasm")
            .await
            .expect_err("unquoted");
        assert!(
            err.to_string()
                .contains("CREATE [OR REPLACE] FUNCTION name FROM"),
            "{err}"
        );

        let registry = node.lake.registry().await.expect("registry");
        assert!(registry.functions.is_empty(), "{:?}", registry.functions);
        let stored = node.lake.meadow().list("_functions/").await.expect("list");
        assert!(stored.is_empty(), "{stored:?}");
    });
}
