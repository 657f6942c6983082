//! Partition values: how a row's partition columns become a directory like
//! `region=eu/day=2024-05-01/`, and how a batch is split into one batch per partition.
//!
//! Values are spelt so they can be directory names of a bucket key:
//!
//! | Type | Spelling |
//! |---|---|
//! | Utf8, LargeUtf8, Utf8View | the string itself, if path-safe (else an error) |
//! | Int8..Int64, UInt8..UInt64 | decimal digits, `-` for negatives |
//! | Boolean | `true` / `false` |
//! | Date32 | `YYYY-MM-DD` |
//! | Timestamp(unit, tz) | `YYYY-MM-DDTHH-MM-SS` plus `.` and 3, 6 or 9 fraction digits for ms, µs, ns; a trailing `Z` when the column has a time zone (the instant is shown in UTC) |
//!
//! Timestamps use `-` instead of `:` (colons need escaping in many stores and shells), and
//! their width is fixed per unit so that listing order is chronological.
//!
//! Split batches keep their partition columns: a cell is self-describing, and queries read
//! partition values from the cells; the directory only serves pruning and humans.

use std::collections::HashMap;
use std::fmt;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{
    DataType, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type,
    UInt64Type,
};
use arrow::row::{RowConverter, SortField};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::LakeError;
use super::civil::{format_date, format_timestamp};
use super::names::path_segment_problem;

/// The most distinct partitions one write may create, by default.
pub const MAX_PARTITIONS_PER_WRITE: usize = 10_000;

/// The longest partition value allowed, in bytes (it becomes a directory name).
pub const MAX_PARTITION_VALUE_BYTES: usize = 128;

/// A cell's partition: `(column, value)` pairs in the frame's partition column order.
///
/// Order matters (it is the directory order), so this is a list, not a map. In JSON it is
/// an object whose keys keep that order: `{"region": "eu", "day": "2024-05-01"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PartitionValues(Vec<(String, String)>);

impl PartitionValues {
    /// The partition of `(column, value)` pairs, in the frame's partition column order.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// Whether there are no partition columns (an unpartitioned frame).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `(column, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(c, v)| (c.as_str(), v.as_str()))
    }

    /// The partition columns in order.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(c, _)| c.as_str())
    }

    /// The value of `column`, if it is a partition column.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.iter().find(|(c, _)| *c == column).map(|(_, v)| v)
    }

    /// The directory of this partition; see [`partition_path`].
    pub fn path(&self) -> String {
        partition_path(self)
    }
}

impl FromIterator<(String, String)> for PartitionValues {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl Serialize for PartitionValues {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (column, value) in &self.0 {
            map.serialize_entry(column, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for PartitionValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsInOrder;
        impl<'de> Visitor<'de> for PairsInOrder {
            type Value = PartitionValues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of partition column names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs: Vec<(String, String)> = Vec::new();
                while let Some((column, value)) = map.next_entry::<String, String>()? {
                    if pairs.iter().any(|(c, _)| *c == column) {
                        return Err(serde::de::Error::custom(format!(
                            "partition column `{column}` appears twice"
                        )));
                    }
                    pairs.push((column, value));
                }
                Ok(PartitionValues(pairs))
            }
        }
        deserializer.deserialize_map(PairsInOrder)
    }
}

/// The directory of a partition relative to the frame: `col=value/col2=value2`, in the
/// order of `values` (the frame's partition column order); empty when unpartitioned.
pub fn partition_path(values: &PartitionValues) -> String {
    values
        .iter()
        .map(|(column, value)| format!("{column}={value}"))
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a frame may be partitioned by a column of type `data_type`.
pub fn is_partition_type(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Utf8 | LargeUtf8
            | Utf8View
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Boolean
            | Date32
            | Timestamp(_, _)
    )
}

/// The partition value of `array` (the partition column `column`) at `row`, spelt as the
/// module documentation's table says.
///
/// # Errors
/// - [`LakeError::NullPartitionValue`] when the value is null;
/// - [`LakeError::BadPartitionValue`] when a string is not path-safe: empty, longer than
///   [`MAX_PARTITION_VALUE_BYTES`], containing `/`, `\`, `..`, `=` or control characters,
///   or beginning with `.`;
/// - [`LakeError::UnsupportedPartitionType`] for other types (see [`is_partition_type`]);
/// - [`LakeError::Internal`] when `row` is out of bounds.
pub fn partition_value(column: &str, array: &dyn Array, row: usize) -> Result<String, LakeError> {
    if row >= array.len() {
        return Err(LakeError::internal(format!(
            "partition value of `{column}` asked for row {row} of {}",
            array.len()
        )));
    }
    if !is_partition_type(array.data_type()) {
        return Err(LakeError::UnsupportedPartitionType {
            column: column.to_owned(),
            data_type: array.data_type().clone(),
        });
    }
    if array.is_null(row) {
        return Err(LakeError::NullPartitionValue {
            column: column.to_owned(),
            row,
        });
    }
    let text = match array.data_type() {
        DataType::Utf8 => checked_string(column, row, array.as_string::<i32>().value(row))?,
        DataType::LargeUtf8 => checked_string(column, row, array.as_string::<i64>().value(row))?,
        DataType::Utf8View => checked_string(column, row, array.as_string_view().value(row))?,
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).to_string(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).to_string(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).to_string(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).to_string(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).to_string(),
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        DataType::Date32 => {
            let days = array
                .as_primitive::<arrow::datatypes::Date32Type>()
                .value(row);
            format_date(i64::from(days))
        }
        DataType::Timestamp(unit, tz) => {
            let value = timestamp_value(array, row);
            format_timestamp(value, *unit, tz.is_some())
        }
        other => {
            return Err(LakeError::internal(format!(
                "partition type {other} passed the check but has no spelling"
            )));
        }
    };
    Ok(text)
}

