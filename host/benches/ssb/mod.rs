//! The Star Schema Benchmark (O'Neil et al.): five tables and 13 queries in four flights.
//!
//! SSB's own generator derives its tables from TPC-H's; no generator is packaged for Rust,
//! so [`derive`] does the same derivation in SQL from the TPC-H Parquet files of the same
//! scale factor: `lineorder` is lineitem joined to orders (and partsupp for the supply
//! cost), with dates as `yyyymmdd` integers and money in cents; customers and suppliers get
//! SSB's cities (the first 9 letters of the nation and a digit); parts get SSB's
//! manufacturer, category and brand codes; `dwdate` holds every day of 1992..1998 (named so
//! because `date` is a keyword). The values differ from an official SSB data set, but every
//! engine in the benchmark reads the same files, and the queries keep their selectivities.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use apiary_host::cell_writer_properties;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;

/// The five SSB tables.
pub const TABLES: [&str; 5] = ["lineorder", "customer", "supplier", "part", "dwdate"];

/// How each table is derived from the TPC-H tables.
const DERIVE: [(&str, &str); 5] = [
    (
        "lineorder",
        "SELECT l_orderkey AS lo_orderkey, l_linenumber AS lo_linenumber,
                o_custkey AS lo_custkey, l_partkey AS lo_partkey, l_suppkey AS lo_suppkey,
                CAST(to_char(o_orderdate, '%Y%m%d') AS INT) AS lo_orderdate,
                o_orderpriority AS lo_orderpriority, o_shippriority AS lo_shippriority,
                CAST(l_quantity AS INT) AS lo_quantity,
                CAST(l_extendedprice * 100 AS BIGINT) AS lo_extendedprice,
                CAST(o_totalprice * 100 AS BIGINT) AS lo_ordtotalprice,
                CAST(l_discount * 100 AS INT) AS lo_discount,
                CAST(l_extendedprice * (1 - l_discount) * 100 AS BIGINT) AS lo_revenue,
                CAST(ps_supplycost * 100 AS BIGINT) AS lo_supplycost,
                CAST(l_tax * 100 AS INT) AS lo_tax,
                CAST(to_char(l_commitdate, '%Y%m%d') AS INT) AS lo_commitdate,
                l_shipmode AS lo_shipmode
         FROM lineitem
         JOIN orders ON l_orderkey = o_orderkey
         JOIN partsupp ON l_partkey = ps_partkey AND l_suppkey = ps_suppkey
         ORDER BY lo_orderkey, lo_linenumber",
    ),
    (
        "customer",
        "SELECT c_custkey, c_name, c_address,
                concat(rpad(substr(n_name, 1, 9), 9, ' '), CAST(c_custkey % 10 AS VARCHAR)) AS c_city,
                n_name AS c_nation, r_name AS c_region, c_phone, c_mktsegment
         FROM customer
         JOIN nation ON c_nationkey = n_nationkey
         JOIN region ON n_regionkey = r_regionkey
         ORDER BY c_custkey",
    ),
    (
        "supplier",
        "SELECT s_suppkey, s_name, s_address,
                concat(rpad(substr(n_name, 1, 9), 9, ' '), CAST(s_suppkey % 10 AS VARCHAR)) AS s_city,
                n_name AS s_nation, r_name AS s_region, s_phone
         FROM supplier
         JOIN nation ON s_nationkey = n_nationkey
         JOIN region ON n_regionkey = r_regionkey
         ORDER BY s_suppkey",
    ),
    (
        "part",
        "SELECT p_partkey, p_name,
                concat('MFGR#', substr(p_mfgr, 14, 1)) AS p_mfgr,
                concat('MFGR#', substr(p_brand, 7, 2)) AS p_category,
                concat('MFGR#', substr(p_brand, 7, 2), CAST(p_partkey % 40 + 1 AS VARCHAR)) AS p_brand1,
                p_type, p_size, p_container
         FROM part
         ORDER BY p_partkey",
    ),
    (
        "dwdate",
        "SELECT CAST(to_char(d, '%Y%m%d') AS INT) AS d_datekey,
                to_char(d, '%A') AS d_dayofweek,
                to_char(d, '%B') AS d_month,
                CAST(date_part('year', d) AS INT) AS d_year,
                CAST(date_part('year', d) * 100 + date_part('month', d) AS INT) AS d_yearmonthnum,
                to_char(d, '%b%Y') AS d_yearmonth,
                CAST(date_part('day', d) AS INT) AS d_daynuminmonth,
                CAST(date_part('month', d) AS INT) AS d_monthnuminyear,
                CAST(date_part('week', d) AS INT) AS d_weeknuminyear
         FROM (SELECT CAST(CAST(CAST(DATE '1992-01-01' AS INT) + value AS INT) AS DATE) AS d
               FROM generate_series(0, 2556))
         ORDER BY d_datekey",
    ),
];

