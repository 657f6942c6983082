//! A memory pool that remembers its high-water mark.
//!
//! DataFusion's own pools report what is reserved now; a chamber also wants the peak, to
//! report it next to the bee's budget. [`PeakMemoryPool`] wraps a [`FairSpillPool`] (so
//! spilling operators share the budget fairly) and records the maximum reservation.

use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::Result;
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// A [`FairSpillPool`] of a fixed size that tracks its peak reservation.
#[derive(Debug)]
pub struct PeakMemoryPool {
    inner: FairSpillPool,
    peak: AtomicUsize,
}

impl PeakMemoryPool {
    /// A pool of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: FairSpillPool::new(limit),
            peak: AtomicUsize::new(0),
        }
    }

    /// The largest number of bytes reserved at any one time so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn note(&self) {
        self.peak
            .fetch_max(self.inner.reserved(), Ordering::Relaxed);
    }
}

impl std::fmt::Display for PeakMemoryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes reserved, peak {}",
            self.inner.reserved(),
            self.peak()
        )
    }
}

impl MemoryPool for PeakMemoryPool {
    fn name(&self) -> &str {
        "apiary-peak"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.note();
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.inner.try_grow(reservation, additional)?;
        self.note();
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}
