use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int8Array, Int64Array, LargeStringArray,
    StringArray, StringViewArray, TimestampMicrosecondArray, TimestampNanosecondArray, UInt64Array,
};
use arrow::datatypes::Int64Type;

use super::*;

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter_with_nullable(columns.into_iter().map(|(n, a)| (n, a, true)))
        .expect("batch")
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn values(pairs: &[(&str, &str)]) -> PartitionValues {
    pairs
        .iter()
        .map(|(c, v)| (c.to_string(), v.to_string()))
        .collect()
}

#[test]
fn spells_every_supported_type() {
    let cases: Vec<(ArrayRef, &str)> = vec![
        (Arc::new(StringArray::from(vec!["eu-west"])), "eu-west"),
        (Arc::new(LargeStringArray::from(vec!["ü ß"])), "ü ß"),
        (Arc::new(StringViewArray::from(vec!["view"])), "view"),
        (Arc::new(Int8Array::from(vec![-8])), "-8"),
        (
            Arc::new(Int64Array::from(vec![i64::MIN])),
            "-9223372036854775808",
        ),
        (
            Arc::new(UInt64Array::from(vec![u64::MAX])),
            "18446744073709551615",
        ),
        (Arc::new(BooleanArray::from(vec![true])), "true"),
        (Arc::new(Date32Array::from(vec![19_844])), "2024-05-01"),
        (
            Arc::new(TimestampMicrosecondArray::from(vec![1_714_571_130_123_456])),
            "2024-05-01T13-45-30.123456",
        ),
        (
            Arc::new(
                TimestampNanosecondArray::from(vec![1_714_571_130_000_000_001])
                    .with_timezone("+02:00"),
            ),
            "2024-05-01T13-45-30.000000001Z",
        ),
    ];
    for (array, expected) in cases {
        assert_eq!(
            partition_value("c", array.as_ref(), 0).expect("value"),
            expected,
            "{}",
            array.data_type()
        );
    }
}

#[test]
fn rejects_nulls_and_unsupported_types() {
    let array = Int64Array::from(vec![Some(1), None]);
    let err = partition_value("day", &array, 1).expect_err("null");
    assert_eq!(
        err,
        LakeError::NullPartitionValue {
            column: "day".into(),
            row: 1
        }
    );
    assert!(
        err.to_string()
            .starts_with("partition column `day` has a null at row 1;"),
        "{err}"
    );
    let floats = Float64Array::from(vec![1.5]);
    assert_eq!(
        partition_value("x", &floats, 0),
        Err(LakeError::UnsupportedPartitionType {
            column: "x".into(),
            data_type: DataType::Float64
        })
    );
    assert!(matches!(
        partition_value("x", &array, 2),
        Err(LakeError::Internal(_))
    ));
}

#[test]
fn rejects_path_unsafe_strings() {
    let cases = [
        ("", "may not be empty"),
        ("a/b", "may not contain `/`"),
        ("a\\b", "may not contain `\\`"),
        ("..", "may not contain `..`"),
        ("k=v", "may not contain `=`"),
        ("line\nbreak", "may not contain control characters"),
        (".hidden", "may not begin with `.`"),
    ];
    for (value, rule) in cases {
        let array = StringArray::from(vec!["ok", value]);
        match partition_value("region", &array, 1) {
            Err(LakeError::BadPartitionValue {
                column,
                row,
                rule: got,
                ..
            }) => {
                assert_eq!((column.as_str(), row, got.as_str()), ("region", 1, rule));
            }
            other => panic!("expected BadPartitionValue for {value:?}, got {other:?}"),
        }
    }
    let long = "x".repeat(MAX_PARTITION_VALUE_BYTES + 1);
    let array = StringArray::from(vec![long.as_str()]);
    assert!(matches!(
        partition_value("region", &array, 0),
        Err(LakeError::BadPartitionValue { .. })
    ));
    let err = partition_value("region", &StringArray::from(vec!["a/b"]), 0).expect_err("slash");
    assert_eq!(
        err.to_string(),
        "partition column `region` has the value `a/b` at row 0, which may not contain `/`; \
         partition values become directory names, so change the value or partition by another \
         column"
    );
    // Control characters are shown escaped.
    match partition_value("region", &StringArray::from(vec!["a\nb"]), 0) {
        Err(LakeError::BadPartitionValue { value, .. }) => assert_eq!(value, "a\\nb"),
        other => panic!("expected BadPartitionValue, got {other:?}"),
    }
}

