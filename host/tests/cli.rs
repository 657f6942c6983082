//! The real `apiary` binary, run as a user would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

/// The binary with a private home (config, data, history) and the shared guest cache.
fn command(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_apiary"));
    command
        // Share the compiled guest with the other test binaries.
        .env(
            "APIARY_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("cwasm"),
        )
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("APIARY_CONFIG")
        .env_remove("APIARY_LAKE")
        .env_remove("APIARY_BEES")
        .env_remove("APIARY_BUDGET_MIB")
        .env_remove("RUST_LOG")
        .env("APIARY_BUDGET_MIB", "512");
    command
}

fn apiary(lake: &Path, args: &[&str]) -> Output {
    command(lake.parent().expect("lake inside a temp dir"))
        .arg("--lake")
        .arg(lake)
        .args(args)
        .output()
        .expect("run apiary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn sql_creates_writes_and_queries_a_local_lake() {
    let dir = tempfile::tempdir().expect("dir");
    let lake = dir.path().join("lake");
    let out = apiary(
        &lake,
        &[
            "sql",
            "--bees",
            "1",
            "CREATE FRAME readings (sensor VARCHAR NOT NULL, celsius DOUBLE) PARTITIONED BY (sensor)",
            "INSERT INTO readings VALUES ('porch', 4.5), ('porch', 5.5), ('shed', 9.0)",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("inserted 3 rows into default.default.readings"),
        "{}",
        stdout(&out)
    );

    // A second process sees what the first committed.
    let out = apiary(
        &lake,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT sensor, avg(celsius) AS c FROM readings GROUP BY sensor ORDER BY sensor",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "sensor,c\nporch,5.0\nshed,9.0\n");
}

#[test]
fn bad_input_is_one_clear_line_and_a_failure_exit() {
    let dir = tempfile::tempdir().expect("dir");
    let lake = dir.path().join("lake");
    let out = apiary(&lake, &["sql", "SELECT * FROM nowhere"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ") && err.contains("nowhere"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = apiary(&lake, &["sql", "--bees", "0", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("bees from --bees: `0` is not allowed"),
        "{}",
        stderr(&out)
    );

    // The guest is found from the tree the binary was built in; a wrong override is named.
    let out = apiary(&lake, &["guest"]);
    assert!(
        stdout(&out).trim().ends_with("apiary_guest.wasm"),
        "{}",
        stdout(&out)
    );
    let out = command(dir.path())
        .env("APIARY_GUEST", "/nonexistent/guest.wasm")
        .args(["sql", "SELECT 1"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("APIARY_GUEST points at /nonexistent/guest.wasm"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("hint: "), "{}", stderr(&out));

    let out = apiary(&lake, &["sql", "--format", "xml", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("xml"), "{}", stderr(&out));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure: {}", stdout(out));
    let err = stderr(out);
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn load_reads_csv_json_and_parquet_and_refuses_bad_files() {
    let dir = tempfile::tempdir().expect("dir");
    let lake = dir.path().join("lake");
    let lake_s = lake.to_str().expect("utf-8");
    let csv = write(
        dir.path(),
        "r.csv",
        "sensor,celsius,day\nporch,4.5,2024-01-01\nshed,9.0,2024-01-02\nporch,5.5,2024-01-02\n",
    );
    let out = apiary(
        &lake,
        &[
            "load",
            csv.to_str().expect("utf-8"),
            "INTO",
            "readings",
            "--create",
            "--partition-by",
            "sensor",
        ],
    );
    let text = ok(&out);
    assert!(
        text.contains("loaded 3 rows from 1 file into default.default.readings (created)"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("loading: 3 rows, 100%"),
        "{}",
        stderr(&out)
    );

    // Newline-delimited JSON appends by column name, in any order.
    let json = write(
        dir.path(),
        "more.json",
        "{\"day\": \"2024-01-03\", \"sensor\": \"shed\", \"celsius\": 7.0}\n{\"sensor\": \"attic\", \"celsius\": 20.5, \"day\": \"2024-01-03\"}\n",
    );
    ok(&apiary(
        &lake,
        &["load", json.to_str().expect("utf-8"), "into", "readings"],
    ));

    // Parquet out of `apiary sql`, loaded back into a new frame.
    let parquet = dir.path().join("out.parquet");
    let text = ok(&apiary(
        &lake,
        &[
            "sql",
            "--format",
            "parquet",
            "--output",
            parquet.to_str().expect("utf-8"),
            "SELECT sensor, celsius FROM readings WHERE celsius > 5",
        ],
    ));
    assert!(text.contains("wrote 4 rows"), "{text}");
    ok(&apiary(
        &lake,
        &[
            "load",
            parquet.to_str().expect("utf-8"),
            "INTO",
            "warm",
            "--create",
        ],
    ));

    let text = ok(&apiary(
        &lake,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT sensor, count(*) AS n, sum(celsius) AS s FROM readings GROUP BY sensor ORDER BY sensor",
            "SELECT count(*) AS warm FROM warm",
        ],
    ));
    assert_eq!(
        text,
        "sensor,n,s\nattic,1,20.5\nporch,2,10.0\nshed,2,16.0\nwarm\n4\n"
    );

    // Bad input: each refused with where and why, and nothing committed.
    let describe = || ok(&apiary(&lake, &["describe", "readings"]));
    let before = describe();
    assert!(before.contains("version 2"), "{before}");

    let missing = dir.path().join("nope.csv");
    let err = failed(&apiary(
        &lake,
        &["load", missing.to_str().expect("utf-8"), "INTO", "readings"],
    ));
    assert!(
        err.contains("nope.csv") && err.contains("No such file"),
        "{err}"
    );

    let bad = write(
        dir.path(),
        "bad.csv",
        "sensor,celsius,day\nporch,4.5,2024-01-05\nshed,warm,2024-01-05\n",
    );
    let err = failed(&apiary(
        &lake,
        &["load", bad.to_str().expect("utf-8"), "INTO", "readings"],
    ));
    assert!(
        err.contains("bad.csv: line 3, column 2 (`celsius`): 'warm' is not a valid Float64"),
        "{err}"
    );
    assert!(err.contains("nothing was loaded"), "{err}");

    let ragged = write(
        dir.path(),
        "ragged.csv",
        "sensor,celsius,day\nporch,4.5,2024-01-05\nshed,1.0\n",
    );
    let err = failed(&apiary(
        &lake,
        &["load", ragged.to_str().expect("utf-8"), "INTO", "readings"],
    ));
    assert!(
        err.contains("ragged.csv: line 3: wrong number of columns"),
        "{err}"
    );

    let extra = write(dir.path(), "extra.csv", "sensor,humidity\nporch,40\n");
    let err = failed(&apiary(
        &lake,
        &["load", extra.to_str().expect("utf-8"), "INTO", "readings"],
    ));
    assert!(
        err.contains("column `humidity` is not in the frame"),
        "{err}"
    );

    let err = failed(&apiary(
        &lake,
        &["load", csv.to_str().expect("utf-8"), "INTO", "nowhere"],
    ));
    assert!(err.contains("nowhere") && err.contains("--create"), "{err}");

    let err = failed(&apiary(
        &lake,
        &["load", csv.to_str().expect("utf-8"), "readings"],
    ));
    assert!(err.contains("INTO"), "{err}");

    let odd = write(dir.path(), "data.txt", "a\n1\n");
    let err = failed(&apiary(
        &lake,
        &["load", odd.to_str().expect("utf-8"), "INTO", "readings"],
    ));
    assert!(err.contains("cannot tell the format"), "{err}");

    assert_eq!(describe(), before, "failed loads committed nothing");
    // The orphaned cells of the failed loads go with a vacuum.
    let text = ok(&apiary(&lake, &["vacuum", "--grace-secs", "0"]));
    assert!(text.contains("cells"), "{text}");
    let _ = lake_s;
}

#[test]
fn sql_prints_json_and_csv() {
    let dir = tempfile::tempdir().expect("dir");
    let lake = dir.path().join("lake");
    let text = ok(&apiary(
        &lake,
        &[
            "sql",
            "--format",
            "json",
            "SELECT 1 AS a, 'x' AS b UNION ALL SELECT 2, 'y' ORDER BY a",
        ],
    ));
    assert_eq!(text, "[{\"a\":1,\"b\":\"x\"},{\"a\":2,\"b\":\"y\"}]\n");
    let err = failed(&apiary(&lake, &["sql", "--format", "parquet", "SELECT 1"]));
    assert!(err.contains("--output"), "{err}");
}

#[test]
fn settings_come_from_file_environment_and_flags_with_clear_errors() {
    let dir = tempfile::tempdir().expect("dir");
    let home = dir.path();
    let lake = dir.path().join("lake");
    let status = |extra: &[&str], env: &[(&str, &str)]| {
        let mut c = command(home);
        for (k, v) in env {
            c.env(k, v);
        }
        c.arg("--lake")
            .arg(&lake)
            .args(extra)
            .arg("status")
            .output()
            .expect("run")
    };
    let text = ok(&status(&[], &[]));
    assert!(text.contains("bees"), "{text}");
    assert!(
        text.contains("512 MiB per bee (from $APIARY_BUDGET_MIB)"),
        "{text}"
    );
    assert!(
        text.contains("no file (write one with `apiary init`)"),
        "{text}"
    );
    assert!(text.contains("no node heartbeats"), "{text}");

    // init writes the default file; a second init refuses to overwrite it.
    let text = ok(&command(home)
        .args(["--bees", "3", "init"])
        .output()
        .expect("run"));
    let config = home.join(".config/apiary/config.toml");
    assert!(text.contains(config.to_str().expect("utf-8")), "{text}");
    let err = failed(&command(home).arg("init").output().expect("run"));
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );

    // The file is read by default; the environment beats it; flags beat both.
    let text = ok(&status(&[], &[]));
    assert!(
        text.contains(&format!("bees        3 (from {})", config.display())),
        "{text}"
    );
    let text = ok(&status(&[], &[("APIARY_BEES", "2")]));
    assert!(text.contains("bees        2 (from $APIARY_BEES)"), "{text}");
    let text = ok(&status(&["--bees", "1"], &[("APIARY_BEES", "2")]));
    assert!(text.contains("bees        1 (from --bees)"), "{text}");

    // Bad values name the setting and what is allowed.
    let err = failed(&status(&[], &[("APIARY_BEES", "lots")]));
    assert!(
        err.contains("$APIARY_BEES") && err.contains("from 1 to 1024"),
        "{err}"
    );
    let bad = write(home, "bad.toml", "deadline_secs = 60\nbees = 0\n");
    let err = failed(&status(&["--config", bad.to_str().expect("utf-8")], &[]));
    assert!(
        err.contains("bees from ") && err.contains("bad.toml"),
        "{err}"
    );
    assert!(
        err.contains("`0` is not allowed") && err.contains("from 1 to 1024"),
        "{err}"
    );
    let err = failed(&status(&[], &[("APIARY_BUDGET_MIB", "4")]));
    assert!(
        err.contains("budget_mib") && err.contains("from 32 to 4096"),
        "{err}"
    );
    let typo = write(home, "typo.toml", "bees = 2\nbuget_mib = 64\n");
    let err = failed(&status(&["--config", typo.to_str().expect("utf-8")], &[]));
    assert!(err.contains("buget_mib") && err.contains("line 2"), "{err}");
    let err = failed(&status(&["--config", "/nonexistent/apiary.toml"], &[]));
    assert!(err.contains("/nonexistent/apiary.toml"), "{err}");
}

#[test]
fn the_shell_runs_a_script_from_stdin() {
    let dir = tempfile::tempdir().expect("dir");
    let lake = dir.path().join("lake");
    let mut child = command(dir.path())
        .arg("--lake")
        .arg(&lake)
        .arg("shell")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let script = "\
.help
CREATE FRAME t (a BIGINT NOT NULL, b VARCHAR);
INSERT INTO t VALUES (1, 'one'),
  (2, 'two; with a semicolon');
SELECT nonsense FROM t;
.mode csv
.timer on
SELECT a, b
  FROM t
  ORDER BY a;
.mode json
SELECT count(*) AS n FROM t;
.frames
.bogus
.quit
SELECT 'never run';
";
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("script");
    let out = child.wait_with_output().expect("shell");
    let text = ok(&out);
    assert!(text.contains(".mode table|csv|json"), "help: {text}");
    assert!(text.contains("inserted 2 rows"), "{text}");
    assert!(
        text.contains("a,b\n1,one\n2,two; with a semicolon\n"),
        "multi-line statement, csv mode: {text}"
    );
    assert!(text.contains("time: "), "{text}");
    assert!(text.contains("[{\"n\":2}]"), "json mode: {text}");
    assert!(text.contains("default.default.t"), ".frames: {text}");
    assert!(!text.contains("never run"), "{text}");
    let err = stderr(&out);
    assert!(err.contains("error: ") && err.contains("nonsense"), "{err}");
    assert!(err.contains("unknown shell command `.bogus`"), "{err}");
}

#[test]
fn a_node_heartbeats_until_sigterm_then_leaves() {
    let dir = tempfile::tempdir().expect("dir");
    let lake = dir.path().join("lake");
    let node = command(dir.path())
        .env("APIARY_HEARTBEAT_SECS", "1")
        .arg("--lake")
        .arg(&lake)
        .args(["--bees", "1", "node"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let heartbeats = lake.join("_heartbeats");
    let started = Instant::now();
    while std::fs::read_dir(&heartbeats).map_or(0, |d| d.count()) == 0 {
        assert!(started.elapsed() < Duration::from_secs(120), "no heartbeat");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = ok(&apiary(&lake, &["status"]));
    assert!(text.contains(" alive (heard "), "{text}");
    assert!(text.contains("1 bees x 512 MiB"), "{text}");

    let kill = Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = node.wait_with_output().expect("node");
    let text = ok(&out);
    assert!(text.contains("left"), "{text}");
    assert_eq!(std::fs::read_dir(&heartbeats).map_or(0, |d| d.count()), 0);
    let text = ok(&apiary(&lake, &["status"]));
    assert!(text.contains("no node heartbeats"), "{text}");
}

const Q1: &str = "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, \
    sum(l_extendedprice) AS sum_base_price, sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price, \
    sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge, avg(l_quantity) AS avg_qty, \
    avg(l_extendedprice) AS avg_price, avg(l_discount) AS avg_disc, count(*) AS count_order \
    FROM lineitem WHERE l_shipdate <= DATE '1998-12-01' - INTERVAL '90' DAY \
    GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus";

#[test]
fn loading_lineitem_sf1_shows_progress_and_answers_q1() {
    let dir = tempfile::tempdir().expect("dir");
    let lake = dir.path().join("lake");
    let tpch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tpch-sf1");
    let text = ok(&command(dir.path())
        .args(["generate", "--scale", "1", "--out"])
        .arg(&tpch)
        .arg("lineitem")
        .output()
        .expect("generate"));
    let parquet = PathBuf::from(text.trim());
    assert!(parquet.exists(), "{text}");

    let out = apiary(
        &lake,
        &[
            "load",
            parquet.to_str().expect("utf-8"),
            "INTO",
            "tpch.sf1.lineitem",
            "--create",
        ],
    );
    let err = stderr(&out);
    let text = ok(&out);
    assert!(text.contains("loaded 6001215 rows"), "{text}");
    let progress: Vec<&str> = err.lines().filter(|l| l.starts_with("loading: ")).collect();
    assert!(progress.len() >= 2, "progress lines: {err}");
    assert!(
        progress
            .last()
            .is_some_and(|l| l.contains("6001215 rows, 100%")),
        "{err}"
    );

    let text = ok(&apiary(
        &lake,
        &["sql", "--format", "csv", "USE tpch.sf1", Q1],
    ));
    let expected = native_q1_csv(&parquet);
    assert!(expected.lines().count() == 5, "{expected}");
    assert!(
        text.ends_with(&expected),
        "apiary:\n{text}\nnative:\n{expected}"
    );
}

/// Native DataFusion's Q1 over `parquet`, as CSV.
fn native_q1_csv(parquet: &Path) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        ctx.register_parquet(
            "lineitem",
            parquet.to_str().expect("utf-8"),
            ParquetReadOptions::default(),
        )
        .await
        .expect("register");
        let batches = ctx
            .sql(Q1)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let mut buf = Vec::new();
        {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut buf);
            for batch in &batches {
                writer.write(batch).expect("csv");
            }
        }
        assert!(
            !pretty_format_batches(&batches)
                .expect("format")
                .to_string()
                .is_empty()
        );
        String::from_utf8(buf).expect("utf-8")
    })
}
