//! Faults caused for real: mailboxes locked by other programs or left locked by a crash, torn
//! tails and CRLF mailboxes, SIGKILL, shutdown in the middle of a message, timeouts inside DATA
//! and idle connections hogging the workers.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::{
    ChildGuard, Client, TestServer, mbox_entries, read_lines_within, refuses_connections,
    wait_bounded,
};

fn python3() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Another program holding an fcntl write lock on `path` until its stdin is closed.
fn hold_fcntl_lock(path: &std::path::Path) -> Child {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import fcntl,sys; f=open(sys.argv[1],'a'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
        ])
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let lines = read_lines_within(child.stdout.take().unwrap(), 1, Duration::from_secs(10));
    assert_eq!(lines[0].trim(), "locked");
    child
}

/// True when nothing arrives on `c` within `within` (it times out); false when a byte arrives
/// or the connection ends. Used where no reply is the thing asserted.
fn silent_for(c: &mut Client, within: Duration) -> bool {
    c.stream.set_read_timeout(Some(within)).unwrap();
    let silent = match c.stream.peek(&mut [0u8; 1]) {
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        Ok(_) => false,
    };
    c.stream
        .set_read_timeout(Some(support::REPLY_TIMEOUT))
        .unwrap();
    silent
}

#[test]
fn fcntl_locked_mailbox_waits_while_others_are_delivered() {
    if !python3() {
        println!("skipped: python3 not found, so no second process can hold an fcntl lock");
        return;
    }
    let server = TestServer::with(|c| c.lock_timeout = Duration::from_secs(20));
    std::fs::create_dir_all(server.mail_dir()).unwrap();
    let mut holder = hold_fcntl_lock(&server.mail_dir().join("jones"));
    // The message for the locked mailbox is sent whole before the other one.
    let mut waiting = server.client();
    waiting.expect("EHLO waiting.test", 250);
    waiting.expect("MAIL FROM:<a@b.test>", 250);
    waiting.expect("RCPT TO:<jones@mx.test>", 250);
    waiting.expect("DATA", 354);
    waiting.send(b"waited for the lock\r\n.\r\n");
    let mut other = server.client();
    other.expect("EHLO other.test", 250);
    let started = Instant::now();
    assert_eq!(
        other
            .send_mail("a@b.test", &["brown@mx.test"], "not held up")
            .code,
        250
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        silent_for(&mut waiting, Duration::from_millis(500)),
        "the locked delivery did not wait for the lock"
    );
    assert!(server.mbox("jones").is_empty());
    drop(holder.stdin.take());
    wait_bounded(&mut holder, Duration::from_secs(10));
    assert_eq!(waiting.read_reply().code, 250);
    let mbox = server.mbox_text("jones");
    assert_eq!(mbox_entries(&mbox).len(), 1);
    assert!(mbox.ends_with("waited for the lock\n\n"));
}

#[test]
fn fcntl_lock_past_the_timeout_is_450_and_nothing_is_written() {
    if !python3() {
        println!("skipped: python3 not found, so no second process can hold an fcntl lock");
        return;
    }
    let server = TestServer::with(|c| c.lock_timeout = Duration::from_millis(300));
    std::fs::create_dir_all(server.mail_dir()).unwrap();
    let mut holder = hold_fcntl_lock(&server.mail_dir().join("jones"));
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    assert_eq!(
        c.send_mail("a@b.test", &["jones@mx.test"], "x").line(),
        "450 4.2.1 Requested mail action not taken: mailbox busy; try again later"
    );
    assert!(server.mbox("jones").is_empty());
    // The dotlock was given back when the fcntl lock could not be had.
    assert!(!server.mail_dir().join("jones.lock").exists());
    drop(holder.stdin.take());
    wait_bounded(&mut holder, Duration::from_secs(10));
    assert_eq!(c.send_mail("a@b.test", &["jones@mx.test"], "x").code, 250);
}

#[test]
fn a_stale_dotlock_is_removed() {
    let server = TestServer::with(|c| c.lock_timeout = Duration::from_millis(300));
    std::fs::create_dir_all(server.mail_dir()).unwrap();
    let lock = server.mail_dir().join("jones.lock");
    let file = std::fs::File::create(&lock).unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    drop(file);
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    assert_eq!(c.send_mail("a@b.test", &["jones@mx.test"], "x").code, 250);
    assert!(!lock.exists());
}

#[test]
fn a_dotlock_left_by_a_dead_process_is_removed() {
    let server = TestServer::with(|c| c.lock_timeout = Duration::from_millis(300));
    std::fs::create_dir_all(server.mail_dir()).unwrap();
    // Above Linux's largest process id, so no such process exists.
    std::fs::write(server.mail_dir().join("jones.lock"), "4194305\n").unwrap();
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    assert_eq!(c.send_mail("a@b.test", &["jones@mx.test"], "x").code, 250);
    // A live process's dotlock is respected.
    std::fs::write(server.mail_dir().join("jones.lock"), "1\n").unwrap();
    assert_eq!(c.send_mail("a@b.test", &["jones@mx.test"], "x").code, 450);
}

