//! Frame schemas, and the write path's matching of incoming columns to a frame's columns.
//!
//! A [`FrameSchema`] is the schema a frame's ledger records: an ordered list of fields whose
//! types are stored as arrow's own `DataType` display strings (`"Int64"`, `"Timestamp(µs,
//! \"UTC\")"`, `"Decimal128(10, 2)"`), parsed back with `DataType::from_str`.
//!
//! Writes match columns **by name, never by position**: [`plan_write`] decides once per
//! incoming schema how each frame column is filled, and [`WritePlan::apply`] turns every
//! incoming batch into a batch exactly in the frame's schema.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use super::LakeError;
use super::names::{NameKind, validate_name};

/// One column of a frame, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameField {
    /// Column name (case-sensitive).
    pub name: String,
    /// Arrow type; stored in JSON as its display string under the key `type`.
    #[serde(rename = "type", with = "data_type_string")]
    pub data_type: DataType,
    /// Whether the column may hold nulls.
    pub nullable: bool,
}

/// A frame's schema: its columns in order. Serialized as `{"fields": [{"name", "type",
/// "nullable"}, ...]}`; field metadata is not kept.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FrameSchema {
    /// The columns, in the frame's order.
    pub fields: Vec<FrameField>,
}

impl FrameSchema {
    /// The frame schema of an arrow schema (field metadata is dropped).
    pub fn from_arrow(schema: &Schema) -> Self {
        let fields = schema
            .fields()
            .iter()
            .map(|f| FrameField {
                name: f.name().clone(),
                data_type: f.data_type().clone(),
                nullable: f.is_nullable(),
            })
            .collect();
        Self { fields }
    }

    /// The arrow schema with these fields, in order.
    pub fn to_arrow(&self) -> Schema {
        Schema::new(
            self.fields
                .iter()
                .map(|f| Field::new(&f.name, f.data_type.clone(), f.nullable))
                .collect::<Vec<_>>(),
        )
    }

    /// The field named `name`, if any (case-sensitive).
    pub fn field(&self, name: &str) -> Option<&FrameField> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Checks that every column name is valid ([`NameKind::Column`]) and distinct.
    ///
    /// # Errors
    /// [`LakeError::InvalidName`] or [`LakeError::DuplicateColumn`] for the first offender.
    pub fn validate(&self) -> Result<(), LakeError> {
        let mut seen = HashSet::new();
        for field in &self.fields {
            validate_name(NameKind::Column, &field.name)?;
            if !seen.insert(field.name.as_str()) {
                return Err(LakeError::DuplicateColumn {
                    column: field.name.clone(),
                });
            }
        }
        Ok(())
    }
}

impl From<&Schema> for FrameSchema {
    fn from(schema: &Schema) -> Self {
        Self::from_arrow(schema)
    }
}

impl From<&FrameSchema> for Schema {
    fn from(schema: &FrameSchema) -> Self {
        schema.to_arrow()
    }
}

