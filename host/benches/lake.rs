//! Lake write performance: commit throughput on a local lake (one writer, and four
//! concurrent writers), and the throughput of loading TPC-H lineitem through the write path
//! against the native Parquet writer on the same batches, in the same run.
//!
//! Run: `just bench-lake` (SF 1), or
//! `cargo bench -p apiary-host --bench lake -- --scale 0.1 --commits 100`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apiary_host::{Lake, WriteMode, cell_writer_properties, generate_tpch};
use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

struct Args {
    scale: f64,
    commits: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        scale: 1.0,
        commits: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scale" => args.scale = it.next().context("--scale needs a value")?.parse()?,
            "--commits" => args.commits = it.next().context("--commits needs a value")?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other}; expected --scale F --commits N"),
        }
    }
    Ok(args)
}

fn one_row(id: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![id]))]).expect("batch")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `writers` threads, each with its own handle, committing `per_writer` one-row appends.
fn commit_rate(uri: &str, writers: usize, per_writer: usize) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let uri = uri.to_owned();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                runtime()?.block_on(async {
                    let lake = Lake::open(&uri).await?;
                    let mut attempts = 0;
                    for i in 0..per_writer {
                        let id = (w * per_writer + i) as i64;
                        attempts += u64::from(
                            lake.write("t", &[one_row(id)], WriteMode::Append)
                                .await?
                                .attempts,
                        );
                    }
                    Ok(attempts)
                })
            })
        })
        .collect();
    let mut attempts = 0;
    for thread in threads {
        attempts += thread
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    Ok((started.elapsed(), attempts))
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let rt = runtime()?;
    let schema = Schema::new(vec![Field::new("id", DataType::Int64, false)]);

    println!("## Commit throughput (local lake, one-row appends)\n");
    println!("| writers | commits | seconds | commits/s | attempts per commit |");
    println!("|---:|---:|---:|---:|---:|");
    for writers in [1, 4] {
        let dir = tempfile::tempdir()?;
        let uri = format!("file://{}", dir.path().display());
        rt.block_on(async {
            Lake::open(&uri)
                .await?
                .create_frame("t", &schema, &[], false)
                .await
        })?;
        let per_writer = args.commits / writers;
        let (took, attempts) = commit_rate(&uri, writers, per_writer)?;
        let commits = (per_writer * writers) as f64;
        let version = rt
            .block_on(async { Lake::open(&uri).await?.frame("t").await })?
            .1
            .version;
        if version as f64 != commits {
            bail!("{writers} writers: expected {commits} versions, found {version}");
        }
        println!(
            "| {writers} | {commits} | {:.2} | {:.0} | {:.2} |",
            took.as_secs_f64(),
            commits / took.as_secs_f64(),
            attempts as f64 / commits
        );
    }

    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let lineitem = generate_tpch(
        &target.join(format!("tpch-sf{}", args.scale)),
        "lineitem",
        args.scale,
    )?;
    let batches: Vec<RecordBatch> =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&lineitem)?)?
            .build()?
            .collect::<Result<_, _>>()?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let arrow_bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();

    let started = Instant::now();
    let mut sink = Vec::new();
    let mut writer = ArrowWriter::try_new(
        &mut sink,
        batches[0].schema(),
        Some(cell_writer_properties()),
    )?;
    for batch in &batches {
        writer.write(batch)?;
    }
    writer.close()?;
    let native = started.elapsed();
    let native_bytes = sink.len();
    drop(sink);

    let dir = tempfile::tempdir()?;
    let uri = format!("file://{}", dir.path().display());
    let result = rt.block_on(async {
        let lake = Lake::open(&uri).await?;
        lake.create_frame("lineitem", &batches[0].schema(), &[], false)
            .await?;
        lake.write("lineitem", &batches, WriteMode::Append).await
    })?;
    if result.rows != rows as u64 {
        bail!("loaded {} rows of {rows}", result.rows);
    }
    let mb = arrow_bytes as f64 / 1e6;
    println!(
        "\n## Loading TPC-H lineitem SF {} ({rows} rows, {mb:.0} MB in Arrow)\n",
        args.scale
    );
    println!("| writer | seconds | rows/s | MB/s (Arrow in) | Parquet bytes |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| native ArrowWriter, one file in memory | {:.2} | {:.0} | {:.1} | {native_bytes} |",
        native.as_secs_f64(),
        rows as f64 / native.as_secs_f64(),
        mb / native.as_secs_f64()
    );
    println!(
        "| Apiary write path, {} cells, committed | {:.2} | {:.0} | {:.1} | {} |",
        result.cells,
        result.duration.as_secs_f64(),
        rows as f64 / result.duration.as_secs_f64(),
        mb / result.duration.as_secs_f64(),
        result.bytes
    );
    println!(
        "\nApiary / native write time: {:.2}x",
        result.duration.as_secs_f64() / native.as_secs_f64()
    );
    Ok(())
}
