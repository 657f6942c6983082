//! What the `apiary` binary does, behind its argument parser.
//!
//! `main.rs` parses the command line with clap, resolves [`Settings`] and calls one function
//! here per subcommand. Everything that can fail returns the library's [`Error`], which the
//! binary prints as one line with a hint.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::csv::WriterBuilder;
use arrow::json::ArrayWriter;
use arrow::util::pretty::pretty_format_batches;
use parquet::arrow::ArrowWriter;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::{FileHistory, History};
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use crate::config::{Settings, Source, data_dir};
use crate::load::{LoadOptions, LoadProgress, load};
use crate::{Apiary, Error, Lake, QueryOutput, QuerySession, Result, node_id, world_view};

const MIB: u64 = 1 << 20;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of objects.
    Json,
    /// A Parquet file (needs `--output`).
    Parquet,
}

impl OutputFormat {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "table" => Some(Self::Table),
            "csv" => Some(Self::Csv),
            "json" => Some(Self::Json),
            "parquet" => Some(Self::Parquet),
            _ => None,
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("starting the runtime: {e}")))
}

/// `apiary sql`: run `statements` in order on one session; print results as `format`, or
/// write the last result to `output` as Parquet.
///
/// # Errors
/// The first statement's error that fails; statements before it stay committed.
pub fn run_sql(
    settings: &Settings,
    statements: &[String],
    format: OutputFormat,
    output: Option<&Path>,
) -> Result<String> {
    if format == OutputFormat::Parquet && output.is_none() {
        return Err(Error::Config(
            "--format parquet writes a file: add --output FILE.parquet".into(),
        ));
    }
    let rt = runtime()?;
    rt.block_on(async {
        let apiary = Apiary::open(&settings.lake, settings.clone()).await?;
        let mut session = apiary.session();
        let mut out = String::new();
        for statement in statements {
            let result = session.sql(statement).await?;
            match output {
                Some(path) if result.schema.is_some() => {
                    write_file(&result, format, path)?;
                    let rows: usize = result.batches.iter().map(|b| b.num_rows()).sum();
                    out.push_str(&format!("wrote {rows} rows to {}\n", path.display()));
                }
                _ => out.push_str(&render(&result, format)?),
            }
        }
        Ok(out)
    })
}

/// `apiary udf add`: register the functions of the module at `path` (all, or `names`).
///
/// # Errors
/// As [`crate::register_module`]: nothing is registered on any error.
pub fn run_udf_add(settings: &Settings, path: &Path, names: &[String]) -> Result<String> {
    let rt = runtime()?;
    rt.block_on(async {
        let apiary = Apiary::open(&settings.lake, settings.clone()).await?;
        let registered =
            crate::register_module(apiary.lake(), apiary.pool().engine(), path, names).await?;
        Ok(registered
            .iter()
            .map(|r| {
                format!(
                    "function {} {}\n",
                    r.signature,
                    if r.replaced { "replaced" } else { "created" }
                )
            })
            .collect())
    })
}

/// The rows and notes of `output` as text in `format`.
///
/// # Errors
/// [`Error::Config`] for Parquet, which is not text.
pub fn render(output: &QueryOutput, format: OutputFormat) -> Result<String> {
    let mut text = String::new();
    if output.schema.is_some() {
        let mut buf = Vec::new();
        match format {
            OutputFormat::Table => {
                let table = pretty_format_batches(&output.batches)
                    .map_err(|e| Error::Internal(format!("formatting results: {e}")))?;
                buf.extend(table.to_string().bytes());
                buf.push(b'\n');
            }
            OutputFormat::Csv => {
                let mut writer = WriterBuilder::new().with_header(true).build(&mut buf);
                for batch in &output.batches {
                    writer
                        .write(batch)
                        .map_err(|e| Error::Internal(format!("writing CSV: {e}")))?;
                }
            }
            OutputFormat::Json => {
                let mut writer = ArrayWriter::new(&mut buf);
                for batch in &output.batches {
                    writer
                        .write(batch)
                        .map_err(|e| Error::Internal(format!("writing JSON: {e}")))?;
                }
                writer
                    .finish()
                    .map_err(|e| Error::Internal(format!("writing JSON: {e}")))?;
                if buf.is_empty() {
                    buf.extend(b"[]");
                }
                buf.push(b'\n');
            }
            OutputFormat::Parquet => {
                return Err(Error::Config(
                    "Parquet is a file format: use --output FILE.parquet".into(),
                ));
            }
        }
        text.push_str(&String::from_utf8_lossy(&buf));
    }
    for note in &output.notes {
        text.push_str(note);
        text.push('\n');
    }
    Ok(text)
}

