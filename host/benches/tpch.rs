//! TPC-H (or SSB) side by side: Apiary (every fragment in a chamber), native DataFusion (same
//! version, all cores) and DuckDB (from PyPI, same Parquet files, same threads), in one run.
//!
//! Run: `just bench` (SF 1, 3 rounds of 2 runs), or
//! `cargo bench -p apiary-host --bench tpch -- --scale 0.1 --runs 1 [--suite tpch|ssb]
//! [--profile P] [--layout L] [--bees N] [--budget-mib M] [--queries q1,q6] [--no-duckdb]
//! [--threads N] [--rounds N]`. `--threads` sets DataFusion's partitions and DuckDB's threads
//! (default: the machine's cores), to compare one bee with one core, say.
//!
//! Suites: `tpch` (22 queries) and `ssb` (the Star Schema Benchmark's 13 queries over tables
//! derived from TPC-H's, as SSB's own generator derives them; see `ssb/mod.rs`).
//!
//! Profiles: `all-bees` (one node, a bee per core), `one-bee`, `pi-1g` (4 bees x 128 MiB, a
//! 1 GiB Pi), `two-nodes` (two nodes on this machine sharing the cores, each with its own cell
//! cache, and this process as their client: split statements go to the nodes, statements that
//! are not split and the merges run on the client's bees). Layouts: `plain` (the files'
//! order) and `by-date` (lineitem, orders and SSB's lineorder written in ship, order and
//! order date order, so each cell covers a date range and the cells' min/max statistics
//! prune date predicates).
//!
//! The tables are generated as Parquet, loaded into a local lake through the normal write
//! path, and every query runs `--runs` times per engine. With `--rounds N` the engines take
//! turns N times (DataFusion, Apiary, DuckDB, then again), each query's median taken over
//! every round, so that a shared machine's drift over the run reaches all three alike; peak
//! RSS is the first round's. Answers are compared (Apiary with
//! DataFusion exactly; DuckDB by value, numbers to 1e-6 relative). The report gives each
//! engine's median, the ratios Apiary/DataFusion and Apiary/DuckDB with geometric means, each
//! engine's peak RSS, and Apiary's time split (chamber fragments, of which serving reads,
//! and merge). It is printed as
//! markdown and written as JSON and markdown under `--out` (default: the cargo target dir's
//! `bench/`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apiary_host::swarm::node::serve;
use apiary_host::{
    Apiary, ChamberStats, Distribute, Lake, Liveness, QueryOutput, Settings, TPCH_QUERIES,
    TPCH_TABLES, WriteMode, generate_tpch, machine_cores, world_view,
};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use serde_json::json;

mod ssb;

const MIB: u64 = 1 << 20;

struct Args {
    scale: f64,
    runs: usize,
    /// Times every engine runs all the queries, in turn (each `runs` times a query).
    rounds: usize,
    bees: usize,
    budget_mib: u64,
    suite: String,
    profile: String,
    layout: String,
    queries: Option<Vec<String>>,
    duckdb: bool,
    /// DataFusion's partitions and DuckDB's threads (default: the machine's cores).
    threads: Option<usize>,
    out: PathBuf,
}

