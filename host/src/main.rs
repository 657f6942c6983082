//! The `apiary` binary: parses arguments, resolves settings and hands off to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use apiary_host::cli::{self, OutputFormat};
use apiary_host::config::default_config_path;
use apiary_host::load::{FileFormat, LoadOptions};
use apiary_host::{Error, Overrides, Settings};
use clap::{Parser, Subcommand, ValueEnum};

/// Apiary: a lakehouse for small computers, every query in a sealed chamber.
///
/// Settings come from the configuration file (`apiary init` writes one), then `APIARY_*`
/// environment variables, then these flags. `apiary status` shows what is in effect.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The lake: a local directory, file:///path or memory://
    /// [env: APIARY_LAKE; default: ~/.local/share/apiary/lake].
    #[arg(long, global = true)]
    lake: Option<String>,
    /// Configuration file [env: APIARY_CONFIG; default: ~/.config/apiary/config.toml].
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Number of bees, i.e. concurrent chambers [env: APIARY_BEES; default: cores].
    #[arg(long, global = true)]
    bees: Option<usize>,
    /// Memory budget of each bee in MiB [env: APIARY_BUDGET_MIB; default: memory left after
    /// the host's headroom, shared between the bees].
    #[arg(long, global = true)]
    budget_mib: Option<u64>,
    /// Deadline of each fragment in seconds [env: APIARY_DEADLINE_SECS; default: 600].
    #[arg(long, global = true)]
    deadline_secs: Option<u64>,
    /// When split statements go to other nodes of the swarm: auto (when they have more
    /// fragments than this node has bees), always, or never [env: APIARY_DISTRIBUTE;
    /// default: auto].
    #[arg(long, global = true)]
    distribute: Option<String>,
    /// Log what happens (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run SQL statements in order and print their results.
    ///
    /// Example: apiary sql "CREATE FRAME t (a BIGINT)" "INSERT INTO t VALUES (1)" "SELECT * FROM t"
    Sql {
        /// The statements.
        #[arg(required = true)]
        statements: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Write the results to this file instead of printing them (needed for parquet).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// An interactive SQL shell: statements end with ';', `.help` lists shell commands.
    ///
    /// Example: apiary shell
    Shell,
    /// Load CSV, Parquet or newline-delimited JSON files into a frame, as one commit.
    ///
    /// Example: apiary load lineitem.parquet INTO tpch.sf1.lineitem --create --partition-by l_shipmode
    Load {
        /// The files, then INTO and the frame: `a.csv b.csv INTO hive.box.frame`.
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
        /// Create the frame from the first file's columns if it does not exist.
        #[arg(long)]
        create: bool,
        /// Partition columns of a frame the load creates (comma-separated).
        #[arg(long, value_delimiter = ',')]
        partition_by: Vec<String>,
        /// Replace the frame's rows instead of appending.
        #[arg(long)]
        overwrite: bool,
        /// The files' format (default: from each file's extension).
        #[arg(long, value_enum)]
        format: Option<LoadFormat>,
    },
    /// Show a frame's columns, partitioning, version, cells, rows and bytes.
    ///
    /// Example: apiary describe tpch.sf1.lineitem
    Describe {
        /// The frame (1-, 2- or 3-part name).
        frame: String,
    },
    /// Show this node's settings (and where each came from) and the nodes in the lake.
    ///
    /// Example: apiary status
    Status,
    /// Delete cells, dropped frames and query leftovers that no state references.
    ///
    /// Example: apiary vacuum --grace-secs 600
    Vacuum {
        /// Keep anything younger than this, in seconds (writes in flight are safe).
        #[arg(long, default_value_t = 3600)]
        grace_secs: u64,
    },
    /// Write a configuration file with this machine's defaults.
    ///
    /// Example: apiary init --bees 2
    Init {
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Run a long-lived node: a heartbeat in the lake every interval until Ctrl-C or SIGTERM.
    ///
    /// Example: apiary --lake /srv/lake node
    Node {
        /// Where the node keeps its identity (default: ~/.local/share/apiary).
        #[arg(long)]
        node_dir: Option<PathBuf>,
    },
    /// Generate TPC-H tables as Parquet files (for demos and benchmarks).
    ///
    /// Example: apiary generate --scale 0.1 --out /tmp/tpch lineitem orders
    Generate {
        /// Scale factor (1 = 6M lineitem rows).
        #[arg(long, default_value_t = 0.1)]
        scale: f64,
        /// Directory for the files.
        #[arg(long)]
        out: PathBuf,
        /// Tables (default: all eight).
        tables: Vec<String>,
    },
    /// Print where the chamber guest component is.
    Guest,
    /// Register, list and drop user-defined functions (wasm components).
    ///
    /// Example: apiary udf add target/wasm32-wasip2/release/apiary_example_udf.wasm
    Udf {
        #[command(subcommand)]
        command: UdfCommand,
    },
}

#[derive(Subcommand)]
enum UdfCommand {
    /// Register the functions of a module (all it describes, or the ones named); a function
    /// registered before under the same name is replaced.
    ///
    /// Example: apiary udf add my_functions.wasm add_one
    Add {
        /// The module: a wasm component of the `apiary:udf/udf` world.
        module: PathBuf,
        /// Functions to register (default: every function the module describes).
        names: Vec<String>,
    },
    /// List the registered functions.
    List,
    /// Drop a function (statements already running keep it until they finish).
    Drop {
        /// The function.
        name: String,
        /// Succeed when the function does not exist.
        #[arg(long)]
        if_exists: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

#[derive(Clone, Copy, ValueEnum)]
enum LoadFormat {
    Csv,
    Parquet,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            if let Some(hint) = hint(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "apiary_host=info",
        _ => "apiary_host=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn hint(err: &Error) -> Option<&'static str> {
    match err {
        Error::Guest(_) => {
            Some("build the chamber guest with `just build-guest`, or set APIARY_GUEST")
        }
        Error::MemoryExceeded { .. } => {
            Some("raise --budget-mib, or filter the query to fewer cells")
        }
        Error::Timeout { .. } => Some("raise --deadline-secs, or narrow the query"),
        Error::Function(_) => Some(
            "a function module is a wasm component of the world in wit/udf/udf.wit; \
             see examples/udf-add-one",
        ),
        _ => None,
    }
}

fn run(cli: Cli) -> Result<String, Error> {
    let flags = Overrides {
        lake: cli.lake,
        bees: cli.bees,
        budget_mib: cli.budget_mib,
        deadline_secs: cli.deadline_secs,
        distribute: cli.distribute,
    };
    let settings = || Settings::load(cli.config.as_deref(), &flags);
    match cli.command {
        Command::Sql {
            statements,
            format,
            output,
        } => {
            let format = match format {
                Format::Table => OutputFormat::Table,
                Format::Csv => OutputFormat::Csv,
                Format::Json => OutputFormat::Json,
                Format::Parquet => OutputFormat::Parquet,
            };
            cli::run_sql(&settings()?, &statements, format, output.as_deref())
        }
        Command::Shell => cli::run_shell(&settings()?).map(|()| String::new()),
        Command::Load {
            args,
            create,
            partition_by,
            overwrite,
            format,
        } => {
            let split = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case("into"))
                .ok_or_else(|| {
                    Error::Config("load needs `INTO frame` after the files: apiary load data.csv INTO readings".into())
                })?;
            let (files, rest) = args.split_at(split);
            let [_, frame] = rest else {
                return Err(Error::Config(
                    "load takes exactly one frame after INTO".into(),
                ));
            };
            if files.is_empty() {
                return Err(Error::Config(
                    "load needs at least one file before INTO".into(),
                ));
            }
            let options = LoadOptions {
                create,
                partition_by,
                overwrite,
                format: format.map(|f| match f {
                    LoadFormat::Csv => FileFormat::Csv,
                    LoadFormat::Parquet => FileFormat::Parquet,
                    LoadFormat::Json => FileFormat::Json,
                }),
            };
            let files: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
            cli::run_load(&settings()?, &files, frame, &options)
        }
        Command::Describe { frame } => cli::run_describe(&settings()?, &frame),
        Command::Status => cli::run_status(&settings()?),
        Command::Vacuum { grace_secs } => {
            cli::run_vacuum(&settings()?, Duration::from_secs(grace_secs))
        }
        Command::Init { force } => {
            let path = cli.config.clone().unwrap_or_else(default_config_path);
            // Defaults, environment and flags: the file being written is not read.
            let settings = Settings::resolve_with_file(
                apiary_host::Hardware::detect(),
                None,
                |name| std::env::var(name).ok(),
                &flags,
            )?;
            cli::run_init(&settings, &path, force)
        }
        Command::Node { node_dir } => cli::run_node(&settings()?, node_dir.as_deref()),
        Command::Generate { scale, out, tables } => cli::run_generate(scale, &out, &tables),
        Command::Guest => apiary_host::find_guest().map(|p| format!("{}\n", p.display())),
        Command::Udf { command } => match command {
            UdfCommand::Add { module, names } => cli::run_udf_add(&settings()?, &module, &names),
            UdfCommand::List => cli::run_sql(
                &settings()?,
                &["SHOW FUNCTIONS".to_owned()],
                OutputFormat::Table,
                None,
            ),
            UdfCommand::Drop { name, if_exists } => cli::run_sql(
                &settings()?,
                &[format!(
                    "DROP FUNCTION {}{name}",
                    if if_exists { "IF EXISTS " } else { "" }
                )],
                OutputFormat::Table,
                None,
            ),
        },
    }
}
