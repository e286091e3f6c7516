//! Unsafe text: the one set of characters no client string may carry into a header, a mailbox
//! name or a log line, and the escaping that shows such a string in a log line.
//!
//! It exists so that the refusals (HELO and EHLO names, local parts and domains: see
//! `command.rs`, `session/params.rs`, `names.rs`) and the log escaping use the same set,
//! decided here once by [`is_unsafe`]. A control character, a Unicode line or paragraph separator
//! (U+2028, U+2029), NEL (U+0085) or a C1 control could start a new, forged header or log line in
//! a reader that breaks lines at them (Python's email package does); bidirectional controls,
//! invisible (default-ignorable) and other format characters, blanks that are not an ASCII space, and code points
//! that are unassigned or for private use (which display as whatever a font makes of them) could
//! make one name display as another. In a log line each such character is written as
//! `\u{XXXX}`, and so are `<` and `>`, which delimit a client's string there; a backslash is
//! written `\\`, so the escaping is unambiguous.

use std::fmt;

use unicode_normalization::char::{is_combining_mark, is_public_assigned};

/// Displays a string with every unsafe character, and `<` and `>`, escaped: a client's string
/// is shown between `<` and `>` in a log line, and cannot end that field early to make the rest
/// of the line look like the server's (`user=<admin> accepted> refused`). A combining mark at
/// its start is escaped too: it would combine with the `<` before it (U+0338 makes `<` a `≮`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Runs of characters shown as they are go out in one write each: this formats every
        // delivery's log line, and a write per character cost more than the rest of the line.
        let mut rest = self.0;
        if let Some(mark) = rest.chars().next().filter(|&c| is_combining_mark(c)) {
            write!(f, "\\u{{{:04x}}}", mark as u32)?;
            rest = rest.get(mark.len_utf8()..).unwrap_or_default();
        }
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
            // `at` is a char boundary (from `char_indices`), so this never fails.
            let (run, from_c) = rest.split_at_checked(at).ok_or(fmt::Error)?;
            f.write_str(run)?;
            if c == '\\' {
                f.write_str("\\\\")?;
            } else {
                write!(f, "\\u{{{:04x}}}", c as u32)?;
            }
            rest = from_c.get(c.len_utf8()..).unwrap_or_default();
        }
        f.write_str(rest)
    }
}

/// Whether [`Escaped`] writes `c` escaped.
fn needs_escape(c: char) -> bool {
    matches!(c, '\\' | '<' | '>') || is_unsafe(c)
}

/// True for characters that must not appear raw in a log line, a header mboxd writes or a
/// mailbox name:
///
/// - C0 controls, DEL and C1 controls (`char::is_control`), which include NEL (U+0085) and
///   CSI (U+009B);
/// - the line and paragraph separators U+2028 and U+2029;
/// - the bidirectional controls U+061C, U+200E, U+200F, U+202A to U+202E and U+2066 to U+2069;
/// - every `Default_Ignorable_Code_Point` of Unicode's DerivedCoreProperties.txt (invisible
///   characters: soft hyphen, zero-width space and joiners, variation selectors, BOM, Hangul
///   fillers, tags...), which contains the bidi controls above;
/// - the format characters (general category `Cf`) that are not default-ignorable: the
///   interlinear annotation controls U+FFF9 to U+FFFB, and the prepended concatenation marks and
///   joiners of Arabic, Syriac, Kaithi and Egyptian hieroglyphs, which display across or around
///   their neighbours (see `is_other_format`);
/// - white space other than ASCII's (U+00A0, U+3000, the spaces U+2000 to U+200A...), which
///   looks like a separator between two words, and U+2800 (Braille pattern blank), which looks
///   like a space but is not white space;
/// - code points that are unassigned or for private use (the `unicode-normalization` crate's
///   tables).
pub(crate) fn is_unsafe(c: char) -> bool {
    if c.is_ascii() {
        // Of ASCII, only the C0 controls and DEL are in the set (the tests compare the two).
        return c.is_ascii_control();
    }
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}')
        || is_default_ignorable(c)
        || is_other_format(c)
        || (!c.is_ascii() && (c.is_whitespace() || c == '\u{2800}' || !is_public_assigned(c)))
}

