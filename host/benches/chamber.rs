//! Chamber overhead: TPC-H Q1 and Q6 over lineitem, one bee in a sealed chamber against
//! native DataFusion with one partition, same files, same process. Then user-defined
//! function overhead: the example module's `add_one(x)` (= `x + 1`) and `discounted(p, d)`
//! (= `p * (1 - d)`) against the equivalent built-in expressions, both in the chamber.
//!
//! Run: `just bench-chamber` (SF 1, 5 runs), or
//! `cargo bench -p apiary-host --bench chamber -- --scale 0.1 --runs 3`.
//! Prints the median of each and the ratios chamber / native (target 1.25x) and function /
//! built-in (target 1.5x); the answers are compared too.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apiary_host::{
    BeePool, BoundFunction, CellFiles, ChamberEngine, Fragment, PoolConfig, TableCells,
    find_component, find_guest, generate_tpch,
};
use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

const Q1: &str = "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, \
    sum(l_extendedprice) AS sum_base_price, sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price, \
    sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge, avg(l_quantity) AS avg_qty, \
    avg(l_extendedprice) AS avg_price, avg(l_discount) AS avg_disc, count(*) AS count_order \
    FROM lineitem WHERE l_shipdate <= DATE '1998-12-01' - INTERVAL '90' DAY \
    GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus";

const Q6: &str = "SELECT sum(l_extendedprice * l_discount) AS revenue FROM lineitem \
    WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01' \
    AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24";

/// (function, with the function, with the built-in expression)
const FUNCTIONS: [(&str, &str, &str); 2] = [
    (
        "add_one",
        "SELECT sum(add_one(l_orderkey)) AS s FROM lineitem",
        "SELECT sum(l_orderkey + 1) AS s FROM lineitem",
    ),
    (
        "discounted",
        "SELECT round(sum(discounted(CAST(l_extendedprice AS DOUBLE), CAST(l_discount AS DOUBLE))), 2) \
         AS s FROM lineitem",
        "SELECT round(sum(CAST(l_extendedprice AS DOUBLE) * (1 - CAST(l_discount AS DOUBLE))), 2) \
         AS s FROM lineitem",
    ),
];

struct Args {
    scale: f64,
    runs: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        scale: 1.0,
        runs: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scale" => args.scale = it.next().context("--scale needs a value")?.parse()?,
            "--runs" => args.runs = it.next().context("--runs needs a value")?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other}; expected --scale F --runs N"),
        }
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
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

