//! The suite `make bench` runs: a fresh mboxd and, when installed, Postfix's smtp-sink, each
//! started on a free loopback port, the cases run alternately against both, and a table of
//! medians with the ratio mboxd/smtp-sink.
//!
//! It exists apart from the generator (`main.rs`) because it manages processes, not SMTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts mboxd on 127.0.0.1:0 delivering to `mail_dir` and reads its `listening on` line.
fn start_mboxd(binary: &Path, mail_dir: &Path, log: &Path) -> Result<(Guard, SocketAddr), String> {
    let log = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--mail-dir"])
        .arg(mail_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stdout = child.stdout.take();
    let guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("bench-mboxd-stdout".into())
        .spawn(move || {
            let mut lines = BufReader::new(stdout?).lines();
            let first = lines.next()?.ok();
            let _ = tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
            Some(())
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .ok()
        .flatten()
        .ok_or("mboxd printed no `listening on` line within 10 s")?;
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or(format!("unexpected first line from mboxd: {line:?}"))?;
    Ok((guard, addr))
}

/// `smtp-sink` from PATH or the usual Debian places.
fn find_smtp_sink() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join("smtp-sink"))
        .find(|p| p.is_file())
}

/// Starts `smtp-sink` on a free loopback port and waits until it accepts a connection.
fn start_sink(binary: &Path) -> Result<(Guard, SocketAddr), String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new(binary);
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root {
        // smtp-sink refuses to run as root without a user to drop to.
        command.args(["-u", "nobody"]);
    }
    let child = command
        .args(["-c", &addr.to_string(), "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let mut guard = Guard(child);
    // smtp-sink has no readiness signal: poll, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = guard.0.try_wait() {
            let mut why = String::new();
            if let Some(mut e) = guard.0.stderr.take() {
                let _ = e.read_to_string(&mut why);
            }
            return Err(format!(
                "smtp-sink exited at once ({status}): {}",
                why.trim()
            ));
        }
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.write_all(b"QUIT\r\n");
            let _ = s.read(&mut [0; 512]);
            return Ok((guard, addr));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "smtp-sink did not accept connections on {addr} within 10 s"
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Medians over rounds: msg/s, MB/s, p50 ms, p99 ms.
fn medians(reports: &[Report]) -> [f64; 4] {
    let m = |f: &dyn Fn(&Report) -> f64| median(reports.iter().map(f).collect());
    [
        m(&|r| r.msg_per_s()),
        m(&|r| r.mb_per_s()),
        m(&|r| ms(r.percentile(0.5))),
        m(&|r| ms(r.percentile(0.99))),
    ]
}

pub(super) fn suite(argv: &[String]) -> Result<(), String> {
    let mut mboxd = None;
    let mut rounds = 5;
    let mut sink = find_smtp_sink();
    let mut sink_note = "smtp-sink not installed (Debian package postfix)".to_string();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--mboxd" => mboxd = Some(PathBuf::from(value)),
            "--rounds" => rounds = value.parse().map_err(|_| format!("--rounds: {value}"))?,
            "--smtp-sink" if value == "none" => {
                sink = None;
                sink_note = "--smtp-sink none".to_string();
            }
            "--smtp-sink" => sink = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown suite option {flag}")),
        }
    }
    let mboxd = mboxd.ok_or("suite needs --mboxd PATH")?;
    let temp = tempfile::Builder::new()
        .prefix("mboxd-bench")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let mail_dir = temp.path().join("mail");
    let (_server, server_addr) = start_mboxd(&mboxd, &mail_dir, &temp.path().join("mboxd.log"))?;
    println!(
        "mboxd {} on {server_addr}, mail in {}",
        mboxd.display(),
        mail_dir.display()
    );
    let sink = match sink.map(|b| start_sink(&b)) {
        Some(Ok(s)) => {
            println!("smtp-sink on {}", s.1);
            Some(s)
        }
        Some(Err(e)) => {
            println!("skipped: smtp-sink comparison: {e}");
            None
        }
        None => {
            println!("skipped: smtp-sink comparison: {sink_note}");
            None
        }
    };
    let cases = [
        ("A", 1, 2000, 1024),
        ("B", 20, 10_000, 1024),
        ("C", 20, 500, 100 * 1024),
    ];
    let mut results: Vec<(Vec<Report>, Vec<Report>)> = vec![(Vec::new(), Vec::new()); cases.len()];
    for round in 1..=rounds {
        for (i, &(name, sessions, messages, size)) in cases.iter().enumerate() {
            let mut opts = Options::new(server_addr);
            opts.sessions = sessions;
            opts.messages = messages;
            opts.size = size;
            opts.user = format!("{}{round}", name.to_lowercase());
            opts.check_mbox = Some(mail_dir.clone());
            let r = run(&opts).map_err(|e| format!("case {name} mboxd round {round}: {e}"))?;
            println!(
                "{name} mboxd     round {round}: {} (mbox checked)",
                r.summary()
            );
            results[i].0.push(r);
            if let Some((_, sink_addr)) = &sink {
                opts.addr = *sink_addr;
                opts.check_mbox = None;
                let r =
                    run(&opts).map_err(|e| format!("case {name} smtp-sink round {round}: {e}"))?;
                println!("{name} smtp-sink round {round}: {}", r.summary());
                results[i].1.push(r);
            }
        }
    }
    println!();
    println!(
        "median of {rounds} alternating rounds; pipelining on, 1 recipient; MB = 10^6 octets;"
    );
    println!("ratio = median mboxd msg/s / median smtp-sink msg/s");
    println!(
        "| case | mboxd msg/s | MB/s | p50 ms | p99 ms | smtp-sink msg/s | MB/s | p50 ms | p99 ms | ratio msg/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (&(name, sessions, messages, size), (m, s)) in cases.iter().zip(&results) {
        let [mr, mb, m50, m99] = medians(m);
        let label = format!(
            "{name}: {sessions} session{}, {messages} × {} KiB",
            if sessions == 1 { "" } else { "s" },
            size / 1024
        );
        if s.is_empty() {
            println!("| {label} | {mr:.0} | {mb:.2} | {m50:.3} | {m99:.3} | – | – | – | – | – |");
        } else {
            let [sr, sb, s50, s99] = medians(s);
            println!(
                "| {label} | {mr:.0} | {mb:.2} | {m50:.3} | {m99:.3} | {sr:.0} | {sb:.2} | {s50:.3} | {s99:.3} | {:.2} |",
                mr / sr
            );
        }
    }
    Ok(())
}