/// True when `s` begins with a combining mark (general category M), which a display draws on the
/// character before it: the `<` or space mboxd writes there in a header or a log line. IDNA2008
/// forbids it at the start of a label (RFC 5891 §4.2.3.2), and no name a client gives may begin
/// with one.
#[inline(never)]
pub(crate) fn starts_with_mark(s: &str) -> bool {
    s.chars().next().is_some_and(is_combining_mark)
}

/// True when `s` contains a character of [`is_unsafe`].
pub(crate) fn has_unsafe(s: &str) -> bool {
    s.chars().any(is_unsafe)
}

/// Unicode's `Default_Ignorable_Code_Point` as DerivedCoreProperties.txt of Unicode 15 lists it
/// (a test compares the two when Debian's `unicode-data` package is installed): characters a
/// renderer may show as nothing. The bidi controls are among them.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}' // soft hyphen
            | '\u{034f}' // combining grapheme joiner
            | '\u{061c}' // Arabic letter mark
            | '\u{115f}'..='\u{1160}' // Hangul fillers
            | '\u{17b4}'..='\u{17b5}' // Khmer inherent vowels
            | '\u{180b}'..='\u{180f}' // Mongolian variation selectors and vowel separator
            | '\u{200b}'..='\u{200f}' // zero width space, joiners, LRM, RLM
            | '\u{202a}'..='\u{202e}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{206f}' // word joiner, invisible operators, bidi isolates, ...
            | '\u{3164}' // Hangul filler
            | '\u{fe00}'..='\u{fe0f}' // variation selectors
            | '\u{feff}' // zero width no-break space (BOM)
            | '\u{ffa0}' // halfwidth Hangul filler
            | '\u{fff0}'..='\u{fff8}' // unassigned, reserved as ignorable
            | '\u{1bca0}'..='\u{1bca3}' // shorthand format controls
            | '\u{1d173}'..='\u{1d17a}' // musical symbol format controls
            | '\u{e0000}'..='\u{e0fff}' // tags and variation selectors supplement
    )
}

