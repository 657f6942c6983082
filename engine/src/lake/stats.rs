//! Column statistics of cells: min, max and null count per column, as the ledger records
//! them for pruning.
//!
//! Bounds are JSON scalars, encoded per column type:
//!
//! | Type | `min` / `max` in JSON |
//! |---|---|
//! | Int8..Int64, UInt8..UInt64 | numbers (exact: serde_json keeps `i64` / `u64`) |
//! | Float32, Float64 | numbers; NaN is ignored (as Parquet does); ±∞ as the strings `"Infinity"` / `"-Infinity"` |
//! | Utf8, LargeUtf8, Utf8View | strings, compared bytewise; values over 64 bytes are cut: `min` to a prefix, `max` to a prefix whose last character is incremented, so both stay true bounds |
//! | Boolean | `false` / `true` |
//! | Date32 | ISO 8601 strings `YYYY-MM-DD` |
//! | Timestamp(unit, tz) | numbers: the raw `i64` count of the column's unit since the epoch (UTC for zoned columns) |
//! | Decimal128(p, s) | strings with exactly `s` fraction digits, e.g. `"-12.50"` |
//! | anything else | no bounds, only `null_count` |
//!
//! `min` and `max` are `None` when the column had no non-null (non-NaN) value, or when the
//! type has no bounds. Because floats ignore NaN, a float column's `max` does not bound NaN.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::kernels::cast_utils::parse_decimal;
use arrow::compute::{
    max, max_boolean, max_string, max_string_view, min, min_boolean, min_string, min_string_view,
};
use arrow::datatypes::{
    ArrowNumericType, DataType, Date32Type, Decimal128Type, DecimalType, Float32Type, Float64Type,
    Int8Type, Int16Type, Int32Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::LakeError;
use super::civil::{format_date, parse_date};

/// Longest string bound kept, in bytes.
pub const MAX_STRING_STAT_BYTES: usize = 64;

/// Statistics of one column of a cell (or batch).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ColumnStats {
    /// Smallest non-null value, encoded as the module documentation says.
    #[serde(default)]
    pub min: Option<Value>,
    /// Largest non-null value, encoded as the module documentation says.
    #[serde(default)]
    pub max: Option<Value>,
    /// Number of nulls.
    pub null_count: u64,
}

/// Statistics of every column of `batch`, keyed by column name.
pub fn column_stats(batch: &RecordBatch) -> BTreeMap<String, ColumnStats> {
    batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, array)| (field.name().clone(), array_stats(array.as_ref())))
        .collect()
}

/// Statistics of one array.
pub fn array_stats(array: &dyn Array) -> ColumnStats {
    let (min, max) = bounds(array);
    ColumnStats {
        min,
        max,
        null_count: array.logical_null_count() as u64,
    }
}

type Bounds = (Option<Value>, Option<Value>);

fn bounds(array: &dyn Array) -> Bounds {
    match array.data_type() {
        DataType::Int8 => int_bounds::<Int8Type>(array),
        DataType::Int16 => int_bounds::<Int16Type>(array),
        DataType::Int32 => int_bounds::<Int32Type>(array),
        DataType::Int64 => int_bounds::<Int64Type>(array),
        DataType::UInt8 => int_bounds::<UInt8Type>(array),
        DataType::UInt16 => int_bounds::<UInt16Type>(array),
        DataType::UInt32 => int_bounds::<UInt32Type>(array),
        DataType::UInt64 => int_bounds::<UInt64Type>(array),
        DataType::Float32 => float_bounds(
            array
                .as_primitive::<Float32Type>()
                .iter()
                .flatten()
                .map(f64::from),
        ),
        DataType::Float64 => float_bounds(array.as_primitive::<Float64Type>().iter().flatten()),
        DataType::Utf8 => {
            let strings = array.as_string::<i32>();
            string_bounds(min_string(strings), max_string(strings))
        }
        DataType::LargeUtf8 => {
            let strings = array.as_string::<i64>();
            string_bounds(min_string(strings), max_string(strings))
        }
        DataType::Utf8View => {
            let strings = array.as_string_view();
            string_bounds(min_string_view(strings), max_string_view(strings))
        }
        DataType::Boolean => {
            let bools = array.as_boolean();
            (
                min_boolean(bools).map(Value::Bool),
                max_boolean(bools).map(Value::Bool),
            )
        }
        DataType::Date32 => {
            let dates = array.as_primitive::<Date32Type>();
            let text = |days: i32| Value::String(format_date(i64::from(days)));
            (min(dates).map(text), max(dates).map(text))
        }
        DataType::Timestamp(TimeUnit::Second, _) => int_bounds::<TimestampSecondType>(array),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            int_bounds::<TimestampMillisecondType>(array)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            int_bounds::<TimestampMicrosecondType>(array)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            int_bounds::<TimestampNanosecondType>(array)
        }
        DataType::Decimal128(precision, scale) => {
            let decimals = array.as_primitive::<Decimal128Type>();
            let text =
                |v: i128| Value::String(Decimal128Type::format_decimal(v, *precision, *scale));
            (min(decimals).map(text), max(decimals).map(text))
        }
        _ => (None, None),
    }
}

