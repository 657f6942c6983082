//! User-defined function overhead: a trivial function (`add_one(x)` = `x + 1`) and a
//! two-argument one (`discounted(p, d)` = `p * (1 - d)`) from the example module, against
//! the equivalent built-in expressions, over lineitem in one bee's chamber.
//!
//! Run: `just bench-udf` (SF 1, 5 runs), or
//! `cargo bench -p apiary-host --bench udf -- --scale 0.1 --runs 3`.
//! Prints the median of each, the ratio function / built-in (target at most 1.5x), and
//! native DataFusion's time for the built-in expression; the answers are compared.

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

/// (name, with the function, with the built-in expression)
const QUERIES: [(&str, &str, &str); 2] = [
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

    let engine = Arc::new(ChamberEngine::new(
        &find_guest()?,
        &target.join("cwasm"),
        4 << 30,
        2,
    )?);
    let module_path = find_component("apiary_example_udf.wasm")?;
    let module = engine.function_module(&std::fs::read(&module_path)?)?;
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
        module_path.display(),
        std::fs::metadata(&module_path)?.len() >> 10,
        functions
            .iter()
            .map(|f| f.signature.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
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

    println!(
        "\n| function | native built-in (ms) | chamber built-in (ms) | chamber function (ms) | function / built-in |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, with_function, built_in) in QUERIES {
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
    println!(
        "\nSF {}, {} runs each, medians; one bee, one chamber per run (target: function / built-in at most 1.5x)",
        args.scale, args.runs
    );
    Ok(())
}