/// The example module's functions, loaded into `engine`.
fn example_functions(engine: &ChamberEngine) -> anyhow::Result<Vec<BoundFunction>> {
    let path = find_component("apiary_example_udf.wasm")?;
    let module = engine.function_module(&std::fs::read(&path)?)?;
    let functions: Vec<BoundFunction> = engine
        .describe_functions(&module)?
        .into_iter()
        .map(|signature| BoundFunction {
            signature,
            module: module.clone(),
        })
        .collect();
    println!(
        "example module {} ({} KiB): {}",
        path.display(),
        std::fs::metadata(&path)?.len() >> 10,
        functions
            .iter()
            .map(|f| f.signature.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(functions)
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let data_dir = target.join(format!("tpch-sf{}", args.scale));
    println!(
        "generating TPC-H lineitem SF {} (once) in {}",
        args.scale,
        data_dir.display()
    );
    let lineitem = generate_tpch(&data_dir, "lineitem", args.scale)?;
    let size = std::fs::metadata(&lineitem)?.len();
    println!("lineitem: {:.1} MiB", size as f64 / (1 << 20) as f64);

    let started = Instant::now();
    let engine = Arc::new(ChamberEngine::new(
        &find_guest()?,
        &target.join("cwasm"),
        4 << 30,
        2,
    )?);
    println!(
        "chamber engine ready in {:.2?} ({})",
        started.elapsed(),
        if engine.compiled_guest() {
            "compiled the guest"
        } else {
            "precompiled guest from cache"
        }
    );
    let functions = example_functions(&engine)?;
    let scratch = tempfile::tempdir()?;
    let pool = BeePool::new(
        engine,
        PoolConfig {
            bees: 1,
            budget: 4 << 30,
            deadline: Duration::from_secs(600),
            scratch_root: scratch.path().to_path_buf(),
        },
    )?;

    let run_chamber = |sql: &str| -> anyhow::Result<(Duration, String)> {
        let files = CellFiles::open([&lineitem])?;
        let table = TableCells {
            name: "lineitem".into(),
            cells: files.cells(),
            schema: None,
        };
        let fragment =
            Fragment::new(sql, vec![table], Arc::new(files)).with_functions(functions.clone());
        let t = Instant::now();
        let output = pool.run(fragment)?;
        Ok((
            t.elapsed(),
            pretty_format_batches(&output.batches)?.to_string(),
        ))
    };

    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    runtime.block_on(ctx.register_parquet(
        "lineitem",
        lineitem.to_str().context("utf-8 path")?,
        ParquetReadOptions::default(),
    ))?;

    println!("\n| query | native (ms) | chamber (ms) | chamber / native |");
    println!("|---|---:|---:|---:|");
    let mut ratios = Vec::new();
    for (name, sql) in [("Q1", Q1), ("Q6", Q6)] {
        let mut native_times = Vec::new();
        let mut native_answer = String::new();
        for _ in 0..args.runs {
            let t = Instant::now();
            let batches = runtime.block_on(async { ctx.sql(sql).await?.collect().await })?;
            native_times.push(t.elapsed());
            native_answer = pretty_format_batches(&batches)?.to_string();
        }
        let mut chamber_times = Vec::new();
        let mut chamber_answer = String::new();
        for _ in 0..args.runs {
            let (t, answer) = run_chamber(sql)?;
            chamber_times.push(t);
            chamber_answer = answer;
        }
        if native_answer != chamber_answer {
            bail!(
                "{name}: the chamber's answer differs from native DataFusion's:\n{chamber_answer}\n{native_answer}"
            );
        }
        let (n, c) = (median(native_times), median(chamber_times));
        let ratio = c.as_secs_f64() / n.as_secs_f64();
        ratios.push(ratio);
        println!(
            "| {name} | {:.1} | {:.1} | {ratio:.2}x |",
            n.as_secs_f64() * 1e3,
            c.as_secs_f64() * 1e3
        );
    }
    let geomean = ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64;
    println!(
        "\nSF {}, {} runs each, medians; geometric mean chamber / native: {:.2}x (target 1.25x)",
        args.scale,
        args.runs,
        geomean.exp()
    );

    println!(
        "\n| function | native built-in (ms) | chamber built-in (ms) | chamber function (ms) | function / built-in |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, with_function, built_in) in FUNCTIONS {
        let mut native = Vec::new();
        for _ in 0..args.runs {
            let t = Instant::now();
            runtime.block_on(async { ctx.sql(built_in).await?.collect().await })?;
            native.push(t.elapsed());
        }
        let (mut builtin_times, mut function_times) = (Vec::new(), Vec::new());
        let (mut builtin_answer, mut function_answer) = (String::new(), String::new());
        // Alternate the two so that drift on the machine hits both alike.
        for _ in 0..args.runs {
            let (t, answer) = run_chamber(built_in)?;
            builtin_times.push(t);
            builtin_answer = answer;
            let (t, answer) = run_chamber(with_function)?;
            function_times.push(t);
            function_answer = answer;
        }
        if builtin_answer != function_answer {
            bail!("{name}: the function's answer differs:\n{function_answer}\n{builtin_answer}");
        }
        let (n, b, f) = (
            median(native),
            median(builtin_times),
            median(function_times),
        );
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.2}x |",
            ms(n),
            ms(b),
            ms(f),
            f.as_secs_f64() / b.as_secs_f64()
        );
    }
    println!("\nfunction / built-in: both in one bee's chamber, medians (target at most 1.5x)");
    Ok(())
}
