//! The real `apiary` binary, run as a user would.

use std::process::{Command, Output};

fn apiary(lake: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apiary"))
        // Share the compiled guest with the other test binaries.
        .env(
            "APIARY_CACHE_DIR",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cwasm"),
        )
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
        stderr(&out).contains("--bees must be at least 1"),
        "{}",
        stderr(&out)
    );

    let out = apiary(&lake, &["sql", "--format", "xml", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("xml"), "{}", stderr(&out));
}