fn write_file(output: &QueryOutput, format: OutputFormat, path: &Path) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    match format {
        OutputFormat::Parquet => {
            let schema = output
                .schema
                .clone()
                .ok_or_else(|| Error::Internal("a result without a schema".into()))?;
            let mut writer = ArrowWriter::try_new(file, schema, None)
                .map_err(|e| Error::Internal(format!("writing Parquet: {e}")))?;
            for batch in &output.batches {
                writer
                    .write(batch)
                    .map_err(|e| Error::Internal(format!("writing Parquet: {e}")))?;
            }
            writer
                .close()
                .map_err(|e| Error::Internal(format!("writing Parquet: {e}")))?;
        }
        other => {
            let text = render(output, other)?;
            let mut file = file;
            file.write_all(text.as_bytes())
                .map_err(|e| Error::io(path, e))?;
        }
    }
    Ok(())
}

/// `apiary load`: load files into a frame, showing progress on stderr.
///
/// # Errors
/// As [`load`]: nothing is committed on any error.
pub fn run_load(
    settings: &Settings,
    files: &[PathBuf],
    frame: &str,
    options: &LoadOptions,
) -> Result<String> {
    let rt = runtime()?;
    rt.block_on(async {
        let lake = Lake::open_with(&settings.lake, &settings.s3).await?;
        let mut progress = Progress::new();
        let summary = load(&lake, files, frame, options, &mut |p| progress.update(p)).await;
        progress.finish();
        let summary = summary?;
        let write = &summary.write;
        Ok(format!(
            "loaded {} rows from {} file{} into {}{} in {:.1} s: version {}, {} cells, {:.1} MiB\n",
            write.rows,
            summary.files,
            if summary.files == 1 { "" } else { "s" },
            summary.frame,
            if summary.created { " (created)" } else { "" },
            summary.elapsed.as_secs_f64(),
            write.version,
            write.cells,
            write.bytes as f64 / MIB as f64,
        ))
    })
}

/// Load progress on stderr: a bar on a terminal, a line a second otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last: Instant,
    latest: Option<LoadProgress>,
}

impl Progress {
    fn new() -> Self {
        Self {
            bar: None,
            last: Instant::now(),
            latest: None,
        }
    }

    fn update(&mut self, p: LoadProgress) {
        self.latest = Some(p);
        if std::io::stderr().is_terminal() {
            let bar = self.bar.get_or_insert_with(|| {
                let bar = indicatif::ProgressBar::new(p.total_bytes.max(1));
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "loading {bar:30} {percent:>3}% {msg} ({elapsed})",
                ) {
                    bar.set_style(style);
                }
                bar
            });
            bar.set_position(p.bytes);
            bar.set_message(format!("{} rows", p.rows));
        } else if self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            eprintln!("{}", Self::line(&p));
        }
    }

    fn line(p: &LoadProgress) -> String {
        format!(
            "loading: {} rows, {:.0}% of {:.1} MiB",
            p.rows,
            100.0 * p.bytes as f64 / p.total_bytes.max(1) as f64,
            p.total_bytes as f64 / MIB as f64
        )
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        } else if let Some(p) = &self.latest {
            eprintln!("{}", Self::line(p));
        }
    }
}

