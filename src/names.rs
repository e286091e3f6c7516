//! Mailbox names: the one rule that turns a local part into the name of its mailbox file.
//!
//! It exists so that two spellings of one name never open two files and one file never serves
//! two names, decided by one pure function, [`mailbox_name`], that the directory (RCPT, VRFY,
//! EXPN, alias expansion) and the configuration (`--user`, the users file, aliases) both use, so a
//! configured `José` and a recipient `jose\u{301}` meet. The rule, in order:
//!
//! 1. The local part is refused if it is empty or over 64 octets (RFC 5321 §4.5.3.1.1), or if any
//!    character is unsafe ([`crate::escape::is_unsafe`]: controls, NEL and C1, U+2028/U+2029,
//!    bidi controls, default-ignorable characters such as U+200B, U+FEFF or U+180E, other format
//!    characters (general category Cf) such as U+0600 or U+13430, white space
//!    and U+2800, a code point that is unassigned or for private use (Unicode 18, the
//!    `unicode-normalization` crate's tables): normalisation is only stable for assigned
//!    characters, and a private-use character displays as whatever a font makes of it), or a
//!    space, `/`, `\` or `"`.
//! 2. The name is NFKC of the lower-cased NFKC form: `NFKC(lower(NFKC(local)))`. NFKC makes
//!    canonically equivalent spellings one (`jos\u{e9}` and `jose\u{301}`) and folds compatibility
//!    variants that display like the plain letters (fullwidth `ａｌｉｃｅ`, the ligature `ﬁ`);
//!    the first NFKC lets lower-casing see the letters a compatibility character stands for, the
//!    second puts the lower-cased text back in normal form.
//! 3. The name must map to itself (`fold(name) == name`), so a stored or configured name is its
//!    own mailbox: a local part whose name would not is refused rather than given a file.
//! 4. The name is checked again, as normalisation can produce what step 1 refused (U+FF0F
//!    becomes `/`, U+00A0 a space), and refused if it is over 64 octets, starts with a combining
//!    mark (it would join the character before it wherever the name is shown), starts with `.`
//!    or `-`, contains `..`, or ends in `.lock` (another mailbox's dotlock file).
//!
//! Not folded: letters of different scripts that look alike (Latin `a` and Cyrillic `а`, which
//! needs the confusables data of UTS #39), and case beyond lower-casing (`ß` stays `ß`, final
//! `ς` stays `ς`).

use unicode_normalization::UnicodeNormalization;

use crate::escape::{is_unsafe, starts_with_mark};

/// RFC 5321 §4.5.3.1.1: a local part is at most 64 octets; a mailbox name too.
const MAX_LOCAL_PART: usize = 64;

/// The mailbox file name for a local part, or `None` when it is refused (see the module doc).
pub(crate) fn mailbox_name(local: &str) -> Option<String> {
    if local.is_empty() || local.len() > MAX_LOCAL_PART || !local.chars().all(allowed) {
        return None;
    }
    let name = fold(local);
    if fold(&name) != name {
        return None;
    }
    let safe = !name.is_empty()
        && name.len() <= MAX_LOCAL_PART
        && name.chars().all(allowed)
        && !starts_with_mark(&name)
        && !name.starts_with(['.', '-'])
        && !name.contains("..")
        && !name.ends_with(".lock");
    safe.then_some(name)
}

/// `NFKC(lower(NFKC(s)))`.
///
/// Each result is collected into a string of the input's length, which it nearly always fits:
/// no reallocation deep below RCPT's frames (they would take a worker's stack a page deeper;
/// see `pool::WORKER_STACK`).
fn fold(s: &str) -> String {
    if s.is_ascii() {
        // No ASCII character decomposes or composes with another, so both NFKC passes leave
        // ASCII text as it is, and lower-casing it is ASCII's (a test compares the two ways).
        return s.to_ascii_lowercase();
    }
    fold_unicode(s)
}

/// [`fold`] for any text.
fn fold_unicode(s: &str) -> String {
    let mut nfkc = String::with_capacity(s.len());
    nfkc.extend(s.nfkc());
    let lower = nfkc.to_lowercase();
    let mut folded = String::with_capacity(lower.len());
    folded.extend(lower.nfkc());
    folded
}

