//! The command parser: one command line, without its CRLF, in; a typed [`Command`] or the reason
//! it is not one out.
//!
//! It exists so that every byte-level decision about a command (verbs, paths, parameters) is made
//! in one pure function that is tested with byte literals and fuzzed, and so that the state machine
//! works on types, never on text. It decides syntax only: whether an address is local, safe or
//! known is the directory's question, asked later by the session.

use std::borrow::Cow;
use std::fmt;

use crate::escape::is_unsafe;

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

/// One `KEY[=VALUE]` parameter after a MAIL or RCPT path (RFC 5321 §4.1.2, `esmtp-param`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Param {
    /// The keyword, upper-cased.
    pub key: String,
    /// The value, as sent.
    pub value: Option<String>,
}

/// Which of the four "start a transaction" verbs of RFC 821 §4.1.1 was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MailVerb {
    /// `MAIL FROM:` deliver to a mailbox.
    Mail,
    /// `SEND FROM:` deliver to a terminal.
    Send,
    /// `SOML FROM:` send to a terminal or else to a mailbox.
    Soml,
    /// `SAML FROM:` send to a terminal and to a mailbox.
    Saml,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Helo(String),
    Ehlo(String),
    /// `MAIL FROM:` and its RFC 821 siblings; `from` is `None` for the null path `<>`.
    Mail {
        verb: MailVerb,
        from: Option<Address>,
        params: Vec<Param>,
    },
    Rcpt {
        to: Address,
        params: Vec<Param>,
    },
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    /// VRFY's string, and whether RFC 6531 §3.7.4.2's `SMTPUTF8` followed it.
    Vrfy {
        arg: String,
        utf8: bool,
    },
    /// EXPN's string, and whether `SMTPUTF8` followed it.
    Expn {
        arg: String,
        utf8: bool,
    },
    Help(Option<String>),
    Noop,
    Quit,
    Turn,
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4): the mechanism upper-cased, the
    /// initial response as sent (base64, or `=` for an empty one); the session decodes it.
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
}

