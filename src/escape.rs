//! Escaping for log lines: a client's string shown so that it can never forge a line or hide.
//!
//! It exists because every log line that quotes a client (an address, a HELO name, a mailbox)
//! must be safe to read: a control character, a Unicode line or paragraph separator (U+2028,
//! U+2029), NEL (U+0085) or a C1 control could start a new, forged log line in a terminal or a
//! log viewer, and bidirectional overrides or invisible characters could make one name display
//! as another. Each such character is written as `\u{XXXX}`, and a backslash as `\\`, so the
//! escaping is unambiguous.

use std::fmt;

/// Displays a string with every unsafe character escaped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for c in self.0.chars() {
            if c == '\\' {
                f.write_str("\\\\")?;
            } else if needs_escape(c) {
                write!(f, "\\u{{{:04x}}}", c as u32)?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// True for characters that must not appear raw in a log line.
pub(crate) fn needs_escape(c: char) -> bool {
    c.is_control() // C0, DEL and C1, which includes NEL (U+0085) and CSI (U+009B)
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{061c}' | '\u{200e}' | '\u{200f}' // bidi marks
            | '\u{202a}'..='\u{202e}' // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{200b}'..='\u{200d}' | '\u{2060}'..='\u{2064}' | '\u{feff}' // invisible
            | '\u{180e}' | '\u{00ad}' | '\u{034f}' | '\u{115f}' | '\u{1160}' | '\u{3164}'
            | '\u{fff9}'..='\u{fffb}'
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
    fn backslash_is_escaped_so_escapes_cannot_be_forged() {
        assert_eq!(esc("\\u{000a}"), "\\\\u{000a}");
    }
}
