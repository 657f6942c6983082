//! The bee pool: one thread per bee, one fragment per bee at a time.
//!
//! Each bee is an OS thread that takes the next fragment from a shared queue, runs it in a
//! fresh chamber with the bee's budget and deadline, empties its scratch directory and
//! replies. A failed chamber — out of memory, past its deadline, trapped, even a host panic
//! while serving it — is reported to the submitter and the bee goes back to the queue: the
//! pool never loses a bee. Dropping the pool closes the queue and joins the bees after they
//! finish the fragments already taken.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::chamber::{ChamberEngine, Fragment, FragmentOutput};
use crate::{Error, Result};

/// Stack size of bee threads: wasm stacks live on it, next to the host's own frames.
const BEE_STACK: usize = 32 << 20;

/// How a pool's bees are sized.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Number of bees (one per core is the rule).
    pub bees: usize,
    /// Hard linear-memory budget of each bee's chamber, in bytes.
    pub budget: u64,
    /// Default deadline of a fragment.
    pub deadline: Duration,
    /// Directory under which each bee gets its scratch dir `bee-<n>`.
    pub scratch_root: PathBuf,
}

struct Job {
    fragment: Fragment,
    deadline: Duration,
    reply: Sender<Result<FragmentOutput>>,
}

/// What the bees are doing right now, for heartbeats and the colony temperature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolLoad {
    /// Bees running a fragment.
    pub busy: usize,
    /// Bees waiting for work.
    pub idle: usize,
    /// Fragments queued, not yet taken by a bee.
    pub queued: usize,
    /// Linear memory held by the running chambers, in bytes.
    pub memory_in_use: u64,
    /// What the chambers may hold at most: bees x budget.
    pub memory_limit: u64,
}

/// Live counters shared by the pool and its bees.
#[derive(Debug)]
struct Gauges {
    busy: AtomicUsize,
    queued: AtomicUsize,
    memory: Vec<Arc<AtomicU64>>,
}

/// A fixed set of bees running fragments in sealed chambers.
pub struct BeePool {
    engine: Arc<ChamberEngine>,
    queue: Option<Sender<Job>>,
    bees: Vec<JoinHandle<()>>,
    config: PoolConfig,
    gauges: Arc<Gauges>,
    /// The scratch root's lock file, locked for as long as the pool lives: how another
    /// process tells that the root is in use (see [`sweep_stale_scratch`]).
    _scratch_lock: std::fs::File,
}

impl std::fmt::Debug for BeePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeePool")
            .field("config", &self.config)
            .finish()
    }
}

impl BeePool {
    /// Start `config.bees` bees sharing `engine`.
    ///
    /// # Errors
    /// [`Error::Config`] if there are no bees or the budget is above the engine's maximum;
    /// [`Error::Io`] if a scratch directory cannot be created.
    pub fn new(engine: Arc<ChamberEngine>, config: PoolConfig) -> Result<Self> {
        if config.bees == 0 {
            return Err(Error::Config("a bee pool needs at least one bee".into()));
        }
        if config.budget > engine.max_budget() {
            return Err(Error::Config(format!(
                "bee budget of {} bytes is above the engine's maximum of {}",
                config.budget,
                engine.max_budget()
            )));
        }
        let scratch_lock = lock_scratch_root(&config.scratch_root)?;
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        let gauges = Arc::new(Gauges {
            busy: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            memory: (0..config.bees).map(|_| Arc::default()).collect(),
        });
        let mut bees = Vec::with_capacity(config.bees);
        for bee in 0..config.bees {
            let scratch = config.scratch_root.join(format!("bee-{bee}"));
            std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
            let engine = engine.clone();
            let jobs = jobs.clone();
            let budget = config.budget;
            let gauges = gauges.clone();
            let handle = std::thread::Builder::new()
                .name(format!("apiary-bee-{bee}"))
                .stack_size(BEE_STACK)
                .spawn(move || bee_loop(bee, &engine, budget, &scratch, &jobs, &gauges))
                .map_err(|e| Error::io(&config.scratch_root, e))?;
            bees.push(handle);
        }
        Ok(Self {
            engine,
            queue: Some(queue),
            bees,
            config,
            gauges,
            _scratch_lock: scratch_lock,
        })
    }

    /// The chamber engine the bees share.
    pub fn engine(&self) -> &Arc<ChamberEngine> {
        &self.engine
    }

    /// The pool's configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// What the bees are doing now.
    pub fn load(&self) -> PoolLoad {
        let busy = self
            .gauges
            .busy
            .load(Ordering::Relaxed)
            .min(self.config.bees);
        PoolLoad {
            busy,
            idle: self.config.bees - busy,
            queued: self.gauges.queued.load(Ordering::Relaxed),
            memory_in_use: self
                .gauges
                .memory
                .iter()
                .map(|m| m.load(Ordering::Relaxed))
                .sum(),
            memory_limit: self.config.budget * self.config.bees as u64,
        }
    }

