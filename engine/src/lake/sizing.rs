//! Leafcutter sizing: how many rows go into each cell a write produces.
//!
//! A bee reads a cell under its memory budget, so cells are sized from the budget: the
//! target is a quarter of it (room for decoding, operators and the result), never above
//! twice that, and not below 16 MiB so a lake does not fill with tiny files that cost one
//! request each. Sizes are estimates (Arrow bytes in memory before compression), spread
//! evenly over rows: the writer knows the rows and their in-memory size, not the Parquet size.

use std::ops::Range;

/// One mebibyte.
const MIB: u64 = 1024 * 1024;

/// The smallest cell worth writing when there is more data than that.
pub const MIN_CELL_BYTES: u64 = 16 * MIB;

/// The size bounds of the cells of one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellSizing {
    /// The size aimed for.
    pub target_bytes: u64,
    /// No cell is smaller, unless the whole write is.
    pub min_bytes: u64,
    /// No cell is larger, unless a single row is.
    pub max_bytes: u64,
}

impl CellSizing {
    /// Sizing for bees with `bee_budget_bytes` of memory each: target a quarter of the
    /// budget, max twice the target, min [`MIN_CELL_BYTES`] (or the target, if that is
    /// smaller, so that min ≤ target always holds on tiny budgets). All are at least 1.
    pub fn for_budget(bee_budget_bytes: u64) -> Self {
        let target_bytes = (bee_budget_bytes / 4).max(1);
        Self {
            target_bytes,
            min_bytes: MIN_CELL_BYTES.min(target_bytes),
            max_bytes: target_bytes.saturating_mul(2),
        }
    }

    /// How many cells `total_bytes` of data is cut into: one while it fits in `max_bytes`,
    /// else `floor(total / target)`, so each cell gets between `target` and `2 × target`
    /// bytes (at most one row per cell).
    fn cells_for(&self, total_rows: usize, total_bytes: u64) -> usize {
        if total_rows == 0 {
            return 0;
        }
        if total_bytes <= self.max_bytes {
            return 1;
        }
        let cells = usize::try_from(total_bytes / self.target_bytes).unwrap_or(usize::MAX);
        cells.clamp(1, total_rows)
    }

    /// Rows per cell for data of `total_rows` rows and about `total_bytes_estimate` bytes:
    /// all rows when the data fits in one cell, else the rows of a cell of about the target
    /// size at the data's average row size (at least 1). For writers that stream and cut a
    /// cell every so many rows; [`CellSizing::cut`] spreads rows more evenly when the total
    /// is known.
    pub fn rows_per_cell(&self, total_rows: usize, total_bytes_estimate: u64) -> usize {
        if total_rows == 0 || total_bytes_estimate <= self.max_bytes {
            return total_rows;
        }
        let rows =
            u128::from(self.target_bytes) * total_rows as u128 / u128::from(total_bytes_estimate);
        usize::try_from(rows).unwrap_or(usize::MAX).max(1)
    }

    /// Row ranges, one per cell, covering `0..total_rows` in order, for data of about
    /// `total_bytes_estimate` bytes.
    ///
    /// Rows are spread evenly (cells differ by at most one row) over `floor(total /
    /// target)` cells, so every cell's estimated size lies in `[target, 2 × target)`, within
    /// `[min, max]`. Data that fits in `max_bytes` is one cell, which is smaller than `min`
    /// only when the whole write is. A single row bigger than `max_bytes` still gets a cell
    /// of its own. No rows give no ranges.
    pub fn cut(&self, total_rows: usize, total_bytes_estimate: u64) -> Vec<Range<usize>> {
        let cells = self.cells_for(total_rows, total_bytes_estimate);
        if cells == 0 {
            return Vec::new();
        }
        let (base, extra) = (total_rows / cells, total_rows % cells);
        let mut start = 0;
        (0..cells)
            .map(|i| {
                let len = base + usize::from(i < extra);
                let range = start..start + len;
                start += len;
                range
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
