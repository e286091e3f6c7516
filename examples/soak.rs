//! `make soak`: a bounded load run on loopback that checks the promise behind every 250.
//!
//! It exists to show, with figures, that under a mixture of good clients, idle clients and
//! clients that vanish mid-DATA, every acknowledged message is stored exactly once in each of its
//! mailboxes, nothing aborted is stored, the mboxes parse, and no thread or file descriptor is
//! kept once the server has shut down (resident memory is reported, not checked). It prints a
//! report and `soak: PASS` or exits 1.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    connections: usize,
    messages: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        connections: 200,
        messages: 50_000,
        seconds: 180,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair
            .get(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage());
        match pair[0].as_str() {
            "--connections" => a.connections = value,
            "--messages" => a.messages = value,
            "--seconds" => a.seconds = value as u64,
            _ => usage(),
        }
    }
    a
}

fn usage() -> ! {
    eprintln!("usage: soak [--connections N] [--messages N] [--seconds N]");
    std::process::exit(2)
}

/// Threads, open descriptors and resident memory (KiB) of this process.
fn resources() -> (usize, usize, u64) {
    let count = |dir: &str| std::fs::read_dir(dir).map_or(0, |d| d.count());
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0);
    (count("/proc/self/task"), count("/proc/self/fd"), rss)
}

/// Replies waited for in vain: the server kept the connection open and said nothing for the read
/// timeout. A closed connection is an answer (the server may close idle or aborted sessions); a
/// silence is a hang, and fails the soak.
static SILENT: AtomicUsize = AtomicUsize::new(0);

/// A minimal client: write a command, read one (possibly multi-line) reply code.
struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Option<Conn> {
        let stream = TcpStream::connect(addr).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        let reader = BufReader::new(stream.try_clone().ok()?);
        let mut c = Conn { stream, reader };
        (c.reply()? == 220).then_some(c)
    }

    fn reply(&mut self) -> Option<u16> {
        for _ in 0..100 {
            let mut line = String::new();
            let read = self.reader.read_line(&mut line).map_err(|e| {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    SILENT.fetch_add(1, Ordering::SeqCst);
                }
            });
            if read.ok()? < 4 {
                return None;
            }
            if line.as_bytes()[3] == b' ' {
                return line[..3].parse().ok();
            }
        }
        None
    }

    fn send(&mut self, bytes: &[u8]) -> Option<()> {
        self.stream.write_all(bytes).ok()
    }
}

#[derive(Default)]
struct Tally {
    acked: Vec<(String, Vec<String>)>,
    aborted: Vec<String>,
    connections: usize,
    idle: usize,
}

fn good(
    addr: SocketAddr,
    next: &AtomicUsize,
    budget: usize,
    deadline: Instant,
    tally: &Mutex<Tally>,
) {
    while Instant::now() < deadline && next.load(Ordering::SeqCst) < budget {
        let Some(mut c) = Conn::open(addr) else {
            continue;
        };
        tally.lock().unwrap().connections += 1;
        c.send(b"EHLO soak.test\r\n");
        if c.reply() != Some(250) {
            continue;
        }
        for _ in 0..50 {
            let n = next.fetch_add(1, Ordering::SeqCst);
            if n >= budget || Instant::now() >= deadline {
                break;
            }
            let id = format!("m{n}");
            let rcpts: Vec<String> = (0..2 + n % 4)
                .map(|k| format!("u{}", (n * 7 + k * 3) % 20))
                .collect();
            let mut cmds = format!("MAIL FROM:<{id}@soak.test>\r\n");
            for r in &rcpts {
                cmds.push_str(&format!("RCPT TO:<{r}@localhost>\r\n"));
            }
            cmds.push_str("DATA\r\n");
            c.send(cmds.as_bytes());
            if (0..rcpts.len() + 1).any(|_| c.reply() != Some(250)) || c.reply() != Some(354) {
                return;
            }
            c.send(
                format!("Subject: {id}\r\n\r\nbody of {id}\r\nFrom a line\r\n..dot\r\n.\r\n")
                    .as_bytes(),
            );
            if c.reply() == Some(250) {
                tally.lock().unwrap().acked.push((id, rcpts));
            } else {
                return;
            }
        }
        c.send(b"QUIT\r\n");
        c.reply();
    }
}

fn idle(addr: SocketAddr, done: &dyn Fn() -> bool, tally: &Mutex<Tally>) {
    while !done() {
        let Some(mut c) = Conn::open(addr) else {
            continue;
        };
        // The server closes it with 421 after its idle timeout.
        let _ = c.reply();
        let mut t = tally.lock().unwrap();
        t.connections += 1;
        t.idle += 1;
    }
}