const USAGE: &str = "\
usage: tpch [options]   (through cargo: cargo bench -p apiary-host --bench tpch -- [options])

  --scale F           scale factor (default 1)
  --runs N            timed runs per query and engine in each round; the median counts (default 3)
  --rounds N          rounds over all engines, to spread the machine's noise (default 1)
  --suite S           tpch (22 queries) or ssb (13 queries) (default tpch)
  --profile P         all-bees, one-bee, pi-1g (4 bees x 128 MiB), two-nodes (default all-bees)
  --bees N            bees of the Apiary node (default: the machine's)
  --budget-mib M      each bee's memory budget in MiB (default: the machine's)
  --layout L          plain, or by-date: fact tables written in date order (default plain)
  --queries q1,q6     only these queries
  --threads N         DataFusion's partitions and DuckDB's threads (default: the machine's cores)
  --no-duckdb         leave DuckDB out
  --out DIR           where the lakes and the results go (default: the target dir's bench/)";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn args() -> anyhow::Result<Args> {
    let machine = Settings::for_machine();
    let mut args = Args {
        scale: 1.0,
        runs: 3,
        rounds: 1,
        bees: machine.bees,
        budget_mib: machine.budget / MIB,
        suite: "tpch".into(),
        profile: "all-bees".into(),
        layout: "plain".into(),
        queries: None,
        duckdb: true,
        threads: None,
        out: target_dir().join("bench"),
    };
    let mut it = std::env::args().skip(1);
    let mut bees = None;
    let mut budget = None;
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--scale" => args.scale = value()?.parse()?,
            "--runs" => args.runs = value()?.parse()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "--bees" => bees = Some(value()?.parse()?),
            "--budget-mib" => budget = Some(value()?.parse()?),
            "--suite" => args.suite = value()?,
            "--profile" => args.profile = value()?,
            "--layout" => args.layout = value()?,
            "--queries" => {
                args.queries = Some(value()?.split(',').map(str::to_owned).collect());
            }
            "--out" => args.out = PathBuf::from(value()?),
            "--no-duckdb" => args.duckdb = false,
            "--threads" => args.threads = Some(value()?.parse()?),
            "--bench" => {}
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n\n{USAGE}"),
        }
    }
    match args.profile.as_str() {
        "all-bees" => {}
        "one-bee" => args.bees = 1,
        // A 1 GiB Pi: four cores, 128 MiB per bee.
        "pi-1g" => {
            args.bees = 4;
            args.budget_mib = 128;
        }
        // Two nodes (and their client) share the machine's cores and memory.
        "two-nodes" => {
            args.bees = args.bees.div_ceil(2);
            args.budget_mib = Settings::for_machine()
                .hardware
                .budget_per_bee(args.bees * 2)
                / MIB;
        }
        other => bail!("unknown profile {other}; expected all-bees, one-bee, pi-1g or two-nodes"),
    }
    if !matches!(args.suite.as_str(), "tpch" | "ssb") {
        bail!("unknown suite {}; expected tpch or ssb", args.suite);
    }
    if !matches!(args.layout.as_str(), "plain" | "by-date") {
        bail!("unknown layout {}; expected plain or by-date", args.layout);
    }
    if let Some(bees) = bees {
        args.bees = bees;
    }
    if let Some(budget) = budget {
        args.budget_mib = budget;
    }
    if args.runs == 0 || args.rounds == 0 || args.bees == 0 || args.threads == Some(0) {
        bail!("--runs, --rounds, --bees and --threads must be at least 1");
    }
    Ok(args)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn geomean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some((values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp())
}

/// Peak resident memory of this process since the last reset, in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Start measuring peak RSS afresh (Linux resets VmHWM on "5" to clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Every value of `batches` as text, row by row.
fn rows(batches: &[RecordBatch]) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let options = FormatOptions::default();
    let mut out = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            out.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| (!c.is_null(row)).then(|| f.value(row).to_string()))
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// Whether two answers agree value by value: numbers to 1e-6 relative or 1e-5 absolute (an
/// engine may average decimals as doubles, another to six decimal places).
fn same_values(a: &[Vec<Option<String>>], b: &[Vec<Option<String>>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter().zip(y).all(|(u, v)| match (u, v) {
                    (None, None) => true,
                    (Some(u), Some(v)) => {
                        match (u.trim().parse::<f64>(), v.trim().parse::<f64>()) {
                            (Ok(p), Ok(q)) => {
                                (p - q).abs() <= 1e-5_f64.max(1e-6 * p.abs().max(q.abs()))
                            }
                            _ => u.trim() == v.trim() || same_time(u, v),
                        }
                    }
                    _ => false,
                })
        })
}

/// `1995-03-15` and `1995-03-15 00:00:00` name the same day.
fn same_time(u: &str, v: &str) -> bool {
    let day = |s: &str| s.trim().split([' ', 'T']).next().unwrap_or("").to_owned();
    let midnight = |s: &str| {
        let rest = s.trim().split([' ', 'T']).nth(1);
        rest.is_none_or(|r| {
            r.trim_start_matches("00:00:00")
                .trim_matches(['.', '0'])
                .is_empty()
        })
    };
    day(u) == day(v) && midnight(u) && midnight(v)
}

