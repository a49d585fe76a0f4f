//! Bit streams, MSB-first, as `numpy.unpackbits`/`packbits` (the authors' code) order them.
//!
//! A bit is a `bool`; a stream is a `Vec<bool>`. One byte per bit is wasteful but the largest
//! streams here (a model's worth of sign bits, ~10^6) are a few megabytes, and indexing stays simple.

/// Unpacks bytes into bits, most significant bit of each byte first (`numpy.unpackbits`).
pub fn bytes_to_bits(bytes: &[u8]) -> Vec<bool> {
    let mut bits = Vec::with_capacity(bytes.len() * 8);
    for &byte in bytes {
        for shift in (0..8).rev() {
            bits.push((byte >> shift) & 1 == 1);
        }
    }
    bits
}

/// Packs bits into bytes, MSB-first (`numpy.packbits`); a trailing partial byte is padded with
/// zero bits on the right.
pub fn bits_to_bytes(bits: &[bool]) -> Vec<u8> {
    bits.chunks(8)
        .map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .fold(0u8, |acc, (i, &bit)| acc | (u8::from(bit) << (7 - i)))
        })
        .collect()
}

/// Appends the low `width` bits of `value`, MSB-first. `width <= 64`.
pub fn push_uint(bits: &mut Vec<bool>, value: u64, width: u32) {
    debug_assert!(width <= 64);
    for shift in (0..width).rev() {
        bits.push((value >> shift) & 1 == 1);
    }
}

/// Reads an unsigned integer from `bits` (MSB-first); `bits.len() <= 64`.
pub fn read_uint(bits: &[bool]) -> u64 {
    debug_assert!(bits.len() <= 64);
    bits.iter()
        .fold(0u64, |acc, &bit| (acc << 1) | u64::from(bit))
}

/// Number of bits needed to write every integer in `0..count` (at least 1).
pub fn width_for(count: u64) -> u32 {
    if count <= 2 {
        1
    } else {
        64 - (count - 1).leading_zeros()
    }
}

/// Number of differing positions between two equally long bit streams (the shorter length is
/// compared; the difference in length counts as errors too).
pub fn bit_errors(a: &[bool], b: &[bool]) -> usize {
    let common = a.len().min(b.len());
    let diff = a[..common]
        .iter()
        .zip(&b[..common])
        .filter(|(x, y)| x != y)
        .count();
    diff + a.len().max(b.len()) - common
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn msb_first_matches_numpy_unpackbits() {
        // numpy.unpackbits(np.array([0b1010_0001, 0x80], dtype=np.uint8))
        let bits = bytes_to_bits(&[0b1010_0001, 0x80]);
        let expect = [
            true, false, true, false, false, false, false, true, true, false, false, false, false,
            false, false, false,
        ];
        assert_eq!(bits, expect);
        // numpy.packbits([1, 1, 0]) == [0b1100_0000]
        assert_eq!(bits_to_bytes(&[true, true, false]), vec![0b1100_0000]);
    }

    #[test]
    fn uint_and_widths() {
        let mut bits = Vec::new();
        push_uint(&mut bits, 5, 4);
        assert_eq!(bits, [false, true, false, true]);
        assert_eq!(read_uint(&bits), 5);
        assert_eq!(width_for(2), 1);
        assert_eq!(width_for(3), 2);
        assert_eq!(width_for(256), 8);
        assert_eq!(width_for(257), 9);
        // the IMDB vocabulary of 10^5 words plus the end-of-document marker: 17 bits
        assert_eq!(width_for(100_001), 17);
        assert_eq!(bit_errors(&[true, false], &[true, true, true]), 2);
    }

    proptest! {
        #[test]
        fn bytes_bits_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let bits = bytes_to_bits(&bytes);
            prop_assert_eq!(bits.len(), bytes.len() * 8);
            prop_assert_eq!(bits_to_bytes(&bits), bytes);
        }
    }
}