/// `apiary describe`: a frame's columns, partitioning and totals.
///
/// # Errors
/// [`Error::NotFound`] for an unknown frame.
pub fn run_describe(settings: &Settings, frame: &str) -> Result<String> {
    run_sql(
        settings,
        &[format!("DESCRIBE {frame}")],
        OutputFormat::Table,
        None,
    )
}

/// `apiary vacuum`: delete what no state references, older than `grace`.
///
/// # Errors
/// [`Error::Storage`] on I/O failures.
pub fn run_vacuum(settings: &Settings, grace: Duration) -> Result<String> {
    let rt = runtime()?;
    rt.block_on(async {
        let lake = Lake::open_with(&settings.lake, &settings.s3).await?;
        let report = lake.vacuum(grace).await?;
        Ok(format!("{report:?}\n"))
    })
}

/// `apiary init`: write `settings` as a configuration file at `path`.
///
/// # Errors
/// [`Error::AlreadyExists`] when the file exists and `force` is off; [`Error::Io`] when it
/// cannot be written.
pub fn run_init(settings: &Settings, path: &Path, force: bool) -> Result<String> {
    if path.exists() && !force {
        return Err(Error::AlreadyExists(format!(
            "{} already exists; pass --force to replace it",
            path.display()
        )));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(path, settings.to_toml()).map_err(|e| Error::io(path, e))?;
    Ok(format!(
        "wrote {} ({} bees x {} MiB, lake {})\n",
        path.display(),
        settings.bees,
        settings.budget / MIB,
        settings.lake
    ))
}

/// `apiary status`: this node's settings, where each came from, and the nodes whose
/// heartbeats are in the lake.
///
/// # Errors
/// [`Error::Storage`] when the lake cannot be read.
pub fn run_status(settings: &Settings) -> Result<String> {
    let rt = runtime()?;
    rt.block_on(async {
        let lake = Lake::open_with(&settings.lake, &settings.s3).await?;
        let registry = lake.registry().await?;
        let frames = registry.frame_count();
        let hw = &settings.hardware;
        let from = |key: &str| match settings.source(key) {
            Source::Default => "default".to_owned(),
            other => format!("from {other}"),
        };
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12}{v}\n"));
        line("lake", format!("{} ({})", settings.lake, from("lake")));
        line(
            "hardware",
            format!(
                "{} cores, {} MiB of memory{}, {} MiB kept for the host",
                hw.cores,
                hw.memory / MIB,
                if hw.cgroup_limited {
                    " (cgroup limit)"
                } else {
                    ""
                },
                hw.host_headroom() / MIB
            ),
        );
        line("bees", format!("{} ({})", settings.bees, from("bees")));
        line(
            "budget",
            format!(
                "{} MiB per bee ({})",
                settings.budget / MIB,
                from("budget_mib")
            ),
        );
        line(
            "deadline",
            format!(
                "{} s per fragment ({})",
                settings.deadline.as_secs(),
                from("deadline_secs")
            ),
        );
        line(
            "heartbeat",
            format!(
                "every {} s ({})",
                settings.heartbeat.as_secs(),
                from("heartbeat_secs")
            ),
        );
        line(
            "cache",
            format!("{} ({})", settings.cache_dir.display(), from("cache_dir")),
        );
        line(
            "config",
            settings.file.as_ref().map_or_else(
                || "no file (write one with `apiary init`)".to_owned(),
                |p| p.display().to_string(),
            ),
        );
        line(
            "guest",
            match crate::find_guest() {
                Ok(path) => path.display().to_string(),
                Err(e) => format!("missing: {e}"),
            },
        );
        line("frames", frames.to_string());
        let nodes = world_view(&lake, settings.heartbeat).await?;
        if nodes.is_empty() {
            line(
                "swarm",
                "no node heartbeats (start one with `apiary node`)".into(),
            );
        }
        for node in nodes {
            let hb = &node.heartbeat;
            // A node over a local lake reads its cells in place, without a cache.
            let cache = match hb.cache.limit {
                0 => "no cell cache".to_owned(),
                limit => format!("cache {} of {} MiB", hb.cache.bytes / MIB, limit / MIB),
            };
            line(
                "node",
                format!(
                    "{} {} (heard {:.1} s ago): {} bees x {} MiB, {} cores, {} MiB; {} busy, {} queued, {}; {cache}",
                    hb.node,
                    node.liveness.as_str(),
                    node.age.as_secs_f64(),
                    hb.bees,
                    hb.budget / MIB,
                    hb.cores,
                    hb.memory / MIB,
                    hb.load.busy,
                    hb.load.queued,
                    hb.load.temperature,
                ),
            );
        }
        Ok(out)
    })
}

