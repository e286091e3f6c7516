//! Child processes for tests: the `mboxd` binary started and its `listening on` lines read,
//! signals, and bounded waits for a child's exit or output. Each wait fails the test when its
//! time runs out; a child is killed when its guard is dropped.

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::REPLY_TIMEOUT;

/// Waits for a child process with a deadline, killing it and failing the test if it overruns.
/// Polling `try_wait` is the only portable way to wait with a limit.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The server binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_mboxd");

/// Starts the binary with `args` and reads its `listening on` lines (a missing line within
/// [`REPLY_TIMEOUT`] fails the test); the guard kills it if the test ends without stopping it.
pub fn spawn(args: &[&str], listeners: usize) -> (ChildGuard, Vec<SocketAddr>) {
    let child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mboxd");
    listening(ChildGuard(child), listeners)
}

/// [`spawn`] with `RUST_LOG=info` and stderr captured by a thread, whose handle yields all of
/// it once the child has exited.
pub fn spawn_logged(
    args: &[&str],
    listeners: usize,
) -> (ChildGuard, Vec<SocketAddr>, std::thread::JoinHandle<String>) {
    let mut child = ChildGuard(
        Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mboxd"),
    );
    let mut stderr = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let (child, addrs) = listening(child, listeners);
    (child, addrs, log)
}

/// Stops a [`spawn_logged`] child with SIGTERM, fails the test unless it exits 0 within 10 s,
/// and returns all it logged.
pub fn stop_logged(mut child: ChildGuard, log: std::thread::JoinHandle<String>) -> String {
    signal(&child, "TERM");
    assert_eq!(
        wait_bounded(&mut child, Duration::from_secs(10)).code(),
        Some(0)
    );
    log.join().expect("the log reader")
}

/// The first `delivered:` line of a log; fails the test when there is none.
pub fn delivered_line(log: &str) -> &str {
    log.lines()
        .find(|l| l.contains(" delivered: "))
        .unwrap_or_else(|| panic!("no delivery line in:\n{log}"))
}

/// Reads the `listening on` lines of a child started with its stdout piped, as [`spawn`] does.
pub fn listening(mut child: ChildGuard, listeners: usize) -> (ChildGuard, Vec<SocketAddr>) {
    let stdout = child.stdout.take().expect("stdout");
    let addrs = read_lines_within(stdout, listeners, REPLY_TIMEOUT)
        .into_iter()
        .map(|line| {
            line.strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .trim()
                .parse()
                .expect("an address")
        })
        .collect();
    (child, addrs)
}

/// Sends `sig` (`TERM`, `INT`, `KILL`) to a child process.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// Reads the first `n` lines a child process writes to `out` (its stdout, say), waiting at most
/// `limit` in all. Fails the test when the output ends first or stays silent past the limit.
/// The reading happens on a named thread, which ends with the output or after `n` lines.
pub fn read_lines_within(
    out: impl Read + Send + 'static,
    n: usize,
    limit: Duration,
) -> Vec<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("test-read-lines".into())
        .spawn(move || {
            let mut reader = BufReader::new(out);
            for _ in 0..n {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .expect("spawn a reader thread");
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    while lines.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(RecvTimeoutError::Timeout) => {
                panic!("no line of output within {limit:?}; got {lines:?} of {n} lines")
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the output ended (or could not be read) after {lines:?}, before {n} lines")
            }
        }
    }
    lines
}

/// Runs `cmd` to its end, like `Command::output`, but fails the test when it runs past `limit`,
/// with the output gathered so far. The child runs in a process group of its own, and the whole
/// group is killed once the child has exited or at the deadline, so nothing it started (a server
/// an example left running, say) outlives it or holds its output open. Its stdout and stderr are
/// read on threads, so output of any size is fine.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    let deadline = Instant::now() + limit;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn");
    let (done_tx, done) = mpsc::channel();
    let stdout = gather(child.stdout.take().unwrap(), done_tx.clone());
    let stderr = gather(child.stderr.take().unwrap(), done_tx);
    // Polled, as `wait_bounded` does: std has no wait with a timeout.
    let exited = loop {
        match child.try_wait().expect("try_wait") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => break None,
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    // The child's group id is its pid; whatever it started goes with the group.
    let group = format!("-{}", child.id());
    let killed = Command::new("kill").args(["-KILL", "--", &group]).output();
    if killed.is_err() {
        // No kill(1): the child at least, so the wait below is bounded; the assert below fails.
        let _ = child.kill();
    }
    let status = exited.unwrap_or_else(|| child.wait().expect("wait"));
    // With the group gone the pipes are closed, unless a process left the group (setsid). The
    // readers get the rest of the limit, or a second after a kill at the deadline.
    let readers = deadline.max(Instant::now() + Duration::from_secs(1));
    let closed = (0..2).all(|_| {
        done.recv_timeout(readers.saturating_duration_since(Instant::now()))
            .is_ok()
    });
    let take = |out: &Arc<Mutex<Vec<u8>>>| {
        std::mem::take(&mut *out.lock().unwrap_or_else(|e| e.into_inner()))
    };
    let (stdout, stderr) = (take(&stdout), take(&stderr));
    let so_far = || {
        format!(
            "stdout so far:\n{}\nstderr so far:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )
    };
    assert!(
        exited.is_some(),
        "child process did not exit within {limit:?}; {}",
        so_far()
    );
    assert!(killed.is_ok(), "cannot run kill(1): {killed:?}");
    assert!(
        closed,
        "the child's output stayed open after its process group was killed; {}",
        so_far()
    );
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Reads `from` to its end on a thread, into the buffer it returns, and then sends on `done`.
fn gather(mut from: impl Read + Send + 'static, done: mpsc::Sender<()>) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let buf = out.clone();
    std::thread::Builder::new()
        .name("test-gather".into())
        .spawn(move || {
            let mut chunk = [0; 8192];
            loop {
                match from.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        })
        .expect("spawn a reader thread");
    out
}

/// A child process that is killed and reaped when the guard is dropped, so a test that fails
/// half-way leaves no process behind.
pub struct ChildGuard(pub Child);

impl std::ops::Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
