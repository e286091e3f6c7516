//! Reading a mailbox through the library while another program writes it, or when its name is
//! not a file: `Server::messages` and `wait_for` take the fcntl lock other mail programs take,
//! and never wait on a FIFO.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use mboxd::mbox::Mailbox;
use mboxd::{Config, Server, WaitError};
use support::{ChildGuard, output_within};

/// How long a call that must return may take before the test fails.
const WITHIN: Duration = Duration::from_secs(10);

fn python3() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Another program appending to `path` as procmail or Python's `mailbox` does: under the fcntl
/// lock, an entry with `subject` of which half is written and flushed (then it says `half`),
/// and, once told through [`Appender::finish`], the rest, and the lock given back.
struct Appender {
    child: ChildGuard,
    lines: mpsc::Receiver<String>,
}

impl Appender {
    fn start(path: &std::path::Path, subject: &str) -> Appender {
        let script = "import fcntl,sys\n\
                      f=open(sys.argv[1],'a'); fcntl.lockf(f, fcntl.LOCK_EX)\n\
                      f.write('From a@b.test Sun Nov 22 07:33:49 2026\\nSubject: '+sys.argv[2]+'\\n\\nfirst half\\n'); f.flush()\n\
                      print('half', flush=True); sys.stdin.readline()\n\
                      f.write('second half\\n\\n'); f.flush(); f.close(); print('done', flush=True)\n";
        let mut child = ChildGuard(
            Command::new("python3")
                .args(["-c", script])
                .arg(path)
                .arg(subject)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3"),
        );
        let lines = lines_of(&mut child);
        assert_eq!(lines.recv_timeout(WITHIN).as_deref(), Ok("half"));
        Appender { child, lines }
    }

    /// Writes the rest and gives the lock back; returns once it has.
    fn finish(&mut self) {
        self.child
            .0
            .stdin
            .take()
            .unwrap()
            .write_all(b"go\n")
            .unwrap();
        assert_eq!(self.lines.recv_timeout(WITHIN).as_deref(), Ok("done"));
        assert_eq!(self.child.0.wait().unwrap().code(), Some(0));
    }
}

/// A client of `server` that has read the greeting and said EHLO.
fn client(server: &Server) -> support::Client {
    let mut c = support::Client::connect(server.local_addr());
    assert_eq!(c.read_reply().code, 220);
    c.expect("EHLO client.test", 250);
    c
}

/// The child's output lines, as they come (a test waits for one with a timeout).
fn lines_of(child: &mut ChildGuard) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = BufReader::new(child.0.stdout.take().unwrap());
    thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

#[test]
fn a_message_another_program_is_appending_under_its_lock_is_not_read_in_part() {
    if !python3() {
        println!("skipped: python3 not found, so no second process can hold an fcntl lock");
        return;
    }
    let server =
        Server::start(Config::for_tests().lock_timeout(Duration::from_millis(300))).unwrap();
    let path = server.mail_dir().join("smith");
    let mut appender = Appender::start(&path, "appended");
    // Locked by a program this server's writer never met: waited for, up to the lock
    // timeout, then refused; never the half entry.
    match server.messages("smith") {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
        Ok(messages) => panic!("read while locked: {messages:?}"),
    }
    match server.wait_for("smith", 1, Duration::from_millis(300)) {
        Err(WaitError::Read(e)) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        other => panic!("wait_for while locked: {other:?}"),
    }
    appender.finish();
    let messages = server.messages("smith").unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].body(), b"first half\nsecond half\n");
}

#[test]
fn a_fifo_under_a_mailbox_name_is_an_error_not_a_wait() {
    let server = Server::for_tests().unwrap();
    let fifo = server.mail_dir().join("jones");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        println!("skipped: mkfifo could not make a FIFO");
        return;
    }
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn({
        let fifo = fifo.clone();
        move || {
            let _ = tx.send(Mailbox::open(&fifo).map(|_| ()).map_err(|e| e.kind()));
        }
    });
    let opened = rx
        .recv_timeout(WITHIN)
        .expect("Mailbox::open waited on a FIFO");
    assert_eq!(opened, Err(std::io::ErrorKind::InvalidInput));
    reader.join().unwrap();
    thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        s.spawn(move || {
            let read = server.messages("jones").map(|_| ()).map_err(|e| e.kind());
            let waited = match server.wait_for("jones", 1, WITHIN) {
                Err(WaitError::Read(e)) => Some(e.kind()),
                _ => None,
            };
            let _ = tx.send((read, waited));
        });
        let got = rx.recv_timeout(WITHIN);
        if got.is_err() {
            // Unblock the reader so the scope can end, then fail.
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        }
        let (read, waited) = got.expect("the library waited on a FIFO");
        assert_eq!(read, Err(std::io::ErrorKind::InvalidInput));
        assert_eq!(waited, Some(std::io::ErrorKind::InvalidInput));
    });
}

