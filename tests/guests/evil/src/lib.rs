//! A hostile chamber guest, for the host's containment tests.
//!
//! It implements the same `chamber` world as the real guest, but reads its task's `sql` as a
//! command that tries to misbehave:
//!
//! | command            | what it tries                                   |
//! |--------------------|-------------------------------------------------|
//! | `read <path>`      | read a file (outside the scratch dir, say)      |
//! | `write <path>`     | create a file and read it back                  |
//! | `list <path>`      | list a directory                                |
//! | `alloc <bytes>`    | allocate and touch that much memory             |
//! | `residue <bytes>`  | grow memory that much, count its nonzero bytes  |
//! | `spin`             | loop forever                                    |
//! | `print <bytes>`    | write that many bytes to stderr                 |
//! | `env`              | count the environment variables it can see      |
//!
//! Success returns a summary whose `rows` is the number of bytes or entries involved;
//! a refused operation returns the `io` error with the system's message.

#![allow(missing_docs)]

#[allow(clippy::too_many_arguments)] // generated code
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "chamber",
    });
}

use bindings::apiary::chamber::types::{ChamberError, Summary, Task};

struct Evil;

fn done(rows: u64) -> Result<Summary, ChamberError> {
    Ok(Summary {
        rows,
        batches: 0,
        pool_peak_bytes: 0,
        merge: None,
        sort_merge_joins: false,
        planning_micros: 0,
    })
}

fn io(err: std::io::Error) -> ChamberError {
    ChamberError::Io(err.to_string())
}

fn number(arg: &str) -> Result<u64, ChamberError> {
    arg.parse()
        .map_err(|_| ChamberError::Sql(format!("not a number: {arg}")))
}

impl bindings::Guest for Evil {
    fn execute(task: Task) -> Result<Summary, ChamberError> {
        let (command, arg) = task.sql.split_once(' ').unwrap_or((task.sql.as_str(), ""));
        match command {
            "read" => done(std::fs::read(arg).map_err(io)?.len() as u64),
            "write" => {
                std::fs::write(arg, b"apiary").map_err(io)?;
                done(std::fs::read(arg).map_err(io)?.len() as u64)
            }
            "list" => done(std::fs::read_dir(arg).map_err(io)?.count() as u64),
            "alloc" => {
                let bytes = number(arg)? as usize;
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                let mut total = 0;
                while total < bytes {
                    let chunk = (bytes - total).min(1 << 20);
                    hoard.push(vec![1u8; chunk]);
                    total += chunk;
                }
                done(hoard.iter().map(|c| c.len() as u64).sum())
            }
            "residue" => {
                // Fresh pages straight from `memory.grow`, bypassing the allocator: what an
                // earlier chamber in the same slot left there, if its reset missed it.
                const PAGE: usize = 64 << 10;
                let pages = (number(arg)? as usize).div_ceil(PAGE);
                #[cfg(target_arch = "wasm32")]
                let first = core::arch::wasm32::memory_grow(0, pages);
                #[cfg(not(target_arch = "wasm32"))]
                let first = usize::MAX;
                if first == usize::MAX {
                    return Err(ChamberError::Io("memory.grow refused".into()));
                }
                let base = (first * PAGE) as *const u8;
                let nonzero = (0..pages * PAGE)
                    // SAFETY: the bytes were just added to the memory and nothing else uses
                    // them.
                    .filter(|&i| unsafe { base.add(i).read_volatile() } != 0)
                    .count();
                done(nonzero as u64)
            }
            "spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "print" => {
                let bytes = number(arg)?;
                let line = [b'x'; 1023];
                let mut written = 0;
                while written < bytes {
                    eprintln!("{}", String::from_utf8_lossy(&line));
                    written += 1024;
                }
                done(written)
            }
            "env" => done(std::env::vars().count() as u64),
            other => Err(ChamberError::Sql(format!("unknown command: {other}"))),
        }
    }
}

bindings::export!(Evil with_types_in bindings);
