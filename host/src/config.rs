//! Node configuration: detected hardware, a TOML file, `APIARY_*` environment variables and
//! command-line flags, in that order of precedence.
//!
//! Every setting has a default derived from the machine: one bee per core, and the memory
//! left after the host's headroom shared between the bees. [`Settings`] remembers where each
//! value came from, so `apiary status` can show it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::lake::S3Options;
use crate::swarm::{Distribute, HotWrites};
use crate::{Error, Result};

const MIB: u64 = 1 << 20;
/// Smallest bee budget: below this the guest cannot plan a query.
pub const MIN_BUDGET_MIB: u64 = 32;
/// Largest bee budget: a chamber's linear memory is 32-bit.
pub const MAX_BUDGET_MIB: u64 = 4096;

/// The cores this process may use (affinity and cgroup CPU quota included), at least 1.
pub fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What this machine offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardware {
    /// Cores this process may use (affinity and cgroup CPU quota included).
    pub cores: usize,
    /// Memory this process may use: the machine's, or the cgroup's limit when lower.
    pub memory: u64,
    /// Whether a cgroup limit is below the machine's memory.
    pub cgroup_limited: bool,
}

impl Hardware {
    /// Look at this machine.
    pub fn detect() -> Self {
        let cores = machine_cores();
        let (memory, cgroup_limited) = match sysinfo::System::new() {
            Ok(mut system) => {
                system.refresh_memory();
                let total = system.total_memory();
                match system.cgroup_limits() {
                    Some(limits) if limits.total_memory > 0 && limits.total_memory < total => {
                        (limits.total_memory, true)
                    }
                    _ => (total, false),
                }
            }
            Err(_) => (0, false),
        };
        Self {
            cores,
            memory,
            cgroup_limited,
        }
    }

    /// Memory kept for the host process itself (its runtime, caches and results): a quarter
    /// of the memory, at least 256 MiB.
    pub fn host_headroom(&self) -> u64 {
        (self.memory / 4).max(256 * MIB)
    }

    /// The default budget of each of `bees` bees: what is left after the host's headroom,
    /// shared equally, in whole MiB, within [`MIN_BUDGET_MIB`]..=[`MAX_BUDGET_MIB`].
    pub fn budget_per_bee(&self, bees: usize) -> u64 {
        let usable = self.memory.saturating_sub(self.host_headroom());
        let share = usable / bees.max(1) as u64 / MIB;
        share.clamp(MIN_BUDGET_MIB, MAX_BUDGET_MIB) * MIB
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Apiary's default (possibly derived from the hardware).
    Default,
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Env(name) => write!(f, "${name}"),
            Self::Flag(name) => write!(f, "--{name}"),
        }
    }
}

/// The keys a configuration file may hold. Unknown keys are refused, naming the key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    lake: Option<String>,
    bees: Option<usize>,
    budget_mib: Option<u64>,
    deadline_secs: Option<u64>,
    cache_dir: Option<PathBuf>,
    heartbeat_secs: Option<u64>,
    poll_ms: Option<u64>,
    distribute: Option<String>,
    cell_cache_dir: Option<PathBuf>,
    cell_cache_mib: Option<u64>,
    hot_writes: Option<String>,
    s3: Option<BTreeMap<String, String>>,
}

/// Values given on the command line; `None` leaves the setting to the file, environment or
/// default.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--lake`
    pub lake: Option<String>,
    /// `--bees`
    pub bees: Option<usize>,
    /// `--budget-mib`
    pub budget_mib: Option<u64>,
    /// `--deadline-secs`
    pub deadline_secs: Option<u64>,
    /// `--distribute`
    pub distribute: Option<String>,
}

/// A node's resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The lake URI.
    pub lake: String,
    /// Number of bees (concurrent chambers).
    pub bees: usize,
    /// Memory budget of each bee, in bytes.
    pub budget: u64,
    /// Deadline of each fragment.
    pub deadline: Duration,
    /// Where the compiled guest is cached.
    pub cache_dir: PathBuf,
    /// How often a node writes its heartbeat.
    pub heartbeat: Duration,
    /// How often workers look for tasks and coordinators for results.
    pub poll: Duration,
    /// When split statements go to other nodes.
    pub distribute: Distribute,
    /// Where the cell cache lives.
    pub cell_cache_dir: PathBuf,
    /// Size limit of the cell cache in bytes; `None` for the default (2 GiB, or a quarter
    /// of the free disk when less, for a lake in S3; off for a local lake, whose cells are
    /// read in place); 0 turns the cache off.
    pub cell_cache: Option<u64>,
    /// What writes do while the node is hot.
    pub hot_writes: HotWrites,
    /// Options of an S3 lake from the file's `[s3]` table (credentials, region, endpoint),
    /// under the `AWS_*` environment and the lake URI.
    pub s3: S3Options,
    /// The machine the defaults were derived from.
    pub hardware: Hardware,
    /// The configuration file that was read, if any.
    pub file: Option<PathBuf>,
    /// Where each setting came from, by key.
    pub sources: BTreeMap<&'static str, Source>,
}

