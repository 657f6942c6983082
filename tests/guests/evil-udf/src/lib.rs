//! A hostile user-defined function module, for the host's containment tests.
//!
//! Every function takes one BIGINT and declares a BIGINT answer:
//!
//! | function       | what it does                                              |
//! |----------------|-----------------------------------------------------------|
//! | `add_two`      | behaves: `x + 2` (the node still serves after the others) |
//! | `bomb`         | allocates 16 MiB blocks until memory runs out             |
//! | `spin`         | loops forever                                             |
//! | `open_file`    | reads `/etc/passwd`, then lists `/`                       |
//! | `shout`        | prints 4 MiB to stdout                                    |
//! | `clock`        | answers the wall clock's seconds since the Unix epoch     |
//! | `env_count`    | answers the number of environment variables it can see   |
//! | `wrong_type`   | answers strings                                           |
//! | `wrong_length` | answers one value fewer than it was given rows            |

#![allow(missing_docs)]

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/udf",
        world: "udf",
    });
}

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bindings::apiary::udf::types::{Signature, Volatility};

const FUNCTIONS: [&str; 9] = [
    "add_two",
    "bomb",
    "spin",
    "open_file",
    "shout",
    "clock",
    "env_count",
    "wrong_type",
    "wrong_length",
];

struct Evil;

fn rows(args: &[u8]) -> Result<Int64Array, String> {
    let batch = StreamReader::try_new(args, None)
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no batch")?
        .map_err(|e| e.to_string())?;
    batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| "the argument is not Int64".to_owned())
}

fn answer(column: ArrayRef) -> Result<Vec<u8>, String> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "answer",
        column.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![column]).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &schema).map_err(|e| e.to_string())?;
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    Ok(out)
}

fn constant(value: i64, len: usize) -> ArrayRef {
    Arc::new(Int64Array::from(vec![value; len]))
}

impl bindings::Guest for Evil {
    fn describe() -> Vec<Signature> {
        FUNCTIONS
            .iter()
            .map(|name| Signature {
                name: (*name).into(),
                args: vec!["Int64".into()],
                returns: "Int64".into(),
                volatility: Volatility::Volatile,
            })
            .collect()
    }

    fn call(name: String, args: Vec<u8>) -> Result<Vec<u8>, String> {
        let x = rows(&args)?;
        let len = x.len();
        match name.as_str() {
            "add_two" => answer(Arc::new(
                x.iter().map(|v| v.map(|v| v + 2)).collect::<Int64Array>(),
            )),
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "open_file" => {
                let read = std::fs::read("/etc/passwd").map(|b| b.len());
                let listed = std::fs::read_dir("/").map(|d| d.count());
                match (read, listed) {
                    (Ok(bytes), _) => answer(constant(bytes as i64, len)),
                    (_, Ok(entries)) => answer(constant(entries as i64, len)),
                    (Err(read), Err(list)) => Err(format!(
                        "cannot read /etc/passwd ({read}) nor list / ({list})"
                    )),
                }
            }
            "shout" => {
                let line = "x".repeat(1023);
                for _ in 0..4096 {
                    println!("{line}");
                }
                answer(constant(0, len))
            }
            "clock" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(-1, |d| d.as_secs() as i64);
                answer(constant(now, len))
            }
            "env_count" => answer(constant(std::env::vars().count() as i64, len)),
            "wrong_type" => answer(Arc::new(StringArray::from(vec!["surprise"; len]))),
            "wrong_length" => answer(constant(1, len.saturating_sub(1))),
            other => Err(format!("no function {other}")),
        }
    }
}

bindings::export!(Evil with_types_in bindings);
