//! Rebuild when the UDF contract changes: the bindings macro reads it at compile time.

const WIT: &str = "../../../wit/udf";

fn main() {
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(WIT);
    println!("cargo:rerun-if-changed={}", wit.display());
}
