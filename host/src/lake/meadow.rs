//! The meadow: all committed state, behind one object_store.
//!
//! [`Meadow`] opens a lake URI — a local directory (`file:///path` or a plain path, the
//! default for a solo node), an S3-compatible bucket (`s3://bucket/prefix?endpoint=...`,
//! for a swarm), `memory://` (tests) — and gives the rest of the host a small
//! set of operations on keys relative to the lake root. The one coordination primitive is
//! [`Meadow::put_if_absent`], a conditional create (`PutMode::Create`): two writers racing
//! for the same key see exactly one winner, on a local disk as on S3. Local writes are staged
//! and renamed by object_store, so a reader never sees a torn file. Listing is by prefix
//! and by one level (`list_dir`), so nothing walks the whole lake.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};

use crate::{Error, Result};

/// Objects larger than this are uploaded in parts.
const MULTIPART_ABOVE: usize = 32 << 20;

/// Size of each part of a multipart upload.
const MULTIPART_PART: usize = 8 << 20;

/// One lake's object store and root.
#[derive(Clone)]
pub struct Meadow {
    store: Arc<dyn ObjectStore>,
    uri: String,
    /// The same store when the lake is a local directory: a bee reads its cells' files
    /// directly (see [`Meadow::read_local`]).
    local: Option<Arc<LocalFileSystem>>,
}

impl fmt::Debug for Meadow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Meadow").field("uri", &self.uri).finish()
    }
}

fn storage_err(key: &str, err: object_store::Error) -> Error {
    Error::Storage {
        key: key.to_owned(),
        message: err.to_string(),
    }
}

impl Meadow {
    /// Open the lake at `uri`: `file:///abs/dir`, `/abs/dir`, `relative/dir`, `memory://`
    /// or `s3://bucket/prefix?...` (see [`S3Options`]). A local directory is created if
    /// missing.
    ///
    /// # Errors
    /// [`Error::Config`] for an unsupported scheme, [`Error::Io`] if the directory cannot be
    /// created.
    pub fn open(uri: &str) -> Result<Self> {
        Self::open_with(uri, &S3Options::default())
    }

    /// [`Meadow::open`], with `s3` as the lowest-precedence options of an S3 lake (under
    /// the `AWS_*` environment and the URI's own options).
    ///
    /// # Errors
    /// As [`Meadow::open`].
    pub fn open_with(uri: &str, s3_options: &S3Options) -> Result<Self> {
        let mut local_store = None;
        let store: Arc<dyn ObjectStore> = if uri == "memory://" || uri == "memory:" {
            Arc::new(InMemory::new())
        } else if let Some(rest) = uri.strip_prefix("file://") {
            local_store.insert(Arc::new(local(rest)?)).clone()
        } else if let Some(rest) = uri.strip_prefix("s3://") {
            s3(uri, rest, s3_options)?
        } else if uri.contains("://") {
            let scheme = uri.split("://").next().unwrap_or_default();
            return Err(Error::Config(format!(
                "lake URI `{uri}`: the `{scheme}` scheme is not supported; use a local directory \
                 (file:///path or a path), s3://bucket/prefix or memory://"
            )));
        } else {
            local_store.insert(Arc::new(local(uri)?)).clone()
        };
        Ok(Self {
            store,
            uri: uri.to_owned(),
            local: local_store,
        })
    }