    /// Queue `fragment` with the pool's default deadline; the answer arrives on the
    /// returned channel when a bee has run it.
    ///
    /// # Errors
    /// [`Error::PoolClosed`] if the bees are gone.
    pub fn submit(&self, fragment: Fragment) -> Result<Receiver<Result<FragmentOutput>>> {
        self.submit_with_deadline(fragment, self.config.deadline)
    }

    /// Queue `fragment` with its own deadline.
    ///
    /// # Errors
    /// [`Error::PoolClosed`] if the bees are gone.
    pub fn submit_with_deadline(
        &self,
        fragment: Fragment,
        deadline: Duration,
    ) -> Result<Receiver<Result<FragmentOutput>>> {
        let (reply, answer) = mpsc::channel();
        let job = Job {
            fragment,
            deadline,
            reply,
        };
        self.gauges.queued.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .queue
            .as_ref()
            .ok_or(Error::PoolClosed)
            .and_then(|q| q.send(job).map_err(|_| Error::PoolClosed));
        if let Err(err) = sent {
            self.gauges.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(err);
        }
        Ok(answer)
    }

    /// Run `fragment` and wait for its answer.
    ///
    /// # Errors
    /// Whatever the chamber reported (see [`ChamberEngine::run`]), or [`Error::PoolClosed`].
    pub fn run(&self, fragment: Fragment) -> Result<FragmentOutput> {
        self.submit(fragment)?
            .recv()
            .map_err(|_| Error::PoolClosed)?
    }
}

impl Drop for BeePool {
    fn drop(&mut self) {
        // Closing the queue ends each bee's loop once the queue is drained.
        self.queue.take();
        for bee in self.bees.drain(..) {
            let _ = bee.join();
        }
        // The bees' scratch directories go with them, and the root when nothing else is in
        // it: a process that runs one statement must not leave a directory behind.
        for bee in 0..self.config.bees {
            let _ = std::fs::remove_dir_all(self.config.scratch_root.join(format!("bee-{bee}")));
        }
        let _ = std::fs::remove_file(self.config.scratch_root.join(SCRATCH_LOCK));
        let _ = std::fs::remove_dir(&self.config.scratch_root);
    }
}

fn bee_loop(
    bee: usize,
    engine: &ChamberEngine,
    budget: u64,
    scratch: &Path,
    jobs: &Mutex<Receiver<Job>>,
    gauges: &Gauges,
) {
    let memory = gauges.memory.get(bee).cloned();
    loop {
        // Hold the lock only while taking a job, never while running one.
        let job = match jobs.lock() {
            Ok(queue) => queue.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { return };
        gauges.queued.fetch_sub(1, Ordering::Relaxed);
        gauges.busy.fetch_add(1, Ordering::Relaxed);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.run(
                bee,
                budget,
                job.deadline,
                scratch,
                &job.fragment,
                memory.clone(),
            )
        }))
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Trap {
                bee,
                message: format!(
                    "the host panicked while serving the chamber (this is a bug): {message}"
                ),
            })
        });
        let outcome = match (outcome, empty_dir(scratch)) {
            (Ok(_), Err(err)) => Err(err),
            (outcome, _) => outcome,
        };
        if let Some(memory) = &memory {
            memory.store(0, Ordering::Relaxed);
        }
        gauges.busy.fetch_sub(1, Ordering::Relaxed);
        // The submitter may have stopped waiting; that is not the bee's problem.
        let _ = job.reply.send(outcome);
    }
}

/// The prefix of a process's scratch root in the system's temporary directory:
/// `apiary-scratch-<process id>-<random id>`.
pub(crate) const SCRATCH_PREFIX: &str = "apiary-scratch-";

/// The file in a scratch root that its pool holds locked (the bees' directories are beside
/// it, so no chamber sees it).
const SCRATCH_LOCK: &str = ".lock";

/// A lock file younger than this may belong to a pool between creating and locking it.
const LOCK_GRACE: Duration = Duration::from_secs(10);

/// Create `root` and its lock file, and lock it: the lock goes when the process does, however
/// it ends.
fn lock_scratch_root(root: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let path = root.join(SCRATCH_LOCK);
    let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    file.lock().map_err(|e| Error::io(&path, e))?;
    Ok(file)
}

