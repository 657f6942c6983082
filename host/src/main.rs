//! The `apiary` binary: parses arguments and hands off to the library.

use std::process::ExitCode;
use std::time::Duration;

use apiary_host::cli::{OutputFormat, SqlRun, default_lake, run_sql};
use clap::{Parser, Subcommand, ValueEnum};

/// Apiary: a lakehouse for small computers, every query in a sealed chamber.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The lake: a local directory, file:///path or memory://
    /// (default: $APIARY_LAKE, else ~/.local/share/apiary/lake).
    #[arg(long, global = true)]
    lake: Option<String>,
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
        /// Number of bees (default: the number of cores).
        #[arg(long)]
        bees: Option<usize>,
        /// Memory budget of each bee, in MiB.
        #[arg(long, default_value_t = 512)]
        budget_mib: u64,
        /// Deadline of each fragment, in seconds.
        #[arg(long, default_value_t = 600)]
        deadline_secs: u64,
    },
    /// Print where the chamber guest component is.
    Guest,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sql {
            statements,
            format,
            bees,
            budget_mib,
            deadline_secs,
        } => {
            let settings = SqlRun {
                lake: cli.lake.unwrap_or_else(default_lake),
                bees: bees
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                budget: budget_mib << 20,
                deadline: Duration::from_secs(deadline_secs),
                format: match format {
                    Format::Table => OutputFormat::Table,
                    Format::Csv => OutputFormat::Csv,
                },
            };
            run_sql(&settings, &statements).map(|out| print!("{out}"))
        }
        Command::Guest => apiary_host::find_guest().map(|p| println!("{}", p.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
