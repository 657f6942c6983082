//! Coordination overhead of distributed statements on a local lake.
//!
//! Two worker nodes and a coordinator share one lake directory (in one process, each with
//! its own bees, cell cache and node loop, talking only through the lake). TPC-H Q1 and Q6
//! over lineitem, partitioned by ship mode, run distributed (`--distribute always`) and on
//! the coordinator alone, in the same run. For each distributed statement the overhead is
//! the time from before the manifest is written to the last partial result read, less the
//! slowest fragment's own chamber time: writing and reading the manifest, the workers
//! noticing it, writing, noticing and reading partial results. Statements right after
//! others find the workers polling fast ("warm"); a statement after more than the burst
//! window of quiet waits for a full poll interval ("cold").
//!
//! Run: `just bench-swarm`, or
//! `cargo bench -p apiary-host --bench swarm -- --scale 0.1 --runs 15 --poll-ms 250`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use apiary_host::swarm::node::{BURST, serve};
use apiary_host::{
    Apiary, Distribute, Lake, Liveness, QueryOutput, Settings, TPCH_QUERIES, WriteMode,
    generate_tpch, world_view,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

struct Args {
    scale: f64,
    runs: usize,
    poll: Duration,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        scale: 0.1,
        runs: 15,
        poll: Duration::from_millis(250),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scale" => args.scale = it.next().context("--scale needs a value")?.parse()?,
            "--runs" => args.runs = it.next().context("--runs needs a value")?.parse()?,
            "--poll-ms" => {
                args.poll =
                    Duration::from_millis(it.next().context("--poll-ms needs a value")?.parse()?);
            }
            "--bench" => {}
            other => bail!("unknown argument {other}; expected --scale F --runs N --poll-ms MS"),
        }
    }
    Ok(args)
}

fn settings(dir: &Path, name: &str, poll: Duration, distribute: Distribute) -> Settings {
    let mut settings = Settings::for_machine().with_bees(1).with_budget_mib(512);
    settings.heartbeat = Duration::from_secs(1);
    settings.poll = poll;
    settings.distribute = distribute;
    settings.cell_cache_dir = dir.join(name).join("cells");
    // Each node keeps a cell cache, as nodes of a swarm over S3 would (a local lake is read
    // in place by default).
    settings.cell_cache = Some(2048 << 20);
    settings
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn p90(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() * 9 / 10).min(values.len() - 1)]
}

/// Overhead of one distributed statement, in ms: coordination minus the slowest fragment.
fn overhead(output: &QueryOutput) -> anyhow::Result<f64> {
    let coordination = output
        .coordination
        .as_ref()
        .context("the statement was not distributed")?;
    let slowest = output
        .fragments
        .iter()
        .map(|f| f.stats.elapsed)
        .max()
        .unwrap_or_default();
    Ok(coordination.elapsed.saturating_sub(slowest).as_secs_f64() * 1e3)
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let uri = dir.path().join("lake").display().to_string();
        eprintln!("loading lineitem SF {} partitioned by l_shipmode...", args.scale);
        let lake = Lake::open(&uri).await?;
        let file = generate_tpch(&dir.path().join("tpch"), "lineitem", args.scale)?;
        let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file)?)?
            .build()?
            .collect::<Result<_, _>>()?;
        lake.create_frame("lineitem", &batches[0].schema(), &["l_shipmode"], false)
            .await?;
        lake.write("lineitem", &batches, WriteMode::Append).await?;
        drop(batches);

        let mut stops = Vec::new();
        let mut nodes = Vec::new();
        for name in ["worker-a", "worker-b"] {
            let apiary = Apiary::open(&uri, settings(dir.path(), name, args.poll, Distribute::Never))
                .await?
                .with_node(name);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            nodes.push(tokio::spawn(async move {
                serve(&apiary, async { let _ = stopped.await; }, |line| eprintln!("{name}: {line}")).await
            }));
        }
        let coordinator = Apiary::open(&uri, settings(dir.path(), "coordinator", args.poll, Distribute::Always))
            .await?
            .with_node("coordinator");
        let alone = Apiary::open(&uri, settings(dir.path(), "alone", args.poll, Distribute::Never)).await?;
        loop {
            let views = world_view(coordinator.lake(), Duration::from_secs(1)).await?;
            if views.iter().filter(|n| n.liveness == Liveness::Alive).count() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        println!(
            "Coordination overhead: lineitem SF {} (7 cells), 2 worker nodes x 1 bee, poll interval {} ms, {} runs\n",
            args.scale,
            args.poll.as_millis(),
            args.runs
        );
        println!("| query | one node (ms) | distributed (ms) | ratio | overhead warm, median (ms) | warm p90 (ms) | overhead cold (ms) |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let mut all_warm = Vec::new();
        for name in ["q1", "q6"] {
            let sql = TPCH_QUERIES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, sql)| *sql)
                .context("query")?;
            let answer = alone.sql(sql).await?;
            let distributed = coordinator.sql(sql).await?;
            if format!("{answer:?}") != format!("{distributed:?}") {
                bail!("{name}: the distributed answer differs from one node's");
            }
            let (mut local, mut wall, mut warm) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..args.runs {
                let started = std::time::Instant::now();
                alone.query(sql).await?;
                local.push(started.elapsed().as_secs_f64() * 1e3);
                let started = std::time::Instant::now();
                let output = coordinator.query(sql).await?;
                wall.push(started.elapsed().as_secs_f64() * 1e3);
                warm.push(overhead(&output)?);
            }
            // Cold: the workers are back to polling once per interval.
            tokio::time::sleep(BURST + Duration::from_secs(1)).await;
            let cold = overhead(&coordinator.query(sql).await?)?;
            all_warm.extend(warm.iter().copied());
            let (local, wall) = (median(&mut local), median(&mut wall));
            println!(
                "| {name} | {local:.1} | {wall:.1} | {:.2}x | {:.1} | {:.1} | {cold:.1} |",
                wall / local,
                median(&mut warm),
                p90(&mut warm),
            );
        }
        let warm = median(&mut all_warm);
        println!(
            "\nMedian warm overhead {warm:.1} ms: {:.2}x the 100 ms target.",
            warm / 100.0
        );
        for stop in stops {
            let _ = stop.send(());
        }
        for node in nodes {
            node.await??;
        }
        anyhow::Ok(())
    })
}
