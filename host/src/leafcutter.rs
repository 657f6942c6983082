//! Leafcutter task sizing: cutting a frame's cells into groups, one fragment each.
//!
//! A group is a run of consecutive cells (cells are kept in ledger order, so rows that were
//! written together stay together). There are enough groups to give every bee work, and
//! more when the cells are large: no group holds more than a cap derived from the bee's
//! memory budget, unless a single cell is already larger than the cap.
//!
//! A frame of fewer cells than bees (one large cell, say) is cut into runs of rows instead
//! ([`cut_row_slices`]), so that every bee still gets work: each fragment reads a slice of
//! the cells' rows, and the Parquet reader skips the rest.

use std::ops::Range;

/// Share of a bee's budget one fragment's cells may take, in compressed bytes. Decoding
/// grows Parquet data several times, and the fragment's operators need room too.
pub const BUDGET_SHARE_PER_FRAGMENT: u64 = 4;

/// The largest group of cells, in bytes, for a bee with `budget` bytes of memory.
pub fn max_group_bytes(budget: u64) -> u64 {
    (budget / BUDGET_SHARE_PER_FRAGMENT).max(1)
}

/// The most bytes of cells one fragment may take on a bee with `budget` bytes: a quarter of
/// the budget ([`max_group_bytes`]), or the session's `cap` when that is smaller. A statement
/// with `joins` has no limit unless the session set a cap: every fragment of a join builds
/// the same hash tables of the frames it reads whole, so a join is cut into one fragment per
/// bee, and a join side too large for its pool runs again as a sort-merge join that spills.
pub fn fragment_limit(budget: u64, cap: Option<u64>, joins: bool) -> u64 {
    match cap {
        Some(cap) => max_group_bytes(budget).min(cap.max(1)),
        None if joins => u64::MAX,
        None => max_group_bytes(budget),
    }
}

/// Cut cells of `sizes` bytes into consecutive, non-empty groups: at least `bees` groups
/// when there are that many cells, and enough that no group passes `max_bytes` (a cell
/// larger than that is a group on its own). Sizes are balanced across groups.
pub fn cut_cell_groups(sizes: &[u64], bees: usize, max_bytes: u64) -> Vec<Range<usize>> {
    if sizes.is_empty() {
        return Vec::new();
    }
    let max_bytes = max_bytes.max(1);
    let total: u64 = sizes.iter().sum();
    let by_size = usize::try_from(total.div_ceil(max_bytes)).unwrap_or(usize::MAX);
    let mut target = bees.max(by_size).clamp(1, sizes.len());
    loop {
        let groups = balanced(sizes, target);
        let fits = groups
            .iter()
            .all(|g| g.len() == 1 || sizes[g.clone()].iter().sum::<u64>() <= max_bytes);
        if fits || target == sizes.len() {
            return groups;
        }
        target += 1;
    }
}

/// The fewest rows worth a fragment of their own when cells are cut into slices of rows: a
/// fragment costs a chamber and its share of the merge, several milliseconds, which halving
/// the work on 150,000 rows (TPC-H SF 1's customer) does not win back.
pub const MIN_SLICE_ROWS: u64 = 256 * 1024;

/// Cut cells of `rows` rows into `parts` runs of about as many rows each, taken over the
/// cells in order, but no more runs than leave `min_rows` rows to each. Each run is a list
/// of (cell index, its rows in the run) pieces, at most one per cell. Fewer than two runs
/// give none: the cells are not worth cutting.
pub fn cut_row_slices(rows: &[u64], parts: usize, min_rows: u64) -> Vec<Vec<(usize, Range<u64>)>> {
    let total: u64 = rows.iter().sum();
    let by_rows = usize::try_from(total / min_rows.max(1)).unwrap_or(usize::MAX);
    let parts = parts.min(by_rows);
    if parts < 2 {
        return Vec::new();
    }
    let bound = |part: usize| (u128::from(total) * part as u128 / parts as u128) as u64;
    (0..parts)
        .map(|part| {
            let (low, high) = (bound(part), bound(part + 1));
            let mut offset = 0;
            let mut pieces = Vec::new();
            for (cell, &count) in rows.iter().enumerate() {
                let (start, end) = (low.max(offset), high.min(offset + count));
                if start < end {
                    pieces.push((cell, start - offset..end - offset));
                }
                offset += count;
            }
            pieces
        })
        .collect()
}

