//! The temporary refusals (4xx), each reached over a real TCP socket on 127.0.0.1: too many
//! recipients (452), a mailbox locked by someone else (450), a mailbox that cannot be opened, a
//! directory, a FIFO, a symlink, which is never followed, a hard link or another user's file
//! (451), a full disk (452, on a small
//! tmpfs, so only as root), and the 421s that close a connection between commands: the idle
//! timeout, no free worker, shutdown and too many errors (the last, and QUIT's 221, also with
//! more commands pipelined behind, which the client still reads). Where mail was refused, the
//! test checks that none of it was stored and, but for the symlink, that the same session then
//! delivers. The 421s given inside a message are in `tests/timeouts.rs`, `tests/faults.rs` and
//! `tests/shutdown.rs`.

mod support;

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::time::{Duration, Instant};

use support::{Client, TestServer, mbox_entries};

#[test]
fn too_many_recipients_452() {
    let server = TestServer::with(|c| c.max_recipients = 2);
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<a@mx.test>", 250);
    c.expect("RCPT TO:<b@mx.test>", 250);
    assert_eq!(
        c.expect("RCPT TO:<c@mx.test>", 452).text(),
        "4.5.3 Too many recipients"
    );
    c.expect("DATA", 354);
    c.send(b"x\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert!(
        !server.mbox("a").is_empty() && !server.mbox("b").is_empty() && server.mbox("c").is_empty()
    );
}

/// RFC 5321 §4.5.3.1.10: a client may send more recipients than the server takes, then DATA
/// for those accepted. The 452s for the rest are not errors: 120 recipients pipelined against
/// the default limits (100 recipients, 20 errors) deliver to the first 100.
#[test]
fn recipients_past_the_limit_are_452_and_not_counted_as_errors() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    let mut group = String::from("MAIL FROM:<a@b.test>\r\n");
    for n in 0..120 {
        group.push_str(&format!("RCPT TO:<u{n}@mx.test>\r\n"));
    }
    group.push_str("DATA\r\n");
    c.send(group.as_bytes());
    assert_eq!(c.read_reply().code, 250);
    for n in 0..120 {
        let r = c.read_reply();
        if n < 100 {
            assert_eq!(r.code, 250, "RCPT {n}: {r:?}");
        } else {
            assert_eq!(r.line(), "452 4.5.3 Too many recipients", "RCPT {n}");
        }
    }
    assert_eq!(c.read_reply().code, 354);
    c.send(b"Subject: many\r\n\r\nhi\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    c.expect("QUIT", 221);
    assert_eq!(mbox_entries(&server.mbox_text("u99")).len(), 1);
    assert!(server.mbox("u100").is_empty());
}

#[test]
fn mailbox_busy_450_while_other_mailboxes_are_served() {
    let server = TestServer::with(|c| c.lock_timeout = Duration::from_millis(300));
    std::fs::write(server.mail_dir().join("jones.lock"), b"").unwrap();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    let r = c.send_mail("a@b.test", &["jones@mx.test"], "locked out");
    assert_eq!(
        r.text(),
        "4.2.1 Requested mail action not taken: mailbox busy; try again later"
    );
    assert_eq!(r.code, 450);
    assert!(server.mbox("jones").is_empty());
    // All-or-nothing: a message for a locked and a free mailbox is not written to either.
    assert_eq!(
        c.send_mail("a@b.test", &["brown@mx.test", "jones@mx.test"], "both")
            .code,
        450
    );
    assert!(server.mbox("brown").is_empty());
    assert_eq!(
        c.send_mail("a@b.test", &["brown@mx.test"], "free").code,
        250
    );
    std::fs::remove_file(server.mail_dir().join("jones.lock")).unwrap();
    assert_eq!(
        c.send_mail("a@b.test", &["jones@mx.test"], "unlocked").code,
        250
    );
    assert_eq!(mbox_entries(&server.mbox_text("jones")).len(), 1);
    assert!(!server.mail_dir().join("jones.lock").exists());
}