fn abort(addr: SocketAddr, done: &dyn Fn() -> bool, tally: &Mutex<Tally>, n: &AtomicUsize) {
    while !done() {
        let Some(mut c) = Conn::open(addr) else {
            continue;
        };
        let id = format!("abort{}", n.fetch_add(1, Ordering::SeqCst));
        c.send(b"EHLO a.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u0@localhost>\r\nDATA\r\n");
        if (0..4).all(|_| c.reply().is_some()) {
            c.send(format!("Subject: {id}\r\n\r\nhalf of {id}\r\n").as_bytes());
        }
        drop(c);
        let mut t = tally.lock().unwrap();
        t.connections += 1;
        t.aborted.push(id);
    }
}

fn main() {
    let a = args();
    let before = resources();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = mboxd::Server::start(mboxd::Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        mail_dir: dir.path().join("mail"),
        workers: 256,
        timeout: Duration::from_secs(2),
        data_timeout: Duration::from_secs(2),
        queue_wait: Duration::from_secs(2),
        ..mboxd::Config::default()
    })
    .expect("server");
    let addr = server.local_addrs()[0];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.seconds);
    let next = Arc::new(AtomicUsize::new(0));
    let aborts = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut peak_rss = 0;
    let threads: Vec<_> = (0..a.connections)
        .map(|i| {
            let (next, aborts, tally) =
                (Arc::clone(&next), Arc::clone(&aborts), Arc::clone(&tally));
            let budget = a.messages;
            std::thread::spawn(move || {
                let done = || Instant::now() >= deadline || next.load(Ordering::SeqCst) >= budget;
                match i % 10 {
                    8 => idle(addr, &done, &tally),
                    9 => abort(addr, &done, &tally, &aborts),
                    _ => good(addr, &next, budget, deadline, &tally),
                }
            })
        })
        .collect();
    for t in threads {
        peak_rss = peak_rss.max(resources().2);
        let _ = t.join();
    }
    let elapsed = started.elapsed();
    let during = resources();
    server.shutdown();
    let after = resources();
    let tally = tally.lock().unwrap();

    let mut failures = Vec::new();
    let silent = SILENT.load(Ordering::SeqCst);
    if silent > 0 {
        failures.push(format!(
            "{silent} replies never came: the server was silent for 30 s on an open connection"
        ));
    }
    let mut stored: HashMap<String, HashMap<String, usize>> = HashMap::new();
    for user in 0..20 {
        let name = format!("u{user}");
        let text = String::from_utf8_lossy(
            &std::fs::read(dir.path().join("mail").join(&name)).unwrap_or_default(),
        )
        .into_owned();
        if !text.is_empty() && !text.ends_with("\n\n") {
            failures.push(format!("{name} ends with a torn entry"));
        }
        for entry in text.split("\n\nFrom ").filter(|e| !e.is_empty()) {
            let Some(id) = entry.lines().find_map(|l| l.strip_prefix("Subject: ")) else {
                failures.push(format!("{name}: an entry without a Subject"));
                continue;
            };
            if !entry
                .trim_end_matches('\n')
                .ends_with(&format!("body of {id}\n>From a line\n.dot"))
                && !id.starts_with("abort")
            {
                failures.push(format!("{name}: {id} is not intact"));
            }
            *stored
                .entry(name.clone())
                .or_default()
                .entry(id.to_string())
                .or_default() += 1;
        }
    }
    for (id, rcpts) in &tally.acked {
        for r in rcpts {
            let n = stored.get(r).and_then(|m| m.get(id)).copied().unwrap_or(0);
            if n != 1 {
                failures.push(format!("{id} is in {r} {n} times"));
            }
        }
    }
    for id in &tally.aborted {
        if stored.values().any(|m| m.contains_key(id)) {
            failures.push(format!("aborted {id} was stored"));
        }
    }
    if after.0 > before.0 || after.1 > before.1 {
        failures.push(format!(
            "leak: threads {} -> {}, fds {} -> {}",
            before.0, after.0, before.1, after.1
        ));
    }
    println!(
        "soak: {} connections requested, {:.1} s",
        a.connections,
        elapsed.as_secs_f64()
    );
    println!(
        "messages acknowledged: {} ({:.0}/s)",
        tally.acked.len(),
        tally.acked.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "connections made: {}, idle: {}, aborted mid-DATA: {}",
        tally.connections,
        tally.idle,
        tally.aborted.len()
    );
    println!(
        "threads: {} before start, {} after the load (server up), {} after shutdown",
        before.0, during.0, after.0
    );
    println!(
        "fds: {} before start, {} after the load (server up), {} after shutdown",
        before.1, during.1, after.1
    );
    println!(
        "RSS KiB: {} before start, {} peak sampled, {} after shutdown",
        before.2,
        peak_rss.max(during.2),
        after.2
    );
    if failures.is_empty() {
        println!("soak: PASS");
    } else {
        for f in failures.iter().take(20) {
            println!("  {f}");
        }
        println!("soak: FAIL: {} problems", failures.len());
        std::process::exit(1);
    }
}
