//! Addresses as a path writes them: the [`Address`] type, and the syntax of its local part and
//! domain (RFC 5321 §4.1.2, with §4.1.3's address literals).
//!
//! It exists apart from the command parser because the same rules serve more than commands: the
//! configuration checks domains and alias targets with them, and the directory and the library
//! unquote local parts with them, so an address means one thing wherever it is read.

use std::borrow::Cow;
use std::fmt;

use super::ParseError;

/// A mailbox address as written in a path: `local@domain`, or a bare `local` with no domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    /// The local part as sent, less quotes it does not need (`"jones"` is `jones`; a quoted
    /// string that needs them keeps them).
    pub local: String,
    /// The domain, when one was given.
    pub domain: Option<String>,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            Some(domain) => write!(f, "{}@{}", self.local, domain),
            None => f.write_str(&self.local),
        }
    }
}

impl Address {
    /// The address with a domain: its own, or `home` when none was given. RFC 5321 §4.4 wants
    /// a mailbox, which has one, in `Return-Path:` and in `Received:`'s `for`.
    pub(crate) fn qualified(&self, home: &str) -> String {
        format!("{}@{}", self.local, self.domain.as_deref().unwrap_or(home))
    }
}

pub(crate) fn address(s: &str) -> Result<Address, ParseError> {
    // The domain follows the `@` that ends the local part: right after the closing quote of a
    // quoted local part, or the first `@` of an unquoted one. RFC 5321 §4.1.2: an unquoted local
    // part is a Dot-string, which has no `@`, so `alice@evil.test@example.com` is a syntax error
    // (taking the last `@` would make `alice@evil.test` a local part).
    let at = if let Some(quoted) = s.strip_prefix('"') {
        let close = quoted
            .char_indices()
            .scan(false, |escaped, (i, c)| {
                let found = !*escaped && c == '"';
                *escaped = !*escaped && c == '\\';
                Some((i, found))
            })
            .find(|&(_, found)| found)
            .map(|(i, _)| i + 1)
            .ok_or(ParseError::Syntax("unterminated quoted local part"))?;
        let after = s.get(close + 1..).unwrap_or_default();
        if !after.is_empty() && !after.starts_with('@') {
            return Err(ParseError::Syntax("text after a quoted local part"));
        }
        (!after.is_empty()).then_some(close + 1)
    } else if s.matches('@').count() > 1 {
        return Err(ParseError::Syntax(
            "an unquoted local part cannot contain @",
        ));
    } else {
        s.find('@')
    };
    let (local, domain) = match at.and_then(|at| s.split_at_checked(at)) {
        Some((local, rest)) => (local, Some(rest.strip_prefix('@').unwrap_or(rest))),
        None => (s, None),
    };
    if local.is_empty() {
        return Err(ParseError::Syntax("empty local part"));
    }
    if local.contains(['<', '>', ' ']) && !local.starts_with('"') {
        return Err(ParseError::Syntax("malformed local part"));
    }
    if let Some(domain) = domain
        && !valid_domain(domain)
    {
        return Err(ParseError::Syntax("malformed domain"));
    }
    if s.len() > 256 {
        // RFC 5321 §4.5.3.1.3: a path is at most 256 octets, its angle brackets included;
        // counted without them here, so up to 258 with them are taken.
        return Err(ParseError::Syntax("path too long"));
    }
    Ok(Address {
        local: unquoted(local).into_owned(),
        // `x.test.` is the domain `x.test` written absolute; RFC 5321 §4.1.2's Domain has no
        // trailing dot, and headers and the From_ line are written without it.
        domain: domain.map(|d| d.strip_suffix('.').unwrap_or(d).to_string()),
    })
}

/// What a quoted local part holding one of them needs its quotes for: this parser takes no such
/// local part unquoted.
pub(crate) const KEEPS_QUOTES: [char; 6] = [' ', '<', '>', '@', '"', '\\'];

/// A local part without quotes it does not need. RFC 5322 §3.2.4: a quoted string means what
/// the atoms it quotes mean, and RFC 5321 §4.1.2 wants all quoted forms treated alike, so
/// `"jones"` and `"jo\nes"` (a quoted-pair) are `jones` (and `"post\master"` is postmaster, RFC
/// 5321 §4.5.1), for RCPT as for VRFY. So is any text this parser also takes unquoted, though
/// RFC 5321 wants it quoted: `"a(b"` is `a(b`, the mailbox `a(b@x.test` names (one was refused
/// for its quotes, the other delivered). Only a local part that needs its quotes here keeps
/// them, as written: one that is empty or holds a space, `<`, `>`, `@`, `"` or `\`.
pub(crate) fn unquoted(local: &str) -> Cow<'_, str> {
    let Some(inner) = local
        .strip_prefix('"')
        .and_then(|quoted| quoted.strip_suffix('"'))
    else {
        return Cow::Borrowed(local);
    };
    let plain = if inner.contains('\\') {
        let mut decoded = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                decoded.push(c);
            } else if let Some(escaped) = chars.next() {
                decoded.push(escaped);
            } else {
                // A backslash before the last quote escapes it: the string is not closed.
                return Cow::Borrowed(local);
            }
        }
        Cow::Owned(decoded)
    } else {
        Cow::Borrowed(inner)
    };
    if is_dot_atom(&plain) || !plain.is_empty() && !plain.contains(KEEPS_QUOTES) {
        plain
    } else {
        Cow::Borrowed(local)
    }
}

