//! Runtime helpers defined here so that the linker takes them instead of the precompiled
//! ones: the 128-bit helpers that Decimal128 arithmetic calls, which in their baseline build
//! do not use the wide-arithmetic instructions (see `apiary_engine::int128`), and the C
//! library's `memcmp`, which compares a byte at a time (see `apiary_engine::bytes`).

use apiary_engine::{bytes, int128};

/// `a * b` modulo 2^128.
#[unsafe(no_mangle)]
pub extern "C" fn __multi3(a: i128, b: i128) -> i128 {
    int128::wrapping_mul(a, b)
}

/// `a * b` modulo 2^128; `overflow` is set to 1 when the product does not fit.
#[unsafe(no_mangle)]
pub extern "C" fn __muloti4(a: i128, b: i128, overflow: &mut i32) -> i128 {
    let (product, overflowed) = int128::overflowing_mul(a, b);
    *overflow = i32::from(overflowed);
    product
}

/// `a << shift`.
#[unsafe(no_mangle)]
pub extern "C" fn __ashlti3(a: u128, shift: u32) -> u128 {
    int128::shl(a, shift)
}

/// The nearest `f64` to `a`.
#[unsafe(no_mangle)]
pub extern "C" fn __floattidf(a: i128) -> f64 {
    int128::to_f64(a)
}

/// C's `memcmp`: the sign of the first differing byte of `a` and `b` over `n` bytes.
/// (The C library's `bcmp` calls it too.)
///
/// # Safety
/// `a` and `b` must each point to `n` readable bytes, as C requires of `memcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        // C allows null pointers with a zero length; slices do not.
        return 0;
    }
    // SAFETY: the caller passes `n` readable bytes at both pointers.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, n),
            std::slice::from_raw_parts(b, n),
        )
    };
    bytes::compare(a, b) as i32
}
