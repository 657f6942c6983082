use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Decimal128Array, Float64Array, Int8Array, Int32Array,
    Int64Array, LargeStringArray, NullArray, StringArray, StringViewArray, TimestampSecondArray,
    UInt8Array,
};
use arrow::datatypes::{Date64Type, Decimal128Type, Int16Type, Int64Type, TimestampNanosecondType};

use super::*;

fn schema(fields: &[(&str, DataType, bool)]) -> Schema {
    Schema::new(
        fields
            .iter()
            .map(|(n, t, null)| Field::new(*n, t.clone(), *null))
            .collect::<Vec<_>>(),
    )
}

fn batch(columns: Vec<(&str, ArrayRef, bool)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a, null)| Field::new(*n, a.data_type().clone(), *null))
        .collect();
    let arrays = columns.into_iter().map(|(_, a, _)| a).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch")
}

fn all_types() -> Vec<DataType> {
    let utc = Some(Arc::from("UTC"));
    vec![
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt8,
        DataType::UInt16,
        DataType::UInt32,
        DataType::UInt64,
        DataType::Float32,
        DataType::Float64,
        DataType::Utf8,
        DataType::LargeUtf8,
        DataType::Boolean,
        DataType::Date32,
        DataType::Date64,
        DataType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Timestamp(TimeUnit::Nanosecond, None),
        DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
        DataType::Timestamp(TimeUnit::Nanosecond, utc),
        DataType::Decimal128(10, 2),
        DataType::Decimal128(38, 0),
        DataType::Binary,
        DataType::new_list(DataType::Int32, true),
    ]
}

#[test]
fn every_type_round_trips_through_json() {
    let frame = FrameSchema {
        fields: all_types()
            .into_iter()
            .enumerate()
            .map(|(i, data_type)| FrameField {
                name: format!("c{i}"),
                data_type,
                nullable: i % 2 == 0,
            })
            .collect(),
    };
    let json = serde_json::to_string(&frame).expect("serialize");
    let back: FrameSchema = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, frame);
    assert_eq!(FrameSchema::from_arrow(&frame.to_arrow()), frame);
}

