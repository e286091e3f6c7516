//! Unit tests of the core, fed byte literals: framing and replies together, the counters the
//! connection's clocks read, input split one byte at a time, and the input buffer's sizes.

use super::*;
use crate::framer::MAX_MAIL_LINE;

/// A core for `mx.test`, catch-all, with the fuzz targets' limits.
fn protocol() -> Protocol {
    Protocol::new(Session::new(crate::fuzz::config(0), "test".into()))
}

fn feed(p: &mut Protocol, bytes: &[u8]) {
    let space = p.space();
    space[..bytes.len()].copy_from_slice(bytes);
    p.received(bytes.len());
}

fn take_output(p: &mut Protocol) -> String {
    let out = String::from_utf8(p.output().to_vec()).unwrap();
    p.clear_output();
    out
}

#[test]
fn greeting_first_then_a_pipelined_group_in_one_output() {
    let mut p = protocol();
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!(
        take_output(&mut p),
        "220 mx.test ESMTP mboxd Service ready\r\n"
    );
    feed(
        &mut p,
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@mx.test>\r\nDATA\r\nhel",
    );
    // Nothing is written until the core needs input: all four replies come together.
    assert_eq!(p.poll(), Event::NeedInput);
    let out = take_output(&mut p);
    assert!(
        out.ends_with("250 2.1.5 Recipient OK\r\n354 Start mail input; end with <CRLF>.<CRLF>\r\n"),
        "{out}"
    );
    feed(&mut p, b"lo\r\n.\r\nQUIT\r\n");
    let Event::Deliver(envelope) = p.poll() else {
        panic!("no delivery")
    };
    assert_eq!(&envelope.body[..], b"hello\n\n");
    // The writer's verdict, then the pipelined QUIT.
    p.reply(&Reply::new(250, "2.0.0", "OK"));
    assert_eq!(p.poll(), Event::Close);
    assert_eq!(
        take_output(&mut p),
        "250 2.0.0 OK\r\n221 2.0.0 mx.test Service closing transmission channel\r\n"
    );
    assert_eq!(p.poll(), Event::Close);
}

/// Commands are progress (a wait for the next command begins); only a message begun is counted
/// among `messages`, which eviction counts a session idle from.
#[test]
fn commands_are_progress_and_only_messages_are_counted_as_begun() {
    let mut p = protocol();
    assert_eq!(p.poll(), Event::NeedInput);
    feed(&mut p, b"EHLO c\r\n");
    assert_eq!(p.poll(), Event::NeedInput);
    let (progress, begun) = (p.progress(), p.messages());
    feed(
        &mut p,
        b"NOOP\r\nRSET\r\nVRFY a\r\nEHLO d\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@mx.test>\r\nRSET\r\n",
    );
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!((p.progress(), p.messages()), (progress + 7, begun));
    feed(
        &mut p,
        b"MAIL FROM:<a@b>\r\nRCPT TO:<x@mx.test>\r\nDATA\r\n",
    );
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!((p.progress(), p.messages()), (progress + 10, begun + 1));
}

#[test]
fn a_message_pipelined_behind_the_end_of_another_is_counted_as_a_new_one() {
    let mut p = protocol();
    feed(
        &mut p,
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@mx.test>\r\nDATA\r\nx",
    );
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!((p.in_message(), p.messages()), (true, 1));
    feed(
        &mut p,
        b"\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@mx.test>\r\nDATA\r\n",
    );
    assert!(matches!(p.poll(), Event::Deliver(_)));
    p.reply(&Reply::new(250, "2.0.0", "OK"));
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!((p.in_message(), p.messages()), (true, 2));
    // A refused BDAT chunk is read as a message of its own too.
    feed(&mut p, b".\r\nRSET\r\nBDAT 3 LAST\r\n");
    assert!(matches!(p.poll(), Event::Deliver(_)));
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!((p.in_message(), p.messages()), (true, 3));
}

#[test]
fn an_over_long_line_is_progress_once_when_it_ends() {
    let mut p = protocol();
    feed(&mut p, b"EHLO c\r\n");
    assert_eq!(p.poll(), Event::NeedInput);
    take_output(&mut p);
    let progress = p.progress();
    feed(&mut p, &[b'x'; MAX_COMMAND_LINE]);
    assert_eq!(p.poll(), Event::NeedInput);
    // Answered at once, but the line's clock runs on until its end.
    assert!(take_output(&mut p).starts_with("500 "));
    assert_eq!(p.progress(), progress);
    feed(&mut p, b"xxx");
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!(p.progress(), progress);
    feed(&mut p, b"x\r\n");
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!(p.progress(), progress + 1);
    assert_eq!(take_output(&mut p), "");
    feed(&mut p, b"NOOP\r\n");
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!(p.progress(), progress + 2);
}