struct QueryResult {
    name: &'static str,
    native: Duration,
    apiary: Duration,
    duckdb: Option<Duration>,
    fragments: usize,
    fragment_ms: f64,
    planning_ms: f64,
    read_ms: f64,
    merge_ms: f64,
    bytes_read: u64,
    matches_native: bool,
    matches_duckdb: Option<bool>,
    apiary_error: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let threads = args.threads.unwrap_or_else(machine_cores);
    // Shared with the test suites, which generate some scales too.
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let tpch_data = tmp.join(format!("tpch-sf{}", args.scale));
    std::fs::create_dir_all(&args.out)?;
    let (title, tables, all_queries): (&str, Vec<&'static str>, &[(&'static str, &'static str)]) =
        match args.suite.as_str() {
            "ssb" => ("SSB", ssb::TABLES.to_vec(), ssb::QUERIES),
            _ => ("TPC-H", TPCH_TABLES.to_vec(), TPCH_QUERIES),
        };
    let queries: Vec<(&'static str, &'static str)> = all_queries
        .iter()
        .copied()
        .filter(|(name, _)| {
            args.queries
                .as_ref()
                .is_none_or(|q| q.iter().any(|n| n == name))
        })
        .collect();
    if queries.is_empty() {
        bail!("no query matches --queries");
    }

    println!(
        "generating TPC-H SF {} in {}",
        args.scale,
        tpch_data.display()
    );
    for table in TPCH_TABLES {
        generate_tpch(&tpch_data, table, args.scale)?;
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let data = if args.suite == "ssb" {
        let ssb_data = tmp.join(format!("ssb-sf{}", args.scale));
        println!("deriving SSB SF {} in {}", args.scale, ssb_data.display());
        rt.block_on(ssb::derive(&tpch_data, &ssb_data))?;
        ssb_data
    } else {
        tpch_data
    };

    // The lake, loaded through the normal write path (once per suite, scale and layout).
    let lake_dir = match args.layout.as_str() {
        "plain" => args
            .out
            .join(format!("lake-{}-sf{}", args.suite, args.scale)),
        layout => args
            .out
            .join(format!("lake-{}-sf{}-{layout}", args.suite, args.scale)),
    };
    rt.block_on(load_lake(&lake_dir, &data, &tables, &args.layout))?;
    let uri = lake_dir.display().to_string();

    // Each round runs every engine in turn, so that the machine's drift over a run (these
    // machines are shared) reaches all three alike; each query's median is over all rounds.
    let n = queries.len();
    let mut native_times = vec![Vec::new(); n];
    let mut native_answers = vec![Vec::new(); n];
    let mut apiary_times = vec![Vec::new(); n];
    let mut apiary_last: Vec<Option<QueryOutput>> = (0..n).map(|_| None).collect();
    let mut apiary_errors: Vec<Option<String>> = vec![None; n];
    let mut duck_times = vec![Vec::new(); n];
    let mut duck_answers = vec![Vec::new(); n];
    let (mut native_rss, mut apiary_rss) = (0, 0);
    let (mut duckdb_version, mut duckdb_rss) = (None, None);
    let mut duckdb = args.duckdb;
    let mut swarm = None;
    let nodes = tempfile::tempdir()?;
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            println!("round {round} of {}", args.rounds);
        }
        // Native DataFusion, all cores.
        println!("native DataFusion, {threads} partitions");
        reset_peak_rss();
        let native_ctx =
            SessionContext::new_with_config(SessionConfig::new().with_target_partitions(threads));
        rt.block_on(register_files(&native_ctx, &data, &tables))?;
        for (i, (_, sql)) in queries.iter().enumerate() {
            for _ in 0..args.runs {
                let started = Instant::now();
                native_answers[i] =
                    rt.block_on(async { native_ctx.sql(sql).await?.collect().await })?;
                native_times[i].push(started.elapsed());
            }
        }
        // Peak RSS from the first round, where each engine runs before the next starts.
        if round == 1 {
            native_rss = peak_rss();
        }
        drop(native_ctx);

        // Apiary: one node (or a client of two nodes) over the lake.
        println!(
            "Apiary, {} bees x {} MiB ({}, {} layout)",
            args.bees, args.budget_mib, args.profile, args.layout
        );
        if swarm.is_none() {
            swarm = Some(open_apiary(&rt, &args, &uri, nodes.path())?);
        }
        let (apiary, _) = swarm.as_ref().context("Apiary is open")?;
        reset_peak_rss();
        for (i, (name, sql)) in queries.iter().enumerate() {
            if apiary_errors[i].is_some() {
                continue;
            }
            for _ in 0..args.runs {
                let started = Instant::now();
                match rt.block_on(apiary.query(sql)) {
                    Ok(output) => {
                        apiary_times[i].push(started.elapsed());
                        apiary_last[i] = Some(output);
                    }
                    Err(e) => {
                        apiary_errors[i] = Some(e.to_string());
                        break;
                    }
                }
            }
            println!(
                "  {name}: native {:.0} ms, Apiary {} ({} fragments){}",
                ms(*native_times[i].last().context("a native run")?),
                apiary_times[i]
                    .last()
                    .map_or("-".to_owned(), |t| format!("{:.0} ms", ms(*t))),
                apiary_last[i].as_ref().map_or(0, |o| o.fragments.len()),
                apiary_errors[i]
                    .as_ref()
                    .map_or(String::new(), |e| format!(" FAILED: {e}"))
            );
        }
        // The nodes share this process: their chambers are in the peak too.
        if round == 1 {
            apiary_rss = peak_rss();
        }

        // DuckDB in its own process, same files, same threads.
        if duckdb {
            match run_duckdb(&data, &tables, threads, args.runs, &queries) {
                Ok((version, rss, answers)) => {
                    duckdb_version = Some(version);
                    duckdb_rss = duckdb_rss.or(Some(rss));
                    for (i, (times, answer)) in answers.into_iter().enumerate() {
                        duck_times[i].extend(times);
                        duck_answers[i] = answer;
                    }
                }
                Err(e) => {
                    println!("DuckDB skipped: {e:#} (pip install duckdb)");
                    duckdb = false;
                }
            }
        }
    }
    if let Some((_, (stops, serving))) = swarm {
        for stop in stops {
            let _ = stop.send(());
        }
        for node in serving {
            rt.block_on(node)??;
        }
    }

