//! Finding a byte in message text eight bytes at a time.
//!
//! It exists because every octet of every message is looked at twice on its way to the disk:
//! the framer looks for the LF that ends each line, and the body encoder for the CR or LF that
//! ends the run it can copy as it is. A byte-at-a-time loop cost more instructions there than
//! all else the encoder did with a 1 KiB message (callgrind; README, "Where the time goes").
//! [`find2`] tests a whole `u64` word for either byte with a few arithmetic operations, in safe
//! code and without a dependency, and looks at single bytes only in the word that holds a match
//! and in the tail shorter than a word.

/// `0x01` in every byte of a word.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
/// `0x80` in every byte of a word.
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The index of the first byte of `haystack` that is `a` or `b`.
pub(crate) fn find2(haystack: &[u8], a: u8, b: u8) -> Option<usize> {
    let (wa, wb) = (ONES * u64::from(a), ONES * u64::from(b));
    let mut start = 0;
    for chunk in haystack.chunks_exact(8) {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_ne_bytes(bytes);
        if has_zero_byte(word ^ wa) || has_zero_byte(word ^ wb) {
            break;
        }
        start += 8;
    }
    let rest = haystack.get(start..).unwrap_or_default();
    rest.iter()
        .position(|&c| c == a || c == b)
        .map(|i| start + i)
}

/// Whether some byte of `word` is zero. Exact: a byte that is not zero never sets its high bit
/// in the result unless a lower byte borrowed, which takes a zero byte below it.
fn has_zero_byte(word: u64) -> bool {
    word.wrapping_sub(ONES) & !word & HIGHS != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(haystack: &[u8], a: u8, b: u8) -> Option<usize> {
        haystack.iter().position(|&c| c == a || c == b)
    }

    #[test]
    fn finds_the_first_of_either_byte_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                for (a, b) in [(b'\r', b'\n'), (b'\n', b'\n'), (b':', b'\r')] {
                    let mut hay = vec![b'x'; len];
                    hay[at] = b;
                    assert_eq!(find2(&hay, a, b), Some(at), "{len} {at}");
                    if at + 1 < len {
                        hay[at + 1] = a;
                        assert_eq!(find2(&hay, a, b), Some(at), "{len} {at}");
                    }
                }
            }
            assert_eq!(find2(&vec![b'x'; len], b'\r', b'\n'), None);
        }
    }

    #[test]
    fn bytes_next_to_the_ones_sought_are_not_taken_for_them() {
        // 0x0c, 0x0e, 0x8d, 0x8a and 0x00 differ from CR or LF in one bit or borrow in the
        // arithmetic; 0x01 after a 0x00 is where a borrow would show.
        let hay = [
            0x0c, 0x0e, 0x8d, 0x8a, 0x00, 0x01, 0x0b, 0x09, 0xff, 0x80, 0x7f, 0x0d,
        ];
        assert_eq!(find2(&hay, b'\r', b'\n'), Some(11));
        assert_eq!(find2(&hay, 0x00, 0x00), Some(4));
        assert_eq!(find2(&hay, 0x01, 0x01), Some(5));
    }

    proptest! {
        #[test]
        fn agrees_with_a_byte_at_a_time_search(hay in prop::collection::vec(any::<u8>(), 0..100), a: u8, b: u8) {
            prop_assert_eq!(find2(&hay, a, b), naive(&hay, a, b));
        }

        #[test]
        fn agrees_in_text_with_few_line_breaks(hay in prop::collection::vec(prop::sample::select(vec![b'a', b'\r', b'\n', 0x0c, 0x8a, 0x00]), 0..100)) {
            prop_assert_eq!(find2(&hay, b'\r', b'\n'), naive(&hay, b'\r', b'\n'));
            prop_assert_eq!(find2(&hay, b'\n', b'\n'), naive(&hay, b'\n', b'\n'));
        }
    }
}
