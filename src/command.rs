//! The command parser: one command line, without its CRLF, in; a typed [`Command`] or the reason
//! it is not one out.
//!
//! It exists so that every byte-level decision about a command (verbs, paths, parameters) is made
//! in one pure function that is tested with byte literals and fuzzed, and so that the state machine
//! works on types, never on text. It decides syntax only: whether an address is local, safe or
//! known is the directory's question, asked later by the session.

use crate::escape::{is_unsafe, starts_with_mark};

mod address;
pub(crate) use address::{Address, KEEPS_QUOTES, address, is_dot_atom, unquoted, valid_domain};

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
    // session checks itself (555). A tab is let through here, but only a space ends the verb
    // (`DATA\t` is an unknown command); at either end of the argument a tab is trimmed (below),
    // and inside it a tab separates words only in AUTH: HELO's, EHLO's, BDAT's, VRFY's, EXPN's and
    // HELP's arguments refuse it (501), and so do MAIL/RCPT parameters.
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
    // Nor may an argument begin with a combining mark, which would draw itself on the space
    // before it (in `Received: from NAME` too).
    if !path_verb && starts_with_mark(rest) {
        return Err(ParseError::Syntax("argument begins with a combining mark"));
    }
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
