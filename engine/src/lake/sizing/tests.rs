use super::*;

const GIB: u64 = 1024 * MIB;

#[test]
fn sizing_from_budget() {
    assert_eq!(
        CellSizing::for_budget(256 * MIB),
        CellSizing {
            target_bytes: 64 * MIB,
            min_bytes: 16 * MIB,
            max_bytes: 128 * MIB
        }
    );
    assert_eq!(
        CellSizing::for_budget(2 * GIB),
        CellSizing {
            target_bytes: 512 * MIB,
            min_bytes: 16 * MIB,
            max_bytes: GIB
        }
    );
    // A tiny budget: the minimum gives way to the target.
    assert_eq!(
        CellSizing::for_budget(32 * MIB),
        CellSizing {
            target_bytes: 8 * MIB,
            min_bytes: 8 * MIB,
            max_bytes: 16 * MIB
        }
    );
    assert_eq!(CellSizing::for_budget(0).target_bytes, 1);
}

#[test]
fn small_writes_are_one_cell() {
    let sizing = CellSizing::for_budget(256 * MIB);
    assert_eq!(sizing.cut(1_000_000, 100 * MIB), vec![0..1_000_000]);
    assert_eq!(
        sizing.cut(10, 1_000),
        vec![0..10],
        "smaller than min: still one cell"
    );
    assert_eq!(sizing.cut(7, 128 * MIB), vec![0..7], "exactly max");
    assert_eq!(sizing.cut(0, 0), Vec::<Range<usize>>::new());
    assert_eq!(sizing.rows_per_cell(1_000_000, 100 * MIB), 1_000_000);
    assert_eq!(sizing.rows_per_cell(0, 0), 0);
}

#[test]
fn large_writes_are_spread_evenly() {
    let sizing = CellSizing::for_budget(256 * MIB);
    // 300 MiB / 64 MiB = 4 cells of 75 MiB each.
    assert_eq!(
        sizing.cut(1_000, 300 * MIB),
        vec![0..250, 250..500, 500..750, 750..1_000]
    );
    // Uneven rows: cells differ by one row at most, earlier cells take the extra.
    assert_eq!(sizing.cut(10, 200 * MIB), vec![0..4, 4..7, 7..10]);
    // Just over max: two cells of ~64.5 MiB, both within [16, 128] MiB.
    assert_eq!(sizing.cut(1_000, 129 * MIB), vec![0..500, 500..1_000]);
}

#[test]
fn every_cell_lies_within_bounds() {
    let sizing = CellSizing::for_budget(256 * MIB);
    for total_mib in [129_u64, 150, 191, 192, 255, 256, 1_000, 4_097, 10_000] {
        let total = total_mib * MIB;
        let rows = 1_000_003;
        let cells = sizing.cut(rows, total);
        assert_eq!(cells.first().map(|r| r.start), Some(0));
        assert_eq!(cells.last().map(|r| r.end), Some(rows));
        for pair in cells.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "contiguous");
        }
        for cell in &cells {
            let bytes = total as u128 * cell.len() as u128 / rows as u128;
            assert!(
                (u128::from(sizing.min_bytes)..=u128::from(sizing.max_bytes)).contains(&bytes),
                "{total_mib} MiB: cell of {bytes} bytes"
            );
        }
    }
}

#[test]
fn huge_rows_get_a_cell_each() {
    let sizing = CellSizing::for_budget(256 * MIB);
    assert_eq!(sizing.cut(3, 3 * GIB), vec![0..1, 1..2, 2..3]);
    assert_eq!(sizing.rows_per_cell(3, 3 * GIB), 1);
}

#[test]
fn rows_per_cell_aims_at_the_target() {
    let sizing = CellSizing::for_budget(256 * MIB);
    // 1 KiB rows: 64 MiB / 1 KiB = 65 536 rows per cell.
    assert_eq!(sizing.rows_per_cell(1_000_000, 1_000_000 * 1024), 65_536);
    assert_eq!(sizing.rows_per_cell(10, 200 * MIB), 3);
}
