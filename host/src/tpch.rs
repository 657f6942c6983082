//! TPC-H data as Parquet files, for tests, benchmarks and the demo.
//!
//! Tables are generated with the `tpchgen` crates straight into Arrow and written with the
//! cell format (LZ4, per-column statistics). A file that already exists is reused; a new one
//! is written to a temporary name and renamed, so an interrupted run never leaves a torn file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::arrow::record_batch::RecordBatchReader;
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

use crate::{Error, Result};

/// The eight TPC-H tables.
pub const TPCH_TABLES: [&str; 8] = [
    "lineitem", "orders", "customer", "part", "partsupp", "supplier", "nation", "region",
];

const BATCH_ROWS: usize = 64 * 1024;

/// The Parquet writer settings of a cell: LZ4, statistics on every column.
pub fn cell_writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::LZ4_RAW)
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}

fn reader(table: &str, scale: f64) -> Option<Box<dyn RecordBatchReader + Send>> {
    Some(match table {
        "lineitem" => Box::new(
            LineItemArrow::new(LineItemGenerator::new(scale, 1, 1)).with_batch_size(BATCH_ROWS),
        ),
        "orders" => {
            Box::new(OrderArrow::new(OrderGenerator::new(scale, 1, 1)).with_batch_size(BATCH_ROWS))
        }
        "customer" => Box::new(
            CustomerArrow::new(CustomerGenerator::new(scale, 1, 1)).with_batch_size(BATCH_ROWS),
        ),
        "part" => {
            Box::new(PartArrow::new(PartGenerator::new(scale, 1, 1)).with_batch_size(BATCH_ROWS))
        }
        "partsupp" => Box::new(
            PartSuppArrow::new(PartSuppGenerator::new(scale, 1, 1)).with_batch_size(BATCH_ROWS),
        ),
        "supplier" => Box::new(
            SupplierArrow::new(SupplierGenerator::new(scale, 1, 1)).with_batch_size(BATCH_ROWS),
        ),
        "nation" => Box::new(NationArrow::new(NationGenerator::new(scale, 1, 1))),
        "region" => Box::new(RegionArrow::new(RegionGenerator::new(scale, 1, 1))),
        _ => return None,
    })
}

/// Write TPC-H `table` at `scale` to `<dir>/<table>.parquet`, unless it is already there.
///
/// # Errors
/// [`Error::Config`] for an unknown table or a non-positive scale, [`Error::Io`] when the
/// file cannot be written.
pub fn generate_tpch(dir: &Path, table: &str, scale: f64) -> Result<PathBuf> {
    if !scale.is_finite() || scale <= 0.0 {
        return Err(Error::Config(format!(
            "TPC-H scale must be positive, not {scale}"
        )));
    }
    let path = dir.join(format!("{table}.parquet"));
    if path.is_file() {
        return Ok(path);
    }
    let mut batches = reader(table, scale).ok_or_else(|| {
        Error::Config(format!(
            "unknown TPC-H table `{table}`; expected one of {TPCH_TABLES:?}"
        ))
    })?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(".{table}.{}.tmp", std::process::id()));
    let to_io = |e: &dyn std::fmt::Display| Error::io(&tmp, std::io::Error::other(e.to_string()));
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut writer = ArrowWriter::try_new(
        file,
        Arc::clone(&batches.schema()),
        Some(cell_writer_properties()),
    )
    .map_err(|e| to_io(&e))?;
    for batch in &mut batches {
        let batch = batch.map_err(|e| to_io(&e))?;
        writer.write(&batch).map_err(|e| to_io(&e))?;
    }
    writer.close().map_err(|e| to_io(&e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}
