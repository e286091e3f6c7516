//! AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms, for test suites whose
//! applications are configured with SMTP credentials.
//!
//! It exists to keep the SASL exchange apart from the command half of the state machine in
//! `mod.rs`, which decides when AUTH is legal (after EHLO, outside a transaction, once) and then
//! calls [`Session::auth`]. While the server waits for a client response the session is in
//! `State::Auth`, and every line is a response, never a command (`Session::handle`). A response
//! that is `*` (the client cancels), that is not base64, or that is not a PLAIN or LOGIN message
//! ends the exchange with 501, a line too long or without CRLF with the framer's 500; each
//! returns the session to where it was before AUTH. A response line may be 1 026 octets (the
//! framer's `MAX_RESPONSE_LINE`): PLAIN's longest response, 255 octets each of authorization
//! identity, user name and password, in base64, as RFC 4954 §4 and RFC 4616 §2 ask. The AUTH
//! command itself, with an initial response, is a command line of at most 512 (RFC 4954 §4: a
//! client whose initial response would not fit sends it after the 334). There is no TLS here:
//! passwords cross the connection in the clear, so this is for tests only. Log lines name the
//! user, escaped, and never the password.

use super::{Action, Hello, Session, State};
use crate::config::Auth;
use crate::escape::{Escaped, has_unsafe, starts_with_mark};
use crate::reply::{self, Reply};

/// The AUTH settings a session needs.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    /// Which credentials are accepted; [`Auth::Off`] means AUTH is not offered.
    pub accounts: Auth,
    /// VRFY, EXPN, HELP and (after HELO or EHLO) MAIL before a successful AUTH get `530 5.7.0`.
    pub required: bool,
}

/// Which client response a SASL exchange waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sasl {
    /// `AUTH PLAIN` without an initial response: `334 ` sent, the PLAIN message is next.
    Plain,
    /// `AUTH LOGIN`: `334 VXNlcm5hbWU6` ("Username:") sent.
    LoginUser,
    /// `334 UGFzc3dvcmQ6` ("Password:") sent, after this user name.
    LoginPassword(String),
}

impl Sasl {
    fn mechanism(&self) -> &'static str {
        match self {
            Sasl::Plain => "PLAIN",
            Sasl::LoginUser | Sasl::LoginPassword(_) => "LOGIN",
        }
    }
}

/// The LOGIN mechanism's challenges, base64 of `Username:` and `Password:`.
const LOGIN_USER: &str = "VXNlcm5hbWU6";
const LOGIN_PASSWORD: &str = "UGFzc3dvcmQ6";

impl Session {
    /// `AUTH mechanism [initial]` in `State::Ready`, once `mod.rs` has found it legal.
    pub(super) fn auth(
        &mut self,
        hello: Hello,
        mechanism: String,
        initial: Option<String>,
    ) -> (State, Action) {
        let sasl = match mechanism.as_str() {
            "PLAIN" => Sasl::Plain,
            "LOGIN" => Sasl::LoginUser,
            _ => {
                log::info!(
                    "{}: AUTH <{}> refused: {}",
                    self.label,
                    Escaped(&mechanism),
                    reply::UNKNOWN_MECHANISM.code_text()
                );
                return self.refuse(State::Ready(hello), reply::UNKNOWN_MECHANISM);
            }
        };
        match initial {
            Some(response) => self.sasl_step(hello, sasl, response.as_bytes()),
            None => {
                let challenge = if sasl == Sasl::Plain { "" } else { LOGIN_USER };
                (
                    State::Auth(hello, sasl),
                    Action::Reply(Reply::plain(334, challenge)),
                )
            }
        }
    }

    /// One line (with its line ending) received in `State::Auth`.
    pub(super) fn sasl_response(
        &mut self,
        hello: Hello,
        sasl: Sasl,
        line: &[u8],
    ) -> (State, Action) {
        match line.strip_suffix(b"\r\n") {
            Some(response) => self.sasl_step(hello, sasl, response),
            // RFC 5321 §2.3.8: only CRLF ends a line.
            None => self.sasl_abort(hello, sasl, reply::BARE_LF),
        }
    }

    /// Ends the exchange with `r` (a refusal), back in `State::Ready`; the log line names the
    /// user if the exchange had one (LOGIN, after the user name).
    pub(super) fn sasl_abort(&mut self, hello: Hello, sasl: Sasl, r: Reply) -> (State, Action) {
        let user = match &sasl {
            Sasl::LoginPassword(user) => Some(user.as_str()),
            _ => None,
        };
        self.auth_refused(hello, sasl.mechanism(), user, r)
    }