/// Two over-long lines in one read (which the 8 KiB buffer after a message allows): the end of
/// the first is found and the second found too long in one step, and the first still counts.
#[test]
fn an_over_long_line_right_behind_another_ends_the_first() {
    let mut p = protocol();
    feed(
        &mut p,
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@mx.test>\r\nDATA\r\n",
    );
    assert_eq!(p.poll(), Event::NeedInput);
    // Read inside the message: the buffer grows.
    feed(&mut p, b"x\r\n.\r\n");
    assert!(matches!(p.poll(), Event::Deliver(_)));
    p.reply(&Reply::new(250, "2.0.0", "OK"));
    assert_eq!(p.poll(), Event::NeedInput);
    let progress = p.progress();
    feed(&mut p, &[b'x'; 600]);
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!(p.progress(), progress);
    feed(&mut p, &[&b"\r\n"[..], &[b'y'; 600]].concat());
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!(p.progress(), progress + 1);
    feed(&mut p, b"\r\nNOOP\r\n");
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!(p.progress(), progress + 3);
}

#[test]
fn command_lines_between_chunks_are_counted_apart_from_the_message() {
    let mut p = protocol();
    feed(
        &mut p,
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@mx.test>\r\nBDAT 1\r\nx",
    );
    assert_eq!(p.poll(), Event::NeedInput);
    // The first BDAT line comes before the message: not counted.
    assert_eq!((p.in_message(), p.commands_in_message()), (true, 0));
    // An over-long line, discarded over several reads, is not the message's either.
    feed(&mut p, &[b'z'; MAX_COMMAND_LINE]);
    assert_eq!(p.poll(), Event::NeedInput);
    feed(&mut p, &[b'z'; 88]);
    assert_eq!(p.poll(), Event::NeedInput);
    feed(&mut p, b"zz\r\n");
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!(p.commands_in_message(), 604);
    feed(&mut p, b"NOOP\r\nBDAT 2 LAST\r\nyz");
    assert!(matches!(p.poll(), Event::Deliver(_)));
    assert_eq!(p.commands_in_message(), 604 + 6 + 13);
    p.reply(&Reply::new(250, "2.0.0", "OK"));
    // Outside a message, commands are not counted.
    feed(&mut p, b"NOOP\r\n");
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!((p.in_message(), p.commands_in_message()), (false, 623));
}

#[test]
fn input_split_one_byte_at_a_time_gives_the_same_output() {
    let script: &[u8] =
        b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@mx.test>\r\nDATA\r\n..x\r\n.\r\nNOOP\r\n";
    let mut whole = protocol();
    feed(&mut whole, script);
    let Event::Deliver(e1) = whole.poll() else {
        panic!()
    };
    let mut bytewise = protocol();
    let mut delivered = None;
    for b in script {
        feed(&mut bytewise, &[*b]);
        if let Event::Deliver(e) = bytewise.poll() {
            delivered = Some(e);
        }
    }
    assert_eq!(delivered, Some(e1));
}

#[test]
fn the_input_buffer_is_small_until_the_first_message() {
    let mut p = protocol();
    assert_eq!(
        p.input.len(),
        0,
        "nothing is allocated before the first read"
    );
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!(p.space().len(), COMMAND_BUFFER);
    feed(
        &mut p,
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@mx.test>\r\nDATA\r\nSub",
    );
    assert_eq!(p.poll(), Event::NeedInput);
    // Inside the message: the large buffer, the unread "Sub" kept at its start.
    assert_eq!(p.space().len(), INPUT_BUFFER - 3);
    assert_eq!(&p.input[..3], b"Sub");
    feed(&mut p, b"ject: s\r\n\r\nbody\r\n.\r\nNO");
    let Event::Deliver(envelope) = p.poll() else {
        panic!("no delivery")
    };
    assert!(envelope.body.starts_with(b"Subject: s\n\nbody\n"));
    p.reply(&Reply::new(250, "2.0.0", "OK"));
    assert_eq!(p.poll(), Event::NeedInput);
    // Back to commands: the large buffer stays, the unread "NO" kept at its start.
    assert_eq!(p.space().len(), INPUT_BUFFER - 2);
    feed(&mut p, b"OP\r\n");
    assert_eq!(p.poll(), Event::NeedInput);
    assert!(take_output(&mut p).ends_with("250 2.0.0 OK\r\n"));
    // A long reply group gives its memory back once written.
    for _ in 0..100 {
        p.reply(&Reply::new(250, "2.0.0", "OK"));
    }
    p.clear_output();
    assert!(p.output.capacity() <= KEPT_OUTPUT);
}