#[test]
fn an_empty_dotlock_left_by_a_dead_mboxd_is_broken_at_once() {
    // What a power cut in the middle of a commit leaves: the private lock file, linked to the
    // dotlock, with the process id never synced. The server starts first, so this is not an
    // orphan it removes at start: the commit must judge the lock itself.
    let server = TestServer::with(|c| c.lock_timeout = Duration::from_millis(300));
    std::fs::create_dir_all(server.mail_dir()).unwrap();
    let temp = server.mail_dir().join(".jones.lock.mboxd-4194305-12345");
    let lock = server.mail_dir().join("jones.lock");
    std::fs::write(&temp, "").unwrap();
    std::fs::hard_link(&temp, &lock).unwrap();
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    // Within the 300 ms lock timeout, or it would be 450.
    assert_eq!(c.send_mail("a@b.test", &["jones@mx.test"], "x").code, 250);
    assert!(!lock.exists() && !temp.exists());
    assert_eq!(mbox_entries(&server.mbox_text("jones")).len(), 1);
}

#[test]
fn an_empty_foreign_dotlock_is_respected() {
    // Postfix's dotlock is empty: only its age (500 s) can make it stale.
    let server = TestServer::with(|c| c.lock_timeout = Duration::from_millis(300));
    std::fs::create_dir_all(server.mail_dir()).unwrap();
    let lock = server.mail_dir().join("jones.lock");
    std::fs::write(&lock, "").unwrap();
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    assert_eq!(c.send_mail("a@b.test", &["jones@mx.test"], "x").code, 450);
    assert!(lock.exists());
    assert!(server.mbox("jones").is_empty());
    // No private lock file of ours is left behind either.
    let names: Vec<_> = std::fs::read_dir(server.mail_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["jones.lock"]);
}

/// Puts `old` in jones's mailbox, delivers one message over SMTP, and checks that every old byte
/// is still there, followed by `pad` and a new entry that starts a line after a blank line.
fn deliver_after(old: &[u8], pad: &[u8]) {
    let server = TestServer::start();
    std::fs::create_dir_all(server.mail_dir()).unwrap();
    std::fs::write(server.mail_dir().join("jones"), old).unwrap();
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    assert_eq!(
        c.send_mail("a@b.test", &["jones@mx.test"], "Subject: new\n\nnew")
            .code,
        250
    );
    let new = server.mbox("jones");
    assert!(new.starts_with(old), "earlier bytes changed: {new:?}");
    let (before, added) = new.split_at(old.len() + pad.len());
    assert_eq!(&before[old.len()..], pad);
    assert!(before.ends_with(b"\n\n"), "{new:?}");
    assert!(added.starts_with(b"From a@b.test "), "{added:?}");
    assert!(added.ends_with(b"Subject: new\n\nnew\n\n"), "{added:?}");
}

#[test]
fn a_crlf_mbox_keeps_every_byte() {
    deliver_after(
        b"From a@b.test Sun Nov 22 07:33:49 2026\r\nSubject: one\r\n\r\nfirst\r\n\r\n\
          From a@b.test Sun Nov 22 07:33:50 2026\r\nSubject: two\r\n\r\nsecond\r\n",
        b"\n",
    );
}

#[test]
fn a_torn_tail_is_kept_and_padded_before_the_next_append() {
    deliver_after(
        b"From a@b.test Sun Nov 22 07:33:49 2026\nSubject: whole\n\nkept\n\n\
          From a@b.test Sun Nov 22 07:33:50 2026\nSubject: torn\n\nhalf a li",
        b"\n\n",
    );
}

#[test]
fn a_read_inside_data_that_times_out_is_421() {
    let server = TestServer::with(|c| c.data_timeout = Duration::from_millis(300));
    let mut c = server.client();
    c.expect("EHLO slow.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: never finished\r\n");
    assert_eq!(
        c.read_reply().line(),
        "421 4.4.2 Timeout waiting for client input; closing connection"
    );
    c.expect_closed();
    assert!(server.mbox("jones").is_empty());
}