/// The configuration file used when none is named: `$APIARY_CONFIG`, else
/// `$XDG_CONFIG_HOME/apiary/config.toml`, else `~/.config/apiary/config.toml`.
pub fn default_config_path() -> PathBuf {
    if let Some(path) = std::env::var_os("APIARY_CONFIG") {
        return PathBuf::from(path);
    }
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(std::env::temp_dir)
        .join("apiary")
        .join("config.toml")
}

/// The default lake for a solo node: `$XDG_DATA_HOME/apiary/lake`, else
/// `~/.local/share/apiary/lake`.
pub fn default_lake_path() -> PathBuf {
    data_dir().join("lake")
}

/// Apiary's local data directory (node identity, shell history, the default lake).
pub fn data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("apiary")
}

impl Settings {
    /// Apiary's defaults for `hardware`: one bee per core, the memory left after the host's
    /// headroom shared between them, the default lake and cache, no file.
    pub fn for_hardware(hardware: Hardware) -> Self {
        let bees = hardware.cores.max(1);
        Self {
            lake: default_lake_path().display().to_string(),
            bees,
            budget: hardware.budget_per_bee(bees),
            deadline: Duration::from_secs(600),
            cache_dir: crate::default_cache_dir(),
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_millis(250),
            distribute: Distribute::Auto,
            cell_cache_dir: crate::default_cache_dir().join("cells"),
            cell_cache: None,
            hot_writes: HotWrites::Block,
            s3: S3Options::default(),
            hardware,
            file: None,
            sources: BTreeMap::new(),
        }
    }

    /// Resolve settings for this process: the file at `config` (or the default path, if it
    /// exists), the process environment, then `flags`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file, variable or flag and what is allowed.
    pub fn load(config: Option<&Path>, flags: &Overrides) -> Result<Self> {
        Self::resolve(
            Hardware::detect(),
            config,
            |name| std::env::var(name).ok(),
            flags,
        )
    }

