//! Finding the guest component and keeping its compiled form on disk.
//!
//! Compiling the DataFusion guest with Cranelift takes minutes and gigabytes; loading its
//! precompiled form takes milliseconds. The compiled artefact is cached under a key made of
//! the guest's SHA-256 and the engine's compatibility hash (which covers the wasmtime
//! version and its code-generation settings), so a new
//! guest or a new wasmtime never loads a stale artefact. Writes go to a temporary file that
//! is renamed into place, so a reader never sees half an artefact.
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
        let bytes = std::fs::read(guest).map_err(|e| Error::io(guest, e))?;
        Self::from_bytes(engine, &bytes, &guest.display().to_string(), cache_dir)
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
        let cached_at = cache_dir.join(cache_key(engine, bytes));
        if cached_at.is_file() {
            // SAFETY: the artefact was written by `Engine::precompile_component` of this
            // wasmtime version and engine configuration (both are in the key), renamed into
            // place only once complete, and the cache directory belongs to this user.
            // wasmtime still checks the header and refuses incompatible artefacts.
            match unsafe { Component::deserialize_file(engine, &cached_at) } {
                Ok(component) => {
                    mark_used(&cached_at);
                    return Ok(Self {
                        component,
                        cached_at,
                        compiled: false,
                    });
                }
                Err(err) => {
                    tracing::warn!(path = %cached_at.display(), %err, "recompiling {label}");
                }
            }
        }
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

fn cache_key(engine: &Engine, guest: &[u8]) -> String {
    let digest = Sha256::digest(guest);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    // The compatibility hash covers wasmtime's version and every engine setting that
    // changes generated code.
    format!("guest-{hex}-{:016x}.cwasm", hasher.finish())
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
        let artefact = (name.starts_with("guest-") && name.ends_with(".cwasm"))
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
        std::fs::create_dir(dir.path().join("cells")).expect("cells dir");

        assert_eq!(remove_stale(dir.path(), &kept, now), 2);
        assert!(!old.exists());
        assert!(!interrupted.exists());
        assert!(recent.exists());
        assert!(kept.exists(), "the artefact just written stays");
        assert!(other.exists(), "files that are not artefacts stay");
        assert!(dir.path().join("cells").is_dir());
        // Nothing left to remove.
        assert_eq!(remove_stale(dir.path(), &kept, now), 0);
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