/// Remove the scratch roots in `dir` (see [`SCRATCH_PREFIX`]) that belong to `owner` (a
/// user id) and to pools no longer running: a process killed while its chambers spilled (by
/// the kernel's out-of-memory killer, say) cannot empty its own, and on a Pi the temporary
/// directory may be in memory or on the SD card. A root is in use while its lock file is
/// locked (a lock the kernel drops with the process, and which processes in other pid
/// namespaces sharing the directory see too) or younger than [`LOCK_GRACE`]; a root without
/// one is in use while its process id runs, as `/proc` tells (without `/proc`, it stays).
/// Returns how many roots were removed.
pub(crate) fn sweep_stale_scratch(dir: &Path, owner: u32) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // Not a symlink, and this user's own: another user's names are not this sweep's.
        let root = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&root) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != owner {
            continue;
        }
        let stale = match std::fs::File::open(root.join(SCRATCH_LOCK)) {
            Ok(lock) => {
                let old = lock
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > LOCK_GRACE);
                old && lock.try_lock().is_ok()
            }
            Err(_) => {
                let proc = Path::new("/proc");
                proc.join("self").exists() && !proc.join(pid.to_string()).exists()
            }
        };
        if stale && std::fs::remove_dir_all(&root).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Remove everything inside `dir` through a capability handle, so nothing a guest left
/// behind (symlinks included) can make the host touch anything outside it.
fn empty_dir(dir: &Path) -> Result<()> {
    let handle = Dir::open_ambient_dir(dir, ambient_authority()).map_err(|e| Error::io(dir, e))?;
    for entry in handle.entries().map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let is_dir = entry.file_type().map_err(|e| Error::io(dir, e))?.is_dir();
        let removed = if is_dir {
            handle.remove_dir_all(&name)
        } else {
            handle.remove_file(&name)
        };
        removed.map_err(|e| Error::io(dir.join(&name), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::time::SystemTime;

    use super::*;

    /// A scratch root named for `pid`, with a bee's directory holding a spill file.
    fn root(dir: &Path, pid: u32, id: &str) -> PathBuf {
        let root = dir.join(format!("{SCRATCH_PREFIX}{pid}-{id}"));
        std::fs::create_dir_all(root.join("bee-0")).expect("root");
        std::fs::write(root.join("bee-0").join("spill.arrow"), b"spilled").expect("spill");
        root
    }

    /// Make `root`'s lock file look `age` old.
    fn age_lock(root: &Path, age: Duration) {
        let file = std::fs::File::options()
            .write(true)
            .open(root.join(SCRATCH_LOCK))
            .expect("lock file");
        file.set_modified(SystemTime::now() - age).expect("mtime");
    }

    #[test]
    fn scratch_left_by_pools_that_no_longer_run_is_swept() {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let owner = std::fs::metadata(tmp.path()).expect("metadata").uid();
        // A process that ran and ended: its id is free (until something takes it again).
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let dead = child.id();
        child.wait().expect("wait for true");
        let me = std::process::id();

        // A root whose lock a pool holds stays, even under a dead process id (another pid
        // namespace); once the lock goes, the root goes.
        let held = root(tmp.path(), dead, "held");
        let lock = lock_scratch_root(&held).expect("lock");
        age_lock(&held, LOCK_GRACE * 2);
        // A root whose lock nobody holds goes, even under a running process id.
        let released = root(tmp.path(), me, "released");
        drop(lock_scratch_root(&released).expect("lock"));
        age_lock(&released, LOCK_GRACE * 2);
        // A lock file just made may not be locked yet: it stays.
        let fresh = root(tmp.path(), dead, "fresh");
        drop(lock_scratch_root(&fresh).expect("lock"));
        // Without a lock file, the process id decides.
        let dead_unlocked = root(tmp.path(), dead, "old");
        let live_unlocked = root(tmp.path(), me, "old");
        let other = tmp.path().join("someone-elses-dir");
        std::fs::create_dir_all(&other).expect("other dir");
        let not_a_pid = tmp.path().join(format!("{SCRATCH_PREFIX}x-1"));
        std::fs::create_dir_all(&not_a_pid).expect("odd name");

        // Another user's roots are left alone.
        assert_eq!(sweep_stale_scratch(tmp.path(), owner.wrapping_add(1)), 0);
        assert!(released.exists() && dead_unlocked.exists());

        assert_eq!(sweep_stale_scratch(tmp.path(), owner), 2);
        assert!(!released.exists(), "an unlocked root is removed");
        assert!(!dead_unlocked.exists(), "a dead process's root is removed");
        assert!(held.join("bee-0").join("spill.arrow").exists());
        assert!(fresh.exists() && live_unlocked.exists());
        assert!(other.exists() && not_a_pid.exists());

        drop(lock);
        assert_eq!(sweep_stale_scratch(tmp.path(), owner), 1);
        assert!(!held.exists(), "its pool gone, the root goes");
    }
}
