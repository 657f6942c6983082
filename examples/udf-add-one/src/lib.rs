//! An example user-defined function module for Apiary.
//!
//! It provides two functions, written against Arrow arrays so that each call handles a whole
//! batch of rows:
//!
//! - `add_one(x BIGINT) -> BIGINT`: `x + 1` (NULL stays NULL);
//! - `discounted(price DOUBLE, discount DOUBLE) -> DOUBLE`: `price * (1 - discount)`.
//!
//! Build it, register it in a lake, and call it (see `README.md` beside this file):
//!
//! ```text
//! rustup target add wasm32-wasip2
//! cargo build --release --target wasm32-wasip2 -p apiary-example-udf
//! apiary --lake ./lake udf add target/wasm32-wasip2/release/apiary_example_udf.wasm
//! apiary --lake ./lake sql "SELECT add_one(41)"
//! ```

#![allow(missing_docs)] // the generated bindings carry no docs; the WIT does

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/udf",
        world: "udf",
    });
}

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::buffer::Buffer;
use arrow::compute::kernels::numeric::{add_wrapping, mul, sub};
use arrow::datatypes::{Field, Schema};
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use bindings::apiary::udf::types::{Signature, Volatility};

struct Functions;

impl bindings::Guest for Functions {
    fn describe() -> Vec<Signature> {
        vec![
            Signature {
                name: "add_one".into(),
                args: vec!["Int64".into()],
                returns: "Int64".into(),
                volatility: Volatility::Immutable,
            },
            Signature {
                name: "discounted".into(),
                args: vec!["Float64".into(), "Float64".into()],
                returns: "Float64".into(),
                volatility: Volatility::Immutable,
            },
        ]
    }

    fn call(name: String, args: Vec<u8>) -> Result<Vec<u8>, String> {
        let args = read_batch(args).map_err(|e| format!("reading the arguments: {e}"))?;
        let answer = match name.as_str() {
            "add_one" => add_one(&args),
            "discounted" => discounted(&args),
            other => return Err(format!("this module has no function `{other}`")),
        };
        answer
            .and_then(write_column)
            .map_err(|e| format!("{name}: {e}"))
    }
}

/// `x + 1`, NULL staying NULL; like SQL's `+` in Apiary, it wraps on overflow.
fn add_one(args: &RecordBatch) -> Result<ArrayRef, ArrowError> {
    let x = args.column(0);
    let one = Int64Array::new_scalar(1);
    add_wrapping(x, &one)
}

/// `price * (1 - discount)`.
fn discounted(args: &RecordBatch) -> Result<ArrayRef, ArrowError> {
    let (price, discount) = (args.column(0), args.column(1));
    let one = Float64Array::new_scalar(1.0);
    mul(price, &sub(&one, discount)?)
}

/// The one batch of an Arrow IPC stream. The decoder uses the stream's buffers in place
/// instead of copying them out.
fn read_batch(bytes: Vec<u8>) -> Result<RecordBatch, ArrowError> {
    let mut buffer = Buffer::from(bytes);
    let mut decoder = StreamDecoder::new();
    while !buffer.is_empty() {
        if let Some(batch) = decoder.decode(&mut buffer)? {
            return Ok(batch);
        }
    }
    Err(ArrowError::IpcError("the stream holds no batch".into()))
}

/// An Arrow IPC stream of one batch holding `column`.
fn write_column(column: ArrayRef) -> Result<Vec<u8>, ArrowError> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "answer",
        column.data_type().clone(),
        column.null_count() > 0,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![column])?;
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &schema)?;
    writer.write(&batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

bindings::export!(Functions with_types_in bindings);
