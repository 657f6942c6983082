//! The lake on a real S3-compatible server: moto, started on 127.0.0.1 by the project's own
//! launcher (`scripts/s3_server.py`, installed by `just setup`), stopped by its PID at the
//! end. Every process reaches it as a user would: `s3://bucket/prefix?endpoint=...` and the
//! `AWS_*` environment variables.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const BUCKET: &str = "apiary-test";

/// A moto server for one test, stopped when dropped.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start() -> Self {
        let python = std::env::var_os("APIARY_S3_PYTHON").map_or_else(
            || {
                PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                    .join(".cache/apiary/s3-venv/bin/python")
            },
            PathBuf::from,
        );
        assert!(
            python.exists(),
            "no S3 test server at {}: run `just setup`",
            python.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3_server.py");
        let mut child = Command::new(&python)
            .arg(script)
            .args(["--bucket", BUCKET])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the S3 server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's port");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the S3 server: {line:?}"));
        Self { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A fresh lake under its own prefix.
    fn lake(&self, prefix: &str) -> String {
        format!(
            "s3://{BUCKET}/{prefix}?endpoint={}&allow_http=true",
            self.endpoint()
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with S3 credentials, a private home and the shared compiled guest.
fn apiary(home: &Path, lake: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_apiary"));
    command
        .env(
            "APIARY_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("cwasm"),
        )
        .env("APIARY_CELL_CACHE_MIB", "0")
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", "apiary")
        .env("AWS_SECRET_ACCESS_KEY", "apiary-secret")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("APIARY_CONFIG")
        .env_remove("APIARY_LAKE")
        .env_remove("RUST_LOG")
        .args(["--lake", lake, "--bees", "1", "--budget-mib", "256"]);
    command
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn eight_writer_processes_commit_exactly_four_hundred_versions_on_s3() {
    let server = S3Server::start();
    let home = tempfile::tempdir().expect("home");
    let lake = server.lake("race");
    ok(&apiary(home.path(), &lake)
        .args(["sql", "CREATE FRAME events (id BIGINT NOT NULL)"])
        .output()
        .expect("create"));
    let writers: Vec<Child> = (0..8)
        .map(|w| {
            let inserts: Vec<String> = (0..50)
                .map(|i| format!("INSERT INTO events VALUES ({})", w * 1000 + i))
                .collect();
            apiary(home.path(), &lake)
                .arg("sql")
                .args(&inserts)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("writer")
        })
        .collect();
    for writer in writers {
        ok(&writer.wait_with_output().expect("writer"));
    }
    let text = ok(&apiary(home.path(), &lake)
        .args([
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events",
        ])
        .output()
        .expect("count"));
    assert_eq!(text.trim(), "n,ids\n400,400");
    let text = ok(&apiary(home.path(), &lake)
        .args(["describe", "events"])
        .output()
        .expect("describe"));
    assert!(text.contains("version 400"), "{text}");
}

#[test]
fn chambers_read_only_the_column_chunks_they_need_over_s3() {
    let server = S3Server::start();
    let home = tempfile::tempdir().expect("home");
    let lake = server.lake("ranged");
    let data = home.path().join("tpch");
    ok(&apiary(home.path(), &lake)
        .args(["generate", "--scale", "0.01", "--out"])
        .arg(&data)
        .arg("lineitem")
        .output()
        .expect("generate"));
    ok(&apiary(home.path(), &lake)
        .arg("load")
        .arg(data.join("lineitem.parquet"))
        .args(["INTO", "lineitem", "--create"])
        .output()
        .expect("load"));
    let describe = ok(&apiary(home.path(), &lake)
        .args(["describe", "lineitem"])
        .output()
        .expect("describe"));
    let explain = ok(&apiary(home.path(), &lake)
        .args([
            "sql",
            "--format",
            "csv",
            "EXPLAIN ANALYZE SELECT sum(l_quantity) FROM lineitem",
        ])
        .output()
        .expect("explain"));
    let fetched: u64 = explain
        .lines()
        .find_map(|l| l.strip_prefix("storage,"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no storage line:\n{explain}"));
    let cell_bytes: u64 = describe
        .split([',', '\n'])
        .find_map(|part| part.trim().strip_suffix(" bytes"))
        .and_then(|n| n.trim().replace('_', "").parse().ok())
        .unwrap_or_else(|| panic!("no byte count:\n{describe}"));
    eprintln!("one column: {fetched} of {cell_bytes} bytes fetched");
    assert!(fetched > 0, "{explain}");
    // One column of 16 plus the footer (read with a prefetch that dominates a 2 MB cell):
    // ranged reads, far from the whole cell.
    assert!(
        fetched * 2 < cell_bytes,
        "{fetched} of {cell_bytes}: {explain}"
    );
    assert!(explain.contains("ranged reads"), "{explain}");
}

#[test]
fn a_wrong_endpoint_or_a_missing_bucket_is_named() {
    let server = S3Server::start();
    let home = tempfile::tempdir().expect("home");
    let out = apiary(
        home.path(),
        "s3://apiary-test/x?endpoint=http://127.0.0.1:9&allow_http=true",
    )
    .args(["--deadline-secs", "5", "status"])
    .output()
    .expect("status");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the endpoint cannot be reached"), "{err}");
    assert!(err.contains("127.0.0.1:9"), "{err}");

    let missing = format!(
        "s3://no-such-bucket/x?endpoint={}&allow_http=true",
        server.endpoint()
    );
    let out = apiary(home.path(), &missing)
        .arg("status")
        .output()
        .expect("status");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the bucket does not exist"), "{err}");
    assert!(err.contains("no-such-bucket"), "{err}");

    let out = apiary(home.path(), "s3://ab/x")
        .arg("status")
        .output()
        .expect("status");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 3 characters"), "{err}");
}