#[test]
fn a_mail_line_longer_than_the_small_buffer_grows_it() {
    let mut p = protocol();
    assert_eq!(p.poll(), Event::NeedInput);
    feed(&mut p, b"EHLO c\r\n");
    assert_eq!(p.poll(), Event::NeedInput);
    take_output(&mut p);
    let mut mail = b"MAIL FROM:<a@b> AUTH=".to_vec();
    mail.resize(MAX_MAIL_LINE - 2, b'x');
    mail.extend_from_slice(b"\r\n");
    // The first 512 bytes fill the small buffer without making a frame.
    let (head, tail) = mail.split_at(COMMAND_BUFFER);
    feed(&mut p, head);
    assert_eq!(p.poll(), Event::NeedInput);
    assert!(p.output().is_empty(), "{:?}", take_output(&mut p));
    assert_eq!(p.space().len(), INPUT_BUFFER - COMMAND_BUFFER);
    feed(&mut p, tail);
    assert_eq!(p.poll(), Event::NeedInput);
    // The session takes it as one whole line (this core offers AUTH), not as a line too long.
    assert_eq!(take_output(&mut p), "250 2.1.0 Sender OK\r\n");
}

#[test]
fn the_buffer_never_fills_whatever_the_input() {
    let mut p = protocol();
    for _ in 0..100 {
        let space = p.space();
        assert!(!space.is_empty());
        let n = space.len();
        space.fill(b'x');
        p.received(n);
        assert_eq!(p.poll(), Event::NeedInput);
    }
    // One 500 for the over-long line, however long it is.
    let out = take_output(&mut p);
    assert_eq!(out.matches("500").count(), 1, "{out}");
    feed(&mut p, b"\r\nNOOP\r\n");
    assert_eq!(p.poll(), Event::NeedInput);
    assert_eq!(take_output(&mut p), "250 OK\r\n");
}

/// The sizes the comments on the worker's stack (`pool::WORKER_STACK`, `connection::start`) and
/// the README give, kept true: a field added to the core changes them.
#[test]
#[cfg(target_pointer_width = "64")]
fn the_core_and_a_state_are_the_sizes_the_comments_give() {
    assert_eq!(std::mem::size_of::<Protocol>(), 288);
    assert_eq!(std::mem::size_of::<crate::session::State>(), 80);
}

/// Pipelined commands with long replies are answered in parts of about [`MAX_OUTPUT`]: the
/// output of one buffer-full of HELPs (each answered with 130 octets) is not held
/// whole while a client that does not read keeps the write waiting.
#[test]
fn long_replies_to_a_pipelined_group_are_written_in_parts() {
    let mut p = protocol();
    assert_eq!(p.poll(), Event::NeedInput);
    take_output(&mut p);
    feed(&mut p, &b"HELP\r\n".repeat(80));
    let (mut parts, mut replies) = (0, 0);
    loop {
        let event = p.poll();
        let out = take_output(&mut p);
        assert!(out.len() < MAX_OUTPUT + 1024, "{}", out.len());
        replies += out.matches("211 HELP").count();
        if event == Event::NeedInput {
            break;
        }
        assert_eq!(event, Event::Flush);
        assert!(out.len() >= MAX_OUTPUT, "{}", out.len());
        parts += 1;
    }
    assert_eq!(replies, 80);
    assert_eq!(parts, 2, "10 400 octets of replies");
}

/// Between BDAT chunks, where a command comes next, too.
#[test]
fn long_replies_between_chunks_are_written_in_parts() {
    let mut p = protocol();
    assert_eq!(p.poll(), Event::NeedInput);
    feed(
        &mut p,
        b"EHLO a\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<j@mx.test>\r\nBDAT 1\r\nx",
    );
    assert_eq!(p.poll(), Event::NeedInput);
    take_output(&mut p);
    assert!(p.in_message());
    feed(&mut p, &b"HELP\r\n".repeat(80));
    assert_eq!(p.poll(), Event::Flush);
    assert!(take_output(&mut p).len() < MAX_OUTPUT + 1024);
}