#[test]
fn local_error_451_when_the_mailbox_cannot_be_opened() {
    let server = TestServer::start();
    std::fs::create_dir(server.mail_dir().join("jones")).unwrap();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    let r = c.send_mail(
        "a@b.test",
        &["brown@mx.test", "jones@mx.test"],
        "to a directory",
    );
    assert_eq!(
        r.line(),
        "451 4.3.0 Requested action aborted: local error in processing"
    );
    // All-or-nothing: brown's copy was not kept either.
    assert!(server.mbox("brown").is_empty());
    assert_eq!(
        c.send_mail("a@b.test", &["brown@mx.test"], "fine").code,
        250
    );
}

#[test]
fn a_fifo_in_place_of_a_mailbox_is_451_and_the_writer_serves_on() {
    // A FIFO no one reads took the writer's writes until the pipe was full, then blocked it, and
    // every delivery behind it, for good. It is refused once opened: 451, nothing written.
    let server = TestServer::start();
    let fifo = server.mail_dir().join("jones");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        println!("skipped: mkfifo could not make a FIFO");
        return;
    }
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(200_000));
    for message in ["small", big.as_str()] {
        assert_eq!(
            c.send_mail("a@b.test", &["jones@mx.test"], message).code,
            451
        );
    }
    assert_eq!(
        c.send_mail("a@b.test", &["brown@mx.test"], "fine").code,
        250
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn a_symlink_in_the_mail_dir_is_never_followed() {
    let server = TestServer::start();
    let outside = server.dir.path().join("outside");
    std::fs::write(&outside, b"untouched").unwrap();
    std::os::unix::fs::symlink(&outside, server.mail_dir().join("jones")).unwrap();
    let mut c = server.client();
    c.expect("HELO client.test", 250);
    assert_eq!(c.send_mail("a@b.test", &["jones@mx.test"], "x").code, 451);
    assert_eq!(std::fs::read(&outside).unwrap(), b"untouched");
}

#[test]
fn a_hard_link_in_the_mail_dir_is_451_and_its_file_untouched() {
    // A second name for a file outside the mail directory had the whole entry appended there.
    let server = TestServer::start();
    let outside = server.dir.path().join("outside");
    std::fs::write(&outside, b"untouched").unwrap();
    std::fs::hard_link(&outside, server.mail_dir().join("jones")).unwrap();
    let mut c = server.client();
    c.expect("HELO client.test", 250);
    assert_eq!(c.send_mail("a@b.test", &["jones@mx.test"], "x").code, 451);
    assert_eq!(std::fs::read(&outside).unwrap(), b"untouched");
    assert_eq!(c.send_mail("a@b.test", &["brown@mx.test"], "x").code, 250);
}

#[test]
fn a_mailbox_another_user_owns_is_451_and_untouched() {
    // A file another user made (mode 0666, say) would let that user read the mail.
    let server = TestServer::start();
    let theirs = server.mail_dir().join("jones");
    std::fs::write(&theirs, b"").unwrap();
    if std::os::unix::fs::chown(&theirs, Some(65534), None).is_err() {
        println!("skipped: cannot give a file to another user (needs root)");
        return;
    }
    let mut c = server.client();
    c.expect("HELO client.test", 250);
    assert_eq!(c.send_mail("a@b.test", &["jones@mx.test"], "x").code, 451);
    assert_eq!(std::fs::read(&theirs).unwrap(), b"");
}

/// A small tmpfs, mounted as the mail directory for one test and unmounted however it ends.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn insufficient_storage_452_on_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    let Some(_tmpfs) = Tmpfs::mount(&mail, "64k") else {
        println!(
            "skipped: cannot mount a tmpfs here (needs root); the writer's ENOSPC path is not exercised"
        );
        return;
    };
    let server = TestServer::with(|c| c.mail_dir = mail.clone());
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    assert_eq!(
        c.send_mail("a@b.test", &["jones@mx.test"], "small first")
            .code,
        250
    );
    let before = std::fs::read(mail.join("jones")).unwrap();
    let big = "z".repeat(200) + "\n";
    let r = c.send_mail("a@b.test", &["jones@mx.test"], &big.repeat(500));
    assert_eq!(
        r.line(),
        "452 4.3.1 Requested action not taken: insufficient system storage"
    );
    // Truncated back: exactly the first message is there, and the server serves on.
    assert_eq!(std::fs::read(mail.join("jones")).unwrap(), before);
    assert_eq!(
        c.send_mail("a@b.test", &["jones@mx.test"], "small again")
            .code,
        250
    );
    let mbox = String::from_utf8(std::fs::read(mail.join("jones")).unwrap()).unwrap();
    assert_eq!(mbox_entries(&mbox).len(), 2);
    drop(c);
    drop(server);
}