/// The characters of general category `Cf` (format) in Unicode 15's UnicodeData.txt that
/// [`is_default_ignorable`] does not cover (a test compares the two sets with the file when
/// Debian's `unicode-data` package is installed).
fn is_other_format(c: char) -> bool {
    matches!(
        c,
        '\u{0600}'..='\u{0605}' // Arabic number sign .. number mark above
            | '\u{06dd}' // Arabic end of ayah
            | '\u{070f}' // Syriac abbreviation mark
            | '\u{0890}'..='\u{0891}' // Arabic pound and piastre marks above
            | '\u{08e2}' // Arabic disputed end of ayah
            | '\u{fff9}'..='\u{fffb}' // interlinear annotation controls
            | '\u{110bd}' // Kaithi number sign
            | '\u{110cd}' // Kaithi number sign above
            | '\u{13430}'..='\u{1343f}' // Egyptian hieroglyph format controls
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        Escaped(s).to_string()
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(esc("alice@example.com"), "alice@example.com");
        assert_eq!(esc("jörg@bücher.example"), "jörg@bücher.example");
    }

    #[test]
    fn line_breakers_and_controls_are_escaped() {
        assert_eq!(esc("a\r\nb"), "a\\u{000d}\\u{000a}b");
        assert_eq!(
            esc("ok\u{2028}X-Injected: yes"),
            "ok\\u{2028}X-Injected: yes"
        );
        assert_eq!(
            esc("a\u{2029}b\u{85}c\u{9b}d\x1b[2J"),
            "a\\u{2029}b\\u{0085}c\\u{009b}d\\u{001b}[2J"
        );
    }

    #[test]
    fn bidi_and_invisible_characters_are_escaped() {
        assert_eq!(esc("\u{202e}ecila"), "\\u{202e}ecila");
        assert_eq!(esc("ali\u{200b}ce\u{feff}"), "ali\\u{200b}ce\\u{feff}");
        assert_eq!(esc("a\u{2066}b\u{2069}"), "a\\u{2066}b\\u{2069}");
    }

    #[test]
    fn a_field_cannot_be_closed_early() {
        // A client's string is shown as `<...>`: its own `>` cannot end the field.
        assert_eq!(
            format!("user=<{}> refused", Escaped("admin> accepted")),
            "user=<admin\\u{003e} accepted> refused"
        );
        assert_eq!(esc("<a>"), "\\u{003c}a\\u{003e}");
    }

    #[test]
    fn blanks_and_unassigned_or_private_code_points_are_escaped() {
        assert_eq!(esc("jo\u{e000}nes"), "jo\\u{e000}nes");
        assert_eq!(esc("jones\u{2800}"), "jones\\u{2800}");
        assert_eq!(esc("a\u{a0}b\u{3000}c"), "a\\u{00a0}b\\u{3000}c");
        assert_eq!(esc("jo\u{378}nes"), "jo\\u{0378}nes");
    }

    #[test]
    fn backslash_is_escaped_so_escapes_cannot_be_forged() {
        assert_eq!(esc("\\u{000a}"), "\\\\u{000a}");
    }

    #[test]
    fn of_ascii_only_controls_are_unsafe() {
        // What the fast path in `is_unsafe` gives, against the general rule.
        for c in (0u8..=0x7f).map(char::from) {
            let general = c.is_control() || is_default_ignorable(c);
            assert_eq!(is_unsafe(c), general, "{c:?}");
        }
    }

    #[test]
    fn a_combining_mark_is_escaped_only_at_the_start() {
        assert_eq!(
            format!("user=<{}>", Escaped("\u{338}admin")),
            "user=<\\u{0338}admin>"
        );
        assert_eq!(esc("\u{301}\u{301}e"), "\\u{0301}\u{301}e");
        assert_eq!(esc("jose\u{301}"), "jose\u{301}");
        assert!(starts_with_mark("\u{338}x") && starts_with_mark("\u{903}"));
        assert!(!starts_with_mark("x\u{338}") && !starts_with_mark(""));
    }

    #[test]
    fn runs_between_escapes_are_kept_whole() {
        assert_eq!(esc(""), "");
        assert_eq!(esc("<"), "\\u{003c}");
        assert_eq!(
            esc("ab<cd>ef\\gh\u{202e}"),
            "ab\\u{003c}cd\\u{003e}ef\\\\gh\\u{202e}"
        );
        assert_eq!(esc("ü\u{200b}ü"), "ü\\u{200b}ü");
    }

    #[test]
    fn the_unsafe_set_bounds() {
        // Every range's first and last code point, and the neighbours just outside.
        for c in [
            '\u{0}',
            '\u{1f}',
            '\u{7f}',
            '\u{80}',
            '\u{85}',
            '\u{9b}',
            '\u{9f}',
            '\u{ad}',
            '\u{34f}',
            '\u{61c}',
            '\u{115f}',
            '\u{1160}',
            '\u{17b4}',
            '\u{17b5}',
            '\u{180b}',
            '\u{180e}',
            '\u{180f}',
            '\u{200b}',
            '\u{200f}',
            '\u{2028}',
            '\u{2029}',
            '\u{202a}',
            '\u{202e}',
            '\u{2060}',
            '\u{2066}',
            '\u{2069}',
            '\u{206f}',
            '\u{3164}',
            '\u{fe00}',
            '\u{fe0f}',
            '\u{feff}',
            '\u{ffa0}',
            '\u{fff0}',
            '\u{fff8}',
            '\u{fff9}',
            '\u{fffb}',
            '\u{1bca0}',
            '\u{1bca3}',
            '\u{600}',
            '\u{605}',
            '\u{6dd}',
            '\u{70f}',
            '\u{890}',
            '\u{891}',
            '\u{8e2}',
            '\u{110bd}',
            '\u{110cd}',
            '\u{13430}',
            '\u{1343f}',
            '\u{1d173}',
            '\u{1d17a}',
            '\u{e0000}',
            '\u{e0001}',
            '\u{e0100}',
            '\u{e0fff}',
            // Blanks that are not ASCII's, and code points not (yet) assigned.
            '\u{a0}',
            '\u{200a}',
            '\u{202f}',
            '\u{205f}',
            '\u{fefe}',
            '\u{ffef}',
            '\u{1bca4}',
            '\u{dffff}',
            '\u{e1000}',
            '\u{1680}',
            '\u{2000}',
            '\u{2800}',
            '\u{3000}',
            '\u{e000}',
            '\u{f8ff}',
            '\u{378}',
        ] {
            assert!(is_unsafe(c), "{:04x}", c as u32);
        }
        for c in [
            ' ',
            '~',
            '\u{ae}',
            '\u{34e}',
            '\u{350}',
            '\u{61b}',
            '\u{115e}',
            '\u{1161}',
            '\u{17b3}',
            '\u{17b6}',
            '\u{180a}',
            '\u{1810}',
            '\u{2010}',
            '\u{27ff}',
            '\u{2801}',
            '\u{f900}',
            '\u{2027}',
            '\u{2070}',
            '\u{3163}',
            '\u{3165}',
            '\u{fdff}',
            '\u{fe10}',
            '\u{ff9f}',
            '\u{ffa1}',
            '\u{fffc}',
            '\u{1bc9f}',
            '\u{1d172}',
            '\u{1d17b}',
            '\u{606}',
            '\u{6dc}',
            '\u{6de}',
            '\u{710}',
            '\u{8e1}',
            '\u{8e3}',
            '\u{110bc}',
            '\u{110be}',
            '\u{1342f}',
            '\u{13440}',
            'é',
            'ß',
            'Ω',
            '中',
        ] {
            assert!(!is_unsafe(c), "{:04x}", c as u32);
        }
        assert!(has_unsafe("ok\u{2028}X-Injected-Helo:yes"));
        assert!(!has_unsafe("jörg@bücher.example"));
    }

    /// The text of one of Unicode's data files from Debian's `unicode-data` package, or `None`
    /// (with a `skipped:` line) where it is not installed.
    fn unicode_data(file: &str) -> Option<String> {
        let path = format!("/usr/share/unicode/{file}");
        let text = std::fs::read_to_string(&path).ok();
        if text.is_none() {
            println!("skipped: {path} missing (apt-get install unicode-data)");
        }
        text
    }

    /// Compares [`is_default_ignorable`] with Unicode's own list, where the system has it.
    #[test]
    fn default_ignorables_match_unicode_data() {
        let Some(text) = unicode_data("DerivedCoreProperties.txt") else {
            return;
        };
        let mut listed = std::collections::BTreeSet::new();
        for line in text.lines() {
            let Some((range, rest)) = line.split_once(';') else {
                continue;
            };
            if rest.split('#').next().map(str::trim) != Some("Default_Ignorable_Code_Point") {
                continue;
            }
            let range = range.trim();
            let (lo, hi) = range.split_once("..").unwrap_or((range, range));
            let (lo, hi) = (
                u32::from_str_radix(lo, 16).unwrap(),
                u32::from_str_radix(hi, 16).unwrap(),
            );
            listed.extend(lo..=hi);
        }
        assert!(listed.len() > 4000, "{}", listed.len());
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            assert_eq!(
                is_default_ignorable(c),
                listed.contains(&(c as u32)),
                "{:04x}",
                c as u32
            );
        }
    }

    /// Every format character (`Cf`) of Unicode's own list is unsafe, by one of the two lists,
    /// and [`is_other_format`] holds nothing else.
    #[test]
    fn format_characters_match_unicode_data() {
        let Some(text) = unicode_data("UnicodeData.txt") else {
            return;
        };
        let mut format = std::collections::BTreeSet::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(';').collect();
            if fields.get(2) == Some(&"Cf") {
                format.insert(u32::from_str_radix(fields[0], 16).unwrap());
            }
        }
        assert!(format.len() > 150, "{}", format.len());
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let listed = format.contains(&(c as u32));
            if listed {
                assert!(
                    is_default_ignorable(c) || is_other_format(c),
                    "{:04x}",
                    c as u32
                );
                assert!(is_unsafe(c), "{:04x}", c as u32);
            }
            if is_other_format(c) {
                assert!(listed, "{:04x} is not Cf", c as u32);
            }
        }
    }
}