fn int_bounds<T>(array: &dyn Array) -> Bounds
where
    T: ArrowNumericType,
    T::Native: Into<Value>,
{
    let ints = array.as_primitive::<T>();
    (min(ints).map(Into::into), max(ints).map(Into::into))
}

fn float_value(v: f64) -> Value {
    if v == f64::INFINITY {
        Value::String("Infinity".to_owned())
    } else if v == f64::NEG_INFINITY {
        Value::String("-Infinity".to_owned())
    } else {
        // Finite, so `from_f64` cannot fail; fall back to `null` all the same.
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

fn float_bounds(values: impl Iterator<Item = f64>) -> Bounds {
    let mut range: Option<(f64, f64)> = None;
    for v in values.filter(|v| !v.is_nan()) {
        range = Some(match range {
            None => (v, v),
            Some((lo, hi)) => (lo.min(v), hi.max(v)),
        });
    }
    match range {
        None => (None, None),
        Some((lo, hi)) => (Some(float_value(lo)), Some(float_value(hi))),
    }
}

fn string_bounds(lo: Option<&str>, hi: Option<&str>) -> Bounds {
    (
        lo.map(|s| Value::String(truncate_min(s).to_owned())),
        hi.map(|s| Value::String(truncate_max(s))),
    )
}

/// The longest prefix of `s` of at most `bytes` bytes that ends on a character boundary.
fn prefix(s: &str, bytes: usize) -> &str {
    let mut end = bytes.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A lower bound of `s` of at most [`MAX_STRING_STAT_BYTES`] bytes: a prefix.
fn truncate_min(s: &str) -> &str {
    prefix(s, MAX_STRING_STAT_BYTES)
}

/// An upper bound of `s` of about [`MAX_STRING_STAT_BYTES`] bytes: a prefix whose last
/// character is replaced by the next one, which sorts after every string with that prefix.
fn truncate_max(s: &str) -> String {
    if s.len() <= MAX_STRING_STAT_BYTES {
        return s.to_owned();
    }
    let mut chars: Vec<char> = prefix(s, MAX_STRING_STAT_BYTES).chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) + 1 {
            0xD800 => Some('\u{E000}'), // skip the surrogate gap
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return chars.into_iter().collect();
        }
    }
    // Every character was char::MAX: no shorter upper bound exists.
    s.to_owned()
}

/// Orders two encoded bounds of a column of `data_type`.
///
/// # Errors
/// [`LakeError::Corrupt`] when a value is not a valid encoding for the type.
pub fn compare_stat_values(
    a: &Value,
    b: &Value,
    data_type: &DataType,
) -> Result<Ordering, LakeError> {
    let corrupt = |v: &Value| LakeError::Corrupt {
        what: "column statistics".to_owned(),
        message: format!("`{v}` is not a bound of a {data_type} column"),
    };
    use DataType::*;
    let ordering = match data_type {
        Int8 | Int16 | Int32 | Int64 | Timestamp(_, _) => {
            let x = a.as_i64().ok_or_else(|| corrupt(a))?;
            let y = b.as_i64().ok_or_else(|| corrupt(b))?;
            x.cmp(&y)
        }
        UInt8 | UInt16 | UInt32 | UInt64 => {
            let x = a.as_u64().ok_or_else(|| corrupt(a))?;
            let y = b.as_u64().ok_or_else(|| corrupt(b))?;
            x.cmp(&y)
        }
        Float32 | Float64 => {
            let x = float_of(a).ok_or_else(|| corrupt(a))?;
            let y = float_of(b).ok_or_else(|| corrupt(b))?;
            x.total_cmp(&y)
        }
        Utf8 | LargeUtf8 | Utf8View => {
            let x = a.as_str().ok_or_else(|| corrupt(a))?;
            let y = b.as_str().ok_or_else(|| corrupt(b))?;
            x.cmp(y)
        }
        Boolean => {
            let x = a.as_bool().ok_or_else(|| corrupt(a))?;
            let y = b.as_bool().ok_or_else(|| corrupt(b))?;
            x.cmp(&y)
        }
        Date32 => {
            let x = a.as_str().and_then(parse_date).ok_or_else(|| corrupt(a))?;
            let y = b.as_str().and_then(parse_date).ok_or_else(|| corrupt(b))?;
            x.cmp(&y)
        }
        Decimal128(precision, scale) => {
            let parse = |v: &Value| {
                v.as_str()
                    .and_then(|s| parse_decimal::<Decimal128Type>(s, *precision, *scale).ok())
                    .ok_or_else(|| corrupt(v))
            };
            parse(a)?.cmp(&parse(b)?)
        }
        _ => return Err(corrupt(a)),
    };
    Ok(ordering)
}

fn float_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s == "Infinity" => Some(f64::INFINITY),
        Value::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

impl ColumnStats {
    /// The statistics of the union of the data `self` and `other` describe (a column of
    /// type `data_type`): the smaller min, the larger max, the sum of null counts.
    ///
    /// # Errors
    /// [`LakeError::Corrupt`] when a bound is not a valid encoding for `data_type`.
    pub fn merge(&self, other: &ColumnStats, data_type: &DataType) -> Result<Self, LakeError> {
        let pick = |a: &Option<Value>, b: &Option<Value>, keep: Ordering| {
            Ok::<_, LakeError>(match (a, b) {
                (None, x) | (x, None) => x.clone(),
                (Some(x), Some(y)) => {
                    if compare_stat_values(x, y, data_type)? == keep {
                        Some(x.clone())
                    } else {
                        Some(y.clone())
                    }
                }
            })
        };
        Ok(ColumnStats {
            min: pick(&self.min, &other.min, Ordering::Less)?,
            max: pick(&self.max, &other.max, Ordering::Greater)?,
            null_count: self.null_count + other.null_count,
        })
    }
}

/// Statistics of two batches of `schema` combined, column by column (see
/// [`ColumnStats::merge`]); for a cell written from several batches.
///
/// # Errors
/// [`LakeError::Internal`] when either side lacks a column of `schema`;
/// [`LakeError::Corrupt`] when a bound is not a valid encoding for its column's type.
pub fn merge_stats(
    a: &BTreeMap<String, ColumnStats>,
    b: &BTreeMap<String, ColumnStats>,
    schema: &Schema,
) -> Result<BTreeMap<String, ColumnStats>, LakeError> {
    let mut merged = BTreeMap::new();
    for field in schema.fields() {
        let name = field.name();
        let (Some(x), Some(y)) = (a.get(name), b.get(name)) else {
            return Err(LakeError::internal(format!(
                "statistics of column `{name}` are missing from one of the sides merged"
            )));
        };
        merged.insert(name.clone(), x.merge(y, field.data_type())?);
    }
    Ok(merged)
}

#[cfg(test)]
mod tests;
