//! Decimal numbers as the command line and `--fail` rules write them (`30`, `1.5`, `.25`),
//! parsed by hand into whole billionths.
//!
//! It exists because std's float parser brings about 15 KB of code and tables into a binary that
//! is to stay under 1 MiB, for the flags in seconds and the `--fail` rules' numbers, which need no more than a plain
//! decimal. The library
//! (`--fail` rules) and the binary (the flags in seconds) each compile this file as a module of
//! their own, as they do `os.rs`.

/// A decimal `digits[.digits]` (one side of the point may be empty, not both) in billionths:
/// `"1.5"` is 1 500 000 000. Digits past the ninth decimal are read and dropped. `None` for
/// anything else (signs, exponents, spaces, `inf`) and for values of 2^64 billionths or more
/// (over 18 billion).
pub(crate) fn billionths(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    let mut value: u64 = 0;
    for b in whole.bytes() {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    let mut value = value.checked_mul(1_000_000_000)?;
    let mut scale = 100_000_000;
    for b in fraction.bytes().take(9) {
        value = value.checked_add(u64::from(b - b'0') * scale)?;
        scale /= 10;
    }
    Some(value)
}

/// A whole number written as digits alone (`42`, `007`); `None` for anything else (a sign, a
/// space, an empty string: what `str::parse` would take with a `+`) and for values over
/// `u64::MAX`.
pub(crate) fn whole(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{billionths, whole};

    #[test]
    fn whole_numbers_are_digits_alone() {
        assert_eq!(whole("42"), Some(42));
        assert_eq!(whole("007"), Some(7));
        assert_eq!(whole("18446744073709551615"), Some(u64::MAX));
        for text in [
            "",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1.0",
            "18446744073709551616",
            "١",
        ] {
            assert_eq!(whole(text), None, "{text:?}");
        }
    }

    #[test]
    fn plain_decimals_are_read_exactly() {
        assert_eq!(billionths("30"), Some(30_000_000_000));
        assert_eq!(billionths("1.5"), Some(1_500_000_000));
        assert_eq!(billionths(".25"), Some(250_000_000));
        assert_eq!(billionths("2."), Some(2_000_000_000));
        assert_eq!(billionths("0"), Some(0));
        assert_eq!(billionths("0.000000001"), Some(1));
        assert_eq!(billionths("0.0000000019"), Some(1));
        assert_eq!(billionths("007"), Some(7_000_000_000));
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "",
            ".",
            "-1",
            "+1",
            "1e3",
            "inf",
            "NaN",
            " 1",
            "1 ",
            "1.2.3",
            "1,5",
            "0x10",
            "½",
            "18446744074", // 2^64 billionths and more
        ] {
            assert_eq!(billionths(text), None, "{text:?}");
        }
        assert_eq!(billionths("18446744073"), Some(18_446_744_073_000_000_000));
    }
}