    /// Resolve settings from explicit inputs (for tests and embedders).
    ///
    /// # Errors
    /// [`Error::Config`] naming the file, variable or flag and what is allowed.
    pub fn resolve(
        hardware: Hardware,
        config: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> Result<Self> {
        let default = default_config_path();
        let config = config.or_else(|| default.exists().then_some(default.as_path()));
        Self::resolve_with_file(hardware, config, env, flags)
    }

    /// Resolve settings from `config` only (no file when `None`, not even the default one),
    /// the environment `env` and `flags`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file, variable or flag and what is allowed.
    pub fn resolve_with_file(
        hardware: Hardware,
        config: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> Result<Self> {
        let (file, path) = match config {
            Some(path) => (read_file(path)?, Some(path.to_path_buf())),
            None => (FileConfig::default(), None),
        };
        let file_source = || Source::File(path.clone().unwrap_or_default());
        let mut sources = BTreeMap::new();

        let mut pick = |key: &'static str,
                        from_file: Option<String>,
                        env_name: &'static str,
                        flag: Option<String>,
                        flag_name: &'static str|
         -> Option<(String, Source)> {
            let chosen = flag
                .map(|v| (v, Source::Flag(flag_name)))
                .or_else(|| env(env_name).map(|v| (v, Source::Env(env_name))))
                .or_else(|| from_file.map(|v| (v, file_source())));
            sources.insert(
                key,
                chosen.as_ref().map_or(Source::Default, |(_, s)| s.clone()),
            );
            chosen
        };

        let defaults = Self::for_hardware(hardware);
        let lake = pick("lake", file.lake, "APIARY_LAKE", flags.lake.clone(), "lake")
            .map_or(defaults.lake, |(v, _)| v);

        let bees = match pick(
            "bees",
            file.bees.map(|b| b.to_string()),
            "APIARY_BEES",
            flags.bees.map(|b| b.to_string()),
            "bees",
        ) {
            None => defaults.bees,
            Some((value, source)) => parse_in(&value, &source, "bees", 1, 1024, "bees")?,
        };

        let budget = match pick(
            "budget_mib",
            file.budget_mib.map(|b| b.to_string()),
            "APIARY_BUDGET_MIB",
            flags.budget_mib.map(|b| b.to_string()),
            "budget-mib",
        ) {
            None => hardware.budget_per_bee(bees),
            Some((value, source)) => {
                let mib = parse_in(
                    &value,
                    &source,
                    "budget_mib",
                    MIN_BUDGET_MIB as usize,
                    MAX_BUDGET_MIB as usize,
                    "MiB",
                )?;
                mib as u64 * MIB
            }
        };

        let deadline = match pick(
            "deadline_secs",
            file.deadline_secs.map(|d| d.to_string()),
            "APIARY_DEADLINE_SECS",
            flags.deadline_secs.map(|d| d.to_string()),
            "deadline-secs",
        ) {
            None => defaults.deadline,
            Some((value, source)) => Duration::from_secs(parse_in(
                &value,
                &source,
                "deadline_secs",
                1,
                7 * 24 * 3600,
                "seconds",
            )? as u64),
        };

        let cache_dir = match pick(
            "cache_dir",
            file.cache_dir.map(|p| p.display().to_string()),
            "APIARY_CACHE_DIR",
            None,
            "cache-dir",
        ) {
            None => defaults.cache_dir,
            Some((value, _)) => PathBuf::from(value),
        };

        let heartbeat = match pick(
            "heartbeat_secs",
            file.heartbeat_secs.map(|h| h.to_string()),
            "APIARY_HEARTBEAT_SECS",
            None,
            "heartbeat-secs",
        ) {
            None => defaults.heartbeat,
            Some((value, source)) => {
                Duration::from_secs(
                    parse_in(&value, &source, "heartbeat_secs", 1, 3600, "seconds")? as u64,
                )
            }
        };

        let poll = match pick(
            "poll_ms",
            file.poll_ms.map(|h| h.to_string()),
            "APIARY_POLL_MS",
            None,
            "poll-ms",
        ) {
            None => defaults.poll,
            Some((value, source)) => Duration::from_millis(parse_in(
                &value,
                &source,
                "poll_ms",
                10,
                60_000,
                "milliseconds",
            )? as u64),
        };

        let distribute = match pick(
            "distribute",
            file.distribute,
            "APIARY_DISTRIBUTE",
            flags.distribute.clone(),
            "distribute",
        ) {
            None => defaults.distribute,
            Some((value, source)) => Distribute::parse(&value).ok_or_else(|| {
                Error::Config(format!(
                    "distribute = `{value}` (from {source}): expected auto, always or never"
                ))
            })?,
        };

        let cell_cache_dir = match pick(
            "cell_cache_dir",
            file.cell_cache_dir.map(|p| p.display().to_string()),
            "APIARY_CELL_CACHE_DIR",
            None,
            "cell-cache-dir",
        ) {
            None => cache_dir.join("cells"),
            Some((value, _)) => PathBuf::from(value),
        };

        let cell_cache = match pick(
            "cell_cache_mib",
            file.cell_cache_mib.map(|m| m.to_string()),
            "APIARY_CELL_CACHE_MIB",
            None,
            "cell-cache-mib",
        ) {
            None => None,
            Some((value, source)) => {
                Some(parse_in(&value, &source, "cell_cache_mib", 0, 1 << 30, "MiB")? as u64 * MIB)
            }
        };

        let hot_writes = match pick(
            "hot_writes",
            file.hot_writes,
            "APIARY_HOT_WRITES",
            None,
            "hot-writes",
        ) {
            None => defaults.hot_writes,
            Some((value, source)) => HotWrites::parse(&value).ok_or_else(|| {
                Error::Config(format!(
                    "hot_writes = `{value}` (from {source}): expected block, error or ignore"
                ))
            })?,
        };

        let s3 = match file.s3 {
            None => S3Options::default(),
            Some(table) => S3Options::parse(table).map_err(|e| match e {
                Error::Config(why) => Error::Config(format!("{}: {why}", file_source())),
                other => other,
            })?,
        };

        Ok(Self {
            lake,
            bees,
            budget,
            deadline,
            cache_dir,
            heartbeat,
            poll,
            distribute,
            cell_cache_dir,
            cell_cache,
            hot_writes,
            s3,
            hardware,
            file: path,
            sources,
        })
    }

    /// Where `key`'s value came from.
    pub fn source(&self, key: &str) -> Source {
        self.sources.get(key).cloned().unwrap_or(Source::Default)
    }

    /// A configuration file holding these settings, with comments, for `apiary init`.
    pub fn to_toml(&self) -> String {
        format!(
            "# Apiary node configuration. Precedence: this file < APIARY_* environment variables < flags.\n\
             # Detected: {cores} cores, {memory} MiB of memory{cgroup}.\n\
             \n\
             # The lake: a local directory, file:///path or memory://.\n\
             lake = {lake:?}\n\
             \n\
             # Bees run chambers concurrently: one per core by default.\n\
             bees = {bees}\n\
             \n\
             # Memory budget of each bee, in MiB ({min}..={max}). Default: the memory left after the\n\
             # host's headroom ({headroom} MiB) shared between the bees.\n\
             budget_mib = {budget}\n\
             \n\
             # Deadline of each fragment, in seconds.\n\
             deadline_secs = {deadline}\n\
             \n\
             # How often `apiary node` writes its heartbeat, in seconds.\n\
             heartbeat_secs = {heartbeat}\n\
             \n\
             # How often workers look for tasks and coordinators for results, in milliseconds.\n\
             poll_ms = {poll}\n\
             \n\
             # When split statements go to other nodes: auto (when they have more fragments than\n\
             # this node has bees), always, or never.\n\
             distribute = \"{distribute}\"\n\
             \n\
             # The cell cache: byte ranges of an S3 lake's cells kept on local disk. Default size:\n\
             # 2 GiB, or a quarter of the free disk when less; 0 turns it off. A local lake is\n\
             # read in place, without the cache, unless cell_cache_mib is set.\n\
             cell_cache_dir = {cell_cache_dir:?}\n\
             # cell_cache_mib = 2048\n\
             \n\
             # What writes do while the node is hot: block (wait up to the deadline), error, ignore.\n\
             hot_writes = \"{hot_writes}\"\n\
             \n\
             # An S3 lake (lake = \"s3://bucket/prefix?endpoint=...&region=...\") takes its\n\
             # credentials from the AWS_* environment variables, or from this table (the\n\
             # environment wins, the lake URI wins over both):\n\
             # [s3]\n\
             # access_key_id = \"...\"\n\
             # secret_access_key = \"...\"\n\
             # region = \"us-east-1\"\n\
             # endpoint = \"http://192.168.1.10:9000\"\n\
             # allow_http = \"true\"\n",
            cores = self.hardware.cores,
            memory = self.hardware.memory / MIB,
            cgroup = if self.hardware.cgroup_limited {
                " (a cgroup limit)"
            } else {
                ""
            },
            lake = self.lake,
            bees = self.bees,
            min = MIN_BUDGET_MIB,
            max = MAX_BUDGET_MIB,
            headroom = self.hardware.host_headroom() / MIB,
            budget = self.budget / MIB,
            deadline = self.deadline.as_secs(),
            heartbeat = self.heartbeat.as_secs(),
            poll = self.poll.as_millis(),
            distribute = self.distribute.as_str(),
            cell_cache_dir = self.cell_cache_dir.display().to_string(),
            hot_writes = self.hot_writes.as_str(),
        )
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "configuration file {}: {e} (write one with `apiary init`)",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        let message = e.message().trim().to_owned();
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let keys = if message.contains("expected one of") {
            ""
        } else {
            "; allowed keys: lake, bees, budget_mib, deadline_secs, cache_dir, heartbeat_secs, \
             poll_ms, distribute, cell_cache_dir, cell_cache_mib, hot_writes, [s3]"
        };
        Error::Config(format!(
            "configuration file {}{}: {message}{keys}",
            path.display(),
            line.map(|l| format!(", line {l}")).unwrap_or_default()
        ))
    })
}

/// Parse `value` as a whole number in `min..=max`, or say which setting is wrong and why.
fn parse_in(
    value: &str,
    source: &Source,
    key: &str,
    min: usize,
    max: usize,
    unit: &str,
) -> Result<usize> {
    let invalid = || {
        Error::Config(format!(
            "{key} from {source}: `{value}` is not allowed; expected a whole number of {unit} from {min} to {max}"
        ))
    };
    let number: usize = value.trim().parse().map_err(|_| invalid())?;
    if (min..=max).contains(&number) {
        Ok(number)
    } else {
        Err(invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PI: Hardware = Hardware {
        cores: 4,
        memory: 4096 * MIB,
        cgroup_limited: false,
    };

    fn resolve(file: Option<&str>, env: &[(&str, &str)], flags: Overrides) -> Result<Settings> {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("config.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).expect("write");
        }
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::resolve_with_file(
            PI,
            Some(&path).filter(|_| file.is_some()).map(PathBuf::as_path),
            |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            &flags,
        )
    }

    #[test]
    fn defaults_come_from_the_hardware() {
        // 4 GiB Pi: 1 GiB host headroom, 3 GiB shared by 4 bees.
        let settings = Settings::resolve_with_file(PI, None, |_| None, &Overrides::default());
        let settings = settings.expect("settings");
        assert_eq!(settings.bees, 4);
        assert_eq!(settings.budget, 768 * MIB);
        assert_eq!(settings.deadline, Duration::from_secs(600));
        assert_eq!(settings.source("bees"), Source::Default);
        let tiny = Hardware {
            cores: 2,
            memory: 512 * MIB,
            cgroup_limited: true,
        };
        assert_eq!(tiny.budget_per_bee(2), 128 * MIB);
        assert_eq!(tiny.budget_per_bee(64), MIN_BUDGET_MIB * MIB);
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let file = "bees = 3\nbudget_mib = 100\ndeadline_secs = 30\n";
        let s = resolve(Some(file), &[], Overrides::default()).expect("file");
        assert_eq!((s.bees, s.budget, s.deadline.as_secs()), (3, 100 * MIB, 30));
        assert!(matches!(s.source("bees"), Source::File(_)));

        let s = resolve(Some(file), &[("APIARY_BEES", "2")], Overrides::default()).expect("env");
        assert_eq!(s.bees, 2);
        assert_eq!(s.source("bees"), Source::Env("APIARY_BEES"));
        assert_eq!(s.budget, 100 * MIB);

        let flags = Overrides {
            bees: Some(1),
            ..Overrides::default()
        };
        let s = resolve(Some(file), &[("APIARY_BEES", "2")], flags).expect("flag");
        assert_eq!(s.bees, 1);
        assert_eq!(s.source("bees"), Source::Flag("bees"));
        // The budget follows the bee count when it is not set.
        let s = resolve(None, &[("APIARY_BEES", "2")], Overrides::default()).expect("env");
        assert_eq!(s.budget, 1536 * MIB);
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_allowed() {
        let err = resolve(None, &[("APIARY_BEES", "many")], Overrides::default())
            .expect_err("bad env")
            .to_string();
        assert!(
            err.contains("$APIARY_BEES") && err.contains("`many`"),
            "{err}"
        );
        assert!(err.contains("from 1 to 1024"), "{err}");

        let err = resolve(Some("budget_mib = 8\n"), &[], Overrides::default())
            .expect_err("small budget")
            .to_string();
        assert!(
            err.contains("budget_mib") && err.contains("from 32 to 4096"),
            "{err}"
        );

        let err = resolve(Some("bees = 2\nbeez = 3\n"), &[], Overrides::default())
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("beez") && err.contains("line 2"), "{err}");
        assert!(err.contains("expected one of"), "{err}");

        let err = resolve(Some("bees = \"two\"\n"), &[], Overrides::default())
            .expect_err("wrong type")
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn an_s3_table_holds_storage_options_and_hides_secrets() {
        let file = "bees = 2\n[s3]\naccess_key_id = \"AKIA1\"\nsecret_access_key = \"hush\"\n\
                    region = \"eu-west-1\"\n";
        let s = resolve(Some(file), &[], Overrides::default()).expect("s3 table");
        assert!(!s.s3.is_empty());
        let shown = format!("{s:?}");
        assert!(shown.contains("secret_access_key"), "{shown}");
        assert!(
            !shown.contains("hush") && !shown.contains("AKIA1"),
            "{shown}"
        );

        let err = resolve(
            Some("[s3]\nsecret_key = \"x\"\n"),
            &[],
            Overrides::default(),
        )
        .expect_err("unknown s3 key")
        .to_string();
        assert!(err.contains("config.toml"), "{err}");
        assert!(err.contains("`secret_key` is not an S3 option"), "{err}");
        assert!(err.contains("secret_access_key"), "{err}");
    }

    #[test]
    fn init_writes_a_file_that_reads_back() {
        let s = resolve(None, &[("APIARY_LAKE", "/tmp/lake")], Overrides::default()).expect("s");
        let text = s.to_toml();
        let back = resolve(Some(&text), &[], Overrides::default()).expect("reads back");
        assert_eq!(back.lake, "/tmp/lake");
        assert_eq!((back.bees, back.budget), (s.bees, s.budget));
    }
}
