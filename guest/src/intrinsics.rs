//! The 128-bit runtime helpers that Decimal128 arithmetic calls, defined here so that the
//! linker takes them instead of the precompiled baseline ones, which do not use the
//! wide-arithmetic instructions (see `apiary_engine::int128`).

use apiary_engine::int128;

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
