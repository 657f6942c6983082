//! The engine's one error type.

use datafusion::error::DataFusionError;

/// Why a fragment could not be executed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The SQL could not be planned or executed: DataFusion's own message.
    #[error("{0}")]
    Sql(String),
    /// The fragment needed more memory than its pool allows (and could not spill).
    #[error("resources exhausted: {0}")]
    ResourcesExhausted(String),
    /// Reading a cell or emitting a result failed.
    #[error("I/O error: {0}")]
    Io(String),
    /// An invariant of the engine was broken: this is a bug.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

impl From<DataFusionError> for EngineError {
    fn from(err: DataFusionError) -> Self {
        // Operators wrap errors in context layers; classify by the innermost one, but keep
        // the full message the user would see from DataFusion itself.
        let message = err.to_string();
        match err.find_root() {
            DataFusionError::ResourcesExhausted(_) => EngineError::ResourcesExhausted(message),
            DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => {
                EngineError::Io(message)
            }
            DataFusionError::Internal(_) => EngineError::Internal(message),
            _ => EngineError::Sql(message),
        }
    }
}

impl From<arrow::error::ArrowError> for EngineError {
    fn from(err: arrow::error::ArrowError) -> Self {
        EngineError::Io(err.to_string())
    }
}
