//! A memory pool that remembers its high-water mark.
//!
//! DataFusion's own pools report what is reserved now; a chamber also wants the peak, to
//! report it next to the bee's budget. [`PeakMemoryPool`] wraps a [`FairSpillPool`] (so
//! spilling operators share the budget fairly) and records the maximum reservation. Errors
//! name the largest consumers, so that a user can tell a hash join from a sort.
//!
//! A fair share is computed among the consumers registered at the time, so an operator that
//! runs before the others start may take most of the pool and keep it (a sort whose rows fit
//! holds them until they are read), and the merge of a sort's spilled runs seats as many runs
//! as the pool allows. Where several sorts run at once, the fragment caps every reservation
//! with [`PeakMemoryPool::cap_reservations`], so that each sort spills early and merges fewer
//! runs at a time instead.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
    human_readable_size,
};

/// How many of the largest consumers an out-of-memory error names.
const NAMED_CONSUMERS: NonZeroUsize = NonZeroUsize::new(3).expect("non-zero");

/// A [`FairSpillPool`] of a fixed size that tracks its peak reservation.
#[derive(Debug)]
pub struct PeakMemoryPool {
    inner: TrackConsumersPool<FairSpillPool>,
    peak: AtomicUsize,
    /// The most one reservation may hold; `usize::MAX` for no cap.
    cap: AtomicUsize,
}

impl PeakMemoryPool {
    /// A pool of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: TrackConsumersPool::new(FairSpillPool::new(limit), NAMED_CONSUMERS),
            peak: AtomicUsize::new(0),
            cap: AtomicUsize::new(usize::MAX),
        }
    }

    /// The largest number of bytes reserved at any one time so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// From now on, no reservation may grow past `bytes` by asking: a sort spills instead,
    /// and a merge seats fewer runs.
    pub fn cap_reservations(&self, bytes: usize) {
        self.cap.store(bytes, Ordering::Relaxed);
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
        let cap = self.cap.load(Ordering::Relaxed);
        if reservation.size().saturating_add(additional) > cap {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "Failed to allocate additional {} for {} with {} already allocated: each \
                 operator may hold {} of this fragment's pool",
                human_readable_size(additional),
                reservation.consumer().name(),
                human_readable_size(reservation.size()),
                human_readable_size(cap),
            )));
        }
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