    /// The URI this meadow was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether the lake is a directory of this machine (a path or `file://`).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// The underlying store, for DataFusion and the cell readers.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The object at `key`, or `None` if there is none.
    ///
    /// # Errors
    /// [`Error::Storage`] for anything but a missing key.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.store.get(&Path::from(key)).await {
            Ok(result) => Ok(Some(result.bytes().await.map_err(|e| storage_err(key, e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(storage_err(key, err)),
        }
    }

    /// Bytes `range` of the object at `key`.
    ///
    /// # Errors
    /// [`Error::Storage`] if the object or range cannot be read.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.store
            .get_range(&Path::from(key), range)
            .await
            .map_err(|e| storage_err(key, e))
    }

    /// Bytes `range` of the object at `key`, read on the calling thread straight from its
    /// file, when the lake is a local directory. `None` for other lakes, and when the file
    /// cannot be opened or the range is empty or past its end, for [`Meadow::get_range`]
    /// to report.
    ///
    /// A bee's reads come here first: going through the store costs a hand-off to tokio's
    /// blocking pool and back for every read, which on a machine whose cores are all busy
    /// with bees was about a tenth of the chambers' time.
    ///
    /// # Errors
    /// [`Error::Storage`] when the read itself fails.
    pub fn read_local(&self, key: &str, range: &Range<u64>) -> Option<Result<Bytes>> {
        use std::os::unix::fs::FileExt;
        let path = self
            .local
            .as_ref()?
            .path_to_filesystem(&Path::from(key))
            .ok()?;
        let file = std::fs::File::open(path).ok()?;
        let size = file.metadata().ok()?.len();
        if range.start >= range.end || range.end > size {
            return None;
        }
        let mut buf = vec![0u8; usize::try_from(range.end - range.start).ok()?];
        Some(
            file.read_exact_at(&mut buf, range.start)
                .map(|()| Bytes::from(buf))
                .map_err(|e| Error::Storage {
                    key: key.to_owned(),
                    message: e.to_string(),
                }),
        )
    }

    /// Size in bytes of the object at `key`.
    ///
    /// # Errors
    /// [`Error::Storage`] if it does not exist or cannot be reached.
    pub async fn size(&self, key: &str) -> Result<u64> {
        let meta = self
            .store
            .head(&Path::from(key))
            .await
            .map_err(|e| storage_err(key, e))?;
        Ok(meta.size)
    }

    /// Write `bytes` at `key`, replacing any object there (atomically on every backend).
    ///
    /// # Errors
    /// [`Error::Storage`] if the write fails.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        if bytes.len() > MULTIPART_ABOVE {
            let upload = self
                .store
                .put_multipart(&Path::from(key))
                .await
                .map_err(|e| storage_err(key, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART);
            writer.put(bytes);
            writer.finish().await.map_err(|e| storage_err(key, e))?;
            return Ok(());
        }
        self.store
            .put(&Path::from(key), PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| storage_err(key, e))?;
        Ok(())
    }

    /// Create `key` with `bytes` only if nothing is there yet. Returns `false` when another
    /// writer got there first: the commit primitive of the ledger and the registry.
    ///
    /// A failure other than "already exists" (a timeout, a 5xx) leaves it unknown whether
    /// the create happened, so the key is read back: holding these very bytes, the create
    /// won; holding others, it lost; absent, the error stands.
    ///
    /// # Errors
    /// [`Error::Storage`] if the write fails for any other reason.
    pub async fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(
                &Path::from(key),
                PutPayload::from_bytes(bytes.clone()),
                opts,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(err) => match self.get(key).await {
                Ok(Some(found)) => Ok(found == bytes),
                _ => Err(storage_err(key, err)),
            },
        }
    }

    /// `err`, from the first request to this lake, with its likely cause named: an
    /// endpoint that cannot be reached, a bucket that does not exist, credentials refused.
    pub fn explain(&self, err: Error) -> Error {
        let Error::Storage { key, message } = &err else {
            return err;
        };
        if !self.uri.starts_with("s3://") {
            return err;
        }
        let text = message.to_ascii_lowercase();
        let cause = if text.contains("nosuchbucket") || text.contains("bucket does not exist") {
            "the bucket does not exist: create it, or fix the bucket name in the lake URI"
        } else if text.contains("invalidaccesskeyid")
            || text.contains("signaturedoesnotmatch")
            || text.contains("accessdenied")
            || text.contains("forbidden")
            || text.contains("403")
        {
            "the credentials were refused: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
             (or the node's credential provider)"
        } else if text.contains("connect")
            || text.contains("dns")
            || text.contains("timed out")
            || text.contains("error sending request")
        {
            "the endpoint cannot be reached: check `endpoint=` in the lake URI (or \
             AWS_ENDPOINT) and that the server is up"
        } else {
            return err;
        };
        Error::Storage {
            key: key.clone(),
            message: format!("lake {}: {cause} ({})", self.uri, one_line(message)),
        }
    }

    /// Every object under `prefix` (recursively).
    ///
    /// # Errors
    /// [`Error::Storage`] if listing fails.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.store
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await
            .map_err(|e| storage_err(prefix, e))
    }

    /// The objects and sub-directories directly under `prefix` (one level).
    ///
    /// # Errors
    /// [`Error::Storage`] if listing fails.
    pub async fn list_dir(&self, prefix: &str) -> Result<(Vec<ObjectMeta>, Vec<String>)> {
        let listing = self
            .store
            .list_with_delimiter(Some(&Path::from(prefix)))
            .await
            .map_err(|e| storage_err(prefix, e))?;
        Ok((
            listing.objects,
            listing
                .common_prefixes
                .into_iter()
                .map(|p| p.to_string())
                .collect(),
        ))
    }

    /// Delete `key`; a missing key is not an error.
    ///
    /// # Errors
    /// [`Error::Storage`] if the delete fails.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(storage_err(key, err)),
        }
    }
}

