//! Unit tests of the command parser, fed byte literals.

use super::*;

fn addr(local: &str, domain: Option<&str>) -> Address {
    Address {
        local: local.into(),
        domain: domain.map(Into::into),
    }
}

#[test]
fn helo_and_ehlo() {
    assert_eq!(
        parse(b"helo a.domain"),
        Ok(Command::Helo("a.domain".into()))
    );
    assert_eq!(
        parse(b"EHLO [127.0.0.1]"),
        Ok(Command::Ehlo("[127.0.0.1]".into()))
    );
    assert_eq!(
        parse(b"HELO"),
        Err(ParseError::Syntax("expected a domain name"))
    );
    assert!(matches!(parse(b"HELO a b"), Err(ParseError::Syntax(_))));
}

#[test]
fn mail_forms() {
    let want = Ok(Command::Mail {
        verb: MailVerb::Mail,
        from: Some(addr("Smith", Some("USC-ISIF.ARPA"))),
        params: vec![],
    });
    assert_eq!(parse(b"MAIL FROM:<Smith@USC-ISIF.ARPA>"), want);
    assert_eq!(parse(b"mail from: <Smith@USC-ISIF.ARPA>"), want);
    assert_eq!(parse(b"MAIL FROM:Smith@USC-ISIF.ARPA"), want);
    assert_eq!(
        parse(b"MAIL FROM:<>"),
        Ok(Command::Mail {
            verb: MailVerb::Mail,
            from: None,
            params: vec![]
        })
    );
    assert!(matches!(
        parse(b"SOML FROM:<a@b>"),
        Ok(Command::Mail {
            verb: MailVerb::Soml,
            ..
        })
    ));
    assert!(matches!(
        parse(b"SAML FROM:<a@b>"),
        Ok(Command::Mail {
            verb: MailVerb::Saml,
            ..
        })
    ));
    assert!(matches!(
        parse(b"SEND FROM:<a@b>"),
        Ok(Command::Mail {
            verb: MailVerb::Send,
            ..
        })
    ));
}

#[test]
fn mail_params() {
    assert_eq!(
        parse(b"MAIL FROM:<a@b.c> SIZE=100 body=8BITMIME"),
        Ok(Command::Mail {
            verb: MailVerb::Mail,
            from: Some(addr("a", Some("b.c"))),
            params: vec![
                Param {
                    key: "SIZE".into(),
                    value: Some("100".into())
                },
                Param {
                    key: "BODY".into(),
                    value: Some("8BITMIME".into())
                },
            ],
        })
    );
    assert!(matches!(
        parse(b"MAIL FROM:<a@b.c> =x"),
        Err(ParseError::Syntax(_))
    ));
    assert!(matches!(
        parse(b"MAIL FROM:<a@b.c>SIZE=1"),
        Err(ParseError::Syntax(_))
    ));
}

#[test]
fn rcpt_forms() {
    assert_eq!(
        parse(b"RCPT TO:<Jones@BBN-UNIX.ARPA>"),
        Ok(Command::Rcpt {
            to: addr("Jones", Some("BBN-UNIX.ARPA")),
            params: vec![]
        })
    );
    assert_eq!(
        parse(b"RCPT TO:<postmaster>"),
        Ok(Command::Rcpt {
            to: addr("postmaster", None),
            params: vec![]
        })
    );
    // Source routes are accepted and ignored (RFC 5321 §4.1.2).
    assert_eq!(
        parse(b"RCPT TO:<@hosta.int,@jkl.org:userc@d.bar.org>"),
        Ok(Command::Rcpt {
            to: addr("userc", Some("d.bar.org")),
            params: vec![]
        })
    );
    assert_eq!(
        parse(b"RCPT TO:<\"a>b\"@x.org>"),
        Ok(Command::Rcpt {
            to: addr("\"a>b\"", Some("x.org")),
            params: vec![]
        })
    );
    assert!(matches!(parse(b"RCPT TO:<>"), Err(ParseError::Syntax(_))));
    assert!(matches!(parse(b"RCPT <a@b>"), Err(ParseError::Syntax(_))));
    assert!(matches!(parse(b"RCPT TO:<a@b"), Err(ParseError::Syntax(_))));
    assert!(matches!(
        parse(b"RCPT TO:<a@-b>"),
        Err(ParseError::Syntax(_))
    ));
    assert!(matches!(parse(b"RCPT TO:<@b>"), Err(ParseError::Syntax(_))));
}

#[test]
fn simple_verbs() {
    assert_eq!(parse(b"data"), Ok(Command::Data));
    assert_eq!(parse(b"RSET"), Ok(Command::Rset));
    assert_eq!(parse(b"QUIT"), Ok(Command::Quit));
    assert_eq!(parse(b"TURN"), Ok(Command::Turn));
    assert_eq!(parse(b"NOOP anything"), Ok(Command::Noop));
    assert_eq!(parse(b"HELP"), Ok(Command::Help(None)));
    assert_eq!(parse(b"HELP mail"), Ok(Command::Help(Some("mail".into()))));
    assert_eq!(parse(b"VRFY Smith"), Ok(Command::Vrfy("Smith".into())));
    assert_eq!(parse(b"EXPN staff"), Ok(Command::Expn("staff".into())));
    assert!(matches!(parse(b"VRFY"), Err(ParseError::Syntax(_))));
    assert!(matches!(parse(b"DATA now"), Err(ParseError::Syntax(_))));
    assert!(matches!(parse(b"QUIT now"), Err(ParseError::Syntax(_))));
}

#[test]
fn bdat_forms() {
    assert_eq!(
        parse(b"BDAT 100 LAST"),
        Ok(Command::Bdat {
            size: 100,
            last: true
        })
    );
    assert_eq!(
        parse(b"bdat 0"),
        Ok(Command::Bdat {
            size: 0,
            last: false
        })
    );
    assert!(matches!(parse(b"BDAT"), Err(ParseError::Syntax(_))));
    assert!(matches!(parse(b"BDAT -1"), Err(ParseError::Syntax(_))));
    assert!(matches!(parse(b"BDAT 1 FIRST"), Err(ParseError::Syntax(_))));
    assert!(matches!(
        parse(b"BDAT 99999999999999999999999"),
        Err(ParseError::Syntax(_))
    ));
}

#[test]
fn garbage() {
    assert_eq!(parse(b""), Err(ParseError::Unrecognized));
    assert_eq!(parse(b"XYZZY"), Err(ParseError::Unrecognized));
    assert_eq!(parse(b"\xff\xfe"), Err(ParseError::Unrecognized));
    assert!(matches!(
        parse(b"MAIL FROM:<\xff@b>"),
        Err(ParseError::Syntax(_))
    ));
    assert!(matches!(parse(b"VRFY a\x00b"), Err(ParseError::Syntax(_))));
    assert!(matches!(
        parse(b"MAIL FROM:<a@b\x01>"),
        Err(ParseError::Syntax(_))
    ));
    // A control character in a local part parses; the directory refuses it as a name.
    assert!(matches!(
        parse(b"MAIL FROM:<a\x00@b>"),
        Ok(Command::Mail { .. })
    ));
}
