//! Timeouts over a real socket: the idle timeout between commands and the longer data timeout
//! inside a message, which the connection waits out across its shorter socket timeout.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::TestServer;

#[test]
fn inside_a_message_the_longer_data_timeout_applies() {
    let server = TestServer::with(|c| {
        c.timeout = Duration::from_millis(300);
        c.data_timeout = Duration::from_millis(1500);
    });
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: patient\r\n\r\n");
    // Longer than the idle timeout, shorter than the data timeout: the session waits.
    thread::sleep(Duration::from_millis(800));
    c.send(b"still here\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    // Between commands the idle timeout is back.
    let began = Instant::now();
    let r = c.read_reply();
    assert_eq!(r.code, 421, "{r:?}");
    assert_eq!(
        r.text(),
        "4.4.2 Timeout waiting for client input; closing connection"
    );
    assert!(
        began.elapsed() < Duration::from_millis(1200),
        "{:?}",
        began.elapsed()
    );
    // And past the data timeout inside a message, 421 too.
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    let began = Instant::now();
    assert_eq!(c.read_reply().code, 421);
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
    assert!(server.mbox_text("jones").ends_with("still here\n\n"));
}