/// Options of S3 lakes given in the configuration file's `[s3]` table: object_store's
/// Amazon configuration keys, with or without their `aws_` prefix (`access_key_id`,
/// `secret_access_key`, `session_token`, `region`, `endpoint`, `allow_http`,
/// `virtual_hosted_style_request`, ...). They have the lowest precedence: the `AWS_*`
/// environment variables override them, and the lake URI's options override both. `Debug`
/// shows the keys, never the values.
#[derive(Clone, Default, PartialEq)]
pub struct S3Options(Vec<(AmazonS3ConfigKey, String)>);

impl S3Options {
    /// Check and keep `pairs` (key, value).
    ///
    /// # Errors
    /// [`Error::Config`] naming a key object_store does not know.
    pub fn parse<K: AsRef<str>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let mut options = Vec::new();
        for (key, value) in pairs {
            let key = key.as_ref();
            let parsed = key.to_ascii_lowercase().parse().map_err(|_| {
                Error::Config(format!(
                    "[s3] `{key}` is not an S3 option; expected one of access_key_id, \
                     secret_access_key, session_token, region, endpoint, allow_http, \
                     virtual_hosted_style_request, skip_signature, checksum_algorithm, \
                     unsigned_payload, conditional_put or another object_store Amazon key"
                ))
            })?;
            options.push((parsed, value.into()));
        }
        Ok(Self(options))
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k.as_ref()))
            .finish()
    }
}

/// An S3-compatible bucket: `s3://bucket[/prefix][?key=value&...]`. Keys: `endpoint`,
/// `region`, `allow_http` (`true` to allow plain HTTP, for a local server), `path_style`
/// (`true` for `endpoint/bucket/key` requests; the default is virtual-hosted style when no
/// endpoint is given, path style when one is). Anything not in the URI (credentials above
/// all) comes from the usual `AWS_*` environment variables, then from `options`.
fn s3(uri: &str, rest: &str, options: &S3Options) -> Result<Arc<dyn ObjectStore>> {
    let bad = |why: String| Error::Config(format!("lake URI `{uri}`: {why}"));
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if bucket.len() < 3 {
        return Err(bad("a bucket name has at least 3 characters".into()));
    }
    // The file's options, then the environment over them (read as
    // `AmazonS3Builder::from_env` reads it), then the URI over both.
    let environment = std::env::vars().filter_map(|(name, value)| {
        let key = name
            .strip_prefix("AWS_")
            .and(name.to_ascii_lowercase().parse().ok())?;
        Some((key, value))
    });
    let mut builder = AmazonS3Builder::new();
    let mut path_style = None;
    for (key, value) in options.0.iter().cloned().chain(environment) {
        if key == AmazonS3ConfigKey::VirtualHostedStyleRequest {
            path_style = Some(!matches!(value.as_str(), "true" | "1"));
        }
        builder = builder.with_config(key, value);
    }
    let mut builder = builder.with_bucket_name(bucket);
    let mut endpoint = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let flag = |value: &str| match value {
            "true" | "1" | "" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(bad(format!("`{key}={other}`: expected true or false"))),
        };
        builder = match key {
            "endpoint" => {
                endpoint = Some(value.to_owned());
                builder.with_endpoint(value)
            }
            "region" => builder.with_region(value),
            "allow_http" => builder.with_allow_http(flag(value)?),
            "path_style" => {
                path_style = Some(flag(value)?);
                builder
            }
            other => {
                return Err(bad(format!(
                    "unknown option `{other}`; expected endpoint, region, allow_http or path_style"
                )));
            }
        };
    }
    let endpoint = endpoint.or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
    let virtual_hosted = !path_style.unwrap_or(endpoint.is_some());
    let store = builder
        .with_virtual_hosted_style_request(virtual_hosted)
        .with_retry(RetryConfig {
            max_retries: 5,
            retry_timeout: std::time::Duration::from_secs(60),
            ..RetryConfig::default()
        })
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let prefix = prefix.trim_matches('/');
    Ok(if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    })
}

/// An S3 error on one line: an XML error body is cut to its code and message.
fn one_line(message: &str) -> String {
    let Some((head, body)) = message.split_once("<?xml") else {
        return message.split_whitespace().collect::<Vec<_>>().join(" ");
    };
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].trim().to_owned())
    };
    let head = head.trim().trim_end_matches(':');
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(text)) => format!("{head}: {code}: {text}"),
        (Some(code), None) => format!("{head}: {code}"),
        _ => head.to_owned(),
    }
}

