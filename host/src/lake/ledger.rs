//! Frame ledgers in the meadow: reading a frame's state and committing the next entry.
//!
//! A frame's state is its newest checkpoint plus the entries after it. Entries are found by
//! probing `ledger_key(v + 1)`, `v + 2`, ... until one is missing, so opening a frame reads
//! at most [`CHECKPOINT_INTERVAL`] entries and lists nothing but the checkpoint directory.
//!
//! A commit builds its action from the newest state, validates it, and creates the next
//! entry with a conditional put. Losing the race means another writer committed that
//! version: the committer catches up on the new entries and builds the action again (so an
//! overwrite also removes cells appended meanwhile), with a short randomised back-off.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apiary_engine::lake::{
    Action, CHECKPOINT_DIR, Checkpoint, FrameState, LedgerEntry, checkpoint_key, ledger_key,
    parse_checkpoint_key, replay, should_checkpoint, validate,
};
use bytes::Bytes;

use super::meadow::Meadow;
use crate::{Error, Result};

/// How many lost races a commit tolerates before giving up.
const MAX_COMMIT_ATTEMPTS: u32 = 10_000;

fn key(dir: &str, relative: &str) -> String {
    format!("{dir}/{relative}")
}

/// The newest state of the frame in `dir`, starting from `known` when the caller has one.
///
/// # Errors
/// [`Error::Lake`] when the ledger is empty, has a gap or an entry that does not apply;
/// [`Error::Storage`] when the meadow cannot be read.
pub(crate) async fn load_state(
    meadow: &Meadow,
    dir: &str,
    known: Option<FrameState>,
) -> Result<FrameState> {
    let mut state = match known {
        Some(state) => Some(state),
        None => newest_checkpoint(meadow, dir).await?.map(|c| c.state),
    };
    let mut entries = Vec::new();
    let mut next = state.as_ref().map_or(0, |s| s.version + 1);
    while let Some(bytes) = meadow.get(&key(dir, &ledger_key(next))).await? {
        entries.push(LedgerEntry::from_json(&bytes)?);
        next += 1;
    }
    if entries.is_empty()
        && let Some(state) = state
    {
        return Ok(state);
    }
    let checkpoint = state.take().map(Checkpoint::new);
    Ok(replay(checkpoint, entries)?)
}

async fn newest_checkpoint(meadow: &Meadow, dir: &str) -> Result<Option<Checkpoint>> {
    let (objects, _) = meadow.list_dir(&key(dir, CHECKPOINT_DIR)).await?;
    let newest = objects
        .iter()
        .filter_map(|o| {
            parse_checkpoint_key(o.location.as_ref()).map(|v| (v, o.location.to_string()))
        })
        .max();
    let Some((_, location)) = newest else {
        return Ok(None);
    };
    match meadow.get(&location).await? {
        Some(bytes) => Ok(Some(Checkpoint::from_json(&bytes)?)),
        None => Ok(None),
    }
}

/// What a commit produced.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub(crate) state: FrameState,
    pub(crate) attempts: u32,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Commit the action `build` makes from the newest state of the frame in `dir`.
///
/// # Errors
/// Whatever `build` or [`validate`] return for the newest state (nothing is committed
/// then), [`Error::Storage`] on I/O failures, [`Error::CommitContention`] after
/// [`MAX_COMMIT_ATTEMPTS`] lost races.
pub(crate) async fn commit<F>(
    meadow: &Meadow,
    dir: &str,
    writer: &str,
    known: Option<FrameState>,
    mut build: F,
) -> Result<Committed>
where
    F: FnMut(&FrameState) -> Result<Action>,
{
    let mut state = load_state(meadow, dir, known).await?;
    for attempt in 1..=MAX_COMMIT_ATTEMPTS {
        let action = build(&state)?;
        validate(&state, &action)?;
        let entry = LedgerEntry {
            version: state.version + 1,
            committed_at_ms: now_ms(),
            writer: writer.to_owned(),
            action,
        };
        let version = entry.version;
        let bytes = Bytes::from(entry.to_json()?);
        if meadow
            .put_if_absent(&key(dir, &ledger_key(version)), bytes)
            .await?
        {
            let mut next = state;
            next.apply(entry)?;
            if should_checkpoint(version) {
                let checkpoint = Checkpoint::new(next.clone());
                // Best effort: a missing checkpoint only makes the next open read more.
                let _ = meadow
                    .put_if_absent(
                        &key(dir, &checkpoint_key(version)),
                        Bytes::from(checkpoint.to_json()?),
                    )
                    .await;
            }
            return Ok(Committed {
                state: next,
                attempts: attempt,
            });
        }
        // Lost the race: catch up, back off a little (more as contention grows), rebuild.
        state = load_state(meadow, dir, Some(state)).await?;
        let jitter = u64::from(rand_u16()) % (1 + u64::from(attempt.min(20)) * 2);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
    }
    Err(Error::CommitContention {
        dir: dir.to_owned(),
        attempts: MAX_COMMIT_ATTEMPTS,
    })
}

/// A cheap random number for back-off jitter.
fn rand_u16() -> u16 {
    (uuid::Uuid::new_v4().as_u128() & 0xffff) as u16
}