    /// Logs a refused AUTH (naming `user`, escaped, if known) and refuses it with `r`.
    fn auth_refused(
        &mut self,
        hello: Hello,
        mechanism: &str,
        user: Option<&str>,
        r: Reply,
    ) -> (State, Action) {
        let user = user
            .map(|user| format!(" user=<{}>", Escaped(user)))
            .unwrap_or_default();
        log::info!(
            "{}: AUTH {mechanism}{user} refused: {}",
            self.label,
            r.code_text()
        );
        self.refuse(State::Ready(hello), r)
    }

    /// Takes one client response (without CRLF) and answers the next challenge or the outcome.
    fn sasl_step(&mut self, hello: Hello, sasl: Sasl, response: &[u8]) -> (State, Action) {
        // RFC 4954 §4: `*` cancels the exchange, with 501.
        if response == b"*" {
            return self.sasl_abort(hello, sasl, reply::AUTH_CANCELLED);
        }
        // RFC 4954 §4: `=` is an empty initial response.
        let decoded = if response == b"=" {
            Some(Vec::new())
        } else {
            decode_base64(response)
        };
        let Some(decoded) = decoded else {
            return self.sasl_abort(hello, sasl, reply::AUTH_BAD_BASE64);
        };
        let mechanism = sasl.mechanism();
        match sasl {
            Sasl::Plain => match parse_plain(&decoded) {
                Some((authzid, user, password)) => {
                    // RFC 4616 §2: acting as another identity is not offered here.
                    let ok = (authzid.is_empty() || authzid == user)
                        && self.config.auth.accounts.check(user, password);
                    self.verdict(hello, mechanism, user, ok)
                }
                None => self.sasl_abort(hello, Sasl::Plain, reply::AUTH_MALFORMED),
            },
            Sasl::LoginUser => match login_text(decoded) {
                Some(user) if valid_user(&user) => (
                    State::Auth(hello, Sasl::LoginPassword(user)),
                    Action::Reply(Reply::plain(334, LOGIN_PASSWORD)),
                ),
                // The refused name is logged (escaped), so a test sees what its client sent.
                Some(user) => {
                    self.auth_refused(hello, mechanism, Some(&user), reply::AUTH_MALFORMED)
                }
                None => self.sasl_abort(hello, sasl, reply::AUTH_MALFORMED),
            },
            Sasl::LoginPassword(user) => match login_text(decoded) {
                Some(password) => {
                    let ok = self.config.auth.accounts.check(&user, &password);
                    self.verdict(hello, mechanism, &user, ok)
                }
                None => self.auth_refused(hello, mechanism, Some(&user), reply::AUTH_MALFORMED),
            },
        }
    }

    /// `235` and an authenticated session, or `535` and the session as it was.
    fn verdict(&mut self, hello: Hello, mechanism: &str, user: &str, ok: bool) -> (State, Action) {
        if !ok {
            return self.auth_refused(hello, mechanism, Some(user), reply::AUTH_INVALID);
        }
        log::info!(
            "{}: AUTH {mechanism} user=<{}> accepted",
            self.label,
            Escaped(user)
        );
        let hello = Hello {
            user: Some(user.to_string()),
            ..hello
        };
        (State::Ready(hello), Action::Reply(reply::AUTH_OK))
    }
}

/// A PLAIN message (RFC 4616 §2): `[authzid] NUL authcid NUL passwd`, each UTF-8, the authcid
/// a [`valid_user`]. Returns (authzid, authcid, passwd).
fn parse_plain(message: &[u8]) -> Option<(&str, &str, &str)> {
    let mut parts = message.split(|&b| b == 0);
    let authzid = std::str::from_utf8(parts.next()?).ok()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let password = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() || !valid_user(user) {
        return None;
    }
    Some((authzid, user, password))
}

/// A user name may not be empty, hold a character of the unsafe set (`escape::is_unsafe`:
/// controls, line separators, bidi and invisible characters) or begin with a combining mark, as
/// no name a client gives may.
fn valid_user(user: &str) -> bool {
    !user.is_empty() && !has_unsafe(user) && !starts_with_mark(user)
}

