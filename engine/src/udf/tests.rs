use arrow::array::{Array, Int64Array, StringArray};
use arrow::util::pretty::pretty_format_batches;

use arrow::ipc::reader::StreamReader;

use super::*;

/// Functions run natively: what a UDF module does, without the component around it.
#[derive(Debug, Default)]
struct NativeFunctions;

fn read_args(bytes: &[u8]) -> RecordBatch {
    let mut reader = StreamReader::try_new(bytes, None).expect("args stream");
    reader.next().expect("one batch").expect("batch")
}

fn write_column(column: ArrayRef) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "answer",
        column.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![column]).expect("batch");
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &schema).expect("writer");
    writer.write(&batch).expect("write");
    writer.finish().expect("finish");
    drop(writer);
    out
}

impl FunctionCaller for NativeFunctions {
    fn call(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        let args = read_args(args);
        let first = args
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or("not Int64")?;
        let column: ArrayRef = match name {
            "add_one" => Arc::new(
                first
                    .iter()
                    .map(|v| v.map(|v| v + 1))
                    .collect::<Int64Array>(),
            ),
            "wrong_type" => Arc::new(StringArray::from(vec!["x"; first.len()])),
            "wrong_length" => Arc::new(Int64Array::from(vec![1; first.len() - 1])),
            "refuse" => return Err("no, thank you".into()),
            "garbage" => return Ok(b"not arrow".to_vec()),
            _ => return Err(format!("unknown function {name}")),
        };
        Ok(write_column(column))
    }
}

fn signature(name: &str) -> FunctionSignature {
    FunctionSignature::parse(name, &["Int64".into()], "Int64", "immutable").expect("signature")
}

async fn query(sql: &str) -> Result<String, DataFusionError> {
    let ctx = SessionContext::new();
    let caller: Arc<dyn FunctionCaller> = Arc::new(NativeFunctions);
    let functions: Vec<FunctionSignature> =
        ["add_one", "wrong_type", "wrong_length", "refuse", "garbage"]
            .into_iter()
            .map(signature)
            .collect();
    register_functions(&ctx, &functions, &caller);
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok(pretty_format_batches(&batches)?.to_string())
}

const VALUES: &str = "(VALUES (CAST(1 AS BIGINT)), (NULL), (41)) AS t(x)";

#[tokio::test]
async fn a_function_runs_over_each_batch_and_keeps_nulls() {
    let out = query(&format!(
        "SELECT x, add_one(x) AS y FROM {VALUES} ORDER BY x"
    ))
    .await
    .expect("query");
    let expected = "\
+----+----+
| x  | y  |
+----+----+
| 1  | 2  |
| 41 | 42 |
|    |    |
+----+----+";
    assert_eq!(out, expected);
}

#[tokio::test]
async fn a_literal_argument_becomes_a_column_of_the_batch_length() {
    let out = query(&format!("SELECT add_one(5) AS y FROM {VALUES}"))
        .await
        .expect("query");
    assert_eq!(out.matches("| 6 |").count(), 3, "{out}");
}

#[tokio::test]
async fn wrong_answers_are_named() {
    for (name, expected) in [
        (
            "wrong_type",
            "function `wrong_type`: it returned Utf8 where its signature declares Int64",
        ),
        (
            "wrong_length",
            "function `wrong_length`: it returned 2 values for 3 rows",
        ),
        ("refuse", "function `refuse`: no, thank you"),
        (
            "garbage",
            "function `garbage`: its answer is not an Arrow IPC stream",
        ),
    ] {
        let err = query(&format!("SELECT {name}(x) FROM {VALUES}"))
            .await
            .expect_err(name)
            .to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
}

#[tokio::test]
async fn arguments_of_another_type_are_refused_at_planning() {
    let err = query("SELECT add_one('text')")
        .await
        .expect_err("a string is not an Int64")
        .to_string();
    assert!(err.contains("add_one"), "{err}");
}

#[tokio::test]
async fn the_planning_caller_refuses_to_run_functions() {
    let ctx = SessionContext::new();
    let caller: Arc<dyn FunctionCaller> = Arc::new(NoFunctions);
    register_functions(&ctx, &[signature("add_one")], &caller);
    let err = ctx
        .sql(&format!("SELECT add_one(x) FROM {VALUES}"))
        .await
        .expect("plans")
        .collect()
        .await
        .expect_err("cannot run")
        .to_string();
    assert!(err.contains("runs only inside a chamber"), "{err}");
}

#[test]
fn signatures_parse_arrow_type_names_and_refuse_unknown_ones() {
    let sig = FunctionSignature::parse(
        "f",
        &[
            "Int64".into(),
            "Utf8".into(),
            "Timestamp(Microsecond, None)".into(),
        ],
        "Float64",
        "Volatile",
    )
    .expect("parses");
    assert_eq!(sig.args[1], DataType::Utf8);
    assert_eq!(sig.volatility, Volatility::Volatile);
    assert_eq!(
        sig.to_string(),
        format!("f(Int64, Utf8, {}) -> Float64", sig.args[2])
    );
    let err = FunctionSignature::parse("f", &["Integer".into()], "Int64", "immutable")
        .expect_err("unknown type");
    assert!(
        err.to_string()
            .contains("`Integer` is not an Arrow data type"),
        "{err}"
    );
    let err = FunctionSignature::parse("f", &[], "Int64", "sometimes").expect_err("bad volatility");
    assert!(err.to_string().contains("volatility `sometimes`"), "{err}");
}