/// Why a line is not a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// The verb is not one this server knows: 500.
    Unrecognized,
    /// The verb is known but its arguments are malformed: 501, with the reason.
    Syntax(&'static str),
    /// A MAIL or RCPT path is malformed: 501, with the reason and RFC 3463 §3.2's code for bad
    /// address syntax, X.1.7 for the sender's (`sender`), X.1.3 for a recipient's.
    Address { sender: bool, why: &'static str },
}

/// Parses one command line, given without its terminating CRLF.
pub(crate) fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let mut words = line.splitn(2, |&b| b == b' ');
    let verb = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default();
    let verb = verb.to_ascii_uppercase();
    let known = matches!(
        verb.as_slice(),
        b"HELO"
            | b"EHLO"
            | b"MAIL"
            | b"SEND"
            | b"SOML"
            | b"SAML"
            | b"RCPT"
            | b"DATA"
            | b"BDAT"
            | b"RSET"
            | b"VRFY"
            | b"EXPN"
            | b"HELP"
            | b"NOOP"
            | b"QUIT"
            | b"TURN"
            | b"AUTH"
    );
    if !known {
        return Err(ParseError::Unrecognized);
    }
    // RFC 5321 §4.1.1.9: a server SHOULD ignore NOOP's string, whatever its octets. It is
    // never stored or logged, so no character of it is refused.
    if verb.as_slice() == b"NOOP" {
        return Ok(Command::Noop);
    }
    let rest = std::str::from_utf8(rest).map_err(|e| {
        // In the path, the bad octet is the address's: its syntax is what is wrong.
        let keyword = match verb.as_slice() {
            b"MAIL" | b"SEND" | b"SOML" | b"SAML" => "FROM:",
            b"RCPT" => "TO:",
            _ => return ParseError::Syntax("argument is not UTF-8"),
        };
        match path_span(rest, keyword) {
            Some(path) if path.contains(&e.valid_up_to()) => ParseError::Address {
                sender: keyword == "FROM:",
                why: "the address is not UTF-8",
            },
            _ => ParseError::Syntax("argument is not UTF-8"),
        }
    })?;
    // Unsafe characters (controls, line separators, bidi controls, invisible characters: see
    // `escape::is_unsafe`) are a syntax error in every argument but a path, whose address the
    // session refuses with 553 (`session/params.rs`) unless they stand where the path's grammar
    // has no place for them (an ASCII control in a domain, anything non-ASCII in an address
    // literal: 501 from `address`), and MAIL and RCPT parameters, which the
    // session checks itself (555); a tab separates the words of most commands, not BDAT's or
    // MAIL/RCPT parameters, where it is a syntax error, nor VRFY's, EXPN's or HELP's (below).
    let path_verb = matches!(
        verb.as_slice(),
        b"MAIL" | b"SEND" | b"SOML" | b"SAML" | b"RCPT"
    );
    if !path_verb && rest.chars().any(|c| is_unsafe(c) && c != '\t') {
        return Err(ParseError::Syntax(
            "control, separator or invisible character in argument",
        ));
    }
    let rest = rest.trim_matches(|c| c == ' ' || c == '\t');
    // A tab inside the argument of VRFY, EXPN or HELP separates nothing (a space does), so it
    // is refused there like the other controls; at either end it was trimmed above.
    if matches!(verb.as_slice(), b"VRFY" | b"EXPN" | b"HELP") && rest.contains('\t') {
        return Err(ParseError::Syntax(
            "control, separator or invisible character in argument",
        ));
    }
    let no_args = |cmd: Command| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(ParseError::Syntax("this command takes no arguments"))
        }
    };
    let required = |what: &'static str| {
        if rest.is_empty() {
            Err(ParseError::Syntax(what))
        } else {
            Ok(rest.to_string())
        }
    };
    match verb.as_slice() {
        b"HELO" => Ok(Command::Helo(domain_arg(rest)?)),
        b"EHLO" => Ok(Command::Ehlo(domain_arg(rest)?)),
        b"MAIL" => mail(MailVerb::Mail, rest),
        b"SEND" => mail(MailVerb::Send, rest),
        b"SOML" => mail(MailVerb::Soml, rest),
        b"SAML" => mail(MailVerb::Saml, rest),
        b"RCPT" => {
            let path = strip_keyword(rest, "TO:")
                .ok_or(ParseError::Syntax("expected RCPT TO:<address>"))?;
            let (to, params) = path_and_params(path, false)?;
            let to = to.ok_or(ParseError::Address {
                sender: false,
                why: "a recipient cannot be the null path",
            })?;
            Ok(Command::Rcpt { to, params })
        }
        b"DATA" => no_args(Command::Data),
        b"BDAT" => bdat(rest),
        b"RSET" => no_args(Command::Rset),
        b"VRFY" => {
            let (arg, utf8) = lookup(required("expected VRFY <user>")?);
            Ok(Command::Vrfy { arg, utf8 })
        }
        b"EXPN" => {
            let (arg, utf8) = lookup(required("expected EXPN <list>")?);
            Ok(Command::Expn { arg, utf8 })
        }
        b"HELP" => Ok(Command::Help((!rest.is_empty()).then(|| rest.to_string()))),
        b"QUIT" => no_args(Command::Quit),
        b"TURN" => no_args(Command::Turn),
        b"AUTH" => auth(rest),
        _ => Err(ParseError::Unrecognized),
    }
}

fn domain_arg(rest: &str) -> Result<String, ParseError> {
    // RFC 5321 §4.1.1.1: the argument is a domain or an address literal. Any single token free of
    // unsafe characters (refused above) is taken, as Postfix takes it by default: real clients
    // send names that are not domains (`my_app_1`, a container's or a Windows host's name), and
    // §4.1.4 forbids refusing one for not matching the client's address. The name goes into the
    // `Received:` header the server writes, its header syntax (`(`, `;`...) neutered there
    // (`mbox::from_name`).
    if rest.is_empty() || rest.contains([' ', '\t']) {
        return Err(ParseError::Syntax("expected a domain name"));
    }
    Ok(rest.to_string())
}

