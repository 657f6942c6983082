//! moto, the S3-compatible test server: started on 127.0.0.1 by the project's own launcher
//! (`scripts/s3_server.py`, installed by `just setup`), stopped by its PID when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use apiary_host::{Meadow, S3Options};

/// The bucket every test server starts with.
pub const BUCKET: &str = "apiary-test";

/// A running server and the credentials it accepts.
pub struct S3Server {
    child: Child,
    port: u16,
    key: String,
    secret: String,
}

impl S3Server {
    /// A server that accepts any credentials.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// A server that checks credentials and signatures like AWS: only this server's own key
    /// and secret are accepted.
    pub fn start_checking_credentials() -> Self {
        Self::launch(true)
    }

    fn launch(auth: bool) -> Self {
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
        let mut command = Command::new(&python);
        command.arg(script).args(["--bucket", BUCKET]);
        if auth {
            command.arg("--check-credentials");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the S3 server");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the server's port");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the S3 server: {line:?}"));
        let (mut key, mut secret) = ("apiary".to_owned(), "apiary-secret".to_owned());
        if auth {
            line.clear();
            stdout.read_line(&mut line).expect("the server's key");
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("key"), Some(k), Some(s)) => (key, secret) = (k.to_owned(), s.to_owned()),
                _ => panic!("unexpected second line from the S3 server: {line:?}"),
            }
        }
        Self {
            child,
            port,
            key,
            secret,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A fresh lake under its own prefix.
    pub fn lake(&self, prefix: &str) -> String {
        format!(
            "s3://{BUCKET}/{prefix}?endpoint={}&allow_http=true",
            self.endpoint()
        )
    }

    /// The access key this server accepts.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The secret of that key.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `command` with this server's credentials in the `AWS_*` environment, as a user gives them.
    pub fn credentials<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT")
            .env_remove("AWS_PROFILE")
    }

    /// Options giving this server's credentials to a lake opened in the test process.
    pub fn options(&self) -> S3Options {
        S3Options::parse([
            ("access_key_id", self.key.as_str()),
            ("secret_access_key", self.secret.as_str()),
            ("region", "us-east-1"),
        ])
        .expect("options")
    }

    /// The lake `prefix`, opened from the test process.
    pub fn meadow(&self, prefix: &str) -> Meadow {
        Meadow::open_with(&self.lake(prefix), &self.options()).expect("meadow")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
