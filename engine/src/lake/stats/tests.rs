use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int8Array, Int64Array, LargeStringArray, StringArray, StringViewArray,
    TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::Field;
use serde_json::json;

use super::*;

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter_with_nullable(columns.into_iter().map(|(n, a)| (n, a, true)))
        .expect("batch")
}

fn stats(min: Value, max: Value, null_count: u64) -> ColumnStats {
    ColumnStats {
        min: Some(min),
        max: Some(max),
        null_count,
    }
}

#[test]
fn computes_bounds_per_type() {
    let decimals = Decimal128Array::from(vec![Some(-1_250), Some(999), None])
        .with_precision_and_scale(10, 2)
        .expect("decimal");
    let data = batch(vec![
        (
            "i8",
            Arc::new(Int8Array::from(vec![Some(3), None, Some(-7)])),
        ),
        (
            "i64",
            Arc::new(Int64Array::from(vec![i64::MIN, 0, i64::MAX])),
        ),
        ("u64", Arc::new(UInt64Array::from(vec![u64::MAX, 1, 5]))),
        ("f32", Arc::new(Float32Array::from(vec![0.5, -1.25, 2.0]))),
        (
            "s",
            Arc::new(StringArray::from(vec![Some("pear"), Some("apple"), None])),
        ),
        ("ls", Arc::new(LargeStringArray::from(vec!["b", "a", "c"]))),
        (
            "sv",
            Arc::new(StringViewArray::from(vec![
                "zz",
                "a string long enough",
                "m",
            ])),
        ),
        (
            "b",
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(true)])),
        ),
        ("d", Arc::new(Date32Array::from(vec![19_844, -1, 0]))),
        (
            "t",
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(5),
                Some(-3),
                None,
            ])),
        ),
        ("m", Arc::new(decimals)),
        (
            "bin",
            Arc::new(BinaryArray::from(vec![Some(b"x".as_ref()), None, None])),
        ),
    ]);
    let got = column_stats(&data);
    let expected: BTreeMap<String, ColumnStats> = [
        ("i8", stats(json!(-7), json!(3), 1)),
        ("i64", stats(json!(i64::MIN), json!(i64::MAX), 0)),
        ("u64", stats(json!(1), json!(u64::MAX), 0)),
        ("f32", stats(json!(-1.25), json!(2.0), 0)),
        ("s", stats(json!("apple"), json!("pear"), 1)),
        ("ls", stats(json!("a"), json!("c"), 0)),
        ("sv", stats(json!("a string long enough"), json!("zz"), 0)),
        ("b", stats(json!(true), json!(true), 1)),
        ("d", stats(json!("1969-12-31"), json!("2024-05-01"), 0)),
        ("t", stats(json!(-3), json!(5), 1)),
        ("m", stats(json!("-12.50"), json!("9.99"), 1)),
        (
            "bin",
            ColumnStats {
                min: None,
                max: None,
                null_count: 2,
            },
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(got, expected);
}

#[test]
fn floats_ignore_nan_and_spell_infinities() {
    let data = batch(vec![
        (
            "f",
            Arc::new(Float64Array::from(vec![
                Some(f64::NAN),
                Some(1.5),
                None,
                Some(-0.5),
            ])),
        ),
        (
            "inf",
            Arc::new(Float64Array::from(vec![
                f64::NEG_INFINITY,
                0.0,
                f64::INFINITY,
                1.0,
            ])),
        ),
        ("nan", Arc::new(Float64Array::from(vec![f64::NAN; 4]))),
    ]);
    let got = column_stats(&data);
    assert_eq!(got["f"], stats(json!(-0.5), json!(1.5), 1));
    assert_eq!(got["inf"], stats(json!("-Infinity"), json!("Infinity"), 0));
    assert_eq!(got["nan"], ColumnStats::default());
    let head = column_stats(&data.slice(0, 2));
    assert_eq!(head["f"], stats(json!(1.5), json!(1.5), 0));
    assert_eq!(head["inf"], stats(json!("-Infinity"), json!(0.0), 0));
}

#[test]
fn all_null_column_has_no_bounds() {
    let data = batch(vec![(
        "i",
        Arc::new(Int64Array::from(vec![None, None, None])),
    )]);
    assert_eq!(
        column_stats(&data)["i"],
        ColumnStats {
            min: None,
            max: None,
            null_count: 3
        }
    );
}

#[test]
fn long_strings_are_cut_to_true_bounds() {
    let long_a = format!("{}{}", "a".repeat(MAX_STRING_STAT_BYTES), "zzz");
    let long_b = format!("{}{}", "b".repeat(MAX_STRING_STAT_BYTES - 1), "é tail");
    let array = StringArray::from(vec![long_a.as_str(), long_b.as_str()]);
    let got = array_stats(&array);
    let min = got.min.as_ref().and_then(Value::as_str).expect("min");
    let max = got.max.as_ref().and_then(Value::as_str).expect("max");
    assert_eq!(min, "a".repeat(MAX_STRING_STAT_BYTES));
    assert!(min <= long_a.as_str());
    // `é` straddles the 64-byte limit, so the prefix stops before it and its last `b`
    // becomes `c`.
    assert_eq!(max, format!("{}c", "b".repeat(MAX_STRING_STAT_BYTES - 2)));
    assert!(max > long_b.as_str());
    // All-`char::MAX` strings cannot be shortened: the whole value is kept.
    let maxed = "\u{10FFFF}".repeat(20);
    assert_eq!(truncate_max(&maxed), maxed);
    assert_eq!(truncate_max("short"), "short");
}

#[test]
fn merge_takes_extremes_and_sums_nulls() {
    let a = batch(vec![
        ("i", Arc::new(Int64Array::from(vec![Some(5), None]))),
        ("s", Arc::new(StringArray::from(vec![Some("m"), None]))),
        (
            "m",
            Arc::new(
                Decimal128Array::from(vec![900, 50])
                    .with_precision_and_scale(5, 2)
                    .expect("d"),
            ),
        ),
        ("d", Arc::new(Date32Array::from(vec![Some(10), None]))),
    ]);
    let b = batch(vec![
        ("i", Arc::new(Int64Array::from(vec![Some(-2), Some(3)]))),
        ("s", Arc::new(StringArray::from(vec![None::<&str>, None]))),
        (
            "m",
            Arc::new(
                Decimal128Array::from(vec![1_000, -5])
                    .with_precision_and_scale(5, 2)
                    .expect("d"),
            ),
        ),
        (
            "d",
            Arc::new(Date32Array::from(vec![Some(-800_000), Some(20)])),
        ),
    ]);
    let merged = merge_stats(&column_stats(&a), &column_stats(&b), a.schema_ref()).expect("merge");
    assert_eq!(merged["i"], stats(json!(-2), json!(5), 1));
    // The all-null side contributes only its nulls.
    assert_eq!(merged["s"], stats(json!("m"), json!("m"), 3));
    // Decimals compare as numbers, not as text ("10.00" > "9.00").
    assert_eq!(merged["m"], stats(json!("-0.05"), json!("10.00"), 0));
    // Dates before year 0 still order correctly.
    assert_eq!(
        merged["d"],
        stats(json!("-0221-09-04"), json!("1970-01-21"), 1)
    );
    // Merging with the combined batch's own stats agrees.
    let both =
        arrow::compute::concat_batches(a.schema_ref(), &[a.clone(), b.clone()]).expect("concat");
    assert_eq!(merged, column_stats(&both));
}

#[test]
fn compare_orders_each_encoding() {
    use DataType::*;
    let less = [
        (json!(-1), json!(2), Int32),
        (json!(2), json!(u64::MAX), UInt64),
        (json!("-Infinity"), json!(-1e300), Float64),
        (json!(1.5), json!("Infinity"), Float32),
        (json!("B"), json!("a"), Utf8),
        (json!(false), json!(true), Boolean),
        (json!("9999-12-31"), json!("+10000-01-01"), Date32),
        (json!("9.99"), json!("10.00"), Decimal128(5, 2)),
        (
            json!(-5),
            json!(7),
            Timestamp(arrow::datatypes::TimeUnit::Second, None),
        ),
    ];
    for (a, b, t) in less {
        assert_eq!(
            compare_stat_values(&a, &b, &t).expect("compare"),
            Ordering::Less,
            "{a} < {b} ({t})"
        );
        assert_eq!(
            compare_stat_values(&b, &a, &t).expect("compare"),
            Ordering::Greater
        );
    }
    let err = compare_stat_values(&json!("x"), &json!(1), &Int64).expect_err("mismatch");
    assert_eq!(
        err.to_string(),
        "column statistics is corrupt: `\"x\"` is not a bound of a Int64 column; it was changed \
         outside Apiary or written by a newer version"
    );
    assert!(matches!(
        compare_stat_values(&json!(1), &json!(2), &Binary),
        Err(LakeError::Corrupt { .. })
    ));
}

#[test]
fn merge_requires_both_sides() {
    let schema = Schema::new(vec![Field::new("i", DataType::Int64, true)]);
    let err = merge_stats(&BTreeMap::new(), &BTreeMap::new(), &schema).expect_err("missing");
    assert!(matches!(err, LakeError::Internal(_)));
}

#[test]
fn stats_json_is_stable() {
    let s = stats(json!(1), json!("x"), 2);
    assert_eq!(
        serde_json::to_string(&s).expect("json"),
        r#"{"min":1,"max":"x","null_count":2}"#
    );
    let back: ColumnStats = serde_json::from_str(r#"{"null_count":4}"#).expect("defaults");
    assert_eq!(
        back,
        ColumnStats {
            min: None,
            max: None,
            null_count: 4
        }
    );
}
