//! Unit tests of the mbox reader, fed mbox text as byte literals: where entries start, how
//! quoting and field renaming are undone, and what it makes of entries mboxd did not write.

use super::*;

const FIRST: &str = "From a@b.test Sun Nov 22 07:33:49 2026\n";

fn parse(text: &[u8]) -> Vec<Message> {
    Mailbox::parse(text).unwrap().into_messages()
}

#[test]
fn empty_and_not_an_mbox() {
    assert!(Mailbox::parse(b"").unwrap().is_empty());
    assert_eq!(Mailbox::parse(b"Subject: x\n"), Err(ParseError::NoFromLine));
}

#[test]
fn quoting_is_undone_by_one_level() {
    let file = format!("{FIRST}S: x\n\n>From a\n>>From b\n>From\nFrom c\n>x\n\n");
    let m = &parse(file.as_bytes())[0];
    assert_eq!(m.body(), b"From a\n>From b\n>From\nFrom c\n>x\n");
}

#[test]
fn a_from_line_starts_an_entry_only_after_an_empty_line() {
    let file =
        format!("{FIRST}S: x\n\na\nFrom inside\n\nFrom b@c Mon Jan  1 00:00:00 2024\n\nz\n\n");
    let ms = parse(file.as_bytes());
    assert_eq!(ms.len(), 2);
    assert_eq!(ms[0].body(), b"a\nFrom inside\n");
    assert_eq!(ms[1].sender(), Some("b@c"));
    assert_eq!(ms[1].body(), b"z\n");
}

#[test]
fn headers_unfolded_and_trace_fields_apart() {
    let file = format!(
        "{FIRST}Return-Path: <a@b.test>\nReceived: from x (127.0.0.1)\n\tby y (mboxd) with SMTP id 1\n\
         \tfor <j@y>; Sun, 22 Nov 2026 07:33:49 +0000\nSubject: folded\n  twice\n\tand more \nX: 1\nx: 2\n\nbody\n\n"
    );
    let m = &parse(file.as_bytes())[0];
    assert_eq!(m.subject(), Some("folded  twice\tand more"));
    assert_eq!(m.header_all("X").collect::<Vec<_>>(), ["1", "2"]);
    assert!(
        m.header("received")
            .unwrap()
            .contains("(mboxd) with SMTP id 1\tfor <j@y>")
    );
    assert_eq!(
        m.as_sent(),
        b"Subject: folded\n  twice\n\tand more \nX: 1\nx: 2\n\nbody\n"
    );
    assert_eq!(
        m.as_sent_crlf(),
        b"Subject: folded\r\n  twice\r\n\tand more \r\nX: 1\r\nx: 2\r\n\r\nbody\r\n"
    );
    assert_eq!(m.headers().len(), 5);
}

#[test]
fn a_folded_line_after_a_line_that_is_no_field_continues_nothing() {
    // It was taken as a continuation of mboxd's `Received:`, so `as_sent()` began after it and
    // lost the client's first two lines.
    let file = format!(
        "{FIRST}Return-Path: <a@b.test>\nReceived: from x (127.0.0.1)\n\tby y (mboxd) with SMTP id 1\n\
         \tfor <j@y>; Sun, 22 Nov 2026 07:33:49 +0000\nFoo\n bar\nSubject: s\n\nbody\n\n"
    );
    let m = &parse(file.as_bytes())[0];
    assert_eq!(m.as_sent(), b"Foo\n bar\nSubject: s\n\nbody\n");
    assert!(m.header("received").unwrap().ends_with("+0000"));
    assert_eq!(m.headers().len(), 3);
}

#[test]
fn the_renaming_of_fields_readers_act_on_is_undone_in_the_header_section_only() {
    let file = format!(
        "{FIRST}X-Original-Content-Length: 5\nX-Original-X-Original-Status: a\n\
         X-Original-Status\0x: b\nX-Original-Foo: c\n\nX-Original-Status: d\n\n"
    );
    let m = &parse(file.as_bytes())[0];
    assert_eq!(
        m.raw(),
        b"Content-Length: 5\nX-Original-Status: a\nStatus\0x: b\nX-Original-Foo: c\n\n\
          X-Original-Status: d\n"
    );
    assert_eq!(m.header("content-length"), Some("5"));
}

#[test]
fn odd_entries() {
    // No body, no trailing empty line, an empty entry, the null sender.
    let ms = parse(b"From MAILER-DAEMON x\n\nFrom a x\nS: 1\n\nFrom b x\nS: 2\n");
    assert_eq!(ms.len(), 3);
    assert_eq!(ms[0].sender(), None);
    assert_eq!(ms[0].raw(), b"");
    assert_eq!(ms[1].raw(), b"S: 1\n");
    assert_eq!(ms[1].body(), b"");
    assert_eq!(ms[2].raw(), b"S: 2\n");
    assert_eq!(ms[2].from_line(), "From b x");
}

