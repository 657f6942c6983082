//! A node's life in the swarm: heartbeats, the world view, and the worker.
//!
//! [`serve`] runs until `stop` completes. Every heartbeat interval it writes the node's
//! heartbeat (capacity, load, temperature, cache), refreshes the world view and reports
//! every change it sees (a node joined, turned suspect or dead, left), and removes
//! heartbeats dead for over an hour. The worker looks for tasks every poll interval; while
//! work is arriving (a task started or running in the last [`BURST`]) it looks ten times as
//! often, so a burst of distributed statements does not wait a full interval per fragment
//! while an idle node costs one listing per interval.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::swarm::heartbeat::{
    FORGET_AFTER, Liveness, WorldView, remove_heartbeat, write_heartbeat,
};
use crate::{Apiary, Result};

/// How long a node keeps polling fast after its last task.
pub const BURST: Duration = Duration::from_secs(5);

/// Serve the swarm as `apiary`'s node until `stop` completes, then delete the heartbeat.
/// `report` receives one line per change of the world view and per failure to reach the
/// lake (the node carries on after those).
///
/// # Errors
/// [`crate::Error::Storage`] when the heartbeat cannot be removed at the end.
pub async fn serve(
    apiary: &Apiary,
    stop: impl Future<Output = ()>,
    mut report: impl FnMut(String),
) -> Result<()> {
    let settings = apiary.settings();
    let lake = apiary.lake().clone();
    let id = apiary.node().to_owned();
    let mut worker = apiary.worker();
    let mut world = WorldView::new();
    let mut seen: BTreeMap<String, Liveness> = BTreeMap::new();
    let mut sequence = 0;
    let mut next_beat = Instant::now();
    let mut next_poll = Instant::now();
    let mut busy_until = Instant::now();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep_until(next_beat) => {
                next_beat += settings.heartbeat;
                if let Err(err) = write_heartbeat(&lake, &apiary.heartbeat(sequence)).await {
                    report(format!("node {id}: could not write the heartbeat: {err}"));
                }
                sequence += 1;
                let nodes = match world.refresh(&lake, settings.heartbeat).await {
                    Ok(nodes) => nodes,
                    Err(err) => {
                        report(format!("node {id}: could not read heartbeats: {err}"));
                        continue;
                    }
                };
                let mut now = BTreeMap::new();
                for node in &nodes {
                    let name = &node.heartbeat.node;
                    if *name != id && seen.get(name) != Some(&node.liveness) {
                        report(format!(
                            "world: {name} {} (silent {:.1} s)",
                            node.liveness.as_str(),
                            node.age.as_secs_f64()
                        ));
                    }
                    if node.liveness == Liveness::Dead && node.age > FORGET_AFTER {
                        let _ = remove_heartbeat(&lake, name).await;
                    }
                    now.insert(name.clone(), node.liveness);
                }
                for name in seen.keys().filter(|n| !now.contains_key(*n) && **n != id) {
                    report(format!("world: {name} left"));
                }
                seen = now;
            }
            () = tokio::time::sleep_until(next_poll) => {
                match worker.poll().await {
                    Ok(started) if started > 0 => busy_until = Instant::now() + BURST,
                    Ok(_) => {}
                    Err(err) => report(format!("node {id}: could not look for tasks: {err}")),
                }
                if worker.running() > 0 {
                    busy_until = Instant::now() + BURST;
                }
                let interval = if Instant::now() < busy_until {
                    (settings.poll / 10).max(Duration::from_millis(5))
                } else {
                    settings.poll
                };
                next_poll = Instant::now() + interval;
            }
        }
    }
    remove_heartbeat(&lake, &id).await
}
