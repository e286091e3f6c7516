//! MAIL and RCPT parameters: which ESMTP parameters are offered, what each may say, and which
//! characters the address itself may carry.
//!
//! It exists so the parameter rules of the extensions this server advertises (SIZE, RFC 1870;
//! BODY, RFC 6152; SMTPUTF8, RFC 6531; AUTH, RFC 4954 §5) and the character rules of the
//! addresses that end up in the trace headers sit in one place beside the state machine, which
//! only asks "may this transaction start" and "may this recipient be added".

use crate::command::{Address, Param};
use crate::escape::{has_unsafe, starts_with_mark};
use crate::reply::{self, Reply};

/// What MAIL's parameters asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MailParams {
    /// `SMTPUTF8` was given (RFC 6531): addresses and headers may be UTF-8.
    pub utf8: bool,
}

/// Checks MAIL's reverse path and parameters. `extended` is true after EHLO: after HELO no
/// service extension exists (RFC 5321 §4.1.1.1), so every parameter is unknown. `auth` is true
/// when AUTH is offered.
pub(crate) fn mail(
    extended: bool,
    auth: bool,
    max_message_size: u64,
    from: Option<&Address>,
    params: &[Param],
) -> Result<MailParams, Reply> {
    let mut out = MailParams::default();
    // A known parameter given twice says two things at once (`SIZE=10 SIZE=99`, `BODY=7BIT
    // BODY=8BITMIME`): no RFC lets a server take either, so the line is a syntax error in its
    // arguments, whatever the values, rather than the first or the last value silently winning.
    if extended
        && let Some(twice) = params.iter().enumerate().find_map(|(i, param)| {
            let known = matches!(param.key.as_str(), "SIZE" | "BODY" | "SMTPUTF8")
                || (auth && param.key == "AUTH");
            (known && params.iter().take(i).any(|p| p.key == param.key)).then_some(param)
        })
    {
        return Err(given_twice(twice));
    }
    for param in params {
        if !extended {
            return Err(not_recognized(param));
        }
        match (param.key.as_str(), param.value.as_deref()) {
            ("SIZE", Some(v)) => match crate::command::digits(v) {
                // RFC 1870 §6.1: a declared size over the limit is refused at once.
                Some(n) if n > max_message_size => return Err(reply::MESSAGE_TOO_BIG),
                Some(_) => {}
                None => return Err(bad_value(param)),
            },
            // RFC 6152: both bodies are stored the same way, 8-bit octets kept as they are.
            ("BODY", Some(v))
                if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
            // RFC 3030 §3: BINARYMIME is a value of BODY that only a server advertising it
            // takes. It is not offered (mbox cannot keep a binary body exactly), so this is a
            // parameter the server cannot implement: 555 (RFC 5321 §4.1.1.11), not a syntax
            // error.
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("BINARYMIME") => {
                return Err(Reply::new(555, "5.5.4", "BODY=BINARYMIME not implemented"));
            }
            ("SMTPUTF8", None) => out.utf8 = true,
            // RFC 4954 §5: a server that offers AUTH MUST take the parameter, from any client.
            // One it does not trust is treated as `AUTH=<>`; this server relays nothing and
            // trusts no one, so the value is checked (xtext) and not used.
            ("AUTH", Some(v)) if auth && is_xtext(v) => {}
            ("AUTH", _) if auth => return Err(bad_value(param)),
            ("BODY" | "SIZE" | "SMTPUTF8", _) => return Err(bad_value(param)),
            _ => return Err(not_recognized(param)),
        }
    }
    if let Some(addr) = from {
        address(
            out.utf8,
            addr,
            reply::SENDER_NOT_ALLOWED,
            reply::SENDER_NEEDS_SMTPUTF8,
        )?;
    }
    Ok(out)
}

