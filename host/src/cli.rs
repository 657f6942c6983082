//! What the `apiary` binary does, behind its argument parser.
//!
//! `main.rs` parses the command line with clap and calls [`run_sql`]; everything that can
//! fail returns the library's [`Error`], which the binary prints as one line with a hint.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::csv::WriterBuilder;
use arrow::util::pretty::pretty_format_batches;

use crate::{BeePool, ChamberEngine, Error, Lake, PoolConfig, QueryOutput, QuerySession, Result};

/// How `apiary sql` prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
}

/// Settings of a one-shot SQL run.
#[derive(Debug, Clone)]
pub struct SqlRun {
    /// The lake URI.
    pub lake: String,
    /// Number of bees.
    pub bees: usize,
    /// Budget of each bee in bytes.
    pub budget: u64,
    /// Deadline of each fragment.
    pub deadline: Duration,
    /// Output format.
    pub format: OutputFormat,
}

/// The default lake for a solo node: `$APIARY_LAKE`, else `$XDG_DATA_HOME/apiary/lake`, else
/// `~/.local/share/apiary/lake`.
pub fn default_lake() -> String {
    if let Ok(lake) = std::env::var("APIARY_LAKE") {
        return lake;
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("share")))
        .unwrap_or_else(std::env::temp_dir);
    data.join("apiary").join("lake").display().to_string()
}

/// Run `statements` in order on a fresh session and return what to print.
///
/// # Errors
/// The first statement's error that fails; statements before it stay committed.
pub fn run_sql(settings: &SqlRun, statements: &[String]) -> Result<String> {
    if settings.bees == 0 {
        return Err(Error::Config("--bees must be at least 1".into()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("starting the runtime: {e}")))?;
    let guest = crate::find_guest()?;
    let engine = Arc::new(ChamberEngine::new(
        &guest,
        &crate::default_cache_dir(),
        settings.budget,
        settings.bees as u32,
    )?);
    let scratch = std::env::temp_dir().join(format!("apiary-scratch-{}", std::process::id()));
    let pool = Arc::new(BeePool::new(
        engine,
        PoolConfig {
            bees: settings.bees,
            budget: settings.budget,
            deadline: settings.deadline,
            scratch_root: scratch.clone(),
        },
    )?);
    let result = runtime.block_on(async {
        let lake = Arc::new(Lake::open(&settings.lake).await?);
        let mut session = QuerySession::new(lake, pool);
        let mut out = String::new();
        for statement in statements {
            let output = session.sql(statement).await?;
            out.push_str(&render(&output, settings.format)?);
        }
        Ok(out)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn render(output: &QueryOutput, format: OutputFormat) -> Result<String> {
    let mut text = String::new();
    if output.schema.is_some() {
        match format {
            OutputFormat::Table => {
                let table = pretty_format_batches(&output.batches)
                    .map_err(|e| Error::Internal(format!("formatting results: {e}")))?;
                text.push_str(&table.to_string());
                text.push('\n');
            }
            OutputFormat::Csv => {
                let mut buf = Vec::new();
                {
                    let mut writer = WriterBuilder::new().with_header(true).build(&mut buf);
                    for batch in &output.batches {
                        writer
                            .write(batch)
                            .map_err(|e| Error::Internal(format!("writing CSV: {e}")))?;
                    }
                }
                text.push_str(&String::from_utf8_lossy(&buf));
            }
        }
    }
    for note in &output.notes {
        text.push_str(note);
        text.push('\n');
    }
    Ok(text)
}