/// `apiary node`: join the lake and serve the swarm until SIGINT or SIGTERM, then leave
/// (delete the heartbeat). Every heartbeat interval the node writes its heartbeat (with its
/// load, temperature and cache), reads the others' and logs every change it sees (joined,
/// suspect, dead, left); every poll interval its worker looks for tasks assigned to it.
/// Heartbeats dead for over an hour are removed.
///
/// # Errors
/// [`Error::Storage`] when heartbeats cannot be written; [`Error::Guest`] when the chamber
/// guest cannot be loaded.
pub fn run_node(settings: &Settings, node_dir: Option<&Path>) -> Result<String> {
    let rt = runtime()?;
    rt.block_on(async {
        let id = node_id(node_dir.unwrap_or(&data_dir()))?;
        let apiary = Apiary::open(&settings.lake, settings.clone())
            .await?
            .with_node(id.clone());
        eprintln!(
            "node {id} joined {} with {} bees x {} MiB; stop with Ctrl-C",
            settings.lake,
            settings.bees,
            settings.budget / MIB
        );
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| Error::Internal(format!("listening for SIGTERM: {e}")))?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        };
        crate::swarm::node::serve(&apiary, stop, |line| eprintln!("{line}")).await?;
        Ok(format!("node {id} left {}\n", settings.lake))
    })
}

/// `apiary generate`: TPC-H tables at `scale` as Parquet files in `dir`.
///
/// # Errors
/// [`Error::Io`] when a file cannot be written; [`Error::Config`] for an unknown table.
pub fn run_generate(scale: f64, dir: &Path, tables: &[String]) -> Result<String> {
    if !(scale > 0.0 && scale <= 1000.0) {
        return Err(Error::Config(format!(
            "--scale {scale} is not allowed; expected a number above 0 and at most 1000"
        )));
    }
    let mut out = String::new();
    let all: Vec<String> = crate::TPCH_TABLES.iter().map(|t| (*t).to_owned()).collect();
    for table in if tables.is_empty() { &all } else { tables } {
        if !crate::TPCH_TABLES.contains(&table.as_str()) {
            return Err(Error::Config(format!(
                "`{table}` is not a TPC-H table; expected one of {}",
                crate::TPCH_TABLES.join(", ")
            )));
        }
        let path = crate::generate_tpch(dir, table, scale)?;
        out.push_str(&format!("{}\n", path.display()));
    }
    Ok(out)
}