/// The 13 SSB queries, over `dwdate` for SSB's `date`.
pub const QUERIES: &[(&str, &str)] = &[
    (
        "q1.1",
        "SELECT sum(lo_extendedprice * lo_discount) AS revenue
         FROM lineorder, dwdate
         WHERE lo_orderdate = d_datekey AND d_year = 1993
           AND lo_discount BETWEEN 1 AND 3 AND lo_quantity < 25",
    ),
    (
        "q1.2",
        "SELECT sum(lo_extendedprice * lo_discount) AS revenue
         FROM lineorder, dwdate
         WHERE lo_orderdate = d_datekey AND d_yearmonthnum = 199401
           AND lo_discount BETWEEN 4 AND 6 AND lo_quantity BETWEEN 26 AND 35",
    ),
    (
        "q1.3",
        "SELECT sum(lo_extendedprice * lo_discount) AS revenue
         FROM lineorder, dwdate
         WHERE lo_orderdate = d_datekey AND d_weeknuminyear = 6 AND d_year = 1994
           AND lo_discount BETWEEN 5 AND 7 AND lo_quantity BETWEEN 26 AND 35",
    ),
    (
        "q2.1",
        "SELECT sum(lo_revenue) AS revenue, d_year, p_brand1
         FROM lineorder, dwdate, part, supplier
         WHERE lo_orderdate = d_datekey AND lo_partkey = p_partkey AND lo_suppkey = s_suppkey
           AND p_category = 'MFGR#12' AND s_region = 'AMERICA'
         GROUP BY d_year, p_brand1
         ORDER BY d_year, p_brand1",
    ),
    (
        "q2.2",
        "SELECT sum(lo_revenue) AS revenue, d_year, p_brand1
         FROM lineorder, dwdate, part, supplier
         WHERE lo_orderdate = d_datekey AND lo_partkey = p_partkey AND lo_suppkey = s_suppkey
           AND p_brand1 BETWEEN 'MFGR#2221' AND 'MFGR#2228' AND s_region = 'ASIA'
         GROUP BY d_year, p_brand1
         ORDER BY d_year, p_brand1",
    ),
    (
        "q2.3",
        "SELECT sum(lo_revenue) AS revenue, d_year, p_brand1
         FROM lineorder, dwdate, part, supplier
         WHERE lo_orderdate = d_datekey AND lo_partkey = p_partkey AND lo_suppkey = s_suppkey
           AND p_brand1 = 'MFGR#2239' AND s_region = 'EUROPE'
         GROUP BY d_year, p_brand1
         ORDER BY d_year, p_brand1",
    ),
    (
        "q3.1",
        "SELECT c_nation, s_nation, d_year, sum(lo_revenue) AS revenue
         FROM customer, lineorder, supplier, dwdate
         WHERE lo_custkey = c_custkey AND lo_suppkey = s_suppkey AND lo_orderdate = d_datekey
           AND c_region = 'ASIA' AND s_region = 'ASIA' AND d_year >= 1992 AND d_year <= 1997
         GROUP BY c_nation, s_nation, d_year
         ORDER BY d_year ASC, revenue DESC, c_nation, s_nation",
    ),
    (
        "q3.2",
        "SELECT c_city, s_city, d_year, sum(lo_revenue) AS revenue
         FROM customer, lineorder, supplier, dwdate
         WHERE lo_custkey = c_custkey AND lo_suppkey = s_suppkey AND lo_orderdate = d_datekey
           AND c_nation = 'UNITED STATES' AND s_nation = 'UNITED STATES'
           AND d_year >= 1992 AND d_year <= 1997
         GROUP BY c_city, s_city, d_year
         ORDER BY d_year ASC, revenue DESC, c_city, s_city",
    ),
    (
        "q3.3",
        "SELECT c_city, s_city, d_year, sum(lo_revenue) AS revenue
         FROM customer, lineorder, supplier, dwdate
         WHERE lo_custkey = c_custkey AND lo_suppkey = s_suppkey AND lo_orderdate = d_datekey
           AND (c_city = 'UNITED KI1' OR c_city = 'UNITED KI5')
           AND (s_city = 'UNITED KI1' OR s_city = 'UNITED KI5')
           AND d_year >= 1992 AND d_year <= 1997
         GROUP BY c_city, s_city, d_year
         ORDER BY d_year ASC, revenue DESC, c_city, s_city",
    ),
    (
        "q3.4",
        "SELECT c_city, s_city, d_year, sum(lo_revenue) AS revenue
         FROM customer, lineorder, supplier, dwdate
         WHERE lo_custkey = c_custkey AND lo_suppkey = s_suppkey AND lo_orderdate = d_datekey
           AND (c_city = 'UNITED KI1' OR c_city = 'UNITED KI5')
           AND (s_city = 'UNITED KI1' OR s_city = 'UNITED KI5')
           AND d_yearmonth = 'Dec1997'
         GROUP BY c_city, s_city, d_year
         ORDER BY d_year ASC, revenue DESC, c_city, s_city",
    ),
    (
        "q4.1",
        "SELECT d_year, c_nation, sum(lo_revenue - lo_supplycost) AS profit
         FROM dwdate, customer, supplier, part, lineorder
         WHERE lo_custkey = c_custkey AND lo_suppkey = s_suppkey AND lo_partkey = p_partkey
           AND lo_orderdate = d_datekey AND c_region = 'AMERICA' AND s_region = 'AMERICA'
           AND (p_mfgr = 'MFGR#1' OR p_mfgr = 'MFGR#2')
         GROUP BY d_year, c_nation
         ORDER BY d_year, c_nation",
    ),
    (
        "q4.2",
        "SELECT d_year, s_nation, p_category, sum(lo_revenue - lo_supplycost) AS profit
         FROM dwdate, customer, supplier, part, lineorder
         WHERE lo_custkey = c_custkey AND lo_suppkey = s_suppkey AND lo_partkey = p_partkey
           AND lo_orderdate = d_datekey AND c_region = 'AMERICA' AND s_region = 'AMERICA'
           AND (d_year = 1997 OR d_year = 1998) AND (p_mfgr = 'MFGR#1' OR p_mfgr = 'MFGR#2')
         GROUP BY d_year, s_nation, p_category
         ORDER BY d_year, s_nation, p_category",
    ),
    (
        "q4.3",
        "SELECT d_year, s_city, p_brand1, sum(lo_revenue - lo_supplycost) AS profit
         FROM dwdate, customer, supplier, part, lineorder
         WHERE lo_custkey = c_custkey AND lo_suppkey = s_suppkey AND lo_partkey = p_partkey
           AND lo_orderdate = d_datekey AND s_nation = 'UNITED STATES'
           AND (d_year = 1997 OR d_year = 1998) AND p_category = 'MFGR#14'
         GROUP BY d_year, s_city, p_brand1
         ORDER BY d_year, s_city, p_brand1",
    ),
];

/// Write the SSB tables to `<ssb>/<table>.parquet` from the TPC-H files in `tpch`, unless
/// they are already there.
pub async fn derive(tpch: &Path, ssb: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(ssb)?;
    let ctx = SessionContext::new();
    super::register_files(&ctx, tpch, &apiary_host::TPCH_TABLES).await?;
    for (table, sql) in DERIVE {
        let path: PathBuf = ssb.join(format!("{table}.parquet"));
        if path.is_file() {
            continue;
        }
        let started = std::time::Instant::now();
        let frame = ctx.sql(sql).await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let tmp = ssb.join(format!(".{table}.{}.tmp", std::process::id()));
        let mut writer = ArrowWriter::try_new(
            std::fs::File::create(&tmp)?,
            schema,
            Some(cell_writer_properties()),
        )?;
        let mut stream = frame.execute_stream().await?;
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows();
            writer.write(&batch)?;
        }
        writer.close()?;
        std::fs::rename(&tmp, &path)?;
        println!(
            "  derived SSB {table}: {rows} rows in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
