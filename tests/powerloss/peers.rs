//! The two peers a power-loss round drives: the `mboxd` binary as a child process (killed when
//! dropped, the end of its log shown if the test fails meanwhile) and a tiny SMTP client in which
//! a timeout is always a failure and a closed connection is reported, so that a client can tell
//! the kill it expects from a fault. They live apart from the round so the round reads as the
//! scenario it is.

use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use crate::WAIT;
use crate::lazyfs::tail;
use crate::mbox::body_of;
use crate::support::{dot_stuff, wait_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_mboxd");

// ---------------------------------------------------------------------------------------------
// The server under test, as a process

/// An `mboxd` process, killed when dropped; its log is shown if the test fails meanwhile.
pub(crate) struct Mboxd {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    log: PathBuf,
}

impl Mboxd {
    pub(crate) fn start(mail: &Path, log: &Path, extra: &[&str]) -> Mboxd {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--mail-dir"])
            .arg(mail)
            .args(["--hostname", "mx.test", "--domain", "mx.test"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(log).unwrap())
            .spawn()
            .expect("start mboxd");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("mboxd-stdout".into())
            .spawn(move || {
                let mut line = String::new();
                let _ = tx.send(BufReader::new(stdout).read_line(&mut line).map(|_| line));
            })
            .unwrap();
        let mut server = Mboxd {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            log: log.to_path_buf(),
        };
        let line = match rx.recv_timeout(WAIT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("reading mboxd's stdout: {e}"),
            Err(_) => panic!(
                "mboxd printed no `listening on` line within {WAIT:?}; log:\n{}",
                tail(log, 10)
            ),
        };
        server.addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; log:\n{}", tail(log, 10)))
            .parse()
            .unwrap();
        server
    }

    /// SIGTERM, then a clean exit within the deadline.
    pub(crate) fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = wait_bounded(&mut self.child, WAIT);
        assert_eq!(status.code(), Some(0), "mboxd exited with {status}");
    }
}

impl Drop for Mboxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- end of {}:", self.log.display());
            eprintln!("{}", tail(&self.log, 20));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny SMTP client where a timeout is always a failure and a closed connection is reported

#[derive(Debug)]
pub(crate) enum Broken {
    /// No reply within the timeout: always a failure of the test.
    Timeout,
    /// End of file or a reset: expected only once the server was killed.
    Closed(String),
}

fn broken(e: io::Error) -> Broken {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Broken::Timeout,
        _ => Broken::Closed(e.to_string()),
    }
}

/// A reply's code and the text of its last line.
pub(crate) struct Reply {
    pub(crate) code: u16,
    pub(crate) text: String,
}

pub(crate) struct Smtp {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Smtp {
    pub(crate) fn connect(addr: SocketAddr) -> Result<Smtp, Broken> {
        let stream = TcpStream::connect_timeout(&addr, WAIT).map_err(broken)?;
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Ok(Smtp { stream, reader })
    }

    /// One whole reply; every line must be `DDD-` or `DDD ` and end in CRLF.
    fn reply(&mut self) -> Result<Reply, Broken> {
        loop {
            let mut line = Vec::new();
            let n = (&mut self.reader)
                .take(1024)
                .read_until(b'\n', &mut line)
                .map_err(broken)?;
            if n == 0 {
                return Err(Broken::Closed("end of file".into()));
            }
            let line = String::from_utf8(line).expect("replies are ASCII");
            assert!(
                line.len() >= 6 && line.ends_with("\r\n"),
                "bad reply line {line:?}"
            );
            let code: u16 = line[..3].parse().expect("a reply code");
            match &line[3..4] {
                " " => {
                    let text = line[4..line.len() - 2].to_string();
                    return Ok(Reply { code, text });
                }
                "-" => continue,
                _ => panic!("bad reply line {line:?}"),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        self.stream.write_all(bytes).map_err(broken)
    }

    pub(crate) fn command(&mut self, line: &str, want: u16) -> Result<(), Broken> {
        self.send(format!("{line}\r\n").as_bytes())?;
        let r = self.reply()?;
        assert_eq!(r.code, want, "{line:?} got {} {}", r.code, r.text);
        Ok(())
    }

    pub(crate) fn greet(&mut self) -> Result<(), Broken> {
        let r = self.reply()?;
        assert_eq!(r.code, 220, "greeting: {}", r.text);
        self.command("EHLO power.test", 250)
    }

    /// One message to `boxes`; the reply to the end of data.
    pub(crate) fn deliver(&mut self, id: &str, boxes: &[usize]) -> Result<Reply, Broken> {
        self.command("MAIL FROM:<a@b.test>", 250)?;
        for b in boxes {
            self.command(&format!("RCPT TO:<box{b}@mx.test>"), 250)?;
        }
        self.command("DATA", 354)?;
        self.send(&dot_stuff(&body_of(id)))?;
        self.reply()
    }
}
