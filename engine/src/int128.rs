//! 128-bit integer arithmetic built from 64-bit halves, for the chamber's runtime helpers.
//!
//! Decimal128 columns (prices, discounts, taxes) multiply `i128`s with an overflow check and
//! sum them. wasm32 has no 128-bit instructions, so the compiler turns those operations into
//! calls to runtime helpers (`__muloti4`, `__multi3`, `__floattidf`, `__ashlti3`). Rust ships
//! those helpers precompiled for the baseline wasm32 CPU, without the wide-arithmetic
//! instructions the guest is built with, and they took about a quarter of the chamber's time
//! in TPC-H Q1. The guest defines them itself on top of these functions, whose only
//! 128-bit operation is one 64x64->128-bit multiply (`i64.mul_wide_u` in the guest).
//!
//! They are plain Rust, so the tests here check them natively against the native
//! operators.

/// The 128-bit product of two 64-bit halves, as (low, high).
#[inline]
fn mul_wide(a: u64, b: u64) -> (u64, u64) {
    let product = u128::from(a) * u128::from(b);
    (product as u64, (product >> 64) as u64)
}

#[inline]
fn halves(value: u128) -> (u64, u64) {
    (value as u64, (value >> 64) as u64)
}

#[inline]
fn join(low: u64, high: u64) -> u128 {
    (u128::from(high) << 64) | u128::from(low)
}

/// `a * b` modulo 2^128 (`__multi3`).
#[inline]
pub fn wrapping_mul(a: i128, b: i128) -> i128 {
    let (a_low, a_high) = halves(a as u128);
    let (b_low, b_high) = halves(b as u128);
    let (low, high) = mul_wide(a_low, b_low);
    let high = high
        .wrapping_add(a_low.wrapping_mul(b_high))
        .wrapping_add(a_high.wrapping_mul(b_low));
    join(low, high) as i128
}

/// `a * b` modulo 2^128 and whether the true product overflows `i128` (`__muloti4`).
#[inline]
pub fn overflowing_mul(a: i128, b: i128) -> (i128, bool) {
    // Decimal values nearly always fit in 64 bits, and then their product cannot overflow.
    if let (Ok(a), Ok(b)) = (i64::try_from(a), i64::try_from(b)) {
        let (low, high) = mul_wide(a as u64, b as u64);
        // The unsigned product of the two's complement bits, corrected for the signs.
        let high = high
            .wrapping_sub(if a < 0 { b as u64 } else { 0 })
            .wrapping_sub(if b < 0 { a as u64 } else { 0 });
        return (join(low, high) as i128, false);
    }
    let negative = (a < 0) != (b < 0);
    let (a_low, a_high) = halves(a.unsigned_abs());
    let (b_low, b_high) = halves(b.unsigned_abs());
    // The product of the magnitudes, unless it needs more than 128 bits.
    let magnitude = if a_high != 0 && b_high != 0 {
        None
    } else {
        let (low, high) = mul_wide(a_low, b_low);
        // At most one of the cross products is non-zero.
        let (cross, cross_high) = if a_high != 0 {
            mul_wide(a_high, b_low)
        } else {
            mul_wide(a_low, b_high)
        };
        if cross_high != 0 {
            None
        } else {
            high.checked_add(cross).map(|high| join(low, high))
        }
    };
    let fits = match magnitude {
        Some(m) if negative => m <= 1u128 << 127,
        Some(m) => m < 1u128 << 127,
        None => false,
    };
    match magnitude {
        Some(m) if fits => ((if negative { m.wrapping_neg() } else { m }) as i128, false),
        _ => (wrapping_mul(a, b), true),
    }
}

/// `a << shift` for shifts below 128 (`__ashlti3`).
#[inline]
pub fn shl(a: u128, shift: u32) -> u128 {
    let (low, high) = halves(a);
    let shift = shift & 127;
    if shift >= 64 {
        join(0, low << (shift - 64))
    } else if shift == 0 {
        a
    } else {
        join(low << shift, (high << shift) | (low >> (64 - shift)))
    }
}

/// The `f64` nearest to `a`, ties to even (`__floattidf`).
#[inline]
pub fn to_f64(a: i128) -> f64 {
    if let Ok(small) = i64::try_from(a) {
        return small as f64;
    }
    let magnitude = a.unsigned_abs();
    let (low, high) = halves(magnitude);
    // The magnitude is at least 2^63: keep its top 64 bits, and fold every bit shifted out
    // into the lowest one so that the 64-to-53-bit rounding below still rounds correctly.
    let shift = 64 - high.leading_zeros();
    let top = if shift == 0 {
        low
    } else if shift == 64 {
        high | u64::from(low != 0)
    } else {
        (high << (64 - shift)) | (low >> shift) | u64::from(low << (64 - shift) != 0)
    };
    // Scaling by a power of two is exact.
    let scale = f64::from_bits(u64::from(1023 + shift) << 52);
    let value = top as f64 * scale;
    if a < 0 { -value } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Edge values and a deterministic spread of values of every bit width and sign.
    fn samples() -> Vec<i128> {
        let mut values = vec![0, 1, -1, 2, -2, i128::MAX, i128::MIN];
        values.extend([i128::MAX - 1, i128::MIN + 1]);
        for bits in [31, 32, 53, 54, 63, 64, 65, 96, 126, 127] {
            let power = 1i128 << bits;
            values.extend([power, power - 1, power + 1, -power, -power + 1, -power - 1]);
        }
        values.extend([
            i128::from(i64::MAX),
            i128::from(i64::MIN),
            i128::from(u64::MAX),
        ]);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..4000 {
            let raw = join(next(), next()) as i128;
            let width = (next() % 128) as u32;
            values.push(raw >> width);
        }
        values
    }

    #[test]
    fn products_and_overflows_match_the_native_operators() {
        let values = samples();
        let mut overflows = 0;
        for (i, &a) in values.iter().enumerate() {
            for &b in values.iter().skip(i % 7).step_by(7).take(600) {
                assert_eq!(wrapping_mul(a, b), a.wrapping_mul(b), "{a} * {b}");
                let (product, overflowed) = overflowing_mul(a, b);
                assert_eq!((product, overflowed), a.overflowing_mul(b), "{a} * {b}");
                overflows += usize::from(overflowed);
            }
        }
        assert!(
            overflows > 1000,
            "the samples overflow only {overflows} times"
        );
    }

    #[test]
    fn shifts_match_the_native_operator() {
        for a in samples() {
            for shift in 0..128 {
                assert_eq!(
                    shl(a as u128, shift),
                    (a as u128) << shift,
                    "{a} << {shift}"
                );
            }
        }
    }

    #[test]
    fn conversions_round_to_the_nearest_double_as_the_native_cast_does() {
        for a in samples() {
            assert_eq!(to_f64(a).to_bits(), (a as f64).to_bits(), "{a}");
        }
        // Halfway cases: ties go to the even mantissa, and one bit far below breaks the tie.
        let tie = (1i128 << 100) + (1i128 << 47);
        assert_eq!(to_f64(tie), 2f64.powi(100));
        assert_eq!(to_f64(tie + 1), 2f64.powi(100) + 2f64.powi(48));
        assert_eq!(to_f64(-tie - 1), -(2f64.powi(100) + 2f64.powi(48)));
    }
}
