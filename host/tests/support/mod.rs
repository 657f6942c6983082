//! What several test crates share: the S3-compatible test server.
//!
//! Each test crate that declares `mod support;` uses a part of it.
#![allow(dead_code)]

pub mod s3;