#[test]
fn invalid_utf8_is_replaced_and_raw_is_kept() {
    let file = b"From a_b@c Sun Nov 22 07:33:49 2026\nSubject: \xff\xfe\n\n\xff\n\n";
    let m = &parse(file)[0];
    assert_eq!(m.sender(), Some("a_b@c"));
    assert_eq!(m.subject(), Some("\u{fffd}\u{fffd}"));
    assert_eq!(m.raw(), b"Subject: \xff\xfe\n\n\xff\n");
    assert_eq!(m.body(), b"\xff\n");
    assert_eq!(m.as_sent(), m.raw());
}

#[test]
fn a_mailer_daemon_from_line_is_the_null_sender_unless_return_path_names_it() {
    let entry = |return_path: &str| {
        format!(
            "From MAILER-DAEMON Mon Jan  1 00:00:00 2024\nReturn-Path: {return_path}\nS: x\n\nb\n\n"
        )
    };
    assert_eq!(
        parse(entry("<MAILER-DAEMON>").as_bytes())[0].sender(),
        Some("MAILER-DAEMON")
    );
    // Another program's null-sender line above a message's own Return-Path: still the null one.
    for other in ["<>", "<alice@x.test>", "<MAILER-DAEMON@host.test>"] {
        assert_eq!(parse(entry(other).as_bytes())[0].sender(), None, "{other}");
    }
}

#[test]
fn a_from_line_escape_is_decoded_only_when_it_names_a_character() {
    for (written, sender) in [
        ("jos\\x{E9}@b", "jos\u{e9}@b"),
        ("\\x{1F600}\\x{5c}@b", "\u{1f600}\\@b"),
        // Not one character: kept as it is.
        ("a\\x{}@b", "a\\x{}@b"),
        ("a\\x{ZZ}@b", "a\\x{ZZ}@b"),
        ("a\\x{110000}@b", "a\\x{110000}@b"),
        ("a\\x{D800}@b", "a\\x{D800}@b"),
        ("a\\x{0000041}@b", "a\\x{0000041}@b"),
        ("a\\x{41@b", "a\\x{41@b"),
        ("a\\x{", "a\\x{"),
        ("a\\", "a\\"),
    ] {
        let entry = format!("From {written} Sun Nov 22 07:33:49 2026\nS: x\n\n");
        assert_eq!(
            parse(entry.as_bytes())[0].sender(),
            Some(sender),
            "{written}"
        );
    }
}

/// A mailbox another program wrote with CRLF line ends, which mboxd appended to (it pads the
/// end with a newline and leaves every byte as it was): each entry is one message, the header
/// section ends at the CRLF line, and the empty lines between entries belong to neither. The reader merged such entries, so `wait_for` could
/// not reach its count.
#[test]
fn entries_with_crlf_line_ends_are_told_apart() {
    let file = b"From a@b.test Sun Nov 22 07:33:49 2026\r\nSubject: one\r\n\r\nhello\r\n\r\n\
        From c@d.test Sun Nov 22 07:33:50 2026\r\nSubject:  two \r\n\r\nbye\r\n\n\
        From g@h.test Sun Nov 22 07:33:50 2026\r\nSubject: four\r\n\r\nend\r\n\r\n\n\
        From e@f.test Sun Nov 22 07:33:51 2026\nSubject: three\n\nhi\n\n";
    let messages = parse(file);
    let seen: Vec<_> = messages
        .iter()
        .map(|m| (m.sender(), m.subject(), m.body()))
        .collect();
    assert_eq!(
        seen,
        [
            (Some("a@b.test"), Some("one"), &b"hello\r\n"[..]),
            (Some("c@d.test"), Some("two"), &b"bye\r\n"[..]),
            // Its own empty CRLF line, then mboxd's padding: both are the separator.
            (Some("g@h.test"), Some("four"), &b"end\r\n"[..]),
            (Some("e@f.test"), Some("three"), &b"hi\n"[..]),
        ]
    );
    assert_eq!(
        messages[0].from_line(),
        "From a@b.test Sun Nov 22 07:33:49 2026"
    );
}

/// In such an entry too the header section ends at the CRLF line: a body line that looks like a
/// field mboxd renames keeps its `X-Original-` (the body keeps its bytes).
#[test]
fn a_crlf_entrys_body_is_not_unrenamed() {
    let file = b"From a@b.test Sun Nov 22 07:33:49 2026\r\nX-Original-Status: O\r\n\r\n\
        X-Original-Status: RO\r\nbody\r\n\r\n";
    let messages = parse(file);
    assert_eq!(messages[0].header("Status"), Some("O"));
    assert_eq!(messages[0].body(), b"X-Original-Status: RO\r\nbody\r\n");
}