#[test]
fn while_a_writer_holds_the_lock_messages_stop_at_the_last_commit() {
    if !python3() {
        println!("skipped: python3 not found, so no second process can hold an fcntl lock");
        return;
    }
    let server = Server::for_tests().unwrap();
    let mut c = client(&server);
    let r = c.send_mail(
        "a@b.test",
        &["jones@localhost"],
        "Subject: whole\r\n\r\nhi\r\n",
    );
    assert_eq!(r.code, 250);
    c.expect("QUIT", 221);
    // What a reader could see while a writer (this server's, or a program that appends after
    // it under the same lock) is in the middle of an entry: a part of it.
    let path = server.mail_dir().join("jones");
    let script = "import fcntl,sys\n\
                  f=open(sys.argv[1],'a'); fcntl.lockf(f, fcntl.LOCK_EX)\n\
                  f.write('From x@y.test Sun Nov 22 07:33:49 2026\\nSubject: par'); f.flush()\n\
                  print('part', flush=True); sys.stdin.readline()\n";
    let mut child = ChildGuard(
        Command::new("python3")
            .args(["-c", script])
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    assert_eq!(
        lines_of(&mut child).recv_timeout(WITHIN).as_deref(),
        Ok("part")
    );
    // The writer has opened this mailbox: read at once, up to its last commit.
    let mail = server.messages("jones").unwrap();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].subject(), Some("whole"));
    let mail = server.wait_for("jones", 1, WITHIN).unwrap();
    assert_eq!(mail.len(), 1);
    // The file as a whole has the part too.
    assert_eq!(Mailbox::open(&path).unwrap().len(), 2);
    child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

#[test]
fn readers_never_take_the_lock_of_a_mailbox_the_writer_has_opened() {
    if !python3() {
        println!("skipped: python3 not found, so no second process can try the lock");
        return;
    }
    // Three threads read the mailbox in a loop while another program tries its lock 20 000
    // times without waiting. A reader that took the lock would make some tries fail, as it
    // made this server's own writer's (which tries again only 50 ms later, and gave up with
    // 450 at its lock timeout). The writer has opened this mailbox, so readers cut it at its
    // last commit and take no lock.
    let server = Server::for_tests().unwrap();
    let mut c = client(&server);
    let r = c.send_mail("a@b.test", &["jones@localhost"], "Subject: s\r\n\r\nx\r\n");
    assert_eq!(r.code, 250);
    let script = "import fcntl,sys\n\
                  f=open(sys.argv[1],'a'); busy=0\n\
                  for i in range(20000):\n\
                  \x20   try:\n\
                  \x20       fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB); fcntl.lockf(f, fcntl.LOCK_UN)\n\
                  \x20   except OSError:\n\
                  \x20       busy+=1\n\
                  print(busy, flush=True)\n";
    let done = std::sync::atomic::AtomicBool::new(false);
    let busy = thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        assert_eq!(server.messages("jones").unwrap().len(), 1);
                    }
                })
            })
            .collect();
        let mut child = ChildGuard(
            Command::new("python3")
                .args(["-c", script])
                .arg(server.mail_dir().join("jones"))
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3"),
        );
        let busy = lines_of(&mut child).recv_timeout(WITHIN);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        for reader in readers {
            reader.join().unwrap();
        }
        busy
    });
    assert_eq!(busy.as_deref(), Ok("0"), "tries that found the lock held");
}

