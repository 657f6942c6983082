use arrow::datatypes::DataType;
use serde_json::json;

use super::*;
use crate::lake::FrameField;

fn schema() -> FrameSchema {
    FrameSchema {
        fields: vec![
            FrameField {
                name: "id".into(),
                data_type: DataType::Int64,
                nullable: false,
            },
            FrameField {
                name: "day".into(),
                data_type: DataType::Date32,
                nullable: false,
            },
            FrameField {
                name: "score".into(),
                data_type: DataType::Float64,
                nullable: true,
            },
        ],
    }
}

fn entry(version: u64, action: Action) -> LedgerEntry {
    LedgerEntry {
        version,
        committed_at_ms: 1_714_571_130_000 + version as i64,
        writer: "node-1".into(),
        action,
    }
}

fn create() -> LedgerEntry {
    entry(
        0,
        Action::create_frame(schema(), vec!["day".into()]).expect("valid create"),
    )
}

fn cell(day: &str, name: &str, rows: u64) -> CellMeta {
    CellMeta {
        path: format!("day={day}/{name}.parquet"),
        rows,
        bytes: rows * 10,
        partition: PartitionValues::new(vec![("day".into(), day.into())]),
        stats: BTreeMap::new(),
    }
}

fn add(version: u64, cells: Vec<CellMeta>) -> LedgerEntry {
    entry(version, Action::AddCells { cells })
}

fn created() -> FrameState {
    FrameState::create(create()).expect("create")
}

#[test]
fn entry_json_is_flat_and_stable() {
    let mut c = cell("2024-05-01", "cell_1", 3);
    c.stats.insert(
        "id".into(),
        ColumnStats {
            min: Some(json!(1)),
            max: Some(json!(3)),
            null_count: 0,
        },
    );
    let e = add(3, vec![c]);
    let text = String::from_utf8(e.to_json().expect("json")).expect("utf8");
    assert_eq!(
        text,
        r#"{"version":3,"committed_at_ms":1714571130003,"writer":"node-1","action":"add_cells","cells":[{"path":"day=2024-05-01/cell_1.parquet","rows":3,"bytes":30,"partition":{"day":"2024-05-01"},"stats":{"id":{"min":1,"max":3,"null_count":0}}}]}"#
    );
    assert_eq!(LedgerEntry::from_json(text.as_bytes()).expect("back"), e);
}

