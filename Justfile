# Apiary: the one entry point. `just --list` shows every recipe.
#
# One target dir for everything (set CARGO_TARGET_DIR to keep it outside the clone), one
# release profile for the host, the tests and the guests: DataFusion is built once per target.

set shell := ["bash", "-euo", "pipefail", "-c"]

target := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() / "target")

# Where `just setup` installs the S3-compatible test server (moto); tests find it through
# APIARY_S3_PYTHON.
s3_venv := env_var_or_default("APIARY_S3_VENV", env_var("HOME") / ".cache/apiary/s3-venv")
export APIARY_S3_PYTHON := s3_venv / "bin/python"

# List the recipes.
default:
    @just --list

# Install what a fresh Debian machine needs: clang, lld and wasi-libc (zstd for the guest) and the wasm target.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=""
    for tool in clang wasm-ld llvm-ar python3; do command -v "$tool" >/dev/null || missing=1; done
    [ -f /usr/include/wasm32-wasi/stdlib.h ] || missing=1
    python3 -c "import venv, ensurepip" 2>/dev/null || missing=1
    if [ -n "$missing" ]; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq clang lld llvm wasi-libc python3 python3-venv >/dev/null
    fi
    rustup target add wasm32-wasip2 >/dev/null
    # The S3-compatible test server (moto, from PyPI) in its own virtualenv.
    if ! "{{s3_venv}}/bin/python" -c "import moto.server" 2>/dev/null; then
        python3 -m venv "{{s3_venv}}"
        "{{s3_venv}}/bin/pip" install -q "moto[server]==5.2.5"
    fi

# Build the chamber guest, the hostile test guests and the example function module (wasm32-wasip2 components, release).
build-guest:
    cargo build --locked --release --target wasm32-wasip2 -p apiary-guest -p apiary-evil-guest -p apiary-evil-udf -p apiary-example-udf

# Build the guests and the host binary.
build: build-guest
    cargo build --locked --release -p apiary-host

# Run every test (engine natively, host against real chambers).
test: build-guest
    cargo test --locked --release

# Formatting, lints (warnings are errors), the tests and the examples: what CI runs.
check: build-guest
    cargo fmt --all --check
    cargo clippy --locked --release --workspace --all-targets -- -D warnings
    cargo test --locked --release
    just examples

# The narrated examples of the Rust API.
examples: build-guest
    cargo run --locked --release -p apiary-host --example quickstart
    cargo run --locked --release -p apiary-host --example two_nodes

# A first look: a local lake with TPC-H at SF 0.1, a few queries with their plans, and how to open the shell.
demo: build
    #!/usr/bin/env bash
    set -euo pipefail
    apiary="{{target}}/release/apiary"
    lake="{{target}}/demo/lake"
    data="{{target}}/demo/tpch-sf0.1"
    echo "== generating TPC-H at scale 0.1 in $data"
    "$apiary" generate --scale 0.1 --out "$data" lineitem orders customer nation >/dev/null
    rm -rf "$lake"
    echo "== loading it into a lake at $lake (lineitem partitioned by ship mode)"
    "$apiary" --lake "$lake" load "$data/lineitem.parquet" INTO tpch.sf01.lineitem --create --partition-by l_shipmode
    for t in orders customer nation; do "$apiary" --lake "$lake" load "$data/$t.parquet" INTO "tpch.sf01.$t" --create; done
    run() { echo; echo "== apiary sql \"$1\""; "$apiary" --lake "$lake" sql "USE tpch.sf01" "$1"; }
    run "DESCRIBE lineitem"
    run "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS qty, avg(l_extendedprice) AS avg_price, count(*) AS n FROM lineitem WHERE l_shipdate <= DATE '1998-09-02' GROUP BY 1, 2 ORDER BY 1, 2"
    run "SELECT n_name, count(*) AS orders FROM orders JOIN customer ON o_custkey = c_custkey JOIN nation ON c_nationkey = n_nationkey GROUP BY n_name ORDER BY orders DESC LIMIT 5"
    run "EXPLAIN ANALYZE SELECT l_shipmode, count(*) FROM lineitem WHERE l_shipmode IN ('AIR', 'MAIL') GROUP BY l_shipmode"
    echo
    echo "== the same lake in the interactive shell:"
    echo "   $apiary --lake $lake shell"

# The chamber benchmark: TPC-H Q1 and Q6 over lineitem SF1, one bee vs native DataFusion; then user-defined functions vs built-in expressions.
bench-chamber: build-guest
    cargo bench --locked -p apiary-host --bench chamber -- --scale 1 --runs 5

# Lake writes: commit throughput (1 and 4 writers) and a lineitem SF1 load vs the native Parquet writer.
bench-lake:
    cargo bench --locked -p apiary-host --bench lake -- --scale 1 --commits 200

# TPC-H side by side: Apiary, native DataFusion and DuckDB over the same Parquet files (SF 1, all 22 queries).
bench-tpch *ARGS: build-guest
    python3 -c 'import duckdb' 2>/dev/null || python3 -m pip install --quiet duckdb==2.0.1
    cargo bench --locked -p apiary-host --bench tpch -- --scale 1 --runs 2 --rounds 3 {{ARGS}}

# SSB side by side, the same way (SF 1, 13 queries, tables derived from TPC-H's).
bench-ssb *ARGS: (bench-tpch "--suite ssb" ARGS)

# The variants: one bee, two nodes on this machine, a 1 GiB Pi, fact tables in date order.
bench-variants:
    just bench-tpch --profile one-bee
    just bench-tpch --profile two-nodes --budget-mib 256
    just bench-tpch --profile pi-1g
    just bench-tpch --layout by-date
    just bench-ssb --layout by-date

# Coordination overhead of distributed statements: 2 worker nodes and a coordinator on a local lake.
bench-swarm: build-guest
    cargo bench --locked -p apiary-host --bench swarm -- --scale 0.1 --runs 15

# Every benchmark.
bench: bench-chamber bench-lake bench-tpch bench-ssb bench-variants bench-swarm
