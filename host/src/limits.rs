//! The hard memory wall of a chamber.
//!
//! wasmtime asks the store's [`ResourceLimiter`] before any linear memory grows. The limiter
//! sums the chamber's memories and refuses growth past the bee's budget, remembering what was
//! asked for so the host can report `MemoryExceeded` instead of a bare trap. Refusing (rather
//! than trapping here) lets guest code that handles a failed allocation carry on; Rust's
//! default allocator aborts, which traps, and the host classifies it by the flag set here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::ResourceLimiter;

/// Caps a chamber's linear memory at a budget and records its peak.
#[derive(Debug)]
pub(crate) struct BudgetLimiter {
    budget: u64,
    in_use: u64,
    peak: u64,
    refused: Option<u64>,
    gauge: Option<Arc<AtomicU64>>,
}

impl BudgetLimiter {
    pub(crate) fn new(budget: u64) -> Self {
        Self {
            budget,
            in_use: 0,
            peak: 0,
            refused: None,
            gauge: None,
        }
    }

    /// Also publish the bytes in use to `gauge` as they change (the colony temperature
    /// reads it while the chamber runs).
    pub(crate) fn with_gauge(mut self, gauge: Option<Arc<AtomicU64>>) -> Self {
        self.gauge = gauge;
        self
    }

    /// Peak bytes of linear memory held.
    pub(crate) fn peak(&self) -> u64 {
        self.peak
    }

    /// The total the chamber asked for when growth was first refused.
    pub(crate) fn refused(&self) -> Option<u64> {
        self.refused
    }
}

impl ResourceLimiter for BudgetLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current) as u64;
        let total = self.in_use + grow;
        if total > self.budget || maximum.is_some_and(|m| desired > m) {
            self.refused.get_or_insert(total);
            return Ok(false);
        }
        self.in_use = total;
        self.peak = self.peak.max(total);
        if let Some(gauge) = &self.gauge {
            gauge.store(total, Ordering::Relaxed);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|m| desired <= m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_growth_past_the_budget_across_memories() {
        let mut limiter = BudgetLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).expect("ok"));
        assert!(limiter.memory_growing(0, 30, None).expect("ok"));
        assert!(!limiter.memory_growing(60, 80, None).expect("ok"));
        assert_eq!(limiter.refused(), Some(110));
        assert_eq!(limiter.peak(), 90);
        assert!(limiter.memory_growing(60, 70, None).expect("ok"));
        assert_eq!(limiter.peak(), 100);
    }
}
