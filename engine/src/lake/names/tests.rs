use super::*;

fn rule_of(kind: NameKind, name: &str) -> String {
    match validate_name(kind, name) {
        Err(LakeError::InvalidName {
            kind: k,
            name: n,
            rule,
        }) => {
            assert_eq!(k, kind);
            assert_eq!(n, name);
            rule
        }
        other => panic!("expected InvalidName for {name:?}, got {other:?}"),
    }
}

#[test]
fn accepts_ordinary_names() {
    for name in [
        "orders",
        "Orders2024",
        "a",
        "snake_case",
        "with-dash",
        "ünïcödé",
        "x y",
    ] {
        for kind in [
            NameKind::Hive,
            NameKind::Box,
            NameKind::Frame,
            NameKind::Column,
        ] {
            validate_name(kind, name).expect("ordinary name");
        }
    }
    validate_name(NameKind::Frame, &"a".repeat(MAX_NAME_BYTES)).expect("128 bytes is allowed");
}

#[test]
fn rejects_each_rule_with_its_message() {
    let cases: &[(&str, &str)] = &[
        ("", "may not be empty"),
        ("a/b", "may not contain `/`"),
        ("a\\b", "may not contain `\\`"),
        ("a..b", "may not contain `..`"),
        ("..", "may not contain `..`"),
        ("k=v", "may not contain `=`"),
        ("tab\there", "may not contain control characters"),
        ("nul\0", "may not contain control characters"),
        ("new\nline", "may not contain control characters"),
        (".hidden", "may not begin with `.`"),
        (
            "_ledger",
            "may not begin with `_` (reserved for Apiary's own directories)",
        ),
        (
            "v1.2",
            "may not contain `.` (dots separate hive, box and frame)",
        ),
    ];
    for (name, rule) in cases {
        assert_eq!(rule_of(NameKind::Frame, name), *rule, "name {name:?}");
    }
    assert_eq!(
        rule_of(NameKind::Hive, &"é".repeat(65)),
        "is 130 bytes long, over the limit of 128"
    );
}

#[test]
fn error_message_names_kind_name_and_rule() {
    let err = validate_name(NameKind::Frame, "a/b").expect_err("slash");
    assert_eq!(
        err.to_string(),
        "frame name `a/b` may not contain `/`; choose another name"
    );
    let err = validate_name(NameKind::Box, "_registry").expect_err("reserved");
    assert!(
        err.to_string()
            .starts_with("box name `_registry` may not begin with `_`"),
        "{err}"
    );
}

#[test]
fn columns_may_begin_with_underscore_and_contain_dots() {
    validate_name(NameKind::Column, "_id").expect("leading underscore column");
    validate_name(NameKind::Column, "price.eur").expect("dotted column");
    assert_eq!(rule_of(NameKind::Column, "a=b"), "may not contain `=`");
    assert_eq!(rule_of(NameKind::Column, ".x"), "may not begin with `.`");
    assert_eq!(rule_of(NameKind::Column, "a/b"), "may not contain `/`");
}

#[test]
fn parses_one_two_and_three_part_references() {
    let one = FrameRef::parse("orders", DEFAULT_HIVE, DEFAULT_BOX).expect("one part");
    assert_eq!(
        one,
        FrameRef {
            hive: "default".into(),
            box_name: "default".into(),
            frame: "orders".into()
        }
    );
    let two = FrameRef::parse("sales.orders", "h", "b").expect("two parts");
    assert_eq!((two.hive.as_str(), two.box_name.as_str()), ("h", "sales"));
    let three = FrameRef::parse("shop.sales.orders", "h", "b").expect("three parts");
    assert_eq!(three.to_string(), "shop.sales.orders");
    assert_eq!(three.dir(), "shop/sales/orders");
}

#[test]
fn display_round_trips_through_parse() {
    let r = FrameRef::new("shop", "sales", "orders").expect("valid");
    assert_eq!(FrameRef::parse(&r.to_string(), "x", "y").expect("parse"), r);
}

#[test]
fn rejects_bad_references() {
    let err = FrameRef::parse("a.b.c.d", "h", "b").expect_err("four parts");
    assert_eq!(
        err,
        LakeError::InvalidFrameRef {
            input: "a.b.c.d".into(),
            parts: 4
        }
    );
    assert_eq!(
        err.to_string(),
        "`a.b.c.d` has 4 dot-separated parts; write `frame`, `box.frame` or `hive.box.frame`"
    );
    // An empty part names the kind that is empty.
    match FrameRef::parse("sales.", "h", "b") {
        Err(LakeError::InvalidName { kind, rule, .. }) => {
            assert_eq!(kind, NameKind::Frame);
            assert_eq!(rule, "may not be empty");
        }
        other => panic!("expected an empty frame name, got {other:?}"),
    }
    match FrameRef::parse("_ledger.x", "h", "b") {
        Err(LakeError::InvalidName { kind, name, .. }) => {
            assert_eq!((kind, name.as_str()), (NameKind::Box, "_ledger"));
        }
        other => panic!("expected a reserved box name, got {other:?}"),
    }
    // A bad default is caught too.
    match FrameRef::parse("t", "bad/hive", "b") {
        Err(LakeError::InvalidName { kind, .. }) => assert_eq!(kind, NameKind::Hive),
        other => panic!("expected a bad hive, got {other:?}"),
    }
}