#[test]
fn json_form_is_stable() {
    let frame = FrameSchema::from_arrow(&schema(&[
        ("id", DataType::Int64, false),
        ("price", DataType::Decimal128(10, 2), true),
        (
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    assert_eq!(
        serde_json::to_string(&frame).expect("serialize"),
        r#"{"fields":[{"name":"id","type":"Int64","nullable":false},{"name":"price","type":"Decimal128(10, 2)","nullable":true},{"name":"at","type":"Timestamp(µs, \"UTC\")","nullable":true}]}"#
    );
    // The older arrow spelling still reads.
    let old = r#"{"fields":[{"name":"t","type":"Timestamp(Nanosecond, None)","nullable":true}]}"#;
    let back: FrameSchema = serde_json::from_str(old).expect("old spelling");
    assert_eq!(
        back.fields[0].data_type,
        DataType::Timestamp(TimeUnit::Nanosecond, None)
    );
}

#[test]
fn unknown_type_is_a_clear_error() {
    let bad = r#"{"fields":[{"name":"x","type":"Integer64","nullable":true}]}"#;
    let err = serde_json::from_str::<FrameSchema>(bad).expect_err("bad type");
    assert!(
        err.to_string().starts_with("unknown type `Integer64`"),
        "{err}"
    );
}

#[test]
fn validate_checks_names_and_duplicates() {
    let ok = FrameSchema::from_arrow(&schema(&[("_id", DataType::Int64, false)]));
    ok.validate().expect("valid");
    let dup = FrameSchema::from_arrow(&schema(&[
        ("a", DataType::Int64, false),
        ("a", DataType::Utf8, true),
    ]));
    assert_eq!(
        dup.validate(),
        Err(LakeError::DuplicateColumn { column: "a".into() })
    );
    let bad = FrameSchema::from_arrow(&schema(&[("a=b", DataType::Int64, false)]));
    assert!(matches!(
        bad.validate(),
        Err(LakeError::InvalidName {
            kind: NameKind::Column,
            ..
        })
    ));
}

#[test]
fn widening_table() {
    use DataType::*;
    let ts = |u| Timestamp(u, None);
    let utc = |u| Timestamp(u, Some(Arc::from("UTC")));
    let allowed = [
        (Int8, Int16),
        (Int8, Float32),
        (Int16, Int64),
        (Int32, Int64),
        (Int32, Float64),
        (Int64, Float64),
        (UInt8, UInt16),
        (UInt8, Int16),
        (UInt16, Int32),
        (UInt32, Int64),
        (UInt32, UInt64),
        (UInt64, Float64),
        (Float32, Float64),
        (Date32, Date64),
        (ts(TimeUnit::Second), ts(TimeUnit::Nanosecond)),
        (utc(TimeUnit::Millisecond), utc(TimeUnit::Microsecond)),
        (Utf8, LargeUtf8),
        (LargeUtf8, Utf8),
        (Utf8View, Utf8),
        (Binary, LargeBinary),
        (Decimal128(5, 2), Decimal128(7, 3)),
        (Decimal128(5, 2), Decimal128(10, 2)),
        (Null, Int32),
        (Null, Utf8),
    ];
    for (from, to) in &allowed {
        assert!(widens_safely(from, to), "{from} -> {to} should be allowed");
    }
    let rejected = [
        (Int64, Int32),
        (Int16, Int8),
        (Int32, Float32),
        (Int8, UInt8),
        (Int64, UInt64),
        (UInt64, Int64),
        (UInt32, Int32),
        (UInt64, Float32),
        (Float64, Float32),
        (Float64, Int64),
        (Utf8, Int64),
        (Int64, Utf8),
        (Utf8, Binary),
        (Boolean, Int8),
        (Date64, Date32),
        (Date32, ts(TimeUnit::Second)),
        (ts(TimeUnit::Nanosecond), ts(TimeUnit::Microsecond)),
        (ts(TimeUnit::Microsecond), utc(TimeUnit::Microsecond)),
        (utc(TimeUnit::Microsecond), ts(TimeUnit::Nanosecond)),
        (Decimal128(7, 3), Decimal128(5, 2)),
        (Decimal128(10, 2), Decimal128(10, 3)),
        (Int32, Decimal128(20, 0)),
        (Int32, Null),
    ];
    for (from, to) in &rejected {
        assert!(
            !widens_safely(from, to),
            "{from} -> {to} should be rejected"
        );
    }
}

#[test]
fn matches_columns_by_name_not_position() {
    let frame = schema(&[("a", DataType::Int64, false), ("b", DataType::Utf8, true)]);
    let data = batch(vec![
        ("b", Arc::new(StringArray::from(vec!["x", "y"])), true),
        ("a", Arc::new(Int64Array::from(vec![1, 2])), false),
    ]);
    let plan = plan_write(&frame, data.schema_ref()).expect("plan");
    assert!(!plan.is_identity());
    let out = plan.apply(&data).expect("apply");
    assert_eq!(out.schema().as_ref(), &frame);
    assert_eq!(out.column(0).as_primitive::<Int64Type>().values(), &[1, 2]);
    assert_eq!(out.column(1).as_string::<i32>().value(1), "y");
}

#[test]
fn identity_plan_passes_batches_through() {
    let frame = schema(&[("a", DataType::Int64, false)]);
    let data = batch(vec![("a", Arc::new(Int64Array::from(vec![7])), false)]);
    let plan = plan_write(&frame, data.schema_ref()).expect("plan");
    assert!(plan.is_identity());
    assert_eq!(plan.apply(&data).expect("apply"), data);
}

#[test]
fn widens_values_correctly() {
    let frame = schema(&[
        ("i", DataType::Int64, true),
        ("u", DataType::Int16, true),
        ("f", DataType::Float64, true),
        ("s", DataType::LargeUtf8, true),
        ("v", DataType::Utf8, true),
        ("d", DataType::Date64, true),
        ("t", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ("m", DataType::Decimal128(12, 4), true),
        ("n", DataType::Int32, true),
    ]);
    let decimals = Decimal128Array::from(vec![Some(12_345), None])
        .with_precision_and_scale(7, 2)
        .expect("decimal");
    let data = batch(vec![
        ("i", Arc::new(Int8Array::from(vec![Some(-8), None])), true),
        ("u", Arc::new(UInt8Array::from(vec![255, 0])), true),
        ("f", Arc::new(Int32Array::from(vec![3, -4])), true),
        ("s", Arc::new(StringArray::from(vec!["a", "b"])), true),
        (
            "v",
            Arc::new(StringViewArray::from(vec![
                "long enough to be out of line",
                "v",
            ])),
            true,
        ),
        ("d", Arc::new(Date32Array::from(vec![1, -1])), true),
        ("t", Arc::new(TimestampSecondArray::from(vec![1, 2])), true),
        ("m", Arc::new(decimals), true),
        ("n", Arc::new(NullArray::new(2)), true),
    ]);
    let out = plan_write(&frame, data.schema_ref())
        .expect("plan")
        .apply(&data)
        .expect("apply");
    assert_eq!(out.schema().as_ref(), &frame);
    let i = out.column(0).as_primitive::<Int64Type>();
    assert_eq!((i.value(0), i.is_null(1)), (-8, true));
    assert_eq!(
        out.column(1).as_primitive::<Int16Type>().values(),
        &[255, 0]
    );
    let f = out
        .column(2)
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("f64");
    assert_eq!(f.values(), &[3.0, -4.0]);
    let s = out
        .column(3)
        .as_any()
        .downcast_ref::<LargeStringArray>()
        .expect("large");
    assert_eq!(s.value(1), "b");
    assert_eq!(
        out.column(4).as_string::<i32>().value(0),
        "long enough to be out of line"
    );
    assert_eq!(
        out.column(5).as_primitive::<Date64Type>().values(),
        &[86_400_000, -86_400_000]
    );
    assert_eq!(
        out.column(6)
            .as_primitive::<TimestampNanosecondType>()
            .values(),
        &[1_000_000_000, 2_000_000_000]
    );
    let m = out.column(7).as_primitive::<Decimal128Type>();
    assert_eq!((m.value(0), m.is_null(1)), (1_234_500, true));
    assert_eq!(out.column(8).null_count(), 2);
}

#[test]
fn rejects_unsafe_casts_naming_column_and_types() {
    let frame = schema(&[("a", DataType::Int32, true)]);
    let incoming = schema(&[("a", DataType::Int64, true)]);
    let err = plan_write(&frame, &incoming).expect_err("narrowing");
    assert_eq!(
        err,
        LakeError::SchemaMismatch {
            column: "a".into(),
            expected: DataType::Int32,
            found: DataType::Int64
        }
    );
    assert_eq!(
        err.to_string(),
        "column `a` has type Int64 but the frame stores Int32, and Int64 does not widen safely \
         to Int32; cast it to Int32 in the query"
    );
    let incoming = schema(&[("a", DataType::Utf8, true)]);
    assert!(matches!(
        plan_write(&frame, &incoming),
        Err(LakeError::SchemaMismatch {
            found: DataType::Utf8,
            ..
        })
    ));
}

#[test]
fn extra_columns_are_listed() {
    let frame = schema(&[("id", DataType::Int64, true)]);
    let incoming = schema(&[
        ("nmae", DataType::Utf8, true),
        ("id", DataType::Int64, true),
        ("zip", DataType::Utf8, true),
    ]);
    let err = plan_write(&frame, &incoming).expect_err("extras");
    assert_eq!(
        err,
        LakeError::ExtraColumns {
            columns: vec!["nmae".into(), "zip".into()]
        }
    );
    assert_eq!(
        err.to_string(),
        "the data has columns the frame does not declare: `nmae`, `zip`; drop them or add them \
         to the frame"
    );
    let one = plan_write(&frame, &schema(&[("x", DataType::Int8, true)])).expect_err("extra");
    assert_eq!(
        one.to_string(),
        "the data has a column the frame does not declare: `x`; drop it or add it to the frame"
    );
}

#[test]
fn missing_columns_fill_with_nulls_or_fail() {
    let frame = schema(&[
        ("id", DataType::Int64, false),
        ("note", DataType::Utf8, true),
    ]);
    let data = batch(vec![(
        "id",
        Arc::new(Int64Array::from(vec![1, 2, 3])),
        false,
    )]);
    let out = plan_write(&frame, data.schema_ref())
        .expect("plan")
        .apply(&data)
        .expect("apply");
    assert_eq!(out.num_rows(), 3);
    assert_eq!(out.column(1).data_type(), &DataType::Utf8);
    assert_eq!(out.column(1).null_count(), 3);

    let data = schema(&[("note", DataType::Utf8, true)]);
    let err = plan_write(&frame, &data).expect_err("missing id");
    assert_eq!(
        err,
        LakeError::MissingColumn {
            column: "id".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "the data has no column `id`, which the frame declares NOT NULL; add the column to the data"
    );
}

#[test]
fn nullable_data_into_not_null_column_is_checked_per_batch() {
    let frame = schema(&[("id", DataType::Int64, false)]);
    let incoming = Arc::new(schema(&[("id", DataType::Int32, true)]));
    let plan = plan_write(&frame, &incoming).expect("plan");
    let clean = RecordBatch::try_new(
        Arc::clone(&incoming),
        vec![Arc::new(Int32Array::from(vec![Some(1), Some(2)]))],
    )
    .expect("batch");
    let out = plan.apply(&clean).expect("no nulls");
    assert!(!out.schema().field(0).is_nullable());
    let dirty = RecordBatch::try_new(
        Arc::clone(&incoming),
        vec![Arc::new(Int32Array::from(vec![None, Some(2), None]))],
    )
    .expect("batch");
    let err = plan.apply(&dirty).expect_err("nulls");
    assert_eq!(
        err,
        LakeError::NullsInNonNullable {
            column: "id".into(),
            null_count: 2
        }
    );
    assert_eq!(
        err.to_string(),
        "column `id` has 2 null values but the frame declares it NOT NULL; filter out or fill the \
         nulls"
    );
    // An untyped NULL column into a NOT NULL column fails the same way.
    let untyped = batch(vec![("id", Arc::new(NullArray::new(1)), true)]);
    let err = plan_write(&frame, untyped.schema_ref())
        .expect("plan")
        .apply(&untyped)
        .expect_err("null");
    assert!(matches!(
        err,
        LakeError::NullsInNonNullable { null_count: 1, .. }
    ));
}

#[test]
fn timestamp_overflow_fails_the_write() {
    let frame = schema(&[("t", DataType::Timestamp(TimeUnit::Nanosecond, None), true)]);
    let data = batch(vec![(
        "t",
        Arc::new(TimestampSecondArray::from(vec![i64::MAX / 10])),
        true,
    )]);
    let err = plan_write(&frame, data.schema_ref())
        .expect("plan")
        .apply(&data)
        .expect_err("overflow");
    match err {
        LakeError::ValueOutOfRange {
            column, expected, ..
        } => {
            assert_eq!(column, "t");
            assert_eq!(expected, DataType::Timestamp(TimeUnit::Nanosecond, None));
        }
        other => panic!("expected ValueOutOfRange, got {other:?}"),
    }
}

#[test]
fn duplicate_incoming_columns_are_rejected() {
    let frame = schema(&[("a", DataType::Int64, true)]);
    let incoming = schema(&[("a", DataType::Int64, true), ("a", DataType::Int64, true)]);
    assert_eq!(
        plan_write(&frame, &incoming).expect_err("dup"),
        LakeError::DuplicateColumn { column: "a".into() }
    );
}

#[test]
fn a_batch_of_another_schema_is_an_internal_error() {
    let frame = schema(&[("a", DataType::Int64, true)]);
    let plan = plan_write(&frame, &frame).expect("plan");
    let other = batch(vec![("a", Arc::new(Int32Array::from(vec![1])), true)]);
    assert!(matches!(plan.apply(&other), Err(LakeError::Internal(_))));
}