/// `apiary shell`: an interactive SQL prompt. Statements end with `;` and may span lines;
/// lines starting with `.` are shell commands (`.help`).
///
/// # Errors
/// Only for failures to start (the lake, the guest); statement errors are printed and the
/// shell goes on.
pub fn run_shell(settings: &Settings) -> Result<()> {
    let rt = runtime()?;
    let apiary = rt.block_on(Apiary::open(&settings.lake, settings.clone()))?;
    let mut session = apiary.session();
    let names = Arc::new(Mutex::new(Vec::new()));
    refresh_names(&rt, &apiary, &names);
    let mut editor: Editor<ShellHelper, FileHistory> =
        Editor::new().map_err(|e| Error::Internal(format!("starting the shell: {e}")))?;
    editor.set_helper(Some(ShellHelper {
        names: names.clone(),
    }));
    let history = data_dir().join("history");
    let _ = editor.load_history(&history);
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        println!(
            "Apiary {}: lake {}, {} bees x {} MiB. End statements with ';'. .help for help, .quit to leave.",
            env!("CARGO_PKG_VERSION"),
            settings.lake,
            settings.bees,
            settings.budget / MIB
        );
    }
    let mut shell = Shell {
        format: OutputFormat::Table,
        timer: false,
    };
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "apiary> "
        } else {
            "   ...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() && trimmed.starts_with('.') {
                    let _ = editor.add_history_entry(trimmed);
                    if !shell.meta(trimmed, &rt, &mut session) {
                        break;
                    }
                    continue;
                }
                if trimmed.is_empty() && buffer.is_empty() {
                    continue;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                while let Some(end) = statement_end(&buffer) {
                    let statement = buffer[..end].trim().to_owned();
                    buffer = buffer[end + 1..].to_owned();
                    if statement.is_empty() {
                        continue;
                    }
                    let _ = editor.add_history_entry(format!("{statement};"));
                    shell.run(&rt, &mut session, &statement);
                    refresh_names(&rt, &apiary, &names);
                }
                if buffer.trim().is_empty() {
                    buffer.clear();
                }
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::Internal(format!("reading input: {e}"))),
        }
    }
    let rest = buffer.trim();
    if !rest.is_empty() {
        shell.run(&rt, &mut session, rest);
    }
    if editor.history().len() > 0 {
        let _ = std::fs::create_dir_all(data_dir());
        let _ = editor.save_history(&history);
    }
    Ok(())
}

struct Shell {
    format: OutputFormat,
    timer: bool,
}

const SHELL_HELP: &str = "\
Statements end with ';' and may span lines. Shell commands:
  .help                  this text
  .quit, .exit           leave (Ctrl-D too)
  .mode table|csv|json   how results are printed
  .timer on|off          print each statement's time
  .frames                the frames in the lake (SHOW FRAMES)
SQL: SELECT, EXPLAIN [ANALYZE], USE, SHOW HIVES|BOXES|FRAMES, DESCRIBE, CREATE/DROP HIVE|BOX|FRAME,
INSERT INTO ... VALUES|SELECT. Tab completes keywords and frame names.";

impl Shell {
    /// Run one shell command; `false` to leave.
    fn meta(
        &mut self,
        line: &str,
        rt: &tokio::runtime::Runtime,
        session: &mut QuerySession,
    ) -> bool {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [".quit" | ".exit"] => return false,
            [".help"] => println!("{SHELL_HELP}"),
            [".mode", mode] => match OutputFormat::parse(mode) {
                Some(OutputFormat::Parquet) | None => {
                    eprintln!("error: .mode takes table, csv or json, not `{mode}`");
                }
                Some(format) => self.format = format,
            },
            [".timer", "on"] => self.timer = true,
            [".timer", "off"] => self.timer = false,
            [".frames"] => self.run(rt, session, "SHOW FRAMES"),
            _ => eprintln!("error: unknown shell command `{line}`; .help lists them"),
        }
        true
    }

    fn run(&self, rt: &tokio::runtime::Runtime, session: &mut QuerySession, statement: &str) {
        let started = Instant::now();
        match rt.block_on(session.sql(statement)) {
            Ok(output) => match render(&output, self.format) {
                Ok(text) => print!("{text}"),
                Err(e) => eprintln!("error: {e}"),
            },
            Err(e) => eprintln!("error: {e}"),
        }
        if self.timer {
            println!("time: {:.3} s", started.elapsed().as_secs_f64());
        }
        let _ = std::io::stdout().flush();
    }
}

