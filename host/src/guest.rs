//! Finding the guest component and keeping its compiled form on disk.
//!
//! Compiling the DataFusion guest with Cranelift takes minutes and gigabytes; loading its
//! precompiled form takes milliseconds. The compiled artefact is cached under a key made of
//! the guest's SHA-256 and the engine's compatibility hash (which covers the wasmtime
//! version and its code-generation settings), so a new
//! guest or a new wasmtime never loads a stale artefact. Writes go to a temporary file that
//! is renamed into place, so a reader never sees half an artefact.
//!
//! The guest's digest is kept beside the artefacts in a stamp with the file's size,
//! modification time and inode, so a start does not read and hash the guest again while
//! the file is unchanged.
//!
//! An artefact is a few hundred MB, and every upgrade of Apiary or wasmtime makes a new one.
//! Loading an artefact marks it used (its modification time); after compiling a new one,
//! the cache drops the artefacts nothing loaded for [`STALE_AFTER`], so an SD card does not
//! fill with the compiled guests of past versions.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::{Error, Result};

/// The file name cargo gives the chamber guest.
const GUEST_FILE: &str = "apiary_guest.wasm";

/// Compiled artefacts that nothing loaded for this long are removed when a new one is
/// written: 30 days.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Where the chamber guest is: `$APIARY_GUEST` if set, else as [`find_component`] finds
/// `apiary_guest.wasm`.
///
/// # Errors
/// [`Error::Guest`] listing the places searched, with the command that builds the guest.
pub fn find_guest() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("APIARY_GUEST") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Guest(format!(
                "APIARY_GUEST points at {}, which is not a file",
                path.display()
            )))
        };
    }
    find_component(GUEST_FILE)
}

/// Find the component `file_name` next to the running executable or in the cargo target
/// directory it was built in (`target/wasm32-wasip2/release/`).
///
/// # Errors
/// [`Error::Guest`] listing the places searched, with the command that builds the guests.
pub fn find_component(file_name: &str) -> Result<PathBuf> {
    let mut searched = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(4) {
            for candidate in [
                dir.join(file_name),
                dir.join("wasm32-wasip2").join("release").join(file_name),
            ] {
                if candidate.is_file() {
                    return Ok(candidate);
                }
                searched.push(candidate);
            }
        }
    }
    // A program built from this source tree (tests, doctests, examples) finds the guest
    // built from the same tree.
    let built: [Option<PathBuf>; 2] = [
        option_env!("CARGO_TARGET_DIR").map(PathBuf::from),
        Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target"),
        ),
    ];
    for dir in built.into_iter().flatten() {
        let candidate = dir.join("wasm32-wasip2").join("release").join(file_name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        searched.push(candidate);
    }
    Err(Error::Guest(format!(
        "{file_name} was not found (looked in {}); build the guests with `just build-guest`",
        searched
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The default directory for compiled guests: `$APIARY_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/apiary`, else `~/.cache/apiary`, else the system temp dir.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("APIARY_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("apiary");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("apiary");
    }
    std::env::temp_dir().join("apiary-cache")
}

/// A guest component loaded for an engine, and how it was obtained.
pub struct GuestArtifact {
    /// The component, ready to link.
    pub component: Component,
    /// The precompiled artefact on disk.
    pub cached_at: PathBuf,
    /// Whether this load had to run Cranelift (a cold cache).
    pub compiled: bool,
}

impl GuestArtifact {
    /// Load the component at `guest` for `engine`, compiling it only when `cache_dir` has no
    /// compatible precompiled artefact.
    ///
    /// # Errors
    /// [`Error::Io`] when the guest or the cache cannot be read or written,
    /// [`Error::Guest`] when the guest is not a valid component.
    pub fn load(engine: &Engine, guest: &Path, cache_dir: &Path) -> Result<Self> {
        let (digest, bytes) = guest_digest(guest, cache_dir)?;
        let cached_at = cache_dir.join(artefact_name(engine, &digest));
        let label = guest.display().to_string();
        if let Some(artifact) = Self::cached(engine, &cached_at, &label) {
            return Ok(artifact);
        }
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => std::fs::read(guest).map_err(|e| Error::io(guest, e))?,
        };
        Self::compile(engine, &bytes, &label, cached_at, cache_dir)
    }

    /// Load the component `bytes` (named `label` in errors and logs) for `engine`, the same
    /// way as [`GuestArtifact::load`].
    ///
    /// # Errors
    /// [`Error::Io`] when the cache cannot be written, [`Error::Guest`] when the bytes are
    /// not a valid component.
    pub fn from_bytes(
        engine: &Engine,
        bytes: &[u8],
        label: &str,
        cache_dir: &Path,
    ) -> Result<Self> {
        let cached_at = cache_dir.join(artefact_name(engine, &sha256_hex(bytes)));
        match Self::cached(engine, &cached_at, label) {
            Some(artifact) => Ok(artifact),
            None => Self::compile(engine, bytes, label, cached_at, cache_dir),
        }
    }

    /// The artefact at `cached_at`, when there is one this engine accepts.
    fn cached(engine: &Engine, cached_at: &Path, label: &str) -> Option<Self> {
        if !cached_at.is_file() {
            return None;
        }
        // SAFETY: the artefact was written by `Engine::precompile_component` of this
        // wasmtime version and engine configuration (both are in the key), renamed into
        // place only once complete, and the cache directory belongs to this user.
        // wasmtime still checks the header and refuses incompatible artefacts.
        match unsafe { Component::deserialize_file(engine, cached_at) } {
            Ok(component) => {
                mark_used(cached_at);
                Some(Self {
                    component,
                    cached_at: cached_at.to_path_buf(),
                    compiled: false,
                })
            }
            Err(err) => {
                tracing::warn!(path = %cached_at.display(), %err, "recompiling {label}");
                None
            }
        }
    }

    /// Compile `bytes` and keep the artefact at `cached_at`.
    fn compile(
        engine: &Engine,
        bytes: &[u8],
        label: &str,
        cached_at: PathBuf,
        cache_dir: &Path,
    ) -> Result<Self> {
        tracing::info!(component = label, "compiling a component (once)");
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| Error::Guest(format!("{label}: {e:#}")))?;
        write_atomically(&cached_at, &compiled)?;
        let removed = remove_stale(cache_dir, &cached_at, SystemTime::now());
        if removed > 0 {
            let days = STALE_AFTER.as_secs() / (24 * 60 * 60);
            tracing::info!(removed, days, "removed compiled guests unused for days");
        }
        // SAFETY: `compiled` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled) }
            .map_err(|e| Error::Guest(format!("{label}: {e:#}")))?;
        Ok(Self {
            component,
            cached_at,
            compiled: true,
        })
    }
}

/// The first 16 bytes of the SHA-256 of `bytes`, in hex.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The file name of the artefact of the guest whose digest is `digest`, for `engine`.
fn artefact_name(engine: &Engine, digest: &str) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    // The compatibility hash covers wasmtime's version and every engine setting that
    // changes generated code.
    format!("guest-{digest}-{:016x}.cwasm", hasher.finish())
}

