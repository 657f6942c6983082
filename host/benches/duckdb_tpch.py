"""Run TPC-H or SSB queries with DuckDB over Parquet files, for Apiary's `tpch` benchmark.

Reads a JSON list of {"name", "sql"} on stdin, runs each query `--runs` times with
`--threads` threads over views of `<data>/<table>.parquet` for each of `--tables` (the TPC-H
tables by default), and prints one JSON object:
{"version", "peak_rss_bytes", "queries": [{"name", "median_ms", "times_ms", "rows": [[...], ...]}]}.
Values are printed as strings so the caller compares them the same way for every engine.
"""

import argparse
import json
import statistics
import sys
import time

import duckdb

TABLES = ["lineitem", "orders", "customer", "part", "partsupp", "supplier", "nation", "region"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tables", default=",".join(TABLES))
    args = parser.parse_args()

    queries = json.load(sys.stdin)
    con = duckdb.connect()
    con.execute(f"PRAGMA threads={args.threads}")
    for table in args.tables.split(","):
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{args.data}/{table}.parquet')"
        )
    out = []
    for query in queries:
        times = []
        rows = []
        for _ in range(args.runs):
            started = time.perf_counter()
            rows = con.execute(query["sql"]).fetchall()
            times.append((time.perf_counter() - started) * 1000.0)
        out.append(
            {
                "name": query["name"],
                "median_ms": statistics.median(times),
                "times_ms": times,
                "rows": [[None if v is None else str(v) for v in row] for row in rows],
            }
        )
    # VmHWM belongs to this process image; ru_maxrss would include the parent's peak from
    # before exec.
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    json.dump({"version": duckdb.__version__, "peak_rss_bytes": peak, "queries": out}, sys.stdout)


if __name__ == "__main__":
    main()
