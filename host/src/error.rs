//! The host's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Shorthand for results with the host's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure a guest reported from inside its chamber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuestErrorKind {
    /// The SQL could not be planned or executed (DataFusion's message).
    Sql,
    /// Reading a cell or emitting a result failed.
    Io,
    /// A bug in the guest.
    Internal,
}

/// Why a chamber task or the pool failed. Every variant says which bee, where it matters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The fragment needed more memory than the bee's budget. The chamber was discarded;
    /// the bee takes the next task in a fresh one.
    #[error(
        "bee {bee}: {fragment} needed more than the bee's memory budget of {budget} bytes \
         (it asked for {requested} bytes; peak {peak} bytes: {reason}); give bees a larger budget or \
         cut the work into smaller fragments"
    )]
    MemoryExceeded {
        /// The bee that ran the fragment.
        bee: usize,
        /// Which fragment: `the fragment`, `fragment 3 of 8`, `the merge`.
        fragment: String,
        /// The bee's hard budget in bytes.
        budget: u64,
        /// Bytes of linear memory the chamber asked for when it hit the wall.
        requested: u64,
        /// Peak linear memory the chamber held.
        peak: u64,
        /// What hit the limit: the hard wall, or DataFusion's pool inside the chamber.
        reason: String,
    },
    /// The fragment ran past its deadline and was stopped.
    #[error("bee {bee}: {fragment} was stopped at its deadline of {limit:?}")]
    Timeout {
        /// The bee that ran the fragment.
        bee: usize,
        /// Which fragment: `the fragment`, `fragment 3 of 8`, `the merge`.
        fragment: String,
        /// The deadline.
        limit: Duration,
    },
    /// The guest reported an error: for SQL errors, DataFusion's own text.
    #[error("{message}")]
    GuestError {
        /// The bee that ran the fragment.
        bee: usize,
        /// What kind of error.
        kind: GuestErrorKind,
        /// The guest's message.
        message: String,
    },
    /// The chamber trapped (a guest panic, a stack overflow, a flood of output...).
    #[error("bee {bee}: the chamber trapped: {message}")]
    Trap {
        /// The bee that ran the fragment.
        bee: usize,
        /// The trap and whatever the guest wrote to stderr before it.
        message: String,
    },
    /// The guest component could not be found, compiled, cached or instantiated.
    #[error("guest component: {0}")]
    Guest(String),
    /// A user-defined function module cannot be used: not a component, the wrong world,
    /// unreadable signatures, or a function that does not exist.
    #[error("{0}")]
    Function(String),
    /// A user-defined function trapped inside its chamber.
    #[error("bee {bee}: function `{function}` failed: {message}")]
    FunctionTrap {
        /// The bee whose chamber ran it.
        bee: usize,
        /// The function.
        function: String,
        /// The trap, and the end of what the function printed.
        message: String,
    },
    /// A file the host needs could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Input the user gave cannot be used: a missing file, a malformed line, a column that
    /// does not fit. The message names the file and where in it.
    #[error("{0}")]
    Input(String),
    /// The lake refused an operation: bad names, schemas, partitions or a damaged ledger.
    #[error(transparent)]
    Lake(#[from] apiary_engine::lake::LakeError),
    /// Object storage failed.
    #[error("storage error at `{key}`: {message}")]
    Storage {
        /// The key involved.
        key: String,
        /// What the store said.
        message: String,
    },
    /// A hive, box or frame does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A hive, box or frame already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// Committed state could not be read back.
    #[error("corrupt lake state: {0}")]
    Corrupt(String),
    /// A commit lost the race to other writers too many times.
    #[error("gave up committing to {dir} after {attempts} attempts lost to other writers")]
    CommitContention {
        /// The frame's directory.
        dir: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A bug in the host.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
    /// The pool was shut down before the task could run.
    #[error("the bee pool has shut down")]
    PoolClosed,
    /// A fragment of a distributed statement failed on every node that tried it.
    #[error(
        "{fragment} of query {query} was abandoned after {} attempts over {}: {}; \
         check the nodes with `apiary status`, then give bees a larger budget or run the \
         statement on one node with --distribute never",
        attempts.len(),
        cells_list(cells),
        attempts_list(attempts)
    )]
    Abandoned {
        /// The statement's id.
        query: String,
        /// Which fragment.
        fragment: String,
        /// The cells it reads.
        cells: Vec<String>,
        /// Every attempt, in order.
        attempts: Vec<Attempt>,
    },
    /// A fragment failed on another node in a way no other node would avoid.
    #[error("{fragment} failed on node {node}: {message}")]
    Remote {
        /// The node that ran it.
        node: String,
        /// Which fragment.
        fragment: String,
        /// What the node reported.
        message: String,
    },
    /// The node is too busy for what was asked.
    #[error(
        "node {node} is {temperature} and refuses {what}; retry when it has cooled (see \
         `apiary status`) or send the work to another node"
    )]
    Overheated {
        /// The node.
        node: String,
        /// Its colony temperature.
        temperature: String,
        /// What it refused: `new queries`, `writes`.
        what: String,
    },
}

/// One try of a distributed fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The node that was given the fragment.
    pub node: String,
    /// Why the attempt failed.
    pub error: String,
    /// How long it ran before it failed (or was given up on).
    pub elapsed: Duration,
}

fn cells_list(cells: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = format!("{} cells (", cells.len());
    text.push_str(&cells[..cells.len().min(SHOWN)].join(", "));
    if cells.len() > SHOWN {
        text.push_str(&format!(", and {} more", cells.len() - SHOWN));
    }
    text.push(')');
    text
}

fn attempts_list(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "attempt {} on node {} failed after {:.1} s: {}",
                i + 1,
                a.node,
                a.elapsed.as_secs_f64(),
                a.error
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