#[test]
fn idle_timeout_is_421() {
    let server = TestServer::with(|c| c.timeout = Duration::from_millis(300));
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    let started = Instant::now();
    let r = c.read_reply();
    assert_eq!(
        r.line(),
        "421 4.4.2 Timeout waiting for client input; closing connection"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    c.expect_closed();
}

#[test]
fn no_free_worker_is_421_after_queue_wait() {
    let server = TestServer::with(|c| {
        c.workers = 1;
        c.queue_wait = Duration::from_millis(200);
    });
    let mut first = server.client();
    first.expect("EHLO client.test", 250);
    let mut second = Client::connect(server.addr);
    let r = second.read_reply();
    assert_eq!(
        (r.code, r.text()),
        (
            421,
            "Too busy; try again later; closing transmission channel".to_string()
        )
    );
    second.expect_closed();
    // The worker is still the first client's, and serves it.
    first.expect("NOOP", 250);
    first.expect("QUIT", 221);
    // Once free, the worker serves the next client (a bounded wait for the quit to be seen).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = Client::connect(server.addr);
        let r = next.read_reply();
        if r.code == 220 {
            next.expect("QUIT", 221);
            break;
        }
        assert!(Instant::now() < deadline, "the worker never came back");
    }
}

#[test]
fn shutdown_answers_idle_sessions_421() {
    let mut server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    server.stop();
    assert_eq!(
        c.read_reply().line(),
        "421 4.3.2 Service shutting down; closing transmission channel"
    );
    c.expect_closed();
}

#[test]
fn too_many_errors_close_with_421() {
    let server = TestServer::with(|c| c.max_errors = 3);
    let mut c = server.client();
    c.expect("FOO", 500);
    c.expect("BAR", 500);
    assert_eq!(
        c.expect("BAZ", 421).text(),
        "Too many errors; closing transmission channel"
    );
    c.expect_closed();
    // After EHLO, with its enhanced code.
    let mut c = server.client();
    c.expect("EHLO c.test", 250);
    c.expect("FOO", 500);
    c.expect("RCPT TO:<a@b.test>", 503);
    assert_eq!(
        c.expect("BAZ", 421).text(),
        "4.7.0 Too many errors; closing transmission channel"
    );
    c.expect_closed();
}

#[test]
fn a_client_that_pipelined_past_the_closing_reply_still_reads_it() {
    // Commands sent behind the one that ends the session are never read. Closing a socket with
    // unread input makes the kernel reset the connection (RFC 1122 §4.2.2.13), which made the
    // client's reads fail before it saw any reply; the server now shuts its sending side and
    // reads until the client closes (`socket::linger`).
    let server = TestServer::with(|c| c.max_errors = 3);
    let noops = "NOOP\r\n".repeat(2000);
    for (group, codes) in [
        (
            format!("FOO\r\nBAR\r\nBAZ\r\n{noops}"),
            &[500, 500, 421][..],
        ),
        (format!("NOOP\r\nQUIT\r\n{noops}"), &[250, 221][..]),
    ] {
        let mut c = server.client();
        c.send(group.as_bytes());
        for &code in codes {
            assert_eq!(c.read_reply().code, code);
        }
        // An end of file, not a reset: once the client has closed its side too and the session
        // is over, no reset came after the server's FIN (which a read of end of file alone
        // cannot tell: the FIN arrives first).
        let mut buf = [0u8; 64];
        assert_eq!(c.stream.read(&mut buf).unwrap(), 0);
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while server.live_connections() > 0 {
            assert!(
                std::time::Instant::now() < until,
                "the session is still open"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(c.stream.take_error().unwrap().is_none(), "reset");
    }
}
