//! Byte-string comparison a word at a time, for the chamber's `memcmp`.
//!
//! Every comparison of two byte strings of the same length that the compiler does not
//! unroll (string keys in group-bys and joins, sort keys, `Utf8View` values past their
//! 12-byte inline part) calls the C library's `memcmp`. wasi-libc's compares one byte per
//! loop turn, and in a chamber each turn also checks the CPU deadline: in TPC-H Q16 it took
//! about a tenth of the chamber's time. The guest defines `memcmp` itself on top of
//! [`compare`], which reads eight bytes per turn.
//!
//! It is plain Rust, so the tests here check it natively against the slices' own ordering.

use std::cmp::Ordering;

/// Compare `a` and `b` byte by byte, as unsigned bytes, over the length of the shorter one
/// (C's `memcmp` over `min(a.len(), b.len())` bytes).
///
/// Written with integer comparisons only, so the compiler does not turn it back into a call
/// to `memcmp`.
#[must_use]
pub fn compare(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    let (words_a, tail_a) = a[..n].as_chunks::<8>();
    let (words_b, tail_b) = b[..n].as_chunks::<8>();
    for (x, y) in words_a.iter().zip(words_b) {
        let (x, y) = (u64::from_le_bytes(*x), u64::from_le_bytes(*y));
        if x != y {
            // The lowest differing byte of the little-endian words is the first one that
            // differs in memory.
            let shift = (x ^ y).trailing_zeros() & !7;
            return ((x >> shift) as u8).cmp(&((y >> shift) as u8));
        }
    }
    for (x, y) in tail_a.iter().zip(tail_b) {
        if x != y {
            return x.cmp(y);
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_of_every_length_up_to_three_words() {
        let bytes: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        for n in 0..=bytes.len() {
            assert_eq!(
                compare(&bytes[..n], &bytes[..n]),
                Ordering::Equal,
                "length {n}"
            );
        }
    }

    #[test]
    fn the_first_differing_byte_decides_at_every_position() {
        for n in 1..=35usize {
            for at in 0..n {
                for (low, high) in [(0u8, 1u8), (0x7f, 0x80), (0x01, 0xff), (0xfe, 0xff)] {
                    let mut a: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(11)).collect();
                    let mut b = a.clone();
                    a[at] = low;
                    b[at] = high;
                    // Later bytes point the other way, so only the first difference decides.
                    for i in at + 1..n {
                        a[i] = 0xff;
                        b[i] = 0;
                    }
                    assert_eq!(compare(&a, &b), Ordering::Less, "length {n}, at {at}");
                    assert_eq!(compare(&b, &a), Ordering::Greater, "length {n}, at {at}");
                    assert_eq!(compare(&a, &b), a.cmp(&b), "length {n}, at {at}");
                }
            }
        }
    }

    #[test]
    fn only_the_shorter_length_is_compared() {
        assert_eq!(compare(b"abcdefghij", b"abcdefghijXYZ"), Ordering::Equal);
        assert_eq!(compare(b"abcdefghiz", b"abcdefghijXYZ"), Ordering::Greater);
        assert_eq!(compare(b"", b"abc"), Ordering::Equal);
    }
}
