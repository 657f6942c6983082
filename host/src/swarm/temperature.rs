//! Colony temperature: how hard a node's bees are working, as one number and a band.
//!
//! The temperature blends three measurements of the bee pool: the share of bees busy
//! (weight 0.5), memory pressure, the linear memory the running chambers hold over what
//! they may hold (weight 0.3, read from the chambers' memory limiters as they grow), and
//! the queue, fragments waiting per bee, capped at one (weight 0.2). Hot nodes throttle
//! writes ([`HotWrites`]); critical nodes refuse new queries.

use std::fmt;

use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::{BeePool, Error, PoolLoad, Result};

/// A temperature band.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    /// Below 0.25: bees waiting for work.
    #[default]
    Cold,
    /// 0.25 to 0.6.
    Ideal,
    /// 0.6 to 0.8.
    Warm,
    /// 0.8 to 0.92: writes are throttled.
    Hot,
    /// 0.92 and above: new queries are refused.
    Critical,
}

impl Band {
    /// The band of a temperature value.
    pub fn of(value: f64) -> Self {
        match value {
            v if v >= 0.92 => Self::Critical,
            v if v >= 0.8 => Self::Hot,
            v if v >= 0.6 => Self::Warm,
            v if v >= 0.25 => Self::Ideal,
            _ => Self::Cold,
        }
    }

    /// `cold`, `ideal`, `warm`, `hot` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cold => "cold",
            Self::Ideal => "ideal",
            Self::Warm => "warm",
            Self::Hot => "hot",
            Self::Critical => "critical",
        }
    }
}

/// A node's colony temperature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Temperature {
    /// 0 (idle) to 1 (every bee busy, memory full, a queue as long as the bees).
    pub value: f64,
    /// Its band.
    pub band: Band,
    /// Memory the running chambers hold over what they may hold, 0..=1.
    pub memory_pressure: f64,
}

impl Temperature {
    /// The temperature of a pool with `load`.
    pub fn of(load: PoolLoad) -> Self {
        let bees = (load.busy + load.idle).max(1) as f64;
        let busy = load.busy as f64 / bees;
        let memory_pressure = if load.memory_limit == 0 {
            0.0
        } else {
            (load.memory_in_use as f64 / load.memory_limit as f64).min(1.0)
        };
        let queue = (load.queued as f64 / bees).min(1.0);
        let value = 0.5 * busy + 0.3 * memory_pressure + 0.2 * queue;
        Self {
            value,
            band: Band::of(value),
            memory_pressure,
        }
    }
}

impl fmt::Display for Temperature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:.2})", self.band.as_str(), self.value)
    }
}

/// What a write does on a hot node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HotWrites {
    /// Wait for the node to cool below hot, up to a timeout, then fail.
    #[default]
    Block,
    /// Fail at once with [`crate::Error::Overheated`].
    Error,
    /// Write anyway.
    Ignore,
}

impl HotWrites {
    /// Parse `block`, `error` or `ignore`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "block" => Some(Self::Block),
            "error" => Some(Self::Error),
            "ignore" => Some(Self::Ignore),
            _ => None,
        }
    }

    /// `block`, `error` or `ignore`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Error => "error",
            Self::Ignore => "ignore",
        }
    }
}

/// Wait until `pool` is cool enough to write, as `policy` says: at once when it is not
/// hot or writes ignore the temperature; up to `timeout` when writes block; never when they
/// error. Returns the temperature the write goes ahead at.
///
/// # Errors
/// [`Error::Overheated`] when the node is hot and writes error, or stays hot past `timeout`.
pub async fn wait_to_write(
    pool: &BeePool,
    policy: HotWrites,
    timeout: Duration,
    node: &str,
) -> Result<Temperature> {
    let started = std::time::Instant::now();
    loop {
        let temperature = Temperature::of(pool.load());
        if temperature.band < Band::Hot || policy == HotWrites::Ignore {
            return Ok(temperature);
        }
        if policy == HotWrites::Error || started.elapsed() >= timeout {
            return Err(Error::Overheated {
                node: node.to_owned(),
                temperature: temperature.to_string(),
                what: "writes".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(busy: usize, idle: usize, queued: usize, memory: (u64, u64)) -> PoolLoad {
        PoolLoad {
            busy,
            idle,
            queued,
            memory_in_use: memory.0,
            memory_limit: memory.1,
        }
    }

    #[test]
    fn idle_pool_is_cold_and_a_full_one_critical() {
        assert_eq!(Temperature::of(load(0, 4, 0, (0, 400))).band, Band::Cold);
        let full = Temperature::of(load(4, 0, 8, (400, 400)));
        assert_eq!(full.band, Band::Critical);
        assert!((full.value - 1.0).abs() < 1e-9);
    }

    #[test]
    fn bands_follow_busy_bees_memory_and_queue() {
        // Half the bees busy, little memory: ideal.
        assert_eq!(Temperature::of(load(2, 2, 0, (40, 400))).band, Band::Ideal);
        // Every bee busy, a third of memory, no queue: warm.
        assert_eq!(Temperature::of(load(4, 0, 0, (140, 400))).band, Band::Warm);
        // Every bee busy with a full queue and half the memory: hot.
        let hot = Temperature::of(load(4, 0, 4, (200, 400)));
        assert_eq!(hot.band, Band::Hot, "{hot}");
        assert!((hot.memory_pressure - 0.5).abs() < 1e-9);
    }
}