/// RFC 5322 §3.2.3's atext, with RFC 6532's UTF-8: the octets an unquoted local part is made of,
/// with dots between them.
fn is_atext(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | 0x80..=0xff | b'!' | b'#'..=b'\''
        | b'*' | b'+' | b'-' | b'/' | b'=' | b'?' | b'^'..=b'`' | b'{'..=b'~')
}

/// A dot-atom's text: atext runs joined by single dots (RFC 5322 §3.2.3).
pub(crate) fn is_dot_atom(s: &str) -> bool {
    s.split('.')
        .all(|atom| !atom.is_empty() && atom.bytes().all(is_atext))
}

/// A domain name (letters, digits, hyphens and UTF-8 in dot-separated labels, with at most one
/// dot after the last: an absolute name) or an address literal in brackets (RFC 5321 §4.1.3).
pub(crate) fn valid_domain(d: &str) -> bool {
    if d.is_empty() || d.len() > 255 {
        return false;
    }
    if let Some(literal) = d.strip_prefix('[') {
        return literal.strip_suffix(']').is_some_and(valid_literal);
    }
    // A U-label may not begin with a combining mark either (RFC 5891 §4.2.3.2).
    d.strip_suffix('.').unwrap_or(d).split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !crate::escape::starts_with_mark(label)
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
    })
}

/// The inside of an address literal, as RFC 5321 §4.1.3 writes it: an IPv4 address, `IPv6:`
/// and an IPv6 address, or a tag (`Ldh-str`) and a colon before printable ASCII without `[`,
/// `\` or `]`.
fn valid_literal(inner: &str) -> bool {
    match inner.split_once(':') {
        None => valid_ipv4(inner),
        Some((tag, address)) if tag.eq_ignore_ascii_case("IPv6") => valid_ipv6(address),
        Some((tag, content)) => {
            tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && tag.ends_with(|c: char| c.is_ascii_alphanumeric())
                && !content.is_empty()
                && content.bytes().all(|b| matches!(b, 33..=90 | 94..=126))
        }
    }
}

/// §4.1.3's IPv4-address-literal: four decimal numbers up to 255 (`Snum = 1*3DIGIT`, so
/// leading zeros are allowed), joined by dots.
fn valid_ipv4(text: &str) -> bool {
    let snum = |n: &str| {
        (1..=3).contains(&n.len())
            && n.bytes().all(|b| b.is_ascii_digit())
            && n.parse::<u8>().is_ok()
    };
    text.split('.').count() == 4 && text.split('.').all(snum)
}

/// §4.1.3's IPv6-addr: eight groups of one to four hex digits, or fewer around one `::` that
/// stands for at least two (so at most six besides it); the last two groups may be written as
/// an IPv4 address (IPv6v4-full, IPv6v4-comp). Written by hand: std's parser refuses an IPv4
/// tail with leading zeros, which `Snum` allows, and takes `::` for a single group.
fn valid_ipv6(text: &str) -> bool {
    let hex = |g: &str| (1..=4).contains(&g.len()) && g.bytes().all(|b| b.is_ascii_hexdigit());
    let groups = |part: &str| -> Option<usize> {
        if part.is_empty() {
            return Some(0);
        }
        part.split(':').all(hex).then(|| part.split(':').count())
    };
    // An IPv4 tail counts as the two groups it stands for. What comes before it ends in `:`,
    // which is the end of a `::` or separates it from the last group.
    let (head, tail_groups) = match text.rsplit_once(':') {
        Some((_, tail)) if tail.contains('.') => {
            if !valid_ipv4(tail) {
                return false;
            }
            let head = text.get(..text.len() - tail.len()).unwrap_or_default();
            match head.strip_suffix(':') {
                Some(rest) if !head.ends_with("::") => (rest, 2),
                _ => (head, 2),
            }
        }
        _ => (text, 0),
    };
    match head.split_once("::") {
        None => groups(head).is_some_and(|n| n + tail_groups == 8),
        Some((left, right)) => {
            let besides = groups(left)
                .zip(groups(right))
                .map(|(l, r)| l + r + tail_groups);
            !right.contains("::") && besides.is_some_and(|n| n <= 6)
        }
    }
}
