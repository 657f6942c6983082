//! The lake on a real S3-compatible server: moto, started on 127.0.0.1 by the project's own
//! launcher (`scripts/s3_server.py`, installed by `just setup`), stopped by its PID at the
//! end. Every process reaches it as a user would: `s3://bucket/prefix?endpoint=...` and the
//! `AWS_*` environment variables.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

mod support;

use support::s3::S3Server;

/// The binary with S3 credentials, a private home and the shared compiled guest.
fn apiary(server: &S3Server, home: &Path, lake: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_apiary"));
    server.credentials(&mut command);
    command
        .env(
            "APIARY_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("cwasm"),
        )
        .env("APIARY_CELL_CACHE_MIB", "0")
        .env("HOME", home)
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
    ok(&apiary(&server, home.path(), &lake)
        .args(["sql", "CREATE FRAME events (id BIGINT NOT NULL)"])
        .output()
        .expect("create"));
    let writers: Vec<Child> = (0..8)
        .map(|w| {
            let inserts: Vec<String> = (0..50)
                .map(|i| format!("INSERT INTO events VALUES ({})", w * 1000 + i))
                .collect();
            apiary(&server, home.path(), &lake)
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
    let text = ok(&apiary(&server, home.path(), &lake)
        .args([
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events",
        ])
        .output()
        .expect("count"));
    assert_eq!(text.trim(), "n,ids\n400,400");
    let text = ok(&apiary(&server, home.path(), &lake)
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
    ok(&apiary(&server, home.path(), &lake)
        .args(["generate", "--scale", "0.01", "--out"])
        .arg(&data)
        .arg("lineitem")
        .output()
        .expect("generate"));
    ok(&apiary(&server, home.path(), &lake)
        .arg("load")
        .arg(data.join("lineitem.parquet"))
        .args(["INTO", "lineitem", "--create"])
        .output()
        .expect("load"));
    let describe = ok(&apiary(&server, home.path(), &lake)
        .args(["describe", "lineitem"])
        .output()
        .expect("describe"));
    let explain = ok(&apiary(&server, home.path(), &lake)
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
fn a_wrong_endpoint_a_missing_bucket_or_refused_credentials_are_named() {
    let server = S3Server::start();
    let home = tempfile::tempdir().expect("home");
    let out = apiary(
        &server,
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
    let out = apiary(&server, home.path(), &missing)
        .arg("status")
        .output()
        .expect("status");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the bucket does not exist"), "{err}");
    assert!(err.contains("no-such-bucket"), "{err}");

    let out = apiary(&server, home.path(), "s3://ab/x")
        .arg("status")
        .output()
        .expect("status");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 3 characters"), "{err}");

    // A server that checks credentials: a wrong secret, then an unknown key, are refused
    // with the cause named, and the right ones work.
    let strict = S3Server::start_checking_credentials();
    let lake = strict.lake("strict");
    ok(&apiary(&strict, home.path(), &lake)
        .arg("status")
        .output()
        .expect("status"));
    for (key, secret, code) in [
        (None, "not-the-secret", "SignatureDoesNotMatch"),
        (Some("AKIAUNKNOWN0000000000"), "x", "InvalidAccessKeyId"),
    ] {
        let mut command = apiary(&strict, home.path(), &lake);
        command.env("AWS_SECRET_ACCESS_KEY", secret);
        if let Some(key) = key {
            command.env("AWS_ACCESS_KEY_ID", key);
        }
        let out = command.arg("status").output().expect("status");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("the credentials were refused"), "{err}");
        assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
        assert!(err.contains(code), "{err}");
        assert_eq!(
            err.lines().filter(|l| !l.trim().is_empty()).count(),
            1,
            "{err}"
        );
    }
}

#[test]
fn credentials_can_come_from_the_configuration_file() {
    let server = S3Server::start_checking_credentials();
    let home = tempfile::tempdir().expect("home");
    let lake = server.lake("configured");
    let (key, secret) = (server.key(), server.secret());
    ok(&apiary(&server, home.path(), &lake)
        .args([
            "sql",
            "CREATE FRAME t (x BIGINT)",
            "INSERT INTO t VALUES (7)",
        ])
        .output()
        .expect("create"));
    let config = home.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[s3]\naccess_key_id = \"{key}\"\nsecret_access_key = \"{secret}\"\nregion = \"us-east-1\"\n"
        ),
    )
    .expect("config");
    let from_file = || {
        let mut command = apiary(&server, home.path(), &lake);
        command
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("APIARY_CONFIG", &config);
        command
    };
    let text = ok(&from_file()
        .args(["sql", "--format", "csv", "SELECT x FROM t"])
        .output()
        .expect("select"));
    assert_eq!(text.trim(), "x\n7");
    // The environment wins over the file.
    let out = from_file()
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .env("AWS_ACCESS_KEY_ID", key)
        .args(["sql", "SELECT x FROM t"])
        .output()
        .expect("select");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the credentials were refused"), "{err}");
}