/// Checks RCPT's parameters and whether its address fits the transaction's encoding.
pub(crate) fn rcpt(utf8: bool, to: &Address, params: &[Param]) -> Result<(), Reply> {
    if let Some(param) = params.first() {
        // DSN (RFC 3461) is not offered, so NOTIFY and ORCPT are unknown here.
        return Err(not_recognized(param));
    }
    address(
        utf8,
        to,
        reply::NAME_NOT_ALLOWED,
        reply::RECIPIENT_NEEDS_SMTPUTF8,
    )
}

/// Checks an address's characters, whatever its role. An unsafe character (`escape::is_unsafe`:
/// controls, NEL and C1, U+2028 and U+2029, bidi controls, default-ignorable and other format
/// characters) in the local part or the domain is `not_allowed` (`553 5.1.3` for a recipient, `553 5.1.7` for a
/// sender: RFC 3463 §3.2), before and whatever the encoding: such an address
/// would reach `Return-Path:` or `Received:` and could forge a header line, and no SMTPUTF8 makes
/// it acceptable. Only then is a non-ASCII address without SMTPUTF8 refused with `needs_utf8`:
/// RFC 6531 §3.5 gives `553 5.6.7` for a recipient and `550 5.6.7` for a sender.
fn address(utf8: bool, addr: &Address, not_allowed: Reply, needs_utf8: Reply) -> Result<(), Reply> {
    // A local part that begins with a combining mark, inside its quotes or not, would draw it
    // on the `<` (or the `"`) before it in `Return-Path:`.
    if has_unsafe(&addr.local)
        || addr.domain.as_deref().is_some_and(has_unsafe)
        || starts_with_mark(addr.local.strip_prefix('"').unwrap_or(&addr.local))
    {
        return Err(not_allowed);
    }
    if !utf8 && !addr.to_string().is_ascii() {
        return Err(needs_utf8);
    }
    Ok(())
}

/// RFC 5321 §4.1.1.11: a parameter the server does not recognise is 555.
fn not_recognized(param: &Param) -> Reply {
    Reply::new(
        555,
        "5.5.4",
        format!("Parameter {}not recognized", named(param)),
    )
}

/// The parameter's name and a space, as a reply may repeat it: ASCII (RFC 6531 §3.7.4.2: no
/// UTF-8 in replies to a client that did not ask for it) and at most 64 octets, which keeps the
/// line well within 512 (RFC 5321 §4.5.3.1.5). Any other name is not repeated.
fn named(param: &Param) -> String {
    if param.key.is_ascii() && param.key.len() <= 64 {
        format!("{} ", param.key)
    } else {
        String::new()
    }
}

/// xtext, not empty: printable ASCII but `+` and `=`, and `+` followed by two hex digits.
/// RFC 3461 §4 asks for upper-case digits, but RFC 4954 §8, which defines MAIL's `AUTH=`
/// parameter (the only one that takes xtext here), writes them as ABNF's `HEXDIG`, and ABNF's
/// strings are case-insensitive (RFC 5234 §2.3): a client's `+2b` is taken.
fn is_xtext(v: &str) -> bool {
    let mut bytes = v.bytes();
    let mut any = false;
    while let Some(b) = bytes.next() {
        let ok = match b {
            b'+' => (0..2).all(|_| bytes.next().is_some_and(|h| h.is_ascii_hexdigit())),
            b'=' => false,
            b'!'..=b'~' => true,
            _ => false,
        };
        if !ok {
            return false;
        }
        any = true;
    }
    any
}

/// A parameter the line already gave, and the server knows.
fn given_twice(param: &Param) -> Reply {
    Reply::new(
        501,
        "5.5.4",
        format!("Syntax error: {}given twice", named(param)),
    )
}

/// A known parameter with a value it cannot take is a syntax error in the arguments.
fn bad_value(param: &Param) -> Reply {
    Reply::new(
        501,
        "5.5.4",
        format!("Syntax error: bad value for {}", param.key),
    )
}
