//! Two nodes, one lake: what a swarm shares.
//!
//! Nodes never talk to each other; they share the lake. Here two nodes live in one program
//! for the sake of the example (on a real swarm each is an `apiary node` on its own
//! machine): each announces itself with a heartbeat, one writes, the other reads what was
//! committed, and both see each other in the world view.
//!
//! Run with `cargo run --release -p apiary-host --example two_nodes` after
//! `just build-guest`.

use std::sync::Arc;

use apiary_host::{Apiary, Liveness, Settings, heartbeat_for, remove_heartbeat, write_heartbeat};
use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let lake = dir.path().display().to_string();
    // A Pi-sized node and a bigger one: their settings differ, the lake is the same.
    let pi = Apiary::open(
        &lake,
        Settings::for_machine().with_bees(1).with_budget_mib(128),
    )
    .await?;
    let nuc = Apiary::open(
        &lake,
        Settings::for_machine().with_bees(2).with_budget_mib(256),
    )
    .await?;

    // Each node says it is alive by writing a heartbeat into the lake.
    write_heartbeat(pi.lake(), &heartbeat_for("pi", 0, pi.settings())).await?;
    write_heartbeat(nuc.lake(), &heartbeat_for("nuc", 0, nuc.settings())).await?;

    // The Pi creates a frame and writes to it ...
    let schema = Schema::new(vec![
        Field::new("node", DataType::Utf8, false),
        Field::new("events", DataType::Int64, false),
    ]);
    let frame = pi.create_frame("events", &schema, &[], false).await?;
    let batch = RecordBatch::try_new(
        Arc::new(schema.clone()),
        vec![
            Arc::new(StringArray::from(vec!["pi", "pi"])),
            Arc::new(Int64Array::from(vec![3, 4])),
        ],
    )?;
    frame.write(&[batch]).await?;

    // ... the NUC sees the commit at once, appends its own, and the Pi sees that.
    nuc.sql("INSERT INTO events VALUES ('nuc', 10)").await?;
    let totals = pi
        .sql("SELECT node, sum(events) AS events FROM events GROUP BY node ORDER BY node")
        .await?;
    println!("{}", pretty_format_batches(&totals)?);

    // Both nodes appear in either node's world view.
    for node in nuc.status().await?.nodes {
        let hb = &node.heartbeat;
        println!(
            "{}: {:?}, {} bees x {} MiB",
            hb.node,
            node.liveness,
            hb.bees,
            hb.budget >> 20
        );
        assert_eq!(node.liveness, Liveness::Alive);
    }

    // Leaving gracefully removes the heartbeat.
    remove_heartbeat(pi.lake(), "pi").await?;
    remove_heartbeat(nuc.lake(), "nuc").await?;
    assert!(pi.status().await?.nodes.is_empty());
    println!("both nodes left");
    Ok(())
}