/// `DataType` as its `Display` string, parsed back with `FromStr`.
mod data_type_string {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(
        data_type: &DataType,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(data_type)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DataType, D::Error> {
        let text = String::deserialize(deserializer)?;
        DataType::from_str(&text)
            .map_err(|e| serde::de::Error::custom(format!("unknown type `{text}`: {e}")))
    }
}

/// Whether values of type `from` may be stored in a frame column of type `to` by a write
/// (besides `from == to`). These are the only conversions a write makes:
///
/// | Incoming | May be stored as |
/// |---|---|
/// | Int8 | Int16, Int32, Int64, Float32, Float64 |
/// | Int16 | Int32, Int64, Float32, Float64 |
/// | Int32 | Int64, Float64 |
/// | Int64 | Float64 (rounds beyond 2^53) |
/// | UInt8 | UInt16, UInt32, UInt64, Int16, Int32, Int64, Float32, Float64 |
/// | UInt16 | UInt32, UInt64, Int32, Int64, Float32, Float64 |
/// | UInt32 | UInt64, Int64, Float64 |
/// | UInt64 | Float64 (rounds beyond 2^53) |
/// | Float32 | Float64 |
/// | Date32 | Date64 |
/// | Timestamp(unit, tz) | Timestamp(finer unit, same tz); a value out of range fails the write |
/// | Utf8, LargeUtf8, Utf8View | each other |
/// | Binary, LargeBinary, BinaryView | each other |
/// | Decimal128(p, s) | Decimal128(p2, s2) with s2 ≥ s and p2 − s2 ≥ p − s |
/// | Null (an untyped `NULL` column) | any type (nulls still obey NOT NULL) |
/// | nested types | only the same type up to inner field names |
///
/// Everything else (narrowing, signed to unsigned, float to int, strings to numbers, a
/// change of timezone) is rejected: the query should cast explicitly.
pub fn widens_safely(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    match (from, to) {
        (Null, _) => true,
        (Int8, Int16 | Int32 | Int64 | Float32 | Float64) => true,
        (Int16, Int32 | Int64 | Float32 | Float64) => true,
        (Int32, Int64 | Float64) => true,
        (Int64, Float64) => true,
        (UInt8, UInt16 | UInt32 | UInt64 | Int16 | Int32 | Int64 | Float32 | Float64) => true,
        (UInt16, UInt32 | UInt64 | Int32 | Int64 | Float32 | Float64) => true,
        (UInt32, UInt64 | Int64 | Float64) => true,
        (UInt64, Float64) => true,
        (Float32, Float64) => true,
        (Date32, Date64) => true,
        (Timestamp(from_unit, from_tz), Timestamp(to_unit, to_tz)) => {
            from_tz == to_tz && unit_rank(*to_unit) > unit_rank(*from_unit)
        }
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (Decimal128(p1, s1), Decimal128(p2, s2)) => {
            s2 >= s1 && i16::from(*p2) - i16::from(*s2) >= i16::from(*p1) - i16::from(*s1)
        }
        _ => from.equals_datatype(to),
    }
}

fn unit_rank(unit: TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

/// How one frame column is filled from an incoming batch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ColumnSource {
    /// The incoming column at this index, as is.
    Take(usize),
    /// The incoming column at this index, cast to the frame's type.
    Cast(usize),
    /// Nulls: the column is nullable and missing from the incoming data.
    Nulls,
}

/// How batches of one incoming schema become batches of a frame's schema. Built by
/// [`plan_write`]; reuse it for every batch of the stream.
#[derive(Debug, Clone)]
pub struct WritePlan {
    frame: SchemaRef,
    incoming: SchemaRef,
    sources: Vec<ColumnSource>,
}

/// Plans how data with the `incoming` schema is stored in a frame with the `frame` schema.
///
/// Columns are matched by name (case-sensitive), never by position. Each frame column is
/// taken as is when the types are equal, cast when [`widens_safely`] allows it, or filled
/// with nulls when it is nullable and missing. Incoming columns the frame does not declare
/// are an error rather than silently dropped: a misspelt column name would otherwise lose
/// its data and fill the intended column with nulls.
///
/// # Errors
/// - [`LakeError::DuplicateColumn`] when either schema repeats a column name;
/// - [`LakeError::ExtraColumns`] listing every incoming column the frame lacks;
/// - [`LakeError::SchemaMismatch`] for the first column whose type does not widen safely;
/// - [`LakeError::MissingColumn`] for the first NOT NULL frame column the data lacks.
pub fn plan_write(frame: &Schema, incoming: &Schema) -> Result<WritePlan, LakeError> {
    check_distinct(frame)?;
    check_distinct(incoming)?;
    let extra: Vec<String> = incoming
        .fields()
        .iter()
        .filter(|f| frame.field_with_name(f.name()).is_err())
        .map(|f| f.name().clone())
        .collect();
    if !extra.is_empty() {
        return Err(LakeError::ExtraColumns { columns: extra });
    }
    let mut sources = Vec::with_capacity(frame.fields().len());
    for field in frame.fields() {
        let source = match incoming.index_of(field.name()) {
            Ok(index) => {
                let found = incoming.field(index).data_type();
                if found == field.data_type() {
                    ColumnSource::Take(index)
                } else if widens_safely(found, field.data_type()) {
                    ColumnSource::Cast(index)
                } else {
                    return Err(LakeError::SchemaMismatch {
                        column: field.name().clone(),
                        expected: field.data_type().clone(),
                        found: found.clone(),
                    });
                }
            }
            Err(_) if field.is_nullable() => ColumnSource::Nulls,
            Err(_) => {
                return Err(LakeError::MissingColumn {
                    column: field.name().clone(),
                });
            }
        };
        sources.push(source);
    }
    Ok(WritePlan {
        frame: Arc::new(frame.clone()),
        incoming: Arc::new(incoming.clone()),
        sources,
    })
}

fn check_distinct(schema: &Schema) -> Result<(), LakeError> {
    let mut seen = HashSet::new();
    for field in schema.fields() {
        if !seen.insert(field.name().as_str()) {
            return Err(LakeError::DuplicateColumn {
                column: field.name().clone(),
            });
        }
    }
    Ok(())
}

impl WritePlan {
    /// The schema every output batch has: the frame's.
    pub fn frame_schema(&self) -> &SchemaRef {
        &self.frame
    }

    /// Whether batches pass through unchanged (same columns, order and types).
    pub fn is_identity(&self) -> bool {
        self.frame.fields().len() == self.incoming.fields().len()
            && self
                .sources
                .iter()
                .enumerate()
                .all(|(i, s)| *s == ColumnSource::Take(i))
    }

    /// `batch` (which has the planned incoming schema) as a batch exactly in the frame's
    /// schema: the frame's column order, types and nullability.
    ///
    /// # Errors
    /// - [`LakeError::NullsInNonNullable`] when a NOT NULL frame column would get nulls,
    ///   with the number of nulls in the batch;
    /// - [`LakeError::ValueOutOfRange`] when a widening cast meets a value it cannot hold
    ///   (a timestamp beyond the finer unit's range);
    /// - [`LakeError::Internal`] when `batch` does not have the schema the plan was made for.
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch, LakeError> {
        if batch.schema_ref().fields() != self.incoming.fields() {
            return Err(LakeError::internal(
                "a batch does not have the schema its write plan was made for",
            ));
        }
        let rows = batch.num_rows();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.sources.len());
        for (field, source) in self.frame.fields().iter().zip(&self.sources) {
            let column = match source {
                ColumnSource::Take(index) => Arc::clone(batch.column(*index)),
                ColumnSource::Cast(index) => {
                    let options = CastOptions {
                        safe: false,
                        ..CastOptions::default()
                    };
                    cast_with_options(batch.column(*index), field.data_type(), &options).map_err(
                        |e| LakeError::ValueOutOfRange {
                            column: field.name().clone(),
                            expected: field.data_type().clone(),
                            message: e.to_string(),
                        },
                    )?
                }
                ColumnSource::Nulls => new_null_array(field.data_type(), rows),
            };
            let null_count = column.logical_null_count();
            if !field.is_nullable() && null_count > 0 {
                return Err(LakeError::NullsInNonNullable {
                    column: field.name().clone(),
                    null_count,
                });
            }
            columns.push(column);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(Arc::clone(&self.frame), columns, &options)
            .map_err(LakeError::internal)
    }
}

#[cfg(test)]
mod tests;