/// A LOGIN user name or password: UTF-8 without NUL.
fn login_text(decoded: Vec<u8>) -> Option<String> {
    String::from_utf8(decoded)
        .ok()
        .filter(|text| !text.contains('\0'))
}

/// Decodes base64 (RFC 4648 §4, the standard alphabet) strictly: the length is a multiple of 4,
/// padding only at the end and at most two `=`, no white space, and the unused bits of the last
/// group zero, so every input has at most one decoding. The output is at most three quarters of
/// the input (here at most one command line). `None` when the input is not such base64.
pub(crate) fn decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    if !input.len().is_multiple_of(4) {
        return None;
    }
    let groups = input.len() / 4;
    let mut out = Vec::with_capacity(groups * 3);
    for (i, group) in input.chunks_exact(4).enumerate() {
        let pad = group.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != groups) {
            return None;
        }
        let mut bits: u32 = 0;
        for &b in group.iter().take(4 - pad) {
            bits = (bits << 6) | u32::from(sextet(b)?);
        }
        bits <<= 6 * pad;
        let [_, b1, b2, b3] = bits.to_be_bytes();
        match pad {
            0 => out.extend_from_slice(&[b1, b2, b3]),
            1 if b3 == 0 => out.extend_from_slice(&[b1, b2]),
            2 if b2 == 0 && b3 == 0 => out.push(b1),
            // Bits set under the padding: a second spelling of a shorter input.
            _ => return None,
        }
    }
    Some(out)
}

/// The value of one base64 character, or `None` (`=` included: padding is handled above).
fn sextet(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_rfc_4648_vectors() {
        // RFC 4648 §10.
        for (encoded, plain) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(
                decode_base64(encoded.as_bytes()).as_deref(),
                Some(plain.as_bytes()),
                "{encoded}"
            );
        }
        assert_eq!(
            decode_base64(b"AGpvbmVzAHMzY3JldA==").unwrap(),
            b"\0jones\0s3cret"
        );
        assert_eq!(decode_base64(b"+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        assert_eq!(decode_base64(LOGIN_USER.as_bytes()).unwrap(), b"Username:");
        assert_eq!(
            decode_base64(LOGIN_PASSWORD.as_bytes()).unwrap(),
            b"Password:"
        );
    }

    #[test]
    fn base64_is_strict() {
        for bad in [
            &b"Zg"[..], // no padding
            b"Zg=",     // short
            b"Zg===",   // too long
            b"Z===",    // three pad characters
            b"====",
            b"Zg==Zm9v", // padding inside
            b"Z=g=",
            b"Zh==", // unused bits set
            b"Zm9=", // unused bits set
            b"Zm9v YmFy",
            b"Zm9v\tYmF",
            b"Zm9-", // URL-safe alphabet
            b"Zm9_",
            b"*",
            b"\xc3\xa9abc",
            b"Zm9vYmFy\r\n",
        ] {
            assert_eq!(
                decode_base64(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn base64_every_byte_value_round_trips() {
        // Encode with a reference encoder written out here, then decode.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in 0..data.len() {
            let plain = &data[..len];
            let mut encoded = Vec::new();
            for group in plain.chunks(3) {
                let n = (u32::from(group[0]) << 16)
                    | (u32::from(*group.get(1).unwrap_or(&0)) << 8)
                    | u32::from(*group.get(2).unwrap_or(&0));
                for k in 0..4 {
                    if k <= group.len() {
                        encoded.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize]);
                    } else {
                        encoded.push(b'=');
                    }
                }
            }
            assert_eq!(decode_base64(&encoded).as_deref(), Some(plain), "{len}");
        }
    }

    #[test]
    fn plain_messages() {
        assert_eq!(parse_plain(b"\0jones\0pw"), Some(("", "jones", "pw")));
        assert_eq!(
            parse_plain(b"jones\0jones\0p:w\xc3\xa9"),
            Some(("jones", "jones", "p:w\u{e9}"))
        );
        assert_eq!(parse_plain(b"\0jones\0"), Some(("", "jones", "")));
        for bad in [
            &b""[..],
            b"jones",
            b"\0jones",
            b"\0\0pw",
            b"\0jones\0pw\0",
            b"\0jo\xffnes\0pw",
            b"\0jo\x13nes\0pw",
        ] {
            assert_eq!(parse_plain(bad), None, "{bad:?}");
        }
    }
}