/// Where the first statement of `buffer` ends: a `;` outside quotes and comments.
fn statement_end(buffer: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut chars = buffer.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '-') if chars.peek().map(|(_, n)| *n) == Some('-') => {
                // A comment runs to the end of the line.
                for (_, n) in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
            }
            (None, ';') => return Some(i),
            _ => {}
        }
    }
    None
}

fn refresh_names(rt: &tokio::runtime::Runtime, apiary: &Apiary, names: &Mutex<Vec<String>>) {
    let Ok(registry) = rt.block_on(apiary.lake().registry()) else {
        return;
    };
    let mut found = Vec::new();
    for (hive, boxes) in &registry.hives {
        found.push(hive.clone());
        for (box_name, frames) in boxes {
            found.push(box_name.clone());
            for frame in frames.keys() {
                found.push(frame.clone());
                found.push(format!("{hive}.{box_name}.{frame}"));
            }
        }
    }
    found.sort();
    found.dedup();
    if let Ok(mut names) = names.lock() {
        *names = found;
    }
}

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "LIMIT",
    "HAVING",
    "JOIN",
    "ON",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "BETWEEN",
    "LIKE",
    "DISTINCT",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "EXPLAIN",
    "ANALYZE",
    "USE",
    "SHOW",
    "HIVES",
    "BOXES",
    "FRAMES",
    "DESCRIBE",
    "CREATE",
    "DROP",
    "HIVE",
    "BOX",
    "FRAME",
    "INSERT",
    "INTO",
    "VALUES",
    "PARTITIONED",
    "DATABASE",
    "SCHEMA",
    "TABLE",
    "TABLES",
];

/// Tab completion of keywords and frame names.
struct ShellHelper {
    names: Arc<Mutex<Vec<String>>>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .map_or(0, |i| i + 1);
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((start, Vec::new()));
        }
        let lower = word.to_ascii_lowercase();
        let names = self.names.lock().map(|n| n.clone()).unwrap_or_default();
        let mut candidates: Vec<Pair> = names
            .iter()
            .filter(|n| n.starts_with(&lower))
            .map(|n| Pair {
                display: n.clone(),
                replacement: n.clone(),
            })
            .collect();
        candidates.extend(
            KEYWORDS
                .iter()
                .filter(|k| k.to_ascii_lowercase().starts_with(&lower))
                .map(|k| Pair {
                    display: (*k).to_owned(),
                    replacement: if word.chars().all(|c| c.is_ascii_lowercase()) {
                        k.to_ascii_lowercase()
                    } else {
                        (*k).to_owned()
                    },
                }),
        );
        Ok((start, candidates))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        Cow::Borrowed(line)
    }
}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(statement_end("SELECT 1;"), Some(8));
        assert_eq!(statement_end("SELECT ';' AS s;"), Some(15));
        assert_eq!(statement_end("SELECT \"a;b\" FROM t"), None);
        assert_eq!(statement_end("SELECT 1 -- a; comment\n;"), Some(23));
        assert_eq!(statement_end("SELECT 1\nFROM t"), None);
    }

    #[test]
    fn completion_offers_frames_and_keywords() {
        let helper = ShellHelper {
            names: Arc::new(Mutex::new(vec![
                "readings".into(),
                "default.default.readings".into(),
            ])),
        };
        let history = rustyline::history::DefaultHistory::new();
        let ctx = Context::new(&history);
        let (start, found) = helper
            .complete("SELECT * FROM rea", 17, &ctx)
            .expect("complete");
        assert_eq!(start, 14);
        assert_eq!(
            found
                .iter()
                .map(|p| p.replacement.as_str())
                .collect::<Vec<_>>(),
            ["readings"]
        );
        let (_, found) = helper.complete("sel", 3, &ctx).expect("complete");
        assert_eq!(found[0].replacement, "select");
    }
}