    let mut results = Vec::new();
    for (i, (name, _)) in queries.iter().enumerate() {
        let mut result = QueryResult {
            name,
            native: median(native_times[i].clone()),
            apiary: Duration::ZERO,
            duckdb: (duckdb_version.is_some() && !duck_times[i].is_empty())
                .then(|| median(duck_times[i].clone())),
            fragments: 0,
            fragment_ms: 0.0,
            planning_ms: 0.0,
            read_ms: 0.0,
            merge_ms: 0.0,
            bytes_read: 0,
            matches_native: false,
            matches_duckdb: None,
            apiary_error: apiary_errors[i].clone(),
        };
        if result.duckdb.is_some() {
            result.matches_duckdb = Some(same_values(&rows(&native_answers[i])?, &duck_answers[i]));
        }
        if let (Some(output), None) = (&apiary_last[i], &result.apiary_error) {
            let sum = |of: fn(&ChamberStats) -> Duration| -> f64 {
                output.fragments.iter().map(|f| ms(of(&f.stats))).sum()
            };
            result.apiary = median(apiary_times[i].clone());
            result.matches_native = pretty_format_batches(&output.batches)?.to_string()
                == pretty_format_batches(&native_answers[i])?.to_string();
            result.fragments = output.fragments.len();
            result.fragment_ms = sum(|s| s.elapsed);
            result.planning_ms = sum(|s| s.planning);
            result.read_ms = sum(|s| s.read_time);
            result.merge_ms = output.merge.as_ref().map_or(0.0, |m| ms(m.elapsed));
            result.bytes_read = output.fragments.iter().map(|f| f.stats.bytes_read).sum();
        }
        results.push(result);
    }

    report(
        &args,
        title,
        threads,
        &results,
        [Some(native_rss), Some(apiary_rss), duckdb_rss],
        duckdb_version,
    )
}

