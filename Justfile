# Apiary: the one entry point. `just --list` shows every recipe.
#
# One target dir for everything (set CARGO_TARGET_DIR to keep it outside the clone), one
# release profile for the host, the tests and the guests: DataFusion is built once per target.

set shell := ["bash", "-euo", "pipefail", "-c"]

target := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() / "target")

# List the recipes.
default:
    @just --list

# Install what a fresh Debian machine needs: clang, lld and wasi-libc (zstd for the guest) and the wasm target.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=""
    for tool in clang wasm-ld llvm-ar; do command -v "$tool" >/dev/null || missing=1; done
    [ -f /usr/include/wasm32-wasi/stdlib.h ] || missing=1
    if [ -n "$missing" ]; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq clang lld llvm wasi-libc >/dev/null
    fi
    rustup target add wasm32-wasip2 >/dev/null

# Build the chamber guest and the hostile test guest (wasm32-wasip2 components, release).
build-guest:
    cargo build --locked --release --target wasm32-wasip2 -p apiary-guest -p apiary-evil-guest

# Build the guests and the host binary.
build: build-guest
    cargo build --locked --release -p apiary-host

# Run every test (engine natively, host against real chambers).
test: build-guest
    cargo test --locked --release

# Formatting, lints (warnings are errors) and the tests: what CI runs.
check: build-guest
    cargo fmt --all --check
    cargo clippy --locked --release --workspace --all-targets -- -D warnings
    cargo test --locked --release

# A first look: run TPC-H Q1 and Q6 in a chamber and natively (SF 0.1).
demo: build
    cargo bench --locked -p apiary-host --bench chamber -- --scale 0.1 --runs 1

# The chamber benchmark: TPC-H Q1 and Q6 over lineitem SF1, one bee vs native DataFusion.
bench-chamber: build-guest
    cargo bench --locked -p apiary-host --bench chamber -- --scale 1 --runs 5

# Lake writes: commit throughput (1 and 4 writers) and a lineitem SF1 load vs the native Parquet writer.
bench-lake:
    cargo bench --locked -p apiary-host --bench lake -- --scale 1 --commits 200

# Every benchmark.
bench: bench-chamber bench-lake
