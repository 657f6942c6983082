//! Quickstart: a lake, a frame, a write and a query through the Rust API.
//!
//! Run with `cargo run --release -p apiary-host --example quickstart` after
//! `just build-guest`. It uses a fresh lake in a temporary directory.

use std::sync::Arc;

use apiary_host::{Apiary, Settings};
use arrow::array::{Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A lake is a directory (or a bucket). Settings default to this machine: one bee per
    // core and the memory left after the host's share split between them; here two small
    // bees are plenty.
    let dir = tempfile::tempdir()?;
    let settings = Settings::for_machine().with_bees(2).with_budget_mib(256);
    let apiary = Apiary::open(&dir.path().display().to_string(), settings).await?;
    println!("opened a lake in {}", dir.path().display());

    // A frame is a table: a schema, optionally partitioned. `default.default` exists from
    // the start, so a one-part name is enough.
    let schema = Schema::new(vec![
        Field::new("sensor", DataType::Utf8, false),
        Field::new("celsius", DataType::Float64, true),
    ]);
    let readings = apiary
        .create_frame("readings", &schema, &["sensor"], false)
        .await?;

    // Each write is one commit in the frame's ledger: all of it or none of it.
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(vec!["porch", "porch", "shed", "attic"])),
            Arc::new(Float64Array::from(vec![4.5, 5.5, 9.0, 21.0])),
        ],
    )?;
    let written = readings.write(&[batch]).await?;
    println!(
        "wrote {} rows as {} cells (version {})",
        written.rows, written.cells, written.version
    );

    // Every query runs inside sealed chambers. Partition pruning means this one reads only
    // the porch's cell.
    let sql =
        "SELECT sensor, avg(celsius) AS mean FROM readings WHERE sensor = 'porch' GROUP BY sensor";
    let answer = apiary.sql(sql).await?;
    println!("{}", pretty_format_batches(&answer)?);
    let mean = answer[0]
        .column(1)
        .as_any()
        .downcast_ref::<Float64Array>()
        .map(|a| a.value(0));
    assert_eq!(mean, Some(5.0));

    // EXPLAIN ANALYZE shows the pruning and what each chamber did.
    let explain = apiary.sql(&format!("EXPLAIN ANALYZE {sql}")).await?;
    println!("{}", pretty_format_batches(&explain)?);

    let status = apiary.status().await?;
    println!(
        "{} frame(s); {} bees x {} MiB each",
        status.frames,
        status.settings.bees,
        status.settings.budget >> 20
    );
    Ok(())
}