fn local(dir: &str) -> Result<LocalFileSystem> {
    let path = std::path::Path::new(dir);
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
    LocalFileSystem::new_with_prefix(path)
        .map(|fs| fs.with_automatic_cleanup(true))
        .map_err(|e| Error::Config(format!("lake directory {dir}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_error_body_is_cut_to_one_line() {
        let message = "Error performing GET http://h/b/k - Server returned non-2xx status code: \
                       403 Forbidden: <?xml version=\"1.0\"?>\n<Error><Code>InvalidAccessKeyId</Code>\
                       <Message>The key does not exist.</Message>\n<RequestId>x</RequestId></Error>";
        assert_eq!(
            one_line(message),
            "Error performing GET http://h/b/k - Server returned non-2xx status code: 403 \
             Forbidden: InvalidAccessKeyId: The key does not exist."
        );
        assert_eq!(one_line("a\n  b"), "a b");
    }

    async fn conditional_create_has_one_winner(meadow: Meadow) {
        assert!(
            meadow
                .put_if_absent("a/_ledger/1.json", Bytes::from("one"))
                .await
                .expect("put")
        );
        assert!(
            !meadow
                .put_if_absent("a/_ledger/1.json", Bytes::from("two"))
                .await
                .expect("put")
        );
        assert_eq!(
            meadow.get("a/_ledger/1.json").await.expect("get"),
            Some(Bytes::from("one"))
        );
        assert_eq!(meadow.get("a/_ledger/2.json").await.expect("get"), None);
        meadow
            .put("a/b/c.parquet", Bytes::from("cell"))
            .await
            .expect("put");
        let (objects, dirs) = meadow.list_dir("a").await.expect("list");
        assert!(objects.is_empty());
        assert_eq!(dirs, vec!["a/_ledger".to_owned(), "a/b".to_owned()]);
        assert_eq!(meadow.list("a").await.expect("list").len(), 2);
        assert_eq!(meadow.size("a/b/c.parquet").await.expect("size"), 4);
        assert_eq!(
            meadow
                .get_range("a/b/c.parquet", 1..3)
                .await
                .expect("range"),
            Bytes::from("el")
        );
        meadow.delete("a/b/c.parquet").await.expect("delete");
        meadow
            .delete("a/b/c.parquet")
            .await
            .expect("deleting twice is fine");
        assert_eq!(meadow.list("a/b").await.expect("list").len(), 0);
    }

    #[tokio::test]
    async fn memory_meadow() {
        conditional_create_has_one_winner(Meadow::open("memory://").expect("open")).await;
    }

    #[tokio::test]
    async fn local_meadow() {
        let dir = tempfile::tempdir().expect("dir");
        let uri = format!("file://{}", dir.path().display());
        conditional_create_has_one_winner(Meadow::open(&uri).expect("open")).await;
    }

    #[tokio::test]
    async fn a_local_lake_serves_ranges_from_its_files_as_the_store_does() {
        let dir = tempfile::tempdir().expect("dir");
        let bytes: Vec<u8> = (0..=255).cycle().take(10_000).collect();
        // A partition directory: its name has characters a store path may escape.
        let key = "frames/t/day=2024-05-01/cell_1.parquet";
        for uri in [
            dir.path().display().to_string(),
            format!("file://{}", dir.path().display()),
        ] {
            let meadow = Meadow::open(&uri).expect("open");
            meadow
                .put(key, Bytes::from(bytes.clone()))
                .await
                .expect("put");
            for range in [0..10_000, 17..4_113, 9_999..10_000] {
                let direct = meadow
                    .read_local(key, &range)
                    .expect("a local lake reads directly")
                    .expect("read");
                let stored = meadow.get_range(key, range.clone()).await.expect("get");
                assert_eq!(direct, stored, "{uri} {range:?}");
                assert_eq!(
                    &direct[..],
                    &bytes[range.start as usize..range.end as usize]
                );
            }
            // Empty ranges, ranges past the end and missing keys go to the store, which
            // answers them as it does for any lake.
            assert!(meadow.read_local(key, &(5..5)).is_none());
            assert!(meadow.read_local(key, &(9_000..10_001)).is_none());
            assert!(
                meadow
                    .read_local("frames/t/missing.parquet", &(0..1))
                    .is_none()
            );
        }
        let memory = Meadow::open("memory://").expect("open");
        memory.put(key, Bytes::from(bytes)).await.expect("put");
        assert!(memory.read_local(key, &(0..10)).is_none());
    }

    #[test]
    fn unknown_schemes_are_refused_with_the_alternatives() {
        let err = Meadow::open("ftp://host/x").expect_err("ftp");
        assert!(
            err.to_string().contains("`ftp` scheme is not supported"),
            "{err}"
        );
    }
}