#[test]
fn shutdown_lets_a_message_in_progress_finish_then_answers_421() {
    let server = TestServer::start();
    let addr = server.addr;
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: in flight\r\n\r\n");
    let stopper = thread::spawn(move || {
        let mut server = server;
        server.stop();
        server
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refuses_connections(addr, Duration::from_secs(5)) {
        assert!(Instant::now() < deadline, "the server kept accepting");
    }
    c.send(b"finished after shutdown began\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(
        c.read_reply().line(),
        "421 4.3.2 Service shutting down; closing transmission channel"
    );
    c.expect_closed();
    let server = stopper.join().unwrap();
    assert!(
        server
            .mbox_text("jones")
            .ends_with("finished after shutdown began\n\n")
    );
}

#[test]
fn idle_connections_cannot_keep_a_client_out_past_the_timeouts() {
    let server = TestServer::with(|c| {
        c.workers = 4;
        c.timeout = Duration::from_millis(500);
        c.queue_wait = Duration::from_secs(1);
    });
    // Forty connections that never send a byte.
    let idle: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(server.addr).unwrap())
        .collect();
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(
            attempts <= 50 && started.elapsed() < Duration::from_secs(10),
            "never served"
        );
        let mut c = Client::connect(server.addr);
        match c.try_read_reply() {
            Some(r) if r.code == 220 => {
                c.expect("EHLO legit.test", 250);
                assert_eq!(
                    c.send_mail("a@b.test", &["jones@mx.test"], "got in").code,
                    250
                );
                break;
            }
            Some(r) => assert_eq!(r.code, 421),
            None => {}
        }
    }
    // The bound is the idle timeout plus the queue wait, with room for a slow machine.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    drop(idle);
}

const BIN: &str = env!("CARGO_BIN_EXE_mboxd");

/// Starts the binary on `mail`; the guard kills it if the test ends without stopping it.
fn spawn_binary(mail: &std::path::Path) -> (ChildGuard, SocketAddr) {
    let child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--hostname",
            "mx.test",
            "--mail-dir",
        ])
        .arg(mail)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let lines = read_lines_within(child.0.stdout.take().unwrap(), 1, Duration::from_secs(10));
    let addr = lines[0]
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    (child, addr)
}

fn body_of(id: &str) -> String {
    format!(
        "Subject: {id}\n\n{}\nend of {id}",
        format!("{id} payload line\n").repeat(200)
    )
}

#[test]
fn sigkill_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    let (mut child, addr) = spawn_binary(&mail);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let (acked, killed, tx) = (Arc::clone(&acked), Arc::clone(&killed), tx.clone());
            thread::spawn(move || {
                // A broken session is what the kill looks like; before it, it fails the test.
                let broken = |what: String| {
                    assert!(
                        killed.load(Ordering::SeqCst),
                        "sender {t}: {what} before the kill"
                    )
                };
                let greeted = std::panic::catch_unwind(|| {
                    let mut c = Client::connect(addr);
                    assert_eq!(c.read_reply().code, 220);
                    c.expect("EHLO crash.test", 250);
                    c
                });
                let Ok(mut c) = greeted else {
                    return broken("no session".into());
                };
                for n in 0..10_000 {
                    if killed.load(Ordering::SeqCst) {
                        return;
                    }
                    let id = format!("msg-{t}-{n}");
                    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        c.send_mail("a@b.test", &["jones@mx.test"], &body_of(&id))
                    }));
                    match sent {
                        Ok(r) if r.code == 250 => {
                            acked.lock().unwrap().push(id);
                            let _ = tx.send(()); // the receiver stops listening after 60
                        }
                        Ok(r) => return broken(format!("{:?} to {id}", r.line())),
                        Err(_) => return broken(format!("no reply to {id}")),
                    }
                }
            })
        })
        .collect();
    drop(tx);
    // Kill once at least 60 messages were acknowledged: the clients are mid-flight then.
    for _ in 0..60 {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("acknowledgements");
    }
    killed.store(true, Ordering::SeqCst);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    for s in senders {
        s.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 60);

    // Restart on the same directory and deliver again.
    let (mut child, addr) = spawn_binary(&mail);
    let mut c = Client::connect(addr);
    assert_eq!(c.read_reply().code, 220);
    c.expect("EHLO after.test", 250);
    assert_eq!(
        c.send_mail("a@b.test", &["jones@mx.test"], &body_of("after-restart"))
            .code,
        250
    );
    c.expect("QUIT", 221);
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    assert_eq!(
        wait_bounded(&mut child, Duration::from_secs(10)).code(),
        Some(0)
    );

    let mbox = String::from_utf8(std::fs::read(mail.join("jones")).unwrap()).unwrap();
    let entries = mbox_entries(&mbox);
    let whole = |entry: &str| {
        entry
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .is_some_and(|subject| entry.ends_with(&format!("{}\n\n", body_of(subject))))
    };
    // The kill can cut at most the one entry being written; the restarted server keeps its bytes
    // (they may not be mboxd's to cut) and starts the next entry after a blank line.
    let torn = entries.iter().filter(|e| !whole(e)).count();
    assert!(torn <= 1, "{torn} torn entries");
    for id in acked
        .iter()
        .chain(std::iter::once(&"after-restart".to_string()))
    {
        let found: Vec<&String> = entries
            .iter()
            .filter(|e| e.contains(&format!("Subject: {id}\n")))
            .collect();
        assert_eq!(found.len(), 1, "{id} appears {} times", found.len());
        assert!(whole(found[0]), "acknowledged entry {id} is not whole");
    }
}