/// Where to cut a key's range so that each of `parts` ranges holds about as many rows: the
/// lowest key of every range but the first. `cells` gives each cell's smallest and largest
/// key and its rows; keys are taken as spread evenly between a cell's bounds, so cells
/// that overlap (a frame partitioned by another column) are cut as well as cells that do
/// not (a frame written in key order). Fewer cuts when the keys are fewer than the ranges.
pub fn key_bounds(cells: &[(i64, i64, u64)], parts: usize) -> Vec<i64> {
    let (Some(low), Some(high)) = (
        cells.iter().map(|c| c.0).min(),
        cells.iter().map(|c| c.1).max(),
    ) else {
        return Vec::new();
    };
    let total: u128 = cells.iter().map(|c| u128::from(c.2)).sum();
    // Rows below `key`, in units of 1/width of a row for each cell.
    let below = |key: i64| -> f64 {
        cells
            .iter()
            .map(|&(min, max, rows)| {
                let width = (i128::from(max) - i128::from(min) + 1) as f64;
                let under = (i128::from(key).clamp(i128::from(min), i128::from(max) + 1)
                    - i128::from(min)) as f64;
                rows as f64 * under / width
            })
            .sum()
    };
    let mut bounds: Vec<i64> = Vec::new();
    for part in 1..parts {
        let target = (total * part as u128 / parts as u128) as f64;
        // The smallest key with at least `target` rows below it.
        let (mut lo, mut hi) = (i128::from(low), i128::from(high) + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if below(mid as i64) >= target {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let key = lo as i64;
        if key > low && key <= high && bounds.last().is_none_or(|&last| key > last) {
            bounds.push(key);
        }
    }
    bounds
}

/// Cut `sizes` into `count` consecutive non-empty groups whose boundaries fall as close as
/// possible to equal shares of the total.
fn balanced(sizes: &[u64], count: usize) -> Vec<Range<usize>> {
    let total: u64 = sizes.iter().sum();
    let mut prefix = Vec::with_capacity(sizes.len() + 1);
    prefix.push(0u64);
    for size in sizes {
        prefix.push(prefix.last().copied().unwrap_or(0) + size);
    }
    let mut groups = Vec::with_capacity(count);
    let mut start = 0;
    for g in 1..count {
        let ideal = total as u128 * g as u128 / count as u128;
        // The end must leave at least one cell for each group still to come.
        let last_end = sizes.len() - (count - g);
        let mut end = start + 1;
        while end < last_end
            && (prefix[end + 1] as u128).abs_diff(ideal) <= (prefix[end] as u128).abs_diff(ideal)
        {
            end += 1;
        }
        groups.push(start..end);
        start = end;
    }
    groups.push(start..sizes.len());
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sizes: &[u64], groups: &[Range<usize>]) {
        assert_eq!(groups.first().map(|g| g.start), Some(0));
        assert_eq!(groups.last().map(|g| g.end), Some(sizes.len()));
        for pair in groups.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "{groups:?}");
        }
        assert!(groups.iter().all(|g| !g.is_empty()), "{groups:?}");
    }

    #[test]
    fn joins_have_no_limit_unless_the_session_sets_a_cap() {
        let budget = 400;
        assert_eq!(fragment_limit(budget, None, false), 100);
        assert_eq!(fragment_limit(budget, None, true), u64::MAX);
        assert_eq!(fragment_limit(budget, Some(30), true), 30);
        assert_eq!(fragment_limit(budget, Some(30), false), 30);
        // A cap never loosens the budget's limit, and is at least a byte.
        assert_eq!(fragment_limit(budget, Some(1000), true), 100);
        assert_eq!(fragment_limit(budget, Some(0), false), 1);
    }

    #[test]
    fn key_ranges_hold_equal_rows_whether_cells_overlap_or_not() {
        // Four cells written in key order: cut between the second and the third.
        let ordered = [
            (0, 99, 100),
            (100, 199, 100),
            (200, 299, 100),
            (300, 399, 100),
        ];
        assert_eq!(key_bounds(&ordered, 2), vec![200]);
        assert_eq!(key_bounds(&ordered, 4), vec![100, 200, 300]);
        // Cells that each span the whole range (partitioned by another column): the cuts
        // still halve the keys.
        let overlapping = [(1, 1000, 50), (1, 1000, 50), (1, 1000, 50)];
        assert_eq!(key_bounds(&overlapping, 2), vec![501]);
        // Most rows in a narrow cell: the cut falls inside it.
        let skewed = [(0, 999, 10), (500, 509, 1000)];
        let bounds = key_bounds(&skewed, 2);
        assert_eq!(bounds.len(), 1);
        assert!((500..=509).contains(&bounds[0]), "{bounds:?}");
    }

    #[test]
    fn key_ranges_are_never_empty() {
        assert_eq!(key_bounds(&[(7, 7, 1000)], 4), Vec::<i64>::new());
        assert_eq!(key_bounds(&[(0, 2, 30)], 8), vec![1, 2]);
        assert!(key_bounds(&[], 2).is_empty());
        // The extremes of the type do not overflow.
        let wide = [(i64::MIN, i64::MAX, 10)];
        assert_eq!(key_bounds(&wide, 2).len(), 1);
    }

    #[test]
    fn one_group_per_bee_when_cells_are_small() {
        let sizes = [10; 8];
        let groups = cut_cell_groups(&sizes, 2, 1000);
        check(&sizes, &groups);
        assert_eq!(groups, vec![0..4, 4..8]);
    }

    #[test]
    fn large_cells_are_cut_to_the_cap() {
        let sizes = [40; 10];
        let groups = cut_cell_groups(&sizes, 2, 100);
        check(&sizes, &groups);
        assert!(groups.len() >= 4, "{groups:?}");
        for g in &groups {
            let bytes: u64 = sizes[g.clone()].iter().sum();
            assert!(bytes <= 100, "{g:?} holds {bytes} bytes");
        }
    }

    #[test]
    fn a_cell_above_the_cap_is_alone() {
        let sizes = [10, 500, 10, 10];
        let groups = cut_cell_groups(&sizes, 1, 100);
        check(&sizes, &groups);
        assert!(groups.contains(&(1..2)), "{groups:?}");
    }

    #[test]
    fn never_more_groups_than_cells() {
        assert_eq!(cut_cell_groups(&[5, 5], 8, 1), vec![0..1, 1..2]);
        assert_eq!(cut_cell_groups(&[5], 4, 100), vec![0..1]);
        assert!(cut_cell_groups(&[], 4, 100).is_empty());
    }

    #[test]
    fn near_equal_cells_split_evenly_between_bees() {
        // Six cells of a little over a third of the half each: two groups, not three.
        let sizes = [35, 36, 35, 36, 35, 30];
        assert_eq!(cut_cell_groups(&sizes, 2, 1000), vec![0..3, 3..6]);
    }

    #[test]
    fn rows_of_few_cells_are_cut_into_equal_runs_covering_each_row_once() {
        // One cell of 300 rows, three bees.
        assert_eq!(
            cut_row_slices(&[300], 3, 10),
            vec![vec![(0, 0..100)], vec![(0, 100..200)], vec![(0, 200..300)]]
        );
        // Two cells of unequal rows, two bees: the first run ends inside the larger cell.
        let runs = cut_row_slices(&[50, 150], 2, 10);
        assert_eq!(runs, vec![vec![(0, 0..50), (1, 0..50)], vec![(1, 50..150)]]);
        // Every row of every cell in exactly one run, for awkward counts.
        let rows = [7, 1, 33, 2];
        let runs = cut_row_slices(&rows, 5, 1);
        assert_eq!(runs.len(), 5);
        for (cell, &count) in rows.iter().enumerate() {
            let mut covered: Vec<Range<u64>> = runs
                .iter()
                .flatten()
                .filter(|(c, _)| *c == cell)
                .map(|(_, r)| r.clone())
                .collect();
            covered.sort_by_key(|r| r.start);
            assert_eq!(covered.first().map(|r| r.start), Some(0));
            assert_eq!(covered.last().map(|r| r.end), Some(count));
            assert!(
                covered.windows(2).all(|w| w[0].end == w[1].start),
                "{covered:?}"
            );
        }
        assert!(runs.iter().all(|run| !run.is_empty()));
    }

    #[test]
    fn rows_are_not_cut_below_the_smallest_run() {
        // 250 rows with runs of at least 100: two runs, not four.
        assert_eq!(cut_row_slices(&[250], 4, 100).len(), 2);
        // Fewer rows than two runs: none.
        assert!(cut_row_slices(&[150], 4, 100).is_empty());
        assert!(cut_row_slices(&[], 4, 100).is_empty());
        assert!(cut_row_slices(&[1000], 1, 100).is_empty());
    }

    #[test]
    fn unbalanced_sizes_still_give_every_bee_work() {
        let sizes = [100, 1, 1, 1];
        let groups = cut_cell_groups(&sizes, 4, 1000);
        check(&sizes, &groups);
        assert_eq!(groups.len(), 4, "{groups:?}");
    }
}