/// A node waiting for its stop signal, and its task.
type Serving = (
    Vec<tokio::sync::oneshot::Sender<()>>,
    Vec<tokio::task::JoinHandle<apiary_host::Result<()>>>,
);

/// Apiary over the lake at `uri` as `args.profile` has it: one node, or a client of two
/// nodes serving the lake from this process, with their stop signals and tasks.
fn open_apiary(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    uri: &str,
    nodes: &Path,
) -> anyhow::Result<(Apiary, Serving)> {
    let node_settings = |name: &str, distribute: Distribute| {
        let mut settings = Settings::for_machine()
            .with_bees(args.bees)
            .with_budget_mib(args.budget_mib);
        settings.deadline = Duration::from_secs(1800);
        settings.distribute = distribute;
        settings.heartbeat = Duration::from_secs(1);
        settings.cell_cache_dir = nodes.join(name).join("cells");
        // One node reads the local lake in place (the default); two nodes each keep a cell
        // cache, as nodes of a swarm over S3 would.
        if args.profile == "two-nodes" {
            settings.cell_cache = Some(2048 << 20);
        }
        settings
    };
    let two_nodes = args.profile == "two-nodes";
    let apiary = rt
        .block_on(Apiary::open(
            uri,
            node_settings(
                "coordinator",
                if two_nodes {
                    Distribute::Auto
                } else {
                    Distribute::Never
                },
            ),
        ))?
        .with_node("coordinator");
    // Two nodes: `apiary node`s serving the lake, with this process as their client (its own
    // bees run the statements that are not split, and the merges).
    let mut stops = Vec::new();
    let mut serving = Vec::new();
    if two_nodes {
        for name in ["node-a", "node-b"] {
            let node = rt
                .block_on(Apiary::open(uri, node_settings(name, Distribute::Never)))?
                .with_node(name);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            serving.push(rt.spawn(async move {
                serve(
                    &node,
                    async {
                        let _ = stopped.await;
                    },
                    |line| eprintln!("{name}: {line}"),
                )
                .await
            }));
        }
        rt.block_on(async {
            let started = Instant::now();
            loop {
                let views = world_view(apiary.lake(), Duration::from_secs(1)).await?;
                if views
                    .iter()
                    .filter(|n| n.liveness == Liveness::Alive)
                    .count()
                    == 2
                {
                    return anyhow::Ok(());
                }
                if started.elapsed() > Duration::from_secs(60) {
                    bail!("the two nodes did not start");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })?;
    }
    // The first chambers page in the compiled guest; measure the queries, not that.
    rt.block_on(apiary.sql("SELECT 1"))?;
    Ok((apiary, (stops, serving)))
}

/// Register `<data>/<table>.parquet` as `table` in `ctx`, for each of `tables`.
async fn register_files(ctx: &SessionContext, data: &Path, tables: &[&str]) -> anyhow::Result<()> {
    for &table in tables {
        let file = data.join(format!("{table}.parquet"));
        ctx.register_parquet(
            table,
            file.to_str().context("utf-8 path")?,
            ParquetReadOptions::default(),
        )
        .await?;
    }
    Ok(())
}

/// Load `tables` from `data` into a lake at `dir` through the normal write path, unless a
/// previous run did. In the `by-date` layout the fact tables are written in date order.
async fn load_lake(dir: &Path, data: &Path, tables: &[&str], layout: &str) -> anyhow::Result<()> {
    let done = dir.join("LOADED");
    if done.exists() {
        return Ok(());
    }
    let lake = Lake::open(&dir.display().to_string()).await?;
    println!("loading the lake at {} ({layout} layout)", dir.display());
    // One partition: more would interleave batches from different parts of a file, and the
    // cells would not follow the file's order.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    register_files(&ctx, data, tables).await?;
    for &table in tables {
        let started = Instant::now();
        let order = match (layout, table) {
            ("by-date", "lineitem") => " ORDER BY l_shipdate",
            ("by-date", "orders") => " ORDER BY o_orderdate",
            ("by-date", "lineorder") => " ORDER BY lo_orderdate",
            _ => "",
        };
        let frame = ctx.sql(&format!("SELECT * FROM {table}{order}")).await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        lake.create_frame(table, &schema, &[], true).await?;
        let mut write = lake.begin_write(table).await?;
        // Each `add` writes its rows as cells of their own: hand it at most a million rows at
        // a time, in adds of equal size, so that no cell is a small remainder.
        let rows = ctx.table(table).await?.count().await?;
        let per_cell = rows.div_ceil(rows.div_ceil(1 << 20).max(1)).max(1);
        let mut stream = frame.execute_stream().await?;
        let (mut chunk, mut chunk_rows) = (Vec::new(), 0);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            chunk_rows += batch.num_rows();
            chunk.push(batch);
            if chunk_rows >= per_cell {
                write.add(&std::mem::take(&mut chunk)).await?;
                chunk_rows = 0;
            }
        }
        if !chunk.is_empty() {
            write.add(&chunk).await?;
        }
        let result = write.commit(WriteMode::Overwrite).await?;
        println!(
            "  {table}: {} rows, {} cells in {:.1} s",
            result.rows,
            result.cells,
            started.elapsed().as_secs_f64()
        );
    }
    std::fs::write(&done, b"")?;
    Ok(())
}

/// Each query's times and answer.
type DuckAnswers = Vec<(Vec<Duration>, Vec<Vec<Option<String>>>)>;

fn run_duckdb(
    data: &Path,
    tables: &[&str],
    threads: usize,
    runs: usize,
    queries: &[(&str, &str)],
) -> anyhow::Result<(String, u64, DuckAnswers)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/duckdb_tpch.py");
    println!("DuckDB, {threads} threads");
    let python = std::env::var_os("APIARY_BENCH_PYTHON").unwrap_or_else(|| "python3".into());
    let mut child = Command::new(python)
        .arg(&script)
        .arg("--data")
        .arg(data)
        .args(["--tables", &tables.join(",")])
        .args([
            "--threads",
            &threads.to_string(),
            "--runs",
            &runs.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running python3")?;
    let input = json!(
        queries
            .iter()
            .map(|(name, sql)| json!({"name": name, "sql": sql}))
            .collect::<Vec<_>>()
    );
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let answers = report["queries"]
        .as_array()
        .context("queries")?
        .iter()
        .map(|q| {
            let times = q["times_ms"]
                .as_array()
                .map(|times| {
                    times
                        .iter()
                        .filter_map(serde_json::Value::as_f64)
                        .map(|t| Duration::from_secs_f64(t / 1e3))
                        .collect()
                })
                .unwrap_or_default();
            let rows = q["rows"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .map(|row| {
                            row.as_array()
                                .map(|v| v.iter().map(|x| x.as_str().map(str::to_owned)).collect())
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .unwrap_or_default();
            (times, rows)
        })
        .collect();
    Ok((
        report["version"].as_str().unwrap_or("?").to_owned(),
        report["peak_rss_bytes"].as_u64().unwrap_or(0),
        answers,
    ))
}

fn report(
    args: &Args,
    title: &str,
    threads: usize,
    results: &[QueryResult],
    rss: [Option<u64>; 3],
    duckdb_version: Option<String>,
) -> anyhow::Result<()> {
    let ok: Vec<&QueryResult> = results
        .iter()
        .filter(|r| r.apiary_error.is_none())
        .collect();
    let vs_native: Vec<f64> = ok
        .iter()
        .map(|r| r.apiary.as_secs_f64() / r.native.as_secs_f64())
        .collect();
    let vs_duckdb: Vec<f64> = ok
        .iter()
        .filter_map(|r| r.duckdb.map(|d| r.apiary.as_secs_f64() / d.as_secs_f64()))
        .collect();
    let mut md = format!(
        "{title} SF {}, {} per query (medians), {} cores; Apiary: {} bees x {} MiB ({}, {} layout); \
         DataFusion 55 with {threads} partitions; DuckDB {} with {threads} threads.\n\n\
         | query | DataFusion ms | Apiary ms | DuckDB ms | Apiary/DataFusion | Apiary/DuckDB | fragments | chamber ms | of which planning ms | of which reads ms | merge ms | MiB read | same answer |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        args.scale,
        match args.rounds {
            1 => format!("{} runs", args.runs),
            rounds => format!("{rounds} rounds of {} runs", args.runs),
        },
        machine_cores(),
        args.bees,
        args.budget_mib,
        args.profile,
        args.layout,
        duckdb_version.as_deref().unwrap_or("(not run)"),
    );
    for r in results {
        let duck = r.duckdb.map_or("-".to_owned(), |d| format!("{:.0}", ms(d)));
        let check = match (&r.apiary_error, r.matches_native, r.matches_duckdb) {
            (Some(e), _, _) => format!("Apiary failed: {e}"),
            (None, true, Some(true)) => "yes (all three)".to_owned(),
            (None, true, None) => "yes (with DataFusion)".to_owned(),
            (None, a, d) => format!("DataFusion {a}, DuckDB {d:?}"),
        };
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.1} | {} |\n",
            r.name,
            ms(r.native),
            ms(r.apiary),
            duck,
            if r.apiary_error.is_none() {
                format!("{:.2}", r.apiary.as_secs_f64() / r.native.as_secs_f64())
            } else {
                "-".into()
            },
            r.duckdb
                .filter(|_| r.apiary_error.is_none())
                .map_or("-".into(), |d| format!(
                    "{:.2}",
                    r.apiary.as_secs_f64() / d.as_secs_f64()
                )),
            r.fragments,
            r.fragment_ms,
            r.planning_ms,
            r.read_ms,
            r.merge_ms,
            r.bytes_read as f64 / MIB as f64,
            check
        ));
    }
    let fmt = |g: Option<f64>| g.map_or("-".into(), |g| format!("{g:.2}"));
    md.push_str(&format!(
        "\nGeometric mean Apiary/DataFusion: {} over {} queries; Apiary/DuckDB: {}. \
         Peak RSS: DataFusion {} MiB, Apiary {} MiB (host and chambers), DuckDB {} MiB.\n",
        fmt(geomean(&vs_native)),
        vs_native.len(),
        fmt(geomean(&vs_duckdb)),
        rss[0].map_or("-".into(), |b| (b / MIB).to_string()),
        rss[1].map_or("-".into(), |b| (b / MIB).to_string()),
        rss[2].map_or("-".into(), |b| (b / MIB).to_string()),
    ));
    println!("\n{md}");
    let stem = match args.layout.as_str() {
        "plain" => format!("{}-sf{}-{}", args.suite, args.scale, args.profile),
        layout => format!("{}-sf{}-{}-{layout}", args.suite, args.scale, args.profile),
    };
    let stem = match args.threads {
        Some(threads) => format!("{stem}-{threads}-threads"),
        None => stem,
    };
    std::fs::write(args.out.join(format!("{stem}.md")), &md)?;
    let json = json!({
        "suite": args.suite,
        "scale": args.scale,
        "runs": args.runs,
        "rounds": args.rounds,
        "cores": machine_cores(),
        "threads": threads,
        "bees": args.bees,
        "budget_mib": args.budget_mib,
        "profile": args.profile,
        "layout": args.layout,
        "duckdb": duckdb_version,
        "geomean_apiary_vs_datafusion": geomean(&vs_native),
        "geomean_apiary_vs_duckdb": geomean(&vs_duckdb),
        "peak_rss_bytes": {"datafusion": rss[0], "apiary": rss[1], "duckdb": rss[2]},
        "queries": results.iter().map(|r| json!({
            "name": r.name,
            "datafusion_ms": ms(r.native),
            "apiary_ms": ms(r.apiary),
            "duckdb_ms": r.duckdb.map(ms),
            "fragments": r.fragments,
            "chamber_ms": r.fragment_ms,
            "planning_ms": r.planning_ms,
            "read_ms": r.read_ms,
            "merge_ms": r.merge_ms,
            "bytes_read": r.bytes_read,
            "same_as_datafusion": r.matches_native,
            "same_as_duckdb": r.matches_duckdb,
            "apiary_error": r.apiary_error,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        args.out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("wrote {}/{stem}.md and .json", args.out.display());
    Ok(())
}