#[test]
fn every_action_round_trips() {
    let entries = [
        create(),
        add(1, vec![cell("2024-05-01", "a", 1)]),
        entry(
            2,
            Action::RewriteCells {
                remove: vec!["day=2024-05-01/a.parquet".into()],
                add: vec![cell("2024-05-02", "b", 2)],
            },
        ),
    ];
    for e in entries {
        let bytes = e.to_json().expect("json");
        assert_eq!(LedgerEntry::from_json(&bytes).expect("back"), e);
    }
    let text = String::from_utf8(create().to_json().expect("json")).expect("utf8");
    assert!(
        text.contains(r#""action":"create_frame","schema":{"fields":[{"name":"id","type":"Int64","nullable":false}"#),
        "{text}"
    );
    assert!(text.ends_with(r#""partition_by":["day"]}"#), "{text}");
}

#[test]
fn unreadable_entries_are_corrupt() {
    for bad in [
        &b"not json"[..],
        br#"{"version":1}"#,
        br#"{"version":1,"committed_at_ms":0,"writer":"w","action":"drop_everything"}"#,
    ] {
        match LedgerEntry::from_json(bad) {
            Err(LakeError::Corrupt { what, .. }) => assert_eq!(what, "a ledger entry"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn state_follows_adds_and_rewrites() {
    let mut state = created();
    assert_eq!((state.version, state.rows(), state.bytes()), (0, 0, 0));
    state
        .apply(add(
            1,
            vec![cell("2024-05-01", "a", 10), cell("2024-05-02", "b", 5)],
        ))
        .expect("add");
    state
        .apply(add(2, vec![cell("2024-05-01", "c", 1)]))
        .expect("add");
    assert_eq!((state.version, state.rows(), state.bytes()), (2, 16, 160));
    state
        .apply(entry(
            3,
            Action::RewriteCells {
                remove: vec![
                    "day=2024-05-01/a.parquet".into(),
                    "day=2024-05-01/c.parquet".into(),
                ],
                add: vec![cell("2024-05-01", "ac", 11)],
            },
        ))
        .expect("rewrite");
    let paths: Vec<&str> = state.cells().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["day=2024-05-01/ac.parquet", "day=2024-05-02/b.parquet"]
    );
    assert_eq!((state.version, state.rows()), (3, 16));
}

#[test]
fn versions_must_follow_exactly() {
    let mut state = created();
    state.apply(add(1, vec![cell("d1", "a", 1)])).expect("add");
    let before = state.clone();
    let err = state
        .apply(add(3, vec![cell("d1", "b", 1)]))
        .expect_err("gap");
    assert_eq!(
        err,
        LakeError::LedgerGap {
            expected: 2,
            found: 3
        }
    );
    assert!(
        err.to_string()
            .starts_with("ledger entry 3 came where version 2 was due, so entries are missing"),
        "{err}"
    );
    let err = state
        .apply(add(1, vec![cell("d1", "b", 1)]))
        .expect_err("dup");
    assert_eq!(
        err,
        LakeError::LedgerDuplicate {
            expected: 2,
            found: 1
        }
    );
    assert_eq!(state, before, "failed applies leave the state unchanged");
}

#[test]
fn creation_must_come_first_and_once() {
    assert_eq!(
        FrameState::create(add(0, vec![])).expect_err("not create"),
        LakeError::LedgerConflict {
            version: 0,
            reason:
                "the first entry must be create_frame, not add_cells; the frame does not exist yet"
                    .into()
        }
    );
    let mut late = create();
    late.version = 4;
    assert_eq!(
        FrameState::create(late).expect_err("late"),
        LakeError::LedgerGap {
            expected: 0,
            found: 4
        }
    );
    let mut state = created();
    let again = entry(1, Action::create_frame(schema(), vec![]).expect("valid"));
    let err = state.apply(again).expect_err("second create");
    assert_eq!(
        err.to_string(),
        "the change does not fit the frame at version 0: the frame already exists; re-read the \
         frame and plan the change again"
    );
}

#[test]
fn create_frame_checks_partitioning() {
    assert_eq!(
        Action::create_frame(schema(), vec!["nope".into()]),
        Err(LakeError::UnknownPartitionColumn {
            column: "nope".into()
        })
    );
    assert_eq!(
        Action::create_frame(schema(), vec!["score".into()]),
        Err(LakeError::UnsupportedPartitionType {
            column: "score".into(),
            data_type: DataType::Float64
        })
    );
    assert_eq!(
        Action::create_frame(schema(), vec!["day".into(), "day".into()]),
        Err(LakeError::DuplicateColumn {
            column: "day".into()
        })
    );
}

#[test]
fn adds_and_removes_are_checked_against_the_state() {
    let mut state = created();
    state.apply(add(1, vec![cell("d1", "a", 1)])).expect("add");
    assert_eq!(
        validate(
            &state,
            &Action::AddCells {
                cells: vec![cell("d1", "a", 1)]
            }
        ),
        Err(LakeError::LedgerConflict {
            version: 1,
            reason: "cell `day=d1/a.parquet` is already in the frame".into()
        })
    );
    assert_eq!(
        validate(
            &state,
            &Action::AddCells {
                cells: vec![cell("d1", "b", 1), cell("d1", "b", 2)]
            }
        ),
        Err(LakeError::InvalidCell {
            path: "day=d1/b.parquet".into(),
            reason: "it is added twice in one commit".into()
        })
    );
    let gone = Action::RewriteCells {
        remove: vec!["day=d1/zzz.parquet".into()],
        add: vec![],
    };
    assert!(matches!(
        validate(&state, &gone),
        Err(LakeError::LedgerConflict { version: 1, ref reason }) if reason.contains("`day=d1/zzz.parquet` is to be removed but is not in the frame")
    ));
    let twice = Action::RewriteCells {
        remove: vec!["day=d1/a.parquet".into(), "day=d1/a.parquet".into()],
        add: vec![],
    };
    assert!(matches!(
        validate(&state, &twice),
        Err(LakeError::InvalidCell { .. })
    ));
    // Cells are immutable: a rewrite cannot re-add the path it removes.
    let readd = Action::RewriteCells {
        remove: vec!["day=d1/a.parquet".into()],
        add: vec![cell("d1", "a", 1)],
    };
    assert!(matches!(
        validate(&state, &readd),
        Err(LakeError::LedgerConflict { .. })
    ));
    // Emptying a frame is a rewrite with nothing added.
    let truncate = Action::RewriteCells {
        remove: vec!["day=d1/a.parquet".into()],
        add: vec![],
    };
    state.apply(entry(2, truncate)).expect("truncate");
    assert_eq!(state.cells().count(), 0);
}

#[test]
fn malformed_cells_are_rejected() {
    let state = created();
    let reason_of = |c: CellMeta| match validate(&state, &Action::AddCells { cells: vec![c] }) {
        Err(LakeError::InvalidCell { reason, .. }) => reason,
        other => panic!("expected InvalidCell, got {other:?}"),
    };
    let mut wrong_cols = cell("d1", "a", 1);
    wrong_cols.partition = PartitionValues::new(vec![("id".into(), "1".into())]);
    wrong_cols.path = "id=1/a.parquet".into();
    assert_eq!(
        reason_of(wrong_cols),
        "its partition columns [id] are not the frame's [day]"
    );
    let mut unpartitioned = cell("d1", "a", 1);
    unpartitioned.partition = PartitionValues::default();
    unpartitioned.path = "a.parquet".into();
    assert_eq!(
        reason_of(unpartitioned),
        "its partition columns [] are not the frame's [day]"
    );
    let mut bad_value = cell("d1", "a", 1);
    bad_value.partition = PartitionValues::new(vec![("day".into(), "..".into())]);
    assert_eq!(
        reason_of(bad_value),
        "the value `..` of partition column `day` may not contain `..`"
    );
    let mut elsewhere = cell("d1", "a", 1);
    elsewhere.path = "day=d2/a.parquet".into();
    assert_eq!(
        reason_of(elsewhere),
        "its path is not directly in its partition's directory `day=d1/`"
    );
    let mut nested = cell("d1", "a", 1);
    nested.path = "day=d1/x/a.parquet".into();
    assert!(reason_of(nested).starts_with("its path is not directly"));
    for bad_path in [
        "",
        "day=d1//a.parquet",
        "day=d1/../a.parquet",
        "/day=d1/a.parquet",
        "day=d1/a\\b",
    ] {
        let mut c = cell("d1", "a", 1);
        c.path = bad_path.into();
        let reason = reason_of(c);
        assert!(reason.starts_with("its path "), "{bad_path:?}: {reason}");
    }
    let mut stats = cell("d1", "a", 1);
    stats.stats.insert("ghost".into(), ColumnStats::default());
    assert_eq!(
        reason_of(stats),
        "it has statistics for `ghost`, which is not a column of the frame"
    );
    // Unpartitioned frames keep cells at the frame's root, never under `_` names.
    let flat = FrameState::create(entry(
        0,
        Action::create_frame(schema(), vec![]).expect("ok"),
    ))
    .expect("create");
    let mut root = cell("d1", "a", 1);
    root.partition = PartitionValues::default();
    root.path = "cell_a.parquet".into();
    validate(
        &flat,
        &Action::AddCells {
            cells: vec![root.clone()],
        },
    )
    .expect("root cell");
    root.path = "_ledger/cell_a.parquet".into();
    assert!(matches!(
        validate(&flat, &Action::AddCells { cells: vec![root] }),
        Err(LakeError::InvalidCell { ref reason, .. }) if reason.contains("begins with `_`")
    ));
}

#[test]
fn overwrite_rebuilt_after_a_conflict_removes_concurrent_appends() {
    let mut state = created();
    state
        .apply(add(1, vec![cell("d1", "old", 5)]))
        .expect("add");
    // A writer plans an overwrite against version 1 ...
    let planned = Action::overwrite(&state, vec![cell("d1", "new", 7)]);
    assert_eq!(
        planned,
        Action::RewriteCells {
            remove: vec!["day=d1/old.parquet".into()],
            add: vec![cell("d1", "new", 7)]
        }
    );
    // ... but another writer appends version 2 first.
    state
        .apply(add(2, vec![cell("d2", "concurrent", 3)]))
        .expect("append");
    // The stale action still validates, and would leave the concurrent cell behind ...
    validate(&state, &planned).expect("stale action still fits");
    // ... so the committer rebuilds it from the newest state, which removes it too.
    let rebuilt = Action::overwrite(&state, vec![cell("d1", "new", 7)]);
    state.apply(entry(3, rebuilt)).expect("overwrite");
    let paths: Vec<&str> = state.cells().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, vec!["day=d1/new.parquet"]);
    assert_eq!(state.rows(), 7);
}

#[test]
fn checkpoints_every_hundred_versions() {
    assert!(!should_checkpoint(0));
    assert!(!should_checkpoint(99));
    assert!(should_checkpoint(100));
    assert!(!should_checkpoint(101));
    assert!(should_checkpoint(300));
}

fn history(last: u64) -> Vec<LedgerEntry> {
    let mut entries = vec![create()];
    for v in 1..=last {
        entries.push(add(v, vec![cell("d1", &format!("c{v}"), v)]));
    }
    entries
}

#[test]
fn replay_from_scratch_and_from_a_checkpoint_agree() {
    let entries = history(250);
    let full = replay(None, entries.clone()).expect("replay");
    assert_eq!(full.version, 250);
    assert_eq!(full.rows(), (1..=250).sum::<u64>());
    let at_200 = replay(None, entries[..=200].to_vec()).expect("replay to 200");
    let checkpoint = Checkpoint::new(at_200);
    assert_eq!(checkpoint.version, 200);
    // The checkpoint survives JSON.
    let checkpoint = Checkpoint::from_json(&checkpoint.to_json().expect("json")).expect("back");
    // Entries at or below the checkpoint are skipped, so passing all of them is fine ...
    assert_eq!(
        replay(Some(checkpoint.clone()), entries.clone()).expect("all"),
        full
    );
    // ... and so is passing only the newer ones.
    assert_eq!(
        replay(Some(checkpoint.clone()), entries[201..].to_vec()).expect("newer"),
        full
    );
    // A checkpoint alone is its state.
    assert_eq!(
        replay(Some(checkpoint.clone()), Vec::new())
            .expect("alone")
            .version,
        200
    );
}

#[test]
fn replay_errors() {
    let entries = history(5);
    assert_eq!(replay(None, Vec::new()), Err(LakeError::EmptyLedger));
    assert_eq!(
        replay(None, entries[1..].to_vec()),
        Err(LakeError::LedgerGap {
            expected: 0,
            found: 1
        })
    );
    let mut gappy = entries.clone();
    gappy.remove(3);
    assert_eq!(
        replay(None, gappy),
        Err(LakeError::LedgerGap {
            expected: 3,
            found: 4
        })
    );
    let mut doubled = entries.clone();
    doubled.insert(3, entries[2].clone());
    assert_eq!(
        replay(None, doubled),
        Err(LakeError::LedgerDuplicate {
            expected: 3,
            found: 2
        })
    );
    let checkpoint = Checkpoint::new(replay(None, entries[..=2].to_vec()).expect("replay"));
    assert_eq!(
        replay(Some(checkpoint.clone()), entries[4..].to_vec()),
        Err(LakeError::LedgerGap {
            expected: 3,
            found: 4
        })
    );
    let mut lying = checkpoint;
    lying.version = 7;
    assert!(matches!(
        replay(Some(lying), Vec::new()),
        Err(LakeError::Corrupt { ref what, .. }) if what == "the checkpoint at version 7"
    ));
    // A committed entry that does not apply means the ledger is corrupt.
    let mut bad = entries[..=2].to_vec();
    bad.push(add(3, vec![cell("d1", "c1", 1)]));
    assert_eq!(
        replay(None, bad),
        Err(LakeError::Corrupt {
            what: "ledger entry 3".into(),
            message: "cell `day=d1/c1.parquet` is already in the frame".into()
        })
    );
    let not_created = vec![entry(0, Action::AddCells { cells: vec![] })];
    assert!(matches!(
        replay(None, not_created),
        Err(LakeError::Corrupt { ref what, .. }) if what == "ledger entry 0"
    ));
}

#[test]
fn state_json_lists_cells_once() {
    let mut state = created();
    state.apply(add(1, vec![cell("d1", "a", 1)])).expect("add");
    let value = serde_json::to_value(&state).expect("json");
    assert_eq!(value["cells"].as_array().map(Vec::len), Some(1));
    assert_eq!(value["cells"][0]["path"], json!("day=d1/a.parquet"));
    let back: FrameState = serde_json::from_value(value.clone()).expect("back");
    assert_eq!(back, state);
    let mut doubled = value;
    let first = doubled["cells"][0].clone();
    doubled["cells"].as_array_mut().expect("array").push(first);
    let err = serde_json::from_value::<FrameState>(doubled).expect_err("dup");
    assert!(
        err.to_string()
            .contains("cell `day=d1/a.parquet` is listed twice"),
        "{err}"
    );
}

#[test]
fn keys_sort_by_version_and_parse_back() {
    assert_eq!(ledger_key(42), "_ledger/00000000000000000042.json");
    assert_eq!(
        checkpoint_key(100),
        "_ledger/_checkpoint/00000000000000000100.json"
    );
    assert_eq!(ledger_key(u64::MAX), "_ledger/18446744073709551615.json");
    let mut keys: Vec<String> = [0, 9, 10, 99, 100, 1_000, 12_345_678, u64::MAX]
        .iter()
        .map(|v| ledger_key(*v))
        .collect();
    let in_order = keys.clone();
    keys.sort();
    assert_eq!(keys, in_order);
    for v in [0, 1, 42, 100, u64::MAX] {
        assert_eq!(parse_ledger_key(&ledger_key(v)), Some(v));
        assert_eq!(parse_checkpoint_key(&checkpoint_key(v)), Some(v));
        let full = format!("default/default/orders/{}", ledger_key(v));
        assert_eq!(parse_ledger_key(&full), Some(v));
        assert_eq!(parse_checkpoint_key(&ledger_key(v)), None);
        assert_eq!(parse_ledger_key(&checkpoint_key(v)), None);
    }
    for bad in [
        "_ledger/42.json",
        "_ledger/0000000000000000004x.json",
        "_ledger/00000000000000000042.txt",
        "_ledger/99999999999999999999.json",
        "x_ledger/00000000000000000042.json",
        "00000000000000000042.json",
        "_ledger/sub/00000000000000000042.json",
    ] {
        assert_eq!(parse_ledger_key(bad), None, "{bad}");
    }
}