/// The raw `i64` of a timestamp array of any unit.
fn timestamp_value(array: &dyn Array, row: usize) -> i64 {
    use arrow::datatypes::{
        TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            array.as_primitive::<TimestampSecondType>().value(row)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            array.as_primitive::<TimestampMillisecondType>().value(row)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            array.as_primitive::<TimestampMicrosecondType>().value(row)
        }
        _ => array.as_primitive::<TimestampNanosecondType>().value(row),
    }
}

fn checked_string(column: &str, row: usize, value: &str) -> Result<String, LakeError> {
    match path_segment_problem(value, MAX_PARTITION_VALUE_BYTES) {
        None => Ok(value.to_owned()),
        Some(rule) => Err(LakeError::BadPartitionValue {
            column: column.to_owned(),
            row,
            value: value.escape_debug().to_string(),
            rule,
        }),
    }
}

/// Splits `batch` into one batch per distinct combination of `partition_cols` values, in
/// the order the partitions first appear, with at most [`MAX_PARTITIONS_PER_WRITE`]
/// partitions. See [`split_by_partition_limited`].
///
/// # Errors
/// As [`split_by_partition_limited`].
pub fn split_by_partition(
    batch: &RecordBatch,
    partition_cols: &[String],
) -> Result<Vec<(PartitionValues, RecordBatch)>, LakeError> {
    split_by_partition_limited(batch, partition_cols, MAX_PARTITIONS_PER_WRITE)
}

/// Splits `batch` into one batch per distinct combination of `partition_cols` values, in
/// the order the partitions first appear; rows keep their relative order. The batches keep
/// all columns, partition columns included. No partition columns gives the whole batch as
/// one partition; an empty batch gives no partitions.
///
/// Rows are grouped by arrow's row format (one comparable byte key per row), so values are
/// spelt and checked once per partition, not once per row.
///
/// # Errors
/// - [`LakeError::UnknownPartitionColumn`] when a partition column is not in the batch;
/// - [`LakeError::UnsupportedPartitionType`], [`LakeError::NullPartitionValue`] (first null
///   row) and [`LakeError::BadPartitionValue`] (first row with the value), as
///   [`partition_value`];
/// - [`LakeError::TooManyPartitions`] when more than `limit` distinct partitions appear.
pub fn split_by_partition_limited(
    batch: &RecordBatch,
    partition_cols: &[String],
    limit: usize,
) -> Result<Vec<(PartitionValues, RecordBatch)>, LakeError> {
    let mut arrays = Vec::with_capacity(partition_cols.len());
    for column in partition_cols {
        let array =
            batch
                .column_by_name(column)
                .ok_or_else(|| LakeError::UnknownPartitionColumn {
                    column: column.clone(),
                })?;
        if !is_partition_type(array.data_type()) {
            return Err(LakeError::UnsupportedPartitionType {
                column: column.clone(),
                data_type: array.data_type().clone(),
            });
        }
        let first_null = if array.null_count() == 0 {
            None
        } else {
            (0..array.len()).find(|&row| array.is_null(row))
        };
        if let Some(row) = first_null {
            return Err(LakeError::NullPartitionValue {
                column: column.clone(),
                row,
            });
        }
        arrays.push(array.clone());
    }
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    if arrays.is_empty() {
        return Ok(vec![(PartitionValues::default(), batch.clone())]);
    }

    let fields = arrays
        .iter()
        .map(|a| SortField::new(a.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields).map_err(LakeError::internal)?;
    let rows = converter
        .convert_columns(&arrays)
        .map_err(LakeError::internal)?;
    let mut group_of = HashMap::new();
    // (first row, row indices) per partition, in order of first appearance.
    let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
    for row in 0..batch.num_rows() {
        let index = u32::try_from(row).map_err(LakeError::internal)?;
        let group = match group_of.get(&rows.row(row)) {
            Some(&group) => group,
            None => {
                if groups.len() == limit {
                    return Err(LakeError::TooManyPartitions {
                        limit,
                        found_at_least: limit + 1,
                    });
                }
                group_of.insert(rows.row(row), groups.len());
                groups.push((row, Vec::new()));
                groups.len() - 1
            }
        };
        groups[group].1.push(index);
    }

    let single = groups.len() == 1;
    let mut parts = Vec::with_capacity(groups.len());
    for (first_row, indices) in groups {
        let values = partition_cols
            .iter()
            .zip(&arrays)
            .map(|(column, array)| Ok((column.clone(), partition_value(column, array, first_row)?)))
            .collect::<Result<PartitionValues, LakeError>>()?;
        let part = if single {
            batch.clone()
        } else {
            take_record_batch(batch, &UInt32Array::from(indices)).map_err(LakeError::internal)?
        };
        parts.push((values, part));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests;