fn auth(rest: &str) -> Result<Command, ParseError> {
    const USAGE: ParseError = ParseError::Syntax("expected AUTH <mechanism> [initial-response]");
    let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
    // RFC 4422 §3.1: sasl-mech = 1*20(UPPER-ALPHA / DIGIT / "-" / "_"), taken in any case.
    let mechanism = words
        .next()
        .filter(|m| {
            m.len() <= 20
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .ok_or(USAGE)?
        .to_ascii_uppercase();
    let initial = words.next().map(str::to_string);
    if words.next().is_some() {
        return Err(USAGE);
    }
    Ok(Command::Auth { mechanism, initial })
}

fn bdat(rest: &str) -> Result<Command, ParseError> {
    let mut words = rest.split(' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .and_then(digits)
        .ok_or(ParseError::Syntax("expected BDAT <size> [LAST]"))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(ParseError::Syntax("expected BDAT <size> [LAST]")),
    };
    if words.next().is_some() {
        return Err(ParseError::Syntax("expected BDAT <size> [LAST]"));
    }
    Ok(Command::Bdat { size, last })
}

/// A VRFY or EXPN argument split from RFC 6531 §3.7.4.2's optional `SMTPUTF8` after it (`vrfy
/// = "VRFY" SP String [ SP "SMTPUTF8" ]`), which allows UTF-8 in the reply. A lone `SMTPUTF8`
/// is the string itself.
fn lookup(arg: String) -> (String, bool) {
    match arg.rsplit_once(' ') {
        Some((rest, last)) if last.eq_ignore_ascii_case("SMTPUTF8") && !rest.trim().is_empty() => {
            (rest.trim_end().to_string(), true)
        }
        _ => (arg, false),
    }
}

/// A size as RFC 3030 §2 (`chunk-size ::= 1*DIGIT`) and RFC 1870 §3 (`size-value ::=
/// 1*20DIGIT`) write it: digits only, leading zeros and all; `None` for anything else (a sign
/// too). A value too large for a `u64` is taken as `u64::MAX`, not refused: it is over every
/// limit, which is the answer it gets (552 for SIZE; for a BDAT chunk over twice the size
/// limit, 552 and the end of the session, where refusing only the command would have its
/// octets read as commands).
pub(crate) fn digits(word: &str) -> Option<u64> {
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(word.parse().unwrap_or(u64::MAX))
}

fn mail(verb: MailVerb, rest: &str) -> Result<Command, ParseError> {
    let path = strip_keyword(rest, "FROM:").ok_or(ParseError::Syntax("expected FROM:<address>"))?;
    let (from, params) = path_and_params(path, true)?;
    Ok(Command::Mail { verb, from, params })
}

/// Strips a case-insensitive keyword such as `FROM:`; spaces after the colon are tolerated.
fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let (head, tail) = rest.split_at_checked(keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| tail.trim_start_matches(' '))
}

/// Splits `<path> PARAM=VALUE ...` into the address (None for `<>`) and its parameters. A
/// malformed path is a [`ParseError::Address`] of the `sender`'s or a recipient's.
fn path_and_params(s: &str, sender: bool) -> Result<(Option<Address>, Vec<Param>), ParseError> {
    let bad_address = |e| match e {
        ParseError::Syntax(why) => ParseError::Address { sender, why },
        other => other,
    };
    let (path, rest) = if let Some(inner) = s.strip_prefix('<') {
        let (path, rest) = closing_bracket(inner.as_bytes())
            .and_then(|end| inner.split_at_checked(end))
            .ok_or(ParseError::Address {
                sender,
                why: "unterminated <path>",
            })?;
        (path, rest.strip_prefix('>').unwrap_or(rest))
    } else if s.is_empty() {
        // RFC 5321 §4.1.2: the null path is `<>`; nothing at all is no path.
        return Err(ParseError::Syntax("expected a <path>, or <> for none"));
    } else {
        // Lenient: a bare address without angle brackets, as many test clients send.
        s.find(' ')
            .and_then(|i| s.split_at_checked(i))
            .unwrap_or((s, ""))
    };
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(ParseError::Syntax("expected a space after the path"));
    }
    let address = if path.is_empty() {
        None
    } else {
        Some(
            strip_source_route(path)
                .and_then(address)
                .map_err(bad_address)?,
        )
    };
    let params = rest
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(param)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((address, params))
}