/// The digest of the guest file at `guest`, and its bytes when they had to be read.
///
/// Reading and hashing the guest (about 110 MB) took about 180 ms of every start on this
/// project's x86 test machine (a `count(*)` from the CLI went from 230 ms to 50 ms without
/// it), and takes longer on cores without SHA instructions, such as a Raspberry Pi 4's.
/// So the digest is kept in a stamp in `cache_dir` with the file's size, modification time
/// and inode, and taken from there while all three are unchanged: a rebuilt or replaced
/// guest changes them. A stamp that cannot be written costs only the hashing next time.
fn guest_digest(guest: &Path, cache_dir: &Path) -> Result<(String, Option<Vec<u8>>)> {
    let metadata = std::fs::metadata(guest).map_err(|e| Error::io(guest, e))?;
    let identity = file_identity(&metadata);
    let mut hasher = DefaultHasher::new();
    std::fs::canonicalize(guest)
        .unwrap_or_else(|_| guest.to_path_buf())
        .hash(&mut hasher);
    let stamp = cache_dir.join(format!("guest-{:016x}.stamp", hasher.finish()));
    if let Some(identity) = &identity
        && let Ok(text) = std::fs::read_to_string(&stamp)
        && let Some((stamped, digest)) = text.trim_end().rsplit_once(' ')
        && stamped == identity
    {
        return Ok((digest.to_owned(), None));
    }
    let bytes = std::fs::read(guest).map_err(|e| Error::io(guest, e))?;
    let digest = sha256_hex(&bytes);
    if let Some(identity) = identity
        && let Err(err) = write_atomically(&stamp, format!("{identity} {digest}\n").as_bytes())
    {
        tracing::debug!(path = %stamp.display(), %err, "could not keep the guest's digest");
    }
    Ok((digest, Some(bytes)))
}

/// The size, modification time and inode of a file, as a stamp records them; `None` where
/// the platform does not give them all.
#[cfg(unix)]
fn file_identity(metadata: &std::fs::Metadata) -> Option<String> {
    let modified = metadata
        .modified()
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?;
    Some(format!(
        "{} {}.{:09} {}",
        metadata.len(),
        modified.as_secs(),
        modified.subsec_nanos(),
        std::os::unix::fs::MetadataExt::ino(metadata)
    ))
}

#[cfg(not(unix))]
fn file_identity(_metadata: &std::fs::Metadata) -> Option<String> {
    None
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artefact"),
        std::process::id()
    ));
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Mark the artefact at `path` used now. A cache that cannot be written keeps its times,
/// which costs at most a recompile a month later.
fn mark_used(path: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(SystemTime::now()));
    if let Err(err) = touched {
        tracing::debug!(path = %path.display(), %err, "could not mark the artefact used");
    }
}

