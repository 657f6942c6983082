//! The `apiary` binary: parses arguments and hands off to the library.

fn main() -> anyhow::Result<()> {
    let guest = apiary_host::find_guest()?;
    println!(
        "apiary {}: chamber guest at {}",
        env!("CARGO_PKG_VERSION"),
        guest.display()
    );
    Ok(())
}