/// The index of the `>` closing a path, skipping a quoted local part.
/// On bytes, so that it also finds the end of a path that is not UTF-8 (see [`path_span`]): the
/// bytes it looks for are ASCII, never part of a longer UTF-8 character.
fn closing_bracket(s: &[u8]) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, &c) in s.iter().enumerate() {
        match c {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Where the path of a MAIL or RCPT argument lies in `rest` (which may not be UTF-8), as
/// [`path_and_params`] finds it: after `keyword` and any spaces, from `<` to its closing `>`
/// (or the end, unterminated), or a bare path up to the first space. `None` without the keyword.
fn path_span(rest: &[u8], keyword: &str) -> Option<std::ops::Range<usize>> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword.as_bytes()) {
        return None;
    }
    let after = rest.get(keyword.len()..).unwrap_or_default();
    let start = keyword.len() + after.iter().take_while(|&&b| b == b' ').count();
    let path = rest.get(start..).unwrap_or_default();
    let len = match path.split_first() {
        Some((b'<', inner)) => closing_bracket(inner).map_or(path.len(), |end| end + 2),
        _ => path.iter().position(|&b| b == b' ').unwrap_or(path.len()),
    };
    Some(start..start + len)
}

/// RFC 5321 §4.1.2 and Appendix C: a source route (`@a,@b:user@c`) is accepted and ignored.
fn strip_source_route(path: &str) -> Result<&str, ParseError> {
    if !path.starts_with('@') {
        return Ok(path);
    }
    let (route, mailbox) = path
        .split_once(':')
        .ok_or(ParseError::Syntax("malformed source route"))?;
    if route.split(',').any(|hop| {
        hop.strip_prefix('@')
            .is_none_or(|domain| !valid_domain(domain))
    }) {
        return Err(ParseError::Syntax("malformed source route"));
    }
    Ok(mailbox)
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

/// A local part without quotes it does not need. RFC 5322 §3.2.4: a quoted string means what
/// the atoms it quotes mean, and RFC 5321 §4.1.2 wants all quoted forms treated alike, so
/// `"jones"` and `"jo\nes"` (a quoted-pair) are `jones` (and `"post\master"` is postmaster, RFC
/// 5321 §4.5.1), for RCPT as for VRFY. Only a local part that needs its quotes keeps them, as
/// written.
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
    if is_dot_atom(&plain) {
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
    d.strip_suffix('.').unwrap_or(d).split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
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

fn param(word: &str) -> Result<Param, ParseError> {
    let (key, value) = match word.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (word, None),
    };
    // RFC 5321 §4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
    let key_ok = key
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    // esmtp-value = 1*(%d33-60 / %d62-126), widened to UTF-8 for RFC 6531; checked here only
    // for being non-empty and holding no `=`.
    let value_ok = value.is_none_or(|v| !v.is_empty() && !v.contains('='));
    if !key_ok || !value_ok {
        return Err(ParseError::Syntax("malformed parameter"));
    }
    Ok(Param {
        key: key.to_ascii_uppercase(),
        value: value.map(str::to_string),
    })
}

#[cfg(test)]
mod tests;