#[test]
fn a_reader_waiting_on_another_programs_lock_gets_its_whole_entry_after_the_writer_opens() {
    if !python3() {
        println!("skipped: python3 not found, so no second process can hold an fcntl lock");
        return;
    }
    // The mailbox exists (another program's) and this server's writer has never opened it.
    // While the program appends under its lock, a delivery comes (the writer waits for the
    // lock) and a reader asks: once the program is done, the writer takes the lock first. The
    // reader must then see the program's whole entry, never the half it saw the file hold.
    let server = Server::for_tests().unwrap();
    let path = server.mail_dir().join("smith");
    let mut appender = Appender::start(&path, "other");
    let mut c = client(&server);
    c.expect("MAIL FROM:<x@y.test>", 250);
    c.expect("RCPT TO:<smith@localhost>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: mboxd\r\n\r\nours\r\n.\r\n");
    // A second message, ended right after the program: its arrival wakes the writer, which
    // then tries the waiting one's lock at once, before the reader's next try.
    let mut c2 = client(&server);
    c2.expect("MAIL FROM:<x@y.test>", 250);
    c2.expect("RCPT TO:<jones@localhost>", 250);
    c2.expect("DATA", 354);
    thread::scope(|s| {
        let reader = s.spawn(|| server.messages("smith"));
        // Nothing says when the reader has begun to wait (on the writer's claim, or on the
        // lock): the pause makes it likely that it has when the program ends. What is asserted
        // holds whenever it began.
        thread::sleep(Duration::from_millis(200));
        appender.finish();
        c2.send(b"Subject: wake\r\n\r\nx\r\n.\r\n");
        assert_eq!(c.read_reply().code, 250);
        assert_eq!(c2.read_reply().code, 250);
        let read = reader.join().unwrap().unwrap();
        assert!(!read.is_empty(), "{read:?}");
        assert_eq!(read[0].subject(), Some("other"));
        assert_eq!(read[0].body(), b"first half\nsecond half\n", "{read:?}");
    });
    let all = server.messages("smith").unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
}

#[test]
fn a_job_refused_for_one_mailbox_leaves_no_claim_on_another() {
    // A message for alice and brown: alice opens, brown is dotlocked by another program (and
    // was never opened by this server), so the writer claims brown and waits. Then alice turns
    // into a directory: the next try refuses the message (451) for alice. Brown's claim must
    // go with it, or every read of brown waited for an open that never comes.
    let server = Server::start(Config::for_tests().lock_timeout(Duration::from_secs(5))).unwrap();
    let dir = server.mail_dir().to_path_buf();
    std::fs::write(
        dir.join("brown"),
        "From a@b.test Sun Nov 22 07:33:49 2026\n\nold\n\n",
    )
    .unwrap();
    std::fs::write(dir.join("brown.lock"), b"").unwrap();
    let mut c = client(&server);
    c.expect("MAIL FROM:<x@y.test>", 250);
    c.expect("RCPT TO:<alice@localhost>", 250);
    c.expect("RCPT TO:<brown@localhost>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: both\r\n\r\nx\r\n.\r\n");
    // The writer's first try created alice: it has met brown's lock by then.
    let until = std::time::Instant::now() + WITHIN;
    while !dir.join("alice").exists() {
        assert!(std::time::Instant::now() < until, "the writer never tried");
        thread::yield_now();
    }
    std::fs::remove_file(dir.join("alice")).unwrap();
    std::fs::create_dir(dir.join("alice")).unwrap();
    assert_eq!(c.read_reply().code, 451);
    std::fs::remove_file(dir.join("brown.lock")).unwrap();
    // Nothing holds brown now: read at once, not after the 5 s lock timeout.
    let began = std::time::Instant::now();
    let read = server.messages("brown").unwrap();
    assert_eq!(read.len(), 1, "{read:?}");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
}

#[test]
fn a_mailbox_another_program_rewrote_is_read_whole_not_cut_at_the_old_length() {
    if !python3() {
        println!("skipped: python3 not found, so no program rewrites the mailbox");
        return;
    }
    // Python's `mailbox`, marking the first message read, writes a new file (one more header)
    // and renames it over the mailbox. The writer's record is of the old file: cut at it, the
    // new file lost the end of the second message.
    let server = Server::for_tests().unwrap();
    let mut c = client(&server);
    for subject in ["one", "two"] {
        let body =
            format!("Subject: {subject}\r\n\r\nline one of {subject}\r\nline two of {subject}\r\n");
        assert_eq!(
            c.send_mail("a@b.test", &["jones@localhost"], &body).code,
            250
        );
    }
    let script = "import mailbox,sys\n\
                  box=mailbox.mbox(sys.argv[1]); box.lock()\n\
                  k=next(iter(box.keys())); m=box[k]; m.set_flags('R'); box[k]=m\n\
                  box.flush(); box.unlock(); print('done', flush=True)\n";
    let out = output_within(
        Command::new("python3")
            .args(["-c", script])
            .arg(server.mail_dir().join("jones")),
        WITHIN,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n", "{out:?}");
    let read = server.messages("jones").unwrap();
    assert_eq!(read.len(), 2, "{read:?}");
    assert_eq!(
        read[1].body(),
        b"line one of two\nline two of two\n",
        "{read:?}"
    );
}
