//! What several test crates share: the S3-compatible test server, the lock that runs a
//! crate's tests one at a time, a node-sized runtime, and where generated data is kept.
//!
//! Each test crate that declares `mod support;` uses a part of it.
#![allow(dead_code)]

pub mod s3;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// Held by a test that needs the machine's cores (or a bee pool's bees) to itself.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A runtime with two workers, as a node has.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Where tests keep what they generate once and reuse (TPC-H data, compiled guests).
pub fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}
