//! User-defined functions: their signatures, and the DataFusion function that calls out
//! for them.
//!
//! A UDF lives in a wasm component the engine never sees. The engine knows its signature
//! and a [`FunctionCaller`] that runs it over one batch: inside a chamber that is the host's
//! `functions.call` import; on the host, where statements are only planned, [`NoFunctions`]
//! refuses. Arguments cross as an Arrow IPC stream of one batch and the answer comes back
//! the same way; the engine checks that it holds one column of the declared type with one
//! value per row before DataFusion sees it.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{ArrayRef, new_empty_array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use crate::{EngineError, decode_ipc_chunks};

/// A user-defined scalar function as SQL sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionSignature {
    /// The name SQL calls it by.
    pub name: String,
    /// Argument types, in order.
    pub args: Vec<DataType>,
    /// The type of its answer.
    pub returns: DataType,
    /// How its answer may change.
    pub volatility: Volatility,
}

impl FunctionSignature {
    /// A signature from its spelled-out parts: Arrow type names (`Int64`, `Utf8`,
    /// `Timestamp(Microsecond, None)`) and `immutable`, `stable` or `volatile`.
    ///
    /// # Errors
    /// [`EngineError::Sql`] naming the part that cannot be read.
    pub fn parse(
        name: &str,
        args: &[String],
        returns: &str,
        volatility: &str,
    ) -> Result<Self, EngineError> {
        let data_type = |spelled: &str| {
            spelled.trim().parse::<DataType>().map_err(|e| {
                EngineError::Sql(format!(
                    "function `{name}`: `{spelled}` is not an Arrow data type ({e})"
                ))
            })
        };
        let volatility = match volatility.trim().to_ascii_lowercase().as_str() {
            "immutable" => Volatility::Immutable,
            "stable" => Volatility::Stable,
            "volatile" => Volatility::Volatile,
            other => {
                return Err(EngineError::Sql(format!(
                    "function `{name}`: volatility `{other}` is not immutable, stable or volatile"
                )));
            }
        };
        Ok(Self {
            name: name.to_owned(),
            args: args
                .iter()
                .map(|a| data_type(a))
                .collect::<Result<_, _>>()?,
            returns: data_type(returns)?,
            volatility,
        })
    }

    /// Argument types as Arrow spells them.
    pub fn arg_names(&self) -> Vec<String> {
        self.args.iter().map(ToString::to_string).collect()
    }

    /// `immutable`, `stable` or `volatile`.
    pub fn volatility_name(&self) -> &'static str {
        match self.volatility {
            Volatility::Immutable => "immutable",
            Volatility::Stable => "stable",
            Volatility::Volatile => "volatile",
        }
    }
}

impl fmt::Display for FunctionSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}({}) -> {}",
            self.name,
            self.arg_names().join(", "),
            self.returns
        )
    }
}

/// Runs user-defined functions over one batch at a time.
pub trait FunctionCaller: Send + Sync + fmt::Debug {
    /// Run the function `name` over `args`, an Arrow IPC stream of one batch with one
    /// column per argument; the answer is an IPC stream of one batch of one column.
    ///
    /// # Errors
    /// The function's own message, or why it could not run.
    fn call(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, String>;
}

/// A caller for places that plan statements but never run them: every call is refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFunctions;

impl FunctionCaller for NoFunctions {
    fn call(&self, name: &str, _args: &[u8]) -> Result<Vec<u8>, String> {
        Err(format!("function `{name}` runs only inside a chamber"))
    }
}

/// Make `functions` callable from SQL in `ctx`, each call going through `caller`.
pub fn register_functions(
    ctx: &SessionContext,
    functions: &[FunctionSignature],
    caller: &Arc<dyn FunctionCaller>,
) {
    for function in functions {
        ctx.register_udf(ScalarUDF::new_from_impl(CalledFunction::new(
            function.clone(),
            caller.clone(),
        )));
    }
}

/// The DataFusion face of a user-defined function.
struct CalledFunction {
    function: FunctionSignature,
    signature: Signature,
    caller: Arc<dyn FunctionCaller>,
}

impl CalledFunction {
    fn new(function: FunctionSignature, caller: Arc<dyn FunctionCaller>) -> Self {
        Self {
            signature: Signature::exact(function.args.clone(), function.volatility),
            function,
            caller,
        }
    }

    fn error(&self, message: impl fmt::Display) -> DataFusionError {
        DataFusionError::Execution(format!("function `{}`: {message}", self.function.name))
    }

    /// Check the function's answer: one column of the declared type, one value per row.
    /// The answer's buffers are used in place, not copied.
    fn answer(&self, bytes: Vec<u8>, rows: usize) -> DfResult<ArrayRef> {
        let (_, batches) = decode_ipc_chunks(std::iter::once(bytes))
            .map_err(|e| self.error(format!("its answer is not an Arrow IPC stream: {e}")))?;
        let [batch] = batches.as_slice() else {
            return Err(self.error(format!(
                "it answered with {} batches where one was expected",
                batches.len()
            )));
        };
        let [column] = batch.columns() else {
            return Err(self.error(format!(
                "it answered with {} columns where one was expected",
                batch.num_columns()
            )));
        };
        if column.data_type() != &self.function.returns {
            return Err(self.error(format!(
                "it returned {} where its signature declares {}",
                column.data_type(),
                self.function.returns
            )));
        }
        if column.len() != rows {
            return Err(self.error(format!(
                "it returned {} values for {rows} rows",
                column.len()
            )));
        }
        Ok(column.clone())
    }
}

impl fmt::Debug for CalledFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CalledFunction")
            .field("function", &self.function)
            .finish_non_exhaustive()
    }
}

impl PartialEq for CalledFunction {
    fn eq(&self, other: &Self) -> bool {
        self.function == other.function && Arc::ptr_eq(&self.caller, &other.caller)
    }
}

impl Eq for CalledFunction {}

impl Hash for CalledFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.function.hash(state);
    }
}

impl ScalarUDFImpl for CalledFunction {
    fn name(&self) -> &str {
        &self.function.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.function.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        if rows == 0 {
            return Ok(ColumnarValue::Array(new_empty_array(
                &self.function.returns,
            )));
        }
        let columns = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("arg{i}"), c.data_type().clone(), true))
            .collect();
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        let mut request = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut request, &batch.schema())?;
            writer.write(&batch)?;
            writer.finish()?;
        }
        let answer = self
            .caller
            .call(&self.function.name, &request)
            .map_err(|message| self.error(message))?;
        self.answer(answer, rows).map(ColumnarValue::Array)
    }
}

#[cfg(test)]
mod tests;