/// True for a character a mailbox name may contain.
fn allowed(c: char) -> bool {
    !is_unsafe(c) && !matches!(c, ' ' | '/' | '\\' | '"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_folds_as_the_general_rule_folds_it() {
        let all: String = (0u8..=0x7f).map(char::from).collect();
        assert_eq!(fold(&all), fold_unicode(&all));
        for c in all.chars() {
            let pair = format!("{c}{c}");
            assert_eq!(fold(&pair), fold_unicode(&pair), "{c:?}");
        }
        assert_eq!(fold("Alice.Smith-42"), "alice.smith-42");
    }

    #[test]
    fn canonically_equivalent_spellings_are_one_name() {
        for spelling in [
            "jos\u{e9}",
            "jose\u{301}",
            "JOS\u{c9}",
            "JOSE\u{301}",
            "Jos\u{e9}",
        ] {
            assert_eq!(
                mailbox_name(spelling).as_deref(),
                Some("jos\u{e9}"),
                "{spelling:?}"
            );
        }
        // Hangul: conjoining jamo and the precomposed syllable.
        assert_eq!(
            mailbox_name("\u{1112}\u{1161}\u{11ab}"),
            mailbox_name("\u{d55c}")
        );
    }

    #[test]
    fn compatibility_variants_fold_to_the_plain_name() {
        assert_eq!(mailbox_name("ａｌｉｃｅ").as_deref(), Some("alice"));
        assert_eq!(mailbox_name("ＡＬＩＣＥ").as_deref(), Some("alice"));
        assert_eq!(mailbox_name("\u{fb01}nn").as_deref(), Some("finn"));
        assert_eq!(mailbox_name("\u{212a}elvin").as_deref(), Some("kelvin"));
        // A compatibility capital lower-cases only once NFKC has shown the letter.
        assert_eq!(mailbox_name("\u{1d2c}bc").as_deref(), Some("abc"));
        assert_eq!(mailbox_name("Jones").as_deref(), Some("jones"));
    }

    #[test]
    fn invisible_and_bidi_characters_are_refused() {
        for bad in [
            "alice\u{200b}",
            "\u{feff}alice",
            "a\u{180e}lice",
            "\u{202e}ecila",
            "ali\u{ad}ce",
            "alic\u{34f}e",
            "a\u{2066}lice\u{2069}",
            "alice\u{fe0f}",
            "alice\u{e0041}",
            "a\u{85}b",
            "a\u{9b}b",
            "a\u{2028}b",
            "\u{3164}",
            "\u{ffa0}alice",
            // Blanks: Braille pattern blank, and spaces that are not ASCII's.
            "jones\u{2800}",
            "\u{2800}",
            "jo\u{a0}nes",
            "jo\u{3000}nes",
        ] {
            assert_eq!(mailbox_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unsafe_file_names_are_refused_before_and_after_folding() {
        for bad in [
            "",
            "../x",
            ".hidden",
            "-rf",
            "a..b",
            "a/b",
            "a\\b",
            "a\"b",
            "a b",
            "a\u{0}b",
            "jones.lock",
            // What folding turns into the above.
            "a\u{ff0f}b",
            "\u{ff0e}hidden",
            "\u{2025}x",
            "a\u{a0}b",
            "jones\u{ff0e}lock",
            "JONES.LOCK",
            // A leading combining mark, as sent and after folding.
            "\u{301}abc",
            "\u{20dd}x",
            // Unassigned and private use.
            "a\u{378}b",
            "\u{e000}",
            "\u{10fffd}",
        ] {
            assert_eq!(mailbox_name(bad), None, "{bad:?}");
        }
        assert_eq!(mailbox_name(&"x".repeat(64)).map(|n| n.len()), Some(64));
        assert_eq!(mailbox_name(&"x".repeat(65)), None);
        // A local part within 64 octets whose name grows past them.
        assert_eq!(mailbox_name(&"\u{fdfa}".repeat(4)), None);
    }

    /// Every accepted single character, and some longer names, map to a name that maps to
    /// itself: a configured or stored name is always its own mailbox.
    #[test]
    fn the_name_of_a_name_is_itself() {
        let mut accepted = 0;
        for c in (0..=0x10ffff_u32).filter_map(char::from_u32) {
            let local = format!("x{c}");
            if let Some(name) = mailbox_name(&local) {
                accepted += 1;
                assert_eq!(
                    mailbox_name(&name).as_deref(),
                    Some(name.as_str()),
                    "{:04x}",
                    c as u32
                );
            }
        }
        assert!(accepted > 100_000, "{accepted}");
        for local in ["İstanbul", "ΟΔΟΣ", "ǅemal", "Straße", "ＡＢ\u{301}", "㍿"] {
            let name = mailbox_name(local).unwrap();
            assert_eq!(mailbox_name(&name), Some(name.clone()), "{local:?}");
        }
    }
}