/// Remove the compiled artefacts in `cache_dir` (and temporary files left by interrupted
/// writes) last used more than [`STALE_AFTER`] before `now`, except `keep`. Returns how
/// many were removed; files that cannot be removed are left.
fn remove_stale(cache_dir: &Path, keep: &Path, now: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let artefact = (name.starts_with("guest-")
            && (name.ends_with(".cwasm") || name.ends_with(".stamp")))
            || (name.starts_with(".guest-") && name.ends_with(".tmp"));
        if !artefact || path == keep {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > STALE_AFTER);
        if stale && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_aged(dir: &Path, name: &str, days: u64, now: SystemTime) -> PathBuf {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).expect("create");
        file.set_modified(now - Duration::from_secs(days * 24 * 60 * 60))
            .expect("set time");
        path
    }

    #[test]
    fn only_artefacts_unused_for_thirty_days_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let old = file_aged(dir.path(), "guest-aa-01.cwasm", 40, now);
        let recent = file_aged(dir.path(), "guest-bb-01.cwasm", 10, now);
        let kept = file_aged(dir.path(), "guest-cc-01.cwasm", 40, now);
        let interrupted = file_aged(dir.path(), ".guest-dd-01.cwasm.77.tmp", 31, now);
        let other = file_aged(dir.path(), "notes.txt", 400, now);
        let stamp = file_aged(dir.path(), "guest-0123456789abcdef.stamp", 45, now);
        std::fs::create_dir(dir.path().join("cells")).expect("cells dir");

        assert_eq!(remove_stale(dir.path(), &kept, now), 3);
        assert!(!old.exists());
        assert!(
            !stamp.exists(),
            "a stale stamp only costs hashing the guest once more"
        );
        assert!(!interrupted.exists());
        assert!(recent.exists());
        assert!(kept.exists(), "the artefact just written stays");
        assert!(other.exists(), "files that are not artefacts stay");
        assert!(dir.path().join("cells").is_dir());
        // Nothing left to remove.
        assert_eq!(remove_stale(dir.path(), &kept, now), 0);
    }

    #[test]
    fn a_guest_is_hashed_again_only_when_its_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("cache");
        let guest = dir.path().join("guest.wasm");
        std::fs::write(&guest, b"first guest").expect("write");
        let (digest, bytes) = guest_digest(&guest, &cache).expect("digest");
        assert_eq!(digest, sha256_hex(b"first guest"));
        assert_eq!(
            bytes.as_deref(),
            Some(&b"first guest"[..]),
            "hashed: the bytes were read"
        );

        // Unchanged: the stamp answers and the file is not read.
        let (again, bytes) = guest_digest(&guest, &cache).expect("digest");
        assert_eq!(again, digest);
        assert!(bytes.is_none());
        // The stamp is what answers: a stamp with another digest for the same file wins.
        let stamps: Vec<PathBuf> = std::fs::read_dir(&cache)
            .expect("cache")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(stamps.len(), 1, "{stamps:?}");
        let text = std::fs::read_to_string(&stamps[0]).expect("stamp");
        let (identity, _) = text.trim_end().rsplit_once(' ').expect("stamp format");
        std::fs::write(&stamps[0], format!("{identity} feed\n")).expect("forge");
        assert_eq!(guest_digest(&guest, &cache).expect("digest").0, "feed");

        // A new guest at the same path (a new size, time and inode) is hashed again.
        let next = dir.path().join("next.wasm");
        std::fs::write(&next, b"the second guest").expect("write");
        std::fs::rename(&next, &guest).expect("replace");
        let (digest, bytes) = guest_digest(&guest, &cache).expect("digest");
        assert_eq!(digest, sha256_hex(b"the second guest"));
        assert!(bytes.is_some());
        assert_eq!(
            guest_digest(&guest, &cache).expect("digest"),
            (digest, None)
        );

        // A cache that cannot be written still gives the digest, hashing every time.
        let blocked = dir.path().join("not-a-dir");
        std::fs::write(&blocked, b"").expect("write");
        let (digest, bytes) = guest_digest(&guest, &blocked).expect("digest");
        assert_eq!(digest, sha256_hex(b"the second guest"));
        assert!(bytes.is_some());
        let err = guest_digest(&dir.path().join("missing.wasm"), &cache).expect_err("missing");
        assert!(err.to_string().contains("missing.wasm"), "{err}");
    }

    #[test]
    fn loading_marks_an_artefact_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let path = file_aged(dir.path(), "guest-ee-01.cwasm", 40, now);
        mark_used(&path);
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        assert!(modified > now - Duration::from_secs(60), "{modified:?}");
        assert_eq!(remove_stale(dir.path(), Path::new("/none"), now), 0);
    }
}