#[test]
fn splits_rows_into_partitions_in_order_of_appearance() {
    let data = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5, 6]))),
        (
            "region",
            Arc::new(StringArray::from(vec!["eu", "us", "eu", "eu", "us", "ap"])),
        ),
        (
            "year",
            Arc::new(Int64Array::from(vec![2024, 2024, 2025, 2024, 2024, 2024])),
        ),
    ]);
    let parts = split_by_partition(&data, &cols(&["region", "year"])).expect("split");
    let summary: Vec<(String, Vec<i64>)> = parts
        .iter()
        .map(|(values, batch)| {
            assert_eq!(batch.num_columns(), 3, "partition columns are kept");
            (
                partition_path(values),
                batch
                    .column(0)
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("region=eu/year=2024".to_string(), vec![1, 4]),
            ("region=us/year=2024".to_string(), vec![2, 5]),
            ("region=eu/year=2025".to_string(), vec![3]),
            ("region=ap/year=2024".to_string(), vec![6]),
        ]
    );
    assert_eq!(parts[0].0.get("year"), Some("2024"));
    // The path follows the given column order, not alphabetical order.
    let parts = split_by_partition(&data, &cols(&["year", "region"])).expect("split");
    assert_eq!(parts[0].0.path(), "year=2024/region=eu");
}

#[test]
fn no_partition_columns_or_no_rows() {
    let data = batch(vec![("id", Arc::new(Int64Array::from(vec![1, 2])))]);
    let parts = split_by_partition(&data, &[]).expect("split");
    assert_eq!(parts.len(), 1);
    assert!(parts[0].0.is_empty());
    assert_eq!(parts[0].0.path(), "");
    assert_eq!(parts[0].1, data);
    let empty = data.slice(0, 0);
    assert!(
        split_by_partition(&empty, &cols(&["id"]))
            .expect("split")
            .is_empty()
    );
}

#[test]
fn split_errors() {
    let data = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3]))),
        (
            "region",
            Arc::new(StringArray::from(vec![Some("eu"), Some("a/b"), None])),
        ),
        ("score", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]))),
    ]);
    assert_eq!(
        split_by_partition(&data, &cols(&["nope"])),
        Err(LakeError::UnknownPartitionColumn {
            column: "nope".into()
        })
    );
    assert!(matches!(
        split_by_partition(&data, &cols(&["score"])),
        Err(LakeError::UnsupportedPartitionType { .. })
    ));
    assert_eq!(
        split_by_partition(&data, &cols(&["region"])),
        Err(LakeError::NullPartitionValue {
            column: "region".into(),
            row: 2
        })
    );
    let two = data.slice(0, 2);
    match split_by_partition(&two, &cols(&["id", "region"])) {
        Err(LakeError::BadPartitionValue { row, value, .. }) => {
            assert_eq!((row, value.as_str()), (1, "a/b"));
        }
        other => panic!("expected BadPartitionValue, got {other:?}"),
    }
}

#[test]
fn partition_limit_is_enforced() {
    let data = batch(vec![("id", Arc::new(Int64Array::from_iter_values(0..50)))]);
    assert_eq!(
        split_by_partition_limited(&data, &cols(&["id"]), 50)
            .expect("at the limit")
            .len(),
        50
    );
    let err = split_by_partition_limited(&data, &cols(&["id"]), 49).expect_err("over");
    assert_eq!(
        err,
        LakeError::TooManyPartitions {
            limit: 49,
            found_at_least: 50
        }
    );
    assert_eq!(
        err.to_string(),
        "the write has at least 50 distinct partition values, over the limit of 49; partition by \
         a coarser column or split the write"
    );
    let many = batch(vec![(
        "id",
        Arc::new(Int64Array::from_iter_values(
            0..(MAX_PARTITIONS_PER_WRITE as i64 + 1),
        )),
    )]);
    assert!(matches!(
        split_by_partition(&many, &cols(&["id"])),
        Err(LakeError::TooManyPartitions { limit: 10_000, .. })
    ));
}

#[test]
fn partition_values_keep_their_order_in_json() {
    let v = values(&[("zone", "b"), ("area", "a")]);
    let json = serde_json::to_string(&v).expect("serialize");
    assert_eq!(json, r#"{"zone":"b","area":"a"}"#);
    let back: PartitionValues = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, v);
    assert_eq!(back.path(), "zone=b/area=a");
    let map: BTreeMap<String, String> = serde_json::from_str(&json).expect("as map");
    assert_eq!(map.len(), 2);
    let dup = serde_json::from_str::<PartitionValues>(r#"{"a":"1","a":"2"}"#).expect_err("dup");
    assert!(
        dup.to_string()
            .contains("partition column `a` appears twice"),
        "{dup}"
    );
}
